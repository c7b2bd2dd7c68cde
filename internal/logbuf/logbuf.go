// Package logbuf is an io.Writer for high-rate log lines (the egress
// proxy's decision line and the router's line per request): Write copies the line into a buffer
// and returns, and one goroutine writes the buffer to the underlying
// writer, so the request never waits for the log's write(2) and lines
// logged together cost one write. Close writes everything still buffered;
// nothing is lost on a clean shutdown. It is not a logger and does not
// reorder or split lines.
//
// By default (New) there is no linger: the writing goroutine runs as soon
// as the scheduler gets to it, after letting the goroutines that are
// ready to run go first (lines they log join the batch). A linger timer
// (NewSize) batches more under a steady stream, but every isolated line
// then costs a wake-up of an idle process when the timer fires, which on
// a small host is far dearer than the write it saves. A paced Writer
// (NewPaced) sets no timer for a line after a quiet spell either: it
// writes it at once, and only lines within the gap of the last write wait
// out the rest of the gap, so a steady stream costs one write per gap.
package logbuf

import (
	"io"
	"runtime"
	"sync"
	"time"
)

// Defaults for New.
const (
	DefaultLinger = 0 // write as soon as the writing goroutine runs
	DefaultSize   = 256 << 10
)

// Writer batches writes to an underlying writer. It is safe for
// concurrent use; each Write's bytes stay contiguous and in order.
type Writer struct {
	w      io.Writer
	linger time.Duration
	gap    time.Duration // NewPaced: least time between two writes
	size   int

	mu      sync.Mutex
	flushed sync.Cond // signalled after each flush (writers waiting for room)
	buf     []byte
	spare   []byte
	closed  bool
	err     error  // the underlying writer's last error
	started uint64 // flushes started
	done    uint64 // the last flush finished

	closeOnce sync.Once

	wake   chan struct{} // first line of a batch
	urgent chan struct{} // buffer past size: flush now
	quit   chan struct{}
	exited chan struct{}
}

// New returns a Writer that writes to w without a linger (see the
// package documentation) and at once when DefaultSize bytes are buffered.
func New(w io.Writer) *Writer { return NewSize(w, DefaultLinger, DefaultSize) }

// NewSize is New with the linger (how long after the first line of a
// batch it is written; 0: no timer, as soon as the writing goroutine runs)
// and the size that triggers an immediate flush. Writers block while
// 4×size bytes wait (a stalled destination slows the logging side down
// instead of growing memory without bound).
func NewSize(w io.Writer, linger time.Duration, size int) *Writer {
	lw := &Writer{
		w: w, linger: linger, size: size,
		buf: make([]byte, 0, size), spare: make([]byte, 0, size),
		wake: make(chan struct{}, 1), urgent: make(chan struct{}, 1),
		quit: make(chan struct{}), exited: make(chan struct{}),
	}
	lw.flushed.L = &lw.mu
	go lw.run()
	return lw
}

// NewPaced returns a Writer that writes a line after a quiet spell as soon
// as its goroutine runs, and lines that arrive within gap of the last write
// when gap has passed since it (or at once when size bytes are buffered).
func NewPaced(w io.Writer, gap time.Duration, size int) *Writer {
	lw := NewSize(w, 0, size)
	lw.gap = gap // read only by run, which waits for the first line
	return lw
}

// Write buffers p. After Close it writes p through at once.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.buf) >= 4*w.size && !w.closed {
		w.flushed.Wait()
	}
	if w.closed {
		defer w.mu.Unlock() // in order with Close's last batch
		return w.w.Write(p)
	}
	first := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	full := len(w.buf) >= w.size
	w.mu.Unlock()
	if first {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	if full {
		select {
		case w.urgent <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (w *Writer) run() {
	defer close(w.exited)
	t := time.NewTimer(time.Hour)
	t.Stop()
	var last time.Time // when the last flush ended (paced)
	for {
		now := false
		select {
		case <-w.wake:
		case <-w.urgent:
			now = true
		case <-w.quit:
			return
		}
		wait := w.linger
		if w.gap > 0 {
			wait = w.gap - time.Since(last)
		}
		if !now && wait <= 0 {
			// Goroutines already runnable (other requests finishing)
			// run first and their lines join this write.
			runtime.Gosched()
		} else if !now {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-w.urgent:
				t.Stop()
			case <-w.quit:
				t.Stop()
				return
			}
		}
		w.flush()
		last = time.Now()
	}
}

// flush writes the buffer; only run calls it.
func (w *Writer) flush() {
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare[:0]
	w.started++
	gen := w.started
	w.mu.Unlock()
	var err error
	if len(b) > 0 {
		_, err = w.w.Write(b)
	}
	w.mu.Lock()
	w.spare = b[:0]
	if err != nil {
		w.err = err
	}
	w.done = gen
	w.flushed.Broadcast()
	w.mu.Unlock()
}

// Flush returns once every line written before the call has been
// written to the underlying writer (for tests, and before reading a log
// file).
func (w *Writer) Flush() {
	w.mu.Lock()
	if w.closed || len(w.buf) == 0 {
		w.mu.Unlock()
		return
	}
	want := w.started + 1 // a flush that starts after this call
	w.mu.Unlock()
	select {
	case w.urgent <- struct{}{}:
	default:
	}
	w.mu.Lock()
	for w.done < want && !w.closed {
		w.flushed.Wait()
	}
	w.mu.Unlock()
}

// Close writes everything buffered and makes later writes go straight
// through, in order. It returns the underlying writer's last error.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		close(w.quit)
		<-w.exited
		w.mu.Lock()
		defer w.mu.Unlock()
		w.closed = true
		if len(w.buf) > 0 {
			if _, err := w.w.Write(w.buf); err != nil {
				w.err = err
			}
		}
		w.buf, w.spare = nil, nil
		w.flushed.Broadcast()
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
