package approvals

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func open(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy", "policy.db")
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestDedupeByDestination(t *testing.T) {
	s, _ := open(t, Options{})
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := map[string]bool{}
	for i, d := range []Denial{
		{Sandbox: "a", Host: "x.example", Port: 443, Time: t0},
		{Sandbox: "a", Host: "x.example", Port: 443, Time: t0.Add(time.Minute)},
		{Sandbox: "a", Host: "x.example", Port: 80, Time: t0},
		{Sandbox: "b", Host: "x.example", Port: 443, Time: t0},
	} {
		id, err := s.RecordDenial(ctx, d)
		if err != nil || id == "" {
			t.Fatalf("denial %d: %q %v", i, id, err)
		}
		ids[id] = true
	}
	if len(ids) != 3 {
		t.Fatalf("%d distinct ids, want 3 (same sandbox+host+port deduplicated)", len(ids))
	}
	q, err := s.Queue(ctx, StatePending)
	if err != nil {
		t.Fatal(err)
	}
	var e Entry
	for _, x := range q {
		if x.Sandbox == "a" && x.Port == 443 {
			e = x
		}
	}
	if len(q) != 3 || e.Count != 2 || !e.FirstSeen.Equal(t0) || !e.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("queue %+v", q)
	}
	if err := s.Reject(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if id, _ := s.RecordDenial(ctx, Denial{Sandbox: "a", Host: "x.example", Port: 443}); id != e.ID {
		t.Fatalf("rejected destination got a new entry %q", id)
	}
	if q, _ := s.Queue(ctx, StatePending); len(q) != 2 {
		t.Fatalf("pending after reject: %+v", q)
	}
}

func TestCapAndRateAggregateIntoFlooding(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		opts       Options
		wantQueued int
	}{
		{"rate limit", Options{MaxPerSandbox: 5, NewRate: rate.Every(time.Hour), NewBurst: 3}, 3},
		{"cap", Options{MaxPerSandbox: 5, NewRate: 1000, NewBurst: 1000}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Now = func() time.Time { return now }
			s, _ := open(t, tc.opts)
			ctx := context.Background()
			queued := 0
			for i := 0; i < 50; i++ {
				id, err := s.RecordDenial(ctx, Denial{Sandbox: "a", Host: strings.Repeat("x", i+1) + ".example", Port: 443})
				if err != nil {
					t.Fatal(err)
				}
				if id != "" {
					queued++
				}
			}
			if queued != tc.wantQueued {
				t.Fatalf("%d queued, want %d", queued, tc.wantQueued)
			}
			q, _ := s.Queue(ctx, "")
			last := q[len(q)-1]
			if len(q) != tc.wantQueued+1 || !last.Flooding || last.Count != int64(50-tc.wantQueued) {
				t.Fatalf("queue %+v, want %d entries and a flooding entry counting %d", q, tc.wantQueued, 50-tc.wantQueued)
			}
		})
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	s, path := open(t, Options{})
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(context.Background(), path, Options{}); err == nil || !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestGrantsRoundTrip(t *testing.T) {
	s, path := open(t, Options{})
	ctx := context.Background()
	id, _ := s.RecordDenial(ctx, Denial{Sandbox: "a", Host: "x.example", Port: 443})
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	g := Grant{ID: NewID(), Sandbox: "a", Kind: KindHost, Host: "x.example", Port: 443, Mode: ModeUntil, Expires: exp, Created: time.Now().UTC().Truncate(time.Millisecond), Source: id}
	if err := s.AddGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Entry(ctx, id); !IsNotFound(err) {
		t.Fatalf("approved entry still queued: %v", err)
	}
	s.Close()
	s2, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	gs, err := s2.Grants(ctx)
	if err != nil || len(gs) != 1 || gs[0] != g {
		t.Fatalf("grants after reopen %+v %v, want %+v", gs, err, g)
	}
	if err := s2.RemoveGrant(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if err := s2.RemoveGrant(ctx, g.ID); !IsNotFound(err) {
		t.Fatalf("removing twice: %v", err)
	}
}

func TestForgetSandboxRemovesOnlyItsRows(t *testing.T) {
	s, _ := open(t, Options{})
	ctx := context.Background()
	for _, sb := range []string{"gone", "kept"} {
		if _, err := s.RecordDenial(ctx, Denial{Sandbox: sb, Host: "pending.example", Port: 443}); err != nil {
			t.Fatal(err)
		}
		g := Grant{ID: NewID(), Sandbox: sb, Kind: KindHost, Host: "x.example", Port: 443, Mode: ModeAlways, Created: time.Now().UTC()}
		if err := s.AddGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	grants, entries, err := s.ForgetSandbox(ctx, "gone")
	if err != nil || grants != 1 || entries != 1 {
		t.Fatalf("ForgetSandbox = %d grants, %d entries, %v; want 1, 1, nil", grants, entries, err)
	}
	gs, err := s.Grants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].Sandbox != "kept" {
		t.Errorf("grants left: %+v, want only sandbox kept's", gs)
	}
	q, err := s.Queue(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].Sandbox != "kept" {
		t.Errorf("queue left: %+v, want only sandbox kept's", q)
	}
}
