package engine

import (
	"context"
	"fmt"
	"maps"

	"github.com/clawcage/clawcage/internal/egress/approvals"
	"github.com/clawcage/clawcage/internal/policy"
)

// policyOf returns sandbox's configured policy.
func (e *Engine) policyOf(sandbox string) (policy.Policy, bool) {
	e.pmu.RLock()
	defer e.pmu.RUnlock()
	p, ok := e.opts.Policies[sandbox]
	return p, ok
}

// setPolicies replaces opts.Policies with a copy changed by f (the map the
// caller of Open passed is never written).
func (e *Engine) setPolicies(f func(map[string]policy.Policy)) {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	next := maps.Clone(e.opts.Policies)
	if next == nil {
		next = map[string]policy.Policy{}
	}
	f(next)
	e.opts.Policies = next
}

// AddSandbox makes a sandbox known while the engine runs (one created with
// `clawcage sandbox create`): p is compiled with the sandbox's persisted
// grants and installed in the proxy, so Serve accepts its listener. On any
// error nothing changes and the caller must not serve the sandbox. An
// existing sandbox of that name gets the new policy.
func (e *Engine) AddSandbox(ctx context.Context, name string, p policy.Policy) error {
	all, err := e.store.Grants(ctx)
	if err != nil {
		return fmt.Errorf("policy engine: sandbox %q: load approvals from %s: %w", name, e.store.Path(), err)
	}
	var grants []approvals.Grant
	for _, g := range all {
		if g.Sandbox == name {
			grants = append(grants, g)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, err := e.compilePolicy(p, name, grants)
	if err != nil {
		return fmt.Errorf("policy engine: sandbox %q: compile policy with its %d approvals: %w", name, len(grants), err)
	}
	e.setPolicies(func(ps map[string]policy.Policy) { ps[name] = p })
	e.grants[name] = grants
	e.proxy.SetPolicy(name, m)
	e.log.Info("sandbox added", "component", "policy", "sandbox", name, "rules", len(m.Rules()), "approvals", len(grants))
	return nil
}

// RemoveSandbox forgets a sandbox (deleted with `clawcage sandbox delete`):
// its policy, grants and single-use approvals go, in memory and in the
// database (with its pending queue entries), so a sandbox created later
// under the same name starts with nothing approved; the proxy stops
// serving it, closing its connections and tunnels. It returns how many
// tunnels were closed.
func (e *Engine) RemoveSandbox(ctx context.Context, name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.setPolicies(func(ps map[string]policy.Policy) { delete(ps, name) })
	delete(e.grants, name)
	for id, g := range e.once {
		if g.Sandbox == name {
			delete(e.once, id)
		}
	}
	n := e.proxy.RemoveSandbox(name)
	grants, entries, err := e.store.ForgetSandbox(ctx, name)
	if err != nil {
		e.log.Error("sandbox removed, but its stored approvals were not", "component", "policy", "sandbox", name, "err", err)
	}
	e.log.Info("sandbox removed", "component", "policy", "sandbox", name, "closed_tunnels", n, "approvals_removed", grants, "queue_entries_removed", entries)
	return n
}

// SetPresetParams replaces the preset parameters for policies compiled from
// now on: the supervisor discovers them in the background, and a sandbox
// added later may need them. Installed policies are not recompiled.
func (e *Engine) SetPresetParams(params map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opts.PresetParams = maps.Clone(params)
}
