// Package seccomp holds the sandbox's seccomp deny list and installs it.
//
// The filter is a deny list: every system call is allowed except the ones
// [Rules] names, which fail with a specific errno (EPERM unless a rule says
// otherwise). It is the last kernel mechanism applied before the agent is
// executed, after no_new_privs and Landlock (DESIGN §3), and it removes the
// kernel interfaces that neither namespaces nor Landlock cover: ptrace and
// process_vm_*, the mount API, new namespaces, bpf, perf, keyrings,
// io_uring, module and kexec loading, raw, packet and non-route netlink
// sockets, and MPTCP (which Landlock's TCP rules do not see). See
// docs/seccomp.md for the list and why each entry is there.
//
// Every program starts with an architecture check: a system call made
// through another ABI (the i386 int 0x80 entry, or x32 numbers with bit 30
// set) kills the process, since a deny list written in x86-64 numbers means
// nothing for those numbers.
//
// # Why golang.org/x/net/bpf and not go-seccomp-bpf's Policy
//
// github.com/elastic/go-seccomp-bpf assembles allow/deny policies with
// argument conditions, but three of its properties would open holes in a
// deny list, so this package compiles its own classic BPF with
// golang.org/x/net/bpf (the instruction set go-seccomp-bpf itself uses):
//
//   - A foreign-architecture system call jumps to the policy's default
//     action, which for a deny list is "allow": i386 system calls through
//     int 0x80 would bypass every rule. Here they kill the process.
//   - Its argument comparisons look at all 64 bits. For int arguments
//     (socket's domain, type and protocol; ioctl's request; personality)
//     the kernel ignores the upper half, so socket(AF_PACKET|1<<32, ...)
//     would pass a 64-bit "domain == AF_PACKET" check yet create a packet
//     socket. Every condition here compares only the low 32 bits, which is
//     what the kernel reads for every argument this filter inspects.
//   - It cannot compare under a mask ("type & 0xf == SOCK_RAW"), which the
//     socket type check needs because SOCK_CLOEXEC and SOCK_NONBLOCK share
//     the word.
//
// System call numbers come from golang.org/x/sys/unix for the build's
// architecture; only linux/amd64 is supported, and [Install] refuses to run
// anywhere else rather than install a filter it cannot check.
package seccomp
