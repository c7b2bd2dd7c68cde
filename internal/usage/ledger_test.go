package usage

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func openTemp(t *testing.T) (*Ledger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "usage db", "usage.db") // a space, to test DSN escaping
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func rec(sandbox, model string, at time.Duration, cost float64, latency time.Duration, status int) Record {
	return Record{Time: t0.Add(at), Sandbox: sandbox, Route: "default", Provider: "anthropic", Model: model,
		TokensIn: 100, TokensOut: 10, CostUSD: cost, Latency: latency, TTFB: latency / 2, Status: status, Attempts: 1}
}

func TestSpend(t *testing.T) {
	l, _ := openTemp(t)
	ctx := context.Background()
	for _, r := range []Record{
		rec("a", "m1", 0, 0.5, time.Millisecond, 200),
		rec("a", "m1", time.Hour, 0.25, time.Millisecond, 200),
		rec("a", "m2", 2*time.Hour, 1, time.Millisecond, 200),
		rec("b", "m1", time.Hour, 7, time.Millisecond, 200),
	} {
		if err := l.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		sandbox string
		since   time.Time
		want    float64
	}{
		{"all of a", "a", time.Time{}, 1.75},
		{"a since the second request", "a", t0.Add(time.Hour), 1.25},
		{"a since after everything", "a", t0.Add(3 * time.Hour), 0},
		{"b is separate from a", "b", time.Time{}, 7},
		{"unknown sandbox spends nothing", "zzz", time.Time{}, 0},
		{"empty sandbox name is not a wildcard", "", time.Time{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.Spend(ctx, tc.sandbox, tc.since)
			if err != nil || math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("Spend = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	l, _ := openTemp(t)
	ctx := context.Background()
	rows := []Record{
		rec("a", "m1", 0, 0.1, 10*time.Millisecond, 200),
		rec("a", "m1", 1*time.Minute, 0.1, 30*time.Millisecond, 200),
		rec("a", "m1", 2*time.Minute, 0.1, 20*time.Millisecond, 429),
		rec("a", "m1", 3*time.Minute, 0, 40*time.Millisecond, 502),
		rec("a", "m2", 0, 1, 5*time.Millisecond, 200),
		rec("b", "m1", 0, 2, 7*time.Millisecond, 200),
	}
	rows[3].Error = "upstream: connection refused"
	for _, r := range rows {
		if err := l.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		filter Filter
		want   []SummaryRow
	}{
		{"everything grouped per sandbox and model", Filter{}, []SummaryRow{
			{Sandbox: "a", Model: "m1", Requests: 4, TokensIn: 400, TokensOut: 40, CostUSD: 0.3, Errors: 2, P50Latency: 20 * time.Millisecond, AvgLatency: 25 * time.Millisecond},
			{Sandbox: "a", Model: "m2", Requests: 1, TokensIn: 100, TokensOut: 10, CostUSD: 1, P50Latency: 5 * time.Millisecond, AvgLatency: 5 * time.Millisecond},
			{Sandbox: "b", Model: "m1", Requests: 1, TokensIn: 100, TokensOut: 10, CostUSD: 2, P50Latency: 7 * time.Millisecond, AvgLatency: 7 * time.Millisecond},
		}},
		{"one sandbox", Filter{Sandbox: "b"}, []SummaryRow{
			{Sandbox: "b", Model: "m1", Requests: 1, TokensIn: 100, TokensOut: 10, CostUSD: 2, P50Latency: 7 * time.Millisecond, AvgLatency: 7 * time.Millisecond},
		}},
		{"since drops older rows and moves the median", Filter{Sandbox: "a", Since: t0.Add(90 * time.Second)}, []SummaryRow{
			{Sandbox: "a", Model: "m1", Requests: 2, TokensIn: 200, TokensOut: 20, CostUSD: 0.1, Errors: 2, P50Latency: 20 * time.Millisecond, AvgLatency: 30 * time.Millisecond},
		}},
		{"nothing selected is an empty list", Filter{Sandbox: "nobody"}, []SummaryRow{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.Summary(ctx, tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || len(got) != len(tc.want) {
				t.Fatalf("Summary = %+v, want %d rows", got, len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Sandbox != w.Sandbox || g.Model != w.Model || g.Route != "default" || g.Provider != "anthropic" ||
					g.Requests != w.Requests || g.TokensIn != w.TokensIn || g.TokensOut != w.TokensOut ||
					math.Abs(g.CostUSD-w.CostUSD) > 1e-9 || g.Errors != w.Errors ||
					g.P50Latency != w.P50Latency || g.AvgLatency != w.AvgLatency || g.AvgTTFB != w.AvgLatency/2 {
					t.Errorf("row %d = %+v\nwant %+v", i, g, w)
				}
			}
		})
	}
}

func TestRecordRejectsAndStoresHostileStrings(t *testing.T) {
	l, _ := openTemp(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		r    Record
	}{
		{"negative tokens", Record{Sandbox: "a", TokensIn: -1}},
		{"negative cost", Record{Sandbox: "a", CostUSD: -0.01}},
		{"NaN cost", Record{Sandbox: "a", CostUSD: math.NaN()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := l.Record(ctx, tc.r); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// SQL metacharacters, escapes and oversize values are stored as data.
	hostile := "x'); DROP TABLE requests;--\x1b[31m" + strings.Repeat("A", 1000)
	if err := l.Record(ctx, Record{Sandbox: "a", Route: hostile, Model: hostile, Status: 200}); err != nil {
		t.Fatal(err)
	}
	got, err := l.Summary(ctx, Filter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("Summary = %v, %v", got, err)
	}
	if got[0].Route != hostile[:maxField] || got[0].Model != hostile[:maxField] {
		t.Fatalf("stored route %q not the clipped original", got[0].Route)
	}
	if got[0].First.IsZero() || time.Since(got[0].First) > time.Minute {
		t.Fatalf("zero Time not replaced by now: %v", got[0].First)
	}
}

func TestPersistsAcrossRestart(t *testing.T) {
	l, path := openTemp(t)
	ctx := context.Background()
	for i := range 50 {
		if err := l.Record(ctx, rec("a", "m1", time.Duration(i)*time.Second, 0.01, time.Millisecond, 200)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	got, err := l2.Summary(ctx, Filter{})
	if err != nil || len(got) != 1 || got[0].Requests != 50 {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	spend, _ := l2.Spend(ctx, "a", time.Time{})
	if math.Abs(spend-0.5) > 1e-9 {
		t.Fatalf("spend after reopen = %v", spend)
	}
}

func TestSchemaVersioning(t *testing.T) {
	l, path := openTemp(t)
	l.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("user_version = %d, %v; want %d", v, err, len(migrations))
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "schema version 99 is newer") {
		t.Fatalf("Open of a newer schema = %v", err)
	}
}

func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("this is not sqlite\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of garbage = %v, want an error naming the file", err)
	}
}

func TestFilesArePrivate(t *testing.T) {
	l, path := openTemp(t)
	if err := l.Record(context.Background(), rec("a", "m", 0, 0, 0, 200)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
}
func TestDSNPathWithSpaceAndPercent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a b%20c")
	os.Mkdir(dir, 0o700)
	l, err := Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, "usage.db")); err != nil {
		t.Fatalf("database not at the literal path: %v", err)
	}
}

func BenchmarkRecord(b *testing.B) {
	path := filepath.Join(b.TempDir(), "usage.db")
	l, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	r := rec("assistant", "claude-sonnet", 0, 0.001, 800*time.Millisecond, 200)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Time = t0.Add(time.Duration(i) * time.Millisecond)
		if err := l.Record(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSpend100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "usage.db")
	l, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	tx, _ := l.db.Begin()
	for i := range 100_000 {
		sb := []string{"a", "b", "c", "d"}[i%4]
		tx.Exec(`INSERT INTO requests (time_ns, sandbox, route, provider, model, tokens_in, tokens_out, cost_usd, latency_ns, ttfb_ns, status, attempts, error)
			VALUES (?, ?, 'r', 'p', 'm', 1, 1, 0.001, 1, 1, 200, 1, '')`, t0.Add(time.Duration(i)*time.Second).UnixNano(), sb)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	since := t0.Add(24 * time.Hour)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Spend(ctx, "a", since); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPrune(t *testing.T) {
	l, _ := openTemp(t)
	ctx := context.Background()
	for i := range 10 {
		if err := l.Record(ctx, rec("a", "m", time.Duration(i)*time.Hour, 1, time.Millisecond, 200)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := l.Prune(ctx, t0.Add(4*time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("Prune = %d, %v; want 4 rows (hours 0-3)", n, err)
	}
	if s, _ := l.Spend(ctx, "a", time.Time{}); math.Abs(s-6) > 1e-9 {
		t.Fatalf("spend after prune = %v, want 6", s)
	}
	if n, _ := l.Prune(ctx, t0); n != 0 {
		t.Fatalf("second prune removed %d", n)
	}
}

func TestRecordBatch(t *testing.T) {
	l, path := openTemp(t)
	ctx := context.Background()
	batch := make([]Record, 600) // more than one multi-row INSERT
	for i := range batch {
		batch[i] = rec("a", "m", time.Duration(i)*time.Second, 0.01, time.Millisecond, 200)
	}
	if err := l.RecordBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// One bad record rejects the whole batch: nothing half-written.
	bad := []Record{rec("b", "m", 0, 1, 0, 200), {Sandbox: "b", CostUSD: -1}}
	if err := l.RecordBatch(ctx, bad); err == nil || !strings.Contains(err.Error(), "batch record 1") {
		t.Fatalf("bad batch = %v", err)
	}
	if err := l.RecordBatch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if s, _ := l2.Spend(ctx, "a", time.Time{}); math.Abs(s-6) > 1e-9 {
		t.Fatalf("spend of a after batch and restart = %v, want 6", s)
	}
	if rows, _ := l2.Summary(ctx, Filter{Sandbox: "a"}); len(rows) != 1 || rows[0].Requests != 600 {
		t.Fatalf("summary after batch = %+v", rows)
	}
	if s, _ := l2.Spend(ctx, "b", time.Time{}); s != 0 {
		t.Fatalf("rejected batch left spend %v", s)
	}
}

func BenchmarkRecordBatch64(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "usage.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	batch := make([]Record, 64)
	for i := range batch {
		batch[i] = rec("assistant", "claude-sonnet", time.Duration(i)*time.Millisecond, 0.001, 800*time.Millisecond, 200)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range batch { // later rows have later times, as in the router
			batch[j].Time = t0.Add(time.Duration(i*len(batch)+j) * time.Millisecond)
		}
		if err := l.RecordBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/row")
}

// cpuTime is the process's user+system CPU time: benchmarks report CPU per
// row, which other load on the machine disturbs far less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkRecordBatchSizes(b *testing.B) {
	for _, n := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "usage.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			ctx := context.Background()
			batch := make([]Record, n)
			for i := range batch {
				batch[i] = rec("assistant", "claude-sonnet", 0, 0.001, 800*time.Millisecond, 200)
			}
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				for j := range batch {
					batch[j].Time = t0.Add(time.Duration(i*len(batch)+j) * time.Millisecond)
				}
				if err := l.RecordBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*len(batch)), "cpu-ns/row")
		})
	}
}

// Every column of every row of a batch spanning several multi-row INSERTs
// (prepared once per row count) lands where Record would put it.
func TestRecordBatchColumnsAcrossStatements(t *testing.T) {
	l, _ := openTemp(t)
	ctx := context.Background()
	for k, n := range []int{rowsPerInsert*2 + 6, rowsPerInsert*2 + 6, 1, rowsPerInsert} { // repeats reuse the prepared statements
		sb := "s" + strconv.Itoa(k)
		var batch []Record
		for i := range n {
			batch = append(batch, Record{Time: t0.Add(time.Duration(i) * time.Second), Sandbox: sb, Route: "r" + strconv.Itoa(i),
				Provider: "p", Model: "m", TokensIn: int64(i), TokensOut: int64(2 * i), CostUSD: float64(i) / 100, Latency: time.Duration(i) * time.Millisecond,
				TTFB: time.Duration(i) * time.Microsecond, Status: 200 + i, Attempts: i % 5, Error: "e" + strconv.Itoa(i)})
		}
		if err := l.RecordBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		rows, err := l.db.QueryContext(ctx, `SELECT time_ns, sandbox, route, provider, model, tokens_in, tokens_out, cost_usd, latency_ns, ttfb_ns, status, attempts, error
			FROM requests WHERE sandbox = ? ORDER BY id`, sb)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for rows.Next() {
			var got Record
			var tn, lat, ttfb int64
			if err := rows.Scan(&tn, &got.Sandbox, &got.Route, &got.Provider, &got.Model, &got.TokensIn, &got.TokensOut, &got.CostUSD, &lat, &ttfb, &got.Status, &got.Attempts, &got.Error); err != nil {
				t.Fatal(err)
			}
			got.Time, got.Latency, got.TTFB = time.Unix(0, tn).UTC(), time.Duration(lat), time.Duration(ttfb)
			if i >= len(batch) {
				t.Fatalf("more rows than recorded")
			}
			if want := batch[i]; got != want {
				t.Fatalf("batch of %d, row %d:\n got %+v\nwant %+v", n, i, got, want)
			}
			i++
		}
		rows.Close()
		if i != n {
			t.Fatalf("batch of %d: %d rows stored", n, i)
		}
	}
}
