// Package e2e holds whole-program tests of clawcage: the sandbox escape
// battery runs the real clawcage binary, built once, and attacks the host
// from inside `clawcage sandbox run` with the probes of internal/audit.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
