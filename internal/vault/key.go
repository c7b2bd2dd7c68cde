package vault

import (
	"fmt"
	"io"
	"log/slog"
	"time"
)

// redacted is what every formatting path prints instead of secret bytes.
const redacted = "[REDACTED]"

// Secret is decrypted key material. Its underlying type is []byte, so it
// can be passed wherever a []byte is expected, but every formatting path
// (fmt verbs, slog, JSON, text marshalling) prints "[REDACTED]" instead of
// its bytes. Converting it yourself (string(s)) bypasses that: only do so
// to build the outgoing provider request.
type Secret []byte

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return "vault.Secret(" + redacted + ")" }

// Format implements fmt.Formatter for every verb (%s %v %x %q %d ...).
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON keeps the secret out of JSON (encoding/json would base64 it).
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText keeps the secret out of text encodings.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Key is one decrypted provider key as handed to the router.
//
// Secret is a view of mlocked memory owned by the Vault: it is valid until
// the key is removed or the Vault is closed, after which it reads as zeros.
// Do not copy it into long-lived memory; build the outgoing header from it
// per request.
type Key struct {
	// ID is the key's vault id, safe to log.
	ID string
	// Secret is the key material; it formats as "[REDACTED]".
	Secret Secret
}

// String implements fmt.Stringer without the secret.
func (k Key) String() string { return "vault.Key{ID:" + k.ID + " Secret:" + redacted + "}" }

// GoString implements fmt.GoStringer without the secret.
func (k Key) GoString() string { return k.String() }

// Format implements fmt.Formatter: every verb prints String().
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// LogValue implements slog.LogValuer: the id only.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", k.ID), slog.String("secret", redacted))
}

// KeyInfo describes a stored key without revealing it.
type KeyInfo struct {
	// Provider is the provider name the key belongs to (as in the config).
	Provider string `json:"provider"`
	// ID identifies the key within the vault.
	ID string `json:"id"`
	// Fingerprint is a keyed hash prefix (HMAC-SHA-256 under a key derived
	// from the master key): it tells keys apart but cannot be brute-forced
	// back to a short secret without the master key.
	Fingerprint string `json:"fingerprint"`
	// Created is when the key was stored.
	Created time.Time `json:"created"`
}
