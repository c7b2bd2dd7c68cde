package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/egress/approvals"
	"github.com/clawcage/clawcage/internal/egress/engine"
	"github.com/clawcage/clawcage/internal/hostport"
	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/policy"
)

func newPolicyCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show and change sandboxes' network policies; review denied attempts",
	}
	client := func() *engine.Client { return engine.NewClient(filepath.Join(g.stateDir, "policy")) }
	var showJSON bool
	show := &cobra.Command{
		Use:   "show SANDBOX",
		Short: "Show a sandbox's effective policy (configured rules, presets, grants)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := client().Show(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if showJSON {
				return writeJSONOut(cmd, v)
			}
			engine.FormatShow(cmd.OutOrStdout(), v)
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	presets := &cobra.Command{
		Use:   "presets",
		Short: "List the embedded presets and what each allows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			for _, p := range policy.Presets() {
				fmt.Fprintf(w, "%s: %s\n", p.Name, p.Description)
				for _, r := range p.Rules {
					line := engine.FormatRule(r.Rule)
					if r.FromParam != "" {
						line += " (hosts from parameter " + r.FromParam + ")"
					}
					fmt.Fprintf(w, "  %s\n", line)
				}
				for _, pp := range p.Params {
					fmt.Fprintf(w, "  parameter %s: %s (from %s)\n", pp.Name, pp.Description, pp.Discovery)
				}
			}
			return nil
		},
	}
	add := &cobra.Command{
		Use:   "add SANDBOX PRESET",
		Short: "Add an embedded preset to a sandbox's policy (persistent)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			gr, err := client().AddPreset(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added preset %s to sandbox %s (grant %s)\n", journal.Escape(gr.Preset), journal.Escape(gr.Sandbox), gr.ID)
			return nil
		},
	}
	var allowFor time.Duration
	allow := &cobra.Command{
		Use:   "allow SANDBOX HOST[:PORT]",
		Short: "Allow a sandbox to reach HOST (port 443 unless given), permanently or --for a duration",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			host, port, err := hostport.Split(args[1], policy.DefaultPort)
			if err != nil {
				return fmt.Errorf("destination: %w", err)
			}
			mode := engine.ModeAlways
			if allowFor != 0 {
				mode = engine.ModeFor
			}
			gr, err := client().Allow(cmd.Context(), args[0], host, port, mode, allowFor)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "allowed sandbox %s to reach %s (%s, grant %s)\n", journal.Escape(gr.Sandbox), engine.DisplayHost(gr.Host, gr.Port), describeMode(gr.Mode, gr.Expires), gr.ID)
			return nil
		},
	}
	allow.Flags().DurationVar(&allowFor, "for", 0, "allow only for this long")
	var pendingJSON bool
	pending := &cobra.Command{
		Use:   "pending",
		Short: "List denied attempts awaiting approval",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := client().Pending(cmd.Context())
			if err != nil {
				return err
			}
			if pendingJSON {
				if q == nil {
					q = []approvals.Entry{}
				}
				return writeJSONOut(cmd, q)
			}
			engine.FormatPending(cmd.OutOrStdout(), q)
			return nil
		},
	}
	pending.Flags().BoolVar(&pendingJSON, "json", false, "print JSON")
	var approveFor time.Duration
	var approveAlways bool
	approve := &cobra.Command{
		Use:   "approve ID [--for DURATION | --always]",
		Short: "Approve a denied destination once (default), for a duration, or always",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode := engine.ModeOnce
			switch {
			case approveFor != 0 && approveAlways:
				return errors.New("--for and --always exclude each other")
			case approveFor < 0:
				return errors.New("--for must be positive")
			case approveFor > 0:
				mode = engine.ModeFor
			case approveAlways:
				mode = engine.ModeAlways
			}
			gr, err := client().Approve(cmd.Context(), args[0], mode, approveFor)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "approved sandbox %s to reach %s (%s, grant %s)\n", journal.Escape(gr.Sandbox), engine.DisplayHost(gr.Host, gr.Port), describeMode(gr.Mode, gr.Expires), gr.ID)
			return nil
		},
	}
	approve.Flags().DurationVar(&approveFor, "for", 0, "approve for this long (e.g. 1h)")
	approve.Flags().BoolVar(&approveAlways, "always", false, "approve permanently")
	reject := &cobra.Command{
		Use:   "reject ID",
		Short: "Reject a denied destination; later attempts only count on it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client().Reject(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rejected %s\n", journal.Escape(args[0]))
			return nil
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke GRANT-ID",
		Short: "Remove a grant and close the live connections it allowed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client().Revoke(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", journal.Escape(args[0]))
			return nil
		},
	}
	cmd.AddCommand(show, presets, add, allow, pending, approve, reject, revoke)
	return cmd
}

func describeMode(mode string, expires time.Time) string {
	switch mode {
	case "until":
		return "until " + expires.Format(time.RFC3339)
	case engine.ModeOnce:
		return "once, unused approval expires " + expires.Format(time.RFC3339)
	}
	return strings.TrimSpace(mode)
}

func writeJSONOut(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
