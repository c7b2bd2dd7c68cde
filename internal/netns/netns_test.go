package netns

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const helperEnv = "CLAWCAGE_NETNS_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "inherit":
		os.Exit(helperInherit())
	case "netadmin":
		os.Exit(helperNetAdmin())
	case "control":
		os.Exit(helperControl())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper")
		os.Exit(2)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newNS(t *testing.T, ctx context.Context) *NetNS {
	t.Helper()
	ns, err := Create(ctx, t.TempDir(), "test")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { ns.Delete() })
	return ns
}

// newPinnedSpare makes a namespace as a supervisor's spare is made and then
// given to a sandbox: CreateUnpinned, then Pin.
func newPinnedSpare(t *testing.T, ctx context.Context) *NetNS {
	t.Helper()
	ns, err := CreateUnpinned(ctx)
	if err != nil {
		t.Fatalf("CreateUnpinned: %v", err)
	}
	t.Cleanup(func() { ns.Delete() })
	if err := ns.Pin(t.TempDir(), "test"); err != nil {
		t.Fatalf("Pin: %v", err)
	}
	return ns
}

// serveBanner accepts connections on ln and writes banner to each.
func serveBanner(ln net.Listener, banner string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, banner)
			c.Close()
		}
	}()
}

func readBanner(t *testing.T, c net.Conn) string {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read banner: %v", err)
	}
	return string(b)
}

func TestNameValidation(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"simple", "assistant", true},
		{"digits dash dot underscore", "a-1.b_2", true},
		{"empty", "", false},
		{"path traversal", "../etc", false},
		{"dot dot inside", "a..b", false},
		{"slash", "a/b", false},
		{"upper case", "Assistant", false},
		{"leading dash", "-x", false},
		{"control character", "a\nb", false},
		{"too long", strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := nsPath("/state", tt.in)
			if (err == nil) != tt.ok {
				t.Errorf("nsPath(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func TestCreateHasOnlyLoopbackUp(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	ns := newNS(t, ctx)
	var ifs []net.Interface
	err := ns.Do(ctx, func() error {
		var err error
		ifs, err = net.Interfaces()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
		t.Fatalf("interfaces in new namespace = %+v, want only lo, up", ifs)
	}
	st, err := os.Stat(filepath.Dir(ns.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("namespace directory mode %v, want 0700", st.Mode().Perm())
	}
	if _, err := Create(ctx, filepath.Dir(filepath.Dir(ns.Path())), "test"); err == nil {
		t.Errorf("creating a namespace whose name exists succeeded")
	}
}

func TestListenerIsIsolatedFromHost(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	ns := newNS(t, ctx)

	inside, err := Listen(ctx, ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	serveBanner(inside, "inside")
	addr := inside.Addr().String()

	// The same address is free on the host: binding it there succeeds only
	// because the inside listener lives in another namespace.
	host, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("host bind of %s failed, so the listener is not isolated: %v", addr, err)
	}
	defer host.Close()
	serveBanner(host, "host")

	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBanner(t, c); got != "host" {
		t.Errorf("dial from host reached %q, want the host listener", got)
	}
	c, err = Dial(ctx, ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBanner(t, c); got != "inside" {
		t.Errorf("dial from inside reached %q, want the inside listener", got)
	}
}

func TestNoRouteOutOfNamespace(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	ns := newNS(t, ctx)
	tests := []struct {
		name, network, addr string
		want                error
	}{
		{"documentation ipv4", "tcp4", "192.0.2.1:443", unix.ENETUNREACH},
		{"host-side private address", "tcp4", "10.0.0.1:80", unix.ENETUNREACH},
		{"ipv6 global", "tcp6", "[2001:db8::1]:443", unix.ENETUNREACH},
		{"loopback port with no listener", "tcp4", "127.0.0.1:9", unix.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Dial(ctx, ns, tt.network, tt.addr)
			if err == nil {
				c.Close()
				t.Fatalf("dial %s succeeded", tt.addr)
			}
			if !errors.Is(err, tt.want) && !(tt.network == "tcp6" && errors.Is(err, unix.EADDRNOTAVAIL)) {
				t.Fatalf("dial %s: %v, want %v", tt.addr, err, tt.want)
			}
		})
	}
}

func TestReopenAfterClose(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	state := t.TempDir()
	ns, err := Create(ctx, state, "keep")
	if err != nil {
		t.Fatal(err)
	}
	var st1 unix.Stat_t
	unix.Fstat(int(ns.Fd()), &st1)
	ln, err := Listen(ctx, ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveBanner(ln, "kept")
	ns.Close() // a supervisor restart

	ns2, err := Open(state, "keep")
	if err != nil {
		t.Fatal(err)
	}
	defer ns2.Delete()
	var st2 unix.Stat_t
	unix.Fstat(int(ns2.Fd()), &st2)
	if st1.Ino != st2.Ino {
		t.Fatalf("re-opened namespace inode %d, want %d", st2.Ino, st1.Ino)
	}
	c, err := Dial(ctx, ns2, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := readBanner(t, c); got != "kept" {
		t.Fatalf("got %q", got)
	}
	if _, err := Open(state, "missing"); err == nil {
		t.Errorf("opening a namespace that does not exist succeeded")
	}
	// A plain file in the namespace directory is not a namespace.
	os.WriteFile(filepath.Join(Dir(state), "plain"), nil, 0o600)
	if _, err := Open(state, "plain"); err == nil || !strings.Contains(err.Error(), "not a namespace") {
		t.Errorf("Open(plain file) err = %v, want 'not a namespace'", err)
	}
}

func TestDeleteLeavesNothing(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	state := t.TempDir()
	ns, err := Create(ctx, state, "gone")
	if err != nil {
		t.Fatal(err)
	}
	path := ns.Path()
	if err := ns.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point %s still exists: %v", path, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mi, []byte(path)) {
		t.Errorf("mountinfo still lists %s", path)
	}
	if err := ns.Do(ctx, func() error { return nil }); err == nil {
		t.Errorf("Do on a deleted namespace succeeded")
	}
}

// TestUnpinnedThenPinned follows a supervisor's spare namespace: made with
// only lo (up) and a listener, held by its descriptor alone (nothing
// mounted), then pinned under a sandbox's name, where Open finds the same
// namespace and the listener made before; pinning twice or over an existing
// name fails and changes nothing; Delete leaves nothing, and so does
// closing a spare that was never pinned.
func TestUnpinnedThenPinned(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	state := t.TempDir()
	mounts := func() int {
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		return bytes.Count(mi, []byte(state))
	}
	ns, err := CreateUnpinned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Delete()
	if ns.Path() != "" || mounts() != 0 {
		t.Fatalf("unpinned namespace has path %q, %d mounts", ns.Path(), mounts())
	}
	var ifs []net.Interface
	ln, err := Listen(ctx, ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveBanner(ln, "spare")
	if err := ns.Do(ctx, func() error { ifs, err = net.Interfaces(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
		t.Fatalf("interfaces in the spare = %+v, want only lo, up", ifs)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatalf("the spare's listener is reachable from the host namespace")
	}

	// A name that is taken stays as it was.
	other, err := Create(ctx, state, "taken")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Delete()
	if err := ns.Pin(state, "taken"); err == nil || ns.Path() != "" {
		t.Fatalf("Pin over an existing namespace: %v (path %q)", err, ns.Path())
	}
	if err := ns.Pin(state, "../x"); err == nil {
		t.Fatalf("Pin with a bad name succeeded")
	}

	if err := ns.Pin(state, "sb"); err != nil {
		t.Fatal(err)
	}
	if ns.Name() != "sb" || ns.Path() != filepath.Join(Dir(state), "sb") {
		t.Fatalf("pinned as %q at %q", ns.Name(), ns.Path())
	}
	if err := ns.Pin(state, "sb2"); err == nil {
		t.Fatalf("pinning twice succeeded")
	}
	var st1, st2 unix.Stat_t
	unix.Fstat(int(ns.Fd()), &st1)
	re, err := Open(state, "sb")
	if err != nil {
		t.Fatal(err)
	}
	unix.Fstat(int(re.Fd()), &st2)
	if st1.Ino != st2.Ino {
		t.Fatalf("re-opened namespace inode %d, want the spare's %d", st2.Ino, st1.Ino)
	}
	c, err := Dial(ctx, re, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := readBanner(t, c); got != "spare" {
		t.Fatalf("got %q from the spare's listener", got)
	}
	re.Close()
	if err := ns.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := other.Delete(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(Dir(state)); len(ents) != 0 || mounts() != 0 {
		t.Errorf("left behind: %v, %d mounts", ents, mounts())
	}

	// A spare that is never pinned only needs closing.
	unused, err := CreateUnpinned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := unused.Delete(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(Dir(state)); len(ents) != 0 || mounts() != 0 {
		t.Errorf("left behind: %v, %d mounts", ents, mounts())
	}
}

func TestUserNamespaceRootCannotConfigureNetwork(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	for _, kind := range []string{"created", "pinned spare"} {
		t.Run(kind, func(t *testing.T) {
			ns := newNS(t, ctx)
			if kind == "pinned spare" {
				ns = newPinnedSpare(t, ctx)
			}
			userNSRootPowerless(t, ctx, ns)
		})
	}
}

// userNSRootPowerless checks that root in a new user namespace joined to ns
// gets EPERM for every network configuration request, and host root does not.
func userNSRootPowerless(t *testing.T, ctx context.Context, ns *NetNS) {

	// The child must be able to execute the test binary as an unmapped host
	// uid: copy it to a world-readable place.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir nests in a 0700 directory
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "helper")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	// Like a sandbox: root in its own user namespace, mapped to an
	// unprivileged host uid, joined to the sandbox's network namespace.
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{helperEnv + "=netadmin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 1}},
		// Become the mapped root; without this the child keeps host uid 0.
		Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Do(ctx, cmd.Start); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	got := parseResults(out.String())
	if got["euid"] != "0" {
		t.Fatalf("helper did not run as root in its user namespace: %s", out.String())
	}
	for _, op := range netAdminOps {
		if got[op.name] != "EPERM" {
			t.Errorf("%s from user-namespace root: %q, want EPERM", op.name, got[op.name])
		}
	}

	// The same requests from real root pass the capability check (they
	// succeed, or fail for another reason, such as a missing "dummy" link
	// module), so EPERM above is the capability check and not a bad request.
	err = ns.Do(ctx, func() error {
		for _, op := range netAdminOps {
			if err := op.run(); errors.Is(err, unix.EPERM) {
				return fmt.Errorf("%s as host root: %w", op.name, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func parseResults(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		m[k] = v
	}
	return m
}

var netAdminOps = []struct {
	name string
	run  func() error
}{
	{"add-dummy-link", func() error {
		var linkinfo []byte
		linkinfo = rtattr(linkinfo, unix.IFLA_INFO_KIND, []byte("dummy"))
		p := make([]byte, unix.SizeofIfInfomsg)
		p = rtattr(p, unix.IFLA_IFNAME, []byte("evil0\x00"))
		p = rtattr(p, unix.IFLA_LINKINFO, linkinfo)
		return netlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL, p)
	}},
	{"add-address", func() error {
		p := []byte{unix.AF_INET, 24, 0, 0, 1, 0, 0, 0} // ifaddrmsg: AF_INET /24 on ifindex 1
		p = rtattr(p, unix.IFA_LOCAL, []byte{10, 9, 9, 1})
		p = rtattr(p, unix.IFA_ADDRESS, []byte{10, 9, 9, 1})
		return netlinkRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, p)
	}},
	{"add-default-route", func() error {
		p := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_LINK, unix.RTN_UNICAST, 0, 0, 0, 0}
		p = rtattr(p, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, 1))
		return netlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, p)
	}},
	{"set-lo-down", func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, _ := unix.NewIfreq("lo")
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return err
		}
		// Keep it up: writing the same flags still needs CAP_NET_ADMIN.
		return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	}},
}

func rtattr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func netlinkRequest(typ, flags uint16, payload []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	msg := binary.NativeEndian.AppendUint32(nil, uint32(unix.SizeofNlMsghdr+len(payload)))
	msg = binary.NativeEndian.AppendUint16(msg, typ)
	msg = binary.NativeEndian.AppendUint16(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	msg = binary.NativeEndian.AppendUint32(msg, 1) // seq
	msg = binary.NativeEndian.AppendUint32(msg, 0) // pid
	msg = append(msg, payload...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(m.Data[:4])); e != 0 {
				return syscall.Errno(-e)
			}
			return nil
		}
	}
	return errors.New("no netlink acknowledgement")
}

func helperNetAdmin() int {
	fmt.Printf("euid %d\n", os.Geteuid())
	for _, op := range netAdminOps {
		res := "ok"
		if err := op.run(); err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				res = unix.ErrnoName(errno)
			} else {
				res = err.Error()
			}
		}
		fmt.Printf("%s %s\n", op.name, res)
	}
	return 0
}

func TestSendReceiveListeners(t *testing.T) {
	ctx := testCtx(t)
	a, b := unixPair(t)
	lnA, _ := net.Listen("tcp", "127.0.0.1:0")
	lnB, _ := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	defer lnA.Close()
	defer lnB.Close()
	fA, err := ListenerFile(lnA)
	if err != nil {
		t.Fatal(err)
	}
	fB, _ := ListenerFile(lnB)
	if err := SendListeners(a, []string{"inference", "admin"}, []*os.File{fA, fB}); err != nil {
		t.Fatal(err)
	}
	fA.Close()
	fB.Close()
	got, err := ReceiveListeners(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["inference"] == nil || got["admin"] == nil {
		t.Fatalf("received %v", got)
	}
	// The received listener is the same socket: a dial to the original
	// address is accepted through it.
	serveBanner(got["inference"], "received")
	lnA.Close() // the sender's copy goes away; the socket stays open
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", got["inference"].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if s := readBanner(t, c); s != "received" {
		t.Fatalf("got %q", s)
	}
	for _, ln := range got {
		ln.Close()
	}
	// Received descriptors are close-on-exec.
	fds := openFDs(t)
	for fd, target := range fds {
		if strings.HasPrefix(target, "socket:") {
			if v, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); v&unix.FD_CLOEXEC == 0 {
				t.Errorf("fd %d (%s) is inheritable", fd, target)
			}
		}
	}
}

func TestReceiveRejectsBadMessages(t *testing.T) {
	tests := []struct {
		name  string
		send  func(t *testing.T, c *net.UnixConn)
		want  string
		files bool
	}{
		{"regular file is not a listener", func(t *testing.T, c *net.UnixConn) {
			f, _ := os.Open("/dev/null")
			defer f.Close()
			if err := SendListeners(c, []string{"x"}, []*os.File{f}); err != nil {
				t.Fatal(err)
			}
		}, "not a socket", true},
		{"connected socket is not listening", func(t *testing.T, c *net.UnixConn) {
			x, y := unixPair(t)
			defer x.Close()
			defer y.Close()
			f, _ := x.File()
			defer f.Close()
			if err := SendListeners(c, []string{"x"}, []*os.File{f}); err != nil {
				t.Fatal(err)
			}
		}, "not listening", true},
		{"more names than descriptors", func(t *testing.T, c *net.UnixConn) {
			f, _ := os.Open("/dev/null")
			defer f.Close()
			hdr := `{"names":["a","b"]}`
			msg := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
			c.WriteMsgUnix(append(msg, hdr...), unix.UnixRights(int(f.Fd())), nil)
		}, "2 names for 1 files", false},
		{"no descriptors", func(t *testing.T, c *net.UnixConn) {
			hdr := `{"names":["a"]}`
			msg := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
			c.Write(append(msg, hdr...))
		}, "1 names for 0 files", false},
		{"oversized header", func(t *testing.T, c *net.UnixConn) {
			c.Write(binary.BigEndian.AppendUint32(nil, 1<<30))
		}, "over the", false},
		{"peer closed", func(t *testing.T, c *net.UnixConn) { c.Close() }, "EOF", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(openFDs(t))
			a, b := unixPair(t)
			tt.send(t, a)
			_, err := ReceiveListeners(b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			a.Close()
			b.Close()
			if after := len(openFDs(t)); after > before {
				t.Errorf("%d descriptors leaked", after-before)
			}
		})
	}
}

func TestSendListenersValidatesNames(t *testing.T) {
	a, _ := unixPair(t)
	f, _ := os.Open("/dev/null")
	defer f.Close()
	tests := []struct {
		name  string
		names []string
		files []*os.File
	}{
		{"no files", nil, nil},
		{"name with colon breaks LISTEN_FDNAMES", []string{"a:b"}, []*os.File{f}},
		{"empty name", []string{""}, []*os.File{f}},
		{"control character", []string{"a\x1b"}, []*os.File{f}},
		{"duplicate names", []string{"a", "a"}, []*os.File{f, f}},
		{"count mismatch", []string{"a", "b"}, []*os.File{f}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := SendListeners(a, tt.names, tt.files); err == nil {
				t.Errorf("SendListeners(%q) succeeded", tt.names)
			}
		})
	}
}

func TestExportInheritedListeners(t *testing.T) {
	ctx := testCtx(t)
	names := []string{"inference", "proxy"}
	var files []*os.File
	var addrs []string
	for range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		f, _ := ListenerFile(ln)
		defer f.Close()
		files = append(files, f)
		addrs = append(addrs, ln.Addr().String())
	}
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = []string{helperEnv + "=inherit", "LISTEN_FDS=99", "LISTEN_PID=1"}
	if err := ExportListeners(cmd, names, files); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i, addr := range addrs {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBanner(t, c); got != names[i] {
			t.Errorf("dial %s answered %q, want %q", addr, got, names[i])
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "env clean") {
		t.Errorf("helper output %q: protocol variables left in the environment", out.String())
	}
	if err := ExportListeners(cmd, names, files); err == nil {
		t.Errorf("ExportListeners with ExtraFiles already set succeeded")
	}
}

func helperInherit() int {
	lns, err := InheritedListeners()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if os.Getenv(EnvListenFDs) == "" && os.Getenv(EnvListenFDNames) == "" {
		fmt.Println("env clean")
	}
	names := make([]string, 0, len(lns))
	for n := range lns {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c, err := lns[n].Accept()
		if err != nil {
			fmt.Println(err)
			return 1
		}
		io.WriteString(c, n)
		c.Close()
	}
	return 0
}

func TestInheritedListenersRejectsBadEnvironment(t *testing.T) {
	tests := []struct {
		name, fds, names string
	}{
		{"count not a number", "x", "a"},
		{"count zero", "0", ""},
		{"count over the limit", "1000", "a"},
		{"names do not match count", "2", "a"},
		{"descriptor not open", "1", "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "descriptor not open" {
				if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); err == nil {
					t.Skip("descriptor 3 is open in the test process")
				}
			}
			t.Setenv(EnvListenFDs, tt.fds)
			t.Setenv(EnvListenFDNames, tt.names)
			if lns, err := InheritedListeners(); err == nil {
				t.Errorf("InheritedListeners() = %v, want an error", lns)
			}
		})
	}
	os.Unsetenv(EnvListenFDs)
	if lns, err := InheritedListeners(); err != nil || len(lns) != 0 {
		t.Errorf("without LISTEN_FDS: %v, %v; want none", lns, err)
	}
}

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

func openFDs(t *testing.T) map[int]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]string{}
	for _, e := range ents {
		var fd int
		fmt.Sscan(e.Name(), &fd)
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		m[fd] = target
	}
	return m
}

func TestNoThreadLeftInNamespace(t *testing.T) {
	needRoot(t)
	ctx := testCtx(t)
	var host unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &host); err != nil {
		t.Fatal(err)
	}
	ns := newNS(t, ctx)
	for range 20 {
		ln, err := Listen(ctx, ns, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
	}
	// Every thread the scheduler can hand out, and the main thread, are
	// still in the host namespace.
	errc := make(chan error, 64)
	for range cap(errc) {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
				errc <- err
				return
			}
			if st.Ino != host.Ino {
				errc <- fmt.Errorf("thread %d is in network namespace %d, not the host's %d", unix.Gettid(), st.Ino, host.Ino)
				return
			}
			errc <- nil
		}()
	}
	for range cap(errc) {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	var main unix.Stat_t
	unix.Stat("/proc/self/ns/net", &main)
	if main.Ino != host.Ino {
		t.Errorf("the main thread moved to network namespace %d", main.Ino)
	}
}

// BenchmarkSandboxNetwork measures what the supervisor does per sandbox:
// create the namespace, open the two listeners inside it, tear it down.
func BenchmarkSandboxNetwork(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ctx := context.Background()
	state := b.TempDir()
	for b.Loop() {
		ns, err := Create(ctx, state, "bench")
		if err != nil {
			b.Fatal(err)
		}
		var lns []net.Listener
		for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:3128"} {
			ln, err := Listen(ctx, ns, "tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			lns = append(lns, ln)
		}
		if err := ns.Delete(); err != nil {
			b.Fatal(err)
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
}

// FuzzReceiveFiles feeds arbitrary bytes (no descriptors) to the receiver of
// listener messages: it must fail cleanly or return matching names.
func FuzzReceiveFiles(f *testing.F) {
	hdr := `{"names":["a"]}`
	f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(hdr))), hdr...))
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := unixPair(t)
		if len(data) > 0 {
			if _, err := a.Write(data); err != nil {
				t.Skip(err)
			}
		}
		a.Close()
		names, files, err := ReceiveFiles(b)
		if err == nil {
			// No descriptors were sent, so no message can be valid.
			t.Fatalf("accepted %q: names %q, %d files", data, names, len(files))
		}
	})
}
