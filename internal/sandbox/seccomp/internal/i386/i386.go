//go:build amd64

// Package i386 makes a system call through the i386 compatibility entry
// (int 0x80) so tests can check that the seccomp filter kills foreign-ABI
// calls. Test support only.
package i386

// Syscall3 issues system call nr of the i386 ABI with three arguments and
// returns the raw result (negative errno on failure).
func Syscall3(nr, a1, a2, a3 uint32) int32
