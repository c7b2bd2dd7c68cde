package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/clawcage/clawcage/internal/quota"
)

// printWorkspaceQuota writes how a workspace disk limit (resources.disk)
// would be enforced for the stack's workspaces (under stateDir) and for the
// temporary workspaces of `sandbox run`: "project quota (...)" or
// "watched (no project quota on ...)".
func printWorkspaceQuota(w io.Writer, stateDir string) {
	fmt.Fprintln(w)
	for _, d := range []struct{ what, dir string }{
		{"stack workspaces", filepath.Join(stateDir, "sandboxes")},
		{"temporary workspaces", os.TempDir()},
	} {
		dir := existingParent(d.dir)
		s, err := quota.Detect(dir)
		if err != nil {
			fmt.Fprintf(w, "workspace quota (%s, %s): unknown: %v\n", d.what, d.dir, err)
			continue
		}
		fmt.Fprintf(w, "workspace quota (%s, %s): %s\n", d.what, d.dir, s)
	}
}

// existingParent returns dir or its closest existing ancestor.
func existingParent(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			return dir
		}
		dir = filepath.Dir(dir)
	}
}
