package router

import (
	"context"
)

// AddSandbox makes sandbox known to the router (its limits and
// provider-side egress policy) before its listener is served, replacing an
// existing entry; a handler already serving the sandbox keeps the settings
// it started with. When the sandbox has a budget its spend is seeded from
// the usage recorder, as SeedSpend does; if that fails the sandbox is not
// added (fail closed: do not serve it).
func (r *Router) AddSandbox(ctx context.Context, name string, sb Sandbox) error {
	a := newAdmission(name, sb.Limits, r.opt.Now)
	if err := r.seedSpend(ctx, name, sb.Limits, a); err != nil {
		return err
	}
	r.sbMu.Lock()
	r.sandboxes[name] = sb
	r.sbMu.Unlock()
	r.mu.Lock()
	r.admissions[name] = a
	r.mu.Unlock()
	return nil
}

// RemoveSandbox forgets sandbox: its limits, policy and admission counters.
// Call it after the Serve of its listener has returned.
func (r *Router) RemoveSandbox(name string) {
	r.sbMu.Lock()
	delete(r.sandboxes, name)
	r.sbMu.Unlock()
	r.mu.Lock()
	delete(r.admissions, name)
	r.mu.Unlock()
}
