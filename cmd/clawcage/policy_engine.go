package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/egress"
	"github.com/clawcage/clawcage/internal/egress/engine"
	"github.com/clawcage/clawcage/internal/logbuf"
	"github.com/clawcage/clawcage/internal/netns"
	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/runas"
)

// listenSpec is one --listen [SANDBOX=]ADDR.
type listenSpec struct{ sandbox, addr string }

func parseListen(s string) (listenSpec, error) {
	sb, addr, ok := strings.Cut(s, "=")
	if !ok {
		sb, addr = "default", s
	}
	if sb == "" || addr == "" {
		return listenSpec{}, fmt.Errorf("--listen %q: want [SANDBOX=]ADDR", s)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return listenSpec{}, fmt.Errorf("--listen %q: %w", s, err)
	}
	return listenSpec{sb, addr}, nil
}

func newPolicyEngineCmd(g *globalOptions) *cobra.Command {
	var cfgPath, presetFile string
	var listens []string
	var lim egress.Options
	cmd := &cobra.Command{
		Use:   "policy-engine --config FILE --listen [SANDBOX=]ADDR...",
		Short: "Run the policy engine (egress proxy, denial queue, approvals) on its own",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			supervised := runas.Supervised()
			if supervised {
				// First: non-dumpable, no capabilities, never root.
				if err := runas.HardenSelf(); err != nil {
					return fmt.Errorf("policy engine: %w", err)
				}
			}
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			if len(listens) == 0 && !supervised {
				return errors.New("at least one --listen [SANDBOX=]ADDR is required")
			}
			var specs []listenSpec
			for _, l := range listens {
				s, err := parseListen(l)
				if err != nil {
					return err
				}
				specs = append(specs, s)
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if lim.RequestRate < 0 || lim.MaxTunnels < 0 || lim.RequestBurst < 0 {
				return errors.New("--max-tunnels, --request-rate and --request-burst must not be negative")
			}
			params, err := presetParams(cmd.Context(), cfg, presetFile)
			if err != nil {
				return err
			}
			ctl, err := netns.InheritedControl()
			if err != nil {
				return fmt.Errorf("policy engine: %w", err)
			}
			return runPolicyEngine(cmd.Context(), cmd.ErrOrStderr(), g.stateDir, cfgPath, presetFile, cfg, specs, lim, params, ctl)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "clawcage.yaml with the sandboxes' policies")
	cmd.Flags().StringVar(&presetFile, "preset-params", "", "JSON object of preset parameters (written by `clawcage up`); without it they are discovered here")
	cmd.Flags().IntVar(&lim.MaxTunnels, "max-tunnels", 0, "per-sandbox cap on concurrent tunnels and plain requests (0: 256)")
	cmd.Flags().Float64Var((*float64)(&lim.RequestRate), "request-rate", 0, "per-sandbox requests per second (0: 100)")
	cmd.Flags().IntVar(&lim.RequestBurst, "request-burst", 0, "per-sandbox request burst (0: 200)")
	cmd.Flags().StringArrayVar(&listens, "listen", nil, "proxy listener `[SANDBOX=]ADDR` (repeatable; sandbox \"default\" when omitted)")
	return cmd
}

// presetParams reads the supervisor's preset-parameter file or, without
// one, discovers them from the clients' configuration here; explicit
// config values win over discovered ones.
func presetParams(ctx context.Context, cfg *config.Config, file string) (map[string]string, error) {
	params := map[string]string{}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--preset-params: %w", err)
		}
		if err := json.Unmarshal(data, &params); err != nil {
			return nil, fmt.Errorf("--preset-params %s: not a JSON object of strings: %w", file, err)
		}
		return params, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	found, err := policy.DiscoverPresetParams(dctx)
	cancel()
	if err != nil {
		slog.Warn("preset parameters: some sources failed", "component", "policy", "err", err)
	}
	maps.Copy(params, found)
	maps.Copy(params, cfg.PresetParams)
	return params, nil
}

// runPolicyEngine serves the egress proxy on the inherited listeners and
// those of specs, and the admin socket. With a control channel (ctl, under
// the supervisor) sandboxes are added and removed while it runs; their
// policies are read from cfgPath, the configuration copy the supervisor
// rewrites first, with the preset parameters of presetFile (if set) as
// they are then. A sandbox whose policy does not compile is answered with
// refusals (never an open proxy) and the others are served.
func runPolicyEngine(ctx context.Context, logw io.Writer, stateDir, cfgPath, presetFile string, cfg *config.Config, specs []listenSpec, lim egress.Options, params map[string]string, ctl *net.UnixConn) error {
	// Decision lines are written by logbuf's goroutine, off the request;
	// closed last, after every listener has stopped: nothing is lost.
	lw := logbuf.New(logw)
	defer lw.Close()
	log := slog.New(slog.NewJSONHandler(lw, nil))
	policies := map[string]policy.Policy{}
	broken := map[string]error{}
	for name, sb := range cfg.Sandboxes {
		if ctl != nil {
			if _, err := sb.Policy.Compile(policy.CompileOptions{PresetParams: params}); err != nil {
				broken[name] = fmt.Errorf("policy engine: sandbox %q: compile policy: %w", name, err)
				continue
			}
		}
		policies[name] = sb.Policy
	}
	for _, s := range specs {
		if _, ok := cfg.Sandboxes[s.sandbox]; !ok {
			return fmt.Errorf("--listen %s=%s: sandbox %q is not in the config", s.sandbox, s.addr, s.sandbox)
		}
	}
	dir := filepath.Join(stateDir, "policy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("policy engine state: %w", err)
	}
	// Rules and approvals are loaded before any listener is served.
	eng, err := engine.Open(ctx, engine.Options{Policies: policies, Dir: dir, PresetParams: params, Logger: log, Proxy: lim})
	if err != nil {
		return err
	}
	defer eng.Close()
	admin, err := engine.ListenAdmin(dir)
	if err != nil {
		return err
	}
	// Listeners the supervisor created inside each sandbox's namespace,
	// then those of --listen.
	inherited, err := netns.InheritedListeners()
	if err != nil {
		admin.Close()
		return fmt.Errorf("policy engine: inherited listeners: %w", err)
	}
	for name := range inherited {
		if _, ok := cfg.Sandboxes[name]; !ok {
			admin.Close()
			for _, ln := range inherited {
				ln.Close()
			}
			return fmt.Errorf("policy engine: inherited listener for sandbox %q, which is not in the config", name)
		}
	}
	type served struct {
		sandbox string
		ln      net.Listener
	}
	var lns []served
	for name, ln := range inherited {
		lns = append(lns, served{name, ln})
	}
	for _, s := range specs {
		ln, err := egress.Listen(ctx, s.addr)
		if err != nil {
			admin.Close()
			for _, l := range lns {
				l.ln.Close()
			}
			return fmt.Errorf("--listen %s=%s: %w", s.sandbox, s.addr, err)
		}
		lns = append(lns, served{s.sandbox, ln})
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	serve := func(sandbox string) serveFunc {
		return func(ctx context.Context, ln net.Listener) error { return eng.Serve(ctx, ln, sandbox) }
	}
	set := newSandboxListeners(ctx, log.With("component", "policy"), jsonRefusal(http.StatusForbidden, map[string]string{
		"error":  "the policy engine could not load this sandbox's policy; every request is refused (see clawcage logs --component policy)",
		"reason": "policy-not-loaded",
	}))
	set.load = func(ctx context.Context, sandbox string) (serveFunc, error) {
		c, err := config.Load(cfgPath)
		if err != nil {
			return nil, fmt.Errorf("policy engine: sandbox %q: %w", sandbox, err)
		}
		sb, ok := c.Sandboxes[sandbox]
		if !ok {
			return nil, fmt.Errorf("policy engine: sandbox %q is not in %s", sandbox, cfgPath)
		}
		if presetFile != "" && len(sb.Policy.Presets) > 0 {
			// The supervisor completes the file once its discovery is done.
			p, err := presetParams(ctx, c, presetFile)
			if err != nil {
				return nil, fmt.Errorf("policy engine: sandbox %q: %w", sandbox, err)
			}
			eng.SetPresetParams(p)
		}
		if err := eng.AddSandbox(ctx, sandbox, sb.Policy); err != nil {
			return nil, err
		}
		return serve(sandbox), nil
	}
	set.unload = func(sandbox string) { eng.RemoveSandbox(ctx, sandbox) }
	for _, l := range lns {
		if err := broken[l.sandbox]; err != nil {
			set.startRefusing(l.sandbox, l.ln, err)
			continue
		}
		if err := set.start(l.sandbox, l.ln, serve(l.sandbox)); err != nil {
			stop()
			set.wait()
			admin.Close()
			return fmt.Errorf("policy engine: %w", err)
		}
		log.Info("egress proxy listening", "component", "policy", "sandbox", l.sandbox, "addr", l.ln.Addr().String())
	}
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- eng.ServeAdmin(ctx, admin) }()
	go func() { defer wg.Done(); eng.Run(ctx, time.Second) }()
	set.serveControl(ctl)
	log.Info("policy engine ready", "component", "policy", "admin", engine.SocketPath(dir))
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	case first = <-set.errc:
	}
	stop()
	set.wait()
	wg.Wait()
	os.Remove(engine.SocketPath(dir))
	return first
}
