package netns

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxFiles is the most descriptors sent in one message (the kernel's
// SCM_MAX_FD is 253).
const MaxFiles = 253

// maxHeader bounds the JSON header of a listener message.
const maxHeader = 64 << 10

type fdHeader struct {
	Names []string `json:"names"`
}

// checkNames validates listener names for both SCM_RIGHTS messages and the
// LISTEN_FDNAMES environment variable.
func checkNames(names []string, nfiles int) error {
	if len(names) != nfiles {
		return fmt.Errorf("%d names for %d files", len(names), nfiles)
	}
	if nfiles == 0 || nfiles > MaxFiles {
		return fmt.Errorf("%d files: want 1 to %d", nfiles, MaxFiles)
	}
	seen := map[string]bool{}
	for i, n := range names {
		if n == "" || len(n) > 255 || strings.ContainsAny(n, ":=") || strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return fmt.Errorf("listener name %d %q: want 1 to 255 printable ASCII characters without ':', '=' or space", i, n)
		}
		if seen[n] {
			return fmt.Errorf("listener name %q given twice", n)
		}
		seen[n] = true
	}
	return nil
}

// SendListeners sends files (listening sockets, usually from
// ListenerFile) with their names over conn in one SCM_RIGHTS message. The
// caller keeps its own copies open; the receiver gets duplicates.
func SendListeners(conn *net.UnixConn, names []string, files []*os.File) error {
	if err := checkNames(names, len(files)); err != nil {
		return fmt.Errorf("send listeners: %w", err)
	}
	hdr, err := json.Marshal(fdHeader{Names: names})
	if err != nil {
		return fmt.Errorf("send listeners: %w", err)
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
	msg = append(msg, hdr...)
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	n, _, err := conn.WriteMsgUnix(msg, unix.UnixRights(fds...), nil)
	runtime.KeepAlive(files)
	if err != nil {
		return fmt.Errorf("send listeners %s: %w", strings.Join(names, ","), err)
	}
	if n < len(msg) { // a stream socket may take the rest separately
		if _, err := conn.Write(msg[n:]); err != nil {
			return fmt.Errorf("send listeners %s: %w", strings.Join(names, ","), err)
		}
	}
	return nil
}

// ReceiveFiles reads one message sent by SendListeners and returns the names
// and the received descriptors (close-on-exec). On error nothing stays open.
func ReceiveFiles(conn *net.UnixConn) ([]string, []*os.File, error) {
	buf := make([]byte, 4+maxHeader)
	oob := make([]byte, unix.CmsgSpace(MaxFiles*4))
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("receive listeners: %w", err)
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
		return nil, nil, fmt.Errorf("receive listeners: %w", err)
	}
	fds, perr := parseRights(oob[:oobn])
	fail := func(err error) ([]string, []*os.File, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, nil, fmt.Errorf("receive listeners: %w", err)
	}
	if perr != nil {
		return fail(perr)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fail(errors.New("control message truncated: descriptors were dropped"))
	}
	if n == 0 {
		return fail(io.EOF)
	}
	if n < 4 {
		if _, err := io.ReadFull(conn, buf[n:4]); err != nil {
			return fail(fmt.Errorf("short header: %w", err))
		}
		n = 4
	}
	size := int(binary.BigEndian.Uint32(buf[:4]))
	if size > maxHeader {
		return fail(fmt.Errorf("header of %d bytes is over the %d limit", size, maxHeader))
	}
	if n > 4+size {
		return fail(errors.New("unexpected bytes after the header"))
	}
	if n < 4+size {
		if flags&unix.MSG_TRUNC != 0 {
			return fail(errors.New("message truncated"))
		}
		if _, err := io.ReadFull(conn, buf[n:4+size]); err != nil {
			return fail(fmt.Errorf("short header: %w", err))
		}
	}
	var hdr fdHeader
	if err := json.Unmarshal(buf[4:4+size], &hdr); err != nil {
		return fail(fmt.Errorf("decode header: %w", err))
	}
	if err := checkNames(hdr.Names, len(fds)); err != nil {
		return fail(err)
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), hdr.Names[i])
	}
	return hdr.Names, files, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			bad = fmt.Errorf("unexpected control message level %d type %d", m.Header.Level, m.Header.Type)
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("parse SCM_RIGHTS: %w", err)
			continue
		}
		fds = append(fds, got...)
	}
	if bad != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, bad
	}
	return fds, nil
}

// ReceiveListeners reads one message sent by SendListeners and returns the
// listeners by name. Every descriptor must be a listening socket.
func ReceiveListeners(conn *net.UnixConn) (map[string]net.Listener, error) {
	names, files, err := ReceiveFiles(conn)
	if err != nil {
		return nil, err
	}
	return filesToListeners(names, files)
}

// filesToListeners turns files into listeners and closes the files (the
// listeners hold duplicates). On error nothing stays open.
func filesToListeners(names []string, files []*os.File) (map[string]net.Listener, error) {
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	out := make(map[string]net.Listener, len(files))
	for i, f := range files {
		err := checkListening(f)
		var ln net.Listener
		if err == nil {
			ln, err = net.FileListener(f)
		}
		if err != nil {
			for _, ln := range out {
				ln.Close()
			}
			return nil, fmt.Errorf("listener %q: %w", names[i], err)
		}
		out[names[i]] = ln
	}
	return out, nil
}

// checkListening verifies that f is a socket in the listening state.
func checkListening(f *os.File) error {
	v, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	if v != 1 {
		return errors.New("socket is not listening")
	}
	return nil
}

// ListenerFile returns a duplicate of ln's descriptor (close-on-exec), for
// sending or for exec.Cmd.ExtraFiles. ln stays usable.
func ListenerFile(ln net.Listener) (*os.File, error) {
	type filer interface{ File() (*os.File, error) }
	fl, ok := ln.(filer)
	if !ok {
		return nil, fmt.Errorf("listener %T on %s has no file descriptor", ln, ln.Addr())
	}
	f, err := fl.File()
	if err != nil {
		return nil, fmt.Errorf("duplicate listener %s: %w", ln.Addr(), err)
	}
	return f, nil
}
