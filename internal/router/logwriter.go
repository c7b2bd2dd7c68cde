package router

import (
	"io"
	"sync"
	"time"
)

// LogWriter buffers the router's log lines and writes them to out from a
// background goroutine, in one write(2) per batch: a line after a quiet
// spell at once, lines within linger of the last write together when the
// linger has passed. The request path then never waits on a write to
// the journal's pipe: without it every request paid one write(2) for its
// log line before its response was complete, and that syscall woke the
// runtime's sysmon thread (see package rawsock). Lines keep their order.
//
// When more than maxBuffered bytes are waiting, Write flushes on the
// caller's goroutine (backpressure; nothing is dropped). Close writes what
// is buffered and makes later writes go straight to out. A crash loses at
// most the lines of the last linger (the Go runtime's own crash output goes
// to stderr directly).
type LogWriter struct {
	out         io.Writer
	linger      time.Duration
	maxBuffered int

	outMu sync.Mutex // held while writing to out: keeps batches in order

	mu     sync.Mutex
	buf    []byte
	spare  []byte
	closed bool
	kick   chan struct{} // the first line of a batch was buffered
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the goroutine has returned
}

// NewLogWriter starts a LogWriter on out (linger 0 means 10 ms).
func NewLogWriter(out io.Writer, linger time.Duration) *LogWriter {
	if linger <= 0 {
		linger = 10 * time.Millisecond
	}
	w := &LogWriter{out: out, linger: linger, maxBuffered: 256 << 10,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

// Write implements io.Writer; p is copied.
func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.outMu.Lock()
		defer w.outMu.Unlock()
		return w.out.Write(p)
	}
	if len(w.buf)+len(p) > w.maxBuffered {
		w.mu.Unlock()
		if err := w.Flush(); err != nil {
			return 0, err
		}
		w.outMu.Lock()
		defer w.outMu.Unlock()
		return w.out.Write(p)
	}
	if len(w.buf) == 0 {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	return len(p), nil
}

// Flush writes what is buffered.
func (w *LogWriter) Flush() error {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	if len(b) == 0 {
		w.spare = b
		return nil
	}
	_, err := w.out.Write(b)
	if cap(b) <= 64<<10 {
		w.spare = b[:0] // keep a buffer of the usual size, drop a burst's
	} else {
		w.spare = nil
	}
	return err
}

func (w *LogWriter) loop() {
	defer close(w.done)
	var last time.Time // end of the last write
	for {
		select {
		case <-w.kick:
		case <-w.stop:
			return
		}
		// A line after a quiet spell is written at once (when this
		// goroutine is scheduled, after the request's goroutine has
		// parked): a timer would wake the idle process once more just
		// for it. Within linger of the last write, wait out the rest of
		// the linger without watching the buffer, so lines written
		// meanwhile wake nobody; then write them all.
		if wait := w.linger - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-w.stop:
				t.Stop()
				return // Close writes the rest
			}
		}
		_ = w.Flush()
		last = time.Now()
	}
}

// Close writes what is buffered and stops the background goroutine; later
// writes go straight to out.
func (w *LogWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.stop)
	w.mu.Unlock()
	<-w.done
	return w.Flush()
}
