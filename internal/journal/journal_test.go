package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func readAll(t *testing.T, dir string, f Filter) []Entry {
	t.Helper()
	var out []Entry
	err := Read(context.Background(), dir, ReadOptions{Filter: f}, func(e Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return out
}

func TestLineWriterEscapesSandboxOutput(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := NewLineWriter(j, Source{Component: "sandbox", Sandbox: "s1", Stream: StreamStdout})
	// A sandbox tries to clear the operator's screen and forge a log line,
	// and pretends to be a structured event.
	fmt.Fprint(w, "\x1b[2Jhello\r\nfake\x07")
	fmt.Fprint(w, "{\"msg\":\"approved\",\"level\":\"INFO\"}\nlast-no-newline")
	w.Close()
	j.Close()

	raw, err := os.ReadFile(filepath.Join(dir, fileName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(raw, "\x1b\x07\r") {
		t.Fatalf("journal file holds a raw control character: %q", raw)
	}
	got := readAll(t, dir, Filter{})
	want := []string{`\x1b[2Jhello\r`, `fake\x07{"msg":"approved","level":"INFO"}`, "last-no-newline"}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, e := range got {
		if e.Msg != want[i] || e.Stream != StreamStdout || e.Sandbox != "s1" {
			t.Errorf("entry %d = %+v, want msg %q on stdout of s1", i, e, want[i])
		}
		if line := FormatText(e); strings.ContainsAny(line, "\x1b\x07\r\n") {
			t.Errorf("FormatText(%d) = %q holds a control character", i, line)
		}
	}
}

func TestLineWriterStructuredComponent(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := NewLineWriter(j, Source{Component: "policy", Stream: StreamStderr, Structured: true})
	fmt.Fprint(w, `{"time":"x","level":"WARN","msg":"denied","sandbox":"s2","host":"\u001b[31mevil.example","port":443}`+"\nplain text\n")
	j.Close()
	got := readAll(t, dir, Filter{})
	if len(got) != 2 {
		t.Fatalf("got %d entries: %+v", len(got), got)
	}
	e := got[0]
	if e.Stream != StreamEvent || e.Level != "WARN" || e.Msg != "denied" || e.Sandbox != "s2" {
		t.Errorf("structured line = %+v", e)
	}
	if e.Attrs["host"] != `\x1b[31mevil.example` || e.Attrs["port"] != float64(443) {
		t.Errorf("attrs = %#v, want escaped host and port 443", e.Attrs)
	}
	if got[1].Stream != StreamStderr || got[1].Msg != "plain text" {
		t.Errorf("plain line = %+v", got[1])
	}
}

func TestLineWriterSplitsLongLines(t *testing.T) {
	dir := t.TempDir()
	j, _ := Open(dir, Options{})
	w := NewLineWriter(j, Source{Component: "sandbox", Stream: StreamStdout})
	w.Write(bytes.Repeat([]byte("a"), MaxMsgBytes*2+10))
	w.Close()
	j.Close()
	got := readAll(t, dir, Filter{})
	if len(got) != 3 || len(got[0].Msg) != MaxMsgBytes || len(got[2].Msg) != 10 {
		t.Fatalf("long line split into %d entries", len(got))
	}
}

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	j, _ := Open(dir, Options{})
	log := slog.New(NewHandler(j, "supervisor", nil)).With("component", "router")
	log.Debug("hidden")
	log.WithGroup("proc").Warn("restarting\x1b[2J", "sandbox", "s1", "pid", 42, "delay", 2*time.Second, "err", fmt.Errorf("exit\nstatus 3"))
	j.Close()
	got := readAll(t, dir, Filter{})
	if len(got) != 1 {
		t.Fatalf("got %d entries: %+v", len(got), got)
	}
	e := got[0]
	if e.Component != "router" || e.Level != "WARN" || e.Msg != `restarting\x1b[2J` || e.Stream != StreamEvent {
		t.Errorf("entry = %+v", e)
	}
	proc, _ := e.Attrs["proc"].(map[string]any)
	if proc["pid"] != float64(42) || proc["delay"] != "2s" || proc["err"] != `exit\nstatus 3` || proc["sandbox"] != "s1" {
		t.Errorf("attrs = %#v", e.Attrs)
	}
}

func TestConcurrentWritersAreTimeOrdered(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{MaxFileSize: 8 << 10, MaxFiles: 1000})
	if err != nil {
		t.Fatal(err)
	}
	const writers, per = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lw := NewLineWriter(j, Source{Component: fmt.Sprintf("c%d", w), Stream: StreamStdout})
			for i := range per {
				fmt.Fprintf(lw, "%d\n", i)
			}
		}()
	}
	wg.Wait()
	j.Close()
	got := readAll(t, dir, Filter{})
	if len(got) != writers*per {
		t.Fatalf("read %d entries, want %d", len(got), writers*per)
	}
	next := map[string]int{}
	for i, e := range got {
		if i > 0 && e.Time.Before(got[i-1].Time) {
			t.Fatalf("entry %d at %v is before entry %d at %v", i, e.Time, i-1, got[i-1].Time)
		}
		if want := fmt.Sprint(next[e.Component]); e.Msg != want {
			t.Fatalf("writer %s: got line %q, want %q (per-writer order lost)", e.Component, e.Msg, want)
		}
		next[e.Component]++
	}
}

func TestClockSteppingBackKeepsOrder(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	times := []time.Time{base, base.Add(-time.Hour), base.Add(time.Second)}
	i := 0
	j, _ := Open(dir, Options{Now: func() time.Time { t := times[i]; i++; return t }})
	for range times {
		j.Write(Entry{Component: "c", Stream: StreamEvent, Msg: "m"})
	}
	j.Close()
	got := readAll(t, dir, Filter{})
	if !got[1].Time.Equal(base) || !got[2].Time.Equal(base.Add(time.Second)) {
		t.Fatalf("times = %v %v %v", got[0].Time, got[1].Time, got[2].Time)
	}
}

func TestRotationKeepsNFiles(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{MaxFileSize: 1000, MaxFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := j.Write(Entry{Component: "c", Stream: StreamEvent, Msg: fmt.Sprintf("line %03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	files, _ := listFiles(dir)
	if len(files) != 3 {
		t.Fatalf("%d files kept, want 3: %v", len(files), files)
	}
	for _, f := range files {
		st, _ := os.Stat(filepath.Join(dir, f.name))
		if st.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the 1000 limit", f.name, st.Size())
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f.name, st.Mode().Perm())
		}
	}
	got := readAll(t, dir, Filter{})
	if got[len(got)-1].Msg != "line 199" {
		t.Fatalf("newest entry = %q, want line 199", got[len(got)-1].Msg)
	}
	// Reopening continues the newest file rather than starting over.
	j2, _ := Open(dir, Options{MaxFileSize: 1000, MaxFiles: 3})
	j2.Write(Entry{Component: "c", Stream: StreamEvent, Msg: "after reopen"})
	j2.Close()
	got = readAll(t, dir, Filter{})
	if got[len(got)-1].Msg != "after reopen" || got[len(got)-2].Msg != "line 199" {
		t.Fatalf("after reopen, tail = %q %q", got[len(got)-2].Msg, got[len(got)-1].Msg)
	}
}

func TestFilter(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	j, _ := Open(dir, Options{Now: func() time.Time { n++; return base.Add(time.Duration(n) * time.Minute) }})
	j.Write(Entry{Component: "router", Sandbox: "a", Stream: StreamEvent, Msg: "1"})
	j.Write(Entry{Component: "policy", Sandbox: "b", Stream: StreamEvent, Msg: "2"})
	j.Write(Entry{Component: "router", Sandbox: "b", Stream: StreamEvent, Msg: "3"})
	j.Close()
	tests := []struct {
		name string
		f    Filter
		want string
	}{
		{"everything", Filter{}, "123"},
		{"component router", Filter{Component: "router"}, "13"},
		{"sandbox b", Filter{Sandbox: "b"}, "23"},
		{"router in b", Filter{Component: "router", Sandbox: "b"}, "3"},
		{"since second entry", Filter{Since: base.Add(2 * time.Minute)}, "23"},
		{"unknown component", Filter{Component: "nope"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			for _, e := range readAll(t, dir, tt.f) {
				got += e.Msg
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{MaxFileSize: 300, MaxFiles: 100})
	if err != nil {
		t.Fatal(err)
	}
	j.Write(Entry{Component: "c", Stream: StreamEvent, Msg: "before 0"})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const total = 60
	got := make(chan string, total+1)
	errc := make(chan error, 1)
	go func() {
		errc <- Read(ctx, dir, ReadOptions{Follow: true, Poll: 5 * time.Millisecond}, func(e Entry) error {
			got <- e.Msg
			return nil
		})
	}()
	if m := <-got; m != "before 0" {
		t.Fatalf("first followed entry = %q", m)
	}
	for i := 1; i < total; i++ {
		j.Write(Entry{Component: "c", Stream: StreamEvent, Msg: fmt.Sprintf("line %d", i)})
		if i%7 == 0 {
			time.Sleep(2 * time.Millisecond) // let the reader catch up mid-rotation sometimes
		}
	}
	for i := 1; i < total; i++ {
		select {
		case m := <-got:
			if want := fmt.Sprintf("line %d", i); m != want {
				t.Fatalf("followed %q, want %q", m, want)
			}
		case <-ctx.Done():
			t.Fatalf("follow stalled after %d entries", i)
		}
	}
	files, _ := listFiles(dir)
	if len(files) < 5 {
		t.Fatalf("only %d files: rotation was not exercised", len(files))
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Read: %v", err)
	}
	j.Close()
}

func TestJournalLinesAreJSON(t *testing.T) {
	dir := t.TempDir()
	j, _ := Open(dir, Options{})
	j.Write(Entry{Component: "router", Stream: StreamEvent, Msg: "m", Attrs: map[string]any{"port": 443}})
	j.Close()
	raw, _ := os.ReadFile(filepath.Join(dir, fileName(1)))
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(raw), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "component", "stream", "msg", "attrs"} {
		if _, ok := m[k]; !ok {
			t.Errorf("journal line lacks %q: %s", k, raw)
		}
	}
}

func TestLineWriterRateLimit(t *testing.T) {
	dir := t.TempDir()
	j, _ := Open(dir, Options{})
	// A flooding sandbox: 1000 lines at once against a burst of 10 and a
	// rate so low that no token comes back during the test.
	w := NewLineWriter(j, Source{Component: "sandbox", Sandbox: "flood", Stream: StreamStdout, LinesPerSecond: 0.001, Burst: 10})
	for i := range 1000 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	w.Close()
	j.Close()
	got := readAll(t, dir, Filter{})
	if len(got) != 11 {
		t.Fatalf("%d entries, want 10 lines and 1 drop notice", len(got))
	}
	if got[9].Msg != "line 9" || !strings.HasPrefix(got[10].Msg, "[990 lines dropped") {
		t.Errorf("tail = %q, %q", got[9].Msg, got[10].Msg)
	}
}

func FuzzLineWriter(f *testing.F) {
	f.Add([]byte("plain\n"), true)
	f.Add([]byte(`{"msg":"\u001b[2J","level":"INFO","k":{"n":["\u202e"]}}`+"\n"), true)
	f.Add([]byte("\x1b[2J\r\n\xff"), false)
	f.Fuzz(func(t *testing.T, data []byte, structured bool) {
		dir := t.TempDir()
		j, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		w := NewLineWriter(j, Source{Component: "c", Stream: StreamStdout, Structured: structured})
		w.Write(data)
		w.Close()
		j.Close()
		err = Read(context.Background(), dir, ReadOptions{}, func(e Entry) error {
			b, _ := json.Marshal(e)
			var back map[string]any
			json.Unmarshal(b, &back)
			var check func(v any)
			check = func(v any) {
				switch v := v.(type) {
				case string:
					if Escape(v) != v {
						t.Fatalf("stored text %q holds a dangerous character", v)
					}
				case map[string]any:
					for k, x := range v {
						check(k)
						check(x)
					}
				case []any:
					for _, x := range v {
						check(x)
					}
				}
			}
			delete(back, "time")
			check(back)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func BenchmarkLineWriter(b *testing.B) {
	j, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	w := NewLineWriter(j, Source{Component: "sandbox", Sandbox: "s", Stream: StreamStdout})
	line := []byte("GET https://api.github.com/repos/x/y 200 \x1b[32mok\x1b[0m 123ms\n")
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		w.Write(line)
	}
}
