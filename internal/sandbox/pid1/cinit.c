//go:build cgo

/*
 * cinit: the sandbox's PID 1 ("clawcage sandbox-init") in C, run by a
 * constructor before the Go runtime starts. See the package documentation
 * (pid1.go) and docs/sandbox.md for the design; the Go implementation
 * (init.go, rootfs.go, landlock.go, exec.go) is the specification this
 * file follows step by step, with the same step names in its reports.
 *
 * It runs single-threaded, uses no heap (static buffers, bounded by the
 * limits of the configuration encoding in codec.go), checks every length
 * it reads, and reports every failing system call with its step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cinit.h"

/* System call numbers and structures newer than some libc headers. */
#ifndef __NR_move_mount
#define __NR_move_mount 429
#endif
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif

#define CI_CLOSE_RANGE_CLOEXEC (1U << 2)
#define CI_MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define CI_AT_RECURSIVE 0x8000
#define CI_MOUNT_ATTR_RDONLY 0x00000001
#define CI_MOUNT_ATTR_NOSUID 0x00000002
#define CI_MOUNT_ATTR_NODEV 0x00000004

struct ci_mount_attr {
	uint64_t attr_set;
	uint64_t attr_clr;
	uint64_t propagation;
	uint64_t userns_fd;
};

#define CI_LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#define CI_LANDLOCK_RULE_PATH_BENEATH 1
#define CI_LANDLOCK_RULE_NET_PORT 2

struct ci_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

struct ci_path_beneath_attr {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

struct ci_net_port_attr {
	uint64_t allowed_access;
	uint64_t port;
};

/* Securebits (linux/securebits.h), as in init.go. */
#define CI_SECBIT_NOROOT (1 << 0)
#define CI_SECBIT_NOROOT_LOCKED (1 << 1)
#define CI_SECBIT_KEEP_CAPS_LOCKED (1 << 5)
#define CI_SECBIT_NO_CAP_AMBIENT_RAISE (1 << 6)
#define CI_SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED (1 << 7)

/* The descriptors and exit codes of protocol.go. */
enum {
	CONFIG_FD = 3,
	REPORT_FD = 4,
	FIRST_BIND_FD = 5,
	EXIT_SETUP_FAILED = 125,
	EXIT_NOT_EXECUTABLE = 126,
	EXIT_NOT_FOUND = 127,
};

/* The limits of the encoding (codec.go). */
#define MAX_CONFIG_SIZE (1 << 20)
#define MAX_LIST 4096
#define MAX_STRING (64 << 10)
#define MAX_SECCOMP (4096 * 8)
#define MIN_LANDLOCK_ABI 6
#define FLAG_CTTY 1u
#define MAX_PATH_LEN 4000
/* What Landlock ABI 6 handles: every file system right up to IOCTL_DEV,
 * TCP bind and connect, abstract Unix sockets and signals. */
#define LL_ABI6_FS 0xffffULL
#define LL_NET_TCP 0x3ULL
#define LL_SCOPES 0x3ULL

#define HOSTNAME "sandbox"
#define WORKSPACE_DIR "/sandbox"
#define OLD_ROOT "/oldroot"
#define NEW_ROOT "/newroot"
#define SCRATCH_DIR "/tmp"

struct strlist {
	size_t n;              /* first: on the page of the first entries */
	char *v[MAX_LIST + 1]; /* NULL-terminated */
};

struct bind {
	const char *target;
	int dir;
	int fd;
};

struct llpath {
	const char *path;
	uint64_t access;
	int dir_only;
};

struct llport {
	uint16_t port;
	uint64_t access;
};

static struct config {
	/* Scalars and counts first, arrays after: only the pages in use are
	 * touched (each one a page fault). */
	uint32_t flags, uid, uid_base;
	int exec_fd;
	uint64_t tmp_size, file_size_limit;
	size_t nconnect, nbind, nbinds, nllpaths, nllports;
	int has_landlock;
	uint32_t ll_abi, ll_flags;
	uint64_t ll_fs, ll_net, ll_scoped;
	const unsigned char *seccomp;
	size_t seccomp_len;
	struct strlist command, env, hosts, read_only, read_write;
	uint16_t connect[MAX_LIST], bind[MAX_LIST];
	struct bind binds[MAX_LIST];
	struct llpath llpaths[MAX_LIST];
	struct llport llports[MAX_LIST];
} cfg;

static unsigned char cfgbuf[MAX_CONFIG_SIZE + 1];
static size_t cfglen;
static struct cinit_state state;

const struct cinit_state *cinit_get_state(void) { return &state; }

/* ---- errors and the report ---- */

static char emsg[4096]; /* the failing call's message */

/* errstr is strerror in Go's spelling (lower-case first letter). */
static const char *errstr(int e)
{
	static char buf[128];
	snprintf(buf, sizeof buf, "%s", strerror(e));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

/* seterr sets emsg to the formatted text; seterrno appends ": <errno>". */
__attribute__((format(printf, 1, 2))) static int seterr(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(emsg, sizeof emsg, fmt, ap);
	va_end(ap);
	return -1;
}

__attribute__((format(printf, 1, 2))) static int seterrno(const char *fmt, ...)
{
	int e = errno;
	char what[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	snprintf(emsg, sizeof emsg, "%s: %s", what, errstr(e));
	errno = e;
	return -1;
}

/* bprintf formats into dst, truncating what does not fit. */
__attribute__((format(printf, 3, 4))) static void bprintf(char *dst, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, cap, fmt, ap);
	va_end(ap);
}

/* prefix turns emsg into "<p>: <emsg>". */
static void prefix(const char *p)
{
	char tmp[sizeof emsg];
	bprintf(tmp, sizeof tmp, "%s: %s", p, emsg);
	memcpy(emsg, tmp, sizeof emsg);
}

static char report[64 << 10]; /* 6 × the longest escaped emsg, and more */
static size_t reportlen;

static void rput(const char *s, size_t n)
{
	if (n > sizeof report - 1 - reportlen)
		n = sizeof report - 1 - reportlen;
	memcpy(report + reportlen, s, n);
	reportlen += n;
}

static void rputs(const char *s) { rput(s, strlen(s)); }

/* rjson appends s as a JSON string. */
static void rjson(const char *s)
{
	static const char hex[] = "0123456789abcdef";
	rputs("\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[7];
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			rput(esc, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 15];
			rput(esc, 6);
		} else {
			rput((const char *)p, 1);
		}
	}
	rputs("\"");
}

/* fail reports {step, error[, feature, reason, fix], code} to the host on
 * REPORT_FD (pid1.Report) and exits with code. */
static void __attribute__((noreturn))
fail_report(const char *step, const char *err, const char *feature, const char *reason, const char *fix, int code)
{
	char num[16];
	reportlen = 0;
	rputs("{\"step\":");
	rjson(step);
	rputs(",\"error\":");
	rjson(err);
	if (feature) {
		rputs(",\"feature\":");
		rjson(feature);
		rputs(",\"reason\":");
		rjson(reason);
		rputs(",\"fix\":");
		rjson(fix);
	}
	snprintf(num, sizeof num, "%d", code);
	rputs(",\"code\":");
	rputs(num);
	rputs("}");
	ssize_t w;
	do
		w = write(REPORT_FD, report, reportlen);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)reportlen)
		dprintf(2, "clawcage sandbox: %s: %s\n", step, err);
	_exit(code);
}

static void __attribute__((noreturn)) fail(const char *step, int code) { fail_report(step, emsg, NULL, NULL, NULL, code); }

/* unavailable reports a missing kernel feature (pid1.UnavailableError). */
static void __attribute__((noreturn)) unavailable(const char *step, const char *feature, const char *reason, const char *fix)
{
	char err[2048];
	snprintf(err, sizeof err, "%s unavailable: %s; the sandbox refuses to run without it (fix: %s)", feature, reason, fix);
	fail_report(step, err, feature, reason, fix, EXIT_SETUP_FAILED);
}

/* ---- the configuration (codec.go) ---- */

struct rd {
	unsigned char *b;
	size_t n, off;
	int bad;
};

__attribute__((format(printf, 2, 3))) static void rdfail(struct rd *r, const char *fmt, ...)
{
	char what[1024];
	va_list ap;
	if (r->bad)
		return;
	r->bad = 1;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	seterr("at byte %zu: %s", r->off, what);
}

static unsigned char *take(struct rd *r, size_t k)
{
	if (r->bad)
		return NULL;
	if (k > r->n - r->off) {
		rdfail(r, "%zu bytes past the end", k - (r->n - r->off));
		return NULL;
	}
	unsigned char *p = r->b + r->off;
	r->off += k;
	return p;
}

static uint64_t le(struct rd *r, size_t k)
{
	unsigned char *p = take(r, k);
	uint64_t v = 0;
	if (!p)
		return 0;
	for (size_t i = 0; i < k; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint32_t u32(struct rd *r) { return (uint32_t)le(r, 4); }

static int rdbool(struct rd *r, const char *what)
{
	unsigned char *p = take(r, 1);
	if (!p)
		return 0;
	if (*p > 1)
		rdfail(r, "%s: %u is not a boolean", what, *p);
	return *p == 1;
}

static int rdfd(struct rd *r, const char *what)
{
	uint32_t v = u32(r);
	if (v > INT32_MAX)
		rdfail(r, "%s %u out of range", what, v);
	return (int)(v & INT32_MAX);
}

static uint64_t rdsize(struct rd *r, const char *what)
{
	uint64_t v = le(r, 8);
	if (v > INT64_MAX)
		rdfail(r, "%s %llu out of range", what, (unsigned long long)v);
	return v;
}

static size_t count(struct rd *r, const char *what)
{
	uint32_t n = u32(r);
	if (n > MAX_LIST) {
		rdfail(r, "%s: %u entries, over %d", what, n, MAX_LIST);
		return 0;
	}
	return n;
}

static char *str(struct rd *r, const char *what)
{
	uint32_t n = u32(r);
	if (n > MAX_STRING) {
		rdfail(r, "%s of %u bytes: over %d", what, n, MAX_STRING);
		return NULL;
	}
	unsigned char *p = take(r, (size_t)n + 1);
	if (!p)
		return NULL;
	if (p[n] != 0) {
		rdfail(r, "%s: no NUL after %u bytes", what, n);
		return NULL;
	}
	if (memchr(p, 0, n)) {
		rdfail(r, "%s: NUL inside", what);
		return NULL;
	}
	return (char *)p;
}

static void strlist(struct rd *r, struct strlist *l, const char *what)
{
	l->n = 0;
	size_t n = count(r, what);
	for (size_t i = 0; i < n && !r->bad; i++)
		l->v[l->n++] = str(r, what);
	l->v[l->n] = NULL;
}

static void ports(struct rd *r, uint16_t *v, size_t *np, const char *what)
{
	*np = 0;
	size_t n = count(r, what);
	for (size_t i = 0; i < n && !r->bad; i++)
		v[(*np)++] = (uint16_t)le(r, 2);
}

/* decode parses cfgbuf[0:cfglen] into cfg, exactly as DecodeConfig does;
 * on failure emsg says why. Strings point into cfgbuf. */
static int decode(void)
{
	struct rd r = {cfgbuf, cfglen, 0, 0};
	/* Reset what a previous decode (tests) set; not memset(&cfg): its
	 * arrays are hundreds of KB, and every page touched is a fault. */
	cfg.flags = cfg.uid = cfg.uid_base = 0;
	cfg.exec_fd = 0;
	cfg.tmp_size = cfg.file_size_limit = 0;
	cfg.command.n = cfg.env.n = cfg.hosts.n = cfg.read_only.n = cfg.read_write.n = 0;
	cfg.nconnect = cfg.nbind = cfg.nbinds = cfg.nllpaths = cfg.nllports = 0;
	cfg.has_landlock = 0;
	cfg.ll_abi = cfg.ll_flags = 0;
	cfg.ll_fs = cfg.ll_net = cfg.ll_scoped = 0;
	cfg.seccomp = NULL;
	cfg.seccomp_len = 0;
	if (cfglen > MAX_CONFIG_SIZE)
		return seterr("decode config (%zu bytes): config of %zu bytes: over %d", cfglen, cfglen, MAX_CONFIG_SIZE);
	unsigned char *m = take(&r, 4);
	if (!m || memcmp(m, "CCI1", 4) != 0)
		return seterr("decode config (%zu bytes): not a sandbox config (bad magic)", cfglen);
	cfg.flags = u32(&r);
	if (cfg.flags & ~FLAG_CTTY)
		rdfail(&r, "unknown flags %#x", cfg.flags);
	cfg.uid = u32(&r);
	cfg.uid_base = u32(&r);
	cfg.exec_fd = rdfd(&r, "exec fd");
	cfg.tmp_size = rdsize(&r, "tmp size");
	cfg.file_size_limit = rdsize(&r, "file size limit");
	strlist(&r, &cfg.command, "command");
	strlist(&r, &cfg.env, "env");
	strlist(&r, &cfg.hosts, "hosts");
	strlist(&r, &cfg.read_only, "read_only");
	strlist(&r, &cfg.read_write, "read_write");
	ports(&r, cfg.connect, &cfg.nconnect, "connect");
	ports(&r, cfg.bind, &cfg.nbind, "bind");
	size_t n = count(&r, "binds");
	for (size_t i = 0; i < n && !r.bad; i++) {
		struct bind *b = &cfg.binds[cfg.nbinds++];
		b->target = str(&r, "bind target");
		b->dir = rdbool(&r, "bind dir");
		b->fd = rdfd(&r, "bind fd");
	}
	cfg.has_landlock = rdbool(&r, "landlock");
	if (cfg.has_landlock) {
		cfg.ll_abi = u32(&r);
		cfg.ll_fs = le(&r, 8);
		cfg.ll_net = le(&r, 8);
		cfg.ll_scoped = le(&r, 8);
		cfg.ll_flags = u32(&r);
		n = count(&r, "landlock paths");
		for (size_t i = 0; i < n && !r.bad; i++) {
			struct llpath *p = &cfg.llpaths[cfg.nllpaths++];
			p->path = str(&r, "landlock path");
			p->access = le(&r, 8);
			p->dir_only = rdbool(&r, "landlock dir only");
		}
		n = count(&r, "landlock ports");
		for (size_t i = 0; i < n && !r.bad; i++) {
			struct llport *p = &cfg.llports[cfg.nllports++];
			p->port = (uint16_t)le(&r, 2);
			p->access = le(&r, 8);
		}
	}
	uint32_t sl = u32(&r);
	if (!r.bad) {
		if (sl > MAX_SECCOMP || sl % 8 != 0)
			rdfail(&r, "seccomp filter of %u bytes: want a multiple of 8, at most %d", sl, MAX_SECCOMP);
		else if (sl > 0) {
			cfg.seccomp = take(&r, sl);
			cfg.seccomp_len = sl;
		}
	}
	if (!r.bad && r.off != r.n)
		rdfail(&r, "%zu bytes after the end", r.n - r.off);
	if (r.bad) {
		char p[64];
		snprintf(p, sizeof p, "decode config (%zu bytes)", cfglen);
		prefix(p);
		return -1;
	}
	return 0;
}

int cinit_decode_check(const unsigned char *b, size_t n, char *err, size_t errlen)
{
	if (n > MAX_CONFIG_SIZE) {
		snprintf(err, errlen, "config of %zu bytes: over %d", n, MAX_CONFIG_SIZE);
		return -1;
	}
	memcpy(cfgbuf, b, n);
	cfglen = n;
	if (decode() < 0) {
		snprintf(err, errlen, "%s", emsg);
		return -1;
	}
	return 0;
}

/* readconfig reads the configuration from CONFIG_FD until EOF. */
static int readconfig(void)
{
	cfglen = 0;
	for (;;) {
		ssize_t k = read(CONFIG_FD, cfgbuf + cfglen, sizeof cfgbuf - cfglen);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return seterrno("read config");
		if (k == 0)
			break;
		cfglen += (size_t)k;
		if (cfglen == sizeof cfgbuf)
			break; /* MAX_CONFIG_SIZE + 1: decode refuses it */
	}
	close(CONFIG_FD);
	if (decode() < 0)
		return -1;
	/* What the rest of this file relies on (the Go side checks the same
	 * or would fail the same way). */
	if (cfg.command.n == 0 || cfg.command.v[0][0] == 0)
		return seterr("decode config (%zu bytes): no command", cfglen);
	if (cfg.exec_fd != 0 && cfg.exec_fd < FIRST_BIND_FD)
		return seterr("decode config (%zu bytes): exec fd %d below %d", cfglen, cfg.exec_fd, FIRST_BIND_FD);
	for (size_t i = 0; i < cfg.nbinds; i++) {
		if (cfg.binds[i].fd < FIRST_BIND_FD || cfg.binds[i].fd == cfg.exec_fd)
			return seterr("decode config (%zu bytes): bind %s: fd %d", cfglen, cfg.binds[i].target, cfg.binds[i].fd);
		const char *t = cfg.binds[i].target;
		if (strlen(t) > MAX_PATH_LEN)
			return seterr("decode config (%zu bytes): bind target of %zu bytes: over %d", cfglen, strlen(t), MAX_PATH_LEN);
		if (t[0] != '/' || strstr(t, "/../") || (strlen(t) >= 3 && strcmp(t + strlen(t) - 3, "/..") == 0))
			return seterr("decode config (%zu bytes): bind target %s: not an absolute path without ..", cfglen, t);
	}
	for (size_t i = 0; i < cfg.nllpaths; i++)
		if (strlen(cfg.llpaths[i].path) > MAX_PATH_LEN)
			return seterr("decode config (%zu bytes): landlock path of %zu bytes: over %d", cfglen, strlen(cfg.llpaths[i].path), MAX_PATH_LEN);
	/* Fail closed on a plan or filter that enforces less than the
	 * design (a host-side regression must not start a weaker sandbox). */
	if (cfg.has_landlock) {
		if (cfg.ll_abi < MIN_LANDLOCK_ABI || (cfg.ll_fs & LL_ABI6_FS) != LL_ABI6_FS ||
		    (cfg.ll_net & LL_NET_TCP) != LL_NET_TCP || (cfg.ll_scoped & LL_SCOPES) != LL_SCOPES)
			return seterr("decode config (%zu bytes): Landlock plan (ABI %u, fs %#llx, net %#llx, scoped %#llx) handles less than ABI 6 does",
				      cfglen, cfg.ll_abi, (unsigned long long)cfg.ll_fs, (unsigned long long)cfg.ll_net, (unsigned long long)cfg.ll_scoped);
	}
#ifdef __x86_64__
	/* The filter must start by checking the architecture (seccomp's
	 * compile: ld [arch]; jeq AUDIT_ARCH_X86_64). */
	if (cfg.seccomp_len < 16)
		return seterr("decode config (%zu bytes): a seccomp filter of %zu bytes cannot be the sandbox's", cfglen, cfg.seccomp_len);
	{
		const unsigned char *b = cfg.seccomp;
		uint32_t k0 = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
		uint32_t k1 = (uint32_t)b[12] | (uint32_t)b[13] << 8 | (uint32_t)b[14] << 16 | (uint32_t)b[15] << 24;
		if ((b[0] | b[1] << 8) != (BPF_LD | BPF_W | BPF_ABS) || k0 != 4 || (b[8] | b[9] << 8) != (BPF_JMP | BPF_JEQ | BPF_K) || k1 != 0xc000003eU)
			return seterr("decode config (%zu bytes): the seccomp filter does not start with the architecture check", cfglen);
	}
#endif
	if (cfg.tmp_size < (1 << 20))
		return seterr("decode config (%zu bytes): tmp size %llu: under 1 MiB (0 would be unlimited)", cfglen, (unsigned long long)cfg.tmp_size);
	return 0;
}

/* ---- the root file system (rootfs.go) ---- */

/* path builds a + b into a static buffer (one of a few, rotating). */
static const char *path2(const char *a, const char *b)
{
	static char bufs[4][8192];
	static int next;
	char *p = bufs[next];
	next = (next + 1) % 4;
	if ((size_t)snprintf(p, sizeof bufs[0], "%s%s", a, b) >= sizeof bufs[0])
		p[0] = 0; /* an empty path fails every call that gets it (readconfig
			   * bounds the configured paths far below this) */
	return p;
}

static int do_mount(const char *src, const char *dst, const char *fstype, unsigned long flags, const char *data)
{
	if (mount(src, dst, fstype, flags, data) < 0) {
		if (src[0] && !fstype[0])
			return seterrno("mount %s on %s", src, dst);
		return seterrno("mount %s", dst);
	}
	return 0;
}

static int do_mkdir(const char *p, mode_t mode)
{
	if (mkdir(p, mode) < 0)
		return seterrno("mkdir %s", p);
	return 0;
}

/* mkdir_all is os.MkdirAll. */
static int mkdir_all(const char *p, mode_t mode)
{
	char buf[8192];
	struct stat st;
	if (p[0] != '/')
		return seterr("mkdir \"%s\": not an absolute path (or too long)", p);
	if (stat(p, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		errno = ENOTDIR;
		return seterrno("mkdir %s", p);
	}
	if ((size_t)snprintf(buf, sizeof buf, "%s", p) >= sizeof buf)
		return seterr("mkdir %s: path too long", p);
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return seterrno("mkdir %s", buf);
		*s = '/';
	}
	if (mkdir(buf, mode) < 0 && !(errno == EEXIST && stat(buf, &st) == 0 && S_ISDIR(st.st_mode)))
		return seterrno("mkdir %s", buf);
	return 0;
}

/* write_file is os.WriteFile. */
static int write_file(const char *p, const char *content, size_t n, mode_t mode)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return seterrno("open %s", p);
	while (n > 0) {
		ssize_t w = write(fd, content, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			seterrno("write %s", p);
			close(fd);
			return -1;
		}
		content += w;
		n -= (size_t)w;
	}
	if (close(fd) < 0)
		return seterrno("close %s", p);
	return 0;
}

static int do_symlink(const char *target, const char *p)
{
	if (symlink(target, p) < 0)
		return seterrno("symlink %s %s", target, p);
	return 0;
}

/* make_mount_point creates dst as a directory or empty file unless it exists. */
static int make_mount_point(const char *dst, int dir)
{
	struct stat st;
	char parent[8192];
	if (lstat(dst, &st) == 0)
		return 0;
	if (dir)
		return mkdir_all(dst, 0755);
	if ((size_t)snprintf(parent, sizeof parent, "%s", dst) >= sizeof parent)
		return seterr("mount point %s: path too long", dst);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = 0;
		if (mkdir_all(parent, 0755) < 0)
			return -1;
	}
	return write_file(dst, "", 0, 0644);
}

static int mount_setattr_path(const char *dst, int ro)
{
	struct ci_mount_attr attr = {.attr_set = CI_MOUNT_ATTR_NOSUID | CI_MOUNT_ATTR_NODEV};
	if (ro)
		attr.attr_set |= CI_MOUNT_ATTR_RDONLY;
	if (syscall(__NR_mount_setattr, AT_FDCWD, dst, CI_AT_RECURSIVE, &attr, sizeof attr) < 0) {
		const char *shown = strncmp(dst, NEW_ROOT, strlen(NEW_ROOT)) == 0 ? dst + strlen(NEW_ROOT) : dst;
		return seterrno("mount_setattr %s", shown);
	}
	return 0;
}

/* bind_mount binds src at dst recursively with nosuid, nodev (and rdonly). */
static int bind_mount(const char *src, const char *dst, int ro)
{
	struct stat st;
	if (stat(src, &st) < 0)
		return seterrno("stat %s", src);
	if (make_mount_point(dst, S_ISDIR(st.st_mode)) < 0)
		return -1;
	if (do_mount(src, dst, "", MS_BIND | MS_REC, "") < 0)
		return -1;
	return mount_setattr_path(dst, ro);
}

static const char *const system_dirs[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
static const char *const etc_copies[] = {"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"};
static const char *const ca_bundles[] = {
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
};
static const char *const devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
static const char *const proc_masked_files[] = {"kcore", "kallsyms", "keys", "key-users", "timer_list", "sched_debug", "latency_stats", "sysrq-trigger", "kpagecount", "kpageflags", "kpagecgroup", "config.gz", "vmallocinfo", "modules", "iomem", "ioports", "softirqs", "interrupts"};
static const char *const proc_masked_dirs[] = {"acpi", "scsi", "firmware", "driver", "tty", "dynamic_debug"};
static const char *const proc_read_only[] = {"sys", "bus", "fs", "irq"};

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static int make_mounts_private(void) { return do_mount("", "/", "", MS_REC | MS_PRIVATE, ""); }

static int mount_scratch(void)
{
	if (do_mount("tmpfs", SCRATCH_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") < 0)
		return -1;
	if (do_mkdir(SCRATCH_DIR OLD_ROOT, 0755) < 0 || do_mkdir(SCRATCH_DIR NEW_ROOT, 0755) < 0)
		return -1;
	if (syscall(SYS_pivot_root, SCRATCH_DIR, SCRATCH_DIR OLD_ROOT) < 0)
		return seterrno("pivot_root %s", SCRATCH_DIR);
	if (chdir("/") < 0)
		return seterrno("chdir /");
	return 0;
}

static int mount_new_root(void) { return do_mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m"); }

static int readlink_into(const char *p, char *buf, size_t cap)
{
	ssize_t k = readlink(p, buf, cap - 1);
	if (k < 0)
		return seterrno("readlink %s", p);
	if ((size_t)k >= cap - 1)
		return seterr("readlink %s: target too long", p);
	buf[k] = 0;
	return 0;
}

static int bind_system_dirs(void)
{
	struct stat st;
	char target[4096];
	for (size_t i = 0; i < LEN(system_dirs); i++) {
		const char *src = path2(OLD_ROOT, system_dirs[i]);
		if (lstat(src, &st) < 0) {
			if (errno == ENOENT)
				continue;
			return seterrno("lstat %s", src);
		}
		if (S_ISLNK(st.st_mode)) {
			if (readlink_into(src, target, sizeof target) < 0)
				return -1;
			if (do_symlink(target, path2(NEW_ROOT, system_dirs[i])) < 0)
				return -1;
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			continue;
		if (bind_mount(src, path2(NEW_ROOT, system_dirs[i]), 1) < 0)
			return -1;
	}
	if (stat(OLD_ROOT "/etc/alternatives", &st) == 0 && S_ISDIR(st.st_mode))
		return bind_mount(OLD_ROOT "/etc/alternatives", NEW_ROOT "/etc/alternatives", 1);
	return 0;
}

/* copy_host_file copies src to dst if src exists; a symlink is recreated. */
static int copy_host_file(const char *src, const char *dst)
{
	static char buf[65536];
	struct stat st;
	if (lstat(src, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return seterrno("lstat %s", src);
	}
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		if (readlink_into(src, target, sizeof target) < 0)
			return -1;
		return do_symlink(target, dst);
	}
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return seterrno("open %s", src);
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0) {
		seterrno("open %s", dst);
		close(in);
		return -1;
	}
	size_t left = 8 << 20; /* as io.LimitReader(in, 8<<20) */
	int rc = 0;
	while (left > 0) {
		ssize_t k = read(in, buf, left < sizeof buf ? left : sizeof buf);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			rc = seterrno("copy %s: read", src);
			break;
		}
		if (k == 0)
			break;
		left -= (size_t)k;
		for (ssize_t off = 0; off < k;) {
			ssize_t w = write(out, buf + off, (size_t)(k - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				rc = seterrno("copy %s: write", src);
				break;
			}
			off += w;
		}
		if (rc < 0)
			break;
	}
	close(in);
	if (close(out) < 0 && rc == 0)
		rc = seterrno("close %s", dst);
	return rc;
}

static int generate_etc(void)
{
	static char hosts[MAX_CONFIG_SIZE + 256];
	const char *etc = NEW_ROOT "/etc";
	if (mkdir_all(NEW_ROOT "/etc/ssl/certs", 0755) < 0)
		return -1;
	size_t n = (size_t)snprintf(hosts, sizeof hosts, "127.0.0.1\tlocalhost " HOSTNAME "\n::1\tlocalhost ip6-localhost ip6-loopback\n");
	for (size_t i = 0; i < cfg.hosts.n; i++) {
		size_t l = strlen(cfg.hosts.v[i]);
		if (l + 1 > sizeof hosts - n)
			return seterr("hosts: too long");
		memcpy(hosts + n, cfg.hosts.v[i], l);
		n += l;
		hosts[n++] = '\n';
	}
	static const struct {
		const char *name, *content;
	} files[] = {
	    {"passwd", "root:x:0:0:root:" WORKSPACE_DIR ":/bin/sh\nsandbox:x:1000:1000:sandbox:" WORKSPACE_DIR ":/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
	    {"group", "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n"},
	    {"hostname", HOSTNAME "\n"},
	    {"nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n"},
	    {"shells", "/bin/sh\n/bin/bash\n"},
	};
	for (size_t i = 0; i < LEN(files); i++) {
		char p[256];
		snprintf(p, sizeof p, "%s/%s", etc, files[i].name);
		if (write_file(p, files[i].content, strlen(files[i].content), 0644) < 0)
			return -1;
	}
	if (write_file(NEW_ROOT "/etc/hosts", hosts, n, 0644) < 0)
		return -1;
	for (size_t i = 0; i < LEN(etc_copies); i++)
		if (copy_host_file(path2(OLD_ROOT, etc_copies[i]), path2(NEW_ROOT, etc_copies[i])) < 0)
			return -1;
	for (size_t i = 0; i < LEN(ca_bundles); i++) {
		struct stat st;
		const char *src = path2(OLD_ROOT, ca_bundles[i]);
		if (stat(src, &st) < 0)
			continue;
		const char *dst = NEW_ROOT "/etc/ssl/certs/ca-certificates.crt";
		/* attachCABundle: a regular file is bound read-only, anything
		 * else (a symlink) copied. */
		if (lstat(src, &st) < 0)
			return seterrno("lstat %s", src);
		if (S_ISREG(st.st_mode)) {
			if (bind_mount(src, dst, 1) < 0)
				return -1;
		} else if (copy_host_file(src, dst) < 0) {
			return -1;
		}
		if (do_symlink("certs/ca-certificates.crt", NEW_ROOT "/etc/ssl/cert.pem") < 0)
			return -1;
		break;
	}
	return 0;
}

static int mount_proc(void)
{
	if (do_mkdir(NEW_ROOT "/proc", 0555) < 0)
		return -1;
	return do_mount("proc", NEW_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible");
}

static int mask_proc(void)
{
	struct stat st;
	for (size_t i = 0; i < LEN(proc_masked_files); i++) {
		const char *p = path2(NEW_ROOT "/proc/", proc_masked_files[i]);
		if (lstat(p, &st) < 0)
			continue;
		if (do_mount(NEW_ROOT "/dev/null", p, "", MS_BIND, "") < 0)
			return -1;
	}
	for (size_t i = 0; i < LEN(proc_masked_dirs); i++) {
		const char *p = path2(NEW_ROOT "/proc/", proc_masked_dirs[i]);
		if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (do_mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555") < 0)
			return -1;
	}
	for (size_t i = 0; i < LEN(proc_read_only); i++) {
		const char *p = path2(NEW_ROOT "/proc/", proc_read_only[i]);
		if (lstat(p, &st) < 0)
			continue;
		if (bind_mount(p, p, 1) < 0)
			return -1;
	}
	return 0;
}

static int mount_dev(void)
{
	char opts[64];
	const char *d = NEW_ROOT "/dev";
	if (do_mkdir(d, 0755) < 0)
		return -1;
	if (do_mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0)
		return -1;
	for (size_t i = 0; i < LEN(devices); i++) {
		const char *dst = path2(NEW_ROOT "/dev/", devices[i]);
		if (write_file(dst, "", 0, 0666) < 0)
			return -1;
		if (do_mount(path2(OLD_ROOT "/dev/", devices[i]), dst, "", MS_BIND, "") < 0)
			return -1;
	}
	if (do_mkdir(NEW_ROOT "/dev/pts", 0755) < 0)
		return -1;
	if (do_mount("devpts", NEW_ROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") < 0)
		return -1;
	if (do_mkdir(NEW_ROOT "/dev/shm", 01777) < 0)
		return -1;
	snprintf(opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long)cfg.tmp_size);
	if (do_mount("tmpfs", NEW_ROOT "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
		return -1;
	static const char *const links[][2] = {
	    {"ptmx", "pts/ptmx"}, {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
	};
	for (size_t i = 0; i < LEN(links); i++)
		if (do_symlink(links[i][1], path2(NEW_ROOT "/dev/", links[i][0])) < 0)
			return -1;
	if (do_mount("", d, "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "") < 0) {
		prefix("make /dev read-only");
		return -1;
	}
	return mask_proc();
}

static int mount_tmp(void)
{
	char opts[64];
	if (do_mkdir(NEW_ROOT "/tmp", 01777) < 0)
		return -1;
	snprintf(opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long)cfg.tmp_size);
	return do_mount("tmpfs", NEW_ROOT "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts);
}

static int attach_binds(void)
{
	for (size_t i = 0; i < cfg.nbinds; i++) {
		const struct bind *b = &cfg.binds[i];
		const char *dst = path2(NEW_ROOT, b->target);
		if (make_mount_point(dst, b->dir) < 0)
			return -1;
		if (syscall(__NR_move_mount, b->fd, "", AT_FDCWD, dst, CI_MOVE_MOUNT_F_EMPTY_PATH) < 0)
			return seterrno("move_mount %s", b->target);
		close(b->fd);
	}
	return 0;
}

static int switch_root(void)
{
	if (umount2(OLD_ROOT, MNT_DETACH) < 0)
		return seterrno("detach host root");
	if (chdir(NEW_ROOT) < 0)
		return seterrno("chdir %s", NEW_ROOT);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return seterrno("pivot_root %s", NEW_ROOT);
	if (umount2(".", MNT_DETACH) < 0)
		return seterrno("detach scratch root");
	if (chdir("/") < 0)
		return seterrno("chdir /");
	if (do_mount("", "/", "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "") < 0) {
		prefix("make / read-only");
		return -1;
	}
	return 0;
}

static int build_root(void)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} steps[] = {
	    {"make mounts private", make_mounts_private},
	    {"mount scratch root", mount_scratch},
	    {"mount new root", mount_new_root},
	    {"bind system directories", bind_system_dirs},
	    {"generate /etc", generate_etc},
	    {"mount /proc", mount_proc},
	    {"mount /dev", mount_dev},
	    {"mount /tmp", mount_tmp},
	    {"attach workspace and extra paths", attach_binds},
	    {"switch root", switch_root},
	};
	for (size_t i = 0; i < LEN(steps); i++) {
		if (steps[i].fn() < 0) {
			prefix(steps[i].name);
			return -1;
		}
	}
	return 0;
}

/* ---- limits and confinement (init.go, fsize.go, landlock.go) ---- */

static int disable_dumps(void)
{
	struct rlimit zero = {0, 0};
	if (setrlimit(RLIMIT_CORE, &zero) < 0)
		return seterrno("RLIMIT_CORE");
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return seterrno("PR_SET_DUMPABLE");
	return 0;
}

static int limit_file_size(void)
{
	if (cfg.file_size_limit == 0)
		return 0;
	struct rlimit lim = {cfg.file_size_limit, cfg.file_size_limit};
	if (setrlimit(RLIMIT_FSIZE, &lim) < 0)
		return seterrno("RLIMIT_FSIZE %llu", (unsigned long long)cfg.file_size_limit);
	if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR)
		return seterrno("ignore SIGXFSZ");
	return 0;
}

/* lock_down is lockDownThread, for the whole (single-threaded) process. */
static int lock_down(void)
{
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
		return seterrno("clear ambient capabilities");
	unsigned long bits = CI_SECBIT_NOROOT | CI_SECBIT_NOROOT_LOCKED | CI_SECBIT_KEEP_CAPS_LOCKED |
			     CI_SECBIT_NO_CAP_AMBIENT_RAISE | CI_SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
	if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) < 0)
		return seterrno("set securebits");
	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return seterrno("drop capability %d from the bounding set", cap);
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) < 0)
		return seterrno("capget");
	data[0].inheritable = data[1].inheritable = 0;
	if (syscall(SYS_capset, &hdr, data) < 0)
		return seterrno("clear inheritable capabilities");
	return 0;
}

static int unshare_cgroup(void)
{
	if (unshare(CLONE_NEWCGROUP) < 0)
		return seterrno("unshare");
	return 0;
}

static int set_no_new_privs(void)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return seterrno("prctl(PR_SET_NO_NEW_PRIVS)");
	return 0;
}

/* landlock_abi is LandlockABI: a missing or old Landlock is reported as
 * the unavailable feature. */
static int landlock_abi(const char *step)
{
	long v = syscall(__NR_landlock_create_ruleset, NULL, 0, CI_LANDLOCK_CREATE_RULESET_VERSION);
	const char *fix = "use Linux 6.7 or newer built with CONFIG_SECURITY_LANDLOCK=y and boot with lsm=landlock,... (see `cat /sys/kernel/security/lsm`)";
	if (v < 0) {
		char reason[256];
		if (errno == EOPNOTSUPP)
			snprintf(reason, sizeof reason, "Landlock is built into the kernel but not enabled at boot");
		else if (errno == ENOSYS)
			snprintf(reason, sizeof reason, "the kernel has no Landlock support");
		else
			snprintf(reason, sizeof reason, "landlock_create_ruleset: %s", errstr(errno));
		unavailable(step, "landlock", reason, fix);
	}
	if (v < MIN_LANDLOCK_ABI) {
		char reason[256];
		snprintf(reason, sizeof reason, "kernel offers Landlock ABI %ld, the sandbox needs %d (TCP rules and IPC scoping)", v, MIN_LANDLOCK_ABI);
		unavailable(step, "landlock", reason, "upgrade to Linux 6.12 or newer");
	}
	return (int)v;
}

static int apply_landlock(void)
{
	if (!cfg.has_landlock)
		return seterr("the host sent no Landlock ruleset");
	int abi = landlock_abi("apply landlock");
	if ((uint32_t)abi < cfg.ll_abi)
		return seterr("ruleset planned for ABI %u, the kernel offers %d", cfg.ll_abi, abi);
	struct ci_ruleset_attr attr = {cfg.ll_fs, cfg.ll_net, cfg.ll_scoped};
	int fd = (int)syscall(__NR_landlock_create_ruleset, &attr, sizeof attr, 0);
	if (fd < 0)
		return seterrno("build ruleset (ABI %u): landlock_create_ruleset", cfg.ll_abi);
	for (size_t i = 0; i < cfg.nllpaths; i++) {
		const struct llpath *r = &cfg.llpaths[i];
		struct stat st;
		if (r->dir_only && (lstat(r->path, &st) < 0 || !S_ISDIR(st.st_mode)))
			continue;
		int pfd = open(r->path, O_PATH | O_CLOEXEC);
		if (pfd < 0) {
			seterrno("build ruleset (ABI %u): populating ruleset for \"%s\" with access %#llx: open", cfg.ll_abi, r->path, (unsigned long long)r->access);
			close(fd);
			return -1;
		}
		struct ci_path_beneath_attr pb = {r->access, pfd};
		long rc = syscall(__NR_landlock_add_rule, fd, CI_LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
		int e = errno;
		close(pfd);
		if (rc < 0) {
			errno = e;
			seterrno("build ruleset (ABI %u): populating ruleset for \"%s\" with access %#llx: landlock_add_rule", cfg.ll_abi, r->path, (unsigned long long)r->access);
			close(fd);
			return -1;
		}
	}
	for (size_t i = 0; i < cfg.nllports; i++) {
		struct ci_net_port_attr np = {cfg.llports[i].access, cfg.llports[i].port};
		if (syscall(__NR_landlock_add_rule, fd, CI_LANDLOCK_RULE_NET_PORT, &np, 0) < 0) {
			seterrno("build ruleset (ABI %u): port %u with access %#llx: landlock_add_rule", cfg.ll_abi, cfg.llports[i].port, (unsigned long long)cfg.llports[i].access);
			close(fd);
			return -1;
		}
	}
	if (syscall(__NR_landlock_restrict_self, fd, cfg.ll_flags) < 0) {
		seterrno("landlock_restrict_self (ABI %u)", cfg.ll_abi);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* install_seccomp is CheckSeccomp + seccomp.Install with the host's
 * compiled filter. */
static int install_seccomp(void)
{
	const char *step = "install seccomp filter";
	char reason[256];
	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0) {
		snprintf(reason, sizeof reason, "prctl(PR_GET_SECCOMP): %s", errstr(errno));
		unavailable(step, "seccomp", reason, "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y");
	}
	uint32_t action = SECCOMP_RET_ERRNO;
	if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) < 0) {
		snprintf(reason, sizeof reason, "seccomp(SECCOMP_GET_ACTION_AVAIL): %s", errstr(errno));
		unavailable(step, "seccomp", reason, "use a kernel built with CONFIG_SECCOMP_FILTER=y");
	}
	int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	if (nnp < 0)
		return seterrno("seccomp: read no_new_privs");
	if (nnp != 1)
		return seterr("seccomp: no_new_privs is not set on the calling thread (prctl(PR_SET_NO_NEW_PRIVS, 1) first)");
	if (cfg.seccomp_len == 0 || cfg.seccomp_len % 8 != 0 || cfg.seccomp_len > MAX_SECCOMP)
		return seterr("seccomp: the host sent a filter of %zu bytes", cfg.seccomp_len);
	/* struct sock_filter is 8 bytes (u16, u8, u8, u32); copy it out of
	 * the byte buffer (little-endian, as seccomp.Filter encodes it). */
	static struct sock_filter insns[MAX_SECCOMP / 8];
	size_t n = cfg.seccomp_len / 8;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *p = cfg.seccomp + 8 * i;
		insns[i].code = (uint16_t)(p[0] | p[1] << 8);
		insns[i].jt = p[2];
		insns[i].jf = p[3];
		insns[i].k = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
	}
	struct sock_fprog prog = {(unsigned short)n, insns};
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
	if (r < 0) {
		if (errno == ENOSYS)
			return seterrno("seccomp: kernel does not support seccomp filters (CONFIG_SECCOMP_FILTER=y needed)");
		if (errno == EINVAL)
			return seterrno("seccomp: kernel refused the filter or SECCOMP_FILTER_FLAG_TSYNC (needs Linux 3.17+ with CONFIG_SECCOMP_FILTER=y)");
		return seterrno("seccomp: load filter");
	}
	if (r != 0)
		return seterr("seccomp: load filter: thread %ld of this process could not be synchronized (it has a different filter)", r);
	int mode = prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
	if (mode < 0)
		return seterrno("seccomp: verify filter mode");
	if (mode != 2)
		return seterr("seccomp: verify filter mode: PR_GET_SECCOMP is %d after loading, want 2 (filter)", mode);
	return 0;
}

/* ---- the command (exec.go, init.go startCommand) ---- */

/* env_value returns the value of key in the environment (last one wins). */
static const char *env_value(const char *key)
{
	size_t kl = strlen(key);
	for (size_t i = cfg.env.n; i-- > 0;)
		if (strncmp(cfg.env.v[i], key, kl) == 0 && cfg.env.v[i][kl] == '=')
			return cfg.env.v[i] + kl + 1;
	return "";
}

enum { CHECK_OK, CHECK_ERRNO, CHECK_NOT_EXEC };

/* check is lookPath's check: 0, or the failure in emsg with *kind and *err. */
static int check_exec(const char *p, int *kind, int *err)
{
	struct stat st;
	if (stat(p, &st) < 0) {
		*kind = CHECK_ERRNO;
		*err = errno;
		seterrno("stat %s", p);
		return -1;
	}
	if (S_ISDIR(st.st_mode) || (st.st_mode & 0111) == 0) {
		*kind = CHECK_NOT_EXEC;
		*err = 0;
		seterr("%s: not an executable file", p);
		return -1;
	}
	return 0;
}

/* look_path is lookPath: it finds name with the sandbox's PATH into out,
 * or fails with the exit code (126 or 127) in *code. */
static int look_path(const char *name, char *out, size_t cap, int *code)
{
	int kind, err;
	if (strchr(name, '/')) {
		if ((size_t)snprintf(out, cap, "%s", name) >= cap) {
			*code = EXIT_NOT_FOUND;
			return seterr("command \"%s\": name too long", name);
		}
		if (check_exec(out, &kind, &err) < 0) {
			*code = (kind == CHECK_NOT_EXEC || err == EACCES) ? EXIT_NOT_EXECUTABLE : EXIT_NOT_FOUND;
			static char tmp[MAX_STRING + 16];
			snprintf(tmp, sizeof tmp, "command \"%s\"", name);
			prefix(tmp);
			return -1;
		}
		return 0;
	}
	static char first[sizeof emsg];
	int have_first = 0, first_code = EXIT_NOT_FOUND;
	const char *path = env_value("PATH");
	for (const char *dir = path;;) {
		const char *end = strchr(dir, ':');
		size_t dl = end ? (size_t)(end - dir) : strlen(dir);
		int w;
		if (dl == 0 || (dl == 1 && dir[0] == '.'))
			w = snprintf(out, cap, "%s", name); /* path.Join(".", name) */
		else {
			while (dl > 1 && dir[dl - 1] == '/')
				dl--;
			w = snprintf(out, cap, "%.*s%s%s", (int)dl, dir, dir[dl - 1] == '/' ? "" : "/", name);
		}
		if (w >= 0 && (size_t)w < cap) {
			if (check_exec(out, &kind, &err) == 0)
				return 0;
			if (!have_first && !(kind == CHECK_ERRNO && err == ENOENT)) {
				have_first = 1;
				memcpy(first, emsg, sizeof first);
				first_code = (kind == CHECK_NOT_EXEC || err == EACCES) ? EXIT_NOT_EXECUTABLE : EXIT_NOT_FOUND;
			}
		}
		if (!end)
			break;
		dir = end + 1;
	}
	if (have_first) {
		*code = first_code;
		return seterr("command \"%s\": %s", name, first);
	}
	*code = EXIT_NOT_FOUND;
	return seterr("command \"%s\": no such file or directory in PATH", name);
}

/* The command's child, between clone and execve: it shares PID 1's memory
 * (CLONE_VM | CLONE_VFORK, PID 1 is suspended until the execve or the
 * child's exit), runs on its own stack, makes raw system calls only and
 * leaves the errno of a failing step in child_errno. */
static char child_stack[64 << 10] __attribute__((aligned(16)));
static volatile int child_errno;
static const char *child_path;

static int child_main(void *arg)
{
	(void)arg;
	sigset_t none;
	sigemptyset(&none);
	if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, _NSIG / 8) < 0 ||
	    syscall(SYS_setsid) < 0 ||
	    ((cfg.flags & FLAG_CTTY) && syscall(SYS_ioctl, 0, TIOCSCTTY, 1) < 0) ||
	    syscall(SYS_setgroups, 0, NULL) < 0 ||
	    syscall(SYS_setgid, cfg.uid) < 0 ||
	    syscall(SYS_setuid, cfg.uid) < 0 ||
	    /* The uid change set the mm shared with PID 1 to
	     * fs.suid_dumpable; back to 0 at once (PID 1 does it again). */
	    syscall(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ||
	    syscall(SYS_chdir, WORKSPACE_DIR) < 0)
		goto out;
	syscall(SYS_execve, child_path, cfg.command.v, cfg.env.v);
out:
	child_errno = errno ? errno : EINVAL;
	syscall(SYS_exit, EXIT_NOT_FOUND);
	return EXIT_NOT_FOUND;
}

/* start_command starts the command as startCommand does: a new session
 * (and the controlling terminal on stdin with Ctty), no groups, gid and
 * uid cfg.uid, working directory /sandbox, the clean environment, every
 * signal unblocked. Like Go's ForkExec it uses a vfork-style clone: no copy
 * of PID 1's page tables, and an execve failure is known when clone
 * returns. */
static pid_t start_command(void)
{
	static char path[8192];
	int code;
	if (look_path(cfg.command.v[0], path, sizeof path, &code) < 0)
		fail("exec", code);
	child_path = path;
	child_errno = 0;
	pid_t pid = clone(child_main, child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
	if (pid < 0) {
		seterrno("exec %s: clone", path);
		fail("exec", EXIT_SETUP_FAILED);
	}
	int e = child_errno;
	/* The child's setuid ran commit_creds on the mm it shared with PID 1,
	 * which set PID 1's dumpable flag to fs.suid_dumpable: back to 0. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
		seterrno("exec %s: PR_SET_DUMPABLE", path);
		kill(pid, SIGKILL);
		fail("exec", EXIT_SETUP_FAILED);
	}
	if (e != 0) {
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		errno = e;
		seterrno("exec %s", path);
		fail("exec", (e == EACCES || e == ENOEXEC) ? EXIT_NOT_EXECUTABLE : EXIT_NOT_FOUND);
	}
	return pid;
}

/* ---- supervision (init.go superviseChild) ---- */

static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGTSTP, SIGALRM};

/* reap collects every exited child; it exits with the command's status
 * once the command is gone. */
static void reap(pid_t command, pid_t *server)
{
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0)
			_exit(EXIT_SETUP_FAILED); /* ECHILD: nothing left to wait for */
		if (p == 0)
			return;
		if (p == *server) {
			*server = 0; /* the next request forks a new one */
			continue;
		}
		if (p != command)
			continue; /* an orphan */
		if (WIFEXITED(st))
			_exit(WEXITSTATUS(st));
		if (WIFSIGNALED(st))
			_exit(128 + WTERMSIG(st));
	}
}

/* handle reads the pending signals from sfd: SIGCHLD reaps, the others are
 * forwarded to the command. It returns when sfd has nothing more. */
static void handle_signals(int sfd, pid_t command, pid_t *server)
{
	struct signalfd_siginfo si[16];
	for (;;) {
		ssize_t k = read(sfd, si, sizeof si);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return; /* EAGAIN: drained */
		for (size_t i = 0; i < (size_t)k / sizeof si[0]; i++) {
			if (si[i].ssi_signo == SIGCHLD)
				reap(command, server);
			else
				kill(command, (int)si[i].ssi_signo);
		}
	}
}

/* supervise forwards signals and reaps children until the command exits
 * (then PID 1 exits with its status). PID 1 never leaves this loop: on the
 * first `sandbox exec` request (the exec channel readable) it forks the
 * exec server, which returns from here (and from the constructor) into
 * the Go runtime and serves the channel; PID 1 goes on supervising in C,
 * so no signal is ever lost in a hand-over. PID 1 keeps its copy of the
 * channel but stops watching it while the server lives; when the server
 * dies (a --root command can kill it: same user namespace) PID 1 reaps it
 * and forks a new one on the next request. The dead server's sessions end
 * (their hosts see EOF); the sandbox and later execs are unaffected. */
static void supervise(pid_t command, const sigset_t *mask)
{
	int sfd = signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		dprintf(2, "clawcage sandbox: supervise: signalfd: %s\n", errstr(errno));
		kill(command, SIGKILL);
		_exit(EXIT_SETUP_FAILED);
	}
	/* A command that exited before the signalfd existed left SIGCHLD
	 * pending, which the signalfd reports; reap anyway to be sure. */
	pid_t server = 0; /* the exec server while it lives */
	int channel = cfg.exec_fd > 0;
	reap(command, &server);
	struct pollfd pfd[2] = {{sfd, POLLIN, 0}, {cfg.exec_fd, POLLIN, 0}};
	for (;;) {
		nfds_t n = channel && server == 0 ? 2 : 1;
		pfd[1].revents = 0;
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			dprintf(2, "clawcage sandbox: supervise: poll: %s\n", errstr(errno));
			kill(command, SIGKILL);
			_exit(EXIT_SETUP_FAILED);
		}
		if (pfd[0].revents)
			handle_signals(sfd, command, &server);
		if (n == 2 && (pfd[1].revents & (POLLHUP | POLLERR))) {
			/* A closed peer reads as POLLIN|POLLHUP: only a queued
			 * message is worth a server, or the server would read
			 * EOF, exit and be forked again, forever. */
			char b;
			if (recv(cfg.exec_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) {
				close(cfg.exec_fd);
				channel = 0;
				continue;
			}
		}
		if (n == 2 && pfd[1].revents && server == 0) {
			pid_t srv = fork();
			if (srv == 0) {
				close(sfd);
				return; /* the exec server */
			}
			if (srv < 0) {
				/* Nobody serves the channel: the host's requests
				 * fail (instead of PID 1 spinning on it). */
				dprintf(2, "clawcage sandbox: start the exec server: fork: %s\n", errstr(errno));
				close(cfg.exec_fd);
				channel = 0;
				continue;
			}
			server = srv;
		}
	}
}

/* ---- the constructor ---- */

static void step(const char *name, int (*fn)(void))
{
	if (fn() < 0)
		fail(name, EXIT_SETUP_FAILED);
}

static int set_hostname(void)
{
	if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0)
		return seterrno("sethostname");
	return 0;
}

static int mark_cloexec(void)
{
	if (syscall(__NR_close_range, 3, ~0U, CI_CLOSE_RANGE_CLOEXEC) < 0)
		return seterrno("close_range");
	return 0;
}

/* is_sandbox_init says whether the command line is "<binary> sandbox-init".
 * glibc passes argc and argv to constructors; other C libraries (musl) do
 * not, so there the command line is read from /proc/self/cmdline. */
static int is_sandbox_init(int argc, char **argv)
{
#ifdef __GLIBC__
	return argc == 2 && strcmp(argv[1], "sandbox-init") == 0;
#else
	static char buf[4096];
	(void)argc;
	(void)argv;
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	size_t first = strlen(buf) + 1; /* argv[0] and its NUL */
	const char *want = "sandbox-init";
	return (size_t)n == first + strlen(want) + 1 && strcmp(buf + first, want) == 0;
#endif
}

__attribute__((constructor)) static void cinit(int argc, char **argv, char **envp)
{
	(void)envp;
	if (getpid() != 1 || !is_sandbox_init(argc, argv))
		return; /* not the sandbox's PID 1: Go says so (pid1.Main) */

	/* A defined umask for the generated root and the command, whatever
	 * the operator's is. */
	umask(022);
	/* Default dispositions: nothing the launcher ignored (nohup: HUP) may
	 * reach the command through execve. glibc's 32 and 33 are left alone. */
	for (int sig = 1; sig < _NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP || sig == 32 || sig == 33)
			continue;
		signal(sig, SIG_DFL);
	}
	/* The forwarded signals and SIGCHLD are blocked before anything else
	 * and read from a signalfd once the command runs: none is lost. */
	sigset_t mask;
	sigemptyset(&mask);
	for (size_t i = 0; i < LEN(forwarded); i++)
		sigaddset(&mask, forwarded[i]);
	sigaddset(&mask, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
		seterrno("sigprocmask");
		fail("block signals", EXIT_SETUP_FAILED);
	}
	step("mark descriptors close-on-exec", mark_cloexec);
	step("read config", readconfig);
	step("set hostname", set_hostname);
	step("build root file system", build_root);
	step("disable core dumps", disable_dumps);
	step("limit file size", limit_file_size);
	/* Confine the whole process: it is single-threaded, so whatever runs
	 * here later (the command, the Go runtime's threads, the commands of
	 * `sandbox exec`) inherits all of it. */
	step("drop capabilities", lock_down);
	step("unshare cgroup namespace", unshare_cgroup);
	step("set no_new_privs", set_no_new_privs);
	step("apply landlock", apply_landlock);
	step("install seccomp filter", install_seccomp);
	pid_t command = start_command();
	close(REPORT_FD); /* the command runs: an empty report */
	supervise(command, &mask);

	/* The exec server (a child of PID 1): Go takes over from here. */
	state.resumed = 1;
	state.command_pid = command;
	state.config = cfgbuf;
	state.config_len = cfglen;
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}
