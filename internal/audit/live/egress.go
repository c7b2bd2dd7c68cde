package live

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/clawcage/clawcage/internal/audit"
	"github.com/clawcage/clawcage/internal/audit/battery"
)

// egress checks the provider and an unapproved host, through and around
// the proxy, and the pending queue; it rejects the queue entries it caused.
func (a *Auditor) egress(ctx context.Context) []battery.Result {
	var rows []battery.Result
	before := map[string]bool{}
	if q, err := a.Queue.Pending(ctx); err == nil {
		for _, e := range q {
			before[e.ID] = true
		}
	}
	var ours []string // hosts whose new queue entries we reject afterwards
	direct := []string{"EACCES", "ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED", "NXDOMAIN", audit.Timeout}
	for _, p := range a.Providers {
		host, port, err := net.SplitHostPort(p.Addr)
		if err != nil {
			rows = append(rows, row("reach-provider-"+p.Name+"-directly", "user", direct, audit.Observation{Outcome: audit.Error, Detail: err.Error()}, "bad provider address: "+err.Error()))
			continue
		}
		addrs := []string{p.Addr}
		if net.ParseIP(host) == nil {
			resolve := a.Resolve
			if resolve == nil {
				resolve = net.DefaultResolver.LookupHost
			}
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			ips, err := resolve(rctx, host)
			cancel()
			if err == nil && len(ips) > 0 {
				addrs = append(addrs, net.JoinHostPort(ips[0], port))
			}
		}
		for _, root := range []bool{false, true} {
			for _, addr := range addrs {
				attack := fmt.Sprintf("reach-provider-%s-directly (%s)", p.Name, addr)
				o, err := a.probe(ctx, root, "connect-tcp", addr)
				rows = append(rows, judge(attack, modeOf(root), direct, o, err))
			}
		}
		o, err := a.probe(ctx, false, "proxy-deny", p.Addr)
		rows = append(rows, judge(fmt.Sprintf("reach-provider-%s-through-proxy (%s)", p.Name, p.Addr), "user", []string{audit.Denied}, o, err))
		ours = append(ours, host)
	}

	// An unapproved host: denied with a JSON reason, queued, never approved.
	var rnd [5]byte
	_, _ = rand.Read(rnd[:])
	host := "clawcage-audit-" + hex.EncodeToString(rnd[:]) + ".invalid"
	ours = append(ours, host)
	target := net.JoinHostPort(host, "443")
	o, err := a.probe(ctx, false, "proxy-deny", target)
	r := judge("unapproved-host-denied-by-proxy ("+host+")", "user", []string{audit.Denied}, o, err)
	if r.Held {
		if i := strings.IndexByte(o.Detail, '{'); i < 0 || !json.Valid([]byte(o.Detail[i:])) {
			r.Held, r.Failure = false, "the 403 carries no JSON denial body: "+o.Detail
		}
	}
	rows = append(rows, r)
	rows = append(rows, a.pendingRow(ctx, host))

	// Clean up: reject the entries this audit put in the queue.
	q, err := a.Queue.Pending(ctx)
	if err == nil {
		var rejected []string
		for _, e := range q {
			if e.Sandbox == a.Sandbox && !before[e.ID] && slices.Contains(ours, e.Host) {
				if err := a.Queue.Reject(ctx, e.ID); err == nil {
					rejected = append(rejected, e.Host)
				}
			}
		}
		a.progress("rejected the queue entries the audit caused: %s", strings.Join(rejected, ", "))
	}
	return rows
}

// pendingRow waits up to PendingWait for host's denial to appear in the queue.
func (a *Auditor) pendingRow(ctx context.Context, host string) battery.Result {
	attack := "unapproved-host-in-pending-queue (" + host + ")"
	want := []string{"pending"}
	wait := a.PendingWait
	if wait == 0 {
		wait = 5 * time.Second
	}
	deadline := time.Now().Add(wait)
	var last error
	for {
		q, err := a.Queue.Pending(ctx)
		last = err
		for _, e := range q {
			if e.Sandbox == a.Sandbox && e.Host == host && e.Port == 443 {
				return row(attack, "host", want, audit.Observation{Attack: attack, Outcome: "pending",
					Detail: fmt.Sprintf("queue entry %s: %s:%d, reason %q, count %d (not approved; rejected after the audit)", e.ID, e.Host, e.Port, e.Reason, e.Count)}, "")
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	detail := "no queue entry for sandbox " + a.Sandbox + " and " + host
	if last != nil {
		detail = "cannot read the pending queue: " + last.Error()
	}
	return row(attack, "host", want, audit.Observation{Attack: attack, Outcome: audit.Absent, Detail: detail}, detail)
}

// judge turns a probe's observation into a row.
func judge(attack, mode string, want []string, o audit.Observation, err error) battery.Result {
	if err != nil {
		return row(attack, mode, want, o, "could not run: "+err.Error())
	}
	if !slices.Contains(want, o.Outcome) {
		return row(attack, mode, want, o, fmt.Sprintf("outcome %q, want %s (%s)", o.Outcome, strings.Join(want, " or "), o.Detail))
	}
	return row(attack, mode, want, o, "")
}
