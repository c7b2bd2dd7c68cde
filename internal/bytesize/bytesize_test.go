package bytesize

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"4096", 4096, ""},
		{"512MiB", 512 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"2Gi", 2 << 30, ""},
		{"1G", 1e9, ""},
		{"100M", 100e6, ""},
		{"3KB", 3000, ""},
		{"7B", 7, ""},
		{"", 0, "is not a size"},
		{"MiB", 0, "is not a size"},
		{"12Q", 0, "is not a size"},
		{"1.5GiB", 0, "is not a size"},
		{"-5MiB", 0, "negative"},
		{"+5", 0, "is not a size"},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"8388608TiB", 0, "too large"},
		{"99999999999999999999", 0, "is not a size"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) = %d, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"512MiB", "1G", "0", "-1", "9223372036854775807B", "1TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err == nil && n < 0 {
			t.Fatalf("Parse(%q) = %d", s, n)
		}
	})
}
