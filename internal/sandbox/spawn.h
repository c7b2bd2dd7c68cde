#ifndef CLAWCAGE_SPAWN_H
#define CLAWCAGE_SPAWN_H

#include <stdint.h>
#include <sys/types.h>

/* The most descriptors the child gets (0, 1, 2 and the extra files). */
#define CC_MAX_FDS 256

/* Steps a failing child reports (with errno) on err_fd. */
enum {
	CC_STEP_SYNC = 1,
	CC_STEP_SETSID,
	CC_STEP_CREDS,
	CC_STEP_CHDIR,
	CC_STEP_PDEATHSIG,
	CC_STEP_FDS,
	CC_STEP_EXEC,
};

struct cc_spawn {
	const char *path;
	char *const *argv;
	char *const *envp;
	const char *dir;
	const int *fds; /* child fd i is fds[i] (-1: closed) */
	int nfds;
	int ready_fd;   /* the child writes one byte once it runs */
	int go_fd;      /* then reads one: the id maps are written */
	int err_fd;     /* close-on-exec: {step, errno} if it fails */
	int parent_fds[3]; /* the caller's ends of the three pipes: the child
			    * closes its copies first (else it would hold the
			    * write end whose closing tells it to give up) */
	int setsid;
	int pdeathsig;
	uint32_t uid, gid; /* inside the new user namespace */
	unsigned long cloneflags;
	pid_t pid;      /* set by the kernel at the clone (CLONE_PARENT_SETTID) */
	uint64_t mask;  /* the caller's signal mask, restored before execve */
};

/* cc_spawn clones the child (CLONE_VM | CLONE_VFORK) and returns its pid
 * once it has executed s->path or failed, or -errno if the clone failed. */
int cc_spawn(struct cc_spawn *s);

#endif
