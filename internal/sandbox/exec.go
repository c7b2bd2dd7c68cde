package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/sandbox/pid1"
)

// ExecRequest says what to run inside a running sandbox (Process.Exec).
type ExecRequest struct {
	// Argv is the command and its arguments (PATH lookup inside); required.
	Argv []string
	// Env are KEY=VALUE variables added to the sandbox's own environment.
	Env []string
	// Root runs the command as uid 0 inside the user namespace instead of
	// UserUID (still no capabilities, an unprivileged host uid).
	Root bool
	// Dir is the working directory inside the sandbox; empty means
	// WorkspaceDir.
	Dir string
	// TTY says stdin is the slave of a pty the caller allocated for this
	// command (never the operator's terminal): it becomes the command's
	// controlling terminal, in a session of its own.
	TTY bool
	// Signals, if set, are forwarded to the command while it runs.
	Signals <-chan os.Signal
}

// openExecChannel creates the exec channel: the host end is kept in p (and
// closed by Wait), the returned end goes to PID 1 (see pid1.ExecRequest).
func (p *Process) openExecChannel() (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &SetupError{Step: "create exec channel", Err: err}
	}
	p.exec = socketFile(fds[0], "exec channel")
	p.defer_(p.exec.Close)
	return os.NewFile(uintptr(fds[1]), "exec channel (sandbox end)"), nil
}

// Exec runs req in the running sandbox with exactly the confinement of its
// command: PID 1 forks it from the very thread that started the command
// (same namespaces, cgroup, Landlock domain, seccomp filter, no
// capabilities, no_new_privs), as uid UserUID (or 0 with Root), in a new
// session, with the sandbox's environment plus req.Env. stdin, stdout and
// stderr become its standard streams; they must be pipes or a pty slave of
// the caller's own, never the operator's terminal. The caller keeps its
// copies and closes them when Exec returns.
//
// Exec returns the command's exit code (128+n if signal n killed it) once
// it has exited. When ctx is done the command and its process group are
// killed and Exec returns with ctx's error. A command that could not be
// started returns ExitSetupFailed, ExitNotExecutable or ExitNotFound and an
// error saying why.
func (p *Process) Exec(ctx context.Context, req ExecRequest, stdin, stdout, stderr *os.File) (int, error) {
	if p.exec == nil {
		return ExitSetupFailed, errors.New("exec: this sandbox was started without an exec channel")
	}
	preq, err := execRequest(req)
	if err != nil {
		return ExitSetupFailed, fmt.Errorf("exec: %w", err)
	}
	if stdin == nil || stdout == nil || stderr == nil {
		return ExitSetupFailed, errors.New("exec: stdin, stdout and stderr are required")
	}
	msg, err := json.Marshal(preq)
	if err != nil {
		return ExitSetupFailed, fmt.Errorf("exec: %w", err)
	}
	if len(msg) > pid1.MaxExecRequest {
		return ExitSetupFailed, fmt.Errorf("exec: request of %d bytes is over the %d limit (arguments and environment)", len(msg), pid1.MaxExecRequest)
	}
	sess, child, err := sessionPair()
	if err != nil {
		return ExitSetupFailed, fmt.Errorf("exec: %w", err)
	}
	defer sess.Close()
	// Fd puts the files in blocking mode, as a command expects its stdio.
	rights := unix.UnixRights(int(child.Fd()), int(stdin.Fd()), int(stdout.Fd()), int(stderr.Fd()))
	err = sendMsg(p.exec, msg, rights)
	runtime.KeepAlive(stdin)
	runtime.KeepAlive(stdout)
	runtime.KeepAlive(stderr)
	child.Close()
	if err != nil {
		return ExitSetupFailed, fmt.Errorf("exec: the sandbox is not running: %w", err)
	}

	// From here on, cancellation and signals go to PID 1, which handles
	// them once the command runs (a cancellation before that kills it as
	// soon as it is started).
	done := make(chan struct{})
	defer close(done)
	go func() {
		sigs := req.Signals
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				// PID 1 kills the command and its group, then reports.
				shutdownWrite(sess)
				return
			case s, ok := <-sigs:
				if !ok {
					sigs = nil
					continue
				}
				if n, ok := s.(syscall.Signal); ok {
					b, _ := json.Marshal(pid1.ExecMessage{Signal: int(n)})
					sess.Write(b)
				}
			}
		}
	}()
	first, err := readExecMessage(sess)
	if err != nil {
		return ExitSetupFailed, fmt.Errorf("exec: the sandbox did not answer: %w", err)
	}
	if !first.Started {
		code := first.Code
		if code == 0 {
			code = ExitSetupFailed
		}
		return code, fmt.Errorf("exec %s: %s", req.Argv[0], first.Error)
	}
	p.log.Debug("exec started", "argv0", req.Argv[0], "pid", first.Pid, "root", req.Root, "tty", req.TTY)

	for {
		m, err := readExecMessage(sess)
		if err != nil {
			// PID 1 is gone: the sandbox stopped, and its PID namespace
			// with every process in it.
			return 128 + int(syscall.SIGKILL), fmt.Errorf("exec %s: the sandbox stopped while the command ran: %w", req.Argv[0], err)
		}
		if m.Exit == nil {
			continue
		}
		if ctx.Err() != nil {
			return *m.Exit, fmt.Errorf("exec %s: killed: %w", req.Argv[0], context.Cause(ctx))
		}
		return *m.Exit, nil
	}
}

// execRequest validates req and turns it into PID 1's request.
func execRequest(req ExecRequest) (*pid1.ExecRequest, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, errors.New("no command given")
	}
	for i, a := range req.Argv {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("argument %d contains NUL", i)
		}
	}
	for _, kv := range req.Env {
		if err := checkEnv(kv); err != nil {
			return nil, err
		}
	}
	if req.Dir != "" && (!strings.HasPrefix(req.Dir, "/") || strings.ContainsRune(req.Dir, 0)) {
		return nil, fmt.Errorf("working directory %q: must be an absolute path inside the sandbox", req.Dir)
	}
	uid := UserUID
	if req.Root {
		uid = 0
	}
	return &pid1.ExecRequest{Argv: req.Argv, Env: req.Env, UID: uid, Dir: req.Dir, TTY: req.TTY}, nil
}

// sessionPair creates an exec session: the host's end, served by the
// runtime poller, and PID 1's end as a file to send.
func sessionPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("session socketpair: %w", err)
	}
	return socketFile(fds[0], "exec session"), os.NewFile(uintptr(fds[1]), "exec session (sandbox end)"), nil
}

// readExecMessage reads one message of a session; EOF when PID 1 closed it.
func readExecMessage(c *os.File) (*pid1.ExecMessage, error) {
	b := make([]byte, 64<<10)
	n, err := c.Read(b)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("EOF")
	}
	var m pid1.ExecMessage
	if err := json.Unmarshal(b[:n], &m); err != nil {
		return nil, fmt.Errorf("malformed message %q: %w", b[:n], err)
	}
	return &m, nil
}

// socketFile returns the socket fd as a non-blocking file served by the
// runtime poller (reads block only their goroutine, Close wakes them).
// Package net is kept out of this package: its place in the package
// initialization order would delay `sandbox run`'s fast path (see
// internal/sandbox/runcmd).
func socketFile(fd int, name string) *os.File {
	unix.SetNonblock(fd, true)
	return os.NewFile(uintptr(fd), name)
}

// sendMsg sends one message with the ancillary data oob on the socket f.
func sendMsg(f *os.File, msg, oob []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), msg, oob, nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return serr
}

// shutdownWrite shuts the socket f down for writing (PID 1 reads EOF).
func shutdownWrite(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
	}
}
