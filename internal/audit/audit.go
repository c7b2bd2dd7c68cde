// Package audit is a library of sandbox escape probes: each probe attempts
// one way out of a clawcage sandbox from the inside (read a host secret,
// load a kernel module, reach the host's loopback, ...) and reports what the
// kernel answered as an Observation.
//
// Probes act on whatever system they run in. Inside a sandbox they prove the
// sandbox holds; run unsandboxed as root they show the escape would be
// noticed. The package does not start sandboxes: callers (the e2e battery,
// `clawcage audit`) run the probe binary inside one and compare each
// Observation with the probe's Expect.
package audit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Outcomes that are not errno names. An errno outcome is the errno's
// symbolic name as unix.ErrnoName spells it ("EPERM", "ENOENT", ...).
const (
	// Succeeded means the attempted operation worked. Unless a probe's
	// Expect lists it, that is an escape.
	Succeeded = "succeeded"
	// Absent means the thing searched for (a canary, a host process, a
	// non-loopback interface) was not found.
	Absent = "absent"
	// Isolated means only the sandbox's own processes are visible.
	Isolated = "isolated"
	// Masked means a sensitive file exists but is a stand-in (/dev/null)
	// that yields nothing.
	Masked = "masked"
	// Unchanged means executing a privilege-raising binary changed no
	// credentials.
	Unchanged = "unchanged"
	// Enforced means every hardening setting the probe checks is in place.
	Enforced = "enforced"
	// LoopbackOnly means the only network interface is lo.
	LoopbackOnly = "lo-only"
	// KilledSIGKILL means a child doing the attack was killed by SIGKILL
	// (the memory cgroup's OOM killer).
	KilledSIGKILL = "killed:SIGKILL"
	// Timeout means the operation did not finish within the probe's bound.
	Timeout = "timeout"
	// Mixed means several attempts failed with different errnos; Detail
	// lists them.
	Mixed = "mixed"
	// Error means the probe itself could not run (bad arguments, a missing
	// helper). It is never an expected outcome.
	Error = "error"
)

// Observation is what one probe saw.
type Observation struct {
	// Attack is the probe's name.
	Attack string `json:"attack"`
	// Outcome is an errno name or one of the outcome constants.
	Outcome string `json:"outcome"`
	// Detail says what was tried and what came back, for humans.
	Detail string `json:"detail,omitempty"`
}

// Probe is one attack.
type Probe struct {
	// Name identifies the probe on the command line (`audit-probe NAME`).
	Name string
	// Usage describes the arguments, empty if there are none.
	Usage string
	// Doc says in one line what is attacked.
	Doc string
	// Expect lists the outcomes that mean the sandbox held against the
	// probe run with its default arguments.
	Expect []string
	// Run performs the attack. It never panics on bad arguments; it
	// reports Error instead.
	Run func(ctx context.Context, args []string) Observation
}

// Held reports whether o is one of the outcomes p expects from a sandbox.
func (p Probe) Held(o Observation) bool {
	return slices.Contains(p.Expect, o.Outcome)
}

// Probes returns every probe, in a stable order.
func Probes() []Probe {
	var ps []Probe
	ps = append(ps, fsProbes()...)
	ps = append(ps, procProbes()...)
	ps = append(ps, syscallProbes()...)
	ps = append(ps, netProbes()...)
	ps = append(ps, deviceProbes()...)
	ps = append(ps, limitProbes()...)
	ps = append(ps, secretProbes()...)
	return ps
}

// Lookup returns the probe called name.
func Lookup(name string) (Probe, bool) {
	for _, p := range Probes() {
		if p.Name == name {
			return p, true
		}
	}
	return Probe{}, false
}

// Run runs the probe called name with args, filling in Attack.
func Run(ctx context.Context, name string, args []string) Observation {
	p, ok := Lookup(name)
	if !ok {
		return Observation{Attack: name, Outcome: Error, Detail: fmt.Sprintf("no probe named %q", name)}
	}
	o := p.Run(ctx, args)
	o.Attack = name
	return o
}

// OutcomeOf maps err to an outcome: Succeeded for nil, the errno name when
// an errno is in err's chain, Timeout for timeouts, otherwise Error.
func OutcomeOf(err error) string {
	if err == nil {
		return Succeeded
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return fmt.Sprintf("errno%d", int(errno))
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return Timeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	return Error
}

// observe builds an Observation from err, with what as the detail prefix.
func observe(err error, what string) Observation {
	o := Observation{Outcome: OutcomeOf(err), Detail: what}
	var pe *os.PathError
	switch {
	case errors.As(err, &pe):
		o.Detail = what + ": " + pe.Err.Error()
	case err != nil:
		o.Detail = what + ": " + err.Error()
	}
	return o
}

// errorf reports that the probe itself could not run.
func errorf(format string, a ...any) Observation {
	return Observation{Outcome: Error, Detail: fmt.Sprintf(format, a...)}
}

// combine merges several named attempts into one observation: Succeeded if
// any attempt succeeded, the errno if all failed alike, Mixed otherwise.
func combine(names []string, errs []error) Observation {
	var parts []string
	outcome := ""
	for i, err := range errs {
		oc := OutcomeOf(err)
		parts = append(parts, names[i]+"="+oc)
		switch {
		case outcome == Succeeded:
		case oc == Succeeded:
			outcome = Succeeded
		case outcome == "":
			outcome = oc
		case outcome != oc:
			outcome = Mixed
		}
	}
	if outcome == "" {
		outcome = Error
	}
	return Observation{Outcome: outcome, Detail: strings.Join(parts, " ")}
}

// onDisposableThread runs f on an OS thread that is thrown away afterwards,
// so an attack that changes per-thread state (namespaces, ptrace) cannot
// leak into the rest of the process.
func onDisposableThread(f func() Observation) Observation {
	ch := make(chan Observation, 1)
	go func() {
		runtime.LockOSThread()
		ch <- f()
		// The thread stays locked: the runtime terminates it when this
		// goroutine returns.
	}()
	return <-ch
}

// argOr returns args[i] or def when it is missing.
func argOr(args []string, i int, def string) string {
	if i < len(args) && args[i] != "" {
		return args[i]
	}
	return def
}
