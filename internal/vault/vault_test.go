package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const canary = "sk-canary-7f3a9c2e1d4b8a6f5e0c3b2a1d9e8f7c"

func newDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "router")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustOpen(t *testing.T, dir string) *Vault {
	t.Helper()
	v, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func TestRoundTripAcrossRestart(t *testing.T) {
	dir := newDir(t)
	v := mustOpen(t, dir)
	a, err := v.Set("anthropic", []byte(canary))
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.Set("anthropic", []byte("sk-second-key-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := v.Set("openai", []byte("sk-openai-key-abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID || a.Fingerprint == b.Fingerprint {
		t.Fatalf("two keys share id or fingerprint: %+v %+v", a, b)
	}
	if len(a.Fingerprint) != fingerprintLen {
		t.Fatalf("fingerprint %q: want %d hex chars", a.Fingerprint, fingerprintLen)
	}
	// Same secret again for the same provider: the existing key, no duplicate.
	again, err := v.Set("anthropic", []byte(canary))
	if err != nil || again != a {
		t.Fatalf("Set of an existing secret = %+v, %v; want %+v", again, err, a)
	}
	v.Close()

	v2 := mustOpen(t, dir)
	keys := v2.Keys("anthropic")
	if len(keys) != 2 || keys[0].ID != a.ID || string(keys[0].Secret) != canary || keys[1].ID != b.ID || string(keys[1].Secret) != "sk-second-key-0123456789" {
		t.Fatalf("Keys(anthropic) after reopen: ids %v", keys)
	}
	if k := v2.Keys("openai"); len(k) != 1 || string(k[0].Secret) != "sk-openai-key-abcdef" {
		t.Fatalf("Keys(openai) after reopen wrong")
	}
	if got := v2.List(); len(got) != 3 || got[0] != a || got[1] != b || got[2] != o {
		t.Fatalf("List after reopen = %+v", got)
	}
	if !v2.MemoryLocked() {
		t.Log("note: key memory could not be mlocked (RLIMIT_MEMLOCK)")
	}
	if got := v2.Providers(); strings.Join(got, ",") != "anthropic,openai" {
		t.Fatalf("Providers = %v", got)
	}
}

func TestRemove(t *testing.T) {
	v := mustOpen(t, newDir(t))
	a, _ := v.Set("p", []byte("secret-aaaaaaaa"))
	b, _ := v.Set("p", []byte("secret-bbbbbbbb"))
	_, _ = v.Set("q", []byte("secret-cccccccc"))
	_, _ = v.Set("r", []byte("secret-dddddddd"))
	held := v.Keys("p")[0].Secret // a router holding a view while the key is removed

	if err := v.Remove("p", a.ID); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(held, make([]byte, len(held))) {
		t.Fatal("removed key's memory was not wiped")
	}
	if err := v.Remove("q", ""); err != nil {
		t.Fatal(err)
	}
	if k := v.Keys("p"); len(k) != 1 || k[0].ID != b.ID {
		t.Fatalf("after removing %s: %v", a.ID, k)
	}
	for _, tc := range []struct {
		name, provider, id string
		want               error
	}{
		{"already removed id", "p", a.ID, ErrNotFound},
		{"unknown provider", "nope", "", ErrNotFound},
		{"provider already emptied", "q", "", ErrNotFound},
		{"malformed id", "p", "../../etc", ErrInvalid},
		{"malformed provider", "P/../x", "", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := v.Remove(tc.provider, tc.id); !errors.Is(err, tc.want) {
				t.Fatalf("Remove(%q,%q) = %v, want %v", tc.provider, tc.id, err, tc.want)
			}
		})
	}
	infos, err := v.Delete("p", "")
	if err != nil || len(infos) != 1 || infos[0].ID != b.ID {
		t.Fatalf("Delete(p, all) = %v, %v", infos, err)
	}
	if len(v.Keys("p")) != 0 || len(v.Keys("r")) != 1 {
		t.Fatal("remove all of p touched r or left p")
	}
	held = v.Keys("r")[0].Secret
	v.Close()
	if !bytes.Equal(held, make([]byte, len(held))) {
		t.Fatal("Close did not wipe a key a reader still holds")
	}
	if v.Keys("r") != nil {
		t.Fatal("Keys after Close returned keys")
	}
	v2 := mustOpen(t, v.Dir())
	if l := v2.List(); len(l) != 1 || l[0].Provider != "r" {
		t.Fatalf("after reopen: %+v", l)
	}
}

func TestSetRejects(t *testing.T) {
	v := mustOpen(t, newDir(t))
	for _, tc := range []struct {
		name, provider string
		secret         []byte
	}{
		{"empty secret", "openai", nil},
		{"newline in secret (header injection)", "openai", []byte("sk-abc\r\nX-Evil: 1")},
		{"space in secret", "openai", []byte("sk abc")},
		{"NUL in secret", "openai", []byte("sk-\x00abc")},
		{"non-ASCII secret", "openai", []byte("sk-é")},
		{"oversized secret", "openai", bytes.Repeat([]byte("a"), MaxSecretLen+1)},
		{"empty provider", "", []byte("sk-abc")},
		{"path in provider", "../openai", []byte("sk-abc")},
		{"upper-case provider", "OpenAI", []byte("sk-abc")},
		{"control char provider", "open\x1bai", []byte("sk-abc")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Set(tc.provider, tc.secret)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Set = %v, want ErrInvalid", err)
			}
			if len(tc.secret) > 3 && strings.Contains(err.Error(), string(tc.secret[3:])) {
				t.Fatalf("error %q repeats the secret", err)
			}
		})
	}
	if len(v.List()) != 0 {
		t.Fatal("rejected secrets were stored")
	}
}

// tamper rewrites vault.json through fn on its decoded JSON.
func tamper(t *testing.T, dir string, fn func(f *fileFormat)) {
	t.Helper()
	path := filepath.Join(dir, VaultFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f fileFormat
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	fn(&f)
	out, _ := json.Marshal(f)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTamperingDetected(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fn      func(f *fileFormat)
		wantErr string
	}{
		{"record moved to another provider", func(f *fileFormat) { f.Records[0].Provider = "evil" }, "cannot be authenticated"},
		{"ids swapped between records", func(f *fileFormat) {
			f.Records[0].ID, f.Records[1].ID = f.Records[1].ID, f.Records[0].ID
		}, "cannot be authenticated"},
		{"sealed blobs swapped between providers", func(f *fileFormat) {
			r0, r1 := f.Records[0], f.Records[1]
			f.Records[0].Nonce, f.Records[0].Sealed = r1.Nonce, r1.Sealed
			f.Records[1].Nonce, f.Records[1].Sealed = r0.Nonce, r0.Sealed
		}, "cannot be authenticated"},
		{"ciphertext bit flipped", func(f *fileFormat) { f.Records[0].Sealed[3] ^= 1 }, "cannot be authenticated"},
		{"tag bit flipped", func(f *fileFormat) { s := f.Records[0].Sealed; s[len(s)-1] ^= 0x80 }, "cannot be authenticated"},
		{"nonce changed", func(f *fileFormat) { f.Records[0].Nonce[0] ^= 1 }, "cannot be authenticated"},
		{"fingerprint edited", func(f *fileFormat) { f.Records[0].Fingerprint = "0000000000000000" }, "fingerprint does not match"},
		{"truncated nonce", func(f *fileFormat) { f.Records[0].Nonce = f.Records[0].Nonce[:4] }, "nonce is 4 bytes"},
		{"duplicate id", func(f *fileFormat) { f.Records[1].ID = f.Records[0].ID }, "duplicate id"},
		{"key check replaced", func(f *fileFormat) { f.KeyCheck = strings.Repeat("0", 64) }, "different master key"},
		{"unknown version", func(f *fileFormat) { f.Version = 2 }, "format version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDir(t)
			v := mustOpen(t, dir)
			if _, err := v.Set("anthropic", []byte(canary)); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Set("openai", []byte("sk-other-0123456789")); err != nil {
				t.Fatal(err)
			}
			v.Close()
			tamper(t, dir, tc.fn)
			v2, err := Open(dir)
			if err == nil {
				v2.Close()
				t.Fatal("Open succeeded on a tampered vault")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), filepath.Join(dir, VaultFile)) {
				t.Fatalf("error %q: want it to name %s and say %q", err, VaultFile, tc.wantErr)
			}
			if strings.Contains(err.Error(), canary) {
				t.Fatal("error contains the secret")
			}
		})
	}
}

func TestCorruptFileIsAnErrorNotEmpty(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty file", "", "corrupt"},
		{"truncated JSON", `{"version":1,"records":[`, "corrupt"},
		{"not JSON", "garbage\n", "corrupt"},
		{"unknown field", `{"version":1,"plaintext":"x"}`, "corrupt"},
		{"trailing data", `{"version":1} {}`, "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDir(t)
			v := mustOpen(t, dir)
			v.Close()
			path := filepath.Join(dir, VaultFile)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %v; want an error naming %s saying %q", err, path, tc.want)
			}
		})
	}
}

func TestWrongMasterKey(t *testing.T) {
	dir := newDir(t)
	v := mustOpen(t, dir)
	if _, err := v.Set("anthropic", []byte(canary)); err != nil {
		t.Fatal(err)
	}
	v.Close()
	if err := os.WriteFile(filepath.Join(dir, MasterKeyFile), bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "different master key") {
		t.Fatalf("Open with a replaced master key = %v", err)
	}

	// A wrong master key whose key check was also forged still fails per record.
	v3, err := openForgingCheck(dir)
	if err == nil {
		v3.Close()
		t.Fatal("records opened under the wrong master key")
	}
	if !strings.Contains(err.Error(), "cannot be authenticated") {
		t.Fatalf("err = %v", err)
	}
}

// openForgingCheck rewrites the key check to match the current master key
// (as an attacker who replaced master.key could) and opens the vault.
func openForgingCheck(dir string) (*Vault, error) {
	mk, err := readMasterKey(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		return nil, err
	}
	probe := &Vault{}
	if err := probe.deriveKeys(mk); err != nil {
		return nil, err
	}
	mk.free()
	probe.keys.free()
	path := filepath.Join(dir, VaultFile)
	raw, _ := os.ReadFile(path)
	var f fileFormat
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	f.KeyCheck = probe.check
	out, _ := json.Marshal(f)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return nil, err
	}
	return Open(dir)
}

func TestMasterKeyMissingWithVaultRefused(t *testing.T) {
	dir := newDir(t)
	v := mustOpen(t, dir)
	if _, err := v.Set("anthropic", []byte(canary)); err != nil {
		t.Fatal(err)
	}
	v.Close()
	os.Remove(filepath.Join(dir, MasterKeyFile))
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Fatalf("Open without master key = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, MasterKeyFile)); !os.IsNotExist(err) {
		t.Fatal("Open created a fresh master key next to an existing vault")
	}
}

func TestMasterKeyMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		want string
	}{
		{"truncated", 31, "31 bytes, want 32"},
		{"empty", 0, "0 bytes, want 32"},
		{"too long", 33, "longer than 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDir(t)
			if err := os.WriteFile(filepath.Join(dir, MasterKeyFile), make([]byte, tc.size), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPermissionsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown files to another uid")
	}
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"master key group-readable", func(d string) error { return os.Chmod(filepath.Join(d, MasterKeyFile), 0o640) }, "chmod 600"},
		{"master key world-readable", func(d string) error { return os.Chmod(filepath.Join(d, MasterKeyFile), 0o604) }, "chmod 600"},
		{"master key owned by another uid", func(d string) error { return os.Chown(filepath.Join(d, MasterKeyFile), 65534, 65534) }, "owned by uid 65534"},
		{"master key is a symlink", func(d string) error {
			mk := filepath.Join(d, MasterKeyFile)
			if err := os.Rename(mk, mk+".real"); err != nil {
				return err
			}
			return os.Symlink(mk+".real", mk)
		}, "symbolic link"},
		{"vault file world-readable", func(d string) error { return os.Chmod(filepath.Join(d, VaultFile), 0o644) }, "chmod 600"},
		{"directory group-accessible", func(d string) error { return os.Chmod(d, 0o750) }, "chmod 700"},
		{"directory owned by another uid", func(d string) error { return os.Chown(d, 65534, 65534) }, "owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDir(t)
			v := mustOpen(t, dir)
			if _, err := v.Set("anthropic", []byte(canary)); err != nil {
				t.Fatal(err)
			}
			v.Close()
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want refusal mentioning %q", err, tc.want)
			}
		})
	}
}

func TestFailedWriteKeepsOldData(t *testing.T) {
	dir := newDir(t)
	v := mustOpen(t, dir)
	a, err := v.Set("anthropic", []byte(canary))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, VaultFile))
	v.beforeRename = func(string) error { return errors.New("injected: disk full") }

	if _, err := v.Set("openai", []byte("sk-new-key-123456")); err == nil || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("Set with failing write = %v", err)
	}
	if err := v.Remove("anthropic", a.ID); err == nil {
		t.Fatal("Remove with failing write succeeded")
	}
	// Memory unchanged: the failed Set is invisible, the failed Remove kept the key.
	if l := v.List(); len(l) != 1 || l[0] != a {
		t.Fatalf("List after failed writes = %+v", l)
	}
	if k := v.Keys("anthropic"); len(k) != 1 || string(k[0].Secret) != canary {
		t.Fatal("key lost or wiped after a failed Remove")
	}
	// Disk unchanged, no temp files left.
	after, _ := os.ReadFile(filepath.Join(dir, VaultFile))
	if !bytes.Equal(before, after) {
		t.Fatal("vault file changed by a failed write")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*")); len(m) != 0 {
		t.Fatalf("temp files left: %v", m)
	}
	v.Close()
	v2 := mustOpen(t, dir)
	if l := v2.List(); len(l) != 1 || l[0] != a {
		t.Fatalf("after reopen: %+v", l)
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	dir := newDir(t)
	v := mustOpen(t, dir)
	if _, err := v.Set("anthropic", []byte(canary)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Set("openai", []byte("sk-second-canary-99887766")); err != nil {
		t.Fatal(err)
	}
	v.Close()
	// Scan every file, the sealed vault file included.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{canary, "sk-second-canary-99887766", "canary-7f3a9c2e"} {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("plaintext %q found in %s", s[:6], e.Name())
			}
		}
	}
	fi, err := os.Stat(filepath.Join(dir, MasterKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("master key file: %v %v", fi, err)
	}
	fi, err = os.Stat(filepath.Join(dir, VaultFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("vault file: %v %v", fi, err)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	dir := newDir(t)
	mustOpen(t, dir)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second Open = %v", err)
	}
}

func TestKeyRedaction(t *testing.T) {
	v := mustOpen(t, newDir(t))
	if _, err := v.Set("anthropic", []byte(canary)); err != nil {
		t.Fatal(err)
	}
	k := v.Keys("anthropic")[0]
	leak := []string{canary, "canary-7f3a", fmt.Sprintf("%x", canary)[:20]}

	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, k.Secret), fmt.Sprintf(verb, []Key{k}),
			fmt.Sprintf(verb, struct{ K Key }{k}), fmt.Sprintf(verb, &k))
	}
	outs = append(outs, fmt.Sprint(k), fmt.Sprintln(k.Secret), k.String())
	j, _ := json.Marshal(k)
	outs = append(outs, string(j))
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
		l := slog.New(h)
		l.Info("key", "key", k, "secret", k.Secret, "keys", v.Keys("anthropic"))
		l.Info("key", slog.Any("k", k), slog.Any("s", k.Secret))
	}
	outs = append(outs, logs.String())
	for i, o := range outs {
		for _, l := range leak {
			if strings.Contains(o, l) {
				t.Errorf("output %d leaks the secret: %q", i, o)
			}
		}
		if !strings.Contains(o, "REDACTED") {
			t.Errorf("output %d has no redaction marker: %q", i, o)
		}
	}
	// The raw bytes are still usable where they are needed.
	if "Bearer "+string(k.Secret) != "Bearer "+canary {
		t.Fatal("secret not usable for the outgoing header")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"records":[]}`))
	f.Add([]byte(`{"version":1,"key_check":"","records":[{"provider":"a","id":"000000000000","nonce":"AAAAAAAAAAAAAAAA","sealed":"AAAAAAAAAAAAAAAAAAAAAAAA"}]}`))
	f.Add([]byte(``))
	dir := f.TempDir()
	v, err := Open(filepath.Join(dir, "v"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { v.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		probe := &Vault{aead: v.aead, fpKey: v.fpKey, check: v.check}
		if err := probe.decode("fuzz.json", data); err == nil && len(probe.entries) > 0 {
			t.Fatalf("random data opened as %d sealed records", len(probe.entries))
		}
		for _, e := range probe.entries {
			e.secret.free()
		}
	})
}

func TestConcurrentUse(t *testing.T) {
	v := mustOpen(t, newDir(t))
	if _, err := v.Set("p", []byte("sk-base-key-000000")); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			info, err := v.Set("p", []byte(fmt.Sprintf("sk-rotating-%06d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			if err := v.Remove("p", info.ID); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			if k := v.Keys("p"); len(k) != 1 || string(k[0].Secret) != "sk-base-key-000000" {
				t.Fatalf("after concurrent churn: %d keys", len(k))
			}
			return
		default:
		}
		for _, k := range v.Keys("p") {
			// A reader sees a whole key or (just removed) zeros, never garbage.
			s := string(k.Secret)
			if !strings.HasPrefix(s, "sk-") && strings.Trim(s, "\x00") != "" {
				t.Fatalf("torn read of key %s", k.ID)
			}
		}
		_ = v.List()
	}
}

func BenchmarkKeys(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "v")
	v, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	for i := range 3 {
		if _, err := v.Set("openai", []byte(fmt.Sprintf("sk-bench-%d-0123456789", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(v.Keys("openai")) != 3 {
			b.Fatal("keys")
		}
	}
}

func BenchmarkSet(b *testing.B) {
	v, err := Open(filepath.Join(b.TempDir(), "v"))
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	for i := 0; i < b.N; i++ {
		info, err := v.Set("openai", []byte(fmt.Sprintf("sk-bench-%d-0123456789", i)))
		if err != nil {
			b.Fatal(err)
		}
		if err := v.Remove("openai", info.ID); err != nil {
			b.Fatal(err)
		}
	}
}
