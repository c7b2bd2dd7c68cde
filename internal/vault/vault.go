// Package vault is the privacy router's encrypted store of model provider
// keys. Each secret is sealed with AES-256-GCM under a key derived from a
// master key that lives in a 0600 file readable only by the router's uid;
// the provider and key id are the associated data, so a sealed record moved
// to another provider or id no longer opens. Decrypted secrets live only in
// mlocked memory outside the Go heap and are wiped on Remove and Close.
// The vault stores and hands out keys; it does not talk to providers.
package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File names inside the vault directory.
const (
	// MasterKeyFile holds the 32-byte master key, mode 0600.
	MasterKeyFile = "master.key"
	// VaultFile holds the sealed records (JSON), mode 0600.
	VaultFile = "vault.json"
	// lockFile is flocked while a Vault is open, so two processes never
	// write the same vault.
	lockFile = "vault.lock"
	// tmpPrefix names the temporary files of atomic writes.
	tmpPrefix = ".vault.json.tmp-"
)

// Limits on what can be stored.
const (
	// MaxSecretLen bounds one secret; provider keys are far shorter.
	MaxSecretLen = 16 << 10
	// MaxKeysPerProvider bounds how many keys one provider may have.
	MaxKeysPerProvider = 64
	masterKeyLen       = 32
	fingerprintLen     = 16 // hex characters shown
)

// Errors callers can test for with errors.Is.
var (
	// ErrNotFound: no key matched the provider (and id).
	ErrNotFound = errors.New("no such key")
	// ErrClosed: the vault was closed.
	ErrClosed = errors.New("vault is closed")
	// ErrInvalid: a provider name or secret was rejected.
	ErrInvalid = errors.New("invalid input")
)

var (
	// Compiled on first use, not at package initialization (which every
	// clawcage start would pay for).
	providerRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`) })
	idRe       = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{12}$`) })
)

// Vault is an open key vault. It is safe for concurrent use.
type Vault struct {
	dir  string
	lock *os.File // flocked vault.lock

	mu      sync.RWMutex
	closed  bool
	keys    *lockedBuf // master key, seal key, fingerprint key, check key
	aead    cipher.AEAD
	fpKey   []byte // view into keys
	check   string // key check value written to the vault file
	entries []*entry

	// beforeRename, when set (tests), runs between writing and renaming the
	// new vault file; an error aborts the write.
	beforeRename func(tmp string) error
	// beforeMasterRename, when set (tests), runs before the last step of
	// RotateMasterKey; an error simulates a crash there.
	beforeMasterRename func() error
}

type entry struct {
	rec    record
	fp     []byte // full keyed fingerprint
	secret *lockedBuf
}

func (e *entry) info() KeyInfo {
	return KeyInfo{Provider: e.rec.Provider, ID: e.rec.ID, Fingerprint: e.rec.Fingerprint, Created: e.rec.Created}
}

// Open opens (creating on first use) the vault in dir, the router's state
// directory. dir must be owned by the current uid and not accessible to
// group or others; master.key and vault.json likewise (0600). Open refuses
// anything looser, a master key that does not match the vault file, and a
// vault file that is corrupt or tampered with, naming the file.
func Open(dir string) (*Vault, error) {
	dir = filepath.Clean(dir)
	if err := ensurePrivateDir(dir); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	v := &Vault{dir: dir, lock: lock}
	if err := v.load(); err != nil {
		v.release()
		return nil, err
	}
	return v, nil
}

func ensurePrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("create vault directory %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("vault directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("vault directory %s: not a directory (symlinks are refused)", dir)
	}
	return checkPrivate(dir, fi)
}

// checkPrivate refuses a file or directory not owned by the current uid or
// accessible to group or others.
func checkPrivate(name string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: cannot read owner", name)
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid {
		return fmt.Errorf("%s is owned by uid %d, not the router's uid %d: refusing to use it (fix: chown %d %s)", name, st.Uid, uid, uid, name)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		want := "600"
		if fi.IsDir() {
			want = "700"
		}
		return fmt.Errorf("%s has mode %04o, readable or writable by group/others: refusing to use it (fix: chmod %s %s)", name, perm, want, name)
	}
	return nil
}

func lockDir(dir string) (*os.File, error) {
	name := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open vault lock %s: %w", name, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("vault %s is in use by another process (lock %s held)", dir, name)
		}
		return nil, fmt.Errorf("lock vault %s: %w", name, err)
	}
	return f, nil
}

// openPrivate opens name for reading without following symlinks and checks
// ownership and mode on the opened file (no check-then-open race).
func openPrivate(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", name)
	}
	if err == nil {
		err = checkPrivate(name, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (v *Vault) load() error {
	vaultPath := filepath.Join(v.dir, VaultFile)
	masterPath := filepath.Join(v.dir, MasterKeyFile)

	vf, err := openPrivate(vaultPath)
	vaultExists := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open vault file: %w", err)
	}
	var raw []byte
	if vaultExists {
		raw, err = io.ReadAll(io.LimitReader(vf, 64<<20))
		vf.Close()
		if err != nil {
			return fmt.Errorf("read vault file %s: %w", vaultPath, err)
		}
	}

	master, err := readMasterKey(masterPath)
	if errors.Is(err, os.ErrNotExist) {
		if vaultExists {
			return fmt.Errorf("%s exists but %s is missing: the sealed keys cannot be opened; restore the master key or move the vault file away and set the keys again", vaultPath, masterPath)
		}
		master, err = createMasterKey(masterPath, v.dir)
	}
	if err != nil {
		return err
	}
	err = v.deriveKeys(master)
	master.free()
	if err != nil {
		return err
	}
	if err := v.resolveRotation(raw); err != nil {
		return err
	}
	removeStaleTemps(v.dir)
	if !vaultExists {
		return nil
	}
	return v.decode(vaultPath, raw)
}

func readMasterKey(name string) (*lockedBuf, error) {
	f, err := openPrivate(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("open master key: %w", err)
	}
	defer f.Close()
	buf, err := newLockedBuf(masterKeyLen + 1)
	if err != nil {
		return nil, err
	}
	n, err := io.ReadFull(f, buf.b)
	if err != io.ErrUnexpectedEOF || n != masterKeyLen {
		buf.free()
		if err == nil || n > masterKeyLen {
			return nil, fmt.Errorf("master key %s: longer than %d bytes: not a clawcage master key", name, masterKeyLen)
		}
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, fmt.Errorf("master key %s: %d bytes, want %d: truncated or not a clawcage master key", name, n, masterKeyLen)
		}
		return nil, fmt.Errorf("read master key %s: %w", name, err)
	}
	buf.b = buf.b[:masterKeyLen]
	return buf, nil
}

func createMasterKey(name, dir string) (*lockedBuf, error) {
	buf, err := newLockedBuf(masterKeyLen)
	if err != nil {
		return nil, err
	}
	if _, err := rand.Read(buf.b); err != nil {
		buf.free()
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	if err := writeMasterKey(name, dir, buf.b); err != nil {
		buf.free()
		return nil, fmt.Errorf("create master key: %w", err)
	}
	return buf, nil
}

// Key derivation labels (HKDF-SHA-256 info strings). Changing one makes
// every existing vault unreadable.
const (
	infoSeal        = "clawcage vault v1 seal"
	infoFingerprint = "clawcage vault v1 fingerprint"
	infoCheck       = "clawcage vault v1 key check"
)

func (v *Vault) deriveKeys(master *lockedBuf) error {
	keys, err := newLockedBuf(3 * 32)
	if err != nil {
		return err
	}
	for i, info := range []string{infoSeal, infoFingerprint, infoCheck} {
		k, err := hkdf.Key(sha256.New, master.b, nil, info, 32)
		if err != nil {
			keys.free()
			return fmt.Errorf("derive vault keys: %w", err)
		}
		copy(keys.b[i*32:], k)
		clear(k)
	}
	block, err := aes.NewCipher(keys.b[:32])
	if err != nil {
		keys.free()
		return fmt.Errorf("vault cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		keys.free()
		return fmt.Errorf("vault cipher: %w", err)
	}
	m := hmac.New(sha256.New, keys.b[64:96])
	m.Write([]byte("clawcage vault key check"))
	v.keys, v.aead, v.fpKey = keys, aead, keys.b[32:64]
	v.check = hex.EncodeToString(m.Sum(nil))
	return nil
}

// MemoryLocked reports whether every buffer holding key material could be
// mlocked. When false (RLIMIT_MEMLOCK too small), keys may be swapped out;
// the router should warn, saying to raise the limit (LimitMEMLOCK=).
func (v *Vault) MemoryLocked() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.keys != nil && !v.keys.locked {
		return false
	}
	for _, e := range v.entries {
		if !e.secret.locked {
			return false
		}
	}
	return true
}

// Dir returns the vault's directory.
func (v *Vault) Dir() string { return v.dir }

// associatedData binds a sealed secret to its provider and id.
func associatedData(provider, id string) []byte {
	ad := make([]byte, 0, 32+len(provider)+len(id))
	ad = append(ad, "clawcage vault v1\x00"...)
	ad = append(ad, provider...)
	ad = append(ad, 0)
	ad = append(ad, id...)
	return ad
}

func (v *Vault) fingerprint(secret []byte) []byte {
	m := hmac.New(sha256.New, v.fpKey)
	m.Write(secret)
	return m.Sum(nil)
}

// ValidateProvider checks a provider name: lower-case letters, digits,
// '.', '_' and '-', at most 64 characters, starting with a letter or digit.
func ValidateProvider(provider string) error {
	if !providerRe().MatchString(provider) {
		return fmt.Errorf("%w: provider name %q: want 1-64 of a-z 0-9 . _ - starting with a letter or digit", ErrInvalid, provider)
	}
	return nil
}

// ValidateSecret checks a secret without revealing it: 1..MaxSecretLen
// bytes of visible ASCII (no spaces, newlines or control characters, which
// would corrupt or inject into the HTTP header it is sent in).
func ValidateSecret(secret []byte) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: empty secret", ErrInvalid)
	}
	if len(secret) > MaxSecretLen {
		return fmt.Errorf("%w: secret is %d bytes, more than %d", ErrInvalid, len(secret), MaxSecretLen)
	}
	for i, c := range secret {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: secret byte %d of %d is not visible ASCII (space, newline, control or non-ASCII character)", ErrInvalid, i+1, len(secret))
		}
	}
	return nil
}

// Set stores a new key for provider and returns its description. Several
// keys per provider are allowed (the router rotates through them); storing
// a secret the provider already has returns the existing key unchanged.
// The vault file is rewritten atomically before the key becomes visible:
// if the write fails nothing changes.
func (v *Vault) Set(provider string, secret []byte) (KeyInfo, error) {
	if err := ValidateProvider(provider); err != nil {
		return KeyInfo{}, err
	}
	if err := ValidateSecret(secret); err != nil {
		return KeyInfo{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return KeyInfo{}, ErrClosed
	}
	fp := v.fingerprint(secret)
	n := 0
	for _, e := range v.entries {
		if e.rec.Provider != provider {
			continue
		}
		n++
		if hmac.Equal(e.fp, fp) {
			return e.info(), nil
		}
	}
	if n >= MaxKeysPerProvider {
		return KeyInfo{}, fmt.Errorf("%w: provider %s already has %d keys", ErrInvalid, provider, n)
	}
	id, err := v.newID()
	if err != nil {
		return KeyInfo{}, err
	}
	nonce := make([]byte, v.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return KeyInfo{}, fmt.Errorf("generate nonce: %w", err)
	}
	rec := record{
		Provider:    provider,
		ID:          id,
		Created:     time.Now().UTC().Truncate(time.Millisecond),
		Fingerprint: hex.EncodeToString(fp)[:fingerprintLen],
		Nonce:       nonce,
		Sealed:      v.aead.Seal(nil, nonce, secret, associatedData(provider, id)),
	}
	buf, err := lockedCopy(secret)
	if err != nil {
		return KeyInfo{}, err
	}
	e := &entry{rec: rec, fp: fp, secret: buf}
	next := append(slices.Clip(v.entries), e)
	if err := v.persist(next); err != nil {
		buf.free()
		return KeyInfo{}, err
	}
	v.entries = next
	return e.info(), nil
}

func (v *Vault) newID() (string, error) {
	var b [6]byte
	for range 16 {
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("generate key id: %w", err)
		}
		id := hex.EncodeToString(b[:])
		if !slices.ContainsFunc(v.entries, func(e *entry) bool { return e.rec.ID == id }) {
			return id, nil
		}
	}
	return "", errors.New("generate key id: no unused id found")
}

// List describes every stored key, ordered by provider then creation.
func (v *Vault) List() []KeyInfo {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]KeyInfo, 0, len(v.entries))
	for _, e := range v.entries {
		out = append(out, e.info())
	}
	slices.SortStableFunc(out, func(a, b KeyInfo) int {
		if a.Provider != b.Provider {
			if a.Provider < b.Provider {
				return -1
			}
			return 1
		}
		return a.Created.Compare(b.Created)
	})
	return out
}

// Keys returns provider's keys in the order they were stored. Each Secret
// is a view of locked memory, valid until the key is removed or the vault
// closed (see Key).
func (v *Vault) Keys(provider string) []Key {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return nil
	}
	n := 0
	for _, e := range v.entries {
		if e.rec.Provider == provider {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]Key, 0, n)
	for _, e := range v.entries {
		if e.rec.Provider == provider {
			out = append(out, Key{ID: e.rec.ID, Secret: Secret(e.secret.b)})
		}
	}
	return out
}

// Providers returns the names of the providers that have at least one key.
func (v *Vault) Providers() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for _, e := range v.entries {
		if !slices.Contains(out, e.rec.Provider) {
			out = append(out, e.rec.Provider)
		}
	}
	slices.Sort(out)
	return out
}

// Remove deletes provider's key id, or all of provider's keys when id is
// "". It returns an error wrapping ErrNotFound when nothing matched.
func (v *Vault) Remove(provider, id string) error {
	_, err := v.Delete(provider, id)
	return err
}

// Delete is Remove that also returns the descriptions of the removed keys.
// Their secrets are wiped from memory once the vault file no longer holds
// them.
func (v *Vault) Delete(provider, id string) ([]KeyInfo, error) {
	if err := ValidateProvider(provider); err != nil {
		return nil, err
	}
	if id != "" && !idRe().MatchString(id) {
		return nil, fmt.Errorf("%w: key id %q: want 12 lower-case hex digits", ErrInvalid, id)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, ErrClosed
	}
	var keep, gone []*entry
	for _, e := range v.entries {
		if e.rec.Provider == provider && (id == "" || e.rec.ID == id) {
			gone = append(gone, e)
		} else {
			keep = append(keep, e)
		}
	}
	if len(gone) == 0 {
		if id == "" {
			return nil, fmt.Errorf("remove keys of %s: %w", provider, ErrNotFound)
		}
		return nil, fmt.Errorf("remove key %s/%s: %w", provider, id, ErrNotFound)
	}
	if err := v.persist(keep); err != nil {
		return nil, err
	}
	v.entries = keep
	infos := make([]KeyInfo, 0, len(gone))
	for _, e := range gone {
		infos = append(infos, e.info())
		// Wipe now but keep mapped so a concurrent reader never faults.
		e.secret.retire()
	}
	return infos, nil
}

// Close wipes all key material and releases the vault lock. Secrets
// previously returned by Keys read as zeros afterwards (their pages stay
// mapped, so a late reader never faults).
func (v *Vault) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	// Wipe, but keep the pages mapped: a request still in flight during
	// shutdown then reads zeros (and fails upstream) instead of faulting.
	for _, e := range v.entries {
		e.secret.retire()
	}
	v.entries, v.aead, v.fpKey = nil, nil, nil
	v.release()
	return nil
}

func (v *Vault) release() {
	for _, e := range v.entries {
		e.secret.free()
	}
	v.keys.free()
	v.keys = nil
	if v.lock != nil {
		_ = unix.Flock(int(v.lock.Fd()), unix.LOCK_UN)
		v.lock.Close()
		v.lock = nil
	}
}

// persist atomically replaces the vault file with entries: write a temp
// file in the same directory, fsync it, rename it over the old one, fsync
// the directory. On any failure the old file is untouched.
func (v *Vault) persist(entries []*entry) error {
	data, err := v.encode(entries)
	if err != nil {
		return err
	}
	target := filepath.Join(v.dir, VaultFile)
	f, err := os.CreateTemp(v.dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("write vault %s: %w", target, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write vault %s (nothing changed): %w", target, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if v.beforeRename != nil {
		if err := v.beforeRename(tmp); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, target); err != nil {
		return fail(err)
	}
	if err := syncDir(v.dir); err != nil {
		return fmt.Errorf("write vault %s: sync directory: %w", target, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func removeStaleTemps(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
	for _, m := range matches {
		os.Remove(m)
	}
}
