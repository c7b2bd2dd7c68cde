package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/router/routertest"
	"github.com/clawcage/clawcage/internal/supervisor"
)

const (
	// demoSandboxPrefix starts the demo's sandbox name, unique per run
	// (cgroup names are machine-wide).
	demoSandboxPrefix = "demo"
	// demoDeniedHost is the unapproved host the agent tries through the proxy.
	demoDeniedHost = "exfil.example.com"
	demoDeniedPort = 443
	// demoObservations is the file (in the workspace) the agent writes.
	demoObservations = "demo-observations.json"
	// demoAgentLimit bounds how long the agent may take.
	demoAgentLimit = 60 * time.Second
)

// demoRow is one line of the demo's table.
type demoRow struct {
	Attack, Expected, Observed string
	OK                         bool
	// Skipped rows could not run here (OK is true); the table says so.
	Skipped bool
}

// demoAgentReport is what the agent inside the sandbox observed.
type demoAgentReport struct {
	Observations []audit.Observation `json:"observations"`
	// InferenceStatus is the HTTP status of the call to inference.local.
	InferenceStatus int `json:"inference_status"`
	// InferenceText is the answer's body.
	InferenceText string `json:"inference_text"`
	// InferenceKeyInAnswer is true when the answer (headers or body) held
	// a key-shaped string.
	InferenceKeyInAnswer bool   `json:"inference_key_in_answer"`
	InferenceErr         string `json:"inference_err,omitempty"`
}

func newDemoCmd(g *globalOptions) *cobra.Command {
	var quick bool
	cmd := &cobra.Command{
		Use:   "demo [--quick]",
		Short: "Show what clawcage holds, with a local stand-in provider: no API key needed",
		Long: `demo starts the whole stack in a temporary state directory with a local
stand-in provider (a fake speaking the OpenAI wire format, not a real model),
sets a random canary key for it, and runs a "compromised agent" in a sandbox
that hunts for the key, calls inference.local, tries to reach the provider
directly and an unapproved host through the proxy. Then it checks from the
host that the key was injected by the router only, runs "clawcage audit" against
the live sandbox (as its user and as root), and (without --quick) the one-shot
escape battery, whose resource-limit cases a live sandbox cannot take. It prints a table, shuts everything down, removes
the temporary directory, and exits 1 when anything did not hold.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("demo needs root: it starts the stack (namespaces, cgroups, component uids)")
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), quick)
		},
	}
	cmd.Flags().BoolVar(&quick, "quick", false, "skip the one-shot escape battery")
	cmd.AddCommand(newDemoAgentCmd())
	return cmd
}

// newDemoAgentCmd is the hidden "compromised agent" the demo runs in its sandbox.
func newDemoAgentCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "agent PROVIDER_ADDR ADMIN_SOCKET CONTROL_SOCKET",
		Hidden: true,
		Args:   cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if inInitialUserNamespace() {
				return errors.New("demo agent: refusing to run outside a sandbox")
			}
			ctx := cmd.Context()
			var rep demoAgentReport
			rep.Observations = append(rep.Observations,
				audit.Run(ctx, "secrets-env", nil),
				audit.Run(ctx, "secrets-files", []string{"", "/sandbox", "/etc", "/tmp", "/root", "/home", "/run", "/var", "/opt"}),
				audit.Run(ctx, "connect-tcp", []string{args[0]}),
				audit.Run(ctx, "hardening", nil),
				audit.Run(ctx, "unix-connect", []string{args[1]}),
				audit.Run(ctx, "unix-connect", []string{args[2]}),
				audit.Run(ctx, "proxy-deny", []string{net.JoinHostPort(demoDeniedHost, fmt.Sprint(demoDeniedPort))}),
			)
			demoInfer(ctx, &rep)
			b, err := json.Marshal(rep)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			tmp := filepath.Join("/sandbox", "."+demoObservations)
			if err := os.WriteFile(tmp, b, 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, filepath.Join("/sandbox", demoObservations))
		},
	}
}

// demoInfer calls inference.local without any credential, as an agent would.
func demoInfer(ctx context.Context, rep *demoAgentReport) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body := `{"model":"default","messages":[{"role":"user","content":"say hello"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://inference.local:8080/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		rep.InferenceErr = err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		rep.InferenceErr = err.Error()
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	rep.InferenceStatus = resp.StatusCode
	rep.InferenceText = string(b)
	var hdr bytes.Buffer
	_ = resp.Header.Write(&hdr)
	rep.InferenceKeyInAnswer = keyLike(hdr.Bytes()) || keyLike(b)
}

// keyLike looks for "sk-" followed by at least 32 key characters.
func keyLike(b []byte) bool {
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte("sk-"))
		if j < 0 {
			return false
		}
		k := i + j + 3
		n := 0
		for k+n < len(b) {
			c := b[k+n]
			if c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				n++
				continue
			}
			break
		}
		if n >= 32 {
			return true
		}
		i = k
	}
}

// demoRun is one run of the demo: its directories and processes.
type demoRun struct {
	base, bin, state, ws, name string
	liveRows                   []demoRow // the live audit's rows
	up                         *exec.Cmd
	upOut                      bytes.Buffer
	upDone                     chan error
}

func (d *demoRun) cli(ctx context.Context, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, d.bin, append(args, "--state", d.state)...)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("clawcage %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// poll calls cond every 50 ms until it returns nil, ctx ends or limit passes.
func poll(parent context.Context, what string, limit time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(parent, limit)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("%s: interrupted: %w", what, parent.Err())
			}
			return fmt.Errorf("%s: not within %s: %w", what, limit, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func runDemo(ctx context.Context, out io.Writer, quick bool) (err error) {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the clawcage binary: %w", err)
	}
	base, err := os.MkdirTemp("", "clawcage-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	// The components run under their own uids: they must traverse to the binary.
	if err := os.Chmod(base, 0o711); err != nil {
		return err
	}
	d := &demoRun{base: base, state: filepath.Join(base, "state"), name: fmt.Sprintf("%s%d", demoSandboxPrefix, os.Getpid()), upDone: make(chan error, 1)}
	d.ws = filepath.Join(d.state, "sandboxes", d.name, "workspace")
	if err := os.Mkdir(filepath.Join(base, "bin"), 0o755); err != nil {
		return err
	}
	d.bin = filepath.Join(base, "bin", "clawcage")
	if err := battery.CopyFile(exe, d.bin, 0o755); err != nil {
		return fmt.Errorf("copy the clawcage binary: %w", err)
	}

	provider, err := routertest.Start(routertest.OpenAI)
	if err != nil {
		return fmt.Errorf("start the stand-in provider: %w", err)
	}
	defer provider.Close()
	provider.Text = "hello from the stand-in provider"
	provider.EchoKeyHeader = true // the router must strip it on the way back
	providerAddr := strings.TrimSuffix(strings.TrimPrefix(provider.URL, "http://"), "/v1")
	fmt.Fprintf(out, "clawcage demo: state %s\nstand-in provider (local fake, not a real model) at %s\n", d.state, provider.URL)

	canaryB := make([]byte, 32)
	if _, err := rand.Read(canaryB); err != nil {
		return err
	}
	canary := "sk-clawcage-demo-" + hex.EncodeToString(canaryB)

	// After the agent, the sandbox stays up (idle) for `clawcage audit`.
	script := `i=0; while [ ! -x /sandbox/clawcage ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 9; sleep 0.1; done; /sandbox/clawcage demo agent "$@"; exec sleep 3600`
	cfg := map[string]any{
		"router": map[string]any{
			"providers": map[string]any{"standin": map[string]any{"kind": "openai", "base_url": provider.URL}},
			"routes":    map[string]any{"default": []any{map[string]any{"provider": "standin", "model": "stand-in-model"}}},
		},
		"sandboxes": map[string]any{
			d.name: map[string]any{
				"command": []string{"/bin/sh", "-c", script, "clawcage-demo-agent", providerAddr,
					admin.SocketPath(d.state), supervisor.ControlSocketPath(d.state)},
				"restart": "never",
			},
		},
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(base, "clawcage.yaml")
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		return err
	}

	var rows []demoRow
	add := func(attack, expected, observed string, ok bool) {
		rows = append(rows, demoRow{Attack: attack, Expected: expected, Observed: observed, OK: ok})
	}
	stackErr := d.runStack(ctx, out, cfgPath, canary, providerAddr, provider, add)
	if stackErr != nil {
		add("run the stack", "agent runs to completion", stackErr.Error(), false)
	}
	rows = append(rows, d.liveRows...)
	leftovers := d.leftovers()
	add("nothing left behind", "no processes, netns, mounts, cgroups", orNone(leftovers), len(leftovers) == 0)

	if !quick && ctx.Err() == nil {
		rows = append(rows, runDemoBattery(ctx, exe)...)
	}

	failed, err := printDemo(out, rows)
	if err != nil {
		return err
	}
	if failed > 0 {
		if stackErr != nil {
			fmt.Fprintf(out, "\nclawcage up output:\n%s\n", tail(d.upOut.String(), 4000))
		}
		return exitError{code: 1}
	}
	return nil
}

// printDemo prints the table and returns how many rows did not hold.
func printDemo(out io.Writer, rows []demoRow) (failed int, err error) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(out)
	fmt.Fprintln(tw, "ATTACK\tEXPECTED\tOBSERVED\tVERDICT")
	for _, r := range rows {
		v := "held"
		if r.Skipped {
			v = "skipped"
		}
		if !r.OK {
			v = "FAILED"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Attack, r.Expected, oneLine(r.Observed), v)
	}
	if err := tw.Flush(); err != nil {
		return failed, err
	}
	fmt.Fprintf(out, "\n%d checks, %d failed\n", len(rows), failed)
	return failed, nil
}

// runStack starts `clawcage up`, lets the agent run, checks the evidence
// and stops the stack.
func (d *demoRun) runStack(ctx context.Context, out io.Writer, cfgPath, canary, providerAddr string, provider *routertest.Provider, add func(string, string, string, bool)) (err error) {
	d.up = exec.Command(d.bin, "up", "--config", cfgPath, "--state", d.state)
	d.up.Stdout, d.up.Stderr = &d.upOut, &d.upOut
	if err := d.up.Start(); err != nil {
		return fmt.Errorf("start clawcage up: %w", err)
	}
	go func() { d.upDone <- d.up.Wait() }()
	stopped := false
	defer func() {
		if stopped {
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, derr := d.cli(sctx, nil, "down"); derr != nil {
			_ = d.up.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-d.upDone:
		case <-sctx.Done():
			_ = d.up.Process.Kill()
			<-d.upDone
			if err == nil {
				err = errors.New("clawcage up did not stop within 30s after down")
			}
		}
	}()

	fmt.Fprintln(out, "starting the stack ...")
	err = poll(ctx, "stack ready", 60*time.Second, func() error {
		select {
		case err := <-d.upDone:
			stopped = true
			return fmt.Errorf("clawcage up exited: %v", err)
		default:
		}
		if stopped {
			return errors.New("clawcage up exited")
		}
		var st injectStatus
		o, err := d.cli(ctx, nil, "status", "--json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(o), &st); err != nil {
			return err
		}
		for _, c := range st.Components {
			if (c.Name == "router" || c.Name == "policy") && (c.State != "running" || c.Health != "ok") {
				return fmt.Errorf("%s is %s, health %s", c.Name, c.State, c.Health)
			}
		}
		_, err = os.Stat(d.ws)
		return err
	})
	if stopped {
		return err
	}
	if err != nil {
		return err
	}
	// The operator stores the key (stdin only) before the agent starts.
	if _, err := d.cli(ctx, []byte(canary+"\n"), "keys", "set", "standin"); err != nil {
		return err
	}
	fmt.Fprintln(out, "canary key set through the router's admin socket; starting the compromised agent ...")
	tmp := filepath.Join(d.ws, ".clawcage")
	if err := battery.CopyFile(d.bin, tmp, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(d.ws, "clawcage")); err != nil {
		return err
	}
	var rep demoAgentReport
	err = poll(ctx, "the agent's observations", demoAgentLimit, func() error {
		b, err := os.ReadFile(filepath.Join(d.ws, demoObservations))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &rep)
	})
	if err != nil {
		return err
	}

	seen := map[string]int{}
	obs := func(name string) audit.Observation {
		n := 0
		for _, o := range rep.Observations {
			if o.Attack == name {
				if n == seen[name] {
					seen[name]++
					return o
				}
				n++
			}
		}
		return audit.Observation{Attack: name, Outcome: "missing"}
	}
	addObs := func(attack, expected string, o audit.Observation, ok bool) {
		observed := o.Outcome
		if !ok && o.Detail != "" {
			observed += ": " + o.Detail
		}
		add(attack, expected, observed, ok)
	}
	o := obs("secrets-env")
	addObs("printenv / environ for the key", audit.Absent, o, o.Outcome == audit.Absent && !strings.Contains(o.Detail, canary))
	o = obs("secrets-files")
	addObs("scan files for key-shaped strings", audit.Absent, o, o.Outcome == audit.Absent && !strings.Contains(o.Detail, canary))
	o = obs("connect-tcp")
	addObs("reach the provider directly ("+providerAddr+")", "EACCES|ENETUNREACH", o, o.Outcome == "EACCES" || o.Outcome == "ENETUNREACH")
	o = obs("hardening")
	addObs("agent privileges (caps, seccomp, no_new_privs)", "enforced", o, o.Outcome == "enforced")
	o = obs("unix-connect")
	addObs("connect to the router's admin socket", "ENOENT", o, o.Outcome == "ENOENT")
	o = obs("unix-connect")
	addObs("connect to the supervisor's control socket", "ENOENT", o, o.Outcome == "ENOENT")
	o = obs("proxy-deny")
	addObs("unapproved host via proxy ("+demoDeniedHost+")", "denied", o, o.Outcome == "denied")
	inferOK := rep.InferenceStatus == 200 && strings.Contains(rep.InferenceText, provider.Text)
	add("call inference.local without a key", "200, stand-in's answer", fmt.Sprintf("%d %s", rep.InferenceStatus, rep.InferenceErr), inferOK)
	add("key in inference answer", "absent", presence(rep.InferenceKeyInAnswer || strings.Contains(rep.InferenceText, canary)),
		!rep.InferenceKeyInAnswer && !strings.Contains(rep.InferenceText, canary))
	reqs := provider.Requests()
	injected := len(reqs) > 0
	for _, r := range reqs {
		if r.Header.Get("Authorization") != "Bearer "+canary {
			injected = false
		}
	}
	add("router injects the key upstream", "Bearer <canary> at provider", fmt.Sprintf("%d request(s), injected=%v", len(reqs), injected), injected)

	var pending []struct {
		Sandbox string `json:"sandbox"`
		Host    string `json:"host"`
		Port    int    `json:"port"`
	}
	found := false
	if po, err := d.cli(ctx, nil, "policy", "pending", "--json"); err == nil && json.Unmarshal([]byte(po), &pending) == nil {
		for _, p := range pending {
			found = found || (p.Sandbox == d.name && p.Host == demoDeniedHost && p.Port == demoDeniedPort)
		}
	}
	add("denied host in pending queue", "pending", presence(found), found)

	// The same live audit `clawcage audit SANDBOX` runs, against the
	// agent's sandbox while it is still up.
	fmt.Fprintln(out, "running clawcage audit against the live sandbox ...")
	d.liveRows = demoLiveAudit(ctx, d.bin, d.state, d.name)

	// Stop, then look at what is on disk.
	if _, err := d.cli(ctx, nil, "down"); err != nil {
		return err
	}
	select {
	case err := <-d.upDone:
		stopped = true
		if err != nil {
			return fmt.Errorf("clawcage up after down: %w", err)
		}
	case <-time.After(60 * time.Second):
		return errors.New("clawcage up did not exit within 60s after down")
	}
	hits := scanForSecret(d.state, []byte(canary))
	add("key bytes in any state file (vault sealed)", "absent", orNone(hits), len(hits) == 0)
	jhits := scanForSecret(filepath.Join(d.state, "journal"), []byte(canary))
	jn := 0
	_ = filepath.WalkDir(filepath.Join(d.state, "journal"), func(_ string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			jn++
		}
		return nil
	})
	add("key bytes in the journal", "absent", fmt.Sprintf("%s (%d journal files)", orNone(jhits), jn), len(jhits) == 0 && jn > 0)
	return nil
}

// injectStatus is the part of `clawcage status --json` the demo reads.
type injectStatus struct {
	Components []struct {
		Name   string `json:"name"`
		State  string `json:"state"`
		Health string `json:"health"`
	} `json:"components"`
}

// scanForSecret lists files under root (namespace files excepted) that
// hold secret in plain, hex or base64 form. The router's vault holds the
// key sealed, so it is scanned too: its bytes must not show the key.
func scanForSecret(root string, secret []byte) []string {
	var hits []string
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if de.IsDir() {
			if rel == "netns" { // nsfs bind mounts, not data
				return filepath.SkipDir
			}
			return nil
		}
		if !de.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			hits = append(hits, rel+": unreadable: "+err.Error())
			return nil
		}
		for _, enc := range [][]byte{secret, []byte(hex.EncodeToString(secret)),
			[]byte(base64.StdEncoding.EncodeToString(secret)), []byte(base64.RawURLEncoding.EncodeToString(secret))} {
			if bytes.Contains(b, enc[:len(enc)-2]) {
				hits = append(hits, rel)
				break
			}
		}
		return nil
	})
	return hits
}

// leftovers lists what the run left on the machine.
func (d *demoRun) leftovers() []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cl, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cl), "\x00")
		if slices.Contains(args, d.state) || slices.Contains(args, "clawcage-demo-agent") && slices.Contains(args, d.name) {
			left = append(left, "process "+filepath.Base(p))
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && strings.HasPrefix(f[4], d.base) {
				left = append(left, "mount "+f[4])
			}
			if len(f) >= 10 && f[len(f)-3] == "-" && (f[len(f)-2] == "cgroup" || f[len(f)-2] == "cgroup2") {
				for _, pat := range []string{"clawcage", "*/clawcage", "*/*/clawcage"} {
					m, _ := filepath.Glob(filepath.Join(f[4], pat, "clawcage-"+d.name))
					for _, g := range m {
						left = append(left, "cgroup "+g)
					}
				}
			}
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(d.state, "netns")); len(ents) > 0 {
		left = append(left, fmt.Sprintf("%d netns files", len(ents)))
	}
	return left
}

// demoLiveAudit runs `clawcage audit NAME` against the demo's sandbox (in
// this process, as the command does) and returns its rows.
func demoLiveAudit(ctx context.Context, bin, state, name string) []demoRow {
	w, err := battery.NewWorld(ctx, bin)
	if err != nil {
		return []demoRow{{Attack: "live audit", Expected: "runs", Observed: err.Error()}}
	}
	defer w.Close()
	var rep auditReport
	// The stand-in provider is free: let the audit call it through the router.
	if err := runLiveAudit(ctx, io.Discard, w, state, name, true, &rep); err != nil {
		return []demoRow{{Attack: "live audit", Expected: "runs", Observed: err.Error()}}
	}
	rows := make([]demoRow, 0, len(rep.Results))
	for _, r := range rep.Results {
		skipped := strings.HasPrefix(r.Failure, "skipped:")
		observed := r.Observation.Outcome
		switch {
		case skipped:
			observed = "-"
		case !r.Held && r.Failure != "":
			observed += ": " + r.Failure
		}
		rows = append(rows, demoRow{Attack: "audit: " + r.Case + " (" + r.Mode + ")", Expected: strings.Join(r.Expected, "|"),
			Observed: observed, OK: r.Held || skipped, Skipped: skipped})
	}
	return rows
}

// runDemoBattery runs the one-shot escape battery as `clawcage audit` does.
func runDemoBattery(ctx context.Context, exe string) []demoRow {
	w, err := battery.NewWorld(ctx, exe)
	if err != nil {
		return []demoRow{{Attack: "escape battery", Expected: "runs", Observed: err.Error()}}
	}
	defer w.Close()
	tmp, err := os.MkdirTemp("", "clawcage-demo-audit-")
	if err != nil {
		return []demoRow{{Attack: "escape battery", Expected: "runs", Observed: err.Error()}}
	}
	defer os.RemoveAll(tmp)
	var rows []demoRow
	for _, c := range battery.Cases() {
		if c.LiveOnly {
			continue
		}
		for _, mode := range battery.Modes {
			if ctx.Err() != nil {
				return append(rows, demoRow{Attack: "escape battery", Expected: "completes", Observed: ctx.Err().Error()})
			}
			r, err := battery.RunOneShot(ctx, w, c, mode, tmp)
			ok := err == nil && (r.Held || strings.HasPrefix(r.Failure, "skipped:"))
			obsd := r.Observation.Outcome
			if err != nil {
				obsd = "could not run: " + err.Error()
			} else if strings.HasPrefix(r.Failure, "skipped:") {
				obsd = "skipped"
			}
			rows = append(rows, demoRow{Attack: "escape: " + c.Name + " (" + mode + ")", Expected: strings.Join(r.Expected, "|"), Observed: obsd, OK: ok,
				Skipped: err == nil && strings.HasPrefix(r.Failure, "skipped:")})
		}
	}
	return rows
}

func presence(b bool) string {
	if b {
		return "present"
	}
	return "absent"
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
