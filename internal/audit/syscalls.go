package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// eperm is what a filtered syscall or a missing capability answers.
var eperm = []string{"EPERM"}

func syscallProbes() []Probe {
	return []Probe{
		{Name: "mount-tmpfs", Doc: "mount a tmpfs", Expect: eperm, Run: mountTmpfs},
		{Name: "fsopen", Doc: "new mount API: fsopen(\"tmpfs\")", Expect: eperm, Run: fsopen},
		{Name: "umount", Usage: "[TARGET]", Doc: "umount2(MNT_DETACH) a mount (default /proc/kcore, to uncover the real one)",
			Expect: eperm, Run: umount},
		{Name: "pivot-root", Doc: "pivot_root into a fresh directory", Expect: eperm, Run: pivotRoot},
		{Name: "chroot", Doc: "chroot(\"/\") (needs CAP_SYS_CHROOT)", Expect: eperm, Run: chroot},
		{Name: "unshare-userns", Doc: "unshare(CLONE_NEWUSER)", Expect: eperm, Run: unshareUserns},
		{Name: "clone-userns", Doc: "start a child in a new user namespace (clone with CLONE_NEWUSER)", Expect: eperm, Run: cloneUserns},
		{Name: "setns", Doc: "setns into each of /proc/self/ns/*", Expect: eperm, Run: setnsAll},
		{Name: "bpf", Doc: "bpf(BPF_MAP_CREATE)", Expect: eperm, Run: bpfMapCreate},
		{Name: "perf-event-open", Doc: "perf_event_open of a software counter on self", Expect: eperm, Run: perfEventOpen},
		{Name: "keyctl", Doc: "keyctl(KEYCTL_GET_KEYRING_ID, user keyring)", Expect: eperm, Run: keyctl},
		{Name: "add-key", Doc: "add_key a user key to the process keyring", Expect: eperm, Run: addKey},
		{Name: "io-uring", Doc: "io_uring_setup", Expect: eperm, Run: ioUringSetup},
		{Name: "userfaultfd", Doc: "userfaultfd", Expect: eperm, Run: userfaultfd},
		{Name: "init-module", Doc: "init_module of a 4-byte non-module", Expect: eperm, Run: initModule},
		{Name: "finit-module", Doc: "finit_module of /dev/null", Expect: eperm, Run: finitModule},
		{Name: "delete-module", Doc: "delete_module of a module that does not exist", Expect: eperm, Run: deleteModule},
		{Name: "kexec-file-load", Doc: "kexec_file_load with bad file descriptors", Expect: eperm, Run: kexecFileLoad},
		{Name: "open-by-handle", Doc: "open_by_handle_at on / (the \"shocker\" escape)", Expect: eperm, Run: openByHandle},
		{Name: "clone3", Doc: "clone3 (answered ENOSYS so libc falls back to the filterable clone)", Expect: []string{"ENOSYS"}, Run: clone3},
	}
}

func mountTmpfs(context.Context, []string) Observation {
	dir, err := os.MkdirTemp("", "clawcage-audit-mnt-")
	if err != nil {
		return errorf("mount-tmpfs: make a mount point: %v", err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=1m"); err != nil {
		return observe(err, "mount tmpfs on "+dir)
	}
	uerr := unix.Unmount(dir, unix.MNT_DETACH)
	return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("mounted a tmpfs on %s (unmount: %v)", dir, uerr)}
}

func fsopen(context.Context, []string) Observation {
	fd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return observe(err, "fsopen tmpfs")
	}
	unix.Close(fd)
	return Observation{Outcome: Succeeded, Detail: "fsopen(tmpfs) returned a filesystem context"}
}

func umount(_ context.Context, args []string) Observation {
	target := argOr(args, 0, "/proc/kcore")
	return observe(unix.Unmount(target, unix.MNT_DETACH), "umount2 "+target)
}

func pivotRoot(context.Context, []string) Observation {
	// A fresh directory is not a mount point, so even with every privilege
	// the kernel answers EINVAL instead of pivoting: harmless on a host.
	dir, err := os.MkdirTemp("", "clawcage-audit-pivot-")
	if err != nil {
		return errorf("pivot-root: make a directory: %v", err)
	}
	defer os.RemoveAll(dir)
	old := filepath.Join(dir, "old")
	if err := os.Mkdir(old, 0o700); err != nil {
		return errorf("pivot-root: %v", err)
	}
	return observe(unix.PivotRoot(dir, old), "pivot_root "+dir)
}

func chroot(context.Context, []string) Observation {
	// chroot("/") changes nothing even where it is allowed; the answer
	// shows whether CAP_SYS_CHROOT is held.
	return onDisposableThread(func() Observation {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return errorf("chroot: unshare(CLONE_FS) for a private root: %v", err)
		}
		return observe(unix.Chroot("/"), "chroot /")
	})
}

func unshareUserns(context.Context, []string) Observation {
	// A multi-threaded process gets EINVAL from the kernel even where user
	// namespaces are allowed; only the filter answers EPERM first.
	return onDisposableThread(func() Observation {
		return observe(unix.Unshare(unix.CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
	})
}

func cloneUserns(ctx context.Context, _ []string) Observation {
	cmd, err := helperCommand(ctx, "", "exit0")
	if err != nil {
		return errorf("%v", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER}
	if err := cmd.Run(); err != nil {
		return observe(err, "clone(CLONE_NEWUSER)")
	}
	return Observation{Outcome: Succeeded, Detail: "a child ran in a new user namespace"}
}

func setnsAll(context.Context, []string) Observation {
	ents, err := os.ReadDir("/proc/self/ns")
	if err != nil {
		return observe(err, "list /proc/self/ns")
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return onDisposableThread(func() Observation {
		// The thread's fs may be shared with the process; a private copy
		// keeps a successful mount-namespace switch to this thread.
		_ = unix.Unshare(unix.CLONE_FS)
		errs := make([]error, len(names))
		for i, n := range names {
			fd, err := unix.Open("/proc/self/ns/"+n, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errs[i] = err
				continue
			}
			errs[i] = unix.Setns(fd, 0)
			unix.Close(fd)
		}
		return combine(names, errs)
	})
}

func bpfMapCreate(context.Context, []string) Observation {
	attr := struct{ mapType, keySize, valueSize, maxEntries, mapFlags uint32 }{2 /* ARRAY */, 4, 4, 1, 0}
	fd, _, e := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e != 0 {
		return observe(e, "bpf(BPF_MAP_CREATE)")
	}
	unix.Close(int(fd))
	return Observation{Outcome: Succeeded, Detail: "created a BPF array map"}
}

func perfEventOpen(context.Context, []string) Observation {
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Bits:   unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv,
	}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return observe(err, "perf_event_open")
	}
	unix.Close(fd)
	return Observation{Outcome: Succeeded, Detail: "opened a perf event"}
}

func keyctl(context.Context, []string) Observation {
	id, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_USER_KEYRING, 0, 0, 0)
	if err != nil {
		return observe(err, "keyctl(KEYCTL_GET_KEYRING_ID)")
	}
	return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("user keyring id %d", id)}
}

func addKey(context.Context, []string) Observation {
	id, err := unix.AddKey("user", "clawcage-audit", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	if err != nil {
		return observe(err, "add_key")
	}
	_, uerr := unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_PROCESS_KEYRING, 0, 0)
	return Observation{Outcome: Succeeded, Detail: fmt.Sprintf("added key %d (unlink: %v)", id, uerr)}
}

func ioUringSetup(context.Context, []string) Observation {
	var params [120]byte // struct io_uring_params, zeroed
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	if e != 0 {
		return observe(e, "io_uring_setup")
	}
	unix.Close(int(fd))
	return Observation{Outcome: Succeeded, Detail: "created an io_uring"}
}

func userfaultfd(context.Context, []string) Observation {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
	if e != 0 {
		return observe(e, "userfaultfd")
	}
	unix.Close(int(fd))
	return Observation{Outcome: Succeeded, Detail: "created a userfaultfd"}
}

func initModule(context.Context, []string) Observation {
	// Not an ELF image: even with CAP_SYS_MODULE the kernel rejects it
	// (ENOEXEC), so the probe is harmless on a host.
	return observe(unix.InitModule([]byte("\x00\x00\x00\x00"), ""), "init_module")
}

func finitModule(context.Context, []string) Observation {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return errorf("finit-module: open /dev/null: %v", err)
	}
	defer unix.Close(fd)
	return observe(unix.FinitModule(fd, "", 0), "finit_module(/dev/null)")
}

func deleteModule(context.Context, []string) Observation {
	return observe(unix.DeleteModule("clawcage_audit_no_such_module", unix.O_NONBLOCK), "delete_module")
}

func kexecFileLoad(context.Context, []string) Observation {
	_, _, e := unix.Syscall6(unix.SYS_KEXEC_FILE_LOAD, ^uintptr(0), ^uintptr(0), 0, 0, 0, 0)
	if e != 0 {
		return observe(e, "kexec_file_load(-1, -1)")
	}
	return Observation{Outcome: Succeeded, Detail: "kexec_file_load accepted bad descriptors"}
}

func openByHandle(context.Context, []string) Observation {
	mountFD, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return errorf("open-by-handle: open /: %v", err)
	}
	defer unix.Close(mountFD)
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, "/", 0)
	if err != nil {
		// No handle to reuse: a made-up one still shows whether the call
		// is reachable (ESTALE/EINVAL) or filtered (EPERM).
		h = unix.NewFileHandle(1, make([]byte, 8))
	}
	fd, err := unix.OpenByHandleAt(mountFD, h, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return observe(err, "open_by_handle_at")
	}
	unix.Close(fd)
	return Observation{Outcome: Succeeded, Detail: "opened / by file handle"}
}

func clone3(context.Context, []string) Observation {
	// A zero-sized argument is invalid: where clone3 is reachable the
	// kernel answers EINVAL without creating anything.
	_, _, e := unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0)
	if e != 0 {
		return observe(e, "clone3(NULL, 0)")
	}
	return Observation{Outcome: Succeeded, Detail: "clone3 accepted a NULL argument"}
}
