package vaulttest

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const secret = "sk-canary-0123456789abcdef"

func TestScanBytes(t *testing.T) {
	b64 := func(prefix string) string { return base64.StdEncoding.EncodeToString([]byte(prefix + secret + "tail")) }
	js, _ := json.Marshal(struct{ K []byte }{[]byte(secret)})
	for _, tc := range []struct {
		name, data, want string
	}{
		{"raw in a log line", `level=INFO msg=req auth="Bearer ` + secret + `"`, "raw"},
		{"hex dump", "x=" + hex.EncodeToString([]byte(secret)), "hex"},
		{"upper hex dump", "x=" + strings.ToUpper(hex.EncodeToString([]byte(secret))), "HEX"},
		{"json []byte (base64)", string(js), "base64"},
		{"base64 aligned in a longer blob", b64(""), "base64"},
		{"base64 shifted by one byte", b64("a"), "base64"},
		{"base64 shifted by two bytes", b64("ab"), "base64"},
		{"base64url shifted", base64.URLEncoding.EncodeToString([]byte("?" + secret)), "base64"},
		{"clean log", "level=INFO msg=req key_id=abc123 fingerprint=0011", ""},
		{"prefix only", "sk-canary-0123", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ScanBytes([]byte(tc.data), []byte(secret))
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("false positive: %+v", got)
				}
				return
			}
			if len(got) == 0 || !strings.HasPrefix(got[0].Encoding, tc.want) {
				t.Fatalf("ScanBytes = %+v, want a %s finding", got, tc.want)
			}
		})
	}
	if ScanBytes([]byte("anything"), nil) != nil {
		t.Fatal("empty secret matched")
	}
}

// recorder captures failures so the assertion itself can be tested.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) { r.errs = append(r.errs, format) }
func (r *recorder) Helper()                           {}
func (r *recorder) Logf(string, ...any)               {}

func TestAssertNoSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("router/vault.json", secret) // the sealed store is exempt (it is checked by the vault's own tests)
	write("router/usage.db", "rows without it")
	r := &recorder{TB: t}
	AssertNoSecret(r, []byte(secret), dir)
	if len(r.errs) != 0 {
		t.Fatalf("clean tree reported: %v", r.errs)
	}
	write("logs/router.log", "oops "+secret)
	write("router/usage.db-wal", hex.EncodeToString([]byte(secret)))
	r = &recorder{TB: t}
	AssertNoSecret(r, []byte(secret), dir)
	if len(r.errs) != 2 {
		t.Fatalf("want 2 findings (log, wal), got %d", len(r.errs))
	}
	r = &recorder{TB: t}
	AssertNotInBytes(r, []byte(secret), "body", []byte(`{"key":"`+secret+`"}`))
	if len(r.errs) != 1 {
		t.Fatalf("AssertNotInBytes: %d findings", len(r.errs))
	}
}
