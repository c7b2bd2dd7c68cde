package stack

import (
	"context"
	"net/http"
	"time"

	"github.com/clawcage/clawcage/internal/kernel"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// kernelWait is how long GET /v1/kernel waits for a probe still running.
const kernelWait = 300 * time.Millisecond

// KernelView is the body of GET /v1/kernel: the kernel features the
// sandboxes are enforced with, as `clawcage doctor` reports them, probed
// once when the stack starts (they do not change while it runs).
type KernelView struct {
	kernel.Report
	Enforceable bool   `json:"enforceable"`
	Problem     string `json:"problem,omitempty"`
	// Pending is set while the probe (run once the components are up)
	// has not finished yet; ask again.
	Pending bool `json:"pending,omitempty"`
}

// kernelProbe runs the probe once, in the background after after (the
// components' start, which it would otherwise slow down), so that
// `clawcage status` does not wait for it.
type kernelProbe struct {
	done chan struct{}
	view KernelView
}

func newKernelProbe(ctx context.Context, after <-chan struct{}, probe func(context.Context) kernel.Report) *kernelProbe {
	if probe == nil {
		probe = kernel.Probe
	}
	k := &kernelProbe{done: make(chan struct{})}
	go func() {
		defer close(k.done)
		select {
		case <-after:
		case <-ctx.Done():
		}
		r := probe(ctx)
		k.view = KernelView{Report: r, Enforceable: true}
		if err := r.Enforceable(); err != nil {
			k.view.Enforceable, k.view.Problem = false, err.Error()
		}
	}()
	return k
}

func (k *kernelProbe) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		t := time.NewTimer(kernelWait)
		defer t.Stop()
		select {
		case <-k.done:
			supervisor.WriteJSON(w, http.StatusOK, k.view)
		case <-t.C:
			supervisor.WriteJSON(w, http.StatusOK, KernelView{Pending: true})
		case <-req.Context().Done():
		}
	})
}
