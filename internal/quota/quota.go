// Package quota limits how much disk one sandbox workspace may use while the
// sandbox runs: bytes and files. Where the workspace's filesystem enforces
// project quotas (XFS mounted with prjquota, ext4 made with -O quota,project
// and mounted with prjquota) the workspace gets a project id of its own and
// hard limits: writes beyond them fail with EDQUOT inside the sandbox.
// Elsewhere the limit is watched by the process that owns the sandbox: a
// running total from write notifications (fanotify on the sandbox's mount
// of the workspace), the bytes the sandbox's processes dirtied and the
// filesystem's free inodes, confirmed by walking the workspace, and a walk
// once a second regardless; an overrun is reported to the owner, which
// stops the sandbox.
//
// It does not decide the limit (that is the policy's resources.disk or the
// default here) and it does not stop sandboxes itself (the caller's kill
// does).
package quota

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/clawcage/clawcage/internal/mountinfo"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mode is how a workspace's limit is enforced.
type Mode string

// The enforcement modes.
const (
	// ModeProject: a filesystem project quota (EDQUOT on the write that
	// would pass the limit).
	ModeProject Mode = "project quota"
	// ModeWatched: a watcher measures the workspace and the owner stops the
	// sandbox when it is over the limit; one file cannot exceed the limit
	// by itself (RLIMIT_FSIZE, EFBIG).
	ModeWatched Mode = "watched"
)

// WatchedMargin is the free space, beyond the limit, a watched workspace's
// filesystem must have for a sandbox to start: it covers what the sandbox can
// write between two measurements (docs/sandbox.md, "Disk").
const WatchedMargin int64 = 64 << 20

// Support says how a directory's disk use can be limited.
type Support struct {
	Mode Mode `json:"mode"`
	// FSType is the filesystem's type ("ext4", "xfs", ...).
	FSType string `json:"fs_type"`
	// Mount is the mount point of the filesystem holding the directory.
	Mount string `json:"mount"`
	// Reason says why there is no project quota (ModeWatched only).
	Reason string `json:"reason,omitempty"`
}

// String is the line logs and doctor print: "project quota (xfs at /var)"
// or "watched (no project quota on ext4 at /: ...)".
func (s Support) String() string {
	if s.Mode == ModeProject {
		return fmt.Sprintf("project quota (%s at %s)", s.FSType, s.Mount)
	}
	return fmt.Sprintf("watched (no project quota on %s at %s: %s)", s.FSType, s.Mount, s.Reason)
}

// Detect says how the disk use under dir can be limited. It changes
// nothing.
func Detect(dir string) (Support, error) {
	fd, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		return Support{}, fmt.Errorf("detect workspace quota for %s: %w", dir, err)
	}
	defer unix.Close(fd)
	s, dev, err := detectFD(fd)
	if err == nil {
		s.Mount = mountPoint(fdPath(fd), dev)
	}
	return s, err
}

// openDir opens dir (relative to at) as a directory, not following a
// symlink in its last component.
func openDir(at int, dir string) (int, error) {
	return unix.Openat(at, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// detectFD is Detect on an open directory, except for Support.Mount (its
// lookup reads the whole mount table): it returns the directory's device
// for mountPoint.
func detectFD(fd int) (Support, uint64, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return Support{}, 0, fmt.Errorf("statfs: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Support{}, 0, fmt.Errorf("stat: %w", err)
	}
	s := Support{Mode: ModeWatched, FSType: fsName(sfs.Type)}
	flags, err := quotaFlags(fd)
	switch {
	case err != nil:
		s.Reason = quotaErrReason(err, s.FSType)
	case flags&fsQuotaPDQEnfd != 0:
		s.Mode = ModeProject
	case flags&fsQuotaPDQAcct != 0:
		s.Reason = "project quota is accounted but not enforced (mount with prjquota, not prjnoenforce)"
	default:
		s.Reason = "project quota is not enabled (" + enableHint(s.FSType) + ")"
	}
	return s, st.Dev, nil
}

func quotaErrReason(err error, fs string) string {
	switch {
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOENT):
		return "no quota is enabled (" + enableHint(fs) + ")"
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTTY):
		return "the filesystem has no project quota"
	}
	return "quotactl: " + err.Error()
}

func enableHint(fs string) string {
	switch fs {
	case "ext4":
		return "ext4: tune2fs -O quota,project on the unmounted device, then mount -o prjquota"
	case "xfs":
		return "xfs: mount -o prjquota"
	}
	return "use XFS or ext4 with project quota for the state directory"
}

// fsName names a statfs magic number.
func fsName(magic int64) string {
	switch uint32(magic) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case 0x2fc12fc1:
		return "zfs"
	}
	return fmt.Sprintf("filesystem 0x%x", uint32(magic))
}

// fdPath returns the path of the open directory fd ("" if unknown).
func fdPath(fd int) string {
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return ""
	}
	return path
}

// mountPoint returns the mount point of the filesystem dev that contains
// path (the longest mount point of dev that is a prefix of it), or "?" if
// none is found.
func mountPoint(path string, dev uint64) string {
	if path == "" {
		return "?"
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "?"
	}
	defer f.Close()
	return mountPointIn(bufio.NewScanner(f), path, unix.Major(dev), unix.Minor(dev))
}

// mountPointIn finds path's mount point among the mountinfo lines of sc
// whose device is major:minor.
func mountPointIn(sc *bufio.Scanner, path string, major, minor uint32) string {
	want := strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
	best := ""
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[2] != want {
			continue
		}
		mp := mountinfo.Unescape(fields[4])
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return "?"
	}
	return best
}

// ExceededError reports a workspace found over its limit (or that could not
// be measured, Err set) while its sandbox ran.
type ExceededError struct {
	Dir   string
	Limit int64
	Used  int64
	// FileLimit, if set, says the workspace passed its limit of files
	// and directories (it held Files).
	Files, FileLimit int64
	// Err, if set, is why the workspace could not be measured; the sandbox
	// is stopped all the same (an unmeasurable workspace is not limited).
	Err error
}

func (e *ExceededError) Error() string {
	if e.FileLimit > 0 {
		return fmt.Sprintf("workspace %s exceeded its limit of %d files and directories (has %d); remove files", e.Dir, e.FileLimit, e.Files)
	}
	if e.Err != nil {
		return fmt.Sprintf("workspace %s could not be measured against its disk limit of %d bytes, sandbox stopped: %v", e.Dir, e.Limit, e.Err)
	}
	return fmt.Sprintf("workspace %s exceeded its disk limit of %d bytes (used %d); free space or raise resources.disk", e.Dir, e.Limit, e.Used)
}

func (e *ExceededError) Unwrap() error { return e.Err }

// logOrDiscard returns l, or a logger that discards.
func logOrDiscard(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
