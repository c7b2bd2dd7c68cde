package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/sandbox"
	"github.com/clawcage/clawcage/internal/stack"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// boxName is the test's sandbox; sandbox names are machine-wide (cgroups).
var boxName = fmt.Sprintf("exec-cli-%d", os.Getpid())

// execStack runs a stack with one idle sandbox boxName (real sandbox runtime,
// the one `clawcage up` uses). Its router and policy engine are not needed
// here: /bin/true stands in and is restarted with a long backoff.
func execStack(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a stack with a real sandbox")
	}
	if err := sandbox.CheckKernel(); err != nil {
		t.Fatalf("kernel cannot enforce a sandbox: %v", err)
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o711) // the components' uids must reach the state directory
	os.Chmod(dir, 0o711)
	state := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "clawcage.yaml")
	if err := os.WriteFile(cfg, []byte("sandboxes:\n  "+boxName+": {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- stack.Run(ctx, stack.Options{
			ConfigPath: cfg, StateDir: state, Exe: "/bin/true",
			Backoff:              supervisor.Backoff{Initial: 10 * time.Second, StableAfter: time.Second},
			DiscoverPresetParams: func(context.Context) (map[string]string, error) { return nil, nil },
			SandboxStart:         sandboxRuntime(ctx),
			Ready:                func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("stack.Run: %v", err)
	}
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var views []stack.SandboxView
		ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		err := controlCall(ctx, state, "GET", "/v1/sandboxes", nil, &views)
		c()
		if err == nil && len(views) == 1 && views[0].Status != nil && views[0].Status.State == "running" {
			return state
		}
		if time.Now().After(deadline) {
			var st any = views
			if len(views) == 1 && views[0].Status != nil {
				st = *views[0].Status
			}
			var logs []string
			journal.Read(context.Background(), filepath.Join(state, "journal"), journal.ReadOptions{}, func(e journal.Entry) error {
				logs = append(logs, journal.FormatText(e))
				return nil
			})
			t.Fatalf("sandbox box never ran: %v %+v\n%s", err, st, strings.Join(logs, "\n"))
		}
	}
}

// TestSandboxExecCLI drives the CLI's session (execSession) with stand-ins
// for the operator's terminal and streams.
func TestSandboxExecCLI(t *testing.T) {
	state := execStack(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 for the ioctl")
	}

	t.Run("pipes: bytes, exit status, and never the operator's own descriptors", func(t *testing.T) {
		opIn, opInW, _ := os.Pipe() // the operator's stdin: a pipe the command must not get
		opOut, err := os.CreateTemp(t.TempDir(), "stdout")
		if err != nil {
			t.Fatal(err)
		}
		opErr, _ := os.CreateTemp(t.TempDir(), "stderr")
		io.WriteString(opInW, "typed\n")
		opInW.Close()
		var st unix.Stat_t
		unix.Fstat(int(opIn.Fd()), &st)
		script := `read line; echo "got $line"; readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2 | sed 's/[0-9]//g' | tr '\n' ' '; ` +
			`readlink /proc/self/fd/0 >&2; exit 42`
		code, err := execSession(context.Background(), state, boxName, stack.ExecRequest{Argv: []string{"sh", "-c", script}}, opIn, opOut, opErr)
		out, _ := os.ReadFile(opOut.Name())
		errOut, _ := os.ReadFile(opErr.Name())
		if err != nil || code != 42 || string(out) != "got typed\npipe:[] pipe:[] pipe:[] " {
			t.Errorf("got code %d err %v stdout %q, want 42 and the command on pipes", code, err, out)
		}
		if strings.TrimSpace(string(errOut)) == fmt.Sprintf("pipe:[%d]", st.Ino) || !strings.HasPrefix(string(errOut), "pipe:[") {
			t.Errorf("the command's stdin is %q; the operator's pipe is inode %d: it must be a pipe of its own", errOut, st.Ino)
		}
	})

	t.Run("-t: a pty of its own; TIOCSTI refused; operator terminal restored", func(t *testing.T) {
		// The operator's terminal: the command must get neither it nor
		// control over it.
		opMaster, opTTY, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer opMaster.Close()
		defer opTTY.Close()
		pty.Setsize(opMaster, &pty.Winsize{Rows: 33, Cols: 111})
		before, _ := unix.IoctlGetTermios(int(opTTY.Fd()), unix.TCGETS)
		var opStat syscall.Stat_t
		syscall.Fstat(int(opTTY.Fd()), &opStat)
		var (
			mu     sync.Mutex
			screen bytes.Buffer
		)
		go func() {
			b := make([]byte, 4096)
			for {
				n, err := opMaster.Read(b)
				mu.Lock()
				screen.Write(b[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()

		probe := `import fcntl, termios, errno, os, struct
tty_nr = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
rows, cols = struct.unpack("hh", fcntl.ioctl(0, termios.TIOCGWINSZ, b"0000"))
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    sti = "injected"
except OSError as e:
    sti = errno.errorcode[e.errno]
print(tty_nr, rows, cols, sti, os.environ.get("TERM"))
raise SystemExit(3)`
		t.Setenv("TERM", "xterm-test")
		code, err := execSession(context.Background(), state, boxName, stack.ExecRequest{Argv: []string{"python3", "-c", probe}, TTY: true}, opTTY, opTTY, opTTY)
		after, _ := unix.IoctlGetTermios(int(opTTY.Fd()), unix.TCGETS)
		// The command's output was relayed before execSession returned; it
		// reaches the operator's side of the terminal at once.
		var shown string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			shown = screen.String()
			mu.Unlock()
			if strings.HasSuffix(shown, "\n") {
				break
			}
		}
		f := strings.Fields(shown)
		if err != nil || code != 3 || len(f) != 5 {
			t.Fatalf("got code %d err %v screen %q, want code 3 and the probe's line", code, err, shown)
		}
		if f[0] == fmt.Sprint(opStat.Rdev) || f[0] == "0" {
			t.Errorf("controlling terminal %s: want a new pty, not the operator's (%d) nor none", f[0], opStat.Rdev)
		}
		if f[1] != "33" || f[2] != "111" || f[3] != "EPERM" || f[4] != "xterm-test" {
			t.Errorf("window %sx%s TIOCSTI %s TERM %s: want 33x111, EPERM, xterm-test", f[1], f[2], f[3], f[4])
		}
		if *before != *after {
			t.Errorf("operator terminal settings not restored:\nbefore %+v\nafter  %+v", before, after)
		}
	})
}

// TestSandboxExecCLIWindowSize: a resize of the operator's terminal
// (SIGWINCH to clawcage) reaches the command's own pty, whose foreground
// process gets SIGWINCH from the kernel.
func TestSandboxExecCLIWindowSize(t *testing.T) {
	state := execStack(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3")
	}
	opMaster, opTTY, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer opMaster.Close()
	defer opTTY.Close()
	pty.Setsize(opMaster, &pty.Winsize{Rows: 20, Cols: 80})
	var (
		mu     sync.Mutex
		screen bytes.Buffer
	)
	shown := func() string { mu.Lock(); defer mu.Unlock(); return screen.String() }
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := opMaster.Read(b)
			mu.Lock()
			screen.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	probe := `import signal, fcntl, termios, struct
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGWINCH])  # no resize is missed
print("ready", flush=True)
while True:
    signal.sigwait([signal.SIGWINCH])
    rows, cols = struct.unpack("hh", fcntl.ioctl(0, termios.TIOCGWINSZ, b"0000"))
    if (rows, cols) == (44, 122):
        print("resized", rows, cols, flush=True)
        break`
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := execSession(context.Background(), state, boxName, stack.ExecRequest{Argv: []string{"python3", "-c", probe}, TTY: true}, opTTY, opTTY, opTTY)
		done <- result{code, err}
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(shown(), "ready"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the command never started: %q", shown())
		}
	}
	pty.Setsize(opMaster, &pty.Winsize{Rows: 44, Cols: 122})
	syscall.Kill(os.Getpid(), syscall.SIGWINCH) // what the terminal does to clawcage
	select {
	case r := <-done:
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(shown(), "resized") && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond) // relayed before the return; on its way to our side
		}
		if r.err != nil || r.code != 0 || !strings.Contains(shown(), "resized 44 122") {
			t.Errorf("got code %d err %v screen %q, want the command to see 44x122", r.code, r.err, shown())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the command never saw the resize: %q", shown())
	}
}

// TestSandboxExecCLISignals: SIGTERM sent to clawcage goes to the command
// (whose trap decides the exit status) instead of ending clawcage.
func TestSandboxExecCLISignals(t *testing.T) {
	state := execStack(t)
	in, inW, _ := os.Pipe()
	defer inW.Close()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	script := `trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.05; done`
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := execSession(context.Background(), state, boxName, stack.ExecRequest{Argv: []string{"sh", "-c", script}}, in, out, out)
		done <- result{code, err}
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(out.Name()); strings.Contains(string(b), "ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command never started")
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // execSession has it: forwarded, not fatal
	select {
	case r := <-done:
		got, _ := os.ReadFile(out.Name())
		if r.err != nil || r.code != 9 || string(got) != "ready\ngot TERM\n" {
			t.Errorf("got code %d err %v output %q, want 9 and the trap's line", r.code, r.err, got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("SIGTERM never reached the command")
	}
}

// TestSandboxShellCLI runs `clawcage sandbox shell` with commands on a
// pipe (no terminal: no pty either): a login shell, bash where the sandbox
// has it, whose exit status is clawcage's.
func TestSandboxShellCLI(t *testing.T) {
	state := execStack(t)
	in, inW, _ := os.Pipe()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(inW, "echo \"$0 $(shopt -q login_shell 2>/dev/null && echo login) $(id -u) $PWD\"; exit 3\n")
	inW.Close()
	saved := [2]*os.File{os.Stdin, os.Stdout}
	os.Stdin, os.Stdout = in, out
	root := newRootCmd()
	root.SetArgs([]string{"--state", state, "sandbox", "shell", boxName})
	err = root.Execute()
	os.Stdin, os.Stdout = saved[0], saved[1]
	got, _ := os.ReadFile(out.Name())
	want := "sh  1000 /sandbox\n"
	if _, serr := os.Stat("/bin/bash"); serr == nil {
		want = "bash login 1000 /sandbox\n"
	}
	if ec, ok := err.(exitError); !ok || ec.code != 3 || string(got) != want {
		t.Errorf("got %v output %q, want exit status 3 and %q", err, got, want)
	}
}

func TestSandboxExecCLIBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"env without =", []string{"sandbox", "exec", boxName, "--env", "NOPE", "--", "true"}, `--env "NOPE": want KEY=VALUE`},
		{"relative workdir", []string{"sandbox", "exec", boxName, "--workdir", "tmp", "--", "true"}, `--workdir "tmp": must be an absolute path`},
		{"no command", []string{"sandbox", "exec", boxName}, "requires at least 2 arg(s)"},
		{"two names before --", []string{"sandbox", "exec", boxName, "other", "--", "true"}, "usage: clawcage sandbox exec NAME"},
		{"no supervisor", []string{"--state", "/nonexistent-clawcage-state", "sandbox", "exec", boxName, "--", "true"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootCmd()
			root.SetArgs(tc.args)
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.Execute()
			if tc.want == "" { // printed by execExit, exit status 1
				if ec, ok := err.(exitError); !ok || ec.code != 1 {
					t.Errorf("err %v, want exit status 1", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}
