package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/rawsock"
)

// scriptConn is a net.Conn that reads a fixed script and then reports
// EOF, and records what the server writes. It has no SyscallConn, so the
// disconnect watch is off.
type scriptConn struct {
	in      *strings.Reader
	mu      sync.Mutex
	out     bytes.Buffer
	discard bool // count the output only (benchmarks)
	n       int  // bytes written
	writes  int  // Write calls
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.in.Len() == 0 {
		return 0, io.EOF
	}
	return c.in.Read(p)
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += len(p)
	c.writes++
	if c.discard {
		return len(p), nil
	}
	return c.out.Write(p)
}

func (c *scriptConn) Close() error { return nil }
func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
}
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// runScript serves one scripted connection to its end and returns what
// the server wrote, with Date values replaced by "X".
func runScript(t testing.TB, s *Server, script string) string {
	t.Helper()
	sc := &scriptConn{in: strings.NewReader(script)}
	c := s.newConn(context.Background(), sc)
	if c == nil {
		t.Fatal("server refused the connection")
	}
	c.serve()
	return dateRE.ReplaceAllString(sc.out.String(), "Date: X\r\n")
}

var dateRE = regexp.MustCompile(`Date: [^\r\n]*\r\n`)

// testHandler answers by path; errs collects errors its writes returned.
type testHandler struct {
	mu   sync.Mutex
	errs []string
}

func (h *testHandler) record(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.errs = append(h.errs, "<nil>")
	} else {
		h.errs = append(h.errs, err.Error())
	}
}

func (h *testHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/hello":
		_, _ = io.WriteString(w, "hello")
	case "/echo": // the path, the host and the body
		w.Header().Set("X-Host", r.Host)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	case "/header": // the value of X-A
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, r.Header.Get("X-A"))
	case "/noread":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	case "/cl":
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello")
	case "/overrun":
		w.Header().Set("Content-Length", "3")
		w.Header().Set("Content-Type", "text/plain")
		_, err := io.WriteString(w, "hello")
		h.record(err)
		_, err = io.WriteString(w, "hel")
		h.record(err)
	case "/short":
		w.Header().Set("Content-Length", "10")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello")
	case "/big":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(bytes.Repeat([]byte("x"), 5000))
	case "/bigfirst": // a first write past bufferBeforeChunking, no Content-Type
		_, _ = io.WriteString(w, "<html>"+strings.Repeat("a", 5000))
	case "/smallthenbig": // the sniffed start spans two writes
		_, _ = io.WriteString(w, "<ht")
		_, _ = io.WriteString(w, "ml>"+strings.Repeat("a", 5000))
	case "/huge": // one write past the output buffer
		w.Header().Set("Content-Type", "text/plain")
		_, err := w.Write(bytes.Repeat([]byte("h"), 40000))
		h.record(err)
	case "/closebody":
		w.Header().Set("Content-Type", "text/plain")
		h.record(r.Body.Close())
		_, err := r.Body.Read(make([]byte, 1))
		h.record(err)
	case "/stream":
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "bb")
		w.(http.Flusher).Flush()
	case "/twice":
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "x")
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
		_, err := io.WriteString(w, "x")
		h.record(err)
	case "/inject":
		w.Header().Set("X-A", "a\r\nX-Injected: 1")
		w.Header()["Bad Name"] = []string{"x"}
		w.Header().Set("Content-Type", "text/plain")
	case "/lowerframing": // framing fields in the wrong case
		w.Header()["content-length"] = []string{"999"}
		w.Header()["transfer-encoding"] = []string{"chunked"}
		w.Header()["CONNECTION"] = []string{"keep-alive"}
		w.Header()["trailer"] = []string{"X-T"}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello")
	case "/panic":
		panic("boom")
	case "/flushpanic":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		panic("boom")
	case "/abort":
		panic(http.ErrAbortHandler)
	default:
		http.NotFound(w, r)
	}
}

const (
	helloResp = "HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello"
	helloReq  = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"
)

func badResp(code, text, reason string) string {
	body := code + " " + text
	if reason != "" {
		body += ": " + reason
	}
	return "HTTP/1.1 " + code + " " + text + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
}

func TestExchange(t *testing.T) {
	bad400 := badResp("400", "Bad Request", "")
	tests := []struct {
		name   string
		script string
		want   string
		errs   []string // what the handler's writes returned
	}{
		{"keep-alive: two requests on one connection", helloReq + helloReq, helloResp + helloResp, nil},
		{"pipelining: answered in order",
			"GET /echo HTTP/1.1\r\nHost: one\r\n\r\nGET /echo HTTP/1.1\r\nHost: two\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: one\r\nDate: X\r\nContent-Length: 0\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: two\r\nDate: X\r\nContent-Length: 0\r\n\r\n" + helloResp, nil},
		{"HTTP/1.0: closes after the response, the next request is not served",
			"GET /hello HTTP/1.0\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", nil},
		{"HTTP/1.0 keep-alive is not honoured",
			"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", nil},
		{"Connection: close closes after the response",
			"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", nil},
		{"HEAD: length but no body, then the next request",
			"HEAD /hello HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nDate: X\r\nContent-Length: 5\r\n\r\n" + helloResp, nil},
		{"HEAD of a streamed response: no framing, no body",
			"HEAD /stream HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nDate: X\r\n\r\n" + helloResp, nil},
		{"Content-Length body read by the handler",
			"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: a\r\nDate: X\r\nContent-Length: 5\r\n\r\nabcde" + helloResp, nil},
		{"chunked request body: read, then the connection closes",
			"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: a\r\nDate: X\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde", nil},
		{"smuggling CL+TE: chunked wins, the bytes after it are never a request",
			"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: a\r\nDate: X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", nil},
		{"smuggling TE+CL, CL first: same",
			"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n1\r\nz\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: a\r\nDate: X\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz", nil},
		{"smuggling: HTTP/1.0 with Transfer-Encoding: ignored (as http.ReadRequest does), then close",
			"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: \r\nDate: X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", nil},
		{"absolute-form target: refused (its host would replace the Host field, whose absence goes unseen)",
			"GET http://b.example/echo HTTP/1.1\r\nHost: a\r\n\r\n", badResp("400", "Bad Request", "request target not in origin form"), nil},
		{"absolute-form target without a Host field", "GET http://b.example/echo HTTP/1.1\r\n\r\n",
			badResp("400", "Bad Request", "request target not in origin form"), nil},
		{"absolute-form target with a bad host", "GET http://a%20b/echo HTTP/1.1\r\nHost: a\r\n\r\n", bad400, nil},
		{"authority-form target (CONNECT)", "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n",
			badResp("400", "Bad Request", "request target not in origin form"), nil},
		{"scheme-only target", "GET foo:bar HTTP/1.1\r\nHost: a\r\n\r\n", badResp("400", "Bad Request", "request target not in origin form"), nil},
		{"asterisk-form target (OPTIONS *) is served", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: X\r\nContent-Length: 19\r\n\r\n404 page not found\n", nil},
		{"a path starting with // is a path, not an authority", "GET //b.example/echo HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: X\r\nContent-Length: 19\r\n\r\n404 page not found\n", nil},
		{"smuggling: two different Content-Lengths", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", bad400, nil},
		{"two equal Content-Lengths are one", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: a\r\nDate: X\r\nContent-Length: 2\r\n\r\nab", nil},
		{"smuggling: Content-Length with a sign", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nab", bad400, nil},
		{"smuggling: Transfer-Encoding not chunked", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", bad400, nil},
		{"smuggling: Transfer-Encoding gzip, chunked", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", bad400, nil},
		{"smuggling: two Transfer-Encoding fields", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", bad400, nil},
		{"smuggling: bad chunk size", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
			"HTTP/1.1 400 Bad Request\r\nX-Host: a\r\nDate: X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", nil},
		{"obs-fold is joined with a space (as http.ReadRequest does)", "GET /header HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 7\r\n\r\none two", nil},
		{"obs-fold on the first header line", "GET /hello HTTP/1.1\r\n Host: a\r\n\r\n", bad400, nil},
		{"bare LF line ends are accepted (as http.ReadRequest does)", "GET /hello HTTP/1.1\nHost: a\n\n" + helloReq, helloResp + helloResp, nil},
		{"bare CR in a header value", "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", bad400, nil},
		{"NUL in a header value", "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", bad400, nil},
		{"DEL in a header value", "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n", bad400, nil},
		{"space in a header name", "GET /hello HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", badResp("400", "Bad Request", "invalid header name"), nil},
		{"colon-less header line", "GET /hello HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", bad400, nil},
		{"missing Host on HTTP/1.1", "GET /hello HTTP/1.1\r\n\r\n", badResp("400", "Bad Request", "missing required Host header"), nil},
		{"empty Host on HTTP/1.1", "GET /hello HTTP/1.1\r\nHost:\r\n\r\n", badResp("400", "Bad Request", "missing required Host header"), nil},
		{"duplicate Host", "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", bad400, nil},
		{"malformed Host", "GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n", badResp("400", "Bad Request", "malformed Host header"), nil},
		{"HTTP/1.0 without Host is fine", "GET /hello HTTP/1.0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", nil},
		{"garbage request line", "HELLO\r\n\r\n", bad400, nil},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", badResp("505", "HTTP Version Not Supported", "unsupported protocol version"), nil},
		{"HTTP/0.9-style version", "GET /hello HTTP/0.9\r\n\r\n", badResp("505", "HTTP Version Not Supported", "unsupported protocol version"), nil},
		{"unread body is drained and the connection kept",
			"POST /noread HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 2\r\n\r\nok" + helloResp, nil},
		{"unread body above the drain bound closes the connection",
			"POST /noread HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n" + strings.Repeat("z", 300000) + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", nil},
		{"100-continue answered when the handler reads the body",
			"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc" + helloReq,
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Host: a\r\nDate: X\r\nContent-Length: 3\r\n\r\nabc" + helloResp, nil},
		{"100-continue never sent when the handler does not read: close",
			"POST /noread HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", nil},
		{"other expectations get 417", "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 3\r\n\r\nabc",
			badResp("417", "Expectation Failed", "unsupported Expect header"), nil},
		{"handler Content-Length: identity body", "GET /cl HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 5\r\n\r\nhello", nil},
		{"handler overruns its Content-Length: the write fails, the connection closes", "GET /overrun HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhel",
			[]string{http.ErrContentLength.Error(), "<nil>"}},
		{"handler writes short of its Content-Length: close", "GET /short HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello", nil},
		{"body past the buffer goes chunked", "GET /big HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + strings.Repeat("x", 5000) + "\r\n0\r\n\r\n" + helloResp, nil},
		{"HTTP/1.0 body past the buffer is close-delimited", "GET /big HTTP/1.0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nConnection: close\r\n\r\n" + strings.Repeat("x", 5000), nil},
		{"one write larger than the output buffer", "GET /huge HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nTransfer-Encoding: chunked\r\n\r\n9c40\r\n" + strings.Repeat("h", 40000) + "\r\n0\r\n\r\n" + helloResp,
			[]string{"<nil>"}},
		{"body closed by the handler: reads fail, the rest is drained, the connection kept",
			"POST /closebody HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 0\r\n\r\n" + helloResp,
			[]string{"<nil>", http.ErrBodyReadAfterClose.Error()}},
		{"flushes: chunked", "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nDate: X\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n2\r\nbb\r\n0\r\n\r\n" + helloResp, nil},
		{"second WriteHeader ignored", "GET /twice HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 1\r\n\r\nx", nil},
		{"204 takes no body", "GET /nocontent HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 204 No Content\r\nDate: X\r\n\r\n" + helloResp, []string{http.ErrBodyNotAllowed.Error()}},
		{"response splitting: CR LF in a value, a bad name", "GET /inject HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: a  X-Injected: 1\r\nDate: X\r\nContent-Length: 0\r\n\r\n", nil},
		{"Content-Type sniffed from a first write larger than the buffer", "GET /bigfirst HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n138e\r\n<html>" +
				strings.Repeat("a", 5000) + "\r\n0\r\n\r\n", nil},
		{"Content-Type sniffed from the start of the body across writes", "GET /smallthenbig HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n<ht\r\n138b\r\nml>" +
				strings.Repeat("a", 5000) + "\r\n0\r\n\r\n", nil},
		{"framing fields from the handler in any letter case are dropped (the server frames)", "GET /lowerframing HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: 5\r\n\r\nhello" + helloResp, nil},
		{"panic before the head: 500 and close", "GET /panic HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			badResp("500", "Internal Server Error", ""), nil},
		{"panic after a flush: the chunked body is cut", "GET /flushpanic HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n", nil},
		{"ErrAbortHandler: 500 and close", "GET /abort HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
			badResp("500", "Internal Server Error", ""), nil},
		{"half a head then EOF: nothing", "GET /hello HTTP/1.1\r\nHost:", "", nil},
		{"empty connection: nothing", "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &testHandler{}
			s := &Server{Handler: h}
			got := runScript(t, s, tt.script)
			if got != tt.want {
				t.Errorf("response:\n got %q\nwant %q", got, tt.want)
			}
			if strings.Join(h.errs, "|") != strings.Join(tt.errs, "|") {
				t.Errorf("handler write errors: got %q, want %q", h.errs, tt.errs)
			}
		})
	}
}

func TestHeadTooLarge(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   string
	}{
		{"one long header", "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 2000) + "\r\n\r\n",
			badResp("431", "Request Header Fields Too Large", "")},
		{"many small headers", "GET /hello HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: b\r\n", 200) + "\r\n",
			badResp("431", "Request Header Fields Too Large", "")},
		{"long request line", "GET /" + strings.Repeat("a", 2000) + " HTTP/1.1\r\nHost: a\r\n\r\n",
			badResp("431", "Request Header Fields Too Large", "")},
		{"head just under the limit", "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 900) + "\r\n\r\n", helloResp},
		{"second pipelined head too large", helloReq + "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 2000) + "\r\n\r\n",
			helloResp + badResp("431", "Request Header Fields Too Large", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Handler: &testHandler{}, MaxHeaderBytes: 1024}
			if got := runScript(t, s, tt.script); got != tt.want {
				t.Errorf("response:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestDateHeader(t *testing.T) {
	sc := &scriptConn{in: strings.NewReader(helloReq)}
	s := &Server{Handler: &testHandler{}}
	s.newConn(context.Background(), sc).serve()
	resp, err := http.ReadResponse(bufio.NewReader(&sc.out), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		t.Fatalf("Date %q: %v", resp.Header.Get("Date"), err)
	}
	if time.Since(d) > time.Minute || time.Until(d) > time.Minute {
		t.Errorf("Date %v is not now", d)
	}
}

// startServer serves s on a loopback listener and shuts it down at the
// end of the test.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	return startServerWrapped(t, s, func(ln net.Listener) net.Listener { return ln })
}

// startServerWrapped is startServer with the listener wrapped by wrap.
func startServerWrapped(t *testing.T, s *Server, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := wrap(tcp)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readUntilClosed reads c to its end and returns what it read; it fails
// when the server does not close c within bound.
func readUntilClosed(t *testing.T, c net.Conn, bound time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(bound))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("connection not closed by the server within %v: %v (read %q)", bound, err, b)
	}
	return string(b)
}

func TestTimeouts(t *testing.T) {
	tests := []struct {
		name  string
		send  string
		want  string // what the client reads before the close
		bound time.Duration
	}{
		{"slowloris: a head that never ends", "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: ", "", 3 * time.Second},
		{"silent new connection", "", "", 3 * time.Second},
		{"idle after a response", helloReq, helloResp, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServer(t, &Server{Handler: &testHandler{}, ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
			c := dial(t, addr)
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			if got := dateRE.ReplaceAllString(readUntilClosed(t, c, tt.bound), "Date: X\r\n"); got != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSlowHeadTrickleIsCutAtReadHeaderTimeout(t *testing.T) {
	addr := startServer(t, &Server{Handler: &testHandler{}, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute})
	c := dial(t, addr)
	// One byte every 50 ms keeps the connection busy but the head never
	// completes within the timeout.
	head := "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 100)
	start := time.Now()
	for i := 0; i < len(head); i++ {
		if _, err := c.Write([]byte{head[i]}); err != nil {
			break // the server closed: expected
		}
		time.Sleep(50 * time.Millisecond)
		if time.Since(start) > 5*time.Second {
			t.Fatal("the server kept a trickling head open for 5 s")
		}
	}
	if got := readUntilClosed(t, c, 3*time.Second); got != "" {
		t.Errorf("read %q, want nothing", got)
	}
}

func TestKeepAliveReuse(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]int{}
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remotes[r.RemoteAddr]++
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	})}
	addr := startServer(t, s)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for i := 0; i < 5; i++ {
		resp, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader(strings.Repeat("b", 100*i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("body %q", b)
		}
	}
	if len(remotes) != 1 {
		t.Errorf("5 requests used %d connections (%v), want 1", len(remotes), remotes)
	}
}

// Each Flush reaches the client while the handler still runs.
func TestStreamingFlushReachesClient(t *testing.T) {
	next := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			_, _ = io.WriteString(w, "data: "+strconv.Itoa(i)+"\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-time.After(10 * time.Second):
				return
			}
		}
	})}
	addr := startServer(t, s)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.TransferEncoding == nil || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("Transfer-Encoding %q, want chunked", resp.TransferEncoding)
	}
	for i := 0; i < 3; i++ {
		want := "data: " + strconv.Itoa(i) + "\n\n"
		got := make([]byte, len(want))
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if string(got) != want {
			t.Fatalf("event %d: %q, want %q", i, got, want)
		}
		next <- struct{}{}
	}
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after the events: %q, %v", rest, err)
	}
}

// plainListener and rawListener are the two kinds of listener the router
// serves: plain TCP and, as Router.Serve wraps it, raw-syscall I/O.
func plainListener(ln net.Listener) net.Listener { return ln }

func rawListener(ln net.Listener) net.Listener {
	return rawsock.Listener{Listener: ln, Options: rawsock.Options{MaxSlice: 256 << 10}}
}

// A client that hangs up while its handler waits cancels the request's
// context (after watchDelay), with and without a request body, through a
// plain TCP connection and through a raw-syscall one.
func TestDisconnectCancelsContext(t *testing.T) {
	tests := []struct {
		name string
		wrap func(net.Listener) net.Listener
		req  string
	}{
		{"GET, no body", plainListener, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"POST, body read", plainListener, "POST /wait HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"},
		{"POST, chunked body read", plainListener, "POST /wait HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"raw-syscall connection (rawsock), GET", rawListener, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"raw-syscall connection (rawsock), POST", rawListener, "POST /wait HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			cancelled := make(chan time.Duration, 1)
			s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				started <- struct{}{}
				t0 := time.Now()
				select {
				case <-r.Context().Done():
					cancelled <- time.Since(t0)
				case <-time.After(15 * time.Second):
				}
			})}
			addr := startServerWrapped(t, s, tt.wrap)
			c := dial(t, addr)
			if _, err := io.WriteString(c, tt.req); err != nil {
				t.Fatal(err)
			}
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("handler never started")
			}
			c.Close()
			select {
			case d := <-cancelled:
				t.Logf("cancelled %v after the handler started (hang-up right after)", d)
			case <-time.After(5 * time.Second):
				t.Fatal("the request's context was not cancelled within 5 s of the hang-up")
			}
		})
	}
}

// A handler that outlives watchDelay and returns normally on a connection
// that stays open is not cancelled, and the connection serves the next
// request (the watch released the connection).
func TestSlowHandlerNotCancelledAndConnectionReused(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			case <-time.After(watchDelay + 300*time.Millisecond):
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	})}
	addr := startServer(t, s)
	c := dial(t, addr)
	br := bufio.NewReader(c)
	for _, path := range []string{"/slow", "/fast", "/slow", "/fast"} {
		if _, err := io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"+path[1:5]); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(b) != path[1:5] {
			t.Fatalf("%s: status %d body %q err %v", path, resp.StatusCode, b, err)
		}
	}
}

func TestShutdown(t *testing.T) {
	t.Run("waits for the request in flight, closes idle connections", func(t *testing.T) {
		release := make(chan struct{})
		started := make(chan struct{}, 1)
		s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/wait" {
				started <- struct{}{}
				<-release
			}
			_, _ = io.WriteString(w, "done")
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveErr := make(chan error, 1)
		go func() { serveErr <- s.Serve(ln) }()
		addr := ln.Addr().String()

		idle := dial(t, addr)
		if _, err := io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		ibr := bufio.NewReader(idle)
		if resp, err := http.ReadResponse(ibr, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("idle connection's request: %v", err)
		} else {
			_, _ = io.ReadAll(resp.Body)
		}
		busy := dial(t, addr)
		if _, err := io.WriteString(busy, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		<-started
		shutErr := make(chan error, 1)
		go func() { shutErr <- s.Shutdown(context.Background()) }()

		if got := readUntilClosed(t, idle, 5*time.Second); got != "" {
			t.Errorf("idle connection read %q before the close", got)
		}
		select {
		case err := <-shutErr:
			t.Fatalf("Shutdown returned %v with a request in flight", err)
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			t.Error("the listener still accepts after Shutdown")
		}
		close(release)
		got := dateRE.ReplaceAllString(readUntilClosed(t, busy, 5*time.Second), "Date: X\r\n")
		want := "HTTP/1.1 200 OK\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone"
		if got != want {
			t.Errorf("in-flight response %q, want %q", got, want)
		}
		if err := <-shutErr; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v, want http.ErrServerClosed", err)
		}
		if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve after Shutdown: %v, want http.ErrServerClosed", err)
		}
	})
	t.Run("context ends first: connections closed, requests cancelled", func(t *testing.T) {
		cancelled := make(chan struct{}, 1)
		started := make(chan struct{}, 1)
		s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(15 * time.Second):
			}
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = s.Serve(ln) }()
		c := dial(t, ln.Addr().String())
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want context.DeadlineExceeded", err)
		}
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the request was not cancelled")
		}
		if got := readUntilClosed(t, c, 5*time.Second); got != "" {
			t.Errorf("read %q", got)
		}
	})
}

// Over TCP an oversize head gets 431 and the connection closes even though
// the client is still sending.
func TestHeadTooLargeOverTCPCloses(t *testing.T) {
	addr := startServer(t, &Server{Handler: &testHandler{}, MaxHeaderBytes: 4096})
	c := dial(t, addr)
	go func() {
		_, _ = io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: a\r\n")
		for i := 0; i < 1000; i++ {
			if _, err := io.WriteString(c, "X-Filler: "+strings.Repeat("f", 100)+"\r\n"); err != nil {
				return
			}
		}
	}()
	got := readUntilClosed(t, c, 5*time.Second)
	if want := badResp("431", "Request Header Fields Too Large", ""); got != want {
		t.Errorf("read %q, want %q", got, want)
	}
}

func TestServeErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := (&Server{}).Serve(ln); err == nil || !strings.Contains(err.Error(), "Handler is nil") {
		t.Errorf("no handler: %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve returned and left its listener open (accept: %v)", err)
	}
	if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{Handler: &testHandler{}}
	go func() { time.Sleep(50 * time.Millisecond); ln.Close() }()
	if err := s.Serve(ln); err == nil || errors.Is(err, http.ErrServerClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener closed under Serve: %v, want the accept error", err)
	}
}

// The watch starts only once the body is read: a body that arrives after
// watchDelay, then a hang-up, still cancels the request.
func TestDisconnectAfterSlowBody(t *testing.T) {
	started := make(chan string, 1)
	cancelled := make(chan struct{}, 1)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		started <- string(b)
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(15 * time.Second):
		}
	})}
	addr := startServer(t, s)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(watchDelay + 300*time.Millisecond) // the watch timer fires while the body is incomplete
	if _, err := io.WriteString(c, "lo"); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-started:
		if b != "hello" {
			t.Fatalf("body %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler never read the body")
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context was not cancelled within 5 s of the hang-up")
	}
}

// A pipelined request arriving while the watch runs ends the watch without
// cancelling the request in flight; both are answered in order.
func TestPipelinedRequestDuringWatch(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			case <-time.After(watchDelay + 800*time.Millisecond):
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, r.URL.Path)
	})}
	addr := startServer(t, s)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(watchDelay + 300*time.Millisecond) // the watch runs
	if _, err := io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for _, want := range []string{"/slow", "/next"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("%s: status %d body %q err %v", want, resp.StatusCode, b, err)
		}
	}
}

// Each response reaches the connection in as few writes as its flushes
// allow: head and body together.
func TestWritesPerResponse(t *testing.T) {
	tests := []struct {
		name   string
		script string
		writes int
	}{
		{"buffered body: one write", helloReq, 1},
		{"declared length: one write", "GET /cl HTTP/1.1\r\nHost: a\r\n\r\n", 1},
		{"chunked past the buffer: one write", "GET /big HTTP/1.1\r\nHost: a\r\n\r\n", 1},
		{"two flushes: two writes and the last chunk", "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n", 3},
		{"bad request: one write", "GET / HTTP/1.1\r\n\r\n", 1},
		{"three pipelined requests: three writes", helloReq + helloReq + helloReq, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := &scriptConn{in: strings.NewReader(tt.script)}
			(&Server{Handler: &testHandler{}}).newConn(context.Background(), sc).serve()
			if sc.writes != tt.writes {
				t.Errorf("%d writes, want %d: %q", sc.writes, tt.writes, sc.out.String())
			}
		})
	}
}

// gateConn is a scriptConn whose first Read waits for gate (which may shut
// the server down) before it returns the script.
type gateConn struct {
	*scriptConn
	gate   func(closed <-chan struct{})
	gated  bool
	once   sync.Once
	closed chan struct{}
}

func (c *gateConn) Read(p []byte) (int, error) {
	if !c.gated {
		c.gated = true
		c.gate(c.closed)
	}
	return c.scriptConn.Read(p)
}

func (c *gateConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// A request whose first byte arrives while Shutdown closes the idle
// connection is not served: Shutdown closed it as idle, so no handler (in
// the router, a billable upstream call) runs for an answer nobody gets.
func TestShutdownClosesIdleConnBeforeItsRequestRuns(t *testing.T) {
	h := &testHandler{}
	s := &Server{Handler: h}
	var called bool
	s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		h.ServeHTTP(w, r)
	})
	shut := make(chan error, 1)
	gc := &gateConn{scriptConn: &scriptConn{in: strings.NewReader(helloReq)}, closed: make(chan struct{})}
	gc.gate = func(closed <-chan struct{}) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			shut <- s.Shutdown(ctx)
		}()
		select {
		case <-closed: // Shutdown closed the idle connection
		case <-time.After(5 * time.Second):
			t.Error("Shutdown did not close the idle connection")
		}
	}
	c := s.newConn(context.Background(), gc)
	if c == nil {
		t.Fatal("server refused the connection")
	}
	c.serve()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if called {
		t.Error("the handler ran for a request on a connection Shutdown had closed")
	}
	if got := gc.out.String(); got != "" {
		t.Errorf("wrote %q to a connection Shutdown had closed, want nothing", got)
	}
}
