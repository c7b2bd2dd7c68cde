package seccomp

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Filter returns the filter Install loads as the kernel takes it: an array
// of struct sock_filter (u16 code, u8 jt, u8 jf, u32 k, in the machine's
// byte order, little-endian on the only supported architecture). The
// sandbox's host side compiles it and passes it to PID 1, whose C start-up
// code installs it before the Go runtime exists.
func Filter() ([]byte, error) {
	insts, err := Program()
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble filter: %w", err)
	}
	if len(raw) == 0 || len(raw) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: filter has %d instructions, the kernel takes 1 to %d", len(raw), unix.BPF_MAXINSNS)
	}
	b := make([]byte, 0, 8*len(raw))
	for _, ins := range raw {
		b = binary.LittleEndian.AppendUint16(b, ins.Op)
		b = append(b, ins.Jt, ins.Jf)
		b = binary.LittleEndian.AppendUint32(b, ins.K)
	}
	return b, nil
}
