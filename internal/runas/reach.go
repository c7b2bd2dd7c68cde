package runas

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CheckReachable returns an error unless a component uid — which owns
// nothing on the way and is in no group — can reach path: every existing
// directory on the way must be searchable by others (o+x), and path itself,
// if it exists, must grant others the bits in want (for example 0o005 for a
// binary to execute). A directory that does not exist yet is skipped: the
// supervisor creates it with the right mode. what names path in the error.
func CheckReachable(path string, want fs.FileMode, what string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	abs, err = resolveExisting(abs)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("%s %s: %w", what, abs, err)
	case fi.Mode().Perm()&want != want:
		return fmt.Errorf("%s %s is mode %04o: components run under their own uids and need %s on it (chmod o+%s %s)",
			what, abs, fi.Mode().Perm(), permWords(want), permLetters(want), abs)
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s %s cannot be reached by the components' uids: directory %s is mode %04o and not searchable by others "+
				"(install clawcage and the state directory outside private directories such as /root, or chmod o+x %s)",
				what, abs, dir, fi.Mode().Perm(), dir)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: check %s: %w", what, dir, err)
		}
		if dir == "/" || dir == "." {
			return nil
		}
	}
}

// resolveExisting resolves symlinks in the longest existing prefix of p and
// appends the rest unchanged.
func resolveExisting(p string) (string, error) {
	rest := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if cur == "/" || cur == "." {
			return p, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
	}
}

func permWords(m fs.FileMode) string {
	switch m {
	case 0o005:
		return "read and execute permission for others"
	case 0o001:
		return "search permission for others"
	case 0o004:
		return "read permission for others"
	}
	return fmt.Sprintf("permission bits %03o for others", m)
}

func permLetters(m fs.FileMode) string {
	s := ""
	if m&0o004 != 0 {
		s += "r"
	}
	if m&0o002 != 0 {
		s += "w"
	}
	if m&0o001 != 0 {
		s += "x"
	}
	return s
}
