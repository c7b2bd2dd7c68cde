package audit

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readAll collects a stream's items by kind and name.
func readAll(t *testing.T, stream []byte) (map[string][]byte, []Item) {
	t.Helper()
	got := map[string][]byte{}
	var items []Item
	err := ReadItems(bytes.NewReader(stream), func(it Item, data []byte) error {
		got[it.Kind+" "+it.Name] = append(got[it.Kind+" "+it.Name], data...)
		items = append(items, it)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, items
}

func TestAuditCollectStreamsFilesEnvAndInference(t *testing.T) {
	dir := t.TempDir()
	secret := "sk-ant-collect-canary-7b3e9d0c1a2f"
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("api_key: "+secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "skipme"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "skipme", "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unreadable"), []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Auth", r.Header.Get("Authorization"))
		w.Write([]byte(`{"data":[]}`))
	}))
	defer srv.Close()
	t.Setenv("OPENAI_API_KEY", "sk-env-canary")
	t.Setenv("NO_PROXY", "127.0.0.1")

	var out bytes.Buffer
	err := Collect(context.Background(), CollectOptions{Roots: []string{dir}, Skip: []string{filepath.Join(dir, "skipme")}, InferenceURL: srv.URL + "/v1/models"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	got, items := readAll(t, out.Bytes())
	if !bytes.Contains(got["file "+filepath.Join(dir, "config.yaml")], []byte(secret)) {
		t.Errorf("config.yaml not streamed: %v", keys(got))
	}
	if _, ok := got["file "+filepath.Join(dir, "skipme", "x")]; ok {
		t.Error("a skipped directory was streamed")
	}
	if _, ok := got["file "+filepath.Join(dir, "empty")]; !ok {
		t.Error("an empty file was not reported")
	}
	if !bytes.Contains(got["env environment of a process in the sandbox"], []byte("OPENAI_API_KEY=sk-env-canary")) {
		t.Error("the environment was not streamed")
	}
	if _, ok := got[fmt.Sprintf("environ /proc/%d/environ", os.Getpid())]; !ok {
		t.Error("this process's /proc/PID/environ was not streamed")
	}
	req := got["request GET "+srv.URL+"/v1/models"]
	if !bytes.Contains(req, []byte("Authorization: Bearer sk-env-canary")) || !bytes.HasPrefix(req, []byte("GET /v1/models HTTP/1.1")) {
		t.Errorf("the request as sent is not recorded: %q", req)
	}
	resp := got["response GET "+srv.URL+"/v1/models"]
	if !bytes.Contains(resp, []byte("X-Seen-Auth: Bearer sk-env-canary")) || !bytes.Contains(resp, []byte(`{"data":[]}`)) {
		t.Errorf("the answer is not recorded: %q", resp)
	}
	end := items[len(items)-1]
	if end.Kind != ItemEnd || end.Meta["files"] == "" {
		t.Fatalf("last item %+v, want the end marker with counts", end)
	}
	for _, it := range items {
		if it.Kind == ItemRequest && it.Meta["credential_env"] != "OPENAI_API_KEY" {
			t.Errorf("credential_env = %q", it.Meta["credential_env"])
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A key across a chunk border must be whole in one chunk.
func TestAuditCollectChunkOverlap(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("sk-proj-border-canary-" + strings.Repeat("z", 40))
	data := bytes.Repeat([]byte{'.'}, 3*MaxItemData)
	at := MaxItemData - len(secret)/2 // straddles the first border
	copy(data[at:], secret)
	p := filepath.Join(dir, "big")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	iw := NewItemWriter(&out)
	n, err := streamFile(iw, p, make([]byte, MaxItemData), 1<<40)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("streamed %d, %v; want %d", n, err, len(data))
	}
	if err := iw.Write(Item{Kind: ItemEnd}, nil); err != nil {
		t.Fatal(err)
	}
	iw.Flush()
	found, chunks := false, 0
	err = ReadItems(&out, func(it Item, b []byte) error {
		if it.Kind != ItemFile {
			return nil
		}
		chunks++
		if bytes.Contains(b, secret) {
			found = true
		}
		if !bytes.Equal(b, data[it.Offset:it.Offset+int64(len(b))]) {
			t.Errorf("chunk at %d does not match the file", it.Offset)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found || chunks < 3 {
		t.Fatalf("found=%v in %d chunks; want the key whole in one of at least 3", found, chunks)
	}
}

func TestAuditCollectReaderRejectsBadStreams(t *testing.T) {
	for _, tt := range []struct{ name, stream, want string }{
		{"no end marker", `{"kind":"env","name":"x","size":1}` + "\na", "without its end marker"},
		{"oversized item", `{"kind":"file","name":"x","size":99999999}` + "\n", "out of bounds"},
		{"negative size", `{"kind":"file","name":"x","size":-1}` + "\n", "out of bounds"},
		{"short data", `{"kind":"file","name":"x","size":10}` + "\nabc", "unexpected EOF"},
		{"not json", "hello\n", "bad header"},
		{"endless header", strings.Repeat("a", maxHeader+10), "header longer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := ReadItems(strings.NewReader(tt.stream), func(Item, []byte) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestAuditCollectArgs(t *testing.T) {
	o, err := ParseCollectArgs([]string{"--max", "1M", "--skip", "/usr", "--inference", "http://x/v1/models", "/", "/tmp"})
	if err != nil || o.MaxBytes != 1<<20 || o.Skip[0] != "/usr" || o.InferenceURL != "http://x/v1/models" || len(o.Roots) != 2 {
		t.Fatalf("%+v %v", o, err)
	}
	for _, bad := range [][]string{{"--max"}, {"--max", "x"}, {"--bogus", "1"}} {
		if _, err := ParseCollectArgs(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
