package stack

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"

	"github.com/clawcage/clawcage/internal/cgroup"
)

// CgroupPrefix is the start of every sandbox cgroup name of the stack on
// state: "clawcage-" and 8 hex digits of the SHA-256 of the state
// directory's absolute path. Two stacks on one machine (two state
// directories) may both have a sandbox "assistant"; their groups differ.
func CgroupPrefix(state string) string {
	if abs, err := filepath.Abs(state); err == nil {
		state = abs
	}
	sum := sha256.Sum256([]byte(filepath.Clean(state)))
	return "clawcage-" + hex.EncodeToString(sum[:4]) + "-"
}

// CgroupName is the cgroup name of sandbox on the stack at state (at most
// 9+8+1+63 characters, within the 128 cgroup names may have).
func CgroupName(state, sandbox string) string { return CgroupPrefix(state) + sandbox }

// staleCgroup reports whether a cgroup name is one of this stack's
// sandbox groups: at start none of them runs, so the empty ones are
// leftovers of a supervisor that was killed (cgroup.RemoveStale never
// removes a group with processes in it).
func staleCgroup(state string) func(name string) bool {
	prefix := CgroupPrefix(state)
	return func(name string) bool { return strings.HasPrefix(name, prefix) && len(name) > len(prefix) }
}

// removeStaleCgroups removes this stack's leftover empty sandbox groups.
func removeStaleCgroups(state string) error { return cgroup.RemoveStale(staleCgroup(state)) }
