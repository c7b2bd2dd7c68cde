// Package kernel probes the running kernel for the features clawcage's
// sandbox depends on (Landlock, seccomp filters, user and network
// namespaces, cgroup memory and pids controllers, a safe fs.suid_dumpable)
// and the optional ones (cgroup cpu, nftables, pidfd), and says for each
// missing one how to get it.
//
// It only observes: every probe is a read of /proc or /sys, a system call
// that creates nothing lasting (a Landlock version query, a pidfd on itself),
// or a short-lived child process started in new namespaces. It is what
// `clawcage doctor` prints; the sandbox itself fails closed on its own when a
// mechanism is missing, whatever the probe said earlier.
package kernel

import (
	"errors"
	"fmt"
	"strings"

	"github.com/clawcage/clawcage/internal/mountinfo"
)

// Names of the features a Report carries.
const (
	Landlock     = "landlock"
	Seccomp      = "seccomp"
	UserNS       = "userns"
	NetNS        = "netns"
	CgroupMemory = "cgroup-memory"
	CgroupPids   = "cgroup-pids"
	CgroupCPU    = "cgroup-cpu"
	Nftables     = "nftables"
	Pidfd        = "pidfd"
	SuidDumpable = "suid-dumpable"
)

// Feature is one probed kernel feature.
type Feature struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`      // sandboxes cannot be enforced without it
	Detail   string `json:"detail"`        // what was found, such as "ABI 7"
	Fix      string `json:"fix,omitempty"` // how to get it, when it is missing
}

// Status is "ok", "missing" (required and absent) or "absent" (optional).
func (f Feature) Status() string {
	switch {
	case f.OK:
		return "ok"
	case f.Required:
		return "missing"
	}
	return "absent"
}

// Cgroups describes the cgroup hierarchies this process sees.
type Cgroups struct {
	// Version is "v1", "v2", "hybrid" (v1 controllers and a v2 mount) or "none".
	Version string `json:"version"`
	// Controllers maps each available controller to where it lives:
	// "v1:<mount point>" or "v2:<mount point>".
	Controllers map[string]string `json:"controllers"`
	// V2Mount is the cgroup2 mount point, if any.
	V2Mount string `json:"v2_mount,omitempty"`
}

// Report is the result of Probe.
type Report struct {
	Kernel      string    `json:"kernel"`       // uname release, such as "6.18.44"
	Arch        string    `json:"arch"`         // uname machine
	LandlockABI int       `json:"landlock_abi"` // 0 when Landlock is unavailable
	Cgroups     Cgroups   `json:"cgroups"`
	Features    []Feature `json:"features"`
}

// Feature returns the feature called name and whether the report has it.
func (r Report) Feature(name string) (Feature, bool) {
	for _, f := range r.Features {
		if f.Name == name {
			return f, true
		}
	}
	return Feature{}, false
}

// Enforceable returns nil when every required feature is present, and
// otherwise an error naming each missing one with its fix.
func (r Report) Enforceable() error {
	var errs []error
	for _, f := range r.Features {
		if f.Required && !f.OK {
			msg := fmt.Sprintf("%s: %s", f.Name, f.Detail)
			if f.Fix != "" {
				msg += " (fix: " + f.Fix + ")"
			}
			errs = append(errs, errors.New(msg))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("sandboxes cannot be enforced on this kernel: %w", errors.Join(errs...))
}

// parseMounts finds the cgroup hierarchies in the text of /proc/mounts.
// v1 controllers are named in a cgroup mount's options; v2 controllers
// are listed by readV2Controllers(mountpoint). A controller bound to a v1
// hierarchy is not available in v2, whatever cgroup.controllers says.
func parseMounts(mounts string, readV2Controllers func(mountpoint string) (string, error)) Cgroups {
	cg := Cgroups{Controllers: map[string]string{}}
	v1 := false
	for _, line := range strings.Split(mounts, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 4 {
			continue
		}
		mp, fstype, opts := mountinfo.Unescape(fields[1]), fields[2], fields[3]
		switch fstype {
		case "cgroup":
			for _, o := range strings.Split(opts, ",") {
				switch o {
				case "rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children", "xattr", "noprefix", "cpuset_v2_mode", "favordynmods":
					continue
				}
				if strings.HasPrefix(o, "name=") || strings.HasPrefix(o, "release_agent=") {
					continue
				}
				if _, dup := cg.Controllers[o]; !dup {
					cg.Controllers[o] = "v1:" + mp
					v1 = true
				}
			}
		case "cgroup2":
			if cg.V2Mount == "" {
				cg.V2Mount = mp
			}
		}
	}
	if cg.V2Mount != "" {
		if s, err := readV2Controllers(cg.V2Mount); err == nil {
			for _, c := range strings.Fields(s) {
				if _, inV1 := cg.Controllers[c]; !inV1 {
					cg.Controllers[c] = "v2:" + cg.V2Mount
				}
			}
		}
	}
	switch {
	case v1 && cg.V2Mount != "":
		cg.Version = "hybrid"
	case v1:
		cg.Version = "v1"
	case cg.V2Mount != "":
		cg.Version = "v2"
	default:
		cg.Version = "none"
	}
	return cg
}

// cgroupFeature reports whether controller is available and how to get it.
func cgroupFeature(cg Cgroups, name, controller string, required bool) Feature {
	f := Feature{Name: name, Required: required}
	where, ok := cg.Controllers[controller]
	if ok {
		f.OK = true
		f.Detail = fmt.Sprintf("%s controller on cgroup %s (%s)", controller, strings.SplitN(where, ":", 2)[0], strings.SplitN(where, ":", 2)[1])
		return f
	}
	switch cg.Version {
	case "none":
		f.Detail = "no cgroup filesystem is mounted"
		f.Fix = "mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup) or boot with systemd"
	case "v2", "hybrid":
		f.Detail = fmt.Sprintf("the %s controller is neither in a v1 hierarchy nor in %s/cgroup.controllers", controller, cg.V2Mount)
		f.Fix = fmt.Sprintf("enable CONFIG_%s in the kernel, or, inside a container, delegate the %s controller to it", cgroupConfig(controller), controller)
	default:
		f.Detail = fmt.Sprintf("no v1 hierarchy has the %s controller", controller)
		f.Fix = fmt.Sprintf("mount it (mkdir -p /sys/fs/cgroup/%s && mount -t cgroup -o %s cgroup /sys/fs/cgroup/%s), or enable CONFIG_%s", controller, controller, controller, cgroupConfig(controller))
	}
	if controller == "memory" {
		f.Fix += "; if the kernel has it but it is off, boot with cgroup_enable=memory"
	}
	return f
}

func cgroupConfig(controller string) string {
	switch controller {
	case "memory":
		return "MEMCG=y"
	case "pids":
		return "CGROUP_PIDS=y"
	case "cpu":
		return "CGROUP_SCHED=y and CONFIG_CFS_BANDWIDTH=y"
	}
	return "CGROUPS=y"
}

// RequireLandlockABI marks Landlock missing when the kernel's ABI is older
// than min, the oldest the sandbox accepts, so that the report's verdict is
// the sandbox's.
func (r *Report) RequireLandlockABI(min int) {
	for i := range r.Features {
		f := &r.Features[i]
		if f.Name != Landlock || !f.OK || r.LandlockABI >= min {
			continue
		}
		f.OK = false
		f.Detail += fmt.Sprintf("; the sandbox needs ABI %d or newer", min)
		f.Fix = fmt.Sprintf("use Linux %s or later built with CONFIG_SECURITY_LANDLOCK=y", landlockKernel(min))
	}
}

// landlockKernel is the first Linux release with Landlock ABI abi.
func landlockKernel(abi int) string {
	releases := []string{"5.13", "5.13", "5.19", "6.2", "6.7", "6.10", "6.12", "6.15"}
	if abi < len(releases) && abi >= 0 {
		return releases[abi]
	}
	return fmt.Sprintf("a release with Landlock ABI %d", abi)
}

// suidDumpableFeature interprets fs.suid_dumpable (value, and whether the
// sysctl exists). The sandbox's PID 1 starts commands with vfork-style
// clones that share its memory; with 1 ("debug") a clone that changed its
// credentials stays dumpable, so the sandbox's user could open PID 1's
// memory through /proc, and the sandbox refuses to start.
func suidDumpableFeature(v string, present bool) Feature {
	f := Feature{Name: SuidDumpable, Required: true}
	switch {
	case !present:
		f.OK, f.Detail = true, "no fs.suid_dumpable: set-id processes are never dumpable"
	case v == "0" || v == "2":
		f.OK, f.Detail = true, "fs.suid_dumpable = "+v
	case v == "1":
		f.Detail = "fs.suid_dumpable = 1 (debug): processes that change credentials stay dumpable"
		f.Fix = "sysctl -w fs.suid_dumpable=0 (or 2), and set it in /etc/sysctl.d"
	default:
		f.Detail = fmt.Sprintf("fs.suid_dumpable = %q: unknown value", v)
		f.Fix = "sysctl -w fs.suid_dumpable=0"
	}
	return f
}
