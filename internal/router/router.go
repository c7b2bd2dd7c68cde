// Package router is the privacy router: an HTTP server that speaks the
// OpenAI and Anthropic wire formats to sandboxes, which call it without any
// key, and forwards each request to a chain of provider targets with the
// provider's key injected. It identifies the sandbox by the listener that
// accepted the connection, strips every credential in both directions,
// admits requests against per-sandbox limits and budgets, refuses
// provider-side egress the sandbox's policy does not allow, falls back along
// the route's chain, and records usage. It does not store keys (see
// internal/vault) nor persist usage (see internal/usage).
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawcage/clawcage/internal/h1"
	"github.com/clawcage/clawcage/internal/rawsock"
	"github.com/clawcage/clawcage/internal/vault"
)

// Provider kinds, the wire format a provider speaks.
const (
	KindOpenAI    = "openai"
	KindAnthropic = "anthropic"
)

// Key is one provider key. Secret is owned by the KeySource (mlocked
// there); the router only copies it into outbound request headers. As a
// vault.Secret it formats as "[REDACTED]" under fmt, slog and JSON.
type Key struct {
	ID     string
	Secret vault.Secret
}

const redacted = "[REDACTED]"

// String describes k without its secret.
func (k Key) String() string { return "router.Key{ID:" + k.ID + " Secret:" + redacted + "}" }

// KeySource returns the keys of a provider, in rotation order. An empty
// result means the provider is called without a key (e.g. a local Ollama).
type KeySource interface {
	Keys(provider string) []Key
}

// UsageRecord is one routed request as the ledger stores it.
type UsageRecord struct {
	Time      time.Time
	Sandbox   string
	Route     string
	Provider  string
	Model     string
	TokensIn  int64
	TokensOut int64
	CostUSD   float64
	Latency   time.Duration
	TTFB      time.Duration
	Status    int
	Attempts  int
	Error     string
}

// UsageRecorder persists usage and answers spend queries for budgets.
type UsageRecorder interface {
	Record(ctx context.Context, r UsageRecord) error
	Spend(ctx context.Context, sandbox string, since time.Time) (float64, error)
}

// EgressPolicy says which provider-side egress a sandbox may cause: server
// tools the provider runs on its behalf and URLs the provider would fetch.
type EgressPolicy interface {
	// AllowsProviderTool reports whether the named tool (web_search,
	// web_fetch, code_execution, mcp, code_interpreter, file_search,
	// image_generation, computer_use) may be used.
	AllowsProviderTool(name string) bool
	// AllowsURL reports whether the provider may fetch from host:port.
	AllowsURL(host string, port int) bool
}

// Provider is one upstream.
type Provider struct {
	Kind    string
	BaseURL string
	// Timeout bounds one attempt; 0 means only the chain deadline applies.
	Timeout time.Duration
}

// Target is one step of a route.
type Target struct {
	Provider string
	Model    string
}

// String is "provider/model", the form used in headers, logs and metrics.
func (t Target) String() string { return t.Provider + "/" + t.Model }

// Retry governs backoff, cooldown and the chain deadline.
type Retry struct {
	Initial       time.Duration
	Max           time.Duration
	Deadline      time.Duration
	Cooldown      time.Duration
	CooldownAfter int
}

// Price in USD per million tokens.
type Price struct {
	Input, Output float64
}

// Limits are one sandbox's admission limits; zero means unlimited.
type Limits struct {
	RequestsPerMinute int
	TokensPerMinute   int
	Concurrent        int
	USDPerDay         float64
	USDPerMonth       float64
}

// Sandbox is what the router knows about one sandbox.
type Sandbox struct {
	Limits Limits
	// Egress decides provider-side tools and URLs; nil refuses all of them.
	Egress EgressPolicy
}

// Options configure a Router. Everything is a plain value so that the
// command converts its configuration and tests build one directly.
type Options struct {
	Providers   map[string]Provider
	Routes      map[string][]Target
	Retry       Retry
	Prices      map[string]Price
	AllowDirect bool
	Sandboxes   map[string]Sandbox

	Keys  KeySource
	Usage UsageRecorder // may be nil: no ledger, budgets count from zero
	Log   *slog.Logger
	// Registry receives the router's metrics; nil creates a private one.
	Registry *prometheus.Registry
	// Transport sends upstream requests; nil uses a tuned http.Transport.
	Transport http.RoundTripper
	// Now is the clock for admission, cooldown and budgets; nil is time.Now.
	Now func() time.Time
	// Sleep waits between attempts; nil waits on a timer or ctx.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a value in [0,1) used to jitter backoff; nil uses math/rand.
	Jitter func() float64
	// MaxBodyBytes bounds a request body (default 32 MiB).
	MaxBodyBytes int64
}

// Router routes model requests for any number of sandboxes.
type Router struct {
	opt       Options
	log       *slog.Logger
	transport http.RoundTripper
	metrics   *metrics
	upstreams map[string]*upstream
	cool      *cooldowns

	records   chan UsageRecord
	recorded  chan struct{}
	closeOnce sync.Once
	recMu     sync.RWMutex
	recClosed bool

	mu         sync.Mutex
	admissions map[string]*admission

	sbMu      sync.RWMutex
	sandboxes map[string]Sandbox // opt.Sandboxes plus AddSandbox, minus RemoveSandbox

	targets   map[Target]*targetInfo // every target of every route
	routeHdrs map[string][]string    // route name → X-Clawcage-Route value
}

type upstream struct {
	name string
	Provider
	base *url.URL
	urls map[string]*url.URL // endpoint path → upstream URL, shared read-only
	// officialOpenAI is set for OpenAI's own API (api.openai.com), which
	// wants a translated request's output limit as max_completion_tokens.
	officialOpenAI bool
}

// targetInfo is what the hot path needs about a route target, computed
// once in New (per request only for direct targets).
type targetInfo struct {
	label     string   // metric and log label: "provider/model", "provider/*" for direct
	hdr       []string // X-Clawcage-Target value, shared read-only
	modelJSON []byte   // the model as a JSON string, spliced into request bodies
}

func newTargetInfo(t Target, direct bool) *targetInfo {
	ti := &targetInfo{label: t.String(), hdr: []string{t.String()}, modelJSON: quoteJSON(t.Model)}
	if direct {
		ti.label = t.Provider + "/*"
	}
	return ti
}

// target returns the precomputed information about t.
func (r *Router) target(route routeRef, t Target) *targetInfo {
	if !route.direct {
		if ti, ok := r.targets[t]; ok {
			return ti
		}
	}
	return newTargetInfo(t, route.direct)
}

// New validates o and returns a Router.
func New(o Options) (*Router, error) {
	if o.Keys == nil {
		return nil, errors.New("router: no key source")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	if o.Jitter == nil {
		o.Jitter = defaultJitter
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 32 << 20
	}
	if o.Retry.Initial <= 0 {
		o.Retry.Initial = 500 * time.Millisecond
	}
	if o.Retry.Max < o.Retry.Initial {
		o.Retry.Max = max(5*time.Second, o.Retry.Initial)
	}
	if o.Retry.Deadline <= 0 {
		o.Retry.Deadline = 60 * time.Second
	}
	if o.Retry.Cooldown <= 0 {
		o.Retry.Cooldown = 30 * time.Second
	}
	if o.Retry.CooldownAfter <= 0 {
		o.Retry.CooldownAfter = 3
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	r := &Router{
		opt:        o,
		log:        o.Log.With("component", "router"),
		transport:  o.Transport,
		upstreams:  make(map[string]*upstream, len(o.Providers)),
		cool:       newCooldowns(),
		admissions: make(map[string]*admission),
		sandboxes:  make(map[string]Sandbox, len(o.Sandboxes)),
	}
	for name, sb := range o.Sandboxes {
		r.sandboxes[name] = sb
	}
	if r.transport == nil {
		r.transport = newTransport()
	}
	for name, p := range o.Providers {
		switch p.Kind {
		case KindOpenAI, KindAnthropic:
		default:
			return nil, fmt.Errorf("router: provider %q: kind %q is not openai or anthropic", name, p.Kind)
		}
		u, err := url.Parse(p.BaseURL)
		if err != nil {
			return nil, fmt.Errorf("router: provider %q: base URL is not a URL", name)
		}
		if u.User != nil {
			return nil, fmt.Errorf("router: provider %q: base URL must not carry credentials", name)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("router: provider %q: base URL %q is not an http(s) URL", name, u.Redacted())
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		up := &upstream{name: name, Provider: p, base: u, urls: make(map[string]*url.URL, len(endpoints)),
			officialOpenAI: p.Kind == KindOpenAI && strings.EqualFold(u.Hostname(), "api.openai.com")}
		for path := range endpoints {
			eu, err := url.Parse(up.endpointURL(path))
			if err != nil {
				return nil, fmt.Errorf("router: provider %q: endpoint %s: %w", name, path, err)
			}
			up.urls[path] = eu
		}
		r.upstreams[name] = up
	}
	r.targets = make(map[Target]*targetInfo)
	r.routeHdrs = map[string][]string{"direct": {"direct"}}
	for route, chain := range o.Routes {
		r.routeHdrs[route] = []string{route}
		for _, t := range chain {
			r.targets[t] = newTargetInfo(t, false)
		}
	}
	for route, chain := range o.Routes {
		if len(chain) == 0 {
			return nil, fmt.Errorf("router: route %q has no targets", route)
		}
		for i, t := range chain {
			if _, ok := r.upstreams[t.Provider]; !ok {
				return nil, fmt.Errorf("router: route %q target %d: unknown provider %q", route, i, t.Provider)
			}
			if t.Model == "" {
				return nil, fmt.Errorf("router: route %q target %d: no model", route, i)
			}
		}
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("router: register metrics: %w", err)
	}
	r.metrics = m
	r.records = make(chan UsageRecord, 4096)
	r.recorded = make(chan struct{})
	go r.recordLoop()
	return r, nil
}

// Registry returns the registry holding the router's metrics.
func (r *Router) Registry() *prometheus.Registry { return r.opt.Registry }

// Routes lists the route names, sorted.
func (r *Router) Routes() []string {
	names := make([]string, 0, len(r.opt.Routes))
	for n := range r.opt.Routes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Handler returns the HTTP handler for requests from sandbox. The
// sandbox's settings (limits, provider-side egress) are those known when
// Handler is called.
func (r *Router) Handler(sandbox string) http.Handler {
	sb, _ := r.sandbox(sandbox)
	return &sandboxHandler{r: r, sandbox: sandbox, egress: sb.Egress, adm: r.admissionFor(sandbox),
		inflight: r.metrics.inflight.WithLabelValues(sandbox), cost: r.metrics.costUSD.WithLabelValues(sandbox)}
}

// sandbox returns what the router knows about name.
func (r *Router) sandbox(name string) (Sandbox, bool) {
	r.sbMu.RLock()
	defer r.sbMu.RUnlock()
	sb, ok := r.sandboxes[name]
	return sb, ok
}

// Serve serves requests from sandbox on ln until ctx ends; every request
// accepted on ln is attributed to sandbox. It closes ln.
func (r *Router) Serve(ctx context.Context, ln net.Listener, sandbox string) error {
	if _, ok := r.sandbox(sandbox); !ok {
		r.log.Warn("sandbox not in configuration: no admission limits, no provider-side egress", "sandbox", sandbox)
	}
	// h1.Server, not net/http's: no goroutine per request, one write per
	// flush, reused buffers (package h1).
	srv := &h1.Server{
		Handler:           r.Handler(sandbox),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		Logger:            r.log.With("sandbox", sandbox),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = srv.Shutdown(sctx)
			cancel()
		case <-done:
		}
	}()
	// Sandbox connections read and write with raw syscalls (quietIO).
	err := srv.Serve(rawsock.Listener{Listener: ln, Options: quietIO()})
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve sandbox %s on %s: %w", sandbox, ln.Addr(), err)
}

// quietIO is how the router reads and writes sandbox connections and lean
// upstream connections: raw read(2)/write(2) calls, which wake no sysmon
// (package rawsock), of at most 256 KiB each, never switching to ordinary
// syscalls (requests and answers, no tunnels).
func quietIO() rawsock.Options { return rawsock.Options{MaxSlice: 256 << 10} }

// quiet wraps c for quietIO when it is a TCP connection and returns it
// unchanged otherwise.
func quiet(c net.Conn) net.Conn { return rawsock.Wrap(c, quietIO()) }

func (r *Router) admissionFor(sandbox string) *admission {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.admissions[sandbox]
	if !ok {
		sb, _ := r.sandbox(sandbox)
		a = newAdmission(sandbox, sb.Limits, r.opt.Now)
		r.admissions[sandbox] = a
	}
	return a
}

// SeedSpend loads each configured sandbox's spend for the current day and
// month from the usage recorder so that budgets survive a restart. It fails
// when a sandbox has a budget and its spend cannot be read: a router that
// cannot know what was spent must not serve (fail closed).
func (r *Router) SeedSpend(ctx context.Context) error {
	if r.opt.Usage == nil {
		return nil
	}
	r.sbMu.RLock()
	sbs := make(map[string]Sandbox, len(r.sandboxes))
	for name, sb := range r.sandboxes {
		sbs[name] = sb
	}
	r.sbMu.RUnlock()
	for name, sb := range sbs {
		if err := r.seedSpend(ctx, name, sb.Limits, r.admissionFor(name)); err != nil {
			return err
		}
	}
	return nil
}

// seedSpend loads one sandbox's spend into a when it has a budget.
func (r *Router) seedSpend(ctx context.Context, name string, l Limits, a *admission) error {
	if r.opt.Usage == nil || (l.USDPerDay == 0 && l.USDPerMonth == 0) {
		return nil
	}
	now := r.opt.Now().UTC()
	day, month := dayStart(now), monthStart(now)
	d, err := r.opt.Usage.Spend(ctx, name, day)
	if err != nil {
		return fmt.Errorf("read spend of sandbox %s since %s: %w", name, day.Format(time.DateOnly), err)
	}
	m, err := r.opt.Usage.Spend(ctx, name, month)
	if err != nil {
		return fmt.Errorf("read spend of sandbox %s since %s: %w", name, month.Format(time.DateOnly), err)
	}
	a.seed(now, d, m)
	return nil
}

func (r *Router) price(model string) Price { return r.opt.Prices[model] }

// cost is the USD cost of tokens on model.
func (r *Router) cost(model string, in, out int64) float64 {
	p := r.price(model)
	return (float64(in)*p.Input + float64(out)*p.Output) / 1e6
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newTransport is the default upstream transport: plain-http providers
// (local Ollama, vLLM, a sidecar) go through the lean HTTP/1.1 client,
// everything else through http.Transport (TLS, HTTP/2). Both keep up to 256
// idle connections per provider host, enough for 1,000 requests/s of
// short calls, and never ask for compression, so bodies pass through as
// the provider sent them.
func newTransport() http.RoundTripper {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	std := &http.Transport{
		Proxy:                 nil, // the router dials providers itself, never through a sandbox-visible proxy
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass bodies through as the provider sent them, no re-encoding
	}
	return newLeanTransport(std, dialer.DialContext, 256, 90*time.Second)
}
