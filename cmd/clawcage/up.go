package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/kernel"
	"github.com/clawcage/clawcage/internal/sandbox"
	"github.com/clawcage/clawcage/internal/sandbox/policyspec"
	"github.com/clawcage/clawcage/internal/stack"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// sandboxRuntime returns the function that starts one of the stack's
// sandboxes with internal/sandbox: joined to the network namespace the stack
// made for it, with /etc/hosts and proxy variables pointing at the listeners
// on its loopback. ctx lives as long as the stack.
func sandboxRuntime(ctx context.Context) func(spec stack.SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error) {
	return func(s stack.SandboxSpec, stdout, stderr io.Writer) (supervisor.Process, error) {
		command := s.Config.Command
		if len(command) == 0 {
			// No agent configured: the sandbox idles, for `sandbox exec` and `sandbox shell`.
			command = []string{"/bin/sleep", "infinity"}
		}
		env := make([]string, 0, len(s.Config.Env))
		for k, v := range s.Config.Env {
			env = append(env, k+"="+v)
		}
		sort.Strings(env)
		pol := s.Config.Policy
		p, err := sandbox.Start(ctx, sandbox.Spec{
			Name:      s.Name,
			Command:   command,
			Workspace: s.Workspace,
			Env:       env,
			Policy:    policyspec.From(&pol),
			Hosts:     []string{"127.0.0.1 inference.local gateway.local"},
			HTTPProxy: "http://" + stack.ProxyAddr,
			NoProxy:   "inference.local,gateway.local",
			NetNSFile: s.NetNS.File(),
			UIDBase:   s.UIDBase,
			Log:       s.Log,
			Cgroup:    s.Cgroup,
		}, sandbox.Stdio{Stdout: stdout, Stderr: stderr})
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

func newUpCmd(g *globalOptions) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "up --config FILE [--state DIR]",
		Short: "Run the stack in the foreground: router, policy engine and sandboxes, supervised",
		Long: `Run the whole stack in the foreground as root: the privacy router and the
policy engine as separate processes under their own uids without capabilities,
one network namespace per sandbox with the router and egress proxy listening on
its loopback, and the sandboxes. Crashed processes are restarted with backoff;
everything is written to one journal (clawcage logs). Stop with Ctrl-C or
clawcage down.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			return stack.Run(cmd.Context(), stack.Options{
				ConfigPath:   cfgPath,
				StateDir:     g.stateDir,
				SandboxStart: sandboxRuntime(cmd.Context()),
				UIDSlots:     sandboxUIDSlots{},
				Log:          slog.NewTextHandler(cmd.ErrOrStderr(), nil),
				KernelProbe: func(ctx context.Context) kernel.Report {
					r := kernel.Probe(ctx)
					r.RequireLandlockABI(sandbox.MinLandlockABI)
					return r
				},
			})
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the stack's clawcage.yaml")
	return cmd
}

// sandboxUIDSlots gives the stack's sandboxes stable uid ranges from
// internal/sandbox's slot allocator.
type sandboxUIDSlots struct{}

func (sandboxUIDSlots) Allocate() (int, uint32, func(), error) {
	r, err := sandbox.AllocateUIDRange()
	if err != nil {
		return 0, 0, nil, err
	}
	return r.Slot, r.Base, r.Release, nil
}

func (sandboxUIDSlots) Claim(slot int) (uint32, func(), error) {
	r, err := sandbox.ClaimUIDRange(slot)
	if err != nil {
		return 0, nil, err
	}
	return r.Base, r.Release, nil
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the running stack's components and sandboxes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			sock := supervisor.ControlSocketPath(g.stateDir)
			st, err := supervisor.FetchStatus(ctx, sock)
			if err != nil {
				return err
			}
			var sbs []stack.SandboxView
			if err := getJSON(ctx, sock, "/v1/sandboxes", &sbs); err != nil {
				return err
			}
			var kv stack.KernelView
			if err := getJSON(ctx, sock, "/v1/kernel", &kv); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(statusJSON{StatusResponse: st, Sandboxes: sbs, Kernel: &kv})
			}
			return printStatus(cmd.OutOrStdout(), st, sbs, &kv)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

// statusJSON is the output of `clawcage status --json`.
type statusJSON struct {
	*supervisor.StatusResponse
	Sandboxes []stack.SandboxView `json:"sandboxes"`
	Kernel    *stack.KernelView   `json:"kernel"`
}

func printStatus(w io.Writer, st *supervisor.StatusResponse, sbs []stack.SandboxView, kv *stack.KernelView) error {
	fmt.Fprintf(w, "supervisor pid %d\n", st.PID)
	if kv != nil {
		printKernel(w, kv)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tUPTIME\tRESTARTS\tLAST EXIT\tHEALTH")
	for _, c := range st.Components {
		up := "-"
		if c.State == "running" {
			up = c.Uptime.Round(time.Second).String()
		}
		last := c.LastExit
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", journal.Escape(c.Name), c.State, c.PID, up, c.Restarts,
			journal.Escape(last), journal.Escape(c.Health))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(sbs) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SANDBOX\tSTATE\tPIDS\tMEMORY\tMEMORY PEAK\tOOM KILLS\tNETNS")
		for _, s := range sbs {
			state, pids, mem, peak, oom := "-", "-", "-", "-", "-"
			if s.Status != nil {
				state = s.Status.State
			}
			if s.Stats != nil {
				pids = fmt.Sprint(s.Stats.Pids)
				mem = fmt.Sprintf("%.1f MiB", float64(s.Stats.MemoryCurrent)/(1<<20))
				peak = fmt.Sprintf("%.1f MiB", float64(s.Stats.MemoryPeak)/(1<<20))
				oom = fmt.Sprint(s.Stats.OOMKills)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", journal.Escape(s.Name), state, pids, mem, peak, oom, journal.Escape(s.NetNS))
		}
		return tw.Flush()
	}
	return nil
}

// printKernel writes one line of kernel facts and one of feature states.
func printKernel(w io.Writer, kv *stack.KernelView) {
	if kv.Pending {
		fmt.Fprintln(w, "kernel features: still being probed (the stack has just started; ask again)")
		return
	}
	ctl := make([]string, 0, len(kv.Cgroups.Controllers))
	for c, v := range kv.Cgroups.Controllers {
		ver, _, _ := strings.Cut(v, ":") // "v1:/sys/fs/cgroup/memory"
		ctl = append(ctl, c+"="+ver)
	}
	sort.Strings(ctl)
	fmt.Fprintf(w, "kernel %s (%s), Landlock ABI %d, cgroups %s [%s]\n", orUnknown(kv.Kernel), orUnknown(kv.Arch),
		kv.LandlockABI, orUnknown(kv.Cgroups.Version), strings.Join(ctl, " "))
	feats := make([]string, 0, len(kv.Features))
	for _, f := range kv.Features {
		feats = append(feats, f.Name+" "+f.Status())
	}
	fmt.Fprintf(w, "features: %s\n", strings.Join(feats, ", "))
	if !kv.Enforceable {
		fmt.Fprintf(w, "SANDBOXES CANNOT BE ENFORCED: %s (clawcage doctor)\n", journal.Escape(kv.Problem))
	}
}

func getJSON(ctx context.Context, sock, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://clawcage"+path, nil)
	if err != nil {
		return err
	}
	resp, err := supervisor.Client(sock).Do(req)
	if err != nil {
		return fmt.Errorf("ask the supervisor at %s: %w", sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: supervisor answered %s: %s", path, resp.Status, journal.Escape(string(b)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(v); err != nil {
		return fmt.Errorf("%s: decode: %w", path, err)
	}
	return nil
}

func newDownCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the running stack",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			sock := supervisor.ControlSocketPath(g.stateDir)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://clawcage/v1/down", nil)
			if err != nil {
				return err
			}
			resp, err := supervisor.Client(sock).Do(req)
			if err != nil {
				return fmt.Errorf("ask the supervisor at %s to stop (is `clawcage up` running?): %w", sock, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				return fmt.Errorf("down: supervisor answered %s", resp.Status)
			}
			// The supervisor removes its socket once everything has stopped.
			for {
				if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
					fmt.Fprintln(cmd.OutOrStdout(), "stack stopped")
					return nil
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("down: the stack did not stop in time: %w", ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	}
}
