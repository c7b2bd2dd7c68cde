package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// reservedTargets are the sandbox's own mount points: a policy path may not
// be one of them or lie beneath one (except /tmp and /etc, which may not be
// replaced but may not be shadowed either).
var reservedTargets = []string{"/proc", "/dev", "/sys", WorkspaceDir}

// checkBindPaths validates extra bind paths: absolute, existing, resolved
// through symlinks (so the sandbox sees what the operator meant, and a
// symlink cannot redirect the bind later), not the root and not one of the
// sandbox's own mount points.
func checkBindPaths(kind string, paths []string) ([]string, error) {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%s path %q: must be absolute", kind, p)
		}
		if strings.ContainsRune(p, 0) {
			return nil, fmt.Errorf("%s path %q: contains NUL", kind, p)
		}
		real, err := filepath.EvalSymlinks(filepath.Clean(p))
		if err != nil {
			return nil, fmt.Errorf("%s path %q: %w", kind, p, err)
		}
		if real == "/" {
			return nil, fmt.Errorf("%s path %q: the host root cannot be bound", kind, p)
		}
		for _, r := range reservedTargets {
			if real == r || strings.HasPrefix(real, r+"/") {
				return nil, fmt.Errorf("%s path %q: %s is the sandbox's own", kind, p, r)
			}
		}
		for _, r := range []string{"/tmp", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/oldroot"} {
			if real == r {
				return nil, fmt.Errorf("%s path %q: %s cannot be replaced as a whole", kind, p, r)
			}
		}
		if _, err := os.Stat(real); err != nil {
			return nil, fmt.Errorf("%s path %q: %w", kind, p, err)
		}
		out = append(out, real)
	}
	return out, nil
}
