package e2e

import (
	"context"
	"errors"
	"testing"

	"github.com/clawcage/clawcage/internal/audit/battery"
)

// TestEscape runs every attack of the battery from inside a fresh
// `clawcage sandbox run`, as the default user and as root, and asserts the
// specific outcome (errno or observed effect) plus the host-side evidence:
// listeners that accepted nothing, a stopped host process still stopped, no
// host bytes read, nothing injected into the terminal, no cgroup or mount
// left behind.
func TestEscape(t *testing.T) {
	requireSandbox(t)
	ctx := context.Background()
	w, err := battery.NewWorld(ctx, h.bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	for _, c := range battery.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			if c.LiveOnly {
				t.Skip("attacks the stack around a live sandbox (clawcage audit SANDBOX); sandbox run has none")
			}
			for _, mode := range battery.Modes {
				t.Run(mode, func(t *testing.T) {
					res, err := battery.RunOneShot(ctx, w, c, mode, t.TempDir())
					var re *battery.RunError
					if errors.As(err, &re) {
						t.Fatalf("%s as %s: %v", c.Probe, mode, err)
					}
					t.Logf("%s: %s (%s)", c.Probe, res.Observation.Outcome, res.Observation.Detail)
					if !res.Held {
						t.Errorf("%s as %s: the sandbox did not hold: %s\nstderr: %s", c.Probe, mode, res.Failure, res.Stderr)
					}
				})
			}
		})
	}
}
