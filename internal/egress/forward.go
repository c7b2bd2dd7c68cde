package egress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// continueTimeout is how long a request that expects "100 Continue" waits
// for the upstream's first answer before its body is sent anyway (servers
// that ignore Expect wait for the body; clients do the same after ~1 s).
const continueTimeout = time.Second

// hopHeaders are removed in both directions.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// hasToken reports whether a comma-separated header has token (any case).
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// websocketUpgrade reports whether req asks to switch to WebSocket
// (Connection: Upgrade and Upgrade: websocket). Other upgrades are not
// relayed: their Upgrade header is dropped like any hop-by-hop header.
func websocketUpgrade(req *http.Request) bool {
	return req.Method == http.MethodGet && hasToken(req.Header, "Connection", "upgrade") && hasToken(req.Header, "Upgrade", "websocket")
}

// hasBody reports whether req carries a body.
func hasBody(req *http.Request) bool {
	return req.Body != nil && req.Body != http.NoBody
}

// expectsContinue reports whether the client waits for "100 Continue"
// before sending req's body.
func expectsContinue(req *http.Request) bool {
	return hasBody(req) && hasToken(req.Header, "Expect", "100-continue")
}

// headBufs hold request heads on their way upstream.
var headBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// headerExclude are the request headers writeHead writes itself.
var headerExclude = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeHead writes req's request line and header in origin form, framed
// by the parsed length (never the client's raw framing headers).
func writeHead(w io.Writer, req *http.Request, upgrade string) error {
	b := headBufs.Get().(*bytes.Buffer)
	defer func() { b.Reset(); headBufs.Put(b) }()
	fmt.Fprintf(b, "%s %s HTTP/1.1\r\nHost: %s\r\n", req.Method, req.URL.RequestURI(), req.Host)
	switch {
	case !hasBody(req):
		if req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
			b.WriteString("Content-Length: 0\r\n")
		}
	case req.ContentLength >= 0:
		b.WriteString("Content-Length: " + strconv.FormatInt(req.ContentLength, 10) + "\r\n")
	default:
		b.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if upgrade != "" {
		b.WriteString("Connection: Upgrade\r\nUpgrade: " + upgrade + "\r\n")
	} else {
		b.WriteString("Connection: close\r\n") // one upstream connection per request
	}
	if err := req.Header.WriteSubset(b, headerExclude); err != nil {
		return err
	}
	b.WriteString("\r\n")
	_, err := w.Write(b.Bytes())
	return err
}

// writeBody copies req's body upstream, re-chunking a chunked one.
func writeBody(w io.Writer, req *http.Request) error {
	if !hasBody(req) {
		return nil
	}
	if req.ContentLength >= 0 {
		n, err := io.Copy(w, req.Body)
		if err == nil && n != req.ContentLength {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	cw := httputil.NewChunkedWriter(w)
	if _, err := io.Copy(cw, req.Body); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\r\n") // no trailers
	return err
}

// writeInterim writes a 1xx response head.
func writeInterim(w io.Writer, resp *http.Response, extra string) error {
	removeHop(resp.Header)
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	b.WriteString(extra)
	if err := resp.Header.Write(&b); err != nil {
		return err
	}
	b.WriteString("\r\n")
	_, err := w.Write(b.Bytes())
	return err
}

// forward sends a plain request to up and relays the response. It
// relays the upstream's 1xx answers (a "100 Continue" releases a body the
// client held back) and, for a WebSocket upgrade the upstream accepts,
// turns the connection into a tunnel until either side closes or the
// rule is revoked (no idle timeout). It reports whether the client
// connection may carry another request.
func (p *Proxy) forward(c net.Conn, br *bufio.Reader, up net.Conn, req *http.Request, o *outcome, clientKeep bool) bool {
	upgrade := ""
	if websocketUpgrade(req) {
		upgrade = "websocket"
	}
	removeHop(req.Header)
	expect := expectsContinue(req)
	if !expect {
		req.Header.Del("Expect")
	}
	fail := func(err error, what string) bool {
		o.reason, o.detail = ReasonUnreachable, what+err.Error()
		return p.refuse(c, o, http.StatusBadGateway, false)
	}
	if err := writeHead(up, req, upgrade); err != nil {
		return fail(err, "")
	}
	bodySent := !expect
	if !expect {
		if err := writeBody(up, req); err != nil {
			return fail(err, "sending the request body: ")
		}
	} else {
		// Wait (briefly) for the upstream's first byte: a server that
		// ignores Expect waits for the body.
		up.SetReadDeadline(time.Now().Add(continueTimeout))
	}
	ubr := bufio.NewReader(up)
	if expect {
		_, err := ubr.Peek(1)
		up.SetReadDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			bodySent = true
			if err := writeBody(up, req); err != nil {
				return fail(err, "sending the request body: ")
			}
		}
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(ubr, req)
		if err != nil {
			return fail(err, "reading the response: ")
		}
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// Interim answers go to the client; the final one follows.
		if resp.StatusCode == http.StatusContinue {
			if bodySent {
				continue // not asked for, or asked for too late: drop it
			}
			if err := writeInterim(c, resp, ""); err != nil {
				return false
			}
			bodySent = true
			if err := writeBody(up, req); err != nil {
				return fail(err, "sending the request body: ")
			}
			continue
		}
		if err := writeInterim(c, resp, ""); err != nil {
			return false
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if upgrade == "" || !hasToken(resp.Header, "Upgrade", upgrade) {
			o.reason, o.detail = ReasonUnreachable, "the upstream switched protocols without being asked to"
			return p.refuse(c, o, http.StatusBadGateway, false)
		}
		p.relayUpgrade(c, br, up, ubr, resp, o, upgrade)
		return false
	}
	o.allow, o.status = true, resp.StatusCode
	p.logDecision(o)
	removeHop(resp.Header)
	// A held-back body the upstream never asked for may still arrive:
	// that connection cannot carry another request.
	keep := clientKeep && bodySent && upgrade == "" && (resp.ContentLength >= 0 || len(resp.TransferEncoding) > 0)
	resp.Close = !keep
	if err := resp.Write(c); err != nil {
		return false
	}
	return keep
}

// relayUpgrade answers the client's upgrade with the upstream's 101 and
// relays both ways, bytes already buffered on either side first.
func (p *Proxy) relayUpgrade(c net.Conn, br *bufio.Reader, up net.Conn, ubr *bufio.Reader, resp *http.Response, o *outcome, upgrade string) {
	o.allow, o.status, o.detail = true, resp.StatusCode, upgrade
	p.logDecision(o)
	if err := writeInterim(c, resp, "Connection: Upgrade\r\nUpgrade: "+upgrade+"\r\n"); err != nil {
		return
	}
	if n := ubr.Buffered(); n > 0 {
		b, _ := ubr.Peek(n)
		if _, err := c.Write(b); err != nil {
			return
		}
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
		br.Discard(n)
	}
	splice(c, up)
}
