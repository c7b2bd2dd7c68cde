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
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// egress checks the provider and an unapproved host, through and around
// the proxy, and the pending queue; it rejects the queue entries it caused.
func (a *Auditor) egress(ctx context.Context) []battery.Result {
	var rows []battery.Result
	before := map[string]bool{}
	if q, err := a.Queue.Pending(ctx); err == nil {
		for _, e := range q {
			before[e.ID] = true
		}
	}
	var ours []string // hosts whose new queue entries we reject afterwards
	direct := []string{"EACCES", "ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED", "NXDOMAIN", audit.Timeout}
	for _, p := range a.Providers {
		host, port, err := net.SplitHostPort(p.Addr)
		if err != nil {
			rows = append(rows, row("reach-provider-"+p.Name+"-directly", "user", direct, audit.Observation{Outcome: audit.Error, Detail: err.Error()}, "bad provider address: "+err.Error()))
			continue
		}
		addrs := []string{p.Addr}
		if net.ParseIP(host) == nil {
			resolve := a.Resolve
			if resolve == nil {
				resolve = net.DefaultResolver.LookupHost
			}
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			ips, err := resolve(rctx, host)
			cancel()
			if err == nil && len(ips) > 0 {
				addrs = append(addrs, net.JoinHostPort(ips[0], port))
			}
		}
		for _, root := range []bool{false, true} {
			for _, addr := range addrs {
				attack := fmt.Sprintf("reach-provider-%s-directly (%s)", p.Name, addr)
				o, err := a.probe(ctx, root, "connect-tcp", addr)
				rows = append(rows, judge(attack, modeOf(root), direct, o, err))
			}
		}
		o, err := a.probe(ctx, false, "proxy-deny", p.Addr)
		rows = append(rows, judge(fmt.Sprintf("reach-provider-%s-through-proxy (%s)", p.Name, p.Addr), "user", []string{audit.Denied}, o, err))
		ours = append(ours, host)
	}

	// An unapproved host: denied with a JSON reason, queued, never approved.
	var rnd [5]byte
	_, _ = rand.Read(rnd[:])
	host := "clawcage-audit-" + hex.EncodeToString(rnd[:]) + ".invalid"
	ours = append(ours, host)
	target := net.JoinHostPort(host, "443")
	o, err := a.probe(ctx, false, "proxy-deny", target)
	r := judge("unapproved-host-denied-by-proxy ("+host+")", "user", []string{audit.Denied}, o, err)
	if r.Held {
		if i := strings.IndexByte(o.Detail, '{'); i < 0 || !json.Valid([]byte(o.Detail[i:])) {
			r.Held, r.Failure = false, "the 403 carries no JSON denial body: "+o.Detail
		}
	}
	rows = append(rows, r)
	rows = append(rows, a.pendingRow(ctx, host))

	// Clean up: reject the entries this audit put in the queue.
	q, err := a.Queue.Pending(ctx)
	if err == nil {
		var rejected []string
		for _, e := range q {
			if e.Sandbox == a.Sandbox && !before[e.ID] && slices.Contains(ours, e.Host) {
				if err := a.Queue.Reject(ctx, e.ID); err == nil {
					rejected = append(rejected, e.Host)
				}
			}
		}
		a.progress("rejected the queue entries the audit caused: %s", strings.Join(rejected, ", "))
	}
	return rows
}

// pendingRow waits up to PendingWait for host's denial to appear in the queue.
func (a *Auditor) pendingRow(ctx context.Context, host string) battery.Result {
	attack := "unapproved-host-in-pending-queue (" + host + ")"
	want := []string{"pending"}
	wait := a.PendingWait
	if wait == 0 {
		wait = 5 * time.Second
	}
	deadline := time.Now().Add(wait)
	var last error
	for {
		q, err := a.Queue.Pending(ctx)
		last = err
		for _, e := range q {
			if e.Sandbox == a.Sandbox && e.Host == host && e.Port == 443 {
				return row(attack, "host", want, audit.Observation{Attack: attack, Outcome: "pending",
					Detail: fmt.Sprintf("queue entry %s: %s:%d, reason %q, count %d (not approved; rejected after the audit)", e.ID, e.Host, e.Port, e.Reason, e.Count)}, "")
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	detail := "no queue entry for sandbox " + a.Sandbox + " and " + host
	if last != nil {
		detail = "cannot read the pending queue: " + last.Error()
	}
	return row(attack, "host", want, audit.Observation{Attack: attack, Outcome: audit.Absent, Detail: detail}, detail)
}

// judge turns a probe's observation into a row.
func judge(attack, mode string, want []string, o audit.Observation, err error) battery.Result {
	if err != nil {
		return row(attack, mode, want, o, "could not run: "+err.Error())
	}
	if !slices.Contains(want, o.Outcome) {
		return row(attack, mode, want, o, fmt.Sprintf("outcome %q, want %s (%s)", o.Outcome, strings.Join(want, " or "), o.Detail))
	}
	return row(attack, mode, want, o, "")
}

// providerKeyShapes match model provider keys by their published formats
// (compiled on first use: every clawcage start links this package).
var providerKeyShapes = sync.OnceValue(func() []*regexp.Regexp {
	return []*regexp.Regexp{
		regexp.MustCompile(`sk-ant-[A-Za-z0-9_-]{20,}`),
		regexp.MustCompile(`sk-(proj-|svcacct-)?[A-Za-z0-9_-]{32,}`),
	}
})

func keyShaped(b []byte) bool {
	for _, re := range providerKeyShapes() {
		if re.Match(b) {
			return true
		}
	}
	return false
}

// configRoots are where configuration and credentials files live inside a
// sandbox.
var configRoots = []string{"/etc/", "/sandbox/", "/root/", "/home/", "/run/", "/opt/", "/srv/", "/var/lib/"}

func isConfig(p string) bool {
	if strings.HasPrefix(p, "/sandbox/"+battery.LiveDir+"/") {
		return false
	}
	for _, r := range configRoots {
		if strings.HasPrefix(p, r) {
			return true
		}
	}
	return false
}

// hit is one place a key was found.
type hit struct {
	name      string
	providers []string
	encodings []string
}

func (h hit) String() string {
	return fmt.Sprintf("%q holds a %s key (%s)", h.name, strings.Join(h.providers, "/"), strings.Join(h.encodings, ","))
}

// batch groups items for one scan request; a hit is located by scanning
// the batch's items one by one.
type batch struct {
	label string
	buf   []byte
	names []string
	spans [][2]int
	hits  []hit
	err   error
	keys  int
}

const batchBytes = 16 << 20

func (b *batch) add(ctx context.Context, s Scanner, name string, data []byte) {
	if len(b.buf)+len(data)+1 > batchBytes {
		b.flush(ctx, s)
	}
	start := len(b.buf)
	b.buf = append(b.buf, data...)
	b.buf = append(b.buf, 0) // keys are visible ASCII: no match spans items
	b.names = append(b.names, name)
	b.spans = append(b.spans, [2]int{start, len(b.buf) - 1})
}

func (b *batch) flush(ctx context.Context, s Scanner) {
	if len(b.names) == 0 || b.err != nil {
		b.buf, b.names, b.spans = b.buf[:0], nil, nil
		return
	}
	r, err := s.Scan(ctx, b.label, b.buf)
	if err != nil {
		b.err = err
	} else {
		b.keys = max(b.keys, r.Keys)
		if r.Found {
			b.locate(ctx, s)
		}
	}
	b.buf, b.names, b.spans = b.buf[:0], nil, nil
}

func (b *batch) locate(ctx context.Context, s Scanner) {
	found := false
	for i, sp := range b.spans {
		r, err := s.Scan(ctx, b.label+": "+b.names[i], b.buf[sp[0]:sp[1]])
		if err != nil {
			b.err = err
			return
		}
		if r.Found {
			found = true
			h := hit{name: b.names[i], providers: r.Providers}
			for _, f := range r.Findings {
				if !slices.Contains(h.encodings, f.Encoding) {
					h.encodings = append(h.encodings, f.Encoding)
				}
			}
			if !slices.Contains(b.hitNames(), h.name) {
				b.hits = append(b.hits, h)
			}
		}
	}
	if !found {
		b.hits = append(b.hits, hit{name: "a batch of " + strconv.Itoa(len(b.names)) + " items (not located)", providers: []string{"?"}})
	}
}

func (b *batch) hitNames() []string {
	var out []string
	for _, h := range b.hits {
		out = append(out, h.name)
	}
	return out
}

// verdict is the failure of a batch ("" when it held) and its observation.
func (b *batch) verdict(keys int, attack string, extra []string, detail string) (audit.Observation, string) {
	switch {
	case b.err != nil:
		return audit.Observation{Attack: attack, Outcome: audit.Error, Detail: detail}, "the router could not scan: " + b.err.Error()
	case len(b.hits) > 0 || len(extra) > 0:
		var parts []string
		for _, h := range b.hits {
			parts = append(parts, h.String())
		}
		parts = append(parts, extra...)
		why := strings.Join(parts, "; ")
		return audit.Observation{Attack: attack, Outcome: "present", Detail: why}, why
	case keys == 0:
		why := "inconclusive: the router's vault holds no key to look for (set one with clawcage keys set)"
		return audit.Observation{Attack: attack, Outcome: "no-keys", Detail: detail}, why
	}
	return audit.Observation{Attack: attack, Outcome: audit.Absent, Detail: detail}, ""
}

// hunt is what one key hunt collected and found.
type hunt struct {
	env, files, config, request, response batch
	envShaped, configShaped               []string
	environRead, environTotal             int
	procs, filesN, bytesN, unreadable     string
	bounded                               string
	pid1Environ                           string
	printenvBytes                         int
	envVars                               int
	reqs                                  []sentRequest
	resps                                 []answer
	ended                                 bool
	keys                                  int // keys the router compared with
}

func (h *hunt) item(ctx context.Context, s Scanner, it audit.Item, data []byte) {
	switch it.Kind {
	case audit.ItemEnv, audit.ItemPrintenv, audit.ItemEnviron, audit.ItemCmdline:
		switch it.Kind {
		case audit.ItemEnv:
			h.envVars = bytes.Count(data, []byte("\n")) + 1
		case audit.ItemPrintenv:
			h.printenvBytes = len(data)
		case audit.ItemEnviron:
			h.environTotal++
			if it.Err == "" {
				h.environRead++
			}
			if it.Name == "/proc/1/environ" {
				h.pid1Environ = "read"
				if it.Err != "" {
					h.pid1Environ = it.Err
				}
			}
		}
		if keyShaped(data) {
			h.envShaped = append(h.envShaped, fmt.Sprintf("%q holds a value shaped like a provider key", it.Name))
		}
		h.env.add(ctx, s, it.Name, data)
	case audit.ItemFile:
		h.files.add(ctx, s, it.Name, data)
		if isConfig(it.Name) {
			h.config.add(ctx, s, it.Name, data)
			if keyShaped(data) && !slices.Contains(h.configShaped, it.Name) {
				h.configShaped = append(h.configShaped, it.Name)
			}
		}
	case audit.ItemRequest:
		h.reqs = append(h.reqs, sentRequest{name: it.Name, bytes: data, err: it.Err, credEnv: it.Meta["credential_env"], notSent: it.Meta["sent"] == "false"})
		h.request.add(ctx, s, it.Name, data)
	case audit.ItemResponse:
		a := answer{name: it.Name, err: it.Err, status: it.Meta["status"], shaped: keyShaped(data)}
		if resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil); err == nil {
			a.header = resp.Header
			resp.Body.Close()
		}
		h.resps = append(h.resps, a)
		h.response.add(ctx, s, it.Name, data)
	case audit.ItemBounded:
		h.bounded = it.Name
	case audit.ItemEnd:
		h.ended = true
		h.procs, h.filesN, h.bytesN, h.unreadable = it.Meta["procs"], it.Meta["files"], it.Meta["bytes"], it.Meta["unreadable"]
	}
}

// KeyHunt runs the collector inside the sandbox as mode ("user" or
// "root") and judges what came out: five rows (environment, config files,
// every file, the request to inference.local, its answer).
func (a *Auditor) KeyHunt(ctx context.Context, mode string) []battery.Result {
	url := a.InferenceURL
	if url == "" {
		url = DefaultInferenceURL
	}
	argv := []string{battery.LiveProbe, "audit-probe", "collect", "--inference", url}
	if a.CompletionURL != "" {
		argv = append(argv, "--completion", a.CompletionURL)
	}
	for _, d := range audit.HostSystemDirs {
		argv = append(argv, "--skip", d)
	}
	argv = append(argv, "/")
	label := "sandbox " + a.Sandbox + " as " + mode
	h := &hunt{}
	h.env.label, h.files.label, h.config.label = label+": environment", label+": files", label+": config files"
	h.request.label, h.response.label = label+": request to inference.local", label+": inference.local's answer"

	hctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var errb bytes.Buffer
	code, err := battery.ExecStream(hctx, a.Exec, argv, mode == "root", devNull(), &errb, func(r io.Reader) error {
		return audit.ReadItems(r, func(it audit.Item, data []byte) error {
			h.item(hctx, a.Scanner, it, data)
			return nil
		})
	})
	for _, b := range []*batch{&h.env, &h.files, &h.config, &h.request, &h.response} {
		b.flush(hctx, a.Scanner)
		h.keys = max(h.keys, b.keys)
	}
	names := []string{"printenv-and-environ-hold-no-key", "config-files-hold-no-credentials", "filesystem-scan-finds-no-key-bytes",
		"request-to-inference-carries-no-authorization", "inference-answer-carries-no-provider-credentials"}
	if err != nil || !h.ended {
		why := fmt.Sprintf("the collector did not finish (exit %d): %v %s", code, err, strings.TrimSpace(errb.String()))
		var rows []battery.Result
		for _, n := range names {
			rows = append(rows, row(n, mode, []string{audit.Absent}, audit.Observation{Attack: n, Outcome: audit.Error, Detail: why}, "could not run: "+why))
		}
		return rows
	}
	var rows []battery.Result

	envDetail := fmt.Sprintf("%d variables, printenv %d bytes, %d of %d /proc/*/environ readable (/proc/1/environ: %s)",
		h.envVars, h.printenvBytes, h.environRead, h.environTotal, orDash(h.pid1Environ))
	o, fail := h.env.verdict(h.keys, names[0], h.envShaped, envDetail)
	rows = append(rows, row(names[0], mode, []string{audit.Absent}, o, fail))

	var shaped []string
	for _, p := range h.configShaped {
		shaped = append(shaped, fmt.Sprintf("%q holds a value shaped like a provider key", p))
	}
	o, fail = h.config.verdict(h.keys, names[1], shaped, "config and home directories: "+strings.Join(configRoots, " "))
	rows = append(rows, row(names[1], mode, []string{audit.Absent}, o, fail))

	fsDetail := fmt.Sprintf("%s files, %s MiB, %s unreadable (all of / but /proc /sys /dev and the host's read-only %s)",
		h.filesN, mib(h.bytesN), h.unreadable, strings.Join(audit.HostSystemDirs, " "))
	o, fail = h.files.verdict(h.keys, names[2], nil, fsDetail)
	if fail == "" && h.bounded != "" {
		o.Outcome, fail = "incomplete", "the scan stopped at its "+h.bounded+": not every file was compared"
	}
	rows = append(rows, row(names[2], mode, []string{audit.Absent}, o, fail))

	rows = append(rows, h.requestRow(names[3], mode))
	rows = append(rows, h.responseRow(names[4], mode))
	return rows
}

// sentRequest is one request the collector made to inference.local.
type sentRequest struct {
	name, err, credEnv string
	bytes              []byte
	notSent            bool
}

// answer is inference.local's answer to one of them.
type answer struct {
	name, err, status string
	shaped            bool
	header            http.Header
}

func (h *hunt) requestRow(attack, mode string) battery.Result {
	want := []string{"no-credential"}
	if len(h.reqs) == 0 {
		return row(attack, mode, want, audit.Observation{Attack: attack, Outcome: audit.Error}, "the collector made no request to inference.local")
	}
	var problems, details []string
	for _, r := range h.reqs {
		if r.err != "" && len(r.bytes) == 0 {
			problems = append(problems, r.name+": could not call inference.local: "+r.err)
			continue
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(r.bytes)))
		if err != nil {
			problems = append(problems, r.name+": the bytes sent are not an HTTP request: "+err.Error())
		} else {
			for _, hd := range []string{"Authorization", "Proxy-Authorization", "X-Api-Key", "Api-Key", "Cookie"} {
				if req.Header.Get(hd) != "" {
					problems = append(problems, r.name+": the request carried "+hd)
				}
			}
		}
		if r.credEnv != "" {
			problems = append(problems, "the sandbox's environment had "+r.credEnv+" for an SDK to send")
		}
		what := "sent"
		if r.notSent {
			what = "built (the connection failed, so as the client would send them)"
		}
		details = append(details, fmt.Sprintf("%s: %d bytes %s", r.name, len(r.bytes), what))
	}
	o, fail := h.request.verdict(h.keys, attack, problems, strings.Join(details, "; ")+": no Authorization, X-Api-Key or Cookie, no key bytes")
	if fail == "" {
		o.Outcome = "no-credential"
	}
	return row(attack, mode, want, o, fail)
}

func (h *hunt) responseRow(attack, mode string) battery.Result {
	want := []string{"no-credential"}
	if len(h.resps) == 0 {
		return row(attack, mode, want, audit.Observation{Attack: attack, Outcome: audit.Error}, "inference.local gave no answer to check")
	}
	var problems, details []string
	for _, a := range h.resps {
		if a.err != "" {
			problems = append(problems, a.name+": inference.local did not answer: "+a.err)
			continue
		}
		if a.status != "200" {
			problems = append(problems, a.name+": inference.local answered HTTP "+a.status+" (want 200 to check a real answer)")
		}
		if a.shaped {
			problems = append(problems, a.name+": the answer holds a value shaped like a provider key")
		}
		for _, hd := range []string{"Set-Cookie", "Authorization", "X-Api-Key", "Openai-Organization", "Openai-Project", "Anthropic-Organization-Id"} {
			if a.header.Get(hd) != "" {
				problems = append(problems, a.name+": the answer carries "+hd)
			}
		}
		details = append(details, a.name+": HTTP "+a.status)
	}
	o, fail := h.response.verdict(h.keys, attack, problems, strings.Join(details, "; ")+": headers and body hold no key bytes, key-shaped values, cookies or account ids")
	if fail == "" {
		o.Outcome = "no-credential"
	}
	return row(attack, mode, want, o, fail)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mib(bytesStr string) string {
	n, err := strconv.ParseInt(bytesStr, 10, 64)
	if err != nil {
		return "?"
	}
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64)
}
