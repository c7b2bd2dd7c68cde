package vault

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockedBuf is a buffer outside the Go heap: an anonymous private mapping
// that is mlocked (never swapped), excluded from core dumps
// (MADV_DONTDUMP) and not inherited by forked children (MADV_WIPEONFORK).
// The garbage collector never copies it, so wiping it removes the only copy.
type lockedBuf struct {
	mem    []byte // the whole mapping, page aligned
	b      []byte // the first n bytes: the payload
	locked bool   // mlock succeeded
}

// newLockedBuf maps a buffer of n bytes (n > 0).
func newLockedBuf(n int) (*lockedBuf, error) {
	if n <= 0 {
		return nil, fmt.Errorf("locked buffer of %d bytes: size must be positive", n)
	}
	page := os.Getpagesize()
	size := (n + page - 1) / page * page
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes for key memory: %w", size, err)
	}
	// Best effort hardening; older kernels lack WIPEONFORK.
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	_ = unix.Madvise(mem, unix.MADV_WIPEONFORK)
	l := &lockedBuf{mem: mem, b: mem[:n:n]}
	// mlock can fail under a small RLIMIT_MEMLOCK; the key then stays
	// usable but swappable, and Vault.MemoryLocked reports it.
	l.locked = unix.Mlock(mem) == nil
	return l, nil
}

// lockedCopy returns a locked buffer holding a copy of src.
func lockedCopy(src []byte) (*lockedBuf, error) {
	l, err := newLockedBuf(len(src))
	if err != nil {
		return nil, err
	}
	copy(l.b, src)
	return l, nil
}

// retire wipes and unlocks the buffer but leaves it mapped (a few pages
// per key for the life of the process), for buffers whose views may still
// be held by other goroutines.
func (l *lockedBuf) retire() {
	if l == nil || l.mem == nil {
		return
	}
	clear(l.mem)
	if l.locked {
		_ = unix.Munlock(l.mem)
		l.locked = false
	}
}

// free wipes and unmaps the buffer. No view of it may be used afterwards.
func (l *lockedBuf) free() {
	if l == nil || l.mem == nil {
		return
	}
	clear(l.mem)
	if l.locked {
		_ = unix.Munlock(l.mem)
	}
	_ = unix.Munmap(l.mem)
	l.mem, l.b = nil, nil
}
