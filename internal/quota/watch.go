package quota

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WatchStats count the watcher's work.
type WatchStats struct {
	// Walks is how many times the whole workspace was measured.
	Walks int64
	// WalkTime is the CPU time spent measuring.
	WalkTime time.Duration
	// Events is how many write notifications (fanotify) were read, each
	// costing one fstat of the file written.
	Events int64
	// MaxUsed is the largest size measured by a walk.
	MaxUsed int64
	// Reaction is, once the limit was found exceeded, the time from the
	// first sign of it (the running total or the dirtied bytes passing the
	// limit, or the walk that found it) to the end of kill.
	Reaction time.Duration
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
// (one fstat per notification), and every PollIO the bytes the sandbox's
// processes dirtied and the inodes the filesystem lost. When an estimate
// passes the limit the workspace is walked at once (at most every MinGap or
// the last walk's CPU time, whichever is longer: at most half a CPU while
// an agent churns files at its limit); otherwise once per Backstop, at most
// every 49 walks' CPU time (2% of a CPU), which also finds what the
// estimates miss (directory growth, deletions).
const (
	MinGap   = time.Millisecond
	Backstop = time.Second
	// PollIO is how often the bytes the sandbox's processes dirtied are
	// added up (see Watch).
	PollIO = 50 * time.Millisecond
	// PollIOBusy is the poll period after a poll that found bytes dirtied.
	PollIOBusy = 10 * time.Millisecond
)

// tally is the running total between walks.
type tally struct {
	base   int64            // the last walk's total
	growth int64            // growth of the files reported since
	known  map[uint64]int64 // bytes of each regular file, by inode, as last seen
	files  int64            // files and directories at the last walk
	ffree  int64            // the filesystem's free inodes when it started
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
// quota): kill, then onExceed, are called once, from the watcher's
// goroutine, when the workspace is found over the limit or cannot be
// measured; the watcher then stops. mount, if not nil, is the sandbox's mount of the workspace (the
// detached tree from open_tree): writes through it are reported (fanotify
// FAN_MODIFY on that mount, so only the sandbox's writes: write, truncate,
// fallocate, copy_file_range...). Call it before the sandbox runs anything,
// so no write goes unreported.
//
// procs, if not empty, is the cgroup.procs file of the sandbox's cgroup:
// every PollIO the watcher adds up the bytes its processes dirtied
// (/proc/PID/io write_bytes, which counts writes through shared mappings
// too) and walks at once when the last walk's result plus those bytes and
// the notified growth passes the limit.
//
// Over the limit, kill is called first (it must stop the sandbox: every
// millisecond is more written), then the workspace is measured in full and
// onExceed gets the result.
func (l *Limit) Watch(mount *os.File, procs string, kill func(), onExceed func(*ExceededError)) error {
	if l.support.Mode != ModeWatched {
		return nil
	}
	w, err := newWalker(l.dirFD)
	if err != nil {
		return fmt.Errorf("watch workspace %s: %w", l.opts.Dir, err)
	}
	w.stop = l.opts.Bytes
	w.stopFiles = l.fileLimit
	w.track = make(map[uint64]int64) // Apply's walk is the starting point
	l.m = &measurer{w: w, kill: kill, onExceed: onExceed}

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
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		if ev != nil {
			ev.close()
			ev.closeReader()
		}
		return fmt.Errorf("watch workspace %s: the limit is closed", l.opts.Dir)
	}
	l.stop = make(chan struct{})
	stop := l.stop
	l.mu.Unlock()
	if ev != nil {
		l.refs.Add(1)
		go l.readEvents(ev)
	}
	l.refs.Add(1)
	go l.watch(ev, procs, stop)
	return nil
}

// measurer walks the workspace for the watcher's two threads, one walk at
// a time, and acts on the first walk that finds it over the limit.
type measurer struct {
	mu       sync.Mutex
	w        *walker
	lastEnd  time.Time
	last     time.Duration // the last walk's CPU time
	done     bool          // over the limit (or unmeasurable): stopped
	signal   time.Time     // when the estimate first passed the limit (zero: it has not)
	kill     func()
	onExceed func(*ExceededError)
}

// measure walks the workspace unless the last walk ended less than a gap
// ago (MinGap or the last walk's CPU time when hurried, 49 of them
// otherwise: then it returns how long to wait). done says the watcher is
// finished: the workspace was found over its limit, kill and onExceed
// have been called.
func (l *Limit) measure(hurry bool) (done bool, wait time.Duration) {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return true, 0
	}
	gap := max(MinGap, 49*m.last)
	if hurry {
		gap = max(MinGap, m.last)
	}
	if wait := gap - time.Since(m.lastEnd); wait > 0 {
		return false, wait
	}
	w := m.w
	// The gaps are in CPU time of this (locked) thread: on a loaded host
	// the wall time of a walk grows with the load, and a gap based on it
	// would let the sandbox write on for that long.
	cpu := threadCPU()
	ffree := l.freeInodes()
	start := time.Now()
	err := w.run(l.dirFD)
	m.lastEnd = time.Now()
	m.last = threadCPU() - cpu
	l.mu.Lock()
	l.stats.Walks++
	l.stats.WalkTime += m.last
	l.stats.MaxUsed = max(l.stats.MaxUsed, w.used)
	if err == nil {
		l.tally.base, l.tally.growth = w.used, 0
		l.tally.known, w.track = w.track, l.tally.known
		l.tally.files, l.tally.ffree = w.entries, ffree
		m.signal = time.Time{}
	}
	l.mu.Unlock()
	if err == nil {
		return false, 0
	}
	m.done = true
	// Closed meanwhile (the sandbox is gone): nothing to stop or report.
	l.act.Lock()
	defer l.act.Unlock()
	if l.quiet {
		return true, 0
	}
	m.kill()
	l.reacted(start)
	switch {
	case errors.Is(err, errOverFiles):
		m.onExceed(&ExceededError{Dir: l.opts.Dir, Limit: l.opts.Bytes, Used: w.used, Files: w.entries, FileLimit: l.fileLimit})
	case errors.Is(err, errOver):
		// The walk stopped at the limit: measure it all for the report.
		w.stop = 0
		w.run(l.dirFD)
		m.onExceed(&ExceededError{Dir: l.opts.Dir, Limit: l.opts.Bytes, Used: w.used})
	default:
		m.onExceed(&ExceededError{Dir: l.opts.Dir, Limit: l.opts.Bytes, Used: w.used, Err: err})
	}
	return true, 0
}

// watch runs the periodic walks and the dirtied-bytes poll until stop is
// closed or the limit is found exceeded.
func (l *Limit) watch(ev *events, procs string, stop <-chan struct{}) {
	defer l.release()
	defer urgentThread()()
	if ev != nil {
		defer ev.close()
	}
	backstop := time.NewTicker(Backstop)
	defer backstop.Stop()
	gapTimer := time.NewTimer(time.Hour)
	gapTimer.Stop()
	var (
		pending, hurry bool
		poll           <-chan time.Time
		io             ioCounter
		dirtied        int64 // bytes dirtied since about the last walk
		walks          int64 // l.stats.Walks when dirtied was reset
	)
	var pollTicker *time.Ticker
	if procs != "" || l.fileLimit > 0 {
		pollTicker = time.NewTicker(PollIO)
		defer pollTicker.Stop()
		poll = pollTicker.C
		if procs != "" {
			io.read(procs)
		}
	}
	for {
		select {
		case <-stop:
			return
		case <-backstop.C:
			pending = true
		case <-poll:
			var d int64
			if procs != "" {
				d = io.read(procs)
			}
			// Inodes the filesystem lost since the last walk bound what
			// the sandbox created (files create no write notification).
			ffree := l.freeInodes()
			l.mu.Lock()
			filesOver := l.fileLimit > 0 && ffree >= 0 && l.tally.files+max(0, l.tally.ffree-ffree) > l.fileLimit
			dirtied += d
			if walks != l.stats.Walks {
				// A walk (of either thread) counted what came before it;
				// keep this poll's bytes, which may have come after.
				walks, dirtied = l.stats.Walks, d
			}
			est := l.tally.base + max(0, l.tally.growth) + dirtied
			l.mu.Unlock()
			// While the sandbox writes, poll faster: writes through
			// mappings are only seen here.
			if d > 0 {
				pollTicker.Reset(PollIOBusy)
			} else {
				pollTicker.Reset(PollIO)
			}
			if est > l.opts.Bytes || filesOver {
				l.overSignal()
				pending, hurry = true, true
			}
		case <-gapTimer.C:
		}
		if !pending {
			continue
		}
		done, wait := l.measure(hurry)
		if done {
			return
		}
		if wait > 0 {
			gapTimer.Reset(wait)
			continue
		}
		pending, hurry = false, false
	}
}

// events is a fanotify group reporting writes on one mount.
type events struct {
	fd   int    // the fanotify group (non-blocking)
	wake [2]int // a pipe: close signals the reader to stop
	root int    // the mount's root, for open_by_handle_at
	fid  bool   // events carry file handles, not descriptors
}

// close ends the group; readEvents, which uses root, closes that when its
// read fails.
func (e *events) close() { unix.Close(e.wake[1]) }

// closeReader closes what readEvents would (when it is not started).
func (e *events) closeReader() {
	unix.Close(e.fd)
	unix.Close(e.root)
	unix.Close(e.wake[0])
}

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
			ev := &events{fd: fd, root: root, fid: report != 0}
			if err = unix.Pipe2(ev.wake[:], unix.O_CLOEXEC); err == nil {
				return ev, nil
			}
		}
		unix.Close(fd)
	}
	unix.Close(root)
	return nil, fmt.Errorf("fanotify on the workspace mount: %w", err)
}

// readEvents updates the running total with every file a notification
// names, and walks the workspace at once, on its own thread, when the
// total passes the limit, until the group is closed or the limit is found
// exceeded.
func (l *Limit) readEvents(ev *events) {
	defer l.release()
	defer ev.closeReader()
	defer realtimeThread()()
	buf := make([]byte, 16<<10)
	fds := []unix.PollFd{{Fd: int32(ev.fd), Events: unix.POLLIN}, {Fd: int32(ev.wake[0]), Events: unix.POLLIN}}
	var due time.Time // a walk is due then (zero: none pending)
	for {
		timeout := -1
		if !due.IsZero() {
			timeout = max(1, int(time.Until(due).Milliseconds()+1))
		}
		// A blocking poll on this thread, not the runtime's poller: the
		// kernel wakes this (raised-priority) thread itself.
		n, err := unix.Poll(fds, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		over := false
		if n > 0 && fds[0].Revents != 0 {
			if over, err = l.readBatch(ev, buf); err != nil {
				return
			}
		}
		if over {
			l.overSignal()
		}
		if over || (!due.IsZero() && !time.Now().Before(due)) {
			done, wait := l.measure(true)
			if done {
				return
			}
			due = time.Time{}
			if wait > 0 {
				due = time.Now().Add(wait)
			}
		}
	}
}

// readBatch reads the queued events and updates the running total; over
// says it passed the limit.
func (l *Limit) readBatch(ev *events, buf []byte) (over bool, err error) {
	n, err := unix.Read(ev.fd, buf)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return false, nil
	}
	if err != nil || n <= 0 {
		return false, fmt.Errorf("read fanotify: %w", err)
	}
	var count int64
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
	return over, nil
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

// ioCounter follows the bytes a cgroup's processes dirtied. Both files are
// opened afresh each time: a descriptor of /proc/PID/io opened before the
// process's execve does not follow it, and cgroup v1 keeps serving an open
// cgroup.procs the list it had when opened.
type ioCounter struct {
	last int64
	buf  []byte
}

// read returns how many more bytes the processes listed in procs (a
// cgroup.procs file) have dirtied since the last read: the sum of their
// write_bytes in /proc/PID/io, which includes the children they reaped. A
// sum that falls (a process exited before its parent reaped it) is taken as
// the new base, so the bytes come back when the parent reaps it: counted
// twice rather than not at all.
func (c *ioCounter) read(procs string) int64 {
	if c.buf == nil {
		c.buf = make([]byte, 4096)
	}
	fd, err := unix.Open(procs, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	// Read it all: with a high pids limit the list outgrows one read.
	n := 0
	for {
		if n == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
		}
		m, err := unix.Read(fd, c.buf[n:])
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	unix.Close(fd)
	var sum int64
	for _, f := range bytes.Fields(c.buf[:n]) {
		if v, ok := writeBytes(f); ok {
			sum += v
		}
	}
	d := sum - c.last
	c.last = sum
	return max(0, d)
}

// writeBytes reads write_bytes from /proc/PID/io.
func writeBytes(pid []byte) (int64, bool) {
	var path [64]byte
	p := append(append(append(path[:0], "/proc/"...), pid...), "/io"...)
	fd, err := unix.Open(string(p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	var buf [512]byte
	n, err := unix.Read(fd, buf[:])
	if err != nil || n <= 0 {
		return 0, false
	}
	_, rest, ok := bytes.Cut(buf[:n], []byte("\nwrite_bytes: "))
	if !ok {
		return 0, false
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	v, err := strconv.ParseInt(string(line), 10, 64)
	return v, err == nil
}

// urgentThread locks the calling goroutine to its thread and raises the
// thread's priority (nice -10): on a loaded host the watcher must run soon
// after the writes it watches, or what the sandbox writes meanwhile is the
// overshoot. Failing to raise it (no CAP_SYS_NICE) only makes that slower.
// The returned function, called when the goroutine is done, restores the
// thread's scheduling and unlocks it, so the runtime reuses the thread for
// the next watcher instead of creating one (a start of a sandbox); if the
// scheduling cannot be restored the thread stays locked and ends with the
// goroutine.
func urgentThread() (restore func()) {
	runtime.LockOSThread()
	old, err := unix.SchedGetAttr(0, 0)
	unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), -10)
	return func() { restoreThread(old, err) }
}

// restoreThread sets the calling thread's scheduling back to old and
// unlocks it from its goroutine, unless old could not be read (getErr) or
// set: then the thread stays locked and ends with the goroutine, never
// running other goroutines with raised priority.
func restoreThread(old *unix.SchedAttr, getErr error) {
	if getErr != nil || unix.SchedSetAttr(0, old, 0) != nil {
		return
	}
	runtime.UnlockOSThread()
}

// threadCPU returns the CPU time the calling thread has used.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// overSignal notes the first time the estimate passed the limit.
func (l *Limit) overSignal() {
	l.mu.Lock()
	if l.m.signal.IsZero() {
		l.m.signal = time.Now()
	}
	l.mu.Unlock()
}

// reacted records the reaction time of a kill after the walk that started
// at walk.
func (l *Limit) reacted(walk time.Time) {
	l.mu.Lock()
	from := l.m.signal
	if from.IsZero() || walk.Before(from) {
		from = walk
	}
	l.stats.Reaction = time.Since(from)
	l.mu.Unlock()
}

// realtimeThread is urgentThread with the lowest real-time priority
// (SCHED_FIFO 1) instead of nice -10: the event reader must run as soon as
// the kernel has an event for it, before the writer's next writes, whatever
// the load. Its work per wake-up is bounded (one batch of events, at most
// one walk, spaced by its CPU time) and the kernel's real-time throttling
// caps it anyway. Without CAP_SYS_NICE it falls back to nice -10. The
// returned function is urgentThread's.
func realtimeThread() (restore func()) {
	runtime.LockOSThread()
	old, err := unix.SchedGetAttr(0, 0)
	// Reset on fork: nothing this thread might start inherits it.
	attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 1, Flags: unix.SCHED_FLAG_RESET_ON_FORK}
	if unix.SchedSetAttr(0, &attr, 0) != nil {
		unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), -10)
	}
	return func() { restoreThread(old, err) }
}

// freeInodes returns the free inodes of the workspace's filesystem, or -1.
func (l *Limit) freeInodes() int64 {
	var sfs unix.Statfs_t
	if unix.Fstatfs(l.dirFD, &sfs) != nil {
		return -1
	}
	return int64(sfs.Ffree)
}
