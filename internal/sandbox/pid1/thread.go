package pid1

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// OnLockedThread runs fn on a new goroutine locked to an OS thread that is
// not the process's main thread (whose attributes /proc/self shows, which
// the command's signals are checked against, and which the runtime cannot
// retire). If fn returns true the thread is unlocked and reused; otherwise
// it stays locked and the runtime terminates it when fn's goroutine ends,
// taking whatever fn changed about it along.
func OnLockedThread(fn func() (reuse bool)) {
	run := func() {
		if fn() {
			runtime.UnlockOSThread()
		}
	}
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			run()
			return
		}
		// On the main thread: hold it while another goroutine locks a
		// different thread, then give it back untouched.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			run()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}
