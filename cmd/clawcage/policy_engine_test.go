package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/egress/egresstest"
)

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    listenSpec
		wantErr bool
	}{
		{"127.0.0.1:3128", listenSpec{"default", "127.0.0.1:3128"}, false},
		{"assistant=127.0.0.1:3128", listenSpec{"assistant", "127.0.0.1:3128"}, false},
		{"assistant=[::1]:3128", listenSpec{"assistant", "[::1]:3128"}, false},
		{"=127.0.0.1:3128", listenSpec{}, true},
		{"assistant=", listenSpec{}, true},
		{"assistant=3128", listenSpec{}, true},
	} {
		got, err := parseListen(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseListen(%q) = %+v, %v; want %+v, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestPresetParamsFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "preset-params.json")
	os.WriteFile(f, []byte(`{"npm.registry":"https://mirror.internal.example/npm/"}`), 0o600)
	got, err := presetParams(context.Background(), &config.Config{}, f)
	if err != nil || got["npm.registry"] != "https://mirror.internal.example/npm/" || len(got) != 1 {
		t.Fatalf("params %v, %v", got, err)
	}
	os.WriteFile(f, []byte(`["not", "an object"]`), 0o600)
	if _, err := presetParams(context.Background(), &config.Config{}, f); err == nil {
		t.Fatal("a JSON array was accepted as preset parameters")
	}
	if _, err := presetParams(context.Background(), &config.Config{}, filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}

// runCLI runs clawcage with args and returns its output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// startEngineCmd runs `clawcage policy-engine` in process until the test ends
// or stop is called.
func startEngineCmd(t *testing.T, state, cfg, listen string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"policy-engine", "--state", state, "--config", cfg, "--preset-params", filepath.Join(state, "pp.json"), "--listen", "assistant=" + listen})
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		done <- root.ExecuteContext(ctx)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", filepath.Join(state, "policy", "admin.sock"))
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("policy-engine exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("policy-engine did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("policy-engine: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestPolicyCLILifecycle: nothing allowed → a denied attempt appears in
// `policy pending` → `policy approve --always` → it works → restart → it
// still works, all through the commands an operator types.
func TestPolicyCLILifecycle(t *testing.T) {
	up := egresstest.StartEcho(t)
	state := t.TempDir()
	os.WriteFile(filepath.Join(state, "pp.json"), []byte(`{}`), 0o600)
	cfg := filepath.Join(state, "clawcage.yaml")
	os.WriteFile(cfg, []byte("sandboxes:\n  assistant:\n    policy:\n      network: []\n"), 0o600)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	proxy := ln.Addr().String()
	ln.Close()

	stop := startEngineCmd(t, state, cfg, proxy)
	if out, err := runCLI(t, "--state", state, "policy", "pending", "--json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty pending --json: %v %q", err, out)
	}
	if r := egresstest.Connect(t, proxy, up.Addr.String()); r.Status != 403 {
		t.Fatalf("nothing allowed: %d", r.Status)
	}
	out, err := runCLI(t, "--state", state, "policy", "pending")
	if err != nil || !strings.Contains(out, up.Addr.String()) || !strings.Contains(out, "no-rule-for-address") {
		t.Fatalf("pending: %v\n%s", err, out)
	}
	id := strings.Fields(out)[0]
	if out, err := runCLI(t, "--state", state, "policy", "approve", id, "--always"); err != nil || !strings.Contains(out, "approved sandbox assistant") {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	r := egresstest.Connect(t, proxy, up.Addr.String())
	if got, err := egresstest.Echo(r, "hi"); err != nil || got != "hi" {
		t.Fatalf("after approval: %d %v", r.Status, err)
	}
	r.Conn.Close()
	stop()

	startEngineCmd(t, state, cfg, proxy)
	r = egresstest.Connect(t, proxy, up.Addr.String())
	if got, err := egresstest.Echo(r, "again"); err != nil || got != "again" {
		t.Fatalf("after restart: %d %v", r.Status, err)
	}
	out, err = runCLI(t, "--state", state, "policy", "show", "assistant")
	if err != nil || !strings.Contains(out, "always") || !strings.Contains(out, up.Addr.String()) {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "--state", state, "policy", "approve", "nosuchid", "--for", "1h", "--always"); err == nil {
		t.Fatal("--for with --always accepted")
	}
}
