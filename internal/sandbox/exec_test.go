package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/clawcage/clawcage/internal/sandbox/sandboxtest"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// execProbe makes one system call from inside the sandbox and prints "ok"
// or the errno's name.
const execProbe = sandboxtest.SyscallProbe

// execOutcome is what a command run with Process.Exec did.
type execOutcome struct {
	code           int
	err            error
	stdout, stderr string
}

// execIn runs req in p with stdin as its input, over pipes, as a caller
// of Exec must.
func execIn(ctx context.Context, t *testing.T, p *Process, req ExecRequest, stdin string) execOutcome {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { io.WriteString(inW, stdin); inW.Close() }()
	var wg sync.WaitGroup
	var out, errb bytes.Buffer
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&out, outR); outR.Close() }()
	go func() { defer wg.Done(); io.Copy(&errb, errR); errR.Close() }()
	code, xerr := p.Exec(ctx, req, inR, outW, errW)
	inR.Close()
	outW.Close()
	errW.Close()
	wg.Wait()
	return execOutcome{code: code, err: xerr, stdout: out.String(), stderr: errb.String()}
}

// startIdle starts a sandbox whose command records its namespaces, cgroup
// and pid in the workspace and then sleeps, joined to a network namespace
// with a listener on 127.0.0.1:8080 that answers "inference".
func startIdle(t *testing.T) (*Process, string) {
	t.Helper()
	nsFile, ln := netnsWithListener(t, "127.0.0.1:8080")
	t.Cleanup(func() { ln.Close(); nsFile.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("inference\n"))
			c.Close()
		}
	}()
	ws := filepath.Join(t.TempDir(), "ws")
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Start(ctx, Spec{
		Command:   sh("readlink /proc/self/ns/* > /sandbox/.ns; cat /proc/self/cgroup > /sandbox/.cgroup; echo $$ > /sandbox/.pid; exec sleep 1000"),
		Workspace: ws,
		NetNSFile: nsFile,
		Env:       []string{"AGENT_VAR=from-spec"},
		KillGrace: time.Second,
	}, Stdio{})
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { cancel(); p.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(ws, ".pid")); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandbox command never wrote its pid")
		}
	}
	return p, ws
}

func TestExec(t *testing.T) {
	needSandbox(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 for the system call probes")
	}
	// Host loopback: a listener the sandbox must not reach (its netns has
	// none on this port, and the port is one Landlock allows).
	hostLn, err := net.Listen("tcp4", "127.0.0.1:18790")
	if err == nil {
		defer hostLn.Close()
	}
	p, ws := startIdle(t)
	mainNS, _ := os.ReadFile(filepath.Join(ws, ".ns"))
	mainCG, _ := os.ReadFile(filepath.Join(ws, ".cgroup"))

	tests := []struct {
		name     string
		req      ExecRequest
		stdin    string
		wantOut  string
		wantErr  string
		wantCode int
	}{
		{"stdout and stderr bytes and exit code 7", ExecRequest{Argv: sh(`printf 'out\001'; printf 'err\002' >&2; exit 7`)}, "", "out\001", "err\002", 7},
		{"stdin passes through byte for byte", ExecRequest{Argv: []string{"cat"}}, "line1\n\x00\xffend", "line1\n\x00\xffend", "", 0},
		{"default user is uid/gid 1000 without groups", ExecRequest{Argv: sh("id -u; id -g; id -G; echo $USER")}, "", "1000\n1000\n1000\nsandbox\n", "", 0},
		{"--root is uid 0 inside", ExecRequest{Argv: sh("id -u; id -g; id -G; echo $USER"), Root: true}, "", "0\n0\n0\nroot\n", "", 0},
		{"sandbox environment plus --env, which wins", ExecRequest{Argv: sh(`echo "$HOME $AGENT_VAR $X ${HTTP_PROXY:-none}"; echo "$LANG"`), Env: []string{"X=1", "LANG=C"}}, "", "/sandbox from-spec 1 none\nC\n", "", 0},
		{"working directory defaults to the workspace", ExecRequest{Argv: []string{"pwd"}}, "", "/sandbox\n", "", 0},
		{"working directory can be set", ExecRequest{Argv: []string{"pwd"}, Dir: "/tmp"}, "", "/tmp\n", "", 0},
		{"same namespaces as the sandbox command", ExecRequest{Argv: sh("readlink /proc/self/ns/*")}, "", string(mainNS), "", 0},
		{"same cgroup as the sandbox command", ExecRequest{Argv: []string{"cat", "/proc/self/cgroup"}}, "", string(mainCG), "", 0},
		{"same Landlock domain: may signal the sandbox command", ExecRequest{Argv: sh("kill -0 $(cat /sandbox/.pid) && echo same-domain")}, "", "same-domain\n", "", 0},
		{"no capabilities, no_new_privs, seccomp as root", ExecRequest{Argv: sh("grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status | awk '{print $2}' | sort -u | tr '\\n' ' '"), Root: true}, "", "0000000000000000 1 2 ", "", 0},
		{"a session of its own", ExecRequest{Argv: sh("ps -o sid= -p $$ | tr -d ' '; echo $$")}, "", "", "", 0}, // checked below
		{"host /etc/shadow not visible", ExecRequest{Argv: sh("cat /etc/shadow 2>/dev/null || echo absent")}, "", "absent\n", "", 0},
		{"PID 1 invisible", ExecRequest{Argv: sh("test -e /proc/1/status && echo visible || echo hidden"), Root: true}, "", "hidden\n", "", 0},
		{"mount as root: EPERM", ExecRequest{Argv: []string{"python3", "-c", execProbe, "mount"}, Root: true}, "", "EPERM\n", "", 0},
		{"unshare(CLONE_NEWUSER): EPERM", ExecRequest{Argv: []string{"python3", "-c", execProbe, "unshare-user"}, Root: true}, "", "EPERM\n", "", 0},
		{"ptrace PID 1: EPERM", ExecRequest{Argv: []string{"python3", "-c", execProbe, "ptrace-pid1"}, Root: true}, "", "EPERM\n", "", 0},
		{"reaches the listener on the sandbox's loopback", ExecRequest{Argv: []string{"bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080; head -1 <&3"}}, "", "inference\n", "", 0},
		{"cannot reach the host's loopback", ExecRequest{Argv: sh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/18790' 2>&1 | grep -o -m1 'Connection refused'")}, "", "Connection refused\n", "", 0},
		{"Landlock: no connect to other ports", ExecRequest{Argv: sh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/22' 2>&1 | grep -o -m1 'Permission denied'")}, "", "Permission denied\n", "", 0},
		{"killed by a signal is 128+n", ExecRequest{Argv: sh("kill -TERM $$")}, "", "", "", 128 + int(syscall.SIGTERM)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := execIn(ctx, t, p, tc.req, tc.stdin)
			if r.err != nil {
				t.Fatalf("Exec: %v (stderr %q)", r.err, r.stderr)
			}
			if tc.name == "a session of its own" {
				f := strings.Fields(r.stdout)
				if len(f) != 2 || f[0] != f[1] {
					t.Errorf("sid and pid %q: want the command to lead its own session", r.stdout)
				}
				return
			}
			if r.code != tc.wantCode || r.stdout != tc.wantOut || r.stderr != tc.wantErr {
				t.Errorf("got code %d stdout %q stderr %q, want %d %q %q", r.code, r.stdout, r.stderr, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
	if len(mainNS) == 0 || !bytes.Contains(mainNS, []byte("cgroup:[")) {
		t.Errorf("sandbox command's namespaces not recorded: %q", mainNS)
	}
}

func TestExecErrors(t *testing.T) {
	needSandbox(t)
	p, _ := startIdle(t)
	tests := []struct {
		name     string
		req      ExecRequest
		wantCode int
		wantErr  string
	}{
		{"command not found", ExecRequest{Argv: []string{"no-such-command"}}, ExitNotFound, `"no-such-command": no such file or directory in PATH`},
		{"not executable", ExecRequest{Argv: []string{"/etc/hosts"}}, ExitNotExecutable, "not an executable file"},
		{"working directory missing", ExecRequest{Argv: []string{"true"}, Dir: "/nope"}, ExitSetupFailed, "working directory"},
		{"relative working directory", ExecRequest{Argv: []string{"true"}, Dir: "tmp"}, ExitSetupFailed, "must be an absolute path"},
		{"no command", ExecRequest{}, ExitSetupFailed, "no command given"},
		{"bad environment", ExecRequest{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, ExitSetupFailed, "want KEY=VALUE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := execIn(ctx, t, p, tc.req, "")
			if r.err == nil || r.code != tc.wantCode || !strings.Contains(r.err.Error(), tc.wantErr) {
				t.Errorf("got code %d err %v, want %d and an error containing %q", r.code, r.err, tc.wantCode, tc.wantErr)
			}
		})
	}
}

// TestExecCancelKills: a cancelled Exec kills the command and its process
// group (here a child it left running) and reports it killed.
func TestExecCancelKills(t *testing.T) {
	needSandbox(t)
	p, _ := startIdle(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	r := execIn(ctx, t, p, ExecRequest{Argv: sh("sleep 1001 & sleep 1002")}, "")
	if r.code != 128+int(syscall.SIGKILL) || !errors.Is(r.err, context.Canceled) {
		t.Errorf("got code %d err %v, want %d and context.Canceled", r.code, r.err, 128+int(syscall.SIGKILL))
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := processesWithArg("1001", "1002")
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left running after cancel: %v", left)
		}
	}
	// Cancelled before the command even started: it is killed at once.
	done, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	r = execIn(done, t, p, ExecRequest{Argv: []string{"sleep", "1003"}}, "")
	if r.code != 128+int(syscall.SIGKILL) || !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled before start: got code %d err %v, want %d and context.Canceled", r.code, r.err, 128+int(syscall.SIGKILL))
	}
	if left := processesWithArg("1003"); len(left) != 0 {
		t.Errorf("left running: %v", left)
	}
	// The sandbox itself lives on.
	r = execIn(context.Background(), t, p, ExecRequest{Argv: []string{"echo", "alive"}}, "")
	if r.err != nil || r.stdout != "alive\n" {
		t.Errorf("after cancel: %q %v", r.stdout, r.err)
	}
}

// processesWithArg lists host pids of "sleep ARG" processes.
func processesWithArg(args ...string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range args {
			if string(b) == "sleep\x00"+a+"\x00" {
				out = append(out, e.Name()+":"+a)
			}
		}
	}
	return out
}

// TestExecTTY: with TTY the pty slave becomes the command's controlling
// terminal in a session of its own, and TIOCSTI on it is refused.
func TestExecTTY(t *testing.T) {
	needSandbox(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 for the ioctl")
	}
	p, _ := startIdle(t)
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, master); close(copied) }()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(slave.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// tty_nr (field 7 of /proc/self/stat) is the controlling terminal.
	probe := `print("tty_nr", open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
` + execProbe
	code, err := p.Exec(context.Background(), ExecRequest{Argv: []string{"python3", "-c", probe, "tiocsti"}, TTY: true}, slave, slave, slave)
	slave.Close()
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
		master.Close()
		<-copied
	}
	want := fmt.Sprintf("tty_nr %d\r\nEPERM\r\n", st.Rdev)
	if err != nil || code != 0 || out.String() != want {
		t.Errorf("got code %d err %v output %q, want %q", code, err, out.String(), want)
	}
}

// TestExecStoppedSandbox: Exec on a sandbox that has exited says so.
func TestExecStoppedSandbox(t *testing.T) {
	needSandbox(t)
	p, err := Start(context.Background(), Spec{Command: []string{"true"}}, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	r := execIn(context.Background(), t, p, ExecRequest{Argv: []string{"true"}}, "")
	if r.err == nil || !strings.Contains(r.err.Error(), "not running") || r.code != ExitSetupFailed {
		t.Errorf("got code %d err %v, want %d and \"not running\"", r.code, r.err, ExitSetupFailed)
	}
}

// BenchmarkExec measures one Process.Exec of /bin/true in a running
// sandbox (request, fork from the confined thread, exec, reap, report).
func BenchmarkExec(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Start(ctx, Spec{Command: []string{"sleep", "1000"}, KillGrace: time.Second}, Stdio{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); p.Wait() }()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	// CPU per exec, which a loaded machine does not distort the way it
	// distorts wall time: PID 1's own and its reaped children's (the
	// commands), and this process's (the host side).
	var self0, self1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
	box0 := procCPUTicks(b, p.Pid())
	for b.Loop() {
		if code, err := p.Exec(context.Background(), ExecRequest{Argv: []string{"/bin/true"}}, null, null, null); err != nil || code != 0 {
			b.Fatalf("Exec: %d %v", code, err)
		}
	}
	box1 := procCPUTicks(b, p.Pid())
	syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
	host := time.Duration(self1.Utime.Nano() + self1.Stime.Nano() - self0.Utime.Nano() - self0.Stime.Nano())
	b.ReportMetric(float64(box1-box0)*1e4/float64(b.N), "sandbox-cpu-µs/op") // 100 ticks a second
	b.ReportMetric(float64(host.Microseconds())/float64(b.N), "host-cpu-µs/op")
}

// procCPUTicks returns utime+stime+cutime+cstime of pid in clock ticks.
func procCPUTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	var sum int64
	for _, i := range []int{11, 12, 13, 14} { // fields 14-17, counted after the command name
		var v int64
		fmt.Sscan(f[i], &v)
		sum += v
	}
	return sum
}

// TestExecConcurrent: commands started at the same time each get their
// own streams and their own exit status (the reaper hands each its own).
func TestExecConcurrent(t *testing.T) {
	needSandbox(t)
	p, _ := startIdle(t)
	const n = 8
	var wg sync.WaitGroup
	results := make([]execOutcome, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			results[i] = execIn(ctx, t, p, ExecRequest{Argv: sh(fmt.Sprintf("read x; echo \"%d $x\"; exit %d", i, 10+i))}, fmt.Sprintf("in%d\n", i))
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || r.code != 10+i || r.stdout != fmt.Sprintf("%d in%d\n", i, i) {
			t.Errorf("command %d: code %d err %v stdout %q", i, r.code, r.err, r.stdout)
		}
	}
}

// TestClosedExecChannelIdlesPID1: if the host's end of the exec channel
// closes while the sandbox runs (a supervisor that died and was restarted
// holds no copy), PID 1 stops watching the channel. It must not fork exec
// servers that read EOF and exit, over and over: PID 1 and its reaped
// children use no CPU in the next half second, and the sandbox lives on.
func TestClosedExecChannelIdlesPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts a sandbox: needs root")
	}
	for _, firstExec := range []bool{false, true} {
		t.Run(fmt.Sprintf("after an exec %v", firstExec), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			p, err := Start(ctx, Spec{Command: []string{"/bin/sleep", "30"}}, Stdio{})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			defer func() { p.Signal(syscall.SIGKILL); <-done }()
			if firstExec {
				if o := execIn(ctx, t, p, ExecRequest{Argv: []string{"/bin/true"}}, ""); o.err != nil || o.code != 0 {
					t.Fatalf("exec: %d, %v", o.code, o.err)
				}
			}
			p.exec.Close()
			time.Sleep(100 * time.Millisecond) // let PID 1 see the close
			before := cpuTicks(t, p.Pid())
			time.Sleep(500 * time.Millisecond)
			if used := cpuTicks(t, p.Pid()) - before; used > 2 {
				t.Fatalf("PID 1 and its children used %d ticks in 500 ms after the host closed the exec channel, want ≤ 2", used)
			}
			select {
			case <-done:
				t.Fatal("closing the exec channel ended the sandbox")
			default:
			}
		})
	}
}

// cpuTicks is pid's user+system time plus that of its reaped children
// (/proc/PID/stat fields 14-17), in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var sum int64
	for _, v := range f[11:15] { // utime stime cutime cstime (fields 14-17; f[0] is field 3)
		var n int64
		fmt.Sscan(v, &n)
		sum += n
	}
	return sum
}
