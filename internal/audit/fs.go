package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// writeDenied are the answers a read-only or Landlock-protected path gives
// to a write attempt.
var writeDenied = []string{"EROFS", "EACCES"}

func fsProbes() []Probe {
	return []Probe{
		{Name: "read-shadow", Doc: "read the host's /etc/shadow", Expect: []string{"ENOENT"},
			Run: func(context.Context, []string) Observation { return readPath("/etc/shadow") }},
		{Name: "read-root-home", Doc: "list the host's /root", Expect: []string{"ENOENT"},
			Run: func(context.Context, []string) Observation { return readPath("/root") }},
		{Name: "read-path", Usage: "PATH", Doc: "read a host path (another workspace's secret, a planted symlink)",
			Expect: []string{"ENOENT"}, Run: func(_ context.Context, args []string) Observation {
				if len(args) != 1 {
					return errorf("usage: read-path PATH")
				}
				return readPath(args[0])
			}},
		{Name: "symlink-escape", Doc: "plant a symlink to /etc/shadow in the working directory and read through it",
			Expect: []string{"ENOENT"}, Run: symlinkEscape},
		{Name: "write-usr", Doc: "create a file in /usr", Expect: writeDenied,
			Run: func(context.Context, []string) Observation { return createIn("/usr") }},
		{Name: "write-etc", Doc: "create a file in /etc", Expect: writeDenied,
			Run: func(context.Context, []string) Observation { return createIn("/etc") }},
		{Name: "write-rootfs", Doc: "create a file in /", Expect: writeDenied,
			Run: func(context.Context, []string) Observation { return createIn("/") }},
		{Name: "write-dir", Usage: "DIR", Doc: "create a file in a given directory", Expect: writeDenied,
			Run: func(_ context.Context, args []string) Observation {
				if len(args) != 1 {
					return errorf("usage: write-dir DIR")
				}
				return createIn(args[0])
			}},
		{Name: "write-proc-sys", Usage: "[FILE]", Doc: "open a /proc/sys tunable for writing (default kernel/core_pattern)",
			Expect: []string{"EROFS", "EACCES"}, Run: func(_ context.Context, args []string) Observation {
				return openForWrite(argOr(args, 0, "/proc/sys/kernel/core_pattern"))
			}},
		{Name: "write-sys", Usage: "[FILE]", Doc: "open a /sys attribute for writing (default the transparent hugepage switch)",
			Expect: []string{"ENOENT"}, Run: func(_ context.Context, args []string) Observation {
				return openForWrite(argOr(args, 0, "/sys/kernel/mm/transparent_hugepage/enabled"))
			}},
		{Name: "cgroup-escape", Doc: "open the root cgroup's cgroup.procs for writing, to move out of the sandbox's limits",
			Expect: []string{"ENOENT"}, Run: cgroupEscape},
		{Name: "read-kcore", Doc: "read kernel memory through /proc/kcore", Expect: []string{Masked, "ENOENT", "EACCES", "EPERM"},
			Run: readKcore},
		{Name: "write-sysrq", Doc: "open /proc/sysrq-trigger for writing", Expect: []string{Masked, "ENOENT", "EROFS", "EACCES"},
			Run: writeSysrq},
	}
}

// readPath opens path and reads it (a file: up to 1 MiB, reporting its
// SHA-256 so a caller can compare it with the host's; a directory: its
// entries).
func readPath(path string) Observation {
	f, err := os.Open(path)
	if err != nil {
		return observe(err, "open "+path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return observe(err, "stat "+path)
	}
	if st.IsDir() {
		names, err := f.Readdirnames(-1)
		if err != nil {
			return observe(err, "list "+path)
		}
		return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("listed %s: %d entries", path, len(names))}
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, 1<<20))
	if err != nil {
		return observe(err, "read "+path)
	}
	return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("read %s: %d bytes sha256=%s", path, n, hex.EncodeToString(h.Sum(nil)))}
}

// SHA256Detail returns the "sha256=..." token readPath puts in a detail for
// content, so a host-side test can tell whether a sandbox read host bytes.
func SHA256Detail(content []byte) string {
	sum := sha256.Sum256(content)
	return "sha256=" + hex.EncodeToString(sum[:])
}

// createIn creates and removes a new file in dir.
func createIn(dir string) Observation {
	name := filepath.Join(dir, ".clawcage-audit-"+strconv.Itoa(os.Getpid()))
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return observe(err, "create "+name)
	}
	unix.Close(fd)
	if err := unix.Unlink(name); err != nil {
		return Observation{Outcome: Succeeded, Detail: "created " + name + " (and could not remove it: " + err.Error() + ")"}
	}
	return Observation{Outcome: Succeeded, Detail: "created and removed " + name}
}

// openForWrite opens an existing file for writing without writing: the
// permission decision is made at open, so success is the escape.
func openForWrite(path string) Observation {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return observe(err, "open "+path+" for writing")
	}
	unix.Close(fd)
	return Observation{Outcome: Succeeded, Detail: "opened " + path + " for writing (nothing written)"}
}

func symlinkEscape(context.Context, []string) Observation {
	dir, err := os.Getwd()
	if err != nil {
		return errorf("getwd: %v", err)
	}
	link := filepath.Join(dir, ".clawcage-audit-link-"+strconv.Itoa(os.Getpid()))
	if err := os.Symlink("/etc/shadow", link); err != nil {
		return errorf("plant symlink in %s: %v", dir, err)
	}
	defer os.Remove(link)
	return readPath(link)
}

func cgroupEscape(context.Context, []string) Observation {
	paths := []string{"/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs"}
	var errs []error
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		errs = append(errs, err)
	}
	return combine(paths, errs)
}

func readKcore(context.Context, []string) Observation {
	f, err := os.Open("/proc/kcore")
	if err != nil {
		return observe(err, "open /proc/kcore")
	}
	defer f.Close()
	buf := make([]byte, 4)
	n, err := f.Read(buf)
	switch {
	case n > 0:
		return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("read %d bytes of /proc/kcore (%q)", n, buf[:n])}
	case err == nil || errors.Is(err, io.EOF):
		return Observation{Outcome: Masked, Detail: "/proc/kcore reads as empty"}
	default:
		return observe(err, "read /proc/kcore")
	}
}

func writeSysrq(context.Context, []string) Observation {
	fd, err := unix.Open("/proc/sysrq-trigger", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return observe(err, "open /proc/sysrq-trigger for writing")
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return observe(err, "fstat /proc/sysrq-trigger")
	}
	if st.Mode&unix.S_IFMT == unix.S_IFCHR && unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3 {
		return Observation{Outcome: Masked, Detail: "/proc/sysrq-trigger is /dev/null"}
	}
	return Observation{Outcome: Succeeded, Detail: "opened the real /proc/sysrq-trigger for writing (nothing written)"}
}
