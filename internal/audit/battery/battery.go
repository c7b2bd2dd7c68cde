// Package battery is the host side of the sandbox escape battery: the
// targets the attacks aim at (a second workspace's secret, a stopped host
// process, loopback and abstract-socket listeners, an environment canary, a
// setuid-root helper), the list of attacks with the outcome that means the
// sandbox held, and the host-side evidence checks. It does not start
// sandboxes: RunOneShot runs a case through `clawcage sandbox run`, RunExec
// through an Exec that enters a live sandbox of a stack (internal/audit/live,
// `clawcage audit SANDBOX`).
package battery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// World is the host-side set-up the attacks aim at.
type World struct {
	// Binary is the host path of the static clawcage binary used as the
	// probe (and, copied setuid-root, as the setuid helper).
	Binary string
	// State is the state directory of the stack whose live sandbox is
	// audited; empty for one-shot sandboxes.
	State string
	// RouterPID and PolicyPID are the host pids of the stack's components
	// (live audits).
	RouterPID, PolicyPID int

	otherSecret     string
	canaryName      string
	canary          string
	hostPid         int
	tcpAddr         string
	tcpAccepts      atomic.Int64
	allowedAddr     string
	allowedAccepts  atomic.Int64
	abstract        string
	abstractAccepts atomic.Int64
	adminSock       string // a Unix socket by path, standing for a component's admin socket
	adminAccepts    atomic.Int64
	shadowSum       string

	closers []func()
}

// NewWorld sets up the targets; Close removes them.
func NewWorld(ctx context.Context, binary string) (w *World, err error) {
	w = &World{Binary: binary}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	other, err := os.MkdirTemp("", "clawcage-audit-other-")
	if err != nil {
		return nil, fmt.Errorf("create the second workspace: %w", err)
	}
	w.closers = append(w.closers, func() { os.RemoveAll(other) })
	w.otherSecret = filepath.Join(other, "secret.txt")
	if err := os.WriteFile(w.otherSecret, []byte("another sandbox's secret\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write the second workspace's secret: %w", err)
	}
	w.canaryName = "CLAWCAGE_AUDIT_CANARY"
	w.canary = fmt.Sprintf("canary-%d-%d", os.Getpid(), time.Now().UnixNano())
	// The canary stands for a provider key: it is in the invoking
	// environment and in host files the sandbox must not reach.
	if err := os.WriteFile(filepath.Join(other, "provider-key.txt"), []byte(w.canary+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write the canary key file: %w", err)
	}

	sleeper := exec.Command("sleep", "3600")
	if err := sleeper.Start(); err != nil {
		return nil, fmt.Errorf("start the host target process: %w", err)
	}
	w.closers = append(w.closers, func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	w.hostPid = sleeper.Process.Pid
	if err := sleeper.Process.Signal(syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("stop the host target process: %w", err)
	}
	if err := waitState(ctx, w.hostPid, 'T'); err != nil {
		return nil, err
	}

	ln, err := w.serve(ctx, "tcp", "127.0.0.1:0", &w.tcpAccepts)
	if err != nil {
		return nil, err
	}
	w.tcpAddr = ln.Addr().String()
	w.allowedAddr = "127.0.0.1:8080"
	for _, port := range []string{"8080", "3128", "18790"} {
		if ln, err := w.serve(ctx, "tcp", "127.0.0.1:"+port, &w.allowedAccepts); err == nil {
			w.allowedAddr = ln.Addr().String()
			break
		}
	}
	w.abstract = fmt.Sprintf("clawcage-audit-%d", os.Getpid())
	if _, err := w.serve(ctx, "unix", "@"+w.abstract, &w.abstractAccepts); err != nil {
		return nil, err
	}
	w.adminSock = filepath.Join(other, "admin.sock")
	if _, err := w.serve(ctx, "unix", w.adminSock, &w.adminAccepts); err != nil {
		return nil, err
	}
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		shadow = []byte("no /etc/shadow on this host")
	}
	w.shadowSum = audit.SHA256Detail(shadow)
	return w, nil
}

// Close stops the host targets.
func (w *World) Close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
}

// Env is the invoking environment's canary, to be added to the environment
// of the process that starts the sandbox.
func (w *World) Env() []string { return []string{w.canaryName + "=" + w.canary} }

func (w *World) serve(ctx context.Context, network, addr string, n *atomic.Int64) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s: %w", network, addr, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	w.closers = append(w.closers, func() { ln.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
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

func waitState(ctx context.Context, pid int, want byte) error {
	for range 100 {
		if procState(pid) == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Errorf("host process %d did not reach state %c (is %c)", pid, want, procState(pid))
}

// Case is one attack of the battery.
type Case struct {
	// Name says what is attacked.
	Name string
	// Probe is the internal/audit probe that performs it.
	Probe string
	// Args builds the probe's arguments.
	Args func(w *World) []string
	// Flags are extra `sandbox run` flags (limits); a live sandbox cannot
	// take them, so such cases run only in one-shot sandboxes.
	Flags []string
	// Setup prepares the workspace (host path ws) before the run.
	Setup func(w *World, ws string) error
	// Want lists the outcomes that mean the sandbox held.
	Want []string
	// Check looks for host-side evidence of an escape after the run.
	Check func(w *World, o audit.Observation) error
	// TTY runs the sandbox with a terminal on stdin.
	TTY bool
	// LiveOnly cases attack the stack around a live sandbox (its
	// components' sockets, state and memory); a one-shot sandbox has none.
	LiveOnly bool
	// LiveWant, when set, replaces Want in a live sandbox of a stack.
	LiveWant []string
	// Needs says why the case cannot run against w ("" when it can).
	Needs func(w *World) string
}

func pidNeed(pid int, what string) string {
	if pid <= 0 {
		return "the " + what + " is not running (no pid in the stack's status)"
	}
	return ""
}

// adminSocketName is the admin socket every component keeps in its state
// directory (stack.AdminSocketName; a test keeps them equal).
const adminSocketName = "admin.sock"

// Verdict compares o with c's expectations and host-side evidence; nil
// means the sandbox held.
func (c Case) Verdict(w *World, o audit.Observation) error {
	var errs []error
	if !slices.Contains(c.Want, o.Outcome) {
		errs = append(errs, fmt.Errorf("outcome %q, want %s (%s)", o.Outcome, strings.Join(c.Want, " or "), o.Detail))
	}
	if c.Check != nil {
		if err := c.Check(w, o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func fixed(args ...string) func(*World) []string { return func(*World) []string { return args } }

func noHostShadow(w *World, o audit.Observation) error {
	if strings.Contains(o.Detail, w.shadowSum) {
		return fmt.Errorf("the sandbox read the host's /etc/shadow: %s", o.Detail)
	}
	return nil
}

func noFileCreated(dir string) func(*World, audit.Observation) error {
	return func(*World, audit.Observation) error {
		if m, _ := filepath.Glob(filepath.Join(dir, ".clawcage-audit-*")); len(m) > 0 {
			return fmt.Errorf("the sandbox created %v on the host", m)
		}
		return nil
	}
}

func noAccepts(n func(*World) *atomic.Int64) func(*World, audit.Observation) error {
	return func(w *World, _ audit.Observation) error {
		if got := n(w).Load(); got != 0 {
			return fmt.Errorf("the host listener accepted %d connections from the sandbox", got)
		}
		return nil
	}
}

// InstallSetuidHelper copies the binary into ws as a setuid-root file.
func (w *World) InstallSetuidHelper(ws string) error {
	p := filepath.Join(ws, "suid-helper")
	if err := CopyFile(w.Binary, p, 0o755); err != nil {
		return err
	}
	if err := os.Chown(p, 0, 0); err != nil {
		return fmt.Errorf("chown the setuid helper to root: %w", err)
	}
	if err := os.Chmod(p, os.ModeSetuid|0o755); err != nil {
		return fmt.Errorf("make the helper setuid: %w", err)
	}
	return nil
}

// CopyFile copies src to dst with mode.
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

var eperm = []string{"EPERM"}

// scanRoots are where configuration, state and secrets live; the
// read-only host /usr is left out to keep the scan short.
var scanRoots = []string{"/sandbox", "/etc", "/tmp", "/run", "/var", "/home", "/root", "/opt", "/srv", "/mnt"}

// Cases returns the battery, in a stable order.
func Cases() []Case {
	return []Case{
		// Host secrets.
		{Name: "read-host-etc-shadow", Probe: "read-shadow", Want: []string{"ENOENT"}, Check: noHostShadow},
		{Name: "list-host-root-home", Probe: "read-root-home", Want: []string{"ENOENT"}},
		{Name: "read-other-workspace", Probe: "read-path", Args: func(w *World) []string { return []string{w.otherSecret} },
			Want: []string{"ENOENT"}},
		{Name: "symlink-in-workspace-to-host-shadow", Probe: "read-path", Args: fixed("/sandbox/shadow-link"),
			Setup: func(_ *World, ws string) error {
				p := filepath.Join(ws, "shadow-link")
				_ = os.Remove(p)
				return os.Symlink("/etc/shadow", p)
			}, Want: []string{"ENOENT"}, Check: noHostShadow},
		{Name: "symlink-planted-from-inside", Probe: "symlink-escape", Want: []string{"ENOENT"}, Check: noHostShadow},
		{Name: "read-proc1-environ", Probe: "proc1-environ", Args: func(w *World) []string { return []string{w.canary} },
			Want: []string{"ENOENT", audit.Absent}},
		{Name: "invoking-environment-canary", Probe: "env-canary", Args: func(w *World) []string { return []string{w.canary} },
			Want: []string{audit.Absent}},
		{Name: "printenv-finds-no-key-shaped-value", Probe: "secrets-env", Want: []string{audit.Absent}},
		{Name: "filesystem-scan-finds-no-canary-key", Probe: "secrets-files", Args: func(w *World) []string {
			return append([]string{w.canary}, scanRoots...)
		}, Want: []string{audit.Absent}},
		{Name: "connect-host-admin-socket", Probe: "unix-connect", Args: func(w *World) []string { return []string{w.adminSock} },
			Want: []string{"ENOENT"}, Check: noAccepts(func(w *World) *atomic.Int64 { return &w.adminAccepts })},

		// Writes outside the workspace.
		{Name: "write-usr", Probe: "write-usr", Want: []string{"EROFS"}, Check: noFileCreated("/usr")},
		{Name: "write-etc", Probe: "write-etc", Want: []string{"EROFS"}, Check: noFileCreated("/etc")},
		{Name: "write-rootfs", Probe: "write-rootfs", Want: []string{"EROFS"}, Check: noFileCreated("/")},
		// /proc/sys is mounted read-only and its files belong to the host's
		// root: whichever check the kernel makes first answers.
		{Name: "write-proc-sys", Probe: "write-proc-sys", Want: []string{"EACCES", "EROFS"}},
		{Name: "write-sys", Probe: "write-sys", Want: []string{"ENOENT"}},
		{Name: "escape-cgroup", Probe: "cgroup-escape", Want: []string{"ENOENT"}},
		// Masked by /dev/null where the kernel has them; absent on kernels
		// built without them.
		{Name: "read-proc-kcore", Probe: "read-kcore", Want: []string{audit.Masked, "ENOENT"}},
		{Name: "write-proc-sysrq-trigger", Probe: "write-sysrq", Want: []string{audit.Masked, "ENOENT"}},

		// Host processes and privileges.
		{Name: "see-host-processes", Probe: "see-host-pids", Args: fixed("8"), Want: []string{audit.Isolated}},
		{Name: "signal-host-process", Probe: "kill-host-pid", Args: func(w *World) []string { return []string{strconv.Itoa(w.hostPid)} },
			Want: []string{"ESRCH"}, Check: func(w *World, _ audit.Observation) error {
				if s := procState(w.hostPid); s != 'T' {
					return fmt.Errorf("the stopped host process %d is in state %c: the sandbox's SIGCONT reached it", w.hostPid, s)
				}
				return nil
			}},
		{Name: "ptrace-attach-parent", Probe: "ptrace-attach", Want: eperm},
		{Name: "ptrace-traceme", Probe: "ptrace-traceme", Want: eperm},
		{Name: "process-vm-readv", Probe: "process-vm-readv", Want: eperm},
		{Name: "privileges-dropped", Probe: "hardening", Want: []string{audit.Enforced}},
		{Name: "setuid-root-helper", Probe: "setuid-exec", Args: fixed("/sandbox/suid-helper"),
			Setup: func(w *World, ws string) error { return w.InstallSetuidHelper(ws) }, Want: []string{audit.Unchanged}},

		// Mounts and namespaces.
		{Name: "mount-tmpfs", Probe: "mount-tmpfs", Want: eperm},
		{Name: "new-mount-api-fsopen", Probe: "fsopen", Want: eperm},
		{Name: "umount-masked-kcore", Probe: "umount", Want: eperm},
		{Name: "pivot-root", Probe: "pivot-root", Want: eperm},
		{Name: "chroot", Probe: "chroot", Want: eperm},
		{Name: "unshare-user-namespace", Probe: "unshare-userns", Want: eperm},
		{Name: "clone-user-namespace", Probe: "clone-userns", Want: eperm},
		{Name: "setns-every-namespace", Probe: "setns", Want: eperm},

		// Kernel attack surface.
		{Name: "bpf", Probe: "bpf", Want: eperm},
		{Name: "perf-event-open", Probe: "perf-event-open", Want: eperm},
		{Name: "keyctl", Probe: "keyctl", Want: eperm},
		{Name: "add-key", Probe: "add-key", Want: eperm},
		{Name: "io-uring", Probe: "io-uring", Want: eperm},
		{Name: "userfaultfd", Probe: "userfaultfd", Want: eperm},
		{Name: "init-module", Probe: "init-module", Want: eperm},
		{Name: "finit-module", Probe: "finit-module", Want: eperm},
		{Name: "delete-module", Probe: "delete-module", Want: eperm},
		{Name: "kexec-file-load", Probe: "kexec-file-load", Want: eperm},
		{Name: "open-by-handle-at", Probe: "open-by-handle", Want: eperm},
		{Name: "clone3-answered-enosys", Probe: "clone3", Want: []string{"ENOSYS"}},

		// Devices.
		{Name: "open-dev-mem", Probe: "dev-mem", Want: []string{"ENOENT"}},
		{Name: "open-dev-kmsg", Probe: "dev-kmsg", Want: []string{"ENOENT"}},
		{Name: "open-block-devices", Probe: "block-devices", Want: []string{"ENOENT"}},
		{Name: "mknod-dev-mem", Probe: "mknod", Want: eperm},
		{Name: "tiocsti-into-operator-terminal", Probe: "tiocsti", Args: fixed(TTYMarker + "\n"), TTY: true, Want: eperm},

		// Network.
		{Name: "raw-socket", Probe: "raw-socket", Want: eperm},
		{Name: "packet-socket", Probe: "packet-socket", Want: eperm},
		{Name: "netlink-route-allowed", Probe: "netlink-route", Want: []string{audit.Succeeded}},
		{Name: "netlink-audit", Probe: "netlink-audit", Want: eperm},
		{Name: "netlink-kobject-uevent", Probe: "netlink-uevent", Want: eperm},
		{Name: "vsock-socket-to-vm-host", Probe: "vsock-socket", Want: []string{"EAFNOSUPPORT"}},
		{Name: "mptcp-socket", Probe: "mptcp-socket", Want: []string{"EPROTONOSUPPORT"}},
		{Name: "only-loopback-interface", Probe: "net-interfaces", Want: []string{audit.LoopbackOnly}},
		{Name: "connect-host-loopback-tcp", Probe: "connect-tcp", Args: func(w *World) []string { return []string{w.tcpAddr} },
			Want: []string{"EACCES"}, Check: noAccepts(func(w *World) *atomic.Int64 { return &w.tcpAccepts })},
		// In a live sandbox the port may be the stack's own listener in the
		// sandbox's netns (the router on 8080): connecting to it is fine as
		// long as the host's listener on the same port saw nothing.
		{Name: "connect-host-loopback-allowed-port", Probe: "connect-tcp", Args: func(w *World) []string { return []string{w.allowedAddr} },
			Want: []string{"ECONNREFUSED"}, LiveWant: []string{"ECONNREFUSED", audit.Succeeded}, Check: noAccepts(func(w *World) *atomic.Int64 { return &w.allowedAccepts })},
		{Name: "connect-host-abstract-unix", Probe: "connect-abstract", Args: func(w *World) []string { return []string{w.abstract} },
			Want: []string{"ECONNREFUSED"}, Check: noAccepts(func(w *World) *atomic.Int64 { return &w.abstractAccepts })},
		// 192.0.2.1 (TEST-NET-1) stands for any external address: nothing
		// is contacted even if the sandbox let the packet out.
		{Name: "connect-external-https", Probe: "connect-tcp", Args: fixed("192.0.2.1:443"), Want: []string{"EACCES"}},
		{Name: "connect-external-allowed-port", Probe: "connect-tcp", Args: fixed("192.0.2.1:8080"), Want: []string{"ENETUNREACH"}},
		{Name: "udp-external", Probe: "connect-udp", Args: fixed("192.0.2.1:53"), Want: []string{"ENETUNREACH"}},
		// The sandbox's nsswitch.conf says "hosts: files": a name that is
		// not in its /etc/hosts is unknown without any query leaving.
		{Name: "dns-lookup", Probe: "dns", Args: fixed("example.com"), Want: []string{"NXDOMAIN"}},
		{Name: "dns-direct-to-external-server", Probe: "dns-direct", Args: fixed("192.0.2.1:53", "example.com"), Want: []string{"ENETUNREACH"}},
		{Name: "dns-direct-to-loopback", Probe: "dns-direct", Args: fixed("127.0.0.1:53", "example.com"), Want: []string{"ECONNREFUSED"}},

		// The stack around a live sandbox.
		{Name: "reach-router-admin-socket", Probe: "unix-connect", Args: func(w *World) []string {
			return []string{filepath.Join(w.State, "router", adminSocketName)}
		}, Want: []string{"ENOENT"}, LiveOnly: true},
		{Name: "reach-policy-engine-admin-socket", Probe: "unix-connect", Args: func(w *World) []string {
			return []string{filepath.Join(w.State, "policy", adminSocketName)}
		}, Want: []string{"ENOENT"}, LiveOnly: true},
		{Name: "reach-supervisor-control-socket", Probe: "unix-connect", Args: func(w *World) []string {
			return []string{supervisor.ControlSocketPath(w.State)}
		}, Want: []string{"ENOENT"}, LiveOnly: true},
		{Name: "read-router-state", Probe: "read-path", Args: func(w *World) []string { return []string{filepath.Join(w.State, "router")} },
			Want: []string{"ENOENT"}, LiveOnly: true},
		{Name: "read-policy-engine-state", Probe: "read-path", Args: func(w *World) []string { return []string{filepath.Join(w.State, "policy")} },
			Want: []string{"ENOENT"}, LiveOnly: true},
		{Name: "read-stack-state-dir", Probe: "read-path", Args: func(w *World) []string { return []string{w.State} },
			Want: []string{"ENOENT"}, LiveOnly: true},
		// The components' host pids are outside the sandbox's pid namespace.
		{Name: "read-router-memory", Probe: "proc-mem", Args: func(w *World) []string { return []string{strconv.Itoa(w.RouterPID)} },
			Want: []string{"ENOENT"}, LiveOnly: true, Needs: func(w *World) string { return pidNeed(w.RouterPID, "router") }},
		{Name: "read-policy-engine-memory", Probe: "proc-mem", Args: func(w *World) []string { return []string{strconv.Itoa(w.PolicyPID)} },
			Want: []string{"ENOENT"}, LiveOnly: true, Needs: func(w *World) string { return pidNeed(w.PolicyPID, "policy engine") }},

		// Resource limits.
		{Name: "fork-bomb-held-by-pids-limit", Probe: "fork-bomb", Args: fixed("1000"), Flags: []string{"--pids", "64"},
			Want: []string{"EAGAIN"}, Check: func(_ *World, o audit.Observation) error {
				m := regexp.MustCompile(`started (\d+) processes`).FindStringSubmatch(o.Detail)
				if m == nil {
					return nil // the bomb's own runtime was refused a thread: no count
				}
				if n, _ := strconv.Atoi(m[1]); n >= 64 {
					return fmt.Errorf("started %d processes under --pids 64", n)
				}
				return nil
			}},
		{Name: "fill-tmp-held-by-tmpfs-size", Probe: "fill-tmp", Args: fixed("256M"), Want: []string{"ENOSPC"}},
		{Name: "oom-killer-exemption", Probe: "oom-score-adj", Want: []string{"EACCES"}},
		{Name: "memory-hog-killed-by-memory-limit", Probe: "memory-hog", Args: fixed("512M"), Flags: []string{"--memory", "64M"},
			Want: []string{audit.KilledSIGKILL}},
	}
}

// TTYMarker is the text the TIOCSTI attack tries to push into the
// operator's terminal.
const TTYMarker = "#clawcage-audit-injected"

// ParseObservation finds probe's observation in JSON-lines output.
func ParseObservation(out, probe string) (audit.Observation, bool) {
	for line := range strings.SplitSeq(out, "\n") {
		var o audit.Observation
		if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &o); err == nil && o.Attack == probe {
			return o, true
		}
	}
	return audit.Observation{}, false
}
