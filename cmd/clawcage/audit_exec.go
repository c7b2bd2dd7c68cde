package main

import (
	"context"
	"os"

	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/clawcage/clawcage/internal/stack"
)

// stackExec enters the live sandbox name of the stack in state, as
// `clawcage sandbox exec` does: the command runs with the sandbox's exact
// confinement, started by its PID 1.
func stackExec(state, name string) battery.Exec {
	return func(ctx context.Context, argv []string, root bool, stdin, stdout, stderr *os.File) (int, error) {
		req := stack.ExecRequest{Argv: argv, Root: root}
		if root {
			// Root inside the sandbox has no capabilities and the workspace
			// is the default user's (0700): work where root may write.
			req.Dir = "/tmp"
		}
		return stack.Exec(ctx, state, name, req, stdin, stdout, stderr)
	}
}
