/* cinit: the sandbox's PID 1 before the Go runtime exists (see cinit.c). */
#ifndef CLAWCAGE_CINIT_H
#define CLAWCAGE_CINIT_H

#include <stddef.h>

/* What the C start-up hands to Go when its constructor returns in the exec
 * server, the child PID 1 forks on the first `sandbox exec` request. */
struct cinit_state {
	int resumed;                 /* 1: this is the exec server of a sandbox C set up */
	int command_pid;             /* the sandbox's command, in its PID namespace */
	const unsigned char *config; /* the encoded configuration (codec.go) */
	size_t config_len;
};

/* cinit_get_state returns the state; resumed is 0 unless the constructor
 * ran as PID 1 and returned. */
const struct cinit_state *cinit_get_state(void);

/* cinit_decode_check decodes b with the constructor's decoder into its
 * static configuration (never while that is in use: tests only). It returns
 * 0, or -1 with the reason in err. */
int cinit_decode_check(const unsigned char *b, size_t n, char *err, size_t errlen);

#endif
