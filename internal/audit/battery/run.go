package battery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Result is one case run in one mode.
type Result struct {
	Case string `json:"case"`
	// Mode is "user" (the sandbox's default user) or "root" (--root).
	Mode        string            `json:"mode"`
	Expected    []string          `json:"expected"`
	Observation audit.Observation `json:"observation"`
	// Held is true when the outcome is expected and no host-side evidence
	// of an escape was found.
	Held bool `json:"held"`
	// Failure says why the case did not hold (or could not run).
	Failure string `json:"failure,omitempty"`
	// ExitCode is the exit status of `clawcage sandbox run`.
	ExitCode int `json:"exit_code"`
	// Stderr is the run's standard error when the case failed.
	Stderr string `json:"stderr,omitempty"`
}

// RunError means the run itself failed (the sandbox could not be set up,
// the probe printed nothing): no verdict about the attack is possible.
type RunError struct{ Msg string }

func (e *RunError) Error() string { return e.Msg }

// Modes are the identities every case runs as.
var Modes = []string{"user", "root"}

// RunOneShot runs c in a fresh `sandbox run` as mode, with a workspace
// created under parent, and returns the verdict. The returned error is a
// *RunError when no verdict is possible.
func RunOneShot(ctx context.Context, w *World, c Case, mode, parent string) (Result, error) {
	res := Result{Case: c.Name, Mode: mode, Expected: c.Want}
	if c.LiveOnly {
		res.Failure = "skipped: attacks the stack around a live sandbox; a one-shot sandbox has none"
		return res, nil
	}
	ws, err := os.MkdirTemp(parent, "ws-")
	if err != nil {
		return res, &RunError{fmt.Sprintf("create workspace: %v", err)}
	}
	defer os.RemoveAll(ws)
	// The sandbox's users are unprivileged host uids: let them write.
	if err := os.Chmod(ws, 0o777); err != nil {
		return res, &RunError{err.Error()}
	}
	if err := CopyFile(w.Binary, filepath.Join(ws, "clawcage"), 0o755); err != nil {
		return res, &RunError{err.Error()}
	}
	argv := []string{"sandbox", "run", "--workspace", ws}
	if mode == "root" {
		argv = append(argv, "--root")
	}
	argv = append(argv, c.Flags...)
	argv = append(argv, "--", "/sandbox/clawcage")
	return run(ctx, w, c, res, ws, commandInvoker(w, argv))
}

// LiveDir is the directory of a live sandbox's workspace that holds the
// probe binary and the attacks' set-up files while `clawcage audit` runs;
// it is removed afterwards.
const LiveDir = ".clawcage-audit"

// LiveProbe is the probe binary's path inside a live sandbox.
const LiveProbe = "/sandbox/" + LiveDir + "/clawcage"

// Exec runs argv inside a live sandbox (as root inside it when root is
// set) with the given standard streams and returns its exit status. The
// error is non-nil only when the command could not be run at all.
// `clawcage audit` passes a wrapper of stack.Exec.
type Exec func(ctx context.Context, argv []string, root bool, stdin, stdout, stderr *os.File) (int, error)

// RunExec runs c inside a live sandbox through ex, as mode ("user" or
// "root"); dir is the host path of the workspace's LiveDir, where the
// probe binary already is. Cases that need their own limits (Flags) cannot
// run there and are reported as skipped with a nil error.
func RunExec(ctx context.Context, w *World, c Case, mode string, ex Exec, dir string) (Result, error) {
	res := Result{Case: c.Name, Mode: mode, Expected: c.Want}
	if len(c.Flags) > 0 {
		res.Failure = "skipped: needs its own limits (" + strings.Join(c.Flags, " ") + "), which only a one-shot sandbox takes"
		return res, nil
	}
	if c.Needs != nil {
		if why := c.Needs(w); why != "" {
			res.Failure = "skipped: " + why
			return res, nil
		}
	}
	if c.LiveWant != nil {
		c.Want = c.LiveWant
		res.Expected = c.Want
	}
	invoke := func(ctx context.Context, args []string, stdin *os.File, stdout, stderr *bytes.Buffer) (int, error) {
		if stdin == nil {
			devnull, err := os.Open(os.DevNull)
			if err != nil {
				return 0, err
			}
			defer devnull.Close()
			stdin = devnull
		}
		return ExecCapture(ctx, ex, append([]string{LiveProbe}, args...), mode == "root", stdin, stdout, stderr)
	}
	return run(ctx, w, c, res, dir, invoke)
}

// ExecCapture runs argv through ex and collects its output.
func ExecCapture(ctx context.Context, ex Exec, argv []string, root bool, stdin *os.File, stdout, stderr io.Writer) (int, error) {
	return ExecStream(ctx, ex, argv, root, stdin, stderr, func(r io.Reader) error {
		_, err := io.Copy(stdout, r)
		return err
	})
}

// ExecStream runs argv through ex, handing its standard output to read as
// it comes (read must consume it to the end) and copying its standard
// error to stderr, bounded to 1 MiB.
func ExecStream(ctx context.Context, ex Exec, argv []string, root bool, stdin *os.File, stderr io.Writer, read func(io.Reader) error) (int, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, err
	}
	readErr := make(chan error, 1)
	go func() {
		err := read(outR)
		_, _ = io.Copy(io.Discard, outR) // never block the writer
		outR.Close()
		readErr <- err
	}()
	errDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(stderr, io.LimitReader(errR, 1<<20))
		_, _ = io.Copy(io.Discard, errR)
		errR.Close()
		close(errDone)
	}()
	code, err := ex(ctx, argv, root, stdin, outW, errW)
	outW.Close()
	errW.Close()
	rerr := <-readErr
	<-errDone
	if err != nil {
		return code, err
	}
	if rerr != nil {
		return code, fmt.Errorf("read the output of %s: %w", argv[0], rerr)
	}
	return code, nil
}

// invoker runs the probe with args and returns its exit status.
type invoker func(ctx context.Context, args []string, stdin *os.File, stdout, stderr *bytes.Buffer) (int, error)

// commandInvoker runs w.Binary with prefix (`sandbox run ... --`) + args.
func commandInvoker(w *World, prefix []string) invoker {
	return func(ctx context.Context, args []string, stdin *os.File, stdout, stderr *bytes.Buffer) (int, error) {
		cmd := exec.CommandContext(ctx, w.Binary, append(slices.Clone(prefix), args...)...)
		cmd.Env = append(os.Environ(), w.Env()...)
		if stdin != nil {
			cmd.Stdin = stdin
		}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return 0, fmt.Errorf("run %s: %w", w.Binary, err)
		}
		return cmd.ProcessState.ExitCode(), nil
	}
}

// run sets up setupDir, runs the probe through invoke, and judges.
func run(ctx context.Context, w *World, c Case, res Result, setupDir string, invoke invoker) (Result, error) {
	if c.Setup != nil {
		if err := c.Setup(w, setupDir); err != nil {
			return res, &RunError{fmt.Sprintf("set up %s: %v", c.Name, err)}
		}
	}
	var args []string
	if c.Args != nil {
		args = slices.Clone(c.Args(w)) // rewritten below: never the case's own slice
	}
	if setupDir != "" && strings.HasSuffix(setupDir, LiveDir) {
		for i, a := range args {
			args[i] = strings.Replace(a, "/sandbox/", "/sandbox/"+LiveDir+"/", 1)
		}
	}
	args = append([]string{"audit-probe", "--json", c.Probe}, args...)

	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var stdin, term *os.File
	if c.TTY {
		master, slave, err := pty.Open()
		if err != nil {
			return res, &RunError{fmt.Sprintf("open a pty standing for the operator's terminal: %v", err)}
		}
		defer master.Close()
		defer slave.Close()
		go func() { _, _ = io.Copy(io.Discard, master) }() // drain echo
		stdin, term = slave, slave
	}
	var stdout, stderr bytes.Buffer

	mark := filepath.Base(setupDir)
	before := snapshotHost(mark)
	code, runErr := invoke(ctx, args, stdin, &stdout, &stderr)
	res.ExitCode = code
	switch {
	case ctx.Err() != nil:
		return res, &RunError{fmt.Sprintf("no result within 90s (stdout %q, stderr %q)", stdout.String(), stderr.String())}
	case runErr != nil:
		return res, &RunError{runErr.Error()}
	case res.ExitCode == 125:
		return res, &RunError{"the sandbox could not be set up (exit 125): " + strings.TrimSpace(stderr.String())}
	}
	o, ok := ParseObservation(stdout.String(), c.Probe)
	if !ok {
		return res, &RunError{fmt.Sprintf("exit %d and no observation; stdout %q, stderr %q", res.ExitCode, stdout.String(), stderr.String())}
	}
	if o.Outcome == audit.Error {
		return res, &RunError{"the probe could not run inside the sandbox: " + o.Detail}
	}
	res.Observation = o
	errs := []error{c.Verdict(w, o)}
	if term != nil {
		errs = append(errs, checkNothingInjected(term))
	}
	errs = append(errs, checkNothingLeft(ctx, before, mark, 5*time.Second))
	if err := errors.Join(errs...); err != nil {
		res.Failure = err.Error()
		res.Stderr = stderr.String()
	} else {
		res.Held = true
	}
	return res, nil
}

// checkNothingInjected fails when the TIOCSTI marker waits in the operator
// terminal's input queue.
func checkNothingInjected(term *os.File) error {
	fd := int(term.Fd())
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	if err != nil {
		return fmt.Errorf("read the operator terminal's input queue size: %w", err)
	}
	if n == 0 {
		return nil
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	k, _ := unix.Read(fd, buf)
	if k > 0 && bytes.Contains(buf[:k], []byte(TTYMarker)) {
		return fmt.Errorf("the sandbox injected %q into the operator's terminal", buf[:k])
	}
	return nil
}

// hostTraces is what a sandbox could leave behind on the host: clawcage
// cgroup directories and mounts in this process's mount namespace.
type hostTraces struct {
	cgroups []string
	mounts  []string
}

func snapshotHost(mark string) hostTraces {
	var tr hostTraces
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for line := range strings.SplitSeq(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		// Only mounts of this run's workspace count: other clawcage
		// processes on the host (a stack's netns bind mounts) are not ours.
		root, mp := f[3], f[4]
		if strings.Contains(mp, mark) || strings.Contains(root, mark) {
			tr.mounts = append(tr.mounts, mp)
		}
		if f[len(f)-3] == "-" && (f[len(f)-2] == "cgroup" || f[len(f)-2] == "cgroup2") {
			tr.cgroups = append(tr.cgroups, clawcageGroups(mp)...)
		}
	}
	slices.Sort(tr.cgroups)
	slices.Sort(tr.mounts)
	return tr
}

// clawcageGroups lists the children of every "clawcage" directory up to
// four levels below a cgroup mount.
func clawcageGroups(mount string) []string {
	var out []string
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if e.Name() == "clawcage" {
				kids, _ := os.ReadDir(p)
				for _, k := range kids {
					if k.IsDir() {
						out = append(out, filepath.Join(p, k.Name()))
					}
				}
				continue
			}
			if depth < 4 {
				walk(p, depth+1)
			}
		}
	}
	walk(mount, 0)
	return out
}

// checkNothingLeft fails when a clawcage cgroup or a mount of the run's
// workspace appeared since before and does not go away within a few
// seconds. A new group that still holds processes belongs to a sandbox
// running at the same time, not to this finished run, and is ignored.
func checkNothingLeft(ctx context.Context, before hostTraces, mark string, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		after := snapshotHost(mark)
		groups, mounts := emptyGroups(added(before.cgroups, after.cgroups)), added(before.mounts, after.mounts)
		if len(groups)+len(mounts) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var errs []error
			if len(groups) > 0 {
				errs = append(errs, fmt.Errorf("cgroups left behind on the host: %v", groups))
			}
			if len(mounts) > 0 {
				errs = append(errs, fmt.Errorf("mounts left behind in the host's mount namespace: %v", mounts))
			}
			return errors.Join(errs...)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func added(before, after []string) []string {
	var out []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			out = append(out, a)
		}
	}
	return out
}

// emptyGroups keeps the cgroup directories that hold no process.
func emptyGroups(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err == nil && len(bytes.TrimSpace(b)) == 0 {
			out = append(out, d)
		}
	}
	return out
}
