// Package bytesize parses sizes written with a unit suffix ("512MiB",
// "1GiB", "1G", "4096"). It is a leaf package (strconv and strings only) so
// that the sandbox's start path can parse --memory and --tmp without
// importing internal/policy, whose ByteSize uses it.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// units are the suffixes Parse accepts, longest first so that "MiB" is not
// read as "B".
var units = [...]struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"B", 1},
}

// Parse parses a size in bytes: a plain integer, or an integer followed by
// B, KiB/MiB/GiB/TiB (powers of 1024; Ki/Mi/Gi/Ti also accepted) or K/M/G/T,
// KB/MB/GB/TB (powers of 1000, as in Kubernetes quantities).
func Parse(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	if num == "" || len(num) > 19 {
		return 0, fmt.Errorf("%q is not a size (want e.g. 512MiB, 1GiB, 1G or a number of bytes)", s)
	}
	if num[0] == '-' {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' {
			return 0, fmt.Errorf("%q is not a size (want e.g. 512MiB, 1GiB, 1G or a number of bytes)", s)
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}
