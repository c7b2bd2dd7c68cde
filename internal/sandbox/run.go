package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/cgroup"
	"github.com/clawcage/clawcage/internal/sandbox/pid1"
	"github.com/clawcage/clawcage/internal/sandbox/seccomp"
)

// Run runs spec.Command in a new sandbox and returns its exit code (128+n
// when it was killed by signal n). A non-nil error means the sandbox could
// not be set up or failed (*UnavailableError, *SetupError, or another
// error); the exit code is then ExitSetupFailed, ExitNotExecutable or
// ExitNotFound. Cancelling ctx sends SIGTERM to the sandbox and SIGKILL
// after spec.KillGrace. Nothing of the sandbox remains when Run returns:
// its cgroup is removed, its mounts died with its mount namespace and a
// temporary workspace is deleted.
func Run(ctx context.Context, spec Spec, stdio Stdio) (exitCode int, err error) {
	p, err := Start(ctx, spec, stdio)
	if err != nil {
		return ExitSetupFailed, err
	}
	return p.Wait()
}

// Process is a started sandbox. Wait must be called to reap it and release
// what it holds.
type Process struct {
	cmd     *initProcess
	cg      *cgroup.Group
	ctx     context.Context
	log     *slog.Logger
	start   time.Time
	repCh   chan repResult
	cleanup []func() error // run by Wait, last first
	exec    *os.File       // host end of the exec channel (exec.go)
	disk    *diskLimit     // the workspace's disk limit, if any (disk.go)
}

type repResult struct {
	rep *pid1.Report
	err error
}

// Pid returns the host pid of the sandbox's PID 1.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stats returns the sandbox's cgroup counters (tasks, memory peak, OOM
// kills). It fails once Wait has removed the cgroup.
func (p *Process) Stats() (cgroup.Stats, error) { return p.cg.Stats() }

// Signal sends sig to the sandbox's PID 1, which forwards HUP, INT, QUIT,
// TERM, USR1, USR2, WINCH, CONT, TSTP and ALRM to the command; SIGKILL
// ends the whole sandbox.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Start starts spec.Command in a new sandbox (see Run). The sandbox is in
// its cgroup and has its configuration when Start returns; failures of the
// steps inside the sandbox (Landlock, seccomp, exec) are reported by Wait.
func Start(ctx context.Context, spec Spec, stdio Stdio) (proc *Process, err error) {
	p := &Process{ctx: ctx, start: time.Now()}
	defer func() {
		if err != nil {
			p.runCleanup()
		}
	}()
	r, err := resolve(&spec)
	if err != nil {
		return nil, fmt.Errorf("sandbox spec: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("sandboxes need root: the host side maps a private uid range, creates cgroups and network namespaces (run as root)")
	}
	// Landlock and seccomp are checked here (one syscall each; PID 1
	// fails closed on them too). User namespaces are not: the clone of
	// PID 1 fails without them, and only then is the reason looked up
	// (reading a sysctl file at every start costs more than the clone).
	if _, err := LandlockABI(); err != nil {
		return nil, err
	}
	if err := CheckSeccomp(); err != nil {
		return nil, err
	}
	if err := CheckSuidDumpable(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	p.defer_(func() error { close(exited); return nil })
	nt := newNetnsThread(&spec, exited)
	started := false
	p.defer_(func() error {
		if !started {
			nt.abandon()
		}
		return nil
	})
	uids, err := uidRangeFor(&spec)
	if err != nil {
		return nil, err
	}
	p.defer_(func() error { uids.Release(); return nil })
	name := spec.Name
	if name == "" {
		// Unique among live sandboxes: the slot is held until Wait returns.
		name = fmt.Sprintf("run-%d-%d", os.Getpid(), uids.Slot)
	}
	p.log = spec.Log
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("component", "sandbox", "sandbox", name)
	runUID := uint32(UserUID)
	if spec.Root {
		runUID = 0
	}

	// The cgroup is created while the workspace and its disk limit are
	// prepared (each is about half a millisecond of system calls).
	cgName := "clawcage-" + name
	if spec.Cgroup != "" {
		cgName = spec.Cgroup
	}
	type cgResult struct {
		cg  *cgroup.Group
		err error
	}
	cgc := make(chan cgResult, 1)
	go func() {
		cg, err := cgroup.New(ctx, cgName, cgroup.Limits{Memory: r.limits.Memory, Pids: r.limits.Pids, CPU: r.limits.CPU})
		cgc <- cgResult{cg, err}
	}()
	cgJoined := false
	p.defer_(func() error {
		if cgJoined {
			return nil
		}
		if res := <-cgc; res.cg != nil {
			res.cg.Destroy()
		}
		return nil
	})

	workspace, cleanupWS, err := prepareWorkspace(spec.Workspace, int(uids.HostUID(runUID)))
	if err != nil {
		return nil, err
	}
	p.defer_(func() error { cleanupWS(); return nil })
	if err := p.applyDiskLimit(workspace, r.limits.Disk, uids.Base); err != nil {
		return nil, err
	}

	res := <-cgc
	cgJoined = true
	if res.err != nil {
		return nil, &SetupError{Step: "create cgroup", Err: res.err}
	}
	cg := res.cg
	p.cg = cg
	p.defer_(func() error {
		if err := cg.Destroy(); err != nil {
			return &SetupError{Step: "remove cgroup", Err: err}
		}
		return nil
	})

	binds, bindFiles, err := openBinds(workspace, r.roPaths, r.rwPaths)
	if err != nil {
		return nil, err
	}
	defer closeFiles(bindFiles)

	execEnd, err := p.openExecChannel()
	if err != nil {
		return nil, err
	}
	defer execEnd.Close()

	// PID 1 installs the filter and the ruleset the host computed for this
	// kernel (its C start-up has neither compiler nor go-landlock).
	filter, err := seccomp.Filter()
	if err != nil {
		return nil, &SetupError{Step: "compile seccomp filter", Err: err}
	}
	cfg := pid1.Config{
		Seccomp:   filter,
		ExecFD:    pid1.FirstBindFD + len(bindFiles), // after the binds in ExtraFiles
		Binds:     binds,
		ReadOnly:  r.roPaths,
		ReadWrite: r.rwPaths,
		Hosts:     spec.Hosts,
		TmpSize:   r.limits.Tmp,
		UID:       int(runUID),
		Command:   spec.Command,
		Env:       r.env,
		Connect:   r.connect,
		Bind:      r.bind,
		UIDBase:   uids.Base,
		Ctty:      spec.TTY,

		FileSizeLimit: p.fileSizeLimit(),
	}
	if cfg.Landlock, err = pid1.PlanLandlock(&cfg); err != nil {
		return nil, err
	}
	cfgBytes, err := cfg.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode sandbox config: %w", err)
	}

	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("config pipe: %w", err)
	}
	defer cfgW.Close()
	defer cfgR.Close()
	repR, repW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("report pipe: %w", err)
	}
	p.defer_(repR.Close)
	defer repW.Close()

	exe := spec.Executable
	if exe == "" {
		exe = "/proc/self/exe"
	}
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       []string{"clawcage", InitCommand},
		Env:        []string{"GOMAXPROCS=2"}, // nothing of the caller's environment; 2 Ps: see pid1.Main
		Dir:        "/",
		Stdin:      stdio.Stdin,
		Stdout:     stdio.Stdout,
		Stderr:     stdio.Stderr,
		ExtraFiles: append(append([]*os.File{cfgR, repW}, bindFiles...), execEnd), // configFD, reportFD, pid1.FirstBindFD..., cfg.ExecFD
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS |
				unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(uids.Base), Size: UIDRangeSize}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(uids.Base), Size: UIDRangeSize}},
			GidMappingsEnableSetgroups: true,
			// Become uid 0 *inside*: without this the child keeps host uid 0.
			Credential: &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}},
			Setsid:     true,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	started = true
	init, err := nt.start(cmd)
	if err != nil {
		if uerr := pid1.CheckUserNamespaces(); uerr != nil {
			return nil, uerr
		}
		return nil, err
	}
	p.cmd = init
	p.diskStarted(init.Process)
	cfgR.Close()
	repW.Close()
	p.log.Debug("sandbox init started", "pid", init.Process.Pid, "uid_base", uids.Base)

	// Nothing inside runs before the config arrives, so the init (and every
	// process it starts) is in the cgroup, and the workspace's watcher
	// (started here, after the clone: its threads starting and writing
	// memory while the clone's copy of this process waits for its id maps
	// cost a copy-on-write fault each) is running before any command code
	// runs.
	if err := p.watchDisk(bindFiles[0]); err != nil {
		init.Process.Kill()
		init.Wait()
		return nil, &SetupError{Step: "watch workspace", Err: err}
	}
	closeFiles(bindFiles)
	if err := cg.AddProcess(init.Process.Pid); err != nil {
		init.Process.Kill()
		init.Wait()
		return nil, &SetupError{Step: "add sandbox to cgroup", Err: err}
	}
	if _, err := cfgW.Write(cfgBytes); err != nil {
		init.Process.Kill()
		init.Wait()
		return nil, &SetupError{Step: "send config", Err: err}
	}
	cfgW.Close()

	// The leftovers of `sandbox run`s killed before their cleanup are
	// removed while PID 1 starts (not earlier: the same copy-on-write
	// faults), in the hierarchies the group was created in, and before
	// Wait returns. The sweep never touches this sandbox's group: its name
	// holds this process's pid, which is alive.
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		if err := cg.RemoveStale(staleRunGroup); err != nil {
			p.log.Warn("remove stale sandbox cgroups", "reason", err)
		}
	}()
	p.defer_(func() error { <-swept; return nil })

	p.repCh = make(chan repResult, 1)
	go func() {
		rep, err := pid1.ReadReport(repR)
		p.repCh <- repResult{rep, err}
	}()
	done := make(chan struct{})
	p.defer_(func() error { close(done); return nil })
	go forwardSignals(ctx, init.Process, stdio.Signals, spec.KillGrace, done)
	return p, nil
}

// defer_ registers f to run in Wait (or when Start fails), last first.
func (p *Process) defer_(f func() error) { p.cleanup = append(p.cleanup, f) }

func (p *Process) runCleanup() error {
	var errs []error
	for i := len(p.cleanup) - 1; i >= 0; i-- {
		if err := p.cleanup[i](); err != nil {
			errs = append(errs, err)
		}
	}
	p.cleanup = nil
	return errors.Join(errs...)
}

// Wait waits for the sandbox to exit, removes what it leaves on the host
// and returns the command's exit code (see Run).
func (p *Process) Wait() (exitCode int, err error) {
	waitErr := p.cmd.Wait()
	code := exitCodeOf(p.cmd.ProcessState)
	rr := <-p.repCh
	cerr := p.runCleanup()
	p.log.Debug("sandbox exited", "code", code, "duration", time.Since(p.start))
	switch {
	case waitErr != nil && p.cmd.ProcessState == nil:
		return ExitSetupFailed, fmt.Errorf("wait for sandbox: %w", waitErr)
	case p.diskErr() != nil:
		return code, p.diskErr()
	case rr.err != nil:
		return code, &SetupError{Step: "read report", Err: rr.err}
	case rr.rep != nil:
		return rr.rep.Code, reportError(rr.rep)
	case cerr != nil:
		return code, cerr
	case p.ctx.Err() != nil:
		return code, fmt.Errorf("sandbox stopped: %w", context.Cause(p.ctx))
	}
	return code, nil
}

// reportError turns a failure report from inside the sandbox into the
// error Run returns.
func reportError(r *pid1.Report) error {
	if r.Feature != "" {
		return &UnavailableError{Feature: r.Feature, Reason: r.Reason, Fix: r.Fix}
	}
	return &SetupError{Step: r.Step, Err: errors.New(r.Error)}
}

// openBinds opens the workspace and the extra paths as detached mount trees
// (open_tree(OPEN_TREE_CLONE)) with nosuid, nodev and, for read-only paths,
// rdonly set on the whole tree. Opening them here, as root on the host,
// means sandbox-init never resolves a host path and needs no access to it.
func openBinds(workspace string, ro, rw []string) ([]pid1.BindSpec, []*os.File, error) {
	type src struct {
		path, target string
		ro           bool
	}
	srcs := []src{{workspace, WorkspaceDir, false}}
	for _, p := range ro {
		srcs = append(srcs, src{p, p, true})
	}
	for _, p := range rw {
		srcs = append(srcs, src{p, p, false})
	}
	var (
		binds []pid1.BindSpec
		files []*os.File
	)
	for i, s := range srcs {
		fi, err := os.Stat(s.path)
		if err != nil {
			closeFiles(files)
			return nil, nil, fmt.Errorf("bind %s: %w", s.path, err)
		}
		// No symlink anywhere on the path: the paths were resolved and
		// checked already, so one appearing now is a swap in progress.
		pfd, err := unix.Openat2(unix.AT_FDCWD, s.path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			closeFiles(files)
			return nil, nil, &SetupError{Step: "open " + s.path, Err: err}
		}
		fd, err := unix.OpenTree(pfd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_EMPTY_PATH)
		unix.Close(pfd)
		if err != nil {
			closeFiles(files)
			return nil, nil, &SetupError{Step: "open_tree " + s.path, Err: err}
		}
		f := os.NewFile(uintptr(fd), s.path)
		files = append(files, f)
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if s.ro {
			attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
		}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			closeFiles(files)
			return nil, nil, &SetupError{Step: "mount_setattr " + s.path, Err: err}
		}
		binds = append(binds, pid1.BindSpec{Target: s.target, Dir: fi.IsDir(), FD: pid1.FirstBindFD + i})
	}
	return binds, files, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// staleRunGroup says whether a cgroup named clawcage-run-PID-SLOT belongs
// to a `sandbox run` whose launcher (PID) is gone.
func staleRunGroup(name string) bool {
	rest, ok := strings.CutPrefix(name, "clawcage-run-")
	if !ok {
		return false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil || pid <= 0 {
		return false
	}
	return errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

func uidRangeFor(spec *Spec) (*UIDRange, error) {
	if spec.UIDBase != 0 {
		return fixedUIDRange(spec.UIDBase)
	}
	return AllocateUIDRange()
}

// prepareWorkspace returns the absolute, symlink-free workspace path and a
// cleanup function. An empty dir means a temporary workspace, removed by
// cleanup; a missing dir is created. New directories are owned by owner
// (the host uid the command runs as) and mode 0700.
func prepareWorkspace(dir string, owner int) (string, func(), error) {
	noop := func() {}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "clawcage-workspace-")
		if err != nil {
			return "", noop, fmt.Errorf("create temporary workspace: %w", err)
		}
		if err := os.Chown(tmp, owner, owner); err != nil {
			os.RemoveAll(tmp)
			return "", noop, fmt.Errorf("chown temporary workspace %s: %w", tmp, err)
		}
		return tmp, func() { os.RemoveAll(tmp) }, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", noop, fmt.Errorf("workspace %q: %w", dir, err)
	}
	if _, err := os.Lstat(abs); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return "", noop, fmt.Errorf("create workspace: %w", err)
		}
		if err := os.Chown(abs, owner, owner); err != nil {
			return "", noop, fmt.Errorf("chown workspace %s: %w", abs, err)
		}
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", noop, fmt.Errorf("workspace %q: %w", dir, err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", noop, fmt.Errorf("workspace %q: %w", dir, err)
	}
	if !st.IsDir() {
		return "", noop, fmt.Errorf("workspace %q: not a directory", dir)
	}
	if real == "/" {
		return "", noop, fmt.Errorf("workspace %q: the host root cannot be the workspace", dir)
	}
	return real, noop, nil
}

// netnsThread is the thread PID 1 is started from: it is in the sandbox's
// network namespace, a new one holding only lo (brought up), or spec's.
// Either way the namespace belongs to the initial user namespace, so root
// inside the sandbox has no CAP_NET_ADMIN over it. The thread is started
// (and locked) when Start begins; handed the command, it enters the
// namespace, starts PID 1 and stays locked until the sandbox has exited:
// PR_SET_PDEATHSIG fires when this *thread* exits, so no other goroutine
// may retire it meanwhile. It never returns to the host's namespace (one
// setns less): the runtime retires it afterwards. (Entering the namespace
// early, in parallel with the rest of the host side, measured 4 ms slower
// on 2 cores.)
type netnsThread struct {
	cmds chan *exec.Cmd // the command to start; closed: none (Start failed)
	errc chan error
	init *initProcess // the started command, once errc gave nil
}

// newNetnsThread starts the thread; exactly one of start or abandon must
// follow, then exited must be closed once the sandbox has been reaped.
func newNetnsThread(spec *Spec, exited <-chan struct{}) *netnsThread {
	t := &netnsThread{cmds: make(chan *exec.Cmd, 1), errc: make(chan error, 1)}
	netns, netnsFile := spec.NetNS, spec.NetNSFile
	pid1.OnLockedThread(func() bool {
		cmd, ok := <-t.cmds
		if !ok {
			return false
		}
		var err error
		switch {
		case netnsFile != nil:
			err = joinNetns(int(netnsFile.Fd()))
		case netns != "":
			var f *os.File
			if f, err = os.Open(netns); err == nil {
				err = joinNetns(int(f.Fd()))
				f.Close()
			} else {
				err = &SetupError{Step: "open network namespace", Err: err}
			}
		default:
			err = newNetns()
		}
		if err == nil {
			var serr error
			if t.init, serr = startInit(cmd); serr != nil {
				err = &SetupError{Step: "start sandbox-init", Err: serr}
			}
		}
		t.errc <- err
		if err == nil {
			<-exited
		}
		return false
	})
	return t
}

// start starts cmd from the thread (startInit) and returns it, or its
// error or the namespace's.
func (t *netnsThread) start(cmd *exec.Cmd) (*initProcess, error) {
	t.cmds <- cmd
	close(t.cmds)
	if err := <-t.errc; err != nil {
		return nil, err
	}
	return t.init, nil
}

// abandon ends the thread without starting anything.
func (t *netnsThread) abandon() { close(t.cmds) }

func joinNetns(fd int) error {
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return &SetupError{Step: "join network namespace", Err: err}
	}
	return nil
}

// newNetns moves the calling thread into a new network namespace and brings
// its loopback up.
func newNetns() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return &SetupError{Step: "create network namespace", Err: err}
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return &SetupError{Step: "bring up lo", Err: err}
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return &SetupError{Step: "bring up lo", Err: err}
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return &SetupError{Step: "bring up lo", Err: err}
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return &SetupError{Step: "bring up lo", Err: err}
	}
	return nil
}

// forwardSignals forwards sigs to the sandbox's PID 1 until done; on ctx
// cancellation it sends SIGTERM, then SIGKILL after grace.
func forwardSignals(ctx context.Context, p *os.Process, sigs <-chan os.Signal, grace time.Duration, done <-chan struct{}) {
	if grace == 0 {
		grace = DefaultKillGrace
	}
	ctxDone := ctx.Done()
	var kill <-chan time.Time
	for {
		select {
		case <-done:
			return
		case s, ok := <-sigs:
			if !ok {
				sigs = nil
				continue
			}
			p.Signal(s)
		case <-ctxDone:
			ctxDone = nil
			p.Signal(syscall.SIGTERM)
			t := time.NewTimer(grace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			p.Kill()
			kill = nil
		}
	}
}

// exitCodeOf maps a process state to a shell-style exit code.
func exitCodeOf(ps *os.ProcessState) int {
	if ps == nil {
		return ExitSetupFailed
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
