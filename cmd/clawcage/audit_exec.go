package main

import (
	"context"
	"errors"
	"os"

	"github.com/clawcage/clawcage/internal/audit/battery"
)

// stackExec enters the live sandbox name of the stack in state.
func stackExec(state, name string) battery.Exec {
	return func(ctx context.Context, argv []string, root bool, stdin, stdout, stderr *os.File) (int, error) {
		return 0, errors.New("this build cannot enter a live sandbox yet (stack.Exec is not there)")
	}
}
