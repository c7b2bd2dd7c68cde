//go:build cgo

package sandbox

/*
#cgo CFLAGS: -Wall -Wextra -O2
#include <stdlib.h>
#include "spawn.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// haveSpawn says PID 1 is started by the vfork spawner (spawn.c).
const haveSpawn = true

// spawnable says whether the spawner does everything cmd asks: the
// attributes run.go sets, nothing else (anything else goes to
// exec.Cmd.Start, which does all of them).
func spawnable(cmd *exec.Cmd) bool {
	a := cmd.SysProcAttr
	// A nil Env means the caller's environment to exec.Cmd, and an empty
	// Dir its directory: the spawner passes neither.
	// argv[0] is cmd.Args[0], never cmd.Path; the path is not looked up.
	if a == nil || cmd.Process != nil || len(cmd.ExtraFiles)+3 > C.CC_MAX_FDS || cmd.Dir == "" || cmd.Env == nil ||
		len(cmd.Args) == 0 || !filepath.IsAbs(cmd.Path) || cmd.Cancel != nil || cmd.WaitDelay != 0 || cmd.Err != nil {
		return false
	}
	rest := *a
	rest.Cloneflags, rest.UidMappings, rest.GidMappings, rest.GidMappingsEnableSetgroups = 0, nil, nil, false
	rest.Credential, rest.Setsid, rest.Pdeathsig = nil, false, 0
	return a.Cloneflags&syscall.CLONE_NEWUSER != 0 && len(a.UidMappings) > 0 && len(a.GidMappings) > 0 &&
		a.GidMappingsEnableSetgroups && a.Credential != nil && len(a.Credential.Groups) == 0 &&
		!a.Credential.NoSetGroups && reflect.ValueOf(rest).IsZero()
}

// Steps of spawn.c's reports.
var spawnSteps = map[int32]string{
	C.CC_STEP_SYNC: "wait for id maps", C.CC_STEP_SETSID: "setsid", C.CC_STEP_CREDS: "set credentials",
	C.CC_STEP_CHDIR: "chdir", C.CC_STEP_PDEATHSIG: "set parent death signal", C.CC_STEP_FDS: "set up descriptors",
	C.CC_STEP_EXEC: "execve",
}

// spawnInit starts cmd with clone(CLONE_VM | CLONE_VFORK | cmd's
// namespaces): the calling thread is suspended until the child has
// executed cmd.Path, while a goroutine (on another thread) writes the
// child's uid and gid maps, which the child waits for before it sets its
// credentials. Nothing of the caller is copied. What the child gets at
// execve is what exec.Cmd.Start would give it: the same namespaces,
// setsid, credentials, parent death signal, directory, environment,
// descriptors (0-2, then ExtraFiles), default signal dispositions and
// the caller's signal mask.
func spawnInit(cmd *exec.Cmd) (_ *initProcess, err error) {
	a := cmd.SysProcAttr
	// C strings end at a NUL: refuse one inside, as exec.Cmd does.
	for _, str := range append(append([]string{cmd.Path, cmd.Dir}, cmd.Args...), cmd.Env...) {
		if strings.IndexByte(str, 0) >= 0 {
			return nil, &os.PathError{Op: "fork/exec", Path: cmd.Path, Err: syscall.EINVAL}
		}
	}
	c := &initProcess{}
	stdio, closeAfterStart, copies, err := c.stdio(cmd)
	if err != nil {
		return nil, err
	}
	defer closeFiles(closeAfterStart)
	defer func() {
		if err != nil {
			closeFiles(c.closeAfterWait)
		}
	}()
	files := append(stdio[:], cmd.ExtraFiles...)

	// C memory: the child reads it while the caller's Go heap moves on.
	s := (*C.struct_cc_spawn)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_cc_spawn{}))))
	defer C.free(unsafe.Pointer(s))
	var cstrs []unsafe.Pointer
	cstr := func(str string) *C.char {
		p := C.CString(str)
		cstrs = append(cstrs, unsafe.Pointer(p))
		return p
	}
	cvec := func(strs []string) **C.char {
		v := (**C.char)(C.calloc(C.size_t(len(strs)+1), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		cstrs = append(cstrs, unsafe.Pointer(v))
		vs := unsafe.Slice(v, len(strs)+1)
		for i, str := range strs {
			vs[i] = cstr(str)
		}
		return v
	}
	defer func() {
		for _, p := range cstrs {
			C.free(p)
		}
	}()
	s.path = cstr(cmd.Path)
	s.argv = cvec(cmd.Args)
	s.envp = cvec(cmd.Env)
	s.dir = cstr(cmd.Dir)
	fds := (*C.int)(C.calloc(C.size_t(len(files)), C.size_t(unsafe.Sizeof(C.int(0)))))
	cstrs = append(cstrs, unsafe.Pointer(fds))
	fv := unsafe.Slice(fds, len(files))
	for i, f := range files {
		fv[i] = -1
		if f != nil {
			fv[i] = C.int(f.Fd())
		}
	}
	s.fds, s.nfds = fds, C.int(len(files))
	if a.Setsid {
		s.setsid = 1
	}
	s.pdeathsig = C.int(a.Pdeathsig)
	s.uid, s.gid = C.uint32_t(a.Credential.Uid), C.uint32_t(a.Credential.Gid)
	s.cloneflags = C.ulong(a.Cloneflags)

	// Three pipes: ready (child → the map writer), gosync (map writer →
	// child), errp (child → here). Every end is closed exactly once:
	// the map writer closes gosync[1], the child's ends are closed once it
	// has executed, the rest when this returns.
	ready, gosync, errp := [2]int{-1, -1}, [2]int{-1, -1}, [2]int{-1, -1}
	ends := []*int{&ready[0], &ready[1], &gosync[0], &errp[0], &errp[1]}
	closeEnd := func(fd *int) {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	defer func() {
		for _, fd := range ends {
			closeEnd(fd)
		}
	}()
	for _, p := range []*[2]int{&ready, &gosync, &errp} {
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			closeEnd(&gosync[1])
			return nil, fmt.Errorf("spawn %s: pipe: %w", cmd.Path, err)
		}
	}
	s.ready_fd, s.go_fd, s.err_fd = C.int(ready[1]), C.int(gosync[0]), C.int(errp[1])
	s.parent_fds = [3]C.int{C.int(ready[0]), C.int(gosync[1]), C.int(errp[0])}

	// The id maps, written once the child runs (it tells on ready). The
	// caller's thread is suspended meanwhile: this runs on another one.
	mapped := make(chan error, 1)
	readyR, goW := ready[0], gosync[1]
	go func() {
		defer unix.Close(goW) // EOF without the byte: the child gives up
		var b [1]byte
		if n, _ := unix.Read(readyR, b[:]); n != 1 {
			mapped <- nil // the clone failed: spawnInit reports it
			return
		}
		err := writeIDMaps(int(s.pid), a)
		if err == nil {
			_, err = unix.Write(goW, []byte{'g'})
		}
		if err != nil {
			// It must not go on without its maps; EOF on go_fd tells it
			// too, SIGKILL needs nothing of it.
			unix.Kill(int(s.pid), unix.SIGKILL)
		}
		mapped <- err
	}()
	// As exec.Cmd: no descriptor is being created without close-on-exec
	// by another goroutine meanwhile (the child would keep it past
	// execve).
	syscall.ForkLock.Lock()
	pid := int(C.cc_spawn(s))
	syscall.ForkLock.Unlock()
	runtime.KeepAlive(files)
	// The child has executed or exited: its copies of these are gone, so
	// the reads below end.
	closeEnd(&ready[1])
	closeEnd(&gosync[0])
	closeEnd(&errp[1])
	mapErr := <-mapped
	if pid < 0 {
		return nil, &os.PathError{Op: "fork/exec", Path: cmd.Path, Err: syscall.Errno(-pid)}
	}
	var rep [8]byte
	n, _ := readFull(errp[0], rep[:])
	if n != 0 || mapErr != nil {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		if mapErr != nil {
			return nil, fmt.Errorf("fork/exec %s: write id maps: %w", cmd.Path, mapErr)
		}
		if n != len(rep) {
			return nil, fmt.Errorf("fork/exec %s: the child exited without a report", cmd.Path)
		}
		step, errno := int32(binary.NativeEndian.Uint32(rep[:4])), syscall.Errno(binary.NativeEndian.Uint32(rep[4:]))
		return nil, &os.PathError{Op: "fork/exec " + spawnSteps[step], Path: cmd.Path, Err: errno}
	}
	c.Process, err = os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("spawn %s: %w", cmd.Path, err)
	}
	for _, f := range copies {
		go f()
	}
	return c, nil
}

// writeIDMaps writes the child's uid map, setgroups and gid map, in that
// order (setgroups must be set before the gid map), as exec.Cmd does.
func writeIDMaps(pid int, a *syscall.SysProcAttr) error {
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	setgroups := "deny"
	if a.GidMappingsEnableSetgroups {
		setgroups = "allow"
	}
	for _, w := range []struct{ file, data string }{
		{"uid_map", formatIDMap(a.UidMappings)},
		{"setgroups", setgroups},
		{"gid_map", formatIDMap(a.GidMappings)},
	} {
		f, err := os.OpenFile(dir+w.file, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.Write([]byte(w.data)) // one write: the kernel takes no more
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func formatIDMap(m []syscall.SysProcIDMap) string {
	var b strings.Builder
	for _, e := range m {
		fmt.Fprintf(&b, "%d %d %d\n", e.ContainerID, e.HostID, e.Size)
	}
	return b.String()
}

// readFull reads into b until it is full or the pipe's writers are gone.
func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			return n, err
		}
		n += m
	}
	return n, nil
}
