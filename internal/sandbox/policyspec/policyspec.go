// Package policyspec turns a policy (internal/policy) into what a sandbox
// applies of it (sandbox.Policy): the filesystem paths, the resource limits
// and the local ports. It is separate from both so that package sandbox
// does not import package policy (see sandbox.Policy).
package policyspec

import (
	"slices"

	"github.com/clawcage/clawcage/internal/policy"
	"github.com/clawcage/clawcage/internal/sandbox"
)

// From returns the sandbox part of p; nil for a nil p.
func From(p *policy.Policy) *sandbox.Policy {
	if p == nil {
		return nil
	}
	return &sandbox.Policy{
		ReadOnly:  slices.Clone(p.Filesystem.ReadOnly),
		ReadWrite: slices.Clone(p.Filesystem.ReadWrite),
		Limits: sandbox.Limits{
			Memory: int64(p.Resources.Memory),
			Pids:   int64(p.Resources.Pids),
			CPU:    p.Resources.CPU,
			Tmp:    int64(p.Resources.Tmp),
			Disk:   int64(p.Resources.Disk),
		},
		LocalPorts: slices.Clone(p.LocalPorts),
	}
}
