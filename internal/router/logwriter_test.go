package router

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is an io.Writer safe for the LogWriter's goroutine; it
// counts writes.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) snapshot() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.writes
}

// waitOutput waits until out holds want.
func waitOutput(t *testing.T, out *lockedBuffer, want string) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, writes := out.snapshot()
		if got == want {
			return writes
		}
		if time.Now().After(deadline) {
			t.Fatalf("output %q, want %q", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLogWriterBatchesLinesInOrder(t *testing.T) {
	out := &lockedBuffer{}
	w := NewLogWriter(out, time.Hour)
	// The first line after a quiet spell goes out at once...
	w.Write([]byte("first\n"))
	if writes := waitOutput(t, out, "first\n"); writes != 1 {
		t.Fatalf("first line took %d writes", writes)
	}
	// ...lines within the linger of that write wait for it (or a flush).
	want := strings.Builder{}
	want.WriteString("first\n")
	for i := range 100 {
		line := fmt.Sprintf("{\"msg\":\"request\",\"n\":%d}\n", i)
		want.WriteString(line)
		if n, err := w.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if got, _ := out.snapshot(); got != "first\n" {
		t.Fatalf("lines reached the output before the linger or a flush: %q", got)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, writes := out.snapshot()
	if got != want.String() || writes != 2 {
		t.Fatalf("after Flush: %d writes, output equal=%v; want 1 more write of all 100 lines in order", writes, got == want.String())
	}
	w.Write([]byte("last\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := out.snapshot(); !strings.HasSuffix(got, "}\nlast\n") {
		t.Fatalf("Close did not write the buffered line: %q", got[max(0, len(got)-40):])
	}
	// After Close a line goes straight out.
	w.Write([]byte("after close\n"))
	if got, _ := out.snapshot(); !strings.HasSuffix(got, "last\nafter close\n") {
		t.Fatalf("write after Close did not reach the output: %q", got[max(0, len(got)-40):])
	}
}

func TestLogWriterWritesAfterLinger(t *testing.T) {
	out := &lockedBuffer{}
	w := NewLogWriter(out, 200*time.Millisecond)
	defer w.Close()
	w.Write([]byte("zero\n"))
	waitOutput(t, out, "zero\n")
	start := time.Now()
	w.Write([]byte("one\n"))
	w.Write([]byte("two\n"))
	if writes := waitOutput(t, out, "zero\none\ntwo\n"); writes != 2 {
		t.Fatalf("%d writes; want the two lines after the first in one", writes)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("lines within the linger written after %s, before the linger", d)
	}
}

func TestLogWriterBackpressureAndConcurrency(t *testing.T) {
	out := &lockedBuffer{}
	w := NewLogWriter(out, time.Hour)
	w.maxBuffered = 4 << 10 // small, so writers hit backpressure often
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				w.Write([]byte(fmt.Sprintf("g%d-%04d %s\n", g, i, strings.Repeat("x", 100))))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, writes := out.snapshot()
	if writes < 2 {
		t.Fatalf("only %d writes: backpressure never flushed", writes)
	}
	seen := map[string]int{}
	next := make([]int, writers) // each writer's lines must stay in order
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d-%d", &g, &i); err != nil || len(l) != len("g0-0000 ")+100 {
			t.Fatalf("torn or foreign line %q", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after line %d", g, i, next[g]-1)
		}
		next[g]++
		seen[l]++
	}
	if len(seen) != writers*lines {
		t.Fatalf("%d distinct lines, want %d", len(seen), writers*lines)
	}
}
