package router

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/sys/unix"
)

// leanTransport sends plain-http requests over HTTP/1.1 keep-alive
// connections doing the whole exchange on the caller's goroutine: it writes
// the request, then reads the response head and body from the same
// connection. http.Transport runs a reader and a writer goroutine per
// connection and hands every request and response across them; on a
// virtual machine each of those hand-offs can cost a thread wake-up, which
// is most of what a local proxy adds. Everything that is not http:// (TLS,
// HTTP/2) goes to next.
//
// Cancelling a request's context unblocks its connection by setting a
// deadline in the past (context.AfterFunc: no goroutine per request); a
// connection whose exchange was cancelled, broken or not read to the end is
// closed, never reused. A pooled connection is checked with a non-blocking
// peek before reuse, so one the server closed while idle is not used.
type leanTransport struct {
	next        http.RoundTripper
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int           // idle connections kept per host
	idleTimeout time.Duration // an idle connection older than this is closed instead of reused

	mu   sync.Mutex
	idle map[string][]*leanConn // host:port → idle connections, most recent last
}

type leanConn struct {
	addr   string // pool key
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

const leanBufSize = 16 << 10

func newLeanTransport(next http.RoundTripper, dial func(ctx context.Context, network, addr string) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *leanTransport {
	return &leanTransport{next: next, dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, idle: make(map[string][]*leanConn)}
}

// errLeanProtocol marks a response the lean transport does not handle
// (e.g. 101 Switching Protocols); the connection is closed.
var errLeanProtocol = errors.New("unsupported upstream response")

// RoundTrip implements http.RoundTripper.
func (t *leanTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return t.next.RoundTrip(req)
	}
	ctx := req.Context()
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			closeBody(req)
			return nil, fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				closeBody(req)
				return nil, fmt.Errorf("invalid header field value for %q", k)
			}
		}
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil {
			closeBody(req)
			return nil, err
		}
		c, reused, err := t.conn(ctx, addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.exchange(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		var we *leanWriteError
		// A reused connection the server closed between our liveness
		// check and the write: nothing reached the server, so send once
		// more on a fresh connection (http.Transport does the same).
		if errors.As(err, &we) && reused && try == 0 && req.GetBody != nil && ctx.Err() == nil {
			body, gerr := req.GetBody()
			if gerr == nil {
				r2 := *req
				r2.Body = body
				req = &r2
				continue
			}
		}
		return nil, err
	}
}

// leanWriteError is a failure while sending the request.
type leanWriteError struct{ err error }

func (e *leanWriteError) Error() string { return e.err.Error() }
func (e *leanWriteError) Unwrap() error { return e.err }

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// exchange writes req on c and reads the response head. On success the
// response body owns c (and the context watch); on failure c is closed.
func (t *leanTransport) exchange(ctx context.Context, c *leanConn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = c.nc.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(&leanWriteError{err})
	}
	if err := c.bw.Flush(); err != nil {
		return fail(&leanWriteError{err})
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode < 100 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(fmt.Errorf("%w: 101 Switching Protocols", errLeanProtocol))
		}
		// 1xx informational: read the next response head.
	}
	b := &leanBody{t: t, c: c, rc: resp.Body, stop: stop, reusable: !resp.Close && !req.Close}
	if resp.Body == http.NoBody || req.Method == http.MethodHead {
		b.release()
		resp.Body = http.NoBody
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// leanBody returns its connection to the pool when read to the end, and
// closes it otherwise.
type leanBody struct {
	t        *leanTransport
	c        *leanConn
	rc       io.ReadCloser
	stop     func() bool
	reusable bool
	done     bool
}

func (b *leanBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.release()
	} else if err != nil {
		b.discard()
	}
	return n, err
}

func (b *leanBody) Close() error {
	if !b.done {
		b.discard()
	}
	return nil
}

// release hands the connection back after a complete response.
func (b *leanBody) release() {
	b.done = true
	// stop reports false when the context was cancelled meanwhile: the
	// connection's deadline may be in the past, so it is not reused.
	if b.stop() && b.reusable {
		b.t.put(b.c)
		return
	}
	_ = b.c.nc.Close()
}

func (b *leanBody) discard() {
	b.done = true
	b.stop()
	_ = b.c.nc.Close()
}

// conn returns a live idle connection to addr or dials a new one.
func (t *leanTransport) conn(ctx context.Context, addr string) (*leanConn, bool, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		pool := t.idle[addr]
		if len(pool) == 0 {
			t.mu.Unlock()
			break
		}
		c := pool[len(pool)-1]
		pool[len(pool)-1] = nil
		t.idle[addr] = pool[:len(pool)-1]
		t.mu.Unlock()
		if now.Sub(c.idleAt) < t.idleTimeout && alive(c.nc) {
			return c, true, nil
		}
		_ = c.nc.Close()
	}
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	nc = quiet(nc) // raw read(2)/write(2): no sysmon wake-up per exchange
	return &leanConn{addr: addr, nc: nc, br: bufio.NewReaderSize(nc, leanBufSize), bw: bufio.NewWriterSize(nc, leanBufSize)}, false, nil
}

func (t *leanTransport) put(c *leanConn) {
	if c.br.Buffered() > 0 {
		// Bytes after the response: the server is not speaking HTTP/1.1
		// as we understand it; do not reuse.
		_ = c.nc.Close()
		return
	}
	now := time.Now()
	c.idleAt = now
	var expired []*leanConn
	t.mu.Lock()
	pool := t.idle[c.addr]
	// The pool is ordered by idleAt: close the connections that idled
	// too long (the oldest, at the front) so none lingers half-closed.
	n := 0
	for n < len(pool) && now.Sub(pool[n].idleAt) >= t.idleTimeout {
		n++
	}
	if n > 0 {
		expired = append(expired, pool[:n]...)
		pool = append(pool[:0], pool[n:]...)
	}
	full := len(pool) >= t.maxIdle
	if !full {
		pool = append(pool, c)
	}
	t.idle[c.addr] = pool
	t.mu.Unlock()
	if full {
		_ = c.nc.Close()
	}
	for _, e := range expired {
		_ = e.nc.Close()
	}
}

// CloseIdleConnections closes every pooled connection.
func (t *leanTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = make(map[string][]*leanConn)
	t.mu.Unlock()
	for _, pool := range idle {
		for _, c := range pool {
			_ = c.nc.Close()
		}
	}
	if ci, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// alive reports whether an idle connection is still open and quiet: a
// non-blocking peek sees EAGAIN. EOF (closed by the server), an error or
// unexpected bytes mean it must not be reused.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	cerr := rc.Read(func(fd uintptr) bool {
		// A raw syscall like rawsock's: MSG_DONTWAIT never blocks, and
		// an ordinary one would wake sysmon (see package rawsock).
		_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		ok = errno == unix.EAGAIN || errno == unix.EWOULDBLOCK
		return true
	})
	return cerr == nil && ok
}
