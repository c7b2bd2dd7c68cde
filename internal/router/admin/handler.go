// Package admin is the privacy router's operator API, served on the admin
// Unix socket <state>/router/admin.sock: key management (the only way a
// provider key enters the vault), the usage summary and Prometheus metrics.
// It also holds the client the CLI uses and the peer-credential check the
// socket's listener applies. It never returns key material.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clawcage/clawcage/internal/usage"
	"github.com/clawcage/clawcage/internal/vault"
)

// Deps are what the admin API serves. Any may be nil; its endpoints then
// answer 503.
type Deps struct {
	Vault   *vault.Vault
	Ledger  *usage.Ledger
	Metrics prometheus.Gatherer
	Logger  *slog.Logger
}

// KeysResponse is the body of GET /keys.
type KeysResponse struct {
	Keys []vault.KeyInfo `json:"keys"`
}

// RemoveResponse is the body of DELETE /keys/{provider}[/{id}].
type RemoveResponse struct {
	Removed []vault.KeyInfo `json:"removed"`
}

// UsageResponse is the body of GET /usage.
type UsageResponse struct {
	// Since echoes the filter's start (zero: from the beginning).
	Since time.Time          `json:"since"`
	Rows  []usage.SummaryRow `json:"rows"`
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

type handler struct {
	deps    Deps
	log     *slog.Logger
	metricz http.Handler // nil: no metrics
}

// NewHandler returns the admin API:
//
//	PUT    /keys/{provider}       body: the secret (raw bytes) → 201 vault.KeyInfo
//	GET    /keys                  → KeysResponse (ids and fingerprints only)
//	DELETE /keys/{provider}       all of provider's keys → RemoveResponse
//	DELETE /keys/{provider}/{id}  one key → RemoveResponse
//	POST   /vault/rotate          re-seal every key under a new master key → KeysResponse
//	GET    /usage?sandbox=&since= since: RFC 3339 time or Go duration → UsageResponse
//	GET    /metrics               Prometheus exposition: Deps.Metrics plus clawcage_vault_keys{provider}
//	                              and clawcage_vault_memory_locked
func NewHandler(d Deps) http.Handler {
	h := &handler{deps: d, log: d.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.log = h.log.With("component", "router-admin")
	if g := gatherer(d); g != nil {
		h.metricz = promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelError)})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /keys/{provider}", h.setKey)
	mux.HandleFunc("GET /keys", h.listKeys)
	mux.HandleFunc("DELETE /keys/{provider}", h.removeKeys)
	mux.HandleFunc("DELETE /keys/{provider}/{id}", h.removeKeys)
	mux.HandleFunc("POST /vault/rotate", h.rotate)
	mux.HandleFunc("GET /usage", h.usage)
	mux.HandleFunc("GET /metrics", h.metrics)
	mux.HandleFunc("POST /audit/scan", h.auditScan) // scan.go
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, ErrorResponse{Error: fmt.Sprintf(format, args...)})
}

// statusOf maps vault errors to HTTP statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, vault.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, vault.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, vault.ErrClosed):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func (h *handler) setKey(w http.ResponseWriter, r *http.Request) {
	if h.deps.Vault == nil {
		writeError(w, http.StatusServiceUnavailable, "vault not available")
		return
	}
	provider := r.PathValue("provider")
	if err := vault.ValidateProvider(provider); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	// One fixed buffer (no growing copies left behind), zeroed when done.
	buf := make([]byte, vault.MaxSecretLen+1)
	defer clear(buf)
	n, err := io.ReadFull(r.Body, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		writeError(w, http.StatusBadRequest, "read secret: %v", err)
		return
	}
	secret := buf[:n]
	info, err := h.deps.Vault.Set(provider, secret)
	if err != nil {
		h.log.Warn("key not stored", "provider", provider, "reason", err.Error())
		writeError(w, statusOf(err), "store key for %s: %v", provider, err)
		return
	}
	h.log.Info("key stored", "provider", info.Provider, "key_id", info.ID, "fingerprint", info.Fingerprint)
	writeJSON(w, http.StatusCreated, info)
}

func (h *handler) listKeys(w http.ResponseWriter, _ *http.Request) {
	if h.deps.Vault == nil {
		writeError(w, http.StatusServiceUnavailable, "vault not available")
		return
	}
	writeJSON(w, http.StatusOK, KeysResponse{Keys: h.deps.Vault.List()})
}

func (h *handler) removeKeys(w http.ResponseWriter, r *http.Request) {
	if h.deps.Vault == nil {
		writeError(w, http.StatusServiceUnavailable, "vault not available")
		return
	}
	removed, err := h.deps.Vault.Delete(r.PathValue("provider"), r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), "%v", err)
		return
	}
	for _, k := range removed {
		h.log.Info("key removed", "provider", k.Provider, "key_id", k.ID, "fingerprint", k.Fingerprint)
	}
	writeJSON(w, http.StatusOK, RemoveResponse{Removed: removed})
}

func (h *handler) rotate(w http.ResponseWriter, _ *http.Request) {
	if h.deps.Vault == nil {
		writeError(w, http.StatusServiceUnavailable, "vault not available")
		return
	}
	if err := h.deps.Vault.RotateMasterKey(); err != nil {
		h.log.Error("master key rotation failed", "reason", err.Error())
		writeError(w, statusOf(err), "%v", err)
		return
	}
	keys := h.deps.Vault.List()
	h.log.Info("master key rotated", "keys", len(keys))
	writeJSON(w, http.StatusOK, KeysResponse{Keys: keys})
}

// ParseSince reads a usage start: empty (everything), an RFC 3339 time, or
// a duration back from now ("24h", "90m", "7d").
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if t.After(now.Add(time.Minute)) {
			return time.Time{}, fmt.Errorf("since %q is in the future", s)
		}
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time or a duration like 24h or 7d", s)
	}
	return now.Add(-d), nil
}

func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || fmt.Sprint(n) != days || n < 0 || n > 100*365 {
			return 0, errors.New("bad day count")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("bad duration")
	}
	return d, nil
}

func (h *handler) usage(w http.ResponseWriter, r *http.Request) {
	if h.deps.Ledger == nil {
		writeError(w, http.StatusServiceUnavailable, "usage ledger not available")
		return
	}
	q := r.URL.Query()
	since, err := ParseSince(q.Get("since"), time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	rows, err := h.deps.Ledger.Summary(r.Context(), usage.Filter{Sandbox: q.Get("sandbox"), Since: since})
	if err != nil {
		h.log.Error("usage summary failed", "reason", err.Error())
		writeError(w, http.StatusInternalServerError, "usage summary failed")
		return
	}
	writeJSON(w, http.StatusOK, UsageResponse{Since: since, Rows: rows})
}

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	if h.metricz == nil {
		writeError(w, http.StatusServiceUnavailable, "metrics not available")
		return
	}
	h.metricz.ServeHTTP(w, r)
}
