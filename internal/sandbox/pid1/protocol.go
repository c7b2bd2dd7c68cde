package pid1

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// The file descriptors the host hands to sandbox-init: the config pipe's
// read end at 3, the report pipe's write end at 4, then one detached mount
// per BindSpec from FirstBindFD on.
const (
	configFD = 3 // read end: one encoded Config (codec.go), then EOF
	reportFD = 4 // write end: at most one JSON report on failure
)

// Exit statuses of sandbox-init when the command did not run.
const (
	// ExitSetupFailed: the sandbox could not be set up (see the Report).
	ExitSetupFailed = 125
	// ExitNotExecutable: the command was found but could not be executed.
	ExitNotExecutable = 126
	// ExitNotFound: the command was not found.
	ExitNotFound = 127
)

// Config is everything sandbox-init needs; the host has resolved and
// validated it. It travels in the binary encoding of codec.go.
type Config struct {
	// Binds are detached mounts the host opened (open_tree) and passed as
	// file descriptors: the workspace first, then the extra paths.
	Binds     []BindSpec
	ReadOnly  []string
	ReadWrite []string
	Hosts     []string
	TmpSize   int64
	UID       int
	Command   []string
	Env       []string
	Connect   []uint16
	Bind      []uint16
	UIDBase   uint32
	Ctty      bool
	// FileSizeLimit, if positive, is RLIMIT_FSIZE for PID 1 and everything
	// it starts (SIGXFSZ ignored: EFBIG instead).
	FileSizeLimit int64
	// ExecFD, if positive, is PID 1's end of the exec channel (see
	// execproto.go): the host asks it to start commands in the sandbox.
	ExecFD int
	// Landlock is the ruleset PID 1 applies (PlanLandlock); nil means
	// PID 1 computes it itself (the Go implementation only).
	Landlock *LandlockPlan
	// Seccomp is the compiled seccomp filter (struct sock_filter[], from
	// seccomp.Filter) PID 1's C start-up installs; the Go implementation
	// compiles the same filter itself.
	Seccomp []byte
}

// BindSpec is one detached mount passed to sandbox-init.
type BindSpec struct {
	// Target is the mount point inside the sandbox.
	Target string
	// Dir says whether the source is a directory (else a file).
	Dir bool
	// FD is the mount's file descriptor in sandbox-init.
	FD int
}

// FirstBindFD is the descriptor of the first bind in sandbox-init.
const FirstBindFD = reportFD + 1

// Report is what a failing step inside the sandbox tells the host.
type Report struct {
	Step    string `json:"step"`
	Error   string `json:"error"`
	Feature string `json:"feature,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Fix     string `json:"fix,omitempty"`
	Code    int    `json:"code"`
}

// readConfig reads the config the parent wrote to configFD.
func readConfig() (*Config, error) {
	f := os.NewFile(configFD, "config")
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return DecodeConfig(b)
}

// fail reports err from step to the host over reportFD and exits with code.
// It never returns.
func fail(step string, err error, code int) {
	r := Report{Step: step, Error: err.Error(), Code: code}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		r.Feature, r.Reason, r.Fix = ue.Feature, ue.Reason, ue.Fix
	}
	b, _ := json.Marshal(r)
	f := os.NewFile(reportFD, "report")
	if _, werr := f.Write(b); werr != nil {
		fmt.Fprintf(os.Stderr, "clawcage sandbox: %s: %v\n", step, err)
	}
	os.Exit(code)
}

// ReadReport reads the report pipe until every writer is gone (PID 1 closes
// it once the command started). Empty means the command started.
func ReadReport(r io.Reader) (*Report, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<16))
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, nil
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("malformed report %q: %w", b, err)
	}
	return &rep, nil
}
