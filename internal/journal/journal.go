// Package journal is the stack's single, time-ordered JSON-lines log: every
// component's and sandbox's output and every structured event, in one
// directory of size-rotated files, plus a reader that filters and follows it.
//
// Only the supervisor writes the journal; children's output reaches it
// through pipes (see LineWriter) and structured events through an slog
// handler (see Handler). Text that came from a child is escaped before it is
// stored, so no control character or ANSI sequence is ever written raw.
//
// Files are named journal-NNNNNNNN.jsonl with a sequence number that only
// grows; the highest number is the file being written. Rotation starts the
// next number and deletes the oldest files beyond the retention count, so a
// reader never has to deal with renames.
package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stream names used in Entry.Stream.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	StreamEvent  = "event"
)

// Entry is one journal line.
type Entry struct {
	// Time is when the supervisor recorded the line (UTC). Entries in the
	// journal are in non-decreasing Time order.
	Time time.Time `json:"time"`
	// Component is the process the line came from: "supervisor", "router",
	// "policy", "gateway" or "sandbox".
	Component string `json:"component"`
	// Sandbox names the sandbox the line concerns, if any.
	Sandbox string `json:"sandbox,omitempty"`
	// Stream is stdout, stderr or event.
	Stream string `json:"stream"`
	// Level is the slog level of a structured event ("INFO", "ERROR", ...).
	Level string `json:"level,omitempty"`
	// Msg is the text. For output of a child it is already escaped.
	Msg string `json:"msg"`
	// Attrs holds the structured attributes of an event.
	Attrs map[string]any `json:"attrs,omitempty"`
}

// Options tune a Journal. Zero values pick the defaults.
type Options struct {
	// MaxFileSize is the size at which the current file is rotated
	// (default 16 MiB).
	MaxFileSize int64
	// MaxFiles is how many files are kept, the current one included
	// (default 8).
	MaxFiles int
	// Now is the clock (default time.Now); tests replace it.
	Now func() time.Time
}

const (
	defaultMaxFileSize = 16 << 20
	defaultMaxFiles    = 8
	// MaxMsgBytes bounds one entry's message; longer lines are split by
	// LineWriter and truncated by Write.
	MaxMsgBytes = 16 << 10
	filePrefix  = "journal-"
	fileSuffix  = ".jsonl"
)

// Journal appends entries to the journal directory. It is safe for
// concurrent use; entries are written whole, one write per line, in the order
// their times were taken.
type Journal struct {
	dir  string
	opts Options

	mu   sync.Mutex
	f    *os.File
	seq  uint64
	size int64
	last time.Time
	err  error // first write error, reported by Err and Close
}

// Open opens (creating if needed, mode 0700) the journal directory dir and
// continues the newest file in it.
func Open(dir string, opts Options) (*Journal, error) {
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = defaultMaxFileSize
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = defaultMaxFiles
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create journal directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("restrict journal directory %s: %w", dir, err)
	}
	files, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	j := &Journal{dir: dir, opts: opts, seq: 1}
	if len(files) > 0 {
		j.seq = files[len(files)-1].seq
	}
	if err := j.openCurrent(); err != nil {
		return nil, err
	}
	if j.size >= opts.MaxFileSize {
		if err := j.rotate(); err != nil {
			j.f.Close()
			return nil, err
		}
	}
	return j, nil
}

// Dir returns the journal directory.
func (j *Journal) Dir() string { return j.dir }

func (j *Journal) openCurrent() error {
	name := filepath.Join(j.dir, fileName(j.seq))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open journal file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat journal file %s: %w", name, err)
	}
	j.f, j.size = f, st.Size()
	return nil
}

// rotate starts the next file and drops the oldest ones. Called with mu held.
func (j *Journal) rotate() error {
	if err := j.f.Close(); err != nil {
		return fmt.Errorf("close journal file: %w", err)
	}
	j.seq++
	if err := j.openCurrent(); err != nil {
		return err
	}
	files, err := listFiles(j.dir)
	if err != nil {
		return err
	}
	for len(files) > j.opts.MaxFiles {
		if err := os.Remove(filepath.Join(j.dir, files[0].name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove old journal file: %w", err)
		}
		files = files[1:]
	}
	return nil
}

// Write appends e, setting its Time. Messages longer than MaxMsgBytes are
// truncated (LineWriter splits them instead). A Journal that failed to write
// keeps trying; the first error is returned by Err.
func (j *Journal) Write(e Entry) error {
	if len(e.Msg) > MaxMsgBytes {
		e.Msg = truncateUTF8(e.Msg, MaxMsgBytes) + "…[truncated]"
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("journal is closed")
	}
	now := j.opts.Now().UTC()
	if now.Before(j.last) { // the wall clock stepped back: keep the file ordered
		now = j.last
	}
	j.last = now
	e.Time = now
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode journal entry: %w", err)
	}
	line = append(line, '\n')
	if j.size > 0 && j.size+int64(len(line)) > j.opts.MaxFileSize {
		if err := j.rotate(); err != nil {
			j.noteErr(err)
			return err
		}
	}
	n, err := j.f.Write(line)
	j.size += int64(n)
	if err != nil {
		err = fmt.Errorf("write journal: %w", err)
		j.noteErr(err)
		return err
	}
	return nil
}

func (j *Journal) noteErr(err error) {
	if j.err == nil {
		j.err = err
	}
}

// Err returns the first write error, if any.
func (j *Journal) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// Close flushes and closes the current file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	if err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	return j.err
}

func fileName(seq uint64) string { return fmt.Sprintf("%s%08d%s", filePrefix, seq, fileSuffix) }

type journalFile struct {
	name string
	seq  uint64
}

// listFiles returns the journal files in dir, oldest first.
func listFiles(dir string) ([]journalFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list journal directory: %w", err)
	}
	var out []journalFile
	for _, de := range ents {
		n := de.Name()
		if !strings.HasPrefix(n, filePrefix) || !strings.HasSuffix(n, fileSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, filePrefix), fileSuffix), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, journalFile{name: n, seq: seq})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out, nil
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}
