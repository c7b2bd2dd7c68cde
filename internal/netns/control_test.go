package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// controlPair returns both ends of a control channel as connections.
func controlPair(t *testing.T) (local, remote *net.UnixConn) {
	t.Helper()
	local, rf, err := ControlPair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(rf)
	rf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close(); c.Close() })
	return local, c.(*net.UnixConn)
}

// bannerHandler serves each added listener with the sandbox's name and
// refuses sandboxes whose name starts with "broken".
type bannerHandler struct {
	mu      sync.Mutex
	lns     map[string]net.Listener
	removed []string
}

func (h *bannerHandler) AddListener(_ context.Context, sb string, ln net.Listener) error {
	if strings.HasPrefix(sb, "broken") {
		ln.Close()
		return fmt.Errorf("sandbox %s: policy does not compile", sb)
	}
	h.mu.Lock()
	h.lns[sb] = ln
	h.mu.Unlock()
	serveBanner(ln, "served "+sb)
	return nil
}

func (h *bannerHandler) RemoveListener(_ context.Context, sb string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ln, ok := h.lns[sb]
	if !ok {
		return fmt.Errorf("sandbox %s has no listener", sb)
	}
	ln.Close()
	delete(h.lns, sb)
	h.removed = append(h.removed, sb)
	return nil
}

func receive(t *testing.T, c *net.UnixConn) ControlMessage {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, ln, err := ReceiveControl(c)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if ln != nil {
		ln.Close()
		t.Fatalf("unexpected listener with %+v", m)
	}
	return m
}

func TestControlAddRemove(t *testing.T) {
	sup, comp := controlPair(t)
	h := &bannerHandler{lns: map[string]net.Listener{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		if err := ReportReady(comp); err != nil {
			served <- err
			return
		}
		served <- ServeControl(ctx, comp, h)
	}()
	if m := receive(t, sup); m.Op != OpReady {
		t.Fatalf("first message %+v, want ready", m)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ListenerFile(ln)
	defer f.Close()
	tests := []struct {
		name    string
		msg     ControlMessage
		file    *os.File
		wantErr string
	}{
		{"add serves the listener", ControlMessage{Op: OpAdd, ID: 1, Sandbox: "sb1"}, f, ""},
		{"add the handler refuses reports its error", ControlMessage{Op: OpAdd, ID: 2, Sandbox: "broken1"}, f, "policy does not compile"},
		{"remove stops serving", ControlMessage{Op: OpRemove, ID: 3, Sandbox: "sb1"}, nil, ""},
		{"remove of an unknown sandbox reports its error", ControlMessage{Op: OpRemove, ID: 4, Sandbox: "nope"}, nil, "has no listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := SendControl(sup, tt.msg, tt.file); err != nil {
				t.Fatal(err)
			}
			m := receive(t, sup)
			if m.Op != OpDone || m.ID != tt.msg.ID || !strings.Contains(m.Error, tt.wantErr) || (tt.wantErr == "") != (m.Error == "") {
				t.Fatalf("answer %+v, want done id %d error %q", m, tt.msg.ID, tt.wantErr)
			}
			if tt.msg.Op == OpAdd && tt.wantErr == "" {
				c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if got := readBanner(t, c); got != "served "+tt.msg.Sandbox {
					t.Errorf("listener answered %q", got)
				}
			}
		})
	}
	h.mu.Lock()
	if len(h.removed) != 1 || h.removed[0] != "sb1" {
		t.Errorf("removed %v", h.removed)
	}
	h.mu.Unlock()
	// The supervisor going away ends ServeControl with an error (the
	// component exits and is restarted); ending ctx ends it quietly.
	sup.Close()
	if err := <-served; err == nil || !errors.Is(err, io.EOF) {
		t.Errorf("ServeControl after the peer closed: %v, want EOF", err)
	}
}

func TestControlServeStopsWithContext(t *testing.T) {
	_, comp := controlPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeControl(ctx, comp, &bannerHandler{lns: map[string]net.Listener{}}) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeControl: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeControl did not return after cancel")
	}
}

func TestReceiveControlRejectsBadPackets(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	lnFile, _ := ListenerFile(ln)
	defer lnFile.Close()
	devNull, _ := os.Open("/dev/null")
	defer devNull.Close()
	x, y := unixPair(t)
	defer x.Close()
	defer y.Close()
	connected, _ := x.File()
	defer connected.Close()

	tests := []struct {
		name string
		data string
		file *os.File
		want string
	}{
		{"unknown operation", `{"op":"exec","id":1,"sandbox":"a"}`, nil, `unknown control operation "exec"`},
		{"add without a listener", `{"op":"add","id":1,"sandbox":"a"}`, nil, "add message with 0 descriptors, want 1"},
		{"remove carrying a descriptor", `{"op":"remove","id":1,"sandbox":"a"}`, lnFile, "remove message with 1 descriptors, want 0"},
		{"ready carrying a descriptor", `{"op":"ready"}`, lnFile, "ready message with 1 descriptors"},
		{"add of a regular file", `{"op":"add","id":1,"sandbox":"a"}`, devNull, "not a socket"},
		{"add of a connected socket", `{"op":"add","id":1,"sandbox":"a"}`, connected, "not listening"},
		{"add without an id", `{"op":"add","sandbox":"a"}`, lnFile, "without an id"},
		{"sandbox name with a separator", `{"op":"remove","id":1,"sandbox":"a:b"}`, nil, "listener name"},
		{"empty sandbox name", `{"op":"remove","id":1}`, nil, "listener name"},
		{"not JSON", `add a`, nil, "decode"},
		{"unknown field", `{"op":"ready","uid":0}`, nil, "unknown field"},
		{"oversized packet", `{"op":"ready","error":"` + strings.Repeat("x", maxControlMessage) + `"}`, nil, "over 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := controlPair(t)
			before := len(openFDs(t))
			var oob []byte
			if tt.file != nil {
				oob = unix.UnixRights(int(tt.file.Fd()))
			}
			if _, _, err := a.WriteMsgUnix([]byte(tt.data), oob, nil); err != nil {
				t.Fatal(err)
			}
			m, got, err := ReceiveControl(b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				if got != nil {
					got.Close()
				}
				t.Fatalf("ReceiveControl = %+v, %v; want error containing %q", m, err, tt.want)
			}
			if after := len(openFDs(t)); after != before {
				t.Errorf("%d descriptors open after the error, %d before", after, before)
			}
		})
	}

	t.Run("closed peer is EOF", func(t *testing.T) {
		a, b := controlPair(t)
		a.Close()
		if _, _, err := ReceiveControl(b); !errors.Is(err, io.EOF) {
			t.Fatalf("err %v, want EOF", err)
		}
	})
	t.Run("send checks the message too", func(t *testing.T) {
		a, _ := controlPair(t)
		if err := SendControl(a, ControlMessage{Op: OpAdd, ID: 1, Sandbox: "a"}, nil); err == nil {
			t.Error("add without a listener was sent")
		}
	})
}

func TestExportInheritedControl(t *testing.T) {
	ctx := testCtx(t)
	sup, remote, err := ControlPair()
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = []string{helperEnv + "=control", EnvControlFD + "=99"}
	cmd.ExtraFiles = []*os.File{devNullFile(t)} // the listeners come first
	ExportControl(cmd, remote)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	remote.Close()
	if m := receive(t, sup); m.Op != OpReady {
		t.Fatalf("first message %+v (helper: %s)", m, out.String())
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	f, _ := ListenerFile(ln)
	defer f.Close()
	if err := SendControl(sup, ControlMessage{Op: OpAdd, ID: 7, Sandbox: "child"}, f); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, sup); m.Op != OpDone || m.ID != 7 || m.Error != "" {
		t.Fatalf("answer %+v", m)
	}
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBanner(t, c); got != "served child" {
		t.Errorf("child's listener answered %q", got)
	}
	sup.Close() // the child's ServeControl sees EOF and exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "env clean") || !strings.Contains(out.String(), "control closed: ") {
		t.Errorf("helper output %q", out.String())
	}
}

func devNullFile(t *testing.T) *os.File {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func helperControl() int {
	c, err := InheritedControl()
	if err != nil || c == nil {
		fmt.Println("inherited control:", err)
		return 1
	}
	if _, ok := os.LookupEnv(EnvControlFD); !ok {
		fmt.Println("env clean")
	}
	if err := ReportReady(c); err != nil {
		fmt.Println(err)
		return 1
	}
	err = ServeControl(context.Background(), c, &bannerHandler{lns: map[string]net.Listener{}})
	fmt.Println("control closed:", err)
	return 0
}

func TestInheritedControlRejectsBadEnvironment(t *testing.T) {
	t.Setenv(EnvControlFD, "")
	os.Unsetenv(EnvControlFD)
	if c, err := InheritedControl(); c != nil || err != nil {
		t.Fatalf("without the variable: %v, %v", c, err)
	}
	x, y := unixPair(t) // SOCK_STREAM, not a control channel
	defer x.Close()
	defer y.Close()
	xf, _ := x.File()
	defer xf.Close()
	null := devNullFile(t)
	tests := []struct{ name, value, want string }{
		{"not a number", "three", "want a descriptor number"},
		{"stdin", "0", "want a descriptor number"},
		{"closed descriptor", "999", "not a socket"},
		{"regular file", fmt.Sprint(null.Fd()), "not a socket"},
		{"stream socket", fmt.Sprint(xf.Fd()), "want SOCK_SEQPACKET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvControlFD, tt.value)
			c, err := InheritedControl()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("InheritedControl = %v, %v; want %q", c, err, tt.want)
			}
			if _, ok := os.LookupEnv(EnvControlFD); ok {
				t.Error("variable left in the environment")
			}
		})
	}
}
