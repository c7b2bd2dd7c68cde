package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Some attacks run in a child process (a memory hog the kernel kills, a
// fork bomb that may starve the Go runtime of threads). The child is this
// same executable, re-run with HelperEnv=1 and the arguments
// `audit-probe _helper NAME ARGS...`; the program's entry point hands such a
// process to RunHelperIfRequested before doing anything else.

// HelperEnv is the environment variable that marks a probe helper process.
const HelperEnv = "CLAWCAGE_AUDIT_HELPER"

// HelperArg is the argument that precedes a helper's name.
const HelperArg = "_helper"

// RunHelperIfRequested runs the helper this process was started as, if it
// was started as one, and exits with the helper's status. Otherwise it
// returns without doing anything. Call it first thing in main or TestMain.
func RunHelperIfRequested() {
	if os.Getenv(HelperEnv) != "1" {
		return
	}
	i := slices.Index(os.Args, HelperArg)
	if i < 0 || i+1 >= len(os.Args) {
		fmt.Fprintln(os.Stderr, "audit helper: missing helper name after", HelperArg)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	code := runHelper(ctx, os.Args[i+1], os.Args[i+2:], os.Stdout)
	stop()
	os.Exit(code)
}

// helperCommand returns a command that re-runs exe (default: this
// executable) as the helper name.
func helperCommand(ctx context.Context, exe, name string, args ...string) (*exec.Cmd, error) {
	if exe == "" {
		// Not the path: root inside a sandbox may not be allowed to walk
		// the directory the binary is in (the default user's workspace).
		exe = "/proc/self/exe"
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"audit-probe", HelperArg, name}, args...)...)
	cmd.Env = append(os.Environ(), HelperEnv+"=1")
	cmd.Stderr = os.Stderr
	return cmd, nil
}

func runHelper(ctx context.Context, name string, args []string, out io.Writer) int {
	switch name {
	case "exit0":
		return 0
	case "ids":
		id, err := currentIdentity()
		if err != nil {
			fmt.Fprintln(os.Stderr, "audit helper ids:", err)
			return 1
		}
		if err := json.NewEncoder(out).Encode(id); err != nil {
			return 1
		}
		return 0
	case "sleep":
		d, err := time.ParseDuration(argOr(args, 0, "30s"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "audit helper sleep:", err)
			return 2
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		return 0
	case "traceme":
		return tracemeHelper(out)
	case "hog":
		return hogHelper(args)
	case "fork-bomb":
		return forkBombHelper(ctx, args, out)
	default:
		fmt.Fprintf(os.Stderr, "audit helper: unknown helper %q\n", name)
		return 2
	}
}

// Identity is a process's credentials as the "ids" helper reports them.
type Identity struct {
	UID    int    `json:"uid"`
	EUID   int    `json:"euid"`
	GID    int    `json:"gid"`
	EGID   int    `json:"egid"`
	CapEff string `json:"cap_eff"`
	CapPrm string `json:"cap_prm"`
}

func currentIdentity() (Identity, error) {
	st, err := procStatus("self")
	if err != nil {
		return Identity{}, err
	}
	return Identity{
		UID: unix.Getuid(), EUID: unix.Geteuid(), GID: unix.Getgid(), EGID: unix.Getegid(),
		CapEff: st["CapEff"], CapPrm: st["CapPrm"],
	}, nil
}

// parseSize parses a byte count with an optional K/M/G suffix (powers of 2).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:n-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:n-1]
		case 'g', 'G':
			mult, s = 1<<30, s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	return v * mult, nil
}
