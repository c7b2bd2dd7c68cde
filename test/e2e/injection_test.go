package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/clawcage/clawcage/internal/router/routertest"
	"github.com/clawcage/clawcage/internal/runas"
	"github.com/clawcage/clawcage/internal/vault/vaulttest"
)

// The prompt-injection scenario of issue 4, against the whole stack: a
// fake provider on host loopback, `clawcage up` as a subprocess, a canary
// key set through the router's admin socket, and a "compromised agent"
// (testdata/injection/agent.sh) as the sandbox's command that hunts for the
// key and tries to reach the provider around the router. Then kill -9 of
// the router and the policy engine, and `clawcage down`.

// injSandbox is the sandbox's name, unique per test process: other runs of
// this test on the machine would otherwise share its cgroup name.
var injSandbox = fmt.Sprintf("inj%d", os.Getpid())

const (
	// canaryPrefix is the shape agent.sh searches for; its regexp is
	// written so that the script text itself does not match.
	canaryPrefix = "sk-clawcage-canary-"
	// upstreamText is what the operator-approved upstream answers.
	upstreamText = "approved upstream says hello"
)

// keyShaped matches what agent.sh searches for.
var keyShaped = regexp.MustCompile(canaryPrefix + "[0-9a-f]{80}")

// injStack is one running `clawcage up` of the scenario.
type injStack struct {
	bin     string // the clawcage binary, in a directory every uid can traverse
	state   string
	ws      string // the sandbox's workspace on the host
	up      *exec.Cmd
	upOut   *bytes.Buffer
	upDone  chan error
	stopped bool
	seq     int // last phase number given to the agent
}

// randomKey returns canaryPrefix and 40 random bytes in hex.
func randomKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 40)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return canaryPrefix + hex.EncodeToString(b)
}

// cli runs one clawcage command against the stack's state directory.
func (s *injStack) cli(ctx context.Context, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(args, "--state", s.state)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("clawcage %s: %w; stderr: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// mustCLI is cli that fails the test on an error.
func (s *injStack) mustCLI(t testing.TB, ctx context.Context, stdin []byte, args ...string) string {
	t.Helper()
	out, err := s.cli(ctx, stdin, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.upOut.String())
	}
	return out
}

// injStatus is `clawcage status --json`.
type injStatus struct {
	PID        int `json:"pid"`
	Components []struct {
		Name     string `json:"name"`
		State    string `json:"state"`
		PID      int    `json:"pid"`
		Restarts int    `json:"restarts"`
		LastExit string `json:"last_exit"`
		Health   string `json:"health"`
	} `json:"components"`
	Sandboxes []struct {
		Name   string `json:"name"`
		Status *struct {
			State string `json:"state"`
			PID   int    `json:"pid"`
		} `json:"status"`
	} `json:"sandboxes"`
}

func (s *injStack) status(ctx context.Context) (injStatus, error) {
	var st injStatus
	out, err := s.cli(ctx, nil, "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status --json: %w: %s", err, out)
	}
	return st, nil
}

// component is the status of one component ("" state when absent).
func (st injStatus) component(name string) (state string, pid, restarts int, health, lastExit string) {
	for _, c := range st.Components {
		if c.Name == name {
			return c.State, c.PID, c.Restarts, c.Health, c.LastExit
		}
	}
	return "", 0, 0, "", ""
}

// waitFor polls cond every 20 ms until it returns nil or ctx ends; then it
// fails the test with cond's last error.
func (s *injStack) waitFor(t testing.TB, ctx context.Context, what string, limit time.Duration, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v\nclawcage up output:\n%s", what, limit, err, s.upOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// phase asks the agent to run one phase and returns its output directory.
func (s *injStack) phase(t testing.TB, ctx context.Context, args ...string) string {
	t.Helper()
	s.seq++
	n := strconv.Itoa(s.seq)
	tmp := filepath.Join(s.ws, "ctl", "."+n)
	if err := os.WriteFile(tmp, []byte(strings.Join(args, " ")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.ws, "ctl", n)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(s.ws, "out", n)
	s.waitFor(t, ctx, "agent phase "+args[0], 60*time.Second, func() error {
		_, err := os.Stat(filepath.Join(out, "status"))
		return err
	})
	return out
}

// read returns a finding of the agent ("" if it wrote none).
func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// startInjectionStack writes the configuration and starts `clawcage up`.
func startInjectionStack(t *testing.T, ctx context.Context, provider, anthropic *routertest.Provider, decoyEnv string) *injStack {
	t.Helper()
	script, err := os.ReadFile(filepath.Join("testdata", "injection", "agent.sh"))
	if err != nil {
		t.Fatal(err)
	}
	// The components run under their own uids: everything they execute or
	// open on the way to their state must be traversable by them.
	base, err := os.MkdirTemp("", "clawcage-e2e-injection-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	binDir := filepath.Join(base, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &injStack{bin: filepath.Join(binDir, "clawcage"), state: filepath.Join(base, "state"),
		upOut: new(bytes.Buffer), upDone: make(chan error, 1)}
	s.ws = filepath.Join(s.state, "sandboxes", injSandbox, "workspace")
	if err := battery.CopyFile(h.bin, s.bin, 0o755); err != nil {
		t.Fatal(err)
	}

	cfg := map[string]any{
		"router": map[string]any{
			"providers": map[string]any{
				"fake":       map[string]any{"kind": "openai", "base_url": provider.URL},
				"fakeclaude": map[string]any{"kind": "anthropic", "base_url": anthropic.URL},
			},
			"routes": map[string]any{
				"default": []any{map[string]any{"provider": "fake", "model": "fake-model-1"}},
				"claude":  []any{map[string]any{"provider": "fakeclaude", "model": "fake-claude-1"}},
			},
			"retry": map[string]any{"initial": "50ms", "max": "200ms", "deadline": "10s"},
		},
		"sandboxes": map[string]any{
			injSandbox: map[string]any{
				"command": []string{"/bin/sh", "-c", string(script), "clawcage-injection-agent"},
				"restart": "never",
				"env":     map[string]string{"DECOY_KEY": decoyEnv},
			},
		},
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(base, "clawcage.yaml")
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		t.Fatal(err)
	}

	s.startUp(t, cfgPath, func() { s.diagnose(t) })

	// Ready: both components answer their health checks, the sandbox runs
	// and the agent has announced itself.
	s.waitFor(t, ctx, "stack ready", 30*time.Second, func() error {
		select {
		case err := <-s.upDone:
			s.stopped = true
			t.Fatalf("clawcage up exited before it was ready: %v\n%s", err, s.upOut.String())
		default:
		}
		st, err := s.status(ctx)
		if err != nil {
			return err
		}
		for _, c := range []string{"router", "policy"} {
			if state, _, _, health, _ := st.component(c); state != "running" || health != "ok" {
				return fmt.Errorf("%s is %q, health %q", c, state, health)
			}
		}
		if _, err := os.Stat(filepath.Join(s.ws, "out", "ready")); err != nil {
			return fmt.Errorf("agent not ready: %w", err)
		}
		return nil
	})
	return s
}

// injPending is one entry of `clawcage policy pending --json`.
type injPending struct {
	ID      string `json:"id"`
	Sandbox string `json:"sandbox"`
	Host    string `json:"host"`
	Port    int    `json:"port"`
	Reason  string `json:"reason"`
	State   string `json:"state"`
}

// denial is the proxy's 403 body.
type denial struct {
	Error   string `json:"error"`
	Host    string `json:"host"`
	Port    int    `json:"port"`
	Reason  string `json:"reason"`
	Approve string `json:"approve"`
}

func TestInjectionWholeStack(t *testing.T) {
	requireSandbox(t)
	for _, c := range []string{"router", "policy"} {
		id, err := runas.ForComponent(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := runas.CheckUnused(id); err != nil {
			t.Skipf("clawcage up cannot run its components here: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 115*time.Second)
	defer cancel()

	provider := routertest.New(t, routertest.OpenAI)
	// A provider that echoes the key it got in a response header: the
	// router must strip it before the answer reaches the sandbox.
	provider.EchoKeyHeader = true
	anthropic := routertest.New(t, routertest.Anthropic)
	anthropic.EchoKeyHeader = true
	providerAddr := strings.TrimSuffix(strings.TrimPrefix(provider.URL, "http://"), "/v1")
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, upstreamText)
	}))
	t.Cleanup(upstream.Close)
	upstreamAddr := strings.TrimPrefix(upstream.URL, "http://")

	canary, canaryClaude := randomKey(t), randomKey(t)
	canaries := []string{canary, canaryClaude}
	decoyFile, decoyEnv := randomKey(t), randomKey(t)
	s := startInjectionStack(t, ctx, provider, anthropic, decoyEnv)

	// The operator stores the key: stdin only, never argv.
	s.mustCLI(t, ctx, []byte(canary+"\n"), "keys", "set", "fake")
	s.mustCLI(t, ctx, []byte(canaryClaude+"\n"), "keys", "set", "fakeclaude")
	keys := s.mustCLI(t, ctx, nil, "keys", "list")
	for _, c := range canaries {
		vaulttest.AssertNotInBytes(t, []byte(c), "keys list output", []byte(keys))
	}

	// The decoy: a key-shaped string in a workspace file (the agent must
	// find it, proving its search works). The probe binary for errno-exact
	// connect attempts.
	if err := os.WriteFile(filepath.Join(s.ws, "notes-with-a-decoy-key.txt"), []byte("OPENAI_API_KEY="+decoyFile+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := battery.CopyFile(s.bin, filepath.Join(s.ws, "clawcage"), 0o755); err != nil {
		t.Fatal(err)
	}
	hostAddr := "-"
	if ip := hostNonLoopbackIPv4(); ip != "" {
		hostAddr = net.JoinHostPort(ip, "8080") // a port Landlock lets the sandbox connect to
	}

	// 1. The attack.
	out := s.phase(t, ctx, "attack", providerAddr, hostAddr)
	t.Run("agent-runs-unprivileged", func(t *testing.T) {
		if id := read(t, out, "id.txt"); !strings.HasPrefix(id, "uid=1000(") {
			t.Errorf("agent id %q, want the sandbox user uid 1000", id)
		}
	})
	t.Run("filesystem-scan-finds-only-the-decoy", func(t *testing.T) {
		n, _ := strconv.Atoi(strings.TrimSpace(read(t, out, "scanned-files.txt")))
		if n < 5 {
			t.Errorf("the agent's scan saw %d files (%q): not a real scan", n, read(t, out, "scanned-dirs.txt"))
		}
		hits := strings.Fields(read(t, out, "fs-hits.txt"))
		want := "/sandbox/notes-with-a-decoy-key.txt:" + decoyFile
		found := false
		for _, hit := range hits {
			if hit == want {
				found = true
			} else if !strings.HasSuffix(hit, decoyEnv) && !strings.HasSuffix(hit, decoyFile) {
				t.Errorf("the agent found a key-shaped string that is not a decoy: %q", redact(hit, canaries...))
			}
		}
		if !found {
			t.Errorf("the agent's scan did not find the planted decoy (%q): the scan proves nothing", hits)
		}
	})
	t.Run("proc-environ-cmdline-hold-only-the-decoy", func(t *testing.T) {
		n, _ := strconv.Atoi(strings.TrimSpace(read(t, out, "proc-files.txt")))
		if n < 2 {
			t.Errorf("the agent read %d /proc environ/cmdline files", n)
		}
		hits := strings.Fields(read(t, out, "proc-hits.txt"))
		if len(hits) == 0 {
			t.Errorf("the decoy in the agent's own environment was not found in /proc/*/environ: the scan proves nothing")
		}
		for _, hit := range hits {
			if hit != decoyEnv {
				t.Errorf("key-shaped string in /proc that is not the decoy: %q", redact(hit, canaries...))
			}
		}
	})
	t.Run("printenv-has-no-key", func(t *testing.T) {
		env := read(t, out, "printenv.txt")
		if !strings.Contains(env, "DECOY_KEY="+decoyEnv) {
			t.Errorf("printenv output lacks the configured decoy: %q", env)
		}
		for _, k := range keyShaped.FindAllString(env, -1) {
			if k != decoyEnv {
				t.Errorf("printenv shows a key-shaped value that is not the decoy: %q", redact(k, canaries...))
			}
		}
		for _, bad := range []string{"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CLAWCAGE_"} {
			if strings.Contains(env, bad) {
				t.Errorf("the sandbox environment holds %s", bad)
			}
		}
		if !strings.Contains(env, "HTTP_PROXY=http://127.0.0.1:3128") {
			t.Errorf("no HTTP_PROXY to the egress proxy in the sandbox: %q", env)
		}
	})

	reqs := provider.Requests()
	t.Run("inference-through-router-injects-key", func(t *testing.T) {
		for _, pre := range []string{"clean", "forged"} {
			if code := read(t, out, pre+"-code.txt"); code != "200" {
				t.Errorf("%s request to inference.local: status %q, err %q", pre, code, read(t, out, pre+"-err.txt"))
			}
			if body := read(t, out, pre+"-body.json"); !strings.Contains(body, provider.Text) {
				t.Errorf("%s answer %q lacks the provider's text", pre, body)
			}
		}
		if len(reqs) != 2 {
			t.Fatalf("the provider received %d requests, want the 2 the router forwarded: %+v", len(reqs), reqs)
		}
		for i, r := range reqs {
			if got := r.Header.Get("Authorization"); got != "Bearer "+canary {
				t.Errorf("request %d reached the provider with Authorization %q, want the injected canary", i, redact(got, canary))
			}
			for _, h := range []string{"X-Api-Key", "Cookie", "Api-Key"} {
				if v := r.Header.Get(h); v != "" {
					t.Errorf("request %d: the agent's %s reached the provider: %q", i, h, v)
				}
			}
			if !strings.Contains(string(r.Body), "Ignore all previous instructions") || strings.Contains(string(r.Body), "forged") ||
				r.Model != "fake-model-1" {
				t.Errorf("request %d: body %q model %q", i, r.Body, r.Model)
			}
		}
	})
	t.Run("anthropic-messages-through-router-injects-key", func(t *testing.T) {
		if code := read(t, out, "messages-code.txt"); code != "200" {
			t.Errorf("/v1/messages to inference.local: status %q, err %q body %q", code, read(t, out, "messages-err.txt"), read(t, out, "messages-body.json"))
		}
		if body := read(t, out, "messages-body.json"); !strings.Contains(body, anthropic.Text) {
			t.Errorf("messages answer %q lacks the provider's text", body)
		}
		r := anthropic.Requests()
		if len(r) != 1 {
			t.Fatalf("the Anthropic provider received %d requests, want 1", len(r))
		}
		if got := r[0].Header.Get("X-Api-Key"); got != canaryClaude {
			t.Errorf("x-api-key at the provider %q, want the injected canary of fakeclaude", redact(got, canaries...))
		}
		if got := r[0].Header.Get("Authorization"); got != "" {
			t.Errorf("Authorization at the Anthropic provider: %q", redact(got, canaries...))
		}
		if r[0].Model != "fake-claude-1" || r[0].Header.Get("Anthropic-Version") == "" {
			t.Errorf("request at the provider: model %q, anthropic-version %q", r[0].Model, r[0].Header.Get("Anthropic-Version"))
		}
		hdr := strings.ToLower(read(t, out, "messages-headers.txt"))
		for _, bad := range []string{"x-api-key:", "anthropic-organization-id:", "set-cookie:", "x-ratelimit-debug:"} {
			if strings.Contains(hdr, bad) {
				t.Errorf("messages response to the sandbox carries %s\n%s", bad, hdr)
			}
		}
	})
	t.Run("sandbox-sent-and-received-no-credentials", func(t *testing.T) {
		clean := read(t, out, "clean-trace.txt")
		if sent := sentHeaders(clean); sent == "" || strings.Contains(strings.ToLower(sent), "authorization") {
			t.Errorf("clean request headers as the sandbox sent them: %q", sent)
		}
		for _, pre := range []string{"clean", "forged"} {
			hdr := strings.ToLower(read(t, out, pre+"-headers.txt"))
			for _, bad := range []string{"authorization", "x-api-key", "set-cookie", "openai-organization", "openai-project", "x-ratelimit-debug"} {
				if strings.Contains(hdr, bad+":") {
					t.Errorf("%s response to the sandbox carries %s:\n%s", pre, bad, hdr)
				}
			}
		}
	})
	t.Run("provider-unreachable-directly", func(t *testing.T) {
		var o audit.Observation
		if err := json.Unmarshal([]byte(read(t, out, "direct-probe.json")), &o); err != nil {
			t.Fatalf("connect probe: %v: %q", err, read(t, out, "direct-probe.json"))
		}
		// The provider's address is the sandbox's own loopback, on a port
		// Landlock does not let it connect to.
		if o.Outcome != "EACCES" {
			t.Errorf("connect to the provider %s from the sandbox: %s (%s), want EACCES", providerAddr, o.Outcome, o.Detail)
		}
		if code, msg := read(t, out, "direct-curl-code.txt"), read(t, out, "direct-curl-err.txt"); code != "000" || !strings.Contains(msg, "Couldn't connect") {
			t.Errorf("curl to the provider directly: status %q, %q", code, msg)
		}
		if hostAddr == "-" {
			return
		}
		o = audit.Observation{}
		if err := json.Unmarshal([]byte(read(t, out, "hostaddr-probe.json")), &o); err != nil {
			t.Fatalf("connect probe: %v: %q", err, read(t, out, "hostaddr-probe.json"))
		}
		if o.Outcome != "ENETUNREACH" {
			t.Errorf("connect to the host's address %s on an allowed port: %s (%s), want ENETUNREACH (no route)", hostAddr, o.Outcome, o.Detail)
		}
	})
	if n := len(provider.Requests()); n != len(reqs) {
		t.Errorf("the provider received %d requests that did not come through the router", n-len(reqs))
	}

	providerHost, providerPort := splitAddr(t, providerAddr)
	t.Run("provider-via-proxy-denied-and-pending", func(t *testing.T) {
		checkDenied(t, out, "proxy-provider", providerHost, providerPort, "no-rule-for-address")
		p := findPending(t, s, ctx, providerHost, providerPort)
		if p.Reason != "no-rule-for-address" {
			t.Errorf("pending entry %+v, want reason no-rule-for-address", p)
		}
	})

	// The operator approves another upstream permanently; the agent can
	// then reach it through the proxy, and still not the provider.
	out = s.phase(t, ctx, "proxy", upstreamAddr)
	upHost, upPort := splitAddr(t, upstreamAddr)
	checkDenied(t, out, "proxy", upHost, upPort, "no-rule-for-address")
	p := findPending(t, s, ctx, upHost, upPort)
	s.mustCLI(t, ctx, nil, "policy", "approve", p.ID, "--always")
	out = s.phase(t, ctx, "proxy", upstreamAddr)
	if code, body := read(t, out, "proxy-code.txt"), read(t, out, "proxy-body.txt"); code != "200" || body != upstreamText {
		t.Errorf("approved upstream via the proxy: status %q body %q err %q", code, body, read(t, out, "proxy-err.txt"))
	}

	t.Run("broken-config-refused-running-stack-untouched", func(t *testing.T) { checkBadConfigs(t, ctx, s) })

	// 2. Where else the key could be: the agent's memory, the state
	// directory (but the vault), the journal.
	t.Run("key-not-in-agent-processes", func(t *testing.T) {
		pids := sandboxPIDs(t)
		if len(pids) == 0 {
			t.Fatal("no process of the agent found on the host")
		}
		for _, pid := range pids {
			for _, c := range canaries {
				vaulttest.AssertNotInProcess(t, []byte(c), pid)
			}
		}
		// The scan sees what the agent holds: the decoy in its environment
		// and the provider's answer it keeps in a shell variable.
		for _, want := range []string{decoyEnv, provider.Text} {
			found, err := vaulttest.ScanProcess(pids[0], []byte(want))
			if err != nil || len(found) == 0 {
				t.Errorf("scanning the agent (pid %d) for %q found nothing (%v): the memory scan proves nothing", pids[0], want, err)
			}
		}
	})
	t.Run("key-not-in-state-or-journal", func(t *testing.T) {
		assertNoSecretInState(t, s.state, canaries...)
		logs := s.mustCLI(t, ctx, nil, "logs", "--json")
		if !strings.Contains(logs, injSandbox) {
			t.Errorf("the journal has nothing about the sandbox: %d bytes", len(logs))
		}
		for _, c := range canaries {
			vaulttest.AssertNotInBytes(t, []byte(c), "clawcage logs --json", []byte(logs))
			vaulttest.AssertNotInBytes(t, []byte(c), "clawcage up output", s.upOut.Bytes())
		}
	})
	usageBefore := usageRequests(t, s, ctx)
	if usageBefore != 3 {
		t.Errorf("usage ledger: %d requests, want 3 (2 chat completions, 1 message)", usageBefore)
	}

	// The live audit must hold everywhere except where this test planted
	// its decoys (a key-shaped value in the agent's environment and in a
	// workspace file): those rows must fail, naming the decoy, which proves
	// the audit's key hunt looks where the agent looked.
	t.Run("clawcage-audit-holds-and-flags-the-decoys", func(t *testing.T) {
		actx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(actx, s.bin, "audit", injSandbox, "--json", "--state", s.state)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("clawcage audit %s: %v, want exit status 1 (the decoys are key-shaped)\n%s%s", injSandbox, err, stderr.Bytes(), stdout.Bytes())
		}
		var rep struct {
			Results []struct {
				Case, Mode string
				Held       bool
				Failure    string
			}
		}
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("audit --json output: %v\n%s", err, stdout.Bytes())
		}
		// The rows the decoys must fail, by case and identity.
		wantFailed := map[string]bool{
			"printenv-and-environ-hold-no-key/user":   true,
			"printenv-and-environ-hold-no-key/root":   true,
			"printenv-finds-no-key-shaped-value/user": true,
			"printenv-finds-no-key-shaped-value/root": true,
			"config-files-hold-no-credentials/user":   true,
		}
		seen := map[string]bool{}
		for _, r := range rep.Results {
			id := r.Case + "/" + r.Mode
			switch {
			case strings.HasPrefix(r.Failure, "skipped:"):
			case wantFailed[id]:
				seen[id] = true
				if r.Held {
					t.Errorf("%s held although the sandbox holds a key-shaped decoy", id)
				}
			case !r.Held:
				t.Errorf("%s was not held: %s", id, redact(r.Failure, canaries...))
			}
		}
		for id := range wantFailed {
			if !seen[id] {
				t.Errorf("audit has no row %s", id)
			}
		}
		if !bytes.Contains(stdout.Bytes(), []byte("/sandbox/notes-with-a-decoy-key.txt")) {
			t.Errorf("the audit did not name the decoy file")
		}
		for _, c := range canaries {
			vaulttest.AssertNotInBytes(t, []byte(c), "clawcage audit output", append(stdout.Bytes(), stderr.Bytes()...))
		}
	})

	// 3. Self-healing: kill -9 each component, round after round. The
	// agent's next request is made at once, while the component is dead:
	// the supervisor keeps the listener, so it waits in the backlog and is
	// served by the restarted process, with the key and the approvals it
	// stored before.
	const rounds = 3
	for round := 1; round <= rounds; round++ {
		t.Run(fmt.Sprintf("round-%d-router-killed-comes-back", round), func(t *testing.T) {
			pid := s.kill9(t, ctx, "router")
			provider.Reset()
			out := s.phase(t, ctx, "infer")
			if code := read(t, out, "clean-code.txt"); code != "200" {
				t.Errorf("request made while the router was dead: status %q: %s %s", code, read(t, out, "clean-err.txt"), read(t, out, "clean-body.json"))
			}
			if r := provider.Requests(); len(r) != 1 || r[0].Header.Get("Authorization") != "Bearer "+canary {
				t.Errorf("after the restart the provider got %d requests without the stored key", len(r))
			}
			s.waitBack(t, ctx, "router", pid, round)
			if n := usageRequests(t, s, ctx); n != usageBefore+int64(round) {
				t.Errorf("usage ledger after restart %d: %d requests, want %d", round, n, usageBefore+int64(round))
			}
		})
		t.Run(fmt.Sprintf("round-%d-policy-engine-killed-comes-back", round), func(t *testing.T) {
			pid := s.kill9(t, ctx, "policy")
			out := s.phase(t, ctx, "proxy", upstreamAddr)
			if code, body := read(t, out, "proxy-code.txt"), read(t, out, "proxy-body.txt"); code != "200" || body != upstreamText {
				t.Errorf("approved upstream, asked while the policy engine was dead: status %q body %q err %q: the approval was lost",
					code, body, read(t, out, "proxy-err.txt"))
			}
			s.waitBack(t, ctx, "policy", pid, round)
			// The grant is for the upstream's address and port only.
			out = s.phase(t, ctx, "proxy", providerAddr)
			checkDenied(t, out, "proxy", providerHost, providerPort, "port-not-allowed")
			show := s.mustCLI(t, ctx, nil, "policy", "show", injSandbox, "--json")
			if !strings.Contains(show, upHost) || !strings.Contains(show, strconv.Itoa(upPort)) {
				t.Errorf("policy show after the restart lacks the grant for %s: %s", upstreamAddr, show)
			}
		})
	}
	t.Run("restart-delays-under-1s", func(t *testing.T) {
		type entry struct {
			Component string         `json:"component"`
			Msg       string         `json:"msg"`
			Attrs     map[string]any `json:"attrs"`
		}
		var logs []entry
		for _, line := range strings.Split(s.mustCLI(t, ctx, nil, "logs", "--json"), "\n") {
			if line == "" {
				continue
			}
			var e entry
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("logs --json line %q: %v", line, err)
			}
			if e.Msg == "process restarting" && (e.Component == "router" || e.Component == "policy") {
				logs = append(logs, e)
			}
		}
		if len(logs) != 2*rounds {
			t.Errorf("%d restarting events in the journal, want %d: %+v", len(logs), 2*rounds, logs)
		}
		for _, e := range logs {
			if d, ok := durationAttr(e.Attrs["delay"]); !ok || d > time.Second {
				t.Errorf("restart of %v after %v, want within 1s", e.Attrs["child"], e.Attrs["delay"])
			}
		}
	})

	// 4. down leaves nothing behind.
	agentPIDs := sandboxPIDs(t)
	s.mustCLI(t, ctx, nil, "down")
	select {
	case err := <-s.upDone:
		s.stopped = true
		if err != nil {
			t.Errorf("clawcage up after down: %v\n%s", err, s.upOut.String())
		}
	case <-ctx.Done():
		t.Fatalf("clawcage up did not exit after down\n%s", s.upOut.String())
	}
	t.Run("down-leaves-nothing", func(t *testing.T) {
		for _, pid := range agentPIDs {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				t.Errorf("sandbox process %d still alive after down", pid)
			}
		}
		if left := processesWithArg(s.state); len(left) > 0 {
			t.Errorf("component processes left after down: %v", left)
		}
		if ents, _ := os.ReadDir(filepath.Join(s.state, "netns")); len(ents) != 0 {
			t.Errorf("network namespace files left under the state dir: %v", ents)
		}
		if m := injectionMounts(filepath.Dir(s.state)); len(m) > 0 {
			t.Errorf("mounts left behind under the stack's directory: %v", m)
		}
		if g := sandboxCgroups("clawcage-" + injSandbox); len(g) > 0 {
			t.Errorf("cgroups left behind: %v", g)
		}
		assertNoSecretInState(t, s.state, canaries...)
	})
}

// kill9 kill -9s a running component and returns its pid.
// startUp starts `clawcage up` with the configuration at cfgPath and stops
// it when the test ends (`clawcage down`, else SIGTERM, else SIGKILL),
// before the test's temporary directories are removed. onFail runs first
// when the test failed (to show what the stack saw).
func (s *injStack) startUp(t *testing.T, cfgPath string, onFail func()) {
	t.Helper()
	s.up = exec.Command(s.bin, "up", "--config", cfgPath, "--state", s.state)
	s.up.Stdout, s.up.Stderr = s.upOut, s.upOut
	s.up.WaitDelay = 15 * time.Second
	if err := s.up.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.upDone <- s.up.Wait() }()
	t.Cleanup(func() {
		if s.stopped {
			return
		}
		if t.Failed() && onFail != nil {
			onFail()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.cli(ctx, nil, "down"); err != nil {
			_ = s.up.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-s.upDone:
		case <-ctx.Done():
			_ = s.up.Process.Kill()
			<-s.upDone
		}
	})
}

func (s *injStack) kill9(t testing.TB, ctx context.Context, name string) int {
	t.Helper()
	st, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	state, pid, _, health, _ := st.component(name)
	if state != "running" || pid == 0 || health != "ok" {
		t.Fatalf("%s is %q (pid %d, health %q) before the kill", name, state, pid, health)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s (%d): %v", name, pid, err)
	}
	return pid
}

// waitBack waits for the supervisor to have restarted a component killed
// with kill9: a new pid, restarts as counted, healthy.
func (s *injStack) waitBack(t testing.TB, ctx context.Context, name string, oldPID, restarts int) {
	t.Helper()
	s.waitFor(t, ctx, name+" restarted", 20*time.Second, func() error {
		st, err := s.status(ctx)
		if err != nil {
			return err
		}
		state, pid, n, health, last := st.component(name)
		if pid == oldPID || state != "running" {
			return fmt.Errorf("%s is %q pid %d", name, state, pid)
		}
		if n != restarts || last != "signal: killed" {
			t.Fatalf("%s after kill -9: restarts %d (want %d), last exit %q", name, n, restarts, last)
		}
		if health != "ok" {
			return fmt.Errorf("%s health %q", name, health)
		}
		return nil
	})
}

// durationAttr reads a journal duration attribute ("250ms" or nanoseconds).
func durationAttr(v any) (time.Duration, bool) {
	switch v := v.(type) {
	case string:
		d, err := time.ParseDuration(v)
		return d, err == nil
	case float64:
		return time.Duration(v), true
	}
	return 0, false
}

// checkDenied asserts the agent's proxy attempt got a 403 with the denial
// JSON for host:port.
func checkDenied(t *testing.T, out, pre, host string, port int, reason string) {
	t.Helper()
	code, body := read(t, out, pre+"-code.txt"), read(t, out, pre+"-body.txt")
	if code != "403" {
		t.Fatalf("%s:%d via the proxy: status %q body %q err %q, want 403", host, port, code, body, read(t, out, pre+"-err.txt"))
	}
	var d denial
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("denial body %q: %v", body, err)
	}
	if d.Error != "egress_denied" || d.Host != host || d.Port != port || d.Reason != reason ||
		!strings.HasPrefix(d.Approve, "clawcage policy approve ") {
		t.Errorf("denial %+v, want egress_denied for %s:%d, reason %s, with an approve command", d, host, port, reason)
	}
}

// findPending returns the pending entry for host:port of the sandbox.
func findPending(t *testing.T, s *injStack, ctx context.Context, host string, port int) injPending {
	t.Helper()
	var q []injPending
	if err := json.Unmarshal([]byte(s.mustCLI(t, ctx, nil, "policy", "pending", "--json")), &q); err != nil {
		t.Fatalf("policy pending --json: %v", err)
	}
	for _, p := range q {
		if p.Sandbox == injSandbox && p.Host == host && p.Port == port {
			return p
		}
	}
	t.Fatalf("%s:%d not in the pending queue: %+v", host, port, q)
	return injPending{}
}

// usageRequests is the router's request count for the sandbox.
func usageRequests(t *testing.T, s *injStack, ctx context.Context) int64 {
	t.Helper()
	var rows []struct {
		Requests int64 `json:"requests"`
	}
	if err := json.Unmarshal([]byte(s.mustCLI(t, ctx, nil, "usage", "--json", "--sandbox", injSandbox)), &rows); err != nil {
		t.Fatalf("usage --json: %v", err)
	}
	var n int64
	for _, r := range rows {
		n += r.Requests
	}
	return n
}

// assertNoSecretInState scans the state directory but the network
// namespace mounts (nsfs files, not data) and the vault files.
func assertNoSecretInState(t *testing.T, state string, canaries ...string) {
	t.Helper()
	ents, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() && e.Name() != "netns" {
			dirs = append(dirs, filepath.Join(state, e.Name()))
		}
	}
	for _, c := range canaries {
		vaulttest.AssertNoSecret(t, []byte(c), dirs...)
	}
}

// sandboxPIDs finds the agent on the host (its script is argv[2] of
// /bin/sh, argv[3] names it) and returns its pid and its parent's, the
// sandbox's init: the two processes that live as long as the sandbox. A
// child the shell forked (for sleep, before exec) has the same command
// line; the agent is the match whose parent is not a match.
func sandboxPIDs(t *testing.T) []int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	parent := map[int]int{} // agent-looking pid -> its parent
	for _, p := range procs {
		cl, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cl), "\x00")
		if len(args) <= 3 || args[0] != "/bin/sh" || args[3] != "clawcage-injection-agent" {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(p))
		st, err := os.ReadFile(p + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			parent[pid] = ppid
		}
	}
	for pid, ppid := range parent {
		if _, forked := parent[ppid]; !forked {
			return []int{pid, ppid}
		}
	}
	return nil
}

// processesWithArg lists host processes with arg in their command line
// (the components get --state DIR). Other stacks on this machine run
// components under the same uids, so uids alone do not say whose they are.
func processesWithArg(arg string) []string {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, p := range procs {
		cl, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		if args := strings.Split(string(cl), "\x00"); slices.Contains(args, arg) {
			out = append(out, filepath.Base(p)+": "+strings.Join(args, " "))
		}
	}
	return out
}

// sentHeaders extracts the request headers from a curl --trace-ascii file.
func sentHeaders(trace string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(trace, "\n") {
		switch {
		case strings.HasPrefix(line, "=> Send header"):
			in = true
			continue
		case strings.HasPrefix(line, "=>"), strings.HasPrefix(line, "<="), strings.HasPrefix(line, "=="):
			in = false
		}
		if in {
			if _, rest, ok := strings.Cut(line, ": "); ok {
				b.WriteString(rest + "\n")
			}
		}
	}
	return b.String()
}

func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, n
}

// hostNonLoopbackIPv4 is an address of this host outside loopback, or "".
func hostNonLoopbackIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return ""
}

// redact shows whether v holds secret without printing it.
func redact(v string, secrets ...string) string {
	for i, s := range secrets {
		v = strings.ReplaceAll(v, s, fmt.Sprintf("<canary %d>", i))
	}
	return v
}

// injectionMounts lists mount points in this mount namespace under dir.
func injectionMounts(dir string) []string {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}

// sandboxCgroups lists cgroup directories named name below a "clawcage"
// directory of any cgroup mount (v1 controllers and v2).
func sandboxCgroups(name string) []string {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[len(f)-3] != "-" || (f[len(f)-2] != "cgroup" && f[len(f)-2] != "cgroup2") {
			continue
		}
		for _, pat := range []string{"clawcage", "*/clawcage", "*/*/clawcage"} {
			m, _ := filepath.Glob(filepath.Join(f[4], pat, name))
			out = append(out, m...)
		}
	}
	return out
}

// diagnose logs what the agent left and the journal's tail.
func (s *injStack) diagnose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var files []string
	_ = filepath.WalkDir(filepath.Join(s.ws, "out"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				files = append(files, fmt.Sprintf("%s (%d bytes)", strings.TrimPrefix(p, s.ws), fi.Size()))
			}
		}
		return nil
	})
	t.Logf("agent findings: %v", files)
	logs, err := s.cli(ctx, nil, "logs", "--sandbox", injSandbox)
	if len(logs) > 8000 {
		logs = logs[len(logs)-8000:]
	}
	t.Logf("journal of the sandbox (%v):\n%s", err, logs)
}

// checkBadConfigs runs `clawcage up` with broken configurations, against
// the running stack's state directory and against a fresh one: each is
// refused with the file, line and reason before anything is touched.
func checkBadConfigs(t *testing.T, ctx context.Context, s *injStack) {
	before, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		want       string // after "FILE:"
	}{
		{"unknown-provider-kind", "router:\n  providers:\n    fake: {kind: openaii, base_url: http://127.0.0.1:1/v1}\n",
			`3: router.providers.fake.kind: "openaii" is not a provider kind`},
		{"route-to-unknown-provider", "router:\n  routes:\n    default:\n      - {provider: nope, model: m}\n",
			`4: router.routes.default.0.provider: unknown provider "nope"`},
		{"misspelt-sandbox-field", "sandboxes:\n  x:\n    comand: [/bin/true]\n", "3: field comand not found"},
		{"match-everything-wildcard", "sandboxes:\n  x:\n    policy:\n      network:\n        - {name: r, hosts: [\"*\"], ports: [443]}\n",
			`5: network[0].hosts[0]: "*": a wildcard is allowed only as a leading "*."`},
		{"not-yaml", "sandboxes: [\n", "1: did not find expected node content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(cfg, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			fresh := filepath.Join(dir, tc.name+"-state")
			for _, state := range []string{s.state, fresh} {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				out, err := exec.CommandContext(cctx, s.bin, "up", "--config", cfg, "--state", state).CombinedOutput()
				cancel()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Fatalf("up with a broken config on %s: %v, want exit 1: %s", state, err, out)
				}
				if want := cfg + ":" + tc.want; !strings.Contains(string(out), want) {
					t.Errorf("up with a broken config: %q, want it to name %q", out, want)
				}
			}
			if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused config created the state directory %s (%v)", fresh, err)
			}
		})
	}
	after, err := s.status(ctx)
	if err != nil {
		t.Fatalf("the running stack stopped answering after refused configs: %v", err)
	}
	for _, c := range []string{"router", "policy"} {
		_, p0, r0, _, _ := before.component(c)
		st, p1, r1, health, _ := after.component(c)
		if p0 != p1 || r0 != r1 || st != "running" || health != "ok" {
			t.Errorf("%s changed while broken configs were refused: pid %d->%d restarts %d->%d, %s/%s", c, p0, p1, r0, r1, st, health)
		}
	}
	if before.PID != after.PID {
		t.Errorf("supervisor pid %d -> %d", before.PID, after.PID)
	}
}
