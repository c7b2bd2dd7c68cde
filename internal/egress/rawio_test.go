package egress

import (
	"net"
	"testing"

	"github.com/clawcage/clawcage/internal/rawsock"
)

// TestRawIOWiring checks the proxy's raw-syscall configuration (the I/O
// itself is tested in package rawsock): TCP connections switch to ordinary
// syscalls from 16 KiB per call, other connections pass unchanged.
func TestRawIOWiring(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, ok := rawIO(c).(*rawsock.Conn)
	if !ok {
		t.Fatalf("rawIO(%T) = %T, want *rawsock.Conn", c, rawIO(c))
	}
	if got, want := rc.Options(), (rawsock.Options{BulkThreshold: 16 << 10}); got != want {
		t.Fatalf("rawIO wraps with %+v, want %+v", got, want)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := rawIO(a); got != a {
		t.Fatalf("rawIO(%T) = %T, want it unchanged", a, got)
	}
}
