package h1

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
)

// echoHandler echoes the request body (twice with a Flush between for
// /flush, eight times for /big), naming the method in X-Method so that the
// fuzz target knows which responses carry no body.
var echoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Method", r.Method)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/flush":
		_, _ = w.Write(b)
		w.(http.Flusher).Flush()
		_, _ = w.Write(b)
	case "/big":
		for range 8 {
			_, _ = w.Write(b)
		}
	default:
		_, _ = w.Write(b)
	}
})

// FuzzServe feeds raw bytes to a connection and checks that the server
// neither panics nor hangs (the script ends with EOF) and that everything
// it writes parses as a sequence of HTTP/1.1 responses.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		helloReq,
		helloReq + helloReq,
		"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /flush HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 600\r\n\r\n" + strings.Repeat("b", 600),
		"POST /big HTTP/1.0\r\nContent-Length: 600\r\n\r\n" + strings.Repeat("b", 600),
		"HEAD /flush HTTP/1.1\r\nHost: a\r\n\r\n" + helloReq,
		"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + helloReq,
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET http://x/ HTTP/1.1\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-Long: "+strings.Repeat("l", 100)+"\r\n", 20) + "\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
		"",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Server{Handler: echoHandler, MaxHeaderBytes: 1 << 10}
		sc := &scriptConn{in: strings.NewReader(string(data))}
		c := s.newConn(t.Context(), sc)
		c.serve()
		br := bufio.NewReader(&sc.out)
		for n := 0; ; n++ {
			if _, err := br.Peek(1); err == io.EOF {
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response %d does not parse: %v\ninput %q\noutput %q", n, err, data, sc.out.String())
			}
			if resp.Header.Get("X-Method") == http.MethodHead || resp.StatusCode < 200 {
				continue // no body on the wire
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatalf("response %d's body: %v\ninput %q", n, err, data)
			}
		}
	})
}
