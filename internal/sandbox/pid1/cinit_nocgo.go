//go:build !cgo

package pid1

import "errors"

// Without cgo PID 1 is the Go implementation (Main) from its first step.
func cinitResumed() (pid int, config []byte, ok bool) { return 0, nil, false }

func cDecode([]byte) error { return errors.New("built without cgo") }

// haveCInit says PID 1 starts in C in this build.
const haveCInit = false

// HaveCInit says whether this build starts PID 1 in C (cinit.c).
const HaveCInit = haveCInit
