package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/clawcage/clawcage/internal/journal"
	"github.com/spf13/cobra"
)

// journalDir is where `clawcage up` keeps the journal under the state directory.
func journalDir(stateDir string) string { return filepath.Join(stateDir, "journal") }

func newLogsCmd(g *globalOptions) *cobra.Command {
	var (
		follow    bool
		asJSON    bool
		component string
		sandbox   string
		since     string
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [--component C] [--sandbox S] [--since T] [--json]",
		Short: "Show the stack's merged, time-ordered journal",
		Long: `Show the journal of the stack: every component's and sandbox's output and
every structured event (decisions, denials, restarts, usage), oldest first.
Reads <state>/journal directly, so it works while the stack is down; needs
root. Text that came from a sandbox is shown escaped, never raw.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := journal.Filter{Component: component, Sandbox: sandbox}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				f.Since = t
			}
			dir := journalDir(g.stateDir)
			if _, err := os.Stat(dir); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("no journal at %s: has `clawcage up --state %s` run?", dir, g.stateDir)
				}
				return fmt.Errorf("journal: %w (the journal is readable by root only)", err)
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			enc := json.NewEncoder(out)
			err := journal.Read(cmd.Context(), dir, journal.ReadOptions{Filter: f, Follow: follow}, func(e journal.Entry) error {
				if asJSON {
					if err := enc.Encode(e); err != nil {
						return err
					}
				} else {
					out.WriteString(journal.FormatText(e))
					out.WriteByte('\n')
				}
				if follow {
					return out.Flush()
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("read journal: %w", err)
			}
			return out.Flush()
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&follow, "follow", "f", false, "keep printing new entries as they are written")
	fl.BoolVar(&asJSON, "json", false, "print entries as JSON lines")
	fl.StringVar(&component, "component", "", "only entries of this component (supervisor, router, policy, gateway, sandbox)")
	fl.StringVar(&sandbox, "sandbox", "", "only entries about this sandbox")
	fl.StringVar(&since, "since", "", "only entries from this time on: a duration ago (10m, 2h) or an RFC 3339 time")
	return cmd
}

// parseSince reads --since: a duration before now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: a duration ago must not be negative", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (10m, 2h) or an RFC 3339 time (2026-01-02T15:04:05Z)", s)
}
