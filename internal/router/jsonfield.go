package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// span is the byte range [start,end) of a JSON value inside a body.
type span struct{ start, end int }

// topFields returns the spans of the values of a JSON object's top-level
// fields, keyed by the (unescaped) field name. The body must be valid JSON
// (checked by the caller with json.Valid); a duplicate field is an error so
// that the router and the provider cannot disagree about which "model" or
// "tools" counts.
func topFields(b []byte) (map[string]span, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, errors.New("request body is not a JSON object")
	}
	fields := make(map[string]span, 16)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return fields, nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return nil, fmt.Errorf("malformed JSON at byte %d", i)
		}
		kEnd, err := skipString(b, i)
		if err != nil {
			return nil, err
		}
		key := string(b[i+1 : kEnd-1])
		if bytes.IndexByte(b[i:kEnd], '\\') >= 0 {
			if err := json.Unmarshal(b[i:kEnd], &key); err != nil {
				return nil, fmt.Errorf("malformed JSON key at byte %d", i)
			}
		}
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return nil, fmt.Errorf("malformed JSON at byte %d", i)
		}
		i = skipWS(b, i+1)
		vEnd, err := skipValue(b, i)
		if err != nil {
			return nil, err
		}
		if _, dup := fields[key]; dup {
			return nil, fmt.Errorf("duplicate top-level field %q", key)
		}
		fields[key] = span{i, vEnd}
		i = skipWS(b, vEnd)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return fields, nil
		}
		return nil, fmt.Errorf("malformed JSON at byte %d", i)
	}
	return nil, errors.New("unterminated JSON object")
}

// replaceSpan returns b with the bytes of s replaced by v, leaving every
// other byte as it was.
func replaceSpan(b []byte, s span, v []byte) []byte {
	out := make([]byte, 0, len(b)-(s.end-s.start)+len(v))
	out = append(out, b[:s.start]...)
	out = append(out, v...)
	return append(out, b[s.end:]...)
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
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

// skipValue returns the index after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing JSON value")
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, err := skipString(b, j)
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
