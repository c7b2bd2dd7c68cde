package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clawcage/clawcage/internal/audit/battery"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// auditReport is the evidence `clawcage audit --json` writes.
type auditReport struct {
	Time     time.Time `json:"time"`
	Kernel   string    `json:"kernel"`
	Machine  string    `json:"machine"`
	Clawcage string    `json:"clawcage"`
	Go       string    `json:"go"`
	Target   string    `json:"target"`
	// Sandbox is the audited live sandbox ("" for one-shot sandboxes).
	Sandbox string           `json:"sandbox,omitempty"`
	Passed  int              `json:"passed"`
	Failed  int              `json:"failed"`
	Skipped int              `json:"skipped"`
	Results []battery.Result `json:"results"`
}

func newAuditCmd(g *globalOptions) *cobra.Command {
	var asJSON, callProvider bool
	cmd := &cobra.Command{
		Use:   "audit [SANDBOX] [--json] [--call-provider]",
		Short: "Run the escape battery from inside a sandbox and show what held",
		Long: `audit attacks the host from inside a sandbox: host secrets, writes outside the
workspace, host processes, ptrace, mounts, namespaces, kernel interfaces,
devices, the network and the resource limits. Each attack's observed outcome
(the kernel's errno or the effect seen from the host) is compared with the
outcome that means the sandbox held.

Without SANDBOX every attack runs in a fresh one-shot sandbox, once as the
default user and once as root inside it. With SANDBOX the attacks run inside
that live sandbox of the stack (--state), entered the way "clawcage sandbox
exec" enters it, as its default user and as root: besides the escape
battery, a key hunt (printenv and /proc/*/environ, config files, every
readable file, the request to inference.local and its answer — streamed out
and compared with the vault's keys by the router's admin socket, so no key
ever enters the sandbox), the provider dialled directly and through the
proxy, an unapproved host (denied, queued, then rejected: never approved),
and the components' admin sockets, state directories and memory. With
--call-provider it also sends a one-token chat completion through the router,
so that an answer that came from the provider is scanned too. A vault with no
key makes the key rows fail as inconclusive: there is nothing to look for.

Exits 1 when any attack was not held. --json writes the evidence (time,
kernel, versions, every observation) for an auditor to keep.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if callProvider && len(args) == 0 {
				return errors.New("audit: --call-provider needs SANDBOX: a one-shot sandbox has no router to call")
			}
			if os.Geteuid() != 0 {
				return errors.New("audit needs root: it starts sandboxes and places a setuid-root helper in the workspace")
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the clawcage binary to use as the probe: %w", err)
			}
			ctx := cmd.Context()
			w, err := battery.NewWorld(ctx, exe)
			if err != nil {
				return fmt.Errorf("set up the attack targets: %w", err)
			}
			defer w.Close()
			rep := auditReport{Time: time.Now().UTC(), Go: runtime.Version(), Clawcage: buildVersion(), Target: "one-shot sandboxes (sandbox run)"}
			var u unix.Utsname
			if unix.Uname(&u) == nil {
				rep.Kernel, rep.Machine = unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:])
			}
			if len(args) == 1 {
				rep.Target = "live sandbox " + args[0] + " (state " + g.stateDir + ")"
				if err := runLiveAudit(ctx, cmd.ErrOrStderr(), w, g.stateDir, args[0], callProvider, &rep); err != nil {
					return fmt.Errorf("audit %s: %w", args[0], err)
				}
			} else {
				tmp, err := os.MkdirTemp("", "clawcage-audit-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				for _, c := range battery.Cases() {
					if c.LiveOnly {
						continue
					}
					for _, mode := range battery.Modes {
						r, err := battery.RunOneShot(ctx, w, c, mode, tmp)
						rep.add(r, err)
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := printAudit(out, rep); err != nil {
				return err
			}
			if rep.Failed > 0 {
				return exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "write the evidence as JSON")
	cmd.Flags().BoolVar(&callProvider, "call-provider", false, "live: also send a one-token chat completion of the default route through the router\n(it costs that token), so an answer that came from the provider is checked too")
	return cmd
}

func (r *auditReport) add(res battery.Result, err error) {
	switch {
	case err != nil:
		res.Failure = "could not run: " + err.Error()
		r.Failed++
	case res.Held:
		r.Passed++
	case strings.HasPrefix(res.Failure, "skipped:"):
		r.Skipped++
	default:
		r.Failed++
	}
	r.Results = append(r.Results, res)
}

func printAudit(w io.Writer, rep auditReport) error {
	fmt.Fprintf(w, "clawcage audit: %s, kernel %s (%s), %s\n\n", rep.Target, rep.Kernel, rep.Machine, rep.Time.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK\tAS\tEXPECTED\tOBSERVED\tVERDICT")
	for _, r := range rep.Results {
		verdict := "held"
		switch {
		case strings.HasPrefix(r.Failure, "skipped:"):
			verdict = "skipped"
		case !r.Held:
			verdict = "FAILED"
		}
		observed := r.Observation.Outcome
		if observed == "" {
			observed = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Case, r.Mode, strings.Join(r.Expected, "|"), observed, verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Results {
		if !r.Held && r.Failure != "" {
			fmt.Fprintf(w, "\n%s (%s): %s\n", r.Case, r.Mode, r.Failure)
		}
	}
	fmt.Fprintf(w, "\n%d held, %d failed, %d skipped\n", rep.Passed, rep.Failed, rep.Skipped)
	return nil
}

// buildVersion is the module version or VCS revision the binary was built
// from.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += " (modified)"
		}
	}
	return v
}
