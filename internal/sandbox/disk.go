package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/cgroup"
	"github.com/clawcage/clawcage/internal/quota"
)

// diskLimit enforces Limits.Disk on the workspace while the sandbox runs
// (package quota): a project quota, or a watcher that kills the sandbox
// when the workspace is over the limit.
type diskLimit struct {
	q *quota.Limit

	mu     sync.Mutex
	killed bool                 // the watcher has stopped the sandbox
	err    *quota.ExceededError // why (set once the watcher measured it)
	proc   *os.Process
}

// applyDiskLimit starts limiting the workspace to limit bytes (0: the
// default, quota.DefaultGrowth or half the free space beyond what the
// workspace holds). projectID is the sandbox's project id where project
// quotas are enforced: the first host uid of its range, unique among
// running sandboxes.
func (p *Process) applyDiskLimit(workspace string, limit int64, projectID uint32) error {
	q, err := quota.Apply(quota.Options{Dir: workspace, Bytes: limit, ProjectID: projectID, Log: p.log})
	if err != nil {
		return err
	}
	p.disk = &diskLimit{q: q}
	p.defer_(q.Close)
	return nil
}

// fileSizeLimit is the RLIMIT_FSIZE of the sandbox's processes (0: none).
func (p *Process) fileSizeLimit() int64 {
	if p.disk == nil {
		return 0
	}
	return p.disk.q.FileSizeLimit()
}

// watchDisk starts the watcher of a watched limit; mount is the workspace's
// detached mount (writes through it wake the watcher). It must run before
// the sandbox does.
func (p *Process) watchDisk(mount *os.File) error {
	if p.disk == nil {
		return nil
	}
	d := p.disk
	procs := ""
	if p.cg != nil {
		procs = filepath.Join(p.cg.Dir("pids"), "cgroup.procs")
	}
	kill := func() {
		d.mu.Lock()
		d.killed = true
		proc := d.proc
		d.mu.Unlock()
		p.killAll(proc)
	}
	return d.q.Watch(mount, procs, kill, func(e *quota.ExceededError) {
		d.mu.Lock()
		d.err = e
		d.mu.Unlock()
		p.log.Error("workspace disk limit: sandbox stopped", "reason", e.Error(), "duration", d.q.Stats().Reaction)
	})
}

// killAll kills every process of the sandbox at once (cgroup.kill on v2,
// SIGKILL to each of cgroup.procs on v1), then PID 1, whose end kills what
// is left in its PID namespace. Killing PID 1 alone would leave the others
// writing until it is gone.
func (p *Process) killAll(pid1 *os.Process) {
	if p.cg != nil {
		if p.cg.Version() == cgroup.V2 {
			os.WriteFile(filepath.Join(p.cg.Dir("pids"), "cgroup.kill"), []byte("1"), 0)
		} else if b, err := os.ReadFile(filepath.Join(p.cg.Dir("pids"), "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
	}
	if pid1 != nil {
		pid1.Kill()
	}
}

// diskStarted hands the watcher the sandbox's PID 1 to kill.
func (p *Process) diskStarted(proc *os.Process) {
	if p.disk == nil {
		return
	}
	p.disk.mu.Lock()
	p.disk.proc = proc
	killed := p.disk.killed
	p.disk.mu.Unlock()
	if killed {
		p.killAll(proc)
	}
}

// diskErr is the error that stopped the sandbox for its disk use, if any.
func (p *Process) diskErr() error {
	if p.disk == nil {
		return nil
	}
	p.disk.mu.Lock()
	defer p.disk.mu.Unlock()
	if p.disk.err == nil {
		return nil
	}
	return p.disk.err
}

// DiskQuota returns how the sandbox's workspace disk limit is enforced and
// the watcher's counters; ok is false when the sandbox has no disk limit.
func (p *Process) DiskQuota() (s quota.Support, st quota.WatchStats, ok bool) {
	if p.disk == nil {
		return s, st, false
	}
	return p.disk.q.Support(), p.disk.q.Stats(), true
}
