package router

import (
	"bytes"
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
func redactSecrets(b []byte, secrets []Key) []byte {
	for _, k := range secrets {
		if len(k.Secret) >= minSecretLen && bytes.Contains(b, k.Secret) {
			b = bytes.ReplaceAll(b, k.Secret, []byte("[redacted]"))
		}
	}
	return b
}
