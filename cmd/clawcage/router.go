package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/logbuf"
	"github.com/clawcage/clawcage/internal/netns"
	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/runas"
	"github.com/clawcage/clawcage/internal/usage"
	"github.com/clawcage/clawcage/internal/vault"
)

func newRouterCmd(g *globalOptions) *cobra.Command {
	var cfgPath string
	var listens, listenFDs []string
	cmd := &cobra.Command{
		Use:   "router --config FILE [--listen [SANDBOX=]ADDR]... [--listen-fd SANDBOX=FD]...",
		Short: "Run the privacy router (provider keys, model routing, limits) on its own",
		Long: `Run the privacy router. Each listener belongs to one sandbox: requests are
attributed by the listener that accepted them. Under the supervisor the
listeners are inherited (LISTEN_FDS/LISTEN_FDNAMES, named by sandbox);
standalone, --listen opens TCP listeners and --listen-fd adopts an open
listening socket. The admin socket is <state>/router/admin.sock (mode 0600).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			return runRouter(cmd.Context(), g.stateDir, cfgPath, listens, listenFDs)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "clawcage.yaml with the router's providers, routes and the sandboxes' limits")
	cmd.Flags().StringArrayVar(&listens, "listen", nil, "sandbox-facing listener `[SANDBOX=]ADDR` (repeatable; sandbox \"default\" when omitted)")
	cmd.Flags().StringArrayVar(&listenFDs, "listen-fd", nil, "adopt an inherited listening socket `SANDBOX=FD` (repeatable)")
	return cmd
}

type routerListener struct {
	sandbox string
	ln      net.Listener
}

func runRouter(ctx context.Context, stateDir, cfgPath string, listens, listenFDs []string) error {
	setRouterProcs()
	// Log lines are written in batches off the request path (a paced
	// logbuf: a line after a quiet spell at once, at most one write per
	// 100 ms under load); the deferred Close writes the last ones.
	logOut := logbuf.NewPaced(os.Stderr, 100*time.Millisecond, logbuf.DefaultSize)
	defer logOut.Close()
	log := slog.New(slog.NewJSONHandler(logOut, nil)).With("component", "router")
	// Hygiene before anything touches a key.
	if runas.Supervised() {
		if err := runas.HardenSelf(); err != nil {
			return fmt.Errorf("router: refusing to start: %w", err)
		}
	}
	hard, err := router.HardenProcess()
	if err != nil {
		return fmt.Errorf("router: refusing to start: %w", err)
	}
	if !hard.MemoryLocked {
		log.Warn("process memory not locked", "reason", hard.MemoryLockNote)
	}

	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	ctl, err := netns.InheritedControl()
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	closeCtl := func() {
		if ctl != nil {
			ctl.Close()
		}
	}
	lns, err := routerListeners(listens, listenFDs)
	if err != nil {
		return err
	}
	closeAll := func() {
		closeCtl()
		for _, l := range lns {
			l.ln.Close()
		}
	}
	if len(lns) == 0 && !runas.Supervised() {
		return errors.New("router: no listeners: pass --listen [SANDBOX=]ADDR or run under the supervisor")
	}
	for _, l := range lns {
		if _, ok := cfg.Sandboxes[l.sandbox]; !ok && l.sandbox != "default" {
			closeAll()
			return fmt.Errorf("router: listener for sandbox %q: no such sandbox in %s", l.sandbox, cfgPath)
		}
	}

	// vault.Open creates the state dir 0700 when missing and refuses one
	// that is not private to this uid.
	dir := filepath.Join(stateDir, "router")
	v, err := vault.Open(dir)
	if err != nil {
		closeAll()
		return fmt.Errorf("router: open key vault: %w", err)
	}
	// Closed last: key memory is unmapped only after serving has stopped.
	defer v.Close()
	if !v.MemoryLocked() {
		log.Warn("vault key memory not locked (raise RLIMIT_MEMLOCK): keys may be swapped out")
	}
	ledger, err := usage.Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		closeAll()
		return fmt.Errorf("router: open usage ledger: %w", err)
	}
	defer ledger.Close()

	params := &presetParamsOnce{}
	opts, err := routerOptions(ctx, cfg, params, log)
	if err != nil {
		closeAll()
		return err
	}
	opts.Keys = vaultKeys{v}
	opts.Usage = ledgerUsage{ledger}
	opts.Log = log
	r, err := router.New(opts)
	if err != nil {
		closeAll()
		return err
	}
	// Budgets are loaded before any listener is served (fail closed).
	if err := r.SeedSpend(ctx); err != nil {
		closeAll()
		return fmt.Errorf("router: %w", err)
	}
	adminLn, err := admin.Listen(admin.SocketPath(stateDir), log)
	if err != nil {
		closeAll()
		return err
	}
	adminSrv := &http.Server{
		Handler:           admin.NewHandler(admin.Deps{Vault: v, Ledger: ledger, Metrics: r.Registry(), Logger: log}),
		ReadHeaderTimeout: 10 * time.Second,
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	serve := func(sandbox string) serveFunc {
		return func(ctx context.Context, ln net.Listener) error { return r.Serve(ctx, ln, sandbox) }
	}
	set := newSandboxListeners(ctx, log, jsonRefusal(http.StatusServiceUnavailable, map[string]any{"error": map[string]string{
		"type":    "clawcage_sandbox_not_loaded",
		"message": "the privacy router could not load this sandbox's settings; every request is refused (see clawcage logs --component router)",
	}}))
	set.load = func(ctx context.Context, sandbox string) (serveFunc, error) {
		c, err := config.Load(cfgPath)
		if err != nil {
			return nil, fmt.Errorf("router: sandbox %q: %w", sandbox, err)
		}
		sb, ok := c.Sandboxes[sandbox]
		if !ok {
			return nil, fmt.Errorf("router: sandbox %q is not in %s", sandbox, cfgPath)
		}
		if err := r.AddSandbox(ctx, sandbox, routerSandbox(ctx, c, sandbox, sb, params, log)); err != nil {
			return nil, fmt.Errorf("router: sandbox %q: %w", sandbox, err)
		}
		return serve(sandbox), nil
	}
	set.unload = r.RemoveSandbox
	for _, l := range lns {
		if err := set.start(l.sandbox, l.ln, serve(l.sandbox)); err != nil {
			log.Error("listener", "sandbox", l.sandbox, "err", err)
			continue
		}
		log.Info("router listening", "sandbox", l.sandbox, "addr", l.ln.Addr().String())
	}
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := adminSrv.Serve(adminLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	set.serveControl(ctl)
	log.Info("router ready", "admin", admin.SocketPath(stateDir), "routes", strings.Join(r.Routes(), ","), "listeners", len(lns),
		"memory_locked", hard.MemoryLocked, "key_memory_locked", v.MemoryLocked())
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	case first = <-set.errc:
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = adminSrv.Shutdown(sctx)
	cancel()
	set.wait()
	wg.Wait()
	_ = r.Close()
	os.Remove(admin.SocketPath(stateDir))
	return first
}

// setRouterProcs runs the router on one P unless GOMAXPROCS is set in the
// environment. The router's work per request is a few short bursts
// separated by waits on the network; with more Ps every goroutine hand-off
// (accept, the sandbox connection's background read, the usage writer)
// wakes another OS thread, which on a VM costs more than the work itself.
// Measured side by side (bench/README.md, "Privacy router"): one P cuts
// the router's CPU per request by about a third at equal or better p50 and
// p99, sequentially and at 1,000 requests/s.
func setRouterProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// routerListeners collects inherited (supervisor), --listen-fd and --listen
// listeners.
func routerListeners(listens, listenFDs []string) ([]routerListener, error) {
	var out []routerListener
	fail := func(err error) ([]routerListener, error) {
		for _, l := range out {
			l.ln.Close()
		}
		return nil, err
	}
	inherited, err := netns.InheritedListeners()
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	names := make([]string, 0, len(inherited))
	for n := range inherited {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, routerListener{sandbox: n, ln: inherited[n]})
	}
	for _, s := range listenFDs {
		sb, fdStr, ok := strings.Cut(s, "=")
		fd, err := strconv.Atoi(fdStr)
		if !ok || sb == "" || err != nil || fd < 3 {
			return fail(fmt.Errorf("--listen-fd %q: want SANDBOX=FD with FD ≥ 3", s))
		}
		f := os.NewFile(uintptr(fd), "listen-fd-"+sb)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("--listen-fd %q: not a listening socket: %w", s, err))
		}
		out = append(out, routerListener{sandbox: sb, ln: ln})
	}
	for _, s := range listens {
		spec, err := parseListen(s)
		if err != nil {
			return fail(err)
		}
		ln, err := net.Listen("tcp", spec.addr)
		if err != nil {
			return fail(fmt.Errorf("--listen %s: %w", s, err))
		}
		out = append(out, routerListener{sandbox: spec.sandbox, ln: ln})
	}
	return out, nil
}

// routerOptions converts the configuration into router options.
func routerOptions(ctx context.Context, cfg *config.Config, params *presetParamsOnce, log *slog.Logger) (router.Options, error) {
	rc := cfg.Router
	o := router.Options{
		Providers:   make(map[string]router.Provider, len(rc.Providers)),
		Routes:      make(map[string][]router.Target, len(rc.Routes)),
		Prices:      make(map[string]router.Price, len(rc.Prices)),
		Sandboxes:   make(map[string]router.Sandbox, len(cfg.Sandboxes)),
		AllowDirect: rc.AllowDirect,
		Retry: router.Retry{
			Initial: rc.Retry.Initial.D(), Max: rc.Retry.Max.D(), Deadline: rc.Retry.Deadline.D(),
			Cooldown: rc.Retry.Cooldown.D(), CooldownAfter: rc.Retry.CooldownAfter,
		},
	}
	for name, p := range rc.Providers {
		o.Providers[name] = router.Provider{Kind: p.Kind, BaseURL: p.BaseURL, Timeout: p.Timeout.D()}
	}
	for name, chain := range rc.Routes {
		ts := make([]router.Target, len(chain))
		for i, t := range chain {
			ts[i] = router.Target{Provider: t.Provider, Model: t.Model}
		}
		o.Routes[name] = ts
	}
	for model, p := range rc.Prices {
		o.Prices[model] = router.Price{Input: p.Input, Output: p.Output}
	}
	for name, sb := range cfg.Sandboxes {
		o.Sandboxes[name] = routerSandbox(ctx, cfg, name, sb, params, log)
	}
	return o, nil
}

// routerSandbox converts one sandbox's limits and policy (for provider-side
// egress) into the router's view of it.
func routerSandbox(ctx context.Context, cfg *config.Config, name string, sb config.Sandbox, params *presetParamsOnce, log *slog.Logger) router.Sandbox {
	rc := cfg.Router
	l := sb.Limits
	pol := sb.Policy
	eg := &policyEgress{p: &pol}
	var pp map[string]string
	if len(pol.Presets) > 0 {
		pp = params.get(ctx, log)
	}
	m, err := pol.Compile(policy.CompileOptions{PresetParams: pp})
	if err != nil {
		// Fail closed: no URL the provider would fetch is allowed.
		log.Warn("sandbox policy does not compile: the provider may fetch no URL for it", "sandbox", name, "err", err)
	} else {
		eg.m = m
	}
	if l.USDPerDay > 0 || l.USDPerMonth > 0 {
		for route, chain := range rc.Routes {
			for _, t := range chain {
				if _, ok := rc.Prices[t.Model]; !ok {
					log.Warn("sandbox has a budget but a route's model has no price: its requests cost $0", "sandbox", name, "route", route, "model", t.Model)
				}
			}
		}
	}
	return router.Sandbox{
		Limits: router.Limits{RequestsPerMinute: l.RequestsPerMinute, TokensPerMinute: l.TokensPerMinute, Concurrent: l.Concurrent, USDPerDay: l.USDPerDay, USDPerMonth: l.USDPerMonth},
		Egress: eg,
	}
}

// presetParamsOnce discovers the preset parameters the first time a
// sandbox's presets need them, and keeps them for the router's life.
type presetParamsOnce struct {
	mu     sync.Mutex
	done   bool
	params map[string]string
}

func (p *presetParamsOnce) get(ctx context.Context, log *slog.Logger) map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.done {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var err error
		p.params, err = policy.DiscoverPresetParams(dctx)
		cancel()
		if err != nil {
			log.Warn("preset parameters: some sources failed", "err", err)
		}
		p.done = true
	}
	return p.params
}

// policyEgress answers the router's provider-side egress questions from a
// sandbox policy: provider_tools for server tools, the network rules for
// URLs the provider would fetch.
type policyEgress struct {
	p *policy.Policy
	m *policy.Matcher
}

func (e *policyEgress) AllowsProviderTool(name string) bool { return e.p.AllowsProviderTool(name) }

func (e *policyEgress) AllowsURL(host string, port int) bool {
	return e.m != nil && e.m.DecideName(host, port, "", "").Allow
}

// vaultKeys adapts the vault to router.KeySource.
type vaultKeys struct{ v *vault.Vault }

func (k vaultKeys) Keys(provider string) []router.Key {
	vk := k.v.Keys(provider)
	out := make([]router.Key, len(vk))
	for i, key := range vk {
		out[i] = router.Key{ID: key.ID, Secret: key.Secret}
	}
	return out
}

// ledgerUsage adapts the usage ledger to router.UsageRecorder.
type ledgerUsage struct{ l *usage.Ledger }

func toLedger(r router.UsageRecord) usage.Record {
	return usage.Record{
		Time: r.Time, Sandbox: r.Sandbox, Route: r.Route, Provider: r.Provider, Model: r.Model,
		TokensIn: r.TokensIn, TokensOut: r.TokensOut, CostUSD: r.CostUSD, Latency: r.Latency, TTFB: r.TTFB,
		Status: r.Status, Attempts: r.Attempts, Error: r.Error,
	}
}

func (u ledgerUsage) Record(ctx context.Context, r router.UsageRecord) error {
	return u.l.Record(ctx, toLedger(r))
}

// RecordBatch implements router.BatchRecorder: one transaction per batch.
func (u ledgerUsage) RecordBatch(ctx context.Context, rs []router.UsageRecord) error {
	out := make([]usage.Record, len(rs))
	for i, r := range rs {
		out[i] = toLedger(r)
	}
	return u.l.RecordBatch(ctx, out)
}

func (u ledgerUsage) Spend(ctx context.Context, sandbox string, since time.Time) (float64, error) {
	return u.l.Spend(ctx, sandbox, since)
}
