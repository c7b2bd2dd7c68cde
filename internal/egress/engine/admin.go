package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/clawcage/clawcage/internal/egress/approvals"
)

// ApproveRequest is the body of POST /v1/queue/{id}/approve.
type ApproveRequest struct {
	Mode     string `json:"mode"` // once, for, always
	Duration string `json:"duration,omitempty"`
}

// AllowRequest is the body of POST /v1/sandboxes/{sandbox}/allow.
type AllowRequest struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Mode     string `json:"mode,omitempty"`
	Duration string `json:"duration,omitempty"`
}

// PresetRequest is the body of POST /v1/sandboxes/{sandbox}/presets.
type PresetRequest struct {
	Preset string `json:"preset"`
}

type apiError struct {
	Error string `json:"error"`
}

// ListenAdmin creates the admin socket in dir (mode 0600), replacing a
// stale one.
func ListenAdmin(dir string) (net.Listener, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	path := SocketPath(dir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: another policy engine is serving it", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// AdminHandler returns the admin API.
func (e *Engine) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sandboxes/{sandbox}", func(w http.ResponseWriter, r *http.Request) {
		v, err := e.Show(r.PathValue("sandbox"))
		reply(w, v, err)
	})
	mux.HandleFunc("GET /v1/queue", func(w http.ResponseWriter, r *http.Request) {
		q, err := e.Pending(r.Context())
		if q == nil {
			q = []approvals.Entry{}
		}
		reply(w, q, err)
	})
	mux.HandleFunc("POST /v1/queue/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		var req ApproveRequest
		if !decode(w, r, &req) {
			return
		}
		d, err := parseDuration(req.Mode, req.Duration)
		if err != nil {
			reply(w, nil, err)
			return
		}
		g, err := e.Approve(r.Context(), r.PathValue("id"), req.Mode, d)
		reply(w, g, err)
	})
	mux.HandleFunc("POST /v1/queue/{id}/reject", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"rejected": r.PathValue("id")}, e.Reject(r.Context(), r.PathValue("id")))
	})
	mux.HandleFunc("POST /v1/sandboxes/{sandbox}/allow", func(w http.ResponseWriter, r *http.Request) {
		var req AllowRequest
		if !decode(w, r, &req) {
			return
		}
		d, err := parseDuration(req.Mode, req.Duration)
		if err != nil {
			reply(w, nil, err)
			return
		}
		g, err := e.Allow(r.Context(), r.PathValue("sandbox"), req.Host, req.Port, req.Mode, d)
		reply(w, g, err)
	})
	mux.HandleFunc("POST /v1/sandboxes/{sandbox}/presets", func(w http.ResponseWriter, r *http.Request) {
		var req PresetRequest
		if !decode(w, r, &req) {
			return
		}
		g, err := e.AddPreset(r.Context(), r.PathValue("sandbox"), req.Preset)
		reply(w, g, err)
	})
	mux.HandleFunc("DELETE /v1/grants/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"revoked": r.PathValue("id")}, e.Revoke(r.Context(), r.PathValue("id")))
	})
	return mux
}

func parseDuration(mode, s string) (time.Duration, error) {
	if mode != ModeFor {
		if s != "" {
			return 0, fmt.Errorf("a duration is only valid with mode %q", ModeFor)
		}
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return d, nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(apiError{"request body: " + err.Error()})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status := http.StatusBadRequest
		if approvals.IsNotFound(err) {
			status = http.StatusNotFound
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(apiError{err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// ServeAdmin serves the admin API on ln until ctx is done.
func (e *Engine) ServeAdmin(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: e.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Client talks to a policy engine's admin socket.
type Client struct {
	hc   *http.Client
	path string
}

// NewClient returns a client for the engine whose state directory is dir
// (<state>/policy).
func NewClient(dir string) *Client {
	path := SocketPath(dir)
	return &Client{path: path, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://policy-engine"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("policy engine admin socket %s: %w (is `clawcage up` or `clawcage policy-engine` running with this --state?)", c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		if json.Unmarshal(data, &ae) == nil && ae.Error != "" {
			return errors.New(ae.Error)
		}
		return fmt.Errorf("policy engine: %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Show returns a sandbox's effective policy.
func (c *Client) Show(ctx context.Context, sandbox string) (SandboxView, error) {
	var v SandboxView
	err := c.do(ctx, http.MethodGet, "/v1/sandboxes/"+pathEscape(sandbox), nil, &v)
	return v, err
}

// Pending returns the queue entries awaiting a decision.
func (c *Client) Pending(ctx context.Context) ([]approvals.Entry, error) {
	var q []approvals.Entry
	err := c.do(ctx, http.MethodGet, "/v1/queue", nil, &q)
	return q, err
}

// Approve approves a queue entry.
func (c *Client) Approve(ctx context.Context, id, mode string, d time.Duration) (approvals.Grant, error) {
	req := ApproveRequest{Mode: mode}
	if mode == ModeFor {
		req.Duration = d.String()
	}
	var g approvals.Grant
	err := c.do(ctx, http.MethodPost, "/v1/queue/"+pathEscape(id)+"/approve", req, &g)
	return g, err
}

// Reject rejects a queue entry.
func (c *Client) Reject(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/v1/queue/"+pathEscape(id)+"/reject", struct{}{}, nil)
}

// Allow grants a sandbox host:port.
func (c *Client) Allow(ctx context.Context, sandbox, host string, port int, mode string, d time.Duration) (approvals.Grant, error) {
	req := AllowRequest{Host: host, Port: port, Mode: mode}
	if mode == ModeFor {
		req.Duration = d.String()
	}
	var g approvals.Grant
	err := c.do(ctx, http.MethodPost, "/v1/sandboxes/"+pathEscape(sandbox)+"/allow", req, &g)
	return g, err
}

// AddPreset adds a preset to a sandbox's policy.
func (c *Client) AddPreset(ctx context.Context, sandbox, preset string) (approvals.Grant, error) {
	var g approvals.Grant
	err := c.do(ctx, http.MethodPost, "/v1/sandboxes/"+pathEscape(sandbox)+"/presets", PresetRequest{Preset: preset}, &g)
	return g, err
}

// Revoke removes a grant.
func (c *Client) Revoke(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/grants/"+pathEscape(id), nil, nil)
}

func pathEscape(s string) string { return url.PathEscape(s) }
