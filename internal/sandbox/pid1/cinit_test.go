package pid1_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/sandbox"
	"github.com/clawcage/clawcage/internal/sandbox/pid1"
	"github.com/clawcage/clawcage/internal/syncbuf"
)

// This test binary is its own sandbox-init: package pid1 (its C start-up
// with cgo, its init function otherwise) takes over when it is started as
// "<binary> sandbox-init".

// procStatus returns the fields of /proc/<pid>/task/<tid>/status of every
// thread of pid, as the host sees them.
func procStatus(t *testing.T, pid int) []map[string]string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/" + itoa(pid) + "/task/*/status")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("threads of PID 1 (%d): %v", pid, err)
	}
	var out []map[string]string
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				m[k] = strings.TrimSpace(v)
			}
		}
		out = append(out, m)
	}
	return out
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// checkConfined asserts that every thread of PID 1 carries the sandbox's
// confinement: no_new_privs, a seccomp filter, an empty bounding set and no
// inheritable or ambient capabilities. (The Go implementation confines one
// thread and installs the seccomp filter on all: only that is checked
// there.)
func checkConfined(t *testing.T, pid int) int {
	t.Helper()
	threads := procStatus(t, pid)
	want := map[string]string{"NoNewPrivs": "1", "Seccomp": "2", "CapBnd": "0000000000000000", "CapInh": "0000000000000000", "CapAmb": "0000000000000000"}
	if !testCInit {
		want = map[string]string{"Seccomp": "2"}
	}
	for _, s := range threads {
		for k, want := range want {
			if s[k] != want {
				t.Errorf("PID 1 thread %s: %s is %q, want %q", s["Pid"], k, s[k], want)
			}
		}
	}
	return len(threads)
}

// TestPID1ConfinedAsAWhole starts a sandbox and checks from the host that
// PID 1 is confined as a whole and, with the C start-up, is one thread
// without a Go runtime; then that an exec'd command starts (with no signal
// blocked), that PID 1 and every process it started (with C, the exec
// server too) are confined in every thread, and that signals still reach
// the sandbox's command.
func TestPID1ConfinedAsAWhole(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts a sandbox: needs root")
	}
	if err := sandbox.CheckKernel(); err != nil {
		t.Fatalf("kernel cannot enforce a sandbox: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := sandbox.Start(ctx, sandbox.Spec{
		Command: []string{"/bin/sh", "-c", `trap 'exit 42' TERM; while :; do sleep 0.05; done`},
	}, sandbox.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	var waitErr error
	go func() { code, waitErr = p.Wait(); close(done) }()
	defer func() { p.Signal(syscall.SIGKILL); <-done }()

	// PID 1 installs the seccomp filter last, right before it starts the
	// command (an exec request waits in the channel until then).
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + itoa(p.Pid()) + "/status")
		if strings.Contains(string(b), "\nSeccomp:\t2\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("PID 1 did not confine itself")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := checkConfined(t, p.Pid())
	if pid1Threads := n; testCInit && pid1Threads != 1 {
		t.Errorf("PID 1 has %d threads before any exec, want 1 (no Go runtime)", pid1Threads)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	ecode, err := p.Exec(ctx, sandbox.ExecRequest{Argv: []string{"/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"}}, devnull, w, w)
	w.Close()
	out, _ := readAll(r)
	if err != nil || ecode != 0 {
		t.Fatalf("exec: %d, %v (%s)", ecode, err, out)
	}
	if !strings.Contains(out, "SigBlk:\t0000000000000000") {
		t.Errorf("exec'd command starts with signals blocked:\n%s", out)
	}
	if n := checkConfined(t, p.Pid()); testCInit && n != 1 {
		t.Errorf("PID 1 has %d threads after an exec, want 1 (the exec server is a child)", n)
	}
	for _, kid := range childrenOf(t, p.Pid()) {
		checkConfined(t, kid)
	}

	// A second exec is served by the same exec server.
	if ecode, err := p.Exec(ctx, sandbox.ExecRequest{Argv: []string{"/bin/false"}}, devnull, devnull, devnull); err != nil || ecode != 1 {
		t.Fatalf("second exec: %d, %v, want 1", ecode, err)
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("SIGTERM did not end the sandbox")
	}
	if waitErr != nil || code != 42 {
		t.Fatalf("sandbox ended with %d, %v; want 42 from the command's TERM trap", code, waitErr)
	}
}

func readAll(f *os.File) (string, error) {
	defer f.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(f)
	return b.String(), err
}

// testCInit says whether PID 1 starts in C in this build.
var testCInit = pid1.HaveCInit

// runOut runs spec to the end and returns its exit code and stdout.
func runOut(t *testing.T, spec sandbox.Spec) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := sandbox.Run(ctx, spec, sandbox.Stdio{Stdout: &out})
	if err != nil {
		t.Fatalf("run: %d, %v", code, err)
	}
	return code, out.String()
}

// TestOperatorUmaskDoesNotLeakIn runs a sandbox from a process with umask
// 077: the generated /etc must still be readable by the sandbox user, and
// the command gets umask 022, not the operator's.
func TestOperatorUmaskDoesNotLeakIn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts a sandbox: needs root")
	}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	code, out := runOut(t, sandbox.Spec{Command: []string{"/bin/sh", "-c", "umask; cat /etc/passwd /etc/hosts >/dev/null && echo etc-readable"}})
	if code != 0 || out != "0022\netc-readable\n" {
		t.Fatalf("exit %d, output %q; want umask 0022 and a readable /etc", code, out)
	}
}

// startRootSleeper starts a --root sandbox running sleep 30, killed when
// the test ends. done closes when it has exited; devnull is open for
// reading and writing.
func startRootSleeper(t *testing.T) (ctx context.Context, p *sandbox.Process, done <-chan struct{}, devnull *os.File) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	p, err := sandbox.Start(ctx, sandbox.Spec{Command: []string{"/bin/sleep", "30"}, Root: true}, sandbox.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { p.Wait(); close(exited) }()
	t.Cleanup(func() { p.Signal(syscall.SIGKILL); <-exited })
	devnull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devnull.Close() })
	return ctx, p, exited, devnull
}

// TestRootCommandCannotCrashExecServer checks that after the first exec
// (which starts the Go exec server) a --root command's kill-sent SIGSEGV,
// SIGABRT, SIGBUS and SIGSYS to PID 1 and to the process that started it
// (the exec server; PID 1 without cgo) are dropped: the sandbox and its
// exec channel live on.
func TestRootCommandCannotCrashExecServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts a sandbox: needs root")
	}
	ctx, p, done, devnull := startRootSleeper(t)
	for _, sig := range []string{"SEGV", "ABRT", "BUS", "SYS"} {
		if code, err := p.Exec(ctx, sandbox.ExecRequest{Root: true, Argv: []string{"/bin/sh", "-c", "kill -" + sig + " 1 $PPID; sleep 0.1"}}, devnull, devnull, devnull); err != nil || code != 0 {
			t.Fatalf("exec kill -%s 1: %d, %v", sig, code, err)
		}
		select {
		case <-done:
			t.Fatalf("kill -%s 1 from a --root command ended the sandbox", sig)
		default:
		}
	}
	if code, err := p.Exec(ctx, sandbox.ExecRequest{Root: true, Argv: []string{"/bin/true"}}, devnull, devnull, devnull); err != nil || code != 0 {
		t.Fatalf("exec after the signals: %d, %v", code, err)
	}
}

// TestKilledExecServerIsReplaced: a --root command can SIGKILL the exec
// server (same user namespace, and SIGKILL cannot be caught); its own
// session ends, but PID 1 (in C) reaps the server and forks a new one for
// the next request, so later execs work and the sandbox lives on.
func TestKilledExecServerIsReplaced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts a sandbox: needs root")
	}
	if !testCInit {
		t.Skip("without cgo PID 1 serves exec itself and cannot be killed from inside")
	}
	ctx, p, done, devnull := startRootSleeper(t)
	serverPid := func() int {
		t.Helper()
		kids := childrenOf(t, p.Pid())
		for _, k := range kids {
			b, _ := os.ReadFile("/proc/" + itoa(k) + "/cmdline")
			if strings.HasSuffix(string(bytes.TrimRight(b, "\x00")), "sandbox-init") {
				return k
			}
		}
		t.Fatalf("no exec server among PID 1's children %v", kids)
		return 0
	}
	for round := range 3 {
		if code, err := p.Exec(ctx, sandbox.ExecRequest{Root: true, Argv: []string{"/bin/true"}}, devnull, devnull, devnull); err != nil || code != 0 {
			t.Fatalf("round %d: exec: %d, %v", round, code, err)
		}
		first := serverPid()
		// The session of the command that kills its own server ends
		// with it: an error, not a hang.
		code, err := p.Exec(ctx, sandbox.ExecRequest{Root: true, Argv: []string{"/bin/sh", "-c", "kill -KILL $PPID; sleep 5"}}, devnull, devnull, devnull)
		if err == nil && code == 0 {
			t.Fatalf("round %d: the killing command's session reported success", round)
		}
		select {
		case <-done:
			t.Fatalf("round %d: killing the exec server ended the sandbox", round)
		default:
		}
		if code, err := p.Exec(ctx, sandbox.ExecRequest{Root: true, Argv: []string{"/bin/sh", "-c", "exit 7"}}, devnull, devnull, devnull); err != nil || code != 7 {
			t.Fatalf("round %d: exec after the server was killed: %d, %v; want 7", round, code, err)
		}
		if second := serverPid(); second == first {
			t.Fatalf("round %d: exec server pid %d survived SIGKILL", round, first)
		}
	}
}

// TestRootCommandCannotLowerPID1Limits: prlimit on another process is
// refused by the sandbox's seccomp filter, so a --root command cannot
// lower PID 1's limits for every later exec; its own limits it may lower.
func TestRootCommandCannotLowerPID1Limits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts a sandbox: needs root")
	}
	if _, err := os.Stat("/usr/bin/prlimit"); err != nil {
		t.Skip("needs util-linux's prlimit")
	}
	ctx, p, _, devnull := startRootSleeper(t)
	run := func(script string) (int, string) {
		t.Helper()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		code, err := p.Exec(ctx, sandbox.ExecRequest{Root: true, Argv: []string{"/bin/sh", "-c", script}}, devnull, w, w)
		w.Close()
		out, _ := readAll(r)
		if err != nil {
			t.Fatalf("exec %q: %v", script, err)
		}
		return code, strings.TrimSpace(out)
	}
	_, before := run("ulimit -n")
	if code, out := run("prlimit --pid 1 --nofile=16:16"); code == 0 || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("prlimit --pid 1: exit %d, %q; want a failure with EPERM", code, out)
	}
	if code, out := run("ulimit -n 20 && ulimit -n"); code != 0 || !strings.HasSuffix(out, "20") {
		t.Fatalf("lowering its own limit: exit %d, %q; want 20", code, out)
	}
	if _, after := run("ulimit -n"); after != before || after == "16" {
		t.Fatalf("a later exec's nofile limit is %q, want %q as before", after, before)
	}
}

// childrenOf returns the pids of pid's children (from /proc/*/stat).
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var kids []int
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so from the last ')'.
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == itoa(pid) {
			var k int
			for _, c := range strings.TrimSuffix(strings.TrimPrefix(st, "/proc/"), "/stat") {
				k = k*10 + int(c-'0')
			}
			kids = append(kids, k)
		}
	}
	return kids
}

// TestSignalDuringFirstExec sends SIGTERM to the sandbox at several
// moments around its first `sandbox exec` (the C build starts the exec
// server then): the command's TERM trap must run every time (exit 42) —
// no signal lost, PID 1 never ended by it.
func TestSignalDuringFirstExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts a sandbox: needs root")
	}
	for _, delay := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out := &syncbuf.Buffer{}
			p, err := sandbox.Start(ctx, sandbox.Spec{
				Command: []string{"/bin/sh", "-c", `trap 'exit 42' TERM; echo ready; while :; do sleep 0.01; done`},
			}, sandbox.Stdio{Stdout: out})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var code int
			go func() { code, _ = p.Wait(); close(done) }()
			defer func() { p.Signal(syscall.SIGKILL); <-done }()
			// The trap is set once "ready" is printed.
			for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "ready"); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the command did not start")
				}
			}
			devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer devnull.Close()
			go p.Exec(ctx, sandbox.ExecRequest{Argv: []string{"/bin/sleep", "5"}}, devnull, devnull, devnull)
			time.Sleep(delay)
			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("SIGTERM %v after the first exec request was lost: the sandbox still runs", delay)
			}
			if code != 42 {
				t.Fatalf("sandbox ended with %d, want 42 from the command's TERM trap", code)
			}
		})
	}
}
