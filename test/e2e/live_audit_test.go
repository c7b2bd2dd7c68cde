package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/clawcage/clawcage/internal/audit/live"
	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/router/routertest"
	"github.com/clawcage/clawcage/internal/runas"
	"github.com/clawcage/clawcage/internal/vault"
)

// `clawcage audit SANDBOX` against live sandboxes of a real stack, and the
// key hunt it is built on against one-shot sandboxes with a real router
// scan: every row must hold for a clean sandbox, and the specific rows
// must fail when the canary key is in the sandbox's environment or files.

// liveAuditReport is the part of `clawcage audit --json` the test reads.
type liveAuditReport struct {
	Kernel   string `json:"kernel"`
	Clawcage string `json:"clawcage"`
	Target   string `json:"target"`
	Sandbox  string `json:"sandbox"`
	Passed   int    `json:"passed"`
	Failed   int    `json:"failed"`
	Skipped  int    `json:"skipped"`
	Results  []battery.Result
}

func (r liveAuditReport) row(t *testing.T, prefix, mode string) battery.Result {
	t.Helper()
	for _, res := range r.Results {
		if strings.HasPrefix(res.Case, prefix) && res.Mode == mode {
			return res
		}
	}
	t.Fatalf("no row %q as %s in the report", prefix, mode)
	return battery.Result{}
}

// keyHuntRows are the rows of one key hunt.
var keyHuntRows = []string{"printenv-and-environ-hold-no-key", "config-files-hold-no-credentials", "filesystem-scan-finds-no-key-bytes",
	"request-to-inference-carries-no-authorization", "inference-answer-carries-no-provider-credentials"}

// scanRouter serves a real router admin API (vault with the canary key)
// on a Unix socket and returns a client for it.
func scanRouter(t *testing.T, canary string) *admin.Client {
	t.Helper()
	dir := t.TempDir()
	v, err := vault.Open(filepath.Join(dir, "router"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	if _, err := v.Set("fake", []byte(canary)); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "router", "admin.sock")
	l, err := admin.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.NewHandler(admin.Deps{Vault: v}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := admin.DialSocket(sock)
	t.Cleanup(c.Close)
	return c
}

// oneShotExec enters a fresh `clawcage sandbox run` over ws for every
// command: the same probe and judging as a live sandbox, without a stack.
func oneShotExec(ws string, env []string) battery.Exec {
	return func(ctx context.Context, argv []string, root bool, stdin, stdout, stderr *os.File) (int, error) {
		args := []string{"sandbox", "run", "--workspace", ws}
		if root {
			args = append(args, "--root")
		}
		for _, e := range env {
			args = append(args, "--env", e)
		}
		args = append(append(args, "--"), argv...)
		cmd := exec.CommandContext(ctx, h.bin, args...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			return 0, err
		}
		return cmd.ProcessState.ExitCode(), nil
	}
}

func TestLiveAuditKeyHuntInOneShotSandboxes(t *testing.T) {
	requireSandbox(t)
	canary := randomKey(t)
	scanner := scanRouter(t, canary)
	tests := []struct {
		name   string
		env    []string
		file   string   // workspace file holding the canary ("" none)
		failed []string // rows that must fail; all others must hold
	}{
		{"clean sandbox", nil, "", nil},
		{"canary key in the sandbox environment", []string{"OPENAI_API_KEY=" + canary}, "",
			[]string{"printenv-and-environ-hold-no-key", "request-to-inference-carries-no-authorization"}},
		{"canary key base64 in a workspace file", nil, "b64",
			[]string{"config-files-hold-no-credentials", "filesystem-scan-finds-no-key-bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			ws := t.TempDir()
			if err := os.Chmod(ws, 0o777); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(ws, battery.LiveDir)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := battery.CopyFile(h.bin, filepath.Join(dir, "clawcage"), 0o755); err != nil {
				t.Fatal(err)
			}
			if tt.file != "" {
				// At offset 1 of a longer base64 stream: the scan must find it at any alignment.
				enc := base64.StdEncoding.EncodeToString([]byte("x" + canary))
				if err := os.WriteFile(filepath.Join(ws, "settings.yaml"), []byte("token: "+enc+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			a := &live.Auditor{Sandbox: "oneshot", Exec: oneShotExec(ws, tt.env), Scanner: scanner,
				// No router in a one-shot sandbox: an address nothing answers on.
				InferenceURL: "http://127.0.0.1:8080/v1/models"}
			rows := a.KeyHunt(ctx, "user")
			for _, r := range rows {
				if strings.Contains(r.Failure+r.Observation.Detail, canary) {
					t.Fatalf("%s: the row holds the key itself", r.Case)
				}
				if r.Case == "inference-answer-carries-no-provider-credentials" {
					continue // nothing answers inference.local without a stack
				}
				mustFail := false
				for _, f := range tt.failed {
					mustFail = mustFail || f == r.Case
				}
				if mustFail == r.Held {
					t.Errorf("%s: held=%v, want held=%v (%s; %s)", r.Case, r.Held, !mustFail, r.Failure, r.Observation.Detail)
				}
				if mustFail && !strings.Contains(r.Failure, "fake key") && !strings.Contains(r.Failure, "OPENAI_API_KEY") {
					t.Errorf("%s: failure %q does not name the provider's key", r.Case, r.Failure)
				}
			}
			if r := rows[2]; r.Held && !regexp.MustCompile(`^[1-9]\d* files, `).MatchString(r.Observation.Detail) {
				t.Errorf("scan detail %q: no files scanned", r.Observation.Detail)
			}
			for _, r := range rows {
				t.Logf("%s: held=%v %s %s", r.Case, r.Held, r.Observation.Detail, r.Failure)
			}
		})
	}
}

// liveStack is a running `clawcage up` for the live audit.
type liveStack struct {
	*injStack
	canary string
}

func startLiveStack(t *testing.T, ctx context.Context) *liveStack {
	t.Helper()
	for _, c := range []string{"router", "policy"} {
		id, err := runas.ForComponent(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := runas.CheckUnused(id); err != nil {
			t.Skipf("clawcage up cannot run its components here: %v", err)
		}
	}
	provider := routertest.New(t, routertest.OpenAI)
	provider.EchoKeyHeader = true
	base, err := os.MkdirTemp("", "clawcage-e2e-live-audit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil { // component uids traverse it
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(base, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &injStack{bin: filepath.Join(base, "bin", "clawcage"), state: filepath.Join(base, "state"), upOut: new(bytes.Buffer), upDone: make(chan error, 1)}
	if err := battery.CopyFile(h.bin, s.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"router": map[string]any{
		"providers": map[string]any{"fake": map[string]any{"kind": "openai", "base_url": provider.URL}},
		"routes":    map[string]any{"default": []any{map[string]any{"provider": "fake", "model": "fake-model-1"}}},
	}}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(base, "clawcage.yaml")
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		t.Fatal(err)
	}
	s.startUp(t, cfgPath, func() { t.Logf("clawcage up output:\n%s", tail(s.upOut.String(), 6000)) })
	s.waitFor(t, ctx, "stack ready", 30*time.Second, func() error {
		select {
		case err := <-s.upDone:
			s.upDone <- err
			t.Fatalf("clawcage up exited: %v\n%s", err, s.upOut.String())
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
		return nil
	})
	ls := &liveStack{injStack: s, canary: randomKey(t)}
	s.mustCLI(t, ctx, []byte(ls.canary+"\n"), "keys", "set", "fake")
	return ls
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// audit runs `clawcage audit NAME --json` and returns the report and exit
// code; it skips the test when this build cannot enter live sandboxes.
func (s *liveStack) audit(t *testing.T, ctx context.Context, name string) (liveAuditReport, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 400*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, "audit", name, "--json", "--call-provider", "--state", s.state)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	if strings.Contains(errb.String(), "cannot enter a live sandbox yet") {
		t.Skipf("this build cannot enter live sandboxes yet: %s", errb.String())
	}
	var rep liveAuditReport
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("audit %s: %v (exit %d): no JSON report: %v\nstdout %s\nstderr %s", name, err, code, jerr, tail(out.String(), 3000), tail(errb.String(), 3000))
	}
	if strings.Contains(out.String()+errb.String(), s.canary) {
		t.Fatal("the audit's output holds the canary key")
	}
	return rep, code
}

func TestLiveAudit(t *testing.T) {
	requireSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 590*time.Second)
	defer cancel()
	s := startLiveStack(t, ctx)
	clean := fmt.Sprintf("la%d", os.Getpid())
	leaky := fmt.Sprintf("lb%d", os.Getpid())
	s.mustCLI(t, ctx, nil, "sandbox", "create", clean)
	s.mustCLI(t, ctx, nil, "sandbox", "create", leaky, "--env", "ANTHROPIC_API_KEY="+s.canary)

	t.Run("clean sandbox: every row holds", func(t *testing.T) {
		rep, code := s.audit(t, ctx, clean)
		for _, r := range rep.Results {
			if !r.Held && !strings.HasPrefix(r.Failure, "skipped:") {
				t.Errorf("%s (%s): %s", r.Case, r.Mode, r.Failure)
			}
		}
		if code != 0 || rep.Failed != 0 {
			t.Errorf("exit %d, %d failed; want 0, 0", code, rep.Failed)
		}
		if rep.Sandbox != clean || rep.Kernel == "" || rep.Clawcage == "" || rep.Passed < 150 {
			t.Errorf("evidence: sandbox %q kernel %q version %q passed %d", rep.Sandbox, rep.Kernel, rep.Clawcage, rep.Passed)
		}
		for _, mode := range []string{"user", "root"} {
			for _, name := range append(slicesClone(keyHuntRows), "reach-router-admin-socket", "reach-policy-engine-admin-socket",
				"read-router-state", "read-policy-engine-state", "read-router-memory", "read-policy-engine-memory", "reach-provider-fake-directly") {
				if r := rep.row(t, name, mode); !r.Held {
					t.Errorf("%s as %s did not hold", name, mode)
				}
			}
		}
		for _, name := range []string{"reach-provider-fake-through-proxy", "unapproved-host-denied-by-proxy"} {
			if r := rep.row(t, name, "user"); !r.Held {
				t.Errorf("%s did not hold", name)
			}
		}
		if r := rep.row(t, "unapproved-host-in-pending-queue", "host"); !r.Held || !strings.Contains(r.Observation.Detail, "queue entry") {
			t.Errorf("pending queue row: %+v", r)
		}
		// Skipped cases say why.
		for _, r := range rep.Results {
			if strings.HasPrefix(r.Failure, "skipped:") && len(r.Failure) < 20 {
				t.Errorf("%s skipped without a reason", r.Case)
			}
		}
		// Nothing left behind: not in the workspace, not approved, not pending.
		ws := filepath.Join(s.state, "sandboxes", clean, "workspace")
		if ents, _ := os.ReadDir(ws); len(ents) != 0 {
			t.Errorf("the audit left %d entries in the workspace (%v)", len(ents), ents[0].Name())
		}
		var pending []injPending
		if err := json.Unmarshal([]byte(s.mustCLI(t, ctx, nil, "policy", "pending", "--json")), &pending); err != nil {
			t.Fatal(err)
		}
		for _, p := range pending {
			if strings.HasPrefix(p.Host, "clawcage-audit-") && p.State == "pending" {
				t.Errorf("the audit host %s is still pending", p.Host)
			}
		}
		show := s.mustCLI(t, ctx, nil, "policy", "show", clean)
		if strings.Contains(show, "clawcage-audit-") {
			t.Errorf("the audit host was approved:\n%s", show)
		}
	})

	t.Run("canary key in the sandbox's environment and workspace: the audit fails on it", func(t *testing.T) {
		// hex-encoded in a workspace file, which only the default user can read.
		notes := filepath.Join(s.state, "sandboxes", leaky, "workspace", "notes.txt")
		if err := os.WriteFile(notes, []byte("backup: "+hex.EncodeToString([]byte(s.canary))+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		rep, code := s.audit(t, ctx, leaky)
		if code != 1 || rep.Failed == 0 {
			t.Fatalf("exit %d with %d failed; want exit 1", code, rep.Failed)
		}
		for _, mode := range []string{"user", "root"} {
			r := rep.row(t, "printenv-and-environ-hold-no-key", mode)
			if r.Held || !strings.Contains(r.Failure, "fake key") {
				t.Errorf("env row as %s: held=%v failure %q; want it failed naming the fake key", mode, r.Held, r.Failure)
			}
			r = rep.row(t, "request-to-inference-carries-no-authorization", mode)
			if r.Held || !strings.Contains(r.Failure, "ANTHROPIC_API_KEY") {
				t.Errorf("request row as %s: held=%v failure %q", mode, r.Held, r.Failure)
			}
		}
		for _, name := range []string{"config-files-hold-no-credentials", "filesystem-scan-finds-no-key-bytes"} {
			if r := rep.row(t, name, "user"); r.Held || !strings.Contains(r.Failure, `"/sandbox/notes.txt" holds a fake key (hex)`) {
				t.Errorf("%s as user: held=%v failure %q; want it failed on /sandbox/notes.txt", name, r.Held, r.Failure)
			}
			// Root inside the sandbox cannot read the default user's workspace.
			if r := rep.row(t, name, "root"); !r.Held {
				t.Errorf("%s as root failed: %s", name, r.Failure)
			}
		}
	})
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }
