package router_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/routertest"
)

// Canary keys: a full run must never show these bytes anywhere but in the
// upstream's Authorization / x-api-key headers.
const (
	canaryOA  = "sk-canary-OPENAI-0123456789abcdef"
	canaryOA2 = "sk-canary-OPENAI-SECOND-fedcba987654"
	canaryOB  = "sk-canary-OPENAI-BACKUP-aaaabbbbcccc"
	canaryAN  = "sk-ant-canary-ANTHROPIC-0123456789"
	canaryAN2 = "sk-ant-canary-ANTHROPIC-BACKUP-999"
)

var allCanaries = []string{canaryOA, canaryOA2, canaryOB, canaryAN, canaryAN2}

type memKeys struct {
	mu   sync.Mutex
	keys map[string][]router.Key
}

func (m *memKeys) Keys(p string) []router.Key {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys[p]
}

// set replaces the keys of provider p. (Under the lock: the router's
// sockets use raw syscalls, which give the race detector no
// happens-before edge from the test's request to the handler.)
func (m *memKeys) set(p string, keys ...router.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[p] = keys
}

type memUsage struct {
	mu         sync.Mutex
	recs       []router.UsageRecord
	daySpend   float64
	monthSpend float64
}

func (m *memUsage) Record(_ context.Context, r router.UsageRecord) error {
	m.mu.Lock()
	m.recs = append(m.recs, r)
	m.mu.Unlock()
	return nil
}

func (m *memUsage) Spend(_ context.Context, _ string, since time.Time) (float64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if since.Day() == 1 { // the harness clock is on the 10th: day 1 is the month start
		return m.monthSpend, nil
	}
	return m.daySpend, nil
}

func (m *memUsage) records() []router.UsageRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]router.UsageRecord(nil), m.recs...)
}

// fakeClock is advanced by the router's Sleep, so fallback tests run
// without waiting while keeping the real order of events.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	t      *testing.T
	r      *router.Router
	url    string // router root, http://127.0.0.1:PORT
	oa     *routertest.Provider
	ob     *routertest.Provider
	an     *routertest.Provider
	an2    *routertest.Provider
	keys   *memKeys
	usage  *memUsage
	clock  *fakeClock
	logs   *syncBuffer
	opts   router.Options
	seen   *syncBuffer // every response header and body the tests saw
	client *http.Client
	// truncatedOK makes post accept a response cut short by the router.
	truncatedOK bool
}

// newHarness starts four fake providers and a router serving sandbox
// "agent" on loopback. Routes:
//
//	default: oa/gpt-a, ob/gpt-b         (OpenAI)
//	solo:    oa/gpt-a
//	claude:  an/claude-a, an2/claude-b  (Anthropic)
//	mixed:   an/claude-a, oa/gpt-a
func newHarness(t *testing.T, mutate func(*router.Options)) *harness {
	t.Helper()
	h := &harness{
		t:     t,
		oa:    routertest.New(t, routertest.OpenAI),
		ob:    routertest.New(t, routertest.OpenAI),
		an:    routertest.New(t, routertest.Anthropic),
		an2:   routertest.New(t, routertest.Anthropic),
		usage: &memUsage{},
		clock: &fakeClock{t: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)},
		logs:  &syncBuffer{},
		seen:  &syncBuffer{},
	}
	h.keys = &memKeys{keys: map[string][]router.Key{
		"oa":  {{ID: "oa-1", Secret: []byte(canaryOA)}},
		"ob":  {{ID: "ob-1", Secret: []byte(canaryOB)}},
		"an":  {{ID: "an-1", Secret: []byte(canaryAN)}},
		"an2": {{ID: "an2-1", Secret: []byte(canaryAN2)}},
	}}
	h.opts = router.Options{
		Providers: map[string]router.Provider{
			"oa":  {Kind: router.KindOpenAI, BaseURL: h.oa.URL},
			"ob":  {Kind: router.KindOpenAI, BaseURL: h.ob.URL},
			"an":  {Kind: router.KindAnthropic, BaseURL: h.an.URL},
			"an2": {Kind: router.KindAnthropic, BaseURL: h.an2.URL},
		},
		Routes: map[string][]router.Target{
			"default": {{Provider: "oa", Model: "gpt-a"}, {Provider: "ob", Model: "gpt-b"}},
			"solo":    {{Provider: "oa", Model: "gpt-a"}},
			"claude":  {{Provider: "an", Model: "claude-a"}, {Provider: "an2", Model: "claude-b"}},
			"mixed":   {{Provider: "an", Model: "claude-a"}, {Provider: "oa", Model: "gpt-a"}},
		},
		Retry:     router.Retry{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, Deadline: 2 * time.Second, Cooldown: time.Minute, CooldownAfter: 3},
		Sandboxes: map[string]router.Sandbox{"agent": {}},
		Keys:      h.keys,
		Usage:     h.usage,
		Log:       slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       h.clock.Now,
		Sleep:     h.clock.Sleep,
		Jitter:    func() float64 { return 0.5 },
	}
	if mutate != nil {
		mutate(&h.opts)
	}
	r, err := router.New(h.opts)
	if err != nil {
		t.Fatalf("router.New: %v", err)
	}
	if err := r.SeedSpend(context.Background()); err != nil {
		t.Fatalf("SeedSpend: %v", err)
	}
	h.r = r
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln, "agent") }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return")
		}
		_ = r.Close()
	})
	h.url = "http://" + ln.Addr().String()
	h.client = &http.Client{Timeout: 30 * time.Second, Transport: &recordingTransport{seen: h.seen, rt: http.DefaultTransport}}
	return h
}

// closeRouter waits until no request is in flight (a streaming SDK stops
// reading at its end-of-stream event, before the router's handler has
// finished and queued the usage row), then closes the router, which writes
// every queued row.
func (h *harness) closeRouter() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, err := h.r.Registry().Gather()
		if err != nil {
			h.t.Fatal(err)
		}
		inflight := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "clawcage_router_requests_in_flight" {
				for _, m := range mf.GetMetric() {
					inflight += m.GetGauge().GetValue()
				}
			}
		}
		if inflight == 0 {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%v requests still in flight after 10s", inflight)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = h.r.Close()
}

// ledger closes the router (closeRouter) and returns the usage rows it
// wrote; any number of rows but n fails the test.
func (h *harness) ledger(n int) []router.UsageRecord {
	h.t.Helper()
	h.closeRouter()
	recs := h.usage.records()
	if len(recs) != n {
		h.t.Fatalf("usage records = %+v, want %d", recs, n)
	}
	return recs
}

// recordingTransport keeps every response header and body a client saw
// (for the canary test).
type recordingTransport struct {
	seen *syncBuffer
	rt   http.RoundTripper
}

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		_, _ = t.seen.Write([]byte(err.Error() + "\n"))
		return nil, err
	}
	_ = resp.Header.Write(t.seen)
	resp.Body = &teeBody{r: resp.Body, w: t.seen}
	return resp, nil
}

type teeBody struct {
	r io.ReadCloser
	w io.Writer
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	_, _ = b.w.Write(p[:n])
	return n, err
}

func (b *teeBody) Close() error { return b.r.Close() }

// post sends a raw request to the router and returns status, header, body.
func (h *harness) post(path, body string, hdr ...string) (int, http.Header, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !h.truncatedOK {
		h.t.Fatalf("read %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header, b
}
