package pid1

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// execServer starts commands in the running sandbox on the host's request
// (see execproto.go). The commands carry the very same Landlock domain,
// seccomp filter, cgroup namespace, empty capability bounding set,
// securebits and no_new_privs as the sandbox's own command, not a copy of
// them: they may signal the command and reach its abstract sockets exactly
// as the command's own children could, and nothing more. In the Go
// implementation they are forked by the locked, confined thread that
// started the command (serveForks on that thread); after the C start-up
// the whole process is confined and serveForks runs on any thread.
type execServer struct {
	c     *Config
	fd    int // PID 1's end of the exec channel
	forks chan forkRequest

	mu   sync.Mutex       // held across fork+register and by the reaper
	live map[int]chan int // pid -> exit status, for started commands

	forked chan struct{} // a command was started (reapForks waits on it)
}

// forkRequest is a command for the confined thread to start.
type forkRequest struct {
	req   *ExecRequest
	files [3]int // stdin, stdout, stderr
	reply chan forkResult
}

type forkResult struct {
	pid, pidfd int
	exited     chan int
	err        error
	code       int
}

// newExecServer returns the exec server for c, or nil if the host gave
// PID 1 no exec channel.
func newExecServer(c *Config) *execServer {
	if c.ExecFD <= 0 {
		return nil
	}
	return &execServer{c: c, fd: c.ExecFD, forks: make(chan forkRequest), live: map[int]chan int{}, forked: make(chan struct{}, 1)}
}

// serveForks runs on the confined thread once the sandbox's command has
// started, and never returns: it starts every requested command from that
// thread.
func (s *execServer) serveForks() {
	for fr := range s.forks {
		fr.reply <- s.fork(fr)
	}
}

// fork starts one command; it runs on the confined thread.
func (s *execServer) fork(fr forkRequest) forkResult {
	r := fr.req
	env := mergeExecEnv(s.c.Env, r)
	path, err := lookPath(r.Argv[0], envValue(env, "PATH"))
	if err != nil {
		code := ExitNotFound
		if errors.Is(err, errNotExecutable) || errors.Is(err, unix.EACCES) {
			code = ExitNotExecutable
		}
		return forkResult{err: err, code: code}
	}
	dir := r.Dir
	if dir == "" {
		dir = WorkspaceDir
	}
	if fi, err := os.Stat(dir); err != nil {
		return forkResult{err: fmt.Errorf("working directory: %w", err), code: ExitSetupFailed}
	} else if !fi.IsDir() {
		return forkResult{err: fmt.Errorf("working directory %s: not a directory", dir), code: ExitSetupFailed}
	}
	pidfd := -1
	// Registered under the lock the reaper takes, so a command that exits
	// at once is not reaped before it is known.
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, err := syscall.ForkExec(path, r.Argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{uintptr(fr.files[0]), uintptr(fr.files[1]), uintptr(fr.files[2])},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(r.UID), Gid: uint32(r.UID), Groups: []uint32{}},
			Setsid:     true,  // a session of its own: no terminal of anyone else's
			Setctty:    r.TTY, // stdin (fd 0) is the session's own pty slave
			PidFD:      &pidfd,
		},
	})
	if err != nil {
		redisableDumps()
		code := ExitSetupFailed // EAGAIN (the pids limit), ENOMEM...
		switch {
		case errors.Is(err, unix.ENOENT):
			code = ExitNotFound
		case errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOEXEC) || errors.Is(err, unix.EPERM):
			code = ExitNotExecutable
		}
		return forkResult{err: fmt.Errorf("exec %s: %w", path, err), code: code}
	}
	redisableDumps()
	exited := make(chan int, 1)
	s.live[pid] = exited
	select {
	case s.forked <- struct{}{}:
	default:
	}
	return forkResult{pid: pid, pidfd: pidfd, exited: exited}
}

// reaped is called by PID 1's reaper for every child that is not the
// sandbox's command.
func (s *execServer) reaped(pid int, ws unix.WaitStatus) {
	if s == nil {
		return
	}
	var code int
	switch {
	case ws.Exited():
		code = ws.ExitStatus()
	case ws.Signaled():
		code = 128 + int(ws.Signal())
	default:
		return
	}
	s.mu.Lock()
	ch := s.live[pid]
	delete(s.live, pid)
	s.mu.Unlock()
	if ch != nil {
		ch <- code
	}
}

// serve reads exec requests until the host closes its end. The sockets
// are served by the runtime's poller: a goroutine waiting on one holds no
// P, so PID 1 (GOMAXPROCS small, its reaper blocked in wait4) answers at
// once instead of when sysmon retakes a P.
func (s *execServer) serve() {
	if err := unix.SetNonblock(s.fd, true); err != nil {
		return
	}
	ch := os.NewFile(uintptr(s.fd), "exec channel")
	defer ch.Close()
	rc, err := ch.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, MaxExecRequest+1)
	oob := make([]byte, unix.CmsgSpace(ExecFiles*4))
	for {
		var n, oobn, flags int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || (n == 0 && oobn == 0) {
			return // the host is gone
		}
		fds := rightsOf(oob[:oobn])
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n > MaxExecRequest || len(fds) != ExecFiles {
			if len(fds) > 0 {
				b, _ := json.Marshal(ExecMessage{Error: fmt.Sprintf("malformed exec request (%d bytes, %d descriptors)", n, len(fds)), Code: ExitSetupFailed})
				unix.Sendmsg(fds[0], b, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
			}
			closeFDs(fds)
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		go s.handle(msg, fds)
	}
}

// handle runs one exec session: start the command, forward signals, report
// its exit; kill it (and its process group) when the host goes away.
func (s *execServer) handle(msg []byte, fds []int) {
	unix.SetNonblock(fds[0], true)
	sess := os.NewFile(uintptr(fds[0]), "exec session")
	defer sess.Close()
	var req ExecRequest
	err := json.Unmarshal(msg, &req)
	if err == nil {
		err = checkExecRequest(&req)
	}
	if err != nil {
		closeFDs(fds[1:])
		sendExec(sess, ExecMessage{Error: "exec request: " + err.Error(), Code: ExitSetupFailed})
		return
	}
	reply := make(chan forkResult, 1)
	s.forks <- forkRequest{req: &req, files: [3]int{fds[1], fds[2], fds[3]}, reply: reply}
	res := <-reply
	closeFDs(fds[1:]) // the command has its own copies
	if res.err != nil {
		sendExec(sess, ExecMessage{Error: res.err.Error(), Code: res.code})
		return
	}
	defer unix.Close(res.pidfd)
	sendExec(sess, ExecMessage{Started: true, Pid: res.pid})

	hostGone := make(chan struct{})
	go func() {
		defer close(hostGone)
		b := make([]byte, 512)
		for {
			n, err := sess.Read(b) // one message; io.EOF once the host shut its side
			if err != nil || n == 0 {
				return
			}
			var m ExecMessage
			if json.Unmarshal(b[:n], &m) == nil && m.Signal > 0 && m.Signal < 65 {
				unix.PidfdSendSignal(res.pidfd, unix.Signal(m.Signal), nil, 0)
			}
		}
	}()
	var code int
	select {
	case code = <-res.exited:
	case <-hostGone:
		// The caller is gone or cancelled: the command must not outlive it.
		s.mu.Lock()
		if _, running := s.live[res.pid]; running {
			unix.Kill(-res.pid, unix.SIGKILL) // its process group (pgid = pid after setsid)
		}
		s.mu.Unlock()
		unix.PidfdSendSignal(res.pidfd, unix.SIGKILL, nil, 0)
		code = <-res.exited
	}
	sendExec(sess, ExecMessage{Exit: &code})
	if rc, err := sess.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) }) // ends the reader
	}
	<-hostGone
}

// checkExecRequest refuses what the host never sends.
func checkExecRequest(r *ExecRequest) error {
	switch {
	case len(r.Argv) == 0 || r.Argv[0] == "":
		return errors.New("no command")
	case r.UID != 0 && r.UID != UserUID:
		return fmt.Errorf("uid %d: only 0 and %d", r.UID, UserUID)
	case r.Dir != "" && !strings.HasPrefix(r.Dir, "/"):
		return fmt.Errorf("working directory %q: not absolute", r.Dir)
	}
	for _, s := range append(append(append([]string(nil), r.Argv...), r.Env...), r.Dir) {
		if strings.ContainsRune(s, 0) {
			return errors.New("NUL in argument, environment or directory")
		}
	}
	for _, kv := range r.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("environment %q: want KEY=VALUE", kv)
		}
	}
	return nil
}

// mergeExecEnv is the sandbox's environment with USER and LOGNAME of the
// exec uid, then the request's variables (later entries win).
func mergeExecEnv(base []string, r *ExecRequest) []string {
	user := UserName
	if r.UID == 0 {
		user = "root"
	}
	extra := append([]string{"USER=" + user, "LOGNAME=" + user}, r.Env...)
	out := append([]string(nil), base...)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if ok, _, _ := strings.Cut(old, "="); ok == k {
				out[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// sendExec writes one message on a session; a host that is gone is not an
// error worth more than dropping the message (EPIPE, no SIGPIPE for Go).
func sendExec(sess *os.File, m ExecMessage) {
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	sess.Write(b)
}

// rightsOf returns the descriptors of the SCM_RIGHTS messages in oob.
func rightsOf(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
