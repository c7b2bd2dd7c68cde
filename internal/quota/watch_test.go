package quota

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fidRecord builds a FAN_EVENT_INFO_TYPE_FID record: header, fsid, struct
// file_handle.
func fidRecord(typ byte, htype int32, handle []byte) []byte {
	rec := make([]byte, 20+len(handle))
	rec[0] = typ
	binary.NativeEndian.PutUint16(rec[2:], uint16(len(rec)))
	binary.NativeEndian.PutUint32(rec[12:], uint32(len(handle)))
	binary.NativeEndian.PutUint32(rec[16:], uint32(htype))
	copy(rec[20:], handle)
	return rec
}

func TestQuotaFileHandle(t *testing.T) {
	h := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	other := fidRecord(7, 0, []byte{9, 9, 9, 9}) // FAN_EVENT_INFO_TYPE_MNT-like record first
	short := fidRecord(1, 1, h)
	binary.NativeEndian.PutUint32(short[12:], 64) // handle longer than the record
	zeroLen := fidRecord(1, 1, h)
	binary.NativeEndian.PutUint16(zeroLen[2:], 0)
	tests := []struct {
		name   string
		info   []byte
		ok     bool
		handle []byte
		htype  int32
	}{
		{"one FID record", fidRecord(1, 0x81, h), true, h, 0x81},
		{"FID record after another record", append(append([]byte(nil), other...), fidRecord(1, 2, h)...), true, h, 2},
		{"no FID record", other, false, nil, 0},
		{"empty info", nil, false, nil, 0},
		{"handle size beyond the record", short, false, nil, 0},
		{"record length zero does not loop", zeroLen, false, nil, 0},
		{"truncated header", []byte{1, 0}, false, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fh, ok := fileHandle(tc.info)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && (!bytes.Equal(fh.Bytes(), tc.handle) || fh.Type() != tc.htype) {
				t.Errorf("handle %x type %d, want %x type %d", fh.Bytes(), fh.Type(), tc.handle, tc.htype)
			}
		})
	}
}

func FuzzQuotaFileHandle(f *testing.F) {
	f.Add(fidRecord(1, 0x81, []byte{1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add([]byte{1, 0, 4, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, info []byte) {
		fh, ok := fileHandle(info)
		if ok && len(fh.Bytes()) > len(info) {
			t.Errorf("handle of %d bytes from %d bytes of info", len(fh.Bytes()), len(info))
		}
	})
}

func TestQuotaTally(t *testing.T) {
	steps := []struct {
		name  string
		ino   uint64
		bytes int64
		want  int64
	}{
		{"known file grows", 1, 8192, 1000 + 4096},
		{"new file counts whole", 2, 4096, 1000 + 4096 + 4096},
		{"same size again counts nothing", 2, 4096, 1000 + 4096 + 4096},
		{"truncated file shrinks the total", 1, 0, 1000 - 4096 + 4096},
	}
	tl := tally{base: 1000, known: map[uint64]int64{1: 4096}}
	for _, s := range steps {
		if got := tl.seen(s.ino, s.bytes); got != s.want {
			t.Errorf("%s: total %d, want %d", s.name, got, s.want)
		}
	}
}

// TestQuotaFSXattrIoctl checks the FS_IOC_FSGETXATTR number and struct
// against the kernel on the test directory's filesystem (ext4 and XFS
// answer it with or without project quota): a wrong number or size is
// ENOTTY.
func TestQuotaFSXattrIoctl(t *testing.T) {
	dir := t.TempDir()
	fd, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	a, err := getProject(fd)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("%s: the filesystem has no FS_IOC_FSGETXATTR", dir)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Writing back what was read changes nothing and must be accepted
	// (FS_IOC_FSSETXATTR's number and size).
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFSSetXattr, uintptr(unsafe.Pointer(&a))); e != 0 {
		t.Errorf("FS_IOC_FSSETXATTR with the current values: %v", e)
	}
}

// TestQuotaIOCounter checks the dirtied-bytes count follows a process's
// writes (this test process writing a file and syncing it) across reads of
// a cgroup.procs-style list, and does not count a pid that is gone.
func TestQuotaIOCounter(t *testing.T) {
	dir := t.TempDir()
	procs := dir + "/cgroup.procs"
	if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())+"\n999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var c ioCounter
	c.read(procs)
	f, err := os.Create(dir + "/data")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if got := c.read(procs); got < 1<<20 {
		t.Errorf("dirtied %d bytes after writing 1 MiB, want at least 1 MiB", got)
	}
	if got := c.read(procs); got > 64<<10 {
		t.Errorf("dirtied %d bytes with no write, want about 0", got)
	}
}

// TestQuotaCloseQuiets checks that once Close has returned (it does not
// wait for the watcher to wind down) a workspace growing past its limit
// is neither killed nor reported, and that the watcher's threads, whose
// priority it raised, go back to normal scheduling (they are handed back
// to the runtime for reuse, or end).
func TestQuotaCloseQuiets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fanotify mount marks and raising thread priority need root")
	}
	const limit = 1 << 20
	tests := []struct {
		name     string
		viaMount bool
	}{
		{"write through the mount after Close", true},
		{"write found by the periodic measurement after Close", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Apply(Options{Dir: dir, Bytes: limit})
			if err != nil {
				t.Fatal(err)
			}
			if l.Support().Mode != ModeWatched {
				l.Close()
				t.Skipf("%s: not a watched filesystem", l.Support())
			}
			tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			mount := os.NewFile(uintptr(tree), "tree")
			defer mount.Close()
			var mu sync.Mutex
			var kills, reports int
			if err := l.Watch(mount, "", func() { mu.Lock(); kills++; mu.Unlock() }, func(*ExceededError) { mu.Lock(); reports++; mu.Unlock() }); err != nil {
				t.Fatal(err)
			}
			// The watcher's threads run at raised priority (which the
			// check below must be able to see).
			for deadline := time.Now().Add(2 * time.Second); len(raisedThreads(t)) < 2; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the watcher's threads are not at raised priority: %v", raisedThreads(t))
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.viaMount {
				fd, err := unix.Openat(tree, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				unix.Write(fd, make([]byte, 2*limit))
				unix.Close(fd)
			} else {
				write(t, dir+"/f", 2*limit)
			}
			time.Sleep(Backstop + 500*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if kills != 0 || reports != 0 {
				t.Errorf("after Close: %d kills, %d reports, want none", kills, reports)
			}
			if raised := raisedThreads(t); len(raised) > 0 {
				t.Errorf("threads still at raised priority after Close: %v", raised)
			}
		})
	}
}

// raisedThreads lists this process's threads with a real-time policy or a
// negative nice value ("tid policy nice").
func raisedThreads(t *testing.T) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue // ended meanwhile
		}
		// Fields after the command (in parentheses): state is field 3;
		// nice is 19, policy 41.
		_, rest, ok := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 39 {
			t.Fatalf("/proc/self/task/%s/stat: %q", task.Name(), b)
		}
		nice, policy := f[19-3], f[41-3]
		if policy != "0" || strings.HasPrefix(nice, "-") {
			out = append(out, task.Name()+" policy "+policy+" nice "+nice)
		}
	}
	return out
}

// TestQuotaMeasureAfterClose checks a measurement that was running when
// Close returned (here: started after it) finds the workspace over its
// limit and neither kills nor reports.
func TestQuotaMeasureAfterClose(t *testing.T) {
	dir := t.TempDir()
	l, err := Apply(Options{Dir: dir, Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if l.Support().Mode != ModeWatched {
		l.Close()
		t.Skipf("%s: not a watched filesystem", l.Support())
	}
	var kills, reports atomic.Int32
	if err := l.Watch(nil, "", func() { kills.Add(1) }, func(*ExceededError) { reports.Add(1) }); err != nil {
		t.Fatal(err)
	}
	l.refs.Add(1) // the measurement's hold on the workspace descriptor
	defer l.release()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	write(t, dir+"/f", 2<<20)
	if done, _ := l.measure(true); !done {
		t.Fatal("the measurement did not find the workspace over its limit")
	}
	if kills.Load() != 0 || reports.Load() != 0 {
		t.Errorf("after Close: %d kills, %d reports, want none", kills.Load(), reports.Load())
	}
}
