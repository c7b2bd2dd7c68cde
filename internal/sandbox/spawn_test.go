package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spawnProbe prints what PID 1 sees at execve: credentials inside,
// environment, directory, descriptors (fd 3 is a pipe), stdin; then it
// waits for a line on fd 3 while the test looks at it from the host.
const spawnProbe = `echo "ids $(id -u) $(id -g) groups [$(id -G)]"
env | sort
pwd
ls /proc/self/fd | sort -n | tr '\n' ' '; echo
echo to-stderr >&2
cat
read x <&3
echo "got $x"`

// initCmd is PID 1's command as run.go builds it, running script with
// /bin/sh, fd 3 reading extra.
func initCmd(t testing.TB, script string, extra *os.File, stdin *strings.Reader, out *bytes.Buffer) *exec.Cmd {
	return &exec.Cmd{
		Path:       "/bin/sh",
		Args:       []string{"sh", "-c", script},
		Env:        []string{"GOMAXPROCS=2", "A=b c"},
		Dir:        "/",
		Stdin:      stdin,
		Stdout:     out,
		Stderr:     out,
		ExtraFiles: []*os.File{extra},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:                 unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0x40000000 + 4095*UIDRangeSize, Size: UIDRangeSize}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0x40000000 + 4095*UIDRangeSize, Size: UIDRangeSize}},
			GidMappingsEnableSetgroups: true,
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}},
			Setsid:                     true,
			Pdeathsig:                  syscall.SIGKILL,
		},
	}
}

// TestSpawnLikeExecCmd starts the same PID 1 command with the vfork
// spawner and with exec.Cmd.Start: everything the child observes, and
// what the host sees of it, must be the same, and be what run.go asks for.
func TestSpawnLikeExecCmd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("user namespaces with a mapped uid range need root")
	}
	if !haveSpawn {
		t.Skip("built without cgo: PID 1 is started by exec.Cmd")
	}
	const host = "1342111744" // 0x40000000 + 4095*65536, initCmd's map
	// A descriptor the caller holds without close-on-exec (as one its
	// own parent leaked to it) reaches exec.Cmd's child, not the
	// spawned one.
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	leak, err := unix.FcntlInt(devnull.Fd(), unix.F_DUPFD, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(leak)
	leaked := " " + strconv.Itoa(leak) + " "
	run := func(name string, start func(*exec.Cmd) (*initProcess, error)) (inside, outside string) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		var out bytes.Buffer
		cmd := initCmd(t, spawnProbe, r, strings.NewReader("from-stdin\n"), &out)
		if !spawnable(cmd) {
			t.Fatalf("run.go's PID 1 command is not spawnable: %+v", cmd.SysProcAttr)
		}
		p, err := start(cmd)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		outside = hostView(t, p.Process.Pid)
		w.WriteString("go\n")
		w.Close()
		if err := p.Wait(); err != nil {
			t.Fatalf("%s: wait: %v; output %q", name, err, out.String())
		}
		if p.ProcessState == nil || p.ProcessState.ExitCode() != 0 {
			t.Fatalf("%s: state %v", name, p.ProcessState)
		}
		return out.String(), outside
	}
	spawnedIn, spawnedOut := run("spawn", spawnInit)
	startedIn, startedOut := run("exec.Cmd", func(cmd *exec.Cmd) (*initProcess, error) {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return &initProcess{Process: cmd.Process, cmd: cmd}, nil
	})
	if !strings.Contains(startedIn, leaked) {
		t.Fatalf("exec.Cmd's child lacks the leaked descriptor%s:\n%s", leaked, startedIn)
	}
	fdLine := func(out string) (fds, rest string) {
		lines := strings.Split(out, "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "0 1 2 ") {
				return l, strings.Join(append(lines[:i:i], lines[i+1:]...), "\n")
			}
		}
		t.Fatalf("no descriptor list in %q", out)
		return "", ""
	}
	spawnedFDs, spawnedRest := fdLine(spawnedIn)
	_, startedRest := fdLine(startedIn)
	if spawnedRest != startedRest || spawnedOut != startedOut {
		t.Errorf("spawned PID 1 sees\n%s%s\nexec.Cmd's sees\n%s%s", spawnedIn, spawnedOut, startedIn, startedOut)
	}
	for _, fd := range strings.Fields(spawnedFDs) {
		if n, _ := strconv.Atoi(fd); n >= 100 {
			t.Errorf("the spawned child got descriptor %d of the caller (not close-on-exec): %s", n, spawnedFDs)
		}
	}
	for _, want := range []string{
		"ids 0 0 groups [0]\n",
		"A=b c\nGOMAXPROCS=2\nPWD=/\n/\n",
		"\n0 1 2 3 ", // 0-3, then what sh and ls add
		"to-stderr\nfrom-stdin\ngot go\n",
	} {
		if !strings.Contains(spawnedIn, want) {
			t.Errorf("spawned PID 1's output lacks %q:\n%s", want, spawnedIn)
		}
	}
	want := "uid " + host + " " + host + " " + host + " " + host + "\ngid " + host + " " + host + " " + host + " " + host +
		"\ngroups []\nnspid 1\nsession leader true\nsigblk 0000000000000000\ncwd /\n"
	if spawnedOut != want {
		t.Errorf("host's view of the spawned PID 1:\n%s\nwant\n%s", spawnedOut, want)
	}
}

// hostView describes process pid as the host sees it: host uids and gids,
// groups, PID in its namespace, whether it leads its session, blocked
// signals, directory.
func hostView(t *testing.T, pid int) string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	status, err := os.ReadFile(dir + "status")
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) []string {
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, name+":"); ok {
				return strings.Fields(v)
			}
		}
		t.Fatalf("%sstatus has no %s", dir, name)
		return nil
	}
	stat, err := os.ReadFile(dir + "stat")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	session := strings.Fields(rest)[6-3]
	cwd, err := os.Readlink(dir + "cwd")
	if err != nil {
		t.Fatal(err)
	}
	nspid := field("NSpid")
	return fmt.Sprintf("uid %s\ngid %s\ngroups %v\nnspid %s\nsession leader %v\nsigblk %s\ncwd %s\n",
		strings.Join(field("Uid"), " "), strings.Join(field("Gid"), " "), field("Groups"), nspid[len(nspid)-1],
		session == strconv.Itoa(pid), field("SigBlk")[0], cwd)
}

// TestSpawnable checks which commands the spawner takes: run.go's PID 1
// command, and nothing that asks for what it does not do (exec.Cmd starts
// those).
func TestSpawnable(t *testing.T) {
	if !haveSpawn {
		t.Skip("built without cgo: PID 1 is started by exec.Cmd")
	}
	tests := []struct {
		name string
		edit func(*exec.Cmd)
		want bool
	}{
		{"run.go's PID 1 command", func(*exec.Cmd) {}, true},
		{"no user namespace", func(c *exec.Cmd) { c.SysProcAttr.Cloneflags &^= unix.CLONE_NEWUSER }, false},
		{"the caller's environment (nil Env)", func(c *exec.Cmd) { c.Env = nil }, false},
		{"the caller's directory (empty Dir)", func(c *exec.Cmd) { c.Dir = "" }, false},
		{"supplementary groups", func(c *exec.Cmd) { c.SysProcAttr.Credential.Groups = []uint32{5} }, false},
		{"an attribute it does not implement (Setpgid)", func(c *exec.Cmd) { c.SysProcAttr.Setpgid = true }, false},
		{"no credentials", func(c *exec.Cmd) { c.SysProcAttr.Credential = nil }, false},
		{"no arguments (exec.Cmd: argv[0] = Path)", func(c *exec.Cmd) { c.Args = nil }, false},
		{"relative path (exec.Cmd looked it up)", func(c *exec.Cmd) { c.Path = "sh" }, false},
		{"a WaitDelay", func(c *exec.Cmd) { c.WaitDelay = time.Second }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := initCmd(t, "true", nil, nil, nil)
			tc.edit(cmd)
			if got := spawnable(cmd); got != tc.want {
				t.Errorf("spawnable = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSpawnFailures checks the spawner's failures are errors naming the
// cause, and leave no child behind.
func TestSpawnFailures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("user namespaces with a mapped uid range need root")
	}
	if !haveSpawn {
		t.Skip("built without cgo: PID 1 is started by exec.Cmd")
	}
	tests := []struct {
		name  string
		edit  func(*exec.Cmd)
		want  string
		errno syscall.Errno
	}{
		{"missing binary", func(c *exec.Cmd) { c.Path = "/nonexistent/init" }, "fork/exec execve /nonexistent/init", syscall.ENOENT},
		{"missing directory", func(c *exec.Cmd) { c.Dir = "/nonexistent" }, "fork/exec chdir /bin/sh", syscall.ENOENT},
		{"id map the kernel refuses", func(c *exec.Cmd) { c.SysProcAttr.UidMappings[0].Size = 0 }, "write id maps", syscall.EINVAL},
		{"host range beyond the uids", func(c *exec.Cmd) { c.SysProcAttr.UidMappings[0].HostID = 4294967200 }, "write id maps", syscall.EINVAL},
		{"NUL in an argument", func(c *exec.Cmd) { c.Args = append(c.Args, "a\x00b") }, "fork/exec /bin/sh", syscall.EINVAL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			w.Close()
			defer r.Close()
			var out bytes.Buffer
			cmd := initCmd(t, "true", r, strings.NewReader(""), &out)
			tc.edit(cmd)
			type result struct {
				p   *initProcess
				err error
			}
			done := make(chan result, 1)
			go func() { p, err := spawnInit(cmd); done <- result{p, err} }()
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("spawnInit has not returned after 10 s")
			}
			p, err := res.p, res.err
			if err == nil {
				p.Process.Kill()
				p.Wait()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.errno) {
				t.Errorf("err %q, want %q and %v", err, tc.want, tc.errno)
			}
			// The child was reaped: no child of ours is left.
			if _, err := unix.Wait4(-1, nil, unix.WNOHANG, nil); !errors.Is(err, unix.ECHILD) {
				t.Errorf("a child is left after the failure (wait4: %v)", err)
			}
		})
	}
}

// BenchmarkStartInit compares starting PID 1's command (here /bin/true,
// with run.go's namespaces and id maps) with the vfork spawner and with
// exec.Cmd.Start, from this test process: wall time to the start and the
// caller's CPU time and page faults per start (the copy-on-write cost is
// the caller's).
func BenchmarkStartInit(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("user namespaces with a mapped uid range need root")
	}
	for _, m := range []struct {
		name  string
		start func(*exec.Cmd) (*initProcess, error)
	}{
		{"vfork", spawnInit},
		{"exec.Cmd", func(cmd *exec.Cmd) (*initProcess, error) {
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return &initProcess{Process: cmd.Process, cmd: cmd}, nil
		}},
	} {
		b.Run(m.name, func(b *testing.B) {
			if m.name == "vfork" && !haveSpawn {
				b.Skip("built without cgo")
			}
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			w.Close()
			defer r.Close()
			var before, after unix.Rusage
			unix.Getrusage(unix.RUSAGE_SELF, &before)
			var startTime time.Duration
			for b.Loop() {
				cmd := initCmd(nil, "true", r, nil, nil)
				cmd.Path, cmd.Args, cmd.Stdin, cmd.Stdout, cmd.Stderr = "/bin/true", []string{"true"}, nil, nil, nil
				t0 := time.Now()
				p, err := m.start(cmd)
				if err != nil {
					b.Fatal(err)
				}
				startTime += time.Since(t0)
				p.Wait()
			}
			unix.Getrusage(unix.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / time.Duration(b.N)
			b.ReportMetric(float64(startTime.Microseconds())/float64(b.N), "start-µs/op")
			b.ReportMetric(float64(cpu.Microseconds()), "caller-cpu-µs/op")
			b.ReportMetric(float64(after.Minflt-before.Minflt)/float64(b.N), "faults/op")
		})
	}
}

// TestStartUsesSpawner checks Start's PID 1 command is one the spawner
// takes (an attribute added to it without the spawner learning it would
// silently fall back to exec.Cmd's copy of the caller).
func TestStartUsesSpawner(t *testing.T) {
	needSandbox(t)
	if !haveSpawn {
		t.Skip("built without cgo: PID 1 is started by exec.Cmd")
	}
	p, err := Start(context.Background(), Spec{Command: []string{"/bin/true"}}, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	byExecCmd := p.cmd.cmd != nil
	if code, err := p.Wait(); err != nil || code != 0 {
		t.Fatalf("code %d, err %v", code, err)
	}
	if byExecCmd {
		t.Error("PID 1 was started by exec.Cmd, not the vfork spawner: spawnable refused run.go's command")
	}
}

// TestSuidDumpable checks the fs.suid_dumpable values the sandbox refuses
// (1: set-id processes stay dumpable) and takes.
func TestSuidDumpable(t *testing.T) {
	tests := []struct {
		value   string
		wantErr string
	}{
		{"0\n", ""},
		{"2\n", ""},
		{"1\n", "fs.suid_dumpable 0 or 2 unavailable: fs.suid_dumpable is 1 (debug)"},
		{"7\n", `fs.suid_dumpable: unexpected value "7"`},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSpace(tc.value), func(t *testing.T) {
			err := suidDumpableErr([]byte(tc.value))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			var ue *UnavailableError
			if tc.value == "1\n" && (!errors.As(err, &ue) || !strings.Contains(ue.Fix, "sysctl -w fs.suid_dumpable=0")) {
				t.Errorf("err %#v, want an *UnavailableError with the sysctl fix", err)
			}
		})
	}
	if err := CheckSuidDumpable(); err != nil {
		t.Logf("this host: %v", err)
	}
}
