package quota

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options describe the limit of one workspace.
type Options struct {
	// Dir is the workspace (absolute, symlinks resolved).
	Dir string
	// Bytes is the limit: the workspace's allocated size, existing files
	// included.
	Bytes int64
	// ProjectID is the project id the workspace gets where project quotas
	// are enforced. It must not be in use by another running sandbox on the
	// same filesystem; the sandbox uses the first host uid of its uid range.
	ProjectID uint32
	// Log receives the mode line and warnings; nil discards.
	Log *slog.Logger
}

// Limit is the enforced disk limit of one workspace. Close releases it.
type Limit struct {
	opts    Options
	support Support
	used    int64 // at Apply
	dirFD   int
	log     *slog.Logger

	mu      sync.Mutex
	stop    chan struct{}
	stopped chan struct{}
	fan     *os.File
	stats   WatchStats
}

// Apply starts limiting opts.Dir to opts.Bytes. It refuses a workspace
// already over the limit and a filesystem whose free space is less than
// what the workspace may still grow by (plus WatchedMargin when watched):
// the limit would not keep the host's disk from filling. With project quota
// it labels the workspace (every directory and file gets opts.ProjectID,
// directories FS_XFLAG_PROJINHERIT) and sets the project's block hard
// limit; otherwise the caller must start Watch once the sandbox runs.
func Apply(opts Options) (_ *Limit, err error) {
	if opts.Bytes <= 0 {
		return nil, fmt.Errorf("workspace %s: disk limit %d bytes: must be positive", opts.Dir, opts.Bytes)
	}
	fd, err := openDir(unix.AT_FDCWD, opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
	}
	l := &Limit{opts: opts, dirFD: fd, log: logOrDiscard(opts.Log)}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if l.support, err = detectFD(fd); err != nil {
		return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
	}
	w, err := newWalker(fd)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
	}
	w.stop = opts.Bytes
	if l.support.Mode == ModeProject {
		w.label = func(fd int, dir bool) error { return setProject(fd, opts.ProjectID, dir) }
	}
	switch err := w.run(fd); {
	case errors.Is(err, errOver):
		return nil, fmt.Errorf("workspace %s uses more than its disk limit of %d bytes; free space or raise resources.disk", opts.Dir, opts.Bytes)
	case err != nil:
		return nil, fmt.Errorf("workspace %s: measure and label for %s: %w", opts.Dir, l.support.Mode, err)
	}
	l.used = w.used

	limit := opts.Bytes
	if l.support.Mode == ModeProject {
		charged, err := projectUsage(fd, opts.ProjectID)
		if err != nil {
			return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
		}
		// Files elsewhere that still carry this id (a workspace an earlier
		// sandbox with the same id left behind) are charged to it too;
		// they are not this workspace's, so they raise the hard limit.
		if foreign := charged - l.used; foreign > 64<<10 {
			l.log.Warn("project id also charged outside the workspace", "project", opts.ProjectID, "bytes", foreign, "reason", "files of an earlier sandbox with the same id")
			limit += foreign
		}
		if err := setProjectLimit(fd, opts.ProjectID, limit); err != nil {
			return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
		}
		defer func() {
			if err != nil {
				setProjectLimit(fd, opts.ProjectID, 0)
			}
		}()
	}
	if err := l.checkFree(); err != nil {
		return nil, err
	}
	l.log.Info("workspace quota", "mode", l.support.String(), "limit", opts.Bytes, "used", l.used, "project", projectAttr(l))
	return l, nil
}

func projectAttr(l *Limit) any {
	if l.support.Mode == ModeProject {
		return l.opts.ProjectID
	}
	return "none"
}

// checkFree refuses a filesystem with less free space than the workspace
// may still take.
func (l *Limit) checkFree() error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(l.dirFD, &sfs); err != nil {
		return fmt.Errorf("workspace %s: statfs: %w", l.opts.Dir, err)
	}
	free := int64(sfs.Bavail) * sfs.Bsize
	need := l.opts.Bytes - l.used
	if l.support.Mode == ModeWatched {
		need += WatchedMargin
	}
	if free < need {
		return fmt.Errorf("workspace %s: its disk limit of %d bytes (%d used) needs %d bytes free on %s at %s, which has %d: the sandbox could fill the host's disk; lower resources.disk or free space",
			l.opts.Dir, l.opts.Bytes, l.used, need, l.support.FSType, l.support.Mount, free)
	}
	return nil
}

// Support returns how the limit is enforced.
func (l *Limit) Support() Support { return l.support }

// Used returns the workspace's allocated size when Apply measured it.
func (l *Limit) Used() int64 { return l.used }

// FileSizeLimit is the RLIMIT_FSIZE the sandbox's processes should get: the
// limit itself when watched (one file cannot pass it on its own: EFBIG),
// 0 (none) with project quota, where the quota stops it.
func (l *Limit) FileSizeLimit() int64 {
	if l.support.Mode == ModeWatched {
		return l.opts.Bytes
	}
	return 0
}

// Close stops the watcher and removes a project quota's limit (the files
// keep their project id; the next sandbox with the workspace sets its own
// limit). It waits for a running measurement to end.
func (l *Limit) Close() error {
	l.mu.Lock()
	stop, stopped := l.stop, l.stopped
	l.stop = nil
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-stopped
	}
	var err error
	if l.support.Mode == ModeProject {
		err = setProjectLimit(l.dirFD, l.opts.ProjectID, 0)
	}
	unix.Close(l.dirFD)
	return err
}

// WatchStats count the watcher's work.
type WatchStats struct {
	// Walks is how many times the workspace was measured.
	Walks int64
	// WalkTime is the total wall time spent measuring.
	WalkTime time.Duration
	// Events is how many write notifications (fanotify) were read.
	Events int64
	// MaxUsed is the largest size measured.
	MaxUsed int64
	// Notify says whether writes to the workspace mount wake the watcher
	// (fanotify); without it only the periodic measurement runs.
	Notify bool
}

// Stats returns the watcher's counters.
func (l *Limit) Stats() WatchStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Watch timing: the workspace is measured when a write is reported, at
// most once per MinGap or 19 times the last measurement's duration
// (whichever is longer, so measuring takes at most 5% of one CPU), and at
// least once per Backstop (writes through a shared mapping are not
// reported).
const (
	MinGap   = time.Millisecond
	Backstop = time.Second
)

// Watch starts the watcher of a watched limit (nothing to do with project
// quota): onExceed is called once, from the watcher's goroutine, when the
// workspace is found over the limit or cannot be measured; the watcher then
// stops. mount, if not nil, is the sandbox's mount of the workspace (the
// detached tree from open_tree): writes through it wake the watcher
// (fanotify FAN_MODIFY on that mount, so only the sandbox's writes). Call
// it before the sandbox runs anything, so no write goes unreported.
func (l *Limit) Watch(mount *os.File, onExceed func(*ExceededError)) error {
	if l.support.Mode != ModeWatched {
		return nil
	}
	w, err := newWalker(l.dirFD)
	if err != nil {
		return fmt.Errorf("watch workspace %s: %w", l.opts.Dir, err)
	}
	w.stop = l.opts.Bytes
	wake := make(chan struct{}, 1)
	if mount != nil {
		fan, err := markMount(mount)
		if err != nil {
			// Measurements still run every Backstop: slower to notice,
			// not unenforced.
			l.log.Warn("workspace writes not notified, measuring periodically", "reason", err, "period", Backstop)
		} else {
			l.fan = fan
			l.stats.Notify = true
		}
	}
	l.mu.Lock()
	l.stop, l.stopped = make(chan struct{}), make(chan struct{})
	stop, stopped := l.stop, l.stopped
	l.mu.Unlock()
	if l.fan != nil {
		go l.readEvents(wake)
	}
	go l.watch(w, wake, stop, stopped, onExceed)
	return nil
}

func (l *Limit) watch(w *walker, wake <-chan struct{}, stop <-chan struct{}, stopped chan<- struct{}, onExceed func(*ExceededError)) {
	defer close(stopped)
	defer func() {
		if l.fan != nil {
			l.fan.Close()
		}
	}()
	backstop := time.NewTicker(Backstop)
	defer backstop.Stop()
	gapTimer := time.NewTimer(time.Hour)
	gapTimer.Stop()
	var (
		pending bool
		lastEnd time.Time
		gap     = MinGap
	)
	for {
		select {
		case <-stop:
			return
		case <-wake:
			pending = true
		case <-backstop.C:
			pending = true
		case <-gapTimer.C:
		}
		if !pending {
			continue
		}
		if wait := gap - time.Since(lastEnd); wait > 0 {
			gapTimer.Reset(wait)
			continue
		}
		pending = false
		start := time.Now()
		err := w.run(l.dirFD)
		lastEnd = time.Now()
		d := lastEnd.Sub(start)
		gap = max(MinGap, 19*d)
		l.mu.Lock()
		l.stats.Walks++
		l.stats.WalkTime += d
		l.stats.MaxUsed = max(l.stats.MaxUsed, w.used)
		l.mu.Unlock()
		switch {
		case errors.Is(err, errOver):
			onExceed(&ExceededError{Dir: l.opts.Dir, Limit: l.opts.Bytes, Used: w.used})
			return
		case err != nil:
			onExceed(&ExceededError{Dir: l.opts.Dir, Limit: l.opts.Bytes, Used: w.used, Err: err})
			return
		}
	}
}

// markMount returns a fanotify descriptor reporting FAN_MODIFY (write,
// truncate, fallocate, copy_file_range...) on the mount of mount.
func markMount(mount *os.File) (*os.File, error) {
	// File handles instead of open descriptors in the events: nothing to
	// close per event. Filesystems without handles get descriptors.
	// An O_PATH descriptor (open_tree's) is not accepted: open the root
	// of the same mount.
	root, err := unix.Openat(int(mount.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the workspace mount: %w", err)
	}
	defer unix.Close(root)
	var fd int
	for _, report := range []uint{unix.FAN_REPORT_FID, 0} {
		fd, err = unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|report, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_LARGEFILE)
		if err != nil {
			continue
		}
		err = unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_MODIFY, root, "")
		if err == nil {
			return os.NewFile(uintptr(fd), "fanotify"), nil
		}
		unix.Close(fd)
	}
	return nil, fmt.Errorf("fanotify on the workspace mount: %w", err)
}

// readEvents turns fanotify events into wake-ups until the descriptor is
// closed. Events carrying a descriptor have it closed.
func (l *Limit) readEvents(wake chan<- struct{}) {
	buf := make([]byte, 4096)
	for {
		n, err := l.fan.Read(buf)
		if err != nil {
			return
		}
		events := int64(0)
		for off := 0; off+unix.FAN_EVENT_METADATA_LEN <= n; {
			m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			if m.Event_len < unix.FAN_EVENT_METADATA_LEN {
				break
			}
			if m.Fd >= 0 {
				unix.Close(int(m.Fd))
			}
			events++
			off += int(m.Event_len)
		}
		l.mu.Lock()
		l.stats.Events += events
		l.mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}
