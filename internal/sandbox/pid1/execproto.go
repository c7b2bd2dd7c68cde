package pid1

// The exec channel: how the host starts a command in a running sandbox.
//
// When the host starts the sandbox it keeps one end of a SOCK_SEQPACKET
// socketpair; PID 1 gets the other one (Config.ExecFD, close-on-exec, so no
// command ever holds it). For every command to run, the host creates a new
// SOCK_SEQPACKET socketpair (the session) and sends one message on the exec
// channel: an ExecRequest as JSON with four descriptors attached
// (SCM_RIGHTS): the session's PID 1 end, then the command's stdin, stdout
// and stderr. On the session, the host sends ExecMessage{Signal} to
// forward signals and shuts down its sending side (or closes it) to kill the
// command; PID 1 answers ExecMessage{Started} or ExecMessage{Error, Code},
// then ExecMessage{Exit} once the command has exited and been reaped.

// MaxExecRequest is the largest ExecRequest message, in bytes.
const MaxExecRequest = 64 << 10

// ExecFiles is the number of descriptors attached to an ExecRequest: the
// session, stdin, stdout, stderr.
const ExecFiles = 4

// ExecRequest asks PID 1 to start a command in the running sandbox with
// exactly the confinement of the sandbox's own command.
type ExecRequest struct {
	// Argv is the command and its arguments (PATH lookup inside).
	Argv []string `json:"argv"`
	// Env is added to the sandbox's own environment (later entries win).
	Env []string `json:"env,omitempty"`
	// UID is the uid and gid inside the sandbox: UserUID or 0.
	UID int `json:"uid"`
	// Dir is the working directory; empty means WorkspaceDir.
	Dir string `json:"dir,omitempty"`
	// TTY says stdin is a pty slave that becomes the command's controlling
	// terminal (in the new session the command always gets).
	TTY bool `json:"tty,omitempty"`
}

// ExecMessage is one message on an exec session, in either direction.
type ExecMessage struct {
	// Signal (host to PID 1) is a signal number to send to the command.
	Signal int `json:"signal,omitempty"`
	// Started (PID 1 to host) says the command runs, as Pid in the
	// sandbox's PID namespace.
	Started bool `json:"started,omitempty"`
	Pid     int  `json:"pid,omitempty"`
	// Error and Code (PID 1 to host) say the command could not be started
	// (Code is ExitSetupFailed, ExitNotExecutable or ExitNotFound).
	Error string `json:"error,omitempty"`
	Code  int    `json:"code,omitempty"`
	// Exit (PID 1 to host) is the command's exit status: its exit code, or
	// 128+n if signal n killed it.
	Exit *int `json:"exit,omitempty"`
}
