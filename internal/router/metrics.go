package router

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's Prometheus series. Label values come from the
// configuration (sandbox, route, provider and model names) or from a fixed
// set (status, outcome, reason), never from free request text, so a
// sandbox cannot blow up cardinality.
type metrics struct {
	requests  *prometheus.CounterVec   // sandbox, route, target, status
	attempts  *prometheus.CounterVec   // sandbox, route, target, outcome
	fallbacks *prometheus.CounterVec   // sandbox, route
	refusals  *prometheus.CounterVec   // sandbox, reason
	latency   *prometheus.HistogramVec // sandbox, route
	ttfb      *prometheus.HistogramVec // sandbox, route
	tokens    *prometheus.CounterVec   // sandbox, route, direction
	costUSD   *prometheus.CounterVec   // sandbox
	inflight  *prometheus.GaugeVec     // sandbox
	cooldowns *prometheus.CounterVec   // target
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "requests_total",
			Help: "Model requests answered, by sandbox, route, serving target and HTTP status.",
		}, []string{"sandbox", "route", "target", "status"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "attempts_total",
			Help: "Upstream attempts, by sandbox, route, target and outcome.",
		}, []string{"sandbox", "route", "target", "outcome"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "fallbacks_total",
			Help: "Requests answered by a target other than the first attempted.",
		}, []string{"sandbox", "route"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "admission_refusals_total",
			Help: "Requests refused before any upstream call, by reason.",
		}, []string{"sandbox", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "request_duration_seconds",
			Help: "Time from request to the last byte of the response.", Buckets: buckets,
		}, []string{"sandbox", "route"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "time_to_first_byte_seconds",
			Help: "Time from request to the first response byte sent to the sandbox.", Buckets: buckets,
		}, []string{"sandbox", "route"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "tokens_total",
			Help: "Tokens reported by providers, by direction (input, output).",
		}, []string{"sandbox", "route", "direction"}),
		costUSD: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "cost_usd_total",
			Help: "Spend in USD computed from the price table.",
		}, []string{"sandbox"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "requests_in_flight",
			Help: "Requests currently being served.",
		}, []string{"sandbox"}),
		cooldowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clawcage", Subsystem: "router", Name: "cooldowns_total",
			Help: "Cooldowns started for a provider key and model after repeated failures.",
		}, []string{"target"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.attempts, m.fallbacks, m.refusals, m.latency, m.ttfb, m.tokens, m.costUSD, m.inflight, m.cooldowns} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
