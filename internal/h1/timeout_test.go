package h1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/syncbuf"
)

// awaitGoroutines waits (bounded) until no more than want goroutines run.
func awaitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines 5 s after the connection ended, want at most %d:\n%s",
				runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitNoConns waits (bounded) until s tracks no connection.
func awaitNoConns(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server still tracks %d connections 5 s later", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialSmallWindow dials addr with a 4 KiB receive buffer set before the
// connect, so that a client that does not read stops the server soon.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A client that stops reading a streamed response: the write deadline
// fails the handler's Write (os.ErrDeadlineExceeded), cancels the
// request's context, resets the connection and ends its goroutines.
func TestWriteTimeoutClientStopsReading(t *testing.T) {
	tests := []struct {
		name  string
		wrap  func(net.Listener) net.Listener
		flush bool // Flush after every write (an SSE stream) or not
	}{
		{"streamed with Flush, plain TCP", plainListener, true},
		{"streamed with Flush, raw-syscall connection (rawsock)", rawListener, true},
		{"large writes without Flush, raw-syscall connection (rawsock)", rawListener, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				writes int
				err    error
				ctxErr error
			}
			done := make(chan result, 1)
			chunk := strings.Repeat("x", 64<<10)
			s := &Server{WriteTimeout: 300 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				var res result
				for res.writes = 1; res.writes <= 1000; res.writes++ { // at most 64 MB
					if _, res.err = io.WriteString(w, chunk); res.err == nil && tt.flush {
						res.err = http.NewResponseController(w).Flush()
					}
					if res.err != nil {
						break
					}
				}
				res.ctxErr = r.Context().Err()
				done <- res
			})}
			addr := startServerWrapped(t, s, tt.wrap)
			time.Sleep(10 * time.Millisecond) // Serve's goroutine is up
			base := runtime.NumGoroutine()
			c := dialSmallWindow(t, addr)
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the handler's writes still block 10 s after the client stopped reading (WriteTimeout 300 ms)")
			}
			if !errors.Is(res.err, os.ErrDeadlineExceeded) {
				t.Errorf("write %d returned %v, want os.ErrDeadlineExceeded", res.writes, res.err)
			}
			if res.ctxErr != context.Canceled {
				t.Errorf("request context after the failed write: %v, want context.Canceled", res.ctxErr)
			}
			awaitNoConns(t, s)
			awaitGoroutines(t, base)

			// The client finds a reset connection (the unsent rest of the
			// response is dropped, not left to the kernel), after the
			// start of a chunked 200.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client read ended with %v after %d bytes, want ECONNRESET", err, len(got))
			}
			if len(got) > 0 {
				const wantHead = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\nxxxx"
				if head := dateRE.ReplaceAllString(string(got[:min(len(got), 200)]), "Date: X\r\n"); !strings.HasPrefix(head, wantHead) {
					t.Errorf("client read %q..., want %q...", head[:min(len(head), len(wantHead))], wantHead)
				}
			}
		})
	}
}

// A client that keeps reading a slow stream is not cut by the write
// deadline: it bounds each write, not the response.
func TestWriteTimeoutSlowStreamThatIsRead(t *testing.T) {
	s := &Server{WriteTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 5; i++ {
			_, _ = fmt.Fprintf(w, "data: %d\n\n", i)
			if err := http.NewResponseController(w).Flush(); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // 500 ms in all
		}
	})}
	addr := startServer(t, s)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nDate: X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
		"9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n9\r\ndata: 3\n\n\r\n9\r\ndata: 4\n\n\r\n0\r\n\r\n"
	if got := dateRE.ReplaceAllString(readUntilClosed(t, c, 5*time.Second), "Date: X\r\n"); got != want {
		t.Errorf("read %q, want %q", got, want)
	}
}

// A client that stops sending its request body: the handler's read fails
// with os.ErrDeadlineExceeded after BodyReadTimeout without progress, the
// response closes the connection, and its goroutines end. A body that
// trickles but progresses is read to its end, unless it outlasts
// BodyTimeout.
func TestBodyReadTimeout(t *testing.T) {
	tests := []struct {
		name   string
		head   string
		parts  []string      // sent gap apart, then the client goes silent
		gap    time.Duration // 0 for 100 ms
		limits [2]time.Duration
		want   string // the handler's answer: bytes read, timed out
		closes bool   // the server closes the connection after the answer
	}{
		{"Content-Length body stops mid-way",
			"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n", []string{"ab"}, 0, [2]time.Duration{}, "2 true", true},
		{"chunked body stops mid-chunk",
			"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", []string{"5\r\nhel"}, 0, [2]time.Duration{}, "3 true", true},
		{"nothing of the body is sent",
			"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n", nil, 0, [2]time.Duration{}, "0 true", true},
		{"100-continue, then no body",
			"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", nil, 0, [2]time.Duration{}, "0 true", true},
		{"trickling body that progresses within each deadline is read",
			"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n",
			[]string{"a", "b", "c", "d", "e", "f", "g", "h"}, 0, [2]time.Duration{}, "8 false", false},
		// Each part comes well within the 600 ms progress deadline, but
		// the body must end within 1 s of the head: the read waiting
		// for the third part (due at 1.2 s) fails at 1 s.
		{"trickling body that progresses but outlasts BodyTimeout",
			"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n", []string{"ab", "ab", "ab"},
			400 * time.Millisecond, [2]time.Duration{600 * time.Millisecond, time.Second}, "4 true", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.gap == 0 {
				tt.gap = 100 * time.Millisecond
			}
			if tt.limits[0] == 0 {
				tt.limits[0] = 300 * time.Millisecond // per read; BodyTimeout: the default
			}
			s := &Server{BodyReadTimeout: tt.limits[0], BodyTimeout: tt.limits[1], ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, err := io.ReadAll(r.Body)
					w.Header().Set("Content-Type", "text/plain")
					_, _ = fmt.Fprintf(w, "%d %v", len(b), errors.Is(err, os.ErrDeadlineExceeded))
				})}
			addr := startServer(t, s)
			time.Sleep(10 * time.Millisecond)
			base := runtime.NumGoroutine()
			c := dial(t, addr)
			if _, err := io.WriteString(c, tt.head); err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.parts {
				time.Sleep(tt.gap)
				if _, err := io.WriteString(c, p); err != nil {
					t.Fatal(err)
				}
			}
			want := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: " + fmt.Sprint(len(tt.want)) + "\r\n"
			if tt.closes {
				want += "Connection: close\r\n"
			}
			want += "\r\n" + tt.want
			if strings.Contains(tt.head, "100-continue") {
				want = "HTTP/1.1 100 Continue\r\n\r\n" + want
			}
			if !tt.closes {
				// The connection stays usable: a pipelined request that
				// closes it gets its answer after the first.
				if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				want += "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 7\r\nConnection: close\r\n\r\n0 false"
			}
			if got := dateRE.ReplaceAllString(readUntilClosed(t, c, 5*time.Second), "Date: X\r\n"); got != want {
				t.Errorf("read %q, want %q", got, want)
			}
			awaitNoConns(t, s)
			awaitGoroutines(t, base)
		})
	}
}

// The defaults apply when the fields are zero; negative values lift them.
func TestTimeoutDefaults(t *testing.T) {
	tests := []struct {
		name                      string
		s                         *Server
		wantRead, wantBody, wantW time.Duration
	}{
		{"zero means the defaults", &Server{}, DefaultBodyReadTimeout, DefaultBodyTimeout, DefaultWriteTimeout},
		{"set values are kept", &Server{BodyReadTimeout: time.Second, BodyTimeout: 3 * time.Second, WriteTimeout: 2 * time.Second},
			time.Second, 3 * time.Second, 2 * time.Second},
		{"negative means no limit", &Server{BodyReadTimeout: -1, BodyTimeout: -1, WriteTimeout: -1}, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.bodyReadTimeout(); got != tt.wantRead {
				t.Errorf("body read timeout %v, want %v", got, tt.wantRead)
			}
			if got := tt.s.bodyTimeout(); got != tt.wantBody {
				t.Errorf("body timeout %v, want %v", got, tt.wantBody)
			}
			if got := tt.s.writeTimeout(); got != tt.wantW {
				t.Errorf("write timeout %v, want %v", got, tt.wantW)
			}
		})
	}
}

// A request whose connection closes after the response anyway gets its
// answer at once when the handler leaves its body unread: the server does
// not first drain what a trickling client still sends (up to
// ReadHeaderTimeout, 10 s here) for a connection it is about to close.
func TestNoDrainBeforeClosingResponse(t *testing.T) {
	const okClose = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
	tests := []struct {
		name string
		send string // then the client goes silent
	}{
		{"chunked request (always closes)", "POST /noread HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
		{"Connection: close", "POST /noread HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 100\r\n\r\nhello"},
		{"HTTP/1.0", "POST /noread HTTP/1.0\r\nContent-Length: 100\r\n\r\nhello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServer(t, &Server{Handler: &testHandler{}, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second})
			c := dial(t, addr)
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			if got := dateRE.ReplaceAllString(readUntilClosed(t, c, 3*time.Second), "Date: X\r\n"); got != okClose {
				t.Errorf("read %q, want %q", got, okClose)
			}
		})
	}
}

// deadlineConn records the write deadlines set and the writes made.
type deadlineConn struct {
	*scriptConn
	events []string
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.events = append(c.events, "deadline")
	return nil
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.events = append(c.events, fmt.Sprintf("write %d", len(p)))
	return c.scriptConn.Write(p)
}

// Every write gets a fresh deadline, and a large handler Write gets one
// per 256 KiB: the client must keep reading, not take 1 MiB within one
// WriteTimeout. Without a timeout, no deadline is set.
func TestWriteDeadlinePerSlice(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "1048576")
		_, _ = w.Write(make([]byte, 1<<20))
	})
	head := len("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Wed, 26 Nov 2026 04:50:00 GMT\r\nContent-Length: 1048576\r\n\r\n")
	tests := []struct {
		name    string
		timeout time.Duration
		want    []string
	}{
		{"default timeout: a deadline per 256 KiB", 0, []string{
			"deadline", "write " + fmt.Sprint(head), "deadline", "write 262144", "deadline", "write 262144",
			"deadline", "write 262144", "deadline", "write 262144"}},
		{"no timeout: one write, no deadline", -1, []string{"write " + fmt.Sprint(head), "write 1048576"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dc := &deadlineConn{scriptConn: &scriptConn{in: strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\n\r\n")}}
			c := (&Server{Handler: handler, WriteTimeout: tt.timeout}).newConn(context.Background(), dc)
			c.serve()
			if got := strings.Join(dc.events, ", "); got != strings.Join(tt.want, ", ") {
				t.Errorf("events %s\nwant %s", got, strings.Join(tt.want, ", "))
			}
		})
	}
}

// A listener at MaxConns stops accepting: a further connection waits in
// the kernel's backlog, unserved, until one of the open ones closes, then
// it is served. The warning is logged once for the episode. Shutdown ends
// a Serve that waits for a slot (startServer's cleanup checks it returns
// http.ErrServerClosed).
func TestMaxConns(t *testing.T) {
	var logs syncbuf.Buffer
	s := &Server{Handler: &testHandler{}, MaxConns: 2,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	addr := startServer(t, s)
	exchange := func(c net.Conn) {
		t.Helper()
		if _, err := io.WriteString(c, helloReq); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(helloResp)+len("Wed, 26 Nov 2026 04:50:00 GMT")-len("X"))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("no answer: %v (read %q)", err, got)
		}
		if g := dateRE.ReplaceAllString(string(got), "Date: X\r\n"); g != helloResp {
			t.Fatalf("read %q, want %q", g, helloResp)
		}
	}
	c1, c2 := dial(t, addr), dial(t, addr)
	exchange(c1)
	exchange(c2) // both kept alive: the limit is reached
	c3 := dial(t, addr)
	if _, err := io.WriteString(c3, helloReq); err != nil {
		t.Fatal(err)
	}
	_ = c3.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c3.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a third connection over MaxConns 2 was answered (read %d bytes, %v)", n, err)
	}
	s.mu.Lock()
	open := len(s.conns)
	s.mu.Unlock()
	if open != 2 {
		t.Errorf("the server holds %d connections, want 2", open)
	}
	c1.Close()
	_ = c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(helloResp)+len("Wed, 26 Nov 2026 04:50:00 GMT")-len("X"))
	if _, err := io.ReadFull(c3, got); err != nil {
		t.Fatalf("the waiting connection was not served after one closed: %v", err)
	}
	if g := dateRE.ReplaceAllString(string(got), "Date: X\r\n"); g != helloResp {
		t.Fatalf("read %q, want %q", g, helloResp)
	}
	if n := strings.Count(logs.String(), "connection limit reached"); n != 1 {
		t.Errorf("%d limit warnings, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"connection limit reached: not accepting until a connection closes\" listener="+addr+" limit=2") {
		t.Errorf("warning lacks the listener and limit:\n%s", logs.String())
	}
}

// http.ResponseController's deadlines replace the server's timeouts for
// the rest of the request.
func TestResponseControllerDeadlines(t *testing.T) {
	type result struct {
		setErr, ioErr error
		n             int
	}
	tests := []struct {
		name    string
		s       *Server
		send    string
		handler func(w http.ResponseWriter, r *http.Request) result
		wantN   int // bytes moved before the deadline; -1 for any
	}{
		{"SetWriteDeadline bounds writes to a client that does not read, without WriteTimeout",
			&Server{WriteTimeout: -1}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			func(w http.ResponseWriter, r *http.Request) (res result) {
				res.setErr = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				chunk := make([]byte, 64<<10)
				for i := 0; i < 1000 && res.ioErr == nil; i++ {
					var n int
					n, res.ioErr = w.Write(chunk)
					res.n += n
				}
				return res
			}, -1},
		{"SetReadDeadline bounds body reads, without body timeouts",
			&Server{BodyReadTimeout: -1, BodyTimeout: -1}, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nab",
			func(w http.ResponseWriter, r *http.Request) (res result) {
				res.setErr = http.NewResponseController(w).SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				var b []byte
				b, res.ioErr = io.ReadAll(r.Body)
				res.n = len(b)
				return res
			}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan result, 1)
			tt.s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { done <- tt.handler(w, r) })
			addr := startServer(t, tt.s)
			c := dialSmallWindow(t, addr)
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			select {
			case res := <-done:
				if res.setErr != nil {
					t.Errorf("setting the deadline: %v", res.setErr)
				}
				if !errors.Is(res.ioErr, os.ErrDeadlineExceeded) {
					t.Errorf("after %d bytes: %v, want os.ErrDeadlineExceeded", res.n, res.ioErr)
				}
				if tt.wantN >= 0 && res.n != tt.wantN {
					t.Errorf("moved %d bytes, want %d", res.n, tt.wantN)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the handler still blocks 10 s later (deadline 300 ms)")
			}
		})
	}
}
