package audit

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

func deviceProbes() []Probe {
	return []Probe{
		{Name: "dev-mem", Doc: "open /dev/mem", Expect: []string{"ENOENT"},
			Run: func(context.Context, []string) Observation { return openDevice("/dev/mem") }},
		{Name: "dev-kmsg", Doc: "open /dev/kmsg", Expect: []string{"ENOENT"},
			Run: func(context.Context, []string) Observation { return openDevice("/dev/kmsg") }},
		{Name: "block-devices", Doc: "open any block device (/dev/sda, /dev/vda, ... and whatever /dev holds)",
			Expect: []string{"ENOENT"}, Run: blockDevices},
		{Name: "mknod", Doc: "mknod a /dev/mem character device (1,1) in a temporary directory", Expect: eperm, Run: mknod},
		{Name: "tiocsti", Usage: "[TEXT]", Doc: "push keystrokes into the terminal on stdin with TIOCSTI",
			Expect: []string{"EPERM", "EIO"}, Run: tiocsti},
	}
}

func openDevice(path string) Observation {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return observe(err, "open "+path)
	}
	unix.Close(fd)
	return Observation{Outcome: Succeeded, Detail: "opened " + path}
}

func blockDevices(context.Context, []string) Observation {
	cands := map[string]bool{}
	for _, p := range []string{"/dev/sda", "/dev/vda", "/dev/xvda", "/dev/nvme0n1", "/dev/hda", "/dev/mmcblk0", "/dev/loop0", "/dev/dm-0", "/dev/md0"} {
		cands[p] = true
	}
	_ = filepath.WalkDir("/dev", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type()&fs.ModeDevice != 0 && d.Type()&fs.ModeCharDevice == 0 {
			cands[p] = true
		}
		return nil
	})
	var found []string
	var opened []string
	for p := range cands {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			continue
		}
		found = append(found, p)
		if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err == nil {
			unix.Close(fd)
			opened = append(opened, p)
		} else {
			found[len(found)-1] += "=" + OutcomeOf(err)
		}
	}
	switch {
	case len(opened) > 0:
		return Observation{Outcome: Succeeded, Detail: "opened block devices: " + strings.Join(opened, ",")}
	case len(found) > 0:
		return Observation{Outcome: "EACCES", Detail: "block devices present but not openable: " + strings.Join(found, ",")}
	}
	return Observation{Outcome: "ENOENT", Detail: "no block device in /dev"}
}

func mknod(context.Context, []string) Observation {
	dir, err := os.MkdirTemp("", "clawcage-audit-mknod-")
	if err != nil {
		return errorf("mknod: make a directory: %v", err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "mem")
	if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1))); err != nil {
		return observe(err, "mknod "+p+" c 1 1")
	}
	detail := "created character device 1:1 at " + p
	if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		detail += " and opened it"
	} else {
		detail += " (open: " + OutcomeOf(err) + ")"
	}
	return Observation{Outcome: Succeeded, Detail: detail}
}

func tiocsti(_ context.Context, args []string) Observation {
	text := argOr(args, 0, "#clawcage-audit\n")
	var errs []error
	names := []string{"stdin"}
	pushed := 0
	for i := 0; i < len(text); i++ {
		b := text[i]
		_, _, e := unix.Syscall(unix.SYS_IOCTL, 0, unix.TIOCSTI, uintptr(unsafe.Pointer(&b)))
		if e != 0 {
			errs = append(errs, e)
			break
		}
		pushed++
	}
	if len(errs) == 0 {
		return Observation{Outcome: Succeeded, Detail: "pushed " + strconv.Itoa(pushed) + " bytes into the terminal on stdin (" + ttyName(0) + ")"}
	}
	o := combine(names, errs)
	o.Detail = fmt.Sprintf("TIOCSTI on stdin (%s): %s", ttyName(0), o.Detail)
	return o
}

func ttyName(fd int) string {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "?"
	}
	return p
}
