package xlate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// maxEvent bounds one SSE event (a partial event is kept until its end).
const maxEvent = 8 << 20

// sseReader splits an SSE byte stream into events, across any chunk
// boundaries.
type sseReader struct {
	line []byte // the current partial line
	data []byte // the data lines of the current event
	name []byte // the current event's name
	have bool   // the current event has a data line
}

// feed calls fn for every event completed by p.
func (r *sseReader) feed(p []byte, fn func(name, data []byte) error) error {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(r.line)+len(p)+len(r.data) > maxEvent {
				return fmt.Errorf("stream event longer than %d bytes", maxEvent)
			}
			r.line = append(r.line, p...)
			return nil
		}
		line := p[:i]
		if len(r.line) > 0 {
			r.line = append(r.line, line...)
			line = r.line
		}
		p = p[i+1:]
		if err := r.lineDone(bytes.TrimSuffix(line, []byte("\r")), fn); err != nil {
			return err
		}
		r.line = r.line[:0]
	}
	return nil
}

func (r *sseReader) lineDone(l []byte, fn func(name, data []byte) error) error {
	if len(l) == 0 {
		if !r.have {
			r.name = r.name[:0]
			return nil
		}
		err := fn(r.name, r.data)
		r.name, r.data, r.have = r.name[:0], r.data[:0], false
		return err
	}
	field, value, _ := bytes.Cut(l, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(field) {
	case "event":
		r.name = append(r.name[:0], value...)
	case "data":
		if r.have {
			r.data = append(r.data, '\n')
		}
		r.data = append(r.data, value...)
		r.have = true
	}
	if len(r.data) > maxEvent {
		return fmt.Errorf("stream event longer than %d bytes", maxEvent)
	}
	return nil
}

// end dispatches an event the stream ended without a blank line after.
func (r *sseReader) end(fn func(name, data []byte) error) error {
	if len(r.line) > 0 {
		if err := r.lineDone(bytes.TrimSuffix(r.line, []byte("\r")), fn); err != nil {
			return err
		}
		r.line = r.line[:0]
	}
	return r.lineDone(nil, fn)
}

// encoder encodes JSON without HTML escaping into a buffer it reuses: the
// result is valid until the next call.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func (e *encoder) encode(v any) []byte {
	if e.enc == nil {
		e.enc = json.NewEncoder(&e.buf)
		e.enc.SetEscapeHTML(false)
	}
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		panic(fmt.Sprintf("xlate: encoding %T: %v", v, err)) // only plain structs of strings and numbers reach here
	}
	return bytes.TrimSuffix(e.buf.Bytes(), []byte("\n"))
}

// ChatStream turns an Anthropic Messages event stream into an OpenAI chat
// completion chunk stream. Feed it the upstream bytes as they arrive.
type ChatStream struct {
	includeUsage bool
	created      int64
	sse          sseReader
	enc          encoder
	out          []byte

	id, model string
	started   bool
	tools     map[int64]int // Anthropic block index → OpenAI tool call index
	skip      map[int64]bool
	usage     anthUsage
	done      bool
}

// NewChatStream returns a translator for one stream. includeUsage adds the
// usage chunk (stream_options.include_usage); created is the chunks' Unix
// time.
func NewChatStream(includeUsage bool, created int64) *ChatStream {
	return &ChatStream{includeUsage: includeUsage, created: created}
}

type oaChunk struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []oaChunkChoice `json:"choices"`
	Usage   *oaUsage        `json:"usage,omitempty"`
}

type oaChunkChoice struct {
	Index        int             `json:"index"`
	Delta        oaDelta         `json:"delta"`
	FinishReason *string         `json:"finish_reason"`
	Logprobs     json.RawMessage `json:"logprobs"`
}

type oaDelta struct {
	Role      string            `json:"role,omitempty"`
	Content   *string           `json:"content,omitempty"`
	Refusal   *string           `json:"refusal,omitempty"`
	ToolCalls []oaToolCallDelta `json:"tool_calls,omitempty"`
}

type oaToolCallDelta struct {
	Index    int             `json:"index"`
	ID       string          `json:"id,omitempty"`
	Type     string          `json:"type,omitempty"`
	Function oaFunctionDelta `json:"function"`
}

type oaFunctionDelta struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// anthEvent is any Anthropic stream event, as read.
type anthEvent struct {
	Type    string `json:"type"`
	Message *struct {
		ID    string     `json:"id"`
		Model string     `json:"model"`
		Usage *anthUsage `json:"usage"`
	} `json:"message"`
	Index        int64           `json:"index"`
	ContentBlock *anthReplyBlock `json:"content_block"`
	Delta        *struct {
		Type        string  `json:"type"`
		Text        string  `json:"text"`
		PartialJSON string  `json:"partial_json"`
		StopReason  *string `json:"stop_reason"`
	} `json:"delta"`
	Usage *struct {
		InputTokens              *int64 `json:"input_tokens"`
		OutputTokens             *int64 `json:"output_tokens"`
		CacheCreationInputTokens *int64 `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     *int64 `json:"cache_read_input_tokens"`
	} `json:"usage"`
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// Write translates p, the next upstream bytes, appending what the client
// gets to dst.
func (s *ChatStream) Write(dst, p []byte) ([]byte, error) {
	s.out = dst
	err := s.sse.feed(p, s.event)
	return s.out, err
}

// Close ends the translation at the end of the upstream body.
func (s *ChatStream) Close(dst []byte) ([]byte, error) {
	s.out = dst
	err := s.sse.end(s.event)
	return s.out, err
}

func (s *ChatStream) chunk(d oaDelta, finish *string) {
	c := oaChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []oaChunkChoice{{Delta: d, FinishReason: finish}}}
	s.data(s.enc.encode(c))
}

func (s *ChatStream) data(b []byte) {
	s.out = append(s.out, "data: "...)
	s.out = append(s.out, b...)
	s.out = append(s.out, "\n\n"...)
}

func (s *ChatStream) event(_, data []byte) error {
	if s.done {
		return nil
	}
	var e anthEvent
	if err := json.Unmarshal(data, &e); err != nil {
		return fmt.Errorf("anthropic stream event: %w", err)
	}
	if e.Type != "message_start" && e.Type != "error" && e.Type != "ping" && !s.started {
		return fmt.Errorf("anthropic stream: %q before message_start", e.Type)
	}
	switch e.Type {
	case "message_start":
		if e.Message == nil {
			return errors.New("anthropic stream: message_start without a message")
		}
		s.id, s.model, s.started = e.Message.ID, e.Message.Model, true
		if e.Message.Usage != nil {
			s.usage = *e.Message.Usage
		}
		empty := ""
		s.chunk(oaDelta{Role: "assistant", Content: &empty}, nil)
	case "content_block_start":
		b := e.ContentBlock
		if b == nil {
			return errors.New("anthropic stream: content_block_start without a block")
		}
		switch b.Type {
		case "text":
			if b.Text != "" {
				t := b.Text
				s.chunk(oaDelta{Content: &t}, nil)
			}
		case "tool_use":
			if s.tools == nil {
				s.tools = make(map[int64]int)
			}
			n := len(s.tools)
			s.tools[e.Index] = n
			s.chunk(oaDelta{ToolCalls: []oaToolCallDelta{{Index: n, ID: openAIID(b.ID), Type: "function", Function: oaFunctionDelta{Name: b.Name}}}}, nil)
		case "thinking", "redacted_thinking":
			if s.skip == nil {
				s.skip = make(map[int64]bool)
			}
			s.skip[e.Index] = true
		default:
			return fmt.Errorf("anthropic stream: a %q block has no OpenAI equivalent", b.Type)
		}
	case "content_block_delta":
		if e.Delta == nil || s.skip[e.Index] {
			return nil
		}
		switch e.Delta.Type {
		case "text_delta":
			t := e.Delta.Text
			s.chunk(oaDelta{Content: &t}, nil)
		case "input_json_delta":
			n, ok := s.tools[e.Index]
			if !ok {
				return fmt.Errorf("anthropic stream: input_json_delta for block %d, which is not a tool call", e.Index)
			}
			if e.Delta.PartialJSON != "" {
				s.chunk(oaDelta{ToolCalls: []oaToolCallDelta{{Index: n, Function: oaFunctionDelta{Arguments: e.Delta.PartialJSON}}}}, nil)
			}
		case "citations_delta", "thinking_delta", "signature_delta":
		default:
			return fmt.Errorf("anthropic stream: %q deltas have no OpenAI equivalent", e.Delta.Type)
		}
	case "content_block_stop", "ping":
	case "message_delta":
		if u := e.Usage; u != nil {
			setIf(&s.usage.InputTokens, u.InputTokens)
			setIf(&s.usage.OutputTokens, u.OutputTokens)
			setIf(&s.usage.CacheCreationInputTokens, u.CacheCreationInputTokens)
			setIf(&s.usage.CacheReadInputTokens, u.CacheReadInputTokens)
		}
		if e.Delta != nil && e.Delta.StopReason != nil {
			fr := finishReason(*e.Delta.StopReason)
			s.chunk(oaDelta{}, &fr)
		}
	case "message_stop":
		if s.includeUsage {
			s.data(s.enc.encode(oaChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
				Choices: []oaChunkChoice{}, Usage: s.usage.toOpenAI()}))
		}
		s.out = append(s.out, "data: [DONE]\n\n"...)
		s.done = true
	case "error":
		typ, msg := "api_error", "provider stream error"
		if e.Error != nil {
			typ, msg = e.Error.Type, e.Error.Message
		}
		s.data(s.enc.encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}}))
		s.done = true
	default:
		// Anthropic may add event types; unknown ones are to be ignored.
	}
	return nil
}

func setIf(dst *int64, v *int64) {
	if v != nil {
		*dst = *v
	}
}

// MessagesStream turns an OpenAI chat completion chunk stream into an
// Anthropic Messages event stream. Feed it the upstream bytes as they
// arrive.
type MessagesStream struct {
	sse sseReader
	enc encoder
	out []byte

	started   bool
	blocks    int64         // content blocks started
	text      int64         // the open text block, -1 when none
	openTools []int64       // open tool_use blocks, in order
	tools     map[int]int64 // OpenAI tool call index → Anthropic block index
	stop      string
	haveStop  bool
	usage     anthUsage
	done      bool
}

// NewMessagesStream returns a translator for one stream.
func NewMessagesStream() *MessagesStream { return &MessagesStream{text: -1} }

type oaChunkIn struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content   *string `json:"content"`
			Refusal   *string `json:"refusal"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *oaUsage `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// Write translates p, the next upstream bytes, appending what the client
// gets to dst.
func (s *MessagesStream) Write(dst, p []byte) ([]byte, error) {
	s.out = dst
	err := s.sse.feed(p, s.event)
	return s.out, err
}

// Close ends the translation at the end of the upstream body: a stream
// that gave its finish reason but no "[DONE]" still ends properly.
func (s *MessagesStream) Close(dst []byte) ([]byte, error) {
	s.out = dst
	err := s.sse.end(s.event)
	if err == nil && s.haveStop && !s.done {
		s.finish()
	}
	return s.out, err
}

func (s *MessagesStream) emit(name string, v any) {
	s.out = append(s.out, "event: "...)
	s.out = append(s.out, name...)
	s.out = append(s.out, "\ndata: "...)
	s.out = append(s.out, s.enc.encode(v)...)
	s.out = append(s.out, "\n\n"...)
}

type anthStart struct {
	Type    string         `json:"type"`
	Message anthMessageOut `json:"message"`
}

type anthBlockStart struct {
	Type         string    `json:"type"`
	Index        int64     `json:"index"`
	ContentBlock anthBlock `json:"content_block"`
}

type anthBlockDelta struct {
	Type  string        `json:"type"`
	Index int64         `json:"index"`
	Delta anthDeltaBody `json:"delta"`
}

type anthDeltaBody struct {
	Type        string  `json:"type"`
	Text        *string `json:"text,omitempty"`
	PartialJSON *string `json:"partial_json,omitempty"`
}

type anthIndexed struct {
	Type  string `json:"type"`
	Index int64  `json:"index"`
}

type anthMessageDelta struct {
	Type  string `json:"type"`
	Delta struct {
		StopReason   string  `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
	} `json:"delta"`
	Usage anthUsage `json:"usage"`
}

func (s *MessagesStream) stopBlock(i int64) {
	s.emit("content_block_stop", anthIndexed{Type: "content_block_stop", Index: i})
}

// closeText ends the open text block.
func (s *MessagesStream) closeText() {
	if s.text >= 0 {
		s.stopBlock(s.text)
		s.text = -1
	}
}

// closeAll ends every open block. Tool blocks stay open until the answer
// ends: an OpenAI stream may interleave the arguments of parallel calls,
// and a block gets no delta after its content_block_stop.
func (s *MessagesStream) closeAll() {
	s.closeText()
	for _, i := range s.openTools {
		s.stopBlock(i)
	}
	s.openTools = s.openTools[:0]
}

func (s *MessagesStream) appendText(t string) {
	if t == "" {
		return
	}
	if s.text < 0 {
		s.text = s.blocks
		s.blocks++
		s.emit("content_block_start", anthBlockStart{Type: "content_block_start", Index: s.text, ContentBlock: textBlock("")})
	}
	s.emit("content_block_delta", anthBlockDelta{Type: "content_block_delta", Index: s.text, Delta: anthDeltaBody{Type: "text_delta", Text: &t}})
}

func (s *MessagesStream) finish() {
	s.closeAll()
	var md anthMessageDelta
	md.Type = "message_delta"
	md.Delta.StopReason = stopReason(s.stop)
	md.Usage = s.usage
	s.emit("message_delta", md)
	s.emit("message_stop", map[string]string{"type": "message_stop"})
	s.done = true
}

func (s *MessagesStream) event(_, data []byte) error {
	if s.done {
		return nil
	}
	if bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
		if !s.started {
			return errors.New("openai stream: [DONE] before any chunk")
		}
		s.finish()
		return nil
	}
	var c oaChunkIn
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("openai stream chunk: %w", err)
	}
	if c.Error != nil {
		s.emit("error", map[string]any{"type": "error", "error": map[string]string{"type": "api_error", "message": c.Error.Message}})
		s.done = true
		return nil
	}
	if !s.started {
		s.started = true
		s.emit("message_start", anthStart{Type: "message_start", Message: anthMessageOut{
			ID: c.ID, Type: "message", Role: "assistant", Model: c.Model, Content: []anthBlock{}}})
	}
	if c.Usage != nil {
		s.usage = c.Usage.toAnthropic()
	}
	if len(c.Choices) == 0 {
		return nil
	}
	ch := c.Choices[0]
	if ch.Delta.Content != nil {
		s.appendText(*ch.Delta.Content)
	}
	if ch.Delta.Refusal != nil {
		s.appendText(*ch.Delta.Refusal)
	}
	for _, tc := range ch.Delta.ToolCalls {
		bi, ok := s.tools[tc.Index]
		if !ok {
			if s.tools == nil {
				s.tools = make(map[int]int64)
			}
			s.closeText()
			bi = s.blocks
			s.blocks++
			s.tools[tc.Index] = bi
			s.openTools = append(s.openTools, bi)
			s.emit("content_block_start", anthBlockStart{Type: "content_block_start", Index: bi,
				ContentBlock: anthBlock{Type: "tool_use", ID: anthropicID(tc.ID), Name: tc.Function.Name, Input: json.RawMessage("{}")}})
		}
		if tc.Function.Arguments != "" {
			a := tc.Function.Arguments
			s.emit("content_block_delta", anthBlockDelta{Type: "content_block_delta", Index: bi, Delta: anthDeltaBody{Type: "input_json_delta", PartialJSON: &a}})
		}
	}
	if ch.FinishReason != nil {
		s.closeAll()
		s.stop, s.haveStop = *ch.FinishReason, true
	}
	return nil
}
