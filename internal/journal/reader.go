package journal

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Filter selects entries. Zero fields match everything.
type Filter struct {
	Component string
	Sandbox   string
	Since     time.Time
}

// Match reports whether e passes the filter.
func (f Filter) Match(e Entry) bool {
	if f.Component != "" && e.Component != f.Component {
		return false
	}
	if f.Sandbox != "" && e.Sandbox != f.Sandbox {
		return false
	}
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	return true
}

// ReadOptions control Read.
type ReadOptions struct {
	Filter Filter
	// Follow keeps reading as the journal grows and rotates, until ctx ends.
	Follow bool
	// Poll is how often a following reader looks for new data (default 200ms).
	Poll time.Duration
}

// Read calls fn for every entry in the journal directory dir that matches
// opts.Filter, oldest first. With opts.Follow it then waits for new entries,
// following rotation, until ctx is done (and then returns nil). An error
// from fn stops the read and is returned.
func Read(ctx context.Context, dir string, opts ReadOptions, fn func(Entry) error) error {
	if opts.Poll <= 0 {
		opts.Poll = 200 * time.Millisecond
	}
	var seq uint64 // the last file read; 0 = none yet
	for {
		next, ok, err := nextFile(dir, seq)
		if err != nil {
			return err
		}
		if !ok {
			if !opts.Follow {
				return nil
			}
			if !sleep(ctx, opts.Poll) {
				return nil
			}
			continue
		}
		seq = next.seq
		f, err := os.Open(filepath.Join(dir, next.name))
		if errors.Is(err, os.ErrNotExist) { // removed by retention meanwhile
			continue
		}
		if err != nil {
			return fmt.Errorf("open journal file: %w", err)
		}
		done, err := readFile(ctx, dir, f, seq, opts, fn)
		f.Close()
		if err != nil || done {
			return err
		}
	}
}

// nextFile returns the oldest journal file with a sequence number above seq.
func nextFile(dir string, seq uint64) (journalFile, bool, error) {
	files, err := listFiles(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return journalFile{}, false, nil
		}
		return journalFile{}, false, err
	}
	for _, f := range files {
		if f.seq > seq {
			return f, true, nil
		}
	}
	return journalFile{}, false, nil
}

// readFile reads f to its end. When a newer file exists, f is final: it
// drains f and returns to let Read move on. Otherwise it stops (not
// following) or waits for more data. done means Read must return.
func readFile(ctx context.Context, dir string, f *os.File, seq uint64, opts ReadOptions, fn func(Entry) error) (done bool, err error) {
	r := bufio.NewReaderSize(f, 64<<10)
	var partial []byte
	final := false
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			line = append(partial, line...)
			partial = nil
			var e Entry
			if jerr := json.Unmarshal(line, &e); jerr != nil {
				continue // a torn or foreign line; entries around it are still good
			}
			if opts.Filter.Match(e) {
				if err := fn(e); err != nil {
					return true, err
				}
			}
			continue
		}
		partial = append(partial, line...)
		if err != nil && !errors.Is(err, io.EOF) {
			return true, fmt.Errorf("read journal file %s: %w", f.Name(), err)
		}
		// At the end of what has been written so far.
		if final {
			return false, nil
		}
		_, newer, lerr := nextFile(dir, seq)
		if lerr != nil {
			return true, lerr
		}
		if newer {
			// The writer finished this file before it created the next one:
			// read what is left once more, then move on.
			final = true
			continue
		}
		if !opts.Follow {
			return true, nil
		}
		if !sleep(ctx, opts.Poll) {
			return true, nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// FormatText renders e as one line for a human: time, component, sandbox,
// stream or level, message and attributes. Every field is escaped, so the
// line holds no control character whatever the journal contains.
func FormatText(e Entry) string {
	var b []byte
	b = e.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, ' ')
	b = append(b, Escape(e.Component)...)
	if e.Sandbox != "" {
		b = append(b, '[')
		b = append(b, Escape(e.Sandbox)...)
		b = append(b, ']')
	}
	b = append(b, ' ')
	if e.Stream == StreamEvent && e.Level != "" {
		b = append(b, Escape(e.Level)...)
	} else {
		b = append(b, Escape(e.Stream)...)
	}
	b = append(b, ": "...)
	b = append(b, Escape(e.Msg)...)
	for _, k := range sortedKeys(e.Attrs) {
		b = append(b, ' ')
		b = append(b, Escape(k)...)
		b = append(b, '=')
		v, err := json.Marshal(e.Attrs[k])
		if err != nil {
			v = []byte(fmt.Sprint(e.Attrs[k]))
		}
		if s, ok := e.Attrs[k].(string); ok && !strings.ContainsAny(s, " \"=") && s != "" {
			v = []byte(s)
		}
		b = append(b, Escape(string(v))...)
	}
	return string(b)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
