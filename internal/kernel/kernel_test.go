package kernel

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const hybridMounts = `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,nosuid,nodev,noexec,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,xattr,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`

func TestParseMounts(t *testing.T) {
	v2 := func(content string) func(string) (string, error) {
		return func(mp string) (string, error) { return content, nil }
	}
	cases := []struct {
		name        string
		mounts      string
		v2          func(string) (string, error)
		wantVersion string
		want        map[string]string
	}{
		{"hybrid: v1 controllers win over the v2 mount", hybridMounts, v2("memory pids hugetlb\n"), "hybrid",
			map[string]string{"cpu": "v1:/sys/fs/cgroup/cpu", "memory": "v1:/sys/fs/cgroup/memory", "pids": "v1:/sys/fs/cgroup/pids", "hugetlb": "v2:/sys/fs/cgroup/unified"}},
		{"pure v2", "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0\n",
			v2("cpuset cpu io memory hugetlb pids rdma misc\n"), "v2",
			map[string]string{"cpu": "v2:/sys/fs/cgroup", "memory": "v2:/sys/fs/cgroup", "pids": "v2:/sys/fs/cgroup", "io": "v2:/sys/fs/cgroup"}},
		{"pure v2 without memory delegated", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", v2("cpu pids\n"), "v2",
			map[string]string{"cpu": "v2:/sys/fs/cgroup", "pids": "v2:/sys/fs/cgroup", "memory": ""}},
		{"pure v1 with co-mounted cpu,cpuacct", "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n", nil, "v1",
			map[string]string{"cpu": "v1:/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "v1:/sys/fs/cgroup/cpu,cpuacct", "memory": "v1:/sys/fs/cgroup/memory", "pids": "", "name=systemd": ""}},
		{"no cgroups mounted", "proc /proc proc rw 0 0\n", nil, "none", map[string]string{"memory": ""}},
		{"unreadable cgroup.controllers", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
			func(string) (string, error) { return "", os.ErrPermission }, "v2", map[string]string{"memory": ""}},
		{"octal escapes in mount point", `cgroup2 /mnt/my\040cgroups cgroup2 rw 0 0` + "\n", v2("memory"), "v2",
			map[string]string{"memory": "v2:/mnt/my cgroups"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cg := parseMounts(tc.mounts, tc.v2)
			if cg.Version != tc.wantVersion {
				t.Errorf("version %q, want %q", cg.Version, tc.wantVersion)
			}
			for c, want := range tc.want {
				if got := cg.Controllers[c]; got != want {
					t.Errorf("controller %s at %q, want %q", c, got, want)
				}
			}
		})
	}
}

func TestLandlockFeature(t *testing.T) {
	cases := []struct {
		name       string
		abi        int
		errno      syscall.Errno
		ok         bool
		detail     string
		fix        string
		reportsABI int
	}{
		{"not built in", 0, unix.ENOSYS, false, "no Landlock system calls", "CONFIG_SECURITY_LANDLOCK=y", 0},
		{"built but not enabled at boot", 0, unix.EOPNOTSUPP, false, "not enabled at boot", "lsm=landlock", 0},
		{"ABI 1 only filesystem", 1, 0, true, "ABI 1: filesystem; lacks TCP rules (ABI 4, Linux 6.7), abstract-socket", "", 1},
		{"ABI 5 lacks scoping", 5, 0, true, "ABI 5: filesystem, TCP bind/connect; lacks abstract-socket and signal scoping", "", 5},
		{"ABI 7 complete", 7, 0, true, "ABI 7: filesystem, TCP bind/connect, abstract-socket and signal scoping", "", 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, abi := landlockFeature(tc.abi, tc.errno)
			if f.OK != tc.ok || abi != tc.reportsABI || !f.Required {
				t.Errorf("ok=%v abi=%d required=%v, want ok=%v abi=%d required", f.OK, abi, f.Required, tc.ok, tc.reportsABI)
			}
			if !strings.Contains(f.Detail, tc.detail) {
				t.Errorf("detail %q does not contain %q", f.Detail, tc.detail)
			}
			if tc.fix != "" && !strings.Contains(f.Fix, tc.fix) {
				t.Errorf("fix %q does not contain %q", f.Fix, tc.fix)
			}
			if tc.ok && f.Fix != "" {
				t.Errorf("present feature has a fix: %q", f.Fix)
			}
		})
	}
}

func TestCgroupFeatureFix(t *testing.T) {
	cases := []struct {
		name   string
		cg     Cgroups
		ctrl   string
		ok     bool
		fix    string
		detail string
	}{
		{"v1 memory present", Cgroups{Version: "v1", Controllers: map[string]string{"memory": "v1:/sys/fs/cgroup/memory"}}, "memory", true, "", "cgroup v1 (/sys/fs/cgroup/memory)"},
		{"v1 pids missing: mount it", Cgroups{Version: "v1", Controllers: map[string]string{}}, "pids", false, "mount -t cgroup -o pids", "no v1 hierarchy has the pids controller"},
		{"v2 memory missing: delegate", Cgroups{Version: "v2", V2Mount: "/sys/fs/cgroup", Controllers: map[string]string{}}, "memory", false, "cgroup_enable=memory", "/sys/fs/cgroup/cgroup.controllers"},
		{"nothing mounted", Cgroups{Version: "none", Controllers: map[string]string{}}, "pids", false, "mount -t cgroup2", "no cgroup filesystem"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := cgroupFeature(tc.cg, "cgroup-"+tc.ctrl, tc.ctrl, true)
			if f.OK != tc.ok {
				t.Errorf("ok=%v, want %v", f.OK, tc.ok)
			}
			if !strings.Contains(f.Fix, tc.fix) {
				t.Errorf("fix %q does not contain %q", f.Fix, tc.fix)
			}
			if !strings.Contains(f.Detail, tc.detail) {
				t.Errorf("detail %q does not contain %q", f.Detail, tc.detail)
			}
		})
	}
}

func TestEnforceable(t *testing.T) {
	okAll := []Feature{
		{Name: Landlock, OK: true, Required: true}, {Name: Seccomp, OK: true, Required: true},
		{Name: Nftables, OK: false, Required: false, Detail: "absent"},
	}
	if err := (Report{Features: okAll}).Enforceable(); err != nil {
		t.Errorf("all required present (an optional one absent): %v", err)
	}
	missing := Report{Features: []Feature{
		{Name: Landlock, Required: true, Detail: "Landlock is built in but not enabled at boot", Fix: "add landlock to lsm="},
		{Name: Seccomp, OK: true, Required: true},
		{Name: CgroupPids, Required: true, Detail: "no v1 hierarchy has the pids controller", Fix: "mount it"},
	}}
	err := missing.Enforceable()
	if err == nil {
		t.Fatal("missing Landlock and pids reported enforceable")
	}
	for _, want := range []string{"landlock: Landlock is built in but not enabled at boot (fix: add landlock to lsm=)", "cgroup-pids: no v1 hierarchy", "fix: mount it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "seccomp") {
		t.Errorf("error %q names a present feature", err)
	}
	if f, ok := missing.Feature(CgroupPids); !ok || f.Status() != "missing" {
		t.Errorf("Feature(cgroup-pids) = %+v, %v; want status missing", f, ok)
	}
	if f := (Feature{Name: Nftables}); f.Status() != "absent" {
		t.Errorf("optional absent feature status %q", f.Status())
	}
}

// TestProbeThisMachine checks the probe against the CI machine, which has
// Landlock, seccomp, namespaces and v1 memory/pids cgroups.
func TestProbeThisMachine(t *testing.T) {
	r := Probe(context.Background())
	if r.Kernel == "" || r.Arch == "" {
		t.Errorf("kernel release %q, arch %q: want both", r.Kernel, r.Arch)
	}
	if r.LandlockABI < 1 {
		t.Errorf("Landlock ABI %d, want >= 1", r.LandlockABI)
	}
	for _, name := range []string{Landlock, Seccomp, CgroupMemory, CgroupPids, Pidfd} {
		f, ok := r.Feature(name)
		if !ok || !f.OK {
			t.Errorf("%s: %+v, want present", name, f)
		}
	}
	if r.Cgroups.Version == "none" {
		t.Errorf("no cgroups found: %+v", r.Cgroups)
	}
	if os.Geteuid() != 0 {
		t.Skip("namespace probes and Enforceable need root; not root")
	}
	for _, name := range []string{UserNS, NetNS} {
		if f, _ := r.Feature(name); !f.OK {
			t.Errorf("%s: %+v, want present", name, f)
		}
	}
	if err := r.Enforceable(); err != nil {
		t.Errorf("Enforceable on this machine: %v", err)
	}
}

func TestRequireLandlockABI(t *testing.T) {
	cases := []struct {
		name    string
		abi     int
		min     int
		ok      bool
		fixHas  string
		present bool
	}{
		{"ABI 7 meets 6", 7, 6, true, "", true},
		{"ABI 6 meets 6", 6, 6, true, "", true},
		{"ABI 5 below 6 refused", 5, 6, false, "Linux 6.12 or later", true},
		{"ABI 3 below 4 refused", 3, 4, false, "Linux 6.7 or later", true},
		{"absent stays absent", 0, 6, false, "lsm=", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := landlockFeature(tc.abi, 0)
			if !tc.present {
				f, _ = landlockFeature(0, unix.EOPNOTSUPP)
			}
			r := Report{LandlockABI: tc.abi, Features: []Feature{f}}
			r.RequireLandlockABI(tc.min)
			got, _ := r.Feature(Landlock)
			if got.OK != tc.ok {
				t.Errorf("ok=%v, want %v (%+v)", got.OK, tc.ok, got)
			}
			if !strings.Contains(got.Fix, tc.fixHas) {
				t.Errorf("fix %q lacks %q", got.Fix, tc.fixHas)
			}
			if (r.Enforceable() == nil) != tc.ok {
				t.Errorf("Enforceable() = %v with ok=%v", r.Enforceable(), tc.ok)
			}
		})
	}
}

func TestSuidDumpableFeature(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		present bool
		ok      bool
		fix     bool
	}{
		{"default 0", "0", true, true, false},
		{"core pipe 2", "2", true, true, false},
		{"debug 1 refused", "1", true, false, true},
		{"unknown value refused", "3", true, false, true},
		{"no sysctl", "", false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := suidDumpableFeature(tt.value, tt.present)
			if f.Name != SuidDumpable || !f.Required {
				t.Fatalf("feature = %+v, want required %q", f, SuidDumpable)
			}
			if f.OK != tt.ok || (f.Fix != "") != tt.fix {
				t.Fatalf("suidDumpableFeature(%q, %v) = ok %v fix %q, want ok %v, fix given %v", tt.value, tt.present, f.OK, f.Fix, tt.ok, tt.fix)
			}
			r := Report{LandlockABI: 7, Features: []Feature{f}}
			if err := r.Enforceable(); (err == nil) != tt.ok {
				t.Fatalf("Enforceable() = %v with %+v", err, f)
			}
		})
	}
}
