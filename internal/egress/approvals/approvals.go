// Package approvals is the policy engine's SQLite store of denial events
// and operator grants: denials deduplicated by (sandbox, host, port) into a
// bounded queue, and the host/preset grants that approvals and `policy
// allow|add` add to a sandbox's policy. It stores; it decides nothing.
package approvals

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/time/rate"
	_ "modernc.org/sqlite" // driver "sqlite"
)

// schemaVersion is stored in PRAGMA user_version.
const schemaVersion = 1

// Entry states.
const (
	StatePending  = "pending"
	StateRejected = "rejected"
)

// Grant kinds and modes.
const (
	KindHost   = "host"
	KindPreset = "preset"

	ModeAlways = "always"
	ModeUntil  = "until"
)

// ErrNotFound is returned for an unknown id.
var ErrNotFound = errors.New("not found")

// Denial is one denied attempt to record.
type Denial struct {
	Sandbox string
	Host    string
	Port    int
	Method  string
	Rule    string
	Reason  string
	Time    time.Time
}

// Entry is a deduplicated denial in the queue.
type Entry struct {
	ID        string    `json:"id"`
	Sandbox   string    `json:"sandbox"`
	Host      string    `json:"host"`
	Port      int       `json:"port"`
	Method    string    `json:"method"`
	Rule      string    `json:"rule"`
	Reason    string    `json:"reason"`
	Count     int64     `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	State     string    `json:"state"`
	// Flooding marks the aggregated entry counting denials that were not
	// queued because the sandbox exceeded its cap or rate.
	Flooding bool `json:"flooding,omitempty"`
}

// Grant is an operator decision that extends a sandbox's policy.
type Grant struct {
	ID      string    `json:"id"`
	Sandbox string    `json:"sandbox"`
	Kind    string    `json:"kind"` // KindHost or KindPreset
	Host    string    `json:"host,omitempty"`
	Port    int       `json:"port,omitempty"`
	Preset  string    `json:"preset,omitempty"`
	Mode    string    `json:"mode"`              // ModeAlways or ModeUntil
	Expires time.Time `json:"expires,omitempty"` // for ModeUntil
	Created time.Time `json:"created"`
	// Source is the queue entry the grant approved, if any.
	Source string `json:"source,omitempty"`
}

// Options bound the queue. Zero values pick the defaults.
type Options struct {
	// MaxPerSandbox caps a sandbox's queued (pending or rejected) entries
	// (default 200); beyond it denials only count in the flooding entry.
	MaxPerSandbox int
	// NewRate and NewBurst limit how fast a sandbox adds new entries
	// (default 1/s, burst 30).
	NewRate  rate.Limit
	NewBurst int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Store is the database. It is safe for concurrent use.
type Store struct {
	db   *sql.DB
	path string
	opts Options

	mu        sync.Mutex
	limiters  map[string]*rate.Limiter
	flood     map[string]int64 // uncommitted flooding counts by sandbox
	lastFlush time.Time
}

// Open opens (creating if needed) the database at path, checks its
// integrity and schema version, and refuses a file it cannot fully read.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if opts.MaxPerSandbox <= 0 {
		opts.MaxPerSandbox = 200
	}
	if opts.NewRate <= 0 {
		opts.NewRate = 1
	}
	if opts.NewBurst <= 0 {
		opts.NewBurst = 30
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, refuse(path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, refuse(path, err)
	}
	f.Close()
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, refuse(path, err)
	}
	db.SetMaxOpenConns(1)
	s := &Store{db: db, path: path, opts: opts, limiters: map[string]*rate.Limiter{}, flood: map[string]int64{}, lastFlush: opts.Now()}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, refuse(path, err)
	}
	return s, nil
}

func refuse(path string, err error) error {
	return fmt.Errorf("approvals database %s is unreadable or corrupt (%w); refusing to start without its approvals: restore it from a backup, or move it aside to start with none", path, err)
}

func (s *Store) init(ctx context.Context) error {
	var check string
	if err := s.db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check); err != nil {
		return err
	}
	if check != "ok" {
		return fmt.Errorf("integrity check: %s", check)
	}
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this build's %d", v, schemaVersion)
	}
	if v == schemaVersion {
		return nil
	}
	_, err := s.db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS queue (
	id TEXT PRIMARY KEY,
	sandbox TEXT NOT NULL,
	host TEXT NOT NULL,
	port INTEGER NOT NULL,
	method TEXT NOT NULL,
	rule TEXT NOT NULL,
	reason TEXT NOT NULL,
	count INTEGER NOT NULL,
	first_seen INTEGER NOT NULL,
	last_seen INTEGER NOT NULL,
	state TEXT NOT NULL,
	flooding INTEGER NOT NULL DEFAULT 0,
	UNIQUE (sandbox, host, port)
);
CREATE TABLE IF NOT EXISTS grants (
	id TEXT PRIMARY KEY,
	sandbox TEXT NOT NULL,
	kind TEXT NOT NULL,
	host TEXT NOT NULL,
	port INTEGER NOT NULL,
	preset TEXT NOT NULL,
	mode TEXT NOT NULL,
	expires INTEGER NOT NULL,
	created INTEGER NOT NULL,
	source TEXT NOT NULL
);
PRAGMA user_version = 1;`)
	return err
}

// Close flushes pending counts and closes the database.
func (s *Store) Close() error {
	s.flushFlood(context.Background(), true)
	return s.db.Close()
}

// NewID returns a fresh random id (10 lower-case base32 characters).
func NewID() string {
	const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
	var b [10]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

func ms(t time.Time) int64 { return t.UnixMilli() }
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// RecordDenial records one denied attempt and returns the id of its queue
// entry, or "" when it was only counted in the sandbox's flooding entry.
func (s *Store) RecordDenial(ctx context.Context, d Denial) (string, error) {
	if d.Time.IsZero() {
		d.Time = s.opts.Now()
	}
	var id string
	err := s.db.QueryRowContext(ctx,
		`UPDATE queue SET count = count + 1, last_seen = ? WHERE sandbox = ? AND host = ? AND port = ? AND flooding = 0 RETURNING id`,
		ms(d.Time), d.Sandbox, d.Host, d.Port).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("record denial: %w", err)
	}
	if !s.admit(d.Sandbox) {
		s.countFlood(ctx, d.Sandbox)
		return "", nil
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM queue WHERE sandbox = ? AND flooding = 0`, d.Sandbox).Scan(&n); err != nil {
		return "", fmt.Errorf("record denial: %w", err)
	}
	if n >= s.opts.MaxPerSandbox {
		s.countFlood(ctx, d.Sandbox)
		return "", nil
	}
	id = NewID()
	_, err = s.db.ExecContext(ctx,
		`INSERT INTO queue (id, sandbox, host, port, method, rule, reason, count, first_seen, last_seen, state) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)`,
		id, d.Sandbox, d.Host, d.Port, d.Method, d.Rule, d.Reason, ms(d.Time), ms(d.Time), StatePending)
	if err != nil {
		return "", fmt.Errorf("record denial: %w", err)
	}
	return id, nil
}

func (s *Store) admit(sandbox string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limiters[sandbox]
	if l == nil {
		l = rate.NewLimiter(s.opts.NewRate, s.opts.NewBurst)
		s.limiters[sandbox] = l
	}
	return l.AllowN(s.opts.Now(), 1)
}

func (s *Store) countFlood(ctx context.Context, sandbox string) {
	s.mu.Lock()
	s.flood[sandbox]++
	s.mu.Unlock()
	s.flushFlood(ctx, false)
}

// flushFlood writes the in-memory flooding counts at most once a second
// (always when force), so a flood costs no database write per denial.
func (s *Store) flushFlood(ctx context.Context, force bool) error {
	s.mu.Lock()
	now := s.opts.Now()
	if len(s.flood) == 0 || (!force && now.Sub(s.lastFlush) < time.Second) {
		s.mu.Unlock()
		return nil
	}
	counts := s.flood
	s.flood = map[string]int64{}
	s.lastFlush = now
	s.mu.Unlock()
	var errs []error
	for sb, n := range counts {
		_, err := s.db.ExecContext(ctx, `
INSERT INTO queue (id, sandbox, host, port, method, rule, reason, count, first_seen, last_seen, state, flooding)
VALUES (?, ?, '', 0, '', '', 'flooding', ?, ?, ?, ?, 1)
ON CONFLICT (sandbox, host, port) DO UPDATE SET count = count + excluded.count, last_seen = excluded.last_seen, state = excluded.state`,
			NewID(), sb, n, ms(now), ms(now), StatePending)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("record flooding count: %w", err)
	}
	return nil
}

const entryCols = `id, sandbox, host, port, method, rule, reason, count, first_seen, last_seen, state, flooding`

func scanEntry(sc interface{ Scan(...any) error }) (Entry, error) {
	var e Entry
	var first, last int64
	var flood int
	err := sc.Scan(&e.ID, &e.Sandbox, &e.Host, &e.Port, &e.Method, &e.Rule, &e.Reason, &e.Count, &first, &last, &e.State, &flood)
	e.FirstSeen, e.LastSeen, e.Flooding = fromMS(first), fromMS(last), flood != 0
	return e, err
}

// Queue returns the queue entries in state (all states when ""), oldest first.
func (s *Store) Queue(ctx context.Context, state string) ([]Entry, error) {
	if err := s.flushFlood(ctx, true); err != nil {
		return nil, err
	}
	q := `SELECT ` + entryCols + ` FROM queue`
	var args []any
	if state != "" {
		q += ` WHERE state = ?`
		args = append(args, state)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY flooding, first_seen, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("list queue: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Entry returns one queue entry.
func (s *Store) Entry(ctx context.Context, id string) (Entry, error) {
	if err := s.flushFlood(ctx, true); err != nil {
		return Entry{}, err
	}
	e, err := scanEntry(s.db.QueryRowContext(ctx, `SELECT `+entryCols+` FROM queue WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, fmt.Errorf("queue entry %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("queue entry %q: %w", id, err)
	}
	return e, nil
}

// Reject marks a queue entry rejected; later denials of the same
// destination only count on it.
func (s *Store) Reject(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE queue SET state = ? WHERE id = ?`, StateRejected, id)
	if err != nil {
		return fmt.Errorf("reject %q: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("queue entry %q: %w", id, ErrNotFound)
	}
	return nil
}

// RemoveEntry deletes a queue entry (after it was approved).
func (s *Store) RemoveEntry(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM queue WHERE id = ?`, id); err != nil {
		return fmt.Errorf("remove queue entry %q: %w", id, err)
	}
	return nil
}

// AddGrant stores a grant (and, when it approves a queue entry, removes
// that entry) in one transaction.
func (s *Store) AddGrant(ctx context.Context, g Grant) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("add grant: %w", err)
	}
	defer tx.Rollback()
	var exp int64
	if !g.Expires.IsZero() {
		exp = ms(g.Expires)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, sandbox, kind, host, port, preset, mode, expires, created, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.Sandbox, g.Kind, g.Host, g.Port, g.Preset, g.Mode, exp, ms(g.Created), g.Source); err != nil {
		return fmt.Errorf("add grant: %w", err)
	}
	if g.Source != "" {
		if _, err := tx.ExecContext(ctx, `DELETE FROM queue WHERE id = ?`, g.Source); err != nil {
			return fmt.Errorf("add grant: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("add grant: %w", err)
	}
	return nil
}

// Grants returns every stored grant, oldest first.
func (s *Store) Grants(ctx context.Context) ([]Grant, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, sandbox, kind, host, port, preset, mode, expires, created, source FROM grants ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		var g Grant
		var exp, created int64
		if err := rows.Scan(&g.ID, &g.Sandbox, &g.Kind, &g.Host, &g.Port, &g.Preset, &g.Mode, &exp, &created, &g.Source); err != nil {
			return nil, fmt.Errorf("list grants: %w", err)
		}
		g.Expires, g.Created = fromMS(exp), fromMS(created)
		switch {
		case g.Kind != KindHost && g.Kind != KindPreset:
			return nil, fmt.Errorf("grant %q: unknown kind %q", g.ID, g.Kind)
		case g.Mode != ModeAlways && g.Mode != ModeUntil:
			return nil, fmt.Errorf("grant %q: unknown mode %q", g.ID, g.Mode)
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// RemoveGrant deletes a grant.
func (s *Store) RemoveGrant(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM grants WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("remove grant %q: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("grant %q: %w", id, ErrNotFound)
	}
	return nil
}

// ForgetSandbox deletes every grant and queue entry of sandbox (it was
// deleted: a sandbox created later under the same name starts with none).
// It returns how many grants and entries it removed.
func (s *Store) ForgetSandbox(ctx context.Context, sandbox string) (grants, entries int64, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("forget sandbox %q: %w", sandbox, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM grants WHERE sandbox = ?`, sandbox)
	if err != nil {
		return 0, 0, fmt.Errorf("forget sandbox %q: grants: %w", sandbox, err)
	}
	grants, _ = res.RowsAffected()
	if res, err = tx.ExecContext(ctx, `DELETE FROM queue WHERE sandbox = ?`, sandbox); err != nil {
		return 0, 0, fmt.Errorf("forget sandbox %q: queue: %w", sandbox, err)
	}
	entries, _ = res.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("forget sandbox %q: %w", sandbox, err)
	}
	return grants, entries, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// IsNotFound reports whether err is an unknown-id error.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
