package runcmd

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// TTY gives an interactive sandbox a pty of its own: the operator's
// terminal is put in raw mode and relayed to and from the pty master, and
// the sandbox gets only the slave (as its controlling terminal). The
// sandbox never holds a descriptor of the operator's terminal, so it can
// neither inject keystrokes into it (TIOCSTI) nor change its settings.
type TTY struct {
	// Slave is the pty end the sandbox gets (stdin, stdout, stderr).
	Slave  *os.File
	master *os.File
	saved  *unix.Termios
	winch  chan os.Signal
	copied chan struct{}
}

// OpenTTY allocates the pty and starts relaying; call Close when the
// sandbox has exited.
func OpenTTY(in, out *os.File) (*TTY, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("allocate a pty for the sandbox: %w", err)
	}
	t := &TTY{master: master, Slave: slave, winch: make(chan os.Signal, 1), copied: make(chan struct{})}
	if err := pty.InheritSize(in, master); err != nil {
		t.closeFiles()
		return nil, fmt.Errorf("copy the window size: %w", err)
	}
	saved, err := unix.IoctlGetTermios(int(in.Fd()), unix.TCGETS)
	if err != nil {
		t.closeFiles()
		return nil, fmt.Errorf("read terminal settings: %w", err)
	}
	raw := *saved
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, &raw); err != nil {
		t.closeFiles()
		return nil, fmt.Errorf("set terminal to raw mode: %w", err)
	}
	t.saved = saved

	signal.Notify(t.winch, syscall.SIGWINCH)
	go func() {
		for range t.winch {
			pty.InheritSize(in, master)
		}
	}()
	go io.Copy(master, in) // ends with the process (a blocked terminal read)
	go func() {
		io.Copy(out, master) // EIO once the last slave holder is gone
		close(t.copied)
	}()
	return t, nil
}

// Close stops relaying after the sandbox exited, draining its last output,
// and restores the operator's terminal.
func (t *TTY) Close(in *os.File) {
	signal.Stop(t.winch)
	close(t.winch)
	t.Slave.Close()
	<-t.copied
	t.master.Close()
	if t.saved != nil {
		unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, t.saved)
	}
}

func (t *TTY) closeFiles() {
	t.master.Close()
	t.Slave.Close()
}
