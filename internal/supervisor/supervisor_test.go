package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "CLAWCAGE_SUPERVISOR_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "supervise":
		// A supervisor with one long-running child; prints the child's pid.
		sup := New(Options{OnEvent: func(e Event) {
			if e.Kind == EventStarted {
				fmt.Println(e.PID)
			}
		}})
		sup.Add(Spec{Name: "sleeper", Cmd: func() (*exec.Cmd, error) { return exec.Command("sleep", "1000"), nil }})
		sup.Run(context.Background())
	case "status":
		st, err := FetchStatus(context.Background(), os.Args[1])
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("components:", len(st.Components))
	}
	os.Exit(0)
}

func sh(script string) func() (*exec.Cmd, error) {
	return func() (*exec.Cmd, error) { return exec.Command("/bin/sh", "-c", script), nil }
}

// recorder collects events.
type recorder struct {
	mu sync.Mutex
	ev []Event
	ch chan Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan Event, 1000)} }

func (r *recorder) on(e Event) {
	r.mu.Lock()
	r.ev = append(r.ev, e)
	r.mu.Unlock()
	r.ch <- e
}

// waitFor returns the events up to the n-th event of kind.
func (r *recorder) waitFor(t *testing.T, kind EventKind, n int) []Event {
	t.Helper()
	timeout := time.After(30 * time.Second)
	seen := 0
	for {
		select {
		case e := <-r.ch:
			if e.Kind == kind {
				seen++
				if seen == n {
					r.mu.Lock()
					defer r.mu.Unlock()
					return append([]Event(nil), r.ev...)
				}
			}
		case <-timeout:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("no %d-th %s event; events: %+v", n, kind, r.ev)
			return nil
		}
	}
}

func run(t *testing.T, sup *Supervisor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func kinds(evs []Event, name string) []EventKind {
	var out []EventKind
	for _, e := range evs {
		if e.Name == name {
			out = append(out, e.Kind)
		}
	}
	return out
}

func TestBackoffGrowsAndCrashLoopIsReported(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on, CrashLoop: CrashLoop{Restarts: 3, Window: time.Minute}})
	b := Backoff{Initial: 20 * time.Millisecond, Max: 160 * time.Millisecond, Factor: 2, StableAfter: time.Hour}
	if err := sup.Add(Spec{Name: "crasher", Cmd: sh("exit 3"), Restart: RestartAlways, Backoff: b}); err != nil {
		t.Fatal(err)
	}
	run(t, sup)
	evs := rec.waitFor(t, EventStarted, 7)

	var delays []time.Duration
	var starts []time.Time
	crashLoopAt := -1
	for _, e := range evs {
		switch e.Kind {
		case EventRestarting:
			delays = append(delays, e.Delay)
			if e.Exit != "exit status 3" {
				t.Errorf("restart after %q, want exit status 3", e.Exit)
			}
		case EventStarted:
			starts = append(starts, e.Time)
		case EventCrashLoop:
			if crashLoopAt >= 0 {
				t.Errorf("crash loop reported twice")
			}
			crashLoopAt = len(delays)
		}
	}
	want := []time.Duration{20, 40, 80, 160, 160, 160}
	for i, d := range want {
		if i >= len(delays) || delays[i] != d*time.Millisecond {
			t.Fatalf("restart delays = %v, want %v ms", delays, want)
		}
	}
	// Each start waits at least the announced delay after the previous one.
	for i := 1; i < len(starts) && i <= len(want); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < want[i-1]*time.Millisecond {
			t.Errorf("start %d came %v after start %d, before its %v backoff", i, gap, i-1, want[i-1]*time.Millisecond)
		}
	}
	// 3 restarts are allowed in the window; the 4th is a crash loop.
	if crashLoopAt != 3 {
		t.Errorf("crash loop reported after %d restarts, want after the 4th exit (3 restarts)", crashLoopAt)
	}
	st := sup.Status()
	if len(st) != 1 || !st[0].CrashLoop || st[0].Health != "crash-loop" || st[0].Restarts < 6 {
		t.Errorf("status = %+v, want crash-loop health and >= 6 restarts", st)
	}
}

func TestFirstRestartWithinOneSecond(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on})
	sup.Add(Spec{Name: "once", Cmd: sh("exit 1")})
	run(t, sup)
	evs := rec.waitFor(t, EventStarted, 2)
	got := kinds(evs, "once")
	want := []EventKind{EventStarted, EventExited, EventRestarting, EventStarted}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if d := evs[2].Delay; d <= 0 || d > time.Second {
		t.Errorf("first restart delay %v, want within 1s", d)
	}
}

func TestRestartPolicies(t *testing.T) {
	tests := []struct {
		name    string
		policy  RestartPolicy
		script  string
		restart bool
		exit    string
	}{
		{"always restarts a clean exit", RestartAlways, "exit 0", true, "exit status 0"},
		{"on-failure restarts a failure", RestartOnFailure, "exit 3", true, "exit status 3"},
		{"on-failure restarts a signal death", RestartOnFailure, "kill -9 $$", true, "signal: killed"},
		{"on-failure leaves a clean exit", RestartOnFailure, "exit 0", false, "exit status 0"},
		{"never leaves a failure", RestartNever, "exit 3", false, "exit status 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			sup := New(Options{OnEvent: rec.on})
			sup.Add(Spec{Name: "c", Cmd: sh(tt.script), Restart: tt.policy, Backoff: Backoff{Initial: 10 * time.Millisecond}})
			run(t, sup)
			next := EventGaveUp
			if tt.restart {
				next = EventRestarting
			}
			evs := rec.waitFor(t, next, 1)
			last := evs[len(evs)-1]
			if last.Exit != tt.exit {
				t.Errorf("exit %q, want %q", last.Exit, tt.exit)
			}
			if !tt.restart {
				st := sup.Status()[0]
				if st.State != "exited" || st.Restarts != 0 || st.LastExit != tt.exit {
					t.Errorf("status %+v, want exited with %q and no restarts", st, tt.exit)
				}
			}
		})
	}
}

func TestStableUptimeResetsBackoff(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on})
	b := Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Factor: 4, StableAfter: 50 * time.Millisecond}
	sup.Add(Spec{Name: "steady", Cmd: sh("sleep 0.2; exit 1"), Backoff: b})
	run(t, sup)
	evs := rec.waitFor(t, EventRestarting, 3)
	for _, e := range evs {
		if e.Kind == EventRestarting && e.Delay != b.Initial {
			t.Errorf("delay %v after a stable run, want the initial %v", e.Delay, b.Initial)
		}
		if e.Kind == EventCrashLoop {
			t.Errorf("crash loop reported for a child that stays up")
		}
	}
}

func TestStartFailureIsRetried(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on})
	n := 0
	sup.Add(Spec{Name: "broken", Backoff: Backoff{Initial: 10 * time.Millisecond}, Cmd: func() (*exec.Cmd, error) {
		n++
		if n == 1 {
			return nil, errors.New("listener not ready")
		}
		return exec.Command("/nonexistent/binary"), nil
	}})
	run(t, sup)
	evs := rec.waitFor(t, EventStartFailed, 2)
	var reasons []string
	for _, e := range evs {
		if e.Kind == EventStartFailed {
			reasons = append(reasons, e.Reason)
		}
	}
	if !strings.Contains(reasons[0], "listener not ready") || !strings.Contains(reasons[1], "no such file") {
		t.Errorf("start-failed reasons %q", reasons)
	}
}

// groupMembers lists live processes in process group pgid.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

func TestStopKillsEverything(t *testing.T) {
	tests := []struct {
		name   string
		script string
		exit   string
	}{
		{"exits on SIGTERM", "sleep 1000 & sleep 1000 & wait", "signal: terminated"},
		{"ignores SIGTERM and has children", "trap '' TERM; sleep 1000 & sleep 1000 & while :; do wait; done", "signal: killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			var out strings.Builder
			sup := New(Options{OnEvent: rec.on})
			sup.Add(Spec{Name: "tree", StopTimeout: 300 * time.Millisecond, Cmd: func() (*exec.Cmd, error) {
				c := exec.Command("/bin/sh", "-c", tt.script)
				c.Stdout = &out
				return c, nil
			}})
			stop := run(t, sup)
			evs := rec.waitFor(t, EventStarted, 1)
			pid := evs[len(evs)-1].PID
			deadline := time.Now().Add(10 * time.Second)
			for len(groupMembers(pid)) < 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := len(groupMembers(pid)); n < 3 {
				t.Fatalf("process tree has %d members, want 3", n)
			}
			stop()
			if left := groupMembers(pid); len(left) != 0 {
				t.Errorf("processes %v survived the stop", left)
			}
			evs = rec.waitFor(t, EventStopped, 1)
			if e := evs[len(evs)-1]; e.Exit != tt.exit {
				t.Errorf("stopped with %q, want %q", e.Exit, tt.exit)
			}
			if st := sup.Status()[0]; st.State != "stopped" {
				t.Errorf("state %q after stop", st.State)
			}
		})
	}
}

func TestAddWhileRunningAndRemove(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on})
	run(t, sup)
	if err := sup.Add(Spec{Name: "late", Cmd: sh("exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Add(Spec{Name: "late", Cmd: sh("true")}); err == nil {
		t.Errorf("adding a duplicate name succeeded")
	}
	evs := rec.waitFor(t, EventStarted, 1)
	pid := evs[len(evs)-1].PID
	st := sup.Status()
	if len(st) != 1 || st[0].State != "running" || st[0].PID != pid || st[0].Health != "ok" {
		t.Fatalf("status %+v, want running pid %d", st, pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sup.Remove(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("removed child %d still exists: %v", pid, err)
	}
	if len(sup.Status()) != 0 {
		t.Errorf("removed child still in status")
	}
}

func TestHealthCheck(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on})
	var mu sync.Mutex
	healthErr := errors.New("not serving")
	sup.Add(Spec{Name: "h", Cmd: sh("exec sleep 1000"), HealthInterval: 10 * time.Millisecond,
		Health: func(context.Context) error { mu.Lock(); defer mu.Unlock(); return healthErr }})
	run(t, sup)
	rec.waitFor(t, EventStarted, 1)
	waitHealth := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if sup.Status()[0].Health == want {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("health %q, want %q", sup.Status()[0].Health, want)
	}
	waitHealth("unhealthy: not serving")
	mu.Lock()
	healthErr = nil
	mu.Unlock()
	waitHealth("ok")
}

func TestChildDiesWithSupervisor(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{helperEnv + "=supervise", "PATH=" + os.Getenv("PATH")}
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("helper: %v", err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(line))
	cmd.Process.Kill() // SIGKILL: the supervisor cannot clean up itself
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(child, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if strings.Contains(string(b), ") Z ") {
			return // dead, waiting for init to reap it
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(child, syscall.SIGKILL)
	t.Fatalf("child %d outlived its supervisor", child)
}

func TestParseRestartPolicy(t *testing.T) {
	for _, s := range []string{"always", "on-failure", "never"} {
		p, err := ParseRestartPolicy(s)
		if err != nil || p.String() != s {
			t.Errorf("ParseRestartPolicy(%q) = %v, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "Always", "on_failure", "sometimes"} {
		if _, err := ParseRestartPolicy(s); err == nil {
			t.Errorf("ParseRestartPolicy(%q) succeeded", s)
		}
	}
}

func TestRequestedRestart(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on, CrashLoop: CrashLoop{Restarts: 1, Window: time.Minute}})
	sup.Add(Spec{Name: "svc", Cmd: sh("exec sleep 1000"), StopTimeout: time.Second})
	run(t, sup)
	pid := rec.waitFor(t, EventStarted, 1)[0].PID
	for i := 2; i <= 4; i++ {
		if err := sup.Restart("svc"); err != nil {
			t.Fatal(err)
		}
		evs := rec.waitFor(t, EventStarted, 1)
		next := evs[len(evs)-1].PID
		if next == pid {
			t.Fatalf("restart %d kept pid %d", i, pid)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("old process %d still exists after restart", pid)
		}
		pid = next
	}
	rec.mu.Lock()
	evs := append([]Event(nil), rec.ev...)
	rec.mu.Unlock()
	for _, e := range evs {
		if e.Kind == EventCrashLoop || e.Kind == EventExited {
			t.Errorf("requested restarts produced %s", e.Kind)
		}
		if e.Kind == EventRestarting && e.Reason != "requested" {
			t.Errorf("restart reason %q", e.Reason)
		}
	}
	if st := sup.Status()[0]; st.Restarts != 3 || st.CrashLoop || st.State != "running" {
		t.Errorf("status %+v", st)
	}
	if err := sup.Restart("missing"); err == nil {
		t.Errorf("restarting an unknown child succeeded")
	}
}

// fakeSandbox is a Process the way internal/sandbox offers one.
type fakeSandbox struct {
	cmd     *exec.Cmd
	signals chan syscall.Signal
}

func (f *fakeSandbox) Pid() int { return f.cmd.Process.Pid }
func (f *fakeSandbox) Signal(sig syscall.Signal) error {
	f.signals <- sig
	return f.cmd.Process.Signal(sig)
}
func (f *fakeSandbox) Wait() (int, error) {
	err := f.cmd.Wait()
	if ws, ok := f.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return f.cmd.ProcessState.ExitCode(), err
}

type lineSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *lineSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, string(p))
	return len(p), nil
}

func TestStartProcessChild(t *testing.T) {
	rec := newRecorder()
	out := &lineSink{}
	sup := New(Options{OnEvent: rec.on, Output: func(name, stream string) io.Writer {
		if name == "sandbox/a" && stream == "stdout" {
			return out
		}
		return io.Discard
	}})
	signals := make(chan syscall.Signal, 10)
	starts := 0
	var mu sync.Mutex
	err := sup.Add(Spec{Name: "sandbox/a", Backoff: Backoff{Initial: 10 * time.Millisecond}, StopTimeout: 5 * time.Second,
		StartProcess: func(stdout, stderr io.Writer) (Process, error) {
			mu.Lock()
			defer mu.Unlock()
			script := "echo started; exit 4" // the first run fails
			if starts++; starts > 1 {
				script = "echo again; exec sleep 1000"
			}
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.Stdout, cmd.Stderr = stdout, stderr
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return &fakeSandbox{cmd: cmd, signals: signals}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Add(Spec{Name: "both", Cmd: sh("true"), StartProcess: func(io.Writer, io.Writer) (Process, error) { return nil, nil }}); err == nil {
		t.Errorf("a spec with both Cmd and StartProcess was accepted")
	}
	stop := run(t, sup)
	evs := rec.waitFor(t, EventRestarting, 1)
	if e := evs[len(evs)-1]; e.Exit != "exit status 4" {
		t.Errorf("exit %q, want exit status 4", e.Exit)
	}
	rec.waitFor(t, EventStarted, 1)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		out.mu.Lock()
		n := len(out.lines)
		out.mu.Unlock()
		if n >= 2 {
			break
		}
	}
	stop()
	evs = rec.waitFor(t, EventStopped, 1)
	if e := evs[len(evs)-1]; e.Exit != "exit status 143" {
		t.Errorf("stopped with %q, want exit status 143 (SIGTERM)", e.Exit)
	}
	if sig := <-signals; sig != syscall.SIGTERM {
		t.Errorf("first signal %v, want SIGTERM", sig)
	}
	out.mu.Lock()
	got := strings.Join(out.lines, "")
	out.mu.Unlock()
	if !strings.Contains(got, "started\n") || !strings.Contains(got, "again\n") {
		t.Errorf("output %q", got)
	}
}

func TestHealthRetryAndCheckNow(t *testing.T) {
	tests := []struct {
		name string
		// failures is how many checks fail before the child answers.
		failures int
		// poke is set when the test changes the answer and calls
		// CheckHealth; with a one-hour interval only that can show it.
		poke      bool
		wantFinal string
		wantCalls int // 0: not checked (a failing check keeps being retried)
	}{
		{"failing check is retried long before the interval", 3, false, "ok", 4},
		{"CheckHealth checks at once", 0, true, "unhealthy: stopped serving", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			sup := New(Options{OnEvent: rec.on})
			var mu sync.Mutex
			calls := 0
			var pokedErr error
			sup.Add(Spec{Name: "h", Cmd: sh("exec sleep 1000"), HealthInterval: time.Hour,
				Health: func(context.Context) error {
					mu.Lock()
					defer mu.Unlock()
					calls++
					if calls <= tt.failures {
						return errors.New("starting")
					}
					return pokedErr
				}})
			run(t, sup)
			rec.waitFor(t, EventStarted, 1)
			waitHealth := func(want string) {
				t.Helper()
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
					if sup.Status()[0].Health == want {
						return
					}
				}
				t.Fatalf("health %q, want %q", sup.Status()[0].Health, want)
			}
			waitHealth("ok")
			if tt.poke {
				mu.Lock()
				pokedErr = errors.New("stopped serving")
				mu.Unlock()
				sup.CheckHealth("h")
				sup.CheckHealth("no-such-child") // ignored
			}
			waitHealth(tt.wantFinal)
			time.Sleep(50 * time.Millisecond) // no further checks within the hour
			mu.Lock()
			defer mu.Unlock()
			if tt.wantCalls != 0 && calls != tt.wantCalls {
				t.Errorf("%d health checks, want %d", calls, tt.wantCalls)
			}
		})
	}
}

func TestAfterStartSeesEveryAttempt(t *testing.T) {
	rec := newRecorder()
	sup := New(Options{OnEvent: rec.on})
	var mu sync.Mutex
	var got []string
	attempt := 0
	sup.Add(Spec{Name: "a", Cmd: sh("exec sleep 1000"), Backoff: Backoff{Initial: time.Millisecond},
		Start: func(cmd *exec.Cmd) error {
			attempt++
			if attempt == 1 {
				return errors.New("no fork today")
			}
			return cmd.Start()
		},
		AfterStart: func(cmd *exec.Cmd, err error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%s started=%v err=%v", filepath.Base(cmd.Path), cmd.Process != nil, err))
		}})
	run(t, sup)
	rec.waitFor(t, EventStarted, 1)
	mu.Lock()
	defer mu.Unlock()
	want := []string{"sh started=false err=no fork today", "sh started=true err=<nil>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("AfterStart calls %q, want %q", got, want)
	}
}

// stoppedProcess exits at once with a code and the reason it was stopped.
type stoppedProcess struct{ err error }

func (stoppedProcess) Pid() int                    { return os.Getpid() }
func (stoppedProcess) Signal(syscall.Signal) error { return nil }
func (p stoppedProcess) Wait() (int, error)        { return 137, p.err }

func TestExitEventCarriesWaitReason(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"reason given", errors.New("workspace exceeded its disk limit"), "exit status 137: workspace exceeded its disk limit"},
		{"no reason", nil, "exit status 137"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			sup := New(Options{OnEvent: rec.on})
			sup.Add(Spec{Name: "sb", Restart: RestartNever,
				StartProcess: func(io.Writer, io.Writer) (Process, error) { return stoppedProcess{tt.err}, nil }})
			run(t, sup)
			evs := rec.waitFor(t, EventExited, 1)
			if e := evs[len(evs)-1]; e.Exit != tt.want {
				t.Errorf("exit %q, want %q", e.Exit, tt.want)
			}
		})
	}
}
