package router

import (
	"net"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/rawsock"
)

// TestQuietWiring checks the router's raw-syscall configuration: TCP
// connections are wrapped for raw calls of at most 256 KiB that never
// switch to ordinary syscalls; other connections pass unchanged.
func TestQuietWiring(t *testing.T) {
	if got, want := quietIO(), (rawsock.Options{MaxSlice: 256 << 10, BulkThreshold: 0}); got != want {
		t.Fatalf("quietIO() = %+v, want %+v", got, want)
	}
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = t.TempDir() + "/s"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := net.Dial(network, ln.Addr().String())
				if err == nil {
					defer c.Close()
					time.Sleep(100 * time.Millisecond)
				}
			}()
			c, err := rawsock.Listener{Listener: ln, Options: quietIO()}.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			q := quiet(c)
			switch network {
			case "tcp":
				rc, ok := c.(*rawsock.Conn)
				if !ok {
					t.Fatalf("Accept on tcp returned %T, want *rawsock.Conn", c)
				}
				if rc.Options() != quietIO() {
					t.Fatalf("accepted connection wrapped with %+v, want %+v", rc.Options(), quietIO())
				}
				if qc, ok := quiet(rc.TCPConn).(*rawsock.Conn); !ok || qc.Options() != quietIO() {
					t.Fatalf("quiet(*net.TCPConn) = %T, want *rawsock.Conn with %+v", quiet(rc.TCPConn), quietIO())
				}
			case "unix":
				if _, ok := c.(*net.UnixConn); !ok {
					t.Fatalf("Accept on a unix listener returned %T, want *net.UnixConn", c)
				}
				if q != c {
					t.Fatalf("quiet(%T) = %T, want it unchanged", c, q)
				}
			}
		})
	}
}
