// Package jsonscan finds the extent of JSON values inside a byte slice
// without decoding them, and decodes string literals cheaply.
//
// The functions are meant for bodies already checked with json.Valid: they
// do not validate what they skip (a number, literal or nested value is
// located by its delimiters only), but they never read past the end of the
// input and report a value that is cut short as an error, so a caller that
// skipped validation fails instead of reading garbage. Nothing allocates
// except the errors and the decoding of a string that has escapes.
package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// SkipWS returns the index of the first byte at or after i that is not
// JSON whitespace (space, tab, newline, carriage return), or len(b).
func SkipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// SkipString returns the index just after the JSON string literal that
// starts at b[i] (which must be '"'). It fails when the string is not
// terminated before the end of b.
func SkipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated JSON string")
}

// SkipValue returns the index just after the JSON value that starts at
// b[i] (no leading whitespace): a string, an object or array with
// everything nested in it, or a number or literal (true, false, null),
// which ends at the next delimiter or whitespace. It fails when there is
// no value at i or the value is not terminated before the end of b.
func SkipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing JSON value")
	}
	switch b[i] {
	case '"':
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, err := SkipString(b, j)
				if err != nil {
					return 0, err
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errors.New("unterminated JSON value")
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("malformed JSON at byte %d", i)
		}
		return j, nil
	}
}

// Unquote decodes the JSON string literal b (quotes included, no
// surrounding whitespace), such as SkipString delimits; it reports false
// when b is not one. A literal without escapes that is valid UTF-8 is
// converted directly, without checking it further; any other is decoded
// by encoding/json, so invalid UTF-8 becomes U+FFFD as it does there.
func Unquote(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	inner := b[1 : len(b)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string // only this path pays for it: &s escapes into encoding/json
	if json.Unmarshal(b, &s) != nil {
		return "", false
	}
	return s, true
}
