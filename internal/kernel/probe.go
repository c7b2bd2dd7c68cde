package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Probe examines the running kernel. It never fails: a feature whose probe
// errs is reported missing with the error in its Detail. ctx bounds the
// child processes started to try new namespaces.
func Probe(ctx context.Context) Report {
	var r Report
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		r.Kernel = unix.ByteSliceToString(uts.Release[:])
		r.Arch = unix.ByteSliceToString(uts.Machine[:])
	}

	abi, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	var ll Feature
	ll, r.LandlockABI = landlockFeature(int(abi), e)
	r.Features = append(r.Features, ll, probeSeccomp())

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r.Features = append(r.Features, probeUserNS(ctx), probeNetNS(ctx))

	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		r.Cgroups = Cgroups{Version: "none", Controllers: map[string]string{}}
	} else {
		r.Cgroups = parseMounts(string(mounts), func(mp string) (string, error) {
			b, err := os.ReadFile(mp + "/cgroup.controllers")
			return string(b), err
		})
	}
	r.Features = append(r.Features,
		cgroupFeature(r.Cgroups, CgroupMemory, "memory", true),
		cgroupFeature(r.Cgroups, CgroupPids, "pids", true),
		cgroupFeature(r.Cgroups, CgroupCPU, "cpu", false),
		probeNftables(),
		probePidfd(),
		suidDumpableFeature(readSysctl("/proc/sys/fs/suid_dumpable")),
	)
	return r
}

// landlockFeature interprets landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION).
func landlockFeature(abi int, errno syscall.Errno) (Feature, int) {
	f := Feature{Name: Landlock, Required: true}
	switch {
	case errno == unix.ENOSYS:
		f.Detail = "the kernel has no Landlock system calls"
		f.Fix = "use a kernel built with CONFIG_SECURITY_LANDLOCK=y (Linux 5.13 or later; 6.12+ for every sandbox rule) and boot it with landlock in lsm="
		return f, 0
	case errno == unix.EOPNOTSUPP:
		f.Detail = "Landlock is built in but not enabled at boot"
		f.Fix = "add landlock to the lsm= kernel parameter, e.g. lsm=landlock,lockdown,yama,integrity,apparmor,bpf (keep the LSMs your distribution lists in /sys/kernel/security/lsm)"
		return f, 0
	case errno != 0:
		f.Detail = "landlock_create_ruleset: " + errno.Error()
		f.Fix = "use a kernel built with CONFIG_SECURITY_LANDLOCK=y and boot it with landlock in lsm="
		return f, 0
	case abi < 1:
		f.Detail = fmt.Sprintf("the kernel reports Landlock ABI %d", abi)
		f.Fix = "use a kernel built with CONFIG_SECURITY_LANDLOCK=y"
		return f, 0
	}
	f.OK = true
	have := []string{"filesystem"}
	var lacks []string
	if abi >= 4 {
		have = append(have, "TCP bind/connect")
	} else {
		lacks = append(lacks, "TCP rules (ABI 4, Linux 6.7)")
	}
	if abi >= 6 {
		have = append(have, "abstract-socket and signal scoping")
	} else {
		lacks = append(lacks, "abstract-socket and signal scoping (ABI 6, Linux 6.12)")
	}
	f.Detail = fmt.Sprintf("ABI %d: %s", abi, strings.Join(have, ", "))
	if len(lacks) > 0 {
		f.Detail += "; lacks " + strings.Join(lacks, ", ")
	}
	return f, abi
}

func probeSeccomp() Feature {
	f := Feature{Name: Seccomp, Required: true}
	mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	if err != nil {
		f.Detail = "prctl(PR_GET_SECCOMP): " + err.Error()
		f.Fix = "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y"
		return f
	}
	for _, a := range []struct {
		action uint32
		name   string
	}{{unix.SECCOMP_RET_ERRNO, "SECCOMP_RET_ERRNO"}, {unix.SECCOMP_RET_KILL_PROCESS, "SECCOMP_RET_KILL_PROCESS"}} {
		action := a.action
		_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action)))
		if e != 0 {
			f.Detail = fmt.Sprintf("seccomp(SECCOMP_GET_ACTION_AVAIL, %s): %v", a.name, e)
			f.Fix = "use a kernel built with CONFIG_SECCOMP_FILTER=y (Linux 4.14 or later)"
			return f
		}
	}
	f.OK = true
	f.Detail = "filters with SECCOMP_RET_ERRNO and SECCOMP_RET_KILL_PROCESS"
	if mode == 2 {
		f.Detail += "; this process already runs under a seccomp filter"
	}
	return f
}

// readSysctl returns the trimmed content of a /proc/sys file and whether it exists.
func readSysctl(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// trueBinary is a harmless program to start in new namespaces.
func trueBinary() string {
	for _, p := range []string{"/bin/true", "/usr/bin/true"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// tryNamespaces starts /bin/true with clone flags and reports why it failed.
func tryNamespaces(ctx context.Context, flags uintptr) error {
	bin := trueBinary()
	if bin == "" {
		return errNoTrue
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	return cmd.Run()
}

var errNoTrue = errors.New("no /bin/true to start in a new namespace")

func probeUserNS(ctx context.Context) Feature {
	f := Feature{Name: UserNS, Required: true}
	var notes []string
	maxNS, ok := readSysctl("/proc/sys/user/max_user_namespaces")
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		f.Detail = "the kernel has no user namespaces (/proc/self/ns/user is missing)"
		f.Fix = "use a kernel built with CONFIG_USER_NS=y"
		return f
	}
	if ok {
		if n, _ := strconv.Atoi(maxNS); n == 0 {
			f.Detail = "user.max_user_namespaces is 0"
			f.Fix = "sysctl -w user.max_user_namespaces=15000 (and persist it in /etc/sysctl.d/)"
			return f
		}
		notes = append(notes, "user.max_user_namespaces="+maxNS)
	}
	if v, ok := readSysctl("/proc/sys/kernel/unprivileged_userns_clone"); ok {
		notes = append(notes, "kernel.unprivileged_userns_clone="+v+" (limits only unprivileged callers)")
	}
	if v, ok := readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); ok {
		notes = append(notes, "kernel.apparmor_restrict_unprivileged_userns="+v+" (limits only unprivileged callers)")
	}
	err := tryNamespaces(ctx, unix.CLONE_NEWUSER)
	switch {
	case errors.Is(err, errNoTrue):
		notes = append(notes, "not tried: "+err.Error())
	case err != nil:
		f.Detail = "creating a user namespace failed: " + err.Error()
		if len(notes) > 0 {
			f.Detail += " (" + strings.Join(notes, ", ") + ")"
		}
		f.Fix = "run as root; check user.max_user_namespaces (sysctl -w user.max_user_namespaces=15000) and any LSM or container policy that blocks unshare(CLONE_NEWUSER)"
		if os.Geteuid() != 0 {
			f.Fix = "run clawcage as root (probed as uid " + strconv.Itoa(os.Geteuid()) + "); " +
				"for unprivileged use: sysctl -w kernel.unprivileged_userns_clone=1 / kernel.apparmor_restrict_unprivileged_userns=0 where present"
		}
		return f
	default:
		notes = append([]string{"created one"}, notes...)
	}
	f.OK = true
	f.Detail = strings.Join(notes, "; ")
	return f
}

func probeNetNS(ctx context.Context) Feature {
	f := Feature{Name: NetNS, Required: true}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		f.Detail = "the kernel has no network namespaces (/proc/self/ns/net is missing)"
		f.Fix = "use a kernel built with CONFIG_NET_NS=y"
		return f
	}
	if v, ok := readSysctl("/proc/sys/user/max_net_namespaces"); ok && v == "0" {
		f.Detail = "user.max_net_namespaces is 0"
		f.Fix = "sysctl -w user.max_net_namespaces=15000"
		return f
	}
	flags := uintptr(unix.CLONE_NEWNET)
	if os.Geteuid() != 0 {
		flags |= unix.CLONE_NEWUSER
	}
	err := tryNamespaces(ctx, flags)
	switch {
	case errors.Is(err, errNoTrue):
		f.OK = true
		f.Detail = "present; not tried: " + err.Error()
	case err != nil:
		f.Detail = "creating a network namespace failed: " + err.Error()
		f.Fix = "run as root; check user.max_net_namespaces and any container policy that blocks unshare(CLONE_NEWNET)"
	default:
		f.OK = true
		f.Detail = "created one"
	}
	return f
}

func probePidfd() Feature {
	f := Feature{Name: Pidfd}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		f.Detail = "pidfd_open: " + err.Error()
		f.Fix = "use Linux 5.3 or later (without pidfds, process supervision falls back to pids)"
		return f
	}
	unix.Close(fd)
	f.OK = true
	f.Detail = "pidfd_open works"
	return f
}

// probeNftables asks nf_tables over netlink for its ruleset generation,
// and looks for the nft binary. Transparent mode (DESIGN §2) needs both.
func probeNftables() Feature {
	f := Feature{Name: Nftables}
	nft, lookErr := exec.LookPath("nft")
	err := nftablesNetlink()
	switch {
	case err != nil:
		f.Detail = "nf_tables over netlink: " + err.Error()
		f.Fix = "use a kernel with CONFIG_NF_TABLES (modprobe nf_tables); only transparent mode needs it"
		if errors.Is(err, unix.EPERM) {
			f.Fix = "run as root to probe (nf_tables needs CAP_NET_ADMIN)"
		}
	case lookErr != nil:
		f.OK = true
		f.Detail = "nf_tables answers over netlink; no nft binary in PATH"
	default:
		f.OK = true
		f.Detail = "nf_tables answers over netlink; nft at " + nft
	}
	return f
}

func nftablesNetlink() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("open NETLINK_NETFILTER socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set receive timeout: %w", err)
	}
	// struct nlmsghdr + struct nfgenmsg asking NFT_MSG_GETGEN.
	msg := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:], 1) // seq
	msg[16] = unix.AF_UNSPEC
	msg[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send NFT_MSG_GETGEN: %w", err)
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("receive NFT_MSG_GETGEN reply: %w", err)
	}
	if n < unix.NLMSG_HDRLEN {
		return fmt.Errorf("short netlink reply (%d bytes)", n)
	}
	switch typ := binary.NativeEndian.Uint16(buf[4:]); typ {
	case unix.NLMSG_ERROR:
		if n < unix.NLMSG_HDRLEN+4 {
			return errors.New("short netlink error reply")
		}
		if code := int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); code != 0 {
			return syscall.Errno(-code)
		}
		return errors.New("NFT_MSG_GETGEN was acknowledged without an answer")
	case unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN:
		return nil
	default:
		return fmt.Errorf("unexpected netlink reply type %#x", typ)
	}
}
