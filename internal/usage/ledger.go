// Package usage is the privacy router's ledger of model requests: one row
// per request (sandbox, route, provider, model, tokens, cost, latency,
// status) in an embedded SQLite database, with the spend and summary
// queries that budgets and `clawcage usage` need. It records and answers;
// it does not price requests or enforce limits.
package usage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/clawcage/clawcage/internal/netyield"
)

// Record is one completed (or failed) request through the router.
// String fields that came from the sandbox (Route, Model, Error) are stored
// as data; the ledger never logs them.
type Record struct {
	Time      time.Time
	Sandbox   string
	Route     string
	Provider  string
	Model     string
	TokensIn  int64
	TokensOut int64
	CostUSD   float64
	// Latency is the whole request, first byte in to last byte out.
	Latency time.Duration
	// TTFB is the time to the first response byte sent to the sandbox.
	TTFB time.Duration
	// Status is the HTTP status returned to the sandbox.
	Status int
	// Attempts counts upstream attempts, fallbacks and retries included.
	Attempts int
	// Error is a short reason when the request failed; never a secret.
	Error string
}

// Filter selects ledger rows. Zero values select everything.
type Filter struct {
	// Sandbox, when set, selects one sandbox.
	Sandbox string
	// Since, when set, selects rows at or after this time.
	Since time.Time
}

// SummaryRow aggregates the requests of one sandbox/route/provider/model.
type SummaryRow struct {
	Sandbox    string        `json:"sandbox"`
	Route      string        `json:"route"`
	Provider   string        `json:"provider"`
	Model      string        `json:"model"`
	Requests   int64         `json:"requests"`
	TokensIn   int64         `json:"tokens_in"`
	TokensOut  int64         `json:"tokens_out"`
	CostUSD    float64       `json:"cost_usd"`
	Errors     int64         `json:"errors"`
	P50Latency time.Duration `json:"p50_latency_ns"`
	AvgLatency time.Duration `json:"avg_latency_ns"`
	AvgTTFB    time.Duration `json:"avg_ttfb_ns"`
	First      time.Time     `json:"first"`
	Last       time.Time     `json:"last"`
}

// maxField bounds any string stored, so a sandbox cannot grow the ledger
// with one huge model name.
const maxField = 256

// migrations[i] takes the schema from version i to i+1 (PRAGMA user_version).
var migrations = []string{
	// 1: the request table and the index Spend and Summary use.
	`CREATE TABLE requests (
		id         INTEGER PRIMARY KEY,
		time_ns    INTEGER NOT NULL,
		sandbox    TEXT    NOT NULL,
		route      TEXT    NOT NULL,
		provider   TEXT    NOT NULL,
		model      TEXT    NOT NULL,
		tokens_in  INTEGER NOT NULL,
		tokens_out INTEGER NOT NULL,
		cost_usd   REAL    NOT NULL,
		latency_ns INTEGER NOT NULL,
		ttfb_ns    INTEGER NOT NULL,
		status     INTEGER NOT NULL,
		attempts   INTEGER NOT NULL,
		error      TEXT    NOT NULL
	);
	CREATE INDEX requests_sandbox_time ON requests (sandbox, time_ns, cost_usd);
	CREATE INDEX requests_time ON requests (time_ns);`,
}

const (
	insertHead = `INSERT INTO requests (time_ns, sandbox, route, provider, model, tokens_in, tokens_out,
		cost_usd, latency_ns, ttfb_ns, status, attempts, error) VALUES `
	rowPlaceholders = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
)

// Ledger is an open usage database. It is safe for concurrent use.
type Ledger struct {
	db     *sql.DB
	path   string
	insert *sql.Stmt

	mu    sync.Mutex
	multi map[int]*sql.Stmt // rows per INSERT → prepared multi-row INSERT

	yieldOnce sync.Once
	yielder   *netyield.Yielder // made by the first batch; nil: runtime.Gosched
}

// rowsPerInsert is how many rows one multi-row INSERT of RecordBatch
// carries: 13 columns × 32 rows stays far under SQLite's variable limit,
// and statements of at most this many rows are prepared once and reused.
const rowsPerInsert = 32

// Open opens (creating if needed) the ledger at path, typically
// <state>/router/usage.db, in WAL mode, and migrates its schema. A database
// written by a newer clawcage (higher schema version) is refused.
func Open(path string) (*Ledger, error) {
	q := url.Values{}
	for _, p := range []string{"busy_timeout(5000)", "journal_mode(WAL)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	// Create the file 0600 first: SQLite gives the -wal and -shm files the
	// database file's mode. Rows name sandboxes, routes and models: the
	// router's business only.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open usage ledger %s: %w", path, err)
	}
	f.Close()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open usage ledger %s: %w", path, err)
	}
	l := &Ledger{db: db, path: path, multi: make(map[int]*sql.Stmt)}
	if err := l.migrate(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	l.insert, err = db.Prepare(insertHead + rowPlaceholders)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("usage ledger %s: prepare insert: %w", path, err)
	}
	return l, nil
}

func (l *Ledger) migrate(ctx context.Context) error {
	var mode string
	if err := l.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("usage ledger %s: not a usable SQLite database: %w", l.path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("usage ledger %s: journal mode is %q, want wal", l.path, mode)
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("usage ledger %s: begin migration: %w", l.path, err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("usage ledger %s: read schema version: %w", l.path, err)
	}
	if version > len(migrations) {
		return fmt.Errorf("usage ledger %s: schema version %d is newer than this clawcage understands (%d)", l.path, version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("usage ledger %s: migrate to schema version %d: %w", l.path, i+1, err)
		}
	}
	if version == len(migrations) {
		return nil
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("usage ledger %s: set schema version: %w", l.path, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("usage ledger %s: commit migration: %w", l.path, err)
	}
	return nil
}

func clip(s string) string {
	if len(s) <= maxField {
		return s
	}
	return s[:maxField]
}

// Record appends r. A zero Time means now. The row is committed when Record
// returns, so nothing is lost on Close or a crash of the caller.
func (l *Ledger) Record(ctx context.Context, r Record) error {
	r, err := normalize(r)
	if err != nil {
		return err
	}
	if _, err := l.insert.ExecContext(ctx, args(r)...); err != nil {
		return fmt.Errorf("usage ledger %s: record: %w", l.path, err)
	}
	return nil
}

// RecordBatch appends rs in one transaction: all of them or, on any error
// (including an invalid record), none. It costs about one Record, however
// many rows, so a busy router should batch.
func (l *Ledger) RecordBatch(ctx context.Context, rs []Record) error {
	if len(rs) == 0 {
		return nil
	}
	norm := make([]Record, len(rs))
	for i, r := range rs {
		n, err := normalize(r)
		if err != nil {
			return fmt.Errorf("usage batch record %d: %w", i, err)
		}
		norm[i] = n
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("usage ledger %s: record batch: %w", l.path, err)
	}
	defer tx.Rollback()
	// Multi-row INSERTs: far fewer statement executions than one per row,
	// each statement prepared once per row count.
	vals := make([]any, 0, rowsPerInsert*13)
	for first := true; len(norm) > 0; first = false {
		if !first {
			// Let request goroutines run between statements: on a router
			// with one P a large batch must not hold it for long.
			l.yield()
		}
		chunk := norm[:min(rowsPerInsert, len(norm))]
		norm = norm[len(chunk):]
		stmt, err := l.multiInsert(ctx, len(chunk))
		if err != nil {
			return err
		}
		vals = vals[:0]
		for _, r := range chunk {
			vals = appendArgs(vals, r)
		}
		if _, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, vals...); err != nil {
			return fmt.Errorf("usage ledger %s: record batch: %w", l.path, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("usage ledger %s: record batch: commit: %w", l.path, err)
	}
	return nil
}

// multiInsert returns the prepared INSERT of n rows.
func (l *Ledger) multiInsert(ctx context.Context, n int) (*sql.Stmt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st, ok := l.multi[n]; ok {
		return st, nil
	}
	q := insertHead + strings.Repeat(rowPlaceholders+",", n-1) + rowPlaceholders
	st, err := l.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("usage ledger %s: prepare batch insert: %w", l.path, err)
	}
	l.multi[n] = st
	return st, nil
}

func normalize(r Record) (Record, error) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if r.TokensIn < 0 || r.TokensOut < 0 || r.CostUSD < 0 || r.CostUSD != r.CostUSD {
		return r, fmt.Errorf("usage record: negative or invalid tokens/cost (in %d, out %d, cost %v)", r.TokensIn, r.TokensOut, r.CostUSD)
	}
	return r, nil
}

func args(r Record) []any { return appendArgs(nil, r) }

// appendArgs appends the 13 column values of r. Integers are int64, which
// database/sql passes to the driver without reflection.
func appendArgs(dst []any, r Record) []any {
	return append(dst, r.Time.UnixNano(), clip(r.Sandbox), clip(r.Route), clip(r.Provider), clip(r.Model),
		r.TokensIn, r.TokensOut, r.CostUSD, int64(r.Latency), int64(r.TTFB), int64(r.Status), int64(r.Attempts), clip(r.Error))
}

// Spend is the USD cost recorded for sandbox at or after since.
func (l *Ledger) Spend(ctx context.Context, sandbox string, since time.Time) (float64, error) {
	var total float64
	err := l.db.QueryRowContext(ctx,
		`SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE sandbox = ? AND time_ns >= ?`,
		sandbox, sinceNanos(since)).Scan(&total)
	if err != nil {
		return 0, fmt.Errorf("usage ledger %s: spend of %q: %w", l.path, sandbox, err)
	}
	return total, nil
}

func sinceNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Summary aggregates the rows f selects per sandbox, route, provider and
// model, ordered by those. P50Latency is the lower median.
func (l *Ledger) Summary(ctx context.Context, f Filter) ([]SummaryRow, error) {
	const query = `
WITH f AS (
	SELECT * FROM requests WHERE time_ns >= ?1 AND (?2 = '' OR sandbox = ?2)
), ranked AS (
	SELECT sandbox, route, provider, model, latency_ns,
		ROW_NUMBER() OVER (PARTITION BY sandbox, route, provider, model ORDER BY latency_ns) AS rn,
		COUNT(*)     OVER (PARTITION BY sandbox, route, provider, model) AS n
	FROM f
), p50 AS (
	SELECT sandbox, route, provider, model, latency_ns AS p50 FROM ranked WHERE rn = (n + 1) / 2
)
SELECT f.sandbox, f.route, f.provider, f.model,
	COUNT(*), SUM(f.tokens_in), SUM(f.tokens_out), SUM(f.cost_usd),
	SUM(CASE WHEN f.status >= 400 OR f.status = 0 OR f.error != '' THEN 1 ELSE 0 END),
	MAX(p50.p50), CAST(AVG(f.latency_ns) AS INTEGER), CAST(AVG(f.ttfb_ns) AS INTEGER),
	MIN(f.time_ns), MAX(f.time_ns)
FROM f JOIN p50 USING (sandbox, route, provider, model)
GROUP BY f.sandbox, f.route, f.provider, f.model
ORDER BY f.sandbox, f.route, f.provider, f.model`
	rows, err := l.db.QueryContext(ctx, query, sinceNanos(f.Since), f.Sandbox)
	if err != nil {
		return nil, fmt.Errorf("usage ledger %s: summary: %w", l.path, err)
	}
	defer rows.Close()
	out := []SummaryRow{}
	for rows.Next() {
		var r SummaryRow
		var p50, avg, ttfb, first, last int64
		if err := rows.Scan(&r.Sandbox, &r.Route, &r.Provider, &r.Model, &r.Requests, &r.TokensIn, &r.TokensOut,
			&r.CostUSD, &r.Errors, &p50, &avg, &ttfb, &first, &last); err != nil {
			return nil, fmt.Errorf("usage ledger %s: summary: %w", l.path, err)
		}
		r.P50Latency, r.AvgLatency, r.AvgTTFB = time.Duration(p50), time.Duration(avg), time.Duration(ttfb)
		r.First, r.Last = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage ledger %s: summary: %w", l.path, err)
	}
	return out, nil
}

// Prune deletes the rows recorded before before and returns how many went.
// Budgets look back at most a month: keep at least that much.
func (l *Ledger) Prune(ctx context.Context, before time.Time) (int64, error) {
	res, err := l.db.ExecContext(ctx, `DELETE FROM requests WHERE time_ns < ?`, before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("usage ledger %s: prune: %w", l.path, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// yield gives way to goroutines the network has made ready (package
// netyield; runtime.Gosched would not run them) between the statements of
// a batch.
func (l *Ledger) yield() {
	l.yieldOnce.Do(func() { l.yielder, _ = netyield.New() })
	if l.yielder == nil {
		runtime.Gosched()
		return
	}
	l.yielder.Yield()
}

// Close closes the database. Every Record that returned nil is on disk.
func (l *Ledger) Close() error {
	l.yieldOnce.Do(func() {}) // no Yielder made after this
	if l.yielder != nil {
		l.yielder.Close()
	}
	l.mu.Lock()
	errs := []error{l.insert.Close()}
	for _, st := range l.multi {
		errs = append(errs, st.Close())
	}
	l.multi = nil
	l.mu.Unlock()
	err := errors.Join(append(errs, l.db.Close())...)
	if err != nil {
		return fmt.Errorf("close usage ledger %s: %w", l.path, err)
	}
	return nil
}
