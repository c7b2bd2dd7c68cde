package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The audit scan answers one question for `clawcage audit`: does this
// material, collected inside a sandbox and streamed out to the host, hold
// any provider key the vault holds? The keys never leave the router: the
// material comes to them, and the answer names only providers, key ids
// and the encoding that matched.
//
// It is a membership oracle for the keys, so it is served only on the
// admin socket (root or the router's own uid, PeerCheckListener), never on
// a sandbox-facing listener.

// MaxScanBody bounds one scan request's body. Callers split larger
// material into several requests.
const MaxScanBody = 32 << 20

// minEncodedNeedle: encoded fragments shorter than this match too easily
// by chance to count as evidence.
const minEncodedNeedle = 8

// ScanFinding is one key found in scanned material.
type ScanFinding struct {
	Provider string `json:"provider"`
	KeyID    string `json:"key_id"`
	// Encoding is how the key appeared: raw, hex, HEX, base64, base64url
	// (at any byte alignment) or url (percent-encoded).
	Encoding string `json:"encoding"`
}

// ScanResponse is the body of POST /audit/scan. It never holds key bytes.
type ScanResponse struct {
	// Found is true when any key occurred in the body.
	Found bool `json:"found"`
	// Providers lists the providers whose keys were found, sorted.
	Providers []string `json:"providers"`
	// Findings lists each key found, once per encoding.
	Findings []ScanFinding `json:"findings"`
	// Scanned is the body's size in bytes.
	Scanned int64 `json:"scanned"`
	// Keys is how many keys the body was compared with. Zero keys means
	// the scan proves nothing; callers must treat it as inconclusive.
	Keys int `json:"keys"`
}

type scanNeedle struct {
	encoding string
	b        []byte
}

// keyNeedles are the forms of secret a leak would most likely take.
func keyNeedles(secret []byte) []scanNeedle {
	ns := []scanNeedle{{"raw", bytes.Clone(secret)}}
	add := func(enc string, b []byte) {
		if len(b) < minEncodedNeedle && len(b) < len(secret) {
			return
		}
		for _, n := range ns {
			if bytes.Equal(n.b, b) {
				return
			}
		}
		ns = append(ns, scanNeedle{enc, b})
	}
	h := []byte(hex.EncodeToString(secret))
	add("hex", h)
	add("HEX", bytes.ToUpper(h))
	add("url", []byte(url.QueryEscape(string(secret))))
	add("url", []byte(url.PathEscape(string(secret))))
	// A key embedded in a longer base64 stream encodes differently
	// depending on its offset modulo 3: keep only the characters made of
	// the key's bits alone.
	n := len(secret)
	for _, e := range []struct {
		name string
		enc  *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for shift := range 3 {
			s := e.enc.EncodeToString(append(make([]byte, shift), secret...))
			start, end := (8*shift+5)/6, 8*(shift+n)/6
			if end-start >= minEncodedNeedle {
				add(e.name, []byte(s[start:end]))
			}
		}
	}
	return ns
}

// scanBody compares body with every key of the vault.
func (h *handler) scanBody(body []byte) ScanResponse {
	resp := ScanResponse{Scanned: int64(len(body)), Providers: []string{}, Findings: []ScanFinding{}}
	for _, p := range h.deps.Vault.Providers() {
		for _, k := range h.deps.Vault.Keys(p) {
			resp.Keys++
			ns := keyNeedles(k.Secret)
			for _, nd := range ns {
				if bytes.Contains(body, nd.b) {
					resp.Findings = append(resp.Findings, ScanFinding{Provider: p, KeyID: k.ID, Encoding: nd.encoding})
					if !slices.Contains(resp.Providers, p) {
						resp.Providers = append(resp.Providers, p)
					}
				}
			}
			for _, nd := range ns {
				clear(nd.b)
			}
		}
	}
	slices.Sort(resp.Providers)
	resp.Found = len(resp.Findings) > 0
	return resp
}

// auditScan serves POST /audit/scan?label=L: the body (at most MaxScanBody
// bytes) is the material to scan; the label says what it is, for the log.
func (h *handler) auditScan(w http.ResponseWriter, r *http.Request) {
	if h.deps.Vault == nil {
		writeError(w, http.StatusServiceUnavailable, "vault not available")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxScanBody))
	defer clear(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "scan body is more than %d bytes: split it", MaxScanBody)
			return
		}
		writeError(w, http.StatusBadRequest, "read scan body: %v", err)
		return
	}
	resp := h.scanBody(body)
	h.log.Info("audit scan", "bytes", resp.Scanned, "keys", resp.Keys, "found", resp.Found,
		"providers", strings.Join(resp.Providers, ","), "label", r.URL.Query().Get("label"))
	writeJSON(w, http.StatusOK, resp)
}

// Scan asks the router whether body holds any of its keys. label says what
// the body is ("sandbox demo: environment"); it is logged, never scanned.
func (c *Client) Scan(ctx context.Context, label string, body []byte) (ScanResponse, error) {
	var r ScanResponse
	err := c.do(ctx, http.MethodPost, "/audit/scan?label="+url.QueryEscape(label), body, &r)
	return r, err
}
