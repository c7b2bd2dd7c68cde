package router_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	assestream "github.com/anthropics/anthropic-sdk-go/v2/packages/ssestream"
	"github.com/clawcage/clawcage/internal/router"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
)

func (h *harness) openai() openai.Client {
	return openai.NewClient(
		option.WithBaseURL(h.url+"/v1"),
		option.WithAPIKey("sandbox-has-no-key"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(h.client),
	)
}

func (h *harness) anthropic() anthropic.Client {
	return anthropic.NewClient(
		aoption.WithBaseURL(h.url),
		aoption.WithAPIKey("sandbox-has-no-key"),
		aoption.WithMaxRetries(0),
		aoption.WithHTTPClient(h.client),
	)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func checkRouteHeaders(t *testing.T, resp *http.Response, route, target, attempts string) {
	t.Helper()
	if resp == nil {
		t.Fatal("no response captured")
	}
	for k, want := range map[string]string{"X-Clawcage-Route": route, "X-Clawcage-Target": target, "X-Clawcage-Attempts": attempts} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func weatherTool() openai.ChatCompletionToolUnionParam {
	return openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name:       "get_weather",
		Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
	})
}

func TestOpenAISDKChat(t *testing.T) {
	h := newHarness(t, nil)
	c := h.openai()
	var resp *http.Response
	got, err := c.Chat.Completions.New(ctxT(t), openai.ChatCompletionNewParams{
		Model:    "default",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got.Choices[0].Message.Content != "Hello from the fake" {
		t.Errorf("content = %q", got.Choices[0].Message.Content)
	}
	if got.Usage.PromptTokens != 11 || got.Usage.CompletionTokens != 7 {
		t.Errorf("usage = %+v", got.Usage)
	}
	checkRouteHeaders(t, resp, "default", "oa/gpt-a", "1")
	reqs := h.oa.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	if reqs[0].Model != "gpt-a" {
		t.Errorf("upstream model = %q, want gpt-a", reqs[0].Model)
	}
	if got := reqs[0].Header.Get("Authorization"); got != "Bearer "+canaryOA {
		t.Errorf("upstream Authorization is not the vault key")
	}
}

func TestOpenAISDKChatStreamingWithUsage(t *testing.T) {
	h := newHarness(t, nil)
	c := h.openai()
	stream := c.Chat.Completions.NewStreaming(ctxT(t), openai.ChatCompletionNewParams{
		Model:         "default",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	acc, chunks := readChatStream(t, stream)
	if chunks < 5 {
		t.Errorf("got %d chunks, want the fake's 5+ (role, 3 deltas, finish, usage)", chunks)
	}
	if got := acc.Choices[0].Message.Content; got != "Hello from the fake" {
		t.Errorf("content = %q", got)
	}
	if acc.Usage.TotalTokens != 18 {
		t.Errorf("usage total = %d, want 18", acc.Usage.TotalTokens)
	}
	h.closeRouter()
	recs := h.usage.records()
	if len(recs) != 1 || recs[0].TokensIn != 11 || recs[0].TokensOut != 7 || recs[0].Status != 200 || recs[0].Provider != "oa" || recs[0].Model != "gpt-a" {
		t.Errorf("usage records = %+v", recs)
	}
}

func TestOpenAISDKToolCalls(t *testing.T) {
	h := newHarness(t, nil)
	c := h.openai()
	params := openai.ChatCompletionNewParams{
		Model:    "default",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather in Paris?")},
		Tools:    []openai.ChatCompletionToolUnionParam{weatherTool()},
	}
	got, err := c.Chat.Completions.New(ctxT(t), params)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	tc := got.Choices[0].Message.ToolCalls
	if len(tc) != 1 || tc[0].Function.Name != "get_weather" || tc[0].Function.Arguments != `{"city":"Paris"}` {
		t.Errorf("tool calls = %+v", tc)
	}
	stream := c.Chat.Completions.NewStreaming(ctxT(t), params)
	acc, _ := readChatStream(t, stream)
	tc = acc.Choices[0].Message.ToolCalls
	if len(tc) != 1 || tc[0].Function.Name != "get_weather" || tc[0].Function.Arguments != `{"city":"Paris"}` {
		t.Errorf("streamed tool calls = %+v", tc)
	}
}

func TestOpenAISDKResponsesEmbeddingsModels(t *testing.T) {
	h := newHarness(t, nil)
	c := h.openai()
	ctx := ctxT(t)
	r, err := c.Responses.New(ctx, responses.ResponseNewParams{
		Model: "default",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
	})
	if err != nil {
		t.Fatalf("responses: %v", err)
	}
	if r.OutputText() != "Hello from the fake" || r.Usage.InputTokens != 11 {
		t.Errorf("response = %q usage %+v", r.OutputText(), r.Usage)
	}
	stream := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model: "default",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
	})
	var text strings.Builder
	completed := false
	for stream.Next() {
		ev := stream.Current()
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			completed = ev.Response.Usage.OutputTokens == 7
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("responses stream: %v", err)
	}
	if text.String() != "Hello from the fake" || !completed {
		t.Errorf("streamed text %q, completed with usage %v", text.String(), completed)
	}
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "default",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")},
	})
	if err != nil {
		t.Fatalf("embeddings: %v", err)
	}
	if len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 3 {
		t.Errorf("embeddings = %+v", emb.Data)
	}
	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "claude,default,mixed,solo" {
		t.Errorf("models = %v, want the routes", ids)
	}
}

func TestAnthropicSDKMessages(t *testing.T) {
	h := newHarness(t, nil)
	c := h.anthropic()
	ctx := ctxT(t)
	var resp *http.Response
	msg, err := c.Messages.New(ctx, anthropic.MessageNewParams{
		Model:     "claude",
		MaxTokens: 100,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}, aoption.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "Hello from the fake" || msg.Usage.OutputTokens != 7 {
		t.Errorf("message = %+v", msg)
	}
	checkRouteHeaders(t, resp, "claude", "an/claude-a", "1")
	reqs := h.an.Requests()
	if len(reqs) != 1 || reqs[0].Header.Get("X-Api-Key") != canaryAN || reqs[0].Header.Get("Anthropic-Version") == "" || reqs[0].Model != "claude-a" {
		t.Errorf("upstream request: model %q, key set %v, version %q", reqs[0].Model, reqs[0].Header.Get("X-Api-Key") == canaryAN, reqs[0].Header.Get("Anthropic-Version"))
	}
	if reqs[0].Header.Get("Authorization") != "" {
		t.Errorf("upstream got an Authorization header")
	}

	stream := c.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
		Model:     "claude",
		MaxTokens: 100,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	acc := readMessageStream(t, stream)
	if len(acc.Content) != 1 || acc.Content[0].Text != "Hello from the fake" || acc.Usage.OutputTokens != 7 || acc.Usage.InputTokens != 11 {
		t.Errorf("streamed message = %+v", acc)
	}

	n, err := c.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
		Model:    "claude",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil {
		t.Fatalf("count_tokens: %v", err)
	}
	if n.InputTokens != 11 {
		t.Errorf("count_tokens = %d", n.InputTokens)
	}
	models, err := c.Models.List(ctx, anthropic.ModelListParams{})
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	if len(models.Data) != 4 || models.Data[0].ID != "claude" {
		t.Errorf("anthropic models = %+v", models.Data)
	}
	h.closeRouter()
	recs := h.usage.records()
	if len(recs) != 2 {
		t.Fatalf("usage records = %d, want 2 (count_tokens is not metered)", len(recs))
	}
	for _, r := range recs {
		if r.TokensIn != 11 || r.TokensOut != 7 || r.Route != "claude" || r.Sandbox != "agent" {
			t.Errorf("usage record = %+v", r)
		}
	}
}

func TestAnthropicSDKToolUse(t *testing.T) {
	h := newHarness(t, nil)
	c := h.anthropic()
	params := anthropicWeatherParams("claude")
	msg, err := c.Messages.New(ctxT(t), params)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" || msg.Content[0].Name != "get_weather" || string(msg.Content[0].Input) != `{"city":"Paris"}` {
		t.Errorf("tool use = %+v", msg.Content)
	}
	stream := c.Messages.NewStreaming(ctxT(t), params)
	acc := readMessageStream(t, stream)
	if len(acc.Content) != 1 || acc.Content[0].Name != "get_weather" || !strings.Contains(string(acc.Content[0].Input), "Paris") {
		t.Errorf("streamed tool use = %+v", acc.Content)
	}
}

func TestSDKErrorsAreDialectCorrect(t *testing.T) {
	h := newHarness(t, func(o *router.Options) {
		o.Sandboxes["agent"] = router.Sandbox{Limits: router.Limits{RequestsPerMinute: 1}}
	})
	ctx := ctxT(t)
	oc := h.openai()
	_, _ = oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "default", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	_, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "default", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var oerr *openai.Error
	if !errors.As(err, &oerr) || oerr.StatusCode != 429 || oerr.Type != "rate_limit_exceeded" || !strings.Contains(oerr.Message, "requests per minute") {
		t.Errorf("openai refusal = %v", err)
	}
	ac := h.anthropic()
	_, err = ac.Messages.New(ctx, anthropic.MessageNewParams{Model: "claude", MaxTokens: 10, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
	var aerr *anthropic.Error
	if !errors.As(err, &aerr) || aerr.StatusCode != 429 || !strings.Contains(aerr.RawJSON(), `"rate_limit_error"`) {
		t.Errorf("anthropic refusal = %v", err)
	}
}

// readChatStream reads a streamed chat completion to its end and returns
// it accumulated, with the number of chunks; a stream error fails the
// test.
func readChatStream(t *testing.T, s *ssestream.Stream[openai.ChatCompletionChunk]) (openai.ChatCompletion, int) {
	t.Helper()
	acc := openai.ChatCompletionAccumulator{}
	chunks := 0
	for s.Next() {
		acc.AddChunk(s.Current())
		chunks++
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return acc.ChatCompletion, chunks
}

// readMessageStream reads a streamed Anthropic message to its end and
// returns it accumulated; a stream error or an event the SDK cannot
// accumulate fails the test.
func readMessageStream(t *testing.T, s *assestream.Stream[anthropic.MessageStreamEventUnion]) anthropic.Message {
	t.Helper()
	msg := anthropic.Message{}
	for s.Next() {
		if err := msg.Accumulate(s.Current()); err != nil {
			t.Fatalf("accumulate: %v", err)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return msg
}

// anthropicWeatherParams asks route model, with a 100-token limit, for the
// weather, offering one tool: get_weather(city string).
func anthropicWeatherParams(model string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     model,
		MaxTokens: 100,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("weather?"))},
		Tools: []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{
			Name:        "get_weather",
			InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"city": map[string]any{"type": "string"}}},
		}}},
	}
}
