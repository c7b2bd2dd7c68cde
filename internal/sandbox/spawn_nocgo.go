//go:build !cgo

package sandbox

import (
	"errors"
	"os/exec"
)

// Without cgo PID 1 is started by exec.Cmd.Start (a full copy of the
// caller with CLONE_NEWUSER; see startInit).
const haveSpawn = false

func spawnable(*exec.Cmd) bool { return false }

func spawnInit(*exec.Cmd) (*initProcess, error) { return nil, errors.New("built without cgo") }
