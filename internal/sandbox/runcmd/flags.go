package runcmd

import (
	"fmt"

	"github.com/clawcage/clawcage/internal/policy"
)

// loadPolicyFile loads a --policy file for `sandbox run`; errors name the
// file, line and field.
func loadPolicyFile(path string) (*policy.Policy, error) {
	p, err := policy.Load(path)
	if err != nil {
		return nil, fmt.Errorf("--policy: %w", err)
	}
	return p, nil
}

// parseSize parses a size flag ("512MiB", "1GiB", "1G", "1048576"); empty is
// zero (the default).
func parseSize(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := policy.ParseByteSize(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", flag, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("%s %q: must be positive", flag, s)
	}
	return int64(n), nil
}
