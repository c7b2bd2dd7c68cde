package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/clawcage/clawcage/internal/netns"
)

// serveFunc serves one sandbox's listener until ctx ends; it closes ln.
type serveFunc func(ctx context.Context, ln net.Listener) error

// sandboxListeners serves a component's listeners, one per sandbox, and
// adds or removes them while the component runs: it is the component's
// netns.ControlHandler, so `clawcage sandbox create|delete` does not
// restart the component.
type sandboxListeners struct {
	ctx context.Context // the component's life
	log *slog.Logger
	// load readies the component for a sandbox handed over at run time
	// (its settings read from the configuration copy, which the supervisor
	// rewrote first) and says how to serve it. An error means the sandbox
	// gets refusals.
	load func(ctx context.Context, sandbox string) (serveFunc, error)
	// unload forgets a sandbox once its listener has stopped.
	unload func(sandbox string)
	// refuse answers every request of a sandbox whose settings could not
	// be loaded: never an unchecked path.
	refuse http.Handler
	// errc receives the first listener failure (not a removal); the
	// component then exits and is restarted with its full listener set.
	errc chan error

	mu     sync.Mutex
	served map[string]*servedSandbox
	wg     sync.WaitGroup
}

type servedSandbox struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newSandboxListeners(ctx context.Context, log *slog.Logger, refuse http.Handler) *sandboxListeners {
	return &sandboxListeners{ctx: ctx, log: log, refuse: refuse, errc: make(chan error, 1), served: map[string]*servedSandbox{}}
}

// start serves ln for sandbox with serve.
func (s *sandboxListeners) start(sandbox string, ln net.Listener, serve serveFunc) error {
	ctx, cancel := context.WithCancel(s.ctx)
	ss := &servedSandbox{cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	if _, dup := s.served[sandbox]; dup {
		s.mu.Unlock()
		cancel()
		ln.Close()
		return fmt.Errorf("sandbox %q already has a listener", sandbox)
	}
	s.served[sandbox] = ss
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(ss.done)
		err := serve(ctx, ln)
		if err != nil && ctx.Err() == nil {
			select {
			case s.errc <- fmt.Errorf("sandbox %s: %w", sandbox, err):
			default:
			}
		}
	}()
	return nil
}

// startRefusing serves ln with refusals only, after the sandbox's
// settings failed to load with cause.
func (s *sandboxListeners) startRefusing(sandbox string, ln net.Listener, cause error) {
	s.log.Error("sandbox settings not loaded: its requests are refused", "sandbox", sandbox, "err", cause)
	if err := s.start(sandbox, ln, serveRefusals(s.refuse)); err != nil {
		s.log.Error("serve refusals", "sandbox", sandbox, "err", err)
	}
}

// AddListener implements netns.ControlHandler.
func (s *sandboxListeners) AddListener(ctx context.Context, sandbox string, ln net.Listener) error {
	s.mu.Lock()
	_, dup := s.served[sandbox]
	s.mu.Unlock()
	if dup {
		ln.Close()
		return fmt.Errorf("sandbox %q already has a listener", sandbox)
	}
	serve, err := s.load(ctx, sandbox)
	if err != nil {
		s.startRefusing(sandbox, ln, err)
		return err
	}
	if err := s.start(sandbox, ln, serve); err != nil {
		return err
	}
	s.log.Info("listening", "sandbox", sandbox, "addr", ln.Addr().String(), "handed_over", true)
	return nil
}

// RemoveListener implements netns.ControlHandler: the listener is closed
// and the sandbox's connections end.
func (s *sandboxListeners) RemoveListener(ctx context.Context, sandbox string) error {
	s.mu.Lock()
	ss := s.served[sandbox]
	delete(s.served, sandbox)
	s.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("sandbox %q has no listener", sandbox)
	}
	ss.cancel()
	select {
	case <-ss.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.unload != nil {
		s.unload(sandbox)
	}
	s.log.Info("listener removed", "sandbox", sandbox)
	return nil
}

// wait waits for every listener to stop (after the component's context
// ended).
func (s *sandboxListeners) wait() { s.wg.Wait() }

// serveControl answers the supervisor on ctl (nil when not supervised)
// after telling it the component is ready. A broken channel ends the
// component, like a failed listener.
func (s *sandboxListeners) serveControl(ctl *net.UnixConn) {
	if ctl == nil {
		return
	}
	if err := netns.ReportReady(ctl); err != nil {
		s.log.Error("report ready", "err", err)
	}
	go func() {
		if err := netns.ServeControl(s.ctx, ctl, s); err != nil {
			select {
			case s.errc <- err:
			default:
			}
		}
	}()
}

// serveRefusals answers every request on ln with h.
func serveRefusals(h http.Handler) serveFunc {
	return func(ctx context.Context, ln net.Listener) error {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		stop := context.AfterFunc(ctx, func() { srv.Close() })
		defer stop()
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// jsonRefusal answers every request with status and a JSON body.
func jsonRefusal(status int, body any) http.Handler {
	b, _ := json.Marshal(body)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "close")
		w.WriteHeader(status)
		w.Write(append(b, '\n'))
	})
}
