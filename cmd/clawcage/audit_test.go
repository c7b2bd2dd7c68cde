package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/audit/battery"
)

func TestAuditReportCountsAndTable(t *testing.T) {
	var rep auditReport
	rep.add(battery.Result{Case: "bpf", Mode: "user", Expected: []string{"EPERM"}, Observation: audit.Observation{Outcome: "EPERM"}, Held: true}, nil)
	rep.add(battery.Result{Case: "mount-tmpfs", Mode: "root", Expected: []string{"EPERM"}, Observation: audit.Observation{Outcome: audit.Succeeded},
		Failure: `outcome "succeeded", want EPERM`}, nil)
	rep.add(battery.Result{Case: "fork-bomb", Mode: "live", Failure: "skipped: needs its own limits"}, nil)
	rep.add(battery.Result{Case: "dns", Mode: "user"}, &battery.RunError{Msg: "exit 125"})
	if rep.Passed != 1 || rep.Failed != 2 || rep.Skipped != 1 {
		t.Fatalf("passed/failed/skipped = %d/%d/%d, want 1/2/1", rep.Passed, rep.Failed, rep.Skipped)
	}
	var buf bytes.Buffer
	if err := printAudit(&buf, rep); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"bpf", "held",
		"mount-tmpfs", "FAILED", `mount-tmpfs (root): outcome "succeeded", want EPERM`,
		"skipped",
		"dns (user): could not run: exit 125",
		"1 held, 2 failed, 1 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestAuditRefusesWithoutRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root: the refusal is for other users")
	}
	root := newRootCmd()
	root.SetArgs([]string{"audit"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("err = %v, want a needs-root refusal", err)
	}
}

func TestAuditStackProviders(t *testing.T) {
	for _, tt := range []struct {
		name, cfg, want, wantErr string
	}{
		{"https default port and explicit port", `router:
  providers:
    openai: {kind: openai, base_url: https://api.openai.com/v1}
    local: {kind: openai, base_url: "http://127.0.0.1:11434/v1"}
    plain: {kind: anthropic, base_url: "http://fake.example/"}
`, "local=127.0.0.1:11434 openai=api.openai.com:443 plain=fake.example:80", ""},
		{"no configuration", "", "", "is `clawcage up` running"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			if tt.cfg != "" {
				if err := os.MkdirAll(filepath.Join(state, "router"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(state, "router", "clawcage.yaml"), []byte(tt.cfg), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ps, err := stackProviders(state)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.Name+"="+p.Addr)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("providers %v, want %s", got, tt.want)
			}
		})
	}
}

func TestAuditCallProviderNeedsASandbox(t *testing.T) {
	root := newRootCmd()
	root.SetArgs([]string{"audit", "--call-provider"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "--call-provider needs SANDBOX") {
		t.Errorf("err = %v, want a refusal naming --call-provider", err)
	}
}
