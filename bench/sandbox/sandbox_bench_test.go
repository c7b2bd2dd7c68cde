// Package sandboxbench compares sandbox start-up: `clawcage sandbox run --
// /bin/true` against bubblewrap with comparable namespaces, side by side in
// one run. It measures; it asserts nothing about time. Run it with
// bench/sandbox/run.sh (as root).
package sandboxbench

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/sandbox"
)

// clawcageBinary builds ./cmd/clawcage once into a temporary directory.
func clawcageBinary(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("CLAWCAGE_BIN"); p != "" {
		return p
	}
	out := b.TempDir() + "/clawcage"
	cmd := exec.Command("go", "build", "-o", out, "github.com/clawcage/clawcage/cmd/clawcage")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("build clawcage: %v", err)
	}
	return out
}

func needRoot(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("sandbox benchmarks need root")
	}
}

// bwrapArgs gives bubblewrap what clawcage sets up: new user, PID, mount,
// IPC, UTS, cgroup and network namespaces, read-only /usr with the merged-usr
// symlinks, fresh /proc, minimal /dev, tmpfs /tmp, a read-write workspace,
// uid 1000, a new session, death with the parent. (bwrap does not apply
// Landlock, seccomp or cgroup limits, so it does less.)
func bwrapArgs(workspace string) []string {
	args := []string{"--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"} {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			t, _ := os.Readlink(d)
			args = append(args, "--symlink", t, d)
		default:
			args = append(args, "--ro-bind", d, d)
		}
	}
	return append(args, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
		"--bind", workspace, "/sandbox", "--chdir", "/sandbox", "--uid", "1000", "--gid", "1000",
		"--clearenv", "/bin/true")
}

func ms(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }

// stats returns the median and p95 of d (sorted in place).
func stats(d []time.Duration) (median, p95 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[(len(d)*95+99)/100-1]
}

// BenchmarkStartup alternates clawcage and bwrap within every iteration, so
// both see the same machine load, and reports each one's median and p95
// and the ratio of the medians. Run with -benchtime=200x (>= 100 runs).
func BenchmarkStartup(b *testing.B) {
	needRoot(b)
	bin := clawcageBinary(b)
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		b.Skip("bwrap not installed (apt-get install bubblewrap); bench/sandbox/run.sh installs it")
	}
	ws := b.TempDir()
	os.Chmod(ws, 0o777)
	run := func(name string, args ...string) time.Duration {
		start := time.Now()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			b.Fatalf("%s: %v: %s", name, err, out)
		}
		return time.Since(start)
	}
	// CLAWCAGE_BASELINE_BIN, if set, is another clawcage binary (an older
	// build) run in the same iterations, for a before/after comparison.
	base := os.Getenv("CLAWCAGE_BASELINE_BIN")
	var cc, bw, bl []time.Duration
	b.ResetTimer()
	for range b.N {
		cc = append(cc, run(bin, "sandbox", "run", "--workspace", ws, "--", "/bin/true"))
		bw = append(bw, run(bwrap, bwrapArgs(ws)...))
		if base != "" {
			bl = append(bl, run(base, "sandbox", "run", "--workspace", ws, "--", "/bin/true"))
		}
	}
	b.StopTimer()
	ccMed, ccP95 := stats(cc)
	bwMed, bwP95 := stats(bw)
	b.ReportMetric(ms(ccMed), "clawcage-median-ms")
	b.ReportMetric(ms(ccP95), "clawcage-p95-ms")
	b.ReportMetric(ms(bwMed), "bwrap-median-ms")
	b.ReportMetric(ms(bwP95), "bwrap-p95-ms")
	b.ReportMetric(float64(ccMed)/float64(bwMed), "ratio")
	if base != "" {
		blMed, blP95 := stats(bl)
		b.ReportMetric(ms(blMed), "baseline-median-ms")
		b.ReportMetric(ms(blP95), "baseline-p95-ms")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkLibrary measures sandbox.Run from a running Go process (how the
// supervisor starts sandboxes): no CLI start-up in the parent.
func BenchmarkLibrary(b *testing.B) {
	needRoot(b)
	ws := b.TempDir()
	os.Chmod(ws, 0o777)
	var d []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		code, err := sandbox.Run(context.Background(), sandbox.Spec{Command: []string{"/bin/true"}, Workspace: ws}, sandbox.Stdio{})
		if err != nil || code != 0 {
			b.Fatalf("sandbox.Run: code %d, %v", code, err)
		}
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	med, p95 := stats(d)
	b.ReportMetric(ms(med), "median-ms")
	b.ReportMetric(ms(p95), "p95-ms")
	b.ReportMetric(0, "ns/op")
}
