package battery

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/stack"
	"golang.org/x/sys/unix"
)

func TestCasesAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Cases() {
		if seen[c.Name] {
			t.Errorf("case %q listed twice", c.Name)
		}
		seen[c.Name] = true
		if _, ok := audit.Lookup(c.Probe); !ok {
			t.Errorf("case %q uses unknown probe %q", c.Name, c.Probe)
		}
		if len(c.Want) == 0 || slices.Contains(c.Want, audit.Error) || slices.Contains(c.Want, audit.Timeout) {
			t.Errorf("case %q: want %v: needs outcomes, never error/timeout", c.Name, c.Want)
		}
		if slices.Contains(c.Want, audit.Succeeded) && c.Probe != "netlink-route" {
			t.Errorf("case %q accepts success", c.Name)
		}
	}
}

func TestVerdict(t *testing.T) {
	w := &World{shadowSum: audit.SHA256Detail([]byte("host shadow"))}
	c := Case{Name: "read-host-etc-shadow", Probe: "read-shadow", Want: []string{"ENOENT"}, Check: noHostShadow}
	tests := []struct {
		name string
		o    audit.Observation
		held bool
	}{
		{"expected errno", audit.Observation{Outcome: "ENOENT"}, true},
		{"other errno", audit.Observation{Outcome: "EACCES"}, false},
		{"read the host's bytes", audit.Observation{Outcome: "ENOENT", Detail: "read 11 bytes " + w.shadowSum}, false},
		{"succeeded", audit.Observation{Outcome: audit.Succeeded}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Verdict(w, tt.o); (err == nil) != tt.held {
				t.Errorf("Verdict(%+v) = %v, held want %v", tt.o, err, tt.held)
			}
		})
	}
}

func TestParseObservation(t *testing.T) {
	out := "noise\n{\"attack\":\"other\",\"outcome\":\"EPERM\"}\r\n{\"attack\":\"bpf\",\"outcome\":\"EPERM\",\"detail\":\"x\"}\r\n"
	o, ok := ParseObservation(out, "bpf")
	if !ok || o.Outcome != "EPERM" || o.Detail != "x" {
		t.Errorf("got %+v, %v", o, ok)
	}
	if _, ok := ParseObservation("{}\n", "bpf"); ok {
		t.Error("found an observation in output without one")
	}
}

func TestEmptyGroups(t *testing.T) {
	tmp := t.TempDir()
	empty, busy, gone := filepath.Join(tmp, "empty"), filepath.Join(tmp, "busy"), filepath.Join(tmp, "gone")
	for _, d := range []string{empty, busy} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(empty, "cgroup.procs"), nil, 0o644)
	os.WriteFile(filepath.Join(busy, "cgroup.procs"), []byte("123\n"), 0o644)
	if got := emptyGroups([]string{empty, busy, gone}); !slices.Equal(got, []string{empty}) {
		t.Errorf("emptyGroups = %v, want [%s]", got, empty)
	}
}

// TestLeftoverMountDetected proves the "nothing left behind" check fails
// when a mount of the run's workspace stays on the host.
func TestLeftoverMountDetected(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	ws := filepath.Join(t.TempDir(), "ws-leftovertest")
	if err := os.MkdirAll(filepath.Join(ws, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := snapshotHost("ws-leftovertest")
	if err := unix.Mount("tmpfs", filepath.Join(ws, "m"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(ws, "m"), unix.MNT_DETACH)
	err := checkNothingLeft(context.Background(), before, "ws-leftovertest", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(ws, "m")) {
		t.Errorf("checkNothingLeft = %v, want the leftover mount reported", err)
	}
	if err := unix.Unmount(filepath.Join(ws, "m"), 0); err != nil {
		t.Fatal(err)
	}
	if err := checkNothingLeft(context.Background(), before, "ws-leftovertest", 200*time.Millisecond); err != nil {
		t.Errorf("after unmounting: %v", err)
	}
}

func TestAdminSocketNameMatchesStack(t *testing.T) {
	if adminSocketName != stack.AdminSocketName {
		t.Errorf("adminSocketName %q, stack.AdminSocketName %q", adminSocketName, stack.AdminSocketName)
	}
}
