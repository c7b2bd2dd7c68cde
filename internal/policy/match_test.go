package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/clawcage/clawcage/internal/ipclass"
)

const matrixPolicy = `
network:
  - {name: exact, hosts: [api.example.com]}
  - {name: wild, hosts: ["*.wild.example"], ports: [443, 8443]}
  - name: plain-get
    hosts: [get.example.com]
    ports: [80]
    methods: [GET, HEAD]
    paths: ["/repos/*/issues", "/static/**"]
  - {name: post-only, hosts: [get.example.com], ports: [80], methods: [POST], paths: ["/upload"]}
  - {name: db, cidrs: [10.0.5.0/24], ports: [5432]}
  - {name: db-named, hosts: [db.corp.example], cidrs: [10.0.6.0/24], ports: [5432]}
  - {name: public-any, cidrs: ["0.0.0.0/0"], ports: [8080]}
  - {name: v6net, cidrs: ["2001:db8:1::/48"]}
  - {name: metadata, cidrs: [169.254.169.254/32], ports: [80], methods: [GET]}
  - {name: intl, hosts: [bücher.example]}
  - {name: anything-80, hosts: [any.example], ports: [80]}
`

func mustMatcher(t testing.TB, src string) *Matcher {
	t.Helper()
	p, err := Parse([]byte(src), "matrix.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m, err := p.Compile(CompileOptions{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return m
}

func TestDecideName(t *testing.T) {
	m := mustMatcher(t, matrixPolicy)
	tests := []struct {
		name   string
		host   string
		port   int
		method string
		path   string
		allow  bool
		rule   string
		reason string
	}{
		{"exact host, default port 443", "api.example.com", 443, "", "", true, "exact", ReasonAllowed},
		{"exact host, upper case", "API.Example.COM", 443, "", "", true, "exact", ReasonAllowed},
		{"exact host, trailing dot", "api.example.com.", 443, "", "", true, "exact", ReasonAllowed},
		{"exact host, fullwidth spelling", "ａｐｉ.example.com", 443, "", "", true, "exact", ReasonAllowed},
		{"exact host, port not listed", "api.example.com", 8443, "", "", false, "exact", ReasonPortNotAllowed},
		{"exact host, plain http port 80 not default", "api.example.com", 80, "GET", "/", false, "exact", ReasonPortNotAllowed},
		{"exact host, plain http on 443 allowed", "api.example.com", 443, "POST", "/anything", true, "exact", ReasonAllowed},
		{"subdomain of exact host", "x.api.example.com", 443, "", "", false, "", ReasonNoRuleForHost},
		{"parent of exact host", "example.com", 443, "", "", false, "", ReasonNoRuleForHost},
		{"allowed name as prefix of evil name", "api.example.com.evil.example", 443, "", "", false, "", ReasonNoRuleForHost},
		{"unlisted host", "attacker.example", 443, "", "", false, "", ReasonNoRuleForHost},
		{"wildcard one label", "a.wild.example", 443, "", "", true, "wild", ReasonAllowed},
		{"wildcard two labels", "a.b.wild.example", 8443, "", "", true, "wild", ReasonAllowed},
		{"wildcard base not matched", "wild.example", 443, "", "", false, "", ReasonNoRuleForHost},
		{"wildcard suffix without dot", "evilwild.example", 443, "", "", false, "", ReasonNoRuleForHost},
		{"wildcard port not listed", "a.wild.example", 80, "", "", false, "wild", ReasonPortNotAllowed},
		{"connect to method-restricted host", "get.example.com", 80, "", "", false, "plain-get", ReasonTunnelNotAllowed},
		{"GET matching glob", "get.example.com", 80, "GET", "/repos/clawcage/issues", true, "plain-get", ReasonAllowed},
		{"HEAD matching glob", "get.example.com", 80, "HEAD", "/static/a/b/c.js", true, "plain-get", ReasonAllowed},
		{"star does not cross slash", "get.example.com", 80, "GET", "/repos/a/b/issues", false, "plain-get", ReasonPathNotAllowed},
		{"glob is anchored", "get.example.com", 80, "GET", "/repos/a/issues/1", false, "plain-get", ReasonPathNotAllowed},
		{"method not listed", "get.example.com", 80, "DELETE", "/repos/a/issues", false, "plain-get", ReasonMethodNotAllowed},
		{"method case matters", "get.example.com", 80, "get", "/repos/a/issues", false, "plain-get", ReasonMethodNotAllowed},
		{"second rule for same host allows POST", "get.example.com", 80, "POST", "/upload", true, "post-only", ReasonAllowed},
		{"POST to the other rule's path", "get.example.com", 80, "POST", "/repos/a/issues", false, "post-only", ReasonPathNotAllowed},
		{"dot-dot escape from glob", "get.example.com", 80, "GET", "/static/../admin", false, "plain-get", ReasonInvalidPath},
		{"encoded dot-dot", "get.example.com", 80, "GET", "/static/%2e%2e/admin", false, "plain-get", ReasonInvalidPath},
		{"encoded slash", "get.example.com", 80, "GET", "/repos/a%2Fb/issues", false, "plain-get", ReasonInvalidPath},
		{"path with query", "get.example.com", 80, "GET", "/static/x?y=1", false, "plain-get", ReasonInvalidPath},
		{"restricted rule wrong port", "get.example.com", 443, "GET", "/static/x", false, "plain-get", ReasonPortNotAllowed},
		{"idna name", "bücher.example", 443, "", "", true, "intl", ReasonAllowed},
		{"idna name upper case", "BÜCHER.example", 443, "", "", true, "intl", ReasonAllowed},
		{"punycode spelling", "xn--bcher-kva.example", 443, "", "", true, "intl", ReasonAllowed},
		{"ascii lookalike is another host", "bucher.example", 443, "", "", false, "", ReasonNoRuleForHost},
		{"cyrillic homograph of allowed host", "аpi.example.com", 443, "", "", false, "", ReasonNoRuleForHost},
		{"ip literal in cidr rule", "10.0.5.3", 5432, "", "", true, "db", ReasonAllowed},
		{"ip literal cidr rule wrong port", "10.0.5.3", 443, "", "", false, "db", ReasonPortNotAllowed},
		{"ip literal outside any cidr on that port", "10.0.7.1", 5432, "", "", false, "public-any", ReasonPortNotAllowed},
		{"ipv6 literal outside any cidr", "2606:4700::1111", 443, "", "", false, "", ReasonNoRuleForAddress},
		{"public ip via 0.0.0.0/0", "93.184.216.34", 8080, "", "", true, "public-any", ReasonAllowed},
		{"loopback not named by 0.0.0.0/0", "127.0.0.1", 8080, "", "", false, "public-any", ReasonSpecialAddress},
		{"metadata not named by 0.0.0.0/0", "169.254.169.254", 8080, "", "", false, "public-any", ReasonSpecialAddress},
		{"private not named by 0.0.0.0/0", "192.168.1.1", 8080, "", "", false, "public-any", ReasonSpecialAddress},
		{"ipv4-mapped loopback literal", "::ffff:127.0.0.1", 8080, "", "", false, "public-any", ReasonSpecialAddress},
		{"bracketed ipv4-mapped loopback", "[::ffff:7f00:1]", 8080, "", "", false, "public-any", ReasonSpecialAddress},
		{"ipv6 documentation range named by /48", "2001:db8:1::5", 443, "", "", true, "v6net", ReasonAllowed},
		{"metadata named, GET allowed", "169.254.169.254", 80, "GET", "/latest/meta-data/", true, "metadata", ReasonAllowed},
		{"metadata named, tunnel refused", "169.254.169.254", 80, "", "", false, "metadata", ReasonTunnelNotAllowed},
		{"ip literal allowed only by cidrs, never by name rule", "93.184.216.34", 443, "", "", false, "public-any", ReasonPortNotAllowed},
		{"decimal ip trick", "2130706433", 8080, "", "", false, "", ReasonInvalidHost},
		{"hex ip trick", "0x7f.1", 8080, "", "", false, "", ReasonInvalidHost},
		{"octal ip trick", "0177.0.0.1", 8080, "", "", false, "", ReasonInvalidHost},
		{"short ip trick", "127.1", 8080, "", "", false, "", ReasonInvalidHost},
		{"fullwidth digits loopback", "１２７.０.０.１", 8080, "", "", false, "public-any", ReasonSpecialAddress},
		{"ipv6 zone", "fe80::1%eth0", 8080, "", "", false, "", ReasonInvalidHost},
		{"newline in host", "api.example.com\r\nX-Evil: 1", 443, "", "", false, "", ReasonInvalidHost},
		{"ansi in host", "\x1b[2Japi.example.com", 443, "", "", false, "", ReasonInvalidHost},
		{"empty host", "", 443, "", "", false, "", ReasonInvalidHost},
		{"port zero", "api.example.com", 0, "", "", false, "", ReasonInvalidPort},
		{"port too big", "api.example.com", 65536, "", "", false, "", ReasonInvalidPort},
		{"name allowed on port 80", "any.example", 80, "", "", true, "anything-80", ReasonAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := m.DecideName(tt.host, tt.port, tt.method, tt.path)
			if d.Allow != tt.allow || d.Rule != tt.rule || d.Reason != tt.reason {
				t.Fatalf("DecideName(%q, %d, %q, %q) = %+v; want allow=%v rule=%q reason=%q",
					tt.host, tt.port, tt.method, tt.path, d, tt.allow, tt.rule, tt.reason)
			}
		})
	}
}

func TestDecideNameNormalisedHost(t *testing.T) {
	m := mustMatcher(t, matrixPolicy)
	for in, want := range map[string]string{
		"API.Example.COM.": "api.example.com",
		"BÜCHER.example":   "xn--bcher-kva.example",
		"[::FFFF:7f00:1]":  "::ffff:127.0.0.1",
		"attacker.example": "attacker.example",
	} {
		if d := m.DecideName(in, 443, "", ""); d.Host != want {
			t.Errorf("DecideName(%q).Host = %q; want %q", in, d.Host, want)
		}
	}
	if d := m.DecideName("10.0.5.3", 5432, "", ""); d.Addr != netip.MustParseAddr("10.0.5.3") {
		t.Errorf("literal Addr = %v", d.Addr)
	}
	if d := m.DecideName("api.example.com", 443, "", ""); d.Addr.IsValid() {
		t.Errorf("name has Addr %v", d.Addr)
	}
}

func TestDecideAddr(t *testing.T) {
	m := mustMatcher(t, matrixPolicy)
	tests := []struct {
		name     string
		addr     string
		port     int
		nameRule string
		allow    bool
		rule     string
		reason   string
	}{
		{"allowed name resolving to a public address", "93.184.216.34", 443, "exact", true, "exact", ReasonAllowed},
		{"allowed name resolving to public ipv6", "2606:4700::1111", 443, "exact", true, "exact", ReasonAllowed},
		{"allowed name resolving to loopback", "127.0.0.1", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"allowed name resolving to ipv6 loopback", "::1", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"allowed name resolving to metadata", "169.254.169.254", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"allowed name resolving to private", "192.168.0.10", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"allowed name resolving to cgnat", "100.64.1.1", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"allowed name resolving to unspecified", "0.0.0.0", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"ipv4-mapped public is unmapped and allowed", "::ffff:93.184.216.34", 443, "exact", true, "exact", ReasonAllowed},
		{"ipv4-mapped loopback", "::ffff:127.0.0.1", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"nat64 loopback", "64:ff9b::7f00:1", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"nat64 public is still special", "64:ff9b::808:808", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"6to4 metadata", "2002:a9fe:a9fe::1", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"teredo private client", "2001:0:4136:e378:8000:63bf:3f57:fefe", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"ipv4-compatible loopback", "::127.0.0.1", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"private named by a cidr rule on another port", "10.0.5.3", 443, "exact", false, "exact", ReasonSpecialAddress},
		{"private named by the name's own rule", "10.0.6.7", 5432, "db-named", true, "db-named", ReasonAllowed},
		{"private named by another unrestricted rule", "10.0.5.3", 5432, "db-named", true, "db-named", ReasonAllowed},
		{"private outside every cidr", "10.0.7.1", 5432, "db-named", false, "db-named", ReasonSpecialAddress},
		{"metadata named only by a restricted rule", "169.254.169.254", 80, "anything-80", false, "anything-80", ReasonSpecialAddress},
		{"public address for a rule on port 8080", "93.184.216.34", 8443, "wild", true, "wild", ReasonAllowed},
		{"port not in the name's rule", "93.184.216.34", 8443, "exact", false, "exact", ReasonPortNotAllowed},
		{"unknown rule", "93.184.216.34", 443, "gone", false, "gone", ReasonUnknownRule},
		{"zoned address", "fe80::1%eth0", 443, "exact", false, "exact", ReasonInvalidHost},
		{"literal in cidr", "10.0.5.3", 5432, "", true, "db", ReasonAllowed},
		{"literal mapped form in cidr", "::ffff:10.0.5.3", 5432, "", true, "db", ReasonAllowed},
		{"literal outside cidrs", "8.8.8.8", 443, "", false, "", ReasonNoRuleForAddress},
		{"literal public via 0.0.0.0/0", "8.8.8.8", 8080, "", true, "public-any", ReasonAllowed},
		{"literal loopback via 0.0.0.0/0", "127.0.0.1", 8080, "", false, "public-any", ReasonSpecialAddress},
		{"literal port zero", "8.8.8.8", 0, "", false, "", ReasonInvalidPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := m.DecideAddr(netip.MustParseAddr(tt.addr), tt.port, tt.nameRule)
			if d.Allow != tt.allow || d.Rule != tt.rule || d.Reason != tt.reason {
				t.Fatalf("DecideAddr(%s, %d, %q) = %+v; want allow=%v rule=%q reason=%q",
					tt.addr, tt.port, tt.nameRule, d, tt.allow, tt.rule, tt.reason)
			}
		})
	}
	if d := m.DecideAddr(netip.Addr{}, 443, "exact"); d.Allow || d.Reason != ReasonInvalidHost {
		t.Fatalf("DecideAddr(zero) = %+v", d)
	}
	d := m.DecideAddr(netip.MustParseAddr("64:ff9b::a9fe:a9fe"), 443, "exact")
	if d.Detail != "nat64 64:ff9b::/96" {
		t.Fatalf("nat64 detail = %q", d.Detail)
	}
}

// TestEverySpecialRangeNeedsExplicitCIDR walks every range ipclass knows:
// a name rule never reaches an address in it; a cidr rule naming the range
// (or a part of it) does; a broader cidr rule does not.
func TestEverySpecialRangeNeedsExplicitCIDR(t *testing.T) {
	byName := mustMatcher(t, "network:\n  - {name: n, hosts: [n.example]}\n  - {name: everything, cidrs: [0.0.0.0/0, \"::/0\"], ports: [443]}\n")
	for _, r := range ipclass.Ranges() {
		a := r.Range.Addr()
		if r.Range.Bits() < a.BitLen() {
			a = a.Next()
		}
		if a.Is4In6() {
			continue // checked as IPv4 by DecideAddr
		}
		t.Run(r.Name+" "+r.Range.String(), func(t *testing.T) {
			if d := byName.DecideAddr(a, 443, "n"); d.Allow || d.Reason != ReasonSpecialAddress {
				t.Fatalf("name rule reached %s: %+v", a, d)
			}
			if d := byName.DecideAddr(a, 443, ""); d.Allow {
				t.Fatalf("0.0.0.0/0 and ::/0 reached %s: %+v", a, d)
			}
			c := ipclass.Classify(a)
			named := fmt.Sprintf("network:\n  - {name: n, hosts: [n.example]}\n  - {name: named, cidrs: [%q]}\n", c.Range)
			if c.Inner != nil && c.Inner.Special {
				named += fmt.Sprintf("  - {name: inner, cidrs: [%q]}\n", c.Inner.Range)
			}
			m := mustMatcher(t, named)
			if d := m.DecideAddr(a, 443, "n"); !d.Allow {
				t.Fatalf("cidr %s does not name %s: %+v", c.Range, a, d)
			}
			if d := m.DecideAddr(a, 443, ""); !d.Allow {
				t.Fatalf("literal %s not allowed by its cidr: %+v", a, d)
			}
		})
	}
}

func TestEmptyPolicyDeniesEverything(t *testing.T) {
	for _, src := range []string{"", "network: []\n", "presets: []\n"} {
		m := mustMatcher(t, src)
		for _, h := range []string{"api.example.com", "localhost", "127.0.0.1", "::1", "10.0.0.1", "8.8.8.8", "*.example.com", "."} {
			for _, method := range []string{"", "GET"} {
				if d := m.DecideName(h, 443, method, "/"); d.Allow {
					t.Fatalf("empty policy %q allowed %s %s: %+v", src, method, h, d)
				}
			}
		}
		for _, a := range []string{"8.8.8.8", "2606:4700::1111", "127.0.0.1"} {
			if d := m.DecideAddr(netip.MustParseAddr(a), 443, ""); d.Allow {
				t.Fatalf("empty policy allowed address %s: %+v", a, d)
			}
		}
		if len(m.Rules()) != 0 {
			t.Fatalf("empty policy has rules %v", m.Rules())
		}
	}
}

func TestIPLiteralNeedsCIDRRule(t *testing.T) {
	m := mustMatcher(t, "network:\n  - {name: n, hosts: [n.example], ports: [443, 80]}\n")
	for _, h := range []string{"93.184.216.34", "2606:4700::1111", "[2606:4700::1111]"} {
		if d := m.DecideName(h, 443, "", ""); d.Allow || d.Reason != ReasonNoRuleForAddress {
			t.Errorf("DecideName(%s) = %+v; want %s", h, d, ReasonNoRuleForAddress)
		}
	}
}

func TestRulesForDisplay(t *testing.T) {
	m := mustMatcher(t, "presets: [telegram]\nnetwork:\n  - {name: a, hosts: [A.example.com.]}\n")
	rules := m.Rules()
	if len(rules) != 2 || rules[0].Name != "a" || rules[0].Hosts[0] != "a.example.com" || rules[0].Ports[0] != DefaultPort {
		t.Fatalf("Rules() = %+v", rules)
	}
	if rules[1].Name != "telegram/bot-api" || rules[1].Hosts[0] != "api.telegram.org" {
		t.Fatalf("preset rule = %+v", rules[1])
	}
	rules[0].Hosts[0] = "evil.example" // must not change the matcher
	if d := m.DecideName("a.example.com", 443, "", ""); !d.Allow {
		t.Fatal("Rules() returned shared slices")
	}
}

func TestCompileContradictionWithPreset(t *testing.T) {
	p, err := Parse([]byte("presets: [github]\nnetwork:\n  - {name: read, hosts: [api.github.com], methods: [GET]}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Compile(CompileOptions{})
	want := `rule "read": restricts methods or paths for api.github.com port 443, but rule "github/api" allows every request there, so the restriction has no effect`
	if err == nil || err.Error() != want {
		t.Fatalf("Compile error = %v; want %q", err, want)
	}
}

func TestCompileExtraRules(t *testing.T) {
	p, err := Parse([]byte("network:\n  - {name: read, hosts: [api.example.com], methods: [GET]}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	grant := Rule{Name: "approved/7", Hosts: []string{"API.example.com"}, Ports: []int{443}}
	m, err := p.Compile(CompileOptions{Extra: []Rule{grant}})
	if err != nil {
		t.Fatalf("an approval widening a restricted rule must compile: %v", err)
	}
	if d := m.DecideName("api.example.com", 443, "", ""); !d.Allow || d.Rule != "approved/7" {
		t.Fatalf("CONNECT after approval = %+v", d)
	}
	if d := m.DecideName("api.example.com", 443, "GET", "/"); !d.Allow || d.Rule != "read" {
		t.Fatalf("GET after approval = %+v; want the policy's own rule first", d)
	}
	if _, err := p.Compile(CompileOptions{Extra: []Rule{{Name: "read", Hosts: []string{"x.example"}}}}); err == nil ||
		err.Error() != `rule "read": defined twice` {
		t.Fatalf("duplicate extra rule name: %v", err)
	}
	if _, err := p.Compile(CompileOptions{Extra: []Rule{{Name: "bad", Hosts: []string{"127.1"}}}}); err == nil {
		t.Fatal("extra rule with a numeric host trick compiled")
	}
}

func TestMatcherConcurrentUse(t *testing.T) {
	m := mustMatcher(t, matrixPolicy)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				h := fmt.Sprintf("h%d.wild.example", i)
				if d := m.DecideName(h, 443, "", ""); !d.Allow {
					errs <- fmt.Sprintf("goroutine %d: %s denied: %+v", g, h, d)
					return
				}
				if d := m.DecideAddr(netip.MustParseAddr("127.0.0.1"), 443, "wild"); d.Allow {
					errs <- "loopback allowed"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func TestSafeRequestPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/a/b": true, "/a/%20b": true, "/a/b/": true, "/a..b/": true,
		"": false, "a": false, "/a/../b": false, "/a/./b": false, "/..": false, "/a/%2E%2E/b": false,
		"/a%2fb": false, "/a%5Cb": false, "/a\\b": false, "/a b": false, "/a\x00": false, "/a%00": false,
		"/a%": false, "/a%2": false, "/a?b": false, "/a#b": false,
	} {
		if got := safeRequestPath(p); got != want {
			t.Errorf("safeRequestPath(%q) = %v; want %v", p, got, want)
		}
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		glob, path string
		want       bool
	}{
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/b/c", false},
		{"/a/**", "/a/b/c", true},
		{"/a/**", "/a/", true},
		{"/a/**", "/a", false},
		{"/a/?", "/a/b", true},
		{"/a/?", "/a/bc", false},
		{"/v1.0/x", "/v1a0/x", false}, // '.' is literal
		{"/a+b", "/a+b", true},
		{"/**/x", "/p/q/x", true},
	}
	for _, tt := range tests {
		if got := compileGlob(tt.glob).MatchString(tt.path); got != tt.want {
			t.Errorf("glob %q on %q = %v; want %v", tt.glob, tt.path, got, tt.want)
		}
	}
}

func BenchmarkDecideName(b *testing.B) {
	m := mustMatcher(b, matrixPolicy+strings.Repeat("", 0))
	for _, bc := range []struct{ name, host, method, path string }{
		{"exact", "api.example.com", "", ""},
		{"wildcard", "a.b.wild.example", "", ""},
		{"denied", "attacker.example", "", ""},
		{"mixed-case", "API.Example.com", "", ""},
		{"http-glob", "get.example.com", "GET", "/repos/clawcage/issues"},
		{"ip-literal", "10.0.5.3", "", ""},
	} {
		port := 443
		if bc.method != "" {
			port = 80
		}
		if bc.host == "10.0.5.3" {
			port = 5432
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = m.DecideName(bc.host, port, bc.method, bc.path)
			}
		})
	}
}

func BenchmarkDecideAddr(b *testing.B) {
	m := mustMatcher(b, matrixPolicy)
	for _, bc := range []struct{ name, addr string }{
		{"public-v4", "93.184.216.34"},
		{"public-v6", "2606:4700::1111"},
		{"loopback", "127.0.0.1"},
		{"nat64", "64:ff9b::7f00:1"},
	} {
		a := netip.MustParseAddr(bc.addr)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = m.DecideAddr(a, 443, "exact")
			}
		})
	}
}

func TestRuleForAndWithRule(t *testing.T) {
	tests := []struct {
		dest string
		want Rule
		err  string
	}{
		{"API.Example.com", Rule{Name: "ok", Hosts: []string{"api.example.com"}, Ports: []int{443}}, ""},
		{"api.example.com:8443", Rule{Name: "ok", Hosts: []string{"api.example.com"}, Ports: []int{8443}}, ""},
		{"*.example.com:80", Rule{Name: "ok", Hosts: []string{"*.example.com"}, Ports: []int{80}}, ""},
		{"10.0.5.3:5432", Rule{Name: "ok", CIDRs: []string{"10.0.5.3/32"}, Ports: []int{5432}}, ""},
		{"[2001:db8::1]:443", Rule{Name: "ok", CIDRs: []string{"2001:db8::1/128"}, Ports: []int{443}}, ""},
		{"bücher.example", Rule{Name: "ok", Hosts: []string{"xn--bcher-kva.example"}, Ports: []int{443}}, ""},
		{"127.1:80", Rule{}, `"127.1" is a numeric host that is not a canonical dotted-quad IPv4 address`},
		{"example.com:0", Rule{}, `"example.com:0": "0" is not a port`},
		{"*.com", Rule{}, `"*.com" is too broad: a wildcard needs at least two labels after "*."`},
	}
	for _, tt := range tests {
		r, err := RuleFor("ok", tt.dest)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("RuleFor(%q) error = %v; want %q", tt.dest, err, tt.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(r) != fmt.Sprint(tt.want) {
			t.Errorf("RuleFor(%q) = %+v, %v; want %+v", tt.dest, r, err, tt.want)
		}
	}
	base, err := Parse([]byte("presets: [telegram]\nnetwork:\n  - {name: a, hosts: [a.example.com]}\nresources: {memory: 1GiB}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := RuleFor("approved-1", "new.example.com:8443")
	next, err := base.WithRule(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(base.Network) != 1 || len(next.Network) != 2 || next.Resources.Memory != 1<<30 || next.Presets[0] != "telegram" {
		t.Fatalf("WithRule: base %+v next %+v", base, next)
	}
	if _, err := next.WithRule(r); err == nil || !strings.Contains(err.Error(), `duplicate rule name "approved-1"`) {
		t.Fatalf("duplicate WithRule error = %v", err)
	}
	if _, err := base.WithRule(Rule{Name: "bad", Hosts: []string{"a.example.com"}, Ports: []int{70000}}); err == nil ||
		err.Error() != "policy: network[1].ports[0]: 70000 is not a port" {
		t.Fatalf("invalid WithRule error = %v", err)
	}
	back, ok := next.WithoutRule("approved-1")
	if !ok || len(back.Network) != 1 || len(next.Network) != 2 {
		t.Fatalf("WithoutRule: %+v %v", back, ok)
	}
	if _, ok := next.WithoutRule("nope"); ok {
		t.Fatal("WithoutRule found a missing rule")
	}
}

func TestDisplayDestination(t *testing.T) {
	long := strings.Repeat("a", 60) + ".good.example." + strings.Repeat("b", 60) + ".evil.example"
	tests := []struct{ host, want string }{
		{"api.good.com.evil.example", "api.good.com.evil.example:443"},
		{"аpple.com", "xn--pple-43d.com:443 (internationalised name)"},
		{"APPLE.com", "apple.com:443"},
		{"ｇｏｏｇｌｅ.com", "google.com:443"},
		{"раураl.com", "xn--l-7sba6dbr.com:443 (internationalised name)"},
		{long, long + ":443"},
		{"evil.example\x1b[2K\rapi.github.com", `"evil.example\x1b[2K\rapi.github.com":443 (invalid host)`},
		{"good.example\u202egnp.exe", `"good.example\u202egnp.exe":443 (invalid host)`},
		{"2001:db8::1", "[2001:db8::1]:443"},
	}
	for _, tt := range tests {
		if got := DisplayDestination(tt.host, 443); got != tt.want {
			t.Errorf("DisplayDestination(%q) = %q; want %q", tt.host, got, tt.want)
		}
	}
}

// FuzzDecideName checks the name stage against a simple oracle: with a
// policy of one exact host and one wildcard, a CONNECT is allowed exactly
// when the normalised host is that host or ends in ".wild.example".
func FuzzDecideName(f *testing.F) {
	m, err := NewMatcher([]Rule{
		{Name: "exact", Hosts: []string{"api.example.com"}},
		{Name: "wild", Hosts: []string{"*.wild.example"}, Ports: []int{443, 8443}},
		{Name: "lan", CIDRs: []string{"10.0.0.0/8"}, Ports: []int{443}},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"api.example.com", "API.EXAMPLE.COM.", "a.wild.example", "wild.example", "evilwild.example",
		"10.1.2.3", "127.1", "0x0a.1", "[::ffff:10.1.2.3]", "ａｐｉ.example.com", "api.example.com\x00", "x.wild.example.."} {
		f.Add(s, 443)
	}
	f.Fuzz(func(t *testing.T, host string, port int) {
		d := m.DecideName(host, port, "", "")
		if !d.Allow {
			return
		}
		if d.Reason != ReasonAllowed || d.Host == "" || port != 443 && port != 8443 {
			t.Fatalf("DecideName(%q, %d) = %+v", host, port, d)
		}
		switch d.Rule {
		case "exact":
			if d.Host != "api.example.com" || port != 443 {
				t.Fatalf("exact rule allowed %q:%d (from %q)", d.Host, port, host)
			}
		case "wild":
			if !strings.HasSuffix(d.Host, ".wild.example") {
				t.Fatalf("wildcard rule allowed %q (from %q)", d.Host, host)
			}
		case "lan":
			if !d.Addr.IsValid() || !netip.MustParsePrefix("10.0.0.0/8").Contains(d.Addr) || port != 443 {
				t.Fatalf("cidr rule allowed %q %v:%d (from %q)", d.Host, d.Addr, port, host)
			}
		default:
			t.Fatalf("unexpected rule %q", d.Rule)
		}
		if again := m.DecideName(d.Host, port, "", ""); again.Allow != d.Allow || again.Rule != d.Rule || again.Host != d.Host {
			t.Fatalf("normalised host decides differently: %+v vs %+v", again, d)
		}
	})
}

// TestRestrictedNamingRuleDoesNotOpenTunnels: a rule that names the
// metadata address for GET only must not let a broad cidr rule open a
// CONNECT tunnel to it.
func TestRestrictedNamingRuleDoesNotOpenTunnels(t *testing.T) {
	m := mustMatcher(t, `network:
  - {name: public, cidrs: [0.0.0.0/0], ports: [80]}
  - {name: imds-get, cidrs: [169.254.169.254/32], ports: [80], methods: [GET], paths: ["/latest/meta-data/**"]}
`)
	tests := []struct {
		name, host, method, path string
		allow                    bool
		rule, reason             string
	}{
		{"connect to metadata", "169.254.169.254", "", "", false, "public", ReasonSpecialAddress},
		{"GET outside the allowed path", "169.254.169.254", "GET", "/latest/user-data", false, "public", ReasonSpecialAddress},
		{"POST to metadata", "169.254.169.254", "POST", "/latest/meta-data/x", false, "public", ReasonSpecialAddress},
		{"GET on the allowed path", "169.254.169.254", "GET", "/latest/meta-data/iam", true, "imds-get", ReasonAllowed},
		{"connect to a public address", "8.8.8.8", "", "", true, "public", ReasonAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := m.DecideName(tt.host, 80, tt.method, tt.path)
			if d.Allow != tt.allow || d.Rule != tt.rule || d.Reason != tt.reason {
				t.Fatalf("DecideName = %+v; want allow=%v rule=%q reason=%q", d, tt.allow, tt.rule, tt.reason)
			}
		})
	}
	if d := m.DecideAddr(netip.MustParseAddr("169.254.169.254"), 80, ""); d.Allow {
		t.Fatalf("DecideAddr(metadata, \"\") = %+v; a restricted rule must not count without a request", d)
	}
	if d := m.DecideAddr(netip.MustParseAddr("169.254.169.254"), 80, "imds-get"); !d.Allow {
		t.Fatalf("DecideAddr(metadata, imds-get) = %+v; the rule's own range must count", d)
	}
}
