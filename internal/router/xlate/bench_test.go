package xlate

import (
	"strings"
	"testing"
)

// benchChat is a typical agent turn: system prompt, history with a tool
// call and its result, tools.
var benchChat = []byte(`{"model":"default","messages":[{"role":"system","content":"` + strings.Repeat("You are a careful assistant. ", 40) + `"},` +
	`{"role":"user","content":"weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},` +
	`{"role":"tool","tool_call_id":"call_1","content":"sunny"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"stream":true}`)

func BenchmarkChatToMessagesRequest(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChat)))
	for b.Loop() {
		if _, err := ChatToMessagesRequest(benchChat, 4096); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMessagesToChatRequest(b *testing.B) {
	r, err := ChatToMessagesRequest(benchChat, 4096)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(r.Body)))
	for b.Loop() {
		if _, err := MessagesToChatRequest(r.Body, ChatOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStream is an Anthropic stream of 100 text deltas.
var benchStream = []byte(anStart + anTextStart + strings.Repeat(anDelta1, 100) + anStop0 + anMsgDelta + anMsgStop)

func BenchmarkChatStream(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchStream)))
	var out []byte
	for b.Loop() {
		st := NewChatStream(true, 1)
		out, _ = st.Write(out[:0], benchStream)
		out, _ = st.Close(out)
	}
}

func BenchmarkMessagesStream(b *testing.B) {
	in := []byte(oaRole + strings.Repeat(oaHel, 100) + oaStop + oaUsageChk + oaDone)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	var out []byte
	for b.Loop() {
		st := NewMessagesStream()
		out, _ = st.Write(out[:0], in)
		out, _ = st.Close(out)
	}
}
