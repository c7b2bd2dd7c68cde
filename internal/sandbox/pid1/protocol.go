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
	configFD = 3 // read end: one JSON Config, then EOF
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

// Config is everything sandbox-init needs; the host
// has resolved and validated it.
type Config struct {
	// Binds are detached mounts the host opened (open_tree) and passed as
	// file descriptors: the workspace first, then the extra paths.
	Binds     []BindSpec `json:"binds"`
	ReadOnly  []string   `json:"read_only,omitempty"`
	ReadWrite []string   `json:"read_write,omitempty"`
	Hosts     []string   `json:"hosts,omitempty"`
	TmpSize   int64      `json:"tmp_size"`
	UID       int        `json:"uid"`
	Command   []string   `json:"command"`
	Env       []string   `json:"env"`
	Connect   []uint16   `json:"connect,omitempty"`
	Bind      []uint16   `json:"bind,omitempty"`
	UIDBase   uint32     `json:"uid_base"`
	Ctty      bool       `json:"ctty,omitempty"`
	// FileSizeLimit, if positive, is RLIMIT_FSIZE for PID 1 and everything
	// it starts (SIGXFSZ ignored: EFBIG instead).
	FileSizeLimit int64 `json:"file_size_limit,omitempty"`
	// ExecFD, if positive, is PID 1's end of the exec channel (see
	// execproto.go): the host asks it to start commands in the sandbox.
	ExecFD int `json:"exec_fd,omitempty"`
}

// BindSpec is one detached mount passed to sandbox-init.
type BindSpec struct {
	// Target is the mount point inside the sandbox.
	Target string `json:"target"`
	// Dir says whether the source is a directory (else a file).
	Dir bool `json:"dir"`
	// FD is the mount's file descriptor in sandbox-init.
	FD int `json:"fd"`
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
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode config (%d bytes): %w", len(b), err)
	}
	return &c, nil
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
