package stack

import (
	"context"
	"net/http"

	"github.com/clawcage/clawcage/internal/kernel"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// KernelView is the body of GET /v1/kernel: the kernel features the
// sandboxes are enforced with, as `clawcage doctor` reports them, probed
// once when the stack starts (they do not change while it runs).
type KernelView struct {
	kernel.Report
	Enforceable bool   `json:"enforceable"`
	Problem     string `json:"problem,omitempty"`
}

// kernelProbe runs the probe once, in the background from the start, so
// that `clawcage status` does not wait for it.
type kernelProbe struct {
	done chan struct{}
	view KernelView
}

func newKernelProbe(ctx context.Context, probe func(context.Context) kernel.Report) *kernelProbe {
	if probe == nil {
		probe = kernel.Probe
	}
	k := &kernelProbe{done: make(chan struct{})}
	go func() {
		defer close(k.done)
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
		select {
		case <-k.done:
			supervisor.WriteJSON(w, http.StatusOK, k.view)
		case <-req.Context().Done():
		}
	})
}
