package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/kernel"
	"github.com/clawcage/clawcage/internal/sandbox"
)

func newDoctorCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the kernel features sandboxes need (Landlock, seccomp, namespaces, cgroups)",
		Long: `doctor probes the running kernel for what clawcage's sandbox enforces with:
Landlock, seccomp filters, user and network namespaces, and the cgroup memory and
pids controllers (v1, v2 or hybrid), Landlock at least at the ABI the sandbox
needs, fs.suid_dumpable not 1 (it would expose PID 1's memory to the sandbox's
user), plus the optional cgroup cpu controller,
nftables and pidfds. Each missing feature comes with how to get it. The exit
status is 1 when sandboxes cannot be enforced on this machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := kernel.Probe(cmd.Context())
			r.RequireLandlockABI(sandbox.MinLandlockABI)
			err := runDoctor(cmd.OutOrStdout(), r, asJSON)
			if !asJSON {
				printWorkspaceQuota(cmd.OutOrStdout(), g.stateDir)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// doctorJSON is the --json output: the probe report and its verdict.
type doctorJSON struct {
	kernel.Report
	Enforceable bool   `json:"enforceable"`
	Problem     string `json:"problem,omitempty"`
}

// runDoctor prints r and returns exitError{1} when sandboxes cannot be enforced.
func runDoctor(w io.Writer, r kernel.Report, asJSON bool) error {
	verdict := r.Enforceable()
	if asJSON {
		out := doctorJSON{Report: r, Enforceable: verdict == nil}
		if verdict != nil {
			out.Problem = verdict.Error()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("doctor: write report: %w", err)
		}
	} else if err := renderDoctor(w, r, verdict); err != nil {
		return fmt.Errorf("doctor: write report: %w", err)
	}
	if verdict != nil {
		return exitError{1}
	}
	return nil
}

// renderDoctor writes the human-readable table: one row per feature, the
// fix on its own line under any feature that is not present.
func renderDoctor(w io.Writer, r kernel.Report, verdict error) error {
	fmt.Fprintf(w, "kernel %s (%s), Landlock ABI %d, cgroups %s\n\n", orUnknown(r.Kernel), orUnknown(r.Arch), r.LandlockABI, orUnknown(r.Cgroups.Version))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tSTATUS\tDETAIL")
	missing := 0
	for _, f := range r.Features {
		status := f.Status()
		if status == "missing" {
			status = "MISSING"
			missing++
		}
		if !f.Required {
			status += " (optional)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, status, f.Detail)
		if !f.OK && f.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", f.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if verdict != nil {
		_, err := fmt.Fprintf(w, "\nsandboxes CANNOT be enforced: %d required feature(s) missing; clawcage will refuse to start them\n", missing)
		return err
	}
	_, err := fmt.Fprintln(w, "\nsandboxes can be enforced")
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
