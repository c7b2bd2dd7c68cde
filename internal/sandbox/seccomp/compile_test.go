//go:build amd64

package seccomp

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData lays out struct seccomp_data for golang.org/x/net/bpf's VM.
// The kernel loads native-endian (little-endian) 32-bit words; the VM loads
// big-endian ones, so every word is stored big-endian at the offset where
// the kernel would find it.
func seccompData(arch, nr uint32, args [6]uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))       // low half
		binary.BigEndian.PutUint32(b[16+8*i+4:], uint32(a>>32)) // high half
	}
	return b
}

func newVM(t testing.TB) *bpf.VM {
	t.Helper()
	prog, err := Program()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("program does not verify: %v", err)
	}
	return vm
}

func run(t testing.TB, vm *bpf.VM, arch, nr uint32, args [6]uint64) uint32 {
	t.Helper()
	ret, err := vm.Run(seccompData(arch, nr, args))
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ret)
}

func TestProgramDecisions(t *testing.T) {
	const x86 = unix.AUDIT_ARCH_X86_64
	eperm := retErrno(unix.EPERM)
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		args [6]uint64
		want uint32
	}{
		{"i386 ABI (int 0x80) is killed", unix.AUDIT_ARCH_I386, 20, [6]uint64{}, retKill},
		{"x32 ABI number is killed", x86, 0x40000000 | unix.SYS_GETPID, [6]uint64{}, retKill},
		{"x32 number of a denied call is killed", x86, 0x40000000 | unix.SYS_PTRACE, [6]uint64{}, retKill},
		{"nr -1 is left to the kernel (ENOSYS)", x86, 0xffffffff, [6]uint64{}, retAllow},
		{"read allowed", x86, unix.SYS_READ, [6]uint64{0, 0, 0}, retAllow},
		{"ptrace denied", x86, unix.SYS_PTRACE, [6]uint64{unix.PTRACE_ATTACH, 1}, eperm},
		{"process_vm_readv denied", x86, unix.SYS_PROCESS_VM_READV, [6]uint64{1}, eperm},
		{"mount denied", x86, unix.SYS_MOUNT, [6]uint64{}, eperm},
		{"fsopen denied", x86, unix.SYS_FSOPEN, [6]uint64{}, eperm},
		{"open_tree_attr denied", x86, unix.SYS_OPEN_TREE_ATTR, [6]uint64{}, eperm},
		{"setns denied", x86, unix.SYS_SETNS, [6]uint64{3, unix.CLONE_NEWNET}, eperm},
		{"bpf denied", x86, unix.SYS_BPF, [6]uint64{}, eperm},
		{"io_uring_setup denied", x86, unix.SYS_IO_URING_SETUP, [6]uint64{8}, eperm},
		{"clone3 answered ENOSYS", x86, unix.SYS_CLONE3, [6]uint64{}, retErrno(unix.ENOSYS)},
		{"clone for a thread allowed", x86, unix.SYS_CLONE, [6]uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM}, retAllow},
		{"clone for vfork allowed", x86, unix.SYS_CLONE, [6]uint64{unix.CLONE_VM | unix.CLONE_VFORK | uint64(unix.SIGCHLD)}, retAllow},
		{"clone with exit signal 0x80+ allowed (not CLONE_NEWTIME)", x86, unix.SYS_CLONE, [6]uint64{0x80 | uint64(unix.SIGCHLD)}, retAllow},
		{"clone CLONE_NEWUSER denied", x86, unix.SYS_CLONE, [6]uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, eperm},
		{"clone CLONE_NEWNET denied", x86, unix.SYS_CLONE, [6]uint64{unix.CLONE_NEWNET}, eperm},
		{"clone CLONE_NEWPID hidden behind high bits denied", x86, unix.SYS_CLONE, [6]uint64{1<<40 | unix.CLONE_NEWPID}, eperm},
		{"unshare CLONE_FILES allowed", x86, unix.SYS_UNSHARE, [6]uint64{unix.CLONE_FILES}, retAllow},
		{"unshare CLONE_NEWUSER denied", x86, unix.SYS_UNSHARE, [6]uint64{unix.CLONE_NEWUSER}, eperm},
		{"unshare CLONE_NEWTIME denied", x86, unix.SYS_UNSHARE, [6]uint64{unix.CLONE_NEWTIME}, eperm},
		{"personality query allowed", x86, unix.SYS_PERSONALITY, [6]uint64{0xffffffff}, retAllow},
		{"personality PER_LINUX allowed", x86, unix.SYS_PERSONALITY, [6]uint64{0}, retAllow},
		{"personality ADDR_NO_RANDOMIZE denied", x86, unix.SYS_PERSONALITY, [6]uint64{0x0040000}, eperm},
		{"personality PER_LINUX with garbage high bits allowed", x86, unix.SYS_PERSONALITY, [6]uint64{0xdead << 32}, retAllow},
		{"ioctl TIOCSTI denied", x86, unix.SYS_IOCTL, [6]uint64{0, unix.TIOCSTI}, eperm},
		{"ioctl TIOCSTI with high bits set denied", x86, unix.SYS_IOCTL, [6]uint64{0, 1<<63 | unix.TIOCSTI}, eperm},
		{"ioctl TIOCLINUX denied", x86, unix.SYS_IOCTL, [6]uint64{0, unix.TIOCLINUX}, eperm},
		{"ioctl TCGETS allowed", x86, unix.SYS_IOCTL, [6]uint64{0, unix.TCGETS}, retAllow},
		{"socket tcp allowed", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, retAllow},
		{"socket tcp6 cloexec nonblock allowed", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET6, unix.SOCK_STREAM | unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK, unix.IPPROTO_TCP}, retAllow},
		{"socket udp allowed", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, retAllow},
		{"socket unix allowed", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_UNIX, unix.SOCK_SEQPACKET, 0}, retAllow},
		{"socket netlink route raw allowed (getaddrinfo)", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_NETLINK, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE}, retAllow},
		{"socket netlink audit denied", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT}, eperm},
		{"socket netlink nf_tables denied", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_NETLINK, unix.SOCK_DGRAM, unix.NETLINK_NETFILTER}, eperm},
		{"socket packet denied", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_PACKET, unix.SOCK_DGRAM, 0}, eperm},
		{"socket packet hidden behind high bits denied", x86, unix.SYS_SOCKET, [6]uint64{1<<32 | unix.AF_PACKET, unix.SOCK_RAW, 0}, eperm},
		{"socket inet raw denied", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP}, eperm},
		{"socket inet6 raw cloexec denied", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET6, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.IPPROTO_RAW}, eperm},
		{"socket inet SOCK_PACKET denied", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET, unix.SOCK_PACKET, 0x300}, eperm},
		{"socket vsock refused as unsupported family", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_VSOCK, unix.SOCK_STREAM, 0}, retErrno(unix.EAFNOSUPPORT)},
		{"socket alg refused as unsupported family", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_ALG, unix.SOCK_SEQPACKET, 0}, retErrno(unix.EAFNOSUPPORT)},
		{"socket mptcp answered EPROTONOSUPPORT", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP}, retErrno(unix.EPROTONOSUPPORT)},
		{"socket mptcp6 with flags answered EPROTONOSUPPORT", x86, unix.SYS_SOCKET, [6]uint64{unix.AF_INET6, unix.SOCK_STREAM | unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP}, retErrno(unix.EPROTONOSUPPORT)},
		{"socketpair unix allowed", x86, unix.SYS_SOCKETPAIR, [6]uint64{unix.AF_UNIX, unix.SOCK_STREAM, 0}, retAllow},
		{"socketpair packet denied", x86, unix.SYS_SOCKETPAIR, [6]uint64{unix.AF_PACKET, unix.SOCK_RAW, 0}, eperm},
	}
	vm := newVM(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(t, vm, tc.arch, tc.nr, tc.args); got != tc.want {
				t.Errorf("filter returned %#x, want %#x", got, tc.want)
			}
		})
	}
}

// reference evaluates the rules directly, as the documentation states them.
func reference(rules []Rule, arch archInfo, nr uint32, args [6]uint64) uint32 {
	for _, r := range rules {
		n, _ := arch.sysnum(r.Syscall)
		if n != nr {
			continue
		}
		ok := true
		for _, c := range r.When {
			ok = ok && c.match(uint32(args[c.Arg]))
		}
		if ok {
			return retErrno(r.Errno)
		}
	}
	return retAllow
}

// TestProgramMatchesRules checks the compiled program against a direct
// evaluation of Rules for random arguments of every filtered system call,
// with values drawn from the constants the rules name.
func TestProgramMatchesRules(t *testing.T) {
	vm := newVM(t)
	arch, _ := nativeArch()
	rules := Rules()
	var interesting []uint64
	for _, r := range rules {
		for _, c := range r.When {
			interesting = append(interesting, uint64(c.Value), uint64(c.Value|unix.SOCK_CLOEXEC), uint64(c.Value)|1<<32)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() uint64 {
		switch rng.IntN(3) {
		case 0:
			return interesting[rng.IntN(len(interesting))]
		case 1:
			return uint64(rng.IntN(64))
		}
		return rng.Uint64()
	}
	for _, r := range rules {
		nr, ok := arch.sysnum(r.Syscall)
		if !ok {
			t.Fatalf("rule for %s: no number on %s", r.Syscall, arch.name)
		}
		for i := 0; i < 2000; i++ {
			var args [6]uint64
			for j := range args {
				args[j] = pick()
			}
			got := run(t, vm, unix.AUDIT_ARCH_X86_64, nr, args)
			if want := reference(rules, arch, nr, args); got != want {
				t.Fatalf("%s%v: program returned %#x, rules say %#x", r.Syscall, args, got, want)
			}
		}
	}
}

func TestRulesDocumented(t *testing.T) {
	for _, r := range Rules() {
		if r.Reason == "" || r.Errno == 0 {
			t.Errorf("rule %s (%s): missing reason or errno", r.Syscall, r.Condition())
		}
	}
	if got := (Rule{Syscall: "x"}).Condition(); got != "always" {
		t.Errorf("unconditional rule condition = %q, want always", got)
	}
	c := Cond{Arg: 1, ArgName: "type", Op: Equal, Mask: 0xf, Value: 3, ValueName: "SOCK_RAW"}
	if got, want := c.String(), "type & 0xf == SOCK_RAW"; got != want {
		t.Errorf("Cond.String() = %q, want %q", got, want)
	}
}

func TestCompileRejectsUnknownSyscall(t *testing.T) {
	arch, _ := nativeArch()
	_, err := compile([]Rule{{Syscall: "no_such_call", Errno: unix.EPERM}}, arch)
	if err == nil {
		t.Fatal("compile accepted an unknown system call")
	}
}

// TestDocListsEveryRule keeps docs/seccomp.md in step with Rules.
func TestDocListsEveryRule(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/seccomp.md")
	if err != nil {
		t.Skipf("docs not found next to the source: %v", err)
	}
	for _, r := range Rules() {
		row := fmt.Sprintf("| `%s` | `%s` | %s |", r.Syscall, strings.ReplaceAll(r.Condition(), "|", `\|`), unix.ErrnoName(r.Errno))
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/seccomp.md has no row starting %q", row)
		}
	}
}
