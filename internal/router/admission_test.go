package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/routertest"
)

// refusal checks a 429 in the endpoint's dialect and returns its message.
func refusal(t *testing.T, anthropic bool, status int, hdr http.Header, body []byte) string {
	t.Helper()
	if status != http.StatusTooManyRequests {
		t.Fatalf("status = %d, want 429: %s", status, body)
	}
	if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After = %q, want whole seconds ≥ 1", hdr.Get("Retry-After"))
	}
	if anthropic {
		var e struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Type != "error" || e.Error.Type != "rate_limit_error" {
			t.Errorf("anthropic error body = %s", body)
		}
		return e.Error.Message
	}
	var e struct {
		Error struct {
			Message, Type string
			Code          *string
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Type != "rate_limit_exceeded" || e.Error.Code == nil || *e.Error.Code != "rate_limit_exceeded" {
		t.Errorf("openai error body = %s", body)
	}
	return e.Error.Message
}

func withLimits(l router.Limits) func(*router.Options) {
	return func(o *router.Options) {
		o.Sandboxes["agent"] = router.Sandbox{Limits: l}
		o.Prices = map[string]router.Price{"gpt-a": {Input: 1000, Output: 1000}, "gpt-b": {Input: 1000, Output: 1000}, "claude-a": {Input: 1000, Output: 1000}}
	}
}

func TestRequestsPerMinute(t *testing.T) {
	h := newHarness(t, withLimits(router.Limits{RequestsPerMinute: 2}))
	for i := range 2 {
		if status, _, body := h.post("/v1/chat/completions", chatBody); status != 200 {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
	}
	status, hdr, body := h.post("/v1/chat/completions", chatBody)
	if msg := refusal(t, false, status, hdr, body); !strings.Contains(msg, "2 requests per minute") {
		t.Errorf("message = %q", msg)
	}
	if hdr.Get("Retry-After") != "30" {
		t.Errorf("Retry-After = %q, want 30 (one request refills in 30s)", hdr.Get("Retry-After"))
	}
	status, hdr, body = h.post("/v1/messages", claudeBody)
	refusal(t, true, status, hdr, body)
	if n := len(h.oa.Requests()); n != 2 {
		t.Errorf("upstream got %d requests, want 2", n)
	}
	h.clock.Advance(30 * time.Second)
	if status, _, body := h.post("/v1/chat/completions", chatBody); status != 200 {
		t.Errorf("after refill: %d %s", status, body)
	}
}

func TestTokensPerMinuteEstimateAndReconcile(t *testing.T) {
	h := newHarness(t, withLimits(router.Limits{TokensPerMinute: 1000}))
	// Up front: max_tokens beyond the whole minute's budget never passes.
	big := `{"model":"default","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}`
	status, hdr, body := h.post("/v1/chat/completions", big)
	if msg := refusal(t, false, status, hdr, body); !strings.Contains(msg, "more than the sandbox's limit of 1000 tokens per minute") {
		t.Errorf("message = %q", msg)
	}
	// Reconcile: the estimate is ~36 tokens, the provider reports 900 out;
	// the overshoot is charged, so the next request must wait.
	h.oa.OutputTokens = 990
	if status, _, body := h.post("/v1/chat/completions", chatBody); status != 200 {
		t.Fatalf("first: %d %s", status, body)
	}
	status, hdr, body = h.post("/v1/chat/completions", chatBody)
	if msg := refusal(t, false, status, hdr, body); !strings.Contains(msg, "1000 tokens per minute") {
		t.Errorf("message = %q", msg)
	}
	// Streaming usage (final usage chunk) reconciles too.
	h.clock.Advance(time.Minute)
	if status, _, body := h.post("/v1/chat/completions", chatStreamBody); status != 200 {
		t.Fatalf("stream: %d %s", status, body)
	}
	status, hdr, body = h.post("/v1/chat/completions", chatBody)
	refusal(t, false, status, hdr, body)
	if n := len(h.oa.Requests()); n != 2 {
		t.Errorf("upstream got %d requests, want 2", n)
	}
}

func TestTokensPerMinuteAnthropicStreamReconcile(t *testing.T) {
	h := newHarness(t, withLimits(router.Limits{TokensPerMinute: 1000}))
	h.an.OutputTokens = 980
	if status, _, body := h.post("/v1/messages", `{"model":"claude","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}`); status != 200 {
		t.Fatalf("stream: %d %s", status, body)
	}
	status, hdr, body := h.post("/v1/messages", claudeBody)
	refusal(t, true, status, hdr, body)
}

func TestConcurrentLimit(t *testing.T) {
	h := newHarness(t, withLimits(router.Limits{Concurrent: 1}))
	h.oa.Push(routertest.Behavior{Delay: 400 * time.Millisecond})
	var wg sync.WaitGroup
	wg.Add(1)
	var firstStatus int
	go func() {
		defer wg.Done()
		firstStatus, _, _ = h.post("/v1/chat/completions", chatBody)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(h.oa.Requests()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	status, hdr, body := h.post("/v1/chat/completions", chatBody)
	if msg := refusal(t, false, status, hdr, body); !strings.Contains(msg, "1 requests in flight (limit 1)") {
		t.Errorf("message = %q", msg)
	}
	wg.Wait()
	if firstStatus != 200 {
		t.Errorf("first request: %d", firstStatus)
	}
	if status, _, _ := h.post("/v1/chat/completions", chatBody); status != 200 {
		t.Errorf("after the first finished: %d", status)
	}
}

func TestDailyBudgetExhaustion(t *testing.T) {
	// $0.001 per token; a request is estimated at ~26+20 tokens and costs
	// 18 tokens = $0.018.
	h := newHarness(t, withLimits(router.Limits{USDPerDay: 0.06}))
	if status, _, body := h.post("/v1/chat/completions", chatBody); status != 200 {
		t.Fatalf("first: %d %s", status, body)
	}
	if status, _, body := h.post("/v1/chat/completions", chatBody); status != 200 {
		t.Fatalf("second: %d %s", status, body)
	}
	status, hdr, body := h.post("/v1/chat/completions", chatBody)
	if msg := refusal(t, false, status, hdr, body); !strings.Contains(msg, "budget of $0.06 per day (spent $0.0360)") {
		t.Errorf("message = %q", msg)
	}
	// Retry-After points at midnight UTC (12h away on the harness clock).
	if hdr.Get("Retry-After") != strconv.Itoa(12*3600) {
		t.Errorf("Retry-After = %q, want %d", hdr.Get("Retry-After"), 12*3600)
	}
	h.clock.Advance(12 * time.Hour)
	if status, _, body := h.post("/v1/chat/completions", chatBody); status != 200 {
		t.Errorf("next day: %d %s", status, body)
	}
}

func TestBudgetsSeededFromLedger(t *testing.T) {
	for _, tc := range []struct {
		name       string
		limits     router.Limits
		day, month float64
		want       string
	}{
		{"day spent before restart", router.Limits{USDPerDay: 1}, 0.99, 5, "per day"},
		{"month spent before restart", router.Limits{USDPerMonth: 5}, 0, 4.99, "per month"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *router.Options) {
				withLimits(tc.limits)(o)
				o.Usage.(*memUsage).daySpend = tc.day
				o.Usage.(*memUsage).monthSpend = tc.month
			})
			status, hdr, body := h.post("/v1/messages", claudeBody)
			if msg := refusal(t, true, status, hdr, body); !strings.Contains(msg, tc.want) {
				t.Errorf("message = %q, want %q", msg, tc.want)
			}
			if n := len(h.an.Requests()); n != 0 {
				t.Errorf("upstream got %d requests", n)
			}
		})
	}
}

func TestAdmissionRefusalsCounted(t *testing.T) {
	h := newHarness(t, withLimits(router.Limits{RequestsPerMinute: 1}))
	h.post("/v1/chat/completions", chatBody)
	h.post("/v1/chat/completions", chatBody)
	h.post("/v1/chat/completions", chatBody)
	mfs, err := h.r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				got[key] = c.GetValue()
			}
			if hg := m.GetHistogram(); hg != nil {
				got[key] = float64(hg.GetSampleCount())
			}
		}
	}
	for k, want := range map[string]float64{
		"clawcage_router_admission_refusals_total,reason=requests_per_minute,sandbox=agent":     2,
		"clawcage_router_requests_total,route=default,sandbox=agent,status=200,target=oa/gpt-a": 1,
		"clawcage_router_attempts_total,outcome=ok,route=default,sandbox=agent,target=oa/gpt-a": 1,
		"clawcage_router_request_duration_seconds,route=default,sandbox=agent":                  1,
		"clawcage_router_time_to_first_byte_seconds,route=default,sandbox=agent":                1,
		"clawcage_router_tokens_total,direction=output,route=default,sandbox=agent":             7,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}

// batchUsage records batches; it fails every batch when failBatches is set
// (the router must then fall back to single rows and lose nothing).
type batchUsage struct {
	memUsage
	bmu         sync.Mutex
	batches     []int
	failBatches bool
}

func (b *batchUsage) RecordBatch(ctx context.Context, rs []router.UsageRecord) error {
	b.bmu.Lock()
	b.batches = append(b.batches, len(rs))
	fail := b.failBatches
	b.bmu.Unlock()
	if fail {
		return errors.New("batch refused")
	}
	for _, r := range rs {
		_ = b.Record(ctx, r)
	}
	return nil
}

func TestUsageRowsBatchedAndNeverLost(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch_fails=%v", fail), func(t *testing.T) {
			bu := &batchUsage{failBatches: fail}
			h := newHarness(t, func(o *router.Options) { o.Usage = bu })
			var wg sync.WaitGroup
			for range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h.post("/v1/chat/completions", chatBody)
				}()
			}
			wg.Wait()
			h.closeRouter()
			if n := len(bu.records()); n != 40 {
				t.Errorf("ledger has %d rows, want 40 (batches %v)", n, bu.batches)
			}
		})
	}
}
