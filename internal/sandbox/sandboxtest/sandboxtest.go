// Package sandboxtest holds what tests of sandboxes in several packages
// share.
package sandboxtest

// SyscallProbe is a Python program that makes one system call from inside
// a sandbox and prints "ok" or the errno's name: run it as
// python3 -c SyscallProbe WHAT, where WHAT is mount, unshare-user,
// ptrace-pid1 or tiocsti (on its stdin).
const SyscallProbe = `import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
what = sys.argv[1]
if what == "mount":
    r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
elif what == "unshare-user":
    r = libc.unshare(0x10000000)
elif what == "ptrace-pid1":
    r = libc.ptrace(16, 1, None, None)
elif what == "tiocsti":
    import fcntl, termios
    try:
        fcntl.ioctl(0, termios.TIOCSTI, b"x")
        r = 0
    except OSError as e:
        print(errno.errorcode[e.errno]); sys.exit(0)
print("ok" if r == 0 else errno.errorcode[ctypes.get_errno()])`
