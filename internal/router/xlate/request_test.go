package xlate

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestChatToMessagesRequest(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      string // exact translated body
		wantUsage bool
		wantField string // an *Unsupported naming this field instead
	}{
		{"plain user text gets the default max_tokens",
			`{"model":"default","messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"default","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":4096}`, false, ""},
		{"system and developer messages hoisted in order",
			`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"developer","content":[{"type":"text","text":"no markdown"}]}]}`,
			`{"model":"m","system":[{"type":"text","text":"be brief"},{"type":"text","text":"no markdown"}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":4096}`, false, ""},
		{"consecutive user messages merged for alternation",
			`{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"assistant","content":"c"},{"role":"assistant","content":""},{"role":"user","content":"d"}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":[{"type":"text","text":"c"}]},{"role":"user","content":[{"type":"text","text":"d"}]}],"max_tokens":4096}`, false, ""},
		{"data URL image becomes a base64 source, detail left out",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is <this>?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0K","detail":"low"}}]}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is <this>?"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0K"}}]}],"max_tokens":4096}`, false, ""},
		{"https image becomes a url source",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}}]}],"max_tokens":4096}`, false, ""},
		{"tool calls, parallel results merged into one user turn with the next text",
			`{"model":"m","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":"checking","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_time","arguments":""}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"},{"role":"tool","tool_call_id":"call_2","name":"get_time","content":[{"type":"text","text":"noon"}]},{"role":"user","content":"thanks"}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"weather?"}]},{"role":"assistant","content":[{"type":"text","text":"checking"},{"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},{"type":"tool_use","id":"call_2","name":"get_time","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1","content":"sunny"},{"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"noon"}]},{"type":"text","text":"thanks"}]}],"max_tokens":4096}`, false, ""},
		{"tools, required tool choice, no parallel calls",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},{"type":"function","function":{"name":"noargs"}}],"tool_choice":"required","parallel_tool_calls":false}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":4096,"tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},{"name":"noargs","input_schema":{"type":"object","properties":{}}}],"tool_choice":{"type":"any","disable_parallel_tool_use":true}}`, false, ""},
		{"named tool choice",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":4096,"tools":[{"name":"f","input_schema":{"type":"object","properties":{}}}],"tool_choice":{"type":"tool","name":"f"}}`, false, ""},
		{"tool choice none and auto",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"none"}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":4096,"tool_choice":{"type":"none"}}`, false, ""},
		{"sampling, stop string, max_completion_tokens wins, user, harmless fields left out",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":10,"max_completion_tokens":20,"temperature":0.7,"top_p":0.9,"stop":"END","user":"u-1","store":false,"n":1,"logprobs":false,"presence_penalty":0,"response_format":{"type":"text"},"modalities":["text"]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":20,"temperature":0.7,"top_p":0.9,"stop_sequences":["END"],"metadata":{"user_id":"u-1"}}`, false, ""},
		{"stream with usage, stop array",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true},"stop":["a","b"]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":4096,"stop_sequences":["a","b"],"stream":true}`, true, ""},
		{"empty tool result has no content",
			`{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":""}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","content":[{"type":"tool_use","id":"c","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"c"}]}],"max_tokens":4096}`, false, ""},
		{"assistant refusal kept as text",
			`{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"refusal":"no"},{"role":"user","content":"y"}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","content":[{"type":"text","text":"no"}]},{"role":"user","content":[{"type":"text","text":"y"}]}],"max_tokens":4096}`, false, ""},
		{"final assistant turn would become a prefill", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"Sure"}]}`, "", false, "messages[1].role"},

		{"invalid UTF-8", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", "", false, "body"},
		{"n above 1", `{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}`, "", false, "n"},
		{"body not JSON", `{"model":"m",`, "", false, "body"},
		{"body an array", `[{"model":"m"}]`, "", false, "body"},
		{"no messages", `{"model":"m","messages":[]}`, "", false, "messages"},
		{"messages not an array", `{"model":"m","messages":{"role":"user"}}`, "", false, "messages"},
		{"logprobs", `{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}`, "", false, "logprobs"},
		{"audio modality", `{"model":"m","messages":[{"role":"user","content":"x"}],"modalities":["text","audio"]}`, "", false, "modalities"},
		{"audio output settings", `{"model":"m","messages":[{"role":"user","content":"x"}],"audio":{"voice":"alloy","format":"wav"}}`, "", false, "audio"},
		{"json schema output", `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{}}}}`, "", false, "response_format.type"},
		{"temperature above Anthropic's range", `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1.5}`, "", false, "temperature"},
		{"seed", `{"model":"m","messages":[{"role":"user","content":"x"}],"seed":7}`, "", false, "seed"},
		{"frequency penalty", `{"model":"m","messages":[{"role":"user","content":"x"}],"frequency_penalty":0.5}`, "", false, "frequency_penalty"},
		{"reasoning effort", `{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"high"}`, "", false, "reasoning_effort"},
		{"unknown top-level field", `{"model":"m","messages":[{"role":"user","content":"x"}],"foo_bar":1}`, "", false, "foo_bar"},
		{"audio input part", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]}]}`, "", false, "messages[0].content[0].type"},
		{"file part", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}]}`, "", false, "messages[0].content[0].type"},
		{"svg data URL", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/svg+xml;base64,AA"}}]}]}`, "", false, "messages[0].content[0].image_url.url"},
		{"image in a system message", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, "", false, "messages[0].content[0].type"},
		{"named participant", `{"model":"m","messages":[{"role":"user","content":"x","name":"bob"}]}`, "", false, "messages[0].name"},
		{"legacy function role", `{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}`, "", false, "messages[0].role"},
		{"strict tool", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","strict":true}}]}`, "", false, "tools[0].function.strict"},
		{"custom tool", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","custom":{"name":"f"}}]}`, "", false, "tools[0].custom"},
		{"tool call arguments not an object", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`, "", false, "messages[1].tool_calls[0].function.arguments"},
		{"allowed_tools choice", `{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"allowed_tools","allowed_tools":{}}}`, "", false, "tool_choice.allowed_tools"},
		{"web search options", `{"model":"m","messages":[{"role":"user","content":"x"}],"web_search_options":{}}`, "", false, "web_search_options"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ChatToMessagesRequest([]byte(tc.in), 4096)
			checkTranslation(t, got, err, tc.want, tc.wantField)
			if err == nil && got.IncludeUsage != tc.wantUsage {
				t.Errorf("IncludeUsage = %v, want %v", got.IncludeUsage, tc.wantUsage)
			}
		})
	}
}

func checkTranslation(t *testing.T, got Request, err error, want, wantField string) {
	t.Helper()
	if wantField != "" {
		var un *Unsupported
		if !errors.As(err, &un) || un.Field != wantField {
			t.Fatalf("err = %v (body %s), want Unsupported field %q", err, got.Body, wantField)
		}
		return
	}
	if err != nil {
		t.Fatalf("err = %v", err)
	}
	if string(got.Body) != want {
		t.Errorf("body\n got %s\nwant %s", got.Body, want)
	}
}

func TestMessagesToChatRequest(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      string
		wantField string
	}{
		{"plain text with max_tokens",
			`{"model":"claude","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"claude","messages":[{"role":"user","content":"hi"}],"max_tokens":100}`, ""},
		{"system string",
			`{"model":"c","max_tokens":5,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]}`,
			`{"model":"c","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":5}`, ""},
		{"system blocks become text parts",
			`{"model":"c","max_tokens":5,"system":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"c","messages":[{"role":"system","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"user","content":"hi"}],"max_tokens":5}`, ""},
		{"tool use history, error result, then text and images",
			`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":[{"type":"text","text":"checking"},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city": "Paris"}},{"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"boom","is_error":true},{"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"noon"}]},{"type":"text","text":"and?"},{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/"}},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}`,
			`{"model":"c","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":"checking","tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"toolu_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},{"role":"tool","content":"Error: boom","tool_call_id":"toolu_1"},{"role":"tool","content":"noon","tool_call_id":"toolu_2"},{"role":"user","content":[{"type":"text","text":"and?"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/"}},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}],"max_tokens":5}`, ""},
		{"assistant with only a tool call has null content",
			`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}]}`,
			`{"model":"c","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","content":"","tool_call_id":"t"}],"max_tokens":5}`, ""},
		{"tools, any choice, no parallel calls, stream asks for usage, stop, user",
			`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}},"cache_control":{"type":"ephemeral"}}],"tool_choice":{"type":"any","disable_parallel_tool_use":true},"stream":true,"stop_sequences":["END"],"temperature":0.2,"top_p":0.5,"metadata":{"user_id":"u-1"},"thinking":{"type":"disabled"}}`,
			`{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":5,"temperature":0.2,"top_p":0.5,"stop":["END"],"stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"tool_choice":"required","parallel_tool_calls":false,"user":"u-1"}`, ""},
		{"named tool choice",
			`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"}}`,
			`{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":5,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`, ""},
		{"tool choice none and auto",
			`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"none"}}`,
			`{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":5,"tool_choice":"none"}`, ""},

		{"extended thinking", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":1024}}`, "", "thinking"},
		{"top_k", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"top_k":5}`, "", "top_k"},
		{"mcp servers", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"mcp_servers":[{"type":"url","url":"https://m"}]}`, "", "mcp_servers"},
		{"PDF document", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBE"}}]}]}`, "", "messages[0].content[0].type"},
		{"web search server tool", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, "", "tools[0].type"},
		{"five stop sequences", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"stop_sequences":["a","b","c","d","e"]}`, "", "stop_sequences"},
		{"image inside a tool result", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"url","url":"https://x"}}]}]}]}`, "", "messages[0].content[0].content[0].type"},
		{"thinking block in history", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"}]}]}`, "", "messages[1].content[0].type"},
		{"citations on a text block", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x","citations":[{"type":"char_location"}]}]}]}`, "", "messages[0].content[0].citations"},
		{"tool result after text in one turn", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"tool_result","tool_use_id":"t","content":"r"}]}]}`, "", "messages[0].content[1].type"},
		{"no max_tokens", `{"model":"c","messages":[{"role":"user","content":"x"}]}`, "", "max_tokens"},
		{"max_tokens 0", `{"model":"c","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, "", "max_tokens"},
		{"prefill", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"{"}]}`, "", "messages[1].role"},
		{"container", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"container":"c1"}`, "", "container"},
		{"body not JSON", `{"model":"c",`, "", "body"},
		{"body a string", `"hi"`, "", "body"},
		{"invalid UTF-8", "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", "", "body"},
		{"no messages", `{"model":"c","max_tokens":5,"messages":[]}`, "", "messages"},
		{"second message not an object", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"},"y"]}`, "", "messages[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MessagesToChatRequest([]byte(tc.in), ChatOptions{})
			checkTranslation(t, got, err, tc.want, tc.wantField)
		})
	}
	t.Run("max_tokens as max_completion_tokens for OpenAI itself", func(t *testing.T) {
		got, err := MessagesToChatRequest([]byte(`{"model":"claude","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`), ChatOptions{MaxCompletionTokens: true})
		checkTranslation(t, got, err, `{"model":"claude","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":100}`, "")
	})
}

// TestToolConversationRoundTrip: an OpenAI conversation with tool calls,
// translated to Anthropic and back, is the conversation it was.
func TestToolConversationRoundTrip(t *testing.T) {
	orig := `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"weather in Paris and the time?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},{"role":"tool","content":"sunny","tool_call_id":"call_1"},{"role":"tool","content":"noon","tool_call_id":"call_2"}],"max_tokens":300,"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}],"tool_choice":"auto"}`
	an, err := ChatToMessagesRequest([]byte(orig), 4096)
	if err != nil {
		t.Fatal(err)
	}
	back, err := MessagesToChatRequest(an.Body, ChatOptions{})
	if err != nil {
		t.Fatalf("back: %v (anthropic body %s)", err, an.Body)
	}
	if string(back.Body) != orig {
		t.Errorf("round trip\n got %s\nwant %s", back.Body, orig)
	}
	// And the other way: Anthropic → OpenAI → Anthropic.
	anOrig := `{"model":"c","system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":[{"type":"text","text":"weather?"}]},{"role":"assistant","content":[{"type":"text","text":"checking"},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"},{"type":"text","text":"thanks"}]}],"max_tokens":300,"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"get_weather"}}`
	oa, err := MessagesToChatRequest([]byte(anOrig), ChatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ChatToMessagesRequest(oa.Body, 4096)
	if err != nil {
		t.Fatalf("again: %v (openai body %s)", err, oa.Body)
	}
	if string(again.Body) != anOrig {
		t.Errorf("round trip\n got %s\nwant %s", again.Body, anOrig)
	}
}

func TestTranslatedRequestsAreJSON(t *testing.T) {
	// The translations above are compared as bytes; make sure they are
	// also well-formed objects with the model kept.
	got, err := ChatToMessagesRequest([]byte(`{"model":"route-x","messages":[{"role":"user","content":"\u003chi\u003e"}]}`), 7)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Model     string `json:"model"`
		MaxTokens int    `json:"max_tokens"`
	}
	if err := json.Unmarshal(got.Body, &v); err != nil || v.Model != "route-x" || v.MaxTokens != 7 {
		t.Errorf("body %s: %+v %v", got.Body, v, err)
	}
}

// TestManyToolResultsLinear: a run of tool messages merges into one turn
// in linear time (review F3: it was quadratic, 6.5 s for 40,000).
func TestManyToolResultsLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]}`)
	const n = 100000
	for range n {
		b.WriteString(`,{"role":"tool","tool_call_id":"a","content":"r"}`)
	}
	b.WriteString(`,{"role":"user","content":"y"}]}`)
	// Under a second linear; the quadratic scan took many minutes here
	// and ran into the test timeout (no timing is asserted).
	got, err := ChatToMessagesRequest([]byte(b.String()), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(got.Body), `"type":"tool_result"`); c != n {
		t.Errorf("%d tool results, want %d", c, n)
	}
}

func TestToolCallIDsAnthropicAccepts(t *testing.T) {
	tests := []struct{ name, openai, anthropic string }{
		{"OpenAI id kept", "call_abc-123", "call_abc-123"},
		{"Kimi id encoded", "functions.get_weather:0", "clawcage-x-66756e6374696f6e732e6765745f776561746865723a30"},
		{"id that looks encoded is encoded too", "clawcage-x-41", "clawcage-x-636c6177636167652d782d3431"},
		{"empty id", "", "clawcage-x-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := anthropicID(tc.openai); got != tc.anthropic {
				t.Errorf("anthropicID(%q) = %q, want %q", tc.openai, got, tc.anthropic)
			}
			if !anthropicIDChars(tc.anthropic) {
				t.Errorf("%q has characters Anthropic refuses", tc.anthropic)
			}
			if back := openAIID(tc.anthropic); back != tc.openai {
				t.Errorf("openAIID(%q) = %q, want %q", tc.anthropic, back, tc.openai)
			}
		})
	}
	if got := openAIID("toolu_01AbC"); got != "toolu_01AbC" {
		t.Errorf("an Anthropic id changed: %q", got)
	}

	// Through a conversation: a Kimi id in the history reaches Anthropic
	// encoded and comes back to an OpenAI target as it was.
	kimi := `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"functions.get_weather:0","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},{"role":"tool","content":"ok","tool_call_id":"functions.get_weather:0"},{"role":"user","content":"y"}],"max_tokens":5}`
	an, err := ChatToMessagesRequest([]byte(kimi), 4096)
	if err != nil {
		t.Fatal(err)
	}
	enc := anthropicID("functions.get_weather:0")
	if strings.Count(string(an.Body), `"`+enc+`"`) != 2 || strings.Contains(string(an.Body), "functions.get_weather:0") {
		t.Errorf("anthropic body %s", an.Body)
	}
	back, err := MessagesToChatRequest(an.Body, ChatOptions{})
	if err != nil || string(back.Body) != kimi {
		t.Errorf("back: %v\n got %s\nwant %s", err, back.Body, kimi)
	}
	// And in answers: a Kimi-style id from an OpenAI target reaches an
	// Anthropic client encoded, streamed or not.
	resp, err := ChatToMessagesResponse([]byte(`{"id":"c","model":"k","choices":[{"message":{"tool_calls":[{"id":"functions.get_weather:0","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`))
	if err != nil || !strings.Contains(string(resp), `"id":"`+enc+`"`) {
		t.Errorf("response %s (%v)", resp, err)
	}
	st := NewMessagesStream()
	out, _ := st.Write(nil, []byte(`data: {"id":"c","model":"k","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"functions.get_weather:0","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},"finish_reason":null}]}`+"\n\n"))
	if !strings.Contains(string(out), `"id":"`+enc+`"`) {
		t.Errorf("stream %s", out)
	}
}
