package xlate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// anthUsage is Anthropic's usage object.
type anthUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
}

// oaUsage is OpenAI's usage object.
type oaUsage struct {
	PromptTokens        int64            `json:"prompt_tokens"`
	CompletionTokens    int64            `json:"completion_tokens"`
	TotalTokens         int64            `json:"total_tokens"`
	PromptTokensDetails *oaPromptDetails `json:"prompt_tokens_details,omitempty"`
}

type oaPromptDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// toOpenAIUsage: OpenAI's prompt tokens include cached ones; Anthropic
// counts cache writes and reads apart from input_tokens.
func (u anthUsage) toOpenAI() *oaUsage {
	in := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
	return &oaUsage{PromptTokens: in, CompletionTokens: u.OutputTokens, TotalTokens: in + u.OutputTokens,
		PromptTokensDetails: &oaPromptDetails{CachedTokens: u.CacheReadInputTokens}}
}

func (u *oaUsage) toAnthropic() anthUsage {
	var cached int64
	if u.PromptTokensDetails != nil {
		cached = min(u.PromptTokensDetails.CachedTokens, u.PromptTokens)
	}
	return anthUsage{InputTokens: u.PromptTokens - cached, OutputTokens: u.CompletionTokens, CacheReadInputTokens: cached}
}

// finishReason maps an Anthropic stop_reason to an OpenAI finish_reason.
func finishReason(stop string) string {
	switch stop {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	return "stop" // end_turn, stop_sequence, pause_turn
}

// stopReason maps an OpenAI finish_reason to an Anthropic stop_reason.
// OpenAI's "stop" does not say whether a stop sequence ended the answer.
func stopReason(finish string) string {
	switch finish {
	case "length":
		return "max_tokens"
	case "tool_calls", "function_call":
		return "tool_use"
	case "content_filter":
		return "refusal"
	}
	return "end_turn"
}

// anthResponse is an Anthropic message as read.
type anthResponse struct {
	ID         string           `json:"id"`
	Model      string           `json:"model"`
	Content    []anthReplyBlock `json:"content"`
	StopReason *string          `json:"stop_reason"`
	Usage      *anthUsage       `json:"usage"`
}

type anthReplyBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// oaResponse is an OpenAI chat completion as written.
type oaResponse struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []oaChoice `json:"choices"`
	Usage   *oaUsage   `json:"usage,omitempty"`
}

type oaChoice struct {
	Index        int             `json:"index"`
	Message      oaReply         `json:"message"`
	FinishReason *string         `json:"finish_reason"`
	Logprobs     json.RawMessage `json:"logprobs"`
}

type oaReply struct {
	Role      string       `json:"role"`
	Content   *string      `json:"content"`
	Refusal   *string      `json:"refusal"`
	ToolCalls []oaToolCall `json:"tool_calls,omitempty"`
}

// MessagesToChatResponse translates an Anthropic message into an OpenAI
// chat completion; created is its Unix time (Anthropic sends none).
func MessagesToChatResponse(body []byte, created int64) ([]byte, error) {
	var r anthResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("anthropic response: %w", err)
	}
	reply := oaReply{Role: "assistant"}
	var text []byte
	hasText := false
	for i, b := range r.Content {
		switch b.Type {
		case "text":
			text = append(text, b.Text...)
			hasText = true
		case "tool_use":
			var args []byte
			if isNull(b.Input) {
				args = []byte("{}")
			} else if args = compact(b.Input); args == nil {
				return nil, fmt.Errorf("anthropic response: content[%d].input is not valid JSON", i)
			}
			reply.ToolCalls = append(reply.ToolCalls, oaToolCall{ID: openAIID(b.ID), Type: "function", Function: oaFunction{Name: b.Name, Arguments: string(args)}})
		case "thinking", "redacted_thinking":
			// reasoning, not part of the answer
		default:
			return nil, fmt.Errorf("anthropic response: content[%d] is a %q block, which has no OpenAI equivalent", i, b.Type)
		}
	}
	if hasText || len(reply.ToolCalls) == 0 {
		s := string(text)
		reply.Content = &s
	}
	stop := ""
	if r.StopReason != nil {
		stop = *r.StopReason
	}
	fr := finishReason(stop)
	out := oaResponse{ID: r.ID, Object: "chat.completion", Created: created, Model: r.Model,
		Choices: []oaChoice{{Message: reply, FinishReason: &fr}}}
	if r.Usage != nil {
		out.Usage = r.Usage.toOpenAI()
	}
	return marshal(out)
}

// compact returns b without insignificant space, or nil when it is not JSON.
func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return nil
	}
	return buf.Bytes()
}

// oaResponseIn is an OpenAI chat completion as read.
type oaResponseIn struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content   *string      `json:"content"`
			Refusal   *string      `json:"refusal"`
			ToolCalls []oaToolCall `json:"tool_calls"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *oaUsage `json:"usage"`
}

// anthMessageOut is an Anthropic message as written.
type anthMessageOut struct {
	ID           string      `json:"id"`
	Type         string      `json:"type"`
	Role         string      `json:"role"`
	Model        string      `json:"model"`
	Content      []anthBlock `json:"content"`
	StopReason   *string     `json:"stop_reason"`
	StopSequence *string     `json:"stop_sequence"`
	Usage        anthUsage   `json:"usage"`
}

// ChatToMessagesResponse translates an OpenAI chat completion into an
// Anthropic message.
func ChatToMessagesResponse(body []byte) ([]byte, error) {
	var r oaResponseIn
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("openai response: %w", err)
	}
	if len(r.Choices) == 0 {
		return nil, errors.New("openai response: no choices")
	}
	c := r.Choices[0]
	out := anthMessageOut{ID: r.ID, Type: "message", Role: "assistant", Model: r.Model, Content: []anthBlock{}}
	if c.Message.Content != nil && *c.Message.Content != "" {
		out.Content = append(out.Content, textBlock(*c.Message.Content))
	}
	if c.Message.Refusal != nil && *c.Message.Refusal != "" {
		out.Content = append(out.Content, textBlock(*c.Message.Refusal))
	}
	finish := ""
	if c.FinishReason != nil {
		finish = *c.FinishReason
	}
	for i, tc := range c.Message.ToolCalls {
		input := json.RawMessage("{}")
		if finish == "length" && !json.Valid([]byte(tc.Function.Arguments)) {
			// Arguments cut by the output limit: Anthropic has no partial
			// input; the stop reason (max_tokens) says the call is incomplete.
			out.Content = append(out.Content, anthBlock{Type: "tool_use", ID: anthropicID(tc.ID), Name: tc.Function.Name, Input: input})
			continue
		}
		if tc.Function.Arguments != "" {
			if !json.Valid([]byte(tc.Function.Arguments)) {
				return nil, fmt.Errorf("openai response: tool_calls[%d].function.arguments is not JSON", i)
			}
			if _, err := parseObject(json.RawMessage(tc.Function.Arguments), ""); err != nil {
				return nil, fmt.Errorf("openai response: tool_calls[%d].function.arguments is not a JSON object", i)
			}
			input = compact([]byte(tc.Function.Arguments))
		}
		out.Content = append(out.Content, anthBlock{Type: "tool_use", ID: anthropicID(tc.ID), Name: tc.Function.Name, Input: input})
	}
	sr := stopReason(finish)
	out.StopReason = &sr
	if r.Usage != nil {
		out.Usage = r.Usage.toAnthropic()
	}
	return marshal(out)
}
