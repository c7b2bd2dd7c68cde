package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/egress"
	"github.com/clawcage/clawcage/internal/egress/approvals"
	"github.com/clawcage/clawcage/internal/egress/egresstest"
	"github.com/clawcage/clawcage/internal/policy"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type stack struct {
	eng    *Engine
	proxy  string
	client *Client
	stop   func()
}

// startEngine opens an engine on dir and serves its proxy (sandbox "sb")
// and admin socket, like `clawcage policy-engine`.
func startEngine(t *testing.T, dir string, pol string, res *egresstest.Resolver, clk *clock) *stack {
	t.Helper()
	p, err := policy.Parse([]byte(pol), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := Open(context.Background(), Options{
		Policies: map[string]policy.Policy{"sb": *p, "other": {}},
		Dir:      dir,
		Proxy:    egress.Options{Resolver: res},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:      clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ListenAdmin(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); eng.Serve(ctx, ln, "sb") }()
	go func() { defer wg.Done(); eng.ServeAdmin(ctx, admin) }()
	s := &stack{eng: eng, proxy: ln.Addr().String(), client: NewClient(dir)}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			eng.Close()
		})
	}
	t.Cleanup(s.stop)
	return s
}

// TestApprovalLifecycle: deny → pending → approve → works → restart on
// the same state → still works → revoke closes the live tunnel.
func TestApprovalLifecycle(t *testing.T) {
	up := egresstest.StartTLSEcho(t)
	dir := t.TempDir()
	res := egresstest.NewResolver()
	res.Set("api.example.com", "127.0.0.1")
	clk := &clock{t: time.Now()}
	pol := fmt.Sprintf("network:\n  - {name: lo, cidrs: [127.0.0.0/8], ports: [%d]}\n", up.Port())
	target := fmt.Sprintf("api.example.com:%d", up.Port())
	ctx := context.Background()

	s := startEngine(t, dir, pol, res, clk)
	r := egresstest.Connect(t, s.proxy, target)
	if r.Status != 403 || r.Reason() != policy.ReasonNoRuleForHost {
		t.Fatalf("before approval: %d %v", r.Status, r.Body)
	}
	egresstest.Connect(t, s.proxy, target) // deduplicated
	q, err := s.client.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].Host != "api.example.com" || q[0].Port != up.Port() || q[0].Count != 2 || q[0].Sandbox != "sb" {
		t.Fatalf("pending %+v", q)
	}
	if want := "clawcage policy approve " + q[0].ID; r.Body["approve"] != want {
		t.Fatalf("403 approve hint %v, want %q", r.Body["approve"], want)
	}
	g, err := s.client.Approve(ctx, q[0].ID, ModeAlways, 0)
	if err != nil {
		t.Fatal(err)
	}
	if q, _ := s.client.Pending(ctx); len(q) != 0 {
		t.Fatalf("still pending after approval: %+v", q)
	}
	r = egresstest.Connect(t, s.proxy, target)
	if got, err := egresstest.TLSThrough(r, "api.example.com", "after approval"); err != nil || got != "after approval" {
		t.Fatalf("after approval: %d %q %v", r.Status, got, err)
	}
	if n := res.Asked("api.example.com"); n != 1 {
		t.Fatalf("resolved %d times; denied attempts must not resolve", n)
	}
	// Another sandbox is unaffected.
	if m := s.eng.Proxy().Matcher("other"); m.DecideName("api.example.com", up.Port(), "", "").Allow {
		t.Fatal("approval leaked to another sandbox")
	}
	s.stop()

	s = startEngine(t, dir, pol, res, clk)
	r = egresstest.Connect(t, s.proxy, target)
	if got, err := egresstest.TLSThrough(r, "api.example.com", "after restart"); err != nil || got != "after restart" {
		t.Fatalf("after restart: %d %q %v", r.Status, got, err)
	}
	view, err := s.client.Show(ctx, "sb")
	if err != nil {
		t.Fatal(err)
	}
	if len(view.Grants) != 1 || view.Grants[0].ID != g.ID {
		t.Fatalf("grants after restart %+v", view.Grants)
	}
	// Revocation closes the live tunnel.
	live := egresstest.Connect(t, s.proxy, target)
	conn, err := egresstest.TLSConn(live, "api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.client.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("x")); err == nil {
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("tunnel still carries data after revocation")
		}
	}
	if r := egresstest.Connect(t, s.proxy, target); r.Status != 403 {
		t.Fatalf("after revocation: %d", r.Status)
	}
	s.stop()
	s = startEngine(t, dir, pol, res, clk)
	if r := egresstest.Connect(t, s.proxy, target); r.Status != 403 {
		t.Fatalf("revocation did not persist: %d", r.Status)
	}
}

func TestApproveForExpiresAndClosesTunnels(t *testing.T) {
	up := egresstest.StartEcho(t)
	dir := t.TempDir()
	clk := &clock{t: time.Now()}
	s := startEngine(t, dir, "network: []\n", egresstest.NewResolver(), clk)
	ctx := context.Background()
	target := up.Addr.String()
	if r := egresstest.Connect(t, s.proxy, target); r.Status != 403 || r.Reason() != policy.ReasonNoRuleForAddress {
		t.Fatalf("before: %d %v", r.Status, r.Body)
	}
	q, _ := s.client.Pending(ctx)
	if len(q) != 1 {
		t.Fatalf("pending %+v", q)
	}
	if _, err := s.client.Approve(ctx, q[0].ID, ModeFor, time.Hour); err != nil {
		t.Fatal(err)
	}
	// An IP-literal grant is a single-address cidr rule: it names even a
	// loopback address, because the operator approved exactly it.
	r := egresstest.Connect(t, s.proxy, target)
	if got, err := egresstest.Echo(r, "hi"); err != nil || got != "hi" {
		t.Fatalf("approved for an hour: %d %q %v", r.Status, got, err)
	}
	clk.Add(2 * time.Hour)
	if err := s.eng.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := egresstest.Echo(r, "again"); err == nil {
		t.Fatal("tunnel survived the approval's expiry")
	}
	if r := egresstest.Connect(t, s.proxy, target); r.Status != 403 {
		t.Fatalf("after expiry: %d", r.Status)
	}
}

func TestApproveOnce(t *testing.T) {
	up := egresstest.StartEcho(t)
	s := startEngine(t, t.TempDir(), "network: []\n", egresstest.NewResolver(), &clock{t: time.Now()})
	ctx := context.Background()
	egresstest.Connect(t, s.proxy, up.Addr.String())
	q, _ := s.client.Pending(ctx)
	if len(q) != 1 {
		t.Fatalf("pending %+v", q)
	}
	if _, err := s.client.Approve(ctx, q[0].ID, ModeOnce, 0); err != nil {
		t.Fatal(err)
	}
	r := egresstest.Connect(t, s.proxy, up.Addr.String())
	if got, err := egresstest.Echo(r, "one"); err != nil || got != "one" {
		t.Fatalf("once: %d %q %v", r.Status, got, err)
	}
	if r2 := egresstest.Connect(t, s.proxy, up.Addr.String()); r2.Status != 403 {
		t.Fatalf("second use of a single-use approval: %d", r2.Status)
	}
	if got, err := egresstest.Echo(r, "still"); err != nil || got != "still" {
		t.Fatalf("the connection the single-use approval opened was cut: %q %v", got, err)
	}
}

func TestRejectKeepsDenyingAndDedupes(t *testing.T) {
	s := startEngine(t, t.TempDir(), "network: []\n", egresstest.NewResolver(), &clock{t: time.Now()})
	ctx := context.Background()
	if r := egresstest.Connect(t, s.proxy, "bad.example:443"); r.Status != 403 {
		t.Fatalf("first attempt: %d", r.Status)
	}
	q, _ := s.client.Pending(ctx)
	if len(q) != 1 {
		t.Fatalf("pending %+v", q)
	}
	if err := s.client.Reject(ctx, q[0].ID); err != nil {
		t.Fatal(err)
	}
	if r := egresstest.Connect(t, s.proxy, "bad.example:443"); r.Status != 403 {
		t.Fatalf("rejected destination: %d", r.Status)
	}
	if q, _ := s.client.Pending(ctx); len(q) != 0 {
		t.Fatalf("rejected destination queued again: %+v", q)
	}
	if err := s.client.Reject(ctx, "nonexistent"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("reject unknown id: %v", err)
	}
	if _, err := s.client.Approve(ctx, q[0].ID+"x", ModeAlways, 0); err == nil {
		t.Fatal("approve unknown id succeeded")
	}
}

func TestAllowAndAddPreset(t *testing.T) {
	s := startEngine(t, t.TempDir(), "network: []\n", egresstest.NewResolver(), &clock{t: time.Now()})
	ctx := context.Background()
	if _, err := s.client.Allow(ctx, "sb", "Files.Example.COM.", 8443, ModeAlways, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.AddPreset(ctx, "sb", "github"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.AddPreset(ctx, "sb", "no-such-preset"); err == nil || !strings.Contains(err.Error(), "unknown preset") {
		t.Fatalf("unknown preset: %v", err)
	}
	if _, err := s.client.Allow(ctx, "nosuch", "a.example", 443, ModeAlways, 0); err == nil {
		t.Fatal("allow for an unconfigured sandbox succeeded")
	}
	m := s.eng.Proxy().Matcher("sb")
	if d := m.DecideName("files.example.com", 8443, "", ""); !d.Allow {
		t.Fatalf("allowed host: %+v", d)
	}
	if d := m.DecideName("api.github.com", 443, "", ""); !d.Allow {
		t.Fatalf("preset host: %+v", d)
	}
	v, err := s.client.Show(ctx, "sb")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	FormatShow(&buf, v)
	for _, want := range []string{"files.example.com:8443", "preset github", "presets: github"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("show output lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestCorruptDatabaseRefusesToStart: never an open proxy, never one
// without its approvals.
func TestCorruptDatabaseRefusesToStart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, path string)
	}{
		{"garbage file", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("not a database "), 1000), 0o600)
		}},
		{"unreadable file", func(t *testing.T, path string) {
			if os.Geteuid() == 0 {
				os.MkdirAll(path, 0o700) // a directory in its place: unopenable even for root
				return
			}
			os.WriteFile(path, nil, 0o000)
		}},
		{"truncated database", func(t *testing.T, path string) {
			st, err := approvals.Open(context.Background(), path, approvals.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 200; i++ {
				st.AddGrant(context.Background(), approvals.Grant{ID: approvals.NewID(), Sandbox: "sb", Kind: approvals.KindHost, Host: fmt.Sprintf("h%d.example", i), Port: 443, Mode: approvals.ModeAlways, Created: time.Now()})
			}
			st.Close()
			data, _ := os.ReadFile(path)
			os.WriteFile(path, data[:len(data)/2+100], 0o600)
			os.Remove(path + "-wal")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, DBPath(dir))
			_, err := Open(context.Background(), Options{Policies: map[string]policy.Policy{"sb": {}}, Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil {
				t.Fatal("engine opened a corrupt database")
			}
			if !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), DBPath(dir)) {
				t.Fatalf("error does not explain the refusal: %v", err)
			}
		})
	}
}

// TestFloodBounded: 100,000 unique denied hosts leave a bounded queue.
func TestFloodBounded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.db")
	st, err := approvals.Open(context.Background(), path, approvals.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := 100000
	if raceEnabled {
		n = 10000 // the race detector makes each SQLite call ~20x slower
	}
	queued := 0
	for i := 0; i < n; i++ {
		id, err := st.RecordDenial(ctx, approvals.Denial{Sandbox: "sb", Host: fmt.Sprintf("x%d.attacker.example", i), Port: 443, Method: "CONNECT", Reason: policy.ReasonNoRuleForHost})
		if err != nil {
			t.Fatal(err)
		}
		if id != "" {
			queued++
		}
	}
	// Another sandbox is not starved by the flood.
	if id, err := st.RecordDenial(ctx, approvals.Denial{Sandbox: "quiet", Host: "a.example", Port: 443}); err != nil || id == "" {
		t.Fatalf("quiet sandbox's denial: %q %v", id, err)
	}
	q, err := st.Queue(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var flood *approvals.Entry
	rows := 0
	for i := range q {
		if q[i].Sandbox == "sb" {
			rows++
			if q[i].Flooding {
				flood = &q[i]
			}
		}
	}
	if rows > 201 || queued > 200 {
		t.Fatalf("%d rows, %d queued for sandbox after %d unique hosts; want ≤ 200 + 1", rows, queued, n)
	}
	if flood == nil || flood.Count != int64(n-queued) {
		t.Fatalf("flooding entry %+v, want count %d", flood, n-queued)
	}
	st.Close()
	var size int64
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if fi, err := os.Stat(path + suffix); err == nil {
			size += fi.Size()
		}
	}
	if size > 4<<20 {
		t.Fatalf("database is %d bytes after the flood", size)
	}
	t.Logf("after %d unique hosts: %d queued, flooding count %d, %d bytes on disk", n, queued, flood.Count, size)
}

// TestApprovalViewSafety: homographs and long deceptive names are shown
// whole, in punycode with the Unicode form beside it, escaped.
func TestApprovalViewSafety(t *testing.T) {
	long := "api.good.com." + strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + ".evil.example"
	entries := []approvals.Entry{
		{ID: "id1", Sandbox: "sb", Host: "xn--pple-43d.com", Port: 443, Method: "CONNECT", Reason: "no-rule-for-host", Count: 1},
		{ID: "id2", Sandbox: "sb", Host: long, Port: 443, Method: "CONNECT", Reason: "no-rule-for-host", Count: 1},
		{ID: "id3", Sandbox: "sb\x1b[2J", Host: "x.example", Port: 80, Method: "GET\x1b]0;pwned\x07", Reason: "no-rule-for-host", Count: 1},
		{ID: "id4", Sandbox: "sb", Flooding: true, Count: 99800},
	}
	var buf bytes.Buffer
	FormatPending(&buf, entries)
	out := buf.String()
	for _, want := range []string{
		"xn--pple-43d.com:443  (unicode: аpple.com;", // Cyrillic а shown next to the punycode
		long + ":443",
		`GET\x1b]0;pwned\x07`,
		`sb\x1b[2J`,
		"FLOODING: 99800",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("view lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Fatalf("raw control characters in the view:\n%q", out)
	}
	if got := DisplayHost("evil\u202e.example", 443); strings.Contains(got, "\u202e") {
		t.Fatalf("bidi override printed raw: %q", got)
	}
}

// TestGrantBesideRestrictedRule: approving a host that a method-restricted
// rule names must not make the sandbox's policy fail to compile.
func TestGrantBesideRestrictedRule(t *testing.T) {
	s := startEngine(t, t.TempDir(), "network:\n  - {name: gh, hosts: [api.github.com], ports: [443], methods: [GET]}\n", egresstest.NewResolver(), &clock{t: time.Now()})
	ctx := context.Background()
	if _, err := s.client.Allow(ctx, "sb", "api.github.com", 443, ModeAlways, 0); err != nil {
		t.Fatalf("grant next to a restricted rule: %v", err)
	}
	m := s.eng.Proxy().Matcher("sb")
	if d := m.DecideName("api.github.com", 443, "", ""); !d.Allow || !strings.HasPrefix(d.Rule, approvalPrefix) {
		t.Fatalf("tunnel after approval: %+v", d)
	}
	if d := m.DecideName("api.github.com", 443, "GET", "/x"); !d.Allow || d.Rule != "gh" {
		t.Fatalf("the policy's own rule is tried first: %+v", d)
	}
}
