package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/clawcage/clawcage/internal/journal"
)

func TestLogsCommand(t *testing.T) {
	state := t.TempDir()
	j, err := journal.Open(journalDir(state), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := journal.NewLineWriter(j, journal.Source{Component: "sandbox", Sandbox: "s1", Stream: journal.StreamStdout})
	w.Write([]byte("\x1b[2Jwiped\nsecond\n"))
	j.Write(journal.Entry{Component: "router", Sandbox: "s2", Stream: journal.StreamEvent, Level: "INFO", Msg: "request", Attrs: map[string]any{"host": "evil\x1b]0;x\x07"}})
	j.Close()

	tests := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
	}{
		{"all, escaped", nil, []string{`sandbox[s1] stdout: \x1b[2Jwiped`, "sandbox[s1] stdout: second", `router[s2] INFO: request host=evil\x1b]0;x\x07`}, nil},
		{"component filter", []string{"--component", "router"}, []string{"router[s2]"}, []string{"sandbox[s1]"}},
		{"sandbox filter", []string{"--sandbox", "s1"}, []string{"second"}, []string{"router"}},
		{"since the future", []string{"--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, nil, []string{"second", "router"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runLogs(t, state, tt.args...)
			if strings.ContainsAny(out, "\x1b\x07") {
				t.Fatalf("output holds a raw control character: %q", out)
			}
			for _, s := range tt.want {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tt.notWant {
				if strings.Contains(out, s) {
					t.Errorf("output has %q:\n%s", s, out)
				}
			}
		})
	}

	out := runLogs(t, state, "--json", "--sandbox", "s2")
	var e journal.Entry
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Component != "router" || e.Msg != "request" {
		t.Errorf("--json output %q: %v", out, err)
	}
}

func TestLogsCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no journal", nil, "no journal at"},
		{"bad since", []string{"--since", "yesterday"}, `--since "yesterday"`},
		{"negative since", []string{"--since", "-5m"}, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newRootCmd()
			root.SetArgs(append([]string{"logs", "--state", t.TempDir()}, tt.args...))
			root.SetOut(new(bytes.Buffer))
			err := root.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func runLogs(t *testing.T, state string, args ...string) string {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(append([]string{"logs", "--state", state}, args...))
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("logs %v: %v", args, err)
	}
	return out.String()
}
