package router_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router"
)

// blockingLog is a slog.Handler that holds every "request" log line until
// release is closed; it reports when one is being held.
type blockingLog struct {
	holding chan struct{}
	release chan struct{}
}

func (b *blockingLog) Enabled(context.Context, slog.Level) bool { return true }
func (b *blockingLog) WithAttrs([]slog.Attr) slog.Handler       { return b }
func (b *blockingLog) WithGroup(string) slog.Handler            { return b }
func (b *blockingLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "request" {
		select {
		case b.holding <- struct{}{}:
		default:
		}
		<-b.release
	}
	return nil
}

// A response with a Content-Length reaches the sandbox complete before the
// request's log line, metrics and usage row are produced: a slow log sink
// must not delay the answer.
func TestResponseCompleteBeforeRequestLogLine(t *testing.T) {
	bl := &blockingLog{holding: make(chan struct{}, 1), release: make(chan struct{})}
	h := newHarness(t, func(o *router.Options) { o.Log = slog.New(bl) })
	defer close(bl.release)

	type result struct {
		status int
		body   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(chatBody))
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.client.Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{status: resp.StatusCode, body: string(b), err: err}
	}()
	select {
	case r := <-got:
		if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"choices"`) {
			t.Fatalf("response: status %d, err %v, body %q", r.status, r.err, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the response did not complete while the request's log line was held")
	}
	select {
	case <-bl.holding:
	case <-time.After(10 * time.Second):
		t.Fatal("the request's log line was never written")
	}
}

// A sandbox that hangs up while the provider is still thinking cancels the
// upstream call at once: the router's server connection (raw-syscall reads,
// rawsock.Conn) must still notice the hang-up through net/http's background
// read, and the cancellation must close the upstream connection.
func TestSandboxHangUpCancelsUpstreamCall(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(20 * time.Second):
		}
	}))
	defer up.Close()
	h := newHarness(t, func(o *router.Options) {
		o.Providers["oa"] = router.Provider{Kind: router.KindOpenAI, BaseURL: up.URL + "/v1"}
		o.Retry.Deadline = time.Minute // only the hang-up may end the attempt within the test
	})
	solo := strings.Replace(chatBody, `"default"`, `"solo"`, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(solo))
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the provider")
	}
	cancel() // the sandbox hangs up
	if err := <-errc; err == nil {
		t.Fatal("the cancelled client got a response")
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the provider's request was not cancelled after the sandbox hung up")
	}
}
