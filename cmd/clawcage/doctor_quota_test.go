package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestDoctorWorkspaceQuota(t *testing.T) {
	state := t.TempDir()
	var buf bytes.Buffer
	printWorkspaceQuota(&buf, state)
	tests := []struct {
		name string
		re   string
	}{
		{"stack workspaces line names the mode", `(?m)^workspace quota \(stack workspaces, ` + regexp.QuoteMeta(filepath.Join(state, "sandboxes")) + `\): (project quota \(\S+ at /.*\)|watched \(no project quota on \S+ at /.*: .+\))$`},
		{"temporary workspaces line names the mode", `(?m)^workspace quota \(temporary workspaces, ` + regexp.QuoteMeta(os.TempDir()) + `\): (project quota|watched \(no project quota on )`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !regexp.MustCompile(tc.re).MatchString(buf.String()) {
				t.Errorf("output %q does not match %s", buf.String(), tc.re)
			}
		})
	}
}

func TestExistingParent(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, in, want string
	}{
		{"existing directory", dir, dir},
		{"missing directories climb to the existing one", filepath.Join(dir, "a/b/c"), dir},
		{"root", "/", "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := existingParent(tc.in); got != tc.want {
				t.Errorf("existingParent(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
