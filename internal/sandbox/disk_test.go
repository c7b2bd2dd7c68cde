package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/quota"
	"github.com/clawcage/clawcage/internal/quota/quotatest"
)

// diskOvershoot is the most a watched workspace may hold beyond its limit
// when the sandbox is stopped in these tests: what the sandbox writes
// between a write and the kill, at most the margin a sandbox needs free
// beyond its limit to start (docs/sandbox.md, "Disk").
const diskOvershoot = quota.WatchedMargin

// mmapFill fills the workspace through shared mappings of sparse files:
// no write notification, only the bytes the processes dirty tell.
const mmapFill = `exec /usr/bin/python3 -c '
import mmap, os
i = 0
while True:
    fd = os.open("/sandbox/m%d" % i, os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, 1 << 20)
    m = mmap.mmap(fd, 1 << 20)
    m.write(b"x" * (1 << 20))
    m.close()
    os.close(fd)
    i += 1
'`

// TestDiskLimitWatched fills a workspace on the host's filesystem (no
// project quota here: the watcher enforces the limit) from inside.
func TestDiskLimitWatched(t *testing.T) {
	needSandbox(t)
	const limit = 8 << 20
	if s, err := quota.Detect(t.TempDir()); err != nil || s.Mode != quota.ModeWatched {
		t.Skipf("the test directory's filesystem is not watched (%v, %v): TestDiskQuotaProject covers project quota", s, err)
	}
	tests := []struct {
		name     string
		script   string
		wantCode int
		stopped  bool   // stopped by the watcher with *quota.ExceededError
		stderr   string // in the command's stderr
	}{
		{"within the limit runs untouched", "dd if=/dev/zero of=/sandbox/f bs=1M count=2 2>&1 && sync", 0, false, ""},
		{"one file past the limit gets EFBIG", "dd if=/dev/zero of=/sandbox/f bs=1 count=1 seek=9M", 1, false, "File too large"},
		{"truncate past the limit gets EFBIG", "truncate -s 9M /sandbox/f", 1, false, "File too large"},
		{"many files filling the disk are stopped", "i=0; while :; do dd if=/dev/zero of=/sandbox/f$i bs=1M count=1 2>/dev/null || exit 99; i=$((i+1)); done", 137, true, ""},
		{"fallocate filling the disk is stopped", "i=0; while :; do fallocate -l 1M /sandbox/f$i || exit 99; i=$((i+1)); done", 137, true, ""},
		{"writes through shared mappings are stopped", mmapFill, 137, true, ""},
		{"one large write loop across files is stopped", "dd if=/dev/zero bs=64k count=100000 2>/dev/null | split -b 4M - /sandbox/part; exit 99", 137, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := filepath.Join(t.TempDir(), "ws") // created for the sandbox's user
			var logs bytes.Buffer
			r := runBox(t, Spec{Command: sh(tc.script), Workspace: ws, Root: true, Limits: Limits{Disk: limit}, Log: slog.New(slog.NewTextHandler(&logs, nil))})
			if want := `mode="watched (no project quota on `; !strings.Contains(logs.String(), want) {
				t.Errorf("log %q, want the mode line %q", logs.String(), want)
			}
			var ex *quota.ExceededError
			if stopped := errors.As(r.err, &ex); stopped != tc.stopped {
				t.Fatalf("stopped for disk use = %v (err %v), want %v; stderr %q", stopped, r.err, tc.stopped, r.stderr)
			}
			if !tc.stopped && r.err != nil {
				t.Fatalf("err %v; stderr %q", r.err, r.stderr)
			}
			if r.code != tc.wantCode {
				t.Errorf("exit code %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tc.stderr)
			}
			used, err := quota.Usage(ws)
			if err != nil {
				t.Fatal(err)
			}
			if used > limit+diskOvershoot {
				t.Errorf("workspace holds %d bytes, more than the limit %d + overshoot %d", used, limit, diskOvershoot)
			}
			if tc.stopped {
				want := fmt.Sprintf("workspace %s exceeded its disk limit of %d bytes (used ", ws, limit)
				if !strings.Contains(ex.Error(), want) || !strings.HasSuffix(ex.Error(), "; free space or raise resources.disk") {
					t.Errorf("error %q, want %q...", ex.Error(), want)
				}
				reaction := "?"
				if _, after, ok := strings.Cut(logs.String(), "duration="); ok {
					reaction, _, _ = strings.Cut(after, "\n")
				}
				t.Logf("stopped at %d bytes (limit %d, overshoot %d; %d bytes on disk after the kill; reaction %s)", ex.Used, limit, ex.Used-limit, used, reaction)
			}
		})
	}
}

// TestDiskQuotaProject fills a workspace on an ext4 filesystem with project
// quota (a loop-mounted image) from inside: the write past the limit fails
// with EDQUOT and the filesystem loses no more than the limit.
func TestDiskQuotaProject(t *testing.T) {
	needSandbox(t)
	mnt := quotatest.MountExt4(t, 64, "quota,project", "prjquota")
	const limit = 4 << 20
	ws := filepath.Join(mnt, "ws")
	free := quotatest.Free(t, mnt)
	var logs bytes.Buffer
	r := runBox(t, Spec{
		Command:   sh("dd if=/dev/zero of=/sandbox/fill bs=64k count=1000"),
		Workspace: ws,
		Limits:    Limits{Disk: limit},
		Log:       slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if r.err != nil {
		t.Fatalf("err %v; stderr %q", r.err, r.stderr)
	}
	if r.code != 1 || !strings.Contains(r.stderr, "Disk quota exceeded") {
		t.Errorf("exit code %d, stderr %q; want dd to fail with 1 and \"Disk quota exceeded\"", r.code, r.stderr)
	}
	if want := fmt.Sprintf(`mode="project quota (ext4 at %s)"`, mnt); !strings.Contains(logs.String(), want) {
		t.Errorf("log %q, want %q", logs.String(), want)
	}
	fi, err := os.Stat(filepath.Join(ws, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > limit || fi.Size() < limit-1<<20 {
		t.Errorf("the file holds %d bytes, want just under the %d limit", fi.Size(), limit)
	}
	if lost := free - quotatest.Free(t, mnt); lost > limit+256<<10 {
		t.Errorf("the filesystem lost %d bytes of free space, more than the %d limit", lost, limit)
	}
}

// TestDiskLimitDefault checks a sandbox without a configured disk limit
// still gets one: what the workspace holds plus at most half the free
// space (quota.DefaultGrowth at most).
func TestDiskLimitDefault(t *testing.T) {
	needSandbox(t)
	var logs bytes.Buffer
	r := runBox(t, Spec{Command: sh("ulimit -f"), Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if r.err != nil || r.code != 0 {
		t.Fatalf("code %d, err %v, stderr %q", r.code, r.err, r.stderr)
	}
	if !strings.Contains(logs.String(), "limit_source=default") {
		t.Errorf("log %q, want the default limit's mode line", logs.String())
	}
	if s, err := quota.Detect(os.TempDir()); err == nil && s.Mode == quota.ModeWatched {
		// ulimit -f prints 512-byte blocks.
		blocks, err := strconv.ParseInt(strings.TrimSpace(r.stdout), 10, 64)
		if err != nil {
			t.Fatalf("ulimit -f printed %q", r.stdout)
		}
		if limit := blocks * 512; limit <= 0 || limit > quota.DefaultGrowth+1<<20 || limit > quotatest.Free(t, os.TempDir())/2+64<<20 {
			t.Errorf("RLIMIT_FSIZE %d bytes: want the default, at most %d and half the free space", limit, quota.DefaultGrowth)
		}
	}
}
