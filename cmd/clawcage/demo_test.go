package main

import (
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
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
