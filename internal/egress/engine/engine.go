// Package engine is the policy engine process's core: it keeps each
// sandbox's effective policy (its configured policy plus the operator's
// grants from the approvals database), feeds denial events into the
// queue, applies approvals, expiries and revocations to the egress proxy
// atomically, and serves the operators' admin API. The proxy itself is
// internal/egress; storage is internal/egress/approvals.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/clawcage/clawcage/internal/egress"
	"github.com/clawcage/clawcage/internal/egress/approvals"
	"github.com/clawcage/clawcage/internal/hostport"
	"github.com/clawcage/clawcage/internal/policy"
)

// Rule-name prefixes of grants in a compiled policy.
const (
	approvalPrefix = "approval/"
	oncePrefix     = egress.OncePrefix
)

// Approval modes accepted by Approve and Allow.
const (
	ModeOnce   = "once"
	ModeFor    = "for"
	ModeAlways = "always"
)

// onceTTL bounds how long an unused single-use approval stays valid.
const onceTTL = time.Hour

// Options configure an Engine.
type Options struct {
	// Policies are the configured sandboxes' policies by name.
	Policies map[string]policy.Policy
	// Dir is the engine's state directory (<state>/policy).
	Dir string
	// PresetParams parameterise the npm/go/apt presets.
	PresetParams map[string]string
	// Proxy configures the egress proxy (Denials and Once are set by the engine).
	Proxy egress.Options
	// Queue bounds the denial queue.
	Queue approvals.Options
	// Logger receives engine events; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Engine owns the proxy, the store and every sandbox's effective policy.
type Engine struct {
	opts  Options
	store *approvals.Store
	proxy *egress.Proxy
	log   *slog.Logger

	// pmu guards opts.Policies, which AddSandbox and RemoveSandbox change
	// at run time (hotadd.go); it is taken last, never held across calls.
	pmu sync.RWMutex

	mu     sync.Mutex
	grants map[string][]approvals.Grant // persisted, by sandbox
	once   map[string]approvals.Grant   // single-use, by id
}

// DBPath returns the database path in dir.
func DBPath(dir string) string { return filepath.Join(dir, "policy.db") }

// SocketPath returns the admin socket path in dir.
func SocketPath(dir string) string { return filepath.Join(dir, "admin.sock") }

// Open opens the database, loads every grant and installs every sandbox's
// effective policy in the proxy. Any failure is returned: the caller must
// not serve (never an open proxy, never a proxy without its approvals).
func Open(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// No sandboxes is valid: under `clawcage up` the engine serves its admin
	// socket and is restarted with listeners when a sandbox is created.
	if opts.Queue.Now == nil {
		opts.Queue.Now = opts.Now
	}
	store, err := approvals.Open(ctx, DBPath(opts.Dir), opts.Queue)
	if err != nil {
		return nil, fmt.Errorf("policy engine: %w", err)
	}
	e := &Engine{opts: opts, store: store, log: opts.Logger, grants: map[string][]approvals.Grant{}, once: map[string]approvals.Grant{}}
	po := opts.Proxy
	po.Denials = e
	po.Once = e
	if po.Logger == nil {
		po.Logger = opts.Logger
	}
	e.proxy = egress.New(po)
	gs, err := store.Grants(ctx)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("policy engine: load approvals from %s: %w", store.Path(), err)
	}
	for _, g := range gs {
		if _, ok := opts.Policies[g.Sandbox]; !ok {
			e.log.Warn("grant for a sandbox that is not configured; ignored", "component", "policy", "sandbox", g.Sandbox, "grant", g.ID)
			continue
		}
		e.grants[g.Sandbox] = append(e.grants[g.Sandbox], g)
	}
	for _, name := range e.sandboxNames() {
		m, err := e.compile(name, e.grants[name])
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("policy engine: sandbox %q: compile policy with its %d approvals: %w", name, len(e.grants[name]), err)
		}
		e.proxy.SetPolicy(name, m)
	}
	return e, nil
}

// Close closes the database.
func (e *Engine) Close() error { return e.store.Close() }

// Proxy returns the egress proxy.
func (e *Engine) Proxy() *egress.Proxy { return e.proxy }

// Serve serves the egress proxy for sandbox on ln.
func (e *Engine) Serve(ctx context.Context, ln net.Listener, sandbox string) error {
	if _, ok := e.policyOf(sandbox); !ok {
		ln.Close()
		return fmt.Errorf("policy engine: sandbox %q is not configured (have %v)", sandbox, e.sandboxNames())
	}
	return e.proxy.Serve(ctx, ln, sandbox)
}

func (e *Engine) sandboxNames() []string {
	e.pmu.RLock()
	defer e.pmu.RUnlock()
	names := make([]string, 0, len(e.opts.Policies))
	for n := range e.opts.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// grantRule returns the policy rule a host grant adds.
func grantRule(prefix string, g approvals.Grant) policy.Rule {
	r := policy.Rule{Name: prefix + g.ID, Ports: []int{g.Port}}
	if a, ok, err := hostport.ParseIPLiteral(g.Host); err == nil && ok {
		r.CIDRs = []string{netip.PrefixFrom(a, a.BitLen()).String()}
	} else {
		r.Hosts = []string{g.Host}
	}
	return r
}

// compile builds a sandbox's effective policy from its configuration, the
// given persisted grants and its live single-use grants. Host grants are
// passed as CompileOptions.Extra: tried after the policy's own rules, so a
// grant never voids a method/path restriction the policy sets, and never
// makes the policy fail to compile.
func (e *Engine) compile(sandbox string, grants []approvals.Grant) (*policy.Matcher, error) {
	p, _ := e.policyOf(sandbox)
	return e.compilePolicy(p, sandbox, grants)
}

// compilePolicy is compile for policy p of sandbox.
func (e *Engine) compilePolicy(p policy.Policy, sandbox string, grants []approvals.Grant) (*policy.Matcher, error) {
	p.Presets = slices.Clone(p.Presets)
	var extra []policy.Rule
	now := e.opts.Now()
	for _, g := range grants {
		if g.Mode == approvals.ModeUntil && !now.Before(g.Expires) {
			continue
		}
		switch g.Kind {
		case approvals.KindPreset:
			if !slices.Contains(p.Presets, g.Preset) {
				p.Presets = append(p.Presets, g.Preset)
			}
		case approvals.KindHost:
			extra = append(extra, grantRule(approvalPrefix, g))
		}
	}
	ids := make([]string, 0, len(e.once))
	for id, g := range e.once {
		if g.Sandbox == sandbox {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		extra = append(extra, grantRule(oncePrefix, e.once[id]))
	}
	return p.Compile(policy.CompileOptions{PresetParams: e.opts.PresetParams, Extra: extra})
}

// apply recompiles sandbox with grants and swaps it in; rules that
// disappeared have their live tunnels closed. Called with e.mu held.
func (e *Engine) apply(sandbox string, grants []approvals.Grant) error {
	m, err := e.compile(sandbox, grants)
	if err != nil {
		return err
	}
	old := e.proxy.Matcher(sandbox)
	e.proxy.SetPolicy(sandbox, m)
	if old != nil {
		var gone []string
		for _, r := range old.Rules() {
			if _, ok := m.Rule(r.Name); !ok && !isOnce(r.Name) {
				gone = append(gone, r.Name)
			}
		}
		if len(gone) > 0 {
			n := e.proxy.CloseTunnels(sandbox, gone...)
			e.log.Info("policy rules removed", "component", "policy", "sandbox", sandbox, "rules", gone, "closed_tunnels", n)
		}
	}
	return nil
}

func isOnce(rule string) bool {
	return len(rule) > len(oncePrefix) && rule[:len(oncePrefix)] == oncePrefix
}

// Denied records a denial event (egress.DenialSink).
func (e *Engine) Denied(ctx context.Context, d egress.Denial) string {
	id, err := e.store.RecordDenial(ctx, approvals.Denial{Sandbox: d.Sandbox, Host: d.Host, Port: d.Port, Method: d.Method, Rule: d.Rule, Reason: d.Reason, Time: d.Time})
	if err != nil {
		e.log.Error("record denial", "component", "policy", "sandbox", d.Sandbox, "err", err)
		return ""
	}
	return id
}

// Consume uses up a single-use approval (egress.OnceConsumer).
func (e *Engine) Consume(sandbox, rule string) bool {
	id := rule[len(oncePrefix):]
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.once[id]
	if !ok || g.Sandbox != sandbox || !e.opts.Now().Before(g.Expires) {
		return false
	}
	delete(e.once, id)
	if err := e.apply(sandbox, e.grants[sandbox]); err != nil {
		e.log.Error("recompile after single-use approval", "component", "policy", "sandbox", sandbox, "err", err)
	}
	return true
}

// Approve turns queue entry id into a grant: mode ModeOnce (one
// connection), ModeFor (for d) or ModeAlways.
func (e *Engine) Approve(ctx context.Context, id, mode string, d time.Duration) (approvals.Grant, error) {
	ent, err := e.store.Entry(ctx, id)
	if err != nil {
		return approvals.Grant{}, err
	}
	if ent.Flooding {
		return approvals.Grant{}, fmt.Errorf("entry %s counts %d denials that were not queued because sandbox %q exceeded its queue cap or rate; it cannot be approved (use `clawcage policy allow`)", id, ent.Count, ent.Sandbox)
	}
	return e.grant(ctx, ent.Sandbox, ent.Host, ent.Port, mode, d, id)
}

// Allow grants sandbox access to host:port directly.
func (e *Engine) Allow(ctx context.Context, sandbox, host string, port int, mode string, d time.Duration) (approvals.Grant, error) {
	h, err := hostport.NormalizeHost(host)
	if err != nil {
		return approvals.Grant{}, fmt.Errorf("allow: %w", err)
	}
	if port < 1 || port > 65535 {
		return approvals.Grant{}, fmt.Errorf("allow: %d is not a port", port)
	}
	return e.grant(ctx, sandbox, h, port, mode, d, "")
}

func (e *Engine) grant(ctx context.Context, sandbox, host string, port int, mode string, d time.Duration, source string) (approvals.Grant, error) {
	if _, ok := e.policyOf(sandbox); !ok {
		return approvals.Grant{}, fmt.Errorf("sandbox %q is not configured", sandbox)
	}
	now := e.opts.Now()
	g := approvals.Grant{ID: approvals.NewID(), Sandbox: sandbox, Kind: approvals.KindHost, Host: host, Port: port, Created: now.UTC(), Source: source}
	switch mode {
	case ModeAlways, "":
		g.Mode = approvals.ModeAlways
	case ModeFor:
		if d <= 0 {
			return approvals.Grant{}, fmt.Errorf("approve for %v: the duration must be positive", d)
		}
		g.Mode, g.Expires = approvals.ModeUntil, now.Add(d).UTC()
	case ModeOnce:
		g.Mode, g.Expires = ModeOnce, now.Add(onceTTL).UTC()
	default:
		return approvals.Grant{}, fmt.Errorf("unknown approval mode %q (want once, for or always)", mode)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if mode == ModeOnce {
		e.once[g.ID] = g
		if err := e.apply(sandbox, e.grants[sandbox]); err != nil {
			delete(e.once, g.ID)
			return approvals.Grant{}, fmt.Errorf("approve %s:%d for sandbox %q: %w", host, port, sandbox, err)
		}
		if source != "" {
			if err := e.store.RemoveEntry(ctx, source); err != nil {
				return g, err
			}
		}
		return g, nil
	}
	next := append(slices.Clone(e.grants[sandbox]), g)
	if _, err := e.compile(sandbox, next); err != nil {
		return approvals.Grant{}, fmt.Errorf("approve %s:%d for sandbox %q: %w", host, port, sandbox, err)
	}
	if err := e.store.AddGrant(ctx, g); err != nil {
		return approvals.Grant{}, err
	}
	e.grants[sandbox] = next
	if err := e.apply(sandbox, next); err != nil {
		return approvals.Grant{}, err
	}
	e.log.Info("approved", "component", "policy", "sandbox", sandbox, "host", host, "port", port, "mode", g.Mode, "rule", approvalPrefix+g.ID)
	return g, nil
}

// AddPreset adds an embedded preset to sandbox's policy permanently.
func (e *Engine) AddPreset(ctx context.Context, sandbox, preset string) (approvals.Grant, error) {
	if _, ok := e.policyOf(sandbox); !ok {
		return approvals.Grant{}, fmt.Errorf("sandbox %q is not configured", sandbox)
	}
	g := approvals.Grant{ID: approvals.NewID(), Sandbox: sandbox, Kind: approvals.KindPreset, Preset: preset, Mode: approvals.ModeAlways, Created: e.opts.Now().UTC()}
	e.mu.Lock()
	defer e.mu.Unlock()
	next := append(slices.Clone(e.grants[sandbox]), g)
	if _, err := e.compile(sandbox, next); err != nil {
		return approvals.Grant{}, fmt.Errorf("add preset %q to sandbox %q: %w", preset, sandbox, err)
	}
	if err := e.store.AddGrant(ctx, g); err != nil {
		return approvals.Grant{}, err
	}
	e.grants[sandbox] = next
	return g, e.apply(sandbox, next)
}

// Reject rejects a queue entry.
func (e *Engine) Reject(ctx context.Context, id string) error { return e.store.Reject(ctx, id) }

// Revoke removes a grant (persisted or single-use) and closes the live
// tunnels it allowed.
func (e *Engine) Revoke(ctx context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if g, ok := e.once[id]; ok {
		delete(e.once, id)
		return e.apply(g.Sandbox, e.grants[g.Sandbox])
	}
	for sb, gs := range e.grants {
		i := slices.IndexFunc(gs, func(g approvals.Grant) bool { return g.ID == id })
		if i < 0 {
			continue
		}
		if err := e.store.RemoveGrant(ctx, id); err != nil {
			return err
		}
		next := slices.Delete(slices.Clone(gs), i, i+1)
		e.grants[sb] = next
		return e.apply(sb, next)
	}
	return fmt.Errorf("grant %q: %w", id, approvals.ErrNotFound)
}

// Expire removes grants whose time is up and closes their tunnels; Run
// calls it every interval.
func (e *Engine) Expire(ctx context.Context) error {
	now := e.opts.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for id, g := range e.once {
		if !now.Before(g.Expires) {
			delete(e.once, id)
			errs = append(errs, e.apply(g.Sandbox, e.grants[g.Sandbox]))
		}
	}
	for sb, gs := range e.grants {
		next := gs[:0:0]
		for _, g := range gs {
			if g.Mode == approvals.ModeUntil && !now.Before(g.Expires) {
				if err := e.store.RemoveGrant(ctx, g.ID); err != nil && !approvals.IsNotFound(err) {
					errs = append(errs, err)
					next = append(next, g)
				}
				continue
			}
			next = append(next, g)
		}
		if len(next) != len(gs) {
			e.grants[sb] = next
			e.log.Info("approvals expired", "component", "policy", "sandbox", sb, "count", len(gs)-len(next))
			errs = append(errs, e.apply(sb, next))
		}
	}
	return errors.Join(errs...)
}

// Run expires grants every interval until ctx is done.
func (e *Engine) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.Expire(ctx); err != nil {
				e.log.Error("expire approvals", "component", "policy", "err", err)
			}
		}
	}
}

// SandboxView is a sandbox's effective policy for display.
type SandboxView struct {
	Sandbox string            `json:"sandbox"`
	Rules   []policy.Rule     `json:"rules"`
	Presets []string          `json:"presets"`
	Grants  []approvals.Grant `json:"grants"`
}

// Show returns sandbox's effective policy.
func (e *Engine) Show(sandbox string) (SandboxView, error) {
	p, ok := e.policyOf(sandbox)
	if !ok {
		return SandboxView{}, fmt.Errorf("sandbox %q is not configured (have %v)", sandbox, e.sandboxNames())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	v := SandboxView{Sandbox: sandbox, Rules: e.proxy.Matcher(sandbox).Rules(), Presets: slices.Clone(p.Presets), Grants: slices.Clone(e.grants[sandbox])}
	for _, g := range e.once {
		if g.Sandbox == sandbox {
			v.Grants = append(v.Grants, g)
		}
	}
	for _, g := range v.Grants {
		if g.Kind == approvals.KindPreset && !slices.Contains(v.Presets, g.Preset) {
			v.Presets = append(v.Presets, g.Preset)
		}
	}
	if v.Rules == nil {
		v.Rules = []policy.Rule{}
	}
	return v, nil
}

// Pending returns the queue entries awaiting a decision.
func (e *Engine) Pending(ctx context.Context) ([]approvals.Entry, error) {
	return e.store.Queue(ctx, approvals.StatePending)
}
