package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/router/routertest"
)

// TestRouterCommandEndToEnd runs the router command with a real vault and
// ledger: a key set over the admin socket is injected upstream, the
// sandbox's own credential is not, usage and metrics are served, and the
// key's bytes appear in no log line.
func TestRouterCommandEndToEnd(t *testing.T) {
	fake := routertest.New(t, routertest.OpenAI)
	state := t.TempDir()
	cfg := filepath.Join(state, "clawcage.yaml")
	yaml := fmt.Sprintf(`router:
  providers:
    fake: {kind: openai, base_url: %q}
  routes:
    default:
      - {provider: fake, model: gpt-fake}
  prices:
    gpt-fake: {input: 1, output: 2}
sandboxes:
  agent:
    limits: {requests_per_minute: 100}
`, fake.URL)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	// Capture the router's logs (it logs to stderr).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldStderr := os.Stderr
	os.Stderr = w
	logs := make(chan string, 1)
	go func() { b, _ := io.ReadAll(r); logs <- string(b) }()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// A second listener handed over as an open descriptor (as a supervisor
	// would), attributed to sandbox "default".
	fdLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fdFile, err := fdLn.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	fdAddr := fdLn.Addr().String()
	fdLn.Close()
	defer fdFile.Close()
	go func() {
		done <- runRouter(ctx, state, cfg, []string{"agent=" + addr}, []string{fmt.Sprintf("default=%d", fdFile.Fd())})
	}()
	stop := func() string {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runRouter: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("router did not stop")
		}
		os.Stderr = oldStderr
		w.Close()
		return <-logs
	}
	defer func() {
		if os.Stderr != oldStderr {
			stop()
		}
	}()

	sock := admin.SocketPath(state)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			if _, err := os.Stat(sock); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("router did not start listening")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v mode %v", err, fi.Mode())
	}
	const canary = "sk-cmd-canary-5f1e2d3c4b5a69788796"
	ac := admin.Dial(state)
	defer ac.Close()
	if _, err := ac.SetKey(context.Background(), "fake", []byte(canary)); err != nil {
		t.Fatalf("set key: %v", err)
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/chat/completions", strings.NewReader(`{"model":"default","messages":[{"role":"user","content":"hi"}],"max_tokens":10}`))
	req.Header.Set("Authorization", "Bearer sandbox-credential")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello from the fake") {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), canary) {
		t.Errorf("response contains the key")
	}
	got := fake.Requests()
	if len(got) < 1 || got[0].Header.Get("Authorization") != "Bearer "+canary || got[0].Model != "gpt-fake" {
		t.Fatalf("upstream did not get the vault key and the route's model")
	}
	// The inherited descriptor serves too, as sandbox "default".
	resp, err = http.Post("http://"+fdAddr+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"default","messages":[]}`))
	if err != nil {
		t.Fatalf("request on the --listen-fd listener: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("--listen-fd listener: status %d", resp.StatusCode)
	}
	metrics, err := ac.Metrics(context.Background())
	if err != nil || !strings.Contains(string(metrics), `clawcage_router_requests_total{route="default",sandbox="agent",status="200",target="fake/gpt-fake"} 1`) ||
		!strings.Contains(string(metrics), `clawcage_router_requests_total{route="default",sandbox="default",status="200",target="fake/gpt-fake"} 1`) {
		t.Errorf("metrics (%v):\n%s", err, metrics)
	}
	out := stop()
	if !strings.Contains(out, `"msg":"request"`) {
		t.Errorf("no request log line in:\n%s", out)
	}
	if strings.Contains(out, canary) || strings.Contains(string(metrics), canary) {
		t.Errorf("key bytes in logs or metrics")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left behind: %v", err)
	}
	// Usage was recorded in the ledger file.
	if fi, err := os.Stat(filepath.Join(state, "router", "usage.db")); err != nil || fi.Size() == 0 {
		t.Errorf("usage ledger: %v", err)
	}
}

func TestRouterCommandRefusesBadListeners(t *testing.T) {
	state := t.TempDir()
	cfg := filepath.Join(state, "c.yaml")
	_ = os.WriteFile(cfg, []byte("router:\n  providers:\n    p: {kind: openai, base_url: \"http://127.0.0.1:1/v1\"}\nsandboxes:\n  agent: {}\n"), 0o600)
	cases := []struct {
		name         string
		listens, fds []string
		want         string
	}{
		{"no listener", nil, nil, "no listeners"},
		{"unknown sandbox", []string{"ghost=127.0.0.1:0"}, nil, `sandbox "ghost"`},
		{"bad listen", []string{"agent=nope"}, nil, "--listen"},
		{"bad fd", nil, []string{"agent=1"}, "FD ≥ 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := runRouter(context.Background(), state, cfg, tc.listens, tc.fds)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
