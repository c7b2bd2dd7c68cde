package live

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/audit/battery"
)

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
