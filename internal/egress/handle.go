package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clawcage/clawcage/internal/hostport"
	"github.com/clawcage/clawcage/internal/policy"
)

// outcome is one request's decision, logged as one line.
type outcome struct {
	sandbox string
	method  string
	host    string // normalised when possible, else escaped raw
	port    int
	allow   bool
	rule    string
	reason  string
	detail  string
	addr    netip.AddrPort
	status  int
	start   time.Time
}

func (p *Proxy) logDecision(o *outcome) {
	decision := "deny"
	level := slog.LevelInfo
	if o.allow {
		decision = "allow"
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("component", "egress"),
		slog.String("sandbox", o.sandbox),
		slog.String("method", escape(o.method)),
		slog.String("host", escape(o.host)),
		slog.Int("port", o.port),
		slog.String("decision", decision),
		slog.String("rule", o.rule),
		slog.String("reason", o.reason),
		slog.Duration("duration", time.Since(o.start)),
	)
	if o.detail != "" {
		attrs = append(attrs, slog.String("detail", escape(o.detail)))
	}
	if o.addr.IsValid() {
		attrs = append(attrs, slog.String("addr", o.addr.String()))
	}
	if o.status != 0 {
		attrs = append(attrs, slog.Int("status", o.status))
	}
	p.logRecord(level, "egress decision", attrs)
}

// logRecord hands one record to the logger's handler. Unlike
// Logger.LogAttrs it does not capture the caller's program counter
// (runtime.Callers unwinds the stack, a third of the line's cost); the
// handlers used here never print the source.
func (p *Proxy) logRecord(level slog.Level, msg string, attrs []slog.Attr) {
	h := p.opts.Logger.Handler()
	ctx := context.Background()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r)
}

// queueable reasons are denials an operator can turn into a host:port grant.
func queueable(reason string) bool {
	switch reason {
	case policy.ReasonNoRuleForHost, policy.ReasonNoRuleForAddress, policy.ReasonPortNotAllowed:
		return true
	}
	return false
}

// deny answers 403, raises the denial event and logs the decision.
func (p *Proxy) deny(ctx context.Context, c net.Conn, o *outcome, keep bool) bool {
	o.allow = false
	o.status = http.StatusForbidden
	body := denyBody{Error: "egress_denied", Host: escape(o.host), Port: o.port, Rule: o.rule, Reason: o.reason, Detail: escape(o.detail)}
	if p.opts.Denials != nil && queueable(o.reason) {
		if id := p.opts.Denials.Denied(ctx, Denial{Sandbox: o.sandbox, Host: o.host, Port: o.port, Method: o.method, Rule: o.rule, Reason: o.reason, Time: time.Now()}); id != "" {
			body.Approve = "clawcage policy approve " + id
		}
	}
	p.logDecision(o)
	if err := writeJSON(c, http.StatusForbidden, body, keep); err != nil {
		return false
	}
	return keep
}

// refuse answers a non-403 error (rate limit, DNS, upstream) and logs it.
func (p *Proxy) refuse(c net.Conn, o *outcome, status int, keep bool) bool {
	o.allow = false
	o.status = status
	p.logDecision(o)
	err := writeJSON(c, status, map[string]any{"error": "egress_" + strings.ReplaceAll(o.reason, "-", "_"), "host": escape(o.host), "port": o.port, "reason": o.reason, "detail": escape(o.detail)}, keep)
	return err == nil && keep
}

// handle serves one request and reports whether the client connection may
// carry another.
func (p *Proxy) handle(ctx context.Context, s *sandboxState, cc *connCloser, br *bufio.Reader, req *http.Request, hostHdrs []string) bool {
	c := cc.c
	o := &outcome{sandbox: s.name, method: req.Method, start: time.Now()}
	clientKeep := !req.Close && req.Method != http.MethodConnect
	t, err := parseTarget(req.Method, req.RequestURI, hostHdrs)
	o.host, o.port = t.host, t.port
	if err != nil {
		var re *requestError
		errors.As(err, &re)
		o.reason, o.detail = re.reason, re.msg
		if re.status == http.StatusForbidden {
			return p.deny(ctx, c, o, false)
		}
		if o.host == "" {
			o.host = req.RequestURI
		}
		return p.refuse(c, o, re.status, false)
	}
	if !s.limiter.Allow() {
		o.reason = ReasonRateLimited
		return p.refuse(c, o, http.StatusTooManyRequests, false)
	}
	if h, err := hostport.NormalizeHost(t.host); err == nil {
		o.host = h
		if reservedName(h) {
			o.reason, o.detail = ReasonReserved, "stack services and the local machine are never reachable through the proxy"
			return p.deny(ctx, c, o, p.keepAfterRefusal(c, req, clientKeep))
		}
	}
	m := s.matcher.Load()
	method := req.Method
	if t.connect {
		method = ""
	}
	d := m.DecideName(t.host, t.port, method, t.path)
	if d.Host != "" {
		o.host = d.Host
	}
	o.rule, o.reason, o.detail = d.Rule, d.Reason, d.Detail
	if !d.Allow {
		return p.deny(ctx, c, o, p.keepAfterRefusal(c, req, clientKeep))
	}
	if strings.HasPrefix(d.Rule, OncePrefix) && (p.opts.Once == nil || !p.opts.Once.Consume(s.name, d.Rule)) {
		o.reason, o.detail = ReasonOnceUsed, "the single-use approval was already used"
		return p.deny(ctx, c, o, p.keepAfterRefusal(c, req, clientKeep))
	}

	// A slot for the tunnel or in-flight request.
	select {
	case s.tunnels <- struct{}{}:
		defer func() { <-s.tunnels }()
	default:
		o.reason, o.detail = ReasonTooManyTunnels, fmt.Sprintf("the sandbox has %d tunnels or requests open", cap(s.tunnels))
		return p.refuse(c, o, http.StatusTooManyRequests, false)
	}

	// Address stage: resolve once, check every address, dial a checked one.
	var addrs []netip.Addr
	if d.Addr.IsValid() {
		addrs = []netip.Addr{d.Addr}
	} else {
		rctx, cancel := context.WithTimeout(ctx, p.opts.ResolveTimeout)
		addrs, err = p.opts.Resolver.LookupNetIP(rctx, "ip", d.Host)
		cancel()
		if err == nil && len(addrs) == 0 {
			err = errors.New("no addresses")
		}
		if err != nil {
			o.reason, o.detail = ReasonDNSFailed, err.Error()
			return p.refuse(c, o, http.StatusBadGateway, false)
		}
		for _, a := range addrs {
			ad := m.DecideAddr(a, t.port, d.Rule)
			if !ad.Allow {
				o.rule, o.reason, o.detail = d.Rule, ad.Reason, fmt.Sprintf("%s resolves to %s: %s", d.Host, a, ad.Detail)
				return p.deny(ctx, c, o, p.keepAfterRefusal(c, req, clientKeep))
			}
		}
	}
	for _, a := range addrs {
		if p.isSelf(netip.AddrPortFrom(a, uint16(t.port))) {
			o.reason, o.detail = ReasonProxyItself, fmt.Sprintf("%s reaches the egress proxy itself", netip.AddrPortFrom(a, uint16(t.port)))
			return p.deny(ctx, c, o, p.keepAfterRefusal(c, req, clientKeep))
		}
	}
	up, addr, err := p.dial(ctx, addrs, t.port)
	if err != nil {
		o.reason, o.detail = ReasonUnreachable, err.Error()
		return p.refuse(c, o, http.StatusBadGateway, false)
	}
	o.addr = addr
	tun := &tunnel{rule: d.Rule, conns: []net.Conn{c, up}}
	s.track(tun, true)
	defer s.track(tun, false)
	// A revocation between the decision and track has already run its
	// CloseTunnels; it swapped the matcher first, so look again.
	if cur := s.matcher.Load(); cur != m && !strings.HasPrefix(d.Rule, OncePrefix) {
		if _, ok := cur.Rule(d.Rule); !ok {
			up.Close()
			o.reason, o.detail = ReasonRevoked, "the rule was removed while the connection was being set up"
			return p.deny(ctx, c, o, false)
		}
	}
	cc.carry(tun) // shutdown closes it
	defer cc.carry(nil)
	if t.connect {
		defer tun.close()
		p.tunnel(c, br, up, o, d)
		return false
	}
	defer up.Close()
	p.keepAlive(up)
	return p.forward(c, br, up, req, o, clientKeep) && !tun.isClosed()
}

// keepAfterRefusal reports whether the client connection can carry
// another request after a refusal of req. A request that waits for
// "100 Continue" is refused without reading its body (the client has not
// sent it), so that connection closes; any other body is drained.
func (p *Proxy) keepAfterRefusal(c net.Conn, req *http.Request, clientKeep bool) bool {
	if !clientKeep {
		return false
	}
	if expectsContinue(req) {
		return false
	}
	return p.drainBody(c, req)
}

// drainBody reads (at most 64 KiB of) a refused request's body, within
// the header timeout, so the connection can carry the next request.
func (p *Proxy) drainBody(c net.Conn, req *http.Request) bool {
	if !hasBody(req) {
		return true
	}
	c.SetReadDeadline(time.Now().Add(p.opts.HeaderTimeout))
	defer c.SetReadDeadline(time.Time{})
	_, err := io.Copy(io.Discard, io.LimitReader(req.Body, 64<<10))
	if err != nil {
		return false
	}
	n, _ := req.Body.Read(make([]byte, 1))
	return n == 0
}

// dial connects to the first reachable checked address.
func (p *Proxy) dial(ctx context.Context, addrs []netip.Addr, port int) (net.Conn, netip.AddrPort, error) {
	var errs []error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		c, err := p.dialOne(ctx, ap)
		if err == nil {
			return rawIO(c), ap, nil
		}
		errs = append(errs, err)
	}
	return nil, netip.AddrPort{}, fmt.Errorf("dial %s: %w", hostport.Join(addrs[0].String(), port), errors.Join(errs...))
}

// dialOne dials ap, bounded by the dial timeout but not by ctx's
// cancellation: shutdown closes the connection once it is registered.
func (p *Proxy) dialOne(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	ctx = context.WithoutCancel(ctx)
	if p.dialer != nil {
		// The dialer applies its Timeout (one deadline context, not two).
		// Not DialTCP: with a zero local address it binds first.
		return p.dialer.DialContext(ctx, "tcp", ap.String())
	}
	dctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout)
	defer cancel()
	return p.opts.Dial(dctx, "tcp", ap.String())
}

// tunnel answers 200, checks the ClientHello of a name tunnel and splices.
func (p *Proxy) tunnel(c net.Conn, br *bufio.Reader, up net.Conn, o *outcome, d policy.Decision) {
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	// While the 200 travels to the client and its first bytes come back.
	p.keepAlive(up)
	if !d.Addr.IsValid() {
		// A name tunnel must open with a ClientHello naming that name.
		c.SetReadDeadline(time.Now().Add(p.opts.HeaderTimeout))
		ch, err := peekClientHello(br)
		c.SetReadDeadline(time.Time{})
		switch {
		case errors.Is(err, errNotTLS):
			o.reason, o.detail = ReasonNotTLS, "a tunnel to a host name must start with a TLS ClientHello naming it"
		case err != nil:
			o.reason, o.detail = ReasonSNIMismatch, err.Error()
		case ch.hasECH:
			o.reason, o.detail = ReasonECH, "encrypted ClientHello hides the destination"
		case ch.sni == "":
			o.reason, o.detail = ReasonSNIMismatch, "ClientHello without server_name"
		default:
			sni, nerr := hostport.NormalizeHost(ch.sni)
			if nerr != nil || sni != d.Host {
				o.reason, o.detail = ReasonSNIMismatch, fmt.Sprintf("ClientHello names %q, CONNECT named %q", ch.sni, d.Host)
			}
		}
		if o.reason != policy.ReasonAllowed {
			o.allow = false
			p.logDecision(o)
			return
		}
	}
	o.allow = true
	p.logDecision(o)
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
		br.Discard(n)
	}
	splice(c, up)
}

// copyBufs are the relay buffers. A plain read/write loop with a large
// buffer outruns splice(2) through a pipe on loopback and small hosts
// (see bench/README.md), so the copy deliberately hides ReaderFrom and
// WriterTo.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func relay(dst, src net.Conn) {
	bp := copyBufs.Get().(*[]byte)
	io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	copyBufs.Put(bp)
}

// splice copies both ways until both directions end, propagating the
// half-close of the direction that ends first. The caller closes both
// connections when splice returns, so the direction that ends last sends
// no shutdown(2) of its own: its close(2) follows at once and ends the
// stream with the same FIN (everything sent before was read to EOF or
// failed, so nothing unread turns the close into a reset that the
// shutdown would not have).
func splice(a, b net.Conn) {
	var ended atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		relay(b, a)
		if ended.Add(1) == 1 {
			closeWrite(b)
		}
	}()
	relay(a, b)
	if ended.Add(1) == 1 {
		closeWrite(a)
	}
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

// tunnel is a live connection pair allowed by rule.
type tunnel struct {
	rule   string
	conns  []net.Conn
	once   sync.Once
	mu     sync.Mutex
	closed bool
}

func (t *tunnel) close() {
	t.once.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		for _, c := range t.conns {
			c.Close()
		}
	})
}

func (t *tunnel) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

func (s *sandboxState) track(t *tunnel, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.live[t] = struct{}{}
	} else {
		delete(s.live, t)
	}
}
