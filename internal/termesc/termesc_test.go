package termesc

import "testing"

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain text kept", "hello, world", "hello, world"},
		{"non-ascii letters kept", "grüße 日本", "grüße 日本"},
		{"ansi clear screen", "\x1b[2Jgone", `\x1b[2Jgone`},
		{"newline cannot forge a second line", "ok\n2026-01-01 router: fake", `ok\n2026-01-01 router: fake`},
		{"carriage return", "a\rb", `a\rb`},
		{"bell and nul", "\a\x00", `\x07\x00`},
		{"DEL", "a\x7fb", `a\x7fb`},
		{"C1 CSI as utf-8", "a\u009b2Jb", `a\x9b2Jb`},
		{"bidi override", "evil\u202etxt.exe", `evil\u202etxt.exe`},
		{"zero width joiner", "pay\u200dpal", `pay\u200dpal`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid utf-8 byte", "a\xffb", `a\xffb`},
		{"backslash kept", `C:\path`, `C:\path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Escape(tt.in); got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "abc", "\x1b[2J", "\n\r\t", "\u202e", "\xff\xfe", "\u009b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Escape(s)
		if needsEscape(out) {
			t.Fatalf("Escape(%q) = %q still holds a dangerous character", s, out)
		}
		if Escape(out) != out {
			t.Fatalf("Escape is not idempotent on %q", s)
		}
	})
}

func TestAppendHexEscape(t *testing.T) {
	tests := []struct {
		kind  byte
		r     rune
		width int
		want  string
	}{
		{'x', 0x1b, 2, `\x1b`},
		{'x', 0xff, 2, `\xff`},
		{'u', 0x202e, 4, `\u202e`},
		{'u', 0x85, 4, `\u0085`},
		{'u', 0x1f600, 4, `\u1f600`},
	}
	for _, tt := range tests {
		if got := string(AppendHexEscape([]byte("a"), tt.kind, tt.r, tt.width)); got != "a"+tt.want {
			t.Errorf("AppendHexEscape(%q, %#x, %d) = %q, want %q", tt.kind, tt.r, tt.width, got, "a"+tt.want)
		}
	}
}
