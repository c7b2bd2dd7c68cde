package pid1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The configuration travels from the host to PID 1 over configFD in a
// small binary encoding that PID 1's C start-up code (cinit.c) decodes
// before the Go runtime exists, and that DecodeConfig decodes in Go. All
// integers are little-endian. A string is its length (u32), its bytes (no
// NUL among them), then one NUL byte, so the C side can use it in place. A
// list is its length (u32), then its elements.
//
//	magic "CCI1"
//	u32 flags (bit 0: Ctty)
//	u32 UID, u32 UIDBase, i32 ExecFD, u64 TmpSize, u64 FileSizeLimit
//	list of string Command, Env, Hosts, ReadOnly, ReadWrite
//	list of u16 Connect, Bind
//	list of bind {string Target, u8 Dir, i32 FD}
//	u8 has-Landlock; if 1:
//	  u32 ABI, u64 HandledFS, u64 HandledNet, u64 Scoped, u32 RestrictFlags
//	  list of path rule {string Path, u64 Access, u8 DirOnly}
//	  list of port rule {u16 Port, u64 Access}
//	bytes Seccomp (u32 length, then struct sock_filter[]: u16 code, u8 jt, u8 jf, u32 k)
//
// Nothing may follow. The limits below bound every count and length; the
// encoder refuses what the decoder would refuse.
const configMagic = "CCI1"

// Limits of the encoding (cinit.c has the same numbers).
const (
	// MaxConfigSize is the largest encoded configuration.
	MaxConfigSize = 1 << 20
	maxListLen    = 4096 // strings per list, binds, rules
	maxStringLen  = 64 << 10
	maxSeccompLen = 4096 * 8 // BPF_MAXINSNS instructions
	flagCtty      = 1 << 0
)

// LandlockPlan is the Landlock ruleset PID 1 applies to itself before it
// starts the command, computed on the host by PlanLandlock from the same
// rules the Go implementation applies: the handled access of go-landlock's
// preset for the kernel's ABI, the restrict flags, and one access mask per
// path and port (rules are per inode, so PID 1 opens the paths inside the
// sandbox's root).
type LandlockPlan struct {
	ABI           int
	HandledFS     uint64
	HandledNet    uint64
	Scoped        uint64
	RestrictFlags uint32
	Paths         []LandlockPath
	Ports         []LandlockPort
}

// LandlockPath grants Access beneath Path. A DirOnly rule is skipped
// unless Path is a directory (lstat: a merged-usr symlink such as /bin is
// not).
type LandlockPath struct {
	Path    string
	Access  uint64
	DirOnly bool
}

// LandlockPort grants Access (TCP bind and/or connect) on Port.
type LandlockPort struct {
	Port   uint16
	Access uint64
}

// MarshalBinary encodes c for PID 1 (see configMagic).
func (c *Config) MarshalBinary() ([]byte, error) {
	e := encoder{b: make([]byte, 0, 4096)}
	e.b = append(e.b, configMagic...)
	var flags uint32
	if c.Ctty {
		flags |= flagCtty
	}
	e.u32(flags)
	if c.UID < 0 || int64(c.UID) > 1<<32-1 {
		return nil, fmt.Errorf("uid %d out of range", c.UID)
	}
	e.u32(uint32(c.UID))
	e.u32(c.UIDBase)
	if c.ExecFD < 0 || int64(c.ExecFD) > 1<<31-1 {
		return nil, fmt.Errorf("exec fd %d out of range", c.ExecFD)
	}
	e.u32(uint32(c.ExecFD))
	if c.TmpSize < 0 || c.FileSizeLimit < 0 {
		return nil, errors.New("negative tmp size or file size limit")
	}
	e.u64(uint64(c.TmpSize))
	e.u64(uint64(c.FileSizeLimit))
	for _, l := range []struct {
		name string
		v    []string
	}{{"command", c.Command}, {"env", c.Env}, {"hosts", c.Hosts}, {"read_only", c.ReadOnly}, {"read_write", c.ReadWrite}} {
		if err := e.strings(l.name, l.v); err != nil {
			return nil, err
		}
	}
	for _, l := range [][]uint16{c.Connect, c.Bind} {
		if len(l) > maxListLen {
			return nil, fmt.Errorf("%d ports: over %d", len(l), maxListLen)
		}
		e.u32(uint32(len(l)))
		for _, p := range l {
			e.u16(p)
		}
	}
	if len(c.Binds) > maxListLen {
		return nil, fmt.Errorf("%d binds: over %d", len(c.Binds), maxListLen)
	}
	e.u32(uint32(len(c.Binds)))
	for _, b := range c.Binds {
		if err := e.str("bind target", b.Target); err != nil {
			return nil, err
		}
		e.bool(b.Dir)
		if b.FD < 0 || int64(b.FD) > 1<<31-1 {
			return nil, fmt.Errorf("bind %s: fd %d out of range", b.Target, b.FD)
		}
		e.u32(uint32(b.FD))
	}
	if p := c.Landlock; p == nil {
		e.bool(false)
	} else {
		e.bool(true)
		if p.ABI < 0 || int64(p.ABI) > 1<<32-1 {
			return nil, fmt.Errorf("landlock ABI %d out of range", p.ABI)
		}
		e.u32(uint32(p.ABI))
		e.u64(p.HandledFS)
		e.u64(p.HandledNet)
		e.u64(p.Scoped)
		e.u32(p.RestrictFlags)
		if len(p.Paths) > maxListLen || len(p.Ports) > maxListLen {
			return nil, fmt.Errorf("landlock: %d path and %d port rules: over %d", len(p.Paths), len(p.Ports), maxListLen)
		}
		e.u32(uint32(len(p.Paths)))
		for _, r := range p.Paths {
			if err := e.str("landlock path", r.Path); err != nil {
				return nil, err
			}
			e.u64(r.Access)
			e.bool(r.DirOnly)
		}
		e.u32(uint32(len(p.Ports)))
		for _, r := range p.Ports {
			e.u16(r.Port)
			e.u64(r.Access)
		}
	}
	if len(c.Seccomp) > maxSeccompLen || len(c.Seccomp)%8 != 0 {
		return nil, fmt.Errorf("seccomp filter of %d bytes: want a multiple of 8, at most %d", len(c.Seccomp), maxSeccompLen)
	}
	e.u32(uint32(len(c.Seccomp)))
	e.b = append(e.b, c.Seccomp...)
	if len(e.b) > MaxConfigSize {
		return nil, fmt.Errorf("config of %d bytes: over %d", len(e.b), MaxConfigSize)
	}
	return e.b, nil
}

type encoder struct{ b []byte }

func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *encoder) str(what, s string) error {
	if len(s) > maxStringLen {
		return fmt.Errorf("%s of %d bytes: over %d", what, len(s), maxStringLen)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s %q: contains NUL", what, s)
	}
	e.u32(uint32(len(s)))
	e.b = append(e.b, s...)
	e.b = append(e.b, 0)
	return nil
}

func (e *encoder) strings(what string, l []string) error {
	if len(l) > maxListLen {
		return fmt.Errorf("%s: %d entries, over %d", what, len(l), maxListLen)
	}
	e.u32(uint32(len(l)))
	for _, s := range l {
		if err := e.str(what, s); err != nil {
			return err
		}
	}
	return nil
}

// DecodeConfig decodes what MarshalBinary encoded. It refuses anything
// else: bad magic, a count or length over the limits or past the end, a
// string without its NUL or with one inside, a boolean other than 0 or 1,
// trailing bytes.
func DecodeConfig(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("config of %d bytes: over %d", len(b), MaxConfigSize)
	}
	d := decoder{b: b}
	if string(d.take(len(configMagic))) != configMagic {
		return nil, errors.New("not a sandbox config (bad magic)")
	}
	c := &Config{}
	flags := d.u32()
	if flags&^flagCtty != 0 {
		d.fail("unknown flags %#x", flags)
	}
	c.Ctty = flags&flagCtty != 0
	c.UID = int(d.u32())
	c.UIDBase = d.u32()
	c.ExecFD = d.fd("exec fd")
	c.TmpSize = d.size("tmp size")
	c.FileSizeLimit = d.size("file size limit")
	c.Command = d.strings("command")
	c.Env = d.strings("env")
	c.Hosts = d.strings("hosts")
	c.ReadOnly = d.strings("read_only")
	c.ReadWrite = d.strings("read_write")
	c.Connect = d.ports("connect")
	c.Bind = d.ports("bind")
	if n := d.count("binds"); n > 0 {
		c.Binds = make([]BindSpec, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			c.Binds = append(c.Binds, BindSpec{Target: d.str("bind target"), Dir: d.bool("bind dir"), FD: d.fd("bind fd")})
		}
	}
	if d.bool("landlock") {
		p := &LandlockPlan{ABI: int(d.u32()), HandledFS: d.u64(), HandledNet: d.u64(), Scoped: d.u64(), RestrictFlags: d.u32()}
		if n := d.count("landlock paths"); n > 0 {
			p.Paths = make([]LandlockPath, 0, n)
			for i := 0; i < n && d.err == nil; i++ {
				p.Paths = append(p.Paths, LandlockPath{Path: d.str("landlock path"), Access: d.u64(), DirOnly: d.bool("landlock dir only")})
			}
		}
		if n := d.count("landlock ports"); n > 0 {
			p.Ports = make([]LandlockPort, 0, n)
			for i := 0; i < n && d.err == nil; i++ {
				p.Ports = append(p.Ports, LandlockPort{Port: d.u16(), Access: d.u64()})
			}
		}
		c.Landlock = p
	}
	if n := int(d.u32()); d.err == nil {
		if n > maxSeccompLen || n%8 != 0 {
			d.fail("seccomp filter of %d bytes: want a multiple of 8, at most %d", n, maxSeccompLen)
		} else if n > 0 {
			c.Seccomp = append([]byte(nil), d.take(n)...)
		}
	}
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d bytes after the end", len(d.b)-d.off)
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode config (%d bytes): %w", len(b), d.err)
	}
	return c, nil
}

// decoder reads b; after the first error every read returns zero values
// and err keeps the first error.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("at byte %d: "+format, append([]any{d.off}, args...)...)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.fail("%d bytes past the end", n-(len(d.b)-d.off))
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) bool(what string) bool {
	v := d.take(1)
	if v == nil {
		return false
	}
	if v[0] > 1 {
		d.fail("%s: %d is not a boolean", what, v[0])
	}
	return v[0] == 1
}

func (d *decoder) fd(what string) int {
	v := d.u32()
	if v > 1<<31-1 {
		d.fail("%s %d out of range", what, v)
	}
	return int(v)
}

func (d *decoder) size(what string) int64 {
	v := d.u64()
	if v > 1<<63-1 {
		d.fail("%s %d out of range", what, v)
	}
	return int64(v)
}

func (d *decoder) count(what string) int {
	n := d.u32()
	if n > maxListLen {
		d.fail("%s: %d entries, over %d", what, n, maxListLen)
		return 0
	}
	return int(n)
}

func (d *decoder) str(what string) string {
	n := d.u32()
	if n > maxStringLen {
		d.fail("%s of %d bytes: over %d", what, n, maxStringLen)
		return ""
	}
	v := d.take(int(n) + 1)
	if v == nil {
		return ""
	}
	if v[n] != 0 {
		d.fail("%s: no NUL after %d bytes", what, n)
		return ""
	}
	s := v[:n]
	for _, c := range s {
		if c == 0 {
			d.fail("%s: NUL inside", what)
			return ""
		}
	}
	return string(s)
}

func (d *decoder) strings(what string) []string {
	n := d.count(what)
	if n == 0 {
		return nil
	}
	l := make([]string, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		l = append(l, d.str(what))
	}
	return l
}

func (d *decoder) ports(what string) []uint16 {
	n := d.count(what)
	if n == 0 {
		return nil
	}
	l := make([]uint16, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		l = append(l, d.u16())
	}
	return l
}
