package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func procProbes() []Probe {
	return []Probe{
		{Name: "see-host-pids", Usage: "[MAX]", Doc: "count the processes visible in /proc (at most MAX, default 16, means only the sandbox's own)",
			Expect: []string{Isolated}, Run: seeHostPids},
		{Name: "kill-host-pid", Usage: "PID", Doc: "send SIGCONT to a host process", Expect: []string{"ESRCH"}, Run: killHostPid},
		{Name: "proc1-environ", Usage: "CANARY", Doc: "read /proc/1/environ looking for the host's canary value",
			Expect: []string{"ENOENT", Absent}, Run: proc1Environ},
		{Name: "env-canary", Usage: "CANARY", Doc: "look for the invoking shell's canary value in the environment and every readable /proc/*/environ",
			Expect: []string{Absent}, Run: envCanary},
		{Name: "ptrace-attach", Usage: "[PID]", Doc: "PTRACE_ATTACH to a process (default: the parent)", Expect: []string{"EPERM"}, Run: ptraceAttach},
		{Name: "ptrace-traceme", Doc: "PTRACE_TRACEME", Expect: []string{"EPERM"}, Run: ptraceTraceme},
		{Name: "process-vm-readv", Doc: "process_vm_readv of own memory (the syscall must be filtered)", Expect: []string{"EPERM"}, Run: processVMReadv},
		{Name: "hardening", Doc: "no capabilities in any set, no_new_privs, seccomp filter mode, core dumps off",
			Expect: []string{Enforced}, Run: hardening},
		{Name: "setuid-exec", Usage: "PATH", Doc: "exec a setuid-root copy of this binary placed in the workspace and compare credentials",
			Expect: []string{Unchanged}, Run: setuidExec},
	}
}

// procStatus parses /proc/PID/status into key → value.
func procStatus(pid string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// visiblePids lists the numeric entries of /proc.
func visiblePids() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

func seeHostPids(_ context.Context, args []string) Observation {
	max, err := strconv.Atoi(argOr(args, 0, "16"))
	if err != nil || max < 1 {
		return errorf("see-host-pids: MAX %q is not a positive number", argOr(args, 0, ""))
	}
	pids, err := visiblePids()
	if err != nil {
		return observe(err, "list /proc")
	}
	detail := fmt.Sprintf("%d processes visible: %v", len(pids), pids)
	if len(pids) > 20 {
		detail = fmt.Sprintf("%d processes visible: %v ...", len(pids), pids[:20])
	}
	if len(pids) > max {
		return Observation{Outcome: Succeeded, Detail: detail}
	}
	return Observation{Outcome: Isolated, Detail: detail}
}

func killHostPid(_ context.Context, args []string) Observation {
	if len(args) != 1 {
		return errorf("usage: kill-host-pid PID")
	}
	pid, err := strconv.Atoi(args[0])
	if err != nil || pid < 2 {
		return errorf("kill-host-pid: %q is not a pid above 1", args[0])
	}
	return observe(unix.Kill(pid, unix.SIGCONT), "kill("+args[0]+", SIGCONT)")
}

func proc1Environ(_ context.Context, args []string) Observation {
	if len(args) != 1 || args[0] == "" {
		return errorf("usage: proc1-environ CANARY")
	}
	b, err := os.ReadFile("/proc/1/environ")
	if err != nil {
		return observe(err, "read /proc/1/environ")
	}
	if bytes.Contains(b, []byte(args[0])) {
		return Observation{Outcome: Succeeded, Detail: "the canary is in /proc/1/environ"}
	}
	return Observation{Outcome: Absent, Detail: fmt.Sprintf("read %d bytes of /proc/1/environ, no canary", len(b))}
}

func envCanary(_ context.Context, args []string) Observation {
	if len(args) != 1 || args[0] == "" {
		return errorf("usage: env-canary CANARY")
	}
	canary := args[0]
	var names []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.Contains(kv, canary) {
			return Observation{Outcome: Succeeded, Detail: "the canary is in the environment variable " + k}
		}
		names = append(names, k)
	}
	pids, _ := visiblePids()
	read := 0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		read++
		if bytes.Contains(b, []byte(canary)) {
			return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("the canary is in /proc/%d/environ", pid)}
		}
	}
	sort.Strings(names)
	return Observation{Outcome: Absent, Detail: fmt.Sprintf("environment has only %s; %d /proc/*/environ read", strings.Join(names, ","), read)}
}

func ptraceAttach(_ context.Context, args []string) Observation {
	pid := os.Getppid()
	if len(args) > 0 {
		var err error
		if pid, err = strconv.Atoi(args[0]); err != nil || pid < 1 {
			return errorf("ptrace-attach: %q is not a pid", args[0])
		}
	}
	return onDisposableThread(func() Observation {
		if err := unix.PtraceAttach(pid); err != nil {
			return observe(err, fmt.Sprintf("PTRACE_ATTACH %d", pid))
		}
		// Let the tracee go again: wait for the attach stop, then detach.
		var ws unix.WaitStatus
		_, werr := unix.Wait4(pid, &ws, unix.WALL, nil)
		derr := unix.PtraceDetach(pid)
		return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("attached to pid %d (wait: %v, detach: %v)", pid, werr, derr)}
	})
}

func ptraceTraceme(ctx context.Context, _ []string) Observation {
	// PTRACE_TRACEME makes the calling thread a tracee of its parent. It
	// runs in a helper child whose parent is this process: if the kernel
	// accepts it, this process is the tracer and must reap the traced
	// thread itself (with __WALL) before the helper can be reaped.
	const exe = "/proc/self/exe" // see helperCommand
	r, w, err := os.Pipe()
	if err != nil {
		return errorf("ptrace-traceme: %v", err)
	}
	defer r.Close()
	pid, err := syscall.ForkExec(exe, []string{exe, "audit-probe", HelperArg, "traceme"}, &syscall.ProcAttr{
		Env:   append(os.Environ(), HelperEnv+"=1"),
		Files: []uintptr{^uintptr(0), w.Fd(), 2},
	})
	w.Close()
	if err != nil {
		return errorf("ptrace-traceme: start helper: %v", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = unix.Kill(pid, unix.SIGKILL) })
	defer stop()
	timer := time.AfterFunc(helperTimeout, func() { _ = unix.Kill(pid, unix.SIGKILL) })
	defer timer.Stop()
	out, _ := io.ReadAll(io.LimitReader(r, 4096))
	var tid int
	var outcome, detail string
	if _, err := fmt.Sscan(string(out), &tid, &outcome); err != nil {
		detail = fmt.Sprintf("helper printed %q", out)
	}
	if outcome == Succeeded && tid > 0 {
		reapAll(tid)
	}
	reapAll(pid)
	switch outcome {
	case "":
		return errorf("ptrace-traceme: %s", detail)
	case Succeeded:
		return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("PTRACE_TRACEME accepted (thread %d became this process's tracee)", tid)}
	default:
		return Observation{Outcome: outcome, Detail: "PTRACE_TRACEME: " + outcome}
	}
}

// reapAll waits for pid (a process or a traced thread) until it is gone.
func reapAll(pid int) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}

// tracemeHelper runs PTRACE_TRACEME on a locked thread and prints the
// thread id and the outcome, then the process exits (which ends the
// thread, traced or not).
func tracemeHelper(out io.Writer) int {
	ch := make(chan string, 1)
	go func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		_, _, e := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
		if e != 0 {
			ch <- fmt.Sprintf("%d %s\n", tid, OutcomeOf(e))
			return
		}
		ch <- fmt.Sprintf("%d %s\n", tid, Succeeded)
		select {} // stay on this thread until the process exits
	}()
	fmt.Fprint(out, <-ch)
	return 0
}

func processVMReadv(context.Context, []string) Observation {
	src := [8]byte{'c', 'l', 'a', 'w', 'c', 'a', 'g', 'e'}
	var dst [8]byte
	local := []unix.Iovec{{Base: &dst[0], Len: uint64(len(dst))}}
	remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&src[0])), Len: len(src)}}
	n, err := unix.ProcessVMReadv(os.Getpid(), local, remote, 0)
	if err != nil {
		return observe(err, "process_vm_readv")
	}
	return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("process_vm_readv copied %d bytes", n)}
}

func hardening(context.Context, []string) Observation {
	st, err := procStatus("self")
	if err != nil {
		return observe(err, "read /proc/self/status")
	}
	var missing []string
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if v, err := strconv.ParseUint(st[k], 16, 64); err != nil || v != 0 {
			missing = append(missing, k+"="+st[k])
		}
	}
	if st["NoNewPrivs"] != "1" {
		missing = append(missing, "NoNewPrivs="+st["NoNewPrivs"])
	}
	if st["Seccomp"] != "2" {
		missing = append(missing, "Seccomp="+st["Seccomp"])
	}
	var rl unix.Rlimit
	coreOff := unix.Getrlimit(unix.RLIMIT_CORE, &rl) == nil && rl.Max == 0
	dumpable, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if !coreOff && dumpable != 0 {
		missing = append(missing, fmt.Sprintf("core dumps on (RLIMIT_CORE max %d, dumpable %d)", rl.Max, dumpable))
	}
	if len(missing) > 0 {
		return Observation{Outcome: Succeeded, Detail: "privileges left: " + strings.Join(missing, " ")}
	}
	return Observation{Outcome: Enforced, Detail: "no capabilities, no_new_privs=1, seccomp=filter, core dumps off"}
}

func setuidExec(ctx context.Context, args []string) Observation {
	if len(args) != 1 {
		return errorf("usage: setuid-exec PATH")
	}
	var st unix.Stat_t
	if err := unix.Stat(args[0], &st); err != nil {
		return errorf("setuid-exec: the helper is not there: %v", err)
	}
	if st.Mode&unix.S_ISUID == 0 {
		return errorf("setuid-exec: %s is not setuid (mode %o): the test set-up is broken", args[0], st.Mode)
	}
	self, err := currentIdentity()
	if err != nil {
		return errorf("setuid-exec: own identity: %v", err)
	}
	cmd, err := helperCommand(ctx, args[0], "ids")
	if err != nil {
		return errorf("%v", err)
	}
	out, err := cmd.Output()
	if err != nil {
		return observe(err, "run setuid helper "+args[0])
	}
	var child Identity
	if err := json.Unmarshal(out, &child); err != nil {
		return errorf("setuid-exec: helper output %q: %v", out, err)
	}
	detail := fmt.Sprintf("helper (owner uid %d inside, mode %o) ran with euid %d caps %s; caller euid %d caps %s",
		st.Uid, st.Mode&0o7777, child.EUID, child.CapEff, self.EUID, self.CapEff)
	if child.EUID != self.EUID || child.CapEff != self.CapEff || child.CapPrm != self.CapPrm {
		return Observation{Outcome: Succeeded, Detail: detail}
	}
	return Observation{Outcome: Unchanged, Detail: detail}
}
