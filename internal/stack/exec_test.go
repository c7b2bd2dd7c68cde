package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/clawcage/clawcage/internal/sandbox/sandboxtest"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/clawcage/clawcage/internal/sandbox"
	"github.com/clawcage/clawcage/internal/sandbox/policyspec"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// realSandbox starts the stack's sandboxes with internal/sandbox, as
// `clawcage up` does (cmd/clawcage sandboxRuntime).
func realSandbox(ctx context.Context) func(s SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error) {
	return func(s SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error) {
		command := s.Config.Command
		if len(command) == 0 {
			command = []string{"/bin/sleep", "infinity"}
		}
		var env []string
		for k, v := range s.Config.Env {
			env = append(env, k+"="+v)
		}
		sort.Strings(env)
		pol := s.Config.Policy
		p, err := sandbox.Start(ctx, sandbox.Spec{
			Name: s.Name, Command: command, Workspace: s.Workspace, Env: env, Policy: policyspec.From(&pol),
			Hosts:     []string{"127.0.0.1 inference.local gateway.local"},
			HTTPProxy: "http://" + ProxyAddr, NoProxy: "inference.local,gateway.local",
			NetNSFile: s.NetNS.File(), UIDBase: s.UIDBase, KillGrace: time.Second,
		}, sandbox.Stdio{Stdout: stdout, Stderr: stderr})
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

// execProbe makes one system call inside the sandbox and prints "ok" or
// the errno's name.
const execProbe = sandboxtest.SyscallProbe

// liveStack runs a stack (stand-in components, real sandboxes) with the
// sandboxes "exec-live" (idles after recording its cgroup) and "exec-dead" (exits at
// once, never restarted).
func liveStack(t *testing.T) (state string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and sandboxes")
	}
	if err := sandbox.CheckKernel(); err != nil {
		t.Fatalf("kernel cannot enforce a sandbox: %v", err)
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 for the system call probes")
	}
	bin := helperBinary(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o711)
	state = filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "clawcage.yaml")
	cfg := `sandboxes:
  exec-live:
    command: [/bin/sh, -c, "cat /proc/self/cgroup > /sandbox/.cgroup; exec sleep infinity"]
    env: {AGENT_VAR: from-config}
  exec-dead:
    command: [/bin/true]
    restart: never
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			ConfigPath: cfgPath, StateDir: state, Exe: bin,
			Backoff:              supervisor.Backoff{Initial: 50 * time.Millisecond, StableAfter: 100 * time.Millisecond},
			DiscoverPresetParams: func(context.Context) (map[string]string, error) { return nil, nil },
			SandboxStart:         realSandbox(ctx),
			Ready:                func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(state, "sandboxes", "exec-live", "workspace", ".cgroup"))
		if statusOf(t, state, "sandbox/exec-dead").State == "exited" && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandboxes never settled: live %q, dead %+v", b, statusOf(t, state, "sandbox/exec-dead"))
		}
	}
	return state
}

type execOutcome struct {
	code           int
	err            error
	stdout, stderr string
}

// execPiped runs req in sandbox name through the control socket, over
// pipes, as `clawcage sandbox exec` does.
func execPiped(ctx context.Context, t *testing.T, state, name string, req ExecRequest, stdin string) execOutcome {
	t.Helper()
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	go func() { io.WriteString(inW, stdin); inW.Close() }()
	var wg sync.WaitGroup
	var out, errb bytes.Buffer
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&out, outR); outR.Close() }()
	go func() { defer wg.Done(); io.Copy(&errb, errR); errR.Close() }()
	code, err := Exec(ctx, state, name, req, inR, outW, errW)
	inR.Close()
	outW.Close()
	errW.Close()
	relayed := make(chan struct{})
	go func() { wg.Wait(); close(relayed) }()
	select {
	case <-relayed:
	case <-time.After(10 * time.Second):
		t.Fatalf("stdout/stderr still open 10s after the command exited (code %d, err %v)", code, err)
	}
	return execOutcome{code, err, out.String(), errb.String()}
}

func TestExecIntoLiveSandbox(t *testing.T) {
	hostLn, err := net.Listen("tcp4", "127.0.0.1:18790") // on the host's loopback only
	if err == nil {
		defer hostLn.Close()
	}
	state := liveStack(t)
	mainCG, _ := os.ReadFile(filepath.Join(state, "sandboxes", "exec-live", "workspace", ".cgroup"))

	tests := []struct {
		name     string
		sandbox  string
		req      ExecRequest
		stdin    string
		wantOut  string
		wantErr  string
		wantCode int
		wantFail string // the error Exec returns
	}{
		{"stdout and stderr bytes, exit code 7", "exec-live", ExecRequest{Argv: []string{"sh", "-c", `printf 'out\001'; printf 'err\002' >&2; exit 7`}}, "", "out\001", "err\002", 7, ""},
		{"stdin passes through", "exec-live", ExecRequest{Argv: []string{"cat"}}, "in\x00put\n", "in\x00put\n", "", 0, ""},
		{"default uid is 1000", "exec-live", ExecRequest{Argv: []string{"id", "-u"}}, "", "1000\n", "", 0, ""},
		{"--root is uid 0", "exec-live", ExecRequest{Argv: []string{"id", "-u"}, Root: true}, "", "0\n", "", 0, ""},
		{"sandbox environment plus --env", "exec-live", ExecRequest{Argv: []string{"sh", "-c", `echo "$AGENT_VAR $HTTP_PROXY $X $PWD"`}, Env: []string{"X=y"}, Dir: "/tmp"}, "", "from-config http://127.0.0.1:3128 y /tmp\n", "", 0, ""},
		{"only the sandbox's file system: no host /etc/shadow", "exec-live", ExecRequest{Argv: []string{"sh", "-c", "cat /etc/shadow 2>/dev/null || echo absent"}, Root: true}, "", "absent\n", "", 0, ""},
		{"only the sandbox's file system: no stack state", "exec-live", ExecRequest{Argv: []string{"sh", "-c", "ls " + state + " 2>/dev/null || echo absent"}, Root: true}, "", "absent\n", "", 0, ""},
		{"in the sandbox's cgroup", "exec-live", ExecRequest{Argv: []string{"cat", "/proc/self/cgroup"}}, "", string(mainCG), "", 0, ""},
		{"reaches inference.local on its own loopback", "exec-live", ExecRequest{Argv: []string{"bash", "-c", "exec 3<>/dev/tcp/inference.local/8080; cut -d' ' -f1-3 <&3"}}, "", "router exec-live uid=61001\n", "", 0, ""},
		{"cannot reach the host's loopback", "exec-live", ExecRequest{Argv: []string{"sh", "-c", "bash -c 'exec 3<>/dev/tcp/127.0.0.1/18790' 2>&1 | grep -o -m1 'Connection refused'"}}, "", "Connection refused\n", "", 0, ""},
		{"mount as root: EPERM", "exec-live", ExecRequest{Argv: []string{"python3", "-c", execProbe, "mount"}, Root: true}, "", "EPERM\n", "", 0, ""},
		{"unshare(CLONE_NEWUSER) as root: EPERM", "exec-live", ExecRequest{Argv: []string{"python3", "-c", execProbe, "unshare-user"}, Root: true}, "", "EPERM\n", "", 0, ""},
		{"ptrace PID 1 as root: EPERM", "exec-live", ExecRequest{Argv: []string{"python3", "-c", execProbe, "ptrace-pid1"}, Root: true}, "", "EPERM\n", "", 0, ""},
		{"no capabilities, no_new_privs, seccomp filter as root", "exec-live", ExecRequest{Argv: []string{"sh", "-c", "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status | tr -s '\\t' ' '"}, Root: true}, "", "CapEff: 0000000000000000\nCapBnd: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\n", "", 0, ""},
		{"command not found is 127", "exec-live", ExecRequest{Argv: []string{"no-such-command"}}, "", "", "", 127, `command "no-such-command": no such file or directory in PATH`},
		{"unknown sandbox", "nope", ExecRequest{Argv: []string{"true"}}, "", "", "", 1, "no sandbox nope"},
		{"stopped sandbox names its state", "exec-dead", ExecRequest{Argv: []string{"true"}}, "", "", "", 1, "sandbox exec-dead is not running (state: exited)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := execPiped(ctx, t, state, tc.sandbox, tc.req, tc.stdin)
			if tc.wantFail != "" {
				if r.err == nil || !strings.Contains(r.err.Error(), tc.wantFail) || r.code != tc.wantCode {
					t.Errorf("got code %d err %v, want %d and an error containing %q", r.code, r.err, tc.wantCode, tc.wantFail)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("Exec: %v (stderr %q)", r.err, r.stderr)
			}
			if r.code != tc.wantCode || r.stdout != tc.wantOut || r.stderr != tc.wantErr {
				t.Errorf("got code %d stdout %q stderr %q, want %d %q %q", r.code, r.stdout, r.stderr, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}

	t.Run("malformed requests are refused before anything runs", func(t *testing.T) {
		bad := []struct {
			name, body, upgrade string
			code                int
			want                string
		}{
			{"no upgrade header", `{"argv":["true"]}`, "", 400, "want Upgrade: clawcage-exec"},
			{"unknown field", `{"argv":["true"],"uid":0}`, ExecProtocol, 400, `unknown field \"uid\"`},
			{"no command", `{"argv":[]}`, ExecProtocol, 400, "no command given"},
			{"not JSON", `argv=true`, ExecProtocol, 400, "decode request"},
		}
		for _, tc := range bad {
			req, _ := http.NewRequest("POST", "http://clawcage/v1/sandboxes/exec-live/exec", strings.NewReader(tc.body))
			if tc.upgrade != "" {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", tc.upgrade)
			}
			resp, err := supervisor.Client(supervisor.ControlSocketPath(state)).Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s: %d %s, want %d containing %q", tc.name, resp.StatusCode, body, tc.code, tc.want)
			}
		}
	})

	t.Run("TIOCSTI on the command's pty is refused; the pty is its controlling terminal", func(t *testing.T) {
		master, slave, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer master.Close()
		var st syscall.Stat_t
		syscall.Fstat(int(slave.Fd()), &st)
		var out bytes.Buffer
		copied := make(chan struct{})
		go func() { io.Copy(&out, master); close(copied) }()
		probe := `print("tty_nr", open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
` + execProbe
		code, err := Exec(context.Background(), state, "exec-live", ExecRequest{Argv: []string{"python3", "-c", probe, "tiocsti"}, TTY: true}, slave, slave, slave)
		slave.Close()
		select {
		case <-copied:
		case <-time.After(5 * time.Second):
		}
		want := fmt.Sprintf("tty_nr %d\r\nEPERM\r\n", st.Rdev)
		if err != nil || code != 0 || out.String() != want {
			t.Errorf("got code %d err %v output %q, want %q", code, err, out.String(), want)
		}
	})

	t.Run("cancelled context kills the command", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(500*time.Millisecond, cancel)
		r := execPiped(ctx, t, state, "exec-live", ExecRequest{Argv: []string{"sh", "-c", "sleep 2001 & sleep 2002"}}, "")
		if r.code != 128+int(syscall.SIGKILL) || !errors.Is(r.err, context.Canceled) {
			t.Errorf("got code %d err %v, want %d and context.Canceled", r.code, r.err, 128+int(syscall.SIGKILL))
		}
		waitGone(t, "sleep\x002001\x00", "sleep\x002002\x00")
	})

	t.Run("a dead client's command is killed", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExecHelperClient$")
		cmd.Env = append(os.Environ(), "CLAWCAGE_EXEC_HELPER_STATE="+state)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		for deadline := time.Now().Add(20 * time.Second); len(cmdlines("sleep\x002003\x00")) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("the helper's command never started")
			}
		}
		cmd.Process.Kill()
		waitGone(t, "sleep\x002003\x00")
	})

	t.Run("signals are forwarded", func(t *testing.T) {
		sigs := make(chan os.Signal, 1)
		time.AfterFunc(time.Second, func() { sigs <- syscall.SIGTERM })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r := execPiped(ctx, t, state, "exec-live", ExecRequest{Argv: []string{"sh", "-c", `trap 'echo got TERM; exit 9' TERM; sleep 2004 >/dev/null 2>&1 & wait`}, Signals: sigs}, "")
		if r.err != nil || r.code != 9 || r.stdout != "got TERM\n" {
			t.Errorf("got code %d err %v stdout %q, want 9 \"got TERM\\n\"", r.code, r.err, r.stdout)
		}
	})
}

// TestExecHelperClient is the client that "a dead client's command is
// killed" starts and kills: it runs a long command through Exec.
func TestExecHelperClient(t *testing.T) {
	state := os.Getenv("CLAWCAGE_EXEC_HELPER_STATE")
	if state == "" {
		t.Skip("helper process of TestExecIntoLiveSandbox")
	}
	r := execPiped(context.Background(), t, state, "exec-live", ExecRequest{Argv: []string{"sleep", "2003"}}, "")
	t.Fatalf("the command was not killed: %+v", r)
}

// cmdlines returns the pids of host processes whose command line is one of
// the given (NUL-separated) ones.
func cmdlines(want ...string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, w := range want {
			if string(b) == w {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

func waitGone(t *testing.T, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := cmdlines(want...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %q still running: pids %v", want, left)
		}
	}
}
