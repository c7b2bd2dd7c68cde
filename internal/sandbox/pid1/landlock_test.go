package pid1

import (
	"slices"
	"testing"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// TestLandlockAccessSets checks that the access sets the plan uses are
// those of go-landlock's canned rules (its String shows the access set).
func TestLandlockAccessSets(t *testing.T) {
	tests := []struct {
		name   string
		canned landlock.FSRule
		access uint64
	}{
		{"RODirs", landlock.RODirs("/p"), accessRODirs},
		{"RWDirs", landlock.RWDirs("/p"), accessRWDirs},
		{"ROFiles", landlock.ROFiles("/p"), accessROFiles},
		{"RWFiles", landlock.RWFiles("/p"), accessRWFiles},
		{"RWDirs with refer", landlock.RWDirs("/p").WithRefer(), accessRWDirs | ll.AccessFSRefer},
		{"RWFiles with ioctl", landlock.RWFiles("/p").WithIoctlDev(), accessRWFiles | ll.AccessFSIoctlDev},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := landlock.PathAccess(landlock.AccessFSSet(tc.access), "/p").String()
			if want := tc.canned.String(); got != want {
				t.Fatalf("access set differs from go-landlock's:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestPlanLandlock checks the plan for this kernel: handled access from
// go-landlock's preset, every rule within it, the policy's paths and
// ports present, the system directories marked dir-only.
func TestPlanLandlock(t *testing.T) {
	if _, err := LandlockABI(); err != nil {
		t.Skipf("no usable Landlock: %v", err)
	}
	c := &Config{ReadOnly: []string{"/opt/ro"}, ReadWrite: []string{"/data"}, Connect: []uint16{8080}, Bind: []uint16{9000}}
	p, err := PlanLandlock(c)
	if err != nil {
		t.Fatal(err)
	}
	cfg := landlockConfigs[p.ABI]
	if p.HandledFS != uint64(cfg.HandledAccessFS) || p.HandledNet != uint64(cfg.HandledAccessNet) || p.Scoped != uint64(cfg.Scoped) {
		t.Fatalf("handled access %#x/%#x/%#x, want the V%d preset's", p.HandledFS, p.HandledNet, p.Scoped, p.ABI)
	}
	if p.ABI >= 7 && p.RestrictFlags != ll.FlagRestrictSelfLogNewExecOn {
		t.Errorf("restrict flags %#x, want logging for subprocesses", p.RestrictFlags)
	}
	access := map[string]uint64{}
	for _, r := range p.Paths {
		if r.Access&^p.HandledFS != 0 || r.Access == 0 {
			t.Errorf("%s: access %#x outside the handled %#x", r.Path, r.Access, p.HandledFS)
		}
		if r.DirOnly && !slices.Contains(systemDirs, r.Path) {
			t.Errorf("%s: dir-only, but not a system directory", r.Path)
		}
		access[r.Path] |= r.Access
	}
	for path, want := range map[string]uint64{
		"/":        ll.AccessFSReadDir,
		"/opt/ro":  accessRODirs & p.HandledFS,
		"/data":    (accessRWDirs | ll.AccessFSRefer) & p.HandledFS,
		"/sandbox": (accessRWDirs | ll.AccessFSRefer) & p.HandledFS,
		"/dev/tty": (accessRWFiles | ll.AccessFSIoctlDev) & p.HandledFS,
	} {
		if access[path] != want {
			t.Errorf("%s: access %#x, want %#x", path, access[path], want)
		}
	}
	ports := map[uint16]uint64{}
	for _, r := range p.Ports {
		ports[r.Port] |= r.Access
	}
	if ports[8080] != ll.AccessNetConnectTCP || ports[9000] != ll.AccessNetConnectTCP|ll.AccessNetBindTCP || len(ports) != 2 {
		t.Errorf("port rules %v, want connect 8080 and bind+connect 9000", ports)
	}
}
