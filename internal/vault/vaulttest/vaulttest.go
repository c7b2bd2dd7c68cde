// Package vaulttest holds canary-key helpers for tests: they look for a
// secret's bytes, in the encodings a leak would most likely take (raw, hex,
// base64 at any alignment), in files, logs and response bodies. It is for
// tests only.
package vaulttest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/clawcage/clawcage/internal/vault"
)

// Finding is one place a secret was found.
type Finding struct {
	// Encoding is how the secret appeared: "raw", "hex", "HEX",
	// "base64", "base64url" (the latter two at any byte alignment).
	Encoding string
	// Offset is the byte offset of the match in the scanned data.
	Offset int
}

type needle struct {
	encoding string
	b        []byte
}

// minEncodedLen: encoded fragments shorter than this match too easily by
// chance to be meaningful evidence.
const minEncodedLen = 8

func needles(secret []byte) []needle {
	ns := []needle{
		{"raw", secret},
		{"hex", []byte(hex.EncodeToString(secret))},
		{"HEX", bytes.ToUpper([]byte(hex.EncodeToString(secret)))},
	}
	// A secret embedded in a longer base64 stream is encoded differently
	// depending on its offset modulo 3; keep only the characters made of
	// the secret's bits alone.
	n := len(secret)
	for _, enc := range []struct {
		name string
		e    *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for shift := range 3 {
			in := append(make([]byte, shift), secret...)
			s := enc.e.EncodeToString(in)
			start := (8*shift + 5) / 6
			end := 8 * (shift + n) / 6
			if end-start >= minEncodedLen {
				ns = append(ns, needle{enc.name, []byte(s[start:end])})
			}
		}
	}
	return ns
}

// ScanBytes returns every place secret occurs in data, raw or encoded.
// An empty secret is never found.
func ScanBytes(data, secret []byte) []Finding {
	if len(secret) == 0 {
		return nil
	}
	var out []Finding
	for _, nd := range needles(secret) {
		for off := 0; ; {
			i := bytes.Index(data[off:], nd.b)
			if i < 0 {
				break
			}
			out = append(out, Finding{Encoding: nd.encoding, Offset: off + i})
			off += i + 1
		}
	}
	return out
}

// AssertNotInBytes fails t if secret occurs in data; what names the data
// ("router log", "response body") in the failure message. The message never
// contains the secret itself.
func AssertNotInBytes(t testing.TB, secret []byte, what string, data []byte) {
	t.Helper()
	if len(secret) == 0 {
		t.Fatalf("AssertNotInBytes(%s): empty canary secret", what)
	}
	for _, f := range ScanBytes(data, secret) {
		t.Errorf("canary secret leaked into %s: %s-encoded at byte offset %d", what, f.Encoding, f.Offset)
	}
}

// AssertNoSecret walks every regular file under dirs and fails t if the
// secret occurs in any of them, except in vault files (vault.json, the
// sealed store, which holds only ciphertext; its temp files likewise).
// SQLite databases, WAL files and logs are all scanned.
func AssertNoSecret(t testing.TB, secret []byte, dirs ...string) {
	t.Helper()
	if len(secret) == 0 {
		t.Fatal("AssertNoSecret: empty canary secret")
	}
	scanned := 0
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if isVaultFile(d.Name()) {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			scanned++
			for _, f := range ScanBytes(data, secret) {
				t.Errorf("canary secret found in file %s: %s-encoded at byte offset %d", path, f.Encoding, f.Offset)
			}
			return nil
		})
		if err != nil {
			t.Errorf("AssertNoSecret: walk %s: %v", dir, err)
		}
	}
	t.Logf("AssertNoSecret: scanned %d files under %v", scanned, dirs)
}

func isVaultFile(name string) bool {
	if name == vault.VaultFile {
		return true
	}
	const tmp = ".vault.json.tmp-"
	return len(name) > len(tmp) && name[:len(tmp)] == tmp
}
