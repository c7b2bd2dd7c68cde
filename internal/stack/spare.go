package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/clawcage/clawcage/internal/netns"
)

// spareNet holds the one spare sandbox network: a namespace with only lo
// and every component's listener inside, made in the background (once the
// components are up, and again after each create takes it), so that
// `sandbox create` does not wait for a namespace and its listeners. It is
// held by its file descriptor alone, never mounted, so a supervisor that
// dies, even by SIGKILL, leaves nothing of it behind; no process is in it
// and no component has its listeners until a create takes it, under the
// sandbox's name, and only one create can take it.
type spareNet struct {
	mu      sync.Mutex
	net     *sandboxNet // ready, or nil
	filling bool
	closed  bool
	wg      sync.WaitGroup
}

// fillSpare starts making the spare network unless one is ready or being
// made. A failure is logged: creates then make their own.
func (r *runner) fillSpare(ctx context.Context) {
	s := &r.spare
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.filling || s.net != nil {
		return
	}
	s.filling = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		start := time.Now()
		sn, err := newSpareNet(ctx, r.comps)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.filling = false
		switch {
		case err != nil:
			if ctx.Err() == nil {
				r.log.Warn("prepare a spare sandbox network; the next create makes its own", "err", err)
			}
		case s.closed:
			sn.close()
		default:
			s.net = sn
			r.log.Info("spare sandbox network ready", "duration", time.Since(start))
		}
	}()
}

// takeSpare returns the spare network, if one is ready, and forgets it.
func (r *runner) takeSpare() *sandboxNet {
	s := &r.spare
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := s.net
	s.net = nil
	return sn
}

// closeSpare closes the spare network (at shutdown), waiting for one that
// is being made.
func (r *runner) closeSpare() {
	s := &r.spare
	s.mu.Lock()
	s.closed = true
	sn := s.net
	s.net = nil
	s.mu.Unlock()
	s.wg.Wait()
	if sn != nil {
		sn.close()
	}
}

// newSpareNet makes an unpinned namespace and opens every component's
// listener inside it, on one thread.
func newSpareNet(ctx context.Context, comps []*component) (*sandboxNet, error) {
	ns, err := netns.CreateUnpinned(ctx)
	if err != nil {
		return nil, err
	}
	sn := &sandboxNet{ns: ns, lns: map[string]net.Listener{}, files: map[string]*os.File{}}
	err = ns.Do(ctx, func() error {
		for _, c := range comps {
			ln, err := new(net.ListenConfig).Listen(ctx, "tcp", c.addr)
			if err != nil {
				return fmt.Errorf("%s listener: %w", c.name, err)
			}
			sn.lns[c.name] = ln
		}
		return nil
	})
	if err == nil {
		for _, c := range comps {
			f, ferr := netns.ListenerFile(sn.lns[c.name])
			if ferr != nil {
				err = ferr
				break
			}
			sn.files[c.name] = f
		}
	}
	if err != nil {
		sn.close()
		return nil, fmt.Errorf("spare sandbox network: %w", err)
	}
	return sn, nil
}

// spareFor pins the spare network, if one is ready, under the sandbox's
// name. It returns nil (and the caller makes the network itself) when there
// is none, when a namespace of that name is left from a previous
// supervisor (which the caller re-opens), or when pinning fails.
func (r *runner) spareFor(name string) *sandboxNet {
	if _, err := os.Lstat(filepath.Join(netns.Dir(r.state), name)); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	sn := r.takeSpare()
	if sn == nil {
		return nil
	}
	if err := sn.ns.Pin(r.state, name); err != nil {
		r.log.Warn("use the spare sandbox network", "sandbox", name, "err", err)
		sn.close()
		return nil
	}
	sn.name = name
	return sn
}
