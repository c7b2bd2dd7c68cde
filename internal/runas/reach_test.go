package runas

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckReachable(t *testing.T) {
	// Not t.TempDir: its parent is private (0700), which is the very case
	// under test.
	root, err := os.MkdirTemp("", "reach")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := CheckReachable(os.TempDir(), 0o001, "temp dir"); err != nil {
		t.Skipf("the temporary directory itself is private here: %v", err)
	}
	mk := func(rel string, mode os.FileMode, file bool) string {
		p := filepath.Join(root, rel)
		if file {
			if err := os.WriteFile(p, []byte("x"), mode); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk("open", 0o755, false)
	mk("private", 0o700, false)
	mk("open/bin", 0o755, true)
	mk("open/secret-bin", 0o700, true)
	mk("private/bin", 0o755, true)
	if err := os.Symlink(filepath.Join(root, "private"), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       os.FileMode
		errHas     string // "" means no error
	}{
		{"binary in open directories", "open/bin", 0o005, ""},
		{"binary others cannot execute", "open/secret-bin", 0o005, "is mode 0700"},
		{"binary under a private directory", "private/bin", 0o005, "private is mode 0700 and not searchable"},
		{"symlink into a private directory", "link/bin", 0o005, "private is mode 0700 and not searchable"},
		{"state dir not yet created under open dirs", "open/state/x", 0o001, ""},
		{"state dir not yet created under a private dir", "private/state", 0o001, "not searchable by others"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckReachable(filepath.Join(root, tt.path), tt.want, "thing")
			switch {
			case tt.errHas == "" && err != nil:
				t.Fatalf("CheckReachable: %v", err)
			case tt.errHas != "" && err == nil:
				t.Fatalf("CheckReachable accepted %s; want error containing %q", tt.path, tt.errHas)
			case tt.errHas != "" && !strings.Contains(err.Error(), tt.errHas):
				t.Fatalf("error %q does not contain %q", err, tt.errHas)
			}
		})
	}
}
