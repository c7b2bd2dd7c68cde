package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/config"
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
