package main

import (
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemoKeyLike(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{"openai-shaped-key", "x: sk-" + "abcdefghijklmnopqrstuvwxyz0123456789", true},
		{"key-after-short-sk", "sk-no sk-" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ_-012345", true},
		{"too-short-after-sk", "sk-abcdefghijklmnopqrstuvwxyz01234", false},
		{"no-key", `{"choices":[{"message":{"content":"hello"}}]}`, false},
		{"sk-at-end", "tail sk-", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keyLike([]byte(tc.in)); got != tc.want {
				t.Errorf("keyLike(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestDemoScanForSecret(t *testing.T) {
	secret := []byte("sk-clawcage-demo-0123456789abcdef0123456789abcdef")
	dir := t.TempDir()
	files := map[string][]byte{
		"clean.txt":            []byte("nothing here"),
		"journal/plain.jsonl":  append([]byte(`{"msg":"`), append(secret, '"', '}')...),
		"router/hex.txt":       []byte(hex.EncodeToString(secret)),
		"router/base64.txt":    []byte(base64.StdEncoding.EncodeToString(secret)),
		"router/base64url.txt": []byte(base64.RawURLEncoding.EncodeToString(secret)),
		"netns/skipped":        secret, // namespace files are not data
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := scanForSecret(dir, secret)
	want := map[string]bool{"journal/plain.jsonl": true, "router/hex.txt": true, "router/base64.txt": true, "router/base64url.txt": true}
	if len(got) != len(want) {
		t.Fatalf("scanForSecret found %v, want %v", got, want)
	}
	for _, g := range got {
		if !want[g] {
			t.Errorf("unexpected hit %q", g)
		}
	}
}

func TestDemoPrintCountsFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rows       []demoRow
		wantFailed int
		wantText   []string
	}{
		{"all-held", []demoRow{{Attack: "printenv", Expected: "absent", Observed: "absent", OK: true}}, 0, []string{"printenv  absent    absent    held", "1 checks, 0 failed"}},
		{"key-leaked", []demoRow{{Attack: "printenv", Expected: "absent", Observed: "absent", OK: true}, {Attack: "key in journal", Expected: "absent", Observed: "journal/x.jsonl"}}, 1,
			[]string{"key in journal  absent    journal/x.jsonl  FAILED", "2 checks, 1 failed"}},
		{"skipped-is-not-a-failure", []demoRow{{Attack: "audit: fork-bomb (user)", Expected: "EAGAIN", Observed: "-", OK: true, Skipped: true}}, 0,
			[]string{"audit: fork-bomb (user)  EAGAIN    -         skipped", "1 checks, 0 failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			failed, err := printDemo(&b, tc.rows)
			if err != nil {
				t.Fatal(err)
			}
			if failed != tc.wantFailed {
				t.Errorf("failed = %d, want %d", failed, tc.wantFailed)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
