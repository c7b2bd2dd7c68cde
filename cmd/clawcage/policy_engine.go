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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/egress"
	"github.com/clawcage/clawcage/internal/egress/engine"
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
			return runPolicyEngine(cmd.Context(), cmd.ErrOrStderr(), g.stateDir, cfg, specs, lim, params)
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

func runPolicyEngine(ctx context.Context, logw io.Writer, stateDir string, cfg *config.Config, specs []listenSpec, lim egress.Options, params map[string]string) error {
	log := slog.New(slog.NewJSONHandler(logw, nil))
	policies := map[string]policy.Policy{}
	for name, sb := range cfg.Sandboxes {
		policies[name] = sb.Policy
	}
	for _, s := range specs {
		if _, ok := policies[s.sandbox]; !ok {
			return fmt.Errorf("--listen %s=%s: sandbox %q is not in the config", s.sandbox, s.addr, s.sandbox)
		}
	}
	dir := filepath.Join(stateDir, "policy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("policy engine state: %w", err)
	}
	// Rules and approvals are loaded before any listener exists.
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
	type served struct {
		sandbox string
		ln      net.Listener
	}
	var lns []served
	closeAll := func() {
		admin.Close()
		for _, l := range lns {
			l.ln.Close()
		}
	}
	inherited, err := netns.InheritedListeners()
	if err != nil {
		closeAll()
		return fmt.Errorf("policy engine: inherited listeners: %w", err)
	}
	for name, ln := range inherited {
		lns = append(lns, served{name, ln})
		if _, ok := policies[name]; !ok {
			closeAll()
			return fmt.Errorf("policy engine: inherited listener for sandbox %q, which is not in the config", name)
		}
	}
	for _, s := range specs {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("--listen %s=%s: %w", s.sandbox, s.addr, err)
		}
		lns = append(lns, served{s.sandbox, ln})
	}
	for _, l := range lns {
		log.Info("egress proxy listening", "component", "policy", "sandbox", l.sandbox, "addr", l.ln.Addr().String())
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, len(lns)+1)
	var wg sync.WaitGroup
	for _, l := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- eng.Serve(ctx, l.ln, l.sandbox)
		}()
	}
	wg.Add(2)
	go func() { defer wg.Done(); errc <- eng.ServeAdmin(ctx, admin) }()
	go func() { defer wg.Done(); eng.Run(ctx, time.Second) }()
	log.Info("policy engine ready", "component", "policy", "admin", engine.SocketPath(dir))
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	stop()
	wg.Wait()
	os.Remove(engine.SocketPath(dir))
	return first
}
