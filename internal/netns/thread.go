package netns

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// onDedicatedThread runs fn on a goroutine locked to an OS thread that is not
// the process's main thread, and never unlocks it: the runtime terminates
// the thread when fn returns. The main thread is avoided because its
// attributes are what /proc/self shows and because the runtime cannot
// destroy it.
func onDedicatedThread(fn func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			return // still locked: the thread exits
		}
		// On the main thread: hold it while another goroutine locks a
		// different thread, then give it back untouched.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			fn()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}
