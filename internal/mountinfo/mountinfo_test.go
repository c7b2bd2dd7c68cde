package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/plain/path", "/plain/path"},
		{`/a\040b`, "/a b"},
		{`/tab\011nl\012`, "/tab\tnl\n"},
		{`/a\040b\134c\`, `/a b\c\`},
		{`/not\08octal`, `/not\08octal`},
		{`/too\777big`, `/too\777big`},
		{`/short\04`, `/short\04`},
	} {
		if got := Unescape(tc.in); got != tc.want {
			t.Errorf("Unescape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
