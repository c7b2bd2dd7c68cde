// Package quotatest makes small loop-mounted filesystems for tests of
// workspace disk limits (package quota and the sandbox's use of it).
package quotatest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// MountExt4 makes an ext4 image of sizeMiB MiB with mkfs.ext4 -O features
// (e.g. "quota,project") and loop-mounts it with options (e.g. "prjquota")
// on a new directory, unmounted when the test ends. It skips the test,
// saying why, when it is not root, when mkfs.ext4 or loop devices are
// missing, or when the kernel cannot mount such an image (a kernel without
// CONFIG_QFMT_V2 cannot mount ext4 with the quota feature).
func MountExt4(t testing.TB, sizeMiB int, features, options string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop-mounting a test filesystem needs root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs): cannot make the test filesystem")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no loop devices (/dev/loop-control): cannot mount the test filesystem")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"-q", "-F", "-I", "256", "-m", "0"}
	if features != "" {
		args = append(args, "-O", features)
	}
	if out, err := exec.CommandContext(ctx, mkfs, append(args, img)...).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4 -O %s: %v: %s", features, err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "loop"
	if options != "" {
		opts += "," + options
	}
	if out, err := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", opts, img, mnt).CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if kmsg := kernelSays(ctx); kmsg != "" {
			msg += " (kernel: " + kmsg + ")"
		}
		t.Skipf("cannot mount an ext4 image made with -O %s with -o %s on this kernel: %v: %s", features, opts, err, msg)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// kernelSays returns the kernel's last EXT4 message, if readable.
func kernelSays(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "dmesg").Output()
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0 && i >= len(lines)-5; i-- {
		if strings.Contains(lines[i], "EXT4-fs") {
			_, msg, _ := strings.Cut(lines[i], "] ")
			return msg
		}
	}
	return ""
}

// Free returns the bytes available on the filesystem at dir.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		t.Fatal(err)
	}
	return int64(s.Bavail) * s.Bsize
}
