package router

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// quietPair returns a quietConn and the plain TCP connection at its other
// end, over loopback.
func quietPair(t *testing.T) (*quietConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := quietListener{ln}.Accept()
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
	q, ok := c.(*quietConn)
	if !ok {
		t.Fatalf("quietListener.Accept returned %T, want *quietConn", c)
	}
	t.Cleanup(func() { q.Close(); peer.Close() })
	deadline := time.Now().Add(10 * time.Second)
	_ = q.SetDeadline(deadline)
	_ = peer.SetDeadline(deadline)
	return q, peer
}

func TestQuietConnCarriesBytesBothWays(t *testing.T) {
	// 3 MiB: more than one raw write (maxRawIO) and more than the socket
	// buffers, so Write must wait in the netpoller on EAGAIN and resume.
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16)
	for _, tc := range []struct {
		name string
		size int
	}{{"one byte", 1}, {"1 KiB", 1 << 10}, {"3 MiB", len(big)}} {
		t.Run(tc.name, func(t *testing.T) {
			q, peer := quietPair(t)
			data := big[:tc.size]
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(peer, int64(len(data))))
				got <- b
			}()
			n, err := q.Write(data)
			if err != nil || n != len(data) {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
			}
			if b := <-got; !bytes.Equal(b, data) {
				t.Fatalf("peer read %d bytes, not the %d written", len(b), len(data))
			}
			go func() { _, _ = peer.Write(data); _ = peer.(*net.TCPConn).CloseWrite() }()
			back, err := io.ReadAll(q)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			if !bytes.Equal(back, data) {
				t.Fatalf("read back %d bytes, not the %d sent", len(back), len(data))
			}
			// After the peer's FIN: io.EOF, repeatedly.
			if n, err := q.Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
			}
		})
	}
}

func TestQuietConnErrors(t *testing.T) {
	t.Run("read deadline in the past is a timeout", func(t *testing.T) {
		q, _ := quietPair(t)
		_ = q.SetReadDeadline(time.Unix(1, 0))
		_, err := q.Read(make([]byte, 8))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read = %v; want a net.Error timeout matching os.ErrDeadlineExceeded", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("Read error %#v is not a *net.OpError for read", err)
		}
	})
	t.Run("deadline set while blocked in Read unblocks it", func(t *testing.T) {
		q, _ := quietPair(t)
		go func() { time.Sleep(50 * time.Millisecond); _ = q.SetReadDeadline(time.Unix(1, 0)) }()
		_ = q.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := q.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read = %v; want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("read and write after Close are net.ErrClosed", func(t *testing.T) {
		q, _ := quietPair(t)
		q.Close()
		if _, err := q.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read = %v; want net.ErrClosed", err)
		}
		if _, err := q.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write = %v; want net.ErrClosed", err)
		}
	})
	t.Run("write to a reset connection fails with the errno", func(t *testing.T) {
		q, peer := quietPair(t)
		_ = peer.(*net.TCPConn).SetLinger(0) // close sends RST
		peer.Close()
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = q.Write(make([]byte, 64<<10))
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("Write after peer reset = %v; want ECONNRESET or EPIPE", err)
		}
	})
}

func TestQuietListenerLeavesOtherConnectionsAlone(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("unix", dir+"/s")
		if err == nil {
			defer c.Close()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	c, err := quietListener{ln}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.UnixConn); !ok {
		t.Fatalf("Accept on a unix listener returned %T, want *net.UnixConn", c)
	}
}
