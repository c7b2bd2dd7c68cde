package seccomp

import "golang.org/x/sys/unix"

// nativeArch is the ABI Install filters for: x86-64. The i386 entry
// (int 0x80) reports AUDIT_ARCH_I386 and x32 sets bit 30 in the number;
// both are killed.
func nativeArch() (archInfo, bool) {
	return archInfo{name: "x86-64", auditArch: unix.AUDIT_ARCH_X86_64, x32Bit: 0x40000000, sysnum: sysnumAMD64}, true
}

func sysnumAMD64(name string) (uint32, bool) {
	var n uintptr
	switch name {
	case "ptrace":
		n = unix.SYS_PTRACE
	case "process_vm_readv":
		n = unix.SYS_PROCESS_VM_READV
	case "process_vm_writev":
		n = unix.SYS_PROCESS_VM_WRITEV
	case "pidfd_getfd":
		n = unix.SYS_PIDFD_GETFD
	case "mount":
		n = unix.SYS_MOUNT
	case "umount2":
		n = unix.SYS_UMOUNT2
	case "pivot_root":
		n = unix.SYS_PIVOT_ROOT
	case "fsopen":
		n = unix.SYS_FSOPEN
	case "fsconfig":
		n = unix.SYS_FSCONFIG
	case "fsmount":
		n = unix.SYS_FSMOUNT
	case "fspick":
		n = unix.SYS_FSPICK
	case "move_mount":
		n = unix.SYS_MOVE_MOUNT
	case "open_tree":
		n = unix.SYS_OPEN_TREE
	case "open_tree_attr":
		n = unix.SYS_OPEN_TREE_ATTR
	case "mount_setattr":
		n = unix.SYS_MOUNT_SETATTR
	case "setns":
		n = unix.SYS_SETNS
	case "unshare":
		n = unix.SYS_UNSHARE
	case "clone":
		n = unix.SYS_CLONE
	case "clone3":
		n = unix.SYS_CLONE3
	case "bpf":
		n = unix.SYS_BPF
	case "perf_event_open":
		n = unix.SYS_PERF_EVENT_OPEN
	case "keyctl":
		n = unix.SYS_KEYCTL
	case "add_key":
		n = unix.SYS_ADD_KEY
	case "request_key":
		n = unix.SYS_REQUEST_KEY
	case "userfaultfd":
		n = unix.SYS_USERFAULTFD
	case "io_uring_setup":
		n = unix.SYS_IO_URING_SETUP
	case "io_uring_enter":
		n = unix.SYS_IO_URING_ENTER
	case "io_uring_register":
		n = unix.SYS_IO_URING_REGISTER
	case "kexec_load":
		n = unix.SYS_KEXEC_LOAD
	case "kexec_file_load":
		n = unix.SYS_KEXEC_FILE_LOAD
	case "init_module":
		n = unix.SYS_INIT_MODULE
	case "finit_module":
		n = unix.SYS_FINIT_MODULE
	case "delete_module":
		n = unix.SYS_DELETE_MODULE
	case "open_by_handle_at":
		n = unix.SYS_OPEN_BY_HANDLE_AT
	case "name_to_handle_at":
		n = unix.SYS_NAME_TO_HANDLE_AT
	case "acct":
		n = unix.SYS_ACCT
	case "swapon":
		n = unix.SYS_SWAPON
	case "swapoff":
		n = unix.SYS_SWAPOFF
	case "reboot":
		n = unix.SYS_REBOOT
	case "settimeofday":
		n = unix.SYS_SETTIMEOFDAY
	case "clock_settime":
		n = unix.SYS_CLOCK_SETTIME
	case "adjtimex":
		n = unix.SYS_ADJTIMEX
	case "clock_adjtime":
		n = unix.SYS_CLOCK_ADJTIME
	case "syslog":
		n = unix.SYS_SYSLOG
	case "quotactl":
		n = unix.SYS_QUOTACTL
	case "quotactl_fd":
		n = unix.SYS_QUOTACTL_FD
	case "lookup_dcookie":
		n = unix.SYS_LOOKUP_DCOOKIE
	case "iopl":
		n = unix.SYS_IOPL
	case "ioperm":
		n = unix.SYS_IOPERM
	case "uselib":
		n = unix.SYS_USELIB
	case "personality":
		n = unix.SYS_PERSONALITY
	case "prlimit64":
		n = unix.SYS_PRLIMIT64
	case "ioctl":
		n = unix.SYS_IOCTL
	case "socket":
		n = unix.SYS_SOCKET
	case "socketpair":
		n = unix.SYS_SOCKETPAIR
	default:
		return 0, false
	}
	return uint32(n), true
}
