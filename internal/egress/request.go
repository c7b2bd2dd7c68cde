package egress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/clawcage/clawcage/internal/hostport"
	"github.com/clawcage/clawcage/internal/journal"
)

// Reasons the proxy adds to those of internal/policy.
const (
	ReasonHostMismatch   = "host-mismatch"        // Host header names another authority than the request target
	ReasonReserved       = "reserved-destination" // inference.local, gateway.local, localhost, the proxy itself
	ReasonProxyItself    = "proxy-itself"         // an address that reaches the proxy's own listener
	ReasonSNIMismatch    = "sni-mismatch"         // ClientHello names another host, or none
	ReasonECH            = "ech-not-allowed"      // encrypted ClientHello hides the real destination
	ReasonNotTLS         = "not-tls"              // a name tunnel whose first bytes are not a ClientHello
	ReasonOnceUsed       = "approval-used"        // a single-use approval was already consumed
	ReasonRevoked        = "rule-revoked"         // the allowing rule was removed during setup
	ReasonRateLimited    = "rate-limited"
	ReasonTooManyTunnels = "too-many-tunnels"
	ReasonBadRequest     = "bad-request"
	ReasonDNSFailed      = "dns-failed"
	ReasonUnreachable    = "upstream-unreachable"
)

// errClientGone means the client went away or stalled before sending a
// request; nothing is answered.
var errClientGone = errors.New("client closed the connection or stalled")

// requestError is a request the proxy refuses before deciding anything.
type requestError struct {
	status int
	reason string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{http.StatusBadRequest, ReasonBadRequest, fmt.Sprintf(format, args...)}
}

// readRequest reads one request with its header block bounded by max
// bytes. It also returns the raw Host header values, which
// http.ReadRequest drops for absolute-form targets.
func readRequest(br *bufio.Reader, max int) (*http.Request, []string, error) {
	block, err := peekHeader(br, max)
	if err != nil {
		return nil, nil, err
	}
	hosts := hostHeaders(block)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, badRequest("malformed request: %v", err)
	}
	return req, hosts, nil
}

// peekHeader returns the header block at the start of br without consuming it.
func peekHeader(br *bufio.Reader, max int) ([]byte, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, errClientGone
	}
	for {
		n := br.Buffered()
		buf, _ := br.Peek(n)
		if i := headerEnd(buf); i >= 0 {
			return buf[:i], nil
		}
		if n >= max {
			return nil, &requestError{http.StatusRequestHeaderFieldsTooLarge, ReasonBadRequest, fmt.Sprintf("request header larger than %d bytes", max)}
		}
		if _, err := br.Peek(n + 1); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil, errClientGone
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, &requestError{http.StatusRequestHeaderFieldsTooLarge, ReasonBadRequest, fmt.Sprintf("request header larger than %d bytes", max)}
			}
			return nil, errClientGone
		}
	}
}

// headerEnd returns the index just past the blank line ending a header
// block, or -1.
func headerEnd(b []byte) int {
	i := bytes.Index(b, []byte("\n\r\n"))
	j := bytes.Index(b, []byte("\n\n"))
	switch {
	case i >= 0 && (j < 0 || i < j):
		return i + 3
	case j >= 0:
		return j + 2
	}
	return -1
}

// hostHeaders returns the values of every Host header line in block
// (the request line is skipped), without copying the rest of the block.
func hostHeaders(block []byte) []string {
	var out []string
	i := bytes.IndexByte(block, '\n')
	if i < 0 {
		return nil
	}
	for rest := block[i+1:]; len(rest) > 0; {
		line := rest
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			line, rest = rest[:j], rest[j+1:]
		} else {
			rest = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")) {
			out = append(out, string(bytes.Trim(line[5:], " \t")))
		}
	}
	return out
}

// target is the destination a request names.
type target struct {
	connect bool
	host    string // as written (brackets removed), not yet normalised
	port    int
	path    string // escaped path of a plain request, "" for CONNECT
}

// parseTarget extracts the destination of a CONNECT (authority-form) or
// plain forward (absolute-form) request and checks that every Host
// header names the same authority.
func parseTarget(method, requestURI string, hostHdrs []string) (target, error) {
	if method == http.MethodConnect {
		host, port, err := hostport.Split(requestURI, 0)
		if err != nil {
			return target{}, badRequest("CONNECT target: %v", err)
		}
		for _, h := range hostHdrs {
			// Some clients omit the port from a CONNECT's Host header.
			if !sameAuthority(h, host, port, port) {
				return target{host: host, port: port, connect: true}, &requestError{http.StatusForbidden, ReasonHostMismatch,
					fmt.Sprintf("Host header %q does not name the CONNECT target %q", h, requestURI)}
			}
		}
		return target{connect: true, host: host, port: port}, nil
	}
	if !strings.HasPrefix(strings.ToLower(requestURI), "http://") {
		if strings.HasPrefix(strings.ToLower(requestURI), "https://") {
			return target{}, badRequest("https:// targets are not proxied in plain form; use CONNECT")
		}
		return target{}, badRequest("not a proxy request: the target must be an absolute http:// URI or CONNECT host:port")
	}
	u, err := url.ParseRequestURI(requestURI)
	if err != nil {
		return target{}, badRequest("request target: %v", err)
	}
	if u.User != nil {
		return target{}, badRequest("request target must not carry user information")
	}
	if u.Host == "" {
		return target{}, badRequest("request target has no host")
	}
	host, port, err := hostport.Split(u.Host, 80)
	if err != nil {
		return target{}, badRequest("request target: %v", err)
	}
	t := target{host: host, port: port, path: u.EscapedPath()}
	if t.path == "" {
		t.path = "/"
	}
	for _, h := range hostHdrs {
		if !sameAuthority(h, host, port, 80) {
			return t, &requestError{http.StatusForbidden, ReasonHostMismatch,
				fmt.Sprintf("Host header %q does not name the request target's authority %q", h, u.Host)}
		}
	}
	return t, nil
}

// sameAuthority reports whether Host header value h names host:port.
func sameAuthority(h, host string, port, defaultPort int) bool {
	hh, hp, err := hostport.Split(h, defaultPort)
	if err != nil || hp != port {
		return false
	}
	if strings.EqualFold(hh, host) {
		return true
	}
	a, err1 := hostport.NormalizeHost(hh)
	b, err2 := hostport.NormalizeHost(host)
	return err1 == nil && err2 == nil && a == b
}

// reservedName reports whether a normalised host names a stack service
// or the local machine, which no policy can open.
func reservedName(h string) bool {
	switch h {
	case "inference.local", "gateway.local", "localhost", "localhost.localdomain":
		return true
	}
	return strings.HasSuffix(h, ".localhost")
}

// denyBody is the JSON body of a 403.
type denyBody struct {
	Error   string `json:"error"`
	Host    string `json:"host"`
	Port    int    `json:"port"`
	Rule    string `json:"rule"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail,omitempty"`
	Approve string `json:"approve,omitempty"`
}

// writeJSON writes a complete response with a JSON body and closes the
// exchange (Connection: close).
func writeJSON(w io.Writer, status int, body any, keep bool) error {
	b, _ := json.Marshal(body)
	b = append(b, '\n')
	conn := "close"
	if keep {
		conn = "keep-alive"
	}
	_, err := fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s",
		status, http.StatusText(status), len(b), conn, b)
	return err
}

// writeError answers a request refused before any decision.
func writeError(w io.Writer, err error) {
	var re *requestError
	if !errors.As(err, &re) {
		re = &requestError{http.StatusBadRequest, ReasonBadRequest, err.Error()}
	}
	writeJSON(w, re.status, map[string]string{"error": "egress_" + strings.ReplaceAll(re.reason, "-", "_"), "reason": re.reason, "detail": escape(re.msg)}, false)
}

// escape makes a sandbox-supplied string safe for logs and terminals.
func escape(s string) string {
	if len(s) > 1024 {
		s = s[:1024] + "...(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return journal.Escape(s)
}
