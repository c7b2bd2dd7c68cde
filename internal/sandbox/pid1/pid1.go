// Package pid1 is the sandbox's PID 1 ("clawcage sandbox-init"): it builds
// the sandbox's root file system inside the namespaces internal/sandbox
// created, confines one thread with every restriction (no capabilities,
// no_new_privs, Landlock, seccomp), starts the command from it, then
// forwards signals, reaps orphans and exits with the command's status. It
// also holds what both sides must agree on: the configuration, the failure
// report, the file descriptors and exit codes, and the kernel feature
// checks.
//
// It is a package of its own, with few dependencies, so that its init
// function runs before most of the binary's packages are initialized: every
// sandbox starts a fresh copy of the binary, and whatever runs before PID 1
// takes over is sandbox start-up time. Go initializes, at each step, the
// first package in import-path order whose imports are all initialized, so
// a dependency that sorts late (path/filepath, for instance) lets every
// ready package that sorts before it go first (protobuf, SQLite, ...): keep
// the imports few and early (check with GODEBUG=inittrace=1 clawcage
// sandbox-init).
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
