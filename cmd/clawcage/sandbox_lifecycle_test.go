package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/clawcage/clawcage/internal/config"
	"github.com/clawcage/clawcage/internal/stack/createcmd"
	"github.com/clawcage/clawcage/internal/supervisor"
)

func TestBuildDefinition(t *testing.T) {
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(polFile, []byte("presets: [pypi]\nnetwork:\n  - {name: gh, hosts: [api.github.com], ports: [443]}\n"), 0o600)
	badPol := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badPol, []byte("network:\n  - {name: r, hosts: [x.example.com], ports: [70000]}\n"), 0o600)

	tests := []struct {
		name    string
		command []string
		o       sandboxCreateOptions
		wantErr string
		check   func(t *testing.T, sb config.Sandbox)
	}{
		{"command with quotes and spaces", []string{"/bin/sh", "-c", `echo "a b"; exit 3`}, sandboxCreateOptions{}, "", func(t *testing.T, sb config.Sandbox) {
			if !reflect.DeepEqual(sb.Command, []string{"/bin/sh", "-c", `echo "a b"; exit 3`}) {
				t.Errorf("command %q", sb.Command)
			}
		}},
		{"env and restart", nil, sandboxCreateOptions{env: []string{"A=1", "B=x=y"}, restart: "on-failure"}, "", func(t *testing.T, sb config.Sandbox) {
			if sb.Env["A"] != "1" || sb.Env["B"] != "x=y" || sb.Restart != "on-failure" {
				t.Errorf("env %v restart %q", sb.Env, sb.Restart)
			}
		}},
		{"presets added to the policy file's", nil, sandboxCreateOptions{policyFile: polFile, presets: []string{"telegram"}}, "", func(t *testing.T, sb config.Sandbox) {
			if !reflect.DeepEqual(sb.Policy.Presets, []string{"pypi", "telegram"}) || len(sb.Policy.Network) != 1 {
				t.Errorf("policy %+v", sb.Policy)
			}
		}},
		{"bad policy names its file and line", nil, sandboxCreateOptions{policyFile: badPol}, "bad.yaml:2", nil},
		{"env without value", nil, sandboxCreateOptions{env: []string{"A"}}, "want KEY=VALUE", nil},
		{"env twice", nil, sandboxCreateOptions{env: []string{"A=1", "A=2"}}, "given twice", nil},
		{"relative command", []string{"agent"}, sandboxCreateOptions{}, "must be an absolute path", nil},
		{"bad restart policy", nil, sandboxCreateOptions{restart: "sometimes"}, "not a restart policy", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, err := buildDefinition("sb", tt.command, &tt.o)
			var cfg *config.Config
			if err == nil {
				cfg, err = config.Parse(def, "def")
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q\n%s", err, tt.wantErr, def)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, def)
			}
			if len(cfg.Sandboxes) != 1 {
				t.Fatalf("sandboxes %v", cfg.Sandboxes)
			}
			tt.check(t, cfg.Sandboxes["sb"])
		})
	}
}

// TestSandboxCreateFastPath checks that createcmd's fast path (which runs
// `sandbox create` before main, see package createcmd) knows exactly this
// command's flags and parses every command line it accepts as cobra does.
func TestSandboxCreateFastPath(t *testing.T) {
	if createcmd.DefaultStateDir != defaultStateDir || createcmd.ControlSocketName != supervisor.ControlSocketName {
		t.Fatalf("createcmd's defaults %q, %q differ from %q, %q", createcmd.DefaultStateDir, createcmd.ControlSocketName, defaultStateDir, supervisor.ControlSocketName)
	}
	create, _, err := newRootCmd().Find([]string{"sandbox", "create"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[createcmd.FlagKind]string{createcmd.String: "string", createcmd.StringArray: "stringArray"}
	seen := map[string]bool{}
	check := func(f *pflag.Flag) {
		if f.Name == "help" || seen[f.Name] {
			return
		}
		seen[f.Name] = true
		k, ok := createcmd.Flags[f.Name]
		if !ok || kinds[k] != f.Value.Type() || f.Shorthand != "" {
			t.Errorf("flag --%s (%s, shorthand %q): createcmd.Flags has %v, %v", f.Name, f.Value.Type(), f.Shorthand, kinds[k], ok)
		}
	}
	create.LocalFlags().VisitAll(check)
	create.InheritedFlags().VisitAll(check)
	if len(seen) != len(createcmd.Flags) {
		t.Errorf("cobra has flags %v, createcmd.Flags %v", seen, createcmd.Flags)
	}

	for _, args := range [][]string{
		{"sb"},
		{"sb", "--", "/bin/sh", "-c", "x"},
		{"--preset", "pypi", "sb", "--env=A=1,2", "--env", "B=", "--preset=npm", "--restart", "never", "--state=/x", "--state", "/y", "/bin/true", "a"},
		{"sb", "--restart", "--env", "-"},
		{"sb", "--state", "/s", "--"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			a, ok := createcmd.ParseArgs(args)
			if !ok {
				t.Fatalf("createcmd.ParseArgs refused %q", args)
			}
			root := newRootCmd()
			cmd, _, _ := root.Find([]string{"sandbox", "create"})
			if err := cmd.ParseFlags(args); err != nil {
				t.Fatalf("cobra: %v", err)
			}
			if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
				t.Fatalf("cobra: %v", err)
			}
			f := cmd.Flags()
			pos := f.Args()
			if n := cmd.ArgsLenAtDash(); n >= 0 && n != 1 {
				t.Fatalf("cobra refuses the dash at %d", n)
			}
			want := createcmd.Args{Name: pos[0], Command: pos[1:]}
			want.Presets, _ = f.GetStringArray("preset")
			want.Env, _ = f.GetStringArray("env")
			want.Restart, _ = f.GetString("restart")
			want.StateDir, _ = f.GetString("state")
			if len(want.Command) == 0 {
				want.Command = nil
			}
			if len(want.Presets) == 0 {
				want.Presets = nil
			}
			if len(want.Env) == 0 {
				want.Env = nil
			}
			if !reflect.DeepEqual(a, want) {
				t.Errorf("fast path: %+v; cobra: %+v", a, want)
			}
		})
	}
}

// TestSandboxCreateSameAsFastPath runs the cobra command and the fast path
// against the same stand-in supervisor answers and checks that they send the
// same request, print the same and exit with the same status.
func TestSandboxCreateSameAsFastPath(t *testing.T) {
	answers := []struct{ name, raw string }{
		{"created", "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{\"name\":\"sb\",\"status\":{\"name\":\"sandbox/sb\",\"state\":\"running\"}}\n"},
		{"created, escaped name", "HTTP/1.1 201 Created\r\nContent-Length: 21\r\n\r\n{\"name\":\"s\\u001b[2J\"}"},
		{"validation errors", "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n26\r\n{\"error\":\"sb:3: a\\nsb:4: b\\u001b[1m\"}\n\r\n0\r\n\r\n"},
		{"bad chunk size", "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n\r\n0\r\n\r\n"},
		{"conflict", "HTTP/1.1 409 Conflict\r\n\r\n{\"error\":\"sandbox sb already exists\"}"},
		{"no JSON", "HTTP/1.1 503 Service Unavailable\r\n\r\nbusy"},
		{"closed", ""},
		{"truncated", "HTTP/1.1 201 Created\r\nContent-Length: 99\r\n\r\n{\"na"},
	}
	args := []string{"sb", "--env", "A=1", "--preset", "pypi", "--restart", "never", "--", "/bin/sh", "-c", "echo \"hi\"\n"}
	for _, ans := range answers {
		t.Run(ans.name, func(t *testing.T) {
			state := t.TempDir()
			ln, err := net.Listen("unix", supervisor.ControlSocketPath(state))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			reqs := make(chan string, 4)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					req, err := http.ReadRequest(bufio.NewReader(c))
					if err == nil {
						b, _ := io.ReadAll(req.Body)
						reqs <- req.Method + " " + req.URL.Path + " " + string(b)
						io.WriteString(c, ans.raw)
					}
					c.Close()
				}
			}()
			full := append([]string{"--state", state}, args...)

			root := newRootCmd()
			var cout, cerr strings.Builder
			root.SetOut(&cout)
			root.SetErr(&cerr)
			root.SetArgs(append([]string{"sandbox", "create"}, full...))
			ccode := 0
			if err := root.Execute(); err != nil {
				fmt.Fprintln(&cerr, "clawcage:", err) // as main does
				ccode = 1
			}
			creq := receive(t, reqs, cerr.String())

			a, ok := createcmd.ParseArgs(full)
			if !ok {
				t.Fatalf("fast path refused %q", full)
			}
			var fout, ferr strings.Builder
			fcode, done := createcmd.Main(a, &fout, &ferr)
			if !done {
				t.Fatal("fast path left it to cobra")
			}
			freq := receive(t, reqs, ferr.String())
			if creq != freq {
				t.Errorf("requests differ:\ncobra %q\nfast  %q", creq, freq)
			}
			if ccode != fcode || cout.String() != fout.String() || cerr.String() != ferr.String() {
				t.Errorf("cobra: %d %q %q\nfast:  %d %q %q", ccode, cout.String(), cerr.String(), fcode, fout.String(), ferr.String())
			}
		})
	}
}

// receive returns the request the stand-in supervisor got, or fails.
func receive(t *testing.T, reqs <-chan string, stderr string) string {
	t.Helper()
	select {
	case r := <-reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("no request reached the stand-in supervisor (stderr %q)", stderr)
		return ""
	}
}
