package engine

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/egress/egresstest"
	"github.com/clawcage/clawcage/internal/policy"
)

// TestAddRemoveSandboxAtRunTime: a sandbox added while the engine serves
// another gets its own policy, a policy that does not compile changes
// nothing, removal deletes its approvals (a sandbox created again under
// the name starts with none) and closes its listener and tunnels while the
// other sandbox keeps working.
func TestAddRemoveSandboxAtRunTime(t *testing.T) {
	up := egresstest.StartTLSEcho(t)
	res := egresstest.NewResolver()
	res.Set("api.example.com", "127.0.0.1")
	clk := &clock{t: time.Now()}
	target := fmt.Sprintf("api.example.com:%d", up.Port())
	allowLo := fmt.Sprintf("network:\n  - {name: lo, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port())
	s := startEngine(t, t.TempDir(), allowLo, res, clk)
	ctx := context.Background()

	// A grant for "new" made while it exists, then the sandbox deleted:
	// the approval must not come back with a new sandbox of that name.
	parse := func(y string) policy.Policy {
		p, err := policy.Parse([]byte(y), "new.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return *p
	}
	// The range is named, the host is not: only the approval lets the
	// name through (the engine's own lifecycle test does the same).
	loOnly := parse(allowLo)
	if err := s.eng.AddSandbox(ctx, "new", loOnly); err != nil {
		t.Fatal(err)
	}
	if m := s.eng.Proxy().Matcher("new"); m.DecideName("api.example.com", up.Port(), "", "").Allow {
		t.Fatal("host allowed before the approval")
	}
	if _, err := s.eng.Allow(ctx, "new", "api.example.com", up.Port(), ModeAlways, 0); err != nil {
		t.Fatal(err)
	}
	s.eng.RemoveSandbox(ctx, "new")
	if _, err := s.eng.Allow(ctx, "new", "api.example.com", up.Port(), ModeAlways, 0); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("grant for a removed sandbox: %v", err)
	}

	tests := []struct {
		name    string
		policy  policy.Policy
		wantErr string
	}{
		{"policy that does not compile is refused", policy.Policy{Presets: []string{"no-such-preset"}}, "no-such-preset"},
		{"same name again after deletion", loOnly, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.eng.AddSandbox(ctx, "new", tt.policy)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("AddSandbox: %v, want %q", err, tt.wantErr)
				}
				ln, _ := net.Listen("tcp", "127.0.0.1:0")
				if err := s.eng.Serve(ctx, ln, "new"); err == nil || !strings.Contains(err.Error(), "not configured") {
					t.Fatalf("Serve after a refused AddSandbox: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m := s.eng.Proxy().Matcher("new"); m.DecideName("api.example.com", up.Port(), "", "").Allow {
				t.Fatal("the deleted sandbox's approval came back with a new sandbox of the same name")
			}
			grants, err := s.eng.store.Grants(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range grants {
				if g.Sandbox == "new" {
					t.Fatalf("grant %+v of the deleted sandbox still stored", g)
				}
			}
		})
	}
	if _, err := s.eng.Allow(ctx, "new", "api.example.com", up.Port(), ModeAlways, 0); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	served := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); served <- s.eng.Serve(ctx, ln, "new") }()
	newProxy := ln.Addr().String()
	live := egresstest.Connect(t, newProxy, target)
	conn, err := egresstest.TLSConn(live, "api.example.com")
	if err != nil {
		t.Fatalf("approved tunnel of the added sandbox: %d %v", live.Status, err)
	}
	if r := egresstest.Connect(t, newProxy, "api.example.com:2"); r.Status != 403 {
		t.Fatalf("added sandbox reached a port its policy does not allow: %d", r.Status)
	}
	if n := s.eng.RemoveSandbox(ctx, "new"); n != 1 {
		t.Errorf("RemoveSandbox closed %d tunnels, want 1", n)
	}
	wg.Wait()
	if err := <-served; err != nil {
		t.Errorf("Serve of the removed sandbox: %v", err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("tunnel of the removed sandbox still open")
	}
	if c, err := net.DialTimeout("tcp", newProxy, time.Second); err == nil {
		c.Close()
		t.Error("listener of the removed sandbox still accepts")
	}
	// The sandbox served from the start never noticed.
	if r := egresstest.Connect(t, s.proxy, fmt.Sprintf("127.0.0.1:%d", up.Port())); r.Status != 200 {
		t.Fatalf("other sandbox after the removal: %d %v", r.Status, r.Body)
	}
	if r := egresstest.Connect(t, s.proxy, target); r.Status != 403 {
		t.Fatalf("the removed sandbox's approval leaked to the other: %d", r.Status)
	}
}
