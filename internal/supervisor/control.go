package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ControlSocketName is the control socket's file name in the state directory.
const ControlSocketName = "control.sock"

// ControlSocketPath returns <stateDir>/control.sock.
func ControlSocketPath(stateDir string) string { return filepath.Join(stateDir, ControlSocketName) }

// StatusResponse is the body of GET /v1/status.
type StatusResponse struct {
	Time       time.Time `json:"time"`
	PID        int       `json:"pid"`
	Components []Status  `json:"components"`
}

// ControlServer serves the supervisor's JSON API over a Unix socket that
// only root may connect to: the socket is mode 0600 and every connection's
// SO_PEERCRED uid is checked, so a mistake in the file mode alone does not
// open it.
type ControlServer struct {
	path string
	ln   net.Listener
	mux  *http.ServeMux
	log  *slog.Logger
}

// NewControlServer listens on path (removing a stale socket left there) and
// registers GET /v1/status for sup. More handlers can be added with Handle
// before Serve.
func NewControlServer(path string, sup *Supervisor, log *slog.Logger) (*ControlServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: a %v is in the way", path, st.Mode().Type())
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another supervisor is running on this state directory", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict control socket: %w", err)
	}
	cs := &ControlServer{path: path, ln: &peerCheckListener{Listener: ln, log: log}, mux: http.NewServeMux(), log: log}
	cs.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, StatusResponse{Time: time.Now().UTC(), PID: os.Getpid(), Components: sup.Status()})
	})
	return cs, nil
}

// Handle registers an extra handler (for example POST /v1/sandboxes).
func (cs *ControlServer) Handle(pattern string, h http.Handler) { cs.mux.Handle(pattern, h) }

// Path returns the socket path.
func (cs *ControlServer) Path() string { return cs.path }

// Serve answers requests until ctx ends, then closes the socket.
func (cs *ControlServer) Serve(ctx context.Context) error {
	srv := &http.Server{Handler: cs.mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(cs.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("control socket: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// peerCheckListener drops connections from any uid but root's.
type peerCheckListener struct {
	net.Listener
	log *slog.Logger
}

func (l *peerCheckListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cred, err := PeerCred(c)
		if err == nil && cred.Uid == 0 {
			return c, nil
		}
		if err != nil {
			l.log.Warn("control socket connection refused", "reason", err.Error())
		} else {
			l.log.Warn("control socket connection refused", "reason", "peer is not root", "pid", cred.Pid, "uid", cred.Uid)
		}
		c.Close()
	}
}

// PeerCred returns the SO_PEERCRED credentials of a Unix socket connection.
func PeerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("peer credentials: %T is not a Unix socket", c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("peer credentials: %w", cerr)
	}
	return cred, nil
}

// Client returns an HTTP client that talks to the control socket at path;
// request URLs use the host "clawcage", e.g. http://clawcage/v1/status.
func Client(path string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return new(net.Dialer).DialContext(ctx, "unix", path)
			},
		},
	}
}

// FetchStatus asks the supervisor behind the control socket at path for the
// status of its components.
func FetchStatus(ctx context.Context, path string) (*StatusResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://clawcage/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := Client(path).Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the supervisor at %s (is `clawcage up` running?): %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: supervisor answered %s: %s", resp.Status, body)
	}
	var st StatusResponse
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &st, nil
}
