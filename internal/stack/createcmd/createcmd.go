// Package createcmd is the fast path of `clawcage sandbox create`: it parses
// the command line, builds the sandbox's definition and sends it to the
// supervisor's control socket, without the rest of the clawcage binary.
//
// A `sandbox create` is a fresh start of the whole binary, and Go initializes
// every package linked into it before main runs (144 of them: the router's,
// Prometheus, SQLite, net/http, cobra...), which a create needs none of.
// Go initializes a package once everything it imports is, and otherwise in
// import-path order, so this package's init function runs as soon as its own
// small dependency tree is ready, before most of the others. When the
// process was started as `<binary> sandbox create ...`, ParseArgs
// understands the whole command line and the definition can be built, init
// sends the request with a plain HTTP/1.1 exchange over the Unix socket
// (os.File and raw syscalls: no package net), prints what the cobra command
// prints and exits with its status. Anything else (--help, an unknown or
// malformed flag, --policy, a definition error, a control socket that cannot
// be connected to) is left to the cobra command in main, which explains:
// nothing has been sent then, so nothing is done twice.
//
// For this to hold, the package's import tree must stay small and must not
// reach net, net/netip, net/http, cobra or YAML (see package
// internal/sandbox/runcmd, which does the same for `sandbox run`). It goes
// further: what decides when init runs is the last of its dependencies with
// initialization work, and every package that is ready earlier and sorts
// before it (protobuf, crypto, SQLite's, database/sql...) is initialized
// first. So it imports no package whose initialization comes after
// os/signal's: not strings, bufio, fmt, encoding/json, golang.org/x/sys/unix,
// path/filepath, log/slog or internal/journal (23 of the binary's 146
// packages with initialization work run before it, instead of 66 with
// those). Its JSON, its line reading and its socket calls are therefore
// written here, and tests keep them equal to encoding/json's and net/http's
// client; what it prints is escaped by the leaf package internal/termesc, as
// journal.Escape does for the cobra command.
// TestFastPathInitOrder checks it with GODEBUG=inittrace=1.
package createcmd

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"path"
	"syscall"
	"time"

	"github.com/clawcage/clawcage/internal/termesc"
)

// init runs `sandbox create` when the process was started as such (see the
// package comment).
func init() {
	if len(os.Args) < 3 || os.Args[1] != "sandbox" || os.Args[2] != "create" {
		return
	}
	a, ok := ParseArgs(os.Args[3:])
	if !ok {
		return // main's command tree explains what is wrong
	}
	if code, done := Main(a, os.Stdout, os.Stderr); done {
		os.Exit(code)
	}
}

// DefaultStateDir is the default of the global --state flag (the cobra root
// has the same; a test keeps them equal).
const DefaultStateDir = "/var/lib/clawcage"

// Args are the arguments of `clawcage sandbox create` that the fast path
// takes.
type Args struct {
	Name     string
	Command  []string
	Presets  []string // --preset (repeatable)
	Env      []string // --env (repeatable)
	Restart  string   // --restart
	StateDir string   // --state
}

// FlagKind is how a flag's value is parsed.
type FlagKind int

// The kinds of flags of `sandbox create` (pflag's string and stringArray).
const (
	String FlagKind = iota
	StringArray
)

// Flags are the flags of `clawcage sandbox create`, with their kinds,
// including the global --state; ParseArgs knows them all and leaves
// --policy to the full command. cmd/clawcage's test checks that its cobra
// command has exactly these.
var Flags = map[string]FlagKind{
	"preset": StringArray, "policy": String, "env": StringArray, "restart": String, "state": String,
}

// ParseArgs parses the arguments after `clawcage sandbox create` exactly as
// the cobra command does: flags anywhere (pflag's interspersed parsing, long
// form only) up to "--"; then NAME and the command, with NAME the only
// argument before "--" if there is one. ok is false when the arguments hold
// anything else: a help request, an unknown or short flag, a flag without
// its value, no NAME, a misplaced "--", or --policy (checking a policy file
// needs internal/policy, which the fast path does not import). The caller
// then leaves them to the cobra command.
func ParseArgs(args []string) (a Args, ok bool) {
	a.StateDir = DefaultStateDir
	var pos []string
	dash := -1
	for i := 0; i < len(args); i++ {
		s := args[i]
		if s == "--" {
			dash = len(pos)
			pos = append(pos, args[i+1:]...)
			break
		}
		if !hasPrefix(s, "-") || s == "-" {
			pos = append(pos, s)
			continue
		}
		if !hasPrefix(s, "--") {
			return Args{}, false // short flags (-h) are cobra's
		}
		name, value, hasValue := cut(s[2:], "=")
		if _, known := Flags[name]; !known || name == "policy" {
			return Args{}, false
		}
		if !hasValue {
			if i+1 >= len(args) {
				return Args{}, false
			}
			i++
			value = args[i]
		}
		switch name {
		case "preset":
			a.Presets = append(a.Presets, value)
		case "env":
			a.Env = append(a.Env, value)
		case "restart":
			a.Restart = value
		case "state":
			a.StateDir = value
		}
	}
	if len(pos) == 0 || (dash >= 0 && dash != 1) {
		return Args{}, false
	}
	a.Name, a.Command = pos[0], pos[1:]
	if len(a.Command) == 0 {
		a.Command = nil
	}
	return a, true
}

// Request is the body of POST /v1/sandboxes (stack.CreateRequest).
type Request struct {
	Name string `json:"name"`
	// Definition is a clawcage.yaml fragment defining only this sandbox.
	Definition string `json:"definition"`
}

// ControlSocketName is the supervisor's control socket in the state
// directory (supervisor.ControlSocketName; a test keeps them equal).
const ControlSocketName = "control.sock"

// Timeouts of the cobra command: its context's and its HTTP client's (the
// shorter one applies).
const (
	commandTimeout = 60 * time.Second
	clientTimeout  = 30 * time.Second
)

// Main creates the sandbox described by a as the cobra command does and
// returns the process exit status, with done true. done is false, with
// nothing sent, when the command is better left to the cobra command: the
// definition cannot be built (it says why) or the control socket cannot be
// connected to (it says how).
func Main(a Args, stdout, stderr io.Writer) (code int, done bool) {
	def, err := Definition(a.Name, a.Command, a.Env, a.Restart, a.Presets)
	if err != nil {
		return 0, false
	}
	// {"name":...,"definition":...}, as json.Marshal writes a Request.
	body := appendJSONString([]byte(`{"name":`), a.Name)
	body = appendJSONString(append(body, `,"definition":`...), string(def))
	body = append(body, '}')
	sock := path.Join(a.StateDir, ControlSocketName) // as filepath.Join on Linux
	c, err := dialUnix(sock)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	// The cobra command's context ends on SIGINT and SIGTERM (main), which
	// aborts the request; so does this.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	cancel, finished := make(chan struct{}), make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-sigs:
			close(cancel)
		case <-finished:
		}
	}()
	resp, err := roundTrip(c, "POST", "/v1/sandboxes", body, time.Now().Add(min(commandTimeout, clientTimeout)), cancel)
	if errors.Is(err, errNotSent) {
		return 0, false
	}
	if err == nil {
		err = answer(resp, a, stdout)
	} else {
		err = errors.New("ask the supervisor at " + sock + " (is `clawcage up` running?): " + err.Error())
	}
	if err != nil {
		io.WriteString(stderr, "clawcage: "+err.Error()+"\n")
		return 1, true
	}
	return 0, true
}

// answer prints the supervisor's answer as the cobra command does (its
// controlCall and RunE).
func answer(resp *response, a Args, stdout io.Writer) error {
	if resp.bodyErr != nil {
		return errors.New("read answer: " + resp.bodyErr.Error())
	}
	if resp.code >= 300 {
		if msg, err := stringField(resp.body, "error"); err == nil && msg != "" {
			// One validation error per line, each escaped.
			var out []byte
			for {
				l, rest, more := cut(msg, "\n")
				out = append(out, termesc.Escape(l)...)
				if !more {
					break
				}
				out, msg = append(out, '\n'), rest
			}
			return errors.New(string(out))
		}
		return errors.New("supervisor answered " + resp.status)
	}
	name, err := stringField(resp.body, "name")
	if err != nil {
		return errors.New("decode answer: " + err.Error())
	}
	io.WriteString(stdout, "sandbox "+termesc.Escape(name)+" created (workspace "+termesc.Escape(a.StateDir+"/sandboxes/"+name+"/workspace")+")\n")
	return nil
}
