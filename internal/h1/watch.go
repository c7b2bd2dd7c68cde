package h1

import (
	"context"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// watchDelay is how long a handler runs before the server starts watching
// its connection for a hang-up. A request answered sooner costs a timer
// reset and stop, no goroutine and no system call.
const watchDelay = time.Second

// watchState is the disconnect watch's progress for the current request.
type watchState int

const (
	watchOff       watchState = iota // no request, or the watch was stopped
	watchArmed                       // the timer runs
	watchAwaitBody                   // the timer fired while the handler still reads the body
	watchOn                          // a watcher goroutine waits for readability
	watchEnded                       // the watcher returned (hang-up, data or stop)
)

// watch cancels a request's context when its client hangs up while the
// handler runs (net/http does this with a background read per request).
// After watchDelay, and once the request body is read to its end (before
// that the handler's own reads see the hang-up), one goroutine waits in
// the netpoller for the connection to become readable and peeks with
// MSG_PEEK, consuming nothing: end of stream or an error cancels the
// request; data (a pipelined request) ends the watch. The handler's return
// stops it with a read deadline in the past.
type watch struct {
	c     *conn
	rc    syscall.RawConn // nil when the connection has none: no watch
	timer *time.Timer

	mu      sync.Mutex
	state   watchState
	cancel  context.CancelFunc // the current request's
	bodyEOF bool               // the current request's body is read to its end
	done    chan struct{}      // closed when the watcher goroutine returns
	hungUp  bool               // the client hung up during a request
	peek    [1]byte
}

func (wt *watch) init(c *conn) {
	wt.c = c
	if sc, ok := c.nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			wt.rc = rc
		}
	}
}

// startWatch arms the watch for a request whose context cancel cancels.
func (c *conn) startWatch(cancel context.CancelFunc, bodyEOF bool) {
	wt := &c.watch
	wt.mu.Lock()
	wt.cancel, wt.bodyEOF = cancel, bodyEOF
	if wt.rc != nil {
		wt.state = watchArmed
	}
	wt.mu.Unlock()
	if wt.rc == nil {
		return
	}
	if wt.timer == nil {
		wt.timer = time.AfterFunc(watchDelay, wt.fire)
	} else {
		wt.timer.Reset(watchDelay)
	}
}

// fire runs when watchDelay has passed: it watches now, or once the body
// is read.
func (wt *watch) fire() {
	wt.mu.Lock()
	if wt.state != watchArmed {
		wt.mu.Unlock()
		return
	}
	if !wt.bodyEOF {
		wt.state = watchAwaitBody
		wt.mu.Unlock()
		return
	}
	wt.on()
	done := wt.done
	wt.mu.Unlock()
	wt.run(done)
}

// bodyDone records that the request body was read to its end.
func (c *conn) bodyDone() {
	wt := &c.watch
	wt.mu.Lock()
	wt.bodyEOF = true
	if wt.state != watchAwaitBody {
		wt.mu.Unlock()
		return
	}
	wt.on()
	done := wt.done
	wt.mu.Unlock()
	go wt.run(done)
}

// on starts watching; wt.mu is held. Nothing else reads the connection
// now: the read deadline left by the head or the body is lifted (under
// wt.mu, so that stopWatch's deadline comes after it).
func (wt *watch) on() {
	_ = wt.c.nc.SetReadDeadline(time.Time{})
	wt.state, wt.done = watchOn, make(chan struct{})
}

// run waits for the connection to become readable and peeks at it.
func (wt *watch) run(done chan struct{}) {
	defer close(done)
	hungUp := false
	// The body is read, so the connection's reader is idle; bytes it
	// already holds are the next request: the client is still there.
	if wt.c.br.Buffered() == 0 {
		var n uintptr
		var errno syscall.Errno
		err := wt.rc.Read(func(fd uintptr) bool {
			for {
				n, _, errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&wt.peek[0])), 1,
					syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
				switch errno {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false // wait in the netpoller
				}
				return true
			}
		})
		// err is the stop (deadline) or a close: not the client's doing.
		hungUp = err == nil && (errno != 0 || n == 0)
	}
	wt.mu.Lock()
	if wt.state == watchOn {
		wt.state = watchEnded
		if hungUp {
			wt.hungUp = true
			wt.cancel()
		}
	}
	wt.mu.Unlock()
}

// stopWatch ends the watch when the handler returned; after it, nothing
// reads the connection but the serving goroutine.
func (c *conn) stopWatch() {
	wt := &c.watch
	if wt.timer != nil {
		wt.timer.Stop()
	}
	wt.mu.Lock()
	st, done := wt.state, wt.done
	wt.state, wt.done, wt.cancel = watchOff, nil, nil
	wt.mu.Unlock()
	switch st {
	case watchOn:
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
		<-done
		_ = c.nc.SetReadDeadline(time.Time{})
	case watchEnded:
		<-done
	}
}

// cancelRequest cancels the context of the request in flight, if any
// (Shutdown, when its context ends).
func (c *conn) cancelRequest() {
	wt := &c.watch
	wt.mu.Lock()
	if wt.cancel != nil {
		wt.cancel()
	}
	wt.mu.Unlock()
}

// shutdown stops the watch timer for good.
func (wt *watch) shutdown() {
	if wt.timer != nil {
		wt.timer.Stop()
	}
}

// aLongTimeAgo is a read deadline in the past: it wakes a blocked read at
// once.
var aLongTimeAgo = time.Unix(1, 0)
