package createcmd

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// escape is journal.Escape, which the cobra command applies to what it
// prints. It is repeated here because package journal imports log/slog and
// path/filepath, whose initialization comes late (see the package comment);
// FuzzEscapeMatchesJournal keeps the two equal.
func escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = fmt.Appendf(b, `\x%02x`, s[i])
			i++
			continue
		}
		i += size
		if !dangerous(r) {
			b = utf8.AppendRune(b, r)
			continue
		}
		switch r {
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if r < 0x100 {
				b = fmt.Appendf(b, `\x%02x`, r)
			} else {
				b = fmt.Appendf(b, `\u%04x`, r)
			}
		}
	}
	return string(b)
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

// dangerous reports whether r must never reach a terminal raw.
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
