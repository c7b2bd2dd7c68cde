package router

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"unsafe"
)

// Inbound headers are allow-listed: anything the sandbox sends that is not
// here (Authorization, x-api-key, api-key, Cookie, Proxy-Authorization,
// x-goog-api-key, OpenAI-Organization, ...) never reaches a provider.
var inboundAllowed = map[string]bool{
	"Content-Type":      true,
	"Accept":            true,
	"User-Agent":        true,
	"Anthropic-Version": true,
	"Anthropic-Beta":    true,
	"Openai-Beta":       true,
	"Idempotency-Key":   true,
}

// inboundAllowedPrefix are SDK metadata headers (runtime, retry count).
const inboundAllowedPrefix = "X-Stainless-"

// copyInbound copies the allowed headers of in to out. The value slices
// are shared, not copied: neither side modifies them.
// dialectHeaders are allowed inbound headers that belong to one dialect;
// a translated request does not carry them to the other provider (an
// Anthropic-Beta header would change how the provider reads a body the
// translator wrote).
var dialectHeaders = map[string]bool{"Anthropic-Version": true, "Anthropic-Beta": true, "Openai-Beta": true}

// copyInboundNeutral is copyInbound for a translated request: without the
// dialect's own headers.
func copyInboundNeutral(out, in http.Header) {
	for k, vs := range in {
		if (inboundAllowed[k] || strings.HasPrefix(k, inboundAllowedPrefix)) && !dialectHeaders[k] {
			out[k] = vs
		}
	}
}

func copyInbound(out, in http.Header) {
	for k, vs := range in {
		if inboundAllowed[k] || strings.HasPrefix(k, inboundAllowedPrefix) {
			out[k] = vs
		}
	}
}

// Outbound (response) headers are allow-listed as well: Set-Cookie,
// openai-organization, openai-project, anthropic-organization-id,
// request-id/x-request-id, cf-ray and everything else that could identify
// the account are dropped.
var outboundAllowed = map[string]bool{
	"Content-Type":   true,
	"Retry-After":    true,
	"Retry-After-Ms": true,
	"Cache-Control":  true,
}

var outboundAllowedPrefixes = []string{"X-Ratelimit-", "Anthropic-Ratelimit-"}

// copyOutbound copies the allowed headers of the provider's response to the
// client, dropping any whose value contains one of secrets.
func copyOutbound(out, in http.Header, secrets []Key) {
	for k, vs := range in {
		if !outboundAllowed[k] && !hasAnyPrefix(k, outboundAllowedPrefixes) {
			continue
		}
		clean := true
		for _, v := range vs {
			if containsSecretString(v, secrets) {
				clean = false
				break
			}
		}
		if clean {
			out[k] = vs // shared: the provider's response headers are not modified
		}
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// minSecretLen guards against redacting everything when a key is absurdly
// short (a misconfiguration the vault refuses anyway).
const minSecretLen = 8

func containsSecret(b []byte, secrets []Key) bool {
	for _, k := range secrets {
		if len(k.Secret) >= minSecretLen && bytes.Contains(b, k.Secret) {
			return true
		}
	}
	return false
}

// containsSecretString is containsSecret on a string, without copying the
// string or (worse) the secret into a new allocation.
func containsSecretString(s string, secrets []Key) bool {
	return containsSecret(unsafe.Slice(unsafe.StringData(s), len(s)), secrets)
}

// redactSecrets replaces every occurrence of a secret in b.
// redactErrorBody redacts keys in a provider's error body both as raw
// bytes and as its JSON strings decode: a key written with JSON escapes
// (\u0073k-..., \/) is the key to any client that decodes the body. Only
// a body whose decoded strings hold a key is re-encoded.
func redactErrorBody(b []byte, secrets []Key) []byte {
	b = redactSecrets(b, secrets)
	if bytes.IndexByte(b, '\\') < 0 || len(secrets) == 0 {
		return b
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		return b
	}
	v, changed := redactValue(v, secrets)
	if !changed {
		return b
	}
	out, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"error":{"message":"[redacted]"}}`)
	}
	return out
}

// redactValue replaces keys in the strings (and object names) of a
// decoded JSON value.
func redactValue(v any, secrets []Key) (any, bool) {
	switch x := v.(type) {
	case string:
		if containsSecretString(x, secrets) {
			return string(redactSecrets([]byte(x), secrets)), true
		}
	case []any:
		changed := false
		for i := range x {
			var c bool
			x[i], c = redactValue(x[i], secrets)
			changed = changed || c
		}
		return x, changed
	case map[string]any:
		changed := false
		for k, e := range x {
			e, c := redactValue(e, secrets)
			if containsSecretString(k, secrets) {
				delete(x, k)
				k, c = string(redactSecrets([]byte(k), secrets)), true
			}
			x[k] = e
			changed = changed || c
		}
		return x, changed
	}
	return v, false
}

func redactSecrets(b []byte, secrets []Key) []byte {
	for _, k := range secrets {
		if len(k.Secret) >= minSecretLen && bytes.Contains(b, k.Secret) {
			b = bytes.ReplaceAll(b, k.Secret, []byte("[redacted]"))
		}
	}
	return b
}
