package vaulttest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func startShell(t *testing.T, script string, env []string, stdin string) int {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	if err := cmd.Start(); err != nil {
		t.Skipf("no /bin/sh: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

func TestScanProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading another process's memory needs root (ptrace access)")
	}
	const loop = "read -r x; while :; do sleep 1; done"
	for _, tc := range []struct {
		name  string
		env   []string
		stdin string
		where string // "" = must not be found
	}{
		{"key in the environment", []string{"OPENAI_API_KEY=" + secret}, "", "environ"},
		{"key read into a shell variable (heap)", nil, secret + "\n", "mem "},
		{"clean process", []string{"PATH=/usr/bin:/bin"}, "nothing-secret-here\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := startShell(t, loop, tc.env, tc.stdin)
			deadline := time.Now().Add(5 * time.Second)
			for {
				found, err := ScanProcess(pid, []byte(secret))
				if err != nil {
					t.Fatal(err)
				}
				hit := false
				for _, f := range found {
					hit = hit || strings.HasPrefix(f.Where, tc.where)
				}
				if tc.where == "" {
					if len(found) != 0 {
						t.Fatalf("false positive: %+v", found)
					}
					if time.Now().After(deadline.Add(-4 * time.Second)) {
						return // scanned a settled process at least once
					}
				} else if hit {
					return
				} else if time.Now().After(deadline) {
					t.Fatalf("secret not found in %s; findings %+v", tc.where, found)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
