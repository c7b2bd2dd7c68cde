package quota

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// quotactl(2) and FS_IOC_FS[GS]ETXATTR, which golang.org/x/sys/unix does
// not wrap. Values from include/uapi/linux/quota.h, dqblk_xfs.h and fs.h.
const (
	prjQuota = 2 // PRJQUOTA

	qGetQuota  = 0x800007 // Q_GETQUOTA
	qSetQuota  = 0x800008 // Q_SETQUOTA
	qXGetQStat = 0x5805   // Q_XGETQSTAT: XQM_CMD(5)

	qifBLimits = 1 // QIF_BLIMITS
	qifILimits = 4 // QIF_ILIMITS

	fsQuotaPDQAcct = 0x10 // FS_QUOTA_PDQ_ACCT
	fsQuotaPDQEnfd = 0x20 // FS_QUOTA_PDQ_ENFD

	// _IOR('X', 31, struct fsxattr) and _IOW('X', 32, struct fsxattr) in
	// the asm-generic ioctl encoding (x86, arm, riscv...).
	fsIocFSGetXattr = 0x801c581f
	fsIocFSSetXattr = 0x401c5820

	fsXflagProjInherit = 0x200 // FS_XFLAG_PROJINHERIT
)

// qcmd is QCMD(cmd, type).
func qcmd(cmd, typ uint32) uint32 { return cmd<<8 | typ&0xff }

// dqblk is struct if_dqblk.
type dqblk struct {
	BHardLimit uint64 // in 1 KiB blocks
	BSoftLimit uint64
	CurSpace   uint64 // bytes
	IHardLimit uint64
	ISoftLimit uint64
	CurInodes  uint64
	BTime      uint64
	ITime      uint64
	Valid      uint32
	_          uint32
}

// fsxattr is struct fsxattr.
type fsxattr struct {
	XFlags     uint32
	ExtSize    uint32
	NExtents   uint32
	ProjID     uint32
	CowExtSize uint32
	_          [8]byte
}

// quotactlFD is quotactl_fd(2) (Linux 5.14): quotactl on the filesystem of
// an open file, no block device path needed.
func quotactlFD(fd int, cmd uint32, id uint32, addr unsafe.Pointer) error {
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(cmd), uintptr(id), uintptr(addr), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// quotaFlags returns the FS_QUOTA_* state flags of fd's filesystem.
func quotaFlags(fd int) (uint16, error) {
	// struct fs_quota_stat is 80 bytes; qs_flags is the __u16 at offset 2.
	var buf [128]byte
	if err := quotactlFD(fd, qcmd(qXGetQStat, prjQuota), 0, unsafe.Pointer(&buf[0])); err != nil {
		return 0, err
	}
	return *(*uint16)(unsafe.Pointer(&buf[2])), nil
}

// usage is what a project is charged.
type usage struct{ bytes, files int64 }

// projectUsage returns what project id is charged on fd's filesystem.
func projectUsage(fd int, id uint32) (usage, error) {
	var q dqblk
	if err := quotactlFD(fd, qcmd(qGetQuota, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		return usage{}, fmt.Errorf("get project quota %d: %w", id, err)
	}
	return usage{int64(q.CurSpace), int64(q.CurInodes)}, nil
}

// setProjectLimit sets project id's block hard limit to bytes (rounded up
// to KiB) and its inode hard limit to files; 0 removes a limit.
func setProjectLimit(fd int, id uint32, bytes, files int64) error {
	kib := uint64((bytes + 1023) / 1024)
	q := dqblk{BHardLimit: kib, BSoftLimit: kib, IHardLimit: uint64(files), ISoftLimit: uint64(files), Valid: qifBLimits | qifILimits}
	if err := quotactlFD(fd, qcmd(qSetQuota, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		return fmt.Errorf("set project quota %d to %d bytes: %w", id, bytes, err)
	}
	return nil
}

// getProject returns the project id and flags of the open file fd.
func getProject(fd int) (fsxattr, error) {
	var a fsxattr
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFSGetXattr, uintptr(unsafe.Pointer(&a)))
	if e != 0 {
		return a, e
	}
	return a, nil
}

// setProject gives the open file fd project id (and, for a directory,
// FS_XFLAG_PROJINHERIT, so what is created in it gets id too).
func setProject(fd int, id uint32, dir bool) error {
	a, err := getProject(fd)
	if err != nil {
		return fmt.Errorf("FS_IOC_FSGETXATTR: %w", err)
	}
	want := a
	want.ProjID = id
	if dir {
		want.XFlags |= fsXflagProjInherit
	}
	if want == a {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFSSetXattr, uintptr(unsafe.Pointer(&want)))
	if e != 0 {
		return fmt.Errorf("FS_IOC_FSSETXATTR project %d: %w", id, e)
	}
	return nil
}
