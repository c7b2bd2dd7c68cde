package pid1

import (
	"errors"
	"fmt"
	"os"
	pathpkg "path" // not path/filepath: see Package pid1
	"strings"
	"syscall"

	"github.com/clawcage/clawcage/internal/sandbox/seccomp"
)

// installSeccomp installs the seccomp filter, reporting a missing kernel
// feature as an *UnavailableError.
func installSeccomp() error {
	if err := CheckSeccomp(); err != nil {
		return err
	}
	return seccomp.Install()
}

var errNotExecutable = errors.New("not an executable file")

// lookPath finds name like execvp does with the sandbox's PATH.
func lookPath(name, path string) (string, error) {
	check := func(p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s: %w", p, errNotExecutable)
		}
		return nil
	}
	if strings.Contains(name, "/") {
		if err := check(name); err != nil {
			return "", fmt.Errorf("command %q: %w", name, err)
		}
		return name, nil
	}
	var firstErr error
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := pathpkg.Join(dir, name)
		err := check(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !errors.Is(err, os.ErrNotExist) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", fmt.Errorf("command %q: %w", name, firstErr)
	}
	return "", fmt.Errorf("command %q: %w in PATH", name, syscall.ENOENT)
}

// envValue returns the value of key in a KEY=VALUE list.
func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}
