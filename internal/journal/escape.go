package journal

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with everything that could act on a terminal or forge a
// log line made visible: C0 and C1 control characters (ESC, CR, LF, BEL, ...),
// DEL, Unicode format characters such as bidirectional overrides and
// zero-width joiners, line and paragraph separators, and invalid UTF-8. Each is
// written as a Go-style escape (\x1b, \n, \u202e, \xff). Printable text,
// including non-ASCII letters and backslashes, is kept as is.
//
// Escape is applied to all text a sandbox or child process supplies before it
// is stored, and again to everything printed for a human.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
			i++
			continue
		}
		i += size
		if !dangerous(r) {
			b.WriteRune(r)
			continue
		}
		switch r {
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		}
	}
	return b.String()
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || dangerous(r) {
			return true
		}
		i += size
	}
	return false
}

// dangerous reports whether r must never reach a log file or terminal raw.
func dangerous(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == '\u2028', r == '\u2029':
		return true
	case unicode.Is(unicode.Cf, r): // bidi overrides, zero-width characters, BOM
		return true
	}
	return false
}
