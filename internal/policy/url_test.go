package policy

import (
	"net/url"
	"strings"
	"testing"
)

func TestHTTPURLHost(t *testing.T) {
	tests := []struct {
		in, scheme, host string
		ok               bool
	}{
		{"https://registry.example.test/", "https", "registry.example.test", true},
		{"HTTP://10.0.0.9:3142/debian", "http", "10.0.0.9:3142", true},
		{"https://user:pw@mirror.example.test:8443/x?y#z", "https", "mirror.example.test:8443", true},
		{"https://[2001:db8::1]:444", "https", "[2001:db8::1]:444", true},
		{"https://h.example.test?q=/x", "https", "h.example.test", true},
		{"https://h.example.test#frag/x", "https", "h.example.test", true},
		{"no scheme is refused", "", "", false},
		{"ftp://h.example.test/", "", "", false},
		{"https:///path-without-host", "", "", false},
		{"https://user@", "", "", false},
		{"https://h%2eexample.test/ escapes are refused", "", "", false},
		{"https://h.example.test\\@evil.test/", "", "", false},
		{"https://h.example.test\n", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			scheme, host, ok := httpURLHost(tc.in)
			if scheme != tc.scheme || host != tc.host || ok != tc.ok {
				t.Errorf("httpURLHost(%q) = %q, %q, %v; want %q, %q, %v", tc.in, scheme, host, ok, tc.scheme, tc.host, tc.ok)
			}
		})
	}
}

// FuzzHTTPURLHost checks httpURLHost against url.Parse: whatever it accepts,
// url.Parse accepts with the same scheme and host.
func FuzzHTTPURLHost(f *testing.F) {
	for _, s := range []string{"https://registry.example.test/", "http://10.0.0.9:3142/debian", "https://u:p@h:1/x?y#z",
		"https://[::1]:8443", "HtTpS://H.example.test", "https://a@b@c/", "https://h:port/", "https://h/x:y@z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scheme, host, ok := httpURLHost(s)
		if !ok {
			return
		}
		u, err := url.Parse(s)
		if err != nil {
			// A URL that url.Parse refuses for its host or port is refused
			// by urlEndpoint too (hostport checks them); the user
			// information is ignored.
			if _, eerr := urlEndpoint(s); eerr == nil && !strings.Contains(err.Error(), "userinfo") {
				t.Fatalf("urlEndpoint(%q) accepts what url.Parse refuses: %v", s, err)
			}
			return
		}
		if u.Scheme != scheme || u.Host != host {
			t.Fatalf("httpURLHost(%q) = %q, %q; url.Parse gives %q, %q", s, scheme, host, u.Scheme, u.Host)
		}
	})
}
