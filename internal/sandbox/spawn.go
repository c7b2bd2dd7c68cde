package sandbox

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// initProcess is the sandbox's PID 1 once started: the part of exec.Cmd
// that Start and Wait use (Process, ProcessState, Wait).
type initProcess struct {
	Process      *os.Process
	ProcessState *os.ProcessState

	cmd *exec.Cmd // started by cmd.Start (no vfork spawner in this build)

	copies         sync.WaitGroup // the stdio copies of non-file readers and writers
	copyMu         sync.Mutex
	copyErr        error
	closeAfterWait []*os.File
}

// startInit starts cmd (PID 1, from the calling thread, whose network
// namespace it gets) as cmd.Start would, with the attributes run.go sets.
// Where cgo is available it clones with CLONE_VFORK (spawn_cgo.go):
// Go's exec.Cmd cannot with CLONE_NEWUSER (the parent writes the child's id
// maps while it waits), so it copies the whole calling process, and every
// page the caller writes while the copy lives, and the first write to each
// page afterwards, costs a page fault (copy-on-write; each copy a TLB
// shoot-down across CPUs): about 8 ms of CPU per sandbox start for the CLI
// here.
func startInit(cmd *exec.Cmd) (*initProcess, error) {
	if haveSpawn && spawnable(cmd) {
		return spawnInit(cmd)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &initProcess{Process: cmd.Process, cmd: cmd}, nil
}

// Wait waits for PID 1 to exit and for its stdio to be copied, as
// exec.Cmd.Wait.
func (c *initProcess) Wait() error {
	if c.cmd != nil {
		err := c.cmd.Wait()
		c.ProcessState = c.cmd.ProcessState
		return err
	}
	state, err := c.Process.Wait()
	if err != nil {
		return err
	}
	c.ProcessState = state
	c.copies.Wait()
	closeFiles(c.closeAfterWait)
	if !state.Success() {
		return &exec.ExitError{ProcessState: state}
	}
	c.copyMu.Lock()
	defer c.copyMu.Unlock()
	return c.copyErr
}

// stdio returns the child's descriptors 0, 1 and 2 for cmd's Stdin,
// Stdout and Stderr as exec.Cmd would make them (a file as it is, nil as
// /dev/null, anything else through a pipe copied by a goroutine once
// started, Stderr sharing Stdout's pipe when they are the same writer),
// the files to close once the child has them, and the copies to start.
func (c *initProcess) stdio(cmd *exec.Cmd) (fds [3]*os.File, closeAfterStart []*os.File, start []func(), err error) {
	fail := func(err error) ([3]*os.File, []*os.File, []func(), error) {
		closeFiles(closeAfterStart)
		closeFiles(c.closeAfterWait)
		c.closeAfterWait = nil
		return [3]*os.File{}, nil, nil, err
	}
	copyOut := func(w io.Writer, r *os.File) func() {
		c.copies.Add(1)
		return func() {
			defer c.copies.Done()
			_, err := io.Copy(w, r)
			r.Close()
			c.setCopyErr(err)
		}
	}
	switch in := cmd.Stdin.(type) {
	case nil:
		f, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		fds[0] = f
		closeAfterStart = append(closeAfterStart, f)
	case *os.File:
		fds[0] = in
	default:
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		fds[0] = r
		closeAfterStart = append(closeAfterStart, r)
		c.closeAfterWait = append(c.closeAfterWait, w)
		c.copies.Add(1)
		start = append(start, func() {
			defer c.copies.Done()
			_, err := io.Copy(w, in)
			if cerr := w.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
				err = cerr
			}
			// The child may exit without reading all of its input.
			if errors.Is(err, os.ErrClosed) || isEPIPE(err) {
				err = nil
			}
			c.setCopyErr(err)
		})
	}
	for i, out := range []io.Writer{cmd.Stdout, cmd.Stderr} {
		if i == 1 && sameWriter(cmd.Stderr, cmd.Stdout) {
			fds[2] = fds[1]
			break
		}
		switch w := out.(type) {
		case nil:
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				return fail(err)
			}
			fds[1+i] = f
			closeAfterStart = append(closeAfterStart, f)
		case *os.File:
			fds[1+i] = w
		default:
			r, wf, err := os.Pipe()
			if err != nil {
				return fail(err)
			}
			fds[1+i] = wf
			closeAfterStart = append(closeAfterStart, wf)
			c.closeAfterWait = append(c.closeAfterWait, r)
			start = append(start, copyOut(w, r))
		}
	}
	return fds, closeAfterStart, start, nil
}

func (c *initProcess) setCopyErr(err error) {
	c.copyMu.Lock()
	if c.copyErr == nil {
		c.copyErr = err
	}
	c.copyMu.Unlock()
}

// sameWriter says whether a and b are the same writer (exec.Cmd's test for
// sharing one pipe), without panicking on uncomparable types.
func sameWriter(a, b io.Writer) (same bool) {
	if a == nil {
		return false
	}
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

func isEPIPE(err error) bool { return errors.Is(err, syscall.EPIPE) }
