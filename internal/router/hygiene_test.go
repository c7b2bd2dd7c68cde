package router_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/routertest"
)

func TestInboundCredentialsDropped(t *testing.T) {
	h := newHarness(t, nil)
	status, _, body := h.post("/v1/chat/completions", chatBody,
		"Authorization", "Bearer sandbox-stolen",
		"X-Api-Key", "sandbox-xkey",
		"Api-Key", "sandbox-azure",
		"Cookie", "session=sandbox",
		"Proxy-Authorization", "Basic c2FuZGJveA==",
		"X-Goog-Api-Key", "sandbox-goog",
		"Openai-Organization", "org-sandbox",
		"Openai-Project", "proj-sandbox",
		"X-Forwarded-For", "10.0.0.1",
		"Anthropic-Beta", "tools-2024",
	)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	got := h.oa.Requests()[0].Header
	for _, k := range []string{"X-Api-Key", "Api-Key", "Cookie", "Proxy-Authorization", "X-Goog-Api-Key", "Openai-Organization", "Openai-Project", "X-Forwarded-For"} {
		if v := got.Get(k); v != "" {
			t.Errorf("upstream got %s: %q", k, v)
		}
	}
	if got.Get("Authorization") != "Bearer "+canaryOA {
		t.Errorf("upstream Authorization is not the router's key")
	}
	if got.Get("Anthropic-Beta") != "tools-2024" {
		t.Errorf("non-credential header Anthropic-Beta was not forwarded")
	}
	var all bytes.Buffer
	_ = got.Write(&all)
	if strings.Contains(all.String(), "sandbox-") {
		t.Errorf("a sandbox credential reached the provider:\n%s", all.String())
	}
}

func TestOutboundAccountHeadersStripped(t *testing.T) {
	for _, kind := range []string{"openai", "anthropic"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t, nil)
			h.oa.EchoKeyHeader, h.an.EchoKeyHeader = true, true
			path, body := "/v1/chat/completions", chatBody
			if kind == "anthropic" {
				path, body = "/v1/messages", claudeBody
			}
			status, hdr, _ := h.post(path, body)
			if status != 200 {
				t.Fatalf("status %d", status)
			}
			for _, k := range []string{"Set-Cookie", "Openai-Organization", "Openai-Project", "Anthropic-Organization-Id", "Request-Id", "X-Request-Id", "X-Ratelimit-Debug"} {
				if v := hdr.Get(k); v != "" {
					t.Errorf("client got %s: %q", k, v)
				}
			}
			if hdr.Get("X-Ratelimit-Remaining-Requests") != "99" {
				t.Errorf("harmless rate-limit header was not passed through")
			}
		})
	}
}

func TestProviderErrorEchoingKeyIsRedacted(t *testing.T) {
	h := newHarness(t, nil)
	h.oa.EchoKeyInError = true
	h.oa.Push(routertest.Behavior{Status: 401})
	status, _, body := h.post("/v1/chat/completions", chatBody)
	if status != 401 {
		t.Fatalf("status %d", status)
	}
	if bytes.Contains(body, []byte(canaryOA)) || !bytes.Contains(body, []byte("[redacted]")) {
		t.Errorf("error body = %s", body)
	}
}

// TestCanaryKeyNeverLeaks runs every kind of request, success and failure,
// and then searches everything observable outside the upstream connection
// — logs, responses (headers and bodies), usage rows, metrics — for the
// keys' bytes.
func TestCanaryKeyNeverLeaks(t *testing.T) {
	h := newHarness(t, nil)
	h.oa.EchoKeyHeader, h.an.EchoKeyHeader = true, true
	h.oa.EchoKeyInError, h.an.EchoKeyInError, h.ob.EchoKeyInError, h.an2.EchoKeyInError = true, true, true, true
	h.keys.set("oa", router.Key{ID: "oa-1", Secret: []byte(canaryOA)}, router.Key{ID: "oa-2", Secret: []byte(canaryOA2)})

	h.oa.Push(routertest.Behavior{Status: 429}, routertest.Behavior{Status: 500}, routertest.Behavior{Status: 400})
	h.an.Push(routertest.Behavior{Status: 529}, routertest.Behavior{Status: 401}, routertest.Behavior{DieMidStream: true})
	h.ob.Push(routertest.Behavior{Status: 503}, routertest.Behavior{Drop: true})
	reqs := []struct{ path, body string }{
		{"/v1/chat/completions", chatBody},
		{"/v1/chat/completions", chatBody},
		{"/v1/chat/completions", chatStreamBody},
		{"/v1/chat/completions", chatBody},
		{"/v1/responses", `{"model":"default","input":"hi"}`},
		{"/v1/responses", `{"model":"default","input":"hi","stream":true}`},
		{"/v1/embeddings", `{"model":"default","input":"hi"}`},
		{"/v1/messages", claudeBody},
		{"/v1/messages", claudeBody},
		{"/v1/messages", `{"model":"claude","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/messages/count_tokens", `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/messages", `{"model":"claude","max_tokens":20,"tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[]}`},
		{"/v1/chat/completions", `{"model":"nope"}`},
	}
	h.truncatedOK = true
	var statuses []int
	for _, r := range reqs {
		status, _, _ := h.post(r.path, r.body)
		statuses = append(statuses, status)
	}
	// The run must have exercised failures as well as successes.
	var ok, failed int
	for _, s := range statuses {
		if s == 200 {
			ok++
		} else {
			failed++
		}
	}
	if ok < 5 || failed < 3 {
		t.Fatalf("statuses %v: want a mix of successes and failures", statuses)
	}
	h.closeRouter()
	var everything bytes.Buffer
	everything.WriteString(h.logs.String())
	everything.WriteString(h.seen.String())
	for _, rec := range h.usage.records() {
		fmt.Fprintf(&everything, "%+v\n", rec)
	}
	mfs, _ := h.r.Registry().Gather()
	for _, mf := range mfs {
		everything.WriteString(mf.String())
	}
	if len(mfs) < 5 {
		t.Errorf("only %d metric families gathered", len(mfs))
	}
	if !strings.Contains(h.logs.String(), `"msg":"request"`) || !strings.Contains(h.seen.String(), "Hello from the fake") {
		t.Fatalf("the run produced no logs or responses to search")
	}
	for _, k := range allCanaries {
		for _, probe := range []string{k, k[len(k)-12:]} {
			if i := strings.Index(everything.String(), probe); i >= 0 {
				lo := max(0, i-200)
				t.Errorf("key bytes %q found: ...%s...", probe, everything.String()[lo:min(len(everything.String()), i+50)])
			}
		}
	}
}

// TestExhaustedChainHeadersCarryNoKey: when every attempt fails, the
// chain answers with the last provider error; its headers are checked for
// key bytes like those of any other answer (review F7).
func TestExhaustedChainHeadersCarryNoKey(t *testing.T) {
	for _, tc := range []struct{ name, path, body string }{
		{"same dialect", "/v1/chat/completions", `{"model":"solo","messages":[{"role":"user","content":"hi"}]}`},
		{"translated", "/v1/messages", `{"model":"solo","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.oa.EchoKeyHeader = true
			for range 20 {
				h.oa.Push(routertest.Behavior{Status: 503})
			}
			status, hdr, _ := h.post(tc.path, tc.body, "anthropic-version", "2023-06-01")
			if status != 503 || hdr.Get("X-Ratelimit-Remaining-Requests") != "99" {
				t.Fatalf("status %d, rate-limit header %q: want the provider's 503 with its clean headers", status, hdr.Get("X-Ratelimit-Remaining-Requests"))
			}
			for k, vs := range hdr {
				for _, v := range vs {
					if strings.Contains(v, canaryOA) {
						t.Errorf("key in response header %s", k)
					}
				}
			}
		})
	}
}

// TestEscapedKeyInErrorBodyRedacted: a provider echoing its key in an
// error body with JSON escapes (\u006b for 'k', \u002d for '-') must not
// hand the key to a client that decodes the body, same-dialect or
// translated (review F2).
func TestEscapedKeyInErrorBodyRedacted(t *testing.T) {
	esc := strings.NewReplacer("k", `\u006b`, "-", `\u002d`)
	ev := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key `+esc.Replace(r.Header.Get("X-Api-Key"))+`"}}`)
	}))
	t.Cleanup(ev.Close)
	h := newHarness(t, func(o *router.Options) {
		o.Providers["ev"] = router.Provider{Kind: router.KindAnthropic, BaseURL: ev.URL}
		o.Routes["evr"] = []router.Target{{Provider: "ev", Model: "claude-x"}}
	})
	h.keys.set("ev", router.Key{ID: "ev-1", Secret: []byte(canaryAN)})
	for _, tc := range []struct{ name, path, body string }{
		{"same dialect", "/v1/messages", `{"model":"evr","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`},
		{"translated", "/v1/chat/completions", `{"model":"evr","messages":[{"role":"user","content":"hi"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := h.post(tc.path, tc.body, "anthropic-version", "2023-06-01")
			var v struct {
				Error struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &v); err != nil || status != http.StatusUnauthorized {
				t.Fatalf("status %d body %s: %v", status, body, err)
			}
			if strings.Contains(string(body), canaryAN) || strings.Contains(v.Error.Message, canaryAN) {
				t.Errorf("the key reached the client: %s", body)
			}
			if v.Error.Message != "invalid x-api-key [redacted]" {
				t.Errorf("message = %q, want the provider's with the key redacted", v.Error.Message)
			}
		})
	}
}
