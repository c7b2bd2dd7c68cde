// Package runas starts the stack's components as their own unprivileged
// identities: a fixed uid/gid per component (no /etc/passwd entry needed),
// no supplementary groups, no capabilities in any set (the bounding set
// included), no_new_privs, and a private state directory owned by that uid.
//
// The capability bounding set and no_new_privs are per-thread attributes
// inherited by children, and Go's exec.Cmd cannot change them between fork
// and exec. So a Spawner owns one OS thread on which the bounding set has
// been emptied and no_new_privs set, and forks every component from that
// thread. The thread is never handed back to the Go scheduler and lives as
// long as the Spawner, which matters because PR_SET_PDEATHSIG fires when the
// forking thread (not the process) exits.
//
// The child finishes the job with HardenSelf: it makes itself non-dumpable
// (execve resets that flag, so only the child can set it) and verifies that
// it really holds no privilege, refusing to run otherwise.
package runas

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Identity is the uid/gid a component runs as. UID and GID are equal.
type Identity struct {
	Name string
	UID  uint32
	GID  uint32
}

// BaseUID is the start of the range of component uids. Component N of the
// table in ForComponent runs as BaseUID+N (router 61001, policy 61002,
// gateway 61003). The range sits below the usual subordinate-uid ranges
// (100000 and up) used for sandbox user namespaces and above the ids
// distributions hand out to users (1000-60000).
const BaseUID = 61000

// ForComponent returns the fixed identity of a component:
//
//	router  61001
//	policy  61002
//	gateway 61003
//
// The numbers never change between releases: state directories on disk are
// owned by them.
func ForComponent(name string) (Identity, error) {
	var n uint32
	switch name {
	case "router":
		n = 1
	case "policy":
		n = 2
	case "gateway":
		n = 3
	default:
		return Identity{}, fmt.Errorf("component %q has no identity: want router, policy or gateway", name)
	}
	return Identity{Name: name, UID: BaseUID + n, GID: BaseUID + n}, nil
}

// CheckUnused fails if id's uid or gid belongs to an account or group in
// the host's /etc/passwd or /etc/group: sharing the number with anything
// else would join two trust domains.
func CheckUnused(id Identity) error {
	return checkUnused(id, "/etc/passwd", "/etc/group")
}

func checkUnused(id Identity, passwd, group string) error {
	for _, db := range []struct {
		path string
		id   uint32
	}{{passwd, id.UID}, {group, id.GID}} {
		f, err := os.Open(db.path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check %s for id %d: %w", db.path, db.id, err)
		}
		sc := bufio.NewScanner(f)
		line := 0
		for sc.Scan() {
			line++
			fields := strings.Split(sc.Text(), ":")
			if len(fields) < 3 {
				continue
			}
			if n, err := strconv.ParseUint(fields[2], 10, 32); err == nil && uint32(n) == db.id {
				f.Close()
				return fmt.Errorf("%s:%d: id %d of component %s is taken by %q; the component ids %d-%d must be unused on this host",
					db.path, line, db.id, id.Name, fields[0], BaseUID+1, BaseUID+3)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", db.path, err)
		}
	}
	return nil
}

// PrepareStateRoot creates the stack's state directory owned by root with
// mode 0711: components can reach their own subdirectory but cannot list or
// enter the others'.
func PrepareStateRoot(stateDir string) error {
	if err := os.MkdirAll(stateDir, 0o711); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := checkDir(stateDir); err != nil {
		return err
	}
	if err := os.Chown(stateDir, 0, 0); err != nil {
		return fmt.Errorf("own state directory %s: %w", stateDir, err)
	}
	if err := os.Chmod(stateDir, 0o711); err != nil {
		return fmt.Errorf("restrict state directory %s: %w", stateDir, err)
	}
	return nil
}

// PrepareStateDir creates <stateDir>/<id.Name> with mode 0700, owned by id,
// and returns its path. An existing directory gets the owner and mode fixed;
// a symlink or a non-directory there is an error.
func PrepareStateDir(stateDir string, id Identity) (string, error) {
	dir := filepath.Join(stateDir, id.Name)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create state directory of %s: %w", id.Name, err)
	}
	if err := checkDir(dir); err != nil {
		return "", err
	}
	if err := os.Lchown(dir, int(id.UID), int(id.GID)); err != nil {
		return "", fmt.Errorf("own state directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("restrict state directory %s: %w", dir, err)
	}
	return dir, nil
}

func checkDir(dir string) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("state directory %s is a %v, not a directory", dir, st.Mode().Type())
	}
	return nil
}

// Configure sets cmd up to run as id: uid and gid, no supplementary groups,
// no ambient capabilities, its own process group, and SIGKILL when the
// forking thread dies. The bounding set and no_new_privs come from starting
// it with a Spawner.
func Configure(cmd *exec.Cmd, id Identity) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	a := cmd.SysProcAttr
	a.Credential = &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: []uint32{}}
	a.AmbientCaps = nil
	a.Setpgid = true
	a.Pdeathsig = syscall.SIGKILL
}

// Spawner starts processes from one dedicated OS thread whose capability
// bounding set is empty and whose no_new_privs flag is set.
type Spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

// NewSpawner prepares the spawning thread. It fails (and the caller must not
// start components) if the bounding set cannot be emptied or no_new_privs
// cannot be set, which needs CAP_SETPCAP: run as root.
func NewSpawner() (*Spawner, error) {
	last, err := capLastCap()
	if err != nil {
		return nil, err
	}
	s := &Spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	ready := make(chan error, 1)
	// The thread is never unlocked: it has given up privileges for good, and
	// children's PR_SET_PDEATHSIG is tied to it.
	onDedicatedThread(func() {
		if err := dropThreadPrivileges(last); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for {
			select {
			case r := <-s.reqs:
				r.res <- r.cmd.Start()
			case <-s.done:
				return
			}
		}
	})
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("prepare unprivileged spawner thread: %w", err)
	}
	return s, nil
}

// Start starts cmd from the spawner's thread. Use Configure first.
func (s *Spawner) Start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, res: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-s.done:
		return errors.New("spawner is closed")
	}
	return <-r.res
}

// Close ends the spawner's thread. Children started with Pdeathsig (see
// Configure) receive their signal then, so close it only when stopping.
func (s *Spawner) Close() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
}

// dropThreadPrivileges empties the calling thread's bounding set and
// inheritable set and sets no_new_privs. Effective and permitted sets stay so
// the forked child can still setuid; setuid to a non-zero uid then clears
// them in the child.
func dropThreadPrivileges(lastCap int) error {
	for c := 0; c <= lastCap; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

func capLastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read cap_last_cap: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("cap_last_cap %q is not a capability number", b)
	}
	return n, nil
}

// EnvSupervised is set to "1" in the environment of every component the
// supervisor starts. A component that sees it must call HardenSelf before
// anything else and refuse to start if it fails.
const EnvSupervised = "CLAWCAGE_SUPERVISED"

// Supervised reports whether the process was started by the supervisor.
func Supervised() bool { return os.Getenv(EnvSupervised) == "1" }

// HardenSelf is called first thing by a component started by a Spawner. It
// makes the process non-dumpable (no core dumps, no ptrace or /proc/PID/mem
// access by its own uid) and verifies that it runs as a non-root uid with no
// capabilities in any set and no_new_privs set. A component must refuse to
// start when it returns an error.
func HardenSelf() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make process non-dumpable: %w", err)
	}
	return CheckUnprivileged()
}

// CheckUnprivileged verifies the calling process's privileges (see
// HardenSelf) without changing anything.
func CheckUnprivileged() error {
	if os.Getuid() == 0 || os.Geteuid() == 0 || os.Getgid() == 0 || os.Getegid() == 0 {
		return fmt.Errorf("running as uid %d gid %d: components must not run as root", os.Geteuid(), os.Getegid())
	}
	if groups, err := os.Getgroups(); err == nil && len(groups) > 0 {
		return fmt.Errorf("supplementary groups %v are set; want none", groups)
	}
	st, err := readStatus("/proc/self/status")
	if err != nil {
		return err
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if v, ok := st[k]; !ok || strings.Trim(v, "0") != "" {
			return fmt.Errorf("capability set %s is %q; want empty", k, v)
		}
	}
	if st["NoNewPrivs"] != "1" {
		return errors.New("no_new_privs is not set")
	}
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("read dumpable flag: %w", err)
	}
	if d != 0 {
		return errors.New("process is dumpable")
	}
	return nil
}

// readStatus parses /proc/PID/status into key: value.
func readStatus(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}
