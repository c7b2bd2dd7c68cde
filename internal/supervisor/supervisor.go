// Package supervisor keeps the stack's processes running: it starts each
// child, restarts it with exponential backoff when it exits, reports crash
// loops, stops everything gracefully (SIGTERM, then SIGKILL) and answers
// status queries over a root-only control socket.
//
// It does not know what its children are; a Spec says how to build and
// start one. What a child gets (uid, listeners, environment) is decided by
// whoever writes the Spec, so everything handed to a child is visible there.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"
)

// RestartPolicy says when an exited child is started again.
type RestartPolicy int

// Restart policies.
const (
	// RestartAlways restarts the child whatever its exit status.
	RestartAlways RestartPolicy = iota
	// RestartOnFailure restarts it unless it exited with status 0.
	RestartOnFailure
	// RestartNever leaves it exited.
	RestartNever
)

func (p RestartPolicy) String() string {
	switch p {
	case RestartAlways:
		return "always"
	case RestartOnFailure:
		return "on-failure"
	case RestartNever:
		return "never"
	}
	return fmt.Sprintf("RestartPolicy(%d)", int(p))
}

// ParseRestartPolicy parses "always", "on-failure" or "never".
func ParseRestartPolicy(s string) (RestartPolicy, error) {
	switch s {
	case "always":
		return RestartAlways, nil
	case "on-failure":
		return RestartOnFailure, nil
	case "never":
		return RestartNever, nil
	}
	return 0, fmt.Errorf("restart policy %q: want always, on-failure or never", s)
}

// Backoff is the delay between restarts: Initial for the first, multiplied
// by Factor for each further restart up to Max, and back to Initial once
// the child has stayed up for StableAfter.
type Backoff struct {
	Initial     time.Duration
	Max         time.Duration
	Factor      float64
	StableAfter time.Duration
}

// DefaultBackoff restarts within 250 ms the first time, doubling to at most
// 30 s for a child that keeps failing right after it starts. A child that
// ran for 2 s before it died was working: it is restarted after 250 ms
// again, however often that happens (repeated kills are reported by the
// crash-loop rule instead).
var DefaultBackoff = Backoff{Initial: 250 * time.Millisecond, Max: 30 * time.Second, Factor: 2, StableAfter: 2 * time.Second}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Factor < 1 {
		b.Factor = DefaultBackoff.Factor
	}
	if b.StableAfter <= 0 {
		b.StableAfter = DefaultBackoff.StableAfter
	}
	return b
}

func (b Backoff) next(d time.Duration) time.Duration {
	n := time.Duration(float64(d) * b.Factor)
	if n > b.Max || n < d {
		return b.Max
	}
	return n
}

// Spec describes one supervised child.
type Spec struct {
	// Name identifies the child in status, events and the journal
	// ("router", "policy", "sandbox/assistant").
	Name string
	// Cmd builds a fresh command for every start. A nil SysProcAttr.Pdeathsig
	// is set to SIGKILL and the child gets its own process group unless it
	// asks for a new session. If Stdout or Stderr is nil, the stream goes to
	// Options.Output.
	Cmd func() (*exec.Cmd, error)
	// Start starts the command (default: cmd.Start). runas.Spawner.Start
	// fits here.
	Start func(*exec.Cmd) error
	// AfterStart, if set, is called after every attempt to start Cmd's
	// command, with the start error, for example to close the parent's
	// copies of descriptors handed to the child.
	AfterStart func(cmd *exec.Cmd, err error)
	// StartProcess, instead of Cmd, starts a child that is not an exec.Cmd
	// (a sandbox, whose start involves more than fork and exec). Its output
	// goes to stdout and stderr. SIGTERM and SIGKILL are sent with
	// Process.Signal; the process must end everything it started when it
	// gets SIGKILL and when the supervisor dies.
	StartProcess func(stdout, stderr io.Writer) (Process, error)
	// Restart is the restart policy.
	Restart RestartPolicy
	// Backoff paces restarts; zero fields take DefaultBackoff's.
	Backoff Backoff
	// StopTimeout is how long a child has to exit after SIGTERM before it is
	// killed (default 5 s).
	StopTimeout time.Duration
	// Health, if set, is called every HealthInterval while the child runs;
	// its error (or nil) is shown in Status.Health. A failing check is
	// retried sooner (HealthRetry, doubling up to 500 ms), and CheckHealth
	// runs it at once, for a child that says it is ready.
	Health         func(ctx context.Context) error
	HealthInterval time.Duration
	// LogAttrs are added to every event this child logs, after "component"
	// (set to Name), so they can override it: a sandbox child named
	// "sandbox/a" can log as component "sandbox" with sandbox "a".
	LogAttrs []any
}

// Process is a child started by Spec.StartProcess.
type Process interface {
	// Pid is the host pid of the child.
	Pid() int
	// Signal sends sig to the child.
	Signal(sig syscall.Signal) error
	// Wait waits for the child to exit and returns its exit code (negative
	// if there is none); it releases whatever the child held.
	Wait() (code int, err error)
}

// CrashLoop is the crash-loop rule: more than Restarts restarts within
// Window is a crash loop.
type CrashLoop struct {
	Restarts int
	Window   time.Duration
}

// Options configure a Supervisor.
type Options struct {
	// Logger receives one structured event per lifecycle change (key
	// "component" is the child's name). Default: discard.
	Logger *slog.Logger
	// Output returns where a child's stream ("stdout" or "stderr") goes,
	// for example a journal.LineWriter. Default: discard. If the returned
	// writer is an io.Closer it is closed when the stream ends.
	Output func(name, stream string) io.Writer
	// OnEvent, if set, is called for every event (after logging).
	OnEvent func(Event)
	// CrashLoop defaults to 5 restarts within 60 s.
	CrashLoop CrashLoop
}

// EventKind names a lifecycle event.
type EventKind string

// Event kinds.
const (
	EventStarted     EventKind = "started"
	EventStartFailed EventKind = "start-failed"
	EventExited      EventKind = "exited"
	EventRestarting  EventKind = "restarting"
	EventCrashLoop   EventKind = "crash-loop"
	EventStopped     EventKind = "stopped"
	EventGaveUp      EventKind = "not-restarted"
)

// Event is one lifecycle change of a child, as logged and reported.
type Event struct {
	Time     time.Time
	Name     string
	Kind     EventKind
	PID      int
	Exit     string // "exit status 3", "signal: killed"
	Restarts int
	Delay    time.Duration // before the next start (EventRestarting)
	Uptime   time.Duration // of the run that ended (EventExited)
	Reason   string
}

// Status is a snapshot of one child.
type Status struct {
	Name         string        `json:"name"`
	State        string        `json:"state"` // starting, running, backoff, stopping, stopped, exited
	PID          int           `json:"pid,omitempty"`
	StartedAt    time.Time     `json:"started_at,omitzero"`
	Uptime       time.Duration `json:"uptime_ns,omitempty"`
	Restarts     int           `json:"restarts"`
	LastExit     string        `json:"last_exit,omitempty"`
	LastExitTime time.Time     `json:"last_exit_time,omitzero"`
	CrashLoop    bool          `json:"crash_loop"`
	Health       string        `json:"health"` // ok, crash-loop, an error, or the state
	Restart      string        `json:"restart"`
}

// Supervisor runs a set of children.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	children map[string]*child
	runCtx   context.Context // set by Run; nil before
	stopping bool
	wg       sync.WaitGroup
}

// New returns a Supervisor; add children with Add and start them with Run.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CrashLoop.Restarts <= 0 {
		opts.CrashLoop.Restarts = 5
	}
	if opts.CrashLoop.Window <= 0 {
		opts.CrashLoop.Window = time.Minute
	}
	return &Supervisor{opts: opts, log: opts.Logger, children: map[string]*child{}}
}

// Add registers a child. Before Run it is started when Run starts; while
// Run is running it is started at once.
func (s *Supervisor) Add(spec Spec) error {
	if spec.Name == "" {
		return errors.New("supervisor: child without a name")
	}
	if (spec.Cmd == nil) == (spec.StartProcess == nil) {
		return fmt.Errorf("supervisor: child %s: want exactly one of Cmd and StartProcess", spec.Name)
	}
	spec.Backoff = spec.Backoff.withDefaults()
	if spec.StopTimeout <= 0 {
		spec.StopTimeout = 5 * time.Second
	}
	if spec.HealthInterval <= 0 {
		spec.HealthInterval = 5 * time.Second
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return fmt.Errorf("supervisor: child %s: supervisor is stopping", spec.Name)
	}
	if _, ok := s.children[spec.Name]; ok {
		return fmt.Errorf("supervisor: child %s already exists", spec.Name)
	}
	c := &child{s: s, spec: spec, stop: make(chan struct{}), restart: make(chan struct{}, 1), done: make(chan struct{}),
		checkNow: make(chan struct{}, 1), state: "starting"}
	s.children[spec.Name] = c
	if s.runCtx != nil {
		s.launch(c)
	}
	return nil
}

// launch starts c's loop. Called with s.mu held.
func (s *Supervisor) launch(c *child) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(c.done)
		c.loop(s.runCtx)
	}()
}

// Remove stops the child (gracefully, see Spec.StopTimeout) and forgets it.
func (s *Supervisor) Remove(ctx context.Context, name string) error {
	s.mu.Lock()
	c, ok := s.children[name]
	started := s.runCtx != nil
	if ok {
		delete(s.children, name)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("supervisor: no child %s", name)
	}
	c.requestStop()
	if !started {
		return nil
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervisor: stop %s: %w", name, ctx.Err())
	}
}

// Restart stops the child gracefully (see Spec.StopTimeout) and starts it
// again at once, for example to hand it a new set of listeners. A requested
// restart does not count towards backoff or crash-loop detection. A child
// waiting out a backoff delay is started at once.
func (s *Supervisor) Restart(name string) error {
	s.mu.Lock()
	c, ok := s.children[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("supervisor: no child %s", name)
	}
	select {
	case c.restart <- struct{}{}:
	default: // one is already pending
	}
	return nil
}

// CheckHealth runs the child's health check now instead of at its next
// interval, for a child that reported it is ready to serve.
func (s *Supervisor) CheckHealth(name string) {
	s.mu.Lock()
	c, ok := s.children[name]
	s.mu.Unlock()
	if !ok {
		return
	}
	select {
	case c.checkNow <- struct{}{}:
	default: // one is already pending
	}
}

// Run starts every child and supervises them until ctx ends, then stops
// them all (SIGTERM, then SIGKILL after each StopTimeout) and returns once
// every child has exited.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.runCtx != nil {
		s.mu.Unlock()
		return errors.New("supervisor: Run called twice")
	}
	s.runCtx = ctx
	for _, c := range s.children {
		s.launch(c)
	}
	s.mu.Unlock()

	<-ctx.Done()
	s.mu.Lock()
	s.stopping = true
	for _, c := range s.children {
		c.requestStop()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Status returns a snapshot of every child, sorted by name.
func (s *Supervisor) Status() []Status {
	s.mu.Lock()
	cs := make([]*child, 0, len(s.children))
	for _, c := range s.children {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Supervisor) emit(e Event, extra ...any) {
	e.Time = time.Now()
	attrs := []any{"component", e.Name, "event", string(e.Kind)}
	if e.PID != 0 {
		attrs = append(attrs, "pid", e.PID)
	}
	if e.Exit != "" {
		attrs = append(attrs, "exit", e.Exit)
	}
	if e.Kind == EventExited {
		attrs = append(attrs, "uptime", e.Uptime)
	}
	if e.Kind == EventRestarting {
		attrs = append(attrs, "delay", e.Delay)
	}
	attrs = append(attrs, "restarts", e.Restarts)
	if e.Reason != "" {
		attrs = append(attrs, "reason", e.Reason)
	}
	attrs = append(attrs, extra...)
	attrs = append(attrs, "child", e.Name)
	level := slog.LevelInfo
	switch e.Kind {
	case EventCrashLoop, EventStartFailed:
		level = slog.LevelError
	case EventExited, EventRestarting, EventGaveUp:
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "process "+string(e.Kind), attrs...)
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(e)
	}
}

// child is the state of one supervised process.
type child struct {
	s       *Supervisor
	spec    Spec
	stop    chan struct{}
	restart chan struct{} // buffered 1: a pending restart request
	done    chan struct{}
	// checkNow is buffered 1: a pending CheckHealth request.
	checkNow chan struct{}
	once     sync.Once

	mu           sync.Mutex
	state        string
	pid          int
	startedAt    time.Time
	restarts     int
	lastExit     string
	lastExitTime time.Time
	crashLoop    bool
	health       string
}

func (c *child) emit(e Event) { c.s.emit(e, c.spec.LogAttrs...) }

func (c *child) requestStop() { c.once.Do(func() { close(c.stop) }) }

func (c *child) set(f func()) {
	c.mu.Lock()
	f()
	c.mu.Unlock()
}

func (c *child) status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{
		Name: c.spec.Name, State: c.state, PID: c.pid, Restarts: c.restarts,
		LastExit: c.lastExit, LastExitTime: c.lastExitTime, CrashLoop: c.crashLoop,
		Restart: c.spec.Restart.String(),
	}
	if c.state == "running" {
		st.StartedAt = c.startedAt
		st.Uptime = time.Since(c.startedAt)
	}
	switch {
	case c.crashLoop:
		st.Health = "crash-loop"
	case c.state == "running" && c.health != "":
		st.Health = c.health
	case c.state == "running" && c.spec.Health == nil:
		st.Health = "ok"
	default:
		st.Health = c.state
	}
	return st
}

// loop starts, watches and restarts the child until it is told to stop or
// its restart policy says it is done.
func (c *child) loop(ctx context.Context) {
	name := c.spec.Name
	delay := c.spec.Backoff.Initial
	var recent []time.Time // restart times inside the crash-loop window
	for {
		select {
		case <-c.stop:
			c.set(func() { c.state = "stopped" })
			return
		default:
		}
		res := c.runOnce(ctx)
		if res.stopped {
			c.set(func() { c.state = "stopped"; c.pid = 0 })
			c.emit(Event{Name: name, Kind: EventStopped, PID: res.pid, Exit: res.exit, Restarts: c.restarts})
			return
		}
		if res.requested {
			c.set(func() { c.state = "starting"; c.pid = 0; c.restarts++ })
			c.emit(Event{Name: name, Kind: EventRestarting, PID: res.pid, Exit: res.exit, Restarts: c.restarts, Reason: "requested"})
			continue
		}
		if res.startErr == nil && res.uptime >= c.spec.Backoff.StableAfter {
			delay = c.spec.Backoff.Initial
			recent = recent[:0]
			c.set(func() { c.crashLoop = false })
		}
		failed := res.startErr != nil || res.code != 0
		if c.spec.Restart == RestartNever || (c.spec.Restart == RestartOnFailure && !failed) {
			c.set(func() { c.state = "exited"; c.pid = 0 })
			c.emit(Event{Name: name, Kind: EventGaveUp, Exit: res.exit, Restarts: c.restarts,
				Reason: "restart policy " + c.spec.Restart.String()})
			return
		}

		now := time.Now()
		recent = append(recent, now)
		for len(recent) > 0 && now.Sub(recent[0]) > c.s.opts.CrashLoop.Window {
			recent = recent[1:]
		}
		if len(recent) > c.s.opts.CrashLoop.Restarts {
			c.mu.Lock()
			first := !c.crashLoop
			c.crashLoop = true
			c.mu.Unlock()
			if first {
				c.emit(Event{Name: name, Kind: EventCrashLoop, Exit: res.exit, Restarts: c.restarts,
					Reason: fmt.Sprintf("%d restarts within %s", len(recent), c.s.opts.CrashLoop.Window)})
			}
		}
		c.set(func() { c.state = "backoff"; c.pid = 0; c.restarts++ })
		c.emit(Event{Name: name, Kind: EventRestarting, Exit: res.exit, Restarts: c.restarts, Delay: delay})
		t := time.NewTimer(delay)
		select {
		case <-c.stop:
			t.Stop()
			c.set(func() { c.state = "stopped" })
			c.emit(Event{Name: name, Kind: EventStopped, Restarts: c.restarts})
			return
		case <-c.restart:
			t.Stop()
		case <-t.C:
		}
		delay = c.spec.Backoff.next(delay)
	}
}

type runResult struct {
	startErr  error
	stopped   bool // ended because of requestStop
	requested bool // ended because of Restart
	pid       int
	code      int // exit code; -1 if killed by a signal
	exit      string
	uptime    time.Duration
}

// started is a running child of either kind.
type started interface {
	pid() int
	// signal sends sig to the child and everything it started.
	signal(sig syscall.Signal)
	// wait waits for the exit and describes it.
	wait() (code int, exit string)
}

// cmdProc is a child started from an *exec.Cmd.
type cmdProc struct{ cmd *exec.Cmd }

func (p cmdProc) pid() int { return p.cmd.Process.Pid }

func (p cmdProc) signal(sig syscall.Signal) {
	// The whole group first (own group or session: pgid == pid), then the
	// leader in case it moved.
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	_ = p.cmd.Process.Signal(sig)
}

func (p cmdProc) wait() (int, string) {
	err := p.cmd.Wait()
	return describeExit(p.cmd, err)
}

// extProc is a child started by Spec.StartProcess.
type extProc struct{ p Process }

func (p extProc) pid() int                  { return p.p.Pid() }
func (p extProc) signal(sig syscall.Signal) { _ = p.p.Signal(sig) }

func (p extProc) wait() (int, string) {
	code, err := p.p.Wait()
	if err != nil && code < 0 {
		return -1, err.Error()
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) { // why it was stopped, such as a quota
		return code, fmt.Sprintf("exit status %d: %v", code, err)
	}
	return code, fmt.Sprintf("exit status %d", code)
}

// outputs returns the writers for the child's two streams.
func (c *child) outputs() (stdout, stderr io.Writer) {
	if c.s.opts.Output == nil {
		return io.Discard, io.Discard
	}
	return c.s.opts.Output(c.spec.Name, "stdout"), c.s.opts.Output(c.spec.Name, "stderr")
}

func closeWriters(ws ...io.Writer) {
	for _, w := range ws {
		if wc, ok := w.(io.Closer); ok {
			wc.Close()
		}
	}
}

// start starts the child once. finish must be called after it has exited:
// it waits (briefly) for its output to be recorded.
func (c *child) start() (p started, finish func(), err error) {
	if c.spec.StartProcess != nil {
		stdout, stderr := c.outputs()
		proc, err := c.spec.StartProcess(stdout, stderr)
		if err == nil && proc == nil {
			err = errors.New("the StartProcess function returned no process")
		}
		if err != nil {
			closeWriters(stdout, stderr)
			return nil, nil, err
		}
		return extProc{proc}, func() { closeWriters(stdout, stderr) }, nil
	}

	cmd, err := c.spec.Cmd()
	if err == nil && cmd == nil {
		err = errors.New("the Cmd function returned no command")
	}
	if err != nil {
		return nil, nil, err
	}
	prepare(cmd)
	var copies sync.WaitGroup
	var writeEnds, readEnds []*os.File
	var stdout, stderr io.Writer = io.Discard, io.Discard
	if c.s.opts.Output != nil {
		stdout, stderr = c.outputs()
	}
	for _, st := range []struct {
		dst *io.Writer
		w   io.Writer
	}{{&cmd.Stdout, stdout}, {&cmd.Stderr, stderr}} {
		if *st.dst != nil {
			closeWriters(st.w)
			continue
		}
		r, pw, perr := os.Pipe()
		if perr != nil {
			err = fmt.Errorf("output pipe: %w", perr)
			closeWriters(st.w)
			continue
		}
		*st.dst = pw
		writeEnds = append(writeEnds, pw)
		readEnds = append(readEnds, r)
		copies.Add(1)
		go func(w io.Writer) {
			defer copies.Done()
			io.Copy(w, r)
			r.Close()
			closeWriters(w)
		}(st.w)
	}
	if err == nil {
		start := c.spec.Start
		if start == nil {
			start = (*exec.Cmd).Start
		}
		err = start(cmd)
	}
	if c.spec.AfterStart != nil {
		c.spec.AfterStart(cmd, err)
	}
	for _, w := range writeEnds {
		w.Close() // the child has its own copies
	}
	finish = func() { drain(&copies, readEnds) }
	if err != nil {
		finish()
		return nil, nil, err
	}
	return cmdProc{cmd}, finish, nil
}

// runOnce starts the child and waits for it to exit, to be stopped or to
// be restarted on request.
func (c *child) runOnce(ctx context.Context) runResult {
	name := c.spec.Name
	c.set(func() { c.state = "starting" })
	p, finish, err := c.start()
	if err != nil {
		c.emit(Event{Name: name, Kind: EventStartFailed, Restarts: c.restarts, Reason: err.Error()})
		return runResult{startErr: err, code: -1, exit: "start failed: " + err.Error()}
	}
	startedAt := time.Now()
	pid := p.pid()
	c.set(func() { c.state = "running"; c.pid = pid; c.startedAt = startedAt; c.health = "" })
	c.emit(Event{Name: name, Kind: EventStarted, PID: pid, Restarts: c.restarts})

	type exit struct {
		code int
		desc string
	}
	waited := make(chan exit, 1)
	go func() { code, desc := p.wait(); waited <- exit{code, desc} }()
	healthCtx, stopHealth := context.WithCancel(ctx)
	if c.spec.Health != nil {
		go c.checkHealth(healthCtx)
	}

	var ex exit
	stopped, requested := false, false
	terminate := func() exit {
		c.set(func() { c.state = "stopping" })
		p.signal(syscall.SIGTERM)
		t := time.NewTimer(c.spec.StopTimeout)
		defer t.Stop()
		select {
		case ex := <-waited:
			p.signal(syscall.SIGKILL) // stragglers
			return ex
		case <-t.C:
		}
		p.signal(syscall.SIGKILL)
		return <-waited
	}
	select {
	case ex = <-waited:
	case <-c.stop:
		stopped = true
		ex = terminate()
	case <-c.restart:
		requested = true
		ex = terminate()
	}
	stopHealth()
	uptime := time.Since(startedAt)
	finish()
	res := runResult{stopped: stopped, requested: requested, pid: pid, uptime: uptime, code: ex.code, exit: ex.desc}
	c.set(func() { c.lastExit = res.exit; c.lastExitTime = time.Now() })
	if !stopped && !requested {
		c.emit(Event{Name: name, Kind: EventExited, PID: pid, Exit: res.exit, Restarts: c.restarts, Uptime: uptime})
	}
	return res
}

// drain waits for the output copies to reach EOF, but not for long: a
// process that left the child's process group may still hold the pipes.
func drain(copies *sync.WaitGroup, readEnds []*os.File) {
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		for _, r := range readEnds {
			r.Close() // unblocks the copy
		}
		<-done
	}
}

// prepare sets the options every supervised child gets.
func prepare(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	a := cmd.SysProcAttr
	if a.Pdeathsig == 0 {
		a.Pdeathsig = syscall.SIGKILL
	}
	if !a.Setsid && !a.Setctty && !a.Foreground {
		a.Setpgid = true
		a.Pgid = 0
	}
}

func describeExit(cmd *exec.Cmd, err error) (int, string) {
	ps := cmd.ProcessState
	if ps == nil {
		if err != nil {
			return -1, err.Error()
		}
		return -1, "unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, "signal: " + ws.Signal().String()
	}
	return ps.ExitCode(), fmt.Sprintf("exit status %d", ps.ExitCode())
}

// HealthRetry is the first delay before a failed health check is repeated;
// it doubles up to 500 ms (or the child's HealthInterval if shorter), so a
// child that is still starting shows "ok" soon after it can answer.
const HealthRetry = 10 * time.Millisecond

func (c *child) checkHealth(ctx context.Context) {
	maxRetry := min(c.spec.HealthInterval, 500*time.Millisecond)
	retry := min(HealthRetry, maxRetry)
	for {
		hctx, cancel := context.WithTimeout(ctx, c.spec.HealthInterval)
		err := c.spec.Health(hctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		h, wait := "ok", c.spec.HealthInterval
		if err != nil {
			h, wait = "unhealthy: "+err.Error(), retry
			retry = min(2*retry, maxRetry)
		} else {
			retry = min(HealthRetry, maxRetry)
		}
		c.set(func() { c.health = h })
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.checkNow:
			t.Stop()
		case <-t.C:
		}
	}
}
