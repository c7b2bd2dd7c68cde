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
	// First, so that the forwarded signals reach the command again.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
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
		go ex.serveForks()
		go ex.serve()
	}
	os.Exit(superviseChild(pid, sigs, ex))
}
