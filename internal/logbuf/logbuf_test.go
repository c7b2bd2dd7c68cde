package logbuf

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records each underlying Write.
type sink struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *sink) snapshot() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

func TestLinesBatchedAndNothingLostOnClose(t *testing.T) {
	s := &sink{}
	w := NewSize(s, time.Hour, 1<<20) // only Close flushes
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				fmt.Fprintf(w, "{\"g\":%d,\"i\":%d}\n", g, i)
			}
		}()
	}
	wg.Wait()
	if out, n := s.snapshot(); n != 0 || out != "" {
		t.Fatalf("written before the linger or Close: %d writes", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, n := s.snapshot()
	if n != 1 {
		t.Fatalf("2000 lines took %d writes, want 1 batch", n)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2000 {
		t.Fatalf("%d lines after Close, want 2000", len(lines))
	}
	next := map[int]int{}
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "{\"g\":%d,\"i\":%d}", &g, &i); err != nil {
			t.Fatalf("torn line %q: %v", l, err)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d (reordered)", g, i, next[g]-1)
		}
		next[g]++
	}
	fmt.Fprintf(w, "after close\n")
	if out, _ := s.snapshot(); !strings.HasSuffix(out, "after close\n") {
		t.Fatal("a write after Close was not written through")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLingerAndSizeFlush(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linger time.Duration
		size   int
		line   string
	}{
		{"linger elapses", 10 * time.Millisecond, 1 << 20, "short line\n"},
		{"no linger: written without a timer", 0, 1 << 20, "short line\n"},
		{"default (New): written without Flush or Close", DefaultLinger, DefaultSize, "short line\n"},
		{"size reached flushes without waiting for the linger", time.Hour, 16, "a line longer than sixteen bytes\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &sink{}
			w := NewSize(s, tc.linger, tc.size)
			defer w.Close()
			w.Write([]byte(tc.line))
			deadline := time.Now().Add(5 * time.Second)
			for {
				if out, _ := s.snapshot(); out == tc.line {
					return
				}
				if time.Now().After(deadline) {
					t.Fatal("buffered line never flushed")
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestFlush(t *testing.T) {
	s := &sink{}
	w := NewSize(s, time.Hour, 1<<20)
	defer w.Close()
	w.Write([]byte("one\n"))
	w.Flush()
	if out, _ := s.snapshot(); out != "one\n" {
		t.Fatalf("after Flush: %q", out)
	}
	w.Flush() // nothing buffered: returns at once
}

func TestNoLingerKeepsLinesWholeAndInOrder(t *testing.T) {
	s := &sink{}
	w := New(s)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				fmt.Fprintf(w, "{\"g\":%d,\"i\":%d}\n", g, i)
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, n := s.snapshot()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2000 || n > 2000 {
		t.Fatalf("%d lines in %d writes, want 2000 lines in at most 2000", len(lines), n)
	}
	next := map[int]int{}
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "{\"g\":%d,\"i\":%d}", &g, &i); err != nil {
			t.Fatalf("torn line %q: %v", l, err)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d (reordered)", g, i, next[g]-1)
		}
		next[g]++
	}
}

// waitOutput waits until s holds want and returns its number of writes.
func waitOutput(t *testing.T, s *sink, want string) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, writes := s.snapshot()
		if got == want {
			return writes
		}
		if time.Now().After(deadline) {
			t.Fatalf("output %q, want %q", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPacedQuietLineAtOnceThenOneWritePerGap(t *testing.T) {
	s := &sink{}
	w := NewPaced(s, time.Hour, 1<<20)
	// The first line after a quiet spell goes out at once, with no timer...
	w.Write([]byte("first\n"))
	if writes := waitOutput(t, s, "first\n"); writes != 1 {
		t.Fatalf("first line took %d writes", writes)
	}
	// ...lines within the gap of that write wait for it (or a flush).
	var want strings.Builder
	want.WriteString("first\n")
	for i := range 100 {
		line := fmt.Sprintf("{\"msg\":\"request\",\"n\":%d}\n", i)
		want.WriteString(line)
		if n, err := w.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if got, _ := s.snapshot(); got != "first\n" {
		t.Fatalf("lines reached the output within the gap: %q", got)
	}
	w.Flush()
	if got, writes := s.snapshot(); got != want.String() || writes != 2 {
		t.Fatalf("after Flush: %d writes, output equal=%v; want 1 more write of all 100 lines in order", writes, got == want.String())
	}
	w.Write([]byte("last\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.snapshot(); !strings.HasSuffix(got, "}\nlast\n") {
		t.Fatalf("Close did not write the buffered line: %q", got[max(0, len(got)-40):])
	}
}

func TestPacedWritesWhenTheGapHasPassed(t *testing.T) {
	s := &sink{}
	w := NewPaced(s, 200*time.Millisecond, 1<<20)
	defer w.Close()
	w.Write([]byte("zero\n"))
	waitOutput(t, s, "zero\n")
	start := time.Now()
	w.Write([]byte("one\n"))
	w.Write([]byte("two\n"))
	if writes := waitOutput(t, s, "zero\none\ntwo\n"); writes != 2 {
		t.Fatalf("%d writes; want the two lines after the first in one", writes)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("lines within the gap written after %s, before the gap", d)
	}
}
