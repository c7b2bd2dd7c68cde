package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer accepts loopback connections and runs serve on each; it counts
// connections.
type rawServer struct {
	ln    net.Listener
	conns atomic.Int32
	wg    sync.WaitGroup
}

func newRawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

// serveOK answers every request on the connection with body until the
// client closes it.
func serveOK(body string, extraHeader string) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			_, err = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"+extraHeader+"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
			if err != nil {
				return
			}
		}
	}
}

func testLean(maxIdle int, idle time.Duration, next http.RoundTripper) *leanTransport {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return newLeanTransport(next, d.DialContext, maxIdle, idle)
}

func post(t *testing.T, tr http.RoundTripper, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return tr.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func TestLeanTransportReuse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		header    string // extra response header
		readBody  bool
		wantConns int32
	}{
		{"keep-alive response read to the end reuses one connection", "", true, 1},
		{"Connection: close response is not reused", "Connection: close\r\n", true, 3},
		{"body closed before its end closes the connection", "", false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, serveOK("hello world", tc.header))
			tr := testLean(8, time.Minute, nil)
			defer tr.CloseIdleConnections()
			for i := range 3 {
				resp, err := post(t, tr, srv.url()+"/v1/x", `{"i":1}`)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if tc.readBody {
					if got := readAll(t, resp); got != "hello world" {
						t.Fatalf("body %q", got)
					}
				} else {
					buf := make([]byte, 3)
					_, _ = io.ReadFull(resp.Body, buf)
					resp.Body.Close()
				}
			}
			if got := srv.conns.Load(); got != tc.wantConns {
				t.Fatalf("server saw %d connections, want %d", got, tc.wantConns)
			}
		})
	}
}

// A connection the server closed while it sat in the pool must not be
// used: the next request goes out on a fresh connection and succeeds.
func TestLeanTransportSkipsConnectionClosedWhileIdle(t *testing.T) {
	closed := make(chan struct{}, 4)
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close() // no Connection: close header: the client believes it may reuse it
		closed <- struct{}{}
	})
	tr := testLean(8, time.Minute, nil)
	defer tr.CloseIdleConnections()
	for i := range 3 {
		resp, err := post(t, tr, srv.url()+"/", "x")
		if err != nil {
			t.Fatalf("request %d on a server that closes idle connections: %v", i, err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("body %q", got)
		}
		<-closed
		time.Sleep(10 * time.Millisecond) // let the FIN reach the pooled socket
	}
	if got := srv.conns.Load(); got != 3 {
		t.Fatalf("server saw %d connections, want 3", got)
	}
}

func TestLeanTransportIdleTimeoutAndPoolLimit(t *testing.T) {
	srv := newRawServer(t, serveOK("ok", ""))
	t.Run("expired idle connection is not reused", func(t *testing.T) {
		tr := testLean(8, time.Nanosecond, nil)
		defer tr.CloseIdleConnections()
		before := srv.conns.Load()
		for range 2 {
			resp, err := post(t, tr, srv.url(), "x")
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
		}
		if got := srv.conns.Load() - before; got != 2 {
			t.Fatalf("%d connections, want 2", got)
		}
	})
	t.Run("pool keeps at most maxIdle connections per host", func(t *testing.T) {
		tr := testLean(1, time.Minute, nil)
		defer tr.CloseIdleConnections()
		var resps []*http.Response
		for range 3 { // three in flight at once: three connections
			resp, err := post(t, tr, srv.url(), "x")
			if err != nil {
				t.Fatal(err)
			}
			resps = append(resps, resp)
		}
		for _, r := range resps {
			readAll(t, r)
		}
		tr.mu.Lock()
		n := 0
		for _, p := range tr.idle {
			n += len(p)
		}
		tr.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d idle connections pooled, want 1", n)
		}
	})
}

func TestLeanTransportRequestOnTheWire(t *testing.T) {
	got := make(chan []byte, 1)
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		var b bytes.Buffer
		b.WriteString(req.Method + " " + req.RequestURI + "\n")
		b.WriteString("Host=" + req.Host + "\n")
		b.WriteString("Content-Length=" + strconv.Itoa(int(req.ContentLength)) + "\n")
		b.WriteString("Accept-Encoding=" + req.Header.Get("Accept-Encoding") + "\n")
		b.WriteString("Authorization=" + req.Header.Get("Authorization") + "\n")
		b.Write(body)
		got <- b.Bytes()
		_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	tr := testLean(8, time.Minute, nil)
	defer tr.CloseIdleConnections()
	body := `{"model":"m","messages":[{"role":"user","content":"h\u00e9"}]}`
	req, _ := http.NewRequest(http.MethodPost, srv.url()+"/v1/chat/completions?beta=true", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-test")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNoContent || resp.Body != http.NoBody {
		t.Fatalf("status %d body %T", resp.StatusCode, resp.Body)
	}
	want := "POST /v1/chat/completions?beta=true\nHost=" + srv.ln.Addr().String() + "\nContent-Length=" + strconv.Itoa(len(body)) +
		"\nAccept-Encoding=\nAuthorization=Bearer sk-test\n" + body
	if g := string(<-got); g != want {
		t.Fatalf("server received\n%s\nwant\n%s", g, want)
	}
}

func TestLeanTransportResponses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		raw      string
		wantErr  bool
		wantCode int
		wantBody string
	}{
		{"100 Continue before the answer is skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200, "ok"},
		{"chunked body is decoded", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", false, 200, "abcde"},
		{"close-delimited body is read to EOF", "HTTP/1.1 200 OK\r\n\r\nuntil close", false, 200, "until close"},
		{"101 Switching Protocols is refused", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", true, 0, ""},
		{"garbage instead of HTTP is an error", "SSH-2.0-OpenSSH\r\n\r\n", true, 0, ""},
		{"connection closed before any answer is an error", "", true, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, tc.raw)
			})
			tr := testLean(8, time.Minute, nil)
			defer tr.CloseIdleConnections()
			resp, err := post(t, tr, srv.url(), "x")
			if tc.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("no error, status %d", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := readAll(t, resp); got != tc.wantBody {
				t.Fatalf("body %q, want %q", got, tc.wantBody)
			}
		})
	}
}

// Cancelling the request's context unblocks it promptly, whether it waits
// for the response head or for more body, and the connection is dropped.
func TestLeanTransportCancel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string // written before hanging
	}{
		{"waiting for the response head", ""},
		{"waiting for more of a streamed body", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, tc.answer)
				<-release
			})
			defer close(release)
			tr := testLean(8, time.Minute, nil)
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.url(), strings.NewReader("x"))
			time.AfterFunc(50*time.Millisecond, cancel)
			start := time.Now()
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil {
				t.Fatal("no error after cancel")
			}
			if tc.answer == "" && !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Fatalf("cancel took %s", el)
			}
			tr.mu.Lock()
			defer tr.mu.Unlock()
			for _, p := range tr.idle {
				if len(p) > 0 {
					t.Fatal("a cancelled connection was pooled")
				}
			}
		})
	}
}

type recordingRT struct{ urls []string }

func (r *recordingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	r.urls = append(r.urls, req.URL.String())
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
}

func TestLeanTransportRefusesAndDelegates(t *testing.T) {
	next := &recordingRT{}
	tr := testLean(8, time.Minute, next)
	t.Run("https goes to the standard transport", func(t *testing.T) {
		resp, err := post(t, tr, "https://api.example.test/v1/messages", "x")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("resp %v err %v", resp, err)
		}
		if len(next.urls) != 1 || next.urls[0] != "https://api.example.test/v1/messages" {
			t.Fatalf("next saw %v", next.urls)
		}
	})
	t.Run("header value with a line break is refused before dialing", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:9/", strings.NewReader("x"))
		req.Header["User-Agent"] = []string{"a\r\nX-Injected: 1"}
		if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "invalid header field value") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("unreachable upstream is a dial error", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, err := post(t, tr, "http://"+addr+"/", "x"); err == nil {
			t.Fatal("no error")
		}
	})
}

// writeCounter counts Write calls on a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// The request head and an upstream body built by newBodyReader leave in
// one write(2): any other body type makes net/http flush the head first
// (a second syscall and a second wake-up of the provider).
func TestLeanTransportWritesHeadAndBodyTogether(t *testing.T) {
	srv := newRawServer(t, serveOK("ok", ""))
	var conns []*writeCounter
	var mu sync.Mutex
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := newLeanTransport(nil, func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		wc := &writeCounter{Conn: c}
		mu.Lock()
		conns = append(conns, wc)
		mu.Unlock()
		return wc, nil
	}, 8, time.Minute)
	defer tr.CloseIdleConnections()
	for _, size := range []int{1, 1 << 10, 10 << 10} {
		body := []byte(strings.Repeat("b", size))
		req, _ := http.NewRequest(http.MethodPost, srv.url()+"/v1/chat/completions", nil)
		req.Body, req.ContentLength = newBodyReader(body), int64(len(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("body %q", got)
		}
		mu.Lock()
		if len(conns) != 1 {
			t.Fatalf("%d connections dialled, want 1 reused", len(conns))
		}
		if n := conns[0].writes.Swap(0); n != 1 {
			t.Fatalf("%d-byte body: request sent in %d writes, want 1", size, n)
		}
		mu.Unlock()
	}
}
