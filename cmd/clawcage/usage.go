package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/usage"
)

func newUsageCmd(g *globalOptions) *cobra.Command {
	var (
		sandbox string
		since   string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Show model usage and cost per sandbox, route, provider and model",
		Long: `Show what the privacy router recorded: requests, errors, tokens, cost and
latency per sandbox, route, provider and model. --since takes a duration
back from now (90m, 24h, 7d) or an RFC 3339 time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := admin.ParseSince(since, time.Now())
			if err != nil {
				return fmt.Errorf("usage: --%w", err)
			}
			c := admin.Dial(g.stateDir)
			defer c.Close()
			rows, err := c.Usage(cmd.Context(), usage.Filter{Sandbox: sandbox, Since: from})
			if err != nil {
				return fmt.Errorf("usage: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if rows == nil {
					rows = []usage.SummaryRow{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(out, "no requests recorded")
				return nil
			}
			// Route and model names come from sandbox requests: escape them.
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SANDBOX\tROUTE\tPROVIDER\tMODEL\tREQUESTS\tERRORS\tTOKENS_IN\tTOKENS_OUT\tCOST_USD\tP50_MS\tAVG_TTFB_MS")
			var total usage.SummaryRow
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.4f\t%.1f\t%.1f\n",
					journal.Escape(r.Sandbox), journal.Escape(r.Route), journal.Escape(r.Provider), journal.Escape(r.Model),
					r.Requests, r.Errors, r.TokensIn, r.TokensOut, r.CostUSD, ms(r.P50Latency), ms(r.AvgTTFB))
				total.Requests += r.Requests
				total.Errors += r.Errors
				total.TokensIn += r.TokensIn
				total.TokensOut += r.TokensOut
				total.CostUSD += r.CostUSD
			}
			if len(rows) > 1 {
				fmt.Fprintf(tw, "TOTAL\t\t\t\t%d\t%d\t%d\t%d\t%.4f\t\t\n", total.Requests, total.Errors, total.TokensIn, total.TokensOut, total.CostUSD)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&sandbox, "sandbox", "", "only this sandbox")
	cmd.Flags().StringVar(&since, "since", "", "only requests since DURATION ago (24h, 7d) or an RFC 3339 time")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
