package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Options describe the limit of one workspace.
type Options struct {
	// Dir is the workspace (absolute, symlinks resolved).
	Dir string
	// Bytes is the limit: the workspace's allocated size, existing files
	// included. Zero means the default: what the workspace holds plus
	// DefaultGrowth or half the filesystem's free space, whichever is less.
	Bytes int64
	// ProjectID is the project id the workspace gets where project quotas
	// are enforced. It must not be in use by another running sandbox on the
	// same filesystem; the sandbox uses the first host uid of its uid range.
	ProjectID uint32
	// Files limits how many files and directories the workspace may hold
	// (inodes: empty files fill a filesystem too). Zero means the
	// default: what it holds plus DefaultFileGrowth or half the
	// filesystem's free inodes, whichever is less. Filesystems that report
	// no inode counts (btrfs) get none.
	Files int64
	// Log receives the mode line and warnings; nil discards.
	Log *slog.Logger
}

// DefaultGrowth is how much a workspace without a configured limit may
// grow while its sandbox runs (at most: half the free space is the other
// bound).
const DefaultGrowth int64 = 8 << 30

// DefaultFileGrowth is how many files and directories a workspace without
// a configured file limit may gain while its sandbox runs (at most: half
// the free inodes is the other bound).
const DefaultFileGrowth int64 = 1 << 20

// Limit is the enforced disk limit of one workspace. Close releases it.
type Limit struct {
	opts    Options
	support Support
	// mount fills support.Mount on first use (Support, the log line,
	// errors): reading the mount table costs more than the rest of Apply
	// for a small workspace, and a default limit's log line is at debug
	// level.
	mount sync.Once
	path  string // the workspace's path when opened, for the lookup
	dev   uint64
	used  int64 // at Apply
	files int64 // files and directories at Apply
	// fileLimit is the file count limit (0: none).
	fileLimit int64
	dirFD     int
	log       *slog.Logger

	mu     sync.Mutex
	stop   chan struct{} // closed by Close: the watcher ends
	closed bool
	m      *measurer
	stats  WatchStats
	tally  tally

	// act is held while the watcher stops the sandbox (kill, onExceed);
	// quiet, set by Close under it, says it must not any more.
	act   sync.Mutex
	quiet bool
	// refs counts the users of dirFD: Close's and one per watcher
	// goroutine; the last to let go closes it (Close does not wait for
	// the watcher to wind down).
	refs atomic.Int32
}

// release drops one reference to dirFD, closing it after the last.
func (l *Limit) release() {
	if l.refs.Add(-1) == 0 {
		unix.Close(l.dirFD)
	}
}

// Apply starts limiting opts.Dir to opts.Bytes. It refuses a workspace
// already over the limit and a filesystem whose free space is less than
// what the workspace may still grow by (plus WatchedMargin when watched):
// the limit would not keep the host's disk from filling. With project quota
// it labels the workspace (every directory and file gets opts.ProjectID,
// directories FS_XFLAG_PROJINHERIT) and sets the project's block hard
// limit; otherwise the caller must start Watch once the sandbox runs.
func Apply(opts Options) (_ *Limit, err error) {
	if opts.Bytes < 0 {
		return nil, fmt.Errorf("workspace %s: disk limit %d bytes: must not be negative", opts.Dir, opts.Bytes)
	}
	fd, err := openDir(unix.AT_FDCWD, opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
	}
	l := &Limit{opts: opts, dirFD: fd, log: logOrDiscard(opts.Log)}
	l.refs.Store(1)
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if l.support, l.dev, err = detectFD(fd); err != nil {
		return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
	}
	l.path = fdPath(fd)
	w, err := newWalker(fd)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
	}
	w.stop = opts.Bytes
	w.stopFiles = opts.Files
	if l.support.Mode == ModeWatched {
		w.track = make(map[uint64]int64) // the watcher's starting point
	}
	if l.support.Mode == ModeProject {
		// A limit an earlier sandbox with this id left (it crashed before
		// Close) must not refuse the relabelling of files over it.
		if err := setProjectLimit(fd, opts.ProjectID, 0, 0); err != nil {
			return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
		}
		w.label = func(fd int, dir bool) error { return setProject(fd, opts.ProjectID, dir) }
	}
	switch err := w.run(fd); {
	case errors.Is(err, errOver):
		return nil, fmt.Errorf("workspace %s uses more than its disk limit of %d bytes; free space or raise resources.disk", opts.Dir, opts.Bytes)
	case errors.Is(err, errOverFiles):
		return nil, fmt.Errorf("workspace %s holds more than its limit of %d files and directories; remove files", opts.Dir, opts.Files)
	case err != nil:
		return nil, fmt.Errorf("workspace %s: measure and label for %s: %w", opts.Dir, l.support.Mode, err)
	}
	l.used, l.files = w.used, w.entries
	l.tally = tally{base: w.used, known: w.track, files: w.entries}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return nil, fmt.Errorf("workspace %s: statfs: %w", opts.Dir, err)
	}
	l.tally.ffree = int64(sfs.Ffree)
	l.fileLimit = opts.Files
	if l.fileLimit == 0 && sfs.Files > 0 {
		l.fileLimit = l.files + max(0, min(DefaultFileGrowth, int64(sfs.Ffree)/2))
	}
	source := "configured"
	if opts.Bytes == 0 {
		source = "default"
		free := int64(sfs.Bavail) * sfs.Bsize
		l.opts.Bytes = l.used + max(0, min(DefaultGrowth, free/2))
		opts.Bytes = l.opts.Bytes
	}

	limit := opts.Bytes
	if l.support.Mode == ModeProject {
		u, err := projectUsage(fd, opts.ProjectID)
		if err != nil {
			return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
		}
		// Files elsewhere that still carry this id (a workspace an earlier
		// sandbox with the same id left behind) are charged to it too;
		// they are not this workspace's, so they raise the hard limit.
		charged, chargedFiles := u.bytes, u.files
		if foreign := charged - l.used; foreign > 64<<10 {
			l.log.Warn("project id also charged outside the workspace", "project", opts.ProjectID, "bytes", foreign, "reason", "files of an earlier sandbox with the same id")
			limit += foreign
		}
		fileLimit := l.fileLimit
		if foreign := chargedFiles - l.files; fileLimit > 0 && foreign > 0 {
			fileLimit += foreign
		}
		if err := setProjectLimit(fd, opts.ProjectID, limit, fileLimit); err != nil {
			return nil, fmt.Errorf("workspace %s: %w", opts.Dir, err)
		}
		defer func() {
			if err != nil {
				setProjectLimit(fd, opts.ProjectID, 0, 0)
			}
		}()
	}
	if err := l.checkFree(); err != nil {
		return nil, err
	}
	// The default limit is what every sandbox gets: not worth a line on
	// the stderr of each `sandbox run`; a configured one is.
	level := slog.LevelInfo
	if source == "default" {
		level = slog.LevelDebug
	}
	if !l.log.Enabled(context.Background(), level) {
		return l, nil
	}
	l.log.Log(context.Background(), level, "workspace quota", "mode", l.Support().String(), "limit", opts.Bytes, "limit_source", source, "used", l.used, "files", l.files, "file_limit", l.fileLimit, "project", projectAttr(l))
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
			l.opts.Dir, l.opts.Bytes, l.used, need, l.support.FSType, l.Support().Mount, free)
	}
	return nil
}

// Support returns how the limit is enforced.
func (l *Limit) Support() Support {
	l.mount.Do(func() { l.support.Mount = mountPoint(l.path, l.dev) })
	return l.support
}

// Bytes returns the limit (the default's value when none was given).
func (l *Limit) Bytes() int64 { return l.opts.Bytes }

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
// limit). Once it returns the watcher calls neither kill nor onExceed; it
// does not wait for the watcher's goroutines to wind down (a measurement
// running meanwhile ends unreported, and its threads return to the
// runtime's pool).
func (l *Limit) Close() error {
	l.mu.Lock()
	stop, closed := l.stop, l.closed
	l.stop, l.closed = nil, true
	l.mu.Unlock()
	if closed {
		return nil
	}
	l.act.Lock()
	l.quiet = true
	l.act.Unlock()
	if stop != nil {
		close(stop)
	}
	var err error
	if l.support.Mode == ModeProject {
		err = setProjectLimit(l.dirFD, l.opts.ProjectID, 0, 0)
	}
	l.release()
	return err
}
