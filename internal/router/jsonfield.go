package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// span is the byte range [start,end) of a JSON value inside a body.
type span struct{ start, end int }

// field is one top-level field of a JSON object.
type field struct {
	name []byte // the unescaped field name; aliases the body unless it had escapes
	val  span
}

// fieldSet is the top-level fields of a JSON object, in body order.
type fieldSet []field

// get returns the span of the value of the field called name.
func (fs fieldSet) get(name string) (span, bool) {
	for i := range fs {
		if string(fs[i].name) == name {
			return fs[i].val, true
		}
	}
	return span{}, false
}

// dupCheckLinear is how many fields are checked for duplicates by
// comparison; beyond it a map is built (a hostile body may have millions).
const dupCheckLinear = 16

// topFields returns the spans of the values of a JSON object's top-level
// fields, appended to dst (pass a stack or pooled array to avoid
// allocating). The body must be valid JSON (checked by the caller with
// json.Valid); a duplicate field is an error so that the router and the
// provider cannot disagree about which "model" or "tools" counts. Only
// names with escapes allocate.
func topFields(b []byte, dst fieldSet) (fieldSet, error) {
	fields := dst[:0]
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, errors.New("request body is not a JSON object")
	}
	var seen map[string]struct{}
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
		key := b[i+1 : kEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			if err := json.Unmarshal(b[i:kEnd], &k); err != nil {
				return nil, fmt.Errorf("malformed JSON key at byte %d", i)
			}
			key = []byte(k)
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
		dup := false
		if seen == nil {
			_, dup = fields.get(string(key))
			if !dup && len(fields) >= dupCheckLinear {
				seen = make(map[string]struct{}, 2*len(fields))
				for _, f := range fields {
					seen[string(f.name)] = struct{}{}
				}
			}
		} else {
			_, dup = seen[string(key)]
		}
		if dup {
			return nil, fmt.Errorf("duplicate top-level field %q", key)
		}
		if seen != nil {
			seen[string(key)] = struct{}{}
		}
		fields = append(fields, field{name: key, val: span{i, vEnd}})
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
