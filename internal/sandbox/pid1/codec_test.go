package pid1

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func sampleConfig() *Config {
	return &Config{
		Binds:         []BindSpec{{Target: "/sandbox", Dir: true, FD: 5}, {Target: "/opt/tools", Dir: true, FD: 6}, {Target: "/etc/extra.conf", FD: 7}},
		ReadOnly:      []string{"/opt/tools", "/etc/extra.conf"},
		ReadWrite:     []string{"/data"},
		Hosts:         []string{"127.0.0.1 inference.local gateway.local"},
		TmpSize:       64 << 20,
		UID:           UserUID,
		Command:       []string{"/bin/sh", "-c", "echo 'héllo'\n"},
		Env:           []string{"PATH=/usr/bin:/bin", "HOME=/sandbox", "EMPTY="},
		Connect:       []uint16{8080, 3128, 18790},
		Bind:          []uint16{9000},
		UIDBase:       0x40010000,
		Ctty:          true,
		FileSizeLimit: 8 << 30,
		ExecFD:        8,
		Landlock: &LandlockPlan{
			ABI: 7, HandledFS: 0xffff, HandledNet: 3, Scoped: 3, RestrictFlags: 2,
			Paths: []LandlockPath{{Path: "/", Access: 8}, {Path: "/bin", Access: 5, DirOnly: true}},
			Ports: []LandlockPort{{Port: 8080, Access: 2}, {Port: 9000, Access: 1}},
		},
		Seccomp: bytes.Repeat([]byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}, 3),
	}
}

// TestConfigRoundTrip checks that DecodeConfig gives back what
// MarshalBinary encoded, for a full and an empty configuration, and that
// the C decoder accepts both.
func TestConfigRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    *Config
	}{
		{"every field set", sampleConfig()},
		{"empty", &Config{}},
		{"no landlock plan", func() *Config { c := sampleConfig(); c.Landlock = nil; return c }()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.c.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeConfig(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.c) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.c)
			}
			if haveCInit {
				if err := cDecode(b); err != nil {
					t.Fatalf("C decoder refuses what Go encoded: %v", err)
				}
			}
		})
	}
}

// TestEncodeRefuses checks that the encoder refuses what the decoder would.
func TestEncodeRefuses(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"NUL in an argument", func(c *Config) { c.Command = []string{"/bin/sh", "a\x00b"} }, "contains NUL"},
		{"NUL in a landlock path", func(c *Config) { c.Landlock.Paths[0].Path = "/\x00" }, "contains NUL"},
		{"string over the limit", func(c *Config) { c.Env = []string{strings.Repeat("x", maxStringLen+1)} }, "over"},
		{"too many entries", func(c *Config) { c.Env = make([]string, maxListLen+1) }, "over"},
		{"seccomp not a multiple of 8", func(c *Config) { c.Seccomp = make([]byte, 12) }, "multiple of 8"},
		{"seccomp too long", func(c *Config) { c.Seccomp = make([]byte, maxSeccompLen+8) }, "at most"},
		{"negative tmp size", func(c *Config) { c.TmpSize = -1 }, "negative"},
		{"negative fd", func(c *Config) { c.Binds[0].FD = -1 }, "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := sampleConfig()
			tc.mutate(c)
			_, err := c.MarshalBinary()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("MarshalBinary: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestDecodeRefuses checks that both decoders refuse malformed input, each
// with the reason.
func TestDecodeRefuses(t *testing.T) {
	good, err := sampleConfig().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Offset of the command list's count: magic, flags, uid, uid base,
	// exec fd, tmp size, file size limit.
	const cmdCount = 4 + 4 + 4 + 4 + 4 + 8 + 8
	put32 := func(b []byte, off int, v uint32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "bad magic"},
		{"bad magic", append([]byte("JSON"), good[4:]...), "bad magic"},
		{"truncated", good[:len(good)-1], "past the end"},
		{"trailing byte", append(append([]byte(nil), good...), 0), "after the end"},
		{"unknown flag", put32(good, 4, 2), "unknown flags"},
		{"list count over the limit", put32(good, cmdCount, maxListLen+1), "over"},
		{"list entries past the end", put32(good[:cmdCount+4], cmdCount, 1), "past the end"},
		{"string length past the end", put32(good, cmdCount+4, 1<<16), "past the end"},
		{"string length over the limit", put32(good, cmdCount+4, 1<<16+1), "over"},
		{"string without its NUL", func() []byte {
			b := append([]byte(nil), good...)
			b[cmdCount+4+4+len("/bin/sh")] = 'x'
			return b
		}(), "no NUL"},
		{"NUL inside a string", func() []byte {
			b := append([]byte(nil), good...)
			b[cmdCount+4+4+1] = 0
			return b
		}(), "NUL inside"},
		{"exec fd out of range", put32(good, 16, 1<<31), "out of range"},
		{"over the size limit", make([]byte, MaxConfigSize+1), "over"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeConfig(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeConfig: %v, want an error containing %q", err, tc.want)
			}
			if haveCInit {
				cerr := cDecode(tc.b)
				if cerr == nil || !strings.Contains(cerr.Error(), tc.want) {
					t.Fatalf("C decoder: %v, want an error containing %q", cerr, tc.want)
				}
			}
		})
	}
}

// FuzzDecodeConfig checks that DecodeConfig never panics, that what it
// accepts encodes back to the same bytes (the encoding is canonical), and
// that the C decoder of PID 1 accepts exactly what the Go one accepts.
func FuzzDecodeConfig(f *testing.F) {
	for _, c := range []*Config{sampleConfig(), {}} {
		b, err := c.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("CCI1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeConfig(b)
		if haveCInit {
			if cerr := cDecode(b); (cerr == nil) != (err == nil) {
				t.Fatalf("Go decoder: %v; C decoder: %v", err, cerr)
			}
		}
		if err != nil {
			return
		}
		again, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded config does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoded config differs:\n got %x\nwant %x", again, b)
		}
	})
}
