package router_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router"
)

type failingSpend struct{ memUsage }

func (*failingSpend) Spend(context.Context, string, time.Time) (float64, error) {
	return 0, errors.New("ledger unreadable")
}

func TestAddAndRemoveSandbox(t *testing.T) {
	h := newHarness(t, func(o *router.Options) {
		o.Prices = map[string]router.Price{"gpt-a": {Input: 1000, Output: 1000}}
	})
	call := func(sandbox string) int {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(`{"model":"solo","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.r.Handler(sandbox).ServeHTTP(w, req)
		return w.Code
	}
	ctx := context.Background()

	t.Run("added sandbox gets its request limit", func(t *testing.T) {
		if err := h.r.AddSandbox(ctx, "late", router.Sandbox{Limits: router.Limits{RequestsPerMinute: 1}}); err != nil {
			t.Fatal(err)
		}
		if got := call("late"); got != http.StatusOK {
			t.Fatalf("first request: %d", got)
		}
		if got := call("late"); got != http.StatusTooManyRequests {
			t.Fatalf("second request within the minute: %d, want 429", got)
		}
	})
	t.Run("re-adding replaces limits and counters", func(t *testing.T) {
		if err := h.r.AddSandbox(ctx, "late", router.Sandbox{Limits: router.Limits{RequestsPerMinute: 2}}); err != nil {
			t.Fatal(err)
		}
		for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests} {
			if got := call("late"); got != want {
				t.Fatalf("request %d: %d, want %d", i, got, want)
			}
		}
	})
	t.Run("budget is seeded from the ledger", func(t *testing.T) {
		h.usage.mu.Lock()
		h.usage.daySpend = 4.99
		h.usage.mu.Unlock()
		defer func() { h.usage.mu.Lock(); h.usage.daySpend = 0; h.usage.mu.Unlock() }()
		if err := h.r.AddSandbox(ctx, "spent", router.Sandbox{Limits: router.Limits{USDPerDay: 5}}); err != nil {
			t.Fatal(err)
		}
		if got := call("spent"); got != http.StatusTooManyRequests {
			t.Fatalf("request of a sandbox whose day budget is spent: %d, want 429", got)
		}
	})
	t.Run("removed sandbox loses its limits", func(t *testing.T) {
		h.r.RemoveSandbox("late")
		for i := range 3 {
			if got := call("late"); got != http.StatusOK {
				t.Fatalf("request %d after RemoveSandbox: %d", i, got)
			}
		}
	})
}

func TestAddSandboxRefusedWhenSpendUnreadable(t *testing.T) {
	h := newHarness(t, func(o *router.Options) { o.Usage = &failingSpend{} })
	err := h.r.AddSandbox(context.Background(), "budgeted", router.Sandbox{Limits: router.Limits{USDPerMonth: 10}})
	if err == nil || !strings.Contains(err.Error(), "ledger unreadable") {
		t.Fatalf("AddSandbox = %v, want the ledger error", err)
	}
	// Without a budget the ledger is not needed.
	if err := h.r.AddSandbox(context.Background(), "free", router.Sandbox{}); err != nil {
		t.Fatalf("AddSandbox without budget: %v", err)
	}
}
