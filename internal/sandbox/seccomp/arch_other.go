//go:build !amd64

package seccomp

// nativeArch reports that this architecture has no system call table here:
// Install refuses rather than install a filter it cannot check.
func nativeArch() (archInfo, bool) { return archInfo{}, false }
