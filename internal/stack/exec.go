package stack

import (
	"bufio"
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

	"github.com/clawcage/clawcage/internal/netns"
	"github.com/clawcage/clawcage/internal/sandbox"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// ExecRequest says what to run inside a live sandbox.
type ExecRequest struct {
	Argv []string `json:"argv"`           // required
	Env  []string `json:"env,omitempty"`  // K=V added to the sandbox's own environment
	Root bool     `json:"root,omitempty"` // uid 0 inside the sandbox's user namespace
	Dir  string   `json:"dir,omitempty"`  // working directory inside the sandbox; default /sandbox
	TTY  bool     `json:"tty,omitempty"`  // stdin/stdout are one pty slave; the process gets it as controlling terminal
	// Signals, if set, are forwarded to the command while it runs (not part
	// of the request body).
	Signals <-chan os.Signal `json:"-"`
}

// ExecProtocol is the Upgrade token of POST /v1/sandboxes/{name}/exec.
//
// The client sends the ExecRequest as the JSON body with "Connection:
// Upgrade" and "Upgrade: clawcage-exec". The supervisor answers an error
// status with a JSON {"error": ...} body (404 unknown sandbox, 409 not
// running, 400 bad request), or 101 Switching Protocols; then the
// connection carries: from the client one message with the command's
// stdin, stdout and stderr attached (SCM_RIGHTS, netns.SendListeners with
// the names stdin, stdout, stderr), then JSON lines {"signal": N} to
// forward; from the supervisor one JSON line, execResult. The client
// closing its side (or dying) kills the command.
const ExecProtocol = "clawcage-exec"

// execStdio are the names of the descriptors the client sends.
var execStdio = []string{"stdin", "stdout", "stderr"}

// execResult is the supervisor's last line on an exec connection.
type execResult struct {
	Exit  *int   `json:"exit,omitempty"`
	Error string `json:"error,omitempty"`
	Code  int    `json:"code,omitempty"`
}

// execSignal is a client's line on an exec connection.
type execSignal struct {
	Signal int `json:"signal"`
}

// forwardable are the signals a client may forward to a command.
var forwardable = map[syscall.Signal]bool{
	syscall.SIGHUP: true, syscall.SIGINT: true, syscall.SIGQUIT: true, syscall.SIGTERM: true,
	syscall.SIGUSR1: true, syscall.SIGUSR2: true, syscall.SIGWINCH: true, syscall.SIGCONT: true,
	syscall.SIGTSTP: true, syscall.SIGALRM: true, syscall.SIGKILL: true,
}

// Exec runs req inside the live sandbox name of the stack whose state dir
// is stateDir, wiring the given files as its stdio (never pass the caller's
// own terminal; pass pipes or a pty slave), and returns the command's exit
// code (128+signal when killed). It returns when the command has exited or
// ctx is done (then the command is killed).
//
// When the command could not be run the error says why; the code is then 1
// if the supervisor refused (no such sandbox, not running, bad request) and
// 125, 126 or 127 if the sandbox could not start it (setup failed, not
// executable, not found). The caller keeps its copies of the files and
// closes them after Exec returns (a pipe's reader sees EOF only then).
func Exec(ctx context.Context, stateDir, name string, req ExecRequest, stdin, stdout, stderr *os.File) (int, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return 1, errors.New("exec: no command given")
	}
	if stdin == nil || stdout == nil || stderr == nil {
		return 1, errors.New("exec: stdin, stdout and stderr are required")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return 1, fmt.Errorf("exec: %w", err)
	}
	sock := supervisor.ControlSocketPath(stateDir)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return 1, fmt.Errorf("ask the supervisor at %s (is `clawcage up` running?): %w", sock, err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()

	// The handshake is bounded; the command's run is bounded by ctx only.
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	stopHandshake := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	hreq, err := http.NewRequest(http.MethodPost, "http://clawcage/v1/sandboxes/"+url.PathEscape(name)+"/exec", bytes.NewReader(body))
	if err != nil {
		stopHandshake()
		return 1, fmt.Errorf("exec: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", ExecProtocol)
	br := bufio.NewReader(conn)
	var resp *http.Response
	if err = hreq.Write(conn); err == nil {
		resp, err = http.ReadResponse(br, hreq)
	}
	if err != nil {
		stopHandshake()
		return 1, fmt.Errorf("exec in sandbox %s: %w", name, errors.Join(err, ctx.Err()))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		stopHandshake()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var e apiError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return 1, errors.New(e.Error)
		}
		return 1, fmt.Errorf("exec in sandbox %s: supervisor answered %s", name, resp.Status)
	}
	err = netns.SendListeners(conn, execStdio, []*os.File{stdin, stdout, stderr})
	if !stopHandshake() && ctx.Err() != nil {
		return 1, fmt.Errorf("exec in sandbox %s: %w", name, context.Cause(ctx))
	}
	if err != nil {
		return 1, fmt.Errorf("exec in sandbox %s: %w", name, err)
	}
	conn.SetDeadline(time.Time{})

	done := make(chan struct{})
	defer close(done)
	go func() {
		sigs := req.Signals
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				// The supervisor kills the command, then still reports.
				conn.CloseWrite()
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				return
			case s, ok := <-sigs:
				if !ok {
					sigs = nil
					continue
				}
				if n, ok := s.(syscall.Signal); ok && forwardable[n] {
					b, _ := json.Marshal(execSignal{Signal: int(n)})
					conn.Write(append(b, '\n'))
				}
			}
		}
	}()
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		if ctx.Err() != nil {
			return 128 + int(syscall.SIGKILL), fmt.Errorf("exec in sandbox %s: %w", name, context.Cause(ctx))
		}
		return 1, fmt.Errorf("exec in sandbox %s: the supervisor closed the connection: %w", name, err)
	}
	var res execResult
	if err := json.Unmarshal(line, &res); err != nil {
		return 1, fmt.Errorf("exec in sandbox %s: malformed result %q: %w", name, line, err)
	}
	switch {
	case res.Error != "" && res.Exit == nil:
		code := res.Code
		if code == 0 {
			code = 1
		}
		return code, errors.New(res.Error)
	case res.Exit == nil:
		return 1, fmt.Errorf("exec in sandbox %s: result without exit status", name)
	case ctx.Err() != nil:
		return *res.Exit, fmt.Errorf("exec in sandbox %s: killed: %w", name, context.Cause(ctx))
	case res.Error != "":
		return *res.Exit, errors.New(res.Error)
	}
	return *res.Exit, nil
}

// execer is a running sandbox that can run more commands
// (*sandbox.Process).
type execer interface {
	Exec(ctx context.Context, req sandbox.ExecRequest, stdin, stdout, stderr *os.File) (int, error)
}

// handleExec serves POST /v1/sandboxes/{name}/exec (see ExecProtocol). ctx
// lives as long as the stack: stopping it kills running commands.
func (r *runner) handleExec(ctx context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		name := hr.PathValue("name")
		if hr.Header.Get("Upgrade") != ExecProtocol {
			supervisor.WriteJSON(w, http.StatusBadRequest, apiError{Error: "exec: want Upgrade: " + ExecProtocol})
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, hr.Body, 1<<20))
		if err != nil {
			supervisor.WriteJSON(w, http.StatusBadRequest, apiError{Error: "exec: read request: " + err.Error()})
			return
		}
		var req ExecRequest
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			supervisor.WriteJSON(w, http.StatusBadRequest, apiError{Error: "exec: decode request: " + err.Error()})
			return
		}
		if len(req.Argv) == 0 || req.Argv[0] == "" {
			supervisor.WriteJSON(w, http.StatusBadRequest, apiError{Error: "exec: no command given"})
			return
		}
		ex, code, err := r.execTarget(name)
		if err != nil {
			supervisor.WriteJSON(w, code, apiError{Error: err.Error()})
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			supervisor.WriteJSON(w, http.StatusInternalServerError, apiError{Error: "exec: connection cannot be taken over"})
			return
		}
		c, brw, err := hj.Hijack()
		if err != nil {
			supervisor.WriteJSON(w, http.StatusInternalServerError, apiError{Error: "exec: " + err.Error()})
			return
		}
		defer c.Close()
		conn, ok := c.(*net.UnixConn)
		if !ok || brw.Reader.Buffered() > 0 {
			return // not a Unix socket, or bytes sent before the answer
		}
		r.serveExec(ctx, name, conn, ex, req)
	})
}

// execTarget finds the running sandbox name, or says why there is none.
func (r *runner) execTarget(name string) (execer, int, error) {
	r.mu.Lock()
	sn, ok := r.nets[name]
	r.mu.Unlock()
	if !ok {
		return nil, http.StatusNotFound, fmt.Errorf("no sandbox %s", name)
	}
	state := "unknown"
	for _, s := range r.sup.Status() {
		if s.Name == "sandbox/"+name {
			state = s.State
		}
	}
	sn.mu.Lock()
	p := sn.proc
	sn.mu.Unlock()
	if state != "running" || p == nil {
		return nil, http.StatusConflict, fmt.Errorf("sandbox %s is not running (state: %s)", name, state)
	}
	ex, ok := p.(execer)
	if !ok {
		return nil, http.StatusNotImplemented, fmt.Errorf("sandbox %s: this sandbox runtime cannot run commands in a live sandbox", name)
	}
	return ex, 0, nil
}

// serveExec runs one exec connection after the upgrade.
func (r *runner) serveExec(ctx context.Context, name string, conn *net.UnixConn, ex execer, req ExecRequest) {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+ExecProtocol+"\r\n\r\n"); err != nil {
		return
	}
	names, files, err := netns.ReceiveFiles(conn)
	if err != nil {
		writeExecResult(conn, execResult{Error: "exec: " + err.Error(), Code: 1})
		return
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(names) != len(execStdio) || names[0] != execStdio[0] || names[1] != execStdio[1] || names[2] != execStdio[2] {
		writeExecResult(conn, execResult{Error: fmt.Sprintf("exec: want the descriptors %v, got %v", execStdio, names), Code: 1})
		return
	}
	conn.SetDeadline(time.Time{})

	// The client's lines: signals to forward; its end of the connection
	// (EOF, or any error) ends the command.
	execCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 16)
	go func() {
		defer cancel()
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 256), 256)
		for sc.Scan() {
			var m execSignal
			if json.Unmarshal(sc.Bytes(), &m) != nil || !forwardable[syscall.Signal(m.Signal)] {
				continue
			}
			select {
			case sigs <- syscall.Signal(m.Signal):
			default:
			}
		}
	}()
	start := time.Now()
	r.log.Info("exec", "sandbox", name, "argv0", req.Argv[0], "args", len(req.Argv)-1, "root", req.Root, "tty", req.TTY)
	code, err := ex.Exec(execCtx, sandbox.ExecRequest{Argv: req.Argv, Env: req.Env, Root: req.Root, Dir: req.Dir, TTY: req.TTY, Signals: sigs},
		files[0], files[1], files[2])
	for _, f := range files {
		f.Close() // before the result: the client's readers see EOF once the command's copies are gone
	}
	res := execResult{Exit: &code}
	if err != nil {
		res.Error = fmt.Sprintf("sandbox %s: %v", name, err)
		if code == sandbox.ExitSetupFailed || code == sandbox.ExitNotExecutable || code == sandbox.ExitNotFound {
			if ctx.Err() == nil && execCtx.Err() == nil {
				res = execResult{Error: res.Error, Code: code}
			}
		}
	}
	r.log.Info("exec done", "sandbox", name, "argv0", req.Argv[0], "code", code, "duration", time.Since(start), "reason", errString(err))
	writeExecResult(conn, res)
}

func writeExecResult(conn *net.UnixConn, res execResult) {
	b, _ := json.Marshal(res)
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	conn.Write(append(b, '\n'))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
