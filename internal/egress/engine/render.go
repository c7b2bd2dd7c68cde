package engine

import (
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/net/idna"

	"github.com/clawcage/clawcage/internal/egress/approvals"
	"github.com/clawcage/clawcage/internal/hostport"
	"github.com/clawcage/clawcage/internal/journal"
	"github.com/clawcage/clawcage/internal/policy"
)

// DisplayHost renders a queued host for an operator: the whole normalised
// (punycode) form, never truncated, followed by the Unicode form when it
// differs. Everything is escaped so no control character, bidi override
// or ANSI sequence reaches the terminal.
func DisplayHost(host string, port int) string {
	h, err := hostport.NormalizeHost(host)
	if err != nil {
		return journal.Escape(fmt.Sprintf("%q", host)) + ":" + fmt.Sprint(port) + " (invalid host)"
	}
	s := hostport.Join(h, port)
	if u, err := idna.ToUnicode(h); err == nil && u != h {
		s += "  (unicode: " + journal.Escape(u) + "; internationalised name, check each character)"
	}
	return s
}

// FormatPending writes the approval view of entries.
func FormatPending(w io.Writer, entries []approvals.Entry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "No pending denials.")
		return
	}
	for _, e := range entries {
		esc := journal.Escape
		if e.Flooding {
			fmt.Fprintf(w, "%s  sandbox %s  FLOODING: %d denied destinations were not queued (queue cap or rate exceeded)\n", e.ID, esc(e.Sandbox), e.Count)
			fmt.Fprintf(w, "    first %s  last %s; not approvable: check the sandbox's agent\n\n", e.FirstSeen.Format(time.RFC3339), e.LastSeen.Format(time.RFC3339))
			continue
		}
		fmt.Fprintf(w, "%s  sandbox %s  %d attempt(s), first %s, last %s\n", e.ID, esc(e.Sandbox), e.Count, e.FirstSeen.Format(time.RFC3339), e.LastSeen.Format(time.RFC3339))
		fmt.Fprintf(w, "    destination: %s\n", DisplayHost(e.Host, e.Port))
		rule := e.Rule
		if rule == "" {
			rule = "(none)"
		}
		fmt.Fprintf(w, "    method: %s  reason: %s  closest rule: %s\n", esc(e.Method), esc(e.Reason), esc(rule))
		fmt.Fprintf(w, "    approve: clawcage policy approve %s [--for DURATION | --always]    reject: clawcage policy reject %s\n\n", e.ID, e.ID)
	}
}

// FormatShow writes a sandbox's effective policy.
func FormatShow(w io.Writer, v SandboxView) {
	esc := journal.Escape
	fmt.Fprintf(w, "sandbox %s\n", esc(v.Sandbox))
	if len(v.Presets) > 0 {
		fmt.Fprintf(w, "presets: %s\n", esc(strings.Join(v.Presets, ", ")))
	}
	if len(v.Rules) == 0 {
		fmt.Fprintln(w, "rules: none (everything is denied)")
	} else {
		fmt.Fprintln(w, "rules (tried in order):")
		for _, r := range v.Rules {
			fmt.Fprintf(w, "  %s\n", FormatRule(r))
		}
	}
	if len(v.Grants) > 0 {
		fmt.Fprintln(w, "grants (revoke with `clawcage policy revoke ID`):")
		for _, g := range v.Grants {
			what := "preset " + esc(g.Preset)
			if g.Kind == approvals.KindHost {
				what = DisplayHost(g.Host, g.Port)
			}
			until := g.Mode
			if !g.Expires.IsZero() {
				until += " until " + g.Expires.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "  %s  %s  %s\n", g.ID, what, until)
		}
	}
}

// FormatRule renders one rule on a line.
func FormatRule(r policy.Rule) string {
	var b strings.Builder
	b.WriteString(journal.Escape(r.Name) + ":")
	if len(r.Hosts) > 0 {
		b.WriteString(" hosts " + journal.Escape(strings.Join(r.Hosts, ",")))
	}
	if len(r.CIDRs) > 0 {
		b.WriteString(" cidrs " + journal.Escape(strings.Join(r.CIDRs, ",")))
	}
	ports := make([]string, len(r.Ports))
	for i, p := range r.Ports {
		ports[i] = fmt.Sprint(p)
	}
	if len(ports) == 0 {
		ports = []string{fmt.Sprint(policy.DefaultPort)}
	}
	b.WriteString(" ports " + strings.Join(ports, ","))
	if len(r.Methods) > 0 {
		b.WriteString(" methods " + journal.Escape(strings.Join(r.Methods, ",")))
	}
	if len(r.Paths) > 0 {
		b.WriteString(" paths " + journal.Escape(strings.Join(r.Paths, ",")))
	}
	return b.String()
}
