// Package xlate translates model requests and responses between the OpenAI
// chat completions format (/v1/chat/completions) and the Anthropic Messages
// format (/v1/messages), in both directions, so that a route's fallback
// chain can mix provider kinds. It is pure functions over bytes: request
// bodies, whole response bodies, and SSE streams fed chunk by chunk as they
// arrive (never buffered whole).
//
// What is translated: system/developer messages and the top-level system
// prompt; user, assistant and tool turns (consecutive same-role turns are
// merged where Anthropic requires alternation); text and image parts (data:
// URLs and base64 sources, http(s) URLs and url sources); function tools and
// tool_choice; assistant tool calls and tool results (an Anthropic tool
// result marked is_error reaches OpenAI as text starting "Error: ");
// max_tokens and max_completion_tokens (a default when absent, as Anthropic
// requires one); temperature (0 to 1), top_p, stop sequences, parallel tool
// use, the end user id; streaming and stream_options.include_usage; finish
// and stop reasons; usage including cached input tokens; response ids and
// models as the provider sent them; error bodies (their message).
//
// What is not: anything whose meaning the other format cannot carry makes
// the translation fail with an *Unsupported error naming the field, rather
// than being dropped. Among them: OpenAI n > 1, logprobs, audio and
// non-text modalities, response_format other than text, seed, penalties,
// logit_bias, reasoning_effort, strict or custom tools, temperature above
// 1, named participants; Anthropic thinking, top_k, documents, server tools
// (web search, code execution, ...), MCP servers, images in tool results,
// more than 4 stop sequences. Any field this package does not know is
// treated the same way. Cache-control hints, image detail and the OpenAI
// store/metadata/service_tier/prompt_cache_key/safety_identifier fields
// do not change the answer and are left out. Reasoning ("thinking") content
// in a response is not passed on. The other endpoints (responses,
// embeddings, completions, count_tokens) are not translated.
package xlate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Unsupported is the error of a request that uses something the other
// format cannot express faithfully.
type Unsupported struct {
	// Field is the JSON path of the offending field, e.g. "messages[2].content[0].type".
	Field string
	// Reason says why it cannot be translated.
	Reason string
}

func (e *Unsupported) Error() string { return e.Field + ": " + e.Reason }

func unsupported(field, format string, args ...any) error {
	return &Unsupported{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// object is a JSON object whose values are decoded on demand.
type object map[string]json.RawMessage

func parseObject(raw json.RawMessage, field string) (object, error) {
	var o object
	if err := json.Unmarshal(raw, &o); err != nil || o == nil {
		return nil, unsupported(field, "must be a JSON object")
	}
	return o, nil
}

// has reports whether key is present with a non-null value.
func (o object) has(key string) bool {
	v, ok := o[key]
	return ok && !isNull(v)
}

func isNull(v json.RawMessage) bool { return len(v) == 0 || string(v) == "null" }

// only fails when o has a non-null field outside allowed.
func (o object) only(field string, allowed ...string) error {
	for k, v := range o {
		if isNull(v) {
			continue
		}
		found := false
		for _, a := range allowed {
			if k == a {
				found = true
				break
			}
		}
		if !found {
			return unsupported(join(field, k), "has no equivalent in the other format")
		}
	}
	return nil
}

// str returns o[key] as a string ("" when absent or null).
func (o object) str(key, field string) (string, error) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", unsupported(join(field, key), "must be a string")
	}
	return s, nil
}

func (o object) boolean(key, field string) (bool, error) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return false, nil
	}
	var b bool
	if err := json.Unmarshal(v, &b); err != nil {
		return false, unsupported(join(field, key), "must be a boolean")
	}
	return b, nil
}

func (o object) array(key, field string) ([]json.RawMessage, error) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return nil, nil
	}
	var a []json.RawMessage
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, unsupported(join(field, key), "must be an array")
	}
	return a, nil
}

// number returns o[key] as a JSON number literal (nil when absent).
func (o object) number(key, field string) (json.RawMessage, float64, error) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return nil, 0, nil
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return nil, 0, unsupported(join(field, key), "must be a number")
	}
	return v, f, nil
}

func (o object) integer(key, field string) (int64, bool, error) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, false, unsupported(join(field, key), "must be an integer")
	}
	return n, true, nil
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func index(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// marshal encodes v without HTML escaping (text passes through as sent).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func mustMarshal(v any) []byte {
	b, err := marshal(v)
	if err != nil {
		panic(fmt.Sprintf("xlate: encoding %T: %v", v, err)) // only plain structs of strings and numbers reach here
	}
	return b
}

// ErrorMessage returns the message of a provider error body in either
// format ({"error":{"message":...}}), or a short description of a body
// that is not one.
func ErrorMessage(status int, body []byte) string {
	var e struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Message != "" {
		return e.Error.Message
	}
	s := string(bytes.TrimSpace(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return fmt.Sprintf("provider answered %d", status)
	}
	return fmt.Sprintf("provider answered %d: %s", status, strconv.Quote(s))
}
