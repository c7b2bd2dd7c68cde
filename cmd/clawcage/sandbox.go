package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/sandbox"
	"github.com/clawcage/clawcage/internal/sandbox/policyspec"
	"github.com/clawcage/clawcage/internal/sandbox/runcmd"
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

// newSandboxRunCmd is `clawcage sandbox run`. Package runcmd does the work;
// its init function usually runs the command before main (see its package
// comment), parsing these same flags, which runcmd.Flags lists. A --policy
// file is always loaded here.
func newSandboxRunCmd(*globalOptions) *cobra.Command {
	o := &runcmd.Options{}
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
			var pol *sandbox.Policy
			if o.Policy != "" {
				p, err := policy.Load(o.Policy)
				if err != nil {
					return fmt.Errorf("--policy: %w", err)
				}
				pol = policyspec.From(p)
			}
			// Not cancelled by the root's SIGINT/SIGTERM context: runcmd
			// forwards those signals to the command, whose exit status is
			// ours.
			return runcmd.Run(context.WithoutCancel(cmd.Context()), *o, args, pol)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.StringVar(&o.Workspace, "workspace", "", "host directory mounted read-write at /sandbox (default: a temporary one)")
	f.StringVar(&o.Policy, "policy", "", "policy file (its filesystem and resources sections apply)")
	f.StringArrayVar(&o.Env, "env", nil, "set KEY=VALUE in the sandbox (repeatable)")
	f.StringVar(&o.Memory, "memory", "", "memory limit, e.g. 512MiB, 1GiB (default 512MiB)")
	f.Int64Var(&o.Pids, "pids", 0, "maximum number of tasks (default 256)")
	f.Float64Var(&o.CPU, "cpu", 0, "CPU limit in cores, e.g. 1.5 (default: none)")
	f.StringVar(&o.Tmp, "tmp", "", "size of /tmp, e.g. 64MiB (default 64MiB)")
	f.StringVar(&o.Disk, "disk", "", "workspace disk limit while it runs (default: the policy's resources.disk, else what the workspace holds + min(8 GiB, half the free space))")
	f.BoolVar(&o.Root, "root", false, "run as uid 0 inside the sandbox (still unprivileged on the host)")
	return cmd
}
