package h1

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// errAfterHandler is returned by a ResponseWriter used after its handler
// returned.
var errAfterHandler = errors.New("h1: ResponseWriter used after the handler returned")

// response is the http.ResponseWriter (and http.Flusher) of one request. The
// head is committed (framing chosen, head bytes built) at the first Flush,
// when the body outgrows bufferBeforeChunking, or when the handler returns;
// changes to the header map before that point are sent.
type response struct {
	c      *conn
	req    *http.Request
	body   *body // nil when the request has no body
	header http.Header
	isHead bool

	status     int   // 0 until WriteHeader
	cl         int64 // the declared or computed Content-Length, -1 unknown
	written    int64 // body bytes accepted from the handler
	committed  bool  // the head is in c.out (or written)
	chunked    bool
	closeAfter bool // close the connection after this response
	done       bool // the handler returned
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. Informational codes are
// ignored (100 Continue is sent by the server itself), as is a second call.
func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("h1: invalid WriteHeader code %v", code))
	}
	if w.done || w.status != 0 || code < 200 {
		w.c.s.logger().Debug("superfluous WriteHeader call ignored", "remote", w.c.remote, "path", w.req.URL.Path, "status", code)
		return
	}
	w.status = code
	if v := w.header.Get("Content-Length"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil || len(w.header["Content-Length"]) != 1 {
			w.c.s.logger().Debug("invalid Content-Length from handler dropped", "remote", w.c.remote, "path", w.req.URL.Path)
			delete(w.header, "Content-Length")
		} else {
			w.cl = int64(n)
		}
	}
}

// bodyAllowed reports whether the status permits a response body.
func (w *response) bodyAllowed() bool { return w.status != 204 && w.status != 304 }

// Write implements http.ResponseWriter. Writing more than a declared
// Content-Length fails with http.ErrContentLength (nothing of p is sent).
func (w *response) Write(p []byte) (int, error) {
	if w.done {
		return 0, errAfterHandler
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		w.closeAfter = true // the handler lost count of its body
		return 0, http.ErrContentLength
	}
	if w.c.werr != nil {
		return 0, w.c.werr
	}
	w.written += int64(len(p))
	if w.isHead || len(p) == 0 {
		return len(p), nil
	}
	if !w.committed {
		if len(w.c.pend)+len(p) <= bufferBeforeChunking {
			w.c.pend = append(w.c.pend, p...)
			return len(p), nil
		}
		w.commit(false, p)
	}
	w.writeBody(p)
	if w.c.werr != nil {
		return 0, w.c.werr
	}
	return len(p), nil
}

// Flush implements http.Flusher: the head and the body so far reach the
// client in one write.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush with its error (http.ResponseController uses it).
func (w *response) FlushError() error {
	if w.done {
		return errAfterHandler
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(false, nil)
	}
	w.c.flushOut()
	return w.c.werr
}

// SetWriteDeadline is http.ResponseController's: from now on this
// response's writes must end by t (the zero time: no deadline) instead of
// within WriteTimeout each.
func (w *response) SetWriteDeadline(t time.Time) error {
	if w.done {
		return errAfterHandler
	}
	w.c.wdl, w.c.wfixed = t, true
	return nil
}

// SetReadDeadline is http.ResponseController's: from now on the request
// body's reads must end by t (the zero time: no deadline) instead of
// within BodyReadTimeout and BodyTimeout. The head is read already.
func (w *response) SetReadDeadline(t time.Time) error {
	if w.done {
		return errAfterHandler
	}
	if b := w.body; b != nil {
		b.mu.Lock()
		if !b.closed {
			l := &w.c.lim
			l.perRead, l.until, l.timed = 0, t, true
		}
		b.mu.Unlock()
	}
	return nil
}

// finish completes the response after the handler returned.
func (w *response) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true, nil)
	} else if w.cl >= 0 && w.written != w.cl && w.bodyAllowed() && !w.isHead {
		w.closeAfter = true // the body is short of its declared length
	}
	if w.chunked {
		w.c.out = append(w.c.out, "0\r\n\r\n"...)
	}
	w.c.flushOut()
	w.done = true
	if cap(w.c.out) > keepOutBuffer {
		w.c.out = nil // an idle connection keeps little memory
	}
}

// commit chooses the framing and builds the head in c.out, followed by the
// body bytes held so far. final means the handler returned; next is the
// body the handler is writing, if any (its start may decide the sniffed
// Content-Type).
func (w *response) commit(final bool, next []byte) {
	c := w.c
	w.committed = true
	if httpguts.HeaderValuesContainsToken(w.header["Connection"], "close") || c.s.shuttingDown() {
		w.closeAfter = true
	}
	if w.body != nil {
		w.body.finish() // before the head: it may decide to close
	}
	switch {
	case !w.bodyAllowed():
	case w.cl >= 0:
		if final && w.written != w.cl && !w.isHead {
			w.closeAfter = true // the body is short of its declared length
		}
	case final && (!w.isHead || w.written > 0):
		w.cl = w.written
	case w.isHead:
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
	default:
		w.closeAfter = true // HTTP/1.0: the close ends the body
	}

	b := append(c.out, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	if text := http.StatusText(w.status); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(w.status), 10)
	}
	b = append(b, "\r\n"...)
	keys := c.keys[:0]
	for k := range w.header {
		if !serverOwned(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range w.header[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendFieldValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	clear(keys)
	c.keys = keys[:0]
	if _, ok := w.header["Date"]; !ok {
		b = append(b, "Date: "...)
		b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
		b = append(b, "\r\n"...)
	}
	if _, ok := w.header["Content-Type"]; !ok && len(c.pend)+len(next) > 0 && w.bodyAllowed() {
		b = append(b, "Content-Type: "...)
		b = append(b, http.DetectContentType(sniffable(c.pend, next))...)
		b = append(b, "\r\n"...)
	}
	if w.cl >= 0 && w.status != 204 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, w.cl, 10)
		b = append(b, "\r\n"...)
	}
	if w.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.closeAfter {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	c.out = b
	if len(c.pend) > 0 {
		pend := c.pend
		c.pend = c.pend[:0]
		w.writeBody(pend)
	}
}

// sniffLen is how much of a body http.DetectContentType considers.
const sniffLen = 512

// sniffable returns the start of a body held in pend and continued by next.
func sniffable(pend, next []byte) []byte {
	if len(next) == 0 || len(pend) >= sniffLen {
		return pend
	}
	if len(pend) == 0 {
		return next
	}
	return append(append(make([]byte, 0, sniffLen), pend...), next[:min(len(next), sniffLen-len(pend))]...)
}

// serverOwned reports whether k, in any letter case, names a field the
// server writes itself (framing and connection management): a handler's
// own, even under a non-canonical key set directly in the map, is dropped.
func serverOwned(k string) bool {
	var name string
	switch len(k) {
	case len("Trailer"):
		name = "Trailer"
	case len("Connection"):
		name = "Connection"
	case len("Content-Length"):
		name = "Content-Length"
	case len("Transfer-Encoding"):
		name = "Transfer-Encoding"
	default:
		return false
	}
	return k == name || strings.EqualFold(k, name)
}

// appendFieldValue appends a header value with control bytes other than
// HTAB (CR and LF above all: response splitting) replaced by spaces.
func appendFieldValue(b []byte, v string) []byte {
	if httpguts.ValidHeaderFieldValue(v) {
		return append(b, v...)
	}
	for i := 0; i < len(v); i++ {
		ch := v[i]
		if (ch < ' ' && ch != '\t') || ch == 0x7f {
			ch = ' '
		}
		b = append(b, ch)
	}
	return b
}

// writeBody frames p after a committed head and adds it to c.out, writing
// out when the buffer would grow past maxOutBuffer.
func (w *response) writeBody(p []byte) {
	c := w.c
	if w.chunked {
		c.out = strconv.AppendUint(c.out, uint64(len(p)), 16)
		c.out = append(c.out, "\r\n"...)
	}
	if len(c.out)+len(p) > maxOutBuffer {
		c.flushOut()
		if len(p) > maxOutBuffer {
			c.write(p)
			p = nil
		}
	}
	c.out = append(c.out, p...)
	if w.chunked {
		c.out = append(c.out, "\r\n"...)
	}
}

// flushOut writes c.out to the connection.
func (c *conn) flushOut() {
	if len(c.out) > 0 {
		c.write(c.out)
		c.out = c.out[:0]
	}
}

// writeSlice is the most written under one write deadline: a large
// handler Write must progress by this much per write timeout, not finish
// in one (rawsock slices its system calls the same way in the router).
const writeSlice = 256 << 10

// write writes p to the connection, each writeSlice within the write
// timeout. The first error is kept in c.werr and cancels the request's
// context (as net/http does): the connection is done.
func (c *conn) write(p []byte) {
	for c.werr == nil && len(p) > 0 {
		n := len(p)
		switch {
		case c.wfixed:
			_ = c.nc.SetWriteDeadline(c.wdl)
		case c.wto > 0:
			n = min(n, writeSlice)
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.wto))
		}
		if _, err := c.nc.Write(p[:n]); err != nil {
			c.werr = err
			c.cancelRequest()
		}
		p = p[n:]
	}
}

// body is a request body as the handler sees it. It sends 100 Continue
// before the first read when the client asked for it, tells the disconnect
// watch when the body is read to its end, and is closed once the response
// head is committed.
type body struct {
	w         *response
	r         io.ReadCloser // from http.ReadRequest; never Closed (that drains without bound)
	remaining int64         // declared bytes not yet read, -1 when chunked

	mu      sync.Mutex
	expect  bool // the client waits for 100 Continue
	sent100 bool
	eof     bool
	closed  bool
	failed  bool // a read error other than EOF
}

// Read implements io.Reader.
func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.expect && !b.sent100 {
		b.sent100 = true
		c := b.w.c
		c.write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
		if c.werr != nil {
			return 0, c.werr
		}
	}
	n, err := b.r.Read(p)
	if b.remaining >= 0 {
		b.remaining -= int64(n)
		if b.remaining == 0 && err == nil {
			err = io.EOF // all declared bytes are read: the body is done
		}
	}
	if err == io.EOF {
		b.eof = true
		b.w.c.bodyDone()
	} else if err != nil {
		b.failed = true
	}
	return n, err
}

// Close implements io.Closer: later reads fail; the server drains what is
// left when the response head is committed.
func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

func (b *body) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// finish closes the body when the response head is committed: what the
// handler left unread is drained (up to maxDrain, within the header read
// timeout or, without one, the body read timeout) so that the connection
// can serve the next request; otherwise the connection closes after the
// response. A connection that closes after the response anyway is not
// drained: the response would wait for nothing.
func (b *body) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	w := b.w
	switch {
	case b.eof, w.closeAfter:
		return
	case b.failed, b.expect && !b.sent100, b.remaining > maxDrain:
		// Broken, never asked for, or too much to read: close instead.
		w.closeAfter = true
		return
	}
	// The drain as a whole is bounded: by the header read timeout (the
	// next head waits behind it), or by the body timeout without one.
	w.c.lim.bodyDeadlines(0, 0)
	d := w.c.s.ReadHeaderTimeout
	if d <= 0 {
		d = w.c.s.bodyReadTimeout()
	}
	w.c.setReadDeadline(d)
	_, err := io.CopyN(io.Discard, b.r, maxDrain+1)
	_ = w.c.nc.SetReadDeadline(time.Time{})
	if err == io.EOF {
		b.eof = true
		w.c.bodyDone()
		return
	}
	w.closeAfter = true
}
