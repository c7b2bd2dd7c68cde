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
// go-landlock know (never less than MinLandlockABI: no best effort).
func landlockConfig() (landlock.Config, int, error) {
	abi, err := LandlockABI()
	if err != nil {
		return landlock.Config{}, 0, err
	}
	for v := abi; v >= MinLandlockABI; v-- {
		if cfg, ok := landlockConfigs[v]; ok {
			if v >= 7 {
				// Log the command's denials to the audit log.
				cfg = cfg.EnableLoggingForSubprocesses()
			}
			return cfg, v, nil
		}
	}
	return landlock.Config{}, 0, errors.New("no Landlock preset")
}

// landlockRules are the sandbox's file system and network rules: system
// directories read-only and executable; the workspace, /tmp, /dev/shm and
// extra read-write paths writable; a few device files; TCP connect only to
// the allowed ports, bind only to the policy's.
func landlockRules(c *Config) []landlock.Rule {
	ro := []string{"/usr", "/etc", "/proc"}
	for _, d := range systemDirs {
		if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
			ro = append(ro, d)
		}
	}
	ro = append(ro, c.ReadOnly...)
	rw := append([]string{WorkspaceDir, "/tmp", "/dev/shm"}, c.ReadWrite...)
	rules := []landlock.Rule{
		landlock.PathAccess(ll.AccessFSReadDir, "/", "/dev"),
		landlock.RODirs(ro...),
		landlock.RWDirs(rw...).WithRefer(),
		landlock.RWFiles("/dev/null", "/dev/zero", "/dev/full"),
		landlock.ROFiles("/dev/random", "/dev/urandom"),
		landlock.RWFiles("/dev/tty").WithIoctlDev(),
		landlock.RWDirs("/dev/pts").WithIoctlDev(),
	}
	for _, p := range c.Connect {
		rules = append(rules, landlock.ConnectTCP(p))
	}
	for _, p := range c.Bind {
		rules = append(rules, landlock.BindTCP(p), landlock.ConnectTCP(p))
	}
	return rules
}

// applyLandlock restricts the calling thread (which then execs the
// command) with the newest Landlock ABI the kernel offers. It needs
// no_new_privs set on this thread.
func applyLandlock(c *Config) error {
	cfg, abi, err := landlockConfig()
	if err != nil {
		return err
	}
	fd, flags, err := cfg.NewRulesetFD(landlockRules(c)...)
	if err != nil {
		return fmt.Errorf("build ruleset (ABI %d): %w", abi, err)
	}
	if fd < 0 {
		return fmt.Errorf("ruleset (ABI %d) restricts nothing", abi)
	}
	defer unix.Close(fd)
	if err := ll.LandlockRestrictSelf(fd, flags); err != nil {
		return fmt.Errorf("landlock_restrict_self (ABI %d): %w", abi, err)
	}
	return nil
}
