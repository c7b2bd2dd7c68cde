package router

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// quietConn is a TCP connection whose Read and Write issue read(2) and
// write(2) as raw system calls, through the connection's syscall.RawConn:
// the descriptor's locks, deadlines and netpoller waits are net's own, only
// the call itself bypasses the scheduler's syscall bookkeeping.
//
// Why: every ordinary syscall enters the runtime's entersyscall, and the
// first one after the process was idle wakes the runtime's sysmon thread
// from its deep sleep; sysmon then polls every 20 µs for as long as the
// process is busy, and retakes the only P from any syscall that spans one
// of those ticks (starting another thread to hold it). On a virtual machine
// each of those wake-ups costs a hypervisor exit; for the router that was
// about a fifth of its CPU and a share of every request's latency
// (bench/README.md, "Privacy router"). A read or write on a non-blocking
// socket never blocks, so it needs none of that: it returns data, EAGAIN
// (then the goroutine parks in the netpoller as usual) or an error. Writes
// are issued in slices of at most maxRawIO bytes so that no single call
// holds the P for long.
//
// Errors are *net.OpError like net's own (a deadline is a net.Error with
// Timeout() true and matches os.ErrDeadlineExceeded, a closed connection
// matches net.ErrClosed); a read of zero bytes at end of stream is io.EOF.
type quietConn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu    sync.Mutex // serialises Read's use of the fields below
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

// maxRawIO bounds one raw read or write.
const maxRawIO = 256 << 10

// newQuietConn wraps c; it fails only if c has no raw connection.
func newQuietConn(c *net.TCPConn) (*quietConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	q := &quietConn{TCPConn: c, rc: rc}
	q.readFn = q.rawRead
	q.writeFn = q.rawWrite
	return q, nil
}

// quiet wraps c when it is a TCP connection and returns it unchanged
// otherwise.
func quiet(c net.Conn) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		if q, err := newQuietConn(tc); err == nil {
			return q
		}
	}
	return c
}

func (c *quietConn) rawRead(fd uintptr) bool {
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

func (c *quietConn) rawWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		p := c.wbuf[c.wn:]
		if len(p) > maxRawIO {
			p = p[:maxRawIO]
		}
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
func (c *quietConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRawIO {
		p = p[:maxRawIO]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
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
func (c *quietConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
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

// opError wraps err like net's own Read and Write do.
func (c *quietConn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // RawConn's "raw-read"/"raw-write" wrapper
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// quietListener hands out its TCP connections as quietConns.
type quietListener struct{ net.Listener }

// Accept implements net.Listener.
func (l quietListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return quiet(c), nil
}

// ReadFrom keeps io.Copy into the connection on the quiet Write (the
// embedded TCPConn's ReadFrom would use ordinary syscalls).
func (c *quietConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

// WriteTo keeps io.Copy out of the connection on the quiet Read.
func (c *quietConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}
