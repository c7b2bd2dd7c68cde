package sandbox

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The host uid scheme. Every sandbox owns a range of UIDRangeSize host uids
// (and the same gids): uid N inside maps to host uid base+N. Ranges are
// carved from [UIDRangeBase, UIDRangeBase+UIDSlots*UIDRangeSize), which lies
// above the ranges useradd hands out in /etc/subuid (100000+) for any
// realistic number of users and inside the span systemd reserves for
// container uid ranges (524288–1879048191). Host uid 0 is never mapped.
const (
	// UIDRangeSize is the number of uids (and gids) mapped into a sandbox.
	UIDRangeSize = 65536
	// UIDRangeBase is the host uid of slot 0's inside uid 0.
	UIDRangeBase = 0x40000000 // 1073741824
	// UIDSlots is the number of sandboxes that can run at the same time.
	UIDSlots = 4096
)

// UIDRange is one sandbox's allocated host uid range. Release frees it.
type UIDRange struct {
	// Base is the host uid (and gid) that uid 0 inside maps to.
	Base uint32
	// Slot is the index of the range; Base = UIDRangeBase + Slot*UIDRangeSize.
	Slot int
	lock int // the abstract socket holding the slot, or -1
}

// HostUID returns the host uid that inside uid maps to.
func (r *UIDRange) HostUID(inside uint32) uint32 { return r.Base + inside }

// Release frees the slot for other sandboxes. It is safe to call twice.
func (r *UIDRange) Release() {
	if r.lock >= 0 {
		unix.Close(r.lock)
		r.lock = -1
	}
}

// AllocateUIDRange reserves a free slot. A slot is held by binding the
// abstract Unix socket "@clawcage/uid-slot/N" in the caller's network
// namespace: the kernel frees it when the holder exits, however it exits, so
// a crashed sandbox never leaks a slot and nothing is written to disk. The
// search starts at a slot derived from the caller's pid to avoid contention.
func AllocateUIDRange() (*UIDRange, error) {
	start := os.Getpid() % UIDSlots
	for i := range UIDSlots {
		r, err := ClaimUIDRange((start + i) % UIDSlots)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ErrSlotInUse) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("allocate uid range: all %d slots are in use", UIDSlots)
}

// ErrSlotInUse is returned by ClaimUIDRange when another process holds the
// slot.
var ErrSlotInUse = errors.New("uid range slot is in use")

// ClaimUIDRange reserves the given slot (0 <= slot < UIDSlots), for a
// caller that needs the same range every time (a persistent workspace is
// owned by the range's uids). It fails with ErrSlotInUse if another process
// holds it.
func ClaimUIDRange(slot int) (*UIDRange, error) {
	if slot < 0 || slot >= UIDSlots {
		return nil, fmt.Errorf("uid range slot %d: want 0..%d", slot, UIDSlots-1)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("claim uid range slot %d: socket: %w", slot, err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: fmt.Sprintf("@clawcage/uid-slot/%d", slot)})
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("claim uid range slot %d: %w", slot, ErrSlotInUse)
		}
		return nil, fmt.Errorf("claim uid range slot %d: %w", slot, err)
	}
	return &UIDRange{Base: UIDRangeBase + uint32(slot)*UIDRangeSize, Slot: slot, lock: fd}, nil
}

// fixedUIDRange is a range chosen by the caller (Spec.UIDBase); the caller
// guarantees it is not shared.
func fixedUIDRange(base uint32) (*UIDRange, error) {
	if base == 0 || uint64(base)+UIDRangeSize > 1<<32-1 {
		return nil, fmt.Errorf("uid base %d: must be in 1..%d", base, uint64(1<<32-1)-UIDRangeSize)
	}
	return &UIDRange{Base: base, Slot: -1, lock: -1}, nil
}
