package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawcage/clawcage/internal/syncbuf"
	"github.com/clawcage/clawcage/internal/usage"
	"github.com/clawcage/clawcage/internal/vault"
	"github.com/clawcage/clawcage/internal/vault/vaulttest"
)

const canary = "sk-ant-canary-4c1d9e7b2a8f3065"

type fixture struct {
	state string
	v     *vault.Vault
	l     *usage.Ledger
	logs  *bytes.Buffer
	h     http.Handler
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	state := t.TempDir()
	dir := filepath.Join(state, "router")
	v, err := vault.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	l, err := usage.Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "clawcage_router_requests_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	logs := &bytes.Buffer{}
	h := NewHandler(Deps{Vault: v, Ledger: l, Metrics: reg, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	return &fixture{state: state, v: v, l: l, logs: logs, h: h}
}

func (f *fixture) do(t *testing.T, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rr := httptest.NewRecorder()
	f.h.ServeHTTP(rr, req)
	return rr
}

func TestHandlerKeys(t *testing.T) {
	f := newFixture(t)
	rr := f.do(t, "PUT", "/keys/anthropic", canary)
	if rr.Code != http.StatusCreated {
		t.Fatalf("PUT = %d %s", rr.Code, rr.Body)
	}
	var info vault.KeyInfo
	if err := json.Unmarshal(rr.Body.Bytes(), &info); err != nil || info.Provider != "anthropic" || info.ID == "" || info.Fingerprint == "" {
		t.Fatalf("PUT body %s: %v", rr.Body, err)
	}
	if k := f.v.Keys("anthropic"); len(k) != 1 || string(k[0].Secret) != canary {
		t.Fatal("key not in the vault")
	}
	other := f.do(t, "PUT", "/keys/anthropic", "sk-ant-second-99999999")
	if other.Code != http.StatusCreated {
		t.Fatalf("second PUT = %d", other.Code)
	}

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		errSays                  string
	}{
		{"empty secret", "PUT", "/keys/openai", "", 400, "empty secret"},
		{"secret with newline (header injection)", "PUT", "/keys/openai", "sk-a\nX-Evil: 1", 400, "not visible ASCII"},
		{"oversized secret", "PUT", "/keys/openai", strings.Repeat("a", vault.MaxSecretLen+1), 400, "more than"},
		{"bad provider name", "PUT", "/keys/Open%20AI", "sk-abc", 400, "provider name"},
		{"remove unknown provider", "DELETE", "/keys/nobody", "", 404, "no such key"},
		{"remove unknown id", "DELETE", "/keys/anthropic/000000000000", "", 404, "no such key"},
		{"remove malformed id", "DELETE", "/keys/anthropic/zz", "", 400, "key id"},
		{"GET of one key is not an endpoint (no secret read-back)", "GET", "/keys/anthropic", "", 405, ""},
		{"usage with a bad since", "GET", "/usage?since=yesterday", "", 400, "RFC 3339"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := f.do(t, tc.method, tc.path, tc.body)
			if rr.Code != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, rr.Code, rr.Body, tc.status)
			}
			if tc.errSays != "" && !strings.Contains(rr.Body.String(), tc.errSays) {
				t.Fatalf("body %s does not say %q", rr.Body, tc.errSays)
			}
		})
	}

	rr = f.do(t, "GET", "/keys", "")
	var list KeysResponse
	if err := json.Unmarshal(rr.Body.Bytes(), &list); err != nil || len(list.Keys) != 2 || list.Keys[0] != info {
		t.Fatalf("GET /keys = %s (%v)", rr.Body, err)
	}
	vaulttest.AssertNotInBytes(t, []byte(canary), "GET /keys body", rr.Body.Bytes())

	masterBefore, _ := os.ReadFile(filepath.Join(f.state, "router", vault.MasterKeyFile))
	rr = f.do(t, "POST", "/vault/rotate", "")
	var rotated KeysResponse
	if err := json.Unmarshal(rr.Body.Bytes(), &rotated); rr.Code != 200 || err != nil || len(rotated.Keys) != 2 ||
		rotated.Keys[0].ID != info.ID || rotated.Keys[0].Fingerprint == info.Fingerprint {
		t.Fatalf("POST /vault/rotate = %d %s", rr.Code, rr.Body)
	}
	if masterAfter, _ := os.ReadFile(filepath.Join(f.state, "router", vault.MasterKeyFile)); bytes.Equal(masterBefore, masterAfter) {
		t.Fatal("master key unchanged after rotation")
	}
	if k := f.v.Keys("anthropic"); string(k[0].Secret) != canary {
		t.Fatal("key changed by rotation")
	}
	info = rotated.Keys[0]

	rr = f.do(t, "GET", "/metrics", "")
	if !strings.Contains(rr.Body.String(), `clawcage_vault_keys{provider="anthropic"} 2`) {
		t.Fatalf("vault metrics missing: %s", rr.Body)
	}
	vaulttest.AssertNotInBytes(t, []byte(canary), "metrics", rr.Body.Bytes())

	rr = f.do(t, "DELETE", "/keys/anthropic/"+info.ID, "")
	var rm RemoveResponse
	if err := json.Unmarshal(rr.Body.Bytes(), &rm); rr.Code != 200 || err != nil || len(rm.Removed) != 1 || rm.Removed[0].ID != info.ID {
		t.Fatalf("DELETE one = %d %s", rr.Code, rr.Body)
	}
	rr = f.do(t, "DELETE", "/keys/anthropic", "")
	if err := json.Unmarshal(rr.Body.Bytes(), &rm); rr.Code != 200 || err != nil || len(rm.Removed) != 1 {
		t.Fatalf("DELETE all = %d %s", rr.Code, rr.Body)
	}
	if len(f.v.List()) != 0 {
		t.Fatal("keys left after DELETE")
	}
	if !strings.Contains(f.logs.String(), `"msg":"key stored"`) || !strings.Contains(f.logs.String(), info.Fingerprint) {
		t.Fatalf("admin actions not logged: %s", f.logs)
	}
	vaulttest.AssertNotInBytes(t, []byte(canary), "admin log", f.logs.Bytes())
	vaulttest.AssertNoSecret(t, []byte(canary), f.state)
}

func TestHandlerUsageAndMetrics(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Now()
	for _, r := range []usage.Record{
		{Time: now.Add(-48 * time.Hour), Sandbox: "a", Route: "default", Provider: "anthropic", Model: "m", TokensIn: 5, CostUSD: 1, Status: 200},
		{Time: now.Add(-time.Hour), Sandbox: "a", Route: "default", Provider: "anthropic", Model: "m", TokensIn: 7, CostUSD: 2, Status: 200},
		{Time: now.Add(-time.Hour), Sandbox: "b", Route: "default", Provider: "openai", Model: "g", TokensIn: 9, CostUSD: 4, Status: 500},
	} {
		if err := f.l.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, query string
		rows        int
		requests    int64
	}{
		{"everything", "", 2, 2},
		{"one sandbox", "?sandbox=a", 1, 2},
		{"since a duration", "?sandbox=a&since=24h", 1, 1},
		{"since in days", "?sandbox=a&since=3d", 1, 2},
		{"since an RFC 3339 time", "?since=" + now.Add(-2*time.Hour).UTC().Format(time.RFC3339), 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := f.do(t, "GET", "/usage"+tc.query, "")
			var u UsageResponse
			if err := json.Unmarshal(rr.Body.Bytes(), &u); rr.Code != 200 || err != nil || len(u.Rows) != tc.rows || u.Rows[0].Requests != tc.requests {
				t.Fatalf("GET /usage%s = %d %s", tc.query, rr.Code, rr.Body)
			}
		})
	}
	rr := f.do(t, "GET", "/metrics", "")
	if rr.Code != 200 || !strings.Contains(rr.Body.String(), "clawcage_router_requests_total 3") ||
		!strings.Contains(rr.Body.String(), "clawcage_vault_memory_locked") {
		t.Fatalf("GET /metrics = %d %s", rr.Code, rr.Body)
	}
}

func TestHandlerWithoutDeps(t *testing.T) {
	h := NewHandler(Deps{})
	for _, p := range []string{"/keys", "/usage", "/metrics"} {
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, httptest.NewRequest("GET", p, nil))
		if rr.Code != http.StatusServiceUnavailable {
			t.Errorf("GET %s without deps = %d, want 503", p, rr.Code)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", time.Time{}, false},
		{"24h", now.Add(-24 * time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"7d", now.Add(-7 * 24 * time.Hour), false},
		{"2026-11-01T00:00:00Z", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), false},
		{"-5h", time.Time{}, true},
		{"-1d", time.Time{}, true},
		{"1.5d", time.Time{}, true},
		{"d", time.Time{}, true},
		{"99999999d", time.Time{}, true},
		{"yesterday", time.Time{}, true},
		{"2100-01-01T00:00:00Z", time.Time{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSince(tc.in, now)
			if (err != nil) != tc.wantErr || !got.Equal(tc.want) {
				t.Fatalf("ParseSince(%q) = %v, %v", tc.in, got, err)
			}
		})
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"", "24h", "7d", "2026-11-01T00:00:00Z", "0d", "1e9h"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSince(s, now)
		if err == nil && got.After(now.Add(time.Minute)) {
			t.Fatalf("ParseSince(%q) = %v, in the future", s, got)
		}
	})
}

// serve runs the handler on the real admin socket of a temp state dir.
func serve(t *testing.T, f *fixture) string {
	t.Helper()
	path := SocketPath(f.state)
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestClientOverSocket(t *testing.T) {
	f := newFixture(t)
	path := serve(t, f)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode: %v %v", fi, err)
	}
	c := Dial(f.state)
	defer c.Close()
	ctx := context.Background()
	info, err := c.SetKey(ctx, "openai", []byte(canary))
	if err != nil || info.Provider != "openai" {
		t.Fatalf("SetKey = %+v, %v", info, err)
	}
	keys, err := c.ListKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0] != info {
		t.Fatalf("ListKeys = %+v, %v", keys, err)
	}
	_, err = c.SetKey(ctx, "openai", nil)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "empty secret") {
		t.Fatalf("SetKey(empty) = %v", err)
	}
	if _, err := c.RemoveKey(ctx, "openai", "000000000000"); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("RemoveKey(unknown) = %v", err)
	}
	if rm, err := c.RemoveKey(ctx, "openai", info.ID); err != nil || len(rm) != 1 {
		t.Fatalf("RemoveKey = %v, %v", rm, err)
	}
	if err := f.l.Record(ctx, usage.Record{Sandbox: "s", Route: "r", Provider: "p", Model: "m", Status: 200}); err != nil {
		t.Fatal(err)
	}
	rows, err := c.Usage(ctx, usage.Filter{Sandbox: "s", Since: time.Now().Add(-time.Hour)})
	if err != nil || len(rows) != 1 || rows[0].Requests != 1 {
		t.Fatalf("Usage = %+v, %v", rows, err)
	}
	m, err := c.Metrics(ctx)
	if err != nil || !bytes.Contains(m, []byte("clawcage_router_requests_total")) {
		t.Fatalf("Metrics = %.200s, %v", m, err)
	}

	// A second router on the same socket is refused; the live socket stays.
	if _, err := Listen(path, nil); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second Listen = %v", err)
	}
}

func TestClientRouterNotRunning(t *testing.T) {
	state := t.TempDir()
	_, err := Dial(state).ListKeys(context.Background())
	if !errors.Is(err, ErrRouterNotRunning) || !strings.Contains(err.Error(), "no socket at "+SocketPath(state)) ||
		!strings.Contains(err.Error(), "clawcage up") {
		t.Fatalf("err = %v", err)
	}
	// A stale socket file with nobody listening.
	os.MkdirAll(filepath.Dir(SocketPath(state)), 0o700)
	l, err := net.Listen("unix", SocketPath(state))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, err = Dial(state).ListKeys(context.Background())
	if !errors.Is(err, ErrRouterNotRunning) || !strings.Contains(err.Error(), "nothing listening") {
		t.Fatalf("stale socket: err = %v", err)
	}
	// Listen replaces the stale socket but refuses to replace a regular file.
	l2, err := Listen(SocketPath(state), nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l2.Close()
	os.WriteFile(SocketPath(state), []byte("x"), 0o600)
	if _, err := Listen(SocketPath(state), nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file = %v", err)
	}
}

// TestPeerCheckRefusesOtherUID runs a child as uid 65534 that connects to
// the admin socket; the listener must close it without serving a request.
func TestPeerCheckRefusesOtherUID(t *testing.T) {
	if sock := os.Getenv("CLAWCAGE_ADMIN_PEER_CHILD"); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(3)
		}
		c.Write([]byte("GET /keys HTTP/1.1\r\nHost: x\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := c.Read(make([]byte, 1024))
		if n > 0 {
			os.Exit(1) // served: the check failed
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child under another uid")
	}
	// A world-traversable dir outside t.TempDir (whose parent is 0700).
	dir, err := os.MkdirTemp("", "clawcage-admin-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "admin.sock")
	raw, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666) // let the child reach it: only the peer check stands in the way
	logs := &syncbuf.Buffer{}
	l := PeerCheckListener(raw, slog.New(slog.NewTextHandler(logs, nil)))
	f := newFixture(t)
	f.v.Set("anthropic", []byte(canary))
	srv := &http.Server{Handler: f.h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	defer srv.Close()

	// The test binary may sit in a root-only build dir: copy it where uid 65534 can run it.
	self, _ := os.Executable()
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "admin.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestPeerCheckRefusesOtherUID$")
	cmd.Env = append(os.Environ(), "CLAWCAGE_ADMIN_PEER_CHILD="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		t.Fatalf("uid 65534 was served by the admin API")
	case !errors.As(err, &ee):
		t.Skipf("cannot run a child as uid 65534 from %s (noexec temp dir?): %v", dir, err)
	default:
		t.Fatalf("child: %v %s", err, out)
	}
	if !strings.Contains(logs.String(), "peer_uid=65534") {
		t.Fatalf("refusal not logged: %s", logs.String())
	}

	// Root (this process) is allowed on the same listener.
	c := DialSocket(sock)
	defer c.Close()
	if keys, err := c.ListKeys(context.Background()); err != nil || len(keys) != 1 {
		t.Fatalf("root refused: %v", err)
	}
}

func TestPeerAllowedRejectsNonUnix(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if PeerAllowed(c) {
		t.Fatal("a TCP connection passed the peer check")
	}
}
