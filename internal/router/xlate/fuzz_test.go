package xlate

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// checkObject fails unless err is nil with b a JSON object, or err is set.
func checkObject(t *testing.T, b []byte, err error) {
	t.Helper()
	if err != nil {
		return
	}
	var o map[string]json.RawMessage
	if json.Unmarshal(b, &o) != nil {
		t.Fatalf("translation is not a JSON object: %s", b)
	}
}

func FuzzChatToMessagesRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":{"type":"function","function":{"name":"f"}},"stream":true,"stream_options":{"include_usage":true},"stop":["x"],"max_completion_tokens":5}`))
	f.Add([]byte(`{"model":"m","messages":[],"n":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ChatToMessagesRequest(in, 100)
		checkObject(t, r.Body, err)
		if err == nil {
			// What was translated translates back.
			if _, err := MessagesToChatRequest(r.Body, ChatOptions{}); err != nil {
				var un *Unsupported
				if !errors.As(err, &un) || un.Field != "stop_sequences" {
					t.Fatalf("translation %s does not translate back: %v", r.Body, err)
				}
			}
		}
	})
}

func FuzzMessagesToChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"c","max_tokens":5,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA"}}]},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"r","is_error":true}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"},"stream":true}`))
	f.Add([]byte(`{"model":"c","thinking":{"type":"enabled"}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := MessagesToChatRequest(in, ChatOptions{})
		checkObject(t, r.Body, err)
	})
}

func FuzzResponses(f *testing.F) {
	f.Add([]byte(`{"id":"msg_1","model":"c","content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}`))
	f.Add([]byte(`{"id":"c","model":"g","choices":[{"message":{"content":"x","tool_calls":[{"id":"x","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":9}}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := MessagesToChatResponse(in, 1)
		checkObject(t, b, err)
		b, err = ChatToMessagesResponse(in)
		checkObject(t, b, err)
	})
}

// fuzzStream checks that a translator's output does not depend on where
// the input is split.
func fuzzStream(t *testing.T, newT func() streamTranslator, in []byte, at uint16) {
	whole, werr := feed(newT(), in)
	i := int(at) % (len(in) + 1)
	split, serr := feed(newT(), in[:i], in[i:])
	if whole != split || (werr == nil) != (serr == nil) {
		t.Fatalf("split at %d changes the output:\n whole %q (%v)\n split %q (%v)", i, whole, werr, split, serr)
	}
}

func FuzzChatStream(f *testing.F) {
	f.Add([]byte(sse(anStart, anTextStart, anPing, anDelta1, anDelta2, anStop0, anToolStart, anToolDelta1, anToolDelta2, anStop1, anMsgDeltaTU, anMsgStop)), uint16(100))
	f.Add([]byte(sse(anStart, anError)), uint16(3))
	f.Fuzz(func(t *testing.T, in []byte, at uint16) {
		fuzzStream(t, func() streamTranslator { return NewChatStream(true, 1) }, in, at)
	})
}

func FuzzMessagesStream(f *testing.F) {
	f.Add([]byte(sse(oaRole, oaHel, oaTool0, oaTool0a, oaTool0b, oaTool1, oaToolStop, oaUsageChk, oaDone)), uint16(77))
	f.Add([]byte(sse(oaRole, oaHel, oaStop)), uint16(5))
	f.Fuzz(func(t *testing.T, in []byte, at uint16) {
		fuzzStream(t, func() streamTranslator { return NewMessagesStream() }, in, at)
	})
}

// FuzzSplitters compares the splitting helpers with encoding/json on valid
// JSON.
func FuzzSplitters(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[1,{"c":"d\"}"}],"e":"\u00e9\\","a":true}`))
	f.Add([]byte(` [ 1 , "x" , {"y":null} , [] ] `))
	f.Add([]byte(`"caf\u00e9 \ud83d\ude00"`))
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) || isNull(bytes.TrimSpace(in)) {
			return // null decodes to nothing in encoding/json; the helpers' callers check for it first
		}
		var wantObj map[string]json.RawMessage
		objErr := json.Unmarshal(in, &wantObj)
		gotObj, err := parseObject(in, "")
		if (objErr == nil) != (err == nil) {
			t.Fatalf("parseObject(%q) err %v, encoding/json err %v", in, err, objErr)
		}
		if err == nil {
			if len(gotObj) != len(wantObj) {
				t.Fatalf("parseObject(%q) = %d fields, want %d", in, len(gotObj), len(wantObj))
			}
			for k, v := range wantObj {
				if string(gotObj[k]) != string(v) {
					t.Fatalf("parseObject(%q)[%q] = %s, want %s", in, k, gotObj[k], v)
				}
			}
		}
		var wantArr []json.RawMessage
		arrErr := json.Unmarshal(in, &wantArr)
		gotArr, ok := asArray(in)
		if (arrErr == nil) != ok || (ok && len(gotArr) != len(wantArr)) {
			t.Fatalf("asArray(%q) = %d, %v; encoding/json %d, %v", in, len(gotArr), ok, len(wantArr), arrErr)
		}
		for i := range gotArr {
			if string(gotArr[i]) != string(wantArr[i]) {
				t.Fatalf("asArray(%q)[%d] = %s, want %s", in, i, gotArr[i], wantArr[i])
			}
		}
		var wantStr string
		strErr := json.Unmarshal(in, &wantStr)
		gotStr, ok := asString(in)
		if (strErr == nil) != ok || gotStr != wantStr {
			t.Fatalf("asString(%q) = %q, %v; encoding/json %q, %v", in, gotStr, ok, wantStr, strErr)
		}
	})
}
