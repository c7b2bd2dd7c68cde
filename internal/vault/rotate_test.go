package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func setupRotation(t *testing.T) (string, *Vault, []KeyInfo, []byte) {
	t.Helper()
	dir := newDir(t)
	v, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := v.Set("anthropic", []byte(canary))
	b, _ := v.Set("openai", []byte("sk-openai-rotate-123456"))
	old, _ := os.ReadFile(filepath.Join(dir, MasterKeyFile))
	return dir, v, []KeyInfo{a, b}, old
}

func checkKeys(t *testing.T, v *Vault, before []KeyInfo) {
	t.Helper()
	if k := v.Keys("anthropic"); len(k) != 1 || k[0].ID != before[0].ID || string(k[0].Secret) != canary {
		t.Fatal("anthropic key lost or changed by rotation")
	}
	if k := v.Keys("openai"); len(k) != 1 || k[0].ID != before[1].ID || string(k[0].Secret) != "sk-openai-rotate-123456" {
		t.Fatal("openai key lost or changed by rotation")
	}
}

func TestRotateMasterKey(t *testing.T) {
	dir, v, before, old := setupRotation(t)
	if err := v.RotateMasterKey(); err != nil {
		t.Fatal(err)
	}
	checkKeys(t, v, before)
	now, _ := os.ReadFile(filepath.Join(dir, MasterKeyFile))
	if bytes.Equal(now, old) || len(now) != masterKeyLen {
		t.Fatal("master key not replaced")
	}
	if l := v.List(); l[0].Fingerprint == before[0].Fingerprint {
		t.Fatal("fingerprint unchanged: not keyed by the new master key")
	}
	// Still usable after rotation, and survives a restart.
	if _, err := v.Set("anthropic", []byte("sk-after-rotation-0000")); err != nil {
		t.Fatal(err)
	}
	v.Close()
	v2 := mustOpen(t, dir)
	if k := v2.Keys("anthropic"); len(k) != 2 || string(k[0].Secret) != canary || string(k[1].Secret) != "sk-after-rotation-0000" {
		t.Fatal("keys after rotation and restart wrong")
	}
	if _, err := os.Stat(filepath.Join(dir, newMasterKeyFile)); !os.IsNotExist(err) {
		t.Fatal("master.key.new left behind")
	}
	// The old master key no longer opens the vault.
	v2.Close()
	os.WriteFile(filepath.Join(dir, MasterKeyFile), old, 0o600)
	if _, err := Open(dir); err == nil {
		t.Fatal("vault opened with the pre-rotation master key")
	}
}

func TestRotateInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name string
		// crash injects the failure; wantNew says which master key must win.
		crash   func(v *Vault)
		wantNew bool
	}{
		{"crash after writing vault.json, before replacing master.key", func(v *Vault) {
			v.beforeMasterRename = func() error { return errors.New("injected crash") }
		}, true},
		{"crash before vault.json was replaced", func(v *Vault) {
			v.beforeRename = func(string) error { return errors.New("injected crash") }
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, v, before, old := setupRotation(t)
			tc.crash(v)
			err := v.RotateMasterKey()
			if err == nil {
				t.Fatal("injected failure not reported")
			}
			checkKeys(t, v, before) // the running vault keeps working either way
			newKey, _ := os.ReadFile(filepath.Join(dir, newMasterKeyFile))
			if tc.wantNew != (len(newKey) == masterKeyLen) {
				t.Fatalf("master.key.new present = %v, want %v", len(newKey) == masterKeyLen, tc.wantNew)
			}
			v.Close()
			if !tc.wantNew {
				// Simulate a crash that left an unused master.key.new behind.
				os.WriteFile(filepath.Join(dir, newMasterKeyFile), bytes.Repeat([]byte{9}, 32), 0o600)
			}
			v2, err := Open(dir)
			if err != nil {
				t.Fatalf("Open after interrupted rotation: %v", err)
			}
			defer v2.Close()
			checkKeys(t, v2, before)
			cur, _ := os.ReadFile(filepath.Join(dir, MasterKeyFile))
			if tc.wantNew && !bytes.Equal(cur, newKey) {
				t.Fatal("rotation not completed at Open")
			}
			if !tc.wantNew && !bytes.Equal(cur, old) {
				t.Fatal("old master key replaced by an unused one")
			}
			if _, err := os.Stat(filepath.Join(dir, newMasterKeyFile)); !os.IsNotExist(err) {
				t.Fatal("master.key.new left behind")
			}
		})
	}
}
