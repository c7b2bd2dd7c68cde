package router

import (
	"context"
	"time"
)

// record hands a usage row to the background writer so that the SQLite
// write never delays the end of a response. If the queue is full the
// caller writes synchronously (backpressure, nothing dropped).
func (r *Router) record(rec UsageRecord) {
	if r.opt.Usage == nil {
		return
	}
	r.recMu.RLock()
	defer r.recMu.RUnlock()
	if r.recClosed {
		r.writeRecord(rec)
		return
	}
	select {
	case r.records <- rec:
	default:
		r.writeRecord(rec)
	}
}

func (r *Router) writeRecord(rec UsageRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.opt.Usage.Record(ctx, rec); err != nil {
		r.log.Error("record usage", "sandbox", rec.Sandbox, "route", rec.Route, "err", err)
	}
}

// BatchRecorder is an optional UsageRecorder extension that writes many
// rows in one transaction (all or nothing).
type BatchRecorder interface {
	RecordBatch(ctx context.Context, recs []UsageRecord) error
}

// maxBatch bounds the rows written in one transaction (≈ 7 µs of CPU a row
// at this size, 9 at 64, 16 at 16, 120 for a row alone: BenchmarkRecordBatchSizes
// in internal/usage).
const maxBatch = 256

// batchLinger is how long the writer waits for more rows after a write
// (a row after a quiet spell is written at once). This turns one SQLite transaction and one writer wake-up
// per request into one per batch; rows reach the ledger at most this much
// later (admission counts spend in memory, and Close still writes every
// queued row). A transaction costs ≈ 10 syscalls (pwrite64 of the WAL
// frames, fcntl locks) and, being ordinary syscalls, a wake-up of the
// runtime's sysmon; at 100 requests/s a 25 ms linger paid that every
// 2.5 rows, 100 ms every 10 (bench/README.md, "Privacy router").
const batchLinger = 100 * time.Millisecond

func (r *Router) recordLoop() {
	defer close(r.recorded)
	br, batching := r.opt.Usage.(BatchRecorder)
	batch := make([]UsageRecord, 0, maxBatch)
	var last time.Time // end of the last write
	for rec := range r.records {
		if !batching {
			r.writeRecord(rec)
			continue
		}
		// Take what is queued. A row after a quiet spell is written at
		// once: a linger timer would wake the idle process once more
		// just for it, and a row alone costs the same either way. Within
		// batchLinger of the last write, sleep out the rest of it once
		// (without watching the queue, so rows queued meanwhile wake
		// nobody) and take what came in, up to maxBatch.
		batch = append(batch[:0], rec)
		closed := r.drain(&batch)
		if wait := batchLinger - time.Since(last); !closed && len(batch) < maxBatch && wait > 0 {
			time.Sleep(wait)
			r.drain(&batch)
		}
		r.writeBatch(br, batch)
		last = time.Now()
	}
}

// writeBatch writes batch in one transaction (a single row with Record).
func (r *Router) writeBatch(br BatchRecorder, batch []UsageRecord) {
	if len(batch) == 1 {
		r.writeRecord(batch[0])
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := br.RecordBatch(ctx, batch)
	cancel()
	if err != nil {
		// One bad row must not lose the others: write them one by one.
		for _, b := range batch {
			r.writeRecord(b)
		}
	}
}

// drain appends queued rows to batch without blocking, up to maxBatch. It
// reports whether the queue is closed.
func (r *Router) drain(batch *[]UsageRecord) (closed bool) {
	for len(*batch) < maxBatch {
		select {
		case more, ok := <-r.records:
			if !ok {
				return true
			}
			*batch = append(*batch, more)
		default:
			return false
		}
	}
	return false
}

// Close stops the usage writer after writing every queued row and closes
// idle upstream connections. Call it after every Serve has returned.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		r.recMu.Lock()
		r.recClosed = true
		close(r.records)
		r.recMu.Unlock()
		<-r.recorded
		if ci, ok := r.transport.(interface{ CloseIdleConnections() }); ok {
			ci.CloseIdleConnections()
		}
	})
	return nil
}
