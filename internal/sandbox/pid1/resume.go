package pid1

import (
	"errors"
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// resume is the exec server of a sandbox whose PID 1 is the C start-up
// (cinit.c): on the first `sandbox exec` request PID 1 forked this process,
// which carries the very confinement PID 1 applied to itself before it
// started the command (capabilities, securebits, cgroup namespace,
// no_new_privs, Landlock, seccomp), and returned into the Go runtime. PID 1
// itself stays in C, forwarding signals and reaping, so no signal is lost
// to a hand-over. This process serves the exec channel: it forks the
// commands (from any thread: the whole process is confined), reaps them,
// and exits when the host closes the channel. It never returns.
func resume(_ int, config []byte) {
	// A --root command (uid 0, the same Landlock domain) may signal this
	// process; what the runtime would die or crash on is taken and dropped
	// (SIGKILL still ends it, and with it only the running exec sessions).
	signal.Notify(make(chan os.Signal, 1), append(append([]os.Signal(nil), forwardedSignals...), droppedSignals...)...)
	c, err := DecodeConfig(config)
	if err != nil {
		// Cannot happen: C decoded the same bytes.
		fmt.Fprintf(os.Stderr, "clawcage sandbox exec server: %v\n", err)
		os.Exit(ExitSetupFailed)
	}
	if c.FileSizeLimit > 0 {
		// The runtime installed its handler over C's SIG_IGN; commands
		// forked from Go must start with SIGXFSZ ignored again.
		signal.Ignore(unix.SIGXFSZ)
	}
	ex := newExecServer(c)
	if ex == nil {
		os.Exit(0)
	}
	go ex.serveForks()
	go ex.reapForks()
	ex.serve()
	os.Exit(0)
}

// reapForks reaps the exec server's own children (the commands it
// started) and reports them; their orphans go to PID 1.
func (s *execServer) reapForks() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ECHILD):
			<-s.forked // nothing to wait for until the next fork
		case err == nil:
			s.reaped(pid, ws)
		}
	}
}

// droppedSignals are the signals, other than the forwarded ones, whose
// default in the Go runtime ends the process.
var droppedSignals = []os.Signal{
	unix.SIGILL, unix.SIGTRAP, unix.SIGABRT, unix.SIGBUS, unix.SIGFPE, unix.SIGSEGV,
	unix.SIGPIPE, unix.SIGSTKFLT, unix.SIGSYS,
}
