package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Source says where lines written to a LineWriter come from.
type Source struct {
	Component string
	Sandbox   string
	Stream    string // StreamStdout or StreamStderr
	// Structured marks a trusted component that logs slog JSON lines: a line
	// that is a JSON object is stored as an event (level, msg, attrs) instead
	// of as text. Never set it for a sandbox.
	Structured bool
	// LinesPerSecond and Burst cap how fast this source can fill the
	// journal (and so push older entries out through rotation). Lines over
	// the limit are dropped and counted; the count is recorded as one entry
	// when lines pass again. Zero LinesPerSecond means no limit.
	LinesPerSecond float64
	Burst          int
}

// LineWriter turns a byte stream (a child's stdout or stderr) into journal
// entries, one per line. Lines longer than MaxMsgBytes are split. It is safe
// for concurrent use.
type LineWriter struct {
	j       *Journal
	src     Source
	limiter *rate.Limiter // nil: unlimited

	mu      sync.Mutex
	buf     []byte
	dropped int
}

// NewLineWriter returns a writer that records each line it is given in j.
func NewLineWriter(j *Journal, src Source) *LineWriter {
	w := &LineWriter{j: j, src: src}
	if src.LinesPerSecond > 0 {
		burst := src.Burst
		if burst < 1 {
			burst = 1
		}
		w.limiter = rate.NewLimiter(rate.Limit(src.LinesPerSecond), burst)
	}
	return w
}

// Write records every complete line in p and keeps the rest for later.
func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	for len(w.buf) >= MaxMsgBytes {
		w.emit(w.buf[:MaxMsgBytes])
		w.buf = w.buf[MaxMsgBytes:]
	}
	if len(w.buf) == 0 {
		w.buf = nil
	}
	return len(p), nil
}

// Close records a final line that had no newline.
func (w *LineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
	w.flushDropped()
	return nil
}

// flushDropped records how many lines the rate limit dropped.
func (w *LineWriter) flushDropped() {
	if w.dropped == 0 {
		return
	}
	_ = w.j.Write(Entry{Component: w.src.Component, Sandbox: w.src.Sandbox, Stream: w.src.Stream,
		Level: "WARN", Msg: fmt.Sprintf("[%d lines dropped: output rate limit of %g lines/s]", w.dropped, w.src.LinesPerSecond)})
	w.dropped = 0
}

func (w *LineWriter) emit(line []byte) {
	if w.limiter != nil {
		if !w.limiter.Allow() {
			w.dropped++
			return
		}
		w.flushDropped()
	}
	e := Entry{Component: w.src.Component, Sandbox: w.src.Sandbox, Stream: w.src.Stream}
	if w.src.Structured && parseStructured(line, &e) {
		e.Stream = StreamEvent
	} else {
		e.Msg = Escape(string(line))
	}
	// A journal write error is kept by the Journal (see Err); the child's
	// output must not block or fail because the disk is full.
	_ = w.j.Write(e)
}

// parseStructured fills e from a slog JSON line; it reports false if line is
// not a JSON object.
func parseStructured(line []byte, e *Entry) bool {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return false
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		return false
	}
	if s, ok := m["msg"].(string); ok {
		e.Msg = Escape(s)
	}
	if s, ok := m["level"].(string); ok {
		e.Level = Escape(s)
	}
	if s, ok := m["sandbox"].(string); ok && e.Sandbox == "" {
		e.Sandbox = Escape(s)
		delete(m, "sandbox")
	}
	delete(m, "msg")
	delete(m, "level")
	delete(m, "time")
	if len(m) > 0 {
		e.Attrs = escapeMap(m)
	}
	return true
}

func escapeMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[Escape(k)] = escapeValue(v)
	}
	return out
}

func escapeValue(v any) any {
	switch v := v.(type) {
	case string:
		return Escape(v)
	case map[string]any:
		return escapeMap(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = escapeValue(x)
		}
		return out
	default:
		return v
	}
}

// Handler is an slog.Handler that writes structured events to a Journal.
// The attribute "sandbox", if present at the top level, fills the entry's
// Sandbox field; all string values are escaped.
type Handler struct {
	j         *Journal
	component string
	level     slog.Leveler
	attrs     []slog.Attr // accumulated by WithAttrs, already inside groups
	groups    []string
}

// NewHandler returns a handler recording events of component at level and
// above (nil means Info).
func NewHandler(j *Journal, component string, level slog.Leveler) *Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{j: j, component: component, level: level}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	e := Entry{Component: h.component, Stream: StreamEvent, Level: r.Level.String(), Msg: Escape(r.Message)}
	attrs := make([]slog.Attr, 0, len(h.attrs)+r.NumAttrs())
	attrs = append(attrs, h.attrs...)
	var own []slog.Attr
	r.Attrs(func(a slog.Attr) bool { own = append(own, a); return true })
	attrs = append(attrs, wrapGroups(h.groups, own)...)
	m := map[string]any{}
	for _, a := range attrs {
		addAttr(m, a)
	}
	if s, ok := m["sandbox"].(string); ok {
		e.Sandbox = s
		delete(m, "sandbox")
	}
	if c, ok := m["component"].(string); ok && c != "" {
		e.Component = c
		delete(m, "component")
	}
	if len(m) > 0 {
		e.Attrs = m
	}
	return h.j.Write(e)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), wrapGroups(h.groups, as)...)
	return &h2
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(append([]string(nil), h.groups...), name)
	return &h2
}

func wrapGroups(groups []string, as []slog.Attr) []slog.Attr {
	if len(groups) == 0 || len(as) == 0 {
		return as
	}
	for i := len(groups) - 1; i >= 0; i-- {
		args := make([]any, len(as))
		for k, a := range as {
			args[k] = a
		}
		as = []slog.Attr{slog.Group(groups[i], args...)}
	}
	return as
}

func addAttr(m map[string]any, a slog.Attr) {
	v := a.Value.Resolve()
	if a.Key == "" && v.Kind() != slog.KindGroup {
		return
	}
	key := Escape(a.Key)
	switch v.Kind() {
	case slog.KindGroup:
		if a.Key == "" { // inline group
			for _, g := range v.Group() {
				addAttr(m, g)
			}
			return
		}
		sub, _ := m[key].(map[string]any)
		if sub == nil {
			sub = map[string]any{}
		}
		for _, g := range v.Group() {
			addAttr(sub, g)
		}
		m[key] = sub
	case slog.KindString:
		m[key] = Escape(v.String())
	case slog.KindDuration:
		m[key] = v.Duration().String()
	case slog.KindTime:
		m[key] = v.Time().UTC().Format(time.RFC3339Nano)
	case slog.KindInt64:
		m[key] = v.Int64()
	case slog.KindUint64:
		m[key] = v.Uint64()
	case slog.KindFloat64:
		m[key] = v.Float64()
	case slog.KindBool:
		m[key] = v.Bool()
	default:
		if err, ok := v.Any().(error); ok {
			m[key] = Escape(err.Error())
			return
		}
		if s, ok := v.Any().(fmt.Stringer); ok {
			m[key] = Escape(s.String())
			return
		}
		m[key] = Escape(fmt.Sprint(v.Any()))
	}
}
