// Package routertest runs fake model providers on loopback that speak the
// real OpenAI and Anthropic wire formats (JSON bodies, SSE framing with
// "data: [DONE]", Anthropic event types, tool calls, error bodies) and can
// be scripted to be slow, fail, drop connections or answer 429 with
// Retry-After. Tests and benchmarks of the privacy router use them as
// upstreams; they record every request they receive.
package routertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kinds of fake provider.
const (
	OpenAI    = "openai"
	Anthropic = "anthropic"
)

// Behavior scripts one response. The zero value is a normal success.
type Behavior struct {
	// Status, when not 0 or 200, answers with this status and the
	// dialect's error body.
	Status int
	// RetryAfter is sent as the Retry-After header when set.
	RetryAfter string
	// Delay waits before sending headers (or until the client gives up).
	Delay time.Duration
	// Drop closes the connection without any response.
	Drop bool
	// DropAfterHeaders sends a 200 with headers, then closes the
	// connection before any body byte.
	DropAfterHeaders bool
	// DieMidStream closes the connection after the first SSE event.
	DieMidStream bool
}

// Received is one request the fake saw.
type Received struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
	// Model is the body's "model" field.
	Model string
}

// Provider is a fake provider listening on loopback.
type Provider struct {
	Kind string
	// URL is the base URL to configure: ".../v1" for OpenAI, the root for
	// Anthropic (as their real base URLs are written).
	URL string

	// Text is the assistant's answer (default "Hello from the fake").
	Text string
	// Chunks is how many stream deltas Text is split into (default 3).
	Chunks int
	// InputTokens and OutputTokens are reported in usage (default 11, 7).
	InputTokens, OutputTokens int
	// CachedTokens, when not 0, are input tokens read from the provider's
	// prompt cache, reported each provider's way: OpenAI counts them
	// within prompt_tokens (prompt_tokens_details.cached_tokens),
	// Anthropic apart from input_tokens (cache_read_input_tokens).
	CachedTokens int
	// EchoKeyHeader puts the received key into an otherwise allowed
	// response header, to prove the router strips it.
	EchoKeyHeader bool
	// EchoKeyInError puts the received key into error bodies.
	EchoKeyInError bool
	// NoRecord stops keeping received requests (benchmarks).
	NoRecord bool

	srv *http.Server
	ln  net.Listener

	mu     sync.Mutex
	script []Behavior
	reqs   []Received
}

// Start starts a fake provider of kind on 127.0.0.1.
func Start(kind string) (*Provider, error) { return StartAt(kind, "127.0.0.1:0") }

// StartAt starts a fake provider of kind on addr, which must be a loopback
// address.
func StartAt(kind, addr string) (*Provider, error) {
	if kind != OpenAI && kind != Anthropic {
		return nil, fmt.Errorf("routertest: unknown kind %q", kind)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("routertest: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("routertest: %s is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("routertest: listen: %w", err)
	}
	p := &Provider{Kind: kind, ln: ln, Text: "Hello from the fake", Chunks: 3, InputTokens: 11, OutputTokens: 7}
	p.URL = "http://" + ln.Addr().String()
	if kind == OpenAI {
		p.URL += "/v1"
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// TB is the part of testing.TB that New uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// New starts a fake provider and stops it when the test ends.
func New(t TB, kind string) *Provider {
	t.Helper()
	p, err := Start(kind)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// Close stops the fake.
func (p *Provider) Close() { _ = p.srv.Close() }

// Push appends behaviors used by the next requests, one each; once the
// script is empty every request succeeds.
func (p *Provider) Push(b ...Behavior) {
	p.mu.Lock()
	p.script = append(p.script, b...)
	p.mu.Unlock()
}

// Requests returns the requests received so far.
func (p *Provider) Requests() []Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Received(nil), p.reqs...)
}

// Reset forgets received requests and the script.
func (p *Provider) Reset() {
	p.mu.Lock()
	p.reqs, p.script = nil, nil
	p.mu.Unlock()
}

func (p *Provider) next() Behavior {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.script) == 0 {
		return Behavior{}
	}
	b := p.script[0]
	p.script = p.script[1:]
	return b
}

// request is the subset of a model request the fake looks at.
type request struct {
	Model         string            `json:"model"`
	Stream        bool              `json:"stream"`
	Tools         []json.RawMessage `json:"tools"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req request
	_ = json.Unmarshal(body, &req)
	p.mu.Lock()
	if !p.NoRecord {
		p.reqs = append(p.reqs, Received{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body, Model: req.Model})
	}
	p.mu.Unlock()

	key := r.Header.Get("X-Api-Key")
	if p.Kind == OpenAI {
		key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	b := p.next()
	if b.Delay > 0 {
		select {
		case <-time.After(b.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if b.Drop {
		hijackClose(w)
		return
	}
	h := w.Header()
	// Account identifiers a real provider sends; the router must strip them.
	h.Set("Set-Cookie", "__cf_bm=secretcookie; path=/")
	h.Set("Request-Id", "req_account_123")
	h.Set("X-Request-Id", "req_account_123")
	if p.Kind == OpenAI {
		h.Set("Openai-Organization", "org-fake123")
		h.Set("Openai-Project", "proj_fake123")
	} else {
		h.Set("Anthropic-Organization-Id", "0000-fake-org")
	}
	h.Set("X-Ratelimit-Remaining-Requests", "99")
	if p.EchoKeyHeader {
		h.Set("X-Ratelimit-Debug", "key="+key)
	}
	if b.RetryAfter != "" {
		h.Set("Retry-After", b.RetryAfter)
	}
	if b.Status != 0 && b.Status != http.StatusOK {
		msg := fmt.Sprintf("fake failure %d", b.Status)
		if p.EchoKeyInError {
			msg += " for key " + key
		}
		h.Set("Content-Type", "application/json")
		w.WriteHeader(b.Status)
		_, _ = w.Write(p.errorBody(b.Status, msg))
		return
	}
	if b.DropAfterHeaders {
		if req.Stream {
			h.Set("Content-Type", "text/event-stream")
		} else {
			h.Set("Content-Type", "application/json")
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		hijackClose(w)
		return
	}
	switch {
	case p.Kind == OpenAI && r.URL.Path == "/v1/chat/completions":
		p.chat(w, req, b)
	case p.Kind == OpenAI && r.URL.Path == "/v1/responses":
		p.responses(w, req, b)
	case p.Kind == OpenAI && r.URL.Path == "/v1/embeddings":
		writeJSON(w, map[string]any{
			"object": "list", "model": req.Model,
			"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.1, -0.2, 0.3}}},
			"usage": map[string]any{"prompt_tokens": p.InputTokens, "total_tokens": p.InputTokens},
		})
	case p.Kind == Anthropic && r.URL.Path == "/v1/messages":
		p.messages(w, req, b)
	case p.Kind == Anthropic && r.URL.Path == "/v1/messages/count_tokens":
		writeJSON(w, map[string]any{"input_tokens": p.InputTokens})
	default:
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write(p.errorBody(http.StatusNotFound, "no such path "+r.URL.Path))
	}
}

func hijackClose(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			_ = c.Close()
		}
	}
}

func (p *Provider) errorBody(status int, msg string) []byte {
	var v any
	if p.Kind == Anthropic {
		typ := "invalid_request_error"
		switch {
		case status == 429:
			typ = "rate_limit_error"
		case status == 529:
			typ = "overloaded_error"
		case status >= 500:
			typ = "api_error"
		}
		v = map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}}
	} else {
		typ, code := "invalid_request_error", any(nil)
		switch {
		case status == 429:
			typ, code = "requests", "rate_limit_exceeded"
		case status >= 500:
			typ = "server_error"
		}
		v = map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}}
	}
	b, _ := json.Marshal(v)
	return b
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// pieces splits Text into Chunks parts.
func (p *Provider) pieces() []string {
	n := max(p.Chunks, 1)
	t := p.Text
	out := make([]string, 0, n)
	size := (len(t) + n - 1) / n
	for len(t) > 0 {
		k := min(size, len(t))
		out = append(out, t[:k])
		t = t[k:]
	}
	return out
}

type sse struct {
	w   http.ResponseWriter
	f   http.Flusher
	buf bytes.Buffer
}

func newSSE(w http.ResponseWriter) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	return &sse{w: w, f: f}
}

func (s *sse) event(name string, v any) {
	s.buf.Reset()
	if name != "" {
		s.buf.WriteString("event: " + name + "\n")
	}
	s.buf.WriteString("data: ")
	switch x := v.(type) {
	case string:
		s.buf.WriteString(x)
	default:
		b, _ := json.Marshal(x)
		s.buf.Write(b)
	}
	s.buf.WriteString("\n\n")
	_, _ = s.w.Write(s.buf.Bytes())
	if s.f != nil {
		s.f.Flush()
	}
}

func (p *Provider) usageOpenAI() map[string]any {
	u := map[string]any{"prompt_tokens": p.InputTokens, "completion_tokens": p.OutputTokens, "total_tokens": p.InputTokens + p.OutputTokens}
	if p.CachedTokens != 0 {
		u["prompt_tokens_details"] = map[string]any{"cached_tokens": p.CachedTokens}
	}
	return u
}

// usageAnthropic is an Anthropic usage object with output tokens out.
func (p *Provider) usageAnthropic(out int) map[string]any {
	u := map[string]any{"input_tokens": p.InputTokens, "output_tokens": out}
	if p.CachedTokens != 0 {
		u["cache_read_input_tokens"] = p.CachedTokens
	}
	return u
}

func (p *Provider) chat(w http.ResponseWriter, req request, b Behavior) {
	const id, created = "chatcmpl-fake1", 1700000000
	toolCall := map[string]any{"index": 0, "id": "call_fake1", "type": "function", "function": map[string]any{"name": "get_weather", "arguments": `{"city":"Paris"}`}}
	if !req.Stream {
		msg := map[string]any{"role": "assistant", "content": p.Text, "refusal": nil}
		finish := "stop"
		if len(req.Tools) > 0 {
			tc := map[string]any{"id": "call_fake1", "type": "function", "function": toolCall["function"]}
			msg = map[string]any{"role": "assistant", "content": nil, "refusal": nil, "tool_calls": []any{tc}}
			finish = "tool_calls"
		}
		writeJSON(w, map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish, "logprobs": nil}},
			"usage":   p.usageOpenAI(),
		})
		return
	}
	s := newSSE(w)
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": nil}}}
	}
	s.event("", chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	if b.DieMidStream {
		hijackClose(w)
		return
	}
	finish := "stop"
	if len(req.Tools) > 0 {
		s.event("", chunk(map[string]any{"tool_calls": []any{toolCall}}, nil))
		finish = "tool_calls"
	} else {
		for _, piece := range p.pieces() {
			s.event("", chunk(map[string]any{"content": piece}, nil))
		}
	}
	s.event("", chunk(map[string]any{}, finish))
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		s.event("", map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model, "choices": []any{}, "usage": p.usageOpenAI()})
	}
	s.event("", "[DONE]")
}

func (p *Provider) responses(w http.ResponseWriter, req request, b Behavior) {
	usage := map[string]any{"input_tokens": p.InputTokens, "output_tokens": p.OutputTokens, "total_tokens": p.InputTokens + p.OutputTokens,
		"input_tokens_details": map[string]any{"cached_tokens": 0}, "output_tokens_details": map[string]any{"reasoning_tokens": 0}}
	item := map[string]any{"type": "message", "id": "msg_fake1", "status": "completed", "role": "assistant",
		"content": []any{map[string]any{"type": "output_text", "text": p.Text, "annotations": []any{}}}}
	resp := func(status string, withOutput bool) map[string]any {
		out := []any{}
		if withOutput {
			out = []any{item}
		}
		r := map[string]any{"id": "resp_fake1", "object": "response", "created_at": 1700000000, "status": status, "model": req.Model,
			"output": out, "parallel_tool_calls": true, "tool_choice": "auto", "tools": []any{}}
		if status == "completed" {
			r["usage"] = usage
		}
		return r
	}
	if !req.Stream {
		writeJSON(w, resp("completed", true))
		return
	}
	s := newSSE(w)
	seq := 0
	ev := func(name string, v map[string]any) {
		v["type"] = name
		v["sequence_number"] = seq
		seq++
		s.event(name, v)
	}
	ev("response.created", map[string]any{"response": resp("in_progress", false)})
	if b.DieMidStream {
		hijackClose(w)
		return
	}
	for _, piece := range p.pieces() {
		ev("response.output_text.delta", map[string]any{"item_id": "msg_fake1", "output_index": 0, "content_index": 0, "delta": piece})
	}
	ev("response.completed", map[string]any{"response": resp("completed", true)})
}

func (p *Provider) messages(w http.ResponseWriter, req request, b Behavior) {
	const id = "msg_fake1"
	if !req.Stream {
		content := []any{map[string]any{"type": "text", "text": p.Text}}
		stop := "end_turn"
		if len(req.Tools) > 0 {
			content = []any{map[string]any{"type": "tool_use", "id": "toolu_fake1", "name": "get_weather", "input": map[string]any{"city": "Paris"}}}
			stop = "tool_use"
		}
		writeJSON(w, map[string]any{"id": id, "type": "message", "role": "assistant", "model": req.Model, "content": content,
			"stop_reason": stop, "stop_sequence": nil, "usage": p.usageAnthropic(p.OutputTokens)})
		return
	}
	s := newSSE(w)
	s.event("message_start", map[string]any{"type": "message_start", "message": map[string]any{"id": id, "type": "message", "role": "assistant",
		"model": req.Model, "content": []any{}, "stop_reason": nil, "stop_sequence": nil, "usage": p.usageAnthropic(1)}})
	if b.DieMidStream {
		hijackClose(w)
		return
	}
	stop := "end_turn"
	if len(req.Tools) > 0 {
		stop = "tool_use"
		s.event("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "tool_use", "id": "toolu_fake1", "name": "get_weather", "input": map[string]any{}}})
		s.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "input_json_delta", "partial_json": `{"city": `}})
		s.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "input_json_delta", "partial_json": `"Paris"}`}})
	} else {
		s.event("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
		s.event("ping", map[string]any{"type": "ping"})
		for _, piece := range p.pieces() {
			s.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": piece}})
		}
	}
	s.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	s.event("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": map[string]any{"output_tokens": p.OutputTokens}})
	s.event("message_stop", map[string]any{"type": "message_stop"})
}
