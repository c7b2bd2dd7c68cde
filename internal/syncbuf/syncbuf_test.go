package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

func TestConcurrentWritesAndReads(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("ab"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := b.String(); len(got) != 800 || strings.Count(got, "ab") != 400 {
		t.Fatalf("got %d bytes, %d pairs; want 800 bytes, 400 pairs", len(got), strings.Count(got, "ab"))
	}
}
