package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/stack"
	"github.com/clawcage/clawcage/internal/stack/createcmd"
	"github.com/clawcage/clawcage/internal/supervisor"
)

// newSandboxLifecycleCmds are the `clawcage sandbox` subcommands that talk to
// a running stack (`clawcage up`) over its control socket.
func newSandboxLifecycleCmds(g *globalOptions) []*cobra.Command {
	return []*cobra.Command{newSandboxCreateCmd(g), newSandboxListCmd(g), newSandboxDeleteCmd(g),
		newSandboxExecCmd(g), newSandboxShellCmd(g)} // sandbox_exec.go
}

type sandboxCreateOptions struct {
	presets    []string
	policyFile string
	env        []string
	restart    string
}

// newSandboxCreateCmd is `clawcage sandbox create`. Package createcmd
// usually does the work from its init function (see its package comment),
// parsing these same flags, which createcmd.Flags lists; this command runs
// when it declines: a --policy file, --help, a malformed command line, an
// error to explain, or a control socket it could not connect to.
func newSandboxCreateCmd(g *globalOptions) *cobra.Command {
	o := &sandboxCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create NAME [--preset P]... [--policy FILE] [--env K=V]... [--restart R] [-- CMD [ARG...]]",
		Short: "Create a sandbox in the running stack (kept across restarts)",
		Long: `Create a sandbox in the running stack: its own network namespace with the
router and egress proxy on its loopback, its workspace at
<state>/sandboxes/NAME/workspace, and CMD as its agent (none: it idles, for
sandbox exec/shell). The definition is kept in <state>/sandboxes/NAME and
re-created at every clawcage up.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, command := args[0], args[1:]
			if n := cmd.ArgsLenAtDash(); n >= 0 && n != 1 {
				return errors.New("usage: clawcage sandbox create NAME [flags] [-- CMD [ARG...]]")
			}
			def, err := buildDefinition(name, command, o)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			var view stack.SandboxView
			if err := controlCall(ctx, g.stateDir, http.MethodPost, "/v1/sandboxes", stack.CreateRequest{Name: name, Definition: string(def)}, &view); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sandbox %s created (workspace %s)\n", journal.Escape(view.Name),
				journal.Escape(g.stateDir+"/sandboxes/"+view.Name+"/workspace"))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.presets, "preset", nil, "network preset to allow (repeatable; see clawcage policy presets)")
	f.StringVar(&o.policyFile, "policy", "", "policy file (network, filesystem, resources)")
	f.StringArrayVar(&o.env, "env", nil, "environment variable K=V for the command (repeatable)")
	f.StringVar(&o.restart, "restart", "", "restart policy of the command: always (default), on-failure or never")
	return cmd
}

// buildDefinition writes the sandbox as a clawcage.yaml fragment; the
// supervisor validates it again (with line numbers in this text). Without a
// policy file it is createcmd.Definition's text, the same the fast path
// sends.
func buildDefinition(name string, command []string, o *sandboxCreateOptions) ([]byte, error) {
	if o.policyFile == "" {
		return createcmd.Definition(name, command, o.env, o.restart, o.presets)
	}
	str := func(v string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Value: v, Style: yaml.DoubleQuotedStyle}
	}
	key := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }
	sb := &yaml.Node{Kind: yaml.MappingNode}
	if len(command) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, a := range command {
			seq.Content = append(seq.Content, str(a))
		}
		sb.Content = append(sb.Content, key("command"), seq)
	}
	if len(o.env) > 0 {
		env := &yaml.Node{Kind: yaml.MappingNode}
		seen := map[string]bool{}
		for _, kv := range o.env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("--env %q: want KEY=VALUE", kv)
			}
			if seen[k] {
				return nil, fmt.Errorf("--env %s given twice", k)
			}
			seen[k] = true
			env.Content = append(env.Content, key(k), str(v))
		}
		sb.Content = append(sb.Content, key("env"), env)
	}
	if o.restart != "" {
		sb.Content = append(sb.Content, key("restart"), str(o.restart))
	}
	pol := &yaml.Node{Kind: yaml.MappingNode}
	if o.policyFile != "" {
		data, err := os.ReadFile(o.policyFile)
		if err != nil {
			return nil, fmt.Errorf("read policy: %w", err)
		}
		// Errors with the file's own line numbers first.
		if _, err := policy.Parse(data, o.policyFile); err != nil {
			return nil, err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", o.policyFile, err)
		}
		if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
			pol = doc.Content[0]
		}
	}
	if len(o.presets) > 0 {
		var presets *yaml.Node
		for i := 0; i+1 < len(pol.Content); i += 2 {
			if pol.Content[i].Value == "presets" {
				presets = pol.Content[i+1]
			}
		}
		if presets == nil {
			presets = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
			pol.Content = append(pol.Content, key("presets"), presets)
		}
		for _, p := range o.presets {
			presets.Content = append(presets.Content, str(p))
		}
	}
	if len(pol.Content) > 0 {
		sb.Content = append(sb.Content, key("policy"), pol)
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Content: []*yaml.Node{
		key("sandboxes"), {Kind: yaml.MappingNode, Content: []*yaml.Node{key(name), sb}},
	}}}}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode sandbox definition: %w", err)
	}
	return buf.Bytes(), enc.Close()
}

func newSandboxListCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the running stack's sandboxes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			var views []stack.SandboxView
			if err := controlCall(ctx, g.stateDir, http.MethodGet, "/v1/sandboxes", nil, &views); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(views)
			}
			sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSOURCE\tSTATE\tPID\tRESTARTS\tLAST EXIT")
			for _, v := range views {
				state, pid, restarts, last := "-", "-", "-", "-"
				if s := v.Status; s != nil {
					state, restarts = s.State, fmt.Sprint(s.Restarts)
					if s.PID != 0 {
						pid = fmt.Sprint(s.PID)
					}
					if s.LastExit != "" {
						last = journal.Escape(s.LastExit)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", journal.Escape(v.Name), v.Source, state, pid, restarts, last)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}

func newSandboxDeleteCmd(g *globalOptions) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "delete NAME [--keep-workspace]",
		Short: "Stop a sandbox created with sandbox create and remove it with its workspace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			path := "/v1/sandboxes/" + args[0]
			if keep {
				path += "?keep_workspace=1"
			}
			if err := controlCall(ctx, g.stateDir, http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sandbox %s deleted\n", journal.Escape(args[0]))
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-workspace", false, "keep <state>/sandboxes/NAME/workspace")
	return cmd
}

// controlCall sends a JSON request to the supervisor's control socket and
// decodes the answer into out (if not nil); an error answer becomes an error.
func controlCall(ctx context.Context, stateDir, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://clawcage"+path, body)
	if err != nil {
		return err
	}
	sock := supervisor.ControlSocketPath(stateDir)
	resp, err := supervisor.Client(sock).Do(req)
	if err != nil {
		return fmt.Errorf("ask the supervisor at %s (is `clawcage up` running?): %w", sock, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			lines := strings.Split(e.Error, "\n") // one validation error per line
			for i, l := range lines {
				lines[i] = journal.Escape(l)
			}
			return errors.New(strings.Join(lines, "\n"))
		}
		return fmt.Errorf("supervisor answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}
