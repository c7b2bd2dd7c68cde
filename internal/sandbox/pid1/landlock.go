package pid1

import (
	"errors"
	"fmt"
	"os"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// landlockConfigs are go-landlock's presets by ABI version.
var landlockConfigs = map[int]landlock.Config{
	6: landlock.V6, 7: landlock.V7, 8: landlock.V8, 9: landlock.V9, 10: landlock.V10, 11: landlock.V11,
}

// landlockConfig returns the preset for the newest ABI both the kernel and
// go-landlock know (never less than MinLandlockABI: no best effort), and
// the landlock_restrict_self flags the preset is used with.
func landlockConfig() (landlock.Config, int, uint32, error) {
	abi, err := LandlockABI()
	if err != nil {
		return landlock.Config{}, 0, 0, err
	}
	for v := abi; v >= MinLandlockABI; v-- {
		if cfg, ok := landlockConfigs[v]; ok {
			var flags uint32
			if v >= 7 {
				// Log the command's denials to the audit log.
				cfg = cfg.EnableLoggingForSubprocesses()
				flags = ll.FlagRestrictSelfLogNewExecOn
			}
			return cfg, v, flags, nil
		}
	}
	return landlock.Config{}, 0, 0, errors.New("no Landlock preset")
}

// The access sets of go-landlock's canned rules (RODirs, RWDirs, ROFiles,
// RWFiles; TestLandlockAccessSets checks they are the same), before they
// are intersected with what the ABI handles.
const (
	accessFile        = ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSReadFile
	accessFSRead      = ll.AccessFSExecute | ll.AccessFSReadFile | ll.AccessFSReadDir
	accessFSWrite     = ll.AccessFSWriteFile | ll.AccessFSRemoveDir | ll.AccessFSRemoveFile | ll.AccessFSMakeChar | ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo | ll.AccessFSMakeBlock | ll.AccessFSMakeSym | ll.AccessFSTruncate
	accessFSReadWrite = accessFSRead | accessFSWrite

	accessRODirs  = accessFSRead
	accessRWDirs  = accessFSReadWrite
	accessROFiles = accessFSRead & accessFile
	accessRWFiles = accessFSReadWrite & accessFile
)

// landlockPathRule grants access beneath paths; exact rules (the
// PathAccess kind) must be handled in full, the others are intersected
// with the handled access. dirOnly paths are skipped unless they are
// directories inside the sandbox.
type landlockPathRule struct {
	access  uint64
	exact   bool
	dirOnly bool
	paths   []string
}

// landlockRules are the sandbox's file system and network rules: system
// directories read-only and executable; the workspace, /tmp, /dev/shm and
// extra read-write paths writable; a few device files; TCP connect only to
// the allowed ports, bind only to the policy's. This is the one list both
// PID 1 implementations apply (through PlanLandlock).
func landlockRules(c *Config) ([]landlockPathRule, []LandlockPort) {
	rw := append([]string{WorkspaceDir, "/tmp", "/dev/shm"}, c.ReadWrite...)
	paths := []landlockPathRule{
		{access: ll.AccessFSReadDir, exact: true, paths: []string{"/", "/dev"}},
		{access: accessRODirs, paths: []string{"/usr", "/etc", "/proc"}},
		{access: accessRODirs, dirOnly: true, paths: systemDirs},
		{access: accessRODirs, paths: c.ReadOnly},
		{access: accessRWDirs | ll.AccessFSRefer, paths: rw},
		{access: accessRWFiles, paths: []string{"/dev/null", "/dev/zero", "/dev/full"}},
		{access: accessROFiles, paths: []string{"/dev/random", "/dev/urandom"}},
		{access: accessRWFiles | ll.AccessFSIoctlDev, paths: []string{"/dev/tty"}},
		{access: accessRWDirs | ll.AccessFSIoctlDev, paths: []string{"/dev/pts"}},
	}
	var ports []LandlockPort
	for _, p := range c.Connect {
		ports = append(ports, LandlockPort{Port: p, Access: ll.AccessNetConnectTCP})
	}
	for _, p := range c.Bind {
		ports = append(ports, LandlockPort{Port: p, Access: ll.AccessNetBindTCP}, LandlockPort{Port: p, Access: ll.AccessNetConnectTCP})
	}
	return paths, ports
}

// PlanLandlock computes the Landlock ruleset for c with the newest ABI the
// kernel offers (an *UnavailableError below MinLandlockABI): go-landlock's
// preset's handled access and flags, and each rule's access as go-landlock
// would add it.
func PlanLandlock(c *Config) (*LandlockPlan, error) {
	cfg, abi, flags, err := landlockConfig()
	if err != nil {
		return nil, err
	}
	p := &LandlockPlan{
		ABI:           abi,
		HandledFS:     uint64(cfg.HandledAccessFS),
		HandledNet:    uint64(cfg.HandledAccessNet),
		Scoped:        uint64(cfg.Scoped),
		RestrictFlags: flags,
	}
	paths, ports := landlockRules(c)
	for _, r := range paths {
		access := r.access & p.HandledFS
		if r.exact && access != r.access {
			return nil, fmt.Errorf("landlock rule for %v: access %#x not handled by ABI %d", r.paths, r.access, abi)
		}
		if access == 0 {
			continue // go-landlock leaves such a rule out
		}
		for _, path := range r.paths {
			p.Paths = append(p.Paths, LandlockPath{Path: path, Access: access, DirOnly: r.dirOnly})
		}
	}
	for _, r := range ports {
		if r.Access &= p.HandledNet; r.Access != 0 {
			p.Ports = append(p.Ports, r)
		}
	}
	return p, nil
}

// applyLandlock restricts the calling thread (which then execs the
// command) with c.Landlock, or the plan for this kernel when the host sent
// none. It needs no_new_privs set on this thread.
func applyLandlock(c *Config) error {
	p := c.Landlock
	if p == nil {
		var err error
		if p, err = PlanLandlock(c); err != nil {
			return err
		}
	}
	// The preset check fails closed on a kernel below the plan's ABI.
	if _, abi, _, err := landlockConfig(); err != nil {
		return err
	} else if abi < p.ABI {
		return fmt.Errorf("ruleset planned for ABI %d, the kernel offers %d", p.ABI, abi)
	}
	attr := ll.RulesetAttr{HandledAccessFS: p.HandledFS, HandledAccessNet: p.HandledNet, Scoped: p.Scoped}
	fd, err := ll.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return fmt.Errorf("build ruleset (ABI %d): landlock_create_ruleset: %w", p.ABI, err)
	}
	defer unix.Close(fd)
	for _, r := range p.Paths {
		if r.DirOnly {
			if fi, err := os.Lstat(r.Path); err != nil || !fi.IsDir() {
				continue
			}
		}
		pfd, err := unix.Open(r.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("build ruleset (ABI %d): populating ruleset for %q with access %#x: open: %w", p.ABI, r.Path, r.Access, err)
		}
		err = ll.LandlockAddPathBeneathRule(fd, &ll.PathBeneathAttr{ParentFd: pfd, AllowedAccess: r.Access}, 0)
		unix.Close(pfd)
		if err != nil {
			return fmt.Errorf("build ruleset (ABI %d): populating ruleset for %q with access %#x: landlock_add_rule: %w", p.ABI, r.Path, r.Access, err)
		}
	}
	for _, r := range p.Ports {
		if err := ll.LandlockAddNetPortRule(fd, &ll.NetPortAttr{AllowedAccess: r.Access, Port: uint64(r.Port)}, 0); err != nil {
			return fmt.Errorf("build ruleset (ABI %d): port %d with access %#x: landlock_add_rule: %w", p.ABI, r.Port, r.Access, err)
		}
	}
	if err := ll.LandlockRestrictSelf(fd, p.RestrictFlags); err != nil {
		return fmt.Errorf("landlock_restrict_self (ABI %d): %w", p.ABI, err)
	}
	return nil
}
