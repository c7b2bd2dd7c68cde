package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/runas"
)

// TestDemoQuick runs `clawcage demo --quick` as a new user would (README
// quick start): a whole stack with the stand-in provider and the
// compromised agent, checked from the host. Every row must hold and the
// run must leave nothing behind.
func TestDemoQuick(t *testing.T) {
	requireSandbox(t)
	for _, c := range []string{"router", "policy"} {
		id, err := runas.ForComponent(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := runas.CheckUnused(id); err != nil {
			t.Skipf("clawcage up cannot run its components here: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, h.bin, "demo", "--quick").CombinedOutput()
	if err != nil {
		t.Fatalf("clawcage demo --quick: %v\n%s", err, out)
	}
	text := string(out)
	if !strings.Contains(text, "stand-in provider (local fake, not a real model)") {
		t.Errorf("the stand-in provider is not labelled as a fake:\n%s", text)
	}
	for _, row := range []struct{ attack, observed string }{
		{"printenv / environ for the key", "absent"},
		{"scan files for key-shaped strings", "absent"},
		{"reach the provider directly", "EACCES"},
		{"agent privileges (caps, seccomp, no_new_privs)", "enforced"},
		{"connect to the router's admin socket", "ENOENT"},
		{"connect to the supervisor's control socket", "ENOENT"},
		{"unapproved host via proxy (exfil.example.com)", "denied"},
		{"call inference.local without a key", "200"},
		{"key in inference answer", "absent"},
		{"router injects the key upstream", "1 request(s), injected=true"},
		{"denied host in pending queue", "present"},
		{"key bytes in any state file (vault sealed)", "none"},
		{"key bytes in the journal", "none"},
		{"nothing left behind", "none"},
	} {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(row.attack) + `.*\s` + regexp.QuoteMeta(row.observed) + `\S*\s.*\sheld$`)
		if !re.MatchString(text) {
			t.Errorf("row %q: want observed %q and verdict held:\n%s", row.attack, row.observed, text)
		}
	}
	if strings.Contains(text, "FAILED") || !strings.Contains(text, " 0 failed") {
		t.Errorf("demo reports failures:\n%s", text)
	}

	// Leftovers, seen from outside the demo: its temporary directory, its
	// processes, mounts and cgroups.
	m := regexp.MustCompile(`clawcage demo: state (\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("demo did not print its state directory:\n%s", text)
	}
	state := m[1]
	if _, err := os.Lstat(filepath.Dir(state)); !os.IsNotExist(err) {
		t.Errorf("demo left its temporary directory %s (%v)", filepath.Dir(state), err)
	}
	if left := processesWithArg(state); len(left) > 0 {
		t.Errorf("processes left after the demo: %v", left)
	}
	if mnt := injectionMounts(filepath.Dir(state)); len(mnt) > 0 {
		t.Errorf("mounts left after the demo: %v", mnt)
	}
	if g := sandboxCgroups("clawcage-demo*"); len(g) > 0 {
		t.Errorf("cgroups left after the demo: %v", g)
	}
}
