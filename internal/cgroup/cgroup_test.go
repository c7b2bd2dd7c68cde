package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	mountsHybrid = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	selfHybrid = `8:pids:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
`
	mountsV2 = `25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	mountsCoMounted = `31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 /docker/x /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
`
	selfCoMounted = `3:cpu,cpuacct:/user.slice
4:memory:/docker/x/inner
8:pids:/
`
)

func TestDetect(t *testing.T) {
	ctl := func(m map[string][]string) func(string) ([]string, error) {
		return func(mount string) ([]string, error) {
			c, ok := m[mount]
			if !ok {
				return nil, os.ErrNotExist
			}
			return c, nil
		}
	}
	tests := []struct {
		name      string
		mountinfo string
		self      string
		ctl       map[string][]string
		need      []string
		want      *hierarchy
		wantErr   string
	}{
		{"pure v2 with all controllers", mountsV2, "0::/user.slice/x\n", map[string][]string{"/sys/fs/cgroup": {"cpuset", "cpu", "io", "memory", "pids"}}, controllers, &hierarchy{version: V2, v2Mount: "/sys/fs/cgroup"}, ""},
		{"hybrid: v2 mount without controllers falls back to v1 under our own cgroups", mountsHybrid, selfHybrid, map[string][]string{"/sys/fs/cgroup/unified": {"hugetlb"}}, controllers,
			&hierarchy{version: V1, v1Dirs: map[string]string{"memory": "/sys/fs/cgroup/memory/process_api/abc", "pids": "/sys/fs/cgroup/pids", "cpu": "/sys/fs/cgroup/cpu"}}, ""},
		{"v1 without a CPU limit still finds cpu's hierarchy (swept for stale groups)", mountsHybrid, selfHybrid, nil, controllers[:2],
			&hierarchy{version: V1, v1Dirs: map[string]string{"memory": "/sys/fs/cgroup/memory/process_api/abc", "pids": "/sys/fs/cgroup/pids", "cpu": "/sys/fs/cgroup/cpu"}}, ""},
		{"v1 co-mounted cpu,cpuacct and a mount rooted below /", mountsCoMounted, selfCoMounted, nil, controllers,
			&hierarchy{version: V1, v1Dirs: map[string]string{"memory": "/sys/fs/cgroup/memory/inner", "pids": "/sys/fs/cgroup/pids", "cpu": "/sys/fs/cgroup/cpu,cpuacct/user.slice"}}, ""},
		{"v2 lacking pids and no v1", mountsV2, "0::/\n", map[string][]string{"/sys/fs/cgroup": {"cpu", "memory"}}, controllers, nil, "does not offer the pids controller"},
		{"v2 without cpu is enough when no CPU limit is asked", mountsV2, "0::/\n", map[string][]string{"/sys/fs/cgroup": {"memory", "pids"}}, controllers[:2], &hierarchy{version: V2, v2Mount: "/sys/fs/cgroup"}, ""},
		{"v2 without cpu when a CPU limit is asked", mountsV2, "0::/\n", map[string][]string{"/sys/fs/cgroup": {"memory", "pids"}}, controllers, nil, "does not offer the cpu controller"},
		{"nothing mounted", "22 1 0:21 / /sys rw - sysfs sysfs rw\n", "", nil, controllers, nil, "no cgroup file system is mounted"},
		{"v1 without the pids hierarchy", strings.ReplaceAll(mountsHybrid, "rw,pids", "rw,freezer"), selfHybrid, nil, controllers, nil, "no hierarchy offers the pids controller"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := detect(tc.mountinfo, tc.self, ctl(tc.ctl), tc.need)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(*h) != fmt.Sprint(*tc.want) {
				t.Errorf("got %+v, want %+v", *h, *tc.want)
			}
		})
	}
}

func TestCPUQuota(t *testing.T) {
	for _, tc := range []struct {
		cpus float64
		want int64
	}{{1, 100000}, {1.5, 150000}, {0.001, 1000}, {0.25, 25000}} {
		if got := cpuQuota(tc.cpus); got != tc.want {
			t.Errorf("cpuQuota(%g) = %d, want %d", tc.cpus, got, tc.want)
		}
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	tests := []struct {
		name    string
		group   string
		limits  Limits
		wantErr string
	}{
		{"path traversal in name", "../x", Limits{}, "only letters"},
		{"slash in name", "a/b", Limits{}, "only letters"},
		{"empty name", "", Limits{}, "only letters"},
		{"negative memory", "ok", Limits{Memory: -1}, "negative or invalid"},
		{"NaN cpu", "ok", Limits{CPU: nan()}, "negative or invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.group, tc.limits)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func nan() float64 { z := 0.0; return z / z }

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroup tests need root; run `go test` as root")
	}
}

func testName(t *testing.T) string {
	return fmt.Sprintf("test-%d-%s", os.Getpid(), strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
}

// TestGroupLimitsAndDestroy creates a real group and checks the limit files,
// membership, and that Destroy kills what is inside and removes every
// directory.
func TestGroupLimitsAndDestroy(t *testing.T) {
	needRoot(t)
	g, err := New(context.Background(), testName(t), Limits{Memory: 64 << 20, Pids: 32, CPU: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Destroy()
	var want map[string]string
	if g.Version() == V2 {
		want = map[string]string{"memory.max": "67108864", "pids.max": "32", "cpu.max": "50000 100000"}
	} else {
		want = map[string]string{"memory.limit_in_bytes": "67108864", "pids.max": "32", "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"}
		if _, err := os.Stat(filepath.Join(g.Dir("memory"), "memory.memsw.limit_in_bytes")); err == nil {
			want["memory.memsw.limit_in_bytes"] = "67108864"
		}
	}
	for file, v := range want {
		c := strings.SplitN(file, ".", 2)[0]
		b, err := os.ReadFile(filepath.Join(g.Dir(c), file))
		if err != nil || strings.TrimSpace(string(b)) != v {
			t.Errorf("%s = %q (%v), want %q", file, b, err, v)
		}
	}

	sleep := exec.Command("/bin/sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleep.Process.Kill()
	if err := g.AddProcess(sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	for _, c := range controllers {
		if !strings.Contains(" "+strings.Join(strings.Fields(readFile(t, filepath.Join(g.Dir(c), "cgroup.procs"))), " ")+" ", " "+strconv.Itoa(sleep.Process.Pid)+" ") {
			t.Errorf("pid %d not in the %s group", sleep.Process.Pid, c)
		}
	}
	st, err := g.Stats()
	if err != nil || st.Pids != 1 {
		t.Errorf("Stats = %+v, %v; want 1 pid", st, err)
	}
	// Current use is the group's own counter (an idle group: it does not
	// move between the two reads) and never above the peak.
	file := "memory.current"
	if g.Version() == V1 {
		file = "memory.usage_in_bytes"
	}
	if now := strings.TrimSpace(readFile(t, filepath.Join(g.Dir("memory"), file))); now != strconv.FormatInt(st.MemoryCurrent, 10) ||
		(st.MemoryPeak > 0 && st.MemoryCurrent > st.MemoryPeak) {
		t.Errorf("Stats = %+v, %s = %s: want MemoryCurrent from %s, at most the peak", st, file, now, file)
	}

	if err := g.Destroy(); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- sleep.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("process in the group ended with %v, want SIGKILL", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("process in the group survived Destroy")
	}
	for _, c := range controllers {
		if _, err := os.Stat(g.Dir(c)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s group directory %s still exists", c, g.Dir(c))
		}
	}
	if err := g.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

// TestGroupNameReuse: an empty leftover group of the same name is
// replaced; one with processes in it is refused; RemoveStale removes only
// empty groups it is asked to.
func TestGroupNameReuse(t *testing.T) {
	needRoot(t)
	name := testName(t)
	g, err := New(context.Background(), name, Limits{Pids: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Destroy()
	// g is now an empty leftover (as if its launcher had died).
	g2, err := New(context.Background(), name, Limits{Pids: 9})
	if err != nil {
		t.Fatalf("New over an empty leftover: %v", err)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(g2.Dir("pids"), "pids.max"))); got != "9" {
		t.Errorf("pids.max %q, want the new group's 9", got)
	}
	sleep := exec.Command("/bin/sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	if err := g2.AddProcess(sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := New(context.Background(), name, Limits{Pids: 8}); err == nil || !strings.Contains(err.Error(), "with processes") {
		t.Errorf("New over a group in use: %v, want refusal", err)
	}
	if err := RemoveStale(func(n string) bool { return n == name }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g2.Dir("pids")); err != nil {
		t.Errorf("RemoveStale removed a group with a process in it: %v", err)
	}
	sleep.Process.Kill()
	sleep.Wait()
	// The kernel may take a moment to let go of the dead task (EBUSY).
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := RemoveStale(func(n string) bool { return n == name }); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(g2.Dir("pids")); errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			break
		}
	}
	for _, c := range controllers {
		if _, err := os.Stat(g2.Dir(c)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("RemoveStale left the empty %s group: %v", c, err)
		}
	}
}

// TestGroupRemoveStale: a group's RemoveStale removes the empty stale
// groups in every hierarchy (cpu's too, used by groups with a CPU limit)
// and never the group itself, even when isStale names it.
func TestGroupRemoveStale(t *testing.T) {
	needRoot(t)
	live, stale := testName(t)+"-live", testName(t)+"-stale"
	old, err := New(context.Background(), stale, Limits{Pids: 8, CPU: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Destroy()
	g, err := New(context.Background(), live, Limits{Pids: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Destroy()
	if err := g.RemoveStale(func(n string) bool { return n == stale || n == live }); err != nil {
		t.Fatal(err)
	}
	for _, c := range controllers {
		if _, err := os.Stat(old.Dir(c)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the stale group's %s directory %s is still there: %v", c, old.Dir(c), err)
		}
	}
	for _, c := range []string{"memory", "pids"} {
		if _, err := os.Stat(g.Dir(c)); err != nil {
			t.Errorf("RemoveStale removed the group itself (%s): %v", c, err)
		}
	}
}

// TestMemoryLimitKills runs a memory hog in a 32MiB group: the kernel kills
// it and the OOM counter says so.
func TestMemoryLimitKills(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 as a memory hog")
	}
	g, err := New(context.Background(), testName(t), Limits{Memory: 32 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Destroy()
	// The hog waits for a byte on stdin so it is in the group before it
	// allocates.
	hog := exec.Command("/usr/bin/python3", "-c", "import sys; sys.stdin.read(1); x = b'x' * (256 << 20); print('survived')")
	in, err := hog.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	hog.Stdout = &out
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.AddProcess(hog.Process.Pid); err != nil {
		hog.Process.Kill()
		t.Fatal(err)
	}
	in.Write([]byte("x"))
	in.Close()
	err = hog.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL || out.String() != "" {
		t.Errorf("hog ended with %v, output %q; want SIGKILL by the OOM killer", err, out.String())
	}
	if st, err := g.Stats(); err != nil || st.OOMKills < 1 {
		t.Errorf("Stats = %+v, %v; want at least one OOM kill", st, err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
