package stack

import (
	"context"
	"errors"
	"log/slog"
)

// presetDiscovery finds the registry parameters of the npm/go/apt presets
// in the background. The clients it asks take from a few hundred
// milliseconds to seconds to answer, and only sandboxes that use presets
// need the result, so `up` does not wait for it unless one does.
type presetDiscovery struct {
	done   chan struct{}
	params map[string]string // set before done is closed
}

// startPresetDiscovery runs discover (merged with the explicit
// parameters, which win) and then save, and only then reports the result:
// whoever waits for it finds the policy engine's copy already written.
// It begins when start is closed.
func startPresetDiscovery(ctx context.Context, start <-chan struct{}, discover func(context.Context) (map[string]string, error), explicit map[string]string,
	log *slog.Logger, save func(map[string]string) error) *presetDiscovery {
	d := &presetDiscovery{done: make(chan struct{})}
	go func() {
		defer close(d.done)
		select {
		case <-start:
		case <-ctx.Done():
			return
		}
		p := presetParams(ctx, discover, explicit, log)
		if ctx.Err() != nil {
			return
		}
		if err := save(p); err != nil {
			log.Error("preset parameters: save the policy engine's copy", "err", err)
		}
		d.params = p
	}()
	return d
}

// wait returns the discovered parameters once they are known.
func (d *presetDiscovery) wait(ctx context.Context) (map[string]string, error) {
	select {
	case <-d.done:
		if d.params == nil {
			return nil, errors.New("preset parameter discovery was cancelled")
		}
		return d.params, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// usesPresets reports whether any of the sandboxes' policies names a
// preset (only those can need discovered parameters).
func usesPresets(presets ...[]string) bool {
	for _, p := range presets {
		if len(p) > 0 {
			return true
		}
	}
	return false
}
