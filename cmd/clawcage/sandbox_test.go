package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/clawcage/clawcage/internal/sandbox/runcmd"
)

// TestSandboxRunRejectsBadInput checks the errors `sandbox run` gives before
// any sandbox is created.
func TestSandboxRunRejectsBadInput(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("resources:\n  memory: lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no command", []string{"sandbox", "run"}, "requires at least 1 arg"},
		{"bad memory size", []string{"sandbox", "run", "--memory", "12Q", "--", "/bin/true"}, `--memory: "12Q" is not a size`},
		{"bad tmp size", []string{"sandbox", "run", "--tmp", "x", "--", "/bin/true"}, `--tmp: "x" is not a size`},
		{"bad disk size", []string{"sandbox", "run", "--disk", "lots", "--", "/bin/true"}, `--disk: "lots" is not a size`},
		{"negative pids", []string{"sandbox", "run", "--pids", "-1", "--", "/bin/true"}, "--pids -1: must not be negative"},
		{"policy with a bad field names file and line", []string{"sandbox", "run", "--policy", bad, "--", "/bin/true"}, bad + ":2: resources.memory"},
		{"missing policy file", []string{"sandbox", "run", "--policy", bad + ".missing", "--", "/bin/true"}, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootCmd()
			root.SetArgs(tc.args)
			root.SetOut(new(strings.Builder))
			root.SetErr(new(strings.Builder))
			err := root.Execute()
			var ec exitCoder
			if err == nil || errors.As(err, &ec) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestSandboxRunFastPath checks that runcmd's fast path (which runs `sandbox
// run` before main, see package runcmd) knows exactly this command's flags
// and parses every command line it accepts as cobra does.
func TestSandboxRunFastPath(t *testing.T) {
	run, _, err := newRootCmd().Find([]string{"sandbox", "run"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[runcmd.FlagKind]string{runcmd.String: "string", runcmd.StringArray: "stringArray",
		runcmd.Int64: "int64", runcmd.Float64: "float64", runcmd.Bool: "bool"}
	seen := map[string]bool{}
	check := func(f *pflag.Flag) {
		if f.Name == "help" || seen[f.Name] {
			return
		}
		seen[f.Name] = true
		k, ok := runcmd.Flags[f.Name]
		if !ok || kinds[k] != f.Value.Type() || f.Shorthand != "" {
			t.Errorf("flag --%s (%s, shorthand %q): runcmd.Flags has %v, %v", f.Name, f.Value.Type(), f.Shorthand, kinds[k], ok)
		}
	}
	run.LocalFlags().VisitAll(check)
	run.InheritedFlags().VisitAll(check)
	if len(seen) != len(runcmd.Flags) {
		t.Errorf("cobra has flags %v, runcmd.Flags %v", seen, runcmd.Flags)
	}

	for _, args := range [][]string{
		{"/bin/true"},
		{"--workspace", "/w", "--", "/bin/sh", "-c", "x"},
		{"--memory=1GiB", "--tmp=8MiB", "--disk", "1GiB", "--state", "/s", "ls"},
		{"--env", "A=1,2", "--env=B=2", "--pids", "0x10", "--cpu", "1.5", "env"},
		{"--root", "false"},
		{"--root=false", "id"},
		{"--workspace", "-w", "ls", "--root"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			o, command, ok := runcmd.ParseArgs(args)
			if !ok {
				t.Fatalf("runcmd.ParseArgs refused %q", args)
			}
			cmd, _, _ := newRootCmd().Find([]string{"sandbox", "run"})
			if err := cmd.ParseFlags(args); err != nil {
				t.Fatalf("cobra: %v", err)
			}
			f := cmd.Flags()
			var want runcmd.Options
			want.Workspace, _ = f.GetString("workspace")
			want.Policy, _ = f.GetString("policy")
			want.Env, _ = f.GetStringArray("env")
			want.Memory, _ = f.GetString("memory")
			want.Pids, _ = f.GetInt64("pids")
			want.CPU, _ = f.GetFloat64("cpu")
			want.Tmp, _ = f.GetString("tmp")
			want.Disk, _ = f.GetString("disk")
			want.Root, _ = f.GetBool("root")
			if len(want.Env) == 0 {
				want.Env = nil
			}
			if !reflect.DeepEqual(o, want) || !reflect.DeepEqual(command, f.Args()) {
				t.Errorf("fast path: %+v %q; cobra: %+v %q", o, command, want, f.Args())
			}
		})
	}
}
