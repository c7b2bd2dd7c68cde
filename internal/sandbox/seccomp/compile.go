package seccomp

import (
	"fmt"
	"sort"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// archInfo is what the compiler needs to know about an architecture.
type archInfo struct {
	name      string
	auditArch uint32                           // AUDIT_ARCH_* the kernel reports for this ABI
	x32Bit    uint32                           // if non-zero, numbers with this bit (another ABI) are killed
	sysnum    func(name string) (uint32, bool) // system call name to number
}

// Offsets into struct seccomp_data. The argument offsets are those of the
// low 32 bits of each 64-bit argument on a little-endian machine.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

func retErrno(e unix.Errno) uint32 {
	return unix.SECCOMP_RET_ERRNO | (uint32(e) & unix.SECCOMP_RET_DATA)
}

// compile turns rules into a classic BPF seccomp program for arch:
//
//	arch != arch.auditArch         -> kill process
//	nr has the x32 bit (nr != -1)  -> kill process
//	for each system call in rules, argument-dependent ones first:
//	    nr == N: first rule whose conditions hold -> its errno; none -> allow
//	otherwise                      -> allow
func compile(rules []Rule, arch archInfo) ([]bpf.Instruction, error) {
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: arch.auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
	}
	if arch.x32Bit != 0 {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: arch.x32Bit, SkipFalse: 2},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0xffffffff, SkipTrue: 1},
			bpf.RetConstant{Val: retKill},
		)
	}

	// Group rules by system call, keeping the order in which calls first appear.
	var order []string
	byName := map[string][]Rule{}
	for _, r := range rules {
		if _, seen := byName[r.Syscall]; !seen {
			order = append(order, r.Syscall)
		}
		byName[r.Syscall] = append(byName[r.Syscall], r)
	}
	// Argument-dependent calls first: the kernel caches the result of a call
	// whose outcome never depends on its arguments (every call not listed,
	// and the unconditionally denied ones) and skips the filter for it, so
	// only these run the program, and frequent ones (ioctl, socket, clone)
	// should find their block after a few instructions.
	sort.SliceStable(order, func(i, j int) bool {
		return hasConditions(byName[order[i]]) && !hasConditions(byName[order[j]])
	})
	for _, name := range order {
		nr, ok := arch.sysnum(name)
		if !ok {
			return nil, fmt.Errorf("seccomp rule for %s: no such system call on %s", name, arch.name)
		}
		block, err := compileBlock(byName[name])
		if err != nil {
			return nil, fmt.Errorf("seccomp rule for %s: %w", name, err)
		}
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipTrue: 1},
			bpf.Jump{Skip: uint32(len(block))},
		)
		prog = append(prog, block...)
	}
	return append(prog, bpf.RetConstant{Val: retAllow}), nil
}

// compileBlock compiles the rules of one system call. The block ends in a
// return on every path, so control never falls out of it.
func compileBlock(rules []Rule) ([]bpf.Instruction, error) {
	var block []bpf.Instruction
	for i, r := range rules {
		if len(r.When) == 0 {
			if i != len(rules)-1 {
				return nil, fmt.Errorf("unconditional rule hides the %d rules after it", len(rules)-1-i)
			}
			return append(block, bpf.RetConstant{Val: retErrno(r.Errno)}), nil
		}
		// Each condition is: load, optional mask, one jump that on failure
		// skips to the next rule (past the remaining conditions and the return).
		sizes := make([]int, len(r.When))
		for j, c := range r.When {
			if c.Arg < 0 || c.Arg > 5 {
				return nil, fmt.Errorf("condition %q: argument index %d out of range", c, c.Arg)
			}
			sizes[j] = 2
			if needsMask(c) {
				sizes[j] = 3
			}
		}
		for j, c := range r.When {
			rest := 1 // the return
			for _, s := range sizes[j+1:] {
				rest += s
			}
			if rest > 255 {
				return nil, fmt.Errorf("rule has too many conditions")
			}
			block = append(block, bpf.LoadAbsolute{Off: uint32(offArgs + 8*c.Arg), Size: 4})
			if needsMask(c) {
				block = append(block, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: c.Mask})
			}
			var cond bpf.JumpTest
			switch c.Op {
			case Equal:
				cond = bpf.JumpEqual
			case NotEqual:
				cond = bpf.JumpNotEqual
			case AnyBits:
				cond = bpf.JumpBitsSet
			default:
				return nil, fmt.Errorf("condition %q: unknown operation %d", c, c.Op)
			}
			block = append(block, bpf.JumpIf{Cond: cond, Val: c.Value, SkipFalse: uint8(rest)})
		}
		block = append(block, bpf.RetConstant{Val: retErrno(r.Errno)})
	}
	return append(block, bpf.RetConstant{Val: retAllow}), nil
}

func hasConditions(rules []Rule) bool {
	for _, r := range rules {
		if len(r.When) > 0 {
			return true
		}
	}
	return false
}

func needsMask(c Cond) bool {
	return c.Op != AnyBits && c.Mask != 0 && c.Mask != ^uint32(0)
}
