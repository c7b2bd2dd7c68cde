package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSizeFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"", 0, ""},
		{"512MiB", 512 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"1048576", 1 << 20, ""},
		{"12Q", 0, "is not a size"},
		{"-5MiB", 0, "negative"},
		{"0", 0, "must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize("--memory", tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "--memory") {
					t.Fatalf("err %v, want %q naming the flag", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestSandboxRunRejectsBadInput checks the errors `sandbox run` gives before
// any sandbox is created.
func TestSandboxRunRejectsBadInput(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("resources:\n  memory: lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no command", []string{"sandbox", "run"}, "requires at least 1 arg"},
		{"bad memory size", []string{"sandbox", "run", "--memory", "12Q", "--", "/bin/true"}, `--memory: "12Q" is not a size`},
		{"bad tmp size", []string{"sandbox", "run", "--tmp", "x", "--", "/bin/true"}, `--tmp: "x" is not a size`},
		{"negative pids", []string{"sandbox", "run", "--pids", "-1", "--", "/bin/true"}, "--pids -1: must not be negative"},
		{"policy with a bad field names file and line", []string{"sandbox", "run", "--policy", bad, "--", "/bin/true"}, bad + ":2: resources.memory"},
		{"missing policy file", []string{"sandbox", "run", "--policy", bad + ".missing", "--", "/bin/true"}, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootCmd()
			root.SetArgs(tc.args)
			root.SetOut(new(strings.Builder))
			root.SetErr(new(strings.Builder))
			err := root.Execute()
			var ec exitCoder
			if err == nil || errors.As(err, &ec) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}
