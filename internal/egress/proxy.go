// Package egress is the sandboxes' egress proxy: HTTP/1.1 forward
// (absolute-form) requests and CONNECT tunnels, one listener per sandbox
// (the listener that accepted a connection is the sandbox's identity). It
// enforces the decisions of internal/policy: the name is decided before any
// DNS lookup, every resolved address is classified, exactly a checked
// address is dialled, and a tunnel's TLS ClientHello must name the CONNECT
// host. It does not decide policy, store approvals or serve operators; see
// internal/egress/engine for that.
package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/rawsock"
)

// Resolver looks up the addresses of a host name. *net.Resolver satisfies
// it; tests inject fakes.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DefaultResolver is the pure-Go resolver (no cgo, no nsswitch, no
// /etc/hosts surprises from a libc).
func DefaultResolver() Resolver { return &net.Resolver{PreferGo: true} }

// Denial is a denied destination raised as an event for the approval queue.
type Denial struct {
	Sandbox string
	Host    string // normalised (punycode) host or canonical IP text
	Port    int
	Method  string // "CONNECT" or the plain-HTTP method
	Rule    string
	Reason  string
	Time    time.Time
}

// DenialSink receives denial events. Denied returns the approval id that
// the 403 body names, or "" when the denial is not queued.
type DenialSink interface {
	Denied(ctx context.Context, d Denial) string
}

// OnceConsumer consumes single-use approvals: a rule whose name starts with
// OncePrefix allows one connection or request; the proxy calls Consume
// before using it and treats false as a denial.
type OnceConsumer interface {
	Consume(sandbox, rule string) bool
}

// OncePrefix marks the rules of single-use approvals.
const OncePrefix = "once/"

// Options configure a Proxy. Zero values pick the defaults.
type Options struct {
	// Resolver resolves allowed names; default DefaultResolver().
	Resolver Resolver
	// Dial dials the checked address; default a net.Dialer with
	// DialTimeout and TCP keepalive.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives one decision line per request; default slog.Default().
	Logger *slog.Logger
	// Denials receives denial events; nil means none are queued.
	Denials DenialSink
	// Once consumes single-use approvals; nil means such rules never allow.
	Once OnceConsumer
	// HeaderTimeout bounds reading a request's header (default 10s) and
	// the TLS ClientHello of a tunnel.
	HeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// plain-HTTP connection (default 90s). Established tunnels have no
	// idle timeout.
	IdleTimeout time.Duration
	// DialTimeout bounds dialling the upstream (default 10s).
	DialTimeout time.Duration
	// ResolveTimeout bounds the DNS lookup (default 5s).
	ResolveTimeout time.Duration
	// MaxTunnels caps a sandbox's concurrent tunnels and in-flight plain
	// requests (default 256).
	MaxTunnels int
	// MaxConns caps a sandbox's open client connections (default 1024).
	MaxConns int
	// RequestRate and RequestBurst limit a sandbox's requests (CONNECT or
	// plain) per second (default 100/s, burst 200).
	RequestRate  rate.Limit
	RequestBurst int
	// MaxHeaderBytes bounds a request header block (default 16 KiB).
	MaxHeaderBytes int
}

func (o *Options) setDefaults() {
	if o.Resolver == nil {
		o.Resolver = DefaultResolver()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HeaderTimeout, 10*time.Second)
	def(&o.IdleTimeout, 90*time.Second)
	def(&o.DialTimeout, 10*time.Second)
	def(&o.ResolveTimeout, 5*time.Second)
	if o.MaxTunnels <= 0 {
		o.MaxTunnels = 256
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.RequestRate <= 0 {
		o.RequestRate = 100
	}
	if o.RequestBurst <= 0 {
		o.RequestBurst = 200
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 16 << 10
	}
}

// Proxy is the egress proxy for any number of sandboxes. Create it with
// New, give each sandbox a policy with SetPolicy, then Serve a listener per
// sandbox.
type Proxy struct {
	opts Options

	dialer *net.Dialer // when opts.Dial is nil

	mu        sync.Mutex
	sandboxes map[string]*sandboxState
	readers   sync.Pool        // *bufio.Reader of MaxHeaderBytes+4096
	self      []netip.AddrPort // addresses of every served listener
	selfPorts map[uint16]bool  // ports of listeners on an unspecified address
}

// sandboxState is one sandbox's live state.
type sandboxState struct {
	name    string
	matcher atomic.Pointer[policy.Matcher]
	limiter *rate.Limiter
	tunnels chan struct{} // semaphore of MaxTunnels
	conns   atomic.Int64

	mu      sync.Mutex
	live    map[*tunnel]struct{}
	removed bool
	stops   map[*struct{}]context.CancelFunc // one per Serve call
}

// New returns a proxy with no sandboxes.
func New(opts Options) *Proxy {
	opts.setDefaults()
	p := &Proxy{opts: opts, sandboxes: map[string]*sandboxState{}, selfPorts: map[uint16]bool{}}
	if opts.Dial == nil {
		p.dialer = &net.Dialer{
			Timeout: opts.DialTimeout,
			// Keepalive is switched on by keepAlive once the client has
			// its answer (the two setsockopt(2) calls are then off the
			// path the client waits on), not by the dial.
			KeepAlive: -1,
		}
	}
	size := opts.MaxHeaderBytes + 4096
	p.readers.New = func() any { return bufio.NewReaderSize(nil, size) }
	return p
}

// keepAlive switches keepalive on for an upstream connection of the
// default dialer (a custom Options.Dial configures its own). Called before
// any byte of the client's is relayed to up: after the 200 of a tunnel,
// before a plain request is sent. Tunnels have no idle timeout, so a dead
// upstream is found by keepalive: probes after 60 s idle, then at the
// system's interval and count (75 s × 9 on Linux); leaving those two at
// the system values saves two setsockopt(2) calls per connection.
func (p *Proxy) keepAlive(up net.Conn) {
	if p.dialer == nil {
		return
	}
	if tc, ok := up.(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}); ok {
		// As the dialer did: a failure leaves the connection usable,
		// only without probes.
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: -1, Count: -1})
	}
}

func (p *Proxy) state(sandbox string, create bool) *sandboxState {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sandboxes[sandbox]
	if s == nil && create {
		s = &sandboxState{
			name:    sandbox,
			limiter: rate.NewLimiter(p.opts.RequestRate, p.opts.RequestBurst),
			tunnels: make(chan struct{}, p.opts.MaxTunnels),
			live:    map[*tunnel]struct{}{},
			stops:   map[*struct{}]context.CancelFunc{},
		}
		p.sandboxes[sandbox] = s
	}
	return s
}

// SetPolicy installs (or atomically replaces) a sandbox's compiled policy.
// Requests already being decided finish with the matcher they started with;
// live tunnels are not re-checked (CloseTunnels closes those of a revoked
// rule).
func (p *Proxy) SetPolicy(sandbox string, m *policy.Matcher) {
	if m == nil {
		panic("egress: SetPolicy with a nil matcher")
	}
	p.state(sandbox, true).matcher.Store(m)
}

// Matcher returns the sandbox's current matcher, or nil.
func (p *Proxy) Matcher(sandbox string) *policy.Matcher {
	if s := p.state(sandbox, false); s != nil {
		return s.matcher.Load()
	}
	return nil
}

// CloseTunnels closes the sandbox's live tunnels (and in-flight plain
// requests) that were allowed by one of rules, and returns how many.
func (p *Proxy) CloseTunnels(sandbox string, rules ...string) int {
	s := p.state(sandbox, false)
	if s == nil {
		return 0
	}
	want := map[string]bool{}
	for _, r := range rules {
		want[r] = true
	}
	var victims []*tunnel
	s.mu.Lock()
	for t := range s.live {
		if want[t.rule] {
			victims = append(victims, t)
		}
	}
	s.mu.Unlock()
	for _, t := range victims {
		t.close()
	}
	return len(victims)
}

// RemoveSandbox forgets the sandbox: its policy and limits are dropped,
// every Serve call for it returns (closing its listener) and all its
// client connections, tunnels and in-flight requests are closed. It
// returns how many tunnels were open. A later SetPolicy starts afresh.
func (p *Proxy) RemoveSandbox(sandbox string) int {
	p.mu.Lock()
	s := p.sandboxes[sandbox]
	delete(p.sandboxes, sandbox)
	p.mu.Unlock()
	if s == nil {
		return 0
	}
	s.mu.Lock()
	s.removed = true
	stops := make([]context.CancelFunc, 0, len(s.stops))
	for _, stop := range s.stops {
		stops = append(stops, stop)
	}
	victims := make([]*tunnel, 0, len(s.live))
	for t := range s.live {
		victims = append(victims, t)
	}
	s.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	for _, t := range victims {
		t.close()
	}
	return len(victims)
}

// LiveTunnels returns how many tunnels the sandbox has open.
func (p *Proxy) LiveTunnels(sandbox string) int {
	s := p.state(sandbox, false)
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// Serve accepts connections on ln for sandbox until ctx is done or ln
// fails, and closes ln. The sandbox must have a policy (SetPolicy) first:
// serving without one is refused, never an open proxy.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener, sandbox string) error {
	s := p.state(sandbox, false)
	if s == nil || s.matcher.Load() == nil {
		ln.Close()
		return fmt.Errorf("egress: sandbox %q has no policy loaded; refusing to serve", sandbox)
	}
	// RemoveSandbox cancels this context: the listener and every
	// connection served from it close.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := new(struct{})
	s.mu.Lock()
	if s.removed {
		s.mu.Unlock()
		ln.Close()
		return fmt.Errorf("egress: sandbox %q was removed; refusing to serve", sandbox)
	}
	s.stops[key] = cancel
	s.mu.Unlock()
	defer func() { s.mu.Lock(); delete(s.stops, key); s.mu.Unlock() }()
	p.addSelf(ln.Addr())
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporaryAcceptError(err) {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			return fmt.Errorf("egress: accept for sandbox %q: %w", sandbox, err)
		}
		tempDelay = 0
		if s.conns.Add(1) > int64(p.opts.MaxConns) {
			s.conns.Add(-1)
			c.Close()
			p.opts.Logger.Warn("egress connection refused", "component", "egress", "sandbox", sandbox, "reason", "too-many-connections")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.conns.Add(-1)
			p.serveConn(ctx, s, c)
		}()
	}
}

// Listen opens a TCP listener for a sandbox's clients (to pass to Serve).
// On a loopback address the accepted connections get no TCP keepalive: a
// client on the same machine that dies has its socket closed by the
// kernel, so probes would find nothing, and the four setsockopt(2) calls
// Go makes per accepted connection to configure them sit on the path every
// request waits on. On any other address Go's default keepalive (15 s)
// stays, because tunnels have no idle timeout and a vanished remote
// client is only found by probes. (A listener from net.FileListener, e.g.
// one inherited from the supervisor, always has Go's default.)
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && a.Unmap().IsLoopback() {
			lc.KeepAlive = -1
		}
	}
	return lc.Listen(ctx, "tcp", addr) // its error names the address
}

// temporaryAcceptError reports accept errors worth retrying after a pause
// (out of file descriptors, an aborted handshake).
func temporaryAcceptError(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		(errors.As(err, &ne) && ne.Timeout())
}

func (p *Proxy) addSelf(a net.Addr) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	p.self = append(p.self, ap)
	if ap.Addr().IsUnspecified() {
		p.selfPorts[ap.Port()] = true
	}
}

// isSelf reports whether dialling a would reach one of the proxy's own
// listeners.
func (p *Proxy) isSelf(a netip.AddrPort) bool {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.selfPorts[a.Port()] {
		return true
	}
	for _, s := range p.self {
		if s == a {
			return true
		}
		// 127.0.0.1:3128 is also reached as 127.0.0.2:3128 when the
		// listener is on 0.0.0.0; a loopback listener is reached from
		// any loopback address only on Linux's 127/8 route when bound
		// there, so compare loopback addresses by port as well.
		if s.Port() == a.Port() && s.Addr().IsLoopback() && a.Addr().IsLoopback() {
			return true
		}
	}
	return false
}

// rawIO wraps a client or upstream TCP connection so that its reads and
// writes below 16 KiB per call are raw syscalls, which wake no sysmon after
// a tunnel's idle moments, while bulk keeps ordinary syscalls, whose P
// hand-off lets a tunnel's two directions overlap (package rawsock). Other
// connections are returned unchanged.
func rawIO(c net.Conn) net.Conn {
	return rawsock.Wrap(c, rawsock.Options{BulkThreshold: 16 << 10})
}

func (p *Proxy) serveConn(ctx context.Context, s *sandboxState, c net.Conn) {
	c = rawIO(c) // reads and writes without waking sysmon
	defer c.Close()
	// Shutting down closes every connection, tunnels included (one
	// registration on the shared context per connection, not one more
	// per tunnel).
	cc := &connCloser{c: c}
	stop := context.AfterFunc(ctx, cc.close)
	defer stop()
	br := p.readers.Get().(*bufio.Reader)
	br.Reset(c)
	defer func() { br.Reset(nil); p.readers.Put(br) }()
	first := true
	for {
		timeout := p.opts.HeaderTimeout
		if !first {
			// Waiting for the next kept-alive request: idle timeout,
			// then the header timeout once the first byte arrived.
			c.SetReadDeadline(time.Now().Add(p.opts.IdleTimeout))
			if _, err := br.Peek(1); err != nil {
				return
			}
		}
		first = false
		c.SetReadDeadline(time.Now().Add(timeout))
		req, hostHdr, err := readRequest(br, p.opts.MaxHeaderBytes)
		if err != nil {
			if !errors.Is(err, errClientGone) {
				p.logBad(s.name, err)
				writeError(c, err)
			}
			return
		}
		c.SetReadDeadline(time.Time{})
		keep := p.handle(ctx, s, cc, br, req, hostHdr)
		if !keep {
			return
		}
	}
}

// connCloser closes a client connection, and the tunnel or upstream
// request it carries at the time, when the proxy shuts down.
type connCloser struct {
	c net.Conn

	mu     sync.Mutex
	tun    *tunnel
	closed bool
}

func (cc *connCloser) close() {
	cc.mu.Lock()
	cc.closed = true
	t := cc.tun
	cc.mu.Unlock()
	cc.c.Close()
	if t != nil {
		t.close()
	}
}

// carry registers the tunnel the connection now carries (nil: none). A
// tunnel registered after shutdown began is closed at once.
func (cc *connCloser) carry(t *tunnel) {
	cc.mu.Lock()
	closed := cc.closed
	if !closed {
		cc.tun = t
	}
	cc.mu.Unlock()
	if closed && t != nil {
		t.close()
	}
}

func (p *Proxy) logBad(sandbox string, err error) {
	var re *requestError
	reason := "bad-request"
	if errors.As(err, &re) {
		reason = re.reason
	}
	p.opts.Logger.LogAttrs(context.Background(), slog.LevelInfo, "egress decision",
		slog.String("component", "egress"),
		slog.String("sandbox", sandbox),
		slog.String("decision", "deny"),
		slog.String("reason", reason),
		slog.String("detail", escape(err.Error())),
	)
}
