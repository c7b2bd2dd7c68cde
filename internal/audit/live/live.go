// Package live audits a running sandbox of a clawcage stack from inside
// it: the key hunt (environment, files, the request to inference.local and
// the router's answer), the provider and unapproved hosts through and
// around the egress proxy, the components' sockets, state and memory, and
// the escape battery, each as the sandbox's default user and as root
// inside it.
//
// Nothing secret enters the sandbox: the probe there streams what it can
// read or send out to this side, which has the router's admin socket
// (POST /audit/scan) compare it with the vault's keys. The package does
// not enter sandboxes itself: the caller hands it an Exec (`clawcage
// audit` wraps stack.Exec).
package live

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/clawcage/clawcage/internal/egress/approvals"
	"github.com/clawcage/clawcage/internal/router/admin"
)

// Scanner asks the router whether material holds a vault key
// (*admin.Client).
type Scanner interface {
	Scan(ctx context.Context, label string, body []byte) (admin.ScanResponse, error)
}

// Queue is the policy engine's pending-approval queue (*engine.Client).
type Queue interface {
	Pending(ctx context.Context) ([]approvals.Entry, error)
	Reject(ctx context.Context, id string) error
}

// Provider is a model provider of the stack, as its configuration names it.
type Provider struct {
	Name string
	// Addr is host:port of the provider's base URL.
	Addr string
}

// startWait bounds the wait for a sandbox that is still starting.
const startWait = 15 * time.Second

// DefaultInferenceURL is the cheap call the key hunt makes: the router
// answers it itself (its routes), in the provider dialect.
const DefaultInferenceURL = "http://inference.local:8080/v1/models"

// DefaultCompletionURL is where the opt-in completion goes.
const DefaultCompletionURL = "http://inference.local:8080/v1/chat/completions"

// Auditor audits one live sandbox.
type Auditor struct {
	// World holds the escape battery's host-side targets; World.State and
	// the component pids must be set.
	World *battery.World
	// Sandbox is the audited sandbox's name; Workspace its workspace's
	// host path.
	Sandbox, Workspace string
	Exec               battery.Exec
	Scanner            Scanner
	Queue              Queue
	Providers          []Provider
	// InferenceURL is fetched from inside (DefaultInferenceURL when "").
	InferenceURL string
	// CompletionURL, when set, also gets a one-token chat completion that
	// the router forwards to the provider (it costs a token), so the
	// answer checked has been through a provider.
	CompletionURL string
	// Progress, when set, gets one line per finished group of checks.
	Progress io.Writer
	// PendingWait bounds the wait for a denial to reach the pending queue
	// (5 s when 0).
	PendingWait time.Duration
	// Resolve looks a provider host up on the host side (net.DefaultResolver
	// when nil), so that the sandbox can be made to dial its address too.
	Resolve func(ctx context.Context, host string) ([]string, error)
}

// Result rows use battery.Result: Case is the attack, Mode who ran it
// ("user", "root" inside the sandbox, "host" for checks made outside).

// Run runs every check and returns the rows. The error is non-nil only
// when the sandbox could not be audited at all (no workspace, exec does
// not work).
func (a *Auditor) Run(ctx context.Context) ([]battery.Result, error) {
	dir, err := a.installProbe()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	installed, err := fingerprint(dir)
	if err != nil {
		return nil, err
	}

	// The first exec proves the sandbox can be entered at all; a sandbox
	// just created may still be starting.
	var out, errb bytes.Buffer
	var code int
	for deadline := time.Now().Add(startWait); ; {
		out.Reset()
		errb.Reset()
		code, err = battery.ExecCapture(ctx, a.Exec, []string{battery.LiveProbe, "audit-probe", "--json", "hardening"}, false, devNull(), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), "(state: starting)") || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("enter sandbox %s: %w", a.Sandbox, err)
	}
	if _, ok := battery.ParseObservation(out.String(), "hardening"); !ok {
		return nil, fmt.Errorf("enter sandbox %s: the probe printed no observation (exit %d): %s", a.Sandbox, code, strings.TrimSpace(errb.String()))
	}

	// Root inside a sandbox has no capabilities: the default user's
	// workspace (0700) may be closed to it, and with it the files the host
	// puts there for some cases.
	rootNoWorkspace := ""
	if o, err := a.probe(ctx, true, "read-path", "/sandbox/"+battery.LiveDir); err == nil && o.Outcome != audit.Succeeded {
		rootNoWorkspace = "root inside this sandbox cannot reach the workspace (" + o.Outcome + ": /sandbox is the default user's), where the host puts this case's file"
	}

	var rows []battery.Result
	for _, mode := range battery.Modes {
		rows = append(rows, a.KeyHunt(ctx, mode)...)
		a.progress("key hunt as %s done", mode)
	}
	rows = append(rows, a.egress(ctx)...)
	a.progress("egress checks done")
	for _, c := range battery.Cases() {
		for _, mode := range battery.Modes {
			if ctx.Err() != nil {
				return rows, ctx.Err()
			}
			if mode == "root" && c.Setup != nil && rootNoWorkspace != "" {
				rows = append(rows, battery.Result{Case: c.Name, Mode: mode, Expected: c.Want, Failure: "skipped: " + rootNoWorkspace})
				continue
			}
			r, err := battery.RunExec(ctx, a.World, c, mode, a.Exec, dir)
			if err != nil {
				r.Failure = "could not run: " + err.Error()
			}
			rows = append(rows, r)
		}
	}
	a.progress("escape battery done")
	rows = append(rows, probeRow(dir, installed))
	return rows, nil
}

// probeFingerprint identifies the installed probe: the sandbox's user owns
// the workspace and could swap the directory for one of its own.
type probeFingerprint struct {
	dir, bin os.FileInfo
	sum      string
}

func fingerprint(dir string) (probeFingerprint, error) {
	var fp probeFingerprint
	var err error
	if fp.dir, err = os.Lstat(dir); err != nil {
		return fp, err
	}
	bin := filepath.Join(dir, "clawcage")
	if fp.bin, err = os.Lstat(bin); err != nil {
		return fp, err
	}
	f, err := os.Open(bin)
	if err != nil {
		return fp, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fp, err
	}
	fp.sum = hex.EncodeToString(h.Sum(nil))
	return fp, nil
}

// probeRow checks, after the run, that the probe the sandbox ran is still
// the one the host installed (same directory and file, same bytes).
func probeRow(dir string, installed probeFingerprint) battery.Result {
	const attack = "probe-binary-untampered"
	want := []string{"unchanged"}
	now, err := fingerprint(dir)
	var why string
	switch {
	case err != nil:
		why = "the installed probe is gone: " + err.Error()
	case !os.SameFile(installed.dir, now.dir) || !os.SameFile(installed.bin, now.bin):
		why = "the probe's directory or file was replaced during the audit"
	case installed.sum != now.sum:
		why = "the probe binary's bytes changed during the audit"
	}
	o := audit.Observation{Attack: attack, Outcome: "unchanged", Detail: battery.LiveProbe + " sha256=" + installed.sum}
	if why != "" {
		o.Outcome, o.Detail = "changed", why
	}
	return row(attack, "host", want, o, why)
}

func (a *Auditor) progress(format string, args ...any) {
	if a.Progress != nil {
		fmt.Fprintf(a.Progress, "audit %s: "+format+"\n", append([]any{a.Sandbox}, args...)...)
	}
}

func devNull() *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return nil
	}
	return f
}

// installProbe puts the probe binary at <workspace>/.clawcage-audit, owned
// by the host's root (the sandbox cannot change it), replacing anything a
// previous run or the sandbox left there.
func (a *Auditor) installProbe() (string, error) {
	if fi, err := os.Stat(a.Workspace); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("sandbox %s has no workspace at %s: %v", a.Sandbox, a.Workspace, err)
	}
	dir := filepath.Join(a.Workspace, battery.LiveDir)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("remove a stale %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := battery.CopyFile(a.World.Binary, filepath.Join(dir, "clawcage"), 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("copy the probe into the workspace: %w", err)
	}
	return dir, nil
}

// held and failed build rows.
func row(attack, mode string, expected []string, o audit.Observation, failure string) battery.Result {
	r := battery.Result{Case: attack, Mode: mode, Expected: expected, Observation: o}
	if failure == "" {
		r.Held = true
	} else {
		r.Failure = failure
	}
	return r
}

// probe runs one audit probe inside the sandbox and returns its observation.
func (a *Auditor) probe(ctx context.Context, root bool, name string, args ...string) (audit.Observation, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	argv := append([]string{battery.LiveProbe, "audit-probe", "--json", name}, args...)
	code, err := battery.ExecCapture(ctx, a.Exec, argv, root, devNull(), &out, &errb)
	if err != nil {
		return audit.Observation{}, err
	}
	o, ok := battery.ParseObservation(out.String(), name)
	if !ok {
		return audit.Observation{}, fmt.Errorf("probe %s: exit %d and no observation: %s", name, code, strings.TrimSpace(errb.String()))
	}
	if o.Outcome == audit.Error {
		return o, fmt.Errorf("probe %s could not run: %s", name, o.Detail)
	}
	return o, nil
}

func modeOf(root bool) string {
	if root {
		return "root"
	}
	return "user"
}
