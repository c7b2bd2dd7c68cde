package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/spf13/cobra"
)

// newAuditProbeCmd is the hidden command that runs escape probes inside a
// sandbox: the clawcage binary copied into a workspace is the probe.
func newAuditProbeCmd(*globalOptions) *cobra.Command {
	var asJSON, unsandboxed bool
	cmd := &cobra.Command{
		Use:    "audit-probe [--json] ATTACK|all|list|collect [ARGS...]",
		Short:  "Run one escape probe (or all) from inside a sandbox",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			audit.RunHelperIfRequested() // exits when this process is a probe's helper child
			out := cmd.OutOrStdout()
			if args[0] == "list" {
				return listProbes(out)
			}
			if !unsandboxed && inInitialUserNamespace() {
				return errors.New("audit-probe: refusing to run: this is the host's initial user namespace, not a sandbox, " +
					"and the probes act on the system they run on; pass --unsandboxed to do it anyway")
			}
			if args[0] == "collect" {
				o, err := audit.ParseCollectArgs(args[1:])
				if err != nil {
					return err
				}
				return audit.Collect(cmd.Context(), o, out)
			}
			var obs []audit.Observation
			if args[0] == "all" {
				if len(args) > 1 {
					return errors.New("audit-probe: all takes no arguments")
				}
				for _, p := range audit.Probes() {
					if requiresArgs(p) {
						continue
					}
					obs = append(obs, audit.Run(cmd.Context(), p.Name, nil))
				}
			} else {
				if _, ok := audit.Lookup(args[0]); !ok {
					return fmt.Errorf("audit-probe: no probe named %q (try: audit-probe list)", args[0])
				}
				obs = append(obs, audit.Run(cmd.Context(), args[0], args[1:]))
			}
			if err := printObservations(out, obs, asJSON); err != nil {
				return err
			}
			for _, o := range obs {
				if o.Outcome == audit.Error {
					return exitError{code: 3}
				}
			}
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON observation per line")
	cmd.Flags().BoolVar(&unsandboxed, "unsandboxed", false, "run even outside a sandbox (acts on the host!)")
	return cmd
}

// requiresArgs reports whether p has a mandatory argument (its usage does
// not start with an optional "[...]").
func requiresArgs(p audit.Probe) bool {
	return p.Usage != "" && !strings.HasPrefix(p.Usage, "[")
}

func inInitialUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

func listProbes(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROBE\tARGS\tEXPECT\tATTACK")
	for _, p := range audit.Probes() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Usage, strings.Join(p.Expect, "|"), p.Doc)
	}
	return tw.Flush()
}

func printObservations(w io.Writer, obs []audit.Observation, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, o := range obs {
			if err := enc.Encode(o); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK\tOUTCOME\tEXPECTED\tVERDICT\tDETAIL")
	for _, o := range obs {
		p, _ := audit.Lookup(o.Attack)
		verdict := "FAIL"
		if p.Held(o) {
			verdict = "held"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Attack, o.Outcome, strings.Join(p.Expect, "|"), verdict, o.Detail)
	}
	return tw.Flush()
}
