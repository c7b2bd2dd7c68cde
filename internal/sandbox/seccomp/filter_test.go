package seccomp

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilterBytesMatchProgram checks that Filter encodes exactly the
// instructions Install loads, in struct sock_filter layout.
func TestFilterBytesMatchProgram(t *testing.T) {
	b, err := Filter()
	if err != nil {
		t.Fatal(err)
	}
	insts, err := Program()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 8*len(raw) {
		t.Fatalf("Filter is %d bytes, want 8 × %d instructions", len(b), len(raw))
	}
	for i, ins := range raw {
		got := bpf.RawInstruction{
			Op: binary.LittleEndian.Uint16(b[8*i:]),
			Jt: b[8*i+2],
			Jf: b[8*i+3],
			K:  binary.LittleEndian.Uint32(b[8*i+4:]),
		}
		if got != ins {
			t.Fatalf("instruction %d: got %+v, want %+v", i, got, ins)
		}
	}
}

// BenchmarkFilter is the host's cost of compiling the filter for PID 1 at
// every sandbox start.
func BenchmarkFilter(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Filter(); err != nil {
			b.Fatal(err)
		}
	}
}
