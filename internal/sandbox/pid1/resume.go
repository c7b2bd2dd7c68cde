package pid1

import (
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// resume continues in Go after the C start-up (cinit.c) set up the
// sandbox, started the command (pid) and supervised it until the first
// `sandbox exec` request arrived on the exec channel. The whole process is
// confined already (capabilities, securebits, cgroup namespace,
// no_new_privs, Landlock, seccomp: the C code applied them while it was
// the only thread, so every thread of the runtime has them), so commands
// are forked from any thread, with the same confinement as the sandbox's
// command. It never returns.
func resume(pid int, config []byte) {
	// The runtime enables each signal with a round trip to its signal
	// thread (≈ 0.5 ms quiet for the ten, tens of ms under load), so this
	// runs while the configuration is decoded and the first request read.
	// Commands are forked only once it is done: until then HUP and INT are
	// still ignored (cinit.c), and a child would inherit that.
	sigs := make(chan os.Signal, 16)
	notified := make(chan struct{})
	go func() {
		signal.Notify(sigs, forwardedSignals...)
		// PID 1 is in the command's Landlock domain and uid 0, so a --root
		// command may signal it: the signals the runtime would crash or
		// die on are taken (a kill-sent SIGSEGV, SIGABRT...) and dropped.
		signal.Notify(make(chan os.Signal, 1), droppedSignals...)
		close(notified)
	}()
	c, err := DecodeConfig(config)
	if err != nil {
		// Cannot happen: C decoded the same bytes. The report pipe is
		// closed (the command runs), so stderr is all there is.
		fmt.Fprintf(os.Stderr, "clawcage sandbox-init: %v\n", err)
		unix.Kill(pid, unix.SIGKILL)
		os.Exit(ExitSetupFailed)
	}
	if c.FileSizeLimit > 0 {
		// The runtime installed its handler over C's SIG_IGN; commands
		// forked from Go must start with SIGXFSZ ignored again.
		signal.Ignore(unix.SIGXFSZ)
	}
	ex := newExecServer(c)
	if ex != nil {
		go func() {
			<-notified
			ex.serveForks()
		}()
		go ex.serve()
	}
	os.Exit(superviseChild(pid, sigs, ex))
}

// droppedSignals are the signals, other than the forwarded ones, whose
// default in the Go runtime ends the process.
var droppedSignals = []os.Signal{
	unix.SIGILL, unix.SIGTRAP, unix.SIGABRT, unix.SIGBUS, unix.SIGFPE, unix.SIGSEGV,
	unix.SIGPIPE, unix.SIGSTKFLT, unix.SIGSYS,
}
