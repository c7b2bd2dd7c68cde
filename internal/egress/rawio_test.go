package egress

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// rawPair returns a raw-I/O connection and its plain peer on loopback.
func rawPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	rc := rawIO(c)
	if _, ok := rc.(*rawIOConn); !ok {
		t.Fatalf("rawIO(%T) = %T, want *rawIOConn", c, rc)
	}
	t.Cleanup(func() { rc.Close(); peer.Close() })
	return rc, peer
}

func TestRawIOConn(t *testing.T) {
	t.Run("bulk write and read arrive whole and in order (ordinary syscalls past rawMax)", func(t *testing.T) {
		c, peer := rawPair(t)
		want := bytes.Repeat([]byte("0123456789abcdef"), (64*rawMax+1000)/16)
		done := make(chan []byte)
		go func() { b, _ := io.ReadAll(peer); done <- b }()
		if n, err := c.Write(want); err != nil || n != len(want) {
			t.Fatalf("Write: %d %v", n, err)
		}
		c.(*rawIOConn).CloseWrite()
		if got := <-done; !bytes.Equal(got, want) {
			t.Fatalf("peer read %d bytes, want %d identical", len(got), len(want))
		}
		// And back: many small raw writes by the peer's side are not
		// needed; a bulk stream read through c switches to ordinary
		// reads and back without losing a byte.
		c2, peer2 := rawPair(t)
		go func() { peer2.Write(want); peer2.Write([]byte("tail")); peer2.Close() }()
		got, err := io.ReadAll(c2)
		if err != nil || !bytes.Equal(got, append(want, "tail"...)) {
			t.Fatalf("read %d bytes (%v), want %d identical", len(got), err, len(want)+4)
		}
	})
	t.Run("read returns data, then io.EOF after the peer's close", func(t *testing.T) {
		c, peer := rawPair(t)
		peer.Write([]byte("hello"))
		peer.Close()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello" {
			t.Fatalf("ReadAll: %q %v", got, err)
		}
		if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("Read after EOF: %d %v, want 0 io.EOF", n, err)
		}
	})
	t.Run("read deadline is a timeout matching os.ErrDeadlineExceeded", func(t *testing.T) {
		c, _ := rawPair(t)
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := c.Read(make([]byte, 8))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read past the deadline: %v, want a timeout", err)
		}
	})
	t.Run("close while a read waits ends it with net.ErrClosed", func(t *testing.T) {
		c, _ := rawPair(t)
		errc := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 8)); errc <- err }()
		time.Sleep(20 * time.Millisecond) // let the read park in the netpoller
		c.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not end a waiting Read")
		}
	})
	t.Run("write to a reset peer fails", func(t *testing.T) {
		c, peer := rawPair(t)
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close() // RST
		var err error
		for deadline := time.Now().Add(10 * time.Second); err == nil && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			_, err = c.Write([]byte("x"))
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" {
			t.Fatalf("Write to a reset peer: %v, want a write *net.OpError", err)
		}
	})
}
