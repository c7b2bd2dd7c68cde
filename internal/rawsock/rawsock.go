// Package rawsock wraps TCP connections so that their Read and Write issue
// read(2) and write(2) as raw system calls through the connection's
// syscall.RawConn: the descriptor's locks, deadlines, close and netpoller
// waits are net's own, only the call itself skips the scheduler's syscall
// entry and exit (entersyscall/exitsyscall).
//
// Why: the first ordinary syscall after the process was idle wakes the Go
// runtime's sysmon thread from its deep sleep; sysmon then polls every
// 20 µs for as long as the process is busy and retakes the only P from any
// syscall that spans one of those ticks (starting another thread to hold
// it). On a virtual machine each of those wake-ups and thread switches
// costs a hypervisor exit: for the privacy router that was about a fifth of
// its CPU and a share of every request's latency, for the egress proxy 4–5
// of a connection's ≈ 9 thread switches, because a connection's bytes
// arrive after idle moments (bench/README.md, "Privacy router" and "Egress
// proxy"). A read or write on a non-blocking socket never blocks, so it
// needs none of that bookkeeping: it returns data, EAGAIN (then the
// goroutine parks in the netpoller as usual) or an error. Raw calls move at
// most Options.MaxSlice bytes each, so that no single call holds the P for
// long.
//
// Bulk policy (Options.BulkThreshold): a raw call holds the P, while sysmon
// hands the P of a long ordinary read or write to another thread, which
// then runs the other direction of a tunnel on the other CPU (with
// GOMAXPROCS=1 that overlap is a tunnel's only parallelism; raw bulk copies
// measured 0.81× instead of 1.12× smokescreen in the egress proxy). So with
// a threshold set, a Write of at least BulkThreshold bytes uses an ordinary
// syscall, and a Read that moves at least BulkThreshold bytes switches the
// reading direction to ordinary syscalls until one moves less. A threshold
// of 0 never switches (the router: requests and answers, no tunnels).
//
// Errors are *net.OpError like net's own: a deadline is a net.Error with
// Timeout() true that matches os.ErrDeadlineExceeded, a closed connection
// matches net.ErrClosed, an errno matches its syscall.Errno; a read of zero
// bytes at the end of the stream is io.EOF.
package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// DefaultMaxSlice is the most one raw read or write moves when
// Options.MaxSlice is 0.
const DefaultMaxSlice = 256 << 10

// Options configures a wrapped connection.
type Options struct {
	// BulkThreshold is the size from which reads and writes use ordinary
	// syscalls: a Write of at least this many bytes, and every Read after
	// one that moved at least this many, until a Read moves less. Raw
	// reads ask for at most this many bytes, so that a full one switches.
	// 0 (or less) never switches.
	BulkThreshold int
	// MaxSlice bounds one raw read or write; a longer Write is issued in
	// slices. 0 (or less) means DefaultMaxSlice. With a BulkThreshold
	// above MaxSlice a Read never switches to ordinary syscalls (a raw
	// read cannot move BulkThreshold bytes).
	MaxSlice int
}

// Conn is a TCP connection whose Read and Write are raw system calls (see
// the package documentation). The embedded *net.TCPConn supplies every
// other method (Close, deadlines, CloseWrite, SyscallConn, ...).
type Conn struct {
	*net.TCPConn
	rc      syscall.RawConn
	opts    Options // as given to Wrap
	bulk    int     // BulkThreshold, 0 for never
	maxRead int     // the most a raw read asks for
	maxOut  int     // the most one raw write moves

	rmu    sync.Mutex // serialises Read's use of the fields below
	rbulk  bool       // the last read moved bulk bytes or more
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

// Wrap returns c as a *Conn when it is a *net.TCPConn with a raw
// connection, and c unchanged otherwise.
func Wrap(c net.Conn, opts Options) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &Conn{TCPConn: tc, rc: rc, opts: opts}
	r.maxOut = opts.MaxSlice
	if r.maxOut <= 0 {
		r.maxOut = DefaultMaxSlice
	}
	r.maxRead = r.maxOut
	if opts.BulkThreshold > 0 {
		r.bulk = opts.BulkThreshold
		r.maxRead = min(r.maxRead, r.bulk)
	}
	r.readFn = r.rawRead
	r.writeFn = r.rawWrite
	return r
}

// Options returns the options c was wrapped with.
func (c *Conn) Options() Options { return c.opts }

// Listener hands out the TCP connections its embedded listener accepts
// wrapped with Options; other connections pass unchanged.
type Listener struct {
	net.Listener
	Options Options
}

// Accept implements net.Listener.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c, l.Options), nil
}

func (c *Conn) rawRead(fd uintptr) bool {
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

func (c *Conn) rawWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		p := c.wbuf[c.wn:]
		if len(p) > c.maxOut {
			p = p[:c.maxOut]
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
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	if c.rbulk {
		n, err := c.TCPConn.Read(p)
		c.rbulk = n >= c.bulk
		c.rmu.Unlock()
		return n, err
	}
	if len(p) > c.maxRead {
		p = p[:c.maxRead] // with a threshold, a full raw read switches to bulk
	}
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
	c.rbulk = c.bulk > 0 && n >= c.bulk
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
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	if c.bulk > 0 && len(p) >= c.bulk {
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

// ReadFrom keeps io.Copy into the connection on Write (the embedded
// TCPConn's ReadFrom would splice with ordinary syscalls).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

// WriteTo keeps io.Copy out of the connection on Read.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// opError wraps err like net's own Read and Write do.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // RawConn's "raw-read"/"raw-write" wrapper
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
