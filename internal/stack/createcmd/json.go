package createcmd

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The fast path writes and reads its little JSON by hand: encoding/json's
// initialization comes late (see the package comment). FuzzJSONString and
// FuzzStringField keep these equal to encoding/json.

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as json.Marshal writes a string: '"', '\\'
// and control characters escaped, '<', '>' and '&' as \u003c..., U+2028 and
// U+2029 escaped, and each byte of invalid UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// stringField decodes data as json.Unmarshal does into a struct whose only
// field is a string named field: the whole text must be valid JSON, and
// null or an object; the value of its last key equal to field (ASCII case
// folded) is the result, null leaving it unchanged; another type is an
// error.
func stringField(data []byte, field string) (string, error) {
	p := &jsonParser{data: data}
	p.ws()
	var val string
	var typeErr error
	switch {
	case p.i < len(p.data) && p.data[p.i] == '{':
		p.i++
		p.depth++
		p.ws()
		if p.peek() == '}' {
			p.i++
			break
		}
		for {
			p.ws()
			if p.peek() != '"' {
				return "", p.syntax("looking for beginning of object key string")
			}
			key, err := p.str()
			if err != nil {
				return "", err
			}
			p.ws()
			if p.peek() != ':' {
				return "", p.syntax("after object key")
			}
			p.i++
			p.ws()
			if equalFoldASCII(key, field) {
				switch p.peek() {
				case '"':
					if val, err = p.str(); err != nil {
						return "", err
					}
				case 'n':
					if err := p.value(); err != nil {
						return "", err
					}
				default:
					if err := p.value(); err != nil {
						return "", err
					}
					if typeErr == nil {
						typeErr = errors.New("json: cannot unmarshal a non-string into the " + strconv.Quote(field) + " field")
					}
				}
			} else if err := p.value(); err != nil {
				return "", err
			}
			p.ws()
			switch p.peek() {
			case ',':
				p.i++
				continue
			case '}':
				p.i++
			default:
				return "", p.syntax("after object key:value pair")
			}
			break
		}
	default:
		isNull := p.peek() == 'n'
		if err := p.value(); err != nil {
			return "", err
		}
		if !isNull {
			typeErr = errors.New("json: cannot unmarshal a non-object into a struct")
		}
	}
	p.ws()
	if p.i != len(p.data) {
		return "", p.syntax("after top-level value")
	}
	if typeErr != nil {
		return "", typeErr
	}
	return val, nil
}

// jsonParser checks JSON text as encoding/json's scanner does.
type jsonParser struct {
	data  []byte
	i     int
	depth int
}

func (p *jsonParser) peek() byte {
	if p.i < len(p.data) {
		return p.data[p.i]
	}
	return 0
}

func (p *jsonParser) ws() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) syntax(where string) error {
	if p.i >= len(p.data) {
		return errors.New("unexpected end of JSON input")
	}
	return errors.New("invalid character " + strconv.QuoteRune(rune(p.data[p.i])) + " " + where)
}

// value skips one value.
func (p *jsonParser) value() error {
	switch c := p.peek(); {
	case c == '{' || c == '[':
		p.depth++
		if p.depth > maxDepth {
			return errors.New("exceeded max depth")
		}
		p.i++
		p.ws()
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		if p.peek() == end {
			p.i++
			p.depth--
			return nil
		}
		for {
			p.ws()
			if c == '{' {
				if p.peek() != '"' {
					return p.syntax("looking for beginning of object key string")
				}
				if _, err := p.str(); err != nil {
					return err
				}
				p.ws()
				if p.peek() != ':' {
					return p.syntax("after object key")
				}
				p.i++
				p.ws()
			}
			if err := p.value(); err != nil {
				return err
			}
			p.ws()
			switch p.peek() {
			case ',':
				p.i++
				continue
			case end:
				p.i++
				p.depth--
				return nil
			}
			return p.syntax("after array element or object key:value pair")
		}
	case c == '"':
		_, err := p.str()
		return err
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		return p.number()
	}
	return p.syntax("looking for beginning of value")
}

func (p *jsonParser) literal(lit string) error {
	for j := 0; j < len(lit); j++ {
		if p.peek() != lit[j] {
			return p.syntax("in literal " + lit)
		}
		p.i++
	}
	return nil
}

func (p *jsonParser) digits() int {
	n := 0
	for '0' <= p.peek() && p.peek() <= '9' {
		p.i++
		n++
	}
	return n
}

func (p *jsonParser) number() error {
	if p.peek() == '-' {
		p.i++
	}
	switch {
	case p.peek() == '0':
		p.i++
	case '1' <= p.peek() && p.peek() <= '9':
		p.digits()
	default:
		return p.syntax("in numeric literal")
	}
	if p.peek() == '.' {
		p.i++
		if p.digits() == 0 {
			return p.syntax("after decimal point in numeric literal")
		}
	}
	if p.peek() == 'e' || p.peek() == 'E' {
		p.i++
		if p.peek() == '+' || p.peek() == '-' {
			p.i++
		}
		if p.digits() == 0 {
			return p.syntax("in exponent of numeric literal")
		}
	}
	return nil
}

// str decodes a string as encoding/json does: escapes, surrogate pairs
// (a lone surrogate becomes U+FFFD), and each byte of invalid UTF-8 as
// U+FFFD.
func (p *jsonParser) str() (string, error) {
	p.i++ // '"'
	var out []byte
	for {
		if p.i >= len(p.data) {
			return "", errors.New("unexpected end of JSON input")
		}
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), nil
		case c < 0x20:
			return "", p.syntax("in string literal")
		case c == '\\':
			p.i++
			switch e := p.peek(); e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				start := p.i - 1 // the backslash
				r := p.u4(start)
				if r < 0 {
					for p.i++; p.i < start+6 && p.i < len(p.data) && isHex(p.data[p.i]); p.i++ {
					}
					return "", p.syntax("in \\u hexadecimal character escape")
				}
				p.i = start + 6
				if utf16.IsSurrogate(r) {
					if r2 := p.u4(p.i); r2 >= 0 {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							p.i += 6
							out = utf8.AppendRune(out, dec)
							continue
						}
					}
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
				continue
			default:
				return "", p.syntax("in string escape code")
			}
			p.i++
		case c < utf8.RuneSelf:
			out = append(out, c)
			p.i++
		default:
			r, size := utf8.DecodeRune(p.data[p.i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, p.data[p.i:p.i+size]...)
			}
			p.i += size
		}
	}
}

// u4 reads the \uXXXX escape at data[at:] (-1 if there is none).
func (p *jsonParser) u4(at int) rune {
	if at < 0 || at+6 > len(p.data) || p.data[at] != '\\' || p.data[at+1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range p.data[at+2 : at+6] {
		d, ok := hexDigit(c)
		if !ok {
			return -1
		}
		r = r*16 + rune(d)
	}
	return r
}

// hexDigit returns the value of the hexadecimal digit c.
func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isHex(c byte) bool {
	_, ok := hexDigit(c)
	return ok
}
