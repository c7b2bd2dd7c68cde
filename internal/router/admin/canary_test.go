package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/router"
	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/router/routertest"
	"github.com/clawcage/clawcage/internal/usage"
	"github.com/clawcage/clawcage/internal/vault"
	"github.com/clawcage/clawcage/internal/vault/vaulttest"
)

// Canary keys: distinctive enough that any appearance is a leak.
const (
	canaryOpenAI    = "sk-proj-CANARY-openai-6d0f3b9a7c2e41f8"
	canaryAnthropic = "sk-ant-api03-CANARY-anthropic-9e1c7a4b2d"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// vaultKeys and ledgerUsage adapt the real vault and ledger to the router,
// as `clawcage router` does.
type vaultKeys struct{ v *vault.Vault }

func (k vaultKeys) Keys(provider string) []router.Key {
	var out []router.Key
	for _, key := range k.v.Keys(provider) {
		out = append(out, router.Key{ID: key.ID, Secret: key.Secret})
	}
	return out
}

type ledgerUsage struct{ l *usage.Ledger }

func (u ledgerUsage) Record(ctx context.Context, r router.UsageRecord) error {
	return u.l.Record(ctx, usage.Record{Time: r.Time, Sandbox: r.Sandbox, Route: r.Route, Provider: r.Provider,
		Model: r.Model, TokensIn: r.TokensIn, TokensOut: r.TokensOut, CostUSD: r.CostUSD, Latency: r.Latency,
		TTFB: r.TTFB, Status: r.Status, Attempts: r.Attempts, Error: r.Error})
}

func (u ledgerUsage) Spend(ctx context.Context, sandbox string, since time.Time) (float64, error) {
	return u.l.Spend(ctx, sandbox, since)
}

// TestCanaryKeyStaysInTheVault is the whole key path on real parts: keys
// set through the admin socket into the on-disk vault, requests (success,
// fallback, provider errors that echo the key, streams cut mid-way)
// through the router to fake providers, usage into the SQLite ledger. Then
// every log line, response header and body, error message, usage row,
// metric, admin answer and file under the state dir (except the sealed
// vault file) is searched for the keys, raw and encoded.
func TestCanaryKeyStaysInTheVault(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "router")
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	v, err := vault.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ledger, err := usage.Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()

	oa := routertest.New(t, routertest.OpenAI)
	an := routertest.New(t, routertest.Anthropic)
	for _, p := range []*routertest.Provider{oa, an} {
		p.EchoKeyHeader, p.EchoKeyInError = true, true
	}
	r, err := router.New(router.Options{
		Providers: map[string]router.Provider{
			"oa": {Kind: router.KindOpenAI, BaseURL: oa.URL},
			"an": {Kind: router.KindAnthropic, BaseURL: an.URL},
		},
		Routes: map[string][]router.Target{
			"default": {{Provider: "oa", Model: "gpt-x"}, {Provider: "an", Model: "claude-x"}},
			"claude":  {{Provider: "an", Model: "claude-x"}, {Provider: "oa", Model: "gpt-x"}},
		},
		Retry:     router.Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond, Deadline: 5 * time.Second, Cooldown: time.Minute, CooldownAfter: 5},
		Prices:    map[string]router.Price{"gpt-x": {Input: 2, Output: 8}, "claude-x": {Input: 3, Output: 15}},
		Sandboxes: map[string]router.Sandbox{"agent": {}},
		Keys:      vaultKeys{v},
		Usage:     ledgerUsage{ledger},
		Log:       log,
	})
	if err != nil {
		t.Fatal(err)
	}

	adminLn, err := admin.Listen(admin.SocketPath(state), log)
	if err != nil {
		t.Fatal(err)
	}
	adminSrv := &http.Server{Handler: admin.NewHandler(admin.Deps{Vault: v, Ledger: ledger, Metrics: r.Registry(), Logger: log}), ReadHeaderTimeout: 5 * time.Second}
	go adminSrv.Serve(adminLn)
	defer adminSrv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, ln, "agent") }()

	// Everything observable goes into seen.
	var seen bytes.Buffer
	client := admin.Dial(state)
	defer client.Close()
	for provider, secret := range map[string]string{"oa": canaryOpenAI, "an": canaryAnthropic} {
		info, err := client.SetKey(ctx, provider, []byte(secret))
		if err != nil {
			t.Fatalf("SetKey(%s): %v", provider, err)
		}
		fmt.Fprintf(&seen, "%+v\n", info)
	}
	// A refused set (bad secret) must not echo what was sent either.
	if _, err := client.SetKey(ctx, "oa", []byte(canaryOpenAI+"\n"+canaryAnthropic)); err == nil {
		t.Fatal("secret with a newline accepted")
	} else {
		fmt.Fprintln(&seen, err)
	}

	oa.Push(routertest.Behavior{Status: 429}, routertest.Behavior{Status: 500}, routertest.Behavior{Status: 400},
		routertest.Behavior{DieMidStream: true})
	an.Push(routertest.Behavior{Status: 529}, routertest.Behavior{Status: 401})
	base := "http://" + ln.Addr().String()
	reqs := []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"default","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"default","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"default","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/messages", `{"model":"claude","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/messages", `{"model":"claude","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/messages", `{"model":"claude","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"default","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/models", ``},
		{"/v1/chat/completions", `{"model":"no-such-route"}`},
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	ok := 0
	for _, rq := range reqs {
		method := http.MethodPost
		if rq.body == "" {
			method = http.MethodGet
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+rq.path, strings.NewReader(rq.body))
		req.Header.Set("Content-Type", "application/json")
		// The agent tries to smuggle its own credentials: dropped, never mixed with ours.
		req.Header.Set("Authorization", "Bearer sk-agent-supplied")
		resp, err := hc.Do(req)
		if err != nil {
			fmt.Fprintln(&seen, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Fprintln(&seen, err)
		}
		if resp.StatusCode == 200 {
			ok++
		}
		resp.Header.Write(&seen)
		seen.Write(body)
	}
	if ok < 3 {
		t.Fatalf("only %d requests succeeded: the run did not exercise the key path", ok)
	}
	// The keys from the vault did reach the providers (so the absence below means something).
	var gotOA, gotAN bool
	for _, rq := range oa.Requests() {
		gotOA = gotOA || rq.Header.Get("Authorization") == "Bearer "+canaryOpenAI
	}
	for _, rq := range an.Requests() {
		gotAN = gotAN || rq.Header.Get("X-Api-Key") == canaryAnthropic
	}
	if !gotOA || !gotAN {
		t.Fatalf("vault keys did not reach the providers (openai %v, anthropic %v)", gotOA, gotAN)
	}

	cancel()
	<-served
	if err := r.Close(); err != nil { // flushes queued usage rows
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	rows, err := client.Usage(ctx2, usage.Filter{})
	if err != nil || len(rows) == 0 {
		t.Fatalf("usage: %v %v", rows, err)
	}
	js, _ := json.Marshal(rows)
	seen.Write(js)
	keys, err := client.ListKeys(ctx2)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListKeys: %v %v", keys, err)
	}
	js, _ = json.Marshal(keys)
	seen.Write(js)
	metrics, err := client.Metrics(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	seen.Write(metrics)
	fmt.Fprintf(&seen, "%v %+v %#v\n", v.Keys("oa"), v.Keys("an"), v.Keys("oa"))

	for _, secret := range []string{canaryOpenAI, canaryAnthropic} {
		vaulttest.AssertNotInBytes(t, []byte(secret), "responses, errors, usage, metrics and admin answers", seen.Bytes())
		vaulttest.AssertNotInBytes(t, []byte(secret), "router and admin logs", logs.Bytes())
	}
	if len(logs.Bytes()) == 0 {
		t.Fatal("no logs captured: the log scan proved nothing")
	}
	adminSrv.Close()
	ledger.Close()
	v.Close()
	for _, secret := range []string{canaryOpenAI, canaryAnthropic} {
		vaulttest.AssertNoSecret(t, []byte(secret), state)
	}
}
