package vault

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// newMasterKeyFile is the next master key while a rotation is under way.
const newMasterKeyFile = MasterKeyFile + ".new"

// RotateMasterKey replaces the master key: every secret is re-sealed
// under keys derived from a fresh master key, and fingerprints change with
// it (they are keyed). The steps are ordered so that a crash at any point
// leaves a vault that opens, with the old or the new master key:
//
//  1. write master.key.new (fsync);
//  2. atomically replace vault.json with records sealed under it;
//  3. rename master.key.new over master.key (fsync the directory).
//
// Open finishes an interrupted rotation (vault.json sealed under
// master.key.new) or discards a stale master.key.new (vault.json still
// sealed under master.key).
func (v *Vault) RotateMasterKey() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	master, err := newLockedBuf(masterKeyLen)
	if err != nil {
		return err
	}
	defer master.free()
	if _, err := rand.Read(master.b); err != nil {
		return fmt.Errorf("rotate master key: generate: %w", err)
	}
	next := &Vault{dir: v.dir, beforeRename: v.beforeRename}
	if err := next.deriveKeys(master); err != nil {
		return fmt.Errorf("rotate master key: %w", err)
	}
	// Re-seal every record under the new keys (into new entries that share
	// the locked secrets).
	entries := make([]*entry, 0, len(v.entries))
	for _, e := range v.entries {
		nonce := make([]byte, next.aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			next.keys.free()
			return fmt.Errorf("rotate master key: nonce: %w", err)
		}
		fp := next.fingerprint(e.secret.b)
		rec := e.rec
		rec.Nonce = nonce
		rec.Sealed = next.aead.Seal(nil, nonce, e.secret.b, associatedData(rec.Provider, rec.ID))
		rec.Fingerprint = hex.EncodeToString(fp)[:fingerprintLen]
		entries = append(entries, &entry{rec: rec, fp: fp, secret: e.secret})
	}
	newPath := filepath.Join(v.dir, newMasterKeyFile)
	os.Remove(newPath)
	if err := writeMasterKey(newPath, v.dir, master.b); err != nil {
		next.keys.free()
		return fmt.Errorf("rotate master key: %w", err)
	}
	if err := next.persist(entries); err != nil {
		os.Remove(newPath)
		next.keys.free()
		return fmt.Errorf("rotate master key (old key kept): %w", err)
	}
	// vault.json is now sealed under the new key: switch to it in memory
	// whatever happens to the final rename (Open completes it).
	v.keys.free()
	v.keys, v.aead, v.fpKey, v.check, v.entries = next.keys, next.aead, next.fpKey, next.check, entries
	masterPath := filepath.Join(v.dir, MasterKeyFile)
	if v.beforeMasterRename != nil {
		if err := v.beforeMasterRename(); err != nil {
			return fmt.Errorf("rotate master key: replace %s (completed at next start): %w", masterPath, err)
		}
	}
	if err := os.Rename(newPath, masterPath); err != nil {
		return fmt.Errorf("rotate master key: replace %s (completed at next start): %w", masterPath, err)
	}
	if err := syncDir(v.dir); err != nil {
		return fmt.Errorf("rotate master key: sync %s: %w", v.dir, err)
	}
	return nil
}

func writeMasterKey(name, dir string, key []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// resolveRotation picks the master key that vault.json (raw) was sealed
// under when a master.key.new is present, finishing or discarding an
// interrupted rotation, and switches v to the new key if vault.json is
// sealed under it.
func (v *Vault) resolveRotation(raw []byte) error {
	newPath := filepath.Join(v.dir, newMasterKeyFile)
	if _, err := os.Lstat(newPath); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var head struct {
		KeyCheck string `json:"key_check"`
	}
	if raw == nil || (json.Unmarshal(raw, &head) == nil && head.KeyCheck == v.check) {
		// The rotation never reached vault.json: the new key is unused.
		if err := os.Remove(newPath); err != nil {
			return fmt.Errorf("discard unused %s: %w", newPath, err)
		}
		return nil
	}
	next, err := readMasterKey(newPath)
	if err != nil {
		return fmt.Errorf("interrupted master key rotation: %w", err)
	}
	defer next.free()
	probe := &Vault{}
	if err := probe.deriveKeys(next); err != nil {
		return err
	}
	if head.KeyCheck != probe.check {
		probe.keys.free()
		return nil // neither matches: decode reports the mismatch
	}
	// vault.json is sealed under the new key: finish the rotation.
	if err := os.Rename(newPath, filepath.Join(v.dir, MasterKeyFile)); err != nil {
		probe.keys.free()
		return fmt.Errorf("finish interrupted master key rotation: %w", err)
	}
	if err := syncDir(v.dir); err != nil {
		probe.keys.free()
		return fmt.Errorf("finish interrupted master key rotation: %w", err)
	}
	v.keys.free()
	v.keys, v.aead, v.fpKey, v.check = probe.keys, probe.aead, probe.fpKey, probe.check
	return nil
}
