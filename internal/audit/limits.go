package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// helperTimeout bounds the fork bomb and the memory hog.
const helperTimeout = 60 * time.Second

func limitProbes() []Probe {
	return []Probe{
		{Name: "fork-bomb", Usage: "[MAX]", Doc: "start processes until the kernel refuses (the pids limit must hold below MAX, default 4096)",
			Expect: []string{"EAGAIN"}, Run: forkBomb},
		{Name: "fill-tmp", Usage: "[MAX]", Doc: "write up to MAX (default 1G) to a file in /tmp: its size limit must refuse (ENOSPC)",
			Expect: []string{"ENOSPC"}, Run: fillTmp},
		{Name: "oom-score-adj", Doc: "exempt this process from the OOM killer (oom_score_adj -1000, needs CAP_SYS_RESOURCE)",
			Expect: []string{"EACCES", "EPERM"}, Run: oomScoreAdj},
		{Name: "memory-hog", Usage: "[SIZE]", Doc: "allocate and touch SIZE bytes (default 1G) in a child: the memory limit must kill it",
			Expect: []string{KilledSIGKILL}, Run: memoryHog},
	}
}

// forkBombResult is what the fork-bomb helper prints.
type forkBombResult struct {
	Started int    `json:"started"`
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
}

func forkBomb(ctx context.Context, args []string) Observation {
	max := argOr(args, 0, "4096")
	if n, err := strconv.Atoi(max); err != nil || n < 1 {
		return errorf("fork-bomb: MAX %q is not a positive number", max)
	}
	ctx, cancel := context.WithTimeout(ctx, helperTimeout)
	defer cancel()
	cmd, err := helperCommand(ctx, "", "fork-bomb", max)
	if err != nil {
		return errorf("%v", err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var res forkBombResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		// The Go runtime of the helper itself may die when it cannot
		// create a thread: that is the pids limit holding too.
		if strings.Contains(stderr.String(), "errno=11") || strings.Contains(stderr.String(), "resource temporarily unavailable") {
			return Observation{Outcome: "EAGAIN", Detail: "the fork bomb's own runtime could not create a thread (EAGAIN): " + firstLine(stderr.String())}
		}
		if ctx.Err() != nil {
			return Observation{Outcome: Timeout, Detail: "the fork bomb did not finish in " + helperTimeout.String()}
		}
		return errorf("fork-bomb helper: %v; stderr: %s", runErr, firstLine(stderr.String()))
	}
	if res.Outcome == Succeeded {
		return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("started %d processes without being refused", res.Started)}
	}
	return Observation{Outcome: res.Outcome, Detail: fmt.Sprintf("started %d processes, then: %s", res.Started, res.Error)}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// forkBombHelper starts sleeping processes until refused or max, then
// kills them all and prints a forkBombResult.
func forkBombHelper(ctx context.Context, args []string, out io.Writer) int {
	max, err := strconv.Atoi(argOr(args, 0, "4096"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fork-bomb helper:", err)
		return 2
	}
	// A small C sleep keeps the bomb within memory limits; this binary is
	// the fallback.
	bin, argv := "", []string{"sleep", "30"}
	for _, p := range []string{"/bin/sleep", "/usr/bin/sleep"} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	env := []string{}
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			fmt.Fprintln(os.Stderr, "fork-bomb helper:", err)
			return 2
		}
		argv = []string{bin, "audit-probe", HelperArg, "sleep", "30s"}
		env = []string{HelperEnv + "=1"}
	}
	var pids []int
	res := forkBombResult{Outcome: Succeeded}
	for len(pids) < max && ctx.Err() == nil {
		pid, err := syscall.ForkExec(bin, argv, &syscall.ProcAttr{Env: env, Sys: &syscall.SysProcAttr{Setpgid: true}})
		if err != nil {
			res.Outcome, res.Error = OutcomeOf(err), err.Error()
			break
		}
		pids = append(pids, pid)
	}
	res.Started = len(pids)
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	for _, pid := range pids {
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
	}
	if err := json.NewEncoder(out).Encode(res); err != nil {
		return 1
	}
	return 0
}

func memoryHog(ctx context.Context, args []string) Observation {
	size := argOr(args, 0, "1G")
	if _, err := parseSize(size); err != nil {
		return errorf("memory-hog: SIZE: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, helperTimeout)
	defer cancel()
	cmd, err := helperCommand(ctx, "", "hog", size)
	if err != nil {
		return errorf("%v", err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// On timeout, SIGTERM: a SIGKILL must only ever come from the kernel.
	cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) }
	err = cmd.Run()
	touched := lastLine(stdout.String())
	var ee *exec.ExitError
	switch {
	case err == nil:
		return Observation{Outcome: Succeeded, Detail: "allocated and touched " + size + " without being stopped"}
	case ctx.Err() != nil:
		return Observation{Outcome: Timeout, Detail: "the hog was still running after " + helperTimeout.String() + " (touched " + touched + " MiB)"}
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return Observation{Outcome: "killed:" + unix.SignalName(ws.Signal()), Detail: "the hog was killed after touching " + touched + " MiB of " + size}
		}
		return Observation{Outcome: "exited:" + strconv.Itoa(ee.ExitCode()), Detail: "the hog failed after " + touched + " MiB: " + firstLine(stderr.String())}
	default:
		return observe(err, "start the memory hog")
	}
}

func lastLine(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return "0"
	}
	return f[len(f)-1]
}

// hogHelper maps and touches memory in 16 MiB steps, printing the running
// total in MiB after each step.
func hogHelper(args []string) int {
	size, err := parseSize(argOr(args, 0, "1G"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hog helper:", err)
		return 2
	}
	const chunk = 16 << 20
	var total int64
	var keep [][]byte
	for total < size {
		b, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hog helper: mmap:", err)
			return 3
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
		total += chunk
		fmt.Println(total >> 20)
	}
	_ = keep
	return 0
}

func fillTmp(_ context.Context, args []string) Observation {
	max, err := parseSize(argOr(args, 0, "1G"))
	if err != nil {
		return errorf("fill-tmp: MAX: %v", err)
	}
	f, err := os.CreateTemp("", "clawcage-audit-fill-")
	if err != nil {
		return observe(err, "create a file in the temporary directory")
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i) | 1 // not zero: no sparse or compressed shortcut
	}
	var written int64
	for written < max {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			o := observe(err, fmt.Sprintf("write %s after %d MiB", f.Name(), written>>20))
			return o
		}
	}
	if err := f.Sync(); err != nil {
		return observe(err, fmt.Sprintf("sync %s after %d MiB", f.Name(), written>>20))
	}
	return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("wrote %d MiB to %s without being refused", written>>20, f.Name())}
}

func oomScoreAdj(context.Context, []string) Observation {
	const p = "/proc/self/oom_score_adj"
	old, err := os.ReadFile(p)
	if err != nil {
		return observe(err, "read "+p)
	}
	if err := os.WriteFile(p, []byte("-1000"), 0); err != nil {
		return observe(err, "write -1000 to "+p)
	}
	_ = os.WriteFile(p, old, 0)
	return Observation{Outcome: Succeeded, Detail: "made this process exempt from the OOM killer (oom_score_adj -1000), then restored " + strings.TrimSpace(string(old))}
}
