package journal

import "github.com/clawcage/clawcage/internal/termesc"

// Escape returns s with everything that could act on a terminal or forge a
// log line made visible (termesc.Escape: control characters, bidirectional
// overrides, zero-width characters, invalid UTF-8 become \x1b, \u202e, ...).
//
// Escape is applied to all text a sandbox or child process supplies before it
// is stored, and again to everything printed for a human.
func Escape(s string) string { return termesc.Escape(s) }
