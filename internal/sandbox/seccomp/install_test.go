//go:build amd64

package seccomp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/sandbox/seccomp/internal/i386"
)

// childEnv selects what the re-executed test binary does instead of running tests.
const childEnv = "CLAWCAGE_SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child runs in a re-executed test binary: it installs the filter and makes
// the system calls a test asked for, printing a JSON map of probe name to
// errno name ("" for success).
func child(mode string) int {
	runtime.LockOSThread()
	if mode == "i386-unfiltered" {
		fmt.Printf("%d\n", i386.Syscall3(20, 0, 0, 0)) // getpid
		return 0
	}
	if mode == "bench" {
		return benchChild()
	}
	if mode == "no-nnp" {
		err := Install()
		fmt.Printf("%v\n", errors.Is(err, ErrNoNewPrivs))
		return 0
	}
	if mode == "probes-unfiltered" {
		return printProbes()
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "set no_new_privs:", err)
		return 2
	}
	if err := Install(); err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		return 2
	}
	switch mode {
	case "x32":
		_, _, e := unix.RawSyscall(0x40000000|unix.SYS_GETPID, 0, 0, 0)
		fmt.Printf("survived x32 getpid: %v\n", e)
		return 0
	case "i386":
		r := i386.Syscall3(20, 0, 0, 0) // getpid
		fmt.Printf("survived i386 getpid: %d\n", r)
		return 0
	case "probes":
		return printProbes()
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

// printProbes runs every probe and prints a JSON map of probe name to errno name.
func printProbes() int {
	res := map[string]string{}
	for name, p := range probes() {
		if os.Getenv(childEnv+"_TRACE") != "" {
			fmt.Fprintln(os.Stderr, "probe", name)
		}
		res[name] = errnoName(p())
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 2
	}
	return 0
}

func errnoName(err error) string {
	if err == nil {
		return ""
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return "other: " + err.Error()
}

func sys(nr uintptr, args ...uintptr) func() error {
	return func() error {
		var a [6]uintptr
		copy(a[:], args)
		_, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
		if e != 0 {
			return e
		}
		return nil
	}
}

func sock(nr uintptr, domain, typ, proto uintptr) func() error {
	return func() error {
		if nr == unix.SYS_SOCKETPAIR {
			var fds [2]int32
			_, _, e := unix.RawSyscall6(nr, domain, typ, proto, uintptr(unsafe.Pointer(&fds)), 0, 0)
			if e != 0 {
				return e
			}
			unix.Close(int(fds[0]))
			unix.Close(int(fds[1]))
			return nil
		}
		fd, _, e := unix.RawSyscall(nr, domain, typ, proto)
		if e != 0 {
			return e
		}
		unix.Close(int(fd))
		return nil
	}
}

// probes are the system calls the child makes after Install. Their
// arguments are chosen so that, were a call not denied, it would do nothing
// harmful and fail (or succeed) with an errno other than the filter's.
func probes() map[string]func() error {
	return map[string]func() error{
		"ptrace(PEEKDATA, no such pid)":      sys(unix.SYS_PTRACE, unix.PTRACE_PEEKDATA, 0x7ffffff0),
		"process_vm_readv(self)":             sys(unix.SYS_PROCESS_VM_READV, uintptr(os.Getpid())),
		"mount(NULL)":                        sys(unix.SYS_MOUNT),
		"umount2(NULL)":                      sys(unix.SYS_UMOUNT2),
		"pivot_root(NULL)":                   sys(unix.SYS_PIVOT_ROOT),
		"fsopen(NULL)":                       sys(unix.SYS_FSOPEN),
		"open_tree(-1)":                      sys(unix.SYS_OPEN_TREE, ^uintptr(0)),
		"mount_setattr(-1)":                  sys(unix.SYS_MOUNT_SETATTR, ^uintptr(0)),
		"setns(0, 0)":                        sys(unix.SYS_SETNS, 0, 0),
		"unshare(CLONE_NEWUSER)":             sys(unix.SYS_UNSHARE, unix.CLONE_NEWUSER),
		"unshare(CLONE_NEWNS)":               sys(unix.SYS_UNSHARE, unix.CLONE_NEWNS),
		"unshare(CLONE_SYSVSEM)":             sys(unix.SYS_UNSHARE, unix.CLONE_SYSVSEM),
		"clone(CLONE_NEWUSER|SIGCHLD)":       cloneProbe(unix.CLONE_NEWUSER | uintptr(unix.SIGCHLD)),
		"clone3(NULL)":                       sys(unix.SYS_CLONE3, 0, 0),
		"bpf(NULL)":                          sys(unix.SYS_BPF, 0, 0, 0),
		"perf_event_open(NULL)":              sys(unix.SYS_PERF_EVENT_OPEN),
		"keyctl(GET_KEYRING_ID)":             sys(unix.SYS_KEYCTL, 0, 0),
		"add_key(NULL)":                      sys(unix.SYS_ADD_KEY),
		"request_key(NULL)":                  sys(unix.SYS_REQUEST_KEY),
		"userfaultfd(0)":                     sys(unix.SYS_USERFAULTFD, unix.O_CLOEXEC),
		"io_uring_setup(0, NULL)":            sys(unix.SYS_IO_URING_SETUP),
		"io_uring_enter(-1)":                 sys(unix.SYS_IO_URING_ENTER, ^uintptr(0)),
		"io_uring_register(-1)":              sys(unix.SYS_IO_URING_REGISTER, ^uintptr(0)),
		"kexec_load(NULL)":                   sys(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0xffffffff),
		"init_module(NULL)":                  sys(unix.SYS_INIT_MODULE),
		"finit_module(-1)":                   sys(unix.SYS_FINIT_MODULE, ^uintptr(0)),
		"delete_module(NULL)":                sys(unix.SYS_DELETE_MODULE),
		"open_by_handle_at(-1)":              sys(unix.SYS_OPEN_BY_HANDLE_AT, ^uintptr(0)),
		"name_to_handle_at(-1)":              sys(unix.SYS_NAME_TO_HANDLE_AT, ^uintptr(0)),
		"swapoff(NULL)":                      sys(unix.SYS_SWAPOFF),
		"reboot(0)":                          sys(unix.SYS_REBOOT),
		"clock_settime(-1)":                  sys(unix.SYS_CLOCK_SETTIME, ^uintptr(0)),
		"adjtimex(NULL)":                     sys(unix.SYS_ADJTIMEX),
		"syslog(SIZE_BUFFER)":                sys(unix.SYS_SYSLOG, 10),
		"personality(ADDR_NO_RANDOMIZE)":     sys(unix.SYS_PERSONALITY, 0x0040000),
		"personality(query)":                 sys(unix.SYS_PERSONALITY, 0xffffffff),
		"ioctl(-1, TIOCSTI)":                 sys(unix.SYS_IOCTL, ^uintptr(0), unix.TIOCSTI),
		"ioctl(-1, TIOCLINUX)":               sys(unix.SYS_IOCTL, ^uintptr(0), unix.TIOCLINUX),
		"ioctl(-1, TCGETS)":                  sys(unix.SYS_IOCTL, ^uintptr(0), unix.TCGETS),
		"socket(AF_INET, STREAM)":            sock(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, 0),
		"socket(AF_INET6, DGRAM)":            sock(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_DGRAM, 0),
		"socket(AF_UNIX, STREAM)":            sock(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0),
		"socketpair(AF_UNIX, STREAM)":        sock(unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_STREAM, 0),
		"socket(AF_NETLINK, RAW, ROUTE)":     sock(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE),
		"socket(AF_NETLINK, RAW, AUDIT)":     sock(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT),
		"socket(AF_NETLINK, RAW, NETFILTER)": sock(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER),
		"socket(AF_PACKET, RAW)":             sock(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW, 0x0300),
		"socket(AF_PACKET|1<<32, RAW)":       sock(unix.SYS_SOCKET, 1<<32|unix.AF_PACKET, unix.SOCK_RAW, 0x0300),
		"socket(AF_INET, RAW, ICMP)":         sock(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP),
		"socket(AF_INET, SOCK_PACKET)":       sock(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_PACKET, 0x0300),
		"socket(AF_VSOCK, STREAM)":           sock(unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM, 0),
		"socket(AF_INET, STREAM, MPTCP)":     sock(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP),
		"socket(AF_INET6, STREAM, MPTCP)":    sock(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_MPTCP),
		"go threads":                         threadsProbe,
		"go fork+exec /bin/true":             func() error { return exec.Command("/bin/true").Run() },
		"sh fork, posix_spawn and wait":      shProbe,
		"go net tcp listen+dial loopback":    tcpProbe,
	}
}

// cloneProbe calls clone with flags; a child that gets created exits at once.
func cloneProbe(flags uintptr) func() error {
	return func() error {
		pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, flags, 0, 0, 0, 0, 0)
		if e != 0 {
			return e
		}
		if pid == 0 {
			unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
		}
		var ws unix.WaitStatus
		unix.Wait4(int(pid), &ws, 0, nil)
		return nil
	}
}

// threadsProbe makes the Go runtime start new OS threads (clone with thread flags).
func threadsProbe() error {
	var wg sync.WaitGroup
	ready := make(chan int, 4)
	release := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ready <- unix.Gettid()
			<-release
		}()
	}
	tids := map[int]bool{}
	for i := 0; i < 4; i++ {
		tids[<-ready] = true
	}
	close(release)
	wg.Wait()
	if len(tids) != 4 {
		return fmt.Errorf("want 4 distinct threads, got %d", len(tids))
	}
	return nil
}

// shProbe runs a shell that forks (background job), and uses glibc's
// posix_spawn-style clone3 with its fallback through a command substitution.
func shProbe() error {
	out, err := exec.Command("/bin/sh", "-c", "/bin/true & wait $!; echo $(/bin/echo ok)").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "ok" {
		return fmt.Errorf("shell printed %q", out)
	}
	return nil
}

// tcpProbe uses Go's net package, which tries MPTCP for listeners where
// available and must fall back to TCP on EPROTONOSUPPORT.
func tcpProbe() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	b := make([]byte, 2)
	if _, err := c.Read(b); err != nil {
		return err
	}
	if string(b) != "hi" {
		return fmt.Errorf("read %q", b)
	}
	return nil
}

func runChild(t testing.TB, mode string) (stdout []byte, state *os.ProcessState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("start child: %v", err)
	}
	if errb.Len() > 0 {
		msg := errb.String()
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		t.Logf("child %s stderr: %s", mode, msg)
	}
	return out.Bytes(), cmd.ProcessState
}

// wantProbes is what each probe returns under the filter ("" for success).
func wantProbes() map[string]string {
	return map[string]string{
		"ptrace(PEEKDATA, no such pid)":      "EPERM",
		"process_vm_readv(self)":             "EPERM",
		"mount(NULL)":                        "EPERM",
		"umount2(NULL)":                      "EPERM",
		"pivot_root(NULL)":                   "EPERM",
		"fsopen(NULL)":                       "EPERM",
		"open_tree(-1)":                      "EPERM",
		"mount_setattr(-1)":                  "EPERM",
		"setns(0, 0)":                        "EPERM",
		"unshare(CLONE_NEWUSER)":             "EPERM",
		"unshare(CLONE_NEWNS)":               "EPERM",
		"unshare(CLONE_SYSVSEM)":             "",
		"clone(CLONE_NEWUSER|SIGCHLD)":       "EPERM",
		"clone3(NULL)":                       "ENOSYS",
		"bpf(NULL)":                          "EPERM",
		"perf_event_open(NULL)":              "EPERM",
		"keyctl(GET_KEYRING_ID)":             "EPERM",
		"add_key(NULL)":                      "EPERM",
		"request_key(NULL)":                  "EPERM",
		"userfaultfd(0)":                     "EPERM",
		"io_uring_setup(0, NULL)":            "EPERM",
		"io_uring_enter(-1)":                 "EPERM",
		"io_uring_register(-1)":              "EPERM",
		"kexec_load(NULL)":                   "EPERM",
		"init_module(NULL)":                  "EPERM",
		"finit_module(-1)":                   "EPERM",
		"delete_module(NULL)":                "EPERM",
		"open_by_handle_at(-1)":              "EPERM",
		"name_to_handle_at(-1)":              "EPERM",
		"swapoff(NULL)":                      "EPERM",
		"reboot(0)":                          "EPERM",
		"clock_settime(-1)":                  "EPERM",
		"adjtimex(NULL)":                     "EPERM",
		"syslog(SIZE_BUFFER)":                "EPERM",
		"personality(ADDR_NO_RANDOMIZE)":     "EPERM",
		"personality(query)":                 "",
		"ioctl(-1, TIOCSTI)":                 "EPERM",
		"ioctl(-1, TIOCLINUX)":               "EPERM",
		"ioctl(-1, TCGETS)":                  "EBADF",
		"socket(AF_INET, STREAM)":            "",
		"socket(AF_INET6, DGRAM)":            "",
		"socket(AF_UNIX, STREAM)":            "",
		"socketpair(AF_UNIX, STREAM)":        "",
		"socket(AF_NETLINK, RAW, ROUTE)":     "",
		"socket(AF_NETLINK, RAW, AUDIT)":     "EPERM",
		"socket(AF_NETLINK, RAW, NETFILTER)": "EPERM",
		"socket(AF_PACKET, RAW)":             "EPERM",
		"socket(AF_PACKET|1<<32, RAW)":       "EPERM",
		"socket(AF_INET, RAW, ICMP)":         "EPERM",
		"socket(AF_INET, SOCK_PACKET)":       "EPERM",
		"socket(AF_VSOCK, STREAM)":           "EAFNOSUPPORT",
		"socket(AF_INET, STREAM, MPTCP)":     "EPROTONOSUPPORT",
		"socket(AF_INET6, STREAM, MPTCP)":    "EPROTONOSUPPORT",
		"go threads":                         "",
		"go fork+exec /bin/true":             "",
		"sh fork, posix_spawn and wait":      "",
		"go net tcp listen+dial loopback":    "",
	}
}

func TestInstallDeniesAndAllows(t *testing.T) {
	out, st := runChild(t, "probes")
	if !st.Success() {
		t.Fatalf("child failed: %v; stdout %s", st, out)
	}
	var got map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	want := wantProbes()
	if len(got) != len(want) {
		t.Errorf("child ran %d probes, test expects %d", len(got), len(want))
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			g, ok := got[name]
			if !ok {
				t.Fatal("probe did not run")
			}
			if g != w {
				if w == "" {
					w = "success"
				}
				if g == "" {
					g = "success"
				}
				t.Errorf("got %s, want %s", g, w)
			}
		})
	}
}

// TestProbesMeaningfulWithoutFilter runs the probes without the filter and
// checks that no denied probe already fails with the errno the filter gives:
// otherwise TestInstallDeniesAndAllows could pass with a filter that does nothing.
func TestProbesMeaningfulWithoutFilter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unprivileged, several probes fail with EPERM without any filter; run as root")
	}
	out, st := runChild(t, "probes-unfiltered")
	if !st.Success() {
		t.Fatalf("child failed: %v; stdout %s", st, out)
	}
	var got map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	filterErrnos := map[string]bool{"EPERM": true, "EPROTONOSUPPORT": true, "EAFNOSUPPORT": true, "ENOSYS": true}
	for name, w := range wantProbes() {
		if !filterErrnos[w] {
			continue // an allowed call: the kernel's own answer
		}
		if g, ok := got[name]; !ok || g == w {
			t.Errorf("%s: without the filter got %q (ran: %v), the same as with it", name, g, ok)
		}
	}
}

func TestInstallKillsForeignABI(t *testing.T) {
	for _, mode := range []string{"x32", "i386"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "i386" {
				out, st := runChild(t, "i386-unfiltered")
				if !st.Success() || strings.TrimSpace(string(out)) != strconv.Itoa(st.Pid()) {
					t.Skipf("kernel has no i386 emulation (unfiltered int 0x80 getpid: %v, %q): nothing to filter", st, out)
				}
			}
			out, st := runChild(t, mode)
			ws, _ := st.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Fatalf("child %v (stdout %q), want killed by SIGSYS", st, out)
			}
		})
	}
}

func TestInstallRefusesWithoutNoNewPrivs(t *testing.T) {
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nnp == 1 {
		t.Skip("test process already runs with no_new_privs; cannot check the refusal")
	}
	out, st := runChild(t, "no-nnp")
	if !st.Success() || strings.TrimSpace(string(out)) != "true" {
		t.Fatalf("child %v printed %q, want Install to return ErrNoNewPrivs", st, out)
	}
}

// benchChild times system calls before and after Install and prints
// "<name> <ns/op unfiltered> <ns/op filtered>" lines. ioctl and socket are
// argument-dependent, so the kernel runs the filter on every call; getppid
// is constant-allow, which the kernel's seccomp action cache skips.
func benchChild() int {
	const n = 50000
	calls := []struct {
		name string
		fn   func()
	}{
		{"getppid", func() { unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0) }},
		{"ioctl(-1,TCGETS)", func() { unix.RawSyscall(unix.SYS_IOCTL, ^uintptr(0), unix.TCGETS, 0) }},
		{"socketpair+close", func() {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err == nil {
				unix.Close(fds[0])
				unix.Close(fds[1])
			}
		}},
	}
	measure := func(fn func()) float64 {
		start := time.Now()
		for i := 0; i < n; i++ {
			fn()
		}
		return float64(time.Since(start).Nanoseconds()) / n
	}
	before := make([]float64, len(calls))
	for i, c := range calls {
		before[i] = measure(c.fn)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return 2
	}
	if err := Install(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for i, c := range calls {
		fmt.Printf("%s %.1f %.1f\n", c.name, before[i], measure(c.fn))
	}
	return 0
}

// BenchmarkFilterOverhead reports the per-call cost of the installed filter
// (ns/op of each call without and with it), measured in a child process.
func BenchmarkFilterOverhead(b *testing.B) {
	for i := 0; i < b.N; i++ {
		out, st := runChild(b, "bench")
		if !st.Success() {
			b.Fatalf("bench child: %v", st)
		}
		if i > 0 {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var name string
			var before, after float64
			if _, err := fmt.Sscanf(line, "%s %f %f", &name, &before, &after); err != nil {
				b.Fatalf("bench child line %q: %v", line, err)
			}
			b.ReportMetric(before, name+"-ns/unfiltered")
			b.ReportMetric(after, name+"-ns/filtered")
		}
	}
}
