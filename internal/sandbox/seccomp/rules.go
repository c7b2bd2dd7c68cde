package seccomp

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Op is how a [Cond] compares a system call argument's low 32 bits.
type Op int

// The comparisons a [Cond] can make.
const (
	// Equal matches when arg&Mask == Value.
	Equal Op = iota
	// NotEqual matches when arg&Mask != Value.
	NotEqual
	// AnyBits matches when arg&Value != 0.
	AnyBits
)

// Cond is one condition on a system call argument. Only the low 32 bits of
// the argument are compared: every argument this filter inspects is an int,
// an unsigned int, or flags whose upper half the kernel ignores or rejects.
type Cond struct {
	Arg       int    // argument index, 0..5
	ArgName   string // the argument's name in the man page, for humans
	Op        Op
	Mask      uint32 // for Equal and NotEqual; 0 means all 32 bits
	Value     uint32
	ValueName string // Value spelled as a constant, for humans
}

// String describes the condition, such as "type & 0xf == SOCK_RAW".
func (c Cond) String() string {
	lhs := c.ArgName
	if c.Mask != 0 && c.Mask != ^uint32(0) {
		lhs = fmt.Sprintf("%s & %#x", c.ArgName, c.Mask)
	}
	v := c.ValueName
	if v == "" {
		v = fmt.Sprintf("%#x", c.Value)
	}
	switch c.Op {
	case Equal:
		return lhs + " == " + v
	case NotEqual:
		return lhs + " != " + v
	case AnyBits:
		return c.ArgName + " & (" + v + ") != 0"
	}
	return fmt.Sprintf("%s ?%d %s", lhs, c.Op, v)
}

// match reports whether the condition holds for an argument's low 32 bits.
func (c Cond) match(arg uint32) bool {
	mask := c.Mask
	if mask == 0 {
		mask = ^uint32(0)
	}
	switch c.Op {
	case Equal:
		return arg&mask == c.Value
	case NotEqual:
		return arg&mask != c.Value
	case AnyBits:
		return arg&c.Value != 0
	}
	return false
}

// Rule denies one system call, always or when all of its conditions hold.
// Rules for the same system call are tried in order; the first whose
// conditions all hold decides. A call no rule matches is allowed.
type Rule struct {
	Syscall string     // the system call's name, as in the man pages
	When    []Cond     // all must hold; empty means always
	Errno   unix.Errno // the error the call fails with
	Reason  string     // why the sandbox denies it
}

// Condition describes when the rule applies, "always" when it has no conditions.
func (r Rule) Condition() string {
	if len(r.When) == 0 {
		return "always"
	}
	parts := make([]string, len(r.When))
	for i, c := range r.When {
		parts[i] = c.String()
	}
	return strings.Join(parts, " && ")
}

// nsFlags are the clone flags that create namespaces. CLONE_NEWTIME is left
// out because clone(2) reads that bit as part of the exit signal; it is in
// unshareNSFlags.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

const unshareNSFlags = nsFlags | unix.CLONE_NEWTIME

const nsFlagsName = "CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET"

// Rules returns the sandbox's deny list, in the order the filter checks it.
// The slice is new on every call; changing it changes nothing installed.
func Rules() []Rule {
	var rs []Rule
	deny := func(reason string, names ...string) {
		for _, n := range names {
			rs = append(rs, Rule{Syscall: n, Errno: unix.EPERM, Reason: reason})
		}
	}
	deny("inspects or changes another process's memory and registers (ptrace-equivalent)",
		"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd")
	deny("changes the mount tree; the sandbox's root is fixed before the agent starts",
		"mount", "umount2", "pivot_root")
	deny("new mount API: the same power as mount(2) through file descriptors",
		"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr")
	deny("enters another namespace", "setns")
	rs = append(rs,
		Rule{Syscall: "unshare", Errno: unix.EPERM,
			When:   []Cond{{Arg: 0, ArgName: "flags", Op: AnyBits, Value: unshareNSFlags, ValueName: nsFlagsName + "|CLONE_NEWTIME"}},
			Reason: "new namespaces (a user namespace above all) give back capabilities and kernel attack surface"},
		Rule{Syscall: "clone", Errno: unix.EPERM,
			When:   []Cond{{Arg: 0, ArgName: "flags", Op: AnyBits, Value: nsFlags, ValueName: nsFlagsName}},
			Reason: "new namespaces through clone; threads and fork (no namespace flags) stay allowed"},
		Rule{Syscall: "clone3", Errno: unix.ENOSYS,
			Reason: "its flags sit in memory a filter cannot read; ENOSYS makes libc fall back to clone, whose flags are checked"},
	)
	deny("loads eBPF programs and maps into the kernel", "bpf")
	deny("performance counters expose kernel addresses and side channels", "perf_event_open")
	deny("kernel keyrings are not namespaced and can hold other users' secrets", "keyctl", "add_key", "request_key")
	deny("stalls the kernel on page faults, a building block of kernel race exploits", "userfaultfd")
	deny("io_uring bypasses seccomp for the operations it runs and is a frequent kernel exploit target",
		"io_uring_setup", "io_uring_enter", "io_uring_register")
	deny("replaces the running kernel", "kexec_load", "kexec_file_load")
	deny("loads or unloads kernel modules", "init_module", "finit_module", "delete_module")
	deny("opens files by handle, bypassing path-based checks (the shocker escape)", "open_by_handle_at", "name_to_handle_at")
	deny("switches process accounting on the host", "acct")
	deny("changes host swap devices", "swapon", "swapoff")
	deny("restarts the machine", "reboot")
	deny("sets the host clock, which is not namespaced", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime")
	deny("reads or clears the kernel log", "syslog")
	deny("changes disk quotas", "quotactl", "quotactl_fd")
	deny("obsolete profiling interface that leaks kernel paths", "lookup_dcookie")
	deny("raw I/O port access", "iopl", "ioperm")
	deny("loads a shared library through an obsolete kernel interface", "uselib")
	rs = append(rs,
		Rule{Syscall: "personality", Errno: unix.EPERM,
			When: []Cond{
				{Arg: 0, ArgName: "persona", Op: NotEqual, Value: 0, ValueName: "PER_LINUX"},
				{Arg: 0, ArgName: "persona", Op: NotEqual, Value: 0xffffffff, ValueName: "0xffffffff (query)"},
			},
			Reason: "other personalities switch off ASLR (ADDR_NO_RANDOMIZE) or change the ABI"},
		Rule{Syscall: "prlimit64", Errno: unix.EPERM,
			When:   []Cond{{Arg: 0, ArgName: "pid", Op: NotEqual, Value: 0, ValueName: "0 (self)"}},
			Reason: "another process's resource limits: a root command would lower PID 1's, which every later exec inherits; a process's own (setrlimit, ulimit) stay"},
		Rule{Syscall: "ioctl", Errno: unix.EPERM,
			When:   []Cond{{Arg: 1, ArgName: "request", Op: Equal, Value: unix.TIOCSTI, ValueName: "TIOCSTI"}},
			Reason: "pushes keystrokes into a terminal's input, the operator's if the sandbox ever shares it"},
		Rule{Syscall: "ioctl", Errno: unix.EPERM,
			When:   []Cond{{Arg: 1, ArgName: "request", Op: Equal, Value: unix.TIOCLINUX, ValueName: "TIOCLINUX"}},
			Reason: "virtual console control, including pasting the selection as input"},
	)
	for _, name := range []string{"socket", "socketpair"} {
		rs = append(rs, socketRules(name)...)
	}
	return rs
}

// socketRules is the socket family/type/protocol policy for socket and socketpair.
func socketRules(name string) []Rule {
	domain := func(op Op, v uint32, vn string) Cond {
		return Cond{Arg: 0, ArgName: "domain", Op: op, Value: v, ValueName: vn}
	}
	sockType := func(v uint32, vn string) Cond {
		return Cond{Arg: 1, ArgName: "type", Op: Equal, Mask: 0xf, Value: v, ValueName: vn}
	}
	protocol := func(op Op, v uint32, vn string) Cond {
		return Cond{Arg: 2, ArgName: "protocol", Op: op, Value: v, ValueName: vn}
	}
	return []Rule{
		{Syscall: name, Errno: unix.EPERM,
			When:   []Cond{domain(Equal, unix.AF_PACKET, "AF_PACKET")},
			Reason: "packet sockets see and forge link-level traffic"},
		{Syscall: name, Errno: unix.EPERM,
			When:   []Cond{domain(Equal, unix.AF_NETLINK, "AF_NETLINK"), protocol(NotEqual, unix.NETLINK_ROUTE, "NETLINK_ROUTE")},
			Reason: "netlink families other than route (audit, nf_tables, xfrm, uevent, ...) are kernel attack surface; route stays for getaddrinfo and interface listing"},
		{Syscall: name, Errno: unix.EPERM,
			When:   []Cond{domain(NotEqual, unix.AF_NETLINK, "AF_NETLINK"), sockType(unix.SOCK_RAW, "SOCK_RAW")},
			Reason: "raw sockets forge packets and bypass Landlock's TCP rules"},
		{Syscall: name, Errno: unix.EPERM,
			When:   []Cond{sockType(unix.SOCK_PACKET, "SOCK_PACKET")},
			Reason: "obsolete packet sockets (AF_INET + SOCK_PACKET becomes AF_PACKET)"},
		{Syscall: name, Errno: unix.EAFNOSUPPORT,
			When: []Cond{
				domain(NotEqual, unix.AF_UNIX, "AF_UNIX"), domain(NotEqual, unix.AF_INET, "AF_INET"),
				domain(NotEqual, unix.AF_INET6, "AF_INET6"), domain(NotEqual, unix.AF_NETLINK, "AF_NETLINK"),
			},
			Reason: "families other than unix, inet, inet6 and netlink: vsock reaches the hypervisor host outside any network namespace, the rest (alg, bluetooth, can, rds, tipc, xdp, ...) is attack surface no agent needs"},
		{Syscall: name, Errno: unix.EPROTONOSUPPORT,
			When:   []Cond{protocol(Equal, unix.IPPROTO_MPTCP, "IPPROTO_MPTCP")},
			Reason: "MPTCP connections are not covered by Landlock's TCP rules; EPROTONOSUPPORT makes programs fall back to plain TCP"},
	}
}
