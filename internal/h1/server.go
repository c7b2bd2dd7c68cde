// Package h1 is a small HTTP/1.1 server for the privacy router's
// sandbox-facing listeners, in place of net/http's Server: the same request
// parsing (http.ReadRequest) and the checks net/http's server adds on top of
// it, the same handler interface, but no goroutine per request, one write(2)
// per flushed response where possible, and per-connection buffers reused
// from request to request.
//
// It implements: HTTP/1.0 and HTTP/1.1 requests, keep-alive and pipelining
// (answered in order), request bodies with Content-Length or chunked,
// "Expect: 100-continue", HEAD, responses with a declared Content-Length, a
// buffered body's length, chunked or (HTTP/1.0 only) close-delimited
// framing, http.Flusher (and http.ResponseController's Flush,
// SetReadDeadline and SetWriteDeadline), header size limits (431), a header
// read timeout, an idle timeout, a request body progress timeout and a
// per-write timeout (on by default: a client that stops sending its body or
// stops reading its response cannot hold its connection), a per-listener
// connection limit (MaxConns), bounded draining of unread request bodies,
// handler panic recovery, graceful Shutdown, and cancellation of a
// request's context when the client hangs up while its handler runs
// (without a goroutine per request; see watch.go).
//
// It deliberately does not implement: HTTP/2 (or h2c upgrades), TLS,
// connection upgrades or http.Hijacker, trailers (request trailers are
// parsed and ignored, none are sent), 1xx responses other than
// 100 Continue, HTTP/1.0 keep-alive (every HTTP/1.0 request closes its
// connection), and full-duplex handlers (the request body is closed once
// the response head is sent, as net/http does by default). It is stricter
// than net/http in a few places: a request target must be in origin form
// ("/path") or "*" (absolute-form, meant for proxies, gets 400), a chunked
// request closes its connection after the response (so a request that
// also had a Content-Length, which http.ReadRequest silently drops, cannot
// desynchronise the connection), an HTTP/1.1 request needs a non-empty
// valid host, and invalid response header names are dropped and control
// bytes in response header values replaced by spaces. Unlike net/http it does not snapshot the header map at
// WriteHeader: changes made before the head is committed (first Flush,
// 4 KiB of body, or the handler's return) are sent.
package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

const (
	// bufferBeforeChunking is how many body bytes a response holds before
	// it must choose its framing; a handler that returns before writing
	// more gets a Content-Length.
	bufferBeforeChunking = 4 << 10
	// maxOutBuffer bounds the bytes a connection collects before writing
	// them out without a Flush.
	maxOutBuffer = 32 << 10
	// keepOutBuffer is the largest output buffer a connection keeps from
	// one response to the next.
	keepOutBuffer = 16 << 10
	// maxDrain is the most of an unread request body read and discarded
	// to keep a connection open (net/http's maxPostHandlerReadBytes).
	maxDrain = 256 << 10
	// lingerTimeout bounds how long a closing connection reads and
	// discards what the client still sends after the server's FIN, so
	// that the close does not reset the connection under the response.
	lingerTimeout = 500 * time.Millisecond
	// readBufferSize is the size of a connection's bufio.Reader.
	readBufferSize = 4 << 10

	// DefaultBodyReadTimeout is Server.BodyReadTimeout's default. A
	// sandbox sends its request bodies over a local link where they move
	// in milliseconds; a body that makes no progress for 30 s comes from a
	// client that stalled on purpose or is stuck, and it would hold its
	// goroutine and the router's in-flight slot. 30 s still covers a
	// sandbox starved of CPU or briefly frozen by its cgroup.
	DefaultBodyReadTimeout = 30 * time.Second
	// DefaultBodyTimeout is Server.BodyTimeout's default. The progress
	// deadline alone lets a client trickle a byte every 29 s for as long
	// as it likes; a whole body of 32 MiB (the router's largest) arrives
	// within a minute even at 0.5 MiB/s, far below any local link.
	DefaultBodyTimeout = 60 * time.Second
	// DefaultWriteTimeout is Server.WriteTimeout's default. Streamed LLM
	// output can pause for tens of seconds between events (a model
	// thinking, a slow upstream), but the client only has to take what
	// was sent: one that reads nothing for a minute, while the kernel's
	// buffers are full, is gone or stalling on purpose.
	DefaultWriteTimeout = 60 * time.Second
	// DefaultMaxConns is Server.MaxConns's default. An agent keeps a
	// handful of connections to the router (parallel tool calls,
	// subagents); 512 is far above that, yet bounds what one sandbox's
	// listener can take of the router's file descriptors (shared by all
	// sandboxes) and memory (a goroutine and buffers per connection).
	DefaultMaxConns = 512
)

// Server serves HTTP/1.x on the connections its listeners accept. Its
// exported fields must not be changed once Serve is called.
type Server struct {
	// Handler answers every request; required.
	Handler http.Handler
	// ReadHeaderTimeout bounds the time from a request's first byte (from
	// the accept for a connection's first request) to the end of its
	// head. Zero means no limit.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection. Zero means no limit.
	IdleTimeout time.Duration
	// BodyReadTimeout bounds each wait for request body bytes: the body
	// must make progress at least this often, or the handler's read fails
	// with a timeout (os.ErrDeadlineExceeded) and the connection closes
	// after the response. Zero means DefaultBodyReadTimeout; a negative
	// value means no limit.
	BodyReadTimeout time.Duration
	// BodyTimeout bounds the time from the end of a request's head to the
	// end of its body (reads after it fail as with BodyReadTimeout),
	// however the client paces it. It runs while the handler does other
	// things between reads too. Zero means DefaultBodyTimeout; a negative
	// value means no limit.
	BodyTimeout time.Duration
	// WriteTimeout bounds each write to the connection (the deadline is
	// set anew before every write, and every 256 KiB of a larger one, so
	// a long stream is fine as long as the client keeps reading). A write that times out fails the handler's
	// Write or Flush, cancels the request's context and resets the
	// connection. Zero means DefaultWriteTimeout; a negative value means
	// no limit.
	WriteTimeout time.Duration
	// MaxConns bounds the open connections per listener (per Serve call).
	// At the limit the server stops accepting, leaving new connections in
	// the kernel's backlog (no descriptor is taken for them) until one
	// closes, and logs a warning once per episode. Zero means
	// DefaultMaxConns; a negative value means no limit.
	MaxConns int
	// MaxHeaderBytes bounds the bytes of a request head (request line and
	// header fields); a longer head gets 431. Zero means
	// http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// Logger receives bad requests and superfluous WriteHeader calls at
	// debug level and handler panics at error level. Nil discards.
	Logger *slog.Logger
	// BaseContext, if set, returns the context every request's context
	// derives from for connections accepted from the listener.
	BaseContext func(net.Listener) context.Context

	mu          sync.Mutex
	listeners   map[*net.Listener]struct{}
	conns       map[*conn]struct{}
	closing     bool
	closed      chan struct{} // closed by Shutdown (made by whichever comes first)
	drained     chan struct{} // closed once closing and conns is empty
	drainClosed bool
}

// connState is where a connection is in its life; Shutdown closes idle and
// lingering connections and waits for active ones.
type connState int

const (
	stateIdle    connState = iota // waiting for a request's first byte
	stateActive                   // reading a request or running its handler
	stateClosing                  // lingering before the close
)

// Serve accepts connections on ln and serves each in its own goroutine. It
// returns http.ErrServerClosed after Shutdown, or the listener's error; it
// closes ln when it returns (as net/http's Serve does).
func (s *Server) Serve(ln net.Listener) error {
	defer ln.Close()
	if s.Handler == nil {
		return errors.New("h1: Server.Handler is nil")
	}
	base := context.Background()
	if s.BaseContext != nil {
		if base = s.BaseContext(ln); base == nil {
			return errors.New("h1: BaseContext returned a nil context")
		}
	}
	lp := &ln
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	s.listeners[lp] = struct{}{}
	closed := s.closedLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, lp)
		s.mu.Unlock()
	}()

	// slots holds a token per open connection when the count is bounded;
	// the loop takes one before each Accept.
	var slots chan struct{}
	if n := s.MaxConns; n >= 0 {
		if n == 0 {
			n = DefaultMaxConns
		}
		slots = make(chan struct{}, n)
	}
	haveSlot, atLimit := false, false
	var backoff time.Duration
	for {
		if slots != nil && !haveSlot {
			select {
			case slots <- struct{}{}:
				atLimit = false
			default:
				if !atLimit {
					atLimit = true
					s.logger().Warn("connection limit reached: not accepting until a connection closes",
						"listener", ln.Addr().String(), "limit", cap(slots))
				}
				select {
				case slots <- struct{}{}:
				case <-closed:
					return http.ErrServerClosed
				}
			}
			haveSlot = true
		}
		nc, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() {
				return http.ErrServerClosed
			}
			if !temporary(err) {
				return fmt.Errorf("h1: accept on %s: %w", ln.Addr(), err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logger().Warn("accept failed, retrying", "reason", err.Error(), "duration", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(base, nc)
		if c == nil {
			nc.Close()
			return http.ErrServerClosed
		}
		c.slots, haveSlot = slots, false
		go c.serve()
	}
}

// temporary reports whether an Accept error is worth retrying: running
// out of descriptors or memory, or a connection aborted before the accept.
func temporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// Shutdown stops the listeners, closes idle connections and waits for the
// requests in flight to finish. When ctx ends first, it closes the
// remaining connections, cancels their requests' contexts and returns
// ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.closedLocked())
	}
	s.closing = true
	var err error
	for lp := range s.listeners {
		if cerr := (*lp).Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = fmt.Errorf("h1: close listener %s: %w", (*lp).Addr(), cerr)
		}
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	s.checkDrainedLocked()
	for c := range s.conns {
		if c.state != stateActive {
			c.nc.Close()
		}
	}
	drained := s.drained
	s.mu.Unlock()

	select {
	case <-drained:
		return err
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
		c.cancelRequest()
	}
	s.mu.Unlock()
	return ctx.Err()
}

// closedLocked returns the channel Shutdown closes; s.mu is held.
func (s *Server) closedLocked() chan struct{} {
	if s.closed == nil {
		s.closed = make(chan struct{})
	}
	return s.closed
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) checkDrainedLocked() {
	if s.closing && len(s.conns) == 0 && s.drained != nil && !s.drainClosed {
		s.drainClosed = true
		close(s.drained)
	}
}

// setState records c's state; once the server is shutting down it refuses
// to make c idle, and to make an idle c active (Shutdown closed it as
// idle; a request read from its buffers must not run): the caller then
// closes c.
func (s *Server) setState(c *conn, st connState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing && (st != stateActive || c.state == stateIdle) {
		return false
	}
	c.state = st
	return true
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// bodyReadTimeout, bodyTimeout and writeTimeout are the effective
// timeouts, 0 for none.
func (s *Server) bodyReadTimeout() time.Duration {
	return orDefault(s.BodyReadTimeout, DefaultBodyReadTimeout)
}
func (s *Server) bodyTimeout() time.Duration  { return orDefault(s.BodyTimeout, DefaultBodyTimeout) }
func (s *Server) writeTimeout() time.Duration { return orDefault(s.WriteTimeout, DefaultWriteTimeout) }

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return http.DefaultMaxHeaderBytes
}

// conn is one client connection and the buffers its requests reuse.
type conn struct {
	s      *Server
	nc     net.Conn
	ctx    context.Context // the base context with the local address
	remote string
	lim    limitReader   // counts the head's bytes for MaxHeaderBytes
	br     *bufio.Reader // reads from lim
	state  connState     // guarded by s.mu
	wto    time.Duration // the write timeout, 0 for none
	wdl    time.Time     // the handler's write deadline, when wfixed
	wfixed bool          // the handler set the write deadline (ResponseController)
	slots  chan struct{} // Serve's connection tokens (one is c's), nil for none

	pend []byte   // body bytes held before the head is committed
	out  []byte   // head and framed body bytes not yet written
	keys []string // header keys, sorted when writing a head
	werr error    // the first write error; the connection is then done

	watch // the disconnect watch (watch.go)
}

// newConn registers a connection, or returns nil when the server is
// shutting down.
func (s *Server) newConn(base context.Context, nc net.Conn) *conn {
	c := &conn{
		s:      s,
		nc:     nc,
		ctx:    context.WithValue(base, http.LocalAddrContextKey, nc.LocalAddr()),
		remote: nc.RemoteAddr().String(),
		lim:    limitReader{nc: nc},
		wto:    s.writeTimeout(),
	}
	c.br = bufio.NewReaderSize(&c.lim, readBufferSize)
	c.watch.init(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	c.state = stateIdle
	s.conns[c] = struct{}{}
	return c
}

// serve answers the requests on c until it closes.
func (c *conn) serve() {
	graceful := false
	defer func() {
		c.close(graceful)
		if c.slots != nil {
			<-c.slots // the listener may accept another
		}
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.checkDrainedLocked()
		c.s.mu.Unlock()
	}()
	for first := true; ; first = false {
		if !c.awaitRequest(first) {
			return
		}
		req, code, reason, err := c.readRequest()
		if code != 0 {
			c.s.logger().Debug("bad request", "remote", c.remote, "status", code, "reason", reason, "err", err)
			c.reject(code, reason)
			graceful = true
			return
		}
		if req == nil {
			return // the client hung up or timed out: nothing to answer
		}
		keep := c.handle(req)
		if !keep {
			graceful = c.werr == nil
			return
		}
	}
}

// awaitRequest waits for the first byte of the next request and sets the
// head's read limit and deadline.
func (c *conn) awaitRequest(first bool) bool {
	limit := c.s.maxHeaderBytes()
	if c.br.Buffered() == 0 {
		if !c.s.setState(c, stateIdle) {
			return false
		}
		c.lim.n, c.lim.err = limit, nil
		c.lim.bodyDeadlines(0, 0)
		wait := c.s.IdleTimeout
		if first {
			wait = c.s.ReadHeaderTimeout // from the accept
		}
		c.setReadDeadline(wait)
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
		if !c.s.setState(c, stateActive) {
			return false
		}
		if first {
			return true
		}
	} else {
		// A pipelined request: its bytes already read count as head bytes.
		c.lim.n, c.lim.err = max(limit-int64(c.br.Buffered()), 1), nil
		c.lim.bodyDeadlines(0, 0)
		c.s.setState(c, stateActive)
	}
	c.setReadDeadline(c.s.ReadHeaderTimeout)
	return true
}

func (c *conn) setReadDeadline(d time.Duration) {
	var t time.Time
	if d > 0 {
		t = time.Now().Add(d)
	}
	_ = c.nc.SetReadDeadline(t)
}

// readRequest reads and checks a request head. A request that must be
// refused comes back as a status code and reason; a connection that ended
// (EOF, timeout, reset) as all zero values.
func (c *conn) readRequest() (req *http.Request, code int, reason string, err error) {
	req, err = http.ReadRequest(c.br)
	if err != nil {
		if c.lim.n <= 0 {
			return nil, http.StatusRequestHeaderFieldsTooLarge, "", err
		}
		// http.ReadRequest may report a cut head as malformed: what the
		// connection itself said decides whether anyone is listening.
		if cerr := c.lim.err; cerr != nil {
			var ne net.Error
			if errors.Is(cerr, io.EOF) || errors.Is(cerr, net.ErrClosed) || errors.Is(cerr, syscall.ECONNRESET) ||
				(errors.As(cerr, &ne) && ne.Timeout()) {
				return nil, 0, "", nil
			}
		}
		return nil, http.StatusBadRequest, "", err
	}
	// The head's deadline stays: nothing reads until the body (whose
	// reads set their own deadlines), the disconnect watch (which lifts
	// it) or the next head (which sets its own).
	c.lim.n = math.MaxInt64
	if req.ProtoMajor != 1 {
		return nil, http.StatusHTTPVersionNotSupported, "unsupported protocol version", nil
	}
	// Only origin-form targets ("/path") and "*": in absolute-form the
	// target's host replaces the Host field, which http.ReadRequest then
	// deletes, so a missing or malformed one would go unseen (RFC 9112
	// §3.2 wants 400 for both); it is meant for proxies, which this
	// server is not. Authority-form (CONNECT) is for proxies too.
	if req.RequestURI != "*" && !strings.HasPrefix(req.RequestURI, "/") {
		return nil, http.StatusBadRequest, "request target not in origin form", nil
	}
	// http.ReadRequest refuses two Host fields and moves the one to
	// req.Host.
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		return nil, http.StatusBadRequest, "missing required Host header", nil
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return nil, http.StatusBadRequest, "malformed Host header", nil
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, http.StatusBadRequest, "invalid header name", nil
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, http.StatusBadRequest, "invalid header value", nil
			}
		}
	}
	return req, 0, "", nil
}

// reject answers a request that cannot be served; the caller closes the
// connection.
func (c *conn) reject(code int, reason string) {
	body := strconv.Itoa(code) + " " + http.StatusText(code)
	if reason != "" {
		body += ": " + reason
	}
	msg := "HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Connection: close\r\n\r\n" + body
	c.write([]byte(msg))
}

// handle runs the handler for req and finishes its response. It reports
// whether the connection may serve another request.
func (c *conn) handle(req *http.Request) bool {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	req = req.WithContext(ctx)
	req.RemoteAddr = c.remote
	c.wfixed = false
	w := &response{c: c, req: req, header: make(http.Header), cl: -1, isHead: req.Method == http.MethodHead}
	// HTTP/1.0 always closes (no keep-alive); so does a chunked request,
	// whose Content-Length, if it had one, http.ReadRequest dropped.
	w.closeAfter = req.Close || !req.ProtoAtLeast(1, 1) || len(req.TransferEncoding) > 0
	if req.Body != nil && req.Body != http.NoBody {
		w.body = &body{w: w, r: req.Body, remaining: req.ContentLength}
		c.lim.bodyDeadlines(c.s.bodyReadTimeout(), c.s.bodyTimeout())
		if httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") && req.ProtoAtLeast(1, 1) {
			w.body.expect = true
		}
		req.Body = w.body
	}
	if vv := req.Header["Expect"]; len(vv) > 0 && vv[0] != "" && !httpguts.HeaderValuesContainsToken(vv, "100-continue") {
		c.reject(http.StatusExpectationFailed, "unsupported Expect header")
		return false
	}

	c.startWatch(cancel, w.body == nil)
	ok := c.runHandler(w, req)
	c.stopWatch()
	if !ok {
		if !w.committed && c.werr == nil {
			c.reject(http.StatusInternalServerError, "")
		}
		w.done = true
		if w.body != nil {
			w.body.close()
		}
		if w.committed {
			// A cut response: reset the connection rather than end it
			// with a FIN that could pass for the end of the body.
			if tc, ok := c.nc.(interface{ SetLinger(int) error }); ok {
				_ = tc.SetLinger(0)
			}
			c.werr = errHandlerPanic
		}
		return false
	}
	w.finish()
	return !w.closeAfter && c.werr == nil && !c.hungUp && !c.s.shuttingDown()
}

var errHandlerPanic = errors.New("h1: handler panicked")

// runHandler calls the handler and reports false when it panicked.
func (c *conn) runHandler(w *response, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				c.s.logger().Error("handler panic", "remote", c.remote, "method", req.Method, "path", req.URL.Path,
					"reason", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	c.s.Handler.ServeHTTP(w, req)
	return true
}

// close closes the connection; graceful sends a FIN first and reads what
// the client still sends for a moment, so that the kernel does not reset
// the connection (discarding the response) for unread data. After a failed
// write the connection is reset: the response is cut anyway, and a
// client that stopped reading would otherwise keep the unsent bytes in
// the kernel (an orphaned socket) for minutes.
func (c *conn) close(graceful bool) {
	c.watch.shutdown()
	if c.werr != nil && !graceful {
		if tc, ok := c.nc.(interface{ SetLinger(int) error }); ok {
			_ = tc.SetLinger(0)
		}
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && graceful && c.s.setState(c, stateClosing) {
		if cw.CloseWrite() == nil {
			_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.CopyN(io.Discard, c.nc, maxDrain)
		}
	}
	c.nc.Close()
}

// limitReader reads from nc until n bytes are read, then reports EOF; the
// connection sets n before each request head and lifts it after. err is
// the last error nc returned. While a request body is read, every read
// from nc must return within perRead and by until (see bodyDeadlines).
type limitReader struct {
	nc      net.Conn
	n       int64
	err     error
	perRead time.Duration // 0: no per-read deadline
	until   time.Time     // zero: no whole-body deadline
	timed   bool          // perRead or until is set
}

// bodyDeadlines makes each read from now on return within perRead and
// within whole from now (0 for no bound; both 0 ends the body deadlines).
func (l *limitReader) bodyDeadlines(perRead, whole time.Duration) {
	l.perRead, l.until, l.timed = perRead, time.Time{}, perRead > 0 || whole > 0
	if whole > 0 {
		l.until = time.Now().Add(whole)
	}
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	if l.timed {
		t := l.until
		if l.perRead > 0 {
			if next := time.Now().Add(l.perRead); t.IsZero() || next.Before(t) {
				t = next
			}
		}
		_ = l.nc.SetReadDeadline(t)
	}
	n, err := l.nc.Read(p)
	l.n -= int64(n)
	if err != nil {
		l.err = err
	}
	return n, err
}
