package router

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func FuzzTopFields(f *testing.F) {
	for _, s := range []string{
		`{"model":"a","messages":[{"role":"user","content":"x"}]}`,
		`{ "model" : "a" , "x" : {"model":"inner"}, "y":[1,"]",{"}":"{"}] }`,
		`{"\u006dodel":"a"}`,
		`{"model":"a","model":"b"}`,
		`{}`, `[]`, `"model"`, `{"a":1e10,"b":true,"c":null,"d":-0.5}`,
		`{"s":"esc \\\" \\\\ \n"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		fields, err := topFields(b, nil)
		var want map[string]json.RawMessage
		if json.Unmarshal(b, &want) != nil || want == nil { // null decodes into a nil map
			if err == nil {
				t.Fatalf("topFields accepted a non-object %q", b)
			}
			return
		}
		if err != nil {
			// Only duplicates may be refused in a valid object.
			if !bytes.Contains([]byte(err.Error()), []byte("duplicate")) {
				t.Fatalf("topFields(%q): %v", b, err)
			}
			return
		}
		if len(fields) != len(want) {
			t.Fatalf("topFields(%q) found %d fields, json %d", b, len(fields), len(want))
		}
		for _, f := range fields {
			k, s := string(f.name), f.val
			w, ok := want[k]
			if !ok {
				t.Fatalf("topFields(%q): field %q not in json's view", b, k)
			}
			if got := b[s.start:s.end]; !bytes.Equal(got, w) {
				t.Fatalf("topFields(%q)[%q] = %q, json %q", b, k, got, w)
			}
		}
		if s, ok := fields.get("model"); ok {
			out := replaceSpan(b, s, []byte(`"rewritten"`))
			var got map[string]json.RawMessage
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("rewrite of %q is not JSON: %q", b, out)
			}
			if string(got["model"]) != `"rewritten"` {
				t.Fatalf("rewrite of %q: model = %s", b, got["model"])
			}
			for k, v := range want {
				if k != "model" && !bytes.Equal(got[k], v) {
					t.Fatalf("rewrite of %q changed field %q", b, k)
				}
			}
		}
	})
}

func TestMeterExtractsUsage(t *testing.T) {
	cases := []struct {
		name    string
		d       dialect
		sse     bool
		chunks  []string
		in, out int64
		seen    bool
	}{
		{"openai chat body", dialectOpenAI, false, []string{`{"id":"x","usage":{"prompt_tokens":5,`, `"completion_tokens":9}}`}, 5, 9, true},
		{"responses body", dialectOpenAI, false, []string{`{"output":[{"usage":"decoy"}],"usage":{"input_tokens":3,"output_tokens":4}}`}, 3, 4, true},
		{"anthropic body with cache", dialectAnthropic, false, []string{`{"usage":{"input_tokens":3,"cache_read_input_tokens":10,"output_tokens":4}}`}, 13, 4, true},
		{"openai stream final chunk split across reads", dialectOpenAI, true, []string{"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"us", "age\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\r\n\r\ndata: [DONE]\n\n"}, 7, 2, true},
		{"responses stream completed", dialectOpenAI, true, []string{"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":8,\"output_tokens\":6}}}\n\n"}, 8, 6, true},
		{"anthropic stream start and delta", dialectAnthropic, true, []string{
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20,\"output_tokens\":1}}}\n\n",
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n"}, 20, 42, true},
		{"stream without usage", dialectOpenAI, true, []string{"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"}, 0, 0, false},
		{"usage in a text delta is not usage", dialectOpenAI, true, []string{"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\"\"}}]}\n\n"}, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := meter{dialect: tc.d, sse: tc.sse}
			for _, c := range tc.chunks {
				m.Write([]byte(c))
			}
			m.finish()
			if m.seen != tc.seen || m.in != tc.in || m.out != tc.out {
				t.Errorf("got seen=%v in=%d out=%d, want %v %d %d", m.seen, m.in, m.out, tc.seen, tc.in, tc.out)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	r := Retry{Initial: 500 * time.Millisecond, Max: 5 * time.Second}
	cases := []struct {
		pass   int
		jitter float64
		want   time.Duration
	}{
		{0, 0, 250 * time.Millisecond},
		{0, 0.999999, 500 * time.Millisecond},
		{1, 0, 500 * time.Millisecond},
		{3, 0, 2 * time.Second},
		{4, 1, 5 * time.Second},
		{10, 0, 2500 * time.Millisecond},
		{60, 1, 5 * time.Second},
	}
	for _, tc := range cases {
		if got := backoff(r, tc.pass, tc.jitter); got.Round(time.Millisecond) != tc.want {
			t.Errorf("backoff(pass %d, jitter %v) = %v, want %v", tc.pass, tc.jitter, got, tc.want)
		}
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"seconds", http.Header{"Retry-After": {"7"}}, 7 * time.Second},
		{"fractional", http.Header{"Retry-After": {"1.5"}}, 1500 * time.Millisecond},
		{"http date", http.Header{"Retry-After": {now.Add(30 * time.Second).Format(http.TimeFormat)}}, 30 * time.Second},
		{"date in the past", http.Header{"Retry-After": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0},
		{"milliseconds header wins", http.Header{"Retry-After": {"7"}, "Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0},
		{"negative", http.Header{"Retry-After": {"-5"}}, 0},
		{"none", http.Header{}, 0},
	}
	for _, tc := range cases {
		if got := retryAfter(tc.h, now); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBucketDebtDelaysFollowingRequests(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newBucket(600, t0) // 10 per second
	if d := b.wait(t0, 600); d != 0 {
		t.Fatalf("full bucket waits %v", d)
	}
	b.take(600)
	b.give(t0, -300) // reconciled: 300 more than estimated
	if d := b.wait(t0, 100); d != 40*time.Second {
		t.Errorf("wait after debt = %v, want 40s", d)
	}
	if d := b.wait(t0.Add(40*time.Second), 100); d != 0 {
		t.Errorf("wait after refill = %v, want 0", d)
	}
	b.give(t0.Add(time.Hour), 1e9)
	if b.tokens != 600 {
		t.Errorf("bucket above capacity: %v", b.tokens)
	}
}

func TestEndpointURL(t *testing.T) {
	r, err := New(Options{
		Keys: nil,
	})
	if err == nil || r != nil {
		t.Fatalf("New without a key source succeeded")
	}
	cases := []struct{ kind, base, path, want string }{
		{KindOpenAI, "https://api.openai.com/v1", "/v1/chat/completions", "https://api.openai.com/v1/chat/completions"},
		{KindOpenAI, "http://127.0.0.1:11434/v1/", "/v1/embeddings", "http://127.0.0.1:11434/v1/embeddings"},
		{KindOpenAI, "https://integrate.api.nvidia.com/v1", "/v1/responses", "https://integrate.api.nvidia.com/v1/responses"},
		{KindAnthropic, "https://api.anthropic.com", "/v1/messages", "https://api.anthropic.com/v1/messages"},
		{KindAnthropic, "https://proxy.example/anthropic/v1", "/v1/messages/count_tokens", "https://proxy.example/anthropic/v1/messages/count_tokens"},
	}
	for _, tc := range cases {
		r, err := New(Options{Providers: map[string]Provider{"p": {Kind: tc.kind, BaseURL: tc.base}}, Keys: noKeys{}})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.upstreams["p"].endpointURL(tc.path); got != tc.want {
			t.Errorf("%s %s + %s = %s, want %s", tc.kind, tc.base, tc.path, got, tc.want)
		}
		_ = r.Close()
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		o    Options
	}{
		{"unknown kind", Options{Providers: map[string]Provider{"p": {Kind: "gemini", BaseURL: "https://x"}}}},
		{"credentials in base url", Options{Providers: map[string]Provider{"p": {Kind: KindOpenAI, BaseURL: "https://u:sk-secret@x/v1"}}}},
		{"not http", Options{Providers: map[string]Provider{"p": {Kind: KindOpenAI, BaseURL: "file:///etc"}}}},
		{"route to unknown provider", Options{Routes: map[string][]Target{"r": {{Provider: "nope", Model: "m"}}}}},
		{"empty route", Options{Routes: map[string][]Target{"r": {}}}},
	}
	for _, tc := range cases {
		tc.o.Keys = noKeys{}
		if r, err := New(tc.o); err == nil {
			_ = r.Close()
			t.Errorf("%s: New succeeded", tc.name)
		} else if bytes.Contains([]byte(err.Error()), []byte("sk-secret")) {
			t.Errorf("%s: error repeats the credential: %v", tc.name, err)
		}
	}
}

type noKeys struct{}

func (noKeys) Keys(string) []Key { return nil }

func TestHardenProcess(t *testing.T) {
	if _, err := HardenProcess(); err != nil {
		t.Fatalf("HardenProcess: %v", err)
	}
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil || d != 0 {
		t.Errorf("dumpable = %d (%v), want 0", d, err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &rl); err != nil || rl.Cur != 0 || rl.Max != 0 {
		t.Errorf("RLIMIT_CORE = %+v (%v), want 0/0", rl, err)
	}
}
