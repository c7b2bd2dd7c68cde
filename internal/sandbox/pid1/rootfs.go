package pid1

import (
	"errors"
	"fmt"
	"io"
	"os"
	pathpkg "path" // not path/filepath: see Package pid1
	"strings"

	"golang.org/x/sys/unix"
)

// Mount points of the two-step root switch (bubblewrap's method): a scratch
// tmpfs mounted over the host's /tmp becomes the root, the host root stays
// reachable at /oldroot while /newroot is populated, then /newroot becomes
// the root and everything else is detached.
const (
	scratchDir = "/tmp"
	oldRoot    = "/oldroot"
	newRoot    = "/newroot"
)

// systemDirs are bound read-only from the host when they exist; a symlink
// (merged /usr: /bin -> usr/bin) is recreated as the same symlink.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// etcCopies are host files copied into the generated /etc when present.
var etcCopies = []string{"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"}

// caBundles are the host CA bundle locations, most common first; the first
// one found is bound read-only (or copied, see attachCABundle) to
// /etc/ssl/certs/ca-certificates.crt.
var caBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",             // openSUSE
	"/etc/ssl/cert.pem",
}

// devices are host device nodes bound into /dev (mknod is impossible in a
// user namespace). Nothing else of the host's /dev exists inside.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// procMaskedFiles are hidden behind /dev/null; procMaskedDirs behind an
// empty read-only tmpfs; procReadOnly are made read-only.
var (
	procMaskedFiles = []string{"kcore", "kallsyms", "keys", "key-users", "timer_list", "sched_debug", "latency_stats", "sysrq-trigger", "kpagecount", "kpageflags", "kpagecgroup", "config.gz", "vmallocinfo", "modules", "iomem", "ioports", "softirqs", "interrupts"}
	procMaskedDirs  = []string{"acpi", "scsi", "firmware", "driver", "tty", "dynamic_debug"}
	procReadOnly    = []string{"sys", "bus", "fs", "irq"}
)

// buildRoot builds the sandbox's root file system in the new mount
// namespace and switches to it. On return "/" is the sandbox root and
// nothing of the host is mounted but the read-only system directories, the
// device nodes, the workspace and the policy's paths.
func buildRoot(c *Config) error {
	steps := []struct {
		name string
		fn   func(*Config) error
	}{
		{"make mounts private", makeMountsPrivate},
		{"mount scratch root", mountScratch},
		{"mount new root", mountNewRoot},
		{"bind system directories", bindSystemDirs},
		{"generate /etc", generateEtc},
		{"mount /proc", mountProc},
		{"mount /dev", mountDev},
		{"mount /tmp", mountTmp},
		{"attach workspace and extra paths", attachBinds},
		{"switch root", switchRoot},
	}
	for _, s := range steps {
		if err := s.fn(c); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

func makeMountsPrivate(*Config) error {
	return mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
}

// mountScratch mounts a tmpfs over the host's /tmp (in this mount namespace
// only) and makes it the root, with the host root at /oldroot.
func mountScratch(*Config) error {
	if err := mount("tmpfs", scratchDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return err
	}
	for _, d := range []string{oldRoot, newRoot} {
		if err := os.Mkdir(scratchDir+d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.PivotRoot(scratchDir, scratchDir+oldRoot); err != nil {
		return fmt.Errorf("pivot_root %s: %w", scratchDir, err)
	}
	return unix.Chdir("/")
}

// mountNewRoot mounts the tmpfs that becomes the sandbox's "/". It is made
// read-only once populated (switchRoot).
func mountNewRoot(*Config) error {
	return mount("tmpfs", newRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=4m")
}

func bindSystemDirs(*Config) error {
	for _, d := range systemDirs {
		fi, err := os.Lstat(oldRoot + d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(oldRoot + d)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, newRoot+d); err != nil {
				return err
			}
			continue
		}
		if !fi.IsDir() {
			continue
		}
		if err := bindMount(oldRoot+d, newRoot+d, true); err != nil {
			return err
		}
	}
	// Debian's /usr/bin/awk and friends point into /etc/alternatives.
	if fi, err := os.Stat(oldRoot + "/etc/alternatives"); err == nil && fi.IsDir() {
		if err := bindMount(oldRoot+"/etc/alternatives", newRoot+"/etc/alternatives", true); err != nil {
			return err
		}
	}
	return nil
}

// generateEtc writes the sandbox's own /etc: users, groups, hosts, name
// service switch (files only; there is no resolv.conf and no DNS), the
// host's CA bundle and dynamic linker cache.
func generateEtc(c *Config) error {
	etc := newRoot + "/etc"
	if err := os.MkdirAll(etc+"/ssl/certs", 0o755); err != nil {
		return err
	}
	hosts := "127.0.0.1\tlocalhost " + Hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	for _, h := range c.Hosts {
		hosts += h + "\n"
	}
	files := map[string]string{
		"passwd": fmt.Sprintf("root:x:0:0:root:%[2]s:/bin/sh\n%[1]s:x:%[3]d:%[3]d:%[1]s:%[2]s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
			UserName, WorkspaceDir, UserUID),
		"group":         fmt.Sprintf("root:x:0:\n%[1]s:x:%[2]d:\nnogroup:x:65534:\n", UserName, UserUID),
		"hosts":         hosts,
		"hostname":      Hostname + "\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n",
		"shells":        "/bin/sh\n/bin/bash\n",
	}
	for name, content := range files {
		if err := os.WriteFile(etc+"/"+name, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, f := range etcCopies {
		if err := copyHostFile(oldRoot+f, newRoot+f); err != nil {
			return err
		}
	}
	for _, b := range caBundles {
		if _, err := os.Stat(oldRoot + b); err != nil {
			continue
		}
		if err := attachCABundle(oldRoot+b, etc+"/ssl/certs/ca-certificates.crt"); err != nil {
			return err
		}
		if err := os.Symlink("certs/ca-certificates.crt", etc+"/ssl/cert.pem"); err != nil {
			return err
		}
		break
	}
	return nil
}

// attachCABundle makes the host's CA bundle src appear at dst. A regular
// file is bound read-only (nosuid, nodev): that file alone, no directory of
// the host, and no copy of its 200+ KB at every start. Anything else (a
// symlink into a directory the sandbox does not have) is copied as before.
func attachCABundle(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() {
		return bindMount(src, dst, true)
	}
	return copyHostFile(src, dst)
}

// copyHostFile copies src to dst if src exists; a symlink is recreated.
func copyHostFile(src, dst string) error {
	fi, err := os.Lstat(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.LimitReader(in, 8<<20)); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// mountProc mounts a fresh /proc of the sandbox's PID namespace with other
// users' processes invisible, then masks the kernel files that reveal or
// control the host.
func mountProc(*Config) error {
	p := newRoot + "/proc"
	if err := os.Mkdir(p, 0o555); err != nil {
		return err
	}
	if err := mount("proc", p, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=invisible"); err != nil {
		return err
	}
	return nil
}

// maskProc runs after /dev exists (it binds /dev/null over proc files).
func maskProc() error {
	p := newRoot + "/proc"
	for _, f := range procMaskedFiles {
		if _, err := os.Lstat(p + "/" + f); err != nil {
			continue
		}
		if err := mount(newRoot+"/dev/null", p+"/"+f, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	for _, d := range procMaskedDirs {
		if fi, err := os.Lstat(p + "/" + d); err != nil || !fi.IsDir() {
			continue
		}
		if err := mount("tmpfs", p+"/"+d, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=0555"); err != nil {
			return err
		}
	}
	for _, d := range procReadOnly {
		if _, err := os.Lstat(p + "/" + d); err != nil {
			continue
		}
		if err := bindMount(p+"/"+d, p+"/"+d, true); err != nil {
			return err
		}
	}
	return nil
}

// mountDev builds a minimal /dev: a few host character devices, a private
// devpts instance, /dev/shm and the usual symlinks. No block devices, no
// /dev/mem, no /dev/kmsg.
func mountDev(c *Config) error {
	d := newRoot + "/dev"
	if err := os.Mkdir(d, 0o755); err != nil {
		return err
	}
	if err := mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return err
	}
	for _, name := range devices {
		if err := os.WriteFile(d+"/"+name, nil, 0o666); err != nil {
			return err
		}
		if err := mount(oldRoot+"/dev/"+name, d+"/"+name, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	if err := os.Mkdir(d+"/pts", 0o755); err != nil {
		return err
	}
	if err := mount("devpts", d+"/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return err
	}
	if err := os.Mkdir(d+"/shm", 0o1777); err != nil {
		return err
	}
	if err := mount("tmpfs", d+"/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", c.TmpSize)); err != nil {
		return err
	}
	links := map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	}
	for name, target := range links {
		if err := os.Symlink(target, d+"/"+name); err != nil {
			return err
		}
	}
	if err := mount("", d, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("make /dev read-only: %w", err)
	}
	return maskProc()
}

func mountTmp(c *Config) error {
	t := newRoot + "/tmp"
	if err := os.Mkdir(t, 0o1777); err != nil {
		return err
	}
	return mount("tmpfs", t, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=1777,size=%d", c.TmpSize))
}

// attachBinds attaches the detached mounts the host opened: the workspace
// at /sandbox and the extra paths at their own paths. The host opened them
// (sandbox-init, an unprivileged host uid, may not even be able to reach
// them) and already set nosuid, nodev and read-only where asked.
func attachBinds(c *Config) error {
	for _, b := range c.Binds {
		dst := newRoot + b.Target
		if err := makeMountPoint(dst, b.Dir); err != nil {
			return err
		}
		if err := unix.MoveMount(b.FD, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("move_mount %s: %w", b.Target, err)
		}
		unix.Close(b.FD)
	}
	return nil
}

// switchRoot makes /newroot the root, detaches the host root and the
// scratch tmpfs, and makes the root tmpfs read-only.
func switchRoot(*Config) error {
	if err := unix.Unmount(oldRoot, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach host root: %w", err)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", newRoot, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach scratch root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make / read-only: %w", err)
	}
	return nil
}

// bindMount binds src at dst (creating dst like src: a directory or an
// empty file), recursively, with nosuid and nodev, and read-only if ro.
// The attributes are set with mount_setattr(AT_RECURSIVE) so they also
// cover mounts beneath src.
func bindMount(src, dst string, ro bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := makeMountPoint(dst, fi.IsDir()); err != nil {
		return err
	}
	if err := mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, dst, unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr %s: %w", strings.TrimPrefix(dst, newRoot), err)
	}
	return nil
}

// makeMountPoint creates dst as a directory or empty file unless it exists.
func makeMountPoint(dst string, dir bool) error {
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	if dir {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(pathpkg.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, nil, 0o644)
}

// mount wraps mount(2) with an error naming the target.
func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
		what := dst
		if src != "" && fstype == "" {
			what = src + " on " + dst
		}
		return fmt.Errorf("mount %s: %w", what, err)
	}
	return nil
}
