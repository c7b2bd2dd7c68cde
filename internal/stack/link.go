package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/clawcage/clawcage/internal/netns"
)

// linkTimeout bounds how long a component may take to answer an add or a
// remove; one that does not answer is restarted with the full listener set.
const linkTimeout = 10 * time.Second

// errLinkGone means the component instance behind a link has exited (or
// never started); its successor inherits the current listener set.
var errLinkGone = errors.New("component instance gone")

// componentError is a component's own answer: it could not load the
// sandbox (and refuses its requests), or could not stop serving it.
type componentError struct{ msg string }

func (e *componentError) Error() string { return e.msg }

// link is the supervisor's end of one component instance's control channel
// (netns.ControlPair). has, guarded by runner.mu, is the set of sandboxes
// that instance inherited or was sent.
type link struct {
	conn    *net.UnixConn
	has     map[string]bool
	replies chan netns.ControlMessage
	dead    chan struct{}

	reqMu sync.Mutex // one request at a time
	next  uint64
}

func newLink(conn *net.UnixConn, names []string) *link {
	l := &link{conn: conn, has: map[string]bool{}, replies: make(chan netns.ControlMessage, 4), dead: make(chan struct{})}
	for _, n := range names {
		l.has[n] = true
	}
	return l
}

// read delivers the component's messages until the channel closes; ready
// is called when the component reports it serves.
func (l *link) read(ready func()) {
	defer close(l.dead)
	defer l.conn.Close()
	for {
		m, ln, err := netns.ReceiveControl(l.conn)
		if err != nil {
			return
		}
		if ln != nil { // components never send listeners
			ln.Close()
			return
		}
		switch m.Op {
		case netns.OpReady:
			ready()
		case netns.OpDone:
			select {
			case l.replies <- m:
			default: // nobody waits for it
			}
		default:
			return
		}
	}
}

// request sends one add (with the listener file) or remove and waits for
// the component's answer.
func (l *link) request(ctx context.Context, op, sandbox string, f *os.File) error {
	l.reqMu.Lock()
	defer l.reqMu.Unlock()
	l.next++
	id := l.next
	if err := netns.SendControl(l.conn, netns.ControlMessage{Op: op, ID: id, Sandbox: sandbox}, f); err != nil {
		select {
		case <-l.dead:
			return errLinkGone
		default:
		}
		return err
	}
	t := time.NewTimer(linkTimeout)
	defer t.Stop()
	for {
		select {
		case m := <-l.replies:
			if m.ID != id {
				continue // the answer to an earlier request that timed out
			}
			if m.Error != "" {
				return &componentError{m.Error}
			}
			return nil
		case <-l.dead:
			return errLinkGone
		case <-t.C:
			return fmt.Errorf("no answer within %v", linkTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *link) close() { l.conn.Close() }
