package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/netns"
	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/runas"
	"github.com/clawcage/clawcage/internal/stack/createcmd"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// DefinitionFile holds a sandbox created with `clawcage sandbox create`:
// a clawcage.yaml fragment with just that sandbox, so that it is validated
// (with line numbers) exactly like the operator's file.
const DefinitionFile = "sandbox.yaml"

// runner is the running stack: its components and its mutable set of
// sandboxes.
type runner struct {
	opts     Options
	state    string
	exe      string
	cfgBytes []byte         // the operator's clawcage.yaml
	cfg      *config.Config // parsed from cfgBytes
	log      *slog.Logger
	sup      *supervisor.Supervisor
	comps    []*component
	presets  *presetDiscovery // preset parameters, as the policy engine gets them

	// settled is closed once every component has reported ready (or after
	// settleTimeout): background work that would slow their start waits.
	settled    chan struct{}
	settleOnce sync.Once
	readyMu    sync.Mutex
	ready      map[string]bool

	opMu sync.Mutex // serialises create and delete

	spare spareNet // the next created sandbox's network, made in advance

	mu       sync.Mutex
	defs     map[string][]byte // created sandboxes: name -> definition file
	nets     map[string]*sandboxNet
	releases map[string]func() // uid slots held per sandbox
}

type definition struct {
	raw     []byte
	sandbox config.Sandbox
}

// loadDefinitions reads <state>/sandboxes/*/sandbox.yaml. A definition whose
// name the operator's configuration also uses is ignored (with a warning):
// the configuration wins.
func loadDefinitions(state string, cfg *config.Config, log *slog.Logger) (map[string]definition, error) {
	dir := filepath.Join(state, "sandboxes")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	out := map[string]definition{}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name(), DefinitionFile)
		raw, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read sandbox definition: %w", err)
		}
		sb, err := parseDefinition(raw, path, e.Name())
		if err != nil {
			return nil, err
		}
		if _, ok := cfg.Sandboxes[e.Name()]; ok {
			log.Warn("sandbox defined both in the configuration and by `sandbox create`; using the configuration", "sandbox", e.Name(), "ignored", path)
			continue
		}
		out[e.Name()] = definition{raw: raw, sandbox: sb}
	}
	return out, nil
}

// parseDefinition validates a definition that must hold exactly sandbox name.
func parseDefinition(raw []byte, source, name string) (config.Sandbox, error) {
	c, err := config.Parse(raw, source)
	if err != nil {
		return config.Sandbox{}, err
	}
	sb, ok := c.Sandboxes[name]
	if !ok || len(c.Sandboxes) != 1 {
		return config.Sandbox{}, fmt.Errorf("%s: must define exactly the sandbox %q", source, name)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil || len(doc.Content) != 1 {
		return config.Sandbox{}, fmt.Errorf("%s: not a YAML document", source)
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i]; k.Value != "sandboxes" {
			return config.Sandbox{}, fmt.Errorf("%s:%d: %s: a sandbox definition holds only its sandbox, nothing else", source, k.Line, k.Value)
		}
	}
	return sb, nil
}

// mergedConfig is the operator's configuration with the created sandboxes
// added under "sandboxes": what the components read.
func (r *runner) mergedConfig() ([]byte, error) {
	if len(r.defs) == 0 {
		return r.cfgBytes, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(r.cfgBytes, &doc); err != nil {
		return nil, fmt.Errorf("merge sandboxes into the configuration: %w", err)
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	var sbs *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "sandboxes" {
			sbs = root.Content[i+1]
		}
	}
	if sbs == nil || sbs.Kind != yaml.MappingNode {
		sbs = &yaml.Node{Kind: yaml.MappingNode}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "sandboxes"}, sbs)
	}
	names := make([]string, 0, len(r.defs))
	for n := range r.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var d yaml.Node
		if err := yaml.Unmarshal(r.defs[n], &d); err != nil {
			return nil, fmt.Errorf("merge sandbox %s: %w", n, err)
		}
		dm := d.Content[0]
		for i := 0; i+1 < len(dm.Content); i += 2 {
			if dm.Content[i].Value == "sandboxes" {
				sbs.Content = append(sbs.Content, dm.Content[i+1].Content...)
			}
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("merge sandboxes into the configuration: %w", err)
	}
	if _, err := config.Parse(out, "merged configuration"); err != nil {
		return nil, err
	}
	return out, nil
}

// writeComponentConfigs gives each component its copy of the configuration
// (the operator's file may be unreadable to it).
func (r *runner) writeComponentConfigs() error {
	merged, err := r.mergedConfig()
	if err != nil {
		return err
	}
	for _, c := range r.comps {
		if err := writeOwned(filepath.Join(c.dir, "clawcage.yaml"), merged, c.id); err != nil {
			return err
		}
	}
	return nil
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// componentCmd builds the command line, identity, environment, inherited
// listeners and control channel of a component; called for every (re)start,
// so a restarted component gets the current set of sandboxes.
func (r *runner) componentCmd(c *component) func() (*exec.Cmd, error) {
	return func() (*exec.Cmd, error) {
		args := append([]string{c.command, "--config", filepath.Join(c.dir, "clawcage.yaml"), "--state", r.state}, c.args...)
		cmd := exec.Command(r.exe, args...)
		cmd.Dir = c.dir
		cmd.Env = componentEnv(c.dir, c.env...)
		runas.Configure(cmd, c.id)
		local, remote, err := netns.ControlPair()
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		var names []string
		var files []*os.File
		for _, n := range sortedNames(r.nets) {
			names = append(names, n)
			files = append(files, r.nets[n].files[c.name])
		}
		if len(names) > 0 {
			if err := netns.ExportListeners(cmd, names, files); err != nil {
				local.Close()
				remote.Close()
				return nil, err
			}
		}
		netns.ExportControl(cmd, remote)
		l := newLink(local, names)
		if c.link != nil {
			c.link.close() // its instance has exited
		}
		c.link = l
		go l.read(func() {
			r.log.Info("component ready", "component", c.name, "sandboxes", len(names))
			r.sup.CheckHealth(c.name)
			r.readyMu.Lock()
			r.ready[c.name] = true
			all := len(r.ready) == len(r.comps)
			r.readyMu.Unlock()
			if all {
				r.settle()
			}
		})
		return cmd, nil
	}
}

// settleTimeout bounds how long background work waits for the components.
const settleTimeout = 3 * time.Second

// settle releases the work waiting for the components' start.
func (r *runner) settle() { r.settleOnce.Do(func() { close(r.settled) }) }

// closeControlFile closes the supervisor's copy of the child's end of the
// control channel once the child has it (or failed to start), so the
// supervisor sees the channel close when the child exits.
func closeControlFile(cmd *exec.Cmd, _ error) {
	for _, f := range cmd.ExtraFiles {
		if f != nil && f.Name() == netns.ControlFileName {
			f.Close()
		}
	}
}

// addSandbox creates the sandbox's namespace and listeners and registers it
// with the supervisor (started at once if the supervisor runs). It returns
// the running component instances that still need the sandbox's listeners
// (handOver); instances started later inherit them. ready, if set, is
// waited for before the listeners are registered (the components'
// configuration copies, written meanwhile); the sandbox itself does not need
// them, so it is started first, and stopped again if ready fails.
//
// useSpare takes the spare network (spare.go) if one is ready.
func (r *runner) addSandbox(ctx context.Context, name string, sb config.Sandbox, useSpare bool, ready func() error) (*sandboxNet, map[*component]*link, error) {
	restart, err := supervisor.ParseRestartPolicy(sb.Restart)
	if sb.Restart == "" {
		restart, err = supervisor.RestartAlways, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox %s: %w", name, err)
	}
	var sn *sandboxNet
	if useSpare {
		sn = r.spareFor(name)
	}
	fromSpare := sn != nil
	if sn == nil {
		if sn, err = openSandboxNet(ctx, r.state, name, r.comps); err != nil {
			return nil, nil, err
		}
	}
	spec := SandboxSpec{
		Name: name, Config: sb, NetNS: sn.ns,
		StateDir:  filepath.Join(r.state, "sandboxes", name),
		Workspace: filepath.Join(r.state, "sandboxes", name, "workspace"),
		Cgroup:    CgroupName(r.state, name),
		Log:       r.log.With("component", "sandbox", "sandbox", name),
	}
	fail := func(err error) (*sandboxNet, map[*component]*link, error) {
		sn.ns.Delete()
		sn.close()
		return nil, nil, err
	}
	// Traversable, not listable: the sandbox's own uids must reach the
	// workspace below, which the runtime creates owned by them.
	for _, d := range []string{filepath.Dir(spec.StateDir), spec.StateDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fail(fmt.Errorf("sandbox %s: state directory: %w", name, err))
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return fail(fmt.Errorf("sandbox %s: state directory: %w", name, err))
		}
	}
	release := func() {}
	if r.opts.UIDSlots != nil {
		base, rel, err := stableUIDRange(r.opts.UIDSlots, spec.StateDir)
		if err != nil {
			return fail(fmt.Errorf("sandbox %s: %w", name, err))
		}
		spec.UIDBase, release = base, rel
	}
	startSandbox := r.opts.SandboxStart
	child := "sandbox/" + name
	err = r.sup.Add(supervisor.Spec{
		Name: child,
		StartProcess: func(stdout, stderr io.Writer) (supervisor.Process, error) {
			p, err := startSandbox(spec, stdout, stderr)
			sn.mu.Lock()
			sn.proc = p
			sn.mu.Unlock()
			return p, err
		},
		Restart:     restart,
		Backoff:     r.opts.Backoff,
		StopTimeout: r.opts.StopTimeout,
		LogAttrs:    []any{"component", "sandbox", "sandbox", name},
	})
	if err != nil {
		release()
		return fail(err)
	}
	if ready != nil {
		if err := ready(); err != nil {
			// Stopped before the namespace it runs in is deleted.
			if rerr := r.sup.Remove(ctx, child); rerr != nil {
				r.log.Error("stop the sandbox", "sandbox", name, "err", rerr)
			}
			release()
			return fail(err)
		}
	}
	// The listeners are registered once the configuration copies hold the
	// sandbox: a component (re)started from now on inherits them, and the
	// caller hands them to the running instances. Until then connections
	// wait in the listeners' backlog.
	links := map[*component]*link{}
	r.mu.Lock()
	r.nets[name] = sn
	r.releases[name] = release
	for _, c := range r.comps {
		if l := c.link; l != nil && !l.has[name] {
			l.has[name] = true
			links[c] = l
		}
	}
	r.mu.Unlock()
	r.log.Info("sandbox network ready", "sandbox", name, "netns", sn.ns.Path(), "router", RouterAddr, "proxy", ProxyAddr, "spare", fromSpare)
	return sn, links, nil
}

// handOver sends the sandbox's listeners to the running component
// instances in links, in parallel, and waits for their answers. An instance
// that has exited is skipped (its successor inherits the listener); one that
// does not answer is restarted with the full set. A component that cannot
// load the sandbox's settings refuses that sandbox's requests; its error is
// logged and returned.
func (r *runner) handOver(ctx context.Context, name string, sn *sandboxNet, links map[*component]*link) error {
	return r.tellComponents(links, func(c *component, l *link) error {
		return l.request(ctx, netns.OpAdd, name, sn.files[c.name])
	}, name, "listener handed over")
}

// takeBack tells the running component instances in links to stop serving
// the sandbox and to close its connections.
func (r *runner) takeBack(ctx context.Context, name string, links map[*component]*link) error {
	return r.tellComponents(links, func(_ *component, l *link) error {
		return l.request(ctx, netns.OpRemove, name, nil)
	}, name, "listener taken back")
}

func (r *runner) tellComponents(links map[*component]*link, req func(*component, *link) error, name, done string) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for c, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := req(c, l)
			var ce *componentError
			switch {
			case err == nil:
				r.log.Info(done, "component", c.name, "sandbox", name, "duration", time.Since(start))
			case errors.As(err, &ce):
				r.log.Error("component refused the sandbox", "component", c.name, "sandbox", name, "err", err)
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
				mu.Unlock()
			case errors.Is(err, errLinkGone):
				r.log.Info("component instance exited; its restart inherits the current listeners", "component", c.name, "sandbox", name)
			default:
				r.log.Error("component did not answer; restarting it with the current listeners", "component", c.name, "sandbox", name, "err", err)
				if rerr := r.sup.Restart(c.name); rerr != nil {
					r.log.Error("restart component", "component", c.name, "err", rerr)
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// CreateRequest is the body of POST /v1/sandboxes. It is defined in
// package createcmd, the fast path of `clawcage sandbox create`, which must
// not import this package.
type CreateRequest = createcmd.Request

// createSandbox validates, persists and starts a new sandbox.
func (r *runner) createSandbox(ctx context.Context, req CreateRequest) (int, error) {
	t0 := time.Now()
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.opts.SandboxStart == nil {
		return http.StatusServiceUnavailable, errors.New("this build has no sandbox runtime")
	}
	source := "sandbox " + req.Name
	sb, err := parseDefinition([]byte(req.Definition), source, req.Name)
	if err != nil {
		return http.StatusBadRequest, err
	}
	// The policy engine compiles the policy with the same parameters: one
	// that does not compile is refused here, with the reason, rather than
	// answered with refusals later.
	params := r.cfg.PresetParams
	if usesPresets(sb.Policy.Presets) {
		if params, err = r.presets.wait(ctx); err != nil {
			return http.StatusServiceUnavailable, fmt.Errorf("%s: preset parameters: %w", source, err)
		}
	}
	if _, err := sb.Policy.Compile(policy.CompileOptions{PresetParams: params}); err != nil {
		return http.StatusBadRequest, fmt.Errorf("%s: policy: %w", source, err)
	}
	r.mu.Lock()
	_, inCfg := r.cfg.Sandboxes[req.Name]
	_, exists := r.nets[req.Name]
	r.mu.Unlock()
	if inCfg || exists {
		return http.StatusConflict, fmt.Errorf("sandbox %s already exists", req.Name)
	}
	dir := filepath.Join(r.state, "sandboxes", req.Name)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return http.StatusInternalServerError, fmt.Errorf("sandbox %s: %w", req.Name, err)
	}
	path := filepath.Join(dir, DefinitionFile)
	r.mu.Lock()
	r.defs[req.Name] = []byte(req.Definition)
	r.mu.Unlock()
	undo := func() {
		r.mu.Lock()
		delete(r.defs, req.Name)
		r.mu.Unlock()
		os.Remove(path)
		if err := r.writeComponentConfigs(); err != nil {
			r.log.Error("rewrite the components' configuration", "err", err)
		}
	}
	// The definition file and the components' copies of the configuration
	// (from which they read the sandbox's settings) are written while the
	// sandbox starts; the listeners are registered, and the create
	// answered, only once they are (addSandbox's ready): a sandbox whose
	// definition could not be stored is stopped again.
	tDef := time.Now()
	written := make(chan error, 1)
	go func() {
		if err := writeOwned(path, []byte(req.Definition), runas.Identity{}); err != nil { // root, 0600
			written <- err
			return
		}
		written <- r.writeComponentConfigs()
	}()
	var once sync.Once
	var werr error
	waitWritten := func() error { once.Do(func() { werr = <-written }); return werr }
	// The next create's network is made once this one has been answered
	// (the sandbox's own start is mostly done by then).
	defer r.fillSpare(ctx)
	sn, links, err := r.addSandbox(ctx, req.Name, sb, true, waitWritten)
	tAdded := time.Now()
	if err != nil {
		waitWritten() // before undo writes them again
		undo()
		return http.StatusInternalServerError, err
	}
	if err := r.handOver(ctx, req.Name, sn, links); err != nil {
		return http.StatusInternalServerError, fmt.Errorf("sandbox %s was created, but %w; its requests are refused until that is fixed (clawcage logs)", req.Name, err)
	}
	r.log.Info("sandbox created", "sandbox", req.Name)
	// Where the request's time went (the sandbox's own start runs in the
	// supervisor's child loop from "started" on, parallel to the hand-over).
	r.log.Debug("sandbox create timing", "sandbox", req.Name, "duration", time.Since(t0),
		"validate", tDef.Sub(t0), "network_and_start", tAdded.Sub(tDef), "hand_over", time.Since(tAdded))
	return http.StatusCreated, nil
}

// deleteSandbox stops a created sandbox and removes it with its state
// (workspace included unless keepWorkspace).
func (r *runner) deleteSandbox(ctx context.Context, name string, keepWorkspace bool) (int, error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	_, inCfg := r.cfg.Sandboxes[name]
	sn, ok := r.nets[name]
	r.mu.Unlock()
	if inCfg {
		return http.StatusConflict, fmt.Errorf("sandbox %s is defined in the configuration file; remove it there", name)
	}
	if !ok {
		return http.StatusNotFound, fmt.Errorf("no sandbox %s", name)
	}
	if err := r.sup.Remove(ctx, "sandbox/"+name); err != nil {
		return http.StatusInternalServerError, err
	}
	links := map[*component]*link{}
	r.mu.Lock()
	delete(r.nets, name)
	delete(r.defs, name)
	release := r.releases[name]
	delete(r.releases, name)
	for _, c := range r.comps {
		if l := c.link; l != nil && l.has[name] {
			delete(l.has, name)
			links[c] = l
		}
	}
	r.mu.Unlock()
	if err := r.takeBack(ctx, name, links); err != nil {
		r.log.Error("component could not stop serving the deleted sandbox", "sandbox", name, "err", err)
	}
	if err := r.writeComponentConfigs(); err != nil {
		return http.StatusInternalServerError, err
	}
	if err := sn.ns.Delete(); err != nil {
		r.log.Warn("remove network namespace", "sandbox", name, "err", err)
	}
	sn.close()
	if release != nil {
		release()
	}
	dir := filepath.Join(r.state, "sandboxes", name)
	var err error
	if keepWorkspace {
		err = os.Remove(filepath.Join(dir, DefinitionFile))
	} else {
		err = os.RemoveAll(dir)
	}
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("remove sandbox %s: %w", name, err)
	}
	r.log.Info("sandbox deleted", "sandbox", name, "kept_workspace", keepWorkspace)
	return http.StatusOK, nil
}

// routes registers the sandbox endpoints of the control socket.
func (r *runner) routes(ctl *supervisor.ControlServer, ctx context.Context) {
	ctl.Handle("POST /v1/sandboxes/{name}/exec", r.handleExec(ctx)) // exec.go
	ctl.Handle("GET /v1/sandboxes", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		supervisor.WriteJSON(w, http.StatusOK, r.views())
	}))
	ctl.Handle("POST /v1/sandboxes", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var cr CreateRequest
		dec := json.NewDecoder(io.LimitReader(req.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cr); err != nil {
			supervisor.WriteJSON(w, http.StatusBadRequest, apiError{Error: "decode request: " + err.Error()})
			return
		}
		code, err := r.createSandbox(ctx, cr)
		if err != nil {
			supervisor.WriteJSON(w, code, apiError{Error: err.Error()})
			return
		}
		supervisor.WriteJSON(w, code, r.view(cr.Name))
	}))
	ctl.Handle("DELETE /v1/sandboxes/{name}", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		code, err := r.deleteSandbox(ctx, req.PathValue("name"), req.URL.Query().Get("keep_workspace") == "1")
		if err != nil {
			supervisor.WriteJSON(w, code, apiError{Error: err.Error()})
			return
		}
		supervisor.WriteJSON(w, code, map[string]string{"deleted": req.PathValue("name")})
	}))
}

// apiError is the body of a failed control request.
type apiError struct {
	Error string `json:"error"`
}

func (r *runner) views() []SandboxView {
	r.mu.Lock()
	names := sortedNames(r.nets)
	r.mu.Unlock()
	out := make([]SandboxView, 0, len(names))
	for _, n := range names {
		if v, ok := r.viewOK(n); ok {
			out = append(out, v)
		}
	}
	return out
}

func (r *runner) view(name string) SandboxView { v, _ := r.viewOK(name); return v }

func (r *runner) viewOK(name string) (SandboxView, bool) {
	r.mu.Lock()
	sn, ok := r.nets[name]
	_, created := r.defs[name]
	r.mu.Unlock()
	if !ok {
		return SandboxView{}, false
	}
	v := SandboxView{Name: name, NetNS: sn.ns.Path(), Router: RouterAddr, Proxy: ProxyAddr, Source: "config"}
	if created {
		v.Source = "created"
	}
	for _, s := range r.sup.Status() {
		if s.Name != "sandbox/"+name {
			continue
		}
		v.Status = &s
		sn.mu.Lock()
		p := sn.proc
		sn.mu.Unlock()
		if st, ok := p.(statser); ok && s.State == "running" {
			if cs, err := st.Stats(); err == nil {
				v.Stats = &cs
			}
		}
	}
	return v, true
}

// deleteNamespaces removes every sandbox's namespace (at shutdown).
func (r *runner) deleteNamespaces() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, sn := range r.nets {
		if err := sn.ns.Delete(); err != nil {
			r.log.Warn("remove network namespace", "sandbox", name, "err", err)
		}
	}
}

// closeAll closes listeners and releases uid slots (after the supervisor
// has stopped every child).
func (r *runner) closeAll() {
	r.closeSpare()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sn := range r.nets {
		sn.close()
	}
	for _, rel := range r.releases {
		rel()
	}
}
