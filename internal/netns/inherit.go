package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Environment variables of the inheritance protocol. As in systemd's socket
// activation, descriptors start at 3 and LISTEN_FDNAMES holds their names
// separated by ':'. LISTEN_PID is not used: exec.Cmd cannot know the child's
// pid before it starts, and the variables are removed from the environment
// as soon as InheritedListeners reads them.
const (
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenFDNames = "LISTEN_FDNAMES"
	envListenPID     = "LISTEN_PID"
	firstInheritedFD = 3
)

// ExportListeners arranges for cmd's child to inherit files (listening
// sockets) as descriptors 3, 4, ... with their names in LISTEN_FDNAMES. It
// must be called before any other ExtraFiles are added; files the caller
// appends afterwards follow the listeners. If cmd.Env is nil it starts from
// os.Environ(), as exec.Cmd would. Existing LISTEN_* variables are replaced.
func ExportListeners(cmd *exec.Cmd, names []string, files []*os.File) error {
	if err := checkNames(names, len(files)); err != nil {
		return fmt.Errorf("export listeners: %w", err)
	}
	if len(cmd.ExtraFiles) != 0 {
		return errors.New("export listeners: cmd.ExtraFiles must be empty: listeners take descriptors 3 onward")
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	clean := make([]string, 0, len(env)+2)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == EnvListenFDs || k == EnvListenFDNames || k == envListenPID {
			continue
		}
		clean = append(clean, kv)
	}
	cmd.Env = append(clean,
		EnvListenFDs+"="+strconv.Itoa(len(files)),
		EnvListenFDNames+"="+strings.Join(names, ":"))
	cmd.ExtraFiles = append([]*os.File(nil), files...)
	return nil
}

// InheritedListeners returns the listeners a parent passed with
// ExportListeners, by name, and removes the protocol's variables from the
// environment. With no LISTEN_FDS it returns an empty map. Each inherited
// descriptor is checked to be a listening socket and marked close-on-exec.
func InheritedListeners() (map[string]net.Listener, error) {
	nstr, ok := os.LookupEnv(EnvListenFDs)
	namesStr := os.Getenv(EnvListenFDNames)
	os.Unsetenv(EnvListenFDs)
	os.Unsetenv(EnvListenFDNames)
	os.Unsetenv(envListenPID)
	if !ok {
		return map[string]net.Listener{}, nil
	}
	n, err := strconv.Atoi(nstr)
	if err != nil || n < 1 || n > MaxFiles {
		return nil, fmt.Errorf("inherited listeners: %s=%q: want a count from 1 to %d", EnvListenFDs, nstr, MaxFiles)
	}
	names := strings.Split(namesStr, ":")
	if err := checkNames(names, n); err != nil {
		return nil, fmt.Errorf("inherited listeners: %s=%q: %w", EnvListenFDNames, namesStr, err)
	}
	files := make([]*os.File, n)
	for i := range n {
		fd := firstInheritedFD + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			for _, f := range files[:i] {
				f.Close()
			}
			return nil, fmt.Errorf("inherited listeners: descriptor %d (%s) is not open: %w", fd, names[i], err)
		}
		unix.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), names[i])
	}
	lns, err := filesToListeners(names, files)
	if err != nil {
		return nil, fmt.Errorf("inherited listeners: %w", err)
	}
	return lns, nil
}
