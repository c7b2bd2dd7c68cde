package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/cgroup"
	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/netns"
	"github.com/clawcage/clawcage/internal/runas"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// The test binary doubles as the components (argv[1] router or
// policy-engine, as the stack runs them) and as a stand-in sandbox.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "router", "policy-engine":
			os.Exit(fakeComponent(os.Args[1]))
		case "fake-sandbox":
			os.Exit(fakeSandbox(os.Args[2]))
		}
	}
	os.Exit(m.Run())
}

// fakeComponent behaves like a supervised component: harden, take the
// inherited listeners, answer each connection with who it is.
func fakeComponent(name string) int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if !runas.Supervised() {
		log.Error("not supervised")
		return 2
	}
	if err := runas.HardenSelf(); err != nil {
		log.Error("refusing to start", "err", err)
		return 2
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("HOME"), "clawcage.yaml")); err != nil {
		log.Error("no config copy", "err", err)
		return 2
	}
	if name == "policy-engine" {
		// The supervisor's discovery, merged, as a file it can read.
		b, err := os.ReadFile(filepath.Join(os.Getenv("HOME"), PresetParamsFile))
		var params map[string]string
		if err == nil {
			err = json.Unmarshal(b, &params)
		}
		if err != nil || os.Args[len(os.Args)-2] != "--preset-params" {
			log.Error("preset params", "content", string(b), "err", err, "args", os.Args)
			return 2
		}
	}
	lns, err := netns.InheritedListeners()
	if err != nil {
		log.Error("listeners", "err", err)
		return 2
	}
	ctl, err := netns.InheritedControl()
	if err != nil || ctl == nil {
		log.Error("control channel", "err", err)
		return 2
	}
	os.Remove(filepath.Join(os.Getenv("HOME"), AdminSocketName)) // left by a killed predecessor
	admin, err := net.Listen("unix", filepath.Join(os.Getenv("HOME"), AdminSocketName))
	if err != nil {
		log.Error("admin socket", "err", err)
		return 2
	}
	go http.Serve(admin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" && r.URL.Path != "/v1/queue" {
			http.NotFound(w, r)
		}
	}))
	fs := &fakeServer{banner: name, log: log, served: map[string]context.CancelFunc{}}
	for sb, ln := range lns {
		if err := fs.AddListener(context.Background(), sb, ln); err != nil {
			log.Error("refusing", "sandbox", sb, "err", err)
		}
	}
	netns.ReportReady(ctl)
	err = netns.ServeControl(context.Background(), ctl, fs)
	log.Error("control channel closed", "err", err)
	return 3
}

// fakeServer serves each sandbox's listener with a banner naming the
// component, the sandbox, its uid and pid. A client that sends "stream\n"
// first gets a tick every 10 ms instead, until the sandbox is removed. A
// sandbox whose name starts with "broken" stands for one whose settings
// the component cannot load: it gets "refused".
type fakeServer struct {
	banner string
	log    *slog.Logger
	mu     sync.Mutex
	served map[string]context.CancelFunc
}

func (f *fakeServer) AddListener(_ context.Context, sb string, ln net.Listener) error {
	ctx, cancel := context.WithCancel(context.Background())
	f.mu.Lock()
	if _, ok := f.served[sb]; ok {
		f.mu.Unlock()
		cancel()
		ln.Close()
		return fmt.Errorf("sandbox %s is already served", sb)
	}
	f.served[sb] = cancel
	f.mu.Unlock()
	context.AfterFunc(ctx, func() { ln.Close() })
	broken := strings.HasPrefix(sb, "broken")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				stop := context.AfterFunc(ctx, func() { c.Close() })
				defer stop()
				if broken {
					fmt.Fprintf(c, "refused %s", sb)
					return
				}
				c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				line, _ := bufio.NewReader(c).ReadString('\n')
				if line != "stream\n" {
					fmt.Fprintf(c, "%s %s uid=%d pid=%d", f.banner, sb, os.Getuid(), os.Getpid())
					return
				}
				for i := 0; ; i++ {
					if _, err := fmt.Fprintf(c, "tick %d pid=%d\n", i, os.Getpid()); err != nil {
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
	}()
	if broken {
		return fmt.Errorf("sandbox %s: cannot load its settings", sb)
	}
	f.log.Info("serving", "sandbox", sb, "addr", ln.Addr().String())
	return nil
}

func (f *fakeServer) RemoveListener(_ context.Context, sb string) error {
	f.mu.Lock()
	cancel, ok := f.served[sb]
	delete(f.served, sb)
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("sandbox %s is not served", sb)
	}
	cancel()
	f.log.Info("stopped serving", "sandbox", sb)
	return nil
}

// fakeSandbox joins the namespace passed as fd 3 and keeps calling both
// services, printing what answered.
func fakeSandbox(name string) int {
	runtime.LockOSThread()
	if err := unix.Setns(3, unix.CLONE_NEWNET); err != nil {
		fmt.Println("setns:", err)
		return 2
	}
	for {
		for _, addr := range []string{RouterAddr, ProxyAddr} {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				fmt.Printf("dial %s: %v\n", addr, err)
				continue
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b, err := io.ReadAll(c)
			c.Close()
			fmt.Printf("%s -> %s (err %v)\n", addr, b, err)
		}
		c, err := net.DialTimeout("tcp", "192.0.2.1:80", time.Second)
		if err == nil {
			c.Close()
		}
		fmt.Printf("outside -> %v\n", err)
		time.Sleep(50 * time.Millisecond)
	}
}

// cmdProcess adapts a started exec.Cmd to supervisor.Process, as an adapter
// around internal/sandbox would.
type cmdProcess struct{ cmd *exec.Cmd }

func (p cmdProcess) Pid() int                        { return p.cmd.Process.Pid }
func (p cmdProcess) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }
func (p cmdProcess) Stats() (cgroup.Stats, error) {
	return cgroup.Stats{Pids: 1, MemoryPeak: 4096}, nil
}
func (p cmdProcess) Wait() (int, error) {
	err := p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode(), err
}

func helperBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "clawcage")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func journalLines(t *testing.T, state string) []journal.Entry {
	t.Helper()
	var out []journal.Entry
	err := journal.Read(context.Background(), filepath.Join(state, "journal"), journal.ReadOptions{}, func(e journal.Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitJournal waits for an entry matching pred.
func waitJournal(t *testing.T, state string, what string, pred func(journal.Entry) bool) journal.Entry {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range journalLines(t, state) {
			if pred(e) {
				return e
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	var dump []string
	for _, e := range journalLines(t, state) {
		dump = append(dump, journal.FormatText(e))
	}
	t.Fatalf("journal never showed %s:\n%s", what, strings.Join(dump, "\n"))
	return journal.Entry{}
}

func statusOf(t *testing.T, state, name string) supervisor.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := supervisor.FetchStatus(ctx, supervisor.ControlSocketPath(state))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Components {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no component %s in status %+v", name, st.Components)
	return supervisor.Status{}
}

func TestStackEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and runs components under their own uids")
	}
	for _, c := range []string{"router", "policy"} {
		id, _ := runas.ForComponent(c)
		if err := runas.CheckUnused(id); err != nil {
			t.Skip(err)
		}
	}
	bin := helperBinary(t)
	state := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "clawcage.yaml")
	os.WriteFile(cfgPath, []byte("preset_params: {npm.registry: \"https://explicit.test.invalid\"}\nsandboxes:\n  sb1: {}\n  sb2: {restart: always}\n"), 0o600)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	stopped := false
	t.Cleanup(func() { // on failure, tear the stack down before the temp dirs go
		if !stopped {
			cancel()
			<-done
		}
	})
	slots := &fakeSlots{next: 5, claimed: map[int]bool{}}
	var basesMu sync.Mutex
	bases := map[string]uint32{}
	cgroups := map[string]string{}
	go func() {
		done <- Run(ctx, Options{
			ConfigPath: cfgPath, StateDir: state, Exe: bin, UIDSlots: slots,
			Backoff: supervisor.Backoff{Initial: 50 * time.Millisecond, StableAfter: 100 * time.Millisecond},
			SandboxStart: func(s SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error) {
				basesMu.Lock()
				bases[s.Name] = s.UIDBase
				cgroups[s.Name] = s.Cgroup
				basesMu.Unlock()
				cmd := exec.Command(bin, "fake-sandbox", s.Name)
				cmd.ExtraFiles = []*os.File{s.NetNS.File()}
				cmd.Stdout, cmd.Stderr = stdout, stderr
				cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
				if err := cmd.Start(); err != nil {
					return nil, err
				}
				return cmdProcess{cmd}, nil
			},
			Ready: func() { close(ready) },
			DiscoverPresetParams: func(context.Context) (map[string]string, error) {
				return map[string]string{"go.proxy": "https://proxy.test.invalid", "npm.registry": "https://found.test.invalid"}, nil
			},
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}

	// Each sandbox reaches the router and the proxy on its own loopback,
	// served by the component under its own uid, and nothing else.
	for _, sb := range []string{"sb1", "sb2"} {
		for _, want := range []string{"router " + sb + " uid=61001", "policy-engine " + sb + " uid=61002"} {
			waitJournal(t, state, want, func(e journal.Entry) bool {
				return e.Component == "sandbox" && e.Sandbox == sb && strings.Contains(e.Msg, want)
			})
		}
		waitJournal(t, state, "no route out of "+sb, func(e journal.Entry) bool {
			return e.Sandbox == sb && strings.HasPrefix(e.Msg, "outside -> ") && strings.Contains(e.Msg, "network is unreachable")
		})
	}
	// Both components answer their health checks.
	for _, c := range []string{"router", "policy"} {
		var st supervisor.Status
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if st = statusOf(t, state, c); st.Health == "ok" {
				break
			}
		}
		if st.Health != "ok" {
			t.Errorf("%s health %q", c, st.Health)
		}
	}

	// Components' JSON logs arrive as structured events.
	waitJournal(t, state, "router serving event", func(e journal.Entry) bool {
		return e.Component == "router" && e.Stream == journal.StreamEvent && e.Msg == "serving" && e.Sandbox != ""
	})

	// Preset parameters: discovered, with the config's explicit value winning.
	// (The discovery runs in the background: wait for its file.)
	want := `{"go.proxy":"https://proxy.test.invalid","npm.registry":"https://explicit.test.invalid"}`
	var pp []byte
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if pp, err = os.ReadFile(filepath.Join(state, "policy", PresetParamsFile)); err == nil && string(pp) == want {
			break
		}
	}
	if err != nil || string(pp) != want {
		t.Errorf("preset params %s (%v), want %s", pp, err, want)
	}

	// Each sandbox got its own stable uid range.
	basesMu.Lock()
	if bases["sb1"] != 1<<30+5*65536 || bases["sb2"] != 1<<30+6*65536 {
		t.Errorf("uid bases %v", bases)
	}
	// and a cgroup name no other stack's sandbox of that name has.
	if cgroups["sb1"] != CgroupName(state, "sb1") || !strings.HasPrefix(cgroups["sb1"], "clawcage-") || cgroups["sb1"] == cgroups["sb2"] {
		t.Errorf("cgroup names %v", cgroups)
	}
	basesMu.Unlock()

	// Disk layout and owners.
	for _, tt := range []struct {
		path string
		uid  uint32
		mode os.FileMode
	}{
		{state, 0, 0o711},
		{filepath.Join(state, "router"), 61001, 0o700},
		{filepath.Join(state, "policy"), 61002, 0o700},
		{filepath.Join(state, "journal"), 0, 0o700},
		{filepath.Join(state, "netns"), 0, 0o700},
		{filepath.Join(state, "sandboxes"), 0, 0o711},
		{filepath.Join(state, "sandboxes", "sb1"), 0, 0o711},
	} {
		st, err := os.Lstat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != tt.uid || st.Mode().Perm() != tt.mode {
			t.Errorf("%s: owner %d mode %v, want %d %v", tt.path, uid, st.Mode().Perm(), tt.uid, tt.mode)
		}
	}

	// Chaos: kill -9 the router and the policy engine, round after round;
	// each comes back with the same sockets and serves the sandboxes again.
	for round := 1; round <= 3; round++ {
		for _, c := range []struct{ name, banner string }{{"router", "router"}, {"policy", "policy-engine"}} {
			before := statusOf(t, state, c.name)
			if before.State != "running" || before.PID == 0 {
				t.Fatalf("round %d: %s status %+v", round, c.name, before)
			}
			if before.Uptime < 150*time.Millisecond { // past StableAfter: it was working
				time.Sleep(150*time.Millisecond - before.Uptime)
			}
			syscall.Kill(before.PID, syscall.SIGKILL)
			var after supervisor.Status
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				after = statusOf(t, state, c.name)
				if after.State == "running" && after.PID != before.PID {
					break
				}
			}
			if after.PID == before.PID || after.Restarts != round || after.LastExit != "signal: killed" {
				t.Fatalf("round %d: after kill -9: %s status %+v", round, c.name, after)
			}
			newPID := fmt.Sprintf("pid=%d", after.PID)
			for _, sb := range []string{"sb1", "sb2"} {
				waitJournal(t, state, sb+" served by the restarted "+c.name, func(e journal.Entry) bool {
					return e.Sandbox == sb && strings.Contains(e.Msg, c.banner+" "+sb) && strings.Contains(e.Msg, newPID)
				})
			}
		}
	}
	// A working component that was killed is restarted after the initial
	// delay every time; the backoff grows only for immediate failures.
	for _, e := range journalLines(t, state) {
		if e.Msg == "process restarting" && e.Attrs["delay"] != "50ms" {
			t.Errorf("restart of %v after %v, want the initial 50ms", e.Component, e.Attrs["delay"])
		}
	}

	// A second supervisor on the same state directory refuses to start.
	if err := Run(ctx, Options{ConfigPath: cfgPath, StateDir: state, Exe: bin,
		SandboxStart: func(SandboxSpec, io.Writer, io.Writer) (supervisor.Process, error) { return nil, errors.New("unused") }}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: %v, want 'already running'", err)
	}

	// GET /v1/sandboxes.
	resp, err := supervisor.Client(supervisor.ControlSocketPath(state)).Get("http://clawcage/v1/sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	var views []SandboxView
	json.NewDecoder(resp.Body).Decode(&views)
	resp.Body.Close()
	if len(views) != 2 || views[0].Name != "sb1" || views[0].Status == nil || views[0].Status.State != "running" ||
		views[0].Stats == nil || views[0].Stats.Pids != 1 {
		t.Errorf("sandboxes view %+v", views)
	}

	// down over the control socket stops everything and removes the namespaces.
	resp, err = supervisor.Client(supervisor.ControlSocketPath(state)).Post("http://clawcage/v1/down", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after down")
	}
	stopped = true
	if ents, _ := os.ReadDir(filepath.Join(state, "netns")); len(ents) != 0 {
		t.Errorf("namespaces left behind: %v", ents)
	}
	if _, err := os.Stat(supervisor.ControlSocketPath(state)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	if slots.released != 2 || len(slots.claimed) != 0 {
		t.Errorf("uid slots not released: %d released, %v held", slots.released, slots.claimed)
	}
	if left := processesOf(bin, 61001, 61002); len(left) > 0 {
		t.Errorf("component processes left: %v", left)
	}
}

// processesOf lists live processes running bin as one of uids (other
// tests on the machine may run real components under the same uids).
func processesOf(bin string, uids ...uint32) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); !strings.HasPrefix(string(cmdline), bin+"\x00") {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
				fields := strings.Fields(rest)
				for _, u := range uids {
					if len(fields) > 0 && fields[0] == fmt.Sprint(u) {
						out = append(out, pid)
					}
				}
			}
		}
		f.Close()
	}
	sort.Ints(out)
	return out
}

func TestBadConfigLeavesStateUntouched(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bad restart policy", "sandboxes:\n  a:\n    restart: sometimes\n", `clawcage.yaml:3: sandboxes.a.restart`},
		{"not yaml", "sandboxes: [\n", "clawcage.yaml:"},
		{"unknown field", "sandboxez: {}\n", "clawcage.yaml:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "clawcage.yaml")
			os.WriteFile(cfg, []byte(tt.yaml), 0o600)
			state := filepath.Join(dir, "state")
			err := Run(context.Background(), Options{ConfigPath: cfg, StateDir: state,
				SandboxStart: func(SandboxSpec, io.Writer, io.Writer) (supervisor.Process, error) { return nil, errors.New("unused") }})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state directory was created: %v", err)
			}
		})
	}
}

func TestRefusesSandboxesWithoutRuntime(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "clawcage.yaml")
	os.WriteFile(cfg, []byte("sandboxes:\n  a: {}\n"), 0o600)
	err := Run(context.Background(), Options{ConfigPath: cfg, StateDir: filepath.Join(dir, "state")})
	if err == nil || !strings.Contains(err.Error(), "no sandbox runtime") {
		t.Fatalf("err = %v", err)
	}
}

// BenchmarkUpToServing measures `up` until a sandbox has been answered by
// both the router and the proxy (stand-in components), then down.
func BenchmarkUpToServing(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	exe, _ := os.Executable()
	data, _ := os.ReadFile(exe)
	dir := b.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "clawcage")
	os.WriteFile(bin, data, 0o755)
	cfgPath := filepath.Join(dir, "clawcage.yaml")
	os.WriteFile(cfgPath, []byte("sandboxes:\n  sb1: {}\n"), 0o600)
	for b.Loop() {
		state := filepath.Join(b.TempDir(), "state")
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		var once sync.Once
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Options{ConfigPath: cfgPath, StateDir: state, Exe: bin,
				DiscoverPresetParams: func(context.Context) (map[string]string, error) { return nil, nil },
				SandboxStart: func(s SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error) {
					cmd := exec.Command(bin, "fake-sandbox", s.Name)
					cmd.ExtraFiles = []*os.File{s.NetNS.File()}
					cmd.Stdout = io.MultiWriter(stdout, writerFunc(func(p []byte) {
						if strings.Contains(string(p), "policy-engine sb1") {
							once.Do(func() { close(served) })
						}
					}))
					cmd.Stderr = stderr
					cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
					if err := cmd.Start(); err != nil {
						return nil, err
					}
					return cmdProcess{cmd}, nil
				}})
		}()
		select {
		case <-served:
		case err := <-done:
			b.Fatalf("Run: %v", err)
		case <-time.After(60 * time.Second):
			cancel()
			<-done // tear the stack down before failing
			b.Fatal("sandbox never served")
		}
		b.StopTimer()
		cancel()
		<-done
		b.StartTimer()
	}
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

type fakeSlots struct {
	next     int
	claimed  map[int]bool
	released int
}

func (f *fakeSlots) Allocate() (int, uint32, func(), error) {
	slot := f.next
	f.next++
	base, release, err := f.Claim(slot)
	return slot, base, release, err
}

func (f *fakeSlots) Claim(slot int) (uint32, func(), error) {
	if f.claimed[slot] {
		return 0, nil, fmt.Errorf("slot %d is in use", slot)
	}
	f.claimed[slot] = true
	return uint32(1<<30 + slot*65536), func() { delete(f.claimed, slot); f.released++ }, nil
}

func TestStableUIDRange(t *testing.T) {
	slots := &fakeSlots{next: 3, claimed: map[int]bool{}}
	dir := t.TempDir()
	base, release, err := stableUIDRange(slots, dir)
	if err != nil || base != 1<<30+3*65536 {
		t.Fatalf("first start: base %d, %v", base, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, uidSlotFile)); string(b) != "3\n" {
		t.Fatalf("recorded slot %q", b)
	}
	// While held, nobody else gets it; the same sandbox restarting after
	// release gets the same range back, not a new one.
	if _, _, err := stableUIDRange(slots, dir); err == nil || !strings.Contains(err.Error(), "slot 3 is in use") {
		t.Errorf("claim of a held slot: %v", err)
	}
	release()
	base2, release2, err := stableUIDRange(slots, dir)
	if err != nil || base2 != base {
		t.Fatalf("restart: base %d, %v; want %d", base2, err, base)
	}
	release2()
	if slots.next != 4 {
		t.Errorf("a restart allocated a new slot")
	}
	os.WriteFile(filepath.Join(dir, uidSlotFile), []byte("-1\n"), 0o600)
	if _, _, err := stableUIDRange(slots, dir); err == nil || !strings.Contains(err.Error(), "not a uid slot number") {
		t.Errorf("corrupt slot file: %v", err)
	}
}

// startStack runs a stack with stand-in components and sandboxes until the
// test ends or stop is called.
func startStack(t *testing.T, bin, cfgPath, state string) (stop func()) {
	t.Helper()
	return startStackWith(t, bin, cfgPath, state, func(context.Context) (map[string]string, error) { return nil, nil })
}

// startStackWith is startStack with a preset-parameter discovery.
func startStackWith(t *testing.T, bin, cfgPath, state string, discover func(context.Context) (map[string]string, error)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			ConfigPath: cfgPath, StateDir: state, Exe: bin,
			Backoff:              supervisor.Backoff{Initial: 50 * time.Millisecond, StableAfter: 100 * time.Millisecond},
			DiscoverPresetParams: discover,
			SandboxStart: func(s SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error) {
				cmd := exec.Command(bin, "fake-sandbox", s.Name)
				cmd.ExtraFiles = []*os.File{s.NetNS.File()}
				cmd.Stdout, cmd.Stderr = stdout, stderr
				cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
				if err := cmd.Start(); err != nil {
					return nil, err
				}
				return cmdProcess{cmd}, nil
			},
			Ready: func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func control(t *testing.T, state, method, path string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, "http://clawcage"+path, rd)
	resp, err := supervisor.Client(supervisor.ControlSocketPath(state)).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func servedBy(t *testing.T, state, sb string, after time.Time) {
	t.Helper()
	for _, banner := range []string{"router " + sb, "policy-engine " + sb} {
		waitJournal(t, state, sb+" answered by "+banner, func(e journal.Entry) bool {
			return e.Sandbox == sb && e.Time.After(after) && strings.Contains(e.Msg, banner)
		})
	}
}

func TestCreateAndDeleteSandboxes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and runs components under their own uids")
	}
	bin := helperBinary(t)
	state := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "clawcage.yaml")
	os.WriteFile(cfgPath, []byte("sandboxes:\n  base: {}\n"), 0o600)
	stop := startStack(t, bin, cfgPath, state)
	servedBy(t, state, "base", time.Time{})

	tests := []struct {
		name string
		req  CreateRequest
		code int
		want string
	}{
		{"invalid definition names the line", CreateRequest{Name: "bad", Definition: "sandboxes:\n  bad:\n    restart: sometimes\n"}, 400, "sandbox bad:3: sandboxes.bad.restart"},
		{"definition for another name", CreateRequest{Name: "x", Definition: "sandboxes:\n  y: {}\n"}, 400, `exactly the sandbox \"x\"`},
		{"router settings smuggled in", CreateRequest{Name: "x", Definition: "router:\n  allow_direct: true\nsandboxes:\n  x: {}\n"}, 400, "sandbox x:1: router: a sandbox definition holds only its sandbox"},
		{"name of a configured sandbox", CreateRequest{Name: "base", Definition: "sandboxes:\n  base: {}\n"}, 409, "already exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := control(t, state, "POST", "/v1/sandboxes", tt.req)
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Errorf("POST: %d %s, want %d containing %q", code, body, tt.code, tt.want)
			}
		})
	}

	created := time.Now()
	code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: "extra", Definition: "sandboxes:\n  extra: {restart: always}\n"})
	if code != 201 || !strings.Contains(body, `"source": "created"`) {
		t.Fatalf("create: %d %s", code, body)
	}
	// The new sandbox is served, and the components (handed its listeners
	// while running) still serve the old one.
	servedBy(t, state, "extra", created)
	servedBy(t, state, "base", created)
	if code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: "extra", Definition: "sandboxes:\n  extra: {}\n"}); code != 409 {
		t.Errorf("second create: %d %s", code, body)
	}

	// It survives a restart of the stack.
	stop()
	stop = startStack(t, bin, cfgPath, state)
	restarted := time.Now()
	servedBy(t, state, "extra", restarted)
	var views []SandboxView
	_, body = control(t, state, "GET", "/v1/sandboxes", nil)
	json.Unmarshal([]byte(body), &views)
	if len(views) != 2 || views[0].Name != "base" || views[0].Source != "config" || views[1].Name != "extra" || views[1].Source != "created" {
		t.Fatalf("views after restart: %s", body)
	}

	if code, body := control(t, state, "DELETE", "/v1/sandboxes/base", nil); code != 409 || !strings.Contains(body, "configuration file") {
		t.Errorf("delete configured sandbox: %d %s", code, body)
	}
	if code, _ := control(t, state, "DELETE", "/v1/sandboxes/nope", nil); code != 404 {
		t.Errorf("delete unknown sandbox: %d", code)
	}
	if code, body := control(t, state, "DELETE", "/v1/sandboxes/extra", nil); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(state, "sandboxes", "extra")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted sandbox's directory remains: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, "netns", "extra")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted sandbox's namespace remains: %v", err)
	}
	deleted := time.Now()
	servedBy(t, state, "base", deleted)
	stop()
}

func TestRefusesStateUnreachableByComponents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("clawcage up runs as root; this test needs root")
	}
	dir := t.TempDir() // mode 0700: the components' uids cannot search it
	cfg := filepath.Join(dir, "clawcage.yaml")
	if err := os.WriteFile(cfg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	err := Run(context.Background(), Options{ConfigPath: cfg, StateDir: state, Exe: "/bin/true"})
	if err == nil || !strings.Contains(err.Error(), "the state directory") || !strings.Contains(err.Error(), "not searchable by others") {
		t.Fatalf("err = %v, want a refusal naming the state directory", err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory was created: %v", err)
	}
}

// stream opens a connection from inside sandbox's namespace to addr and
// asks the stand-in component for a tick every 10 ms; ticks carry the
// serving pid.
type stream struct {
	c  net.Conn
	br *bufio.Reader
}

func openStream(t *testing.T, state, sandbox, addr string) *stream {
	t.Helper()
	ns, err := netns.Open(state, sandbox)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := netns.Dial(ctx, ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "stream\n"); err != nil {
		t.Fatal(err)
	}
	return &stream{c: c, br: bufio.NewReader(c)}
}

// next reads the next tick, or returns the error that ended the stream.
func (s *stream) next() (string, error) {
	s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := s.br.ReadString('\n')
	return strings.TrimSpace(line), err
}

func componentPIDs(t *testing.T, state string) map[string]supervisor.Status {
	t.Helper()
	out := map[string]supervisor.Status{}
	for _, c := range []string{"router", "policy"} {
		out[c] = statusOf(t, state, c)
	}
	return out
}

// TestHotAddAndRemove: sandboxes created and deleted while the stack runs
// are handed to the running components (same pids, no restart) while
// another sandbox's connection keeps streaming; a sandbox a component
// cannot load gets refusals only; delete closes the sandbox's listeners
// and connections; a component restarted afterwards serves every sandbox.
func TestHotAddAndRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and runs components under their own uids")
	}
	bin := helperBinary(t)
	state := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "clawcage.yaml")
	os.WriteFile(cfgPath, []byte("sandboxes:\n  base: {}\n"), 0o600)
	startStack(t, bin, cfgPath, state)
	servedBy(t, state, "base", time.Time{})
	for _, c := range []string{"router", "policy"} {
		waitJournal(t, state, c+" ready", func(e journal.Entry) bool {
			return e.Component == c && e.Msg == "component ready"
		})
	}
	before := componentPIDs(t, state)
	baseStream := openStream(t, state, "base", RouterAddr)
	if tick, err := baseStream.next(); err != nil || !strings.Contains(tick, fmt.Sprintf("pid=%d", before["router"].PID)) {
		t.Fatalf("base stream: %q %v", tick, err)
	}

	tests := []struct {
		name, sandbox, definition string
		code                      int
		want                      string // in the answer
		banner                    string // what the sandbox is then answered with ("" if not created)
	}{
		{"created sandbox is served by the running components", "hot1", "sandboxes:\n  hot1: {}\n", 201, `"source": "created"`, "router hot1"},
		{"sandbox a component cannot load gets refusals", "broken1", "sandboxes:\n  broken1: {}\n", 500, "cannot load its settings", "refused broken1"},
		{"policy that does not compile is refused before anything starts", "npm1", "sandboxes:\n  npm1: {policy: {presets: [npm]}}\n", 400, "npm.registry", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			created := time.Now()
			code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: tt.sandbox, Definition: tt.definition})
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Fatalf("create: %d %s, want %d with %q", code, body, tt.code, tt.want)
			}
			if tt.banner == "" {
				if _, err := os.Stat(filepath.Join(state, "netns", tt.sandbox)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("refused sandbox has a namespace: %v", err)
				}
				return
			}
			waitJournal(t, state, tt.sandbox+" answered "+tt.banner, func(e journal.Entry) bool {
				return e.Sandbox == tt.sandbox && e.Time.After(created) && strings.Contains(e.Msg, tt.banner)
			})
			// No component was restarted to serve it.
			if now := componentPIDs(t, state); now["router"].PID != before["router"].PID || now["policy"].PID != before["policy"].PID ||
				now["router"].Restarts != 0 || now["policy"].Restarts != 0 {
				t.Fatalf("components changed: before %+v, now %+v", before, now)
			}
			// The other sandbox's connection was never interrupted.
			for range 3 {
				if tick, err := baseStream.next(); err != nil || !strings.HasPrefix(tick, "tick ") {
					t.Fatalf("base stream after creating %s: %q %v", tt.sandbox, tick, err)
				}
			}
		})
	}
	waitJournal(t, state, "refusal of broken1 in the journal", func(e journal.Entry) bool {
		return e.Sandbox == "broken1" && e.Level == "ERROR" && strings.Contains(e.Msg, "component refused the sandbox")
	})
	servedBy(t, state, "base", time.Now())

	// Delete closes hot1's listeners in every process and its connections.
	hot1Stream := openStream(t, state, "hot1", ProxyAddr)
	if _, err := hot1Stream.next(); err != nil {
		t.Fatal(err)
	}
	hot1NS, err := netns.Open(state, "hot1") // keeps the namespace alive past the delete
	if err != nil {
		t.Fatal(err)
	}
	defer hot1NS.Close()
	if code, body := control(t, state, "DELETE", "/v1/sandboxes/hot1", nil); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	for {
		tick, err := hot1Stream.next()
		if err != nil {
			break
		}
		if !strings.HasPrefix(tick, "tick ") {
			t.Fatalf("hot1 stream after delete: %q", tick)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range []string{RouterAddr, ProxyAddr} {
		if c, err := netns.Dial(ctx, hot1NS, "tcp", addr); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dial %s in the deleted sandbox's namespace: %v, want connection refused", addr, err)
		}
	}
	if tick, err := baseStream.next(); err != nil || !strings.HasPrefix(tick, "tick ") {
		t.Fatalf("base stream after the delete: %q %v", tick, err)
	}

	// A component restarted after the hot-adds gets every listener back.
	code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: "hot2", Definition: "sandboxes:\n  hot2: {}\n"})
	if code != 201 {
		t.Fatalf("create hot2: %d %s", code, body)
	}
	for _, c := range []struct{ name, banner string }{{"router", "router"}, {"policy", "policy-engine"}} {
		old := statusOf(t, state, c.name)
		if old.Uptime < 150*time.Millisecond {
			time.Sleep(150*time.Millisecond - old.Uptime)
		}
		syscall.Kill(old.PID, syscall.SIGKILL)
		var now supervisor.Status
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if now = statusOf(t, state, c.name); now.State == "running" && now.PID != old.PID {
				break
			}
		}
		if now.PID == old.PID {
			t.Fatalf("%s not restarted: %+v", c.name, now)
		}
		pid := fmt.Sprintf("pid=%d", now.PID)
		for _, sb := range []string{"base", "hot2"} {
			waitJournal(t, state, sb+" served by the restarted "+c.name, func(e journal.Entry) bool {
				return e.Sandbox == sb && strings.Contains(e.Msg, c.banner+" "+sb) && strings.Contains(e.Msg, pid)
			})
		}
		// And it serves hot-adds again over its new control channel.
		name := "after-" + c.name
		if code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: name, Definition: "sandboxes:\n  " + name + ": {}\n"}); code != 201 {
			t.Fatalf("create %s: %d %s", name, code, body)
		}
		servedBy(t, state, name, time.Time{})
	}
}

func TestKernelInStatus(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a stack")
	}
	bin := helperBinary(t)
	state := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "clawcage.yaml")
	os.WriteFile(cfgPath, nil, 0o600)
	startStack(t, bin, cfgPath, state)
	var kv KernelView
	var body string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var code int
		code, body = control(t, state, "GET", "/v1/kernel", nil)
		kv = KernelView{}
		if err := json.Unmarshal([]byte(body), &kv); code != 200 || err != nil {
			t.Fatalf("GET /v1/kernel: %d %s %v", code, body, err)
		}
		if !kv.Pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kernel probe still pending: %s", body)
		}
	}
	want := []string{"landlock", "seccomp", "userns", "netns", "cgroup-memory", "cgroup-pids", "nftables"}
	got := map[string]bool{}
	for _, f := range kv.Features {
		got[f.Name] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("feature %s missing from %s", w, body)
		}
	}
	var raw map[string]any
	json.Unmarshal([]byte(body), &raw)
	for _, k := range []string{"kernel", "landlock_abi", "cgroups", "enforceable"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("field %s missing from %s", k, body)
		}
	}
	if kv.Kernel == "" || kv.Cgroups.Version == "" {
		t.Errorf("kernel %q cgroups %q", kv.Kernel, kv.Cgroups.Version)
	}
}

// TestPresetDiscoveryInBackground: the registry discovery (slow client
// commands) does not hold up `up` when no sandbox uses presets; a sandbox
// created with a preset waits for it and is compiled with its result.
func TestPresetDiscoveryInBackground(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and runs components under their own uids")
	}
	bin := helperBinary(t)
	state := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "clawcage.yaml")
	os.WriteFile(cfgPath, []byte("sandboxes:\n  plain: {}\n"), 0o600)
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	startStackWith(t, bin, cfgPath, state, func(ctx context.Context) (map[string]string, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return map[string]string{"npm.registry": "https://registry.test.invalid"}, nil
	})
	// Ready and serving while the discovery has not answered.
	servedBy(t, state, "plain", time.Time{})
	for _, c := range []string{"router", "policy"} {
		var st supervisor.Status
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if st = statusOf(t, state, c); st.Health == "ok" {
				break
			}
		}
		if st.Health != "ok" {
			t.Fatalf("%s health %q while the discovery runs", c, st.Health)
		}
	}
	if pp, _ := os.ReadFile(filepath.Join(state, "policy", PresetParamsFile)); string(pp) != "{}" {
		t.Fatalf("preset params before the discovery answered: %s", pp)
	}

	type answer struct {
		code int
		body string
	}
	created := make(chan answer, 1)
	go func() {
		code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: "npm1", Definition: "sandboxes:\n  npm1: {policy: {presets: [npm]}}\n"})
		created <- answer{code, body}
	}()
	select {
	case a := <-created:
		t.Fatalf("create with a preset answered before the discovery: %d %s", a.code, a.body)
	case <-time.After(200 * time.Millisecond):
	}
	releaseOnce.Do(func() { close(release) })
	a := <-created
	if a.code != 201 {
		t.Fatalf("create with a preset after the discovery: %d %s", a.code, a.body)
	}
	if pp, _ := os.ReadFile(filepath.Join(state, "policy", PresetParamsFile)); !strings.Contains(string(pp), "registry.test.invalid") {
		t.Errorf("preset params after the discovery: %s", pp)
	}
	servedBy(t, state, "npm1", time.Time{})
}

// The sandbox starts while the components' configuration copies are
// rewritten; if they cannot be written, the create fails closed: the started
// sandbox is stopped, its namespace and definition removed, and its name is
// free again.
func TestCreateStopsSandboxWhenConfigCopiesFail(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and runs components under their own uids")
	}
	bin := helperBinary(t)
	state := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "clawcage.yaml")
	os.WriteFile(cfgPath, []byte("sandboxes:\n  base: {}\n"), 0o600)
	stop := startStack(t, bin, cfgPath, state)
	defer stop()

	// Both files are written while the sandbox starts; either failing
	// stops it again. The file becomes a non-empty directory: the rename
	// fails.
	for i, tt := range []struct{ name, path string }{
		{"router's configuration copy", filepath.Join(state, "router", "clawcage.yaml")},
		{"definition file", filepath.Join(state, "sandboxes", "extra1", DefinitionFile)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("extra%d", i)
			saved, err := os.ReadFile(tt.path)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			os.Remove(tt.path)
			if err := os.MkdirAll(filepath.Join(tt.path, "blocker"), 0o700); err != nil {
				t.Fatal(err)
			}
			code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: name, Definition: "sandboxes:\n  " + name + ": {}\n"})
			if code != 500 || !strings.Contains(body, "write "+tt.path) {
				t.Fatalf("create with an unwritable %s: %d %s, want 500 naming %s", tt.name, code, body, tt.path)
			}
			_, body = control(t, state, "GET", "/v1/status", nil)
			if strings.Contains(body, "sandbox/"+name) {
				t.Errorf("the sandbox is still supervised after the failed create: %s", body)
			}
			_, body = control(t, state, "GET", "/v1/sandboxes", nil)
			if strings.Contains(body, `"`+name+`"`) {
				t.Errorf("the sandbox is still listed after the failed create: %s", body)
			}
			if _, err := os.Stat(filepath.Join(state, "netns", name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("namespace remains after the failed create: %v", err)
			}
			if i == 0 {
				if _, err := os.Stat(filepath.Join(state, "sandboxes", name, DefinitionFile)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("definition remains after the failed create: %v", err)
				}
			}

			// With the file writable again the same name is created and served.
			if err := os.RemoveAll(tt.path); err != nil {
				t.Fatal(err)
			}
			if saved != nil {
				if err := os.WriteFile(tt.path, saved, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			created := time.Now()
			if code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: name, Definition: "sandboxes:\n  " + name + ": {}\n"}); code != 201 {
				t.Fatalf("create after the fix: %d %s", code, body)
			}
			servedBy(t, state, name, created)
		})
	}
}

// nsFDs lists the network namespaces this process holds open (the tests'
// supervisor runs in it), by inode.
func nsFDs(t *testing.T) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "net:[") {
			out[l] = true
		}
	}
	return out
}

func nsInode(t *testing.T, state, name string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(state, "netns", name), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestCreateTakesSpareNetwork checks the spare sandbox network: made once
// the stack is up and again after each create, taken by the next create
// under its name (the sandbox is served on the listeners made in it, as
// itself), never by two sandboxes, not used where a namespace of the name
// was left behind, and gone, with nothing mounted or open, after the stack
// stops.
func TestCreateTakesSpareNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and runs components under their own uids")
	}
	bin := helperBinary(t)
	state := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "clawcage.yaml")
	os.WriteFile(cfgPath, nil, 0o600)
	nsBefore := nsFDs(t)
	stop := startStack(t, bin, cfgPath, state)
	spares := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			seen := 0
			for _, e := range journalLines(t, state) {
				if e.Msg == "spare sandbox network ready" {
					seen++
				}
			}
			if seen >= n {
				return
			}
		}
		t.Fatalf("spare network %d never ready", n)
	}
	networkReady := func(name string) journal.Entry {
		t.Helper()
		return waitJournal(t, state, name+"'s network", func(e journal.Entry) bool {
			return e.Sandbox == name && e.Msg == "sandbox network ready"
		})
	}
	create := func(name string) {
		t.Helper()
		if code, body := control(t, state, "POST", "/v1/sandboxes", CreateRequest{Name: name, Definition: "sandboxes:\n  " + name + ": {}\n"}); code != 201 {
			t.Fatalf("create %s: %d %s", name, code, body)
		}
	}

	spares(1)
	create("s1")
	if e := networkReady("s1"); e.Attrs["spare"] != true {
		t.Errorf("s1 did not take the spare network: %+v", e)
	}
	spares(2) // made again after the create
	create("s2")
	if e := networkReady("s2"); e.Attrs["spare"] != true {
		t.Errorf("s2 did not take the new spare network: %+v", e)
	}
	if nsInode(t, state, "s1") == nsInode(t, state, "s2") {
		t.Fatalf("s1 and s2 share a network namespace")
	}
	// Each is served as itself on the listeners made in its namespace.
	servedBy(t, state, "s1", time.Time{})
	servedBy(t, state, "s2", time.Time{})

	// A namespace left behind under the name is re-opened, as before.
	spares(3)
	left, err := netns.Create(context.Background(), state, "s3")
	if err != nil {
		t.Fatal(err)
	}
	leftIno := nsInode(t, state, "s3")
	left.Close()
	create("s3")
	if e := networkReady("s3"); e.Attrs["spare"] != false {
		t.Errorf("s3 took the spare network over a namespace left behind: %+v", e)
	}
	if nsInode(t, state, "s3") != leftIno {
		t.Errorf("s3 did not re-open the namespace left behind")
	}
	servedBy(t, state, "s3", time.Time{})

	stop()
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(state)) {
		t.Errorf("mounts left under %s:\n%s", state, mi)
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "netns")); len(ents) != 0 {
		t.Errorf("namespaces left: %v", ents)
	}
	for ns := range nsFDs(t) {
		if !nsBefore[ns] {
			t.Errorf("network namespace %s still open after the stack stopped", ns)
		}
	}
}
