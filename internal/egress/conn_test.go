package egress

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sockopt reads an integer socket option of c.
func sockopt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func TestListenKeepAliveOnlyOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, listen string
		keepalive    int
	}{
		{"loopback v4: no probes to a local client", "127.0.0.1:0", 0},
		{"loopback v6: no probes to a local client", "[::1]:0", 0},
		{"unspecified: remote clients are probed", "0.0.0.0:0", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := Listen(context.Background(), tc.listen)
			if err != nil {
				if strings.Contains(tc.listen, "::1") {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			host := "127.0.0.1"
			if strings.Contains(tc.listen, "::1") {
				host = "::1"
			}
			client, err := net.Dial("tcp", net.JoinHostPort(host, port))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := sockopt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != tc.keepalive {
				t.Fatalf("SO_KEEPALIVE of the accepted connection = %d, want %d", got, tc.keepalive)
			}
		})
	}
}

// defaultDialProxy serves sandbox "sb" with the proxy's own dialer.
func defaultDialProxy(t *testing.T, yaml string) (*Proxy, string) {
	t.Helper()
	p := New(Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	p.SetPolicy("sb", compile(t, yaml))
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln, "sb"); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, ln.Addr().String()
}

// liveUpstream returns the upstream connection of the sandbox's only live
// tunnel or in-flight request.
func liveUpstream(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	s := p.state("sb", false)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		for tun := range s.live {
			s.mu.Unlock()
			return tun.conns[1]
		}
		s.mu.Unlock()
	}
	t.Fatal("no live tunnel")
	return nil
}

// connectThrough opens a tunnel to target through proxy and returns it
// with the 200 read.
func connectThrough(t *testing.T, proxy, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %v %v", target, resp, err)
	}
	return c, br
}

func TestUpstreamKeepAlive(t *testing.T) {
	t.Run("tunnel: probes after 60s idle, set before the first relayed byte", func(t *testing.T) {
		up, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer up.Close()
		_, port, _ := net.SplitHostPort(up.Addr().String())
		p, addr := defaultDialProxy(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%s]}\n", port))
		c, _ := connectThrough(t, addr, up.Addr().String())
		uc, err := up.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		// Keepalive is on before the client's first byte is relayed.
		io.WriteString(c, "x")
		uc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(uc, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		pc := liveUpstream(t, p)
		if got := sockopt(t, pc, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 1 {
			t.Fatalf("SO_KEEPALIVE of the tunnel's upstream = %d, want 1", got)
		}
		if got := sockopt(t, pc, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != 60 {
			t.Fatalf("TCP_KEEPIDLE of the tunnel's upstream = %d, want 60", got)
		}
		c.Close()
	})
	t.Run("plain request: probes on the upstream connection", func(t *testing.T) {
		release, arrived := make(chan struct{}), make(chan struct{})
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-release
			io.WriteString(w, "ok")
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		defer srv.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		p, addr := defaultDialProxy(t, fmt.Sprintf("network:\n  - {name: web, cidrs: [127.0.0.0/8], ports: [%s]}\n", port))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", ln.Addr(), ln.Addr())
		select { // keepalive is on before the request is sent
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not reach the upstream")
		}
		pc := liveUpstream(t, p)
		ka := sockopt(t, pc, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		close(release)
		if ka != 1 {
			t.Fatalf("SO_KEEPALIVE of the request's upstream = %d, want 1", ka)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET through the proxy: %v %v", resp, err)
		}
	})
}

// TestTunnelHalfClose: the side that stops sending first is relayed as a
// half-close (the other direction keeps flowing); the side that stops
// last ends the tunnel with a clean FIN (EOF, not a reset) on both ends.
func TestTunnelHalfClose(t *testing.T) {
	for _, tc := range []struct {
		name         string
		clientFirst  bool
		wantUpstream string // what the upstream reads before EOF
		wantClient   string // what the client reads before EOF
	}{
		{"client half-closes first, upstream answers after its EOF", true, "request", "answer to 7 bytes"},
		{"upstream half-closes first, client sends after its EOF", false, "reply after banner", "banner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			upGot := make(chan string, 1)
			upErr := make(chan error, 1)
			go func() {
				c, err := up.Accept()
				if err != nil {
					upErr <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.clientFirst {
					b, err := io.ReadAll(c) // until the client's half-close
					upGot <- string(b)
					if err != nil {
						upErr <- err
						return
					}
					fmt.Fprintf(c, "answer to %d bytes", len(b))
					upErr <- nil
					return
				}
				io.WriteString(c, "banner")
				c.(*net.TCPConn).CloseWrite()
				b, err := io.ReadAll(c)
				upGot <- string(b)
				upErr <- err
			}()
			_, port, _ := net.SplitHostPort(up.Addr().String())
			_, addr := defaultDialProxy(t, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%s]}\n", port))
			c, br := connectThrough(t, addr, up.Addr().String())
			var got []byte
			if tc.clientFirst {
				io.WriteString(c, "request")
				c.(*net.TCPConn).CloseWrite()
				got, err = io.ReadAll(br)
			} else {
				banner := make([]byte, len("banner"))
				if _, err := io.ReadFull(br, banner); err != nil {
					t.Fatalf("banner: %v", err)
				}
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("after the upstream's half-close the client reads %v, want EOF", err)
				}
				got = banner
				io.WriteString(c, "reply after banner")
				c.(*net.TCPConn).CloseWrite()
			}
			if err != nil {
				t.Fatalf("client read: %v (want a clean EOF)", err)
			}
			if string(got) != tc.wantClient {
				t.Fatalf("client read %q, want %q", got, tc.wantClient)
			}
			if u := <-upGot; u != tc.wantUpstream {
				t.Fatalf("upstream read %q, want %q", u, tc.wantUpstream)
			}
			if err := <-upErr; err != nil {
				t.Fatalf("upstream: %v (want a clean EOF)", err)
			}
			if !tc.clientFirst {
				// The tunnel ends once both sides are done: EOF, not a reset.
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("client's last read: %v, want EOF", err)
				}
			}
		})
	}
}
