package router

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/clawcage/clawcage/internal/jsonscan"
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
// names with escapes or invalid UTF-8 allocate (decoded as encoding/json
// does).
func topFields(b []byte, dst fieldSet) (fieldSet, error) {
	fields := dst[:0]
	i := jsonscan.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, errors.New("request body is not a JSON object")
	}
	var seen map[string]struct{}
	i = jsonscan.SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return fields, nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return nil, fmt.Errorf("malformed JSON at byte %d", i)
		}
		kEnd, err := jsonscan.SkipString(b, i)
		if err != nil {
			return nil, err
		}
		key := b[i+1 : kEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 || !utf8.Valid(key) {
			// Decoded as the provider's JSON decoder does: escapes, and
			// invalid UTF-8 as U+FFFD (so "\x80" and "\xff" are duplicates).
			k, ok := jsonscan.Unquote(b[i:kEnd])
			if !ok {
				return nil, fmt.Errorf("malformed JSON key at byte %d", i)
			}
			key = []byte(k)
		}
		i = jsonscan.SkipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return nil, fmt.Errorf("malformed JSON at byte %d", i)
		}
		i = jsonscan.SkipWS(b, i+1)
		vEnd, err := jsonscan.SkipValue(b, i)
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
		i = jsonscan.SkipWS(b, vEnd)
		if i < len(b) && b[i] == ',' {
			i = jsonscan.SkipWS(b, i+1)
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
