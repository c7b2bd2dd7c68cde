package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The control channel lets the supervisor hand a running component a new
// sandbox's listener, or take one away, without restarting it. It is one
// end of a SOCK_SEQPACKET socketpair the component inherits (so only the
// supervisor holds the other end; nothing is in the filesystem), carrying
// one JSON message per packet, with the listener as SCM_RIGHTS on "add".
//
//	supervisor → component  {"op":"add","id":N,"sandbox":S} + 1 listener
//	supervisor → component  {"op":"remove","id":N,"sandbox":S}
//	component → supervisor  {"op":"done","id":N[,"error":E]}  (answers N)
//	component → supervisor  {"op":"ready"}  (serving every inherited listener)

// EnvControlFD names the inherited descriptor of the control channel.
const EnvControlFD = "CLAWCAGE_CONTROL_FD"

// Control operations.
const (
	OpAdd    = "add"
	OpRemove = "remove"
	OpDone   = "done"
	OpReady  = "ready"
)

// ControlFileName is the name of both ends' *os.File (see ControlPair).
const ControlFileName = "clawcage-control"

// maxControlMessage bounds one control packet.
const maxControlMessage = 4096

// ControlMessage is one message on the control channel.
type ControlMessage struct {
	Op      string `json:"op"`
	ID      uint64 `json:"id,omitempty"`
	Sandbox string `json:"sandbox,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (m ControlMessage) check(nfiles int) error {
	switch m.Op {
	case OpAdd, OpRemove:
		want := 0
		if m.Op == OpAdd {
			want = 1
		}
		if nfiles != want {
			return fmt.Errorf("%s message with %d descriptors, want %d", m.Op, nfiles, want)
		}
		if err := checkNames([]string{m.Sandbox}, 1); err != nil {
			return fmt.Errorf("%s message: %w", m.Op, err)
		}
		if m.ID == 0 {
			return fmt.Errorf("%s message without an id", m.Op)
		}
	case OpDone, OpReady:
		if nfiles != 0 {
			return fmt.Errorf("%s message with %d descriptors, want none", m.Op, nfiles)
		}
	default:
		return fmt.Errorf("unknown control operation %q", m.Op)
	}
	return nil
}

// ControlPair returns a connected control channel: local stays with the
// caller, remote is for the child (ExportControl). Both are close-on-exec.
func ControlPair() (local *net.UnixConn, remote *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control channel: socketpair: %w", err)
	}
	lf := os.NewFile(uintptr(fds[0]), ControlFileName)
	remote = os.NewFile(uintptr(fds[1]), ControlFileName)
	c, err := net.FileConn(lf)
	lf.Close()
	if err != nil {
		remote.Close()
		return nil, nil, fmt.Errorf("control channel: %w", err)
	}
	return c.(*net.UnixConn), remote, nil
}

// ExportControl arranges for cmd's child to inherit f (the remote end of
// ControlPair) after the descriptors already in cmd.ExtraFiles, and names
// it in EnvControlFD. Call it after ExportListeners. The caller closes its
// copy of f once the child has started.
func ExportControl(cmd *exec.Cmd, f *os.File) {
	fd := firstInheritedFD + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	clean := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != EnvControlFD {
			clean = append(clean, kv)
		}
	}
	cmd.Env = append(clean, EnvControlFD+"="+strconv.Itoa(fd))
}

// InheritedControl returns the control channel a parent passed with
// ExportControl and removes EnvControlFD from the environment; nil without
// one. The descriptor must be a SOCK_SEQPACKET Unix socket.
func InheritedControl() (*net.UnixConn, error) {
	s, ok := os.LookupEnv(EnvControlFD)
	os.Unsetenv(EnvControlFD)
	if !ok {
		return nil, nil
	}
	fd, err := strconv.Atoi(s)
	if err != nil || fd < firstInheritedFD {
		return nil, fmt.Errorf("control channel: %s=%q: want a descriptor number ≥ %d", EnvControlFD, s, firstInheritedFD)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("control channel: descriptor %d: not a socket: %w", fd, err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("control channel: descriptor %d: socket type %d, want SOCK_SEQPACKET", fd, typ)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), ControlFileName)
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("control channel: descriptor %d is a %T", fd, c)
	}
	return uc, nil
}

// SendControl sends m, with ln's descriptor for OpAdd, as one packet. The
// caller keeps ln open; the receiver gets a duplicate.
func SendControl(conn *net.UnixConn, m ControlMessage, ln *os.File) error {
	n := 0
	if ln != nil {
		n = 1
	}
	if err := m.check(n); err != nil {
		return fmt.Errorf("send control message: %w", err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("send control message: %w", err)
	}
	var oob []byte
	if ln != nil {
		oob = unix.UnixRights(int(ln.Fd()))
	}
	_, _, err = conn.WriteMsgUnix(b, oob, nil)
	runtime.KeepAlive(ln)
	if err != nil {
		return fmt.Errorf("send control message %s %s: %w", m.Op, m.Sandbox, err)
	}
	return nil
}

// ReceiveControl reads one packet. For OpAdd it returns the listener, which
// must be a listening socket. It returns io.EOF when the peer has closed
// the channel. On error nothing stays open.
func ReceiveControl(conn *net.UnixConn) (ControlMessage, net.Listener, error) {
	buf := make([]byte, maxControlMessage+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	rc, err := conn.SyscallConn()
	if err != nil {
		return ControlMessage{}, nil, fmt.Errorf("receive control message: %w", err)
	}
	var n, oobn, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return ControlMessage{}, nil, fmt.Errorf("receive control message: %w", err)
	}
	fds, perr := parseRights(oob[:oobn])
	fail := func(err error) (ControlMessage, net.Listener, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return ControlMessage{}, nil, err
	}
	switch {
	case perr != nil:
		return fail(fmt.Errorf("receive control message: %w", perr))
	case flags&unix.MSG_CTRUNC != 0:
		return fail(errors.New("receive control message: control data truncated: descriptors were dropped"))
	case flags&unix.MSG_TRUNC != 0 || n > maxControlMessage:
		return fail(fmt.Errorf("receive control message: over %d bytes", maxControlMessage))
	case n == 0 && len(fds) == 0:
		return ControlMessage{}, nil, io.EOF
	}
	var m ControlMessage
	dec := json.NewDecoder(strings.NewReader(string(buf[:n])))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return fail(fmt.Errorf("receive control message: decode: %w", err))
	}
	if err := m.check(len(fds)); err != nil {
		return fail(fmt.Errorf("receive control message: %w", err))
	}
	if len(fds) == 0 {
		return m, nil, nil
	}
	lns, err := filesToListeners([]string{m.Sandbox}, []*os.File{os.NewFile(uintptr(fds[0]), m.Sandbox)})
	if err != nil {
		return ControlMessage{}, nil, fmt.Errorf("receive control message: %w", err)
	}
	return m, lns[m.Sandbox], nil
}

// ControlHandler is what a component does when the supervisor adds or
// removes a sandbox's listener.
type ControlHandler interface {
	// AddListener serves ln for sandbox. An error means the component does
	// not serve that sandbox normally (it must then refuse its requests,
	// never serve it unchecked); it is reported to the supervisor.
	AddListener(ctx context.Context, sandbox string, ln net.Listener) error
	// RemoveListener stops serving sandbox and closes its connections.
	RemoveListener(ctx context.Context, sandbox string) error
}

// ServeControl answers the supervisor's requests on conn with h until ctx
// ends (then it returns nil) or the channel fails or closes (then it
// returns the error; the component should exit and be restarted with its
// full listener set). It closes conn.
func ServeControl(ctx context.Context, conn *net.UnixConn, h ControlHandler) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	for {
		m, ln, err := ReceiveControl(conn)
		if ctx.Err() != nil {
			if ln != nil {
				ln.Close()
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("control channel: %w", err)
		}
		var herr error
		switch m.Op {
		case OpAdd:
			herr = h.AddListener(ctx, m.Sandbox, ln)
		case OpRemove:
			herr = h.RemoveListener(ctx, m.Sandbox)
		default:
			return fmt.Errorf("control channel: unexpected %q from the supervisor", m.Op)
		}
		reply := ControlMessage{Op: OpDone, ID: m.ID}
		if herr != nil {
			reply.Error = herr.Error()
		}
		if err := SendControl(conn, reply, nil); err != nil {
			return fmt.Errorf("control channel: %w", err)
		}
	}
}

// ReportReady tells the supervisor that the component serves every
// listener it inherited.
func ReportReady(conn *net.UnixConn) error {
	return SendControl(conn, ControlMessage{Op: OpReady}, nil)
}
