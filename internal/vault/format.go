package vault

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// fileVersion is the vault file format version.
const fileVersion = 1

// fileFormat is vault.json. Nothing in it is secret: secrets are sealed,
// fingerprints are keyed, the key check is an HMAC under a derived key.
type fileFormat struct {
	Version int `json:"version"`
	// Cipher names the AEAD, for readers of the file.
	Cipher string `json:"cipher"`
	// KeyCheck is HMAC-SHA-256 of a fixed label under a key derived from
	// the master key: it tells "wrong master key" from "tampered record".
	KeyCheck string   `json:"key_check"`
	Records  []record `json:"records"`
}

// record is one sealed secret.
type record struct {
	Provider    string    `json:"provider"`
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	Fingerprint string    `json:"fingerprint"`
	Nonce       []byte    `json:"nonce"`  // base64 in JSON
	Sealed      []byte    `json:"sealed"` // AES-256-GCM ciphertext+tag, base64
}

const cipherName = "AES-256-GCM, HKDF-SHA-256 derived key, AD=provider,id"

func (v *Vault) encode(entries []*entry) ([]byte, error) {
	f := fileFormat{Version: fileVersion, Cipher: cipherName, KeyCheck: v.check, Records: make([]record, 0, len(entries))}
	for _, e := range entries {
		f.Records = append(f.Records, e.rec)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode vault: %w", err)
	}
	return append(data, '\n'), nil
}

// decode parses and opens every record of the vault file at path. Any
// defect is an error naming the file: a vault never silently comes up
// empty or partial.
func (v *Vault) decode(path string, raw []byte) (err error) {
	defer func() {
		if err != nil {
			for _, e := range v.entries {
				e.secret.free()
			}
			v.entries = nil
		}
	}()
	var f fileFormat
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("vault file %s is corrupt (not the expected JSON): %w", path, err)
	}
	if dec.More() {
		return fmt.Errorf("vault file %s is corrupt: trailing data after the JSON document", path)
	}
	if f.Version != fileVersion {
		return fmt.Errorf("vault file %s: format version %d, this clawcage reads version %d", path, f.Version, fileVersion)
	}
	if !hmac.Equal([]byte(f.KeyCheck), []byte(v.check)) {
		return fmt.Errorf("vault file %s was sealed under a different master key than %s (was the master key replaced?)", path, MasterKeyFile)
	}
	ids := map[string]bool{}
	perProvider := map[string]int{}
	for i, rec := range f.Records {
		where := fmt.Sprintf("vault file %s: records[%d]", path, i)
		if err := ValidateProvider(rec.Provider); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if !idRe().MatchString(rec.ID) {
			return fmt.Errorf("%s: id %q is not 12 lower-case hex digits", where, rec.ID)
		}
		if ids[rec.ID] {
			return fmt.Errorf("%s: duplicate id %s", where, rec.ID)
		}
		ids[rec.ID] = true
		if perProvider[rec.Provider]++; perProvider[rec.Provider] > MaxKeysPerProvider {
			return fmt.Errorf("%s: more than %d keys for provider %s", where, MaxKeysPerProvider, rec.Provider)
		}
		if len(rec.Nonce) != v.aead.NonceSize() {
			return fmt.Errorf("%s (%s/%s): nonce is %d bytes, want %d", where, rec.Provider, rec.ID, len(rec.Nonce), v.aead.NonceSize())
		}
		if len(rec.Sealed) < v.aead.Overhead()+1 || len(rec.Sealed) > MaxSecretLen+v.aead.Overhead() {
			return fmt.Errorf("%s (%s/%s): sealed secret has an impossible length %d", where, rec.Provider, rec.ID, len(rec.Sealed))
		}
		buf, err := newLockedBuf(len(rec.Sealed) - v.aead.Overhead())
		if err != nil {
			return err
		}
		// Open into locked memory: the plaintext never lands on the heap.
		if _, err := v.aead.Open(buf.b[:0], rec.Nonce, rec.Sealed, associatedData(rec.Provider, rec.ID)); err != nil {
			buf.free()
			return fmt.Errorf("%s (%s/%s): cannot be authenticated: the record was tampered with or moved to another provider or id", where, rec.Provider, rec.ID)
		}
		fp := v.fingerprint(buf.b)
		if rec.Fingerprint != hex.EncodeToString(fp)[:fingerprintLen] {
			buf.free()
			return fmt.Errorf("%s (%s/%s): fingerprint does not match the sealed secret (tampered)", where, rec.Provider, rec.ID)
		}
		v.entries = append(v.entries, &entry{rec: rec, fp: fp, secret: buf})
	}
	return nil
}
