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
// requires one; max_completion_tokens for OpenAI's own API, see
// ChatOptions); temperature (0 to 1), top_p, stop sequences, parallel tool
// use, the end user id; streaming and stream_options.include_usage; finish
// and stop reasons; usage including cached input tokens; response ids and
// models as the provider sent them (tool-call ids Anthropic would refuse
// are hex-encoded behind a prefix on the Anthropic side and decoded back);
// error bodies (their message). OpenAI tool arguments cut by the output
// limit become an empty tool input with stop_reason max_tokens.
//
// What is not: anything whose meaning the other format cannot carry makes
// the translation fail with an *Unsupported error naming the field, rather
// than being dropped. Among them: OpenAI n > 1, logprobs, audio and
// non-text modalities, response_format other than text, seed, penalties,
// logit_bias, reasoning_effort, strict or custom tools, temperature above
// 1, named participants; Anthropic thinking, top_k, documents, server tools
// (web search, code execution, ...), MCP servers, images in tool results,
// more than 4 stop sequences, a missing max_tokens; in both, a conversation
// ending in an assistant turn (a prefill to Anthropic only) and a body
// that is not valid UTF-8. Any field this package does not know is treated
// the same way. Cache-control hints, image detail and the OpenAI
// store/metadata/service_tier/prompt_cache_key/safety_identifier fields
// do not change the answer and are left out. Reasoning ("thinking") content
// in a response is not passed on. The other endpoints (responses,
// embeddings, completions, count_tokens) are not translated.
package xlate

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/clawcage/clawcage/internal/jsonscan"
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

// The entry points check their input once with json.Valid; the helpers
// below then split objects and arrays and read strings without validating
// again (every encoding/json call re-scans the whole value it is given, so
// decoding level by level would scan a long text once per nesting level).

// parseObject splits the JSON object raw (valid JSON) into its fields; a
// repeated name keeps its last value, as encoding/json does.
func parseObject(raw json.RawMessage, field string) (object, error) {
	i := jsonscan.SkipWS(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, unsupported(field, "must be a JSON object")
	}
	o := make(object, 8)
	i = jsonscan.SkipWS(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return o, nil
	}
	for i < len(raw) && raw[i] == '"' {
		ke, err := jsonscan.SkipString(raw, i)
		if err != nil {
			break
		}
		key, ok := jsonscan.Unquote(raw[i:ke])
		if !ok {
			break
		}
		i = jsonscan.SkipWS(raw, ke)
		if i >= len(raw) || raw[i] != ':' {
			break
		}
		i = jsonscan.SkipWS(raw, i+1)
		ve, err := jsonscan.SkipValue(raw, i)
		if err != nil {
			break
		}
		o[key] = raw[i:ve]
		i = jsonscan.SkipWS(raw, ve)
		if i < len(raw) && raw[i] == ',' {
			i = jsonscan.SkipWS(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == '}' {
			return o, nil
		}
		break
	}
	return nil, unsupported(field, "is not well-formed JSON")
}

// asArray splits the JSON array raw (valid JSON) into its elements.
func asArray(raw json.RawMessage) ([]json.RawMessage, bool) {
	i := jsonscan.SkipWS(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return nil, false
	}
	a := []json.RawMessage{}
	i = jsonscan.SkipWS(raw, i+1)
	if i < len(raw) && raw[i] == ']' {
		return a, true
	}
	for i < len(raw) {
		ve, err := jsonscan.SkipValue(raw, i)
		if err != nil {
			return nil, false
		}
		a = append(a, raw[i:ve])
		i = jsonscan.SkipWS(raw, ve)
		if i < len(raw) && raw[i] == ',' {
			i = jsonscan.SkipWS(raw, i+1)
			continue
		}
		return a, i < len(raw) && raw[i] == ']'
	}
	return nil, false
}

// asString decodes raw when it is a JSON string.
func asString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	return jsonscan.Unquote(raw)
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
	s, ok := asString(v)
	if !ok {
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
	a, ok := asArray(v)
	if !ok {
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

// idPrefix marks an Anthropic tool-use id that encodes an OpenAI tool-call
// id Anthropic would refuse (it accepts only [A-Za-z0-9_-]+, while e.g.
// Kimi K2 on vLLM writes "functions.get_weather:0").
const idPrefix = "clawcage-x-"

// anthropicID is the Anthropic form of an OpenAI tool-call id: the id
// itself when Anthropic accepts it, else idPrefix and its hex encoding.
// openAIID undoes it, so ids survive any number of round trips.
func anthropicID(id string) string {
	if id != "" && !strings.HasPrefix(id, idPrefix) && anthropicIDChars(id) {
		return id
	}
	return idPrefix + hex.EncodeToString([]byte(id))
}

// openAIID is the OpenAI form of an Anthropic tool-use id (see anthropicID).
func openAIID(id string) string {
	if rest, ok := strings.CutPrefix(id, idPrefix); ok {
		if b, err := hex.DecodeString(rest); err == nil {
			return string(b)
		}
	}
	return id
}

func anthropicIDChars(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
