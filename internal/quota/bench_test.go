package quota

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkQuotaWalk measures one measurement of a workspace of n small
// files in 100-file directories: the watcher's periodic cost.
func BenchmarkQuotaWalk(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			for i := range n {
				p := filepath.Join(dir, fmt.Sprintf("d%d/f%d", i/100, i))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			fd, err := openDir(unix.AT_FDCWD, dir)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			w, err := newWalker(fd)
			if err != nil {
				b.Fatal(err)
			}
			w.track = make(map[uint64]int64)
			b.ReportAllocs()
			// CPU time is what the watcher's caps are in (wall time is
			// noise on a shared machine).
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu := threadCPU()
			for b.Loop() {
				if err := w.run(fd); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(threadCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkQuotaEvent measures what one write notification costs the
// watcher: open_by_handle_at, fstat and the running total.
func BenchmarkQuotaEvent(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("open_by_handle_at needs root")
	}
	dir := b.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, f, 0)
	if err != nil {
		b.Skip(err)
	}
	root, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(root)
	ev := &events{root: root, fid: true}
	// An event's info record: header, fsid, then struct file_handle.
	info := make([]byte, 20+h.Size())
	info[0] = unix.FAN_EVENT_INFO_TYPE_FID
	binary.NativeEndian.PutUint16(info[2:], uint16(len(info)))
	binary.NativeEndian.PutUint32(info[12:], uint32(h.Size()))
	binary.NativeEndian.PutUint32(info[16:], uint32(h.Type()))
	copy(info[20:], h.Bytes())
	m := &unix.FanotifyEventMetadata{Fd: unix.FAN_NOFD}
	var t tally
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := threadCPU()
	defer func() { b.ReportMetric(float64(threadCPU()-cpu)/float64(b.N), "cpu-ns/op") }()
	for b.Loop() {
		ino, n, ok := ev.stat(m, info)
		if !ok {
			b.Fatal("event not resolved")
		}
		t.seen(ino, n)
	}
}

// BenchmarkQuotaStart measures what a sandbox start pays for its disk
// limit with an empty workspace: Apply (detect, measure, free space),
// and Watch on the workspace mount (fanotify); Close is not counted.
func BenchmarkQuotaStart(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("fanotify mount marks need root")
	}
	dir := b.TempDir()
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	mount := os.NewFile(uintptr(tree), "tree")
	defer mount.Close()
	b.ReportAllocs()
	for b.Loop() {
		l, err := Apply(Options{Dir: dir, Bytes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Watch(mount, "", func() {}, func(*ExceededError) {}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer() // Close runs after the sandbox, off the start path
		l.Close()
		b.StartTimer()
	}
}

// BenchmarkQuotaPoll measures one 50 ms poll of the watcher for a sandbox
// of 4 processes: cgroup.procs, /proc/PID/io each, statfs.
func BenchmarkQuotaPoll(b *testing.B) {
	dir := b.TempDir()
	procs := filepath.Join(dir, "cgroup.procs")
	pid := fmt.Sprint(os.Getpid())
	if err := os.WriteFile(procs, []byte(pid+"\n"+pid+"\n"+pid+"\n"+pid+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	l, err := Apply(Options{Dir: dir, Bytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var io ioCounter
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := threadCPU()
	b.ReportAllocs()
	for b.Loop() {
		io.read(procs)
		l.freeInodes()
	}
	b.ReportMetric(float64(threadCPU()-cpu)/float64(b.N), "cpu-ns/op")
}
