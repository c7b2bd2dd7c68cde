package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Program returns the filter Install loads, compiled for the running
// architecture, for display (clawcage audit) and tests.
func Program() ([]bpf.Instruction, error) {
	arch, ok := nativeArch()
	if !ok {
		return nil, fmt.Errorf("seccomp: no system call table for %s/%s; only linux/amd64 is supported", runtime.GOOS, runtime.GOARCH)
	}
	return compile(Rules(), arch)
}

// ErrNoNewPrivs is returned by Install when the calling thread has not set
// no_new_privs. Without it an unprivileged process may not install a
// filter, and a privileged one would keep the ability to gain privileges
// through setuid binaries the filter cannot see.
var ErrNoNewPrivs = errors.New("seccomp: no_new_privs is not set on the calling thread (prctl(PR_SET_NO_NEW_PRIVS, 1) first)")

// Install loads the deny list for every thread of the calling process
// (SECCOMP_FILTER_FLAG_TSYNC) and verifies the thread is in filter mode
// afterwards. The calling thread must have no_new_privs set; Install does not
// set it. The filter is inherited across fork and execve and cannot be
// removed. It needs no capability.
func Install() error {
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("seccomp: read no_new_privs: %w", err)
	}
	if nnp != 1 {
		return ErrNoNewPrivs
	}
	insts, err := Program()
	if err != nil {
		return err
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return fmt.Errorf("seccomp: assemble filter: %w", err)
	}
	if len(raw) > unix.BPF_MAXINSNS {
		return fmt.Errorf("seccomp: filter has %d instructions, the kernel takes at most %d", len(raw), unix.BPF_MAXINSNS)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(filter)
	switch {
	case errno == unix.ENOSYS:
		return fmt.Errorf("seccomp: kernel does not support seccomp filters (CONFIG_SECCOMP_FILTER=y needed): %w", errno)
	case errno == unix.EINVAL:
		return fmt.Errorf("seccomp: kernel refused the filter or SECCOMP_FILTER_FLAG_TSYNC (needs Linux 3.17+ with CONFIG_SECCOMP_FILTER=y): %w", errno)
	case errno != 0:
		return fmt.Errorf("seccomp: load filter: %w", errno)
	case r != 0:
		return fmt.Errorf("seccomp: load filter: thread %d of this process could not be synchronized (it has a different filter)", r)
	}
	mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("seccomp: verify filter mode: %w", err)
	}
	if mode != 2 {
		return fmt.Errorf("seccomp: verify filter mode: PR_GET_SECCOMP is %d after loading, want 2 (filter)", mode)
	}
	return nil
}
