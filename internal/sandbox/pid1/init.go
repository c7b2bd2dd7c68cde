package pid1

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// Main is the sandbox's PID 1 ("clawcage sandbox-init"). It runs in the
// new namespaces as uid 0 of the sandbox's user namespace, already in the
// sandbox's cgroup. It reads its config, builds the root file system, starts
// the fully confined command as its user, then forwards signals, reaps
// orphans and exits with the command's status. It never returns.
func Main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "clawcage sandbox-init: internal command, started by `clawcage sandbox run`")
		os.Exit(ExitSetupFailed)
	}
	// A defined umask for the generated root and the command, whatever
	// the operator's is.
	unix.Umask(0o022)
	// Nothing but stdin, stdout and stderr may reach the command: the
	// report pipe (fd 4) and anything else inherited are close-on-exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fail("mark descriptors close-on-exec", err, ExitSetupFailed)
	}
	// Forwarded signals are caught before the command exists so none is
	// lost; SIGCHLD is not among them (reaping is a blocking wait4 loop).
	// The runtime enables each signal with a round trip to its signal
	// thread, so this runs while the root file system is built (the host
	// gives PID 1 two Ps). A signal arriving meanwhile is queued and
	// forwarded to the command once it runs.
	sigs := make(chan os.Signal, 16)
	notified := make(chan struct{})
	go func() {
		signal.Notify(sigs, forwardedSignals...)
		close(notified)
	}()
	c, err := readConfig()
	if err != nil {
		fail("read config", err, ExitSetupFailed)
	}
	steps := []struct {
		name string
		fn   func(*Config) error
	}{
		{"set hostname", func(*Config) error { return unix.Sethostname([]byte(Hostname)) }},
		{"build root file system", buildRoot},
		{"disable core dumps", disableDumps},
		{"limit file size", limitFileSize},
	}
	for _, s := range steps {
		if err := s.fn(c); err != nil {
			fail(s.name, err, ExitSetupFailed)
		}
	}

	<-notified

	ex := newExecServer(c)
	pid, err := startCommand(c, ex)
	if err != nil {
		fail("start command", err, ExitSetupFailed)
	}
	unix.Close(reportFD)
	if ex != nil {
		go ex.serve()
	}

	os.Exit(superviseChild(pid, sigs, ex))
}

// forwardedSignals are passed from PID 1 to the command.
var forwardedSignals = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGUSR1,
	unix.SIGUSR2, unix.SIGWINCH, unix.SIGCONT, unix.SIGTSTP, unix.SIGALRM,
}

// disableDumps makes PID 1 non-dumpable (its /proc entries unreadable by
// the command, even as root inside) and turns core dumps off for it and
// everything it starts.
func disableDumps(*Config) error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("RLIMIT_CORE: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_DUMPABLE: %w", err)
	}
	return nil
}

// redisableDumps makes PID 1 non-dumpable again after a fork: Go's
// ForkExec (like cinit.c) clones with CLONE_VM, and the child's uid change
// set the shared mm's dumpable flag to fs.suid_dumpable.
func redisableDumps() {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		// Cannot fail for 0; if it ever does, PID 1 must not stay dumpable.
		fmt.Fprintf(os.Stderr, "clawcage sandbox-init: PR_SET_DUMPABLE: %v\n", err)
		os.Exit(ExitSetupFailed)
	}
}

// startCommand starts the command as its user in a new cgroup namespace
// and session. Everything that confines it is applied, in order, to one
// locked thread of PID 1 that then forks the command and is retired: a
// thread's capability bounding set, securebits, no_new_privs, Landlock
// domain and seccomp filter are per thread and inherited by the child, so
// the command is confined from its first instruction, and PID 1's other
// threads (which only wait and forward signals) are not. The command's uid
// change (to 1000) clears its capabilities; as uid 0 (--root) the empty
// bounding set and SECBIT_NOROOT leave it none after execve either.
//
// With an exec server the thread is not retired: it stays locked, confined,
// and starts the commands of `sandbox exec` (ex.serveForks never returns).
func startCommand(c *Config, ex *execServer) (int, error) {
	type result struct {
		pid  int
		step string
		err  error
	}
	done := make(chan result, 1)
	// The thread is retired afterwards (reuse false). The command needs no
	// Pdeathsig: when PID 1 exits, the kernel kills everything in its PID
	// namespace.
	OnLockedThread(func() bool {
		steps := []struct {
			name string
			fn   func(*Config) error
		}{
			{"drop capabilities", func(*Config) error { return lockDownThread() }},
			{"unshare cgroup namespace", func(*Config) error { return unix.Unshare(unix.CLONE_NEWCGROUP) }},
			{"set no_new_privs", func(*Config) error { return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }},
			{"apply landlock", applyLandlock},
			{"install seccomp filter", func(*Config) error { return installSeccomp() }},
		}
		for _, s := range steps {
			if err := s.fn(c); err != nil {
				done <- result{step: s.name, err: err}
				return false
			}
		}
		path, err := lookPath(c.Command[0], envValue(c.Env, "PATH"))
		if err != nil {
			done <- result{step: "exec", err: err}
			return false
		}
		pid, err := syscall.ForkExec(path, c.Command, &syscall.ProcAttr{
			Dir:   WorkspaceDir,
			Env:   c.Env,
			Files: []uintptr{0, 1, 2},
			Sys: &syscall.SysProcAttr{
				Credential: &syscall.Credential{Uid: uint32(c.UID), Gid: uint32(c.UID), Groups: []uint32{}},
				Setsid:     true,
				Setctty:    c.Ctty, // stdin (fd 0) is the sandbox's own pty
			},
		})
		if err != nil {
			err = fmt.Errorf("exec %s: %w", path, err)
		}
		redisableDumps()
		done <- result{pid: pid, step: "exec", err: err}
		if err == nil && ex != nil {
			ex.serveForks()
		}
		return false
	})
	res := <-done
	if res.err != nil {
		code := ExitSetupFailed
		if res.step == "exec" {
			code = ExitNotFound
			if errors.Is(res.err, unix.EACCES) || errors.Is(res.err, unix.ENOEXEC) || errors.Is(res.err, errNotExecutable) {
				code = ExitNotExecutable
			}
		}
		fail(res.step, res.err, code)
	}
	return res.pid, nil
}

// lockDownThread clears the calling thread's capability bounding set,
// inheritable and ambient sets and locks the securebits so that uid 0 gets
// no capabilities from execve. The thread keeps its effective capabilities
// (PID 1 needs CAP_SETUID/CAP_SETGID for the child and CAP_KILL to forward
// signals to it).
func lockDownThread() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	secbits := secbitNoRoot | secbitNoRootLocked | secbitKeepCapsLocked |
		secbitNoCapAmbientRaise | secbitNoCapAmbientRaiseLocked
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, uintptr(secbits), 0, 0, 0); err != nil {
		return fmt.Errorf("set securebits: %w", err)
	}
	// Every capability the kernel knows: it answers EINVAL past the last
	// one (/proc/sys/kernel/cap_last_cap), and numbers stay below 64.
	for cap := 0; cap < 64; cap++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(cap), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d from the bounding set: %w", cap, err)
		}
	}
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	return nil
}

// Securebits (linux/securebits.h).
const (
	secbitNoRoot                  = 1 << 0
	secbitNoRootLocked            = 1 << 1
	secbitKeepCapsLocked          = 1 << 5
	secbitNoCapAmbientRaise       = 1 << 6
	secbitNoCapAmbientRaiseLocked = 1 << 7
)

// superviseChild forwards signals to pid, reaps every child (orphans are
// re-parented to PID 1) and returns pid's exit status once it is gone:
// its exit code, or 128+n if signal n killed it.
func superviseChild(pid int, sigs <-chan os.Signal, ex *execServer) int {
	exited := make(chan int, 1)
	go func() {
		for {
			var ws unix.WaitStatus
			wpid, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				exited <- ExitSetupFailed // ECHILD: nothing left to wait for
				return
			}
			if wpid != pid {
				ex.reaped(wpid, ws) // a `sandbox exec` command, or an orphan
				continue
			}
			switch {
			case ws.Exited():
				exited <- ws.ExitStatus()
				return
			case ws.Signaled():
				exited <- 128 + int(ws.Signal())
				return
			}
		}
	}()
	for {
		select {
		case code := <-exited:
			return code
		case s := <-sigs:
			unix.Kill(pid, s.(syscall.Signal))
		}
	}
}
