package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/egress"
	"github.com/clawcage/clawcage/internal/egress/egresstest"
	"github.com/clawcage/clawcage/internal/kernel"
	"github.com/clawcage/clawcage/internal/netns"
	"github.com/clawcage/clawcage/internal/stack"
)

// supervisorEnd drives a component's control channel as the supervisor
// does.
type supervisorEnd struct {
	t    *testing.T
	conn *net.UnixConn
	next uint64
}

func (s *supervisorEnd) receive() netns.ControlMessage {
	s.t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, ln, err := netns.ReceiveControl(s.conn)
	if err != nil || ln != nil {
		s.t.Fatalf("receive: %+v %v %v", m, ln, err)
	}
	return m
}

// add hands over a fresh loopback listener for sandbox and returns its
// address and the component's answer.
func (s *supervisorEnd) add(sandbox string) (string, string) {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	f, err := netns.ListenerFile(ln)
	if err != nil {
		s.t.Fatal(err)
	}
	s.next++
	if err := netns.SendControl(s.conn, netns.ControlMessage{Op: netns.OpAdd, ID: s.next, Sandbox: sandbox}, f); err != nil {
		s.t.Fatal(err)
	}
	// The component holds the only copy from here on, as it would once the
	// supervisor deleted the sandbox.
	f.Close()
	ln.Close()
	m := s.receive()
	if m.Op != netns.OpDone || m.ID != s.next {
		s.t.Fatalf("answer %+v to add %d", m, s.next)
	}
	return ln.Addr().String(), m.Error
}

func (s *supervisorEnd) remove(sandbox string) string {
	s.t.Helper()
	s.next++
	if err := netns.SendControl(s.conn, netns.ControlMessage{Op: netns.OpRemove, ID: s.next, Sandbox: sandbox}, nil); err != nil {
		s.t.Fatal(err)
	}
	m := s.receive()
	if m.Op != netns.OpDone || m.ID != s.next {
		s.t.Fatalf("answer %+v to remove %d", m, s.next)
	}
	return m.Error
}

// TestPolicyEngineHotAdd runs the real policy engine under a control
// channel: sandboxes are added while another one holds a live tunnel, a
// sandbox whose policy does not compile gets refusals only, and removal
// closes the sandbox's listener and tunnel.
func TestPolicyEngineHotAdd(t *testing.T) {
	echo := egresstest.StartEcho(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "clawcage.yaml")
	allowEcho := fmt.Sprintf("{network: [{name: echo, cidrs: [127.0.0.0/8], ports: [%d]}]}", echo.Port())
	writeCfg := func(sandboxes ...string) *config.Config {
		t.Helper()
		y := "sandboxes:\n"
		for _, s := range sandboxes {
			y += "  " + s + "\n"
		}
		if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := writeCfg("a: {policy: " + allowEcho + "}")
	// The supervisor's preset parameters: none yet (its discovery runs in
	// the background).
	paramsPath := filepath.Join(dir, "preset-params.json")
	os.WriteFile(paramsPath, []byte("{}"), 0o600)

	local, remote, err := netns.ControlPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	rc, err := net.FileConn(remote)
	remote.Close()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logR, logW := io.Pipe()
	var logs strings.Builder
	logDone := make(chan struct{})
	go func() { io.Copy(&logs, logR); close(logDone) }()
	go func() {
		done <- runPolicyEngine(ctx, logW, state, cfgPath, paramsPath, cfg, nil, egress.Options{}, map[string]string{}, rc.(*net.UnixConn))
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("policy engine: %v", err)
		}
		logW.Close()
		<-logDone
	}
	defer stop()
	sup := &supervisorEnd{t: t, conn: local}
	if m := sup.receive(); m.Op != netns.OpReady {
		t.Fatalf("first message %+v, want ready", m)
	}

	aAddr, errMsg := sup.add("a")
	if errMsg != "" {
		t.Fatalf("add a: %s", errMsg)
	}
	tunnel := egresstest.Connect(t, aAddr, fmt.Sprintf("127.0.0.1:%d", echo.Port()))
	if got, err := egresstest.Echo(tunnel, "before"); err != nil || got != "before" {
		t.Fatalf("a's tunnel: %d %q %v", tunnel.Status, got, err)
	}

	// b and broken are written to the configuration copy first, as the
	// supervisor does.
	writeCfg("a: {policy: "+allowEcho+"}", "b: {}", "broken: {policy: {presets: [npm]}}", "npm1: {policy: {presets: [npm]}}")
	tests := []struct {
		name, sandbox string
		params        string // the preset parameter file the supervisor wrote by then
		wantErr       string // in the answer to the supervisor
		wantStatus    int    // for a CONNECT to the echo server through the sandbox's proxy
		wantReason    string
	}{
		{"added sandbox is served with its own policy", "b", "{}", "", 403, "no-rule-for-address"},
		{"sandbox whose policy does not compile gets refusals", "broken", "{}", "npm.registry", 403, "policy-not-loaded"},
		{"sandbox missing from the configuration gets refusals", "ghost", "{}", "not in", 403, "policy-not-loaded"},
		{"preset parameters discovered after the start are used", "npm1", `{"npm.registry":"https://registry.test.invalid"}`, "", 403, "no-rule-for-address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile(paramsPath, []byte(tt.params), 0o600)
			addr, errMsg := sup.add(tt.sandbox)
			if !strings.Contains(errMsg, tt.wantErr) || (tt.wantErr == "") != (errMsg == "") {
				t.Fatalf("add %s answered %q, want %q", tt.sandbox, errMsg, tt.wantErr)
			}
			r := egresstest.Connect(t, addr, fmt.Sprintf("127.0.0.1:%d", echo.Port()))
			if r.Status != tt.wantStatus || r.Reason() != tt.wantReason {
				t.Fatalf("CONNECT through %s: %d %v, want %d %s", tt.sandbox, r.Status, r.Body, tt.wantStatus, tt.wantReason)
			}
			// The first sandbox's tunnel was never interrupted.
			if got, err := egresstest.Echo(tunnel, "still "+tt.sandbox); err != nil || got != "still "+tt.sandbox {
				t.Fatalf("a's tunnel after adding %s: %q %v", tt.sandbox, got, err)
			}
		})
	}
	if _, e := sup.add("b"); e == "" { // a second listener for one sandbox
		t.Error("a second add of b was accepted")
	}

	// Removing a closes its listener and its live tunnel; b stays.
	if e := sup.remove("a"); e != "" {
		t.Fatalf("remove a: %s", e)
	}
	tunnel.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := tunnel.Conn.Read(make([]byte, 1)); err == nil {
		t.Error("a's tunnel still open after its removal")
	}
	if c, err := net.DialTimeout("tcp", aAddr, time.Second); err == nil {
		c.Close()
		t.Error("a's listener still accepts after its removal")
	}
	if e := sup.remove("a"); !strings.Contains(e, "no listener") {
		t.Errorf("second remove of a answered %q", e)
	}
	stop()
	for _, want := range []string{`"msg":"sandbox settings not loaded: its requests are refused","component":"policy","sandbox":"broken"`, `"msg":"listener removed","component":"policy","sandbox":"a"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

func TestPrintKernelInStatus(t *testing.T) {
	full := &stack.KernelView{Enforceable: false, Problem: "landlock: \x1b[2Jmissing"}
	full.Kernel, full.Arch, full.LandlockABI = "6.18.44", "x86_64", 7
	full.Cgroups.Version = "hybrid"
	full.Cgroups.Controllers = map[string]string{"memory": "v1:/sys/fs/cgroup/memory", "pids": "v2:/sys/fs/cgroup/unified"}
	full.Features = []kernel.Feature{{Name: "landlock", OK: true, Required: true}, {Name: "nftables", OK: false}}
	tests := []struct {
		name string
		kv   *stack.KernelView
		want []string
	}{
		{"pending probe says so", &stack.KernelView{Pending: true}, []string{"still being probed"}},
		{"features, controllers and an escaped verdict", full, []string{
			"kernel 6.18.44 (x86_64), Landlock ABI 7, cgroups hybrid [memory=v1 pids=v2]",
			"features: landlock ok, nftables absent",
			`SANDBOXES CANNOT BE ENFORCED: landlock: \x1b[2Jmissing`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			printKernel(&b, tt.kv)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
			if strings.Contains(b.String(), "\x1b") {
				t.Errorf("raw escape in output %q", b.String())
			}
		})
	}
}
