// Package termesc makes text safe to store in a log line or print on a
// terminal: whatever could act on a terminal or forge a line is written as a
// visible Go-style escape. It is a leaf package (strconv and unicode only), so
// that the CLI's early fast paths can use it without initializing the rest of
// the binary.
package termesc

import (
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with everything that could act on a terminal or forge a
// log line made visible: C0 and C1 control characters (ESC, CR, LF, BEL, ...),
// DEL, Unicode format characters such as bidirectional overrides and
// zero-width joiners, line and paragraph separators, and invalid UTF-8. Each is
// written as a Go-style escape (\x1b, \n, \u202e, \xff). Printable text,
// including non-ASCII letters and backslashes, is kept as is.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = AppendHexEscape(b, 'x', rune(s[i]), 2)
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
				b = AppendHexEscape(b, 'x', r, 2)
			} else {
				b = AppendHexEscape(b, 'u', r, 4)
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

// AppendHexEscape appends `\` kind and r in lower-case hex with at least
// width digits (as fmt's %0*x): AppendHexEscape(b, 'u', 0x202e, 4) appends
// `\u202e`.
func AppendHexEscape(b []byte, kind byte, r rune, width int) []byte {
	b = append(b, '\\', kind)
	for n := len(strconv.FormatInt(int64(r), 16)); n < width; n++ {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(r), 16)
}
