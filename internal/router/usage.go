package router

import (
	"bytes"
	"encoding/json"
	"sync"
)

// meter extracts token usage from a provider response as it passes through:
// a whole JSON body, or the "data:" lines of an SSE stream (OpenAI's final
// usage chunk, Responses' response.completed, Anthropic's message_start and
// message_delta).
type meter struct {
	dialect dialect
	sse     bool
	in, out int64
	seen    bool

	buf     []byte  // non-SSE body, or the current partial SSE line
	pooled  *[]byte // buf's origin in meterBufs, returned by finish
	dropped bool    // buf overflowed; usage unknown
}

// meterBufs recycles the buffers that hold non-streamed response bodies
// until their usage is parsed.
var meterBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledMeterBuf bounds the buffers kept in meterBufs.
const maxPooledMeterBuf = 256 << 10

// maxMeterBuffer bounds what the meter keeps: a body or line beyond it is
// not parsed (usage then falls back to the estimate).
const maxMeterBuffer = 8 << 20

func (m *meter) Write(p []byte) {
	if m.dropped {
		return
	}
	if !m.sse {
		if len(m.buf)+len(p) > maxMeterBuffer {
			m.dropped = true
			m.release()
			return
		}
		if m.pooled == nil && m.buf == nil {
			m.pooled = meterBufs.Get().(*[]byte)
			m.buf = (*m.pooled)[:0]
		}
		m.buf = append(m.buf, p...)
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(m.buf)+len(p) > maxMeterBuffer {
				m.buf = m.buf[:0]
				m.dropped = true
				return
			}
			m.buf = append(m.buf, p...)
			return
		}
		var line []byte
		if len(m.buf) > 0 {
			m.buf = append(m.buf, p[:i]...)
			line = m.buf
		} else {
			line = p[:i]
		}
		m.line(line)
		m.buf = m.buf[:0]
		p = p[i+1:]
	}
}

func (m *meter) line(l []byte) {
	l = bytes.TrimSuffix(l, []byte("\r"))
	if !bytes.HasPrefix(l, []byte("data:")) || !bytes.Contains(l, []byte(`"usage"`)) {
		return
	}
	m.parse(bytes.TrimSpace(l[len("data:"):]))
}

// finish parses a buffered non-SSE body. Every dialect reports usage in a
// top-level "usage" object; only that object is decoded.
func (m *meter) finish() {
	if !m.sse && !m.dropped && len(m.buf) > 0 {
		var buf [32]field
		if fields, err := topFields(m.buf, buf[:0]); err == nil {
			if s, ok := fields.get("usage"); ok {
				var u usageFields
				if json.Unmarshal(m.buf[s.start:s.end], &u) == nil {
					m.add(&u)
				}
			}
		}
	}
	m.release()
}

// release gives the body buffer back to the pool.
func (m *meter) release() {
	if m.pooled != nil && cap(m.buf) <= maxPooledMeterBuf {
		*m.pooled = m.buf[:0]
		meterBufs.Put(m.pooled)
	}
	m.buf, m.pooled = nil, nil
}

type usageFields struct {
	PromptTokens        *int64 `json:"prompt_tokens"`
	CompletionTokens    *int64 `json:"completion_tokens"`
	InputTokens         *int64 `json:"input_tokens"`
	OutputTokens        *int64 `json:"output_tokens"`
	CacheCreationTokens *int64 `json:"cache_creation_input_tokens"`
	CacheReadTokens     *int64 `json:"cache_read_input_tokens"`
}

type usageEnvelope struct {
	Usage   *usageFields `json:"usage"`
	Message *struct {
		Usage *usageFields `json:"usage"`
	} `json:"message"`
	Response *struct {
		Usage *usageFields `json:"usage"`
	} `json:"response"`
}

func (m *meter) parse(b []byte) {
	var env usageEnvelope
	if json.Unmarshal(b, &env) != nil {
		return
	}
	for _, u := range []*usageFields{env.Usage, msgUsage(env), respUsage(env)} {
		if u != nil {
			m.add(u)
		}
	}
}

// add takes the larger of the seen and reported counts (streams report
// cumulative usage, Anthropic in two events).
func (m *meter) add(u *usageFields) {
	var in, out int64
	have := false
	if u.PromptTokens != nil {
		in, have = *u.PromptTokens, true
	}
	if u.InputTokens != nil {
		in, have = *u.InputTokens, true
	}
	if m.dialect == dialectAnthropic {
		if u.CacheCreationTokens != nil {
			in += *u.CacheCreationTokens
		}
		if u.CacheReadTokens != nil {
			in += *u.CacheReadTokens
		}
	}
	if u.CompletionTokens != nil {
		out, have = *u.CompletionTokens, true
	}
	if u.OutputTokens != nil {
		out, have = *u.OutputTokens, true
	}
	if have {
		m.seen = true
		m.in = max(m.in, in)
		m.out = max(m.out, out)
	}
}

func msgUsage(e usageEnvelope) *usageFields {
	if e.Message == nil {
		return nil
	}
	return e.Message.Usage
}

func respUsage(e usageEnvelope) *usageFields {
	if e.Response == nil {
		return nil
	}
	return e.Response.Usage
}
