// Package egresstest has helpers for testing the egress proxy on loopback:
// scripted and counting resolvers, TLS and echo upstreams, and a client
// that speaks CONNECT and absolute-form HTTP to the proxy.
package egresstest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Resolver answers from a table and counts every query. A name with
// several answer lists answers them in turn (the last one repeats), which
// scripts DNS rebinding.
type Resolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	asked   map[string]int
	count   atomic.Int64
}

// NewResolver returns an empty resolver (every name is NXDOMAIN).
func NewResolver() *Resolver {
	return &Resolver{answers: map[string][][]netip.Addr{}, asked: map[string]int{}}
}

// Set scripts the successive answers for name (each a comma-separated list).
func (r *Resolver) Set(name string, answers ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lists [][]netip.Addr
	for _, a := range answers {
		var l []netip.Addr
		for _, s := range strings.Split(a, ",") {
			l = append(l, netip.MustParseAddr(strings.TrimSpace(s)))
		}
		lists = append(lists, l)
	}
	r.answers[name] = lists
}

// LookupNetIP implements egress.Resolver.
func (r *Resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.count.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	lists := r.answers[host]
	n := r.asked[host]
	r.asked[host] = n + 1
	if len(lists) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if n >= len(lists) {
		n = len(lists) - 1
	}
	return append([]netip.Addr(nil), lists[n]...), nil
}

// Count returns how many lookups were made.
func (r *Resolver) Count() int64 { return r.count.Load() }

// Asked returns how many lookups were made for host.
func (r *Resolver) Asked(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.asked[host]
}

// Upstream is a loopback TCP server: a TLS echo server when TLS is set,
// else a raw echo server. It records the bytes each connection sent.
type Upstream struct {
	Addr     netip.AddrPort
	ln       net.Listener
	accepted atomic.Int64
	received atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

// Port returns the upstream's port.
func (u *Upstream) Port() int { return int(u.Addr.Port()) }

// Accepted returns how many connections the upstream accepted.
func (u *Upstream) Accepted() int64 { return u.accepted.Load() }

// Received returns how many application bytes the upstream received.
func (u *Upstream) Received() int64 { return u.received.Load() }

// StartEcho starts a raw echo server on 127.0.0.1.
func StartEcho(t testing.TB) *Upstream { return start(t, nil) }

// StartTLSEcho starts a TLS echo server on 127.0.0.1 with a self-signed
// certificate for any name.
func StartTLSEcho(t testing.TB) *Upstream { return start(t, SelfSigned(t)) }

func start(t testing.TB, cfg *tls.Config) *Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{ln: ln, Addr: netip.MustParseAddrPort(ln.Addr().String())}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			u.mu.Lock()
			u.conns = append(u.conns, c)
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				var rw io.ReadWriter = c
				if cfg != nil {
					tc := tls.Server(c, cfg)
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if err := tc.Handshake(); err != nil {
						return
					}
					c.SetDeadline(time.Time{})
					rw = tc
				}
				buf := make([]byte, 32<<10)
				for {
					n, err := rw.Read(buf)
					if n > 0 {
						u.received.Add(int64(n))
						if _, werr := rw.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// SelfSigned returns a server config with a self-signed ECDSA certificate.
func SelfSigned(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "egresstest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"*"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// Response is a proxy answer.
type Response struct {
	Status int
	Body   map[string]any
	Conn   net.Conn      // the client connection (open after a 200 CONNECT)
	Reader *bufio.Reader // reads the rest of Conn
}

// Reason returns the body's "reason".
func (r *Response) Reason() string { s, _ := r.Body["reason"].(string); return s }

// SendRaw writes raw bytes (a request line and headers) to the proxy and
// reads the response head (and JSON body for non-2xx).
func SendRaw(t testing.TB, proxy, raw string) *Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: methodOf(raw)})
	if err != nil {
		t.Fatalf("read proxy response to %q: %v", raw, err)
	}
	r := &Response{Status: resp.StatusCode, Conn: c, Reader: br}
	if resp.StatusCode != http.StatusOK || methodOf(raw) != http.MethodConnect {
		data, _ := io.ReadAll(resp.Body)
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			if err := json.Unmarshal(data, &r.Body); err != nil {
				t.Fatalf("proxy body %q: %v", data, err)
			}
		} else {
			r.Body = map[string]any{"raw": string(data)}
		}
	}
	c.SetDeadline(time.Time{})
	return r
}

func methodOf(raw string) string {
	m, _, _ := strings.Cut(raw, " ")
	return m
}

// Connect sends CONNECT authority through the proxy.
func Connect(t testing.TB, proxy, authority string) *Response {
	t.Helper()
	return SendRaw(t, proxy, fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority))
}

// TLSThrough performs a TLS handshake with serverName over an established
// tunnel and echoes msg; it returns the echo or the error.
func TLSThrough(r *Response, serverName, msg string) (string, error) {
	if r.Status != http.StatusOK {
		return "", fmt.Errorf("tunnel not established: %d", r.Status)
	}
	conn := &bufConn{Conn: r.Conn, r: r.Reader}
	tc := tls.Client(conn, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}) //nolint:gosec // test upstream
	r.Conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer r.Conn.SetDeadline(time.Time{})
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	if _, err := io.WriteString(tc, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(tc, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

// TLSConn returns a TLS client over an established tunnel (handshake done).
func TLSConn(r *Response, serverName string) (*tls.Conn, error) {
	tc := tls.Client(&bufConn{Conn: r.Conn, r: r.Reader}, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}) //nolint:gosec // test upstream
	r.Conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer r.Conn.SetDeadline(time.Time{})
	return tc, tc.Handshake()
}

// bufConn reads through a bufio.Reader that may hold bytes already read.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// ErrNoEcho is returned by Echo when the peer closed.
var ErrNoEcho = errors.New("no echo")

// Echo writes msg on a raw tunnel and reads it back.
func Echo(r *Response, msg string) (string, error) {
	r.Conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer r.Conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(r.Conn, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r.Reader, buf); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoEcho, err)
	}
	return string(buf), nil
}
