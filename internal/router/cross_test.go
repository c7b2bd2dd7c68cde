package router_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/routertest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// Cross-dialect routes of these tests, besides the harness's:
//
//	claude:  an/claude-a, an2/claude-b  (an OpenAI SDK is translated)
//	solo:    oa/gpt-a                   (an Anthropic SDK is translated)
//	anfirst: an/claude-a, oa/gpt-a      (Anthropic SDK: same dialect, then translated)
func crossHarness(t *testing.T) *harness {
	return newHarness(t, func(o *router.Options) {
		o.Routes["anfirst"] = []router.Target{{Provider: "an", Model: "claude-a"}, {Provider: "oa", Model: "gpt-a"}}
		o.Prices = map[string]router.Price{"claude-a": {Input: 3, Output: 15}, "gpt-a": {Input: 2, Output: 8}}
	})
}

// upstreamBody decodes the last request a fake received.
func upstreamBody(t *testing.T, p *routertest.Provider) map[string]any {
	t.Helper()
	reqs := p.Requests()
	if len(reqs) == 0 {
		t.Fatal("upstream got no request")
	}
	var v map[string]any
	if err := json.Unmarshal(reqs[len(reqs)-1].Body, &v); err != nil {
		t.Fatalf("upstream body %s: %v", reqs[len(reqs)-1].Body, err)
	}
	return v
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpenAISDKOnAnthropicTarget(t *testing.T) {
	h := crossHarness(t)
	c := h.openai()
	ctx := ctxT(t)
	var resp *http.Response
	got, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "claude",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("hi")},
	}, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got.Choices[0].Message.Content != "Hello from the fake" || got.Choices[0].FinishReason != "stop" || got.Object != "chat.completion" {
		t.Errorf("completion = %+v", got)
	}
	if got.Usage.PromptTokens != 11 || got.Usage.CompletionTokens != 7 || got.Usage.TotalTokens != 18 {
		t.Errorf("usage = %+v", got.Usage)
	}
	checkRouteHeaders(t, resp, "claude", "an/claude-a", "1")
	reqs := h.an.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/messages" || reqs[0].Header.Get("X-Api-Key") != canaryAN || reqs[0].Header.Get("Authorization") != "" || reqs[0].Header.Get("Anthropic-Version") == "" {
		t.Fatalf("upstream request: %d requests, path %q, key set %v", len(reqs), reqs[0].Path, reqs[0].Header.Get("X-Api-Key") == canaryAN)
	}
	body := upstreamBody(t, h.an)
	if body["model"] != "claude-a" || body["max_tokens"] != 4096.0 ||
		jsonOf(t, body["system"]) != `[{"text":"be brief","type":"text"}]` ||
		jsonOf(t, body["messages"]) != `[{"content":[{"text":"hi","type":"text"}],"role":"user"}]` {
		t.Errorf("upstream body = %s", reqs[0].Body)
	}

	// Streaming with usage.
	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "claude",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	acc, chunks := readChatStream(t, stream)
	if got := acc.Choices[0].Message.Content; got != "Hello from the fake" || acc.Choices[0].FinishReason != "stop" {
		t.Errorf("streamed content = %q finish %q", got, acc.Choices[0].FinishReason)
	}
	if chunks != 6 { // role, 3 deltas, finish, usage
		t.Errorf("got %d chunks, want 6", chunks)
	}
	if acc.Usage.PromptTokens != 11 || acc.Usage.CompletionTokens != 7 {
		t.Errorf("streamed usage = %+v", acc.Usage)
	}
	if upstreamBody(t, h.an)["stream"] != true {
		t.Errorf("upstream was not asked to stream")
	}

	// Streaming without the usage chunk: the client sees none, the ledger
	// still counts the provider's usage.
	stream = c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "claude",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	noUsage := openai.ChatCompletionAccumulator{}
	for stream.Next() {
		if stream.Current().JSON.Usage.Valid() {
			t.Errorf("usage chunk sent without include_usage")
		}
		noUsage.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil || noUsage.Choices[0].Message.Content != "Hello from the fake" {
		t.Fatalf("stream without usage: %v, content %q", err, noUsage.Choices[0].Message.Content)
	}

	// The ledger: every row with the provider's tokens and claude-a's price.
	recs := h.ledger(3)
	wantCost := (11*3 + 7*15) / 1e6
	for _, r := range recs {
		if r.Route != "claude" || r.Provider != "an" || r.Model != "claude-a" || r.TokensIn != 11 || r.TokensOut != 7 || r.Status != 200 || r.Attempts != 1 ||
			math.Abs(r.CostUSD-wantCost) > 1e-12 || r.Error != "" {
			t.Errorf("usage record = %+v, want 11/7 tokens costing %g", r, wantCost)
		}
	}
}

func TestOpenAISDKToolRoundTripOnAnthropicTarget(t *testing.T) {
	h := crossHarness(t)
	c := h.openai()
	ctx := ctxT(t)
	params := openai.ChatCompletionNewParams{
		Model:    "claude",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather in Paris?")},
		Tools:    []openai.ChatCompletionToolUnionParam{weatherTool()},
	}
	got, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	tc := got.Choices[0].Message.ToolCalls
	if len(tc) != 1 || tc[0].ID != "toolu_fake1" || tc[0].Function.Name != "get_weather" || tc[0].Function.Arguments != `{"city":"Paris"}` || got.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("tool calls = %+v finish %q", tc, got.Choices[0].FinishReason)
	}
	if jsonOf(t, upstreamBody(t, h.an)["tools"]) != `[{"input_schema":{"properties":{"city":{"type":"string"}},"type":"object"},"name":"get_weather"}]` {
		t.Errorf("upstream tools = %s", h.an.Requests()[0].Body)
	}

	// Streamed tool call: arguments arrive in pieces.
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	acc, _ := readChatStream(t, stream)
	stc := acc.Choices[0].Message.ToolCalls
	if len(stc) != 1 || stc[0].ID != "toolu_fake1" || stc[0].Function.Name != "get_weather" || stc[0].Function.Arguments != `{"city": "Paris"}` || acc.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("streamed tool calls = %+v finish %q", stc, acc.Choices[0].FinishReason)
	}

	// The round trip: the call and its result go back to the provider.
	params.Messages = append(params.Messages, got.Choices[0].Message.ToParam(), openai.ToolMessage("sunny, 21°C", tc[0].ID))
	if _, err := c.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("chat with tool result: %v", err)
	}
	msgs := jsonOf(t, upstreamBody(t, h.an)["messages"])
	want := `[{"content":[{"text":"weather in Paris?","type":"text"}],"role":"user"},` +
		`{"content":[{"id":"toolu_fake1","input":{"city":"Paris"},"name":"get_weather","type":"tool_use"}],"role":"assistant"},` +
		`{"content":[{"content":"sunny, 21°C","tool_use_id":"toolu_fake1","type":"tool_result"}],"role":"user"}]`
	if msgs != want {
		t.Errorf("upstream messages\n got %s\nwant %s", msgs, want)
	}
}

func TestAnthropicSDKOnOpenAITarget(t *testing.T) {
	h := crossHarness(t)
	c := h.anthropic()
	ctx := ctxT(t)
	var resp *http.Response
	msg, err := c.Messages.New(ctx, anthropic.MessageNewParams{
		Model:     "solo",
		MaxTokens: 100,
		System:    []anthropic.TextBlockParam{{Text: "be brief"}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}, aoption.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "Hello from the fake" || msg.StopReason != "end_turn" || msg.Usage.InputTokens != 11 || msg.Usage.OutputTokens != 7 {
		t.Errorf("message = %+v", msg)
	}
	checkRouteHeaders(t, resp, "solo", "oa/gpt-a", "1")
	reqs := h.oa.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/chat/completions" || reqs[0].Header.Get("Authorization") != "Bearer "+canaryOA || reqs[0].Header.Get("X-Api-Key") != "" || reqs[0].Query != "" {
		t.Fatalf("upstream request: %d, path %q, query %q", len(reqs), reqs[0].Path, reqs[0].Query)
	}
	if got := string(reqs[0].Body); got != `{"model":"gpt-a","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":100}` {
		t.Errorf("upstream body = %s", got)
	}

	stream := c.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
		Model:     "solo",
		MaxTokens: 100,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	acc := readMessageStream(t, stream)
	if len(acc.Content) != 1 || acc.Content[0].Text != "Hello from the fake" || acc.StopReason != "end_turn" || acc.Usage.InputTokens != 11 || acc.Usage.OutputTokens != 7 {
		t.Errorf("streamed message = %+v", acc)
	}
	if so := upstreamBody(t, h.oa)["stream_options"]; jsonOf(t, so) != `{"include_usage":true}` {
		t.Errorf("upstream stream_options = %v, want the usage chunk asked for", so)
	}
	recs := h.ledger(2)
	wantCost := (11*2 + 7*8) / 1e6
	for _, r := range recs {
		if r.Route != "solo" || r.Provider != "oa" || r.Model != "gpt-a" || r.TokensIn != 11 || r.TokensOut != 7 || math.Abs(r.CostUSD-wantCost) > 1e-12 {
			t.Errorf("usage record = %+v", r)
		}
	}
}

func TestAnthropicSDKToolRoundTripOnOpenAITarget(t *testing.T) {
	h := crossHarness(t)
	c := h.anthropic()
	ctx := ctxT(t)
	params := anthropicWeatherParams("solo")
	msg, err := c.Messages.New(ctx, params)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" || msg.Content[0].ID != "call_fake1" || msg.Content[0].Name != "get_weather" ||
		string(msg.Content[0].Input) != `{"city":"Paris"}` || msg.StopReason != "tool_use" {
		t.Fatalf("tool use = %+v stop %q", msg.Content, msg.StopReason)
	}
	if tools := jsonOf(t, upstreamBody(t, h.oa)["tools"]); tools != `[{"function":{"name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"type":"object"}},"type":"function"}]` {
		t.Errorf("upstream tools = %s", tools)
	}

	stream := c.Messages.NewStreaming(ctx, params)
	acc := readMessageStream(t, stream)
	if len(acc.Content) != 1 || acc.Content[0].Type != "tool_use" || acc.Content[0].ID != "call_fake1" || string(acc.Content[0].Input) != `{"city":"Paris"}` || acc.StopReason != "tool_use" {
		t.Errorf("streamed tool use = %+v stop %q", acc.Content, acc.StopReason)
	}

	params.Messages = append(params.Messages, msg.ToParam(),
		anthropic.NewUserMessage(anthropic.NewToolResultBlock(msg.Content[0].ID, "sunny", false)))
	if _, err := c.Messages.New(ctx, params); err != nil {
		t.Fatalf("messages with tool result: %v", err)
	}
	msgs := jsonOf(t, upstreamBody(t, h.oa)["messages"])
	want := `[{"content":"weather?","role":"user"},` +
		`{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{\"city\":\"Paris\"}","name":"get_weather"},"id":"call_fake1","type":"function"}]},` +
		`{"content":"sunny","role":"tool","tool_call_id":"call_fake1"}]`
	if msgs != want {
		t.Errorf("upstream messages\n got %s\nwant %s", msgs, want)
	}
}

func TestCrossDialectFallback(t *testing.T) {
	t.Run("anthropic SDK, anthropic target 529, openai target serves", func(t *testing.T) {
		h := crossHarness(t)
		h.an.Push(routertest.Behavior{Status: 529})
		var resp *http.Response
		ac := h.anthropic()
		msg, err := ac.Messages.New(ctxT(t), anthropic.MessageNewParams{
			Model: "anfirst", MaxTokens: 50,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
		}, aoption.WithResponseInto(&resp))
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		if msg.Content[0].Text != "Hello from the fake" {
			t.Errorf("message = %+v", msg)
		}
		checkRouteHeaders(t, resp, "anfirst", "oa/gpt-a", "2")
		if len(h.an.Requests()) != 1 || len(h.oa.Requests()) != 1 {
			t.Errorf("requests: an %d, oa %d", len(h.an.Requests()), len(h.oa.Requests()))
		}
	})
	t.Run("openai SDK streaming, translated target 500, next translated target serves", func(t *testing.T) {
		h := crossHarness(t)
		h.an.Push(routertest.Behavior{Status: 500})
		var resp *http.Response
		oc := h.openai()
		stream := oc.Chat.Completions.NewStreaming(ctxT(t), openai.ChatCompletionNewParams{
			Model:    "claude",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		}, option.WithResponseInto(&resp))
		acc, _ := readChatStream(t, stream)
		if acc.Choices[0].Message.Content != "Hello from the fake" {
			t.Errorf("content = %q", acc.Choices[0].Message.Content)
		}
		checkRouteHeaders(t, resp, "claude", "an2/claude-b", "2")
	})
	t.Run("every translated target fails: the last error in the client's dialect", func(t *testing.T) {
		h := crossHarness(t)
		h.an.Push(routertest.Behavior{Status: 529})
		h.an2.Push(routertest.Behavior{Status: 529}, routertest.Behavior{Status: 529}, routertest.Behavior{Status: 529})
		h.an.Push(routertest.Behavior{Status: 529}, routertest.Behavior{Status: 529})
		status, hdr, body := h.post("/v1/chat/completions", `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`)
		if status != 529 || hdr.Get("Content-Type") != "application/json" ||
			string(body) != `{"error":{"code":null,"message":"fake failure 529","param":null,"type":"server_error"}}` {
			t.Errorf("status %d type %q body %s", status, hdr.Get("Content-Type"), body)
		}
	})
	t.Run("a client error of a translated target is final, in the client's dialect", func(t *testing.T) {
		h := crossHarness(t)
		h.oa.Push(routertest.Behavior{Status: 400})
		ac := h.anthropic()
		_, err := ac.Messages.New(ctxT(t), anthropic.MessageNewParams{
			Model: "solo", MaxTokens: 50,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
		})
		var aerr *anthropic.Error
		if !errors.As(err, &aerr) || aerr.StatusCode != 400 ||
			aerr.RawJSON() != `{"error":{"message":"fake failure 400","type":"invalid_request_error"},"type":"error"}` {
			t.Errorf("err = %v", err)
		}
		if len(h.oa.Requests()) != 1 {
			t.Errorf("a 400 was retried: %d requests", len(h.oa.Requests()))
		}
	})
}

func TestTranslatedStreamDoesNotFallBackAfterFirstByte(t *testing.T) {
	h := crossHarness(t)
	h.an.Push(routertest.Behavior{DieMidStream: true})
	h.truncatedOK = true
	status, _, body := h.post("/v1/chat/completions", `{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	want := `data: {"id":"msg_fake1","object":"chat.completion.chunk","created":1773144000,"model":"claude-a","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}` + "\n\n"
	if status != 200 || string(body) != want {
		t.Errorf("status %d body %q, want the role chunk only", status, body)
	}
	if len(h.an2.Requests()) != 0 {
		t.Errorf("fell back after the first byte")
	}
}

func TestUntranslatableRequests(t *testing.T) {
	t.Run("n=2 skips the anthropic target for the openai one", func(t *testing.T) {
		h := crossHarness(t)
		status, hdr, body := h.post("/v1/chat/completions", `{"model":"mixed","n":2,"messages":[{"role":"user","content":"hi"}]}`)
		if status != 200 || hdr.Get("X-Clawcage-Target") != "oa/gpt-a" || hdr.Get("X-Clawcage-Attempts") != "1" {
			t.Fatalf("status %d target %q attempts %q: %s", status, hdr.Get("X-Clawcage-Target"), hdr.Get("X-Clawcage-Attempts"), body)
		}
		if len(h.an.Requests()) != 0 {
			t.Errorf("the ineligible target was called")
		}
		if !strings.Contains(h.logs.String(), `"msg":"target skipped: request cannot be translated"`) {
			t.Errorf("no log line for the skipped target")
		}
	})
	t.Run("openai SDK, no eligible target: 400 naming field and route", func(t *testing.T) {
		h := crossHarness(t)
		oc := h.openai()
		_, err := oc.Chat.Completions.New(ctxT(t), openai.ChatCompletionNewParams{
			Model:    "claude",
			N:        openai.Int(2),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		var oerr *openai.Error
		if !errors.As(err, &oerr) || oerr.StatusCode != 400 || oerr.Type != "invalid_request_error" || oerr.Code != "unsupported_parameter" || oerr.Param != "n" ||
			!strings.Contains(oerr.Message, "route claude") || !strings.Contains(oerr.Message, "n: Anthropic answers with one choice only") {
			t.Errorf("err = %v", err)
		}
		if len(h.an.Requests())+len(h.an2.Requests()) != 0 {
			t.Errorf("an untranslatable request reached a provider")
		}
		if n := counterValue(t, h, "clawcage_router_admission_refusals_total", "reason", "untranslatable"); n != 1 {
			t.Errorf("untranslatable refusals counted %v times, want 1", n)
		}
	})
	t.Run("anthropic SDK with thinking, openai-only route: 400 in anthropic's shape", func(t *testing.T) {
		h := crossHarness(t)
		ac := h.anthropic()
		_, err := ac.Messages.New(ctxT(t), anthropic.MessageNewParams{
			Model: "solo", MaxTokens: 2000,
			Thinking: anthropic.ThinkingConfigParamOfEnabled(1024),
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
		})
		var aerr *anthropic.Error
		if !errors.As(err, &aerr) || aerr.StatusCode != 400 || !strings.Contains(aerr.RawJSON(), `"invalid_request_error"`) ||
			!strings.Contains(aerr.RawJSON(), "route solo") || !strings.Contains(aerr.RawJSON(), "thinking: extended thinking") {
			t.Errorf("err = %v", err)
		}
		if len(h.oa.Requests()) != 0 {
			t.Errorf("an untranslatable request reached a provider")
		}
	})
}

// TestTranslatedRequestsKeepKeysInside: translated answers, errors and
// streams carry no key bytes, even from a provider that echoes its key.
func TestTranslatedRequestsKeepKeysInside(t *testing.T) {
	h := crossHarness(t)
	for _, p := range []*routertest.Provider{h.an, h.an2, h.oa} {
		p.EchoKeyHeader, p.EchoKeyInError = true, true
	}
	h.an.Push(routertest.Behavior{Status: 500})
	h.an2.Push(routertest.Behavior{Status: 400})
	h.oa.Push(routertest.Behavior{Status: 429})
	reqs := []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/messages", `{"model":"solo","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/messages", `{"model":"solo","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
	}
	statuses := ""
	for _, r := range reqs {
		status, _, _ := h.post(r.path, r.body)
		statuses += " " + http.StatusText(status)
	}
	if statuses != " Bad Request OK OK OK" {
		t.Errorf("statuses:%s", statuses)
	}
	h.closeRouter()
	for _, c := range allCanaries {
		if strings.Contains(h.seen.String(), c) || strings.Contains(h.logs.String(), c) {
			t.Errorf("key %q… reached the client or the logs", c[:12])
		}
	}
	if !strings.Contains(h.seen.String(), "fake failure 400 for key [redacted]") {
		t.Errorf("the provider's (redacted) error message did not reach the client")
	}
}

// TestTranslatedCacheUsage: cached input tokens, reported each provider's
// way, reach the client in its own dialect's terms and the ledger as input
// tokens.
func TestTranslatedCacheUsage(t *testing.T) {
	h := crossHarness(t)
	h.an.CachedTokens, h.oa.CachedTokens = 5, 5
	ctx := ctxT(t)

	// OpenAI SDK, Anthropic provider: 11 input + 5 cache reads = 16 prompt tokens, 5 cached.
	oc := h.openai()
	got, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "claude", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got.Usage.PromptTokens != 16 || got.Usage.PromptTokensDetails.CachedTokens != 5 || got.Usage.TotalTokens != 23 {
		t.Errorf("openai usage = %+v", got.Usage)
	}
	stream := oc.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "claude", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	acc, _ := readChatStream(t, stream)
	if acc.Usage.PromptTokens != 16 || acc.Usage.PromptTokensDetails.CachedTokens != 5 {
		t.Errorf("streamed openai usage = %+v", acc.Usage)
	}

	// Anthropic SDK, OpenAI provider: 11 prompt tokens of which 5 cached = 6 input + 5 cache reads.
	ac := h.anthropic()
	msg, err := ac.Messages.New(ctx, anthropic.MessageNewParams{
		Model: "solo", MaxTokens: 50, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if msg.Usage.InputTokens != 6 || msg.Usage.CacheReadInputTokens != 5 || msg.Usage.OutputTokens != 7 {
		t.Errorf("anthropic usage = %+v", msg.Usage)
	}
	astream := ac.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
		Model: "solo", MaxTokens: 50, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	amsg := readMessageStream(t, astream)
	if amsg.Usage.InputTokens != 6 || amsg.Usage.CacheReadInputTokens != 5 || amsg.Usage.OutputTokens != 7 {
		t.Errorf("streamed anthropic usage = %+v", amsg.Usage)
	}

	recs := h.ledger(4)
	for i, r := range recs { // in completion order: a stream's row may come after the next request's
		wantIn, wantCost := int64(16), (16*3+7*15)/1e6
		if r.Provider == "oa" {
			wantIn, wantCost = 11, (11*2+7*8)/1e6
		}
		if r.TokensIn != wantIn || r.TokensOut != 7 || math.Abs(r.CostUSD-wantCost) > 1e-12 {
			t.Errorf("usage record %d = %+v, want %d in, 7 out, $%g", i, r, wantIn, wantCost)
		}
	}
}

// counterValue is the value of the counter name whose label has value.
func counterValue(t *testing.T, h *harness, name, label, value string) float64 {
	t.Helper()
	mfs, err := h.r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestUntranslatableAnswerIsChargedAndFinal: an OpenAI-kind target whose
// answer cannot be translated (tool arguments that are not JSON) has been
// billed: the answer is final (a 502 in the client's dialect), charged at
// the provider's usage, not retried, and no cooldown for anyone (review F1).
// Arguments cut by the output limit are an answer (stop_reason max_tokens).
func TestUntranslatableAnswerIsChargedAndFinal(t *testing.T) {
	var calls atomic.Int64
	var finish atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"write","arguments":"{\"text\":\"Once upon a time"}}]},"finish_reason":"`+finish.Load().(string)+`"}],"usage":{"prompt_tokens":50,"completion_tokens":4096,"total_tokens":4146}}`)
	}))
	t.Cleanup(up.Close)
	h := newHarness(t, func(o *router.Options) {
		o.Providers["ev"] = router.Provider{Kind: router.KindOpenAI, BaseURL: up.URL + "/v1"}
		o.Routes["evr"] = []router.Target{{Provider: "ev", Model: "gpt-x"}}
		o.Prices = map[string]router.Price{"gpt-x": {Input: 2, Output: 8}}
	})
	body := `{"model":"evr","max_tokens":4096,"tool_choice":{"type":"tool","name":"write"},"tools":[{"name":"write","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"write a novel"}]}`

	finish.Store("stop")
	for i := range 4 {
		status, hdr, b := h.post("/v1/messages", body, "anthropic-version", "2023-06-01")
		if status != http.StatusBadGateway || hdr.Get("X-Clawcage-Target") != "ev/gpt-x" ||
			!strings.Contains(string(b), `"type":"api_error"`) || !strings.Contains(string(b), "could not be translated") {
			t.Fatalf("request %d: status %d target %q body %s", i, status, hdr.Get("X-Clawcage-Target"), b)
		}
	}
	if calls.Load() != 4 {
		t.Errorf("provider called %d times for 4 requests: an untranslatable answer was retried", calls.Load())
	}
	// No cooldown: anyone's request to the target still goes through.
	finish.Store("length")
	status, _, b := h.post("/v1/messages", body, "anthropic-version", "2023-06-01")
	if status != 200 || !strings.Contains(string(b), `"stop_reason":"max_tokens"`) || !strings.Contains(string(b), `"input":{}`) {
		t.Fatalf("after 4 untranslatable answers: status %d body %s", status, b)
	}
	recs := h.ledger(5)
	want := (50*2 + 4096*8) / 1e6
	for _, r := range recs {
		if r.TokensIn != 50 || r.TokensOut != 4096 || math.Abs(r.CostUSD-want) > 1e-12 {
			t.Errorf("usage record %+v, want the provider's 50/4096 tokens at $%g", r, want)
		}
	}
	if recs[0].Status != http.StatusBadGateway || !strings.Contains(recs[0].Error, "translate response") {
		t.Errorf("ledger row of an untranslatable answer: status %d error %q", recs[0].Status, recs[0].Error)
	}
}

// TestUnknownUsageChargesTheEstimate: a generated answer whose usage never
// arrives is charged the up-front estimate, never $0 (review F6): a client
// leaving a translated stream before the provider's usage chunk, and a
// same-dialect OpenAI stream without include_usage.
func TestUnknownUsageChargesTheEstimate(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for i := range 50 {
			_, _ = fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word%d \"},\"finish_reason\":null}]}\n\n", i)
			f.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		_, _ = io.WriteString(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
		_, _ = io.WriteString(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":100000,\"completion_tokens\":4000,\"total_tokens\":104000}}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(slow.Close)
	h := newHarness(t, func(o *router.Options) {
		o.Providers["ev"] = router.Provider{Kind: router.KindOpenAI, BaseURL: slow.URL + "/v1"}
		o.Routes["evr"] = []router.Target{{Provider: "ev", Model: "gpt-x"}}
		o.Prices = map[string]router.Price{"gpt-x": {Input: 2, Output: 8}, "gpt-a": {Input: 2, Output: 8}}
	})
	h.truncatedOK = true

	// A translated stream the client leaves after 10 deltas.
	body := `{"model":"evr","max_tokens":4000,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for n := 0; n < 10; {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early: %v", err)
		}
		if strings.HasPrefix(l, "event: content_block_delta") {
			n++
		}
	}
	resp.Body.Close()

	// A same-dialect OpenAI stream without include_usage (the fake sends no usage then).
	sameBody := `{"model":"solo","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	if status, _, _ := h.post("/v1/chat/completions", sameBody); status != 200 {
		t.Fatalf("same-dialect stream: status %d", status)
	}

	recs := h.ledger(2)
	for _, r := range recs {
		b, out := body, int64(4000)
		if r.Route == "solo" {
			b, out = sameBody, 4096 // no limit: the default the estimate assumed
		}
		in := int64(len(b)+3) / 4
		want := (float64(in)*2 + float64(out)*8) / 1e6
		if r.TokensIn != in || r.TokensOut != out || math.Abs(r.CostUSD-want) > 1e-12 {
			t.Errorf("route %s: ledger %d/%d tokens $%g, want the estimate %d/%d $%g", r.Route, r.TokensIn, r.TokensOut, r.CostUSD, in, out, want)
		}
	}
}

// TestTranslatedRequestsCarryNoDialectHeaders: a translated request
// carries none of the client dialect's headers (review F9); an Anthropic
// target still gets the router's anthropic-version.
func TestTranslatedRequestsCarryNoDialectHeaders(t *testing.T) {
	h := crossHarness(t)
	status, _, body := h.post("/v1/chat/completions", `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`,
		"Anthropic-Beta", "context-1m-2025-08-07", "Anthropic-Version", "2099-01-01", "Openai-Beta", "assistants=v2", "User-Agent", "agent/1")
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	got := h.an.Requests()[0].Header
	if got.Get("Anthropic-Beta") != "" || got.Get("Openai-Beta") != "" || got.Get("Anthropic-Version") != "2023-06-01" || got.Get("User-Agent") != "agent/1" {
		t.Errorf("upstream headers: beta %q, openai-beta %q, version %q, user-agent %q", got.Get("Anthropic-Beta"), got.Get("Openai-Beta"), got.Get("Anthropic-Version"), got.Get("User-Agent"))
	}
	status, _, body = h.post("/v1/messages", `{"model":"solo","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
		"Anthropic-Beta", "x", "Anthropic-Version", "2023-06-01")
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	if got := h.oa.Requests()[0].Header; got.Get("Anthropic-Beta") != "" || got.Get("Anthropic-Version") != "" {
		t.Errorf("an OpenAI target got the Anthropic client's headers: %v", got)
	}
}
