package quota

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WatchStats count the watcher's work.
type WatchStats struct {
	// Walks is how many times the whole workspace was measured.
	Walks int64
	// WalkTime is the total wall time spent measuring.
	WalkTime time.Duration
	// Events is how many write notifications (fanotify) were read, each
	// costing one fstat of the file written.
	Events int64
	// MaxUsed is the largest size measured by a walk.
	MaxUsed int64
	// Notify says whether writes to the workspace mount are reported
	// (fanotify); without it only the periodic measurement runs.
	Notify bool
}

// Stats returns the watcher's counters.
func (l *Limit) Stats() WatchStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Watch timing. Between walks the watcher keeps a running total: the last
// walk's result plus the growth of every file a write notification names
// (one fstat per notification). When that total passes the limit the
// workspace is walked at once (at most every MinGap or the last walk's
// duration, whichever is longer: at most half a CPU while an agent churns
// files at its limit); otherwise once per Backstop, at most every 49 walk
// durations (2% of a CPU), which also finds what notifications do not
// report (writes through a shared mapping, directory growth, deletions).
const (
	MinGap   = time.Millisecond
	Backstop = time.Second
)

// tally is the running total between walks.
type tally struct {
	base   int64            // the last walk's total
	growth int64            // growth of the files reported since
	known  map[uint64]int64 // bytes of each regular file, by inode, as last seen
}

// seen records that inode ino now has bytes allocated and returns the new
// running total.
func (t *tally) seen(ino uint64, bytes int64) int64 {
	if t.known == nil {
		t.known = make(map[uint64]int64)
	}
	t.growth += bytes - t.known[ino]
	t.known[ino] = bytes
	return t.base + t.growth
}

// Watch starts the watcher of a watched limit (nothing to do with project
// quota): onExceed is called once, from the watcher's goroutine, when the
// workspace is found over the limit or cannot be measured; the watcher then
// stops. mount, if not nil, is the sandbox's mount of the workspace (the
// detached tree from open_tree): writes through it are reported (fanotify
// FAN_MODIFY on that mount, so only the sandbox's writes: write, truncate,
// fallocate, copy_file_range...). Call it before the sandbox runs anything,
// so no write goes unreported.
func (l *Limit) Watch(mount *os.File, onExceed func(*ExceededError)) error {
	if l.support.Mode != ModeWatched {
		return nil
	}
	w, err := newWalker(l.dirFD)
	if err != nil {
		return fmt.Errorf("watch workspace %s: %w", l.opts.Dir, err)
	}
	w.stop = l.opts.Bytes
	w.track = make(map[uint64]int64) // Apply's walk is the starting point

	var ev *events
	if mount != nil {
		if ev, err = markMount(mount); err != nil {
			// Measurements still run every Backstop: slower to notice,
			// not unenforced.
			l.log.Warn("workspace writes not notified, measuring periodically", "reason", err, "period", Backstop)
		} else {
			l.stats.Notify = true
		}
	}
	urgent := make(chan struct{}, 1)
	l.mu.Lock()
	l.stop, l.stopped = make(chan struct{}), make(chan struct{})
	stop, stopped := l.stop, l.stopped
	l.mu.Unlock()
	if ev != nil {
		go l.readEvents(ev, urgent)
	}
	go l.watch(w, ev, urgent, stop, stopped, onExceed)
	return nil
}

func (l *Limit) watch(w *walker, ev *events, urgent <-chan struct{}, stop <-chan struct{}, stopped chan<- struct{}, onExceed func(*ExceededError)) {
	defer close(stopped)
	if ev != nil {
		defer ev.close()
	}
	backstop := time.NewTicker(Backstop)
	defer backstop.Stop()
	gapTimer := time.NewTimer(time.Hour)
	gapTimer.Stop()
	var (
		pending, hurry bool
		lastEnd        time.Time
		last           time.Duration // the last walk's duration
	)
	for {
		select {
		case <-stop:
			return
		case <-urgent:
			pending, hurry = true, true
		case <-backstop.C:
			pending = true
		case <-gapTimer.C:
		}
		if !pending {
			continue
		}
		gap := max(MinGap, 49*last)
		if hurry {
			gap = max(MinGap, last)
		}
		if wait := gap - time.Since(lastEnd); wait > 0 {
			gapTimer.Reset(wait)
			continue
		}
		pending, hurry = false, false
		start := time.Now()
		err := w.run(l.dirFD)
		lastEnd = time.Now()
		last = lastEnd.Sub(start)
		l.mu.Lock()
		l.stats.Walks++
		l.stats.WalkTime += last
		l.stats.MaxUsed = max(l.stats.MaxUsed, w.used)
		if err == nil {
			l.tally.base, l.tally.growth = w.used, 0
			l.tally.known, w.track = w.track, l.tally.known
		}
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

// events is a fanotify group reporting writes on one mount.
type events struct {
	f    *os.File // the fanotify descriptor
	root int      // the mount's root, for open_by_handle_at
	fid  bool     // events carry file handles, not descriptors
}

// close ends the group; readEvents, which uses root, closes that when its
// read fails.
func (e *events) close() { e.f.Close() }

// markMount returns a fanotify group reporting FAN_MODIFY on the mount of
// mount.
func markMount(mount *os.File) (*events, error) {
	// An O_PATH descriptor (open_tree's) is not accepted: open the root
	// of the same mount.
	root, err := unix.Openat(int(mount.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the workspace mount: %w", err)
	}
	// File handles instead of open descriptors in the events: nothing to
	// close per event. Filesystems without handles get descriptors.
	for _, report := range []uint{unix.FAN_REPORT_FID, 0} {
		var fd int
		fd, err = unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|report, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_LARGEFILE)
		if err != nil {
			continue
		}
		err = unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_MODIFY, root, "")
		if err == nil {
			return &events{f: os.NewFile(uintptr(fd), "fanotify"), root: root, fid: report != 0}, nil
		}
		unix.Close(fd)
	}
	unix.Close(root)
	return nil, fmt.Errorf("fanotify on the workspace mount: %w", err)
}

// readEvents updates the running total with every file a notification
// names until the group is closed, and asks for a walk at once when the
// total passes the limit.
func (l *Limit) readEvents(ev *events, urgent chan<- struct{}) {
	defer unix.Close(ev.root)
	buf := make([]byte, 16<<10)
	for {
		n, err := ev.f.Read(buf)
		if err != nil {
			return
		}
		var count int64
		over := false
		for off := 0; off+unix.FAN_EVENT_METADATA_LEN <= n; {
			m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			if m.Event_len < unix.FAN_EVENT_METADATA_LEN || off+int(m.Event_len) > n {
				break
			}
			count++
			if m.Mask&unix.FAN_Q_OVERFLOW != 0 {
				over = true // events lost: measure
			} else if ino, bytes, ok := ev.stat(m, buf[off+int(m.Metadata_len):off+int(m.Event_len)]); ok {
				l.mu.Lock()
				total := l.tally.seen(ino, bytes)
				l.mu.Unlock()
				over = over || total > l.opts.Bytes
			}
			off += int(m.Event_len)
		}
		l.mu.Lock()
		l.stats.Events += count
		l.mu.Unlock()
		if over {
			select {
			case urgent <- struct{}{}:
			default:
			}
		}
	}
}

// stat returns the inode and allocated bytes of the file an event names
// (its descriptor, or its file handle in info, which it closes or opens).
func (ev *events) stat(m *unix.FanotifyEventMetadata, info []byte) (ino uint64, bytes int64, ok bool) {
	fd := int(m.Fd)
	if !ev.fid {
		if fd < 0 {
			return 0, 0, false
		}
		defer unix.Close(fd)
	} else {
		h, ok := fileHandle(info)
		if !ok {
			return 0, 0, false
		}
		var err error
		if fd, err = unix.OpenByHandleAt(ev.root, h, unix.O_PATH|unix.O_CLOEXEC); err != nil {
			return 0, 0, false // removed since
		}
		defer unix.Close(fd)
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, 0, false
	}
	return st.Ino, st.Blocks * 512, true
}

// fileHandle parses the first FAN_EVENT_INFO_TYPE_FID record of an event's
// info: a header (type, pad, u16 length), the fsid (8 bytes), then struct
// file_handle (u32 size, i32 type, the handle).
func fileHandle(info []byte) (unix.FileHandle, bool) {
	for len(info) >= 4 {
		typ, size := info[0], int(binary.NativeEndian.Uint16(info[2:4]))
		if size < 4 || size > len(info) {
			break
		}
		if rec := info[:size]; typ == unix.FAN_EVENT_INFO_TYPE_FID && len(rec) >= 4+8+8 {
			hsize := int(binary.NativeEndian.Uint32(rec[12:16]))
			htype := int32(binary.NativeEndian.Uint32(rec[16:20]))
			if 20+hsize <= len(rec) {
				return unix.NewFileHandle(htype, rec[20:20+hsize]), true
			}
		}
		info = info[size:]
	}
	return unix.FileHandle{}, false
}
