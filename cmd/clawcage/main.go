// Command clawcage runs an AI agent in a kernel sandbox whose provider keys
// and network rules live in processes the agent cannot reach.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// defaultStateDir is where every component keeps its state unless --state says otherwise.
const defaultStateDir = "/var/lib/clawcage"

// globalOptions are the flags every command shares.
type globalOptions struct {
	stateDir string
}

func newRootCmd() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "clawcage",
		Short: "Run an AI agent 24/7 without handing it your API keys or the open internet",
		Long: `clawcage runs an AI agent inside a kernel sandbox (namespaces, Landlock,
seccomp, cgroups). Provider keys live only in the privacy router and egress
is decided by the policy engine: processes the agent cannot reach.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.stateDir, "state", defaultStateDir, "state directory of the stack")
	root.AddCommand(
		newDoctorCmd(g),
		newSandboxCmd(g),
		newKeysCmd(g), newUsageCmd(g),
		newPolicyCmd(g), newPolicyEngineCmd(g),
		newLogsCmd(g), newUpCmd(g), newStatusCmd(g), newDownCmd(g),
		newAuditProbeCmd(g), newAuditCmd(g),
		newRouterCmd(g), newDemoCmd(g),
	)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ec exitCoder
		if asExitCoder(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "clawcage:", err)
		os.Exit(1)
	}
}
