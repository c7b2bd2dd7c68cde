package xlate

import (
	"testing"
)

func TestMessagesToChatResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{"text with cache usage",
			`{"id":"msg_1","type":"message","role":"assistant","model":"claude-a","content":[{"type":"text","text":"Hello"},{"type":"text","text":" there"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":7,"cache_creation_input_tokens":2,"cache_read_input_tokens":4}}`,
			`{"id":"msg_1","object":"chat.completion","created":1700000000,"model":"claude-a","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","refusal":null},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":17,"completion_tokens":7,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":4}}}`, false},
		{"tool use",
			`{"id":"msg_1","type":"message","role":"assistant","model":"claude-a","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city": "Paris"}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}`,
			`{"id":"msg_1","object":"chat.completion","created":1700000000,"model":"claude-a","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls","logprobs":null}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":0}}}`, false},
		{"max tokens is length, thinking dropped",
			`{"id":"m","model":"c","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Hi"}],"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}`,
			`{"id":"m","object":"chat.completion","created":1700000000,"model":"c","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null},"finish_reason":"length","logprobs":null}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":0}}}`, false},
		{"stop sequence is stop, refusal is content_filter",
			`{"id":"m","model":"c","content":[],"stop_reason":"refusal"}`,
			`{"id":"m","object":"chat.completion","created":1700000000,"model":"c","choices":[{"index":0,"message":{"role":"assistant","content":"","refusal":null},"finish_reason":"content_filter","logprobs":null}]}`, false},
		{"server tool result block", `{"id":"m","model":"c","content":[{"type":"web_search_tool_result"}],"stop_reason":"end_turn"}`, "", true},
		{"not JSON", `<html>`, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MessagesToChatResponse([]byte(tc.in), 1700000000)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if string(got) != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestChatToMessagesResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{"text with cached tokens",
			`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-a","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","refusal":null},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":15,"completion_tokens":7,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":4}}}`,
			`{"id":"chatcmpl-1","type":"message","role":"assistant","model":"gpt-a","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":4}}`, false},
		{"tool calls",
			`{"id":"c","model":"g","choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"now","arguments":""}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
			`{"id":"c","type":"message","role":"assistant","model":"g","content":[{"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},{"type":"tool_use","id":"call_2","name":"now","input":{}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":4,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`, false},
		{"length is max_tokens, refusal is text",
			`{"id":"c","model":"g","choices":[{"message":{"content":null,"refusal":"I can't"},"finish_reason":"length"}]}`,
			`{"id":"c","type":"message","role":"assistant","model":"g","content":[{"type":"text","text":"I can't"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`, false},
		{"tool arguments cut by the output limit",
			`{"id":"c","model":"g","choices":[{"message":{"content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"write","arguments":"{\"text\":\"Once upon"}}]},"finish_reason":"length"}],"usage":{"prompt_tokens":50,"completion_tokens":4096}}`,
			`{"id":"c","type":"message","role":"assistant","model":"g","content":[{"type":"tool_use","id":"call_1","name":"write","input":{}}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":4096,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`, false},
		{"tool arguments not an object", `{"id":"c","model":"g","choices":[{"message":{"tool_calls":[{"id":"x","type":"function","function":{"name":"f","arguments":"{broken"}}]},"finish_reason":"tool_calls"}]}`, "", true},
		{"no choices", `{"id":"c","model":"g","choices":[]}`, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ChatToMessagesResponse([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if string(got) != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"anthropic error", 529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, "Overloaded"},
		{"openai error", 400, `{"error":{"message":"bad model","type":"invalid_request_error","param":null,"code":null}}`, "bad model"},
		{"html from a proxy", 502, `<html>bad gateway</html>`, `provider answered 502: "<html>bad gateway</html>"`},
		{"empty body", 500, ``, "provider answered 500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorMessage(tc.status, []byte(tc.body)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
