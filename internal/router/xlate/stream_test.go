package xlate

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// sse joins events into a stream.
func sse(events ...string) string { return strings.Join(events, "") }

const (
	anStart      = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-a\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":11,\"output_tokens\":1,\"cache_read_input_tokens\":4}}}\n\n"
	anTextStart  = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
	anPing       = "event: ping\ndata: {\"type\": \"ping\"}\n\n"
	anDelta1     = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n"
	anDelta2     = "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo \\\"x\\\"\"}}\r\n\r\n"
	anStop0      = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
	anToolStart  = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
	anToolDelta1 = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n"
	anToolDelta2 = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n"
	anStop1      = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
	anMsgDelta   = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n"
	anMsgDeltaTU = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n"
	anMsgStop    = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	anError      = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
)

const (
	ocHead    = `data: {"id":"msg_1","object":"chat.completion.chunk","created":1700000000,"model":"claude-a","choices":[{"index":0,`
	ocRole    = ocHead + `"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}` + "\n\n"
	ocHel     = ocHead + `"delta":{"content":"Hel"},"finish_reason":null,"logprobs":null}]}` + "\n\n"
	ocLo      = ocHead + `"delta":{"content":"lo \"x\""},"finish_reason":null,"logprobs":null}]}` + "\n\n"
	ocStop    = ocHead + `"delta":{},"finish_reason":"stop","logprobs":null}]}` + "\n\n"
	ocTool    = ocHead + `"delta":{"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null,"logprobs":null}]}` + "\n\n"
	ocArgs1   = ocHead + `"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]},"finish_reason":null,"logprobs":null}]}` + "\n\n"
	ocArgs2   = ocHead + `"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null,"logprobs":null}]}` + "\n\n"
	ocToolFin = ocHead + `"delta":{},"finish_reason":"tool_calls","logprobs":null}]}` + "\n\n"
	ocUsage   = `data: {"id":"msg_1","object":"chat.completion.chunk","created":1700000000,"model":"claude-a","choices":[],"usage":{"prompt_tokens":15,"completion_tokens":7,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":4}}}` + "\n\n"
	ocDone    = "data: [DONE]\n\n"
)

func TestChatStream(t *testing.T) {
	tests := []struct {
		name         string
		includeUsage bool
		in           string
		want         string
		wantErr      bool
	}{
		{"text with ping and CRLF lines, usage chunk asked for", true,
			sse(anStart, anTextStart, anPing, anDelta1, anDelta2, anStop0, anMsgDelta, anMsgStop),
			sse(ocRole, ocHel, ocLo, ocStop, ocUsage, ocDone), false},
		{"text without usage chunk", false,
			sse(anStart, anTextStart, anDelta1, anStop0, anMsgDelta, anMsgStop),
			sse(ocRole, ocHel, ocStop, ocDone), false},
		{"text then a tool call with incremental arguments", false,
			sse(anStart, anTextStart, anDelta1, anStop0, anToolStart, anToolDelta1, anToolDelta2, anStop1, anMsgDeltaTU, anMsgStop),
			sse(ocRole, ocHel, ocTool, ocArgs1, ocArgs2, ocToolFin, ocDone), false},
		{"error event mid-stream ends it in OpenAI's error shape", false,
			sse(anStart, anTextStart, anDelta1, anError),
			sse(ocRole, ocHel, `data: {"error":{"code":null,"message":"Overloaded","param":null,"type":"overloaded_error"}}`+"\n\n"), false},
		{"thinking blocks are not passed on", false,
			sse(anStart,
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
				"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
				strings.ReplaceAll(anTextStart, `"index":0`, `"index":1`), strings.ReplaceAll(anDelta1, `"index":0`, `"index":1`), anMsgDelta, anMsgStop),
			sse(ocRole, ocHel, ocStop, ocDone), false},
		{"event before message_start", false, sse(anTextStart), "", true},
		{"not JSON", false, "data: {oops\n\n", "", true},
		{"server tool block", false, sse(anStart, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"s\",\"name\":\"web_search\"}}\n\n"), ocRole, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			newT := func() streamTranslator { return NewChatStream(tc.includeUsage, 1700000000) }
			checkStreamSplits(t, newT, tc.in, tc.want, tc.wantErr)
		})
	}
}

type streamTranslator interface {
	Write(dst, p []byte) ([]byte, error)
	Close(dst []byte) ([]byte, error)
}

// feed runs in through a new translator in the given pieces.
func feed(st streamTranslator, pieces ...[]byte) (string, error) {
	var out []byte
	var err error
	for _, p := range pieces {
		if out, err = st.Write(out, p); err != nil {
			return string(out), err
		}
	}
	out, err = st.Close(out)
	return string(out), err
}

// checkStreamSplits translates in whole, split in two at every offset, and
// byte by byte: the output must be want every time.
func checkStreamSplits(t *testing.T, newT func() streamTranslator, in, want string, wantErr bool) {
	t.Helper()
	got, err := feed(newT(), []byte(in))
	if (err != nil) != wantErr {
		t.Fatalf("err = %v, want error %v (output %q)", err, wantErr, got)
	}
	if got != want {
		t.Fatalf("output\n got %q\nwant %q", got, want)
	}
	for i := 1; i < len(in); i++ {
		got, err := feed(newT(), []byte(in[:i]), []byte(in[i:]))
		if got != want || (err != nil) != wantErr {
			t.Fatalf("split at %d: err %v, output\n got %q\nwant %q", i, err, got, want)
		}
	}
	var pieces [][]byte
	for i := range len(in) {
		pieces = append(pieces, []byte{in[i]})
	}
	if got, err := feed(newT(), pieces...); got != want || (err != nil) != wantErr {
		t.Fatalf("byte by byte: err %v, output\n got %q\nwant %q", err, got, want)
	}
}

const (
	oaHead     = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-a","choices":[{"index":0,`
	oaRole     = oaHead + `"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"
	oaHel      = oaHead + `"delta":{"content":"Hel"},"finish_reason":null}]}` + "\n\n"
	oaLo       = oaHead + `"delta":{"content":"lo"},"finish_reason":null}]}` + "\r\n\r\n"
	oaStop     = oaHead + `"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	oaTool0    = oaHead + `"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}` + "\n\n"
	oaTool0a   = oaHead + `"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}` + "\n\n"
	oaTool0b   = oaHead + `"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}` + "\n\n"
	oaTool1    = oaHead + `"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]}` + "\n\n"
	oaToolStop = oaHead + `"delta":{},"finish_reason":"tool_calls"}]}` + "\n\n"
	oaUsageChk = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-a","choices":[],"usage":{"prompt_tokens":15,"completion_tokens":7,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":4}}}` + "\n\n"
	oaDone     = "data: [DONE]\n\n"
)

const (
	amStart     = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"chatcmpl-1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"gpt-a\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}}\n\n"
	amTextStart = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
	amHel       = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n"
	amLo        = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n"
	amStop0     = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
	amTool1     = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
	amTool1a    = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n"
	amTool1b    = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n"
	amStop1     = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
	amTool2     = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":\"get_time\",\"input\":{}}}\n\n"
	amTool2a    = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n"
	amStop2     = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
	amDeltaEnd  = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":11,\"output_tokens\":7,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4}}\n\n"
	amDeltaTool = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":11,\"output_tokens\":7,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4}}\n\n"
	amDeltaZero = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":0,\"output_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}\n\n"
	amMsgStop   = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

func TestMessagesStream(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{"text with usage chunk and CRLF", sse(oaRole, oaHel, oaLo, oaStop, oaUsageChk, oaDone),
			sse(amStart, amTextStart, amHel, amLo, amStop0, amDeltaEnd, amMsgStop), false},
		{"text then two tool calls with incremental arguments", sse(oaRole, oaHel, oaTool0, oaTool0a, oaTool0b, oaTool1, oaToolStop, oaUsageChk, oaDone),
			sse(amStart, amTextStart, amHel, amStop0, amTool1, amTool1a, amTool1b, amTool2, amTool2a, amStop1, amStop2, amDeltaTool, amMsgStop), false},
		{"interleaved tool call arguments: no delta after a block's stop", sse(oaRole, oaTool0, oaTool1, oaTool0a, oaTool0b, oaToolStop, oaUsageChk, oaDone),
			sse(amStart, strings.ReplaceAll(amTool1, `"index":1`, `"index":0`), strings.ReplaceAll(amTool2, `"index":2`, `"index":1`), strings.ReplaceAll(amTool2a, `"index":2`, `"index":1`),
				strings.ReplaceAll(amTool1a, `"index":1`, `"index":0`), strings.ReplaceAll(amTool1b, `"index":1`, `"index":0`),
				strings.ReplaceAll(amStop1, `"index":1`, `"index":0`), strings.ReplaceAll(amStop2, `"index":2`, `"index":1`), amDeltaTool, amMsgStop), false},
		{"stream that ends after its finish reason without [DONE]", sse(oaRole, oaHel, oaStop),
			sse(amStart, amTextStart, amHel, amStop0, amDeltaZero, amMsgStop), false},
		{"truncated stream gets no end events", sse(oaRole, oaHel),
			sse(amStart, amTextStart, amHel), false},
		{"error chunk", sse(oaRole, `data: {"error":{"message":"boom","type":"server_error"}}`+"\n\n"),
			sse(amStart, "event: error\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"), false},
		{"comment lines ignored", sse(": keep-alive\n\n", oaRole, oaStop, oaDone),
			sse(amStart, amDeltaZero, amMsgStop), false},
		{"not JSON", "data: nope\n\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkStreamSplits(t, func() streamTranslator { return NewMessagesStream() }, tc.in, tc.want, tc.wantErr)
		})
	}
}

func TestSSEEventTooLong(t *testing.T) {
	st := NewMessagesStream()
	big := bytes.Repeat([]byte("a"), maxEvent/4)
	var err error
	_, err = st.Write(nil, []byte("data: "))
	for i := 0; i < 5 && err == nil; i++ {
		_, err = st.Write(nil, big)
	}
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("err = %v, want the event size limit", err)
	}
	var un *Unsupported
	if errors.As(err, &un) {
		t.Errorf("a stream error is not an Unsupported request")
	}
}
