package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// world is the host-side set-up the attacks aim at.
type world struct {
	otherSecret     string // a file in a second workspace
	canaryName      string // environment variable of the invoking process
	canary          string // its value
	hostPid         int    // a stopped host process (SIGSTOP): a signal that lands would wake it
	tcpAddr         string // a loopback TCP listener on a random port
	tcpAccepts      *atomic.Int64
	allowedAddr     string // a loopback listener on a port Landlock allows (8080/3128/18790), or such a port unused
	allowedAccepts  *atomic.Int64
	abstract        string // an abstract Unix socket listener (without the @)
	abstractAccepts *atomic.Int64
	shadowSum       string // sha256 token of the host's /etc/shadow
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{tcpAccepts: new(atomic.Int64), allowedAccepts: new(atomic.Int64), abstractAccepts: new(atomic.Int64)}

	other := t.TempDir()
	w.otherSecret = filepath.Join(other, "secret.txt")
	if err := os.WriteFile(w.otherSecret, []byte("another sandbox's secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.canaryName = "CLAWCAGE_E2E_CANARY"
	w.canary = fmt.Sprintf("canary-%d-%d", os.Getpid(), time.Now().UnixNano())

	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	w.hostPid = sleeper.Process.Pid
	if err := sleeper.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, w.hostPid, 'T')

	serve := func(network, addr string, n *atomic.Int64) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				n.Add(1)
				c.Close()
			}
		}()
		return ln, nil
	}
	ln, err := serve("tcp", "127.0.0.1:0", w.tcpAccepts)
	if err != nil {
		t.Fatal(err)
	}
	w.tcpAddr = ln.Addr().String()
	w.allowedAddr = "127.0.0.1:8080"
	for _, port := range []string{"8080", "3128", "18790"} {
		if ln, err := serve("tcp", "127.0.0.1:"+port, w.allowedAccepts); err == nil {
			w.allowedAddr = ln.Addr().String()
			break
		}
	}
	w.abstract = fmt.Sprintf("clawcage-e2e-%d", os.Getpid())
	if _, err := serve("unix", "@"+w.abstract, w.abstractAccepts); err != nil {
		t.Fatal(err)
	}
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	w.shadowSum = audit.SHA256Detail(shadow)
	return w
}

// procState returns the state letter of a host process.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

func waitState(t *testing.T, pid int, want byte) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if procState(pid) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("host process %d did not reach state %c (is %c)", pid, want, procState(pid))
}

// escapeCase is one attack of the battery.
type escapeCase struct {
	name  string
	probe string
	args  func(w *world, ws string) []string
	flags []string
	// setup prepares the workspace on the host side.
	setup func(t *testing.T, w *world, ws string)
	// want lists the outcomes that mean the sandbox held.
	want []string
	// check looks for host-side evidence of an escape.
	check func(t *testing.T, w *world, ws string, r result)
	// tty runs the sandbox with a terminal on stdin.
	tty bool
}

func fixed(args ...string) func(*world, string) []string {
	return func(*world, string) []string { return args }
}

// noHostBytes fails when a read returned the host's /etc/shadow.
func noHostShadow(t *testing.T, w *world, _ string, r result) {
	if strings.Contains(r.obs.Detail, w.shadowSum) {
		t.Errorf("the sandbox read the host's /etc/shadow: %s", r.obs.Detail)
	}
}

// noFileCreated fails when the probe's file appeared in a host directory.
func noFileCreated(dir string) func(*testing.T, *world, string, result) {
	return func(t *testing.T, _ *world, _ string, _ result) {
		matches, _ := filepath.Glob(filepath.Join(dir, ".clawcage-audit-*"))
		if len(matches) > 0 {
			t.Errorf("the sandbox created %v on the host", matches)
		}
	}
}

func noAccepts(n func(*world) *atomic.Int64) func(*testing.T, *world, string, result) {
	return func(t *testing.T, w *world, _ string, _ result) {
		if got := n(w).Load(); got != 0 {
			t.Errorf("the host listener accepted %d connections from the sandbox", got)
		}
	}
}

var eperm = []string{"EPERM"}

func escapeCases() []escapeCase {
	return []escapeCase{
		// Host secrets.
		{name: "read-host-etc-shadow", probe: "read-shadow", want: []string{"ENOENT"}, check: noHostShadow},
		{name: "list-host-root-home", probe: "read-root-home", want: []string{"ENOENT"}},
		{name: "read-other-workspace", probe: "read-path", args: func(w *world, _ string) []string { return []string{w.otherSecret} },
			want: []string{"ENOENT"}},
		{name: "symlink-in-workspace-to-host-shadow", probe: "read-path", args: fixed("/sandbox/shadow-link"),
			setup: func(t *testing.T, _ *world, ws string) {
				if err := os.Symlink("/etc/shadow", filepath.Join(ws, "shadow-link")); err != nil {
					t.Fatal(err)
				}
			}, want: []string{"ENOENT"}, check: noHostShadow},
		{name: "symlink-planted-from-inside", probe: "symlink-escape", want: []string{"ENOENT"}, check: noHostShadow},
		{name: "read-proc1-environ", probe: "proc1-environ", args: func(w *world, _ string) []string { return []string{w.canary} },
			want: []string{"ENOENT"}},
		{name: "invoking-environment-canary", probe: "env-canary", args: func(w *world, _ string) []string { return []string{w.canary} },
			want: []string{audit.Absent}},

		// Writes outside the workspace.
		{name: "write-usr", probe: "write-usr", want: []string{"EROFS"}, check: noFileCreated("/usr")},
		{name: "write-etc", probe: "write-etc", want: []string{"EROFS"}, check: noFileCreated("/etc")},
		{name: "write-rootfs", probe: "write-rootfs", want: []string{"EROFS"}, check: noFileCreated("/")},
		// /proc/sys is mounted read-only and its files are owned by the
		// host's root: whichever check the kernel makes first answers.
		{name: "write-proc-sys", probe: "write-proc-sys", want: []string{"EACCES", "EROFS"}},
		{name: "write-sys", probe: "write-sys", want: []string{"ENOENT"}},
		{name: "escape-cgroup", probe: "cgroup-escape", want: []string{"ENOENT"}},
		// Masked by /dev/null where the kernel has them; absent on kernels
		// built without them.
		{name: "read-proc-kcore", probe: "read-kcore", want: []string{audit.Masked, "ENOENT"}},
		{name: "write-proc-sysrq-trigger", probe: "write-sysrq", want: []string{audit.Masked, "ENOENT"}},

		// Host processes.
		{name: "see-host-processes", probe: "see-host-pids", args: fixed("8"), want: []string{audit.Isolated}},
		{name: "signal-host-process", probe: "kill-host-pid", args: func(w *world, _ string) []string { return []string{strconv.Itoa(w.hostPid)} },
			want: []string{"ESRCH"}, check: func(t *testing.T, w *world, _ string, _ result) {
				if s := procState(w.hostPid); s != 'T' {
					t.Errorf("the stopped host process %d is in state %c: the sandbox's SIGCONT reached it", w.hostPid, s)
				}
			}},
		{name: "ptrace-attach-parent", probe: "ptrace-attach", want: eperm},
		{name: "ptrace-traceme", probe: "ptrace-traceme", want: eperm},
		{name: "process-vm-readv", probe: "process-vm-readv", want: eperm},
		{name: "privileges-dropped", probe: "hardening", want: []string{audit.Enforced}},
		{name: "setuid-root-helper", probe: "setuid-exec", args: fixed("/sandbox/suid-helper"),
			setup: func(t *testing.T, _ *world, ws string) {
				p := filepath.Join(ws, "suid-helper")
				if err := copyFile(h.bin, p, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(p, 0, 0); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, os.ModeSetuid|0o755); err != nil {
					t.Fatal(err)
				}
			}, want: []string{audit.Unchanged}},

		// Mounts and namespaces.
		{name: "mount-tmpfs", probe: "mount-tmpfs", want: eperm},
		{name: "new-mount-api-fsopen", probe: "fsopen", want: eperm},
		{name: "umount-masked-kcore", probe: "umount", want: eperm},
		{name: "pivot-root", probe: "pivot-root", want: eperm},
		{name: "chroot", probe: "chroot", want: eperm},
		{name: "unshare-user-namespace", probe: "unshare-userns", want: eperm},
		{name: "clone-user-namespace", probe: "clone-userns", want: eperm},
		{name: "setns-every-namespace", probe: "setns", want: eperm},

		// Kernel attack surface.
		{name: "bpf", probe: "bpf", want: eperm},
		{name: "perf-event-open", probe: "perf-event-open", want: eperm},
		{name: "keyctl", probe: "keyctl", want: eperm},
		{name: "add-key", probe: "add-key", want: eperm},
		{name: "io-uring", probe: "io-uring", want: eperm},
		{name: "userfaultfd", probe: "userfaultfd", want: eperm},
		{name: "init-module", probe: "init-module", want: eperm},
		{name: "finit-module", probe: "finit-module", want: eperm},
		{name: "delete-module", probe: "delete-module", want: eperm},
		{name: "kexec-file-load", probe: "kexec-file-load", want: eperm},
		{name: "open-by-handle-at", probe: "open-by-handle", want: eperm},
		{name: "clone3-answered-enosys", probe: "clone3", want: []string{"ENOSYS"}},

		// Devices.
		{name: "open-dev-mem", probe: "dev-mem", want: []string{"ENOENT"}},
		{name: "open-dev-kmsg", probe: "dev-kmsg", want: []string{"ENOENT"}},
		{name: "open-block-devices", probe: "block-devices", want: []string{"ENOENT"}},
		{name: "mknod-dev-mem", probe: "mknod", want: eperm},
		{name: "tiocsti-into-operator-terminal", probe: "tiocsti", args: fixed("#clawcage-e2e-injected\n"), tty: true, want: eperm},

		// Network.
		{name: "raw-socket", probe: "raw-socket", want: eperm},
		{name: "packet-socket", probe: "packet-socket", want: eperm},
		{name: "netlink-route-allowed", probe: "netlink-route", want: []string{audit.Succeeded}},
		{name: "netlink-audit", probe: "netlink-audit", want: eperm},
		{name: "netlink-kobject-uevent", probe: "netlink-uevent", want: eperm},
		{name: "mptcp-socket", probe: "mptcp-socket", want: []string{"EPROTONOSUPPORT"}},
		{name: "only-loopback-interface", probe: "net-interfaces", want: []string{audit.LoopbackOnly}},
		{name: "connect-host-loopback-tcp", probe: "connect-tcp", args: func(w *world, _ string) []string { return []string{w.tcpAddr} },
			want: []string{"EACCES"}, check: noAccepts(func(w *world) *atomic.Int64 { return w.tcpAccepts })},
		{name: "connect-host-loopback-allowed-port", probe: "connect-tcp", args: func(w *world, _ string) []string { return []string{w.allowedAddr} },
			want: []string{"ECONNREFUSED"}, check: noAccepts(func(w *world) *atomic.Int64 { return w.allowedAccepts })},
		{name: "connect-host-abstract-unix", probe: "connect-abstract", args: func(w *world, _ string) []string { return []string{w.abstract} },
			want: []string{"ECONNREFUSED"}, check: noAccepts(func(w *world) *atomic.Int64 { return w.abstractAccepts })},
		// 192.0.2.1 (TEST-NET-1) stands for any external address: nothing
		// is contacted even if the sandbox let the packet out.
		{name: "connect-external-https", probe: "connect-tcp", args: fixed("192.0.2.1:443"), want: []string{"EACCES"}},
		{name: "connect-external-allowed-port", probe: "connect-tcp", args: fixed("192.0.2.1:8080"), want: []string{"ENETUNREACH"}},
		{name: "udp-external", probe: "connect-udp", args: fixed("192.0.2.1:53"), want: []string{"ENETUNREACH"}},
		// The sandbox's nsswitch.conf says "hosts: files": a name that is not
		// in its /etc/hosts is unknown without any query leaving.
		{name: "dns-lookup", probe: "dns", args: fixed("example.com"), want: []string{"NXDOMAIN"}},
		{name: "dns-direct-to-external-server", probe: "dns-direct", args: fixed("192.0.2.1:53", "example.com"), want: []string{"ENETUNREACH"}},
		{name: "dns-direct-to-loopback", probe: "dns-direct", args: fixed("127.0.0.1:53", "example.com"), want: []string{"ECONNREFUSED"}},

		// Resource limits.
		{name: "fork-bomb-held-by-pids-limit", probe: "fork-bomb", args: fixed("1000"), flags: []string{"--pids", "64"},
			want: []string{"EAGAIN"}, check: func(t *testing.T, _ *world, _ string, r result) {
				m := regexp.MustCompile(`started (\d+) processes`).FindStringSubmatch(r.obs.Detail)
				if m == nil {
					return // the bomb's own runtime was refused a thread: no count
				}
				if n, _ := strconv.Atoi(m[1]); n >= 64 {
					t.Errorf("started %d processes under --pids 64", n)
				}
			}},
		{name: "memory-hog-killed-by-memory-limit", probe: "memory-hog", args: fixed("512M"), flags: []string{"--memory", "64M"},
			want: []string{audit.KilledSIGKILL}},
	}
}

func TestEscape(t *testing.T) {
	requireSandbox(t)
	w := newWorld(t)
	for _, tc := range escapeCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{"user", "root"} {
				t.Run(mode, func(t *testing.T) {
					runCase(t, w, tc, mode == "root")
				})
			}
		})
	}
}

func runCase(t *testing.T, w *world, tc escapeCase, root bool) {
	ws := t.TempDir()
	if err := os.Chmod(ws, 0o777); err != nil {
		t.Fatal(err)
	}
	if tc.setup != nil {
		tc.setup(t, w, ws)
	}
	var args []string
	if tc.args != nil {
		args = tc.args(w, ws)
	}
	r := run{root: root, ws: ws, flags: tc.flags, env: []string{w.canaryName + "=" + w.canary}, probe: tc.probe, args: args}
	var term *os.File
	if tc.tty {
		master, slave, err := pty.Open()
		if err != nil {
			t.Fatalf("open a pty for the operator's terminal: %v", err)
		}
		defer master.Close()
		defer slave.Close()
		r.stdin, term = slave, slave
		go func() { _, _ = bytes.NewBuffer(nil).ReadFrom(master) }() // drain echo
	}
	before := snapshotHost(t, filepath.Base(ws))
	res := runProbe(t, r)
	t.Logf("%s: %s (%s)", tc.probe, res.obs.Outcome, res.obs.Detail)
	if !slices.Contains(tc.want, res.obs.Outcome) {
		t.Errorf("%s as %s: outcome %q, want %s (detail: %s)", tc.probe, modeName(root), res.obs.Outcome, strings.Join(tc.want, " or "), res.obs.Detail)
	}
	if tc.check != nil {
		tc.check(t, w, ws, res)
	}
	if term != nil {
		checkNothingInjected(t, term, args[0])
	}
	checkNothingLeft(t, before, filepath.Base(ws))
}

func modeName(root bool) string {
	if root {
		return "root"
	}
	return "the default user"
}

// checkNothingInjected fails when text pushed with TIOCSTI is waiting in
// the operator terminal's input queue.
func checkNothingInjected(t *testing.T, term *os.File, text string) {
	t.Helper()
	fd := int(term.Fd())
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	if err != nil {
		t.Fatalf("FIONREAD on the operator terminal: %v", err)
	}
	if n == 0 {
		return
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	k, _ := unix.Read(fd, buf)
	if k > 0 && strings.Contains(string(buf[:k]), strings.TrimSpace(text)) {
		t.Errorf("the sandbox injected %q into the operator's terminal", buf[:k])
	}
}
