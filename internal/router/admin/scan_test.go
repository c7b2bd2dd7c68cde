package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/syncbuf"
	"github.com/clawcage/clawcage/internal/vault"
)

const scanCanaryOpenAI = "sk-proj-scan-canary-0a1b2c3d4e5f60718293a4b5c6d7e8f9"

func scanFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	if _, err := f.v.Set("anthropic", []byte(canary)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.Set("openai", []byte(scanCanaryOpenAI)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) scan(t *testing.T, body []byte) (int, ScanResponse, string) {
	t.Helper()
	rr := f.do(t, http.MethodPost, "/audit/scan?label=test", string(body))
	var r ScanResponse
	if rr.Code == http.StatusOK {
		if err := json.Unmarshal(rr.Body.Bytes(), &r); err != nil {
			t.Fatalf("decode %s: %v", rr.Body, err)
		}
	}
	return rr.Code, r, rr.Body.String()
}

func TestAuditScanFindsKeysInEveryEncoding(t *testing.T) {
	f := scanFixture(t)
	key := []byte(canary)
	b64 := func(enc *base64.Encoding, shift int) string {
		return enc.EncodeToString(append(bytes.Repeat([]byte("x"), shift), key...))
	}
	tests := []struct {
		name     string
		body     string
		provider string // "" = nothing found
		encoding string
	}{
		{"clean environment", "PATH=/usr/bin\nHOME=/root\nHTTP_PROXY=http://127.0.0.1:3128\n", "", ""},
		{"key-shaped but not a stored key", "OPENAI_API_KEY=sk-proj-0000000000000000000000000000000000000000\n", "", ""},
		{"prefix of the key only", "k=" + canary[:len(canary)-1], "", ""},
		{"raw in an env dump", "PATH=/bin\x00ANTHROPIC_API_KEY=" + canary + "\x00", "anthropic", "raw"},
		{"raw in an authorization header", "GET /v1/models HTTP/1.1\r\nAuthorization: Bearer " + scanCanaryOpenAI + "\r\n\r\n", "openai", "raw"},
		{"hex lower", "blob " + hex.EncodeToString(key) + " end", "anthropic", "hex"},
		{"hex upper", strings.ToUpper(hex.EncodeToString(key)), "anthropic", "HEX"},
		{"base64 aligned", "data:" + b64(base64.StdEncoding, 0), "anthropic", "base64"},
		{"base64 offset 1", b64(base64.StdEncoding, 1), "anthropic", "base64"},
		{"base64 offset 2", b64(base64.StdEncoding, 2), "anthropic", "base64"},
		{"base64url offset 1 of openai key", base64.URLEncoding.EncodeToString(append([]byte("y"), scanCanaryOpenAI...)), "openai", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, r, raw := f.scan(t, []byte(tt.body))
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, raw)
			}
			if r.Keys != 2 || r.Scanned != int64(len(tt.body)) {
				t.Errorf("keys=%d scanned=%d, want 2 and %d", r.Keys, r.Scanned, len(tt.body))
			}
			if strings.Contains(raw, canary) || strings.Contains(raw, scanCanaryOpenAI) {
				t.Fatalf("the answer holds key bytes: %s", raw)
			}
			if tt.provider == "" {
				if r.Found || len(r.Findings) != 0 {
					t.Fatalf("found %+v in clean material", r.Findings)
				}
				return
			}
			if !r.Found || len(r.Providers) != 1 || r.Providers[0] != tt.provider {
				t.Fatalf("found=%v providers=%v, want %s", r.Found, r.Providers, tt.provider)
			}
			ok := false
			for _, fd := range r.Findings {
				if fd.Provider == tt.provider && fd.KeyID != "" && (tt.encoding == "" || fd.Encoding == tt.encoding) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("findings %+v lack provider %s encoding %q", r.Findings, tt.provider, tt.encoding)
			}
		})
	}
}

func TestAuditScanFindsPercentEncodedKey(t *testing.T) {
	f := newFixture(t)
	const odd = "key+with/slash=and&amp?0123456789"
	if _, err := f.v.Set("custom", []byte(odd)); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		"GET /v1/models?api_key=" + url.QueryEscape(odd) + " HTTP/1.1",
		"GET /keys/" + url.PathEscape(odd) + " HTTP/1.1",
	} {
		_, r, _ := f.scan(t, []byte(body))
		if !r.Found || len(r.Findings) != 1 || r.Findings[0].Encoding != "url" {
			t.Errorf("%q: findings %+v, want one url finding", body, r.Findings)
		}
	}
}

func TestAuditScanNamesKeyIDsOfBothProviders(t *testing.T) {
	f := scanFixture(t)
	ids := map[string]string{}
	for _, k := range f.v.List() {
		ids[k.Provider] = k.ID
	}
	_, r, _ := f.scan(t, []byte(canary+"\n"+scanCanaryOpenAI))
	if !r.Found || strings.Join(r.Providers, ",") != "anthropic,openai" {
		t.Fatalf("providers %v, want anthropic,openai", r.Providers)
	}
	for _, fd := range r.Findings {
		if ids[fd.Provider] != fd.KeyID {
			t.Errorf("finding %+v: key id, want %s", fd, ids[fd.Provider])
		}
	}
}

func TestAuditScanSizeBound(t *testing.T) {
	f := scanFixture(t)
	// At the bound, a key at the very end is still found.
	body := append(bytes.Repeat([]byte{'a'}, MaxScanBody-len(canary)), canary...)
	code, r, raw := f.scan(t, body)
	if code != http.StatusOK || !r.Found || r.Scanned != MaxScanBody {
		t.Fatalf("at the bound: status %d found %v scanned %d: %.200s", code, r.Found, r.Scanned, raw)
	}
	// One byte more is refused, not silently truncated.
	code, _, raw = f.scan(t, append(body, 'b'))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(raw, "split it") {
		t.Fatalf("over the bound: status %d: %s", code, raw)
	}
}

func TestAuditScanWithoutVault(t *testing.T) {
	h := NewHandler(Deps{})
	rr := (&fixture{h: h}).do(t, http.MethodPost, "/audit/scan", "x")
	if rr.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rr.Code)
	}
}

func TestAuditScanEmptyVaultSaysNoKeys(t *testing.T) {
	f := newFixture(t)
	code, r, _ := f.scan(t, []byte(canary))
	if code != http.StatusOK || r.Found || r.Keys != 0 {
		t.Fatalf("status %d found %v keys %d, want 200, false, 0", code, r.Found, r.Keys)
	}
}

func TestAuditScanClientOverSocket(t *testing.T) {
	f := scanFixture(t)
	sock := filepath.Join(f.state, "router", "admin.sock")
	l, err := Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	defer srv.Close()
	c := Dial(f.state)
	defer c.Close()
	r, err := c.Scan(context.Background(), "unit test", []byte("env: "+scanCanaryOpenAI))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Found || len(r.Providers) != 1 || r.Providers[0] != "openai" {
		t.Fatalf("client scan: %+v", r)
	}
	if _, err := c.Scan(context.Background(), "too big", make([]byte, MaxScanBody+1)); err == nil {
		t.Fatal("an oversized body was accepted")
	} else {
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversized: %v, want HTTP 413", err)
		}
	}
	if !strings.Contains(f.logs.String(), `"label":"unit test"`) {
		t.Errorf("scan not logged with its label: %s", f.logs.String())
	}
	if strings.Contains(f.logs.String(), scanCanaryOpenAI) {
		t.Fatal("the log holds the key")
	}
}

// TestAuditScanRefusesNonRootPeer: a uid that is neither root nor the
// router's is refused before the scan runs (it would be a key oracle).
func TestAuditScanRefusesNonRootPeer(t *testing.T) {
	if sock := os.Getenv("CLAWCAGE_SCAN_PEER_CHILD"); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(3)
		}
		body := "x" + canary
		c.Write([]byte("POST /audit/scan HTTP/1.1\r\nHost: x\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := c.Read(make([]byte, 1024))
		if n > 0 {
			os.Exit(1) // answered: the peer check failed
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child under another uid")
	}
	dir, err := os.MkdirTemp("", "clawcage-scan-peer-")
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
	os.Chmod(sock, 0o666) // only the peer check stands in the way
	logs := &syncbuf.Buffer{}
	f := scanFixture(t)
	srv := &http.Server{Handler: f.h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(PeerCheckListener(raw, slog.New(slog.NewTextHandler(logs, nil))))
	defer srv.Close()
	self, _ := os.Executable()
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "admin.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestAuditScanRefusesNonRootPeer$")
	cmd.Env = append(os.Environ(), "CLAWCAGE_SCAN_PEER_CHILD="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		t.Fatalf("uid 65534 got an answer from /audit/scan")
	case !errors.As(err, &ee):
		t.Skipf("cannot run a child as uid 65534 from %s: %v", dir, err)
	default:
		t.Fatalf("child: %v %s", err, out)
	}
	if !strings.Contains(logs.String(), "peer_uid=65534") {
		t.Fatalf("refusal not logged: %s", logs.String())
	}
	if strings.Contains(f.logs.String(), "audit scan") {
		t.Fatalf("the scan ran for uid 65534: %s", f.logs.String())
	}
	// Root on the same socket is answered.
	c := DialSocket(sock)
	defer c.Close()
	if r, err := c.Scan(context.Background(), "root", []byte(canary)); err != nil || !r.Found {
		t.Fatalf("root: %+v %v", r, err)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// BenchmarkAuditScan: one 16 MiB batch (the size internal/audit/live
// sends) against two keys, each in raw, hex and base64 forms.
func BenchmarkAuditScan(b *testing.B) {
	state := b.TempDir()
	v, err := vault.Open(filepath.Join(state, "router"))
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	v.Set("anthropic", []byte(canary))
	v.Set("openai", []byte(scanCanaryOpenAI))
	h := &handler{deps: Deps{Vault: v}}
	body := bytes.Repeat([]byte("PATH=/usr/bin:/bin HOME=/sandbox sk-not-a-key "), (16<<20)/46)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		if r := h.scanBody(body); r.Found || r.Keys != 2 {
			b.Fatalf("%+v", r)
		}
	}
}
