package egress

import (
	"bufio"
	"crypto/sha1" //nolint:gosec // the WebSocket handshake is defined with SHA-1
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/egress/egresstest"
	"github.com/clawcage/clawcage/internal/policy"
)

// wsAccept is the Sec-WebSocket-Accept answer to key (RFC 6455 §4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) //nolint:gosec // protocol constant
	return base64.StdEncoding.EncodeToString(h[:])
}

// startWSServer serves WebSocket handshakes on loopback: a valid upgrade
// on /chat is answered 101 followed at once by "hello\n" (bytes the proxy
// must not lose), then every byte is echoed. /refuse answers 400; /rogue
// answers 101 to anything. It returns the port and the number of
// requests seen.
func startWSServer(t *testing.T) (uint16, *atomic.Int64) {
	t.Helper()
	var seen atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.URL.Path == "/refuse" {
			http.Error(w, "no upgrade here", http.StatusBadRequest)
			return
		}
		if r.URL.Path != "/rogue" && (!strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(r.Header.Get("Connection"), "upgrade")) {
			http.Error(w, "not an upgrade: Connection="+r.Header.Get("Connection")+" Upgrade="+r.Header.Get("Upgrade"), http.StatusBadRequest)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\nhello\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		rw.Flush()
		io.Copy(c, rw) // echo until the client closes
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String()).Port(), &seen
}

const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

func wsRequest(port uint16, path string) string {
	return fmt.Sprintf("GET http://chat.example.com:%d%s HTTP/1.1\r\nHost: chat.example.com:%d\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", port, path, port, wsKey)
}

// openWS sends a WebSocket upgrade through the proxy and returns the
// connection, its reader and the proxy's response.
func openWS(t *testing.T, proxy string, port uint16, path string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, wsRequest(port, path)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("upgrade response: %v", err)
	}
	return c, br, resp
}

func wsPolicy(port uint16) string {
	return fmt.Sprintf(`
network:
  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d]}
  - {name: chat, hosts: [chat.example.com], ports: [%[1]d], methods: [GET], paths: ["/chat", "/refuse", "/rogue"]}
`, port)
}

// TestWebSocketUpgrade: a plain-HTTP WebSocket upgrade through the
// forward proxy becomes a tunnel that outlives the idle timeouts, counts
// against the tunnel cap and closes when its rule is revoked.
func TestWebSocketUpgrade(t *testing.T) {
	port, _ := startWSServer(t)
	h := startProxy(t, wsPolicy(port), Options{MaxTunnels: 1, IdleTimeout: 50 * time.Millisecond, HeaderTimeout: 50 * time.Millisecond})
	h.res.Set("chat.example.com", "127.0.0.1")

	c, br, resp := openWS(t, h.addr, port, "/chat")
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(wsKey) {
		t.Fatalf("upgrade answered %d %v", resp.StatusCode, resp.Header)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("bytes the server sent with its 101: %q %v", line, err)
	}
	echo := func(msg string) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	if err := echo("\x81\x05frame"); err != nil {
		t.Fatal(err)
	}
	if n := h.proxy.LiveTunnels("sb"); n != 1 {
		t.Fatalf("live tunnels %d, want 1 (the WebSocket)", n)
	}
	// Idle well past the idle and header timeouts: still up.
	time.Sleep(300 * time.Millisecond)
	if err := echo("after idle"); err != nil {
		t.Fatalf("WebSocket cut by an idle timeout: %v", err)
	}
	if !strings.Contains(h.logs.String(), `"status":101`) {
		t.Errorf("no decision line with status 101: %s", h.logs.String())
	}

	t.Run("second upgrade over the tunnel cap", func(t *testing.T) {
		_, _, resp := openWS(t, h.addr, port, "/chat")
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("second WebSocket with MaxTunnels 1: %d, want 429", resp.StatusCode)
		}
	})

	t.Run("revoking the rule closes the WebSocket", func(t *testing.T) {
		h.proxy.SetPolicy("sb", compile(t, fmt.Sprintf("network:\n  - {name: lo, cidrs: [127.0.0.0/8], ports: [%d]}\n", port)))
		if n := h.proxy.CloseTunnels("sb", "chat"); n != 1 {
			t.Fatalf("CloseTunnels closed %d, want 1", n)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "x")
		if b, err := br.ReadByte(); err == nil {
			t.Fatalf("WebSocket still relays after revocation (read %q)", b)
		}
		h.proxy.SetPolicy("sb", compile(t, wsPolicy(port)))
	})
}

// TestWebSocketUpgradeDecisions: the upgrade request is decided by the
// same rules (method, path) and a refused or unasked-for switch is not a
// tunnel.
func TestWebSocketUpgradeDecisions(t *testing.T) {
	port, seen := startWSServer(t)
	h := startProxy(t, wsPolicy(port), Options{})
	h.res.Set("chat.example.com", "127.0.0.1")
	for _, tc := range []struct {
		name   string
		raw    string
		status int
		reason string
	}{
		{"path not allowed by the rule", wsRequest(port, "/admin"), 403, policy.ReasonPathNotAllowed},
		{"method not allowed by the rule", strings.Replace(wsRequest(port, "/chat"), "GET ", "POST ", 1), 403, policy.ReasonMethodNotAllowed},
		{"name not in the policy", strings.ReplaceAll(wsRequest(port, "/chat"), "chat.example.com", "other.example.com"), 403, policy.ReasonNoRuleForHost},
		{"upstream refuses the upgrade", wsRequest(port, "/refuse"), 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := egresstest.SendRaw(t, h.addr, tc.raw)
			if r.Status != tc.status || (tc.reason != "" && r.Reason() != tc.reason) {
				t.Fatalf("%d %v, want %d %s", r.Status, r.Body, tc.status, tc.reason)
			}
		})
	}
	if n := seen.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1 (only the allowed /refuse)", n)
	}
	t.Run("101 to a request that did not ask for it", func(t *testing.T) {
		raw := fmt.Sprintf("GET http://chat.example.com:%d/rogue HTTP/1.1\r\nHost: chat.example.com:%d\r\n\r\n", port, port)
		if r := egresstest.SendRaw(t, h.addr, raw); r.Status != http.StatusBadGateway {
			t.Fatalf("%d %v, want 502", r.Status, r.Body)
		}
		deadline := time.Now().Add(5 * time.Second)
		for h.proxy.LiveTunnels("sb") != 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // the handler unregisters after answering
		}
		if n := h.proxy.LiveTunnels("sb"); n != 0 {
			t.Fatalf("%d live tunnels after a rogue 101", n)
		}
	})
}

// startBodyServer serves /echo (reads the body, answers it), /early
// (answers 401 without reading the body) on loopback. net/http sends
// "100 Continue" when a handler reads the body of an Expect request.
func startBodyServer(t *testing.T) (uint16, *atomic.Int64) {
	t.Helper()
	var got atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/early":
			http.Error(w, "login first", http.StatusUnauthorized)
		default:
			b, _ := io.ReadAll(r.Body)
			got.Add(int64(len(b)))
			fmt.Fprintf(w, "got %d bytes: %s", len(b), b)
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String()).Port(), &got
}

// startDeafServer reads a request head, never answers 100, reads
// Content-Length bytes and answers 200: a server that ignores Expect.
func startDeafServer(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				b := make([]byte, req.ContentLength)
				if _, err := io.ReadFull(br, b); err != nil {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()).Port()
}

// TestExpectContinue: a denied request that waits for "100 Continue" gets
// its 403 without the proxy waiting for the body; an allowed one gets the
// upstream's 100, then the final answer to the body it sent.
func TestExpectContinue(t *testing.T) {
	port, got := startBodyServer(t)
	deaf := startDeafServer(t)
	// A header timeout far beyond the client's deadlines: a proxy that
	// waits for the body cannot answer in time.
	h := startProxy(t, fmt.Sprintf(`
network:
  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d, %[2]d]}
  - {name: up, hosts: [up.example.com], ports: [%[1]d, %[2]d], methods: [POST], paths: ["/echo", "/early"]}
`, port, deaf), Options{HeaderTimeout: time.Minute})
	h.res.Set("up.example.com", "127.0.0.1")
	head := func(p uint16, path string, n int) string {
		return fmt.Sprintf("POST http://up.example.com:%d%s HTTP/1.1\r\nHost: up.example.com:%d\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", p, path, p, n)
	}
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c, bufio.NewReader(c)
	}
	const body = "0123456789"

	t.Run("denied without reading the body", func(t *testing.T) {
		c, br := dial(t)
		io.WriteString(c, head(port, "/admin", len(body)))
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatalf("no answer while the body is held back: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), policy.ReasonPathNotAllowed) || !resp.Close {
			t.Fatalf("%d close=%v %s, want 403 %s with Connection: close", resp.StatusCode, resp.Close, b, policy.ReasonPathNotAllowed)
		}
	})

	t.Run("allowed relays 100 Continue then the answer", func(t *testing.T) {
		c, br := dial(t)
		io.WriteString(c, head(port, "/echo", len(body)))
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil || resp.StatusCode != http.StatusContinue {
			t.Fatalf("first answer %v %v, want 100 Continue before the body", resp, err)
		}
		io.WriteString(c, body)
		resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "got 10 bytes: "+body {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
		// The connection carries the next request.
		io.WriteString(c, head(port, "/echo", 3))
		if resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodPost}); err != nil || resp.StatusCode != 100 {
			t.Fatalf("second request on the kept-alive connection: %v %v", resp, err)
		}
		io.WriteString(c, "abc")
		resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "got 3 bytes: abc" {
			t.Fatalf("second request: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("upstream answers before the body", func(t *testing.T) {
		before := got.Load()
		c, br := dial(t)
		io.WriteString(c, head(port, "/early", len(body)))
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
			t.Fatalf("%d close=%v, want the upstream's 401 with Connection: close", resp.StatusCode, resp.Close)
		}
		if got.Load() != before {
			t.Fatal("a body was sent upstream although nobody asked for it")
		}
	})

	t.Run("upstream ignores Expect", func(t *testing.T) {
		c, br := dial(t)
		io.WriteString(c, head(deaf, "/echo", len(body)))
		// Like curl: wait a moment for 100, then send the body anyway.
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the proxy answered before the body: %v", err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, body)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != body {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	})
}

// TestForwardReframesBodies: request bodies reach the upstream framed by
// their parsed length (a chunked body re-chunked, trailers dropped), and
// an interim 103 answer is relayed before the final one.
func TestForwardReframesBodies(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/hints" {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
		fmt.Fprintf(w, "%s te=%v cl=%d body=%s", r.Method, r.TransferEncoding, r.ContentLength, b)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	h := startProxy(t, fmt.Sprintf("network:\n  - {name: lo, cidrs: [127.0.0.0/8], ports: [%d]}\n", port), Options{})
	for _, tc := range []struct{ name, raw, want string }{
		{"content-length body", fmt.Sprintf("POST http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 5\r\n\r\nhello", port, port), "POST te=[] cl=5 body=hello"},
		{"chunked body re-chunked", fmt.Sprintf("POST http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n", port, port), "POST te=[chunked] cl=-1 body=abcdefg"},
		{"empty POST gets Content-Length 0", fmt.Sprintf("POST http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port, port), "POST te=[] cl=0 body="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := egresstest.SendRaw(t, h.addr, tc.raw)
			if r.Status != 200 || r.Body["raw"] != tc.want {
				t.Fatalf("%d %q, want 200 %q", r.Status, r.Body["raw"], tc.want)
			}
		})
	}
	t.Run("103 relayed before the final answer", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET http://127.0.0.1:%d/hints HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port, port)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") != "</style.css>; rel=preload" {
			t.Fatalf("first answer %v %v, want 103 with its Link", resp, err)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "GET te=[] cl=0 body=" {
			t.Fatalf("final answer %d %q", resp.StatusCode, b)
		}
	})
}

// startUpgradeServer answers upgrades other than WebSocket on loopback:
// /h2c switches to h2c when the request carries HTTP2-Settings (listed in
// Connection), /other answers 101 with a protocol nobody asked for, and
// anything without an Upgrade header gets 200 "plain". After a 101 it
// echoes. Every request's headers are recorded.
func startUpgradeServer(t *testing.T) (uint16, chan http.Header) {
	t.Helper()
	seen := make(chan http.Header, 10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		if b, err := io.ReadAll(r.Body); err != nil || string(b) != "body" {
			http.Error(w, fmt.Sprintf("body %q %v", b, err), http.StatusBadRequest)
			return
		}
		proto := r.Header.Get("Upgrade")
		switch {
		case proto == "":
			io.WriteString(w, "plain")
			return
		case r.URL.Path == "/h2c" && (proto != "h2c" || r.Header.Get("Http2-Settings") == "" || !hasToken(r.Header, "Connection", "HTTP2-Settings")):
			http.Error(w, "h2c upgrade without HTTP2-Settings", http.StatusBadRequest)
			return
		case r.URL.Path == "/other":
			proto = "something-else"
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", proto)
		rw.Flush()
		io.Copy(c, rw)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String()).Port(), seen
}

// TestUpgradeOtherProtocols: upgrades other than WebSocket (h2c, ...) are
// relayed like WebSocket ones, with the fields they list in Connection;
// the proxy's own hop-by-hop fields never pass, a 101 to a protocol that
// was not requested is a 502, and an Upgrade that is not a token list is
// dropped (the request goes on as a plain one).
func TestUpgradeOtherProtocols(t *testing.T) {
	port, seen := startUpgradeServer(t)
	h := startProxy(t, fmt.Sprintf("network:\n  - {name: lo, cidrs: [127.0.0.0/8], ports: [%[1]d]}\n  - {name: api, hosts: [api.example.com], ports: [%[1]d]}\n", port), Options{})
	h.res.Set("api.example.com", "127.0.0.1")
	req := func(path, extra string) string {
		return fmt.Sprintf("POST http://api.example.com:%d%s HTTP/1.1\r\nHost: api.example.com:%d\r\nContent-Length: 4\r\n%s\r\nbody", port, path, port, extra)
	}
	for _, tc := range []struct {
		name       string
		raw        string
		status     int
		switchedTo string
		check      func(http.Header) error
	}{
		{"h2c with HTTP2-Settings becomes a tunnel", req("/h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"), 101, "h2c",
			func(hd http.Header) error {
				if hd.Get("Http2-Settings") != "AAMAAABkAAQAAP__" {
					return fmt.Errorf("HTTP2-Settings not forwarded: %v", hd)
				}
				return nil
			}},
		{"proxy hop-by-hop and framing fields listed in Connection are not forwarded", req("/h2c", "Connection: Upgrade, HTTP2-Settings, Proxy-Authorization, Content-Length\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nProxy-Authorization: Basic c2VjcmV0\r\n"), 101, "h2c",
			func(hd http.Header) error {
				if hd.Get("Proxy-Authorization") != "" || strings.Contains(strings.ToLower(strings.Join(hd["Connection"], ",")), "proxy-authorization") {
					return fmt.Errorf("proxy credentials forwarded: %v", hd)
				}
				return nil
			}},
		{"101 to a protocol not requested is a 502", req("/other", "Connection: Upgrade\r\nUpgrade: foo/2\r\n"), 502, "", nil},
		{"Upgrade that is not a token list is dropped", req("/h2c", "Connection: Upgrade\r\nUpgrade: h2c, not a token\r\n"), 200, "",
			func(hd http.Header) error {
				if hd.Get("Upgrade") != "" {
					return fmt.Errorf("invalid Upgrade forwarded: %v", hd)
				}
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.raw)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.check != nil {
				if err := tc.check(<-seen); err != nil {
					t.Fatal(err)
				}
			} else {
				<-seen
			}
			if tc.switchedTo == "" {
				return
			}
			if got := resp.Header.Get("Upgrade"); got != tc.switchedTo || !hasToken(resp.Header, "Connection", "upgrade") {
				t.Fatalf("101 with Upgrade %q Connection %q, want %q", got, resp.Header.Get("Connection"), tc.switchedTo)
			}
			if n := h.proxy.LiveTunnels("sb"); n != 1 {
				t.Fatalf("live tunnels %d, want 1 (the upgraded connection)", n)
			}
			io.WriteString(c, "PRI * HTTP/2.0\r\n")
			line, err := br.ReadString('\n')
			if err != nil || line != "PRI * HTTP/2.0\r\n" {
				t.Fatalf("echo through the upgraded connection: %q %v", line, err)
			}
			if !strings.Contains(h.logs.String(), `"detail":"`+tc.switchedTo+`"`) {
				t.Errorf("no decision line with detail %q: %s", tc.switchedTo, h.logs.String())
			}
			c.Close()
			for deadline := time.Now().Add(5 * time.Second); h.proxy.LiveTunnels("sb") != 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the upgraded connection is still live after the client closed")
				}
			}
		})
	}
}
