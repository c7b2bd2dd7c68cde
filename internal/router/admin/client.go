package admin

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
	"syscall"
	"time"

	"github.com/clawcage/clawcage/internal/usage"
	"github.com/clawcage/clawcage/internal/vault"
)

// ErrRouterNotRunning is wrapped by client errors when nothing listens on
// the admin socket.
var ErrRouterNotRunning = errors.New("router not running")

// Client talks to a router's admin API over its Unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// Dial returns a client for the router of the stack in stateDir. It does
// not connect until a method is called.
func Dial(stateDir string) *Client {
	return DialSocket(SocketPath(stateDir))
}

// DialSocket returns a client for the admin socket at path.
func DialSocket(path string) *Client {
	c := &Client{socket: path}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
		MaxIdleConns:       1,
		IdleConnTimeout:    10 * time.Second,
	}
	c.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return c
}

// Socket is the admin socket path the client uses.
func (c *Client) Socket() string { return c.socket }

// APIError is a non-2xx answer from the admin API.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("router: %s (HTTP %d)", e.Message, e.Status)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://router"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var se syscall.Errno
		if errors.As(err, &se) && (se == syscall.ENOENT || se == syscall.ECONNREFUSED) {
			what := "no socket at " + c.socket
			if se == syscall.ECONNREFUSED {
				what = "nothing listening on " + c.socket
			}
			return fmt.Errorf("%w: %s; start `clawcage up` or `clawcage router`", ErrRouterNotRunning, what)
		}
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("router admin socket %s: permission denied (run as root or the router's user)", c.socket)
		}
		return fmt.Errorf("router admin socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("router admin: read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("router admin: decode %s %s response: %w", method, path, err)
	}
	return nil
}

// SetKey stores secret as a new key of provider.
func (c *Client) SetKey(ctx context.Context, provider string, secret []byte) (vault.KeyInfo, error) {
	var info vault.KeyInfo
	err := c.do(ctx, http.MethodPut, "/keys/"+url.PathEscape(provider), secret, &info)
	return info, err
}

// ListKeys describes the stored keys (never their secrets).
func (c *Client) ListKeys(ctx context.Context) ([]vault.KeyInfo, error) {
	var r KeysResponse
	err := c.do(ctx, http.MethodGet, "/keys", nil, &r)
	return r.Keys, err
}

// RemoveKey removes provider's key id, or all of provider's keys if id is "".
func (c *Client) RemoveKey(ctx context.Context, provider, id string) ([]vault.KeyInfo, error) {
	path := "/keys/" + url.PathEscape(provider)
	if id != "" {
		path += "/" + url.PathEscape(id)
	}
	var r RemoveResponse
	err := c.do(ctx, http.MethodDelete, path, nil, &r)
	return r.Removed, err
}

// RotateMasterKey re-seals every key under a new master key and returns
// the keys with their new fingerprints.
func (c *Client) RotateMasterKey(ctx context.Context) ([]vault.KeyInfo, error) {
	var r KeysResponse
	err := c.do(ctx, http.MethodPost, "/vault/rotate", nil, &r)
	return r.Keys, err
}

// Usage returns the usage summary for f.
func (c *Client) Usage(ctx context.Context, f usage.Filter) ([]usage.SummaryRow, error) {
	q := url.Values{}
	if f.Sandbox != "" {
		q.Set("sandbox", f.Sandbox)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	path := "/usage"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var r UsageResponse
	err := c.do(ctx, http.MethodGet, path, nil, &r)
	return r.Rows, err
}

// Metrics returns the Prometheus exposition text.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var data []byte
	err := c.do(ctx, http.MethodGet, "/metrics", nil, &data)
	return data, err
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }
