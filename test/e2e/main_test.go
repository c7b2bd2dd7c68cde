// Package e2e holds whole-program tests of clawcage: the sandbox escape
// battery runs the real clawcage binary, built once, and attacks the host
// from inside `clawcage sandbox run` with the probes of internal/audit.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
)

// harness is what TestMain prepared: the binary, or why the battery skips.
type harness struct {
	bin        string // host path of the static clawcage binary
	skipReason string
}

var h harness // set once by TestMain, read-only afterwards

func TestMain(m *testing.M) {
	os.Exit(setupAndRun(m))
}

func setupAndRun(m *testing.M) int {
	if os.Geteuid() != 0 {
		h.skipReason = "the escape battery needs root (it creates namespaces, cgroups and a setuid-root helper); run go test as root"
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "clawcage-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	h.bin = filepath.Join(dir, "clawcage")
	if err := buildStatic(h.bin); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	h.skipReason = checkKernel(h.bin)
	return m.Run()
}

// buildStatic builds ./cmd/clawcage with CGO_ENABLED=0, so the binary runs
// inside a sandbox whatever libraries its root offers.
func buildStatic(out string) error {
	modDir, err := moduleRoot()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/clawcage")
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build clawcage: %w\n%s", err, b)
	}
	return nil
}

func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the clawcage module")
	}
	return filepath.Dir(mod), nil
}

// checkKernel returns why sandboxes cannot run here, or "".
func checkKernel(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "doctor").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("clawcage doctor says sandboxes cannot be enforced on this kernel (%v):\n%s", err, out)
	}
	return ""
}

// requireSandbox skips t when the battery cannot run here.
func requireSandbox(t *testing.T) {
	t.Helper()
	if h.skipReason != "" {
		t.Skip(h.skipReason)
	}
}

// run is one `clawcage sandbox run` of a probe.
type run struct {
	root    bool
	ws      string   // workspace (host path); the binary is copied in
	flags   []string // extra `sandbox run` flags
	env     []string // extra environment of the invoking process
	stdin   *os.File // nil: /dev/null
	probe   string
	args    []string
	timeout time.Duration
}

// result is what came back.
type result struct {
	obs    audit.Observation
	code   int
	stdout string
	stderr string
}

// runProbe runs r and returns the probe's observation. It fails t when the
// sandbox could not be set up or the probe printed no observation.
func runProbe(t *testing.T, r run) result {
	t.Helper()
	if err := copyFile(h.bin, filepath.Join(r.ws, "clawcage"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"sandbox", "run", "--workspace", r.ws}
	if r.root {
		args = append(args, "--root")
	}
	args = append(args, r.flags...)
	args = append(args, "--", "/sandbox/clawcage", "audit-probe", "--json", r.probe)
	args = append(args, r.args...)
	if r.timeout == 0 {
		r.timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(), r.env...)
	if r.stdin != nil {
		cmd.Stdin = r.stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("sandbox run %s: %v (stderr: %s)", r.probe, err, res.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("sandbox run %s: no result in %s (stdout %q, stderr %q)", r.probe, r.timeout, res.stdout, res.stderr)
	}
	if res.code == 125 {
		t.Fatalf("sandbox run %s: the sandbox could not be set up (exit 125): %s", r.probe, res.stderr)
	}
	obs, ok := parseObservation(res.stdout, r.probe)
	if !ok {
		t.Fatalf("sandbox run %s: exit %d, no observation on stdout %q; stderr %q", r.probe, res.code, res.stdout, res.stderr)
	}
	if obs.Outcome == audit.Error {
		t.Fatalf("probe %s could not run inside the sandbox: %s", r.probe, obs.Detail)
	}
	res.obs = obs
	return res
}

func parseObservation(out, probe string) (audit.Observation, bool) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var o audit.Observation
		if json.Unmarshal([]byte(line), &o) == nil && o.Attack == probe {
			return o, true
		}
	}
	return audit.Observation{}, false
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// hostTraces is what a sandbox could leave on the host: clawcage cgroup
// directories and mounts in the test's own mount namespace.
type hostTraces struct {
	cgroups []string
	mounts  []string
}

func snapshotHost(t *testing.T, mark string) hostTraces {
	t.Helper()
	var tr hostTraces
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		mp := f[4]
		if strings.Contains(mp, "clawcage") || strings.Contains(mp, mark) {
			tr.mounts = append(tr.mounts, mp)
		}
		if f[len(f)-3] == "-" && (f[len(f)-2] == "cgroup" || f[len(f)-2] == "cgroup2") {
			tr.cgroups = append(tr.cgroups, clawcageGroups(mp)...)
		}
	}
	slices.Sort(tr.cgroups)
	slices.Sort(tr.mounts)
	return tr
}

// clawcageGroups lists the children of every "clawcage" directory up to
// four levels below a cgroup mount.
func clawcageGroups(mount string) []string {
	var out []string
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if e.Name() == "clawcage" {
				kids, _ := os.ReadDir(p)
				for _, k := range kids {
					if k.IsDir() {
						out = append(out, filepath.Join(p, k.Name()))
					}
				}
				continue
			}
			if depth < 4 {
				walk(p, depth+1)
			}
		}
	}
	walk(mount, 0)
	return out
}

// checkNothingLeft fails t when a clawcage cgroup or a mount appeared on
// the host since before and does not go away within a few seconds.
func checkNothingLeft(t *testing.T, before hostTraces, mark string) {
	t.Helper()
	var newGroups, newMounts []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := snapshotHost(t, mark)
		newGroups, newMounts = added(before.cgroups, after.cgroups), added(before.mounts, after.mounts)
		if len(newGroups)+len(newMounts) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(newGroups) > 0 {
		t.Errorf("cgroups left behind on the host: %v", newGroups)
	}
	if len(newMounts) > 0 {
		t.Errorf("mounts left behind in the host's mount namespace: %v", newMounts)
	}
}

func added(before, after []string) []string {
	var out []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			out = append(out, a)
		}
	}
	return out
}
