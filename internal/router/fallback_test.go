package router_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/routertest"
)

const chatBody = `{"model":"default","messages":[{"role":"user","content":"hi"}],"max_tokens":20}`
const chatStreamBody = `{"model":"default","messages":[{"role":"user","content":"hi"}],"max_tokens":20,"stream":true,"stream_options":{"include_usage":true}}`
const claudeBody = `{"model":"claude","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`

func TestFallbackTriggers(t *testing.T) {
	cases := []struct {
		name     string
		b        routertest.Behavior
		stream   bool
		fallback bool
		status   int // status the client sees when there is no fallback
	}{
		{"500 falls back", routertest.Behavior{Status: 500}, false, true, 0},
		{"502 falls back", routertest.Behavior{Status: 502}, false, true, 0},
		{"503 falls back", routertest.Behavior{Status: 503}, false, true, 0},
		{"529 overloaded falls back", routertest.Behavior{Status: 529}, false, true, 0},
		{"408 falls back", routertest.Behavior{Status: 408}, false, true, 0},
		{"409 falls back", routertest.Behavior{Status: 409}, false, true, 0},
		{"429 falls back", routertest.Behavior{Status: 429}, false, true, 0},
		{"connection dropped falls back", routertest.Behavior{Drop: true}, false, true, 0},
		{"timeout falls back", routertest.Behavior{Delay: 3 * time.Second}, false, true, 0},
		{"200 then close before body falls back", routertest.Behavior{DropAfterHeaders: true}, false, true, 0},
		{"stream: 503 falls back", routertest.Behavior{Status: 503}, true, true, 0},
		{"stream: dropped before first byte falls back", routertest.Behavior{DropAfterHeaders: true}, true, true, 0},
		{"stream: timeout before first byte falls back", routertest.Behavior{Delay: 3 * time.Second}, true, true, 0},
		{"400 is the client's", routertest.Behavior{Status: 400}, false, false, 400},
		{"401 is the client's", routertest.Behavior{Status: 401}, false, false, 401},
		{"403 is the client's", routertest.Behavior{Status: 403}, false, false, 403},
		{"404 is the client's", routertest.Behavior{Status: 404}, false, false, 404},
		{"422 is the client's", routertest.Behavior{Status: 422}, false, false, 422},
		{"stream: 400 is the client's", routertest.Behavior{Status: 400}, true, false, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *router.Options) {
				p := o.Providers["oa"]
				p.Timeout = 300 * time.Millisecond
				o.Providers["oa"] = p
			})
			h.oa.Push(tc.b)
			body := chatBody
			if tc.stream {
				body = chatStreamBody
			}
			status, hdr, got := h.post("/v1/chat/completions", body)
			if !tc.fallback {
				if status != tc.status {
					t.Fatalf("status = %d, want %d (body %s)", status, tc.status, got)
				}
				if n := len(h.ob.Requests()); n != 0 {
					t.Errorf("fallback target got %d requests, want 0", n)
				}
				if hdr.Get("X-Clawcage-Attempts") != "1" || hdr.Get("X-Clawcage-Target") != "oa/gpt-a" {
					t.Errorf("headers attempts=%q target=%q", hdr.Get("X-Clawcage-Attempts"), hdr.Get("X-Clawcage-Target"))
				}
				var e struct {
					Error struct{ Message string } `json:"error"`
				}
				if json.Unmarshal(got, &e) != nil || !strings.Contains(e.Error.Message, "fake failure") {
					t.Errorf("provider error body not passed through: %s", got)
				}
				return
			}
			if status != 200 {
				t.Fatalf("status = %d, want 200 after fallback (body %s)", status, got)
			}
			if hdr.Get("X-Clawcage-Target") != "ob/gpt-b" || hdr.Get("X-Clawcage-Attempts") != "2" {
				t.Errorf("served by %q after %q attempts, want ob/gpt-b after 2", hdr.Get("X-Clawcage-Target"), hdr.Get("X-Clawcage-Attempts"))
			}
			if reqs := h.ob.Requests(); len(reqs) != 1 || reqs[0].Model != "gpt-b" {
				t.Errorf("fallback target requests = %d", len(reqs))
			}
			if tc.stream && !bytes.HasSuffix(got, []byte("data: [DONE]\n\n")) {
				t.Errorf("stream does not end with [DONE]: %q", got)
			}
		})
	}
}

func TestStreamDoesNotFallBackAfterFirstByte(t *testing.T) {
	for _, tc := range []struct{ name, path, body string }{
		{"openai chat", "/v1/chat/completions", chatStreamBody},
		{"anthropic messages", "/v1/messages", `{"model":"claude","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.oa.Push(routertest.Behavior{DieMidStream: true})
			h.an.Push(routertest.Behavior{DieMidStream: true})
			req, _ := http.NewRequest(http.MethodPost, h.url+tc.path, strings.NewReader(tc.body))
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, rerr := buf.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if rerr == nil {
				t.Errorf("truncated stream read cleanly; want an unexpected EOF so the client knows")
			}
			if !strings.Contains(buf.String(), "data: ") || strings.Contains(buf.String(), "[DONE]") || strings.Contains(buf.String(), "message_stop") {
				t.Errorf("client got %q, want the first event only", buf.String())
			}
			if n := len(h.ob.Requests()) + len(h.an2.Requests()); n != 0 {
				t.Errorf("fell back after the first byte (%d fallback requests)", n)
			}
		})
	}
}

func TestAnthropicFallbackAndCrossDialect(t *testing.T) {
	h := newHarness(t, nil)
	h.an.Push(routertest.Behavior{Status: 529})
	status, hdr, body := h.post("/v1/messages", claudeBody)
	if status != 200 || hdr.Get("X-Clawcage-Target") != "an2/claude-b" {
		t.Fatalf("status %d target %q: %s", status, hdr.Get("X-Clawcage-Target"), body)
	}
	// "mixed" starts with an Anthropic target: an OpenAI chat completion
	// is translated for it (cross_test.go has the details).
	status, hdr, body = h.post("/v1/chat/completions", strings.Replace(chatBody, `"default"`, `"mixed"`, 1))
	if status != 200 || hdr.Get("X-Clawcage-Target") != "an/claude-a" || !bytes.Contains(body, []byte(`"object":"chat.completion"`)) {
		t.Fatalf("mixed route: status %d target %q: %s", status, hdr.Get("X-Clawcage-Target"), body)
	}
	// "claude" has only Anthropic targets: /v1/responses is never
	// translated, a clear 400.
	status, _, body = h.post("/v1/responses", `{"model":"claude","input":"hi"}`)
	if status != 400 || !bytes.Contains(body, []byte("no target speaking the openai format of /v1/responses")) ||
		!bytes.Contains(body, []byte("only /v1/chat/completions and /v1/messages are translated")) {
		t.Fatalf("cross-dialect responses: status %d: %s", status, body)
	}
}

func TestRetryAfterHonouredAndCappedByDeadline(t *testing.T) {
	h := newHarness(t, nil)
	// solo has one target: a 429 with Retry-After 1 must be waited out.
	h.oa.Push(routertest.Behavior{Status: 429, RetryAfter: "1"})
	status, hdr, body := h.post("/v1/chat/completions", strings.Replace(chatBody, `"default"`, `"solo"`, 1))
	if status != 200 || hdr.Get("X-Clawcage-Attempts") != "2" {
		t.Fatalf("status %d attempts %q: %s", status, hdr.Get("X-Clawcage-Attempts"), body)
	}
	sleeps := h.clock.Sleeps()
	if len(sleeps) != 1 || sleeps[0] < time.Second {
		t.Errorf("sleeps = %v, want one of at least the 1s Retry-After", sleeps)
	}
	// A Retry-After beyond the chain deadline (2s) ends the chain at once
	// with the provider's 429 and its Retry-After.
	h.clock.Advance(time.Minute)
	h.oa.Push(routertest.Behavior{Status: 429, RetryAfter: "120"})
	status, hdr, body = h.post("/v1/chat/completions", strings.Replace(chatBody, `"default"`, `"solo"`, 1))
	if status != 429 || hdr.Get("Retry-After") != "120" || hdr.Get("X-Clawcage-Attempts") != "1" {
		t.Fatalf("status %d retry-after %q attempts %q: %s", status, hdr.Get("Retry-After"), hdr.Get("X-Clawcage-Attempts"), body)
	}
	if len(h.clock.Sleeps()) != 1 {
		t.Errorf("router slept past the deadline: %v", h.clock.Sleeps())
	}
}

func TestBackoffGrowsUntilDeadline(t *testing.T) {
	h := newHarness(t, nil)
	for range 50 {
		h.oa.Push(routertest.Behavior{Status: 500})
	}
	h.opts.Retry.CooldownAfter = 1000
	status, _, _ := h.post("/v1/chat/completions", strings.Replace(chatBody, `"default"`, `"solo"`, 1))
	if status != 500 {
		t.Fatalf("status = %d, want the provider's last 500", status)
	}
	sleeps := h.clock.Sleeps()
	// Jitter 0.5 → 0.75·d: 75ms, 150ms, 300ms, then 300ms (max 400ms);
	// cooldown after 3 failures ends the chain early.
	want := []time.Duration{75 * time.Millisecond, 150 * time.Millisecond}
	if len(sleeps) < 2 || sleeps[0] != want[0] || sleeps[1] != want[1] {
		t.Errorf("sleeps = %v, want to start with %v", sleeps, want)
	}
	var total time.Duration
	for _, s := range sleeps {
		total += s
	}
	if total > 2*time.Second {
		t.Errorf("slept %v in total, beyond the 2s deadline", total)
	}
}

func TestCooldownAfterRepeatedFailures(t *testing.T) {
	h := newHarness(t, nil)
	for range 10 {
		h.oa.Push(routertest.Behavior{Status: 500})
	}
	solo := strings.Replace(chatBody, `"default"`, `"solo"`, 1)
	status, _, _ := h.post("/v1/chat/completions", solo)
	if status != 500 {
		t.Fatalf("first request status = %d, want 500", status)
	}
	if n := len(h.oa.Requests()); n != 3 {
		t.Fatalf("upstream attempts = %d, want 3 (cooldown after 3 failures)", n)
	}
	status, hdr, body := h.post("/v1/chat/completions", solo)
	if status != 503 || hdr.Get("Retry-After") == "" || !bytes.Contains(body, []byte("cooling down")) {
		t.Fatalf("during cooldown: status %d retry-after %q: %s", status, hdr.Get("Retry-After"), body)
	}
	if n := len(h.oa.Requests()); n != 3 {
		t.Errorf("upstream contacted during cooldown (%d requests)", n)
	}
	// The default route falls over to ob at once while oa/gpt-a rests.
	status, hdr, _ = h.post("/v1/chat/completions", chatBody)
	if status != 200 || hdr.Get("X-Clawcage-Target") != "ob/gpt-b" || hdr.Get("X-Clawcage-Attempts") != "1" {
		t.Errorf("default during cooldown: %d via %q after %q", status, hdr.Get("X-Clawcage-Target"), hdr.Get("X-Clawcage-Attempts"))
	}
	h.clock.Advance(61 * time.Second)
	h.oa.Reset()
	status, hdr, _ = h.post("/v1/chat/completions", solo)
	if status != 200 || hdr.Get("X-Clawcage-Target") != "oa/gpt-a" {
		t.Errorf("after cooldown: %d via %q", status, hdr.Get("X-Clawcage-Target"))
	}
}

func TestDeadlineBoundsTheWholeChain(t *testing.T) {
	h := newHarness(t, func(o *router.Options) {
		o.Retry.Deadline = 300 * time.Millisecond
		o.Now, o.Sleep = nil, nil // real clock: the attempt itself must be cut
	})
	h.oa.Push(routertest.Behavior{Delay: 5 * time.Second})
	h.ob.Push(routertest.Behavior{Delay: 5 * time.Second})
	start := time.Now()
	status, hdr, body := h.post("/v1/chat/completions", chatBody)
	if status != 504 {
		t.Fatalf("status = %d, want 504: %s", status, body)
	}
	var e struct {
		Error struct{ Type, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Type != "server_error" || !strings.Contains(e.Error.Message, "did not answer within 300ms") {
		t.Errorf("body = %s", body)
	}
	if hdr.Get("X-Clawcage-Attempts") != "1" {
		t.Errorf("attempts = %q, want 1 (the deadline cut the first attempt)", hdr.Get("X-Clawcage-Attempts"))
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("took %v: the deadline did not cut the attempt", el)
	}
}

func TestKeyRotationOn429(t *testing.T) {
	h := newHarness(t, nil)
	h.keys.set("oa", router.Key{ID: "k1", Secret: []byte(canaryOA)}, router.Key{ID: "k2", Secret: []byte(canaryOA2)})
	h.oa.Push(routertest.Behavior{Status: 429})
	status, hdr, body := h.post("/v1/chat/completions", strings.Replace(chatBody, `"default"`, `"solo"`, 1))
	if status != 200 || hdr.Get("X-Clawcage-Attempts") != "2" || hdr.Get("X-Clawcage-Target") != "oa/gpt-a" {
		t.Fatalf("status %d attempts %q target %q: %s", status, hdr.Get("X-Clawcage-Attempts"), hdr.Get("X-Clawcage-Target"), body)
	}
	reqs := h.oa.Requests()
	if len(reqs) != 2 || reqs[0].Header.Get("Authorization") != "Bearer "+canaryOA || reqs[1].Header.Get("Authorization") != "Bearer "+canaryOA2 {
		t.Errorf("keys were not rotated k1 → k2")
	}
	if len(h.clock.Sleeps()) != 0 {
		t.Errorf("slept %v before trying the next key", h.clock.Sleeps())
	}
	// A 500 does not rotate keys: it moves to the next target.
	h.oa.Reset()
	h.oa.Push(routertest.Behavior{Status: 500})
	status, hdr, _ = h.post("/v1/chat/completions", chatBody)
	if status != 200 || hdr.Get("X-Clawcage-Target") != "ob/gpt-b" || len(h.oa.Requests()) != 1 {
		t.Errorf("500: status %d via %q, %d requests to oa", status, hdr.Get("X-Clawcage-Target"), len(h.oa.Requests()))
	}
}

func TestSameDialectBodyPassesThroughByteForByte(t *testing.T) {
	// Odd spacing, key order, unknown fields, unicode escapes: only the
	// model value may change, on mixed routes too (a translated attempt
	// before must leave the client's bytes alone).
	oaIn := "{ \"messages\" : [{\"role\":\"user\",\"content\":\"h\\u00e9llo \\\"q\\\"\"}],\n\t\"model\" :\"ROUTE\" , \"x_vendor\": {\"a\":[1,2,{}]}, \"max_tokens\":20, \"temperature\": 0.70 }"
	anIn := "{ \"max_tokens\" : 20,\n\t\"model\":\"ROUTE\", \"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"h\\u00e9llo\",\"cache_control\":{\"type\":\"ephemeral\"}}]}], \"x_vendor\": [] }"
	tests := []struct {
		name, path, in, route, model string
		fail                         func(h *harness) // scripts failures of earlier targets
		got                          func(h *harness) *routertest.Provider
	}{
		{"openai route", "/v1/chat/completions", oaIn, "default", "gpt-a", nil, func(h *harness) *routertest.Provider { return h.oa }},
		{"mixed route after a failed translated attempt", "/v1/chat/completions", strings.Replace(oaIn, ` "x_vendor": {"a":[1,2,{}]},`, "", 1), "mixed", "gpt-a",
			func(h *harness) { h.an.Push(routertest.Behavior{Status: 529}) }, func(h *harness) *routertest.Provider { return h.oa }},
		{"anthropic route", "/v1/messages", anIn, "claude", "claude-a", nil, func(h *harness) *routertest.Provider { return h.an }},
		{"anthropic dialect on a mixed route", "/v1/messages", anIn, "anfirst", "claude-a", nil, func(h *harness) *routertest.Provider { return h.an }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *router.Options) {
				o.Routes["anfirst"] = []router.Target{{Provider: "an", Model: "claude-a"}, {Provider: "oa", Model: "gpt-a"}}
			})
			if tc.fail != nil {
				tc.fail(h)
			}
			in := strings.Replace(tc.in, "ROUTE", tc.route, 1)
			status, _, body := h.post(tc.path, in)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			if tc.fail != nil && len(h.an.Requests()) != 1 {
				t.Fatalf("the translated attempt before was not made")
			}
			want := strings.Replace(in, `"`+tc.route+`"`, `"`+tc.model+`"`, 1)
			reqs := tc.got(h).Requests()
			if got := string(reqs[len(reqs)-1].Body); got != want {
				t.Errorf("upstream body\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestRouterOwnErrors(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"unknown route", "/v1/chat/completions", `{"model":"gpt-4o","messages":[]}`, 404, `"model_not_found"`},
		{"unknown route anthropic", "/v1/messages", `{"model":"nope","max_tokens":1,"messages":[]}`, 404, `"not_found_error"`},
		{"direct not allowed", "/v1/chat/completions", `{"model":"oa/gpt-x","messages":[]}`, 404, `not a route`},
		{"not json", "/v1/chat/completions", `{"model":`, 400, `not valid JSON`},
		{"no model", "/v1/messages", `{"max_tokens":1}`, 400, `"invalid_request_error"`},
		{"duplicate model field", "/v1/chat/completions", `{"model":"default","model":"solo"}`, 400, `duplicate top-level field`},
		{"embeddings do not stream", "/v1/embeddings", `{"model":"default","input":"x","stream":true}`, 400, `does not stream`},
		{"unknown endpoint", "/v1/files", `{}`, 404, `no such endpoint`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := h.post(tc.path, tc.body)
			if status != tc.status || !bytes.Contains(body, []byte(tc.want)) {
				t.Errorf("status %d body %s; want %d containing %s", status, body, tc.status, tc.want)
			}
		})
	}
	if n := len(h.oa.Requests()) + len(h.an.Requests()); n != 0 {
		t.Errorf("%d bad requests reached a provider", n)
	}
}

func TestAllowDirect(t *testing.T) {
	h := newHarness(t, func(o *router.Options) { o.AllowDirect = true })
	status, hdr, body := h.post("/v1/chat/completions", `{"model":"ob/some-model","messages":[]}`)
	if status != 200 || hdr.Get("X-Clawcage-Route") != "direct" || h.ob.Requests()[0].Model != "some-model" {
		t.Fatalf("direct: status %d route %q: %s", status, hdr.Get("X-Clawcage-Route"), body)
	}
	status, _, _ = h.post("/v1/chat/completions", `{"model":"nosuch/m","messages":[]}`)
	if status != 404 {
		t.Errorf("unknown provider: status %d, want 404", status)
	}
	status, _, _ = h.post("/v1/chat/completions", "{\"model\":\"ob/evil\\r\\nX-Injected: 1\",\"messages\":[]}")
	if status != 404 {
		t.Errorf("model with CRLF: status %d, want 404", status)
	}
}

func TestClientHangUpDoesNotCoolTargets(t *testing.T) {
	h := newHarness(t, nil)
	for range 5 {
		h.oa.Push(routertest.Behavior{Delay: 2 * time.Second})
	}
	solo := strings.Replace(chatBody, `"default"`, `"solo"`, 1)
	for range 4 {
		req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(solo))
		c := &http.Client{Timeout: 100 * time.Millisecond}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("request returned %d before the client timeout", resp.StatusCode)
		}
	}
	h.oa.Reset()
	// Four hang-ups exceed cooldown_after (3): the target must still serve.
	status, hdr, body := h.post("/v1/chat/completions", solo)
	if status != 200 || hdr.Get("X-Clawcage-Attempts") != "1" {
		t.Fatalf("after hang-ups: status %d attempts %q: %s", status, hdr.Get("X-Clawcage-Attempts"), body)
	}
}
