package egress

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawIOConn is a TCP connection whose Read and Write issue read(2) and
// write(2) as raw system calls through the connection's syscall.RawConn:
// the descriptor's locks, deadlines, close and netpoller waits are net's
// own, only the call itself skips the scheduler's syscall entry and exit.
//
// Why: the first ordinary syscall after the process was idle wakes the Go
// runtime's sysmon thread from its deep sleep, which then polls every
// 20 µs while the process is busy and retakes the only P from a syscall
// that spans a tick. A tunnel's bytes arrive after idle moments (the
// client's first bytes after the 200, the upstream's answer), so each of
// its reads woke sysmon: 4–5 of a connection's ≈ 9 thread switches were
// sysmon's (bench/README.md, "Egress proxy"). A read or write on a
// non-blocking socket never blocks: it returns data, EAGAIN (then the
// goroutine parks in the netpoller as usual) or an error. (The privacy
// router does the same, internal/router/quietconn.go.)
//
// Bulk transfers keep ordinary syscalls: a raw call holds the P, while
// sysmon hands the P of a long ordinary read or write to another thread,
// which then runs the tunnel's other direction on the other CPU (with
// GOMAXPROCS=1 that overlap is a tunnel's only parallelism; raw bulk
// copies measured 0.81× instead of 1.12× smokescreen). So a call that
// moves at least rawMax bytes switches the direction to ordinary
// syscalls until one moves less.
//
// Errors are *net.OpError like net's own: a deadline matches
// os.ErrDeadlineExceeded, a closed connection net.ErrClosed; a read of
// zero bytes at the end of the stream is io.EOF.
type rawIOConn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu    sync.Mutex // serialises Read's use of the fields below
	rbulk  bool       // the last read moved rawMax bytes or more
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // serialises Write's use of the fields below
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

// rawMax is the size from which reads and writes use ordinary syscalls
// (see rawIOConn).
const rawMax = 16 << 10

// rawIO wraps c when it is a TCP connection and returns it unchanged
// otherwise.
func rawIO(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawIOConn{TCPConn: tc, rc: rc}
	r.readFn = r.rawRead
	r.writeFn = r.rawWrite
	return r
}

func (c *rawIOConn) rawRead(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait in the netpoller, then call again
		}
		c.rn, c.rerrno = int(r), e
		return true
	}
}

func (c *rawIOConn) rawWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		p := c.wbuf[c.wn:]
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // socket buffer full: wait in the netpoller
		default:
			c.werrno = e
			return true
		}
	}
	return true
}

// Read implements net.Conn.
func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	if c.rbulk {
		n, err := c.TCPConn.Read(p)
		c.rbulk = n >= rawMax
		c.rmu.Unlock()
		return n, err
	}
	if len(p) > rawMax {
		p = p[:rawMax] // a full raw read switches to bulk for the rest
	}
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
	c.rbulk = n >= rawMax
	c.rmu.Unlock()
	if err == nil && errno != 0 {
		err = os.NewSyscallError("read", errno)
	}
	if err != nil {
		return 0, c.opError("read", err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write implements net.Conn: it writes all of p or returns an error.
func (c *rawIOConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	if len(p) >= rawMax {
		n, err := c.TCPConn.Write(p)
		c.wmu.Unlock()
		return n, err
	}
	c.wbuf, c.wn, c.werrno = p, 0, 0
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, c.werrno
	c.wbuf = nil
	c.wmu.Unlock()
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// ReadFrom keeps io.Copy into the connection on the raw Write (the
// embedded TCPConn's would splice with ordinary syscalls).
func (c *rawIOConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

// WriteTo keeps io.Copy out of the connection on the raw Read.
func (c *rawIOConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// opError wraps err like net's own Read and Write do.
func (c *rawIOConn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // RawConn's "raw-read"/"raw-write" wrapper
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
