package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/sandbox"
)

func newSandboxCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run commands in kernel sandboxes",
	}
	cmd.AddCommand(newSandboxRunCmd(g))
	cmd.AddCommand(newSandboxLifecycleCmds(g)...)
	return cmd
}

// sandboxRunOptions are the flags of `clawcage sandbox run`.
type sandboxRunOptions struct {
	workspace string
	policy    string
	env       []string
	memory    string
	pids      int64
	cpu       float64
	tmp       string
	root      bool
}

func newSandboxRunCmd(*globalOptions) *cobra.Command {
	o := &sandboxRunOptions{}
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARG...]",
		Short: "Run one command in a new sandbox (no stack needed)",
		Long: `Run one command in a new sandbox: new user, PID, mount, IPC, UTS, cgroup and
network namespaces (the network holds only lo), a minimal read-only root, the
workspace read-write at /sandbox, cgroup limits, no capabilities, Landlock and
seccomp. The command runs as uid 1000 "sandbox" (--root: uid 0 inside, an
unprivileged uid on the host). Its exit status is clawcage's exit status
(128+N if it was killed by signal N). The sandbox refuses to start if the
kernel lacks Landlock or seccomp.

Defaults: --memory 512MiB, --pids 256, no CPU limit, /tmp 64MiB, a temporary
workspace removed afterwards.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSandbox(cmd, o, args)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.StringVar(&o.workspace, "workspace", "", "host directory mounted read-write at /sandbox (default: a temporary one)")
	f.StringVar(&o.policy, "policy", "", "policy file (its filesystem and resources sections apply)")
	f.StringArrayVar(&o.env, "env", nil, "set KEY=VALUE in the sandbox (repeatable)")
	f.StringVar(&o.memory, "memory", "", "memory limit, e.g. 512MiB, 1GiB (default 512MiB)")
	f.Int64Var(&o.pids, "pids", 0, "maximum number of tasks (default 256)")
	f.Float64Var(&o.cpu, "cpu", 0, "CPU limit in cores, e.g. 1.5 (default: none)")
	f.StringVar(&o.tmp, "tmp", "", "size of /tmp, e.g. 64MiB (default 64MiB)")
	f.BoolVar(&o.root, "root", false, "run as uid 0 inside the sandbox (still unprivileged on the host)")
	return cmd
}

func runSandbox(cmd *cobra.Command, o *sandboxRunOptions, args []string) error {
	spec := sandbox.Spec{
		Command:   args,
		Workspace: o.workspace,
		Env:       o.env,
		Root:      o.root,
		Term:      os.Getenv("TERM"),
	}
	var err error
	if spec.Limits.Memory, err = parseSize("--memory", o.memory); err != nil {
		return err
	}
	if spec.Limits.Tmp, err = parseSize("--tmp", o.tmp); err != nil {
		return err
	}
	if o.pids < 0 {
		return fmt.Errorf("--pids %d: must not be negative", o.pids)
	}
	spec.Limits.Pids = o.pids
	if o.cpu < 0 {
		return fmt.Errorf("--cpu %g: must not be negative", o.cpu)
	}
	spec.Limits.CPU = o.cpu
	if o.policy != "" {
		if spec.Policy, err = loadPolicyFile(o.policy); err != nil {
			return err
		}
	}

	// Forward the terminal signals to the sandbox instead of dying on them;
	// the root command's SIGINT/SIGTERM context is not used here, so that
	// ^C reaches the command and its exit status is ours.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	defer signal.Stop(sigs)

	stdio := sandbox.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Signals: sigs}
	var tty *sandboxTTY
	if isTerminalFile(os.Stdin) && isTerminalFile(os.Stdout) {
		// Interactive: the sandbox gets a pty of its own, never ours.
		if tty, err = openSandboxTTY(os.Stdin, os.Stdout); err != nil {
			return err
		}
		spec.TTY = true
		stdio.Stdin, stdio.Stdout, stdio.Stderr = tty.slave, tty.slave, tty.slave
	}
	code, err := sandbox.Run(context.WithoutCancel(cmd.Context()), spec, stdio)
	if tty != nil {
		tty.close(os.Stdin)
	}
	if err != nil {
		var ue *sandbox.UnavailableError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "clawcage: %s is unavailable: %s\n  the sandbox refuses to run without it\n  fix: %s\n", ue.Feature, ue.Reason, ue.Fix)
		} else {
			fmt.Fprintln(os.Stderr, "clawcage:", err)
		}
		return exitError{code: code}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}
