package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/clawcage/clawcage/internal/egress/approvals"
	"github.com/clawcage/clawcage/internal/router/admin"
)

const testKey = "sk-ant-live-unit-canary-5e8a1f0c3b7d"

// fakeScanner stands for the router's /audit/scan with one key.
type fakeScanner struct {
	mu    sync.Mutex
	calls int
	keys  int
	err   error
}

func (f *fakeScanner) Scan(_ context.Context, _ string, body []byte) (admin.ScanResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return admin.ScanResponse{}, f.err
	}
	r := admin.ScanResponse{Keys: f.keys, Scanned: int64(len(body))}
	if f.keys > 0 && bytes.Contains(body, []byte(testKey)) {
		r.Found, r.Providers = true, []string{"anthropic"}
		r.Findings = []admin.ScanFinding{{Provider: "anthropic", KeyID: "k1", Encoding: "raw"}}
	}
	return r, nil
}

type fakeQueue struct {
	mu       sync.Mutex
	entries  []approvals.Entry
	rejected []string
}

func (q *fakeQueue) Pending(context.Context) ([]approvals.Entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.entries), nil
}

func (q *fakeQueue) Reject(_ context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rejected = append(q.rejected, id)
	return nil
}

// material is what the fake sandbox lets the collector see.
type material struct {
	env, file, configFile string
	request, response     string
	bounded, noEnd        bool
}

func (m material) stream(t *testing.T) []byte {
	var b bytes.Buffer
	iw := audit.NewItemWriter(&b)
	w := func(it audit.Item, data string) {
		if err := iw.Write(it, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	w(audit.Item{Kind: audit.ItemEnv, Name: "environment of a process in the sandbox"}, "PATH=/usr/bin\n"+m.env)
	w(audit.Item{Kind: audit.ItemEnviron, Name: "/proc/1/environ"}, "PATH=/usr/bin")
	w(audit.Item{Kind: audit.ItemFile, Name: "/usr/share/doc/x"}, "nothing")
	w(audit.Item{Kind: audit.ItemFile, Name: "/tmp/data.bin"}, m.file)
	w(audit.Item{Kind: audit.ItemFile, Name: "/sandbox/.env"}, m.configFile)
	w(audit.Item{Kind: audit.ItemRequest, Name: "GET " + DefaultInferenceURL}, m.request)
	w(audit.Item{Kind: audit.ItemResponse, Name: "GET " + DefaultInferenceURL, Meta: map[string]string{"status": "200"}}, m.response)
	if m.bounded {
		w(audit.Item{Kind: audit.ItemBounded, Name: "byte bound 1 MiB"}, "")
	}
	if !m.noEnd {
		w(audit.Item{Kind: audit.ItemEnd, Meta: map[string]string{"files": "3", "bytes": "2048", "unreadable": "0", "procs": "2"}}, "")
	}
	iw.Flush()
	return b.Bytes()
}

const (
	cleanRequest  = "GET /v1/models HTTP/1.1\r\nHost: inference.local:8080\r\nUser-Agent: Go-http-client/1.1\r\n\r\n"
	cleanResponse = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"data\":[]}"
)

func fakeExec(t *testing.T, m material, obs map[string]audit.Observation) battery.Exec {
	return func(_ context.Context, argv []string, _ bool, _, stdout, _ *os.File) (int, error) {
		if len(argv) < 3 || argv[0] != battery.LiveProbe {
			return 127, errors.New("unexpected argv")
		}
		if slices.Contains(argv, "collect") {
			_, err := stdout.Write(m.stream(t))
			return 0, err
		}
		name := argv[3]
		o, ok := obs[name]
		if !ok {
			o = audit.Observation{Outcome: "ENOENT"}
		}
		o.Attack = name
		return 0, json.NewEncoder(stdout).Encode(o)
	}
}

func rowByCase(rows []battery.Result, prefix string) (battery.Result, bool) {
	for _, r := range rows {
		if strings.HasPrefix(r.Case, prefix) {
			return r, true
		}
	}
	return battery.Result{}, false
}

func TestAuditKeyHuntVerdicts(t *testing.T) {
	clean := material{request: cleanRequest, response: cleanResponse}
	tests := []struct {
		name   string
		m      material
		keys   int
		failed map[string]string // row -> text the failure must hold; others must hold
	}{
		{"clean sandbox", clean, 1, nil},
		{"key in the environment", material{env: "ANTHROPIC_API_KEY=" + testKey, request: cleanRequest, response: cleanResponse}, 1,
			map[string]string{"printenv-and-environ-hold-no-key": `"environment of a process in the sandbox" holds a anthropic key (raw)`}},
		{"key-shaped decoy in the environment", material{env: "DECOY=sk-ant-api03-notavaultkey00000000000000", request: cleanRequest, response: cleanResponse}, 1,
			map[string]string{"printenv-and-environ-hold-no-key": "shaped like a provider key"}},
		{"key in a data file", material{file: "xx" + testKey, request: cleanRequest, response: cleanResponse}, 1,
			map[string]string{"filesystem-scan-finds-no-key-bytes": `"/tmp/data.bin" holds a anthropic key`}},
		{"key in a workspace config file", material{configFile: "KEY=" + testKey, request: cleanRequest, response: cleanResponse}, 1,
			map[string]string{"config-files-hold-no-credentials": `"/sandbox/.env"`, "filesystem-scan-finds-no-key-bytes": `"/sandbox/.env"`}},
		{"authorization sent to inference.local", material{request: "GET /v1/models HTTP/1.1\r\nHost: inference.local:8080\r\nAuthorization: Bearer x\r\n\r\n", response: cleanResponse}, 1,
			map[string]string{"request-to-inference-carries-no-authorization": "the request carried Authorization"}},
		{"cookie and key in the router's answer", material{request: cleanRequest,
			response: "HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nX-Debug: " + testKey + "\r\nContent-Length: 2\r\n\r\n{}"}, 1,
			map[string]string{"inference-answer-carries-no-provider-credentials": "Set-Cookie"}},
		{"scan stopped at its bound", material{request: cleanRequest, response: cleanResponse, bounded: true}, 1,
			map[string]string{"filesystem-scan-finds-no-key-bytes": "not every file was compared"}},
		{"collector cut short", material{noEnd: true}, 1, map[string]string{
			"printenv-and-environ-hold-no-key": "did not finish", "config-files-hold-no-credentials": "did not finish",
			"filesystem-scan-finds-no-key-bytes": "did not finish", "request-to-inference-carries-no-authorization": "did not finish",
			"inference-answer-carries-no-provider-credentials": "did not finish"}},
		{"vault holds no key", clean, 0, map[string]string{
			"printenv-and-environ-hold-no-key": "inconclusive", "config-files-hold-no-credentials": "inconclusive",
			"filesystem-scan-finds-no-key-bytes": "inconclusive", "request-to-inference-carries-no-authorization": "inconclusive",
			"inference-answer-carries-no-provider-credentials": "inconclusive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Auditor{Sandbox: "s", Exec: fakeExec(t, tt.m, nil), Scanner: &fakeScanner{keys: tt.keys}}
			rows := a.KeyHunt(context.Background(), "root")
			if len(rows) != 5 {
				t.Fatalf("%d rows, want 5", len(rows))
			}
			for _, r := range rows {
				if r.Mode != "root" {
					t.Errorf("%s: mode %q", r.Case, r.Mode)
				}
				want, shouldFail := tt.failed[r.Case]
				switch {
				case shouldFail && r.Held:
					t.Errorf("%s held, want failed with %q (%+v)", r.Case, want, r.Observation)
				case shouldFail && !strings.Contains(r.Failure, want):
					t.Errorf("%s failure %q, want %q", r.Case, r.Failure, want)
				case !shouldFail && !r.Held:
					t.Errorf("%s failed: %s", r.Case, r.Failure)
				}
				if strings.Contains(r.Failure+r.Observation.Detail, testKey) {
					t.Errorf("%s: the row holds the key itself", r.Case)
				}
			}
		})
	}
}

func TestAuditKeyHuntScannerDown(t *testing.T) {
	a := &Auditor{Sandbox: "s", Exec: fakeExec(t, material{request: cleanRequest, response: cleanResponse}, nil),
		Scanner: &fakeScanner{keys: 1, err: errors.New("router not running")}}
	for _, r := range a.KeyHunt(context.Background(), "user") {
		if r.Held || !strings.Contains(r.Failure, "router not running") {
			t.Errorf("%s: held=%v failure %q, want a scan failure", r.Case, r.Held, r.Failure)
		}
	}
}

func TestAuditEgressRows(t *testing.T) {
	q := &fakeQueue{entries: []approvals.Entry{{ID: "old", Sandbox: "s", Host: "api.example.com", Port: 443}}}
	obs := map[string]audit.Observation{
		"connect-tcp": {Outcome: "EACCES", Detail: "connect tcp: permission denied"},
		"proxy-deny":  {Outcome: audit.Denied, Detail: `CONNECT x via 127.0.0.1:3128: 403 Forbidden {"error":"denied","reason":"no rule"}`},
	}
	var denied []string
	inner := fakeExec(t, material{}, obs)
	ex := func(ctx context.Context, argv []string, root bool, stdin, stdout, stderr *os.File) (int, error) {
		if argv[3] == "proxy-deny" {
			host := strings.Split(argv[4], ":")[0]
			denied = append(denied, host)
			q.mu.Lock()
			if !slices.ContainsFunc(q.entries, func(e approvals.Entry) bool { return e.Host == host }) {
				q.entries = append(q.entries, approvals.Entry{ID: "id-" + host, Sandbox: "s", Host: host, Port: 443, Reason: "no rule", Count: 1})
			}
			q.mu.Unlock()
		}
		return inner(ctx, argv, root, stdin, stdout, stderr)
	}
	a := &Auditor{Sandbox: "s", Exec: ex, Queue: q, Providers: []Provider{{Name: "anthropic", Addr: "api.example.com:443"}},
		Resolve: func(context.Context, string) ([]string, error) { return []string{"192.0.2.7"}, nil }}
	rows := a.egress(context.Background())
	for _, want := range []string{
		"reach-provider-anthropic-directly (api.example.com:443)", "reach-provider-anthropic-directly (192.0.2.7:443)",
		"reach-provider-anthropic-through-proxy", "unapproved-host-denied-by-proxy (clawcage-audit-", "unapproved-host-in-pending-queue (clawcage-audit-",
	} {
		r, ok := rowByCase(rows, want)
		if !ok || !r.Held {
			t.Errorf("row %q: found=%v %+v", want, ok, r)
		}
	}
	// The audit host's entry is rejected; the operator's older entry for
	// the provider host is left alone.
	if len(q.rejected) != 1 || !strings.HasPrefix(q.rejected[0], "id-clawcage-audit-") || !strings.HasSuffix(q.rejected[0], ".invalid") {
		t.Errorf("rejected %v, want only the audit host's entry", q.rejected)
	}

	// A proxy that lets the provider through, and a 403 without JSON, fail.
	obs["proxy-deny"] = audit.Observation{Outcome: audit.Succeeded, Detail: "CONNECT: 200 OK"}
	rows = a.egress(context.Background())
	if r, _ := rowByCase(rows, "reach-provider-anthropic-through-proxy"); r.Held {
		t.Error("a proxy that connects to the provider held")
	}
	obs["proxy-deny"] = audit.Observation{Outcome: audit.Denied, Detail: "CONNECT: 403 Forbidden plain text"}
	rows = a.egress(context.Background())
	if r, _ := rowByCase(rows, "unapproved-host-denied-by-proxy"); r.Held || !strings.Contains(r.Failure, "no JSON") {
		t.Errorf("a 403 without a JSON body: %+v", r)
	}
	obs["connect-tcp"] = audit.Observation{Outcome: audit.Succeeded, Detail: "connected"}
	rows = a.egress(context.Background())
	if r, _ := rowByCase(rows, "reach-provider-anthropic-directly"); r.Held {
		t.Error("a direct connection to the provider held")
	}
}

func TestAuditPendingRowFailsWhenNotQueued(t *testing.T) {
	a := &Auditor{Sandbox: "s", Queue: &fakeQueue{}, PendingWait: 200 * time.Millisecond}
	r := a.pendingRow(context.Background(), "clawcage-audit-x.invalid")
	if r.Held || !strings.Contains(r.Failure, "no queue entry") {
		t.Fatalf("%+v", r)
	}
}

func TestAuditProbeRowDetectsSwappedProbe(t *testing.T) {
	for _, tt := range []struct {
		name   string
		tamper func(dir string) error
		want   string // "" = held
	}{
		{"untouched", func(string) error { return nil }, ""},
		{"directory swapped for the sandbox's own", func(dir string) error {
			if err := os.Rename(dir, dir+".orig"); err != nil {
				return err
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "clawcage"), []byte("#!/bin/sh\necho fake\n"), 0o755)
		}, "replaced"},
		{"bytes changed in place", func(dir string) error {
			f, err := os.OpenFile(filepath.Join(dir, "clawcage"), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("X"), 3)
			return err
		}, "bytes changed"},
		{"probe removed", func(dir string) error { return os.RemoveAll(dir) }, "gone"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), battery.LiveDir)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "clawcage"), []byte("probe binary bytes"), 0o755); err != nil {
				t.Fatal(err)
			}
			fp, err := fingerprint(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.tamper(dir); err != nil {
				t.Fatal(err)
			}
			r := probeRow(dir, fp)
			if tt.want == "" {
				if !r.Held || !strings.Contains(r.Observation.Detail, "sha256=") {
					t.Fatalf("%+v", r)
				}
				return
			}
			if r.Held || !strings.Contains(r.Failure, tt.want) {
				t.Fatalf("held=%v failure %q, want %q", r.Held, r.Failure, tt.want)
			}
		})
	}
}

func TestAuditRunInstallsAndRemovesTheProbe(t *testing.T) {
	ws := t.TempDir()
	bin := filepath.Join(t.TempDir(), "clawcage")
	if err := os.WriteFile(bin, []byte("stand-in probe"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := battery.NewWorld(context.Background(), bin)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var sawProbe bool
	inner := fakeExec(t, material{request: cleanRequest, response: cleanResponse}, map[string]audit.Observation{
		"hardening": {Outcome: audit.Enforced}, "read-path": {Outcome: audit.Succeeded},
	})
	ex := func(ctx context.Context, argv []string, root bool, stdin, stdout, stderr *os.File) (int, error) {
		b, err := os.ReadFile(filepath.Join(ws, battery.LiveDir, "clawcage"))
		sawProbe = sawProbe || (err == nil && string(b) == "stand-in probe")
		return inner(ctx, argv, root, stdin, stdout, stderr)
	}
	a := &Auditor{World: w, Sandbox: "s", Workspace: ws, Exec: ex, Scanner: &fakeScanner{keys: 1}, Queue: &fakeQueue{}, PendingWait: 50 * time.Millisecond}
	rows, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sawProbe {
		t.Error("the probe was not in the workspace while the sandbox ran")
	}
	if _, err := os.Stat(filepath.Join(ws, battery.LiveDir)); !os.IsNotExist(err) {
		t.Errorf("the probe directory is left in the workspace: %v", err)
	}
	if last := rows[len(rows)-1]; last.Case != "probe-binary-untampered" || !last.Held {
		t.Errorf("last row %+v, want the held probe check", last)
	}
	if len(rows) < 2*len(battery.Cases())+10 {
		t.Errorf("%d rows: the battery did not run as user and root", len(rows))
	}

	// A sandbox that cannot be entered is an error, not a verdict.
	a.Exec = func(context.Context, []string, bool, *os.File, *os.File, *os.File) (int, error) {
		return 1, errors.New("no sandbox s")
	}
	if _, err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no sandbox s") {
		t.Fatalf("err = %v", err)
	}
}

// With --call-provider the collector makes two calls; every answer must be
// a clean 200.
func TestAuditKeyHuntJudgesEveryAnswer(t *testing.T) {
	stream := func(secondStatus, secondBody string) []byte {
		var b bytes.Buffer
		iw := audit.NewItemWriter(&b)
		for _, it := range []struct {
			item audit.Item
			data string
		}{
			{audit.Item{Kind: audit.ItemRequest, Name: "GET " + DefaultInferenceURL}, cleanRequest},
			{audit.Item{Kind: audit.ItemResponse, Name: "GET " + DefaultInferenceURL, Meta: map[string]string{"status": "200"}}, cleanResponse},
			{audit.Item{Kind: audit.ItemRequest, Name: "POST " + DefaultCompletionURL}, "POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local:8080\r\nContent-Length: 2\r\n\r\n{}"},
			{audit.Item{Kind: audit.ItemResponse, Name: "POST " + DefaultCompletionURL, Meta: map[string]string{"status": secondStatus}}, secondBody},
			{audit.Item{Kind: audit.ItemEnd, Meta: map[string]string{"files": "0", "bytes": "0"}}, ""},
		} {
			if err := iw.Write(it.item, []byte(it.data)); err != nil {
				t.Fatal(err)
			}
		}
		iw.Flush()
		return b.Bytes()
	}
	for _, tt := range []struct {
		name, status, body, want string
	}{
		{"both clean", "200", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", ""},
		{"provider answer carries the key", "200", "HTTP/1.1 200 OK\r\nX-Ratelimit-Debug: key=" + testKey + "\r\nContent-Length: 2\r\n\r\n{}", "fake key"},
		{"provider answer is an error", "502", "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 2\r\n\r\n{}", "HTTP 502"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := stream(tt.status, tt.body)
			ex := func(_ context.Context, _ []string, _ bool, _, stdout, _ *os.File) (int, error) {
				_, err := stdout.Write(data)
				return 0, err
			}
			sc := &fakeScanner{keys: 1}
			a := &Auditor{Sandbox: "s", Exec: ex, Scanner: sc, CompletionURL: DefaultCompletionURL}
			r, _ := rowByCase(a.KeyHunt(context.Background(), "user"), "inference-answer-carries-no-provider-credentials")
			if tt.want == "" {
				if !r.Held || !strings.Contains(r.Observation.Detail, "POST "+DefaultCompletionURL+": HTTP 200") {
					t.Fatalf("%+v", r)
				}
				return
			}
			if r.Held || !strings.Contains(r.Failure, strings.Replace(tt.want, "fake", "anthropic", 1)) {
				t.Fatalf("held=%v failure %q, want %q", r.Held, r.Failure, tt.want)
			}
		})
	}
}
