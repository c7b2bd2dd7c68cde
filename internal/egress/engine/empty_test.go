package engine

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// A stack with no sandboxes yet still runs its policy engine (admin socket
// only); it must open, not exit and crash-loop under the supervisor.
func TestOpenWithoutSandboxes(t *testing.T) {
	eng, err := Open(context.Background(), Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("Open with no sandboxes: %v", err)
	}
	defer eng.Close()
	pending, err := eng.Pending(context.Background())
	if err != nil || len(pending) != 0 {
		t.Fatalf("Pending = %v, %v; want empty, nil", pending, err)
	}
	if _, err := eng.Show("nope"); err == nil {
		t.Fatal(`Show("nope") succeeded on an engine with no sandboxes`)
	}
}
