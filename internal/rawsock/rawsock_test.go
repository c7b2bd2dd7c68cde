package rawsock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// configs are the two configurations in use: the privacy router's (raw
// calls of at most 256 KiB, never ordinary ones) and the egress proxy's
// (ordinary syscalls from 16 KiB per call).
var configs = []struct {
	name string
	opts Options
}{
	{"router (256 KiB slices, no bulk switch)", Options{MaxSlice: 256 << 10}},
	{"egress (bulk switch at 16 KiB)", Options{BulkThreshold: 16 << 10}},
}

// pair returns c wrapped with opts (through Listener) and the plain TCP
// connection at its other end, over loopback, both with a 10 s deadline.
func pair(t *testing.T, opts Options) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := Listener{Listener: ln, Options: opts}.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	peer, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := <-accepted
	rc, ok := c.(*Conn)
	if !ok {
		peer.Close()
		t.Fatalf("Listener.Accept on TCP returned %T, want *Conn", c)
	}
	t.Cleanup(func() { rc.Close(); peer.Close() })
	deadline := time.Now().Add(10 * time.Second)
	_ = rc.SetDeadline(deadline)
	_ = peer.SetDeadline(deadline)
	return rc, peer.(*net.TCPConn)
}

// queued waits until at least n bytes wait in c's receive queue.
func queued(t *testing.T, c *Conn, n int) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		var q int
		var qerr error
		if err := raw.Control(func(fd uintptr) { q, qerr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || qerr != nil {
			t.Fatalf("SIOCINQ: %v %v", err, qerr)
		}
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d bytes arrived in the receive queue", q, n)
		}
	}
}

func TestBytesBothWays(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB
	for _, cfg := range configs {
		for _, tc := range []struct {
			name string
			size int
			// full: socket buffers of this size on both ends and late
			// readers, so that the writer meets EAGAIN and must resume
			// from the netpoller.
			full int
		}{
			{"1 byte", 1, 0},
			{"1 KiB", 1 << 10, 0},
			{"16 KiB less one (raw for both)", 16<<10 - 1, 0},
			{"16 KiB (egress: ordinary)", 16 << 10, 0},
			{"16 KiB less one into full 4 KiB socket buffers", 16<<10 - 1, 4 << 10},
			{"300 KiB (router: two raw slices)", 300 << 10, 0},
			{"3 MiB", len(big), 0},
			{"3 MiB into full 64 KiB socket buffers", len(big), 64 << 10},
		} {
			t.Run(cfg.name+"/"+tc.name, func(t *testing.T) {
				c, peer := pair(t, cfg.opts)
				if tc.full > 0 {
					for _, err := range []error{c.SetWriteBuffer(tc.full), c.SetReadBuffer(tc.full), peer.SetWriteBuffer(tc.full), peer.SetReadBuffer(tc.full)} {
						if err != nil {
							t.Fatal(err)
						}
					}
				}
				data := big[:tc.size]
				got := make(chan []byte, 1)
				go func() {
					if tc.full > 0 {
						time.Sleep(50 * time.Millisecond)
					}
					b, _ := io.ReadAll(io.LimitReader(peer, int64(len(data))))
					got <- b
				}()
				n, err := c.Write(data)
				if err != nil || n != len(data) {
					t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
				}
				if b := <-got; !bytes.Equal(b, data) {
					t.Fatalf("peer read %d bytes, not the %d written", len(b), len(data))
				}
				go func() {
					if tc.full > 0 {
						time.Sleep(50 * time.Millisecond)
					}
					_, _ = peer.Write(data)
					_ = peer.CloseWrite()
				}()
				back, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("ReadAll: %v", err)
				}
				if !bytes.Equal(back, data) {
					t.Fatalf("read back %d bytes, not the %d sent", len(back), len(data))
				}
				// After the peer's FIN: io.EOF, repeatedly.
				for range 2 {
					if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
						t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
					}
				}
			})
		}
	}
}

func TestIOCopyStaysOnTheWrapper(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			c, peer := pair(t, cfg.opts)
			data := bytes.Repeat([]byte("x"), 100<<10)
			go func() { _, _ = peer.Write(data); _ = peer.CloseWrite() }()
			var sink bytes.Buffer
			if n, err := io.Copy(&sink, c); err != nil || n != int64(len(data)) {
				t.Fatalf("io.Copy out of the conn = %d, %v; want %d, nil", n, err, len(data))
			}
			got := make(chan int64, 1)
			go func() { n, _ := io.Copy(io.Discard, peer); got <- n }()
			if n, err := io.Copy(c, bytes.NewReader(data)); err != nil || n != int64(len(data)) {
				t.Fatalf("io.Copy into the conn = %d, %v; want %d, nil", n, err, len(data))
			}
			_ = c.CloseWrite()
			if n := <-got; n != int64(len(data)) {
				t.Fatalf("peer received %d bytes, want %d", n, len(data))
			}
		})
	}
}

// TestReadSizes checks how much one Read takes off a full receive queue:
// that is where the bulk switch shows.
func TestReadSizes(t *testing.T) {
	const k = 1 << 10
	for _, tc := range []struct {
		name string
		opts Options
		// steps: the peer sends send bytes, then one Read with a buffer of
		// size buf must return want bytes.
		steps []struct{ send, buf, want int }
	}{
		{
			name: "router: a raw read takes at most 256 KiB and never switches",
			opts: configs[0].opts,
			steps: []struct{ send, buf, want int }{
				{300 * k, 512 * k, 256 * k},
				{0, 512 * k, 44 * k},
				{64 * k, 64 * k, 64 * k},
				{64 * k, 128 * k, 64 * k},
			},
		},
		{
			name: "egress: a full 16 KiB raw read switches to ordinary reads until one moves less",
			opts: configs[1].opts,
			steps: []struct{ send, buf, want int }{
				{100, 64 * k, 100},       // raw, below the threshold
				{64 * k, 64 * k, 16 * k}, // raw read capped at 16 KiB: switches
				{0, 64 * k, 48 * k},      // ordinary: not capped
				{64 * k, 64 * k, 64 * k}, // still ordinary (the last moved ≥ 16 KiB)
				{100, 64 * k, 100},       // ordinary, moves less: switches back
				{64 * k, 64 * k, 16 * k}, // raw and capped again: switches
				{0, 16*k - 1, 16*k - 1},  // ordinary, moves less: switches back
				{0, 64 * k, 16 * k},      // raw, capped: switches
				{0, 64 * k, 16*k + 1},    // ordinary: the rest, not capped
			},
		},
		{
			name: "a threshold above MaxSlice never switches reads",
			opts: Options{BulkThreshold: 64 * k, MaxSlice: 16 * k},
			steps: []struct{ send, buf, want int }{
				{64 * k, 64 * k, 16 * k},
				{0, 64 * k, 16 * k},
				{0, 64 * k, 16 * k},
				{0, 64 * k, 16 * k},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t, tc.opts)
			if err := c.SetReadBuffer(4 << 20); err != nil {
				t.Fatal(err)
			}
			pending := 0
			for i, s := range tc.steps {
				if s.send > 0 {
					if _, err := peer.Write(bytes.Repeat([]byte{byte(i)}, s.send)); err != nil {
						t.Fatal(err)
					}
					pending += s.send
				}
				queued(t, c, pending)
				n, err := c.Read(make([]byte, s.buf))
				if err != nil || n != s.want {
					t.Fatalf("step %d: Read(%d bytes) with %d queued = %d, %v; want %d, nil", i, s.buf, pending, n, err, s.want)
				}
				pending -= n
			}
		})
	}
}

func TestErrors(t *testing.T) {
	for _, cfg := range configs {
		for _, tc := range []struct {
			name  string
			check func(t *testing.T, c *Conn, peer *net.TCPConn)
		}{
			{"read deadline in the past is a timeout", func(t *testing.T, c *Conn, _ *net.TCPConn) {
				_ = c.SetReadDeadline(time.Unix(1, 0))
				_, err := c.Read(make([]byte, 8))
				wantTimeout(t, "read", err)
			}},
			{"deadline set while blocked in Read unblocks it", func(t *testing.T, c *Conn, _ *net.TCPConn) {
				go func() { time.Sleep(50 * time.Millisecond); _ = c.SetReadDeadline(time.Unix(1, 0)) }()
				_, err := c.Read(make([]byte, 8))
				wantTimeout(t, "read", err)
			}},
			{"deadline in an ordinary (bulk) read is a timeout too", func(t *testing.T, c *Conn, peer *net.TCPConn) {
				// Router: raw reads throughout; egress: the full 16 KiB
				// read switches, the next read is ordinary.
				if _, err := peer.Write(make([]byte, 16<<10)); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, make([]byte, 16<<10)); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				_, err := c.Read(make([]byte, 64<<10))
				wantTimeout(t, "read", err)
			}},
			{"write deadline with full socket buffers is a timeout", func(t *testing.T, c *Conn, peer *net.TCPConn) {
				_ = c.SetWriteBuffer(4 << 10)
				_ = peer.SetReadBuffer(4 << 10)
				_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
				var err error
				for i := 0; i < 10000 && err == nil; i++ {
					_, err = c.Write(make([]byte, 1<<10)) // raw in both configurations
				}
				wantTimeout(t, "write", err)
			}},
			{"read and write after Close are net.ErrClosed", func(t *testing.T, c *Conn, _ *net.TCPConn) {
				c.Close()
				if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Read = %v; want net.ErrClosed", err)
				}
				if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Write = %v; want net.ErrClosed", err)
				}
			}},
			{"close while a read waits ends it with net.ErrClosed", func(t *testing.T, c *Conn, _ *net.TCPConn) {
				errc := make(chan error, 1)
				go func() { _, err := c.Read(make([]byte, 8)); errc <- err }()
				time.Sleep(20 * time.Millisecond) // let the read park in the netpoller
				c.Close()
				select {
				case err := <-errc:
					if !errors.Is(err, net.ErrClosed) {
						t.Fatalf("Read after Close = %v; want net.ErrClosed", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Close did not end a waiting Read")
				}
			}},
			{"write to a reset connection fails with the errno", func(t *testing.T, c *Conn, peer *net.TCPConn) {
				_ = peer.SetLinger(0) // close sends RST
				peer.Close()
				var err error
				for i := 0; i < 1000 && err == nil; i++ {
					_, err = c.Write(make([]byte, 1<<10))
					time.Sleep(time.Millisecond)
				}
				if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
					t.Fatalf("Write after peer reset = %v; want ECONNRESET or EPIPE", err)
				}
				wantOp(t, "write", err)
			}},
			{"read from a reset connection fails with ECONNRESET", func(t *testing.T, c *Conn, peer *net.TCPConn) {
				_ = peer.SetLinger(0)
				peer.Close()
				_, err := c.Read(make([]byte, 8))
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("Read after peer reset = %v; want ECONNRESET", err)
				}
				wantOp(t, "read", err)
			}},
		} {
			t.Run(cfg.name+"/"+tc.name, func(t *testing.T) {
				c, peer := pair(t, cfg.opts)
				tc.check(t, c, peer)
			})
		}
	}
}

func wantTimeout(t *testing.T, op string, err error) {
	t.Helper()
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s = %v; want a net.Error timeout matching os.ErrDeadlineExceeded", op, err)
	}
	wantOp(t, op, err)
}

func wantOp(t *testing.T, op string, err error) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != op || oe.Net != "tcp" || oe.Source == nil || oe.Addr == nil {
		t.Fatalf("%s error %#v is not a *net.OpError for %s on tcp with both addresses", op, err, op)
	}
}

func TestNonTCPPassesThrough(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := net.Dial("unix", dir+"/s")
		if err != nil {
			c = nil
		}
		dialed <- c
	}()
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			_ = ln.(*net.UnixListener).SetDeadline(time.Now().Add(10 * time.Second))
			c, err := Listener{Listener: ln, Options: cfg.opts}.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, ok := c.(*net.UnixConn); !ok {
				t.Fatalf("Accept on a unix listener returned %T, want *net.UnixConn", c)
			}
			d := <-dialed
			if d == nil {
				t.Fatal("dial failed")
			}
			defer d.Close()
			if w := Wrap(d, cfg.opts); w != d {
				t.Fatalf("Wrap(%T) = %T, want it unchanged", d, w)
			}
			u, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			if uc := u.(*net.UDPConn); Wrap(uc, cfg.opts) != net.Conn(uc) {
				t.Fatal("Wrap changed a *net.UDPConn")
			}
			go func() {
				c, err := net.Dial("unix", dir+"/s")
				if err != nil {
					c = nil
				}
				dialed <- c
			}()
		})
	}
}

func TestWrapKeepsOptions(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			c, _ := pair(t, cfg.opts)
			if got := c.Options(); got != cfg.opts {
				t.Fatalf("Options() = %+v, want %+v", got, cfg.opts)
			}
		})
	}
}
