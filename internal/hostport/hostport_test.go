package hostport

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		def      int
		wantHost string
		wantPort int
		wantErr  string
	}{
		{"name and port", "api.example.com:8443", 443, "api.example.com", 8443, ""},
		{"name default port", "api.example.com", 443, "api.example.com", 443, ""},
		{"ipv4 and port", "10.0.0.1:80", 443, "10.0.0.1", 80, ""},
		{"bracketed v6 and port", "[2001:db8::1]:443", 0, "2001:db8::1", 443, ""},
		{"bracketed v6 default port", "[::1]", 443, "::1", 443, ""},
		{"bracketed v6 zone kept for later rejection", "[fe80::1%eth0]:80", 0, "fe80::1%eth0", 80, ""},
		{"unbracketed v6 is ambiguous", "2001:db8::1:443", 443, "", 0, "must be written in brackets"},
		{"unbracketed v6 without port", "::1", 443, "", 0, "must be written in brackets"},
		{"missing closing bracket", "[::1:443", 443, "", 0, "missing ']'"},
		{"junk after bracket", "[::1]x:443", 443, "", 0, "unexpected"},
		{"bracketed name", "[example.com]:443", 443, "", 0, "only an IPv6 address may be bracketed"},
		{"bracket inside name", "exa[mple.com:443", 443, "", 0, "unexpected bracket"},
		{"port required", "example.com", 0, "", 0, "missing port"},
		{"empty port", "example.com:", 443, "", 0, "empty port"},
		{"port zero", "example.com:0", 443, "", 0, `"0" is not a port`},
		{"port too big", "example.com:65536", 443, "", 0, `"65536" is not a port`},
		{"port with sign", "example.com:+443", 443, "", 0, "is not a port"},
		{"port with leading zero", "example.com:0443", 443, "", 0, "is not a port"},
		{"port with space", "example.com: 443", 443, "", 0, "is not a port"},
		{"huge port", "example.com:99999999999999999999", 443, "", 0, "is not a port"},
		{"hex port", "example.com:0x1bb", 443, "", 0, "is not a port"},
		{"empty", "", 443, "", 0, "empty host"},
		{"empty host with port", ":443", 443, "", 0, "empty host"},
		{"max port", "example.com:65535", 443, "example.com", 65535, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, p, err := Split(tt.in, tt.def)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Split(%q) = %q, %d, %v; want error containing %q", tt.in, h, p, err, tt.wantErr)
				}
				return
			}
			if err != nil || h != tt.wantHost || p != tt.wantPort {
				t.Fatalf("Split(%q) = %q, %d, %v; want %q, %d", tt.in, h, p, err, tt.wantHost, tt.wantPort)
			}
		})
	}
}

func TestParseIPLiteral(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string // canonical address; "" for a name
		wantErr bool
	}{
		{"dotted quad", "127.0.0.1", "127.0.0.1", false},
		{"dotted quad trailing dot", "127.0.0.1.", "127.0.0.1", false},
		{"ipv6", "::1", "::1", false},
		{"bracketed ipv6", "[2001:db8::1]", "2001:db8::1", false},
		{"ipv4-mapped ipv6", "::ffff:127.0.0.1", "::ffff:127.0.0.1", false},
		{"decimal integer", "2130706433", "", true},
		{"hex integer", "0x7f000001", "", true},
		{"hex first octet short form", "0x7f.1", "", true},
		{"octal octet", "0177.0.0.1", "", true},
		{"leading zero octet", "127.0.0.01", "", true},
		{"two parts", "127.1", "", true},
		{"three parts", "1.2.3", "", true},
		{"five parts", "1.2.3.4.5", "", true},
		{"octet over 255", "256.0.0.1", "", true},
		{"uppercase hex", "0X7F.0.0.1", "", true},
		{"bare 0x", "example.0x", "", true},
		{"numeric tld", "example.123", "", true},
		{"ipv6 zone", "fe80::1%eth0", "", true},
		{"bracketed zone", "[fe80::1%25eth0]", "", true},
		{"bad ipv6", "1:2:3:4:5:6:7:8:9", "", true},
		{"bracketed ipv4", "[127.0.0.1]", "", true},
		{"unbalanced bracket", "[::1", "", true},
		{"empty", "", "", true},
		{"name", "example.com", "", false},
		{"name with numeric first label", "127.example.com", "", false},
		{"name with hex-looking label", "0x7f.example.com", "", false},
		{"name ending in hex letters", "cafe.dead", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, ok, err := ParseIPLiteral(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseIPLiteral(%q) = %v, %v, nil; want error", tt.in, a, ok)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseIPLiteral(%q): %v", tt.in, err)
			}
			if tt.want == "" {
				if ok {
					t.Fatalf("ParseIPLiteral(%q) = %v, true; want a name", tt.in, a)
				}
				return
			}
			if !ok || a != netip.MustParseAddr(tt.want) {
				t.Fatalf("ParseIPLiteral(%q) = %v, %v; want %s", tt.in, a, ok, tt.want)
			}
		})
	}
}

func TestNormalizeHost(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr string
	}{
		{"lower case", "api.example.com", "api.example.com", ""},
		{"upper case folded", "API.Example.COM", "api.example.com", ""},
		{"trailing dot stripped", "api.example.com.", "api.example.com", ""},
		{"two trailing dots", "api.example.com..", "", "empty label"},
		{"idna to punycode", "bücher.example", "xn--bcher-kva.example", ""},
		{"punycode kept", "xn--bcher-kva.example", "xn--bcher-kva.example", ""},
		{"cyrillic homograph becomes punycode", "аpple.com", "xn--pple-43d.com", ""},
		{"fullwidth letters map to ascii", "ｅｘａｍｐｌｅ.com", "example.com", ""},
		{"ideographic full stop is a dot", "example。com", "example.com", ""},
		{"fullwidth digits spelling loopback", "１２７.０.０.１", "127.0.0.1", ""},
		{"fullwidth digits numeric trick", "１２７.１", "", "numeric host"},
		{"invalid punycode", "xn--zz.example", "", "not a valid internationalised name"},
		{"triple hyphen label allowed", "r1---sn-abc.example.com", "r1---sn-abc.example.com", ""},
		{"leading hyphen", "-bad.example.com", "", "hyphen"},
		{"trailing hyphen", "bad-.example.com", "", "hyphen"},
		{"underscore", "a_b.example.com", "", "not a valid internationalised name"},
		{"empty", "", "", "empty host"},
		{"only a dot", ".", "", "empty label"},
		{"leading dot", ".example.com", "", "empty label"},
		{"empty middle label", "a..example.com", "", "empty label"},
		{"space", "exa mple.com", "", "contains"},
		{"newline", "example.com\nx", "", "contains"},
		{"ansi escape", "\x1b[31mexample.com", "", "contains"},
		{"nul", "example.com\x00.evil", "", "contains"},
		{"percent encoding", "%31%32%37.0.0.1", "", "contains"},
		{"userinfo", "user@example.com", "", "contains"},
		{"slash", "example.com/x", "", "contains"},
		{"label of 63 ok", long63 + ".com", long63 + ".com", ""},
		{"label of 64", "a" + long63 + ".com", "", "label of 64 bytes is longer than 63"},
		{"name of 253 ok", strings.Repeat(long63+".", 3) + strings.Repeat("a", 61), strings.Repeat(long63+".", 3) + strings.Repeat("a", 61), ""},
		{"name of 254", strings.Repeat(long63+".", 3) + strings.Repeat("a", 62), "", "name of 254 bytes is longer than 253"},
		{"decimal ip trick", "2130706433", "", "numeric host"},
		{"octal trick", "0177.0.0.1", "", "numeric host"},
		{"ipv4 canonical", "127.0.0.1", "127.0.0.1", ""},
		{"ipv4 trailing dot", "127.0.0.1.", "127.0.0.1", ""},
		{"ipv6 bracketed", "[0:0::1]", "::1", ""},
		{"ipv6 upper case", "2001:DB8::1", "2001:db8::1", ""},
		{"ipv6 zone", "fe80::1%eth0", "", "contains"},
		{"emoji", "☃.example", "xn--n3h.example", ""},
		{"fraction slash lookalike shown as punycode", "a\u2044b.example", "xn--ab-c6t.example", ""},
		{"disallowed symbol", "a\u2488b.example", "", "not a valid"},
		{"bidi rule violation", "\u05d0a.example", "", "not a valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeHost(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("NormalizeHost(%q) = %q; want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NormalizeHost(%q) error = %q; want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{"example.com:443", "[::1]:80", "[::1]", "a:b:c", "[", "]:", "x:0", "x:65535", "[fe80::1%eth0]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := Split(s, 443)
		if err != nil {
			return
		}
		if host == "" || port < 1 || port > 65535 {
			t.Fatalf("Split(%q) = %q, %d without error", s, host, port)
		}
		h2, p2, err := Split(Join(host, port), 0)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("Split(Join(%q, %d)) = %q, %d, %v", host, port, h2, p2, err)
		}
	})
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"Example.COM.", "bücher.example", "xn--bcher-kva.example", "127.1", "0x7f.1", "[::1]", "１２７.０.０.１", "a..b", "аpple.com", "r1---sn.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeHost(s)
		if err != nil {
			return
		}
		if len(n) == 0 || len(n) > maxNameLen {
			t.Fatalf("NormalizeHost(%q) = %q: bad length", s, n)
		}
		for i := 0; i < len(n); i++ {
			c := n[i]
			if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':') {
				t.Fatalf("NormalizeHost(%q) = %q: contains %q", s, n, c)
			}
		}
		if strings.HasSuffix(n, ".") {
			t.Fatalf("NormalizeHost(%q) = %q: trailing dot", s, n)
		}
		again, err := NormalizeHost(n)
		if err != nil || again != n {
			t.Fatalf("NormalizeHost not idempotent: %q -> %q -> %q, %v", s, n, again, err)
		}
		if _, _, err := ParseIPLiteral(n); err != nil {
			t.Fatalf("NormalizeHost(%q) = %q, which ParseIPLiteral rejects: %v", s, n, err)
		}
	})
}

func TestNormalizeHostRejectsInvalidUTF8(t *testing.T) {
	for _, s := range []string{"\xf90", "a\xffb.example", "\xc0\xae.example"} {
		if n, err := NormalizeHost(s); err == nil {
			t.Errorf("NormalizeHost(%q) = %q; want error", s, n)
		}
	}
}
