package router

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Hardening reports what HardenProcess did.
type Hardening struct {
	// MemoryLocked is true when all of the process's memory is locked
	// (mlockall). When false, only the vault's key pages are locked.
	MemoryLocked bool
	// MemoryLockNote says why memory was not locked.
	MemoryLockNote string
}

// mlockAllMinimum is the RLIMIT_MEMLOCK below which mlockall(MCL_FUTURE) is
// not attempted: with a small limit every later heap growth of the Go
// runtime would fail and crash the router.
const mlockAllMinimum = 4 << 30

// HardenProcess makes the router process non-dumpable (no core dumps, no
// ptrace or /proc/PID/mem by the same uid), sets RLIMIT_CORE to 0, and
// locks all memory when RLIMIT_MEMLOCK allows it. Failing to make the
// process non-dumpable or to disable core dumps is an error: the router
// must not run with keys that could end up in a core file.
func HardenProcess() (Hardening, error) {
	var h Hardening
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return h, fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return h, fmt.Errorf("setrlimit(RLIMIT_CORE, 0): %w", err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		h.MemoryLockNote = fmt.Sprintf("getrlimit(RLIMIT_MEMLOCK): %v", err)
		return h, nil
	}
	if rl.Cur != unix.RLIM_INFINITY && rl.Cur < mlockAllMinimum {
		h.MemoryLockNote = fmt.Sprintf("RLIMIT_MEMLOCK is %d bytes: locking only key memory (raise it, e.g. LimitMEMLOCK=infinity, to lock everything)", rl.Cur)
		return h, nil
	}
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		h.MemoryLockNote = fmt.Sprintf("mlockall: %v: locking only key memory", err)
		return h, nil
	}
	h.MemoryLocked = true
	return h, nil
}
