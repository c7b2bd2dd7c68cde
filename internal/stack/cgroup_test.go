package stack

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/cgroup"
)

func TestCgroupNamesPerStack(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	long := strings.Repeat("s", 63) // the longest sandbox name config allows
	tests := []struct {
		name     string
		x, y     string
		wantSame bool
	}{
		{"same state, same sandbox", CgroupName(a, "agent"), CgroupName(a, "agent"), true},
		{"two stacks, same sandbox name", CgroupName(a, "agent"), CgroupName(b, "agent"), false},
		{"trailing slash is the same directory", CgroupName(a+"/", "agent"), CgroupName(a, "agent"), true},
		{"dot segments are the same directory", CgroupName(filepath.Join(dir, "x", "..", "a"), "agent"), CgroupName(a, "agent"), true},
		{"one stack, two sandboxes", CgroupName(a, "one"), CgroupName(a, "two"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if (tt.x == tt.y) != tt.wantSame {
				t.Errorf("%q vs %q: same=%v, want %v", tt.x, tt.y, tt.x == tt.y, tt.wantSame)
			}
		})
	}
	t.Run("relative path is made absolute", func(t *testing.T) {
		wd, _ := os.Getwd()
		t.Chdir(dir)
		if got, want := CgroupName("a", "agent"), CgroupName(a, "agent"); got != want {
			t.Errorf("relative %q, absolute %q (cwd was %s)", got, want, wd)
		}
	})
	n := CgroupName(a, long)
	if len(n) > 128 || !strings.HasPrefix(n, "clawcage-") || strings.ContainsFunc(n, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}) {
		t.Errorf("cgroup name %q (%d characters) is not a valid cgroup name", n, len(n))
	}

	stale := staleCgroup(a)
	for _, tt := range []struct {
		name string
		want bool
	}{
		{CgroupName(a, "agent"), true},
		{CgroupName(b, "agent"), false},                           // another stack's
		{"clawcage-agent", false},                                 // the old, shared scheme: owner unknown
		{"clawcage-run-123-4", false},                             // `sandbox run`'s
		{CgroupPrefix(a), false},                                  // the prefix alone is no sandbox
		{strings.TrimSuffix(CgroupPrefix(a), "-") + "x-y", false}, // a different hash that starts alike
	} {
		if got := stale(tt.name); got != tt.want {
			t.Errorf("stale(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestStaleCgroupsOfOneStack creates real groups: two stacks' sandboxes of
// the same name get two groups; at start a stack removes its own empty
// leftovers only.
func TestStaleCgroupsOfOneStack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups")
	}
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	mk := func(name string) *cgroup.Group {
		g, err := cgroup.New(ctx, name, cgroup.Limits{Memory: 64 << 20, Pids: 16})
		if err != nil {
			t.Skipf("cgroups unavailable: %v", err)
		}
		t.Cleanup(func() { g.Destroy() })
		return g
	}
	leftA, leftB, busyA := mk(CgroupName(a, "agent")), mk(CgroupName(b, "agent")), mk(CgroupName(a, "busy"))
	if leftA.Dir("memory") == leftB.Dir("memory") {
		t.Fatalf("two stacks share %s", leftA.Dir("memory"))
	}
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	if err := busyA.AddProcess(sleeper.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := removeStaleCgroups(a); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		g    *cgroup.Group
		want bool
	}{
		{"own empty leftover is removed", leftA, false},
		{"another stack's group stays", leftB, true},
		{"own group with a process stays", busyA, true},
	} {
		_, err := os.Stat(tt.g.Dir("memory"))
		if exists := err == nil; exists != tt.want {
			t.Errorf("%s: %s exists=%v, want %v", tt.name, tt.g.Dir("memory"), exists, tt.want)
		}
	}
}

func TestComponentEnv(t *testing.T) {
	t.Setenv("CLAWCAGE_TEST_SECRET", "hunter2")
	tests := []struct {
		name, gomaxprocs string // "" = unset
		want             string
	}{
		{"default applies when the operator set none", "", "GOMAXPROCS=1"},
		{"operator's setting wins", "3", "GOMAXPROCS=3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", tt.gomaxprocs)
			if tt.gomaxprocs == "" {
				os.Unsetenv("GOMAXPROCS")
			}
			env := strings.Join(componentEnv("/state/policy", "GOMAXPROCS=1"), "\n")
			if !strings.Contains(env, "\n"+tt.want+"\n") && !strings.HasSuffix(env, "\n"+tt.want) {
				t.Errorf("env lacks %s:\n%s", tt.want, env)
			}
			if strings.Count(env, "GOMAXPROCS=") != 1 || strings.Contains(env, "hunter2") || !strings.Contains(env, "HOME=/state/policy") {
				t.Errorf("env:\n%s", env)
			}
		})
	}
}
