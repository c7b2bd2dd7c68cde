package policy

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/bytesize"
)

// ByteSize is a size in bytes that YAML may spell with a unit suffix:
// a plain integer (bytes), or an integer followed by B, KiB/MiB/GiB/TiB
// (powers of 1024; Ki/Mi/Gi/Ti also accepted) or K/M/G/T, KB/MB/GB/TB
// (powers of 1000, as in Kubernetes quantities).
type ByteSize int64

// ParseByteSize parses "512MiB", "1GiB", "1G", "100M", "4096" and the like
// (see package bytesize).
func ParseByteSize(s string) (ByteSize, error) {
	n, err := bytesize.Parse(s)
	return ByteSize(n), err
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a size such as 512MiB or 1GiB", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML implements yaml.Marshaler, writing the String form.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// String returns the shortest exact spelling: "1GiB", "512MiB", "1G" or a
// plain number of bytes.
func (b ByteSize) String() string {
	if b == 0 {
		return "0"
	}
	if b < 0 {
		return strconv.FormatInt(int64(b), 10)
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"T", 1e12}, {"G", 1e9}, {"M", 1e6}, {"K", 1e3},
	} {
		if int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}
