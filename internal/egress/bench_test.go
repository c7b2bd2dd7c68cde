package egress

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/egress/egresstest"
)

// bareRelay is the floor: parse CONNECT, dial, 200, copy; no policy.
func bareRelay(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				up, err := net.Dial("tcp", req.Host)
				if err != nil {
					return
				}
				defer up.Close()
				io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n")
				splice(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkConnectSetup: dial + CONNECT + 200 + one-byte echo, in process
// (no DNS: the target is an IP literal). Compare the sub-benchmarks.
func BenchmarkConnectSetup(b *testing.B) {
	up := egresstest.StartEcho(b)
	m := compile(b, fmt.Sprintf("network:\n  - {name: db, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port()))
	p := New(Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), RequestRate: 1e9, RequestBurst: 1 << 30, MaxTunnels: 1 << 20})
	p.SetPolicy("sb", m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go p.Serve(ctx, ln, "sb")
	b.Cleanup(cancel)
	for _, tc := range []struct{ name, proxy string }{{"direct", ""}, {"bare-relay", bareRelay(b)}, {"clawcage", ln.Addr().String()}} {
		b.Run(tc.name, func(b *testing.B) {
			// Process CPU per setup (client, proxy and upstream all run
			// here, so the difference between the sub-benchmarks is the
			// proxies' difference): steadier than ns/op on a shared host.
			cpu0 := processCPU()
			for b.Loop() {
				var c net.Conn
				var err error
				var br *bufio.Reader
				if tc.proxy == "" {
					c, err = net.Dial("tcp", up.Addr.String())
					br = bufio.NewReader(c)
				} else {
					c, err = net.Dial("tcp", tc.proxy)
					if err != nil {
						b.Fatal(err)
					}
					fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", up.Addr)
					br = bufio.NewReader(c)
					resp, rerr := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
					if rerr != nil || resp.StatusCode != 200 {
						b.Fatalf("CONNECT: %v %v", resp, rerr)
					}
				}
				if err != nil {
					b.Fatal(err)
				}
				c.Write([]byte{'x'})
				if _, err := br.ReadByte(); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.ReportMetric(float64(processCPU()-cpu0)/1e3/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the process's user+system CPU time so far, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkDecisionLine: the JSON decision line of an allowed CONNECT,
// formatted into io.Discard (the write itself is batched by logbuf).
func BenchmarkDecisionLine(b *testing.B) {
	p := New(Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	o := &outcome{sandbox: "assistant", method: "CONNECT", host: "api.example.com", port: 443, allow: true, rule: "github", reason: "allowed",
		addr: netip.MustParseAddrPort("140.82.112.5:443"), start: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		p.logDecision(o)
	}
}
