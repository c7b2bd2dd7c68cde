package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/stack"
)

type sandboxExecOptions struct {
	root    bool
	env     []string
	workdir string
	tty     bool
}

func newSandboxExecCmd(g *globalOptions) *cobra.Command {
	o := &sandboxExecOptions{}
	cmd := &cobra.Command{
		Use:   "exec NAME [--root] [--env K=V]... [--workdir DIR] [-t] -- CMD [ARG...]",
		Short: "Run a command in a running sandbox, confined exactly like its agent",
		Long: `Run a command inside a running sandbox of the stack (clawcage up). The
sandbox's PID 1 starts it with exactly the confinement of the sandbox's agent:
same namespaces, cgroup, Landlock domain and seccomp filter, no capabilities,
as uid 1000 (uid 0 inside with --root), with the sandbox's environment plus
--env, in /sandbox (or --workdir).

The command never gets this terminal: its stdin, stdout and stderr are pipes
relayed by clawcage, or with -t a new pty of its own, in a session of its own
(so TIOCSTI cannot reach this terminal). SIGINT, SIGTERM, SIGHUP and SIGQUIT
are forwarded; if clawcage dies, the command is killed. The exit status is the
command's (128+N if signal N killed it).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n != 1 && n != -1 {
				return errors.New("usage: clawcage sandbox exec NAME [flags] -- CMD [ARG...]")
			}
			for _, kv := range o.env {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
			}
			if o.workdir != "" && !strings.HasPrefix(o.workdir, "/") {
				return fmt.Errorf("--workdir %q: must be an absolute path inside the sandbox", o.workdir)
			}
			if o.tty && !isTerminal(os.Stdin) {
				return errors.New("-t: stdin is not a terminal")
			}
			req := stack.ExecRequest{Argv: args[1:], Env: o.env, Root: o.root, Dir: o.workdir, TTY: o.tty}
			return execExit(execSession(cmd.Context(), g.stateDir, args[0], req, os.Stdin, os.Stdout, os.Stderr))
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.root, "root", false, "run as uid 0 inside the sandbox (still no capabilities)")
	f.StringArrayVar(&o.env, "env", nil, "environment variable K=V added to the sandbox's (repeatable)")
	f.StringVar(&o.workdir, "workdir", "", "working directory inside the sandbox (default /sandbox)")
	f.BoolVarP(&o.tty, "tty", "t", false, "give the command a new pseudo-terminal of its own, relayed to this one")
	return cmd
}

func newSandboxShellCmd(g *globalOptions) *cobra.Command {
	var root bool
	cmd := &cobra.Command{
		Use:   "shell NAME [--root]",
		Short: "Open a login shell in a running sandbox (on a pty of its own)",
		Long: `Open a login shell (bash if the sandbox has it, else sh) inside a running
sandbox, confined exactly like its agent; see clawcage sandbox exec. On a
terminal the shell gets a new pty of its own (never this terminal); otherwise
it reads commands from stdin.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tty := isTerminal(os.Stdin) && isTerminal(os.Stdout)
			// The sandbox's root is the host's /usr and /bin, read-only: the
			// shell is bash if the host has it.
			script := `if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l`
			req := stack.ExecRequest{Argv: []string{"/bin/sh", "-c", script}, Root: root, TTY: tty}
			return execExit(execSession(cmd.Context(), g.stateDir, args[0], req, os.Stdin, os.Stdout, os.Stderr))
		},
	}
	cmd.Flags().BoolVar(&root, "root", false, "run as uid 0 inside the sandbox (still no capabilities)")
	return cmd
}

// execExit turns execSession's result into the process's exit.
func execExit(code int, err error) error {
	if err != nil {
		fmt.Fprintln(os.Stderr, "clawcage:", journal.Escape(err.Error()))
		if code <= 0 {
			code = 1
		}
		return exitError{code: code}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// execSession runs req in sandbox name, relaying the operator's in, out
// and errOut. The command never receives a descriptor of these: without
// TTY it gets pipes; with TTY a new pty whose master is relayed to the
// operator's terminal (put in raw mode, window size followed). Termination
// signals are forwarded; ctx is only the session's lifetime.
func execSession(ctx context.Context, stateDir, name string, req stack.ExecRequest, in, out, errOut *os.File) (int, error) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	req.Signals = sigs
	// The root command cancels its context on SIGINT/SIGTERM; here they are
	// forwarded instead, and the command's status is ours.
	ctx = context.WithoutCancel(ctx)

	if req.TTY {
		return execTTY(ctx, stateDir, name, req, in, out)
	}
	var (
		child  [3]*os.File // the command's ends
		relays sync.WaitGroup
	)
	inR, inW, err := os.Pipe()
	if err != nil {
		return 1, fmt.Errorf("exec: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return 1, fmt.Errorf("exec: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return 1, fmt.Errorf("exec: %w", err)
	}
	child = [3]*os.File{inR, outW, errW}
	go func() {
		io.Copy(inW, in) // ends at the operator's EOF, or with the process
		inW.Close()
	}()
	relays.Add(2)
	go func() { defer relays.Done(); io.Copy(out, outR) }()
	go func() { defer relays.Done(); io.Copy(errOut, errR) }()

	code, err := stack.Exec(ctx, stateDir, name, req, child[0], child[1], child[2])
	for _, f := range child {
		f.Close()
	}
	// Output written before the exit is drained; a process the command
	// left behind holding the pipes does not keep us waiting long.
	waitTimeout(&relays, 2*time.Second)
	outR.Close()
	errR.Close()
	return code, err
}

// execTTY runs req on a new pty of its own, relayed to the operator's
// terminal in (raw mode) and out.
func execTTY(ctx context.Context, stateDir, name string, req stack.ExecRequest, in, out *os.File) (int, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return 1, fmt.Errorf("allocate a pty for the command: %w", err)
	}
	defer master.Close()
	if err := pty.InheritSize(in, master); err != nil {
		slave.Close()
		return 1, fmt.Errorf("copy the window size: %w", err)
	}
	restore, err := makeRaw(in)
	if err != nil {
		slave.Close()
		return 1, err
	}
	defer restore()
	if term := os.Getenv("TERM"); term != "" && !hasEnv(req.Env, "TERM") {
		req.Env = append([]string{"TERM=" + term}, req.Env...)
	}

	winch := make(chan os.Signal, 1)
	winchDone := make(chan struct{})
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		defer close(winchDone)
		for range winch {
			pty.InheritSize(in, master) // the kernel signals the pty's foreground group
		}
	}()
	defer func() { // before master is closed
		signal.Stop(winch)
		close(winch)
		<-winchDone
	}()
	go io.Copy(master, in) // ends with the process (a blocked terminal read)
	copied := make(chan struct{})
	go func() {
		io.Copy(out, master) // EIO once the last holder of the slave is gone
		close(copied)
	}()

	code, err := stack.Exec(ctx, stateDir, name, req, slave, slave, slave)
	slave.Close()
	select {
	case <-copied:
	case <-time.After(2 * time.Second): // a leftover process holds the slave
	}
	return code, err
}

// makeRaw puts the terminal in raw mode and returns how to restore it.
func makeRaw(f *os.File) (func(), error) {
	fd := int(f.Fd())
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read terminal settings: %w", err)
	}
	raw := *saved
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("set terminal to raw mode: %w", err)
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, saved) }, nil
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// waitTimeout waits for wg, at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
