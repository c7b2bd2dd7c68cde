package supervisor

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func startControl(t *testing.T, sup *Supervisor) *ControlServer {
	t.Helper()
	dir := t.TempDir()
	cs, err := NewControlServer(ControlSocketPath(dir), sup, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cs.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return cs
}

func TestControlStatus(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the control socket admits only uid 0")
	}
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on})
	sup.Add(Spec{Name: "router", Cmd: sh("exec sleep 1000")})
	run(t, sup)
	evs := rec.waitFor(t, EventStarted, 1)
	cs := startControl(t, sup)

	st, err := os.Stat(cs.Path())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Mode().Type() != os.ModeSocket {
		t.Errorf("control socket mode %v, want a 0600 socket", st.Mode())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := FetchStatus(ctx, cs.Path())
	if err != nil {
		t.Fatal(err)
	}
	if resp.PID != os.Getpid() || len(resp.Components) != 1 {
		t.Fatalf("status %+v", resp)
	}
	c := resp.Components[0]
	if c.Name != "router" || c.State != "running" || c.PID != evs[0].PID || c.Health != "ok" || c.Restart != "always" {
		t.Errorf("component status %+v", c)
	}
}

func TestControlRefusesNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts a client as another uid")
	}
	cs := startControl(t, New(Options{}))
	// Open the file mode on purpose: SO_PEERCRED alone must keep others out.
	os.Chmod(cs.Path(), 0o666)
	os.Chmod(filepath.Dir(cs.Path()), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(cs.Path())), 0o755)

	exe, _ := os.Executable()
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bindir := t.TempDir()
	os.Chmod(filepath.Dir(bindir), 0o755)
	os.Chmod(bindir, 0o755)
	bin := filepath.Join(bindir, "helper")
	os.WriteFile(bin, data, 0o755)

	tests := []struct {
		name string
		uid  uint32
		want string
	}{
		{"nobody is refused", 65534, "error:"},
		{"a component uid is refused", 61001, "error:"},
		{"root is served", 0, "components: 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, cs.Path())
			cmd.Env = []string{helperEnv + "=status"}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.uid}}
			out, _ := cmd.CombinedOutput()
			t.Logf("uid %d: %s", tt.uid, out)
			// Refused by the SO_PEERCRED check after connecting, not by the
			// file mode (which the test opened).
			if !strings.HasPrefix(string(out), tt.want) || strings.Contains(string(out), "permission denied") {
				t.Errorf("client as uid %d: %q, want %q", tt.uid, out, tt.want)
			}
		})
	}
}

func TestControlSocketPathChecks(t *testing.T) {
	dir := t.TempDir()
	path := ControlSocketPath(dir)
	// A regular file in the way is not removed.
	os.WriteFile(path, []byte("keep"), 0o600)
	if _, err := NewControlServer(path, New(Options{}), nil); err == nil {
		t.Errorf("a regular file at the socket path was replaced")
	}
	os.Remove(path)

	// A stale socket (nobody listening) is replaced.
	ln, _ := net.Listen("unix", path)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	cs, err := NewControlServer(path, New(Options{}), nil)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	// A live one is not: two supervisors on one state directory.
	if _, err := NewControlServer(path, New(Options{}), nil); err == nil || !strings.Contains(err.Error(), "another supervisor") {
		t.Errorf("second server: %v, want 'another supervisor'", err)
	}
	cs.ln.Close()
}
