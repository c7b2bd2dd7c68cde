// Package runcmd runs `clawcage sandbox run`: one command in a new sandbox,
// from the command line. cmd/clawcage defines the cobra command and its
// flags; this package does the work, and takes the fast path.
//
// Fast path. A one-shot `clawcage sandbox run` is a fresh start of the whole
// clawcage binary, and Go initializes every package linked into it before
// main runs: the router's, the vault's, Prometheus, protobuf, SQLite... none
// of which a sandbox needs (about 10 ms of the 50 ms start-up budget). Go
// initializes a package once everything it imports is, and otherwise in
// import-path order, so this package's init function runs as soon as its own
// small dependency tree is ready, before most of the others. When the process
// was started as `<binary> sandbox run ...` and ParseArgs understands the
// whole command line, init runs the sandbox right there and exits. Anything
// else (--help, an unknown flag, a malformed value) is left to the cobra
// command in main, which explains. init never touches a package it does not
// import, so nothing it uses can be uninitialized.
//
// For this to hold, this package's import tree must stay small and must not
// reach a package whose import path sorts late and that everything else is
// initialized before: package net (cobra and pflag import it; it imports
// vendor/golang.org/x/net/dns/dnsmessage) and net/netip (through unique, it
// imports weak, the last path of all). That is why internal/sandbox takes a
// sandbox.Policy rather than internal/policy's, and why --policy files are
// left to the full command (which loads them and calls Run).
// TestFastPathInitOrder checks it with GODEBUG=inittrace=1, as for PID 1
// (package internal/sandbox/pid1).
package runcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/clawcage/clawcage/internal/sandbox"
)

// init runs `sandbox run` when the process was started as such (see the
// package comment).
func init() {
	if len(os.Args) < 3 || os.Args[1] != "sandbox" || os.Args[2] != "run" {
		return
	}
	o, command, ok := ParseArgs(os.Args[3:])
	if !ok {
		return // main's command tree explains what is wrong
	}
	os.Exit(Main(o, command, os.Stderr))
}

// Main runs command with o (which names no policy file) as `clawcage
// sandbox run` does and returns the process exit status: the command's, or
// 1 with the error on stderr when o is wrong (as main reports a command's
// error).
func Main(o Options, command []string, stderr io.Writer) int {
	err := Run(context.Background(), o, command, nil)
	if err == nil {
		return 0
	}
	var ee ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintln(stderr, "clawcage:", err)
	return 1
}

// ExitError makes clawcage exit with Code without printing anything more:
// the sandboxed command's exit status, or a failure already shown.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode returns the exit status.
func (e ExitError) ExitCode() int { return e.Code }

// Options are the flags of `clawcage sandbox run`.
type Options struct {
	Workspace string   // --workspace
	Policy    string   // --policy (not taken by ParseArgs)
	Env       []string // --env (repeatable)
	Memory    string   // --memory
	Pids      int64    // --pids
	CPU       float64  // --cpu
	Tmp       string   // --tmp
	Disk      string   // --disk
	Root      bool     // --root
}

// FlagKind is how a flag's value is parsed.
type FlagKind int

// The kinds of flags of `sandbox run` (pflag's string, stringArray, int64,
// float64 and bool).
const (
	String FlagKind = iota
	StringArray
	Int64
	Float64
	Bool
)

// Flags are the flags of `clawcage sandbox run`, with their kinds,
// including the global --state (which `sandbox run` ignores); ParseArgs
// knows them all and leaves --policy to the full command.
// cmd/clawcage's test checks that its cobra command has exactly these.
var Flags = map[string]FlagKind{
	"workspace": String, "policy": String, "env": StringArray, "memory": String,
	"pids": Int64, "cpu": Float64, "tmp": String, "disk": String, "root": Bool, "state": String,
}

// ParseArgs parses the arguments after `clawcage sandbox run` exactly as the
// cobra command does (flags up to the first argument that is not one, or
// "--"; then the command, at least one word). ok is false when the
// arguments hold anything else: a help request, an unknown or short flag, a
// malformed value, no command, or --policy (loading a policy file needs
// internal/policy, which the fast path does not import). The caller then
// leaves them to the cobra command, which explains or loads the policy.
func ParseArgs(args []string) (o Options, command []string, ok bool) {
	set := func(name, value string) bool {
		switch name {
		case "workspace":
			o.Workspace = value
		case "env":
			o.Env = append(o.Env, value)
		case "memory":
			o.Memory = value
		case "tmp":
			o.Tmp = value
		case "disk":
			o.Disk = value
		case "state":
		case "pids":
			n, err := strconv.ParseInt(value, 0, 64)
			if err != nil {
				return false
			}
			o.Pids = n
		case "cpu":
			f, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return false
			}
			o.CPU = f
		case "root":
			b, err := strconv.ParseBool(value)
			if err != nil {
				return false
			}
			o.Root = b
		default:
			return false
		}
		return true
	}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break // the command
		}
		if !strings.HasPrefix(a, "--") {
			return Options{}, nil, false // short flags (-h) are cobra's
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		kind, known := Flags[name]
		if !known {
			return Options{}, nil, false
		}
		if !hasValue {
			if kind == Bool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return Options{}, nil, false
				}
				i++
				value = args[i]
			}
		}
		if !set(name, value) {
			return Options{}, nil, false
		}
	}
	if i >= len(args) {
		return Options{}, nil, false // no command
	}
	return o, args[i:], true
}

// Run runs command in a new sandbox as `clawcage sandbox run` with flags o
// and the policy pol (nil: none; loaded by the caller from o.Policy) does,
// forwarding the terminal's signals and, when stdin and stdout are a
// terminal, giving it a pty of its own. A non-zero exit status of the
// command, or a sandbox failure (already shown on stderr), is an ExitError.
func Run(ctx context.Context, o Options, command []string, pol *sandbox.Policy) error {
	spec := sandbox.Spec{
		Command:   command,
		Workspace: o.Workspace,
		Env:       o.Env,
		Root:      o.Root,
		Term:      os.Getenv("TERM"),
		Policy:    pol,
	}
	var err error
	if spec.Limits.Memory, err = parseSize("--memory", o.Memory); err != nil {
		return err
	}
	if spec.Limits.Tmp, err = parseSize("--tmp", o.Tmp); err != nil {
		return err
	}
	if spec.Limits.Disk, err = parseSize("--disk", o.Disk); err != nil {
		return err
	}
	if o.Pids < 0 {
		return fmt.Errorf("--pids %d: must not be negative", o.Pids)
	}
	spec.Limits.Pids = o.Pids
	if o.CPU < 0 {
		return fmt.Errorf("--cpu %g: must not be negative", o.CPU)
	}
	spec.Limits.CPU = o.CPU

	// Forward the terminal signals to the sandbox instead of dying on them,
	// so that ^C reaches the command and its exit status is ours. The
	// runtime enables each signal with a round trip to its signal thread
	// (milliseconds on a loaded machine), so that overlaps the sandbox's
	// start; the sandbox forwards what arrives on sigs once it runs.
	sigs := make(chan os.Signal, 8)
	notified := make(chan struct{})
	go func() {
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
		close(notified)
	}()
	defer func() {
		<-notified
		signal.Stop(sigs)
	}()

	stdio := sandbox.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Signals: sigs}
	var tty *TTY
	if IsTerminal(os.Stdin) && IsTerminal(os.Stdout) {
		// Interactive: the sandbox gets a pty of its own, never ours.
		if tty, err = OpenTTY(os.Stdin, os.Stdout); err != nil {
			return err
		}
		spec.TTY = true
		stdio.Stdin, stdio.Stdout, stdio.Stderr = tty.Slave, tty.Slave, tty.Slave
	}
	code, err := sandbox.Run(ctx, spec, stdio)
	if tty != nil {
		tty.Close(os.Stdin)
	}
	if err != nil {
		var ue *sandbox.UnavailableError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "clawcage: %s is unavailable: %s\n  the sandbox refuses to run without it\n  fix: %s\n", ue.Feature, ue.Reason, ue.Fix)
		} else {
			fmt.Fprintln(os.Stderr, "clawcage:", err)
		}
		return ExitError{Code: code}
	}
	if code != 0 {
		return ExitError{Code: code}
	}
	return nil
}
