//go:build cgo

/*
 * spawn: starts the sandbox's PID 1 with clone(CLONE_VM | CLONE_VFORK |
 * CLONE_NEWUSER | ...), see spawn_cgo.go. The child runs on a stack of its
 * own but in the caller's memory until it executes the init binary, so it
 * uses raw system calls only (no libc state: glibc's setgroups/setresuid
 * would signal the caller's other threads) and writes nothing but its own
 * stack (and errno, the suspended caller's thread-local, which it does not
 * read after a successful clone).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spawn.h"

#define CC_STACK_SIZE (64 * 1024)

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define CC_CLOSE_RANGE_CLOEXEC (1U << 2)

/* fail reports err to the parent on errfd (close-on-exec: nothing arrives
 * when execve succeeds) and exits. */
static void __attribute__((noreturn)) fail(int errfd, int step, int err)
{
	int32_t msg[2] = {step, err};
	(void)syscall(SYS_write, errfd, msg, sizeof msg);
	syscall(SYS_exit_group, 127);
	__builtin_unreachable();
}

static int child(void *arg)
{
	const struct cc_spawn *s = arg;
	int fds[CC_MAX_FDS];
	int errfd = s->err_fd;
	char c = 'r';
	int i;

	/* The caller's ends of the pipes: holding go_fd's write end would keep
	 * the read below from ever seeing the caller give up. */
	for (i = 0; i < 3; i++)
		(void)syscall(SYS_close, s->parent_fds[i]);
	/* A caller killed while this waits takes the child along (set again
	 * after the credentials, which clear it). */
	if (s->pdeathsig && syscall(SYS_prctl, PR_SET_PDEATHSIG, s->pdeathsig, 0, 0, 0) < 0)
		fail(errfd, CC_STEP_PDEATHSIG, errno);
	/* Default dispositions (the caller's handlers are Go's; this child has
	 * its own table: no CLONE_SIGHAND). Signals stay blocked until exec. */
	for (i = 1; i < 65; i++) {
		struct {
			uintptr_t handler;
			unsigned long flags;
			uintptr_t restorer;
			uint64_t mask;
		} sa = {0};
		if (i == SIGKILL || i == SIGSTOP)
			continue;
		(void)syscall(SYS_rt_sigaction, i, &sa, NULL, 8);
	}
	/* Running: the parent reads the pid (CLONE_PARENT_SETTID) and writes
	 * the id maps; then go_fd gives one byte (EOF: they failed). */
	if (syscall(SYS_write, s->ready_fd, &c, 1) != 1)
		fail(errfd, CC_STEP_SYNC, errno);
	if (syscall(SYS_read, s->go_fd, &c, 1) != 1)
		fail(errfd, CC_STEP_SYNC, ECANCELED);
	if (s->setsid && syscall(SYS_setsid) < 0)
		fail(errfd, CC_STEP_SETSID, errno);
	/* Credentials inside the new user namespace (uid/gid 0, no groups):
	 * without them the child would keep host uid 0. */
	if (syscall(SYS_setgroups, 0, NULL) < 0)
		fail(errfd, CC_STEP_CREDS, errno);
	if (syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0)
		fail(errfd, CC_STEP_CREDS, errno);
	if (syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0)
		fail(errfd, CC_STEP_CREDS, errno);
	if (syscall(SYS_chdir, s->dir) < 0)
		fail(errfd, CC_STEP_CHDIR, errno);
	/* Again after the credentials: changing them clears it. A caller that
	 * died in between leaves PID 1 waiting for a configuration that never
	 * comes (EOF on its config pipe: it exits), as the configuration is
	 * only written once this child has executed. */
	if (s->pdeathsig && syscall(SYS_prctl, PR_SET_PDEATHSIG, s->pdeathsig, 0, 0, 0) < 0)
		fail(errfd, CC_STEP_PDEATHSIG, errno);

	/* Descriptors: child fd i is s->fds[i]. First move every source below
	 * nfds (and err_fd) above it, so that placing one never overwrites
	 * another still to be placed. */
	for (i = 0; i < s->nfds; i++)
		fds[i] = s->fds[i];
	if (s->err_fd < s->nfds) {
		int fd = syscall(SYS_fcntl, s->err_fd, F_DUPFD_CLOEXEC, s->nfds);
		if (fd < 0)
			fail(errfd, CC_STEP_FDS, errno);
		errfd = fd;
	}
	for (i = 0; i < s->nfds; i++) {
		if (fds[i] >= 0 && fds[i] < s->nfds && fds[i] != i) {
			int fd = syscall(SYS_fcntl, fds[i], F_DUPFD_CLOEXEC, s->nfds);
			if (fd < 0)
				fail(errfd, CC_STEP_FDS, errno);
			fds[i] = fd;
		}
	}
	for (i = 0; i < s->nfds; i++) {
		if (fds[i] < 0) {
			(void)syscall(SYS_close, i);
		} else if (fds[i] == i) {
			if (syscall(SYS_fcntl, i, F_SETFD, 0) < 0)
				fail(errfd, CC_STEP_FDS, errno);
		} else if (syscall(SYS_dup3, fds[i], i, 0) < 0) {
			fail(errfd, CC_STEP_FDS, errno);
		}
	}
	/* Nothing else of the caller's passes execve: descriptors it holds
	 * without close-on-exec (inherited from its own parent) included.
	 * (Linux < 5.11 lacks the flag: PID 1 marks every descriptor above 2
	 * close-on-exec first thing anyway.) */
	(void)syscall(SYS_close_range, s->nfds, ~0U, CC_CLOSE_RANGE_CLOEXEC);
	(void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &s->mask, NULL, 8);
	syscall(SYS_execve, s->path, s->argv, s->envp);
	fail(errfd, CC_STEP_EXEC, errno);
}

int cc_spawn(struct cc_spawn *s)
{
	sigset_t all, old;
	void *stack;
	int pid, err;

	if (s->nfds < 0 || s->nfds > CC_MAX_FDS)
		return -EINVAL;
	stack = mmap(NULL, CC_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return -errno;
	/* No signal handler of the caller may run in the child: block them
	 * all around the clone; the child restores the mask just before
	 * execve, the caller right after. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	memcpy(&s->mask, &old, sizeof s->mask);
	pid = clone(child, (char *)stack + CC_STACK_SIZE,
		    (int)(s->cloneflags | CLONE_VM | CLONE_VFORK | CLONE_PARENT_SETTID | SIGCHLD), s, &s->pid);
	err = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	munmap(stack, CC_STACK_SIZE);
	return pid < 0 ? -err : pid;
}
