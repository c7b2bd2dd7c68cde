// Package stack builds and runs the process tree of `clawcage up` from a
// configuration: state directories with the right owners, one network
// namespace per sandbox with the router's and the egress proxy's listeners
// inside it, the router and the policy engine as supervised children under
// their own uids, the sandboxes, the journal and the control socket.
//
// Everything the supervisor hands to another process (a uid, a directory, a
// listener, an environment variable) is decided in this file.
package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawcage/clawcage/internal/cgroup"
	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/kernel"
	"github.com/clawcage/clawcage/internal/netns"
	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/runas"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// Addresses of the sandbox-facing listeners, on each sandbox's own loopback.
const (
	RouterAddr = "127.0.0.1:8080" // inference.local:8080
	ProxyAddr  = "127.0.0.1:3128" // HTTP(S)_PROXY
)

// SandboxSpec is what a sandbox runtime needs to build one sandbox's command.
type SandboxSpec struct {
	Name      string
	Config    config.Sandbox
	NetNS     *netns.NetNS // join it: setns(CLONE_NEWNET) before the new user namespace
	Workspace string       // <state>/sandboxes/NAME/workspace, mounted at /sandbox; created by the runtime
	StateDir  string       // <state>/sandboxes/NAME (0711 root)
	// UIDBase is the sandbox's stable host uid range (0: the runtime picks
	// a free one on every start; see Options.UIDSlots).
	UIDBase uint32
	// Log receives the runtime's events about this sandbox (in the journal,
	// as component "sandbox" with the sandbox's name).
	Log *slog.Logger
	// Cgroup is the sandbox's cgroup name, unique per state directory
	// (CgroupName), so two stacks with a sandbox of the same name do not
	// share a group.
	Cgroup string
}

// UIDSlots hands out sandbox uid ranges (internal/sandbox implements it):
// Allocate takes any free slot, Claim takes a given one. Both hold the slot
// until release is called, so no other sandbox on the machine gets it.
type UIDSlots interface {
	Allocate() (slot int, base uint32, release func(), err error)
	Claim(slot int) (base uint32, release func(), err error)
}

// uidSlotFile records a sandbox's slot, so its workspace keeps its owner
// across restarts of the stack and of the host.
const uidSlotFile = "uid-slot"

// Options configure Run.
type Options struct {
	// ConfigPath is clawcage.yaml.
	ConfigPath string
	// StateDir is the stack's state directory.
	StateDir string
	// Exe is the clawcage binary the components run (default: this one).
	Exe string
	// SandboxStart starts one sandbox with its output going to stdout and
	// stderr (internal/sandbox's Start fits behind a small adapter). If nil
	// and the configuration has sandboxes, Run refuses to start.
	SandboxStart func(spec SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error)
	// Log, if set, also receives every event (the foreground view of `up`).
	Log slog.Handler
	// Backoff and StopTimeout tune the supervisor (zero: its defaults).
	Backoff     supervisor.Backoff
	StopTimeout time.Duration
	// UIDSlots, if set, gives every sandbox a stable uid range, recorded in
	// <state>/sandboxes/NAME/uid-slot.
	UIDSlots UIDSlots
	// Ready, if set, is called once everything has been started.
	Ready func()
	// DiscoverPresetParams finds registry parameters in the operator's
	// environment (default policy.DiscoverPresetParams); the configuration's
	// preset_params override what it finds.
	DiscoverPresetParams func(context.Context) (map[string]string, error)
	// KernelProbe reports the kernel features for GET /v1/kernel (default
	// kernel.Probe; `up` also applies the sandbox's minimum Landlock ABI).
	KernelProbe func(context.Context) kernel.Report
}

// Output limits of one sandbox stream in the journal.
const (
	SandboxLinesPerSecond = 200
	SandboxLineBurst      = 2000
)

// PresetParamsFile is the file in the policy engine's state directory that
// holds the preset parameters the supervisor discovered (JSON object).
const PresetParamsFile = "preset-params.json"

// component is one trust-domain process: router or policy engine.
type component struct {
	name    string // router, policy
	command string // the clawcage subcommand
	addr    string // its listener inside each sandbox netns
	health  string // a cheap GET on its admin socket <dir>/admin.sock
	args    []string
	env     []string // defaults, unless the supervisor's environment sets them
	id      runas.Identity
	dir     string

	// link is the control channel of the running instance (nil before the
	// first start); guarded by runner.mu.
	link *link
}

// sandboxNet is one sandbox's namespace and the listeners kept open in it
// for the whole life of the supervisor.
type sandboxNet struct {
	name  string
	ns    *netns.NetNS
	lns   map[string]net.Listener // component name -> listener
	files map[string]*os.File     // component name -> dup for hand-over

	mu   sync.Mutex
	proc supervisor.Process // the sandbox's current process, for its stats
}

// statser is implemented by sandbox processes that can report their cgroup
// counters.
type statser interface {
	Stats() (cgroup.Stats, error)
}

// Run starts the stack and supervises it until ctx ends or a client asks
// the control socket to stop; then it stops everything, removes the
// sandboxes' network namespaces and returns. A configuration error is
// returned before anything on disk is touched.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.ConfigPath == "" || opts.StateDir == "" {
		return errors.New("stack: config path and state directory are required")
	}
	cfgBytes, err := os.ReadFile(opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfg, err := config.Parse(cfgBytes, opts.ConfigPath)
	if err != nil {
		return err
	}
	if len(cfg.Sandboxes) > 0 && opts.SandboxStart == nil {
		return errors.New("the configuration has sandboxes but this build has no sandbox runtime (internal/sandbox); refusing to start without it")
	}
	if os.Geteuid() != 0 {
		return errors.New("clawcage up must run as root: it creates namespaces and starts components under their own uids")
	}
	exe := opts.Exe
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find the clawcage binary: %w", err)
		}
	}

	// Disk layout: state root 0711 root, journal 0700 root.
	state, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	// The components run under their own uids: they must be able to execute
	// the binary and reach their state directories, or they would only
	// crash-loop. Checked before anything on disk is touched.
	if err := runas.CheckReachable(exe, 0o005, "the clawcage binary"); err != nil {
		return err
	}
	if err := runas.CheckReachable(state, 0o001, "the state directory"); err != nil {
		return err
	}
	if c, err := net.DialTimeout("unix", supervisor.ControlSocketPath(state), time.Second); err == nil {
		c.Close()
		return fmt.Errorf("a supervisor is already running on %s (clawcage status --state %s)", state, state)
	}
	if err := runas.PrepareStateRoot(state); err != nil {
		return err
	}
	j, err := journal.Open(filepath.Join(state, "journal"), journal.Options{})
	if err != nil {
		return err
	}
	defer j.Close()
	var h slog.Handler = journal.NewHandler(j, "supervisor", nil)
	if opts.Log != nil {
		h = slog.NewMultiHandler(h, opts.Log)
	}
	log := slog.New(h)

	// The control socket first: it also refuses a second supervisor on the
	// same state directory before anything else is changed.
	sup := supervisor.New(supervisor.Options{
		Logger: log,
		Output: func(name, stream string) io.Writer { return outputFor(j, name, stream) },
	})
	ctl, err := supervisor.NewControlServer(supervisor.ControlSocketPath(state), sup, log)
	if err != nil {
		return err
	}

	comps := []*component{
		{name: "router", command: "router", addr: RouterAddr, health: "/metrics"},
		// The proxy only relays bytes: one P switches threads less and
		// costs less CPU per connection (bench/README.md, egress proxy).
		{name: "policy", command: "policy-engine", addr: ProxyAddr, health: "/v1/queue", env: []string{"GOMAXPROCS=1"}},
	}
	for _, c := range comps {
		if c.id, err = runas.ForComponent(c.name); err != nil {
			return err
		}
		if err := runas.CheckUnused(c.id); err != nil {
			return err
		}
		if c.dir, err = runas.PrepareStateDir(state, c.id); err != nil {
			return err
		}
	}
	// Registry hosts for the npm/go/apt presets come from the operator's
	// client configuration, which only this process (the operator's
	// environment) can see; the policy engine gets the result as a file.
	// Until the discovery (in the background) is done, the file holds the
	// configuration's explicit parameters.
	pol := comps[1]
	paramsPath := filepath.Join(pol.dir, PresetParamsFile)
	saveParams := func(p map[string]string) error {
		pj, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("encode preset parameters: %w", err)
		}
		return writeOwned(paramsPath, pj, pol.id)
	}
	explicit := map[string]string{}
	for k, v := range cfg.PresetParams {
		explicit[k] = v
	}
	if err := saveParams(explicit); err != nil {
		return err
	}
	pol.args = []string{"--preset-params", paramsPath}
	discCtx, discStop := context.WithCancel(ctx)
	defer discStop()
	// The discovery's client commands compete with the components' start
	// for the CPU: unless a sandbox needs the result first (below), it
	// starts once the components are up.
	startDisc := make(chan struct{})
	disc := startPresetDiscovery(discCtx, startDisc, opts.DiscoverPresetParams, cfg.PresetParams, log, saveParams)

	// Sandboxes: the configuration's, plus those created with
	// `clawcage sandbox create` (persisted under <state>/sandboxes).
	defs, err := loadDefinitions(state, cfg, log)
	if err != nil {
		return err
	}
	if len(defs) > 0 && opts.SandboxStart == nil {
		return errors.New("the state directory has sandboxes but this build has no sandbox runtime (internal/sandbox); refusing to start without it")
	}
	// Groups of sandboxes a killed supervisor left behind (empty ones only).
	if err := removeStaleCgroups(state); err != nil {
		log.Warn("remove stale sandbox cgroups", "err", err)
	}
	spawner, err := runas.NewSpawner()
	if err != nil {
		return err
	}
	defer spawner.Close() // after the supervisor has stopped every child

	r := &runner{opts: opts, state: state, exe: exe, cfgBytes: cfgBytes, cfg: cfg, log: log, sup: sup, presets: disc,
		comps: comps, defs: map[string][]byte{}, nets: map[string]*sandboxNet{}, releases: map[string]func(){},
		settled: make(chan struct{}), ready: map[string]bool{}}
	settleTimer := time.AfterFunc(settleTimeout, r.settle)
	defer settleTimer.Stop()
	defer r.closeAll()
	for name, d := range defs {
		r.defs[name] = d.raw
	}
	if err := r.writeComponentConfigs(); err != nil {
		return err
	}
	for _, c := range comps {
		spec := supervisor.Spec{
			Name:        c.name,
			Cmd:         r.componentCmd(c),
			Start:       spawner.Start,
			AfterStart:  closeControlFile,
			Health:      adminHealth(filepath.Join(c.dir, AdminSocketName), c.health),
			Restart:     supervisor.RestartAlways,
			Backoff:     opts.Backoff,
			StopTimeout: opts.StopTimeout,
		}
		if err := sup.Add(spec); err != nil {
			return err
		}
	}
	all := map[string]config.Sandbox{}
	for name, sb := range cfg.Sandboxes {
		all[name] = sb
	}
	for name, d := range defs {
		all[name] = d.sandbox
	}
	var presets [][]string
	for _, sb := range all {
		presets = append(presets, sb.Policy.Presets)
	}
	if usesPresets(presets...) {
		// The policy engine compiles these presets at start: it must find
		// the discovered parameters in its file.
		close(startDisc)
		if _, err := disc.wait(ctx); err != nil {
			return err
		}
	} else {
		go func() {
			select {
			case <-r.settled:
			case <-discCtx.Done():
			}
			close(startDisc)
		}()
	}
	for _, name := range sortedNames(all) {
		if _, _, err := r.addSandbox(ctx, name, all[name], false, nil); err != nil {
			return err
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ctl.Handle("POST /v1/down", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Info("stop requested over the control socket")
		supervisor.WriteJSON(w, http.StatusAccepted, map[string]string{"status": "stopping"})
		stop()
	}))
	r.routes(ctl, runCtx)
	// The first created sandbox's network is made once the components are
	// up (it would compete with their start).
	go func() {
		select {
		case <-r.settled:
			r.fillSpare(runCtx)
		case <-runCtx.Done():
		}
	}()
	ctl.Handle("GET /v1/kernel", newKernelProbe(runCtx, r.settled, opts.KernelProbe).handler())

	// The control socket outlives the children: it disappears only once
	// everything has stopped, which is what `clawcage down` waits for.
	ctlCtx, ctlStop := context.WithCancel(context.Background())
	defer ctlStop()
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- ctl.Serve(ctlCtx) }()
	supDone := make(chan struct{})
	go func() { defer close(supDone); _ = sup.Run(runCtx) }()
	log.Info("stack up", "state", state, "sandboxes", len(all), "pid", os.Getpid())
	if opts.Ready != nil {
		opts.Ready()
	}
	ctlDone := false
	select {
	case <-runCtx.Done():
	case err = <-ctlErr:
		ctlDone = true
		log.Error("control socket failed; stopping", "err", err)
		stop()
	}
	<-supDone
	r.deleteNamespaces()
	log.Info("stack down")
	ctlStop()
	if !ctlDone {
		if cerr := <-ctlErr; cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// AdminSocketName is the admin socket every component keeps in its state
// directory; the supervisor's health check asks it a cheap question.
const AdminSocketName = "admin.sock"

// adminHealth checks that a component answers on its admin socket: alive
// and serving, not merely holding a listener.
func adminHealth(sock, path string) func(context.Context) error {
	client := supervisor.Client(sock)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://component"+path, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("admin socket: GET %s answered %s", path, resp.Status)
		}
		return nil
	}
}

// stableUIDRange re-claims the slot recorded in dir, or allocates one and
// records it.
func stableUIDRange(slots UIDSlots, dir string) (uint32, func(), error) {
	path := filepath.Join(dir, uidSlotFile)
	b, err := os.ReadFile(path)
	if err == nil {
		slot, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if perr != nil || slot < 0 {
			return 0, nil, fmt.Errorf("%s: %q is not a uid slot number", path, b)
		}
		base, release, err := slots.Claim(slot)
		if err != nil {
			return 0, nil, fmt.Errorf("claim uid slot %d recorded in %s: %w", slot, path, err)
		}
		return base, release, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return 0, nil, fmt.Errorf("read uid slot: %w", err)
	}
	slot, base, release, err := slots.Allocate()
	if err != nil {
		return 0, nil, err
	}
	if err := writeOwned(path, []byte(strconv.Itoa(slot)+"\n"), runas.Identity{}); err != nil {
		release()
		return 0, nil, err
	}
	return base, release, nil
}

// presetParams merges discovered parameters with the configuration's
// explicit ones (which win). A failed discovery is logged, not fatal: the
// presets that need a missing parameter fail to compile in the engine, with
// a message naming it.
func presetParams(ctx context.Context, discover func(context.Context) (map[string]string, error), explicit map[string]string, log *slog.Logger) map[string]string {
	if discover == nil {
		discover = policy.DiscoverPresetParams
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	found, err := discover(dctx)
	cancel()
	if err != nil {
		log.Warn("preset parameters: some sources failed", "err", err)
	}
	out := map[string]string{}
	for k, v := range found {
		out[k] = v
	}
	for k, v := range explicit {
		out[k] = v
	}
	return out
}

// outputFor routes a child's stream into the journal.
func outputFor(j *journal.Journal, name, stream string) io.Writer {
	if sb, ok := strings.CutPrefix(name, "sandbox/"); ok {
		// A sandbox cannot flood the journal and rotate the evidence away.
		return journal.NewLineWriter(j, journal.Source{Component: "sandbox", Sandbox: sb, Stream: stream,
			LinesPerSecond: SandboxLinesPerSecond, Burst: SandboxLineBurst})
	}
	return journal.NewLineWriter(j, journal.Source{Component: name, Stream: stream, Structured: true})
}

// openSandboxNet re-opens the sandbox's namespace left by a previous
// supervisor, or creates it, and opens every component's listener inside.
func openSandboxNet(ctx context.Context, state, name string, comps []*component) (*sandboxNet, error) {
	ns, err := netns.Open(state, name)
	if err != nil {
		if _, statErr := os.Lstat(filepath.Join(netns.Dir(state), name)); statErr == nil {
			// A leftover mount point that is no longer a namespace.
			_ = os.Remove(filepath.Join(netns.Dir(state), name))
		}
		if ns, err = netns.Create(ctx, state, name); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", name, err)
		}
	}
	sn := &sandboxNet{name: name, ns: ns, lns: map[string]net.Listener{}, files: map[string]*os.File{}}
	for _, c := range comps {
		ln, err := netns.Listen(ctx, ns, "tcp", c.addr)
		if err != nil {
			sn.close()
			return nil, fmt.Errorf("sandbox %s: %s listener: %w", name, c.name, err)
		}
		sn.lns[c.name] = ln
		f, err := netns.ListenerFile(ln)
		if err != nil {
			sn.close()
			return nil, fmt.Errorf("sandbox %s: %w", name, err)
		}
		sn.files[c.name] = f
	}
	return sn, nil
}

func (sn *sandboxNet) close() {
	for _, f := range sn.files {
		f.Close()
	}
	for _, ln := range sn.lns {
		ln.Close()
	}
	sn.ns.Close()
}

// componentEnv is the whole environment of a component: nothing else of the
// supervisor's leaks through, except proxy and CA settings the host needs
// to reach providers and registries.
func componentEnv(dir string, defaults ...string) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + dir,
		"LANG=C.UTF-8",
		runas.EnvSupervised + "=1",
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
		"SSL_CERT_FILE", "SSL_CERT_DIR", "TZ", "GOPROXY", "GONOSUMDB", "GOPRIVATE", "npm_config_registry", "NPM_CONFIG_REGISTRY"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for _, kv := range defaults {
		k, _, _ := strings.Cut(kv, "=")
		if v, ok := os.LookupEnv(k); ok {
			kv = k + "=" + v
		}
		env = append(env, kv)
	}
	return env
}

// writeOwned atomically writes data to path, mode 0600, owned by id.
func writeOwned(path string, data []byte, id runas.Identity) error {
	tmp := path + ".tmp-" + strconv.Itoa(os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chown(tmp, int(id.UID), int(id.GID))); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SandboxView is one entry of GET /v1/sandboxes.
type SandboxView struct {
	Name   string             `json:"name"`
	NetNS  string             `json:"netns"`
	Router string             `json:"router"`
	Proxy  string             `json:"proxy"`
	Source string             `json:"source"` // "config" or "created"
	Status *supervisor.Status `json:"status,omitempty"`
	// Stats are the sandbox's cgroup counters while it runs.
	Stats *cgroup.Stats `json:"stats,omitempty"`
}
