package audit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	RunHelperIfRequested() // the probes re-run this test binary as their helper
	os.Exit(m.Run())
}

func TestProbeTable(t *testing.T) {
	seen := map[string]bool{}
	namePat := regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	for _, p := range Probes() {
		if seen[p.Name] {
			t.Errorf("probe %q listed twice", p.Name)
		}
		seen[p.Name] = true
		if !namePat.MatchString(p.Name) {
			t.Errorf("probe name %q is not lower-case-with-dashes", p.Name)
		}
		if p.Doc == "" || p.Run == nil || len(p.Expect) == 0 {
			t.Errorf("probe %q: Doc, Run and Expect are required", p.Name)
		}
		if slices.Contains(p.Expect, Error) || slices.Contains(p.Expect, Timeout) {
			t.Errorf("probe %q expects %v: a probe that could not run never means the sandbox held", p.Name, p.Expect)
		}
		if slices.Contains(p.Expect, Succeeded) && p.Name != "netlink-route" {
			t.Errorf("probe %q expects success: only netlink-route is an allowed operation", p.Name)
		}
	}
	for _, want := range []string{"read-shadow", "write-usr", "ptrace-attach", "mount-tmpfs", "setns", "raw-socket",
		"mptcp-socket", "connect-abstract", "dns", "bpf", "io-uring", "fork-bomb", "memory-hog", "setuid-exec", "tiocsti"} {
		if !seen[want] {
			t.Errorf("probe %q is missing", want)
		}
	}
}

func TestOutcomeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil is success", nil, Succeeded},
		{"bare errno", unix.EPERM, "EPERM"},
		{"wrapped in PathError", &os.PathError{Op: "open", Path: "/x", Err: unix.ENOENT}, "ENOENT"},
		{"wrapped in SyscallError in OpError", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", unix.ENETUNREACH)}, "ENETUNREACH"},
		{"wrapped with %w", fmt.Errorf("x: %w", unix.EAGAIN), "EAGAIN"},
		{"deadline", context.DeadlineExceeded, Timeout},
		{"other error", errors.New("boom"), Error},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OutcomeOf(tt.err); got != tt.want {
				t.Errorf("OutcomeOf(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestCombine(t *testing.T) {
	tests := []struct {
		name string
		errs []error
		want string
	}{
		{"all denied alike", []error{unix.EPERM, unix.EPERM}, "EPERM"},
		{"one success wins", []error{unix.EPERM, nil, unix.EINVAL}, Succeeded},
		{"different denials", []error{unix.EPERM, unix.EINVAL}, Mixed},
		{"nothing tried", nil, Error},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names := make([]string, len(tt.errs))
			for i := range names {
				names[i] = "n" + strconv.Itoa(i)
			}
			if got := combine(names, tt.errs).Outcome; got != tt.want {
				t.Errorf("combine = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1G", 1 << 30, true}, {"64M", 64 << 20, true}, {"4k", 4 << 10, true}, {"100", 100, true},
		{"", 0, false}, {"0", 0, false}, {"-1M", 0, false}, {"1T", 0, false}, {"M", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestProbesRejectBadArguments(t *testing.T) {
	tests := []struct {
		probe string
		args  []string
	}{
		{"read-path", nil},
		{"write-dir", []string{"a", "b"}},
		{"kill-host-pid", []string{"one"}},
		{"kill-host-pid", []string{"1"}},
		{"proc1-environ", nil},
		{"env-canary", []string{""}},
		{"ptrace-attach", []string{"x"}},
		{"see-host-pids", []string{"0"}},
		{"connect-abstract", []string{"@"}},
		{"setuid-exec", nil},
		{"fork-bomb", []string{"-3"}},
		{"memory-hog", []string{"lots"}},
		{"no-such-probe", nil},
	}
	for _, tt := range tests {
		t.Run(tt.probe+"/"+strings.Join(tt.args, ","), func(t *testing.T) {
			o := Run(context.Background(), tt.probe, tt.args)
			if o.Outcome != Error || o.Attack != tt.probe {
				t.Errorf("Run(%s, %q) = %+v, want outcome %q", tt.probe, tt.args, o, Error)
			}
		})
	}
}

// TestProbesDetectEscapesOnHost runs the probes unsandboxed as root, where
// every attack is possible: each must report the escape (and so not be
// "held"). This is what proves the e2e battery can fail.
func TestProbesDetectEscapesOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the probes must be able to succeed on the host to prove they detect an escape")
	}
	ctx := context.Background()
	tmp := t.TempDir()

	secret := filepath.Join(tmp, "secret")
	secretBytes := []byte("clawcage-audit-secret\n")
	if err := os.WriteFile(secret, secretBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	sleeperPid := strconv.Itoa(sleeper.Process.Pid)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	abstract := fmt.Sprintf("clawcage-audit-test-%d", os.Getpid())
	uln, err := net.Listen("unix", "@"+abstract)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uln.Close() })
	for _, l := range []net.Listener{ln, uln} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}

	dnsSrv, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dnsSrv.Close() })
	go func() { // answers every query with the query itself
		buf := make([]byte, 1500)
		for {
			n, from, err := dnsSrv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = dnsSrv.WriteTo(buf[:n], from)
		}
	}()

	canary := fmt.Sprintf("clawcage-canary-%d", time.Now().UnixNano())
	t.Setenv("CLAWCAGE_AUDIT_TEST_CANARY", canary)

	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })

	ioUringDisabled := false
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) != "0" {
		ioUringDisabled = true
	}

	tests := []struct {
		probe string
		args  []string
		want  string // exact outcome; "" means only "not held"
		skip  string
	}{
		{probe: "read-shadow", want: Succeeded},
		{probe: "read-root-home", want: Succeeded},
		{probe: "read-path", args: []string{secret}, want: Succeeded},
		{probe: "write-usr", want: Succeeded},
		{probe: "write-dir", args: []string{tmp}, want: Succeeded},
		{probe: "write-proc-sys", want: Succeeded},
		{probe: "see-host-pids", args: []string{"1"}, want: Succeeded},
		{probe: "kill-host-pid", args: []string{sleeperPid}, want: Succeeded},
		{probe: "env-canary", args: []string{canary}, want: Succeeded},
		{probe: "ptrace-attach", args: []string{sleeperPid}, want: Succeeded},
		{probe: "ptrace-traceme", want: Succeeded},
		{probe: "process-vm-readv", want: Succeeded},
		{probe: "hardening", want: Succeeded},
		{probe: "mount-tmpfs", want: Succeeded},
		{probe: "fsopen", want: Succeeded},
		{probe: "umount", args: []string{mnt}, want: Succeeded},
		{probe: "pivot-root"},
		{probe: "chroot", want: Succeeded},
		{probe: "unshare-userns", want: "EINVAL"}, // reachable: only the thread count stops it
		{probe: "clone-userns", want: Succeeded},
		{probe: "setns", want: Succeeded},
		{probe: "bpf", want: Succeeded},
		{probe: "perf-event-open", want: Succeeded},
		{probe: "keyctl", want: Succeeded},
		{probe: "add-key", want: Succeeded},
		{probe: "io-uring", want: Succeeded, skip: map[bool]string{true: "kernel.io_uring_disabled is set on this host"}[ioUringDisabled]},
		{probe: "userfaultfd", want: Succeeded},
		{probe: "init-module"},
		{probe: "finit-module"},
		{probe: "delete-module"},
		{probe: "kexec-file-load"},
		{probe: "open-by-handle", want: Succeeded},
		{probe: "clone3", want: "EINVAL"},
		{probe: "raw-socket", want: Succeeded},
		{probe: "packet-socket", want: Succeeded},
		{probe: "netlink-audit", want: Succeeded},
		{probe: "vsock-socket", want: Succeeded, skip: map[bool]string{false: "no vsock on this host"}[fileExists("/dev/vsock")]},
		{probe: "netlink-uevent", want: Succeeded},
		{probe: "connect-tcp", args: []string{ln.Addr().String()}, want: Succeeded},
		{probe: "connect-abstract", args: []string{abstract}, want: Succeeded},
		{probe: "dns-direct", args: []string{dnsSrv.LocalAddr().String()}, want: Succeeded},
		{probe: "mknod", want: Succeeded},
		{probe: "fork-bomb", args: []string{"8"}, want: Succeeded},
		{probe: "fill-tmp", args: []string{"4M"}, want: Succeeded},
		{probe: "oom-score-adj", want: Succeeded, skip: map[bool]string{false: "this host's root lacks CAP_SYS_RESOURCE"}[hasCap(t, unix.CAP_SYS_RESOURCE)]},
		{probe: "memory-hog", args: []string{"32M"}, want: Succeeded},
	}
	for _, tt := range tests {
		t.Run(tt.probe, func(t *testing.T) {
			if tt.skip != "" {
				t.Skip(tt.skip)
			}
			p, ok := Lookup(tt.probe)
			if !ok {
				t.Fatalf("no probe %q", tt.probe)
			}
			o := Run(ctx, tt.probe, tt.args)
			t.Logf("%s: %s (%s)", o.Attack, o.Outcome, o.Detail)
			if p.Held(o) {
				t.Errorf("unsandboxed root: %s reported %q, which the battery would count as held", tt.probe, o.Outcome)
			}
			if o.Outcome == Error {
				t.Errorf("probe could not run: %s", o.Detail)
			}
			if tt.want != "" && o.Outcome != tt.want {
				t.Errorf("outcome %q, want %q", o.Outcome, tt.want)
			}
		})
	}

	t.Run("read-path reports the content hash", func(t *testing.T) {
		o := Run(ctx, "read-path", []string{secret})
		if !strings.Contains(o.Detail, SHA256Detail(secretBytes)) {
			t.Errorf("detail %q lacks %s", o.Detail, SHA256Detail(secretBytes))
		}
	})
}

// TestProbesReportDenials checks the denial side on the host: attacks that
// fail here must come back as the kernel's errno, not as success.
func TestProbesReportDenials(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	tests := []struct {
		probe string
		args  []string
		want  string
	}{
		{"read-path", []string{filepath.Join(tmp, "missing")}, "ENOENT"},
		{"write-dir", []string{filepath.Join(tmp, "missing")}, "ENOENT"},
		{"kill-host-pid", []string{strconv.Itoa(1 << 22)}, "ESRCH"},
		{"connect-abstract", []string{fmt.Sprintf("clawcage-audit-nobody-%d", os.Getpid())}, "ECONNREFUSED"},
		{"connect-tcp", []string{closedLoopbackPort(t)}, "ECONNREFUSED"},
		{"umount", []string{tmp}, "EINVAL"},
	}
	for _, tt := range tests {
		t.Run(tt.probe, func(t *testing.T) {
			if tt.probe == "umount" && os.Geteuid() != 0 {
				t.Skip("umount of a non-mount point answers EPERM before EINVAL when not root")
			}
			o := Run(ctx, tt.probe, tt.args)
			if o.Outcome != tt.want {
				t.Errorf("%s %q = %+v, want %q", tt.probe, tt.args, o, tt.want)
			}
		})
	}
}

func TestIdsHelper(t *testing.T) {
	cmd, err := helperCommand(context.Background(), "", "ids")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ids helper: %v", err)
	}
	want := fmt.Sprintf(`"euid":%d`, os.Geteuid())
	if !strings.Contains(string(out), want) {
		t.Errorf("ids helper printed %s, want it to contain %s", out, want)
	}
}

func closedLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestFindSecret(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		canary string
		want   bool
	}{
		{"anthropic key", "ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345", "", true},
		{"openai project key", "key: sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123", "", true},
		{"aws access key id", "AKIAABCDEFGHIJKLMNOP", "", true},
		{"github token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "", true},
		{"slack bot token", "xoxb-1234567890-abcdef", "", true},
		{"plain text", "PATH=/usr/bin:/bin HOME=/sandbox", "", false},
		{"short sk- word", "risk-assessment sk-1", "", false},
		{"canary present", "x=canary-123", "canary-123", true},
		{"canary absent, key shapes ignored", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345", "canary-123", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := findSecret([]byte(tt.in), tt.canary); got != tt.want {
				t.Errorf("findSecret(%q, %q) = %v, want %v", tt.in, tt.canary, got, tt.want)
			}
		})
	}
}

func TestSecretProbesDetect(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	canary := fmt.Sprintf("canary-key-%d", time.Now().UnixNano())
	if err := os.MkdirAll(filepath.Join(tmp, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "a", "b", "config.json"), []byte(`{"key":"`+canary+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(tmp, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	t.Run("secrets-env finds the canary in the environment", func(t *testing.T) {
		t.Setenv("SOME_PROVIDER_KEY", canary)
		if o := Run(ctx, "secrets-env", []string{canary}); o.Outcome != Succeeded || strings.Contains(o.Detail, canary) {
			t.Errorf("got %+v, want %q without the secret in the detail", o, Succeeded)
		}
	})
	t.Run("secrets-env absent", func(t *testing.T) {
		if o := Run(ctx, "secrets-env", []string{canary + "-other"}); o.Outcome != Absent {
			t.Errorf("got %+v, want %q", o, Absent)
		}
	})
	t.Run("secrets-files finds the canary in a file", func(t *testing.T) {
		o := Run(ctx, "secrets-files", []string{canary, tmp})
		if o.Outcome != Succeeded || !strings.Contains(o.Detail, "config.json") || strings.Contains(o.Detail, canary) {
			t.Errorf("got %+v, want %q naming config.json without the secret", o, Succeeded)
		}
	})
	t.Run("secrets-files absent", func(t *testing.T) {
		if o := Run(ctx, "secrets-files", []string{canary + "-other", tmp}); o.Outcome != Absent {
			t.Errorf("got %+v, want %q", o, Absent)
		}
	})
	t.Run("unix-connect reaches a socket by path", func(t *testing.T) {
		if o := Run(ctx, "unix-connect", []string{sock}); o.Outcome != Succeeded {
			t.Errorf("got %+v, want %q", o, Succeeded)
		}
	})
	t.Run("unix-connect missing socket", func(t *testing.T) {
		if o := Run(ctx, "unix-connect", []string{filepath.Join(tmp, "none.sock")}); o.Outcome != "ENOENT" {
			t.Errorf("got %+v, want ENOENT", o)
		}
	})
}

func TestProxyDeny(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		want   string
	}{
		{"403 is a denial", "HTTP/1.1 403 Forbidden\r\nContent-Length: 17\r\n\r\n{\"reason\":\"deny\"}", Denied},
		{"200 is an escape", "HTTP/1.1 200 Connection established\r\n\r\n", Succeeded},
		{"other status reported as such", "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", "http:502"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 512)
				n, _ := c.Read(buf)
				got <- string(buf[:n])
				_, _ = c.Write([]byte(tt.answer))
			}()
			t.Setenv("HTTPS_PROXY", "http://"+ln.Addr().String())
			o := Run(context.Background(), "proxy-deny", []string{"evil.example:443"})
			if o.Outcome != tt.want {
				t.Errorf("got %+v, want %q", o, tt.want)
			}
			if req := <-got; !strings.HasPrefix(req, "CONNECT evil.example:443 HTTP/1.1\r\n") {
				t.Errorf("proxy received %q", req)
			}
		})
	}
}

// hasCap reports whether this process has capability c in its effective set.
func hasCap(t *testing.T, c int) bool {
	st, err := procStatus("self")
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(st["CapEff"], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v&(1<<uint(c)) != 0
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
