package router

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"
)

// Admission refusal reasons: the metric label, log value and part of the
// 429 message.
const (
	reasonRequests   = "requests_per_minute"
	reasonTokens     = "tokens_per_minute"
	reasonConcurrent = "concurrent"
	reasonDay        = "usd_per_day"
	reasonMonth      = "usd_per_month"
)

// bucket is a token bucket refilled continuously at rate per second up to
// capacity. Unlike x/time/rate it may go into debt, which is how actual
// usage larger than the estimate is reconciled: the overshoot delays the
// following requests instead of slipping past the limit.
type bucket struct {
	capacity float64
	rate     float64 // per second
	tokens   float64
	last     time.Time
}

func newBucket(perMinute int, now time.Time) *bucket {
	c := float64(perMinute)
	return &bucket{capacity: c, rate: c / 60, tokens: c, last: now}
}

func (b *bucket) refill(now time.Time) {
	if now.After(b.last) {
		b.tokens = math.Min(b.capacity, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
}

// wait is how long until n tokens are available (0 if now).
func (b *bucket) wait(now time.Time, n float64) time.Duration {
	b.refill(now)
	if b.tokens >= n {
		return 0
	}
	return time.Duration((n - b.tokens) / b.rate * float64(time.Second))
}

func (b *bucket) take(n float64) { b.tokens -= n }

// give returns n tokens (n may be negative: take more), never above capacity.
func (b *bucket) give(now time.Time, n float64) {
	b.refill(now)
	b.tokens = math.Min(b.capacity, b.tokens+n)
}

// admission holds one sandbox's limits and counters.
type admission struct {
	sandbox string
	limits  Limits
	now     func() time.Time

	mu       sync.Mutex
	requests *bucket
	tokens   *bucket
	inflight int
	// spend in USD in the current UTC day and month, plus the cost still
	// reserved by requests in flight.
	day, month         time.Time
	daySpend, monSpend float64
	reserved           float64
}

func newAdmission(sandbox string, l Limits, now func() time.Time) *admission {
	t := now()
	a := &admission{sandbox: sandbox, limits: l, now: now, day: dayStart(t.UTC()), month: monthStart(t.UTC())}
	if l.RequestsPerMinute > 0 {
		a.requests = newBucket(l.RequestsPerMinute, t)
	}
	if l.TokensPerMinute > 0 {
		a.tokens = newBucket(l.TokensPerMinute, t)
	}
	return a
}

func (a *admission) seed(now time.Time, day, month float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.roll(now)
	a.daySpend, a.monSpend = day, month
}

// roll resets the spend counters when the UTC day or month changed.
func (a *admission) roll(now time.Time) {
	now = now.UTC()
	if d := dayStart(now); d.After(a.day) {
		a.day, a.daySpend = d, 0
	}
	if m := monthStart(now); m.After(a.month) {
		a.month, a.monSpend = m, 0
	}
}

// ticket is an admitted request; done must be called exactly once.
type ticket struct {
	a        *admission
	tokens   float64
	cost     float64
	released bool
}

// admit checks every limit and, when all pass, reserves the request's
// share of each. estCost is the estimated USD cost (for budgets).
func (a *admission) admit(estTokens int64, estCost float64) (*ticket, *apiError) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.roll(now)
	l := a.limits
	if l.Concurrent > 0 && a.inflight >= l.Concurrent {
		return nil, refuse(reasonConcurrent, time.Second, "sandbox %s has %d requests in flight (limit %d)", a.sandbox, a.inflight, l.Concurrent)
	}
	if a.requests != nil {
		if d := a.requests.wait(now, 1); d > 0 {
			return nil, refuse(reasonRequests, d, "sandbox %s exceeded %d requests per minute", a.sandbox, l.RequestsPerMinute)
		}
	}
	n := float64(estTokens)
	if a.tokens != nil {
		if n > a.tokens.capacity {
			return nil, refuse(reasonTokens, time.Minute, "request needs about %d tokens, more than the sandbox's limit of %d tokens per minute (lower max_tokens)", estTokens, l.TokensPerMinute)
		}
		if d := a.tokens.wait(now, n); d > 0 {
			return nil, refuse(reasonTokens, d, "sandbox %s exceeded %d tokens per minute (this request needs about %d)", a.sandbox, l.TokensPerMinute, estTokens)
		}
	}
	if l.USDPerDay > 0 && a.daySpend+a.reserved+estCost > l.USDPerDay {
		return nil, refuse(reasonDay, a.day.AddDate(0, 0, 1).Sub(now), "sandbox %s reached its budget of $%.2f per day (spent $%.4f)", a.sandbox, l.USDPerDay, a.daySpend)
	}
	if l.USDPerMonth > 0 && a.monSpend+a.reserved+estCost > l.USDPerMonth {
		return nil, refuse(reasonMonth, a.month.AddDate(0, 1, 0).Sub(now), "sandbox %s reached its budget of $%.2f per month (spent $%.4f)", a.sandbox, l.USDPerMonth, a.monSpend)
	}
	if a.requests != nil {
		a.requests.take(1)
	}
	if a.tokens != nil {
		a.tokens.take(n)
	}
	a.inflight++
	a.reserved += estCost
	return &ticket{a: a, tokens: n, cost: estCost}, nil
}

// done releases the ticket and reconciles tokens and cost with what the
// provider reported (actualTokens < 0: unknown, the estimate stands).
func (t *ticket) done(actualTokens int64, actualCost float64) {
	a := t.a
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.released {
		return
	}
	t.released = true
	a.inflight--
	a.reserved -= t.cost
	if a.reserved < 0 {
		a.reserved = 0
	}
	if a.tokens != nil && actualTokens >= 0 {
		a.tokens.give(now, t.tokens-float64(actualTokens))
	}
	a.roll(now)
	a.daySpend += actualCost
	a.monSpend += actualCost
}

func refuse(reason string, retry time.Duration, format string, args ...any) *apiError {
	if retry < time.Second {
		retry = time.Second
	}
	return &apiError{
		status:     http.StatusTooManyRequests,
		message:    "clawcage: " + fmt.Sprintf(format, args...),
		retryAfter: retry,
		reason:     reason,
	}
}

func dayStart(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func monthStart(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}
