package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// SocketPath is where the router's admin socket lives under a state dir.
func SocketPath(stateDir string) string {
	return filepath.Join(stateDir, "router", "admin.sock")
}

// PeerCred returns the credentials of the process at the other end of a
// Unix socket connection (SO_PEERCRED, taken by the kernel at connect time).
func PeerCred(c net.Conn) (*unix.Ucred, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("peer credentials: %T is not a socket", c)
	}
	if uc, ok := c.(*net.UnixConn); !ok || uc == nil {
		return nil, fmt.Errorf("peer credentials: %T is not a Unix socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("peer credentials: SO_PEERCRED: %w", serr)
	}
	return cred, nil
}

// PeerAllowed reports whether the peer of c may use the admin API: root or
// the router's own uid. Anything that is not a Unix socket, or whose
// credentials cannot be read, is refused.
func PeerAllowed(c net.Conn) bool {
	cred, err := PeerCred(c)
	if err != nil {
		return false
	}
	return cred.Uid == 0 || cred.Uid == uint32(os.Getuid())
}

// peerListener closes connections whose peer is not allowed.
type peerListener struct {
	net.Listener
	log *slog.Logger
}

// PeerCheckListener wraps l so that Accept only returns connections from
// root or the router's uid (PeerAllowed); others are logged and closed.
func PeerCheckListener(l net.Listener, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &peerListener{Listener: l, log: log.With("component", "router-admin")}
}

// Accept implements net.Listener.
func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if PeerAllowed(c) {
			return c, nil
		}
		uid, pid := int64(-1), int64(-1)
		if cred, err := PeerCred(c); err == nil {
			uid, pid = int64(cred.Uid), int64(cred.Pid)
		}
		l.log.Warn("admin connection refused", "peer_uid", uid, "peer_pid", pid, "reason", "peer is neither root nor the router's uid")
		c.Close()
	}
}

// Listen creates the admin socket at path (removing a stale socket left by
// a previous run, refusing to replace anything else), mode 0600, and wraps
// it with PeerCheckListener. The directory is expected to be the router's
// 0700 state dir.
func Listen(path string, log *slog.Logger) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("admin socket %s: exists and is not a socket: refusing to replace it", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another router is already listening", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket %s: remove stale socket: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return PeerCheckListener(l, log), nil
}
