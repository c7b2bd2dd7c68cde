// Package pid1 is the sandbox's PID 1 ("clawcage sandbox-init"): it builds
// the sandbox's root file system inside the namespaces internal/sandbox
// created, confines itself with every restriction (no capabilities,
// no_new_privs, Landlock, seccomp), starts the command, then forwards
// signals, reaps orphans and exits with the command's status. It also holds
// what both sides must agree on: the configuration and its binary encoding
// (codec.go), the Landlock plan, the failure report, the file descriptors
// and exit codes, and the kernel feature checks.
//
// # Two implementations
//
// With cgo (every release build: go-landlock's psx links it anyway), PID 1
// is C: cinit.c's constructor runs
// before the Go runtime when the process is "<binary> sandbox-init" with pid
// 1. Single-threaded, it reads the configuration (the binary encoding,
// every length checked), builds the root exactly as rootfs.go does, limits
// core dumps and file size, then confines the whole process: ambient and
// inheritable capabilities cleared, securebits locked, bounding set
// emptied, a new cgroup namespace, no_new_privs, the Landlock ruleset the
// host planned (PlanLandlock: go-landlock's preset for the kernel's ABI and
// the rules of landlock.go, one access mask per path and port) and the
// seccomp filter the host compiled (seccomp.Filter). It keeps its
// effective capabilities in the user namespace (to set the command's
// credentials and signal it). It starts the command (vfork-style clone;
// setsid, TIOCSCTTY, setgroups/setgid/setuid, chdir /sandbox, execve, with
// lookPath's rules and exit codes), closes the report pipe and supervises
// from a signalfd: forwarded signals go to the command, every child is
// reaped, PID 1 exits with the command's status. PID 1 never starts the Go
// runtime: on the first `sandbox exec` request (the exec channel,
// Config.ExecFD, readable) it forks the exec server, which returns from the
// constructor; the runtime starts in it, this package's init finds the C
// state (cinitResumed) and resume serves the channel, while PID 1 goes on
// supervising in C (so no signal is lost in a hand-over). Only the first
// `sandbox exec` pays the Go start-up.
//
// PID 1 is confined as a whole, not one thread of it: when the confinement
// is applied the process has a single thread, so everything that runs in
// the sandbox afterwards — the command, the exec server and its Go
// runtime's threads, the commands of `sandbox exec` — inherits it, and no unconfined code runs in
// the sandbox once it is set up.
//
// Without cgo (CGO_ENABLED=0), Main is PID 1 from its first step: it
// confines one locked thread and starts every command from it (init.go).
// Both pass internal/sandbox's tests.
//
// This package is also kept small in imports, so that its init function
// runs before most of the binary's packages are initialized (that matters
// for the Go implementation, and for the first exec of the C one): Go
// initializes, at each step, the first package in import-path order whose
// imports are all initialized, so a dependency that sorts late
// (path/filepath, for instance) lets every ready package that sorts before
// it go first (protobuf, SQLite, ...): keep the imports few and early
// (check with GODEBUG=inittrace=1 clawcage sandbox-init).
package pid1

import (
	"fmt"
	"os"
)

// Command is the hidden argument that makes a binary linking this package
// the sandbox's PID 1: "<binary> sandbox-init".
const Command = "sandbox-init"

// The identities inside every sandbox.
const (
	// UserUID is the uid (and gid) the command runs as by default.
	UserUID = 1000
	// UserName is the name of UserUID inside the sandbox.
	UserName = "sandbox"
	// Hostname is the UTS host name inside the sandbox.
	Hostname = "sandbox"
	// WorkspaceDir is where the workspace is mounted inside the sandbox.
	WorkspaceDir = "/sandbox"
)

// init turns the process into the sandbox's PID 1 when it was started as
// such, before the packages that sort after this one are initialized.
func init() {
	if len(os.Args) == 2 && os.Args[1] == Command {
		if pid, config, ok := cinitResumed(); ok {
			resume(pid, config)
		}
		Main()
	}
}

// UnavailableError reports a kernel security feature the sandbox needs but
// cannot use. The sandbox refuses to start rather than enforce less.
type UnavailableError struct {
	// Feature is "landlock", "seccomp", "user namespaces", ...
	Feature string
	// Reason says what was found.
	Reason string
	// Fix says how to get the feature.
	Fix string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%s unavailable: %s; the sandbox refuses to run without it (fix: %s)", e.Feature, e.Reason, e.Fix)
}
