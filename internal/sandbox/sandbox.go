// Package sandbox runs one command in a kernel sandbox: new user, PID,
// mount, IPC, UTS, cgroup and network namespaces, a minimal root built
// from read-only host system directories, cgroup limits, no capabilities,
// no_new_privs, Landlock and seccomp.
//
// The host side is [Run]: it allocates the sandbox's host uid range, creates
// (or joins) the network namespace, starts the hidden "sandbox-init"
// command as PID 1 of the new namespaces, places it in the sandbox's
// cgroup and hands it the setup over a pipe. Package pid1 is PID 1: it builds
// the root file system and pivots into it, then, on one thread that it
// retires afterwards, drops every privilege, applies Landlock and seccomp and
// starts the command, which inherits all of it. Every step fails closed: a
// sandbox that cannot be fully enforced does not start. docs/sandbox.md
// describes the sequence and the uid scheme.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/clawcage/clawcage/internal/sandbox/pid1"
)

// Built-in defaults used when neither the caller nor the policy sets a limit.
const (
	// DefaultMemory is the default memory limit (cgroup memory.max).
	DefaultMemory int64 = 512 << 20
	// DefaultPids is the default maximum number of tasks.
	DefaultPids int64 = 256
	// DefaultTmp is the default size of the sandbox's /tmp tmpfs.
	DefaultTmp int64 = 64 << 20
	// DefaultKillGrace is how long Run waits after forwarding SIGTERM on
	// context cancellation before it kills the sandbox.
	DefaultKillGrace = 5 * time.Second
)

// DefaultConnectPorts are the local TCP ports a sandbox may connect to when
// Spec.ConnectPorts is nil: the privacy router, the egress proxy and the
// gateway (DESIGN §2).
var defaultConnectPorts = []uint16{8080, 3128, 18790}

// DefaultConnectPorts returns the TCP ports a sandbox may connect to by
// default: 8080 (router), 3128 (egress proxy), 18790 (gateway).
func DefaultConnectPorts() []uint16 { return append([]uint16(nil), defaultConnectPorts...) }

// The identities inside every sandbox.
const (
	// UserUID is the uid (and gid) the command runs as by default.
	UserUID = pid1.UserUID
	// UserName is the name of UserUID inside the sandbox.
	UserName = pid1.UserName
	// Hostname is the UTS host name inside the sandbox.
	Hostname = pid1.Hostname
	// WorkspaceDir is where the workspace is mounted inside the sandbox.
	WorkspaceDir = pid1.WorkspaceDir
)

// Exit statuses of a sandbox whose command did not run.
const (
	// ExitSetupFailed: the sandbox could not be set up.
	ExitSetupFailed = pid1.ExitSetupFailed
	// ExitNotExecutable: the command was found but could not be executed.
	ExitNotExecutable = pid1.ExitNotExecutable
	// ExitNotFound: the command was not found.
	ExitNotFound = pid1.ExitNotFound
)

// InitCommand is the hidden argument that makes clawcage (or any binary
// linking this package) the sandbox's PID 1; package pid1 takes over in its
// init function, so no main needs to dispatch it.
const InitCommand = pid1.Command

// MinLandlockABI is the oldest Landlock ABI the sandbox accepts.
const MinLandlockABI = pid1.MinLandlockABI

// LandlockABI returns the kernel's Landlock ABI version, or an
// *UnavailableError when it is missing or older than MinLandlockABI.
func LandlockABI() (int, error) { return pid1.LandlockABI() }

// CheckSeccomp returns an *UnavailableError unless the kernel supports
// seccomp filters with the errno action.
func CheckSeccomp() error { return pid1.CheckSeccomp() }

// CheckSuidDumpable returns an *UnavailableError when the host's
// fs.suid_dumpable is 1 ("debug"): PID 1 and the exec server start
// commands with vfork-style clones that share PID 1's memory, and a clone
// that changed its credentials makes that memory dumpable, so, between its
// setuid and its execve, the sandbox's user could open PID 1's memory
// through /proc. 0 and 2 (the default and the core-dump-pipe setting) are
// safe.
func CheckSuidDumpable() error {
	b, err := os.ReadFile("/proc/sys/fs/suid_dumpable")
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel without it dumps nothing set-id
	}
	if err != nil {
		return fmt.Errorf("read fs.suid_dumpable: %w", err)
	}
	return suidDumpableErr(b)
}

// suidDumpableErr is CheckSuidDumpable on the sysctl's content.
func suidDumpableErr(b []byte) error {
	switch v := strings.TrimSpace(string(b)); v {
	case "0", "2":
		return nil
	case "1":
		return &UnavailableError{Feature: "fs.suid_dumpable 0 or 2", Reason: "fs.suid_dumpable is 1 (debug): processes that change credentials stay dumpable, which would let the sandbox's user reach PID 1's memory",
			Fix: "sysctl -w fs.suid_dumpable=0 (or 2), and set it in /etc/sysctl.d"}
	default:
		return fmt.Errorf("fs.suid_dumpable: unexpected value %q", v)
	}
}

// CheckKernel checks every kernel feature the sandbox cannot run without
// (Landlock, seccomp, user namespaces) and fs.suid_dumpable.
func CheckKernel() error {
	if err := pid1.CheckKernel(); err != nil {
		return err
	}
	return CheckSuidDumpable()
}

// Limits are the sandbox's resource limits; zero means the built-in default
// (CPU: zero means no CPU limit).
type Limits struct {
	// Memory in bytes (memory.max / memory.limit_in_bytes).
	Memory int64
	// Pids is the maximum number of tasks.
	Pids int64
	// CPU is the number of CPUs' worth of time (1.5 = one and a half cores).
	CPU float64
	// Tmp is the size of /tmp in bytes.
	Tmp int64
	// Disk limits the workspace's allocated size while the sandbox runs
	// (package quota): a project quota where the filesystem enforces one
	// (EDQUOT), else a watcher that stops the sandbox with a
	// *quota.ExceededError from Wait, and RLIMIT_FSIZE = Disk (EFBIG). A
	// workspace already larger, or a filesystem with less free space than
	// the workspace may still take, is refused at start. Zero (and no
	// policy limit) means what the workspace holds plus
	// quota.DefaultGrowth or half the free space, whichever is less.
	Disk int64
}

// Policy is what a sandbox applies of a policy file (internal/policy):
// extra paths, resource limits and local ports. It is a type of this
// package, not *policy.Policy, so that the sandbox's start path does not
// import internal/policy (whose import tree would delay `clawcage sandbox
// run`'s fast path, see internal/sandbox/runcmd); package policyspec
// converts.
type Policy struct {
	// ReadOnly and ReadWrite are host paths bound at the same path inside
	// (the policy's filesystem section), after Spec.ReadOnly and ReadWrite.
	ReadOnly, ReadWrite []string
	// Limits are the policy's resources, used where Spec.Limits leaves a
	// field zero.
	Limits Limits
	// LocalPorts are TCP ports the command may bind (and connect to), for
	// its own servers.
	LocalPorts []int
}

// Spec describes one sandbox.
type Spec struct {
	// Name identifies the sandbox in logs and in its cgroup name
	// ("clawcage-NAME"); it must be a short [a-zA-Z0-9._-] word, unique among
	// running sandboxes. Empty means "run-<pid>-<uid slot>".
	Name string
	// Cgroup, if set, is the sandbox's cgroup name instead of
	// "clawcage-NAME" (the stack makes it unique per state directory):
	// letters, digits, '.', '_' and '-', at most 128.
	Cgroup string
	// Command is the program and its arguments, run with PATH lookup inside
	// the sandbox.
	Command []string
	// Workspace is the host directory mounted read-write at /sandbox. Empty
	// means a fresh temporary directory that is removed when Run returns.
	// A directory that does not exist is created, owned by the sandbox user.
	Workspace string
	// Env are extra KEY=VALUE variables, added after the sandbox's own.
	Env []string
	// Root runs the command as uid 0 inside the user namespace (still an
	// unprivileged host uid, with no capabilities) instead of uid 1000.
	Root bool
	// Policy, if set, adds a policy's filesystem paths, its resource
	// limits (where Limits leaves them zero) and its local ports; package
	// policyspec makes it from an internal/policy.Policy. The policy's
	// network rules are enforced by the egress proxy, not here.
	Policy *Policy
	// Limits are the resource limits; zero fields fall back to the policy,
	// then to the defaults.
	Limits Limits
	// ReadOnly and ReadWrite are extra absolute host paths bound at the same
	// path inside the sandbox.
	ReadOnly, ReadWrite []string
	// Hosts are extra /etc/hosts lines ("127.0.0.1 inference.local").
	Hosts []string
	// HTTPProxy, if set, is exported as HTTP_PROXY/HTTPS_PROXY (and lower
	// case) and NoProxy as NO_PROXY.
	HTTPProxy, NoProxy string
	// Term is the TERM value to export; empty exports none.
	Term string
	// TTY says Stdin is a terminal of this sandbox's own (the slave of a pty
	// the caller allocated): it becomes the command's controlling terminal.
	// Never set it for the operator's terminal: the sandbox must not get
	// that one as its controlling terminal (TIOCSTI keystroke injection).
	TTY bool
	// ConnectPorts are the TCP ports the sandbox may connect to (on any
	// address; the network namespace only has the sandbox's loopback). Nil
	// means DefaultConnectPorts; an empty non-nil slice allows none.
	ConnectPorts []uint16
	// BindPorts are TCP ports the sandbox may bind (its own servers); they
	// may also be connected to. The policy's local_ports are added. Default:
	// none.
	BindPorts []uint16
	// NetNS, if non-empty, is the path of an existing network namespace
	// (such as /proc/PID/ns/net or a bind-mounted one) the sandbox joins
	// instead of getting a new one. NetNSFile, if set, is used instead.
	NetNS     string
	NetNSFile *os.File
	// UIDBase is the first host uid of the sandbox's 65536-uid range. Zero
	// means allocate a free slot (see AllocateUIDRange).
	UIDBase uint32
	// KillGrace is how long to wait after SIGTERM when ctx is cancelled
	// before SIGKILL; zero means DefaultKillGrace.
	KillGrace time.Duration
	// Executable is the binary re-executed as the sandbox's PID 1 with the
	// argument "sandbox-init"; any binary linking this package works (package
	// pid1 takes over in its init function). Empty means /proc/self/exe.
	Executable string
	// Log receives the sandbox's lifecycle events (the workspace quota
	// mode, a sandbox stopped for its disk use...); nil means slog.Default().
	Log *slog.Logger
}

// Stdio are the command's standard streams and the signals forwarded to it.
// Nil streams are /dev/null. *os.File values are passed through unchanged
// (a terminal stays a terminal); other readers and writers are copied.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Signals, if set, are forwarded to the sandbox's PID 1, which forwards
	// them to the command.
	Signals <-chan os.Signal
}

// UnavailableError reports a kernel security feature the sandbox needs but
// cannot use (Feature, Reason, Fix). The sandbox refuses to start rather
// than enforce less.
type UnavailableError = pid1.UnavailableError

// SetupError is a failure of one step of the sandbox setup, inside or
// outside the sandbox.
type SetupError struct {
	// Step names the failed step ("pivot_root", "landlock", ...).
	Step string
	Err  error
}

func (e *SetupError) Error() string { return fmt.Sprintf("sandbox setup: %s: %v", e.Step, e.Err) }
func (e *SetupError) Unwrap() error { return e.Err }

// resolved is the spec with defaults, policy and validation applied.
type resolved struct {
	limits  Limits
	roPaths []string
	rwPaths []string
	env     []string
	connect []uint16
	bind    []uint16
}

// resolve validates spec and merges its policy and defaults.
func resolve(spec *Spec) (*resolved, error) {
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, errors.New("no command given")
	}
	if spec.Name != "" && !validName(spec.Name) {
		return nil, fmt.Errorf("sandbox name %q: only letters, digits, '.', '_' and '-' (at most 64)", spec.Name)
	}
	r := &resolved{limits: spec.Limits}
	if p := spec.Policy; p != nil {
		if r.limits.Memory == 0 {
			r.limits.Memory = p.Limits.Memory
		}
		if r.limits.Pids == 0 {
			r.limits.Pids = p.Limits.Pids
		}
		if r.limits.CPU == 0 {
			r.limits.CPU = p.Limits.CPU
		}
		if r.limits.Tmp == 0 {
			r.limits.Tmp = p.Limits.Tmp
		}
		if r.limits.Disk == 0 {
			r.limits.Disk = p.Limits.Disk
		}
	}
	if r.limits.Memory == 0 {
		r.limits.Memory = DefaultMemory
	}
	if r.limits.Pids == 0 {
		r.limits.Pids = DefaultPids
	}
	if r.limits.Tmp == 0 {
		r.limits.Tmp = DefaultTmp
	}
	switch {
	case r.limits.Memory < 4<<20:
		return nil, fmt.Errorf("memory limit %d bytes: below the 4MiB minimum", r.limits.Memory)
	case r.limits.Pids < 2:
		return nil, fmt.Errorf("pids limit %d: at least 2 (PID 1 and the command)", r.limits.Pids)
	case r.limits.CPU < 0:
		return nil, fmt.Errorf("cpu limit %g: must not be negative", r.limits.CPU)
	case r.limits.Disk < 0:
		return nil, fmt.Errorf("disk limit %d: must not be negative", r.limits.Disk)
	case r.limits.Tmp < 1<<20:
		return nil, fmt.Errorf("tmp size %d bytes: below the 1MiB minimum", r.limits.Tmp)
	}

	ro := append([]string(nil), spec.ReadOnly...)
	rw := append([]string(nil), spec.ReadWrite...)
	if p := spec.Policy; p != nil {
		ro = append(ro, p.ReadOnly...)
		rw = append(rw, p.ReadWrite...)
	}
	var err error
	if r.roPaths, err = checkBindPaths("read-only", ro); err != nil {
		return nil, err
	}
	if r.rwPaths, err = checkBindPaths("read-write", rw); err != nil {
		return nil, err
	}

	for _, kv := range spec.Env {
		if err := checkEnv(kv); err != nil {
			return nil, err
		}
	}
	r.env = buildEnv(spec)

	r.connect = spec.ConnectPorts
	if r.connect == nil {
		r.connect = DefaultConnectPorts()
	}
	r.bind = append([]uint16(nil), spec.BindPorts...)
	if p := spec.Policy; p != nil {
		for _, port := range p.LocalPorts {
			if port < 1 || port > 65535 {
				return nil, fmt.Errorf("policy local_ports: %d is not a port", port)
			}
			r.bind = append(r.bind, uint16(port))
		}
	}
	for _, p := range append(append([]uint16(nil), r.connect...), r.bind...) {
		if p == 0 {
			return nil, errors.New("port 0 is not a port")
		}
	}
	for _, h := range spec.Hosts {
		if strings.ContainsAny(h, "\n\r\x00") {
			return nil, fmt.Errorf("hosts line %q: contains a line break or NUL", h)
		}
	}
	return r, nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return s != "." && s != ".."
}

// checkEnv validates one KEY=VALUE pair.
func checkEnv(kv string) error {
	k, _, ok := strings.Cut(kv, "=")
	switch {
	case !ok:
		return fmt.Errorf("environment %q: want KEY=VALUE", kv)
	case k == "":
		return fmt.Errorf("environment %q: empty name", kv)
	case strings.ContainsRune(kv, 0):
		return fmt.Errorf("environment %q: contains NUL", kv)
	}
	return nil
}

// buildEnv is the command's complete environment: the sandbox's own
// variables, then spec.Env (later entries win).
func buildEnv(spec *Spec) []string {
	user := UserName
	if spec.Root {
		user = "root"
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + WorkspaceDir,
		"USER=" + user,
		"LOGNAME=" + user,
		"LANG=C.UTF-8",
	}
	if spec.Term != "" {
		env = append(env, "TERM="+spec.Term)
	}
	if spec.HTTPProxy != "" {
		for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
			env = append(env, k+"="+spec.HTTPProxy)
		}
	}
	if spec.NoProxy != "" {
		env = append(env, "NO_PROXY="+spec.NoProxy, "no_proxy="+spec.NoProxy)
	}
	return mergeEnv(env, spec.Env)
}

// mergeEnv appends extra to base, an entry of extra replacing a base entry
// with the same name.
func mergeEnv(base, extra []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if ok, _, _ := strings.Cut(old, "="); ok == k {
				out[i] = kv
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}
