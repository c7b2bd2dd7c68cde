package jsonscan

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestSkipWS(t *testing.T) {
	tests := []struct {
		name string
		in   string
		i    int
		want int
	}{
		{"empty input", "", 0, 0},
		{"no whitespace", `{"a":1}`, 0, 0},
		{"all four kinds skipped", " \t\r\n{", 0, 4},
		{"starts mid-slice", `{ "a"`, 1, 2},
		{"only whitespace runs to the end", "  \n", 0, 3},
		{"form feed is not JSON whitespace", "\f{", 0, 0},
		{"start past the end stays", "ab", 5, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SkipWS([]byte(tc.in), tc.i); got != tc.want {
				t.Fatalf("SkipWS(%q, %d) = %d, want %d", tc.in, tc.i, got, tc.want)
			}
		})
	}
}

// skipCase is a case for SkipString or SkipValue: the index they return
// for in starting at i, or the error they fail with.
type skipCase struct {
	name    string
	in      string
	i       int
	want    int
	wantErr string
}

func TestSkipString(t *testing.T) {
	testSkip(t, "SkipString", SkipString, []skipCase{
		{"plain string", `"abc",`, 0, 5, ""},
		{"empty string", `""`, 0, 2, ""},
		{"escaped quote does not end it", `"a\"b"x`, 0, 6, ""},
		{"escaped backslash before the end quote", `"a\\"x`, 0, 5, ""},
		{"unicode escape", `"\u00e9"`, 0, 8, ""},
		{"string inside a larger body", `{"k":"v"}`, 5, 8, ""},
		{"unterminated", `"abc`, 0, 0, "unterminated JSON string"},
		{"ends in an escaped quote", `"abc\"`, 0, 0, "unterminated JSON string"},
		{"lone quote", `"`, 0, 0, "unterminated JSON string"},
	})
}

func TestSkipValue(t *testing.T) {
	testSkip(t, "SkipValue", SkipValue, []skipCase{
		{"string", `"a,b"`, 0, 5, ""},
		{"number ends at comma", `12.5e3,`, 0, 6, ""},
		{"number ends at closing brace", `{"a":-1}`, 5, 7, ""},
		{"number ends at closing bracket", `[7]`, 1, 2, ""},
		{"literal ends at whitespace", "true \n", 0, 4, ""},
		{"literal ends at tab", "null\t", 0, 4, ""},
		{"literal ends at carriage return", "false\r", 0, 5, ""},
		{"number runs to the end", `42`, 0, 2, ""},
		{"empty object", `{}x`, 0, 2, ""},
		{"empty array", `[]x`, 0, 2, ""},
		{"nested object and array", `{"a":[1,{"b":[]}],"c":{}} ,`, 0, 25, ""},
		{"brackets inside strings are not counted", `{"a":"}]{[","b":"\"}"}`, 0, 22, ""},
		{"value inside a larger body", `{"m":{"x":1},"n":2}`, 5, 12, ""},
		{"nothing at the end", `{"a":`, 5, 0, "missing JSON value"},
		{"empty input", ``, 0, 0, "missing JSON value"},
		{"unterminated object", `{"a":[1,2]`, 0, 0, "unterminated JSON value"},
		{"unterminated array", `[1,[2]`, 0, 0, "unterminated JSON value"},
		{"unterminated string inside an object", `{"a":"b`, 0, 0, "unterminated JSON string"},
		{"unterminated string", `"abc`, 0, 0, "unterminated JSON string"},
		{"delimiter where a value should be", `,1`, 0, 0, "malformed JSON at byte 0"},
		{"whitespace where a value should be", `{"a": 1}`, 5, 0, "malformed JSON at byte 5"},
		{"closing brace where a value should be", `{"a":}`, 5, 0, "malformed JSON at byte 5"},
	})
}

func testSkip(t *testing.T, name string, skip func([]byte, int) (int, error), tests []skipCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := skip([]byte(tc.in), tc.i)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("%s(%q, %d) = %d, %v; want error %q", name, tc.in, tc.i, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%s(%q, %d) = %d, %v; want %d", name, tc.in, tc.i, got, err, tc.want)
			}
		})
	}
}

func TestUnquote(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   string
		wantOK bool
	}{
		{"plain", `"gpt-4o"`, "gpt-4o", true},
		{"empty", `""`, "", true},
		{"escaped quote and backslash", `"a\"b\\c"`, `a"b\c`, true},
		{"unicode escape", `"caf\u00e9"`, "café", true},
		{"surrogate pair", `"\ud83d\ude00"`, "\U0001F600", true},
		{"raw UTF-8 passes through", `"café"`, "café", true},
		{"invalid UTF-8 becomes U+FFFD as in encoding/json", "\"a\xffb\"", "a\uFFFDb", true},
		{"number is not a string", `12`, "", false},
		{"null is not a string", `null`, "", false},
		{"missing closing quote", `"abc`, "", false},
		{"lone quote", `"`, "", false},
		{"leading whitespace is not trimmed", ` "a"`, "", false},
		{"bad escape", `"\x"`, "", false},
		{"cut-off unicode escape", `"\u00"`, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Unquote([]byte(tc.in))
			if got != tc.want || ok != tc.wantOK {
				t.Fatalf("Unquote(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestUnquoteAllocs keeps the common case cheap: a literal without escapes
// costs only the string it returns (the router decodes every request's
// model this way).
func TestUnquoteAllocs(t *testing.T) {
	b := []byte(`"gpt-4o-mini"`)
	var sink string
	got := testing.AllocsPerRun(100, func() { sink, _ = Unquote(b) })
	if got != 1 || sink != "gpt-4o-mini" {
		t.Fatalf("Unquote(%s) = %q with %v allocations, want 1", b, sink, got)
	}
}

// FuzzScan checks the scanners against encoding/json: on valid JSON,
// SkipValue finds exactly the value (nothing but whitespace after it) and
// Unquote decodes a string as json.Unmarshal does; on any input, nothing
// panics and every index returned is within the input.
func FuzzScan(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[1,{"c":"d\"}"}],"e":"\u00e9\\","a":true}`))
	f.Add([]byte(` [ 1 , "x" , {"y":null} , [] ] `))
	f.Add([]byte(`"caf\u00e9 \ud83d\ude00"`))
	f.Add([]byte(`{"unterminated":[1,2`))
	f.Add([]byte("\"a\xffb\""))
	f.Fuzz(func(t *testing.T, in []byte) {
		start := SkipWS(in, 0)
		if start > len(in) {
			t.Fatalf("SkipWS(%q, 0) = %d, beyond the input", in, start)
		}
		end, err := SkipValue(in, start)
		if err == nil && (end <= start || end > len(in)) {
			t.Fatalf("SkipValue(%q, %d) = %d, outside (start, len]", in, start, end)
		}
		if start < len(in) && in[start] == '"' {
			se, serr := SkipString(in, start)
			if (serr == nil) != (err == nil) || (serr == nil && se != end) {
				t.Fatalf("SkipString(%q) = %d, %v; SkipValue %d, %v", in, se, serr, end, err)
			}
		}
		if !json.Valid(in) {
			return
		}
		if err != nil {
			t.Fatalf("SkipValue(%q, %d) on valid JSON: %v", in, start, err)
		}
		if SkipWS(in, end) != len(in) {
			t.Fatalf("SkipValue(%q, %d) = %d, but more than whitespace follows", in, start, end)
		}
		var want string
		werr := json.Unmarshal(in, &want)
		got, ok := Unquote(bytes.TrimSpace(in))
		if (werr == nil) != ok || got != want {
			t.Fatalf("Unquote(%q) = %q, %v; encoding/json %q, %v", in, got, ok, want, werr)
		}
	})
}
