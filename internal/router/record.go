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

func (r *Router) recordLoop() {
	defer close(r.recorded)
	for rec := range r.records {
		r.writeRecord(rec)
	}
}

// Close stops the usage writer after writing every queued row. Call it
// after every Serve has returned.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		r.recMu.Lock()
		r.recClosed = true
		close(r.records)
		r.recMu.Unlock()
		<-r.recorded
	})
	return nil
}
