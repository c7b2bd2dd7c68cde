package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sandboxHandler serves one sandbox's listener.
type sandboxHandler struct {
	r       *Router
	sandbox string
	egress  EgressPolicy // nil refuses all provider-side egress
	adm     *admission

	// Metric series of this sandbox, resolved once.
	inflight prometheus.Gauge
	cost     prometheus.Counter
	routes   sync.Map // route name → *routeSeries
}

// routeSeries are the metric series of one sandbox and route.
type routeSeries struct {
	h                   *sandboxHandler
	route               string
	latency, ttfb       prometheus.Observer
	tokensIn, tokensOut prometheus.Counter
	byStatus            sync.Map // statusKey → prometheus.Counter
}

type statusKey struct {
	target string
	status int
}

// series returns the metric series of route (a configured route name or
// "direct": bounded).
func (h *sandboxHandler) series(route string) *routeSeries {
	if v, ok := h.routes.Load(route); ok {
		return v.(*routeSeries)
	}
	m := h.r.metrics
	rs := &routeSeries{
		h: h, route: route,
		latency:   m.latency.WithLabelValues(h.sandbox, route),
		ttfb:      m.ttfb.WithLabelValues(h.sandbox, route),
		tokensIn:  m.tokens.WithLabelValues(h.sandbox, route, "input"),
		tokensOut: m.tokens.WithLabelValues(h.sandbox, route, "output"),
	}
	v, _ := h.routes.LoadOrStore(route, rs)
	return v.(*routeSeries)
}

// requests is the requests_total counter of target and status (both from
// bounded sets: configured targets, HTTP statuses).
func (rs *routeSeries) requests(target string, status int) prometheus.Counter {
	k := statusKey{target, status}
	if v, ok := rs.byStatus.Load(k); ok {
		return v.(prometheus.Counter)
	}
	c := rs.h.r.metrics.requests.WithLabelValues(rs.h.sandbox, rs.route, target, strconv.Itoa(status))
	v, _ := rs.byStatus.LoadOrStore(k, c)
	return v.(prometheus.Counter)
}

// directModel reports whether s may be a "provider/model" name: it ends up
// in a header and a log line. 1 to 200 bytes of [A-Za-z0-9._:@+/-], not
// starting with '/'. (A byte loop rather than a regexp: compiling that
// regexp cost every clawcage process 1.7 ms at start.)
func directModel(s string) bool {
	if len(s) == 0 || len(s) > 200 || s[0] == '/' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '+', c == '-', c == '/':
		default:
			return false
		}
	}
	return true
}

func (h *sandboxHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	path := canonicalPath(req.URL.Path)
	if path == "/v1/models" || strings.HasPrefix(path, "/v1/models/") {
		h.serveModels(w, req, path)
		return
	}
	ep, ok := endpoints[path]
	if !ok {
		d := dialectOpenAI
		if strings.HasPrefix(path, "/v1/messages") || req.Header.Get("Anthropic-Version") != "" {
			d = dialectAnthropic
		}
		(&apiError{status: http.StatusNotFound, message: "clawcage: no such endpoint " + strconv.Quote(truncate(req.URL.Path, 100))}).write(w, d)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		(&apiError{status: http.StatusMethodNotAllowed, message: "clawcage: use POST for " + ep.path}).write(w, ep.dialect)
		return
	}
	body, err := readBody(http.MaxBytesReader(w, req.Body, h.r.opt.MaxBodyBytes), req.ContentLength, h.r.opt.MaxBodyBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			(&apiError{status: http.StatusRequestEntityTooLarge, message: fmt.Sprintf("clawcage: request body larger than %d bytes", mbe.Limit)}).write(w, ep.dialect)
			return
		}
		(&apiError{status: http.StatusBadRequest, message: "clawcage: reading request body: " + err.Error()}).write(w, ep.dialect)
		return
	}
	q, aerr := parseRequest(ep, body)
	if aerr != nil {
		aerr.message = "clawcage: " + aerr.message
		aerr.write(w, ep.dialect)
		return
	}
	route, chain, aerr := h.resolve(q.model)
	if aerr != nil {
		h.r.log.Info("request refused", "sandbox", h.sandbox, "model", q.model, "reason", aerr.reason, "status", aerr.status)
		aerr.write(w, ep.dialect)
		return
	}
	if aerr := checkEgress(q, h.egress); aerr != nil {
		h.r.metrics.refusals.WithLabelValues(h.sandbox, aerr.reason).Inc()
		h.r.log.Warn("provider-side egress refused", "sandbox", h.sandbox, "route", route.name, "reason", aerr.message)
		aerr.write(w, ep.dialect)
		return
	}
	estCost := 0.0
	if ep.metered {
		for _, t := range chain {
			in, out := q.estimateSplit()
			estCost = math.Max(estCost, h.r.cost(t.Model, in, out))
		}
	}
	tk, aerr := h.adm.admit(q.estimate, estCost)
	if aerr != nil {
		h.r.metrics.refusals.WithLabelValues(h.sandbox, aerr.reason).Inc()
		h.r.log.Info("admission refused", "sandbox", h.sandbox, "route", route.name, "reason", aerr.reason, "retry_after", aerr.retryAfter)
		aerr.write(w, ep.dialect)
		return
	}
	h.inflight.Inc()
	defer h.inflight.Dec()
	h.forward(w, req, q, route, chain, tk)
}

// readBody reads r to the end into a buffer sized from the request's
// Content-Length (when known and within limit), so the usual body is read
// without regrowing.
// initialBodyBuf is the most readBody allocates before body bytes arrive.
const initialBodyBuf = 64 << 10

func readBody(r io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength <= 0 || contentLength > limit {
		return io.ReadAll(r)
	}
	// +1: room to see EOF without growing. A declared length is a claim,
	// not bytes: take at most initialBodyBuf up front and grow as bytes
	// arrive, so a head announcing 32 MiB and then silence holds little.
	b := make([]byte, 0, min(contentLength+1, initialBodyBuf))
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow (a body longer than announced is cut by the server anyway)
		}
	}
}

// routeRef names what the request asked for.
type routeRef struct {
	name   string // route name, or "direct"
	direct bool
	hdr    []string // X-Clawcage-Route value, shared read-only
}

func (h *sandboxHandler) resolve(model string) (routeRef, []Target, *apiError) {
	if chain, ok := h.r.opt.Routes[model]; ok {
		return routeRef{name: model, hdr: h.r.routeHdrs[model]}, chain, nil
	}
	if h.r.opt.AllowDirect {
		if prov, m, ok := strings.Cut(model, "/"); ok && m != "" && directModel(model) {
			if _, ok := h.r.upstreams[prov]; ok {
				return routeRef{name: "direct", direct: true, hdr: h.r.routeHdrs["direct"]}, []Target{{Provider: prov, Model: m}}, nil
			}
		}
	}
	msg := fmt.Sprintf("clawcage: model %s is not a route of this router (routes: %s)", strconv.Quote(truncate(model, 100)), strings.Join(h.r.Routes(), ", "))
	if h.r.opt.AllowDirect {
		msg += `; or name "provider/model"`
	}
	return routeRef{}, nil, &apiError{status: http.StatusNotFound, message: msg, code: "model_not_found", reason: "unknown_route"}
}

func (h *sandboxHandler) targetLabel(route routeRef, t Target) string {
	return h.r.target(route, t).label
}

// outcome of one upstream attempt.
type outcome int

const (
	served    outcome = iota // response (2xx or final) sent to the client
	retryable                // connection error, timeout, 408/409/429/5xx before any byte
	final                    // a non-retryable provider answer, already sent
	aborted                  // the client went away or the body broke mid-way
)

type attemptResult struct {
	outcome    outcome
	status     int
	header     http.Header
	body       []byte // error body (retryable), secrets redacted
	retryAfter time.Duration
	err        error
	ttfb       time.Duration
	meter      meter
	// estimated is set when the provider's usage stayed unknown and the
	// estimate (estIn, estOut tokens) was charged instead.
	estimated     bool
	estIn, estOut int64
}

// forward runs the route's chain until one target answers or the deadline
// passes.
func (h *sandboxHandler) forward(w http.ResponseWriter, req *http.Request, q *request, route routeRef, chain []Target, tk *ticket) {
	r := h.r
	start := time.Now()
	// The chain deadline runs on the router's clock (injectable in tests);
	// latency is measured on the wall clock.
	deadline := r.opt.Now().Add(r.opt.Retry.Deadline)
	ctx := req.Context()

	var (
		attempts   int
		last       *attemptResult
		lastTarget Target
		firstTried = -1
		res        *attemptResult
		servedBy   Target
		servedIdx  int
		cross      crossing // the request translated for targets of the other dialect
	)
	if other := h.otherKind(q, chain); other != nil {
		// No target speaks q's dialect: without a translation there is
		// nothing to try.
		if _, err := cross.get(ctx, q, other); err != nil {
			tk.done(0, 0)
			ae := untranslatable(q, route, err)
			h.r.metrics.refusals.WithLabelValues(h.sandbox, ae.reason).Inc()
			h.r.log.Info("request refused", "sandbox", h.sandbox, "route", route.name, "reason", ae.message, "status", ae.status)
			ae.write(w, q.ep.dialect)
			return
		}
	}

chain:
	for pass := 0; ; pass++ {
		var wait time.Duration // longest Retry-After seen in this pass
		var earliest time.Time // earliest end of a cooldown that made us skip
		tried := false
		for ti, t := range chain {
			up := r.upstreams[t.Provider]
			uq := q // the request as this target takes it
			if up.Kind != q.ep.dialect.kind() {
				xq, err := cross.get(ctx, q, up)
				if err != nil {
					if pass == 0 {
						r.log.Info("target skipped: request cannot be translated", "sandbox", h.sandbox, "route", route.name, "target", h.targetLabel(route, t), "reason", err.Error())
					}
					continue
				}
				uq = xq
			}
			keys := r.opt.Keys.Keys(t.Provider)
			if len(keys) == 0 {
				keys = []Key{{}}
			}
			for _, k := range keys {
				ck := coolKey(t, k.ID)
				now := r.opt.Now()
				if until, cooling := r.cool.cooling(ck, now); cooling {
					if earliest.IsZero() || until.Before(earliest) {
						earliest = until
					}
					continue
				}
				if !now.Before(deadline) {
					break chain
				}
				tried = true
				attempts++
				if firstTried < 0 {
					firstTried = ti
				}
				res = h.attempt(req, w, q, uq, route, up, t, k, deadline, attempts)
				label := h.targetLabel(route, t)
				switch res.outcome {
				case served, final, aborted:
					r.metrics.attempts.WithLabelValues(h.sandbox, route.name, label, outcomeLabel(res)).Inc()
					if res.outcome == served {
						r.cool.success(ck)
					}
					servedBy, servedIdx = t, ti
					break chain
				}
				if ctx.Err() != nil {
					// The sandbox went away: not the target's failure, so
					// no cooldown (a sandbox must not be able to rest a
					// target for everyone by hanging up), and no retry.
					last, lastTarget, res = res, t, nil
					break chain
				}
				r.metrics.attempts.WithLabelValues(h.sandbox, route.name, label, outcomeLabel(res)).Inc()
				if r.cool.failure(ck, r.opt.Now(), r.opt.Retry.CooldownAfter, r.opt.Retry.Cooldown, res.retryAfter) {
					r.metrics.cooldowns.WithLabelValues(label).Inc()
					r.log.Warn("target cooling down", "sandbox", h.sandbox, "route", route.name, "target", label, "key_id", k.ID, "duration", r.opt.Retry.Cooldown)
				}
				r.log.Info("attempt failed", "sandbox", h.sandbox, "route", route.name, "target", label, "key_id", k.ID, "status", res.status, "reason", errString(res.err), "attempt", attempts)
				last, lastTarget = res, t
				res = nil
				if last.retryAfter > wait {
					wait = last.retryAfter
				}
				if last.status != http.StatusTooManyRequests {
					break // next target; key rotation is for 429 only
				}
			}
		}
		now := r.opt.Now()
		var sleep time.Duration
		if tried {
			sleep = backoff(r.opt.Retry, pass, r.opt.Jitter())
			sleep = max(sleep, wait)
		} else {
			if earliest.IsZero() {
				break
			}
			sleep = max(earliest.Sub(r.opt.Now()), time.Millisecond)
		}
		if now.Add(sleep).After(deadline) {
			if !tried && last == nil {
				tk.done(0, 0)
				ae := &apiError{status: http.StatusServiceUnavailable, message: fmt.Sprintf("clawcage: every target of route %s is cooling down after repeated failures", route.name), retryAfter: sleep, reason: "cooldown"}
				h.setRouteHeaders(w.Header(), route, Target{}, attempts)
				ae.write(w, q.ep.dialect)
				h.finish(w, q, route, Target{}, ae.status, attempts, start, nil, ae)
				return
			}
			break
		}
		if err := r.opt.Sleep(ctx, sleep); err != nil {
			break
		}
	}

	if res == nil || res.outcome == retryable {
		// The chain gave up: answer with the last provider error, or our own.
		tk.done(0, 0)
		if last != nil && last.status != 0 {
			hdr := w.Header()
			for k, vs := range last.header { // filtered and checked for key bytes by attempt
				hdr[k] = vs
			}
			h.setRouteHeaders(hdr, route, lastTarget, attempts)
			w.WriteHeader(last.status)
			_, _ = w.Write(last.body)
			h.finish(w, q, route, lastTarget, last.status, attempts, start, last, nil)
			return
		}
		ae := &apiError{status: http.StatusBadGateway, message: fmt.Sprintf("clawcage: no target of route %s answered", route.name), reason: "upstream"}
		if last != nil && errors.Is(last.err, context.DeadlineExceeded) || !r.opt.Now().Before(deadline) {
			ae.status, ae.message = http.StatusGatewayTimeout, fmt.Sprintf("clawcage: route %s did not answer within %s", route.name, r.opt.Retry.Deadline)
		}
		if last != nil && last.err != nil {
			ae.message += ": " + errString(last.err)
		}
		h.setRouteHeaders(w.Header(), route, lastTarget, attempts)
		ae.write(w, q.ep.dialect)
		h.finish(w, q, route, lastTarget, ae.status, attempts, start, last, ae)
		return
	}
	if servedIdx != firstTried && firstTried >= 0 {
		r.metrics.fallbacks.WithLabelValues(h.sandbox, route.name).Inc()
	}
	m := &res.meter
	var actualTokens int64 = -1
	var cost float64
	switch {
	case q.ep.metered && m.seen:
		actualTokens = m.in + m.out
		cost = r.cost(servedBy.Model, m.in, m.out)
	case !q.ep.metered || res.outcome == final:
		actualTokens = 0 // nothing generated: the estimate is given back
	default:
		// Generated, usage unknown (a stream without a usage chunk, a
		// client that left before it): the estimate stands and is
		// charged, never $0.
		res.estIn, res.estOut = q.estimateSplit()
		res.estimated = true
		cost = r.cost(servedBy.Model, res.estIn, res.estOut)
	}
	tk.done(actualTokens, cost)
	h.finish(w, q, route, servedBy, res.status, attempts, start, res, nil)
	if res.outcome == aborted {
		// End the connection without the final chunk so the sandbox's
		// client sees a truncated response, not a clean end.
		panic(http.ErrAbortHandler)
	}
}

// otherKind returns the first target's upstream when no target of chain
// speaks q's dialect, and nil otherwise.
func (h *sandboxHandler) otherKind(q *request, chain []Target) *upstream {
	for _, t := range chain {
		if h.r.upstreams[t.Provider].Kind == q.ep.dialect.kind() {
			return nil
		}
	}
	return h.r.upstreams[chain[0].Provider]
}

func outcomeLabel(res *attemptResult) string {
	switch res.outcome {
	case served:
		return "ok"
	case final:
		return "client_error"
	case aborted:
		return "aborted"
	}
	if res.status != 0 {
		return strconv.Itoa(res.status)
	}
	if errors.Is(res.err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "connection_error"
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// finish records metrics, the log line and the usage row of a request.
func (h *sandboxHandler) finish(_ http.ResponseWriter, q *request, route routeRef, t Target, status, attempts int, start time.Time, res *attemptResult, ae *apiError) {
	r := h.r
	elapsed := time.Since(start)
	label := ""
	if t.Provider != "" {
		label = h.targetLabel(route, t)
	}
	rs := h.series(route.name)
	rs.requests(label, status).Inc()
	rs.latency.Observe(elapsed.Seconds())
	rec := UsageRecord{
		Time: start.UTC(), Sandbox: h.sandbox, Route: route.name, Provider: t.Provider, Model: t.Model,
		Latency: elapsed, Status: status, Attempts: attempts,
	}
	if res != nil {
		rec.TTFB = res.ttfb
		if res.ttfb > 0 {
			rs.ttfb.Observe(res.ttfb.Seconds())
		}
		if res.meter.seen {
			rec.TokensIn, rec.TokensOut = res.meter.in, res.meter.out
		} else if res.estimated {
			rec.TokensIn, rec.TokensOut = res.estIn, res.estOut
		}
		if res.meter.seen || res.estimated {
			rec.CostUSD = r.cost(t.Model, rec.TokensIn, rec.TokensOut)
			rs.tokensIn.Add(float64(rec.TokensIn))
			rs.tokensOut.Add(float64(rec.TokensOut))
			h.cost.Add(rec.CostUSD)
		}
		if res.err != nil {
			rec.Error = errString(res.err)
		} else if status >= 400 {
			rec.Error = fmt.Sprintf("provider answered %d", status)
		}
	}
	if ae != nil {
		rec.Error = ae.message
	}
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("sandbox", h.sandbox), slog.String("route", route.name), slog.String("target", label), slog.Int("status", status),
		slog.Int("attempts", attempts), slog.Duration("duration", elapsed), slog.Duration("ttfb", rec.TTFB),
		slog.Int64("tokens_in", rec.TokensIn), slog.Int64("tokens_out", rec.TokensOut), slog.Bool("stream", q.stream))
	if q.ep.metered || status >= 400 {
		r.record(rec)
	}
}

func (h *sandboxHandler) setRouteHeaders(hdr http.Header, route routeRef, t Target, attempts int) {
	if route.hdr != nil {
		hdr["X-Clawcage-Route"] = route.hdr
	} else {
		hdr.Set("X-Clawcage-Route", route.name)
	}
	if t.Provider != "" {
		hdr["X-Clawcage-Target"] = h.r.target(route, t).hdr
	}
	if attempts < len(attemptsHdr) {
		hdr["X-Clawcage-Attempts"] = attemptsHdr[attempts]
	} else {
		hdr.Set("X-Clawcage-Attempts", strconv.Itoa(attempts))
	}
}

// attemptsHdr are the usual X-Clawcage-Attempts values, shared read-only.
var attemptsHdr = [...][]string{{"0"}, {"1"}, {"2"}, {"3"}, {"4"}, {"5"}, {"6"}, {"7"}, {"8"}}

// attempt sends q to one target with one key, as uq: q itself for a target
// of q's dialect, its translation for the other. It writes to w only when
// the outcome is served, final or aborted.
func (h *sandboxHandler) attempt(in *http.Request, w http.ResponseWriter, q, uq *request, route routeRef, up *upstream, t Target, k Key, deadline time.Time, n int) *attemptResult {
	ctx := in.Context()
	start := time.Now()
	// Both bounds become a wall-clock duration for this attempt.
	budget := deadline.Sub(h.r.opt.Now())
	if up.Timeout > 0 && up.Timeout < budget {
		budget = up.Timeout
	}
	limit := start.Add(budget)
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The timer bounds the attempt until its first byte; a response being
	// relayed is never cut by the chain deadline.
	timedOut := make(chan struct{})
	timer := time.AfterFunc(time.Until(limit), func() { close(timedOut); cancel() })
	stopTimer := func() bool { return timer.Stop() }
	defer timer.Stop()

	out, err := http.NewRequestWithContext(actx, http.MethodPost, "", nil)
	if err != nil {
		return &attemptResult{outcome: retryable, err: fmt.Errorf("build request: %w", err)}
	}
	// The URL is shared read-only; RoundTrippers do not modify requests.
	out.URL = up.urls[uq.ep.path]
	if in.URL.RawQuery != "" && !uq.translated && in.URL.Query().Get("beta") == "true" {
		u := *out.URL
		u.RawQuery = "beta=true" // Anthropic SDK beta endpoints; no other query parameter is forwarded
		out.URL = &u
	}
	out.Host = out.URL.Host
	body := uq.withModel(h.r.target(route, t).modelJSON)
	out.Body, out.ContentLength = newBodyReader(body), int64(len(body))
	out.GetBody = func() (io.ReadCloser, error) { return newBodyReader(body), nil }
	if uq.translated {
		copyInboundNeutral(out.Header, in.Header)
	} else {
		copyInbound(out.Header, in.Header)
	}
	out.Header["Content-Type"] = contentTypeJSON
	if up.Kind == KindAnthropic {
		if out.Header.Get("Anthropic-Version") == "" {
			out.Header.Set("Anthropic-Version", "2023-06-01")
		}
		if len(k.Secret) > 0 {
			out.Header["X-Api-Key"] = []string{string(k.Secret)}
		}
	} else if len(k.Secret) > 0 {
		out.Header["Authorization"] = []string{"Bearer " + string(k.Secret)}
	}
	resp, err := h.r.transport.RoundTrip(out)
	if err != nil {
		return &attemptResult{outcome: retryable, err: attemptErr(err, timedOut, limit.Sub(start))}
	}
	defer resp.Body.Close()
	keys := []Key{k}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		body = redactErrorBody(body, keys)
		// header keeps only what may reach the sandbox, already checked
		// for key bytes: the chain may answer with it after this attempt.
		res := &attemptResult{status: resp.StatusCode, header: make(http.Header, 4), body: body, retryAfter: retryAfter(resp.Header, time.Now())}
		copyOutbound(res.header, resp.Header, keys)
		if rerr != nil && len(body) == 0 {
			res.err = attemptErr(rerr, timedOut, limit.Sub(start))
		}
		if uq.translated {
			// The error in the client's dialect, with the provider's message.
			res.body = redactSecrets(translatedError(resp.StatusCode, body, q.ep.dialect), keys) // redacted again once decoded
			res.header.Set("Content-Type", "application/json")
		}
		if isRetryable(resp.StatusCode) {
			res.outcome = retryable
			return res
		}
		// A client error is the sandbox's to see; no fallback.
		stopTimer()
		res.outcome = final
		res.ttfb = time.Since(start)
		hdr := w.Header()
		for k, vs := range res.header {
			hdr[k] = vs
		}
		h.setRouteHeaders(hdr, route, t, n)
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(res.body)
		return res
	}
	// Success status: wait for the first body byte before committing, so a
	// provider that dies before sending anything still falls back.
	sse := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	nr, rerr := readSome(resp.Body, buf)
	if nr == 0 && rerr != nil && rerr != io.EOF {
		return &attemptResult{outcome: retryable, err: attemptErr(rerr, timedOut, limit.Sub(start))}
	}
	if !stopTimer() {
		// The timer fired just as the first byte came in: treat as timeout.
		return &attemptResult{outcome: retryable, err: fmt.Errorf("attempt timed out after %s: %w", limit.Sub(start).Round(time.Millisecond), context.DeadlineExceeded)}
	}
	res := &attemptResult{outcome: served, status: resp.StatusCode, ttfb: time.Since(start)}
	res.meter = meter{dialect: uq.ep.dialect, sse: sse}
	if uq.translated {
		// Usage is read from the provider's own stream or body.
		h.relayTranslated(w, resp, res, q, uq, route, t, n, keys, buf[:nr], rerr, sse)
		return res
	}
	hdr := w.Header()
	copyOutbound(hdr, resp.Header, keys)
	h.setRouteHeaders(hdr, route, t, n)
	if resp.ContentLength >= 0 && !sse {
		hdr.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)
	for {
		if nr > 0 {
			chunk := buf[:nr]
			if q.ep.metered {
				res.meter.Write(chunk)
			}
			if _, werr := w.Write(chunk); werr != nil {
				res.outcome, res.err = aborted, fmt.Errorf("write to sandbox: %w", werr)
				break
			}
			if sse && flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			res.outcome, res.err = aborted, fmt.Errorf("read from provider: %w", rerr)
			break
		}
		nr, rerr = resp.Body.Read(buf)
	}
	if res.outcome == served && resp.ContentLength >= 0 && !sse && flusher != nil {
		// The client has the whole declared body after this write, before
		// the metrics, log line and usage row of finish; net/http would
		// otherwise send the tail only when the handler returns. (A
		// chunked response still ends when the handler returns.)
		flusher.Flush()
	}
	res.meter.finish()
	return res
}

// newBodyReader is an upstream request body. It is an io.NopCloser around
// a *bytes.Reader on purpose: net/http recognises that as an in-memory body
// and writes the request head and body in one write(2) (one TCP segment);
// any other reader type makes Request.Write flush the head first, a second
// syscall and a second wake-up of the provider per request.
func newBodyReader(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

var contentTypeJSON = []string{"application/json"}

// readSome reads until at least one byte or an error.
func readSome(r io.Reader, buf []byte) (int, error) {
	for {
		n, err := r.Read(buf)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func attemptErr(err error, timedOut <-chan struct{}, limit time.Duration) error {
	select {
	case <-timedOut:
		return fmt.Errorf("attempt timed out after %s: %w", limit.Round(time.Millisecond), context.DeadlineExceeded)
	default:
	}
	return fmt.Errorf("connect to provider: %w", err)
}

func isRetryable(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusConflict ||
		status == http.StatusTooManyRequests || status >= 500
}

// retryAfter parses Retry-After (seconds or HTTP date) and retry-after-ms.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff is the jittered exponential wait before pass+1: initial·2^pass
// capped at max, then scaled into [d/2, d).
func backoff(r Retry, pass int, jitter float64) time.Duration {
	d := r.Initial
	for i := 0; i < pass && d < r.Max; i++ {
		d *= 2
	}
	d = min(d, r.Max)
	return d/2 + time.Duration(jitter*float64(d/2))
}

func defaultJitter() float64 { return rand.Float64() }

func (u *upstream) endpointURL(path string) string {
	p := path
	if u.Kind == KindOpenAI || strings.HasSuffix(u.base.Path, "/v1") {
		p = strings.TrimPrefix(path, "/v1")
	}
	c := *u.base
	c.Path = u.base.Path + p
	c.RawPath = ""
	return c.String()
}

// serveModels answers /v1/models with the routes, in the dialect the
// client speaks (Anthropic SDKs send anthropic-version).
func (h *sandboxHandler) serveModels(w http.ResponseWriter, req *http.Request, path string) {
	anth := req.Header.Get("Anthropic-Version") != ""
	d := dialectOpenAI
	if anth {
		d = dialectAnthropic
	}
	if req.Method != http.MethodGet {
		(&apiError{status: http.StatusMethodNotAllowed, message: "clawcage: use GET for /v1/models"}).write(w, d)
		return
	}
	model := func(id string) map[string]any {
		if anth {
			return map[string]any{"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"}
		}
		return map[string]any{"id": id, "object": "model", "created": 0, "owned_by": "clawcage"}
	}
	var v any
	if id, ok := strings.CutPrefix(path, "/v1/models/"); ok {
		if _, ok := h.r.opt.Routes[id]; !ok {
			(&apiError{status: http.StatusNotFound, message: "clawcage: no route " + strconv.Quote(truncate(id, 100)), code: "model_not_found"}).write(w, d)
			return
		}
		v = model(id)
	} else {
		routes := h.r.Routes()
		data := make([]map[string]any, 0, len(routes))
		for _, id := range routes {
			data = append(data, model(id))
		}
		if anth {
			var first, last any
			if len(routes) > 0 {
				first, last = routes[0], routes[len(routes)-1]
			}
			v = map[string]any{"data": data, "has_more": false, "first_id": first, "last_id": last}
		} else {
			v = map[string]any{"object": "list", "data": data}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
