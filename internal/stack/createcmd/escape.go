package createcmd

import (
	"strconv"
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
			b = appendHexEscape(b, 'x', rune(s[i]), 2)
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
				b = appendHexEscape(b, 'x', r, 2)
			} else {
				b = appendHexEscape(b, 'u', r, 4)
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

// appendHexEscape appends `\` kind and r in lower-case hex with at least
// width digits (as fmt's %0*x).
func appendHexEscape(b []byte, kind byte, r rune, width int) []byte {
	b = append(b, '\\', kind)
	for n := len(strconv.FormatInt(int64(r), 16)); n < width; n++ {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(r), 16)
}
