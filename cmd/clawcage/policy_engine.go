package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/clawcage/clawcage/internal/policy"
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
	var cfgPath string
	var listens []string
	var lim egress.Options
	cmd := &cobra.Command{
		Use:   "policy-engine --config FILE --listen [SANDBOX=]ADDR...",
		Short: "Run the policy engine (egress proxy, denial queue, approvals) on its own",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			if len(listens) == 0 {
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
			return runPolicyEngine(cmd.Context(), g.stateDir, cfg, specs, lim)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "clawcage.yaml with the sandboxes' policies")
	cmd.Flags().IntVar(&lim.MaxTunnels, "max-tunnels", 0, "per-sandbox cap on concurrent tunnels and plain requests (0: 256)")
	cmd.Flags().Float64Var((*float64)(&lim.RequestRate), "request-rate", 0, "per-sandbox requests per second (0: 100)")
	cmd.Flags().IntVar(&lim.RequestBurst, "request-burst", 0, "per-sandbox request burst (0: 200)")
	cmd.Flags().StringArrayVar(&listens, "listen", nil, "proxy listener `[SANDBOX=]ADDR` (repeatable; sandbox \"default\" when omitted)")
	return cmd
}

func runPolicyEngine(ctx context.Context, stateDir string, cfg *config.Config, specs []listenSpec, lim egress.Options) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	policies := map[string]policy.Policy{}
	for name, sb := range cfg.Sandboxes {
		policies[name] = sb.Policy
	}
	for _, s := range specs {
		if _, ok := policies[s.sandbox]; !ok {
			return fmt.Errorf("--listen %s=%s: sandbox %q is not in the config", s.sandbox, s.addr, s.sandbox)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	params, err := policy.DiscoverPresetParams(dctx)
	cancel()
	if err != nil {
		log.Warn("preset parameters: some sources failed", "component", "policy", "err", err)
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
	var lns []net.Listener
	for _, s := range specs {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			admin.Close()
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("--listen %s=%s: %w", s.sandbox, s.addr, err)
		}
		lns = append(lns, ln)
		log.Info("egress proxy listening", "component", "policy", "sandbox", s.sandbox, "addr", ln.Addr().String())
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, len(lns)+1)
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- eng.Serve(ctx, ln, specs[i].sandbox)
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
