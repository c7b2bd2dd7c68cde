package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/clawcage/clawcage/internal/audit/live"
	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/egress/engine"
	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// runLiveAudit audits the running sandbox name of the stack in state and
// adds every row to rep. The error means no audit was possible.
// callProvider adds a one-token completion the router forwards upstream.
func runLiveAudit(ctx context.Context, progress io.Writer, w *battery.World, state, name string, callProvider bool, rep *auditReport) error {
	rep.Sandbox = name
	st, err := supervisor.FetchStatus(ctx, supervisor.ControlSocketPath(state))
	if err != nil {
		return err
	}
	w.State = state
	for _, c := range st.Components {
		if c.State != "running" {
			continue
		}
		switch c.Name {
		case "router":
			w.RouterPID = c.PID
		case "policy":
			w.PolicyPID = c.PID
		}
	}
	providers, err := stackProviders(state)
	if err != nil {
		return err
	}
	// The invoking environment holds the canary: the command entered in
	// the sandbox must not inherit it.
	for _, kv := range w.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			return err
		}
		defer os.Unsetenv(k)
	}
	scanner := admin.Dial(state)
	defer scanner.Close()
	a := &live.Auditor{
		World:     w,
		Sandbox:   name,
		Workspace: filepath.Join(state, "sandboxes", name, "workspace"),
		Exec:      stackExec(state, name),
		Scanner:   scanner,
		Queue:     engine.NewClient(filepath.Join(state, "policy")),
		Providers: providers,
		Progress:  progress,
	}
	if callProvider {
		a.CompletionURL = live.DefaultCompletionURL
	}
	rows, err := a.Run(ctx)
	for _, r := range rows {
		rep.add(r, nil)
	}
	if err != nil && len(rows) == 0 {
		return err
	}
	if err != nil {
		rep.add(battery.Result{Case: "audit-completes", Mode: "host", Expected: []string{"complete"}}, err)
	}
	return nil
}

// stackProviders reads the providers' addresses from the configuration the
// stack's router runs with.
func stackProviders(state string) ([]live.Provider, error) {
	path := filepath.Join(state, "router", "clawcage.yaml")
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("read the stack's configuration (is `clawcage up` running with this --state?): %w", err)
	}
	var out []live.Provider
	for name, p := range cfg.Router.Providers {
		u, err := url.Parse(p.BaseURL)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("%s: router.providers.%s.base_url %q: not a URL with a host", path, name, p.BaseURL)
		}
		port := u.Port()
		if port == "" {
			port = "443"
			if u.Scheme == "http" {
				port = "80"
			}
		}
		out = append(out, live.Provider{Name: name, Addr: net.JoinHostPort(u.Hostname(), port)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
