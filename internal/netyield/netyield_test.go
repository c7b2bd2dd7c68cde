package netyield

import (
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestYieldRunsNetworkReadyGoroutines is the reason for the package: on
// one P, a goroutine blocked reading a socket that has data runs at the
// busy goroutine's first Yield, not when the busy work ends.
func TestYieldRunsNetworkReadyGoroutines(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	y, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	var served atomic.Bool
	parked := make(chan struct{})
	go func() {
		close(parked)
		var b [1]byte
		if n, _ := server.Read(b[:]); n == 1 {
			served.Store(true)
		}
	}()
	<-parked
	runtime.Gosched() // let the reader reach its read and park in the poller
	if _, err := client.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	// The byte is in the server's socket; only a network poll makes the
	// reader runnable. Spin (never blocking, so nothing else would poll)
	// and yield: the reader must run at one of the first yields.
	yields := 0
	for !served.Load() && yields < 1000 {
		spin(20 * time.Microsecond)
		y.Yield()
		yields++
	}
	if !served.Load() || yields > 2 {
		t.Fatalf("network-ready reader ran after %d yields (served %v), want at most 2", yields, served.Load())
	}
}

func spin(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

func TestYieldConcurrentAndAfterClose(t *testing.T) {
	y, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				y.Yield()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("concurrent Yield calls did not all return")
	}
	if err := y.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := y.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	y.Yield() // returns at once
}

// BenchmarkEchoBehindBusyLoop measures what Yield is for: on one P, the
// round trip of a loopback echo while another goroutine burns CPU in
// 50 µs slices, giving way between them with runtime.Gosched or Yield
// (p50-µs and p99-µs of the echo; ns/op includes a 200 µs pause per echo).
func BenchmarkEchoBehindBusyLoop(b *testing.B) {
	for _, mode := range []string{"gosched", "yield"} {
		b.Run(mode, func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			y, err := New()
			if err != nil {
				b.Fatal(err)
			}
			defer y.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				var buf [8]byte
				for {
					n, err := c.Read(buf[:])
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			var stop atomic.Bool
			busyDone := make(chan struct{})
			go func() {
				defer close(busyDone)
				for !stop.Load() {
					spin(50 * time.Microsecond)
					if mode == "yield" {
						y.Yield()
					} else {
						runtime.Gosched()
					}
				}
			}()
			lat := make([]time.Duration, 0, b.N)
			var buf [8]byte
			b.ResetTimer()
			for range b.N {
				time.Sleep(200 * time.Microsecond)
				start := time.Now()
				if _, err := c.Write(buf[:]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf[:]); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			stop.Store(true)
			<-busyDone
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
