package netyield

import (
	"net"
	"runtime"
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
