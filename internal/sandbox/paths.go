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

// checkBindPaths validates extra bind paths: absolute, existing, free of
// symlinks (a symlink could be swapped to redirect the bind; openBinds opens
// them with RESOLVE_NO_SYMLINKS too), not the root and not one of the
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
		clean := filepath.Clean(p)
		for _, r := range reservedTargets {
			if clean == r || strings.HasPrefix(clean, r+"/") {
				return nil, fmt.Errorf("%s path %q: %s is the sandbox's own", kind, p, r)
			}
		}
		real, err := filepath.EvalSymlinks(clean)
		if err != nil {
			return nil, fmt.Errorf("%s path %q: %w", kind, p, err)
		}
		if real != clean {
			// A symlink on the way could be planted (in a workspace, say) to
			// redirect the bind to any host path: name the real path instead.
			return nil, fmt.Errorf("%s path %q: passes through a symlink (it is %s); name the real path", kind, p, real)
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
