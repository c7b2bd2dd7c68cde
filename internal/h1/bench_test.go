package h1

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// benchRequests is a keep-alive connection's worth of requests like the
// router's: a POST with a JSON body, answered with a 1 KB body.
const benchRequests = 64

var benchScript = strings.Repeat("POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local:8080\r\nContent-Type: application/json\r\n"+
	"Content-Length: 100\r\nUser-Agent: bench\r\nAccept: application/json\r\n\r\n"+strings.Repeat("j", 100), benchRequests)

var benchHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "1024")
	_, _ = w.Write(benchBody)
	w.(http.Flusher).Flush()
})

var benchBody = []byte(strings.Repeat("b", 1024))

// BenchmarkServe serves one connection of benchRequests pipelined requests
// from memory (no sockets): the server's own CPU and allocations; compare
// the "net/http" sub-benchmark. One op is a connection of benchRequests
// requests; ns/req is per request.
func BenchmarkServe(b *testing.B) {
	b.Run("h1", func(b *testing.B) {
		s := &Server{Handler: benchHandler}
		benchConns(b, func(c net.Conn) { s.newConn(b.Context(), c).serve() })
	})
	b.Run("net/http", func(b *testing.B) {
		s := &http.Server{Handler: benchHandler}
		benchConns(b, func(c net.Conn) {
			ln := &oneConnListener{c: c, done: make(chan struct{})}
			go func() { _ = s.Serve(ln) }()
			<-ln.done
		})
	})
}

func benchConns(b *testing.B, serve func(net.Conn)) {
	b.ReportAllocs()
	for b.Loop() {
		sc := &scriptConn{in: strings.NewReader(benchScript), discard: true}
		serve(sc)
		if sc.n < benchRequests*1024 {
			b.Fatalf("wrote %d bytes for %d requests", sc.n, benchRequests)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRequests), "ns/req")
}

// oneConnListener hands out one connection; its next Accept fails once
// the server closed that connection (done).
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
	used bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.used {
		l.used = true
		return &closeNotifyConn{Conn: l.c, l: l}, nil
	}
	<-l.done // the connection is served: Serve returns
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

type closeNotifyConn struct {
	net.Conn
	l *oneConnListener
}

func (c *closeNotifyConn) Close() error {
	c.l.once.Do(func() { close(c.l.done) })
	return nil
}
