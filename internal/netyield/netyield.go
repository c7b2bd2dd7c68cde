// Package netyield lets a long CPU-bound goroutine give way to the
// goroutines the network has made ready, on a process with one P.
//
// runtime.Gosched does not do that: it puts the caller on the global run
// queue, and the scheduler looks at the run queues before it polls the
// network, so the caller runs again at once and a request that arrived
// meanwhile waits until sysmon polls (up to 10 ms) or the work ends. The
// router runs with GOMAXPROCS=1, where a 100-row usage-ledger batch (≈ 1 ms
// of SQLite) is such work: every request arriving during it waited for
// all of it. Yield instead parks the caller until a byte it wrote to its
// own socket pair is reported by the network poller, so the scheduler
// polls first and runs whatever that poll made ready. Behind a busy loop
// yielding every 50 µs in a one-P process, a loopback echo took 9 ms at the
// median with Gosched and 76 µs with Yield (bench/README.md, "Privacy router").
package netyield

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxWait bounds one Yield: the poller reports the byte at its next poll,
// which is immediate unless the caller's P found other work; the bound
// only guards against a lost edge, never reached in practice.
const maxWait = 10 * time.Millisecond

// Yielder yields to network-ready goroutines. It is safe for concurrent
// use; callers yield one at a time.
type Yielder struct {
	mu   sync.Mutex
	wfd  int      // write end, non-blocking
	conn net.Conn // read end, registered with the network poller
	rc   syscall.RawConn
	buf  [64]byte
}

// New returns a Yielder holding two file descriptors until Close.
func New() (*Yielder, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netyield: socketpair: %w", err)
	}
	f := os.NewFile(uintptr(fds[1]), "netyield")
	c, err := net.FileConn(f) // dups the descriptor
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("netyield: %w", err)
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		unix.Close(fds[0])
		c.Close()
		return nil, fmt.Errorf("netyield: %w", err)
	}
	return &Yielder{wfd: fds[0], conn: c, rc: rc}, nil
}

// Yield parks the caller until the network poller has run once, so that
// goroutines it finds ready run before the caller continues.
func (y *Yielder) Yield() {
	y.mu.Lock()
	defer y.mu.Unlock()
	if _, err := unix.Write(y.wfd, y.buf[:1]); err != nil {
		return // EAGAIN: bytes are pending already; a closed Yielder: nothing to wait for
	}
	_ = y.conn.SetReadDeadline(time.Now().Add(maxWait))
	waited := false
	_ = y.rc.Read(func(fd uintptr) bool {
		if !waited {
			// Claim "not ready" once without looking, so the caller
			// parks and the scheduler polls the network.
			waited = true
			return false
		}
		for {
			n, err := unix.Read(int(fd), y.buf[:])
			if n <= 0 || err != nil {
				return true
			}
		}
	})
}

// Close releases the descriptors. Yield after Close returns at once.
func (y *Yielder) Close() error {
	y.mu.Lock()
	defer y.mu.Unlock()
	if y.wfd < 0 {
		return nil
	}
	err := unix.Close(y.wfd)
	y.wfd = -1
	if cerr := y.conn.Close(); err == nil {
		err = cerr
	}
	return err
}
