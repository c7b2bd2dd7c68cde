package runcmd

import (
	"fmt"

	"github.com/clawcage/clawcage/internal/bytesize"
)

// parseSize parses a size flag ("512MiB", "1GiB", "1G", "1048576"); empty is
// zero (the default).
func parseSize(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := bytesize.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", flag, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("%s %q: must be positive", flag, s)
	}
	return n, nil
}
