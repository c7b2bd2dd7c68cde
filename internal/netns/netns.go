// Package netns creates the per-sandbox network namespaces and the sockets
// that live in them: a namespace owned by the initial user namespace with
// only a loopback interface, listeners opened inside it, and the passing of
// those listeners to other processes (SCM_RIGHTS, or inheritance through
// exec with a LISTEN_FDS-style environment).
//
// It does not decide what listens where; the supervisor does.
//
// A namespace is kept alive by a bind mount of its nsfs file at
// <state>/netns/NAME, like `ip netns` does under /run/netns. A bind mount,
// unlike an open file descriptor, survives a supervisor restart: the new
// supervisor re-opens the same namespace, so a sandbox that is still running
// and the listeners re-created for it agree on which loopback they share.
//
// Work inside a namespace is done on a goroutine locked to its OS thread,
// which setns(2)es into the namespace and then exits without unlocking, so
// the Go runtime terminates the thread: a thread in the wrong namespace is
// never returned to the scheduler's pool.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// NetNS is a network namespace kept alive by a bind mount.
type NetNS struct {
	name string
	path string
	f    *os.File
}

// Name returns the namespace's name (usually the sandbox's).
func (n *NetNS) Name() string { return n.name }

// Path returns the bind mount that keeps the namespace alive; it can be
// opened and passed to setns(2) (for example by the sandbox's init). It is
// empty for a namespace made by CreateUnpinned until Pin.
func (n *NetNS) Path() string { return n.path }

// Fd returns the open namespace file descriptor. It stays valid until Close.
func (n *NetNS) Fd() uintptr { return n.f.Fd() }

// File returns the open namespace file, for handing the namespace to a
// child through exec.Cmd.ExtraFiles. It is closed by Close.
func (n *NetNS) File() *os.File { return n.f }

var nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`) })

// Dir returns the directory under stateDir that holds the namespace mounts.
func Dir(stateDir string) string { return filepath.Join(stateDir, "netns") }

func nsPath(stateDir, name string) (string, error) {
	if !nameRE().MatchString(name) || strings.Contains(name, "..") {
		return "", fmt.Errorf("network namespace name %q: want lower-case letters, digits, '.', '_' or '-', at most 63, starting with a letter or digit", name)
	}
	return filepath.Join(Dir(stateDir), name), nil
}

// Create makes a new network namespace named name, owned by the initial user
// namespace, with only the loopback interface, brought up. It is pinned at
// <stateDir>/netns/<name>; creating a name that exists is an error.
//
// The caller must be root in the initial user namespace: that is what makes
// root inside a sandbox's own user namespace powerless over this one.
func Create(ctx context.Context, stateDir, name string) (*NetNS, error) {
	path, err := nsPath(stateDir, name)
	if err != nil {
		return nil, err
	}
	if err := checkInitialUserNS(); err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w", name, err)
	}
	if err := os.MkdirAll(Dir(stateDir), 0o700); err != nil {
		return nil, fmt.Errorf("create network namespace directory: %w", err)
	}
	mp, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return nil, fmt.Errorf("create network namespace %s: mount point: %w", name, err)
	}
	mp.Close()

	err = onLockedThread(ctx, func() error {
		// This thread leaves the host namespace for good; it exits when done.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		if err := loopbackUp(); err != nil {
			return err
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount namespace at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return nil, fmt.Errorf("create network namespace %s: %w", name, err)
	}
	ns, err := open(name, path)
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return nil, err
	}
	return ns, nil
}

// CreateUnpinned makes a new network namespace like Create, but keeps it
// alive only by the returned NetNS's file descriptor: nothing is mounted, so
// the kernel frees it when the descriptor is closed or the process ends,
// even by SIGKILL. Pin gives it a name and a mount. A supervisor keeps one
// ready this way (with its listeners) so that creating a sandbox does not
// wait for a namespace; an unused one leaves nothing behind.
func CreateUnpinned(ctx context.Context) (*NetNS, error) {
	if err := checkInitialUserNS(); err != nil {
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	var f *os.File
	err := onLockedThread(ctx, func() error {
		// This thread leaves the host namespace for good; it exits when done.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		if err := loopbackUp(); err != nil {
			return err
		}
		var err error
		f, err = os.OpenFile("/proc/thread-self/ns/net", os.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	if err := checkNetNSFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	return &NetNS{name: "unpinned", f: f}, nil
}

// Pin bind-mounts a namespace made by CreateUnpinned at
// <stateDir>/netns/<name> and renames it name: from then on it is like one
// made by Create (Open finds it, Delete removes it). Pinning a name that
// exists, or a namespace that is already pinned, is an error and changes
// nothing.
func (n *NetNS) Pin(stateDir, name string) error {
	if n.path != "" {
		return fmt.Errorf("network namespace %s is already pinned at %s", n.name, n.path)
	}
	if n.f == nil {
		return errors.New("pin network namespace: it is closed")
	}
	path, err := nsPath(stateDir, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(Dir(stateDir), 0o700); err != nil {
		return fmt.Errorf("create network namespace directory: %w", err)
	}
	mp, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("pin network namespace %s: mount point: %w", name, err)
	}
	mp.Close()
	src := "/proc/self/fd/" + strconv.Itoa(int(n.f.Fd()))
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("pin network namespace %s: bind mount at %s: %w", name, path, err)
	}
	runtime.KeepAlive(n.f)
	n.name, n.path = name, path
	return nil
}

// Open re-opens a namespace created earlier (for example by a previous
// supervisor) and checks that it still is a network namespace owned by the
// initial user namespace.
func Open(stateDir, name string) (*NetNS, error) {
	path, err := nsPath(stateDir, name)
	if err != nil {
		return nil, err
	}
	if err := checkInitialUserNS(); err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	return open(name, path)
}

func open(name, path string) (*NetNS, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	if err := checkNetNSFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("open network namespace %s at %s: %w", name, path, err)
	}
	return &NetNS{name: name, path: path, f: f}, nil
}

// checkNetNSFile verifies that f is a network namespace owned by the user
// namespace this process runs in (the initial one; see checkInitialUserNS).
func checkNetNSFile(f *os.File) error {
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("not a namespace file (is it still mounted?): %w", err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("namespace type %#x is not a network namespace", typ)
	}
	ownerFd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return fmt.Errorf("owning user namespace: %w", err)
	}
	defer unix.Close(ownerFd)
	var owner, self unix.Stat_t
	if err := unix.Fstat(ownerFd, &owner); err != nil {
		return fmt.Errorf("stat owning user namespace: %w", err)
	}
	if err := unix.Stat("/proc/self/ns/user", &self); err != nil {
		return fmt.Errorf("stat own user namespace: %w", err)
	}
	if owner.Ino != self.Ino || owner.Dev != self.Dev {
		return errors.New("owned by another user namespace, not the initial one")
	}
	return nil
}

// checkInitialUserNS fails unless this process runs in the initial user
// namespace, whose uid_map is the identity over the whole range.
func checkInitialUserNS() error {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return fmt.Errorf("read /proc/self/uid_map: %w", err)
	}
	if f := strings.Fields(string(b)); len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "4294967295" {
		return errors.New("the supervisor runs inside a user namespace; it must run as root in the initial user namespace so that sandboxes cannot own their network namespace")
	}
	if os.Geteuid() != 0 {
		return errors.New("network namespaces are created by root; run as root")
	}
	return nil
}

// loopbackUp sets IFF_UP on lo in the calling thread's namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// Close releases the namespace's file descriptor but leaves the namespace in
// place (a restarted supervisor re-opens it). Use Delete to remove it.
func (n *NetNS) Close() error {
	if n.f == nil {
		return nil
	}
	err := n.f.Close()
	n.f = nil
	if err != nil {
		return fmt.Errorf("close network namespace %s: %w", n.name, err)
	}
	return nil
}

// Delete closes the namespace and removes its bind mount and mount point.
// The kernel frees the namespace once no process, socket or mount uses it.
func (n *NetNS) Delete() error {
	err := n.Close()
	if n.path == "" {
		return err // never pinned: closing frees it
	}
	if uerr := unix.Unmount(n.path, unix.MNT_DETACH); uerr != nil && !errors.Is(uerr, unix.EINVAL) && !errors.Is(uerr, unix.ENOENT) {
		return errors.Join(err, fmt.Errorf("unmount network namespace %s: %w", n.name, uerr))
	}
	if rerr := os.Remove(n.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return errors.Join(err, fmt.Errorf("remove network namespace mount point %s: %w", n.path, rerr))
	}
	return err
}

// Do runs fn on an OS thread that has joined the namespace. Sockets created
// by fn belong to the namespace for their whole life. fn must not start
// goroutines that create sockets (they would run on other threads). The
// thread is discarded afterwards.
func (n *NetNS) Do(ctx context.Context, fn func() error) error {
	if n.f == nil {
		return fmt.Errorf("network namespace %s is closed", n.name)
	}
	fd := int(n.f.Fd())
	err := onLockedThread(ctx, func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns into network namespace %s: %w", n.name, err)
		}
		return fn()
	})
	runtime.KeepAlive(n.f)
	return err
}

// onLockedThread runs fn on a fresh goroutine locked to its thread and never
// unlocks it, so the runtime destroys the thread when fn returns. It waits
// for fn even if ctx ends (fn may hold resources); ctx only bounds fn's own
// blocking calls.
func onLockedThread(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	// The thread is never unlocked: its namespaces have changed.
	onDedicatedThread(func() { errc <- fn() })
	return <-errc
}

// Listen opens a listener inside the namespace. network is "tcp", "tcp4",
// "tcp6" or "unix"; addr is a literal address (no name is resolved).
func Listen(ctx context.Context, ns *NetNS, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(ctx, func() error {
		var err error
		ln, err = new(net.ListenConfig).Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in network namespace %s: %w", network, addr, ns.name, err)
	}
	return ln, nil
}

// Dial connects from inside the namespace, as a sandbox process would.
func Dial(ctx context.Context, ns *NetNS, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(ctx, func() error {
		var err error
		c, err = new(net.Dialer).DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in network namespace %s: %w", network, addr, ns.name, err)
	}
	return c, nil
}
