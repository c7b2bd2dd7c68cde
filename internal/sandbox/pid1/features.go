package pid1

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// MinLandlockABI is the oldest Landlock ABI the sandbox accepts: 6 is the
// first with TCP rules (4), device ioctl control (5) and scoped abstract
// Unix sockets and signals (6), all of which DESIGN §3 promises.
const MinLandlockABI = 6

// LandlockABI returns the Landlock ABI version the kernel offers, or an
// *UnavailableError when it is missing or older than MinLandlockABI.
func LandlockABI() (int, error) {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		reason := fmt.Sprintf("landlock_create_ruleset: %v", err)
		if errors.Is(err, unix.EOPNOTSUPP) {
			reason = "Landlock is built into the kernel but not enabled at boot"
		} else if errors.Is(err, unix.ENOSYS) {
			reason = "the kernel has no Landlock support"
		}
		return 0, &UnavailableError{
			Feature: "landlock",
			Reason:  reason,
			Fix:     "use Linux 6.7 or newer built with CONFIG_SECURITY_LANDLOCK=y and boot with lsm=landlock,... (see `cat /sys/kernel/security/lsm`)",
		}
	}
	if v < MinLandlockABI {
		return v, &UnavailableError{
			Feature: "landlock",
			Reason:  fmt.Sprintf("kernel offers Landlock ABI %d, the sandbox needs %d (TCP rules and IPC scoping)", v, MinLandlockABI),
			Fix:     "upgrade to Linux 6.12 or newer",
		}
	}
	return v, nil
}

// CheckSeccomp returns an *UnavailableError unless the kernel supports
// seccomp filters with the errno action.
func CheckSeccomp() error {
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		return &UnavailableError{
			Feature: "seccomp",
			Reason:  fmt.Sprintf("prctl(PR_GET_SECCOMP): %v", err),
			Fix:     "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y",
		}
	}
	action := uint32(unix.SECCOMP_RET_ERRNO)
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action))); errno != 0 {
		return &UnavailableError{
			Feature: "seccomp",
			Reason:  fmt.Sprintf("seccomp(SECCOMP_GET_ACTION_AVAIL): %v", errno),
			Fix:     "use a kernel built with CONFIG_SECCOMP_FILTER=y",
		}
	}
	return nil
}

// CheckUserNamespaces returns an *UnavailableError when user namespaces
// cannot be created.
func CheckUserNamespaces() error {
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err != nil {
		return &UnavailableError{Feature: "user namespaces", Reason: err.Error(), Fix: "use a kernel built with CONFIG_USER_NS=y"}
	}
	if strings.TrimSpace(string(b)) == "0" {
		return &UnavailableError{Feature: "user namespaces", Reason: "user.max_user_namespaces is 0", Fix: "sysctl -w user.max_user_namespaces=15000"}
	}
	return nil
}

// CheckKernel checks every kernel feature the sandbox cannot run without.
func CheckKernel() error {
	if _, err := LandlockABI(); err != nil {
		return err
	}
	if err := CheckSeccomp(); err != nil {
		return err
	}
	return CheckUserNamespaces()
}
