package runcmd

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// built is the clawcage binary, built once for the tests that run it.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

// clawcageBinary builds cmd/clawcage (once) and returns its path.
func clawcageBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the clawcage binary")
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "runcmd-test-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "clawcage")
		built.out, built.err = exec.Command("go", "build", "-o", built.bin, "github.com/clawcage/clawcage/cmd/clawcage").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    Options
		command []string
		ok      bool
	}{
		{"command only", []string{"/bin/true"}, Options{}, []string{"/bin/true"}, true},
		{"flags then --", []string{"--workspace", "/w", "--", "/bin/sh", "-c", "x"}, Options{Workspace: "/w"}, []string{"/bin/sh", "-c", "x"}, true},
		{"flag=value", []string{"--memory=1GiB", "--tmp=8MiB", "--disk=2G", "ls"}, Options{Memory: "1GiB", Tmp: "8MiB", Disk: "2G"}, []string{"ls"}, true},
		{"a policy file is cobra's", []string{"--policy", "p.yaml", "x"}, Options{}, nil, false},
		{"repeated env keeps commas", []string{"--env", "A=1,2", "--env=B=2", "env"}, Options{Env: []string{"A=1,2", "B=2"}}, []string{"env"}, true},
		{"numbers like pflag (base 0)", []string{"--pids", "0x10", "--cpu", "1.5", "x"}, Options{Pids: 16, CPU: 1.5}, []string{"x"}, true},
		{"negative pids parsed, rejected later", []string{"--pids", "-1", "x"}, Options{Pids: -1}, []string{"x"}, true},
		{"bool flag takes no next word", []string{"--root", "false"}, Options{Root: true}, []string{"false"}, true},
		{"bool flag with value", []string{"--root=false", "id"}, Options{}, []string{"id"}, true},
		{"global --state accepted", []string{"--state", "/s", "id"}, Options{}, []string{"id"}, true},
		{"value may start with a dash", []string{"--workspace", "-w", "id"}, Options{Workspace: "-w"}, []string{"id"}, true},
		{"flags after the command belong to it", []string{"ls", "--root"}, Options{}, []string{"ls", "--root"}, true},
		{"a lone dash is the command", []string{"-"}, Options{}, []string{"-"}, true},
		{"help is cobra's", []string{"--help"}, Options{}, nil, false},
		{"short help is cobra's", []string{"-h", "x"}, Options{}, nil, false},
		{"unknown flag is cobra's", []string{"--memroy", "1G", "x"}, Options{}, nil, false},
		{"missing value", []string{"--workspace"}, Options{}, nil, false},
		{"malformed number", []string{"--pids", "many", "x"}, Options{}, nil, false},
		{"malformed bool", []string{"--root=maybe", "x"}, Options{}, nil, false},
		{"no command", []string{"--root"}, Options{}, nil, false},
		{"no command after --", []string{"--"}, Options{}, nil, false},
		{"nothing", nil, Options{}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, command, ok := ParseArgs(tc.args)
			if ok != tc.ok || !reflect.DeepEqual(o, tc.want) || !reflect.DeepEqual(command, tc.command) {
				t.Errorf("ParseArgs(%q) = %+v, %q, %v; want %+v, %q, %v", tc.args, o, command, ok, tc.want, tc.command, tc.ok)
			}
		})
	}
}

func TestParseSizeFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"", 0, ""},
		{"512MiB", 512 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"1048576", 1 << 20, ""},
		{"12Q", 0, "is not a size"},
		{"-5MiB", 0, "negative"},
		{"0", 0, "must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize("--memory", tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "--memory") {
					t.Fatalf("err %v, want %q naming the flag", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestFastPathInitOrder builds clawcage and checks, with
// GODEBUG=inittrace=1, that `sandbox run` (this package's init) and the
// sandbox's PID 1 (package pid1's init) take over before the packages a
// sandbox does not need are initialized. The runtime prints a package when
// its initialization is done, so the package that takes over is never
// printed, and what it imports is. Start-up time itself is measured by
// bench/sandbox, never asserted.
func TestFastPathInitOrder(t *testing.T) {
	bin := clawcageBinary(t)
	const module = "github.com/clawcage/clawcage/"
	// Packages that must not be initialized on these paths: those of the
	// rest of the binary that cost the most, and net and net/netip (see
	// the package comment).
	heavy := []string{
		"net",
		"net/netip",
		"go.yaml.in/yaml/v3",
		"github.com/prometheus/client_golang/prometheus",
		"modernc.org/libc",
		"modernc.org/sqlite",
		module + "internal/policy",
		"github.com/spf13/cobra",
		module + "internal/router",
		module + "internal/stack",
		module + "internal/egress",
	}
	tests := []struct {
		name     string
		args     []string
		takeover string // the package whose init takes over
		imported string // a package it imports (one with initialization work: the others are not printed)
	}{
		// As root the sandbox runs, otherwise it is refused; either way
		// from the init function.
		{"sandbox run", []string{"sandbox", "run", "--workspace", t.TempDir(), "--", "/bin/true"}, module + "internal/sandbox/runcmd", "golang.org/x/sys/unix"},
		// Not PID 1: it refuses, from its init function.
		{"sandbox-init", []string{"sandbox-init"}, module + "internal/sandbox/pid1", "github.com/landlock-lsm/go-landlock/landlock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
			out, _ := cmd.CombinedOutput()
			inited := map[string]bool{}
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) > 2 && f[0] == "init" {
					inited[f[1]] = true
				}
			}
			if !inited[tc.imported] || inited[tc.takeover] || inited[module+"cmd/clawcage"] {
				t.Fatalf("%s did not take over after initializing %s:\n%s", tc.takeover, tc.imported, out)
			}
			for _, h := range heavy {
				if inited[h] {
					t.Errorf("%s was initialized before %s took over (%d packages)", h, tc.takeover, len(inited))
				}
			}
		})
	}
}

// TestSignalsForwarded runs `clawcage sandbox run` (the fast path) and
// checks that SIGTERM sent to it reaches the sandboxed command, whose exit
// status becomes clawcage's.
func TestSignalsForwarded(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs a sandbox: needs root")
	}
	bin := clawcageBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "sandbox", "run", "--", "/bin/sh", "-c",
		`trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Errorf("clawcage exited with %v, want status 42 (the command's SIGTERM trap)", err)
	}
}
