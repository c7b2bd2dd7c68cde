package egress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
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

// requestedUpgrade returns the protocols req asks to switch to (the
// Upgrade header of a request whose Connection lists "upgrade": websocket,
// h2c, ...), normalised to "a, b", or "" for none. Protocols that are not
// RFC 9110 tokens (name or name/version) void the upgrade: the request is
// then forwarded as a plain one.
func requestedUpgrade(req *http.Request) string {
	if !hasToken(req.Header, "Connection", "upgrade") {
		return ""
	}
	var protos []string
	for _, v := range req.Header["Upgrade"] {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			name, version, _ := strings.Cut(p, "/")
			if !isToken(name) || (strings.Contains(p, "/") && !isToken(version)) {
				return ""
			}
			protos = append(protos, p)
		}
	}
	return strings.Join(protos, ", ")
}

// upgradeOptions returns the header fields an upgrade request lists in
// Connection besides "upgrade" (HTTP2-Settings for h2c), with their
// values: hop-by-hop, but meant for the server the upgrade is relayed to,
// so they are sent on with it. The proxy's own hop-by-hop fields and the
// framing fields it writes itself are never among them.
func upgradeOptions(req *http.Request) http.Header {
	var out http.Header
	for _, v := range req.Header["Connection"] {
		for _, name := range strings.Split(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if !isToken(name) || name == "Upgrade" || name == "Close" || slices.Contains(hopHeaders, name) || headerExclude[name] {
				continue
			}
			if vals, ok := req.Header[name]; ok {
				if out == nil {
					out = http.Header{}
				}
				out[name] = vals
			}
		}
	}
	return out
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// chosenUpgrade returns the protocol a 101 switches to if it is one of
// those requested ("" otherwise).
func chosenUpgrade(resp *http.Response, requested string) string {
	got := strings.TrimSpace(resp.Header.Get("Upgrade"))
	if got == "" || strings.Contains(got, ",") {
		return ""
	}
	for _, p := range strings.Split(requested, ",") {
		if strings.EqualFold(strings.TrimSpace(p), got) {
			return got
		}
	}
	return ""
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
func writeHead(w io.Writer, req *http.Request, upgrade string, options http.Header) error {
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
		b.WriteString("Connection: Upgrade")
		for _, name := range slices.Sorted(maps.Keys(options)) {
			b.WriteString(", " + name)
		}
		b.WriteString("\r\nUpgrade: " + upgrade + "\r\n")
		if err := options.Write(b); err != nil {
			return err
		}
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
// client held back) and, for an upgrade (WebSocket, h2c, ...) the
// upstream accepts with one of the requested protocols, turns the
// connection into a tunnel until either side closes or the rule is
// revoked (no idle timeout). It reports whether the client connection may
// carry another request.
func (p *Proxy) forward(c net.Conn, br *bufio.Reader, up net.Conn, req *http.Request, o *outcome, clientKeep bool) bool {
	upgrade := requestedUpgrade(req)
	var options http.Header
	if upgrade != "" {
		options = upgradeOptions(req)
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
	if err := writeHead(up, req, upgrade, options); err != nil {
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
		chosen := chosenUpgrade(resp, upgrade)
		if chosen == "" {
			o.reason, o.detail = ReasonUnreachable, "the upstream switched protocols without being asked to"
			if upgrade != "" {
				o.detail = fmt.Sprintf("the upstream switched to %q, the request asked for %q", resp.Header.Get("Upgrade"), upgrade)
			}
			return p.refuse(c, o, http.StatusBadGateway, false)
		}
		p.relayUpgrade(c, br, up, ubr, resp, o, chosen)
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
