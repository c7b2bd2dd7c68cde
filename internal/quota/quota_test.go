package quota

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/quota/quotatest"
)

func TestQuotaMountPointIn(t *testing.T) {
	const info = `26 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 26 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw
41 26 254:0 /srv /var/lib/with\040space rw - ext4 /dev/vda rw
42 26 8:1 / /data rw - xfs /dev/sda1 rw,prjquota
43 42 8:1 /sub /data/nested rw - xfs /dev/sda1 rw,prjquota
`
	tests := []struct {
		name         string
		path         string
		major, minor uint32
		want         string
	}{
		{"root filesystem", "/tmp/ws", 254, 0, "/"},
		{"escaped mount point", "/var/lib/with space/ws", 254, 0, "/var/lib/with space"},
		{"longest matching mount point wins", "/data/nested/ws", 8, 1, "/data/nested"},
		{"prefix must end at a path separator", "/datafoo/ws", 8, 1, "?"},
		{"device must match", "/data/ws", 254, 0, "/"},
		{"no mount of the device", "/x", 9, 9, "?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mountPointIn(bufio.NewScanner(strings.NewReader(info)), tc.path, tc.major, tc.minor)
			if got != tc.want {
				t.Errorf("mountPointIn(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestQuotaSupportString(t *testing.T) {
	tests := []struct {
		name string
		s    Support
		want string
	}{
		{"project quota", Support{Mode: ModeProject, FSType: "xfs", Mount: "/var"}, "project quota (xfs at /var)"},
		{"watched", Support{Mode: ModeWatched, FSType: "ext4", Mount: "/", Reason: "no quota is enabled"}, "watched (no project quota on ext4 at /: no quota is enabled)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestQuotaErrReason(t *testing.T) {
	tests := []struct {
		name string
		err  error
		fs   string
		want string
	}{
		{"no quota enabled on ext4", unix.ENOSYS, "ext4", "no quota is enabled (ext4: tune2fs -O quota,project"},
		{"no quota enabled on xfs", unix.ESRCH, "xfs", "no quota is enabled (xfs: mount -o prjquota)"},
		{"filesystem without quota", unix.EOPNOTSUPP, "btrfs", "the filesystem has no project quota"},
		{"other error", unix.EPERM, "ext4", "quotactl: operation not permitted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := quotaErrReason(tc.err, tc.fs); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want prefix %q", got, tc.want)
			}
		})
	}
}

// du returns `du -s -B1 dir`: allocated bytes, hard links once, symlinks
// not followed (the walker must agree with it).
func du(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "-B1", dir).Output()
	if err != nil {
		t.Skipf("du: %v", err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func write(t *testing.T, path string, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestQuotaUsage(t *testing.T) {
	tests := []struct {
		name  string
		build func(t *testing.T, dir string)
		min   int64 // at least this many bytes
	}{
		{"empty directory", func(*testing.T, string) {}, 0},
		{"files in nested directories", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "a"), 100<<10)
			write(t, filepath.Join(dir, "b/c/d"), 300<<10)
		}, 400 << 10},
		{"sparse file counts its blocks, not its size", func(t *testing.T, dir string) {
			f, err := os.Create(filepath.Join(dir, "sparse"))
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(1 << 30)
			f.Close()
		}, 0},
		{"hard links counted once", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "a"), 512<<10)
			for i := range 4 {
				if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "l"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
		}, 512 << 10},
		{"symlinks to the host are not followed", func(t *testing.T, dir string) {
			os.Symlink("/", filepath.Join(dir, "root"))
			os.Symlink("/usr", filepath.Join(dir, "usr"))
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.build(t, dir)
			got, err := Usage(dir)
			if err != nil {
				t.Fatal(err)
			}
			if want := du(t, dir); got != want {
				t.Errorf("Usage = %d, du -s -B1 = %d", got, want)
			}
			if got < tc.min || got > tc.min+1<<20 {
				t.Errorf("Usage = %d, want %d..%d", got, tc.min, tc.min+1<<20)
			}
		})
	}
}

func TestQuotaUsageTooDeep(t *testing.T) {
	dir := t.TempDir()
	fd, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		t.Fatal(err)
	}
	for range MaxDepth + 1 {
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := openDir(fd, "d")
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	if _, err := Usage(dir); !errors.Is(err, errTooDeep) {
		t.Errorf("Usage of %d nested directories: %v, want %v", MaxDepth+1, err, errTooDeep)
	}
}

func TestQuotaApply(t *testing.T) {
	tests := []struct {
		name    string
		fill    int
		limit   int64
		wantErr string
	}{
		{"under the limit", 256 << 10, 1 << 20, ""},
		{"already over the limit is refused", 256 << 10, 64 << 10, "uses more than its disk limit of 65536 bytes; free space or raise resources.disk"},
		{"limit beyond the free space is refused", 0, 1 << 60, "the sandbox could fill the host's disk; lower resources.disk or free space"},
		{"no limit gets the default", 256 << 10, 0, ""},
		{"negative limit is refused", 0, -1, "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "f"), tc.fill)
			l, err := Apply(Options{Dir: dir, Bytes: tc.limit, ProjectID: 0x40000000})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err %v, want %q", err, tc.wantErr)
				}
				if l != nil {
					l.Close()
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.Used() < int64(tc.fill) {
				t.Errorf("Used %d, want at least %d", l.Used(), tc.fill)
			}
			want := tc.limit
			if tc.limit == 0 {
				want = l.Used() + min(DefaultGrowth, quotatest.Free(t, dir)/2)
				// Free space moves with the rest of the machine.
				if d := l.Bytes() - want; d < -64<<20 || d > 64<<20 {
					t.Errorf("default limit %d, want about %d", l.Bytes(), want)
				}
				want = l.Bytes()
			} else if l.Bytes() != tc.limit {
				t.Errorf("Bytes %d, want %d", l.Bytes(), tc.limit)
			}
			if l.Support().Mode == ModeWatched && l.FileSizeLimit() != want {
				t.Errorf("watched: FileSizeLimit %d, want the limit %d", l.FileSizeLimit(), want)
			}
		})
	}
}

// TestWatch checks the watcher reports a workspace that grows past its
// limit, woken by a write through the sandbox's mount (fanotify) or, for
// writes it is not told of, by the periodic measurement.
func TestQuotaWatch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fanotify mount marks need root")
	}
	const limit = 1 << 20
	tests := []struct {
		name       string
		viaMount   bool
		size       int
		wantExceed bool
	}{
		{"write through the mount is noticed", true, 2 << 20, true},
		{"write elsewhere is found by the periodic measurement", false, 2 << 20, true},
		{"write within the limit is left alone", true, 256 << 10, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Apply(Options{Dir: dir, Bytes: limit})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.Support().Mode != ModeWatched {
				t.Skipf("%s: not a watched filesystem", l.Support())
			}
			tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			mount := os.NewFile(uintptr(tree), "tree")
			defer mount.Close()
			got := make(chan *ExceededError, 1)
			if err := l.Watch(mount, "", func() {}, func(e *ExceededError) { got <- e }); err != nil {
				t.Fatal(err)
			}
			if !l.Stats().Notify {
				t.Fatal("fanotify mark on the workspace mount failed")
			}
			if tc.viaMount {
				fd, err := unix.Openat(tree, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				unix.Write(fd, make([]byte, tc.size))
				unix.Close(fd)
			} else {
				write(t, filepath.Join(dir, "f"), tc.size)
			}
			select {
			case e := <-got:
				if !tc.wantExceed {
					t.Fatalf("reported %v for %d bytes under a %d limit", e, tc.size, limit)
				}
				if e.Err != nil || e.Used <= limit || e.Limit != limit || e.Dir != dir {
					t.Errorf("reported %+v", e)
				}
			case <-time.After(2*Backstop + time.Second):
				if tc.wantExceed {
					t.Fatalf("not reported; stats %+v", l.Stats())
				}
			}
			st := l.Stats()
			if tc.viaMount && st.Events == 0 {
				t.Errorf("no fanotify event counted for the write through the mount: %+v", st)
			}
			if st.Walks == 0 {
				t.Errorf("no measurement: %+v", st)
			}
		})
	}
}

// TestQuotaWatchFiles checks the limit on files and directories: empty
// files (no write notification, no bytes) past it are found through the
// filesystem's free inode count and reported.
func TestQuotaWatchFiles(t *testing.T) {
	dir := t.TempDir()
	l, err := Apply(Options{Dir: dir, Bytes: 1 << 30, Files: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Support().Mode != ModeWatched {
		t.Skipf("%s: not a watched filesystem", l.Support())
	}
	got := make(chan *ExceededError, 1)
	if err := l.Watch(nil, "", func() {}, func(e *ExceededError) { got <- e }); err != nil {
		t.Fatal(err)
	}
	for i := range 150 {
		if err := os.WriteFile(filepath.Join(dir, "e"+strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case e := <-got:
		want := "workspace " + dir + " exceeded its limit of 100 files and directories (has "
		if e.FileLimit != 100 || e.Files <= 100 || !strings.HasPrefix(e.Error(), want) {
			t.Errorf("reported %+v: %q, want %q...", e, e.Error(), want)
		}
	case <-time.After(2*Backstop + time.Second):
		t.Fatalf("150 files under a 100-file limit not reported; stats %+v", l.Stats())
	}
}

// TestQuotaProjectLabel labels a tree on an ext4 filesystem with project ids
// (no quota needed to label) and checks what is created later inherits the
// id; the sandbox cannot change it (not in the initial user namespace).
func TestQuotaProjectLabel(t *testing.T) {
	mnt := quotatest.MountExt4(t, 32, "project", "")
	const id = 0x40010000
	ws := filepath.Join(mnt, "ws")
	write(t, filepath.Join(ws, "old/file"), 4096)
	if err := os.Symlink("/etc/passwd", filepath.Join(ws, "link")); err != nil {
		t.Fatal(err)
	}
	fd, err := openDir(unix.AT_FDCWD, ws)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	w, err := newWalker(fd)
	if err != nil {
		t.Fatal(err)
	}
	w.label = func(fd int, dir bool) error { return setProject(fd, id, dir) }
	if err := w.run(fd); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(ws, "old/new/created-after"), 4096)
	tests := []struct {
		name        string
		path        string
		wantID      uint32
		wantInherit bool
	}{
		{"workspace root", ws, id, true},
		{"existing directory", filepath.Join(ws, "old"), id, true},
		{"existing file", filepath.Join(ws, "old/file"), id, false},
		{"directory created later inherits", filepath.Join(ws, "old/new"), id, true},
		{"file created later inherits", filepath.Join(ws, "old/new/created-after"), id, false},
		{"symlink target outside is untouched", "/etc/passwd", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Open(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a, err := getProject(int(f.Fd()))
			if err != nil {
				if tc.wantID == 0 {
					return // not a filesystem with project ids: untouched
				}
				t.Fatal(err)
			}
			if a.ProjID != tc.wantID || (a.XFlags&fsXflagProjInherit != 0) != tc.wantInherit {
				t.Errorf("project %d inherit %v, want %d %v", a.ProjID, a.XFlags&fsXflagProjInherit != 0, tc.wantID, tc.wantInherit)
			}
		})
	}
	s, err := Detect(ws)
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != ModeWatched || s.FSType != "ext4" || s.Mount != mnt || !strings.Contains(s.Reason, "no quota is enabled") {
		t.Errorf("Detect on ext4 with project ids but no quota: %+v", s)
	}
}

// TestProjectQuota checks the project quota path end to end on ext4 with
// quota and project features mounted prjquota: Apply labels and limits,
// writes past the limit fail with EDQUOT, Close removes the limit.
func TestProjectQuota(t *testing.T) {
	mnt := quotatest.MountExt4(t, 64, "quota,project", "prjquota")
	ws := filepath.Join(mnt, "ws")
	write(t, filepath.Join(ws, "existing"), 64<<10)
	const limit = 4 << 20
	l, err := Apply(Options{Dir: ws, Bytes: limit, ProjectID: 0x40020000})
	if err != nil {
		t.Fatal(err)
	}
	if l.Support().Mode != ModeProject || l.FileSizeLimit() != 0 {
		t.Fatalf("mode %s, file size limit %d; want project quota and none", l.Support(), l.FileSizeLimit())
	}
	free := quotatest.Free(t, mnt)
	f, err := os.Create(filepath.Join(ws, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	var written int64
	buf := make([]byte, 64<<10)
	for written < 16<<20 {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			if !errors.Is(err, unix.EDQUOT) {
				t.Fatalf("write at %d: %v, want EDQUOT", written, err)
			}
			break
		}
	}
	if err := f.Close(); err != nil && !errors.Is(err, unix.EDQUOT) {
		t.Fatal(err)
	}
	if written > limit {
		t.Errorf("wrote %d bytes, more than the %d limit", written, limit)
	}
	if used := free - quotatest.Free(t, mnt); used > limit {
		t.Errorf("free space fell by %d, more than the %d limit", used, limit)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Limit removed: the same project may grow again.
	if err := os.WriteFile(filepath.Join(ws, "after"), buf, 0o644); err != nil {
		t.Errorf("write after Close: %v", err)
	}
}
