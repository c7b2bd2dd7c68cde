package xlate

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// Request is a translated request body.
type Request struct {
	// Body is the request in the target format; its "model" is the
	// source's, for the caller to replace.
	Body []byte
	// IncludeUsage is set when an OpenAI client asked for a usage chunk at
	// the end of the stream (stream_options.include_usage).
	IncludeUsage bool
}

// Anthropic request, as this package writes it.
type anthRequest struct {
	Model         json.RawMessage  `json:"model"`
	System        []anthBlock      `json:"system,omitempty"`
	Messages      []anthMessage    `json:"messages"`
	MaxTokens     int64            `json:"max_tokens"`
	Temperature   json.RawMessage  `json:"temperature,omitempty"`
	TopP          json.RawMessage  `json:"top_p,omitempty"`
	StopSequences []string         `json:"stop_sequences,omitempty"`
	Stream        bool             `json:"stream,omitempty"`
	Tools         []anthTool       `json:"tools,omitempty"`
	ToolChoice    *anthToolChoice  `json:"tool_choice,omitempty"`
	Metadata      *anthRequestMeta `json:"metadata,omitempty"`

	// lastUserHasContent: the last turn is a user turn with more than
	// tool results (kept as turns are added, so checking it is O(1)).
	lastUserHasContent bool
}

type anthRequestMeta struct {
	UserID string `json:"user_id"`
}

type anthMessage struct {
	Role    string      `json:"role"`
	Content []anthBlock `json:"content"`
}

type anthBlock struct {
	Type      string          `json:"type"`
	Text      *string         `json:"text,omitempty"`
	Source    *anthSource     `json:"source,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   json.RawMessage `json:"content,omitempty"`
}

type anthSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type anthTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type anthToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

func textBlock(s string) anthBlock { return anthBlock{Type: "text", Text: &s} }

// openAIHarmless are OpenAI request fields that do not change the answer
// (storage, accounting and caching hints) and are left out.
var openAIHarmless = []string{"store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"}

// ChatToMessagesRequest translates an OpenAI chat completions request into
// an Anthropic Messages request. defaultMaxTokens is the output limit used
// when the request sets none (Anthropic requires one).
func ChatToMessagesRequest(body []byte, defaultMaxTokens int64) (Request, error) {
	top, err := parseBody(body)
	if err != nil {
		return Request{}, err
	}
	known := append([]string{"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
		"stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user", "n", "logprobs",
		"frequency_penalty", "presence_penalty", "response_format", "modalities"}, openAIHarmless...)
	if err := top.only("", known...); err != nil {
		return Request{}, err
	}
	out := anthRequest{Model: top["model"], MaxTokens: defaultMaxTokens}
	var res Request

	// Fields accepted only at their neutral value.
	if n, ok, err := top.integer("n", ""); err != nil {
		return Request{}, err
	} else if ok && n != 1 {
		return Request{}, unsupported("n", "Anthropic answers with one choice only")
	}
	if lp, err := top.boolean("logprobs", ""); err != nil || lp {
		return Request{}, unsupportedOr(err, "logprobs", "Anthropic returns no log probabilities")
	}
	for _, k := range []string{"frequency_penalty", "presence_penalty"} {
		if _, f, err := top.number(k, ""); err != nil || f != 0 {
			return Request{}, unsupportedOr(err, k, "Anthropic has no penalties")
		}
	}
	if top.has("response_format") {
		rf, err := parseObject(top["response_format"], "response_format")
		if err != nil {
			return Request{}, err
		}
		if typ, _ := rf.str("type", "response_format"); typ != "text" {
			return Request{}, unsupported("response_format.type", "%q output has no faithful Anthropic equivalent", typ)
		}
	}
	if top.has("modalities") {
		var mods []string
		if json.Unmarshal(top["modalities"], &mods) != nil || len(mods) != 1 || mods[0] != "text" {
			return Request{}, unsupported("modalities", "Anthropic answers with text only")
		}
	}

	for _, k := range []string{"max_tokens", "max_completion_tokens"} { // the second wins, as OpenAI documents
		n, ok, err := top.integer(k, "")
		if err != nil {
			return Request{}, err
		}
		if ok {
			if n < 1 {
				return Request{}, unsupported(k, "Anthropic needs at least 1 output token")
			}
			out.MaxTokens = n
		}
	}
	if v, f, err := top.number("temperature", ""); err != nil {
		return Request{}, err
	} else if v != nil {
		if f > 1 {
			return Request{}, unsupported("temperature", "%s is above Anthropic's maximum of 1", v)
		}
		out.Temperature = v
	}
	if v, _, err := top.number("top_p", ""); err != nil {
		return Request{}, err
	} else {
		out.TopP = v
	}
	if top.has("stop") {
		if one, ok := asString(top["stop"]); ok {
			out.StopSequences = []string{one}
		} else if json.Unmarshal(top["stop"], &out.StopSequences) != nil {
			return Request{}, unsupported("stop", "must be a string or an array of strings")
		}
	}
	if out.Stream, err = top.boolean("stream", ""); err != nil {
		return Request{}, err
	}
	if top.has("stream_options") {
		so, err := parseObject(top["stream_options"], "stream_options")
		if err != nil {
			return Request{}, err
		}
		if err := so.only("stream_options", "include_usage", "include_obfuscation"); err != nil {
			return Request{}, err
		}
		if res.IncludeUsage, err = so.boolean("include_usage", "stream_options"); err != nil {
			return Request{}, err
		}
	}
	if user, err := top.str("user", ""); err != nil {
		return Request{}, err
	} else if user != "" {
		out.Metadata = &anthRequestMeta{UserID: user}
	}

	tools, err := top.array("tools", "")
	if err != nil {
		return Request{}, err
	}
	for i, raw := range tools {
		t, err := openAITool(raw, index("tools", i))
		if err != nil {
			return Request{}, err
		}
		out.Tools = append(out.Tools, t)
	}
	if top.has("tool_choice") {
		if out.ToolChoice, err = openAIToolChoice(top["tool_choice"]); err != nil {
			return Request{}, err
		}
	}
	if top.has("parallel_tool_calls") {
		par, err := top.boolean("parallel_tool_calls", "")
		if err != nil {
			return Request{}, err
		}
		if !par && len(out.Tools) > 0 {
			if out.ToolChoice == nil {
				out.ToolChoice = &anthToolChoice{Type: "auto"}
			}
			if out.ToolChoice.Type != "none" {
				out.ToolChoice.DisableParallelToolUse = true
			}
		}
	}

	nmsgs, err := eachMessage(top, func(raw json.RawMessage, field string) error {
		return openAIMessage(&out, raw, field)
	})
	if err != nil {
		return Request{}, err
	}
	if len(out.Messages) == 0 {
		return Request{}, unsupported("messages", "has no user or assistant content (Anthropic needs at least one message)")
	}
	if out.Messages[len(out.Messages)-1].Role == "assistant" {
		// Anthropic would continue that turn (prefill); OpenAI answers anew.
		return Request{}, unsupported(index("messages", nmsgs-1)+".role", "a final assistant turn would be continued by Anthropic, not answered")
	}
	if res.Body, err = marshal(out); err != nil {
		return Request{}, unsupported("body", "cannot be encoded: %v", err)
	}
	return res, nil
}

// parseBody splits a request body into its top-level fields. It refuses
// a body that is not valid JSON, not valid UTF-8 (which would come out of
// a translation as U+FFFD escapes, six bytes for each bad byte) or not a
// JSON object.
func parseBody(body []byte) (object, error) {
	if !json.Valid(body) {
		return nil, unsupported("body", "is not valid JSON")
	}
	if !utf8.Valid(body) {
		return nil, unsupported("body", "is not valid UTF-8")
	}
	top, err := parseObject(body, "")
	if err != nil {
		return nil, unsupported("body", "is not a JSON object")
	}
	return top, nil
}

// eachMessage calls add with every element of the request's "messages"
// array and its field path, in order, stopping at the first error; the
// array must not be empty. It returns the number of messages.
func eachMessage(top object, add func(raw json.RawMessage, field string) error) (int, error) {
	msgs, err := top.array("messages", "")
	if err != nil {
		return 0, err
	}
	if len(msgs) == 0 {
		return 0, unsupported("messages", "must not be empty")
	}
	for i, raw := range msgs {
		if err := add(raw, index("messages", i)); err != nil {
			return 0, err
		}
	}
	return len(msgs), nil
}

func unsupportedOr(err error, field, reason string) error {
	if err != nil {
		return err
	}
	return unsupported(field, "%s", reason)
}

func openAITool(raw json.RawMessage, field string) (anthTool, error) {
	t, err := parseObject(raw, field)
	if err != nil {
		return anthTool{}, err
	}
	if err := t.only(field, "type", "function"); err != nil {
		return anthTool{}, err
	}
	if typ, _ := t.str("type", field); typ != "function" {
		return anthTool{}, unsupported(join(field, "type"), "%q tools have no Anthropic equivalent", typ)
	}
	fn, err := parseObject(t["function"], join(field, "function"))
	if err != nil {
		return anthTool{}, err
	}
	ff := join(field, "function")
	if err := fn.only(ff, "name", "description", "parameters", "strict"); err != nil {
		return anthTool{}, err
	}
	if strict, err := fn.boolean("strict", ff); err != nil || strict {
		return anthTool{}, unsupportedOr(err, join(ff, "strict"), "Anthropic does not guarantee schema-exact arguments")
	}
	var at anthTool
	if at.Name, err = fn.str("name", ff); err != nil || at.Name == "" {
		return anthTool{}, unsupportedOr(err, join(ff, "name"), "is required")
	}
	if at.Description, err = fn.str("description", ff); err != nil {
		return anthTool{}, err
	}
	at.InputSchema = json.RawMessage(`{"type":"object","properties":{}}`)
	if fn.has("parameters") {
		if _, err := parseObject(fn["parameters"], join(ff, "parameters")); err != nil {
			return anthTool{}, err
		}
		at.InputSchema = fn["parameters"]
	}
	return at, nil
}

func openAIToolChoice(raw json.RawMessage) (*anthToolChoice, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "auto":
			return &anthToolChoice{Type: "auto"}, nil
		case "none":
			return &anthToolChoice{Type: "none"}, nil
		case "required":
			return &anthToolChoice{Type: "any"}, nil
		}
		return nil, unsupported("tool_choice", "%q is not auto, none or required", s)
	}
	tc, err := parseObject(raw, "tool_choice")
	if err != nil {
		return nil, err
	}
	if err := tc.only("tool_choice", "type", "function"); err != nil {
		return nil, err
	}
	if typ, _ := tc.str("type", "tool_choice"); typ != "function" {
		return nil, unsupported("tool_choice.type", "%q has no Anthropic equivalent", typ)
	}
	fn, err := parseObject(tc["function"], "tool_choice.function")
	if err != nil {
		return nil, err
	}
	name, err := fn.str("name", "tool_choice.function")
	if err != nil || name == "" {
		return nil, unsupportedOr(err, "tool_choice.function.name", "is required")
	}
	return &anthToolChoice{Type: "tool", Name: name}, nil
}

// addTurn appends blocks as a turn of role, merged into the previous turn
// when it has the same role (Anthropic requires alternation).
func (r *anthRequest) addTurn(role string, blocks []anthBlock) {
	if len(blocks) == 0 {
		return
	}
	if n := len(r.Messages); n > 0 && r.Messages[n-1].Role == role {
		r.Messages[n-1].Content = append(r.Messages[n-1].Content, blocks...)
	} else {
		r.Messages = append(r.Messages, anthMessage{Role: role, Content: blocks})
		r.lastUserHasContent = false
	}
	if role == "user" {
		for _, b := range blocks {
			if b.Type != "tool_result" {
				r.lastUserHasContent = true
			}
		}
	}
}

func openAIMessage(out *anthRequest, raw json.RawMessage, field string) error {
	m, err := parseObject(raw, field)
	if err != nil {
		return err
	}
	role, err := m.str("role", field)
	if err != nil {
		return err
	}
	switch role {
	case "system", "developer":
		if err := m.only(field, "role", "content"); err != nil {
			return err
		}
		blocks, err := openAIContent(m["content"], join(field, "content"), false)
		if err != nil {
			return err
		}
		out.System = append(out.System, blocks...) // hoisted in order: Anthropic has one system prompt
	case "user":
		if err := m.only(field, "role", "content"); err != nil {
			return err
		}
		blocks, err := openAIContent(m["content"], join(field, "content"), true)
		if err != nil {
			return err
		}
		out.addTurn("user", blocks)
	case "assistant":
		if err := m.only(field, "role", "content", "tool_calls", "refusal"); err != nil {
			return err
		}
		blocks, err := openAIContent(m["content"], join(field, "content"), false)
		if err != nil {
			return err
		}
		if refusal, err := m.str("refusal", field); err != nil {
			return err
		} else if refusal != "" {
			blocks = append(blocks, textBlock(refusal))
		}
		calls, err := m.array("tool_calls", field)
		if err != nil {
			return err
		}
		for i, c := range calls {
			b, err := openAIToolCall(c, index(join(field, "tool_calls"), i))
			if err != nil {
				return err
			}
			blocks = append(blocks, b)
		}
		out.addTurn("assistant", blocks)
	case "tool":
		// A tool message's name (sent by some frameworks) repeats the
		// called tool's; the call id says which call it answers.
		if err := m.only(field, "role", "content", "tool_call_id", "name"); err != nil {
			return err
		}
		id, err := m.str("tool_call_id", field)
		if err != nil || id == "" {
			return unsupportedOr(err, join(field, "tool_call_id"), "is required")
		}
		if n := len(out.Messages); n > 0 && out.Messages[n-1].Role == "user" && out.lastUserHasContent {
			return unsupported(join(field, "role"), "a tool result after user content has no Anthropic equivalent (tool results come first in a turn)")
		}
		b := anthBlock{Type: "tool_result", ToolUseID: anthropicID(id)}
		if s, ok := asString(m["content"]); ok {
			if s != "" { // an empty result is a result without content
				b.Content = mustMarshal(s)
			}
		} else {
			parts, err := openAIContent(m["content"], join(field, "content"), false)
			if err != nil {
				return err
			}
			b.Content = mustMarshal(parts)
		}
		out.addTurn("user", []anthBlock{b})
	default:
		return unsupported(join(field, "role"), "%q has no Anthropic equivalent", role)
	}
	return nil
}

// openAIContent translates a message's content: a string or an array of
// text (and, when images is set, image_url) parts. Empty text is left out
// (Anthropic refuses empty text blocks).
func openAIContent(raw json.RawMessage, field string, images bool) ([]anthBlock, error) {
	if isNull(raw) {
		return nil, nil
	}
	if s, ok := asString(raw); ok {
		if s == "" {
			return nil, nil
		}
		return []anthBlock{textBlock(s)}, nil
	}
	parts, ok := asArray(raw)
	if !ok {
		return nil, unsupported(field, "must be a string or an array of parts")
	}
	var blocks []anthBlock
	for i, praw := range parts {
		pf := index(field, i)
		p, err := parseObject(praw, pf)
		if err != nil {
			return nil, err
		}
		typ, err := p.str("type", pf)
		if err != nil {
			return nil, err
		}
		switch {
		case typ == "text" || typ == "refusal":
			key := typ
			if err := p.only(pf, "type", key); err != nil {
				return nil, err
			}
			t, err := p.str(key, pf)
			if err != nil {
				return nil, err
			}
			if t != "" {
				blocks = append(blocks, textBlock(t))
			}
		case typ == "image_url" && images:
			b, err := openAIImage(p, pf)
			if err != nil {
				return nil, err
			}
			blocks = append(blocks, b)
		default:
			return nil, unsupported(join(pf, "type"), "%q content has no Anthropic equivalent here", typ)
		}
	}
	return blocks, nil
}

// anthropicImageTypes are the media types Anthropic accepts.
var anthropicImageTypes = []string{"image/jpeg", "image/png", "image/gif", "image/webp"}

func openAIImage(p object, field string) (anthBlock, error) {
	if err := p.only(field, "type", "image_url"); err != nil {
		return anthBlock{}, err
	}
	img, err := parseObject(p["image_url"], join(field, "image_url"))
	if err != nil {
		return anthBlock{}, err
	}
	f := join(field, "image_url")
	if err := img.only(f, "url", "detail"); err != nil {
		return anthBlock{}, err
	}
	u, err := img.str("url", f)
	if err != nil {
		return anthBlock{}, err
	}
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		mt, isB64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isB64 {
			return anthBlock{}, unsupported(join(f, "url"), "a data: URL must be base64-encoded")
		}
		if !contains(anthropicImageTypes, mt) {
			return anthBlock{}, unsupported(join(f, "url"), "image type %q is not one Anthropic accepts", mt)
		}
		return anthBlock{Type: "image", Source: &anthSource{Type: "base64", MediaType: mt, Data: data}}, nil
	}
	if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		return anthBlock{Type: "image", Source: &anthSource{Type: "url", URL: u}}, nil
	}
	return anthBlock{}, unsupported(join(f, "url"), "is neither a data: nor an http(s) URL")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func openAIToolCall(raw json.RawMessage, field string) (anthBlock, error) {
	c, err := parseObject(raw, field)
	if err != nil {
		return anthBlock{}, err
	}
	if err := c.only(field, "id", "type", "function"); err != nil {
		return anthBlock{}, err
	}
	if typ, _ := c.str("type", field); typ != "function" {
		return anthBlock{}, unsupported(join(field, "type"), "%q tool calls have no Anthropic equivalent", typ)
	}
	id, err := c.str("id", field)
	if err != nil || id == "" {
		return anthBlock{}, unsupportedOr(err, join(field, "id"), "is required")
	}
	fn, err := parseObject(c["function"], join(field, "function"))
	if err != nil {
		return anthBlock{}, err
	}
	ff := join(field, "function")
	name, err := fn.str("name", ff)
	if err != nil {
		return anthBlock{}, err
	}
	args, err := fn.str("arguments", ff)
	if err != nil {
		return anthBlock{}, err
	}
	input := json.RawMessage("{}")
	if strings.TrimSpace(args) != "" {
		if !json.Valid([]byte(args)) {
			return anthBlock{}, unsupported(join(ff, "arguments"), "is not valid JSON")
		}
		if _, err := parseObject(json.RawMessage(args), ""); err != nil {
			return anthBlock{}, unsupported(join(ff, "arguments"), "is not a JSON object (Anthropic tool input must be one)")
		}
		var c bytes.Buffer
		if err := json.Compact(&c, []byte(args)); err != nil {
			return anthBlock{}, unsupported(join(ff, "arguments"), "is not valid JSON")
		}
		input = c.Bytes()
	}
	return anthBlock{Type: "tool_use", ID: anthropicID(id), Name: name, Input: input}, nil
}

// OpenAI request, as this package writes it.
type oaRequest struct {
	Model             json.RawMessage  `json:"model"`
	Messages          []oaMessage      `json:"messages"`
	MaxTokens         int64            `json:"max_tokens,omitempty"`
	MaxCompletion     int64            `json:"max_completion_tokens,omitempty"`
	Temperature       json.RawMessage  `json:"temperature,omitempty"`
	TopP              json.RawMessage  `json:"top_p,omitempty"`
	Stop              []string         `json:"stop,omitempty"`
	Stream            bool             `json:"stream,omitempty"`
	StreamOptions     *oaStreamOptions `json:"stream_options,omitempty"`
	Tools             []oaTool         `json:"tools,omitempty"`
	ToolChoice        json.RawMessage  `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool            `json:"parallel_tool_calls,omitempty"`
	User              string           `json:"user,omitempty"`
}

type oaNamedChoice struct {
	Type     string `json:"type"`
	Function oaName `json:"function"`
}

type oaName struct {
	Name string `json:"name"`
}

type oaStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type oaMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  []oaToolCall    `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

type oaPart struct {
	Type     string      `json:"type"`
	Text     *string     `json:"text,omitempty"`
	ImageURL *oaImageURL `json:"image_url,omitempty"`
}

type oaImageURL struct {
	URL string `json:"url"`
}

type oaToolCall struct {
	ID       string     `json:"id"`
	Type     string     `json:"type"`
	Function oaFunction `json:"function"`
}

type oaFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type oaTool struct {
	Type     string        `json:"type"`
	Function oaFunctionDef `json:"function"`
}

type oaFunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters"`
}

func textPart(s string) oaPart { return oaPart{Type: "text", Text: &s} }

// openAIMaxStop is how many stop sequences OpenAI accepts.
const openAIMaxStop = 4

// ChatOptions adapt MessagesToChatRequest to the server it is for.
type ChatOptions struct {
	// MaxCompletionTokens writes the output limit as max_completion_tokens,
	// which OpenAI's own API wants (its reasoning models refuse
	// max_tokens), instead of max_tokens, which every compatible server
	// (NIM, vLLM, Ollama, ...) reads.
	MaxCompletionTokens bool
}

// MessagesToChatRequest translates an Anthropic Messages request into an
// OpenAI chat completions request. A streamed request asks for the usage
// chunk, so that usage is known at the end of the stream.
func MessagesToChatRequest(body []byte, opt ChatOptions) (Request, error) {
	top, err := parseBody(body)
	if err != nil {
		return Request{}, err
	}
	if err := top.only("", "model", "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences",
		"stream", "tools", "tool_choice", "metadata", "thinking", "service_tier"); err != nil {
		return Request{}, err
	}
	out := oaRequest{Model: top["model"]}
	if top.has("thinking") {
		th, err := parseObject(top["thinking"], "thinking")
		if err != nil {
			return Request{}, err
		}
		if typ, _ := th.str("type", "thinking"); typ != "disabled" {
			return Request{}, unsupported("thinking", "extended thinking has no OpenAI chat completions equivalent")
		}
	}
	n, ok, err := top.integer("max_tokens", "")
	if err != nil {
		return Request{}, err
	}
	if !ok || n < 1 {
		// Anthropic refuses such a request; translated, it would have no
		// output limit at all.
		return Request{}, unsupported("max_tokens", "is required and at least 1 (as Anthropic requires)")
	}
	if opt.MaxCompletionTokens {
		out.MaxCompletion = n
	} else {
		out.MaxTokens = n
	}
	if out.Temperature, _, err = top.number("temperature", ""); err != nil {
		return Request{}, err
	}
	if out.TopP, _, err = top.number("top_p", ""); err != nil {
		return Request{}, err
	}
	if top.has("stop_sequences") {
		if json.Unmarshal(top["stop_sequences"], &out.Stop) != nil {
			return Request{}, unsupported("stop_sequences", "must be an array of strings")
		}
		if len(out.Stop) > openAIMaxStop {
			return Request{}, unsupported("stop_sequences", "%d stop sequences, OpenAI accepts at most %d", len(out.Stop), openAIMaxStop)
		}
	}
	if out.Stream, err = top.boolean("stream", ""); err != nil {
		return Request{}, err
	}
	if out.Stream {
		out.StreamOptions = &oaStreamOptions{IncludeUsage: true}
	}
	if top.has("metadata") {
		md, err := parseObject(top["metadata"], "metadata")
		if err != nil {
			return Request{}, err
		}
		if err := md.only("metadata", "user_id"); err != nil {
			return Request{}, err
		}
		if out.User, err = md.str("user_id", "metadata"); err != nil {
			return Request{}, err
		}
	}
	tools, err := top.array("tools", "")
	if err != nil {
		return Request{}, err
	}
	for i, raw := range tools {
		f := index("tools", i)
		t, err := parseObject(raw, f)
		if err != nil {
			return Request{}, err
		}
		if typ, _ := t.str("type", f); typ != "" && typ != "custom" {
			return Request{}, unsupported(join(f, "type"), "server tool %q has no OpenAI chat completions equivalent", typ)
		}
		if err := t.only(f, "type", "name", "description", "input_schema", "cache_control"); err != nil {
			return Request{}, err
		}
		var ot oaTool
		ot.Type = "function"
		if ot.Function.Name, err = t.str("name", f); err != nil || ot.Function.Name == "" {
			return Request{}, unsupportedOr(err, join(f, "name"), "is required")
		}
		if ot.Function.Description, err = t.str("description", f); err != nil {
			return Request{}, err
		}
		if _, err := parseObject(t["input_schema"], join(f, "input_schema")); err != nil {
			return Request{}, err
		}
		ot.Function.Parameters = t["input_schema"]
		out.Tools = append(out.Tools, ot)
	}
	if top.has("tool_choice") {
		tc, err := parseObject(top["tool_choice"], "tool_choice")
		if err != nil {
			return Request{}, err
		}
		if err := tc.only("tool_choice", "type", "name", "disable_parallel_tool_use"); err != nil {
			return Request{}, err
		}
		typ, _ := tc.str("type", "tool_choice")
		switch typ {
		case "auto":
			out.ToolChoice = json.RawMessage(`"auto"`)
		case "any":
			out.ToolChoice = json.RawMessage(`"required"`)
		case "none":
			out.ToolChoice = json.RawMessage(`"none"`)
		case "tool":
			name, err := tc.str("name", "tool_choice")
			if err != nil || name == "" {
				return Request{}, unsupportedOr(err, "tool_choice.name", "is required")
			}
			out.ToolChoice = mustMarshal(oaNamedChoice{Type: "function", Function: oaName{Name: name}})
		default:
			return Request{}, unsupported("tool_choice.type", "%q has no OpenAI equivalent", typ)
		}
		if dis, err := tc.boolean("disable_parallel_tool_use", "tool_choice"); err != nil {
			return Request{}, err
		} else if dis && len(out.Tools) > 0 {
			f := false
			out.ParallelToolCalls = &f
		}
	}
	if top.has("system") {
		c, err := anthropicSystem(top["system"])
		if err != nil {
			return Request{}, err
		}
		out.Messages = append(out.Messages, oaMessage{Role: "system", Content: c})
	}
	nmsgs, err := eachMessage(top, func(raw json.RawMessage, field string) error {
		return anthropicMessage(&out, raw, field)
	})
	if err != nil {
		return Request{}, err
	}
	if out.Messages[len(out.Messages)-1].Role == "assistant" {
		return Request{}, unsupported(index("messages", nmsgs-1)+".role", "a final assistant turn (prefill) is continued by Anthropic; OpenAI has no equivalent")
	}
	b, err := marshal(out)
	if err != nil {
		return Request{}, unsupported("body", "cannot be encoded: %v", err)
	}
	return Request{Body: b}, nil
}

func anthropicSystem(raw json.RawMessage) (json.RawMessage, error) {
	if s, ok := asString(raw); ok {
		return mustMarshal(s), nil
	}
	parts, err := anthropicText(raw, "system")
	if err != nil {
		return nil, err
	}
	return oaContent(parts), nil
}

// anthropicText translates an array of text blocks.
func anthropicText(raw json.RawMessage, field string) ([]oaPart, error) {
	blocks, ok := asArray(raw)
	if !ok {
		return nil, unsupported(field, "must be a string or an array of blocks")
	}
	var parts []oaPart
	for i, braw := range blocks {
		bf := index(field, i)
		b, err := parseObject(braw, bf)
		if err != nil {
			return nil, err
		}
		if typ, _ := b.str("type", bf); typ != "text" {
			return nil, unsupported(join(bf, "type"), "%q blocks have no OpenAI equivalent here", typ)
		}
		if err := b.only(bf, "type", "text", "cache_control"); err != nil {
			return nil, err
		}
		t, err := b.str("text", bf)
		if err != nil {
			return nil, err
		}
		parts = append(parts, textPart(t))
	}
	return parts, nil
}

// oaContent is one text part as a string, anything else as an array.
func oaContent(parts []oaPart) json.RawMessage {
	if len(parts) == 1 && parts[0].Type == "text" {
		return mustMarshal(*parts[0].Text)
	}
	if parts == nil {
		parts = []oaPart{}
	}
	return mustMarshal(parts)
}

func anthropicMessage(out *oaRequest, raw json.RawMessage, field string) error {
	m, err := parseObject(raw, field)
	if err != nil {
		return err
	}
	if err := m.only(field, "role", "content"); err != nil {
		return err
	}
	role, err := m.str("role", field)
	if err != nil {
		return err
	}
	if role != "user" && role != "assistant" {
		return unsupported(join(field, "role"), "%q is not user or assistant", role)
	}
	cf := join(field, "content")
	if s, ok := asString(m["content"]); ok {
		out.Messages = append(out.Messages, oaMessage{Role: role, Content: mustMarshal(s)})
		return nil
	}
	blocks, ok := asArray(m["content"])
	if !ok {
		return unsupported(cf, "must be a string or an array of blocks")
	}
	var parts []oaPart
	var calls []oaToolCall
	for i, braw := range blocks {
		bf := index(cf, i)
		b, err := parseObject(braw, bf)
		if err != nil {
			return err
		}
		typ, err := b.str("type", bf)
		if err != nil {
			return err
		}
		switch {
		case typ == "text":
			if err := b.only(bf, "type", "text", "cache_control"); err != nil {
				return err
			}
			t, err := b.str("text", bf)
			if err != nil {
				return err
			}
			parts = append(parts, textPart(t))
		case typ == "image" && role == "user":
			p, err := anthropicImage(b, bf)
			if err != nil {
				return err
			}
			parts = append(parts, p)
		case typ == "tool_use" && role == "assistant":
			if err := b.only(bf, "type", "id", "name", "input", "cache_control"); err != nil {
				return err
			}
			var c oaToolCall
			c.Type = "function"
			if c.ID, err = b.str("id", bf); err != nil {
				return err
			}
			c.ID = openAIID(c.ID)
			if c.Function.Name, err = b.str("name", bf); err != nil {
				return err
			}
			input := b["input"]
			if isNull(input) {
				input = json.RawMessage("{}")
			}
			var cb bytes.Buffer
			if json.Compact(&cb, input) != nil {
				return unsupported(join(bf, "input"), "is not valid JSON")
			}
			c.Function.Arguments = cb.String()
			calls = append(calls, c)
		case typ == "tool_result" && role == "user":
			if len(parts) > 0 {
				// OpenAI needs tool results right after the assistant's calls.
				return unsupported(join(bf, "type"), "a tool result after other content in the same turn has no OpenAI equivalent")
			}
			tm, err := anthropicToolResult(b, bf)
			if err != nil {
				return err
			}
			out.Messages = append(out.Messages, tm)
		default:
			return unsupported(join(bf, "type"), "%q blocks in a %s turn have no OpenAI chat completions equivalent", typ, role)
		}
	}
	switch {
	case role == "assistant":
		msg := oaMessage{Role: "assistant", ToolCalls: calls}
		switch {
		case len(parts) > 0:
			msg.Content = oaContent(parts)
		case len(calls) > 0:
			msg.Content = json.RawMessage("null")
		default:
			msg.Content = json.RawMessage(`""`)
		}
		out.Messages = append(out.Messages, msg)
	case len(parts) > 0 || len(blocks) == 0:
		out.Messages = append(out.Messages, oaMessage{Role: "user", Content: oaContent(parts)})
	}
	return nil
}

func anthropicImage(b object, field string) (oaPart, error) {
	if err := b.only(field, "type", "source", "cache_control"); err != nil {
		return oaPart{}, err
	}
	src, err := parseObject(b["source"], join(field, "source"))
	if err != nil {
		return oaPart{}, err
	}
	sf := join(field, "source")
	typ, _ := src.str("type", sf)
	switch typ {
	case "base64":
		if err := src.only(sf, "type", "media_type", "data"); err != nil {
			return oaPart{}, err
		}
		mt, err := src.str("media_type", sf)
		if err != nil {
			return oaPart{}, err
		}
		data, err := src.str("data", sf)
		if err != nil {
			return oaPart{}, err
		}
		return oaPart{Type: "image_url", ImageURL: &oaImageURL{URL: "data:" + mt + ";base64," + data}}, nil
	case "url":
		if err := src.only(sf, "type", "url"); err != nil {
			return oaPart{}, err
		}
		u, err := src.str("url", sf)
		if err != nil {
			return oaPart{}, err
		}
		return oaPart{Type: "image_url", ImageURL: &oaImageURL{URL: u}}, nil
	}
	return oaPart{}, unsupported(join(sf, "type"), "%q image sources have no OpenAI equivalent", typ)
}

// toolErrorPrefix starts the text of a tool result Anthropic marks as an
// error: OpenAI tool messages have no such flag.
const toolErrorPrefix = "Error: "

func anthropicToolResult(b object, field string) (oaMessage, error) {
	if err := b.only(field, "type", "tool_use_id", "content", "is_error", "cache_control"); err != nil {
		return oaMessage{}, err
	}
	id, err := b.str("tool_use_id", field)
	if err != nil || id == "" {
		return oaMessage{}, unsupportedOr(err, join(field, "tool_use_id"), "is required")
	}
	isErr, err := b.boolean("is_error", field)
	if err != nil {
		return oaMessage{}, err
	}
	var parts []oaPart
	s, isString := asString(b["content"])
	switch {
	case !b.has("content"):
		parts = []oaPart{textPart("")}
	case isString:
		parts = []oaPart{textPart(s)}
	default:
		if parts, err = anthropicText(b["content"], join(field, "content")); err != nil {
			return oaMessage{}, err
		}
	}
	if isErr {
		if len(parts) == 0 {
			parts = []oaPart{textPart("")}
		}
		t := toolErrorPrefix + *parts[0].Text
		parts[0].Text = &t
	}
	if len(parts) == 0 {
		parts = []oaPart{textPart("")}
	}
	return oaMessage{Role: "tool", ToolCallID: openAIID(id), Content: oaContent(parts)}, nil
}
