package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/clawcage/clawcage/internal/sandbox/pid1"
)

// TestMain runs the helper processes some tests need. (The test binary is
// its own sandbox-init without help: package pid1 takes over in its init
// function when started as "<binary> sandbox-init".)
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "test-run-helper" {
		// A parent for TestSandboxDiesWithParent: runs a sandbox and waits.
		code, err := Run(context.Background(), Spec{Command: []string{"/bin/sleep", os.Args[2]}}, Stdio{})
		fmt.Fprintln(os.Stderr, code, err)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// needSandbox skips unless the test runs as root, and fails if the kernel
// cannot enforce a sandbox (the CI machine can).
func needSandbox(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sandbox integration tests need root (they create namespaces and cgroups); run `go test` as root")
	}
	if err := CheckKernel(); err != nil {
		t.Fatalf("kernel cannot enforce a sandbox: %v", err)
	}
}

type result struct {
	code           int
	err            error
	stdout, stderr string
}

// runBox runs spec with a 30s deadline and captures its output.
func runBox(t *testing.T, spec Spec) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := Run(ctx, spec, Stdio{Stdout: &out, Stderr: &errb})
	return result{code: code, err: err, stdout: out.String(), stderr: errb.String()}
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestSandboxIdentityAndExit(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	tests := []struct {
		name     string
		spec     Spec
		wantOut  string
		wantCode int
	}{
		{"default user is uid/gid 1000 with no other groups", Spec{Command: sh("id -u; id -g; id -G; id -un")}, "1000\n1000\n1000\nsandbox\n", 0},
		{"--root is uid 0 inside", Spec{Command: sh("id -u; id -g; id -G; id -un"), Root: true}, "0\n0\n0\nroot\n", 0},
		{"no capabilities as default user", Spec{Command: sh("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | awk '{print $2}' | sort -u")}, "0000000000000000\n", 0},
		{"no capabilities as root", Spec{Command: sh("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | awk '{print $2}' | sort -u"), Root: true}, "0000000000000000\n", 0},
		{"no_new_privs and seccomp filter set", Spec{Command: sh("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | awk '{print $2}'")}, "1\n2\n", 0},
		{"exit code passes through", Spec{Command: sh("exit 42")}, "", 42},
		{"death by signal is 128+n", Spec{Command: sh("kill -TERM $$")}, "", 128 + int(syscall.SIGTERM)},
		{"command runs as PID 2+ under our PID 1 in its own session", Spec{Command: sh("ps -o pid= -o sid= -p $$ | awk '{print ($1==$2) && ($1>1)}'")}, "1\n", 0},
		{"only stdin, stdout and stderr are open", Spec{Command: sh("ls /proc/$$/fd | tr '\\n' ' '")}, "0 1 2 ", 0},
		{"hostname is sandbox", Spec{Command: []string{"hostname"}}, "sandbox\n", 0},
		{"working directory and HOME are the workspace", Spec{Command: sh(`pwd; echo "$HOME"`)}, "/sandbox\n/sandbox\n", 0},
		{"workspace is writable, root and /usr are not", Spec{Command: sh("touch /sandbox/f && echo ws-ok; touch /f 2>/dev/null || echo root-ro; touch /usr/f 2>/dev/null || echo usr-ro; touch /etc/f 2>/dev/null || echo etc-ro")}, "ws-ok\nroot-ro\nusr-ro\netc-ro\n", 0},
		{"/tmp is a size-limited tmpfs", Spec{Command: sh("df -k /tmp | awk 'NR==2{print $2}'"), Limits: Limits{Tmp: 8 << 20}}, "8192\n", 0},
		{"only lo in the network namespace, up", Spec{Command: sh("ls /sys/class/net 2>/dev/null; cat /proc/net/dev | awk 'NR>2{print $1}'")}, "lo:\n", 0},
		{"no resolv.conf: no DNS", Spec{Command: sh("test -e /etc/resolv.conf && echo present || echo absent")}, "absent\n", 0},
		{"root inside cannot kill, stop or crash PID 1", Spec{Command: sh("for s in KILL STOP SEGV ABRT BUS SYS; do kill -$s 1 2>/dev/null; done; sleep 0.2; echo alive"), Root: true}, "alive\n", 0},
		{"PID 1 is invisible to the command", Spec{Command: sh("test -e /proc/1/status && echo visible || echo hidden"), Root: true}, "hidden\n", 0},
		{"extra /etc/hosts lines", Spec{Command: sh("grep inference /etc/hosts"), Hosts: []string{"127.0.0.1 inference.local gateway.local"}}, "127.0.0.1 inference.local gateway.local\n", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBox(t, tc.spec)
			if r.err != nil {
				t.Fatalf("Run: %v (stderr %q)", r.err, r.stderr)
			}
			if r.code != tc.wantCode || r.stdout != tc.wantOut {
				t.Errorf("got code %d stdout %q (stderr %q), want code %d stdout %q", r.code, r.stdout, r.stderr, tc.wantCode, tc.wantOut)
			}
		})
	}
}

func TestSandboxCleanEnvironment(t *testing.T) {
	needSandbox(t)
	t.Setenv("CLAWCAGE_TEST_SECRET", "sk-must-not-leak")
	tests := []struct {
		name string
		spec Spec
		want []string
	}{
		{"defaults only", Spec{Command: []string{"/usr/bin/env"}},
			[]string{"HOME=/sandbox", "LANG=C.UTF-8", "LOGNAME=sandbox", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "USER=sandbox"}},
		{"--env adds and overrides, proxies and TERM exported", Spec{Command: []string{"/usr/bin/env"}, Root: true, Term: "xterm", Env: []string{"FOO=bar=baz", "LANG=C"}, HTTPProxy: "http://127.0.0.1:3128", NoProxy: "inference.local"},
			[]string{"FOO=bar=baz", "HOME=/sandbox", "HTTPS_PROXY=http://127.0.0.1:3128", "HTTP_PROXY=http://127.0.0.1:3128", "LANG=C", "LOGNAME=root", "NO_PROXY=inference.local",
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm", "USER=root", "http_proxy=http://127.0.0.1:3128", "https_proxy=http://127.0.0.1:3128", "no_proxy=inference.local"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runBox(t, tc.spec)
			if r.err != nil || r.code != 0 {
				t.Fatalf("Run: code %d err %v stderr %q", r.code, r.err, r.stderr)
			}
			got := strings.Split(strings.TrimSpace(r.stdout), "\n")
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("environment:\n got %q\nwant %q", got, tc.want)
			}
			if strings.Contains(r.stdout, "sk-must-not-leak") {
				t.Errorf("the caller's environment leaked in: %q", r.stdout)
			}
		})
	}
}

// TestSandboxMountTable checks that nothing of the host is mounted but the
// expected system directories, devices and the workspace.
func TestSandboxMountTable(t *testing.T) {
	needSandbox(t)
	ro := t.TempDir()
	r := runBox(t, Spec{Command: []string{"/bin/cat", "/proc/self/mountinfo"}, ReadOnly: []string{ro}})
	if r.err != nil || r.code != 0 {
		t.Fatalf("Run: code %d err %v stderr %q", r.code, r.err, r.stderr)
	}
	allowed := map[string]bool{"/": true, "/usr": true, "/etc/alternatives": true, "/proc": true, "/dev": true, "/dev/pts": true, "/dev/shm": true, "/tmp": true, "/sandbox": true, ro: true}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		allowed[d] = true
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		allowed["/dev/"+d] = true
	}
	// Kernel files masked by /dev/null or an empty tmpfs, or made read-only.
	for _, f := range []string{"kcore", "kallsyms", "keys", "key-users", "timer_list", "sched_debug", "latency_stats",
		"sysrq-trigger", "kpagecount", "kpageflags", "kpagecgroup", "config.gz", "vmallocinfo", "modules", "iomem",
		"ioports", "softirqs", "interrupts", "acpi", "scsi", "firmware", "driver", "tty", "dynamic_debug",
		"sys", "bus", "fs", "irq"} {
		allowed["/proc/"+f] = true
	}
	// The host's CA bundle, bound read-only: that one file of the host.
	const caBundle = "/etc/ssl/certs/ca-certificates.crt"
	allowed[caBundle] = true
	required := []string{"/", "/usr", "/proc", "/dev", "/dev/null", "/dev/pts", "/tmp", "/sandbox", ro, "/proc/sys"}
	seen := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("bad mountinfo line %q", line)
		}
		mp, opts := f[4], f[5]
		seen[mp] = opts
		if mp == caBundle {
			if fi, err := os.Stat(f[3]); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("%s binds host %q, want the host's regular CA bundle file (stat: %v)", mp, f[3], err)
			}
			if !strings.HasPrefix(opts, "ro,nosuid,nodev") {
				t.Errorf("%s is mounted %q, want ro,nosuid,nodev", mp, opts)
			}
		}
		if !allowed[mp] {
			t.Errorf("unexpected mount %q in the sandbox: %s", mp, line)
		}
	}
	for _, mp := range required {
		if _, ok := seen[mp]; !ok {
			t.Errorf("mount %s missing", mp)
		}
	}
	for _, mp := range []string{"/", "/usr", "/proc/sys", ro} {
		if !strings.HasPrefix(seen[mp], "ro") {
			t.Errorf("%s is mounted %q, want read-only", mp, seen[mp])
		}
	}
	for _, mp := range []string{"/", "/usr", "/sandbox", "/tmp", ro} {
		if !strings.Contains(seen[mp], "nosuid") {
			t.Errorf("%s is mounted %q, want nosuid", mp, seen[mp])
		}
	}
}

// TestSandboxHostUID checks, from the host, that neither PID 1 nor the
// command runs as a host uid of 0, and that both run in the allocated range.
func TestSandboxHostUID(t *testing.T) {
	needSandbox(t)
	for _, root := range []bool{false, true} {
		t.Run(fmt.Sprintf("root=%v", root), func(t *testing.T) {
			marker := fmt.Sprintf("%d.%d", 100+os.Getpid()%900, time.Now().Nanosecond()%1000)
			pr, pw := io.Pipe()
			done := make(chan result, 1)
			go func() {
				var errb bytes.Buffer
				code, err := Run(context.Background(), Spec{Command: sh("echo ready; exec sleep " + marker), Root: root}, Stdio{Stdout: pw, Stderr: &errb})
				pw.Close()
				done <- result{code: code, err: err, stderr: errb.String()}
			}()
			line, _ := bufio.NewReader(pr).ReadString('\n')
			if line != "ready\n" {
				t.Fatalf("sandbox did not start: %q %+v", line, <-done)
			}
			var sleepPid int
			deadline := time.Now().Add(5 * time.Second)
			for sleepPid == 0 && time.Now().Before(deadline) {
				sleepPid = findProcess(t, "sleep\x00"+marker+"\x00")
				time.Sleep(10 * time.Millisecond)
			}
			if sleepPid == 0 {
				t.Fatal("did not find the sandboxed command on the host")
			}
			cmdUID := statusField(t, sleepPid, "Uid")
			initPid, _ := strconv.Atoi(statusField(t, sleepPid, "PPid"))
			initUID := statusField(t, initPid, "Uid")
			syscall.Kill(sleepPid, syscall.SIGKILL)
			r := <-done
			if r.code != 128+int(syscall.SIGKILL) {
				t.Errorf("exit code %d (err %v), want %d", r.code, r.err, 128+int(syscall.SIGKILL))
			}
			for who, uids := range map[string]string{"command": cmdUID, "PID 1": initUID} {
				for _, u := range strings.Fields(uids) {
					n, _ := strconv.ParseUint(u, 10, 32)
					if n < UIDRangeBase {
						t.Errorf("%s runs as host uids %q: outside the sandbox range (base %d)", who, uids, UIDRangeBase)
					}
				}
			}
			want := uint64(UserUID)
			if root {
				want = 0
			}
			n, _ := strconv.ParseUint(strings.Fields(cmdUID)[0], 10, 32)
			if (n-UIDRangeBase)%UIDRangeSize != want {
				t.Errorf("command host uid %d is not base+%d", n, want)
			}
		})
	}
}

func findProcess(t *testing.T, cmdline string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if string(b) == cmdline {
			return pid
		}
	}
	return 0
}

func statusField(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status of %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in status of %d", field, pid)
	return ""
}

func TestSandboxSignalsAndReaping(t *testing.T) {
	needSandbox(t)
	t.Run("signal forwarded by PID 1 to the command", func(t *testing.T) {
		pr, pw := io.Pipe()
		sigs := make(chan os.Signal, 1)
		done := make(chan result, 1)
		go func() {
			code, err := Run(context.Background(), Spec{Command: sh(`trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done`)}, Stdio{Stdout: pw, Signals: sigs})
			pw.Close()
			done <- result{code: code, err: err}
		}()
		br := bufio.NewReader(pr)
		if line, _ := br.ReadString('\n'); line != "ready\n" {
			t.Fatalf("sandbox did not start: %q", line)
		}
		sigs <- syscall.SIGTERM
		rest, _ := io.ReadAll(br)
		r := <-done
		if r.err != nil || r.code != 7 || string(rest) != "got-term\n" {
			t.Errorf("got code %d err %v output %q, want code 7 and got-term", r.code, r.err, rest)
		}
	})
	t.Run("context cancellation stops the sandbox", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan result, 1)
		go func() {
			code, err := Run(ctx, Spec{Command: sh("echo ready; exec sleep 60"), KillGrace: 8 * time.Second}, Stdio{Stdout: pw})
			pw.Close()
			done <- result{code: code, err: err}
		}()
		if line, _ := bufio.NewReader(pr).ReadString('\n'); line != "ready\n" {
			t.Fatalf("sandbox did not start: %q", line)
		}
		cancel()
		select {
		case r := <-done:
			if r.code != 128+int(syscall.SIGTERM) || !errors.Is(r.err, context.Canceled) {
				t.Errorf("got code %d err %v, want %d and context.Canceled", r.code, r.err, 128+int(syscall.SIGTERM))
			}
		case <-time.After(20 * time.Second):
			t.Fatal("sandbox still running 20s after cancellation")
		}
	})
	t.Run("Stats counts the sandbox's tasks while it runs", func(t *testing.T) {
		pr, pw := io.Pipe()
		p, err := Start(context.Background(), Spec{Command: sh("sleep 30 & sleep 30 & echo ready; wait")}, Stdio{Stdout: pw})
		if err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(pr).ReadString('\n'); line != "ready\n" {
			t.Fatalf("sandbox did not start: %q", line)
		}
		st, err := p.Stats()
		// PID 1 (its threads count as tasks), sh and two sleeps.
		if err != nil || st.Pids < 4 || st.MemoryPeak <= 0 {
			t.Errorf("Stats = %+v, %v; want at least 4 tasks and some memory", st, err)
		}
		p.Signal(syscall.SIGKILL)
		go io.Copy(io.Discard, pr)
		if code, _ := p.Wait(); code != 128+int(syscall.SIGKILL) {
			t.Errorf("exit code %d after SIGKILL", code)
		}
		pw.Close()
	})
	t.Run("PID 1 reaps orphaned zombies", func(t *testing.T) {
		// The inner shell exits at once; its background child is re-parented
		// to PID 1 and exits; without reaping it would stay a zombie.
		// Wait (up to 5 s, for loaded machines) until no zombie is left.
		r := runBox(t, Spec{Command: sh(`sh -c '/bin/true & exit 0'; for i in $(seq 50); do sleep 0.1; n=$(grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l); [ "$n" = 0 ] && break; done; echo $n`)})
		if r.err != nil || r.code != 0 || r.stdout != "0\n" {
			t.Errorf("got code %d err %v zombies %q (stderr %q), want 0", r.code, r.err, r.stdout, r.stderr)
		}
	})
	t.Run("stdin passes through", func(t *testing.T) {
		var out bytes.Buffer
		code, err := Run(context.Background(), Spec{Command: []string{"/usr/bin/tr", "a-z", "A-Z"}}, Stdio{Stdin: strings.NewReader("hello\n"), Stdout: &out})
		if err != nil || code != 0 || out.String() != "HELLO\n" {
			t.Errorf("got code %d err %v out %q", code, err, out.String())
		}
	})
}

// TestSandboxLandlockNetwork checks that Landlock, not only the empty
// network namespace, decides TCP connects: an allowed port is refused by
// the (empty) loopback, any other port is denied by Landlock (EACCES).
func TestSandboxLandlockNetwork(t *testing.T) {
	needSandbox(t)
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("needs bash for /dev/tcp")
	}
	tests := []struct {
		name string
		spec Spec
		port int
		want string
	}{
		{"allowed default port is only refused", Spec{}, 8080, "Connection refused"},
		{"other port denied by landlock", Spec{}, 9, "Permission denied"},
		{"policy bind port may be bound and connected", Spec{BindPorts: []uint16{9999}}, 9999, "Connection refused"},
		{"empty allow list denies the default ports", Spec{ConnectPorts: []uint16{}}, 3128, "Permission denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Command = []string{"/bin/bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", tc.port)}
			r := runBox(t, tc.spec)
			if r.err != nil || r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("got code %d err %v stderr %q, want failure %q", r.code, r.err, r.stderr, tc.want)
			}
		})
	}
}

func TestSandboxCommandErrors(t *testing.T) {
	needSandbox(t)
	tests := []struct {
		name     string
		command  []string
		wantCode int
		wantStep string
	}{
		{"missing command is 127", []string{"no-such-command-xyz"}, ExitNotFound, "exec"},
		{"non-executable file is 126", []string{"/etc/hosts"}, ExitNotExecutable, "exec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runBox(t, Spec{Command: tc.command})
			var se *SetupError
			if r.code != tc.wantCode || !errors.As(r.err, &se) || se.Step != tc.wantStep {
				t.Errorf("got code %d err %v, want code %d and a %q SetupError", r.code, r.err, tc.wantCode, tc.wantStep)
			}
		})
	}
}

func TestSandboxPolicyPaths(t *testing.T) {
	needSandbox(t)
	ro, rw := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(ro, "in"), []byte("from-host\n"), 0o644)
	os.Chmod(rw, 0o777)
	p := &Policy{ReadOnly: []string{ro}, ReadWrite: []string{rw}}
	r := runBox(t, Spec{Policy: p, Command: sh(fmt.Sprintf("cat %[1]s/in; touch %[1]s/x 2>/dev/null || echo ro-denied; echo out > %[2]s/out && echo rw-ok", ro, rw))})
	if r.err != nil || r.code != 0 || r.stdout != "from-host\nro-denied\nrw-ok\n" {
		t.Errorf("got code %d err %v stdout %q stderr %q", r.code, r.err, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(rw, "out")); string(b) != "out\n" {
		t.Errorf("read-write path: host sees %q", b)
	}
}

func TestSandboxWorkspace(t *testing.T) {
	needSandbox(t)
	ws := filepath.Join(t.TempDir(), "new-ws")
	r := runBox(t, Spec{Workspace: ws, Command: sh("echo hi > /sandbox/file && ls -ld /sandbox | awk '{print $3}'")})
	if r.err != nil || r.code != 0 || r.stdout != "sandbox\n" {
		t.Fatalf("got code %d err %v stdout %q stderr %q", r.code, r.err, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "file")); err != nil || string(b) != "hi\n" {
		t.Errorf("host sees %q, %v", b, err)
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		wantErr string
		check   func(*resolved) error
	}{
		{"defaults", Spec{Command: []string{"x"}}, "", func(r *resolved) error {
			if r.limits != (Limits{Memory: DefaultMemory, Pids: DefaultPids, Tmp: DefaultTmp}) {
				return fmt.Errorf("limits %+v", r.limits)
			}
			if !slices.Equal(r.connect, []uint16{8080, 3128, 18790}) {
				return fmt.Errorf("connect %v", r.connect)
			}
			return nil
		}},
		{"policy limits apply where the spec has none", Spec{Command: []string{"x"}, Limits: Limits{Pids: 50},
			Policy: &Policy{Limits: Limits{Memory: 1 << 30, Pids: 99, CPU: 1.5, Tmp: 16 << 20}}}, "", func(r *resolved) error {
			if r.limits != (Limits{Memory: 1 << 30, Pids: 50, CPU: 1.5, Tmp: 16 << 20}) {
				return fmt.Errorf("limits %+v", r.limits)
			}
			return nil
		}},
		{"no command", Spec{}, "no command given", nil},
		{"env without =", Spec{Command: []string{"x"}, Env: []string{"FOO"}}, `environment "FOO": want KEY=VALUE`, nil},
		{"env with empty name", Spec{Command: []string{"x"}, Env: []string{"=x"}}, "empty name", nil},
		{"tiny memory", Spec{Command: []string{"x"}, Limits: Limits{Memory: 1000}}, "below the 4MiB minimum", nil},
		{"negative cpu", Spec{Command: []string{"x"}, Limits: Limits{CPU: -1}}, "must not be negative", nil},
		{"relative bind path", Spec{Command: []string{"x"}, ReadOnly: []string{"etc"}}, "must be absolute", nil},
		{"host root as bind path", Spec{Command: []string{"x"}, ReadWrite: []string{"/"}}, "host root cannot be bound", nil},
		{"bind over /proc", Spec{Command: []string{"x"}, ReadOnly: []string{"/proc/self"}}, "sandbox's own", nil},
		{"replace /etc", Spec{Command: []string{"x"}, ReadOnly: []string{"/etc"}}, "cannot be replaced", nil},
		{"missing bind path", Spec{Command: []string{"x"}, ReadOnly: []string{"/no/such/path"}}, "no such file", nil},
		{"bind path through a symlink planted in a workspace", Spec{Command: []string{"x"}, ReadWrite: []string{plantedLink(t) + "/ssh"}}, "passes through a symlink", nil},
		{"hosts line with newline", Spec{Command: []string{"x"}, Hosts: []string{"1.2.3.4 a\n5.6.7.8 b"}}, "line break", nil},
		{"bad name", Spec{Command: []string{"x"}, Name: "../x"}, "sandbox name", nil},
		{"port zero", Spec{Command: []string{"x"}, BindPorts: []uint16{0}}, "port 0", nil},
		{"policy local ports are bindable", Spec{Command: []string{"x"}, BindPorts: []uint16{7000}, Policy: &Policy{LocalPorts: []int{8000}}}, "", func(r *resolved) error {
			if !slices.Equal(r.bind, []uint16{7000, 8000}) {
				return fmt.Errorf("bind %v", r.bind)
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := resolve(&tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(r); err != nil {
				t.Error(err)
			}
		})
	}
}

// plantedLink makes a workspace-like directory holding a symlink to /etc
// and returns the link's path.
func plantedLink(t *testing.T) string {
	link := filepath.Join(t.TempDir(), "data")
	if err := os.Symlink("/etc", link); err != nil {
		t.Fatal(err)
	}
	return link
}

func TestAllocateUIDRange(t *testing.T) {
	a, err := AllocateUIDRange()
	if err != nil {
		t.Fatal(err)
	}
	b, err := AllocateUIDRange()
	if err != nil {
		t.Fatal(err)
	}
	if a.Base == b.Base {
		t.Errorf("two live allocations share base %d", a.Base)
	}
	for _, r := range []*UIDRange{a, b} {
		if r.Base < UIDRangeBase || (r.Base-UIDRangeBase)%UIDRangeSize != 0 || r.Base != UIDRangeBase+uint32(r.Slot)*UIDRangeSize {
			t.Errorf("range %+v is not slot-aligned", r)
		}
	}
	slot := a.Slot
	a.Release()
	a.Release()
	c, err := AllocateUIDRange()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	defer b.Release()
	if c.Slot != slot {
		t.Errorf("released slot %d not reused (got %d)", slot, c.Slot)
	}
	if _, err := ClaimUIDRange(b.Slot); !errors.Is(err, ErrSlotInUse) {
		t.Errorf("claiming a held slot: %v, want ErrSlotInUse", err)
	}
	for _, bad := range []int{-1, UIDSlots} {
		if _, err := ClaimUIDRange(bad); err == nil || errors.Is(err, ErrSlotInUse) {
			t.Errorf("ClaimUIDRange(%d): %v, want a range error", bad, err)
		}
	}
	// Claim a slot by number (another sandbox on the machine may hold some).
	var d *UIDRange
	free := (b.Slot + UIDSlots/2) % UIDSlots
	for ; ; free = (free + 1) % UIDSlots {
		d, err = ClaimUIDRange(free)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrSlotInUse) {
			t.Fatalf("claim slot %d: %v", free, err)
		}
	}
	defer d.Release()
	if d.Base != UIDRangeBase+uint32(free)*UIDRangeSize {
		t.Errorf("slot %d has base %d", free, d.Base)
	}
}

// TestSandboxJoinsGivenNetns is the stack's use: a network namespace made
// beforehand, with a listener on its loopback, is joined instead of a new
// one; the sandbox reaches the listener on an allowed port.
func TestSandboxJoinsGivenNetns(t *testing.T) {
	needSandbox(t)
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("needs bash for /dev/tcp")
	}
	nsFile, ln := netnsWithListener(t, "127.0.0.1:18790")
	defer nsFile.Close()
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello-from-gateway\n"))
			c.Close()
		}
	}()
	r := runBox(t, Spec{NetNSFile: nsFile, Command: []string{"/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18790; head -1 <&3"}})
	if r.err != nil || r.code != 0 || r.stdout != "hello-from-gateway\n" {
		t.Errorf("got code %d err %v stdout %q stderr %q", r.code, r.err, r.stdout, r.stderr)
	}
	// The same listener is not reachable from a sandbox with its own netns.
	r = runBox(t, Spec{Command: []string{"/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18790"}})
	if r.code == 0 || !strings.Contains(r.stderr, "Connection refused") {
		t.Errorf("own netns: got code %d stderr %q, want connection refused", r.code, r.stderr)
	}
}

// netnsWithListener creates a network namespace with lo up and a TCP
// listener on addr inside it, and returns the namespace's file.
func netnsWithListener(t *testing.T, addr string) (*os.File, net.Listener) {
	t.Helper()
	type res struct {
		f   *os.File
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is retired
		if err := newNetns(); err != nil {
			ch <- res{err: err}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- res{err: err}
			return
		}
		ln, err := net.Listen("tcp4", addr)
		ch <- res{f, ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("netns with listener: %v", r.err)
	}
	return r.f, r.ln
}

// TestSandboxTIOCSTI: a terminal passed in as stdin is never the
// sandbox's controlling terminal unless it is the sandbox's own pty
// (Spec.TTY), and TIOCSTI is refused either way (seccomp), so keystrokes
// cannot be injected into the caller's terminal.
func TestSandboxTIOCSTI(t *testing.T) {
	needSandbox(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 for the ioctl")
	}
	probe := `import fcntl, termios, errno, os
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    ctty = "ctty"
except OSError as e:
    ctty = errno.errorcode[e.errno]
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    sti = "injected"
except OSError as e:
    sti = errno.errorcode[e.errno]
print(ctty, sti)`
	tests := []struct {
		name string
		tty  bool
		want string
	}{
		{"caller's terminal: not the controlling terminal, TIOCSTI refused", false, "ENXIO EPERM"},
		{"own pty: controlling terminal, TIOCSTI still refused", true, "ctty EPERM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			master, slave, err := pty.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer master.Close()
			go io.Copy(io.Discard, master)
			var out bytes.Buffer
			code, err := Run(context.Background(), Spec{TTY: tc.tty, Command: []string{"/usr/bin/python3", "-c", probe}}, Stdio{Stdin: slave, Stdout: &out, Stderr: &out})
			slave.Close()
			if err != nil || code != 0 || strings.TrimSpace(out.String()) != tc.want {
				t.Errorf("got code %d err %v output %q, want %q", code, err, out.String(), tc.want)
			}
		})
	}
}

// TestSandboxDiesWithParent kills the process that ran the sandbox and
// checks that the sandboxed command is gone too and its cgroup-less host
// side left no process behind.
func TestSandboxDiesWithParent(t *testing.T) {
	needSandbox(t)
	marker := fmt.Sprintf("%d.%d", 500+os.Getpid()%400, time.Now().Nanosecond()%1000)
	helper := exec.Command("/proc/self/exe", "test-run-helper", marker)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		pid = findProcess(t, "/bin/sleep\x00"+marker+"\x00")
	}
	if pid == 0 {
		helper.Process.Kill()
		helper.Wait()
		t.Fatal("sandboxed command did not start")
	}
	helper.Process.Kill()
	helper.Wait()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if findProcess(t, "/bin/sleep\x00"+marker+"\x00") == 0 {
			return
		}
	}
	t.Errorf("sandboxed command (host pid %d) survived its parent", pid)
}

// TestSandboxLeavesNothingBehind checks the host after a sandbox exited:
// its cgroup directory is gone from every cgroup hierarchy and its
// temporary workspace is deleted.
func TestSandboxLeavesNothingBehind(t *testing.T) {
	needSandbox(t)
	name := fmt.Sprintf("leftover-test-%d", os.Getpid())
	// The workspace's host path is the root of the /sandbox mount.
	r := runBox(t, Spec{Name: name, Command: sh(`awk '$5 == "/sandbox" {print $4}' /proc/self/mountinfo; cat /proc/self/cgroup | head -1`)})
	if r.err != nil || r.code != 0 {
		t.Fatalf("Run: code %d err %v stderr %q", r.code, r.err, r.stderr)
	}
	ws := strings.SplitN(r.stdout, "\n", 2)[0]
	if !strings.Contains(ws, "clawcage-workspace-") {
		t.Fatalf("could not learn the temporary workspace: %q", r.stdout)
	}
	if _, err := os.Stat(ws); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary workspace %s still exists (%v)", ws, err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || !strings.HasPrefix(f[len(f)-3], "cgroup") {
			continue
		}
		filepath.WalkDir(f[4], func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if strings.Contains(d.Name(), name) {
				t.Errorf("cgroup %s left behind", p)
			}
			if strings.Count(strings.TrimPrefix(p, f[4]), "/") >= 6 {
				return filepath.SkipDir
			}
			return nil
		})
	}
}

// TestReportError checks how a failure reported from inside the sandbox
// comes back from Run: a missing kernel feature as *UnavailableError (so
// the CLI can print the fix), anything else as *SetupError naming the step.
func TestReportError(t *testing.T) {
	tests := []struct {
		name     string
		report   string
		wantType string
		wantText string
	}{
		{"landlock missing", `{"step":"apply landlock","error":"x","feature":"landlock","reason":"the kernel has no Landlock support","fix":"use Linux 6.7","code":125}`,
			"unavailable", "landlock unavailable: the kernel has no Landlock support; the sandbox refuses to run without it (fix: use Linux 6.7)"},
		{"seccomp missing", `{"step":"install seccomp filter","error":"x","feature":"seccomp","reason":"prctl: EINVAL","fix":"CONFIG_SECCOMP_FILTER=y","code":125}`,
			"unavailable", "seccomp unavailable"},
		{"failed step", `{"step":"build root file system","error":"mount /newroot: EPERM","code":125}`,
			"setup", "sandbox setup: build root file system: mount /newroot: EPERM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := pid1.ReadReport(strings.NewReader(tc.report))
			if err != nil {
				t.Fatal(err)
			}
			err = reportError(rep)
			var ue *UnavailableError
			var se *SetupError
			switch {
			case tc.wantType == "unavailable" && !errors.As(err, &ue),
				tc.wantType == "setup" && !errors.As(err, &se):
				t.Fatalf("got %T %v, want %s error", err, err, tc.wantType)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q, want %q", err, tc.wantText)
			}
		})
	}
	if rep, err := pid1.ReadReport(strings.NewReader("")); rep != nil || err != nil {
		t.Errorf("empty report: %v, %v; want none (the command started)", rep, err)
	}
	if _, err := pid1.ReadReport(strings.NewReader("{garbage")); err == nil {
		t.Error("malformed report accepted")
	}
}

// TestSpecCgroup checks Spec.Cgroup: the sandbox runs in the group of that
// name, and a name the cgroup rules refuse is an error naming it.
func TestSpecCgroup(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	name := fmt.Sprintf("clawcage-test%d-box", os.Getpid())
	r := runBox(t, Spec{Cgroup: name, Command: sh("cat /proc/self/cgroup")})
	// The command sees its cgroup namespace's root; PID 1's host view is
	// checked through the host's own /proc below.
	if r.err != nil || r.code != 0 {
		t.Fatalf("run: code %d, %v, %s", r.code, r.err, r.stderr)
	}
	p, err := Start(context.Background(), Spec{Cgroup: name, Command: []string{"/bin/sleep", "5"}}, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid()))
	p.Signal(syscall.SIGKILL)
	p.Wait()
	if err != nil || !strings.Contains(string(cg), "/"+name+"\n") {
		t.Errorf("PID 1's cgroups %q (%v), want %s", cg, err, name)
	}
	r = runBox(t, Spec{Cgroup: "bad/name", Command: []string{"/bin/true"}})
	if r.err == nil || !strings.Contains(r.err.Error(), `cgroup name "bad/name"`) {
		t.Errorf("bad cgroup name: code %d, err %v", r.code, r.err)
	}
}

// TestSandboxCABundleReadOnly checks that the host's CA bundle, bound into
// the sandbox's /etc, cannot be written, truncated or replaced from inside,
// as the sandbox user or as root inside.
func TestSandboxCABundleReadOnly(t *testing.T) {
	needSandbox(t)
	const ca = "/etc/ssl/certs/ca-certificates.crt"
	before, err := os.ReadFile(ca)
	if err != nil {
		t.Skipf("no host CA bundle at %s: %v", ca, err)
	}
	tests := []struct {
		name string
		root bool
		sh   string
	}{
		{"append as the sandbox user", false, "echo planted >> " + ca},
		{"append as root inside", true, "echo planted >> " + ca},
		{"truncate as root inside", true, ": > " + ca},
		{"remove as root inside", true, "rm -f " + ca + " && test ! -e " + ca},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runBox(t, Spec{Command: []string{"/bin/sh", "-c", tc.sh}, Root: tc.root})
			if r.err != nil {
				t.Fatalf("Run: %v (stderr %q)", r.err, r.stderr)
			}
			if r.code == 0 {
				t.Errorf("%q succeeded inside the sandbox, want it refused", tc.sh)
			}
			after, err := os.ReadFile(ca)
			if err != nil || !bytes.Equal(after, before) {
				t.Fatalf("host CA bundle changed (read err %v)", err)
			}
		})
	}
}
