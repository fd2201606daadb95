/*
 * pipe_floor.c - the floor for a request/reply: a 64-byte round trip over
 * a pair of pipes between two C processes.  Prints the median and p99 in
 * microseconds of N round trips (after a warm-up), one line:
 *   pipe_floor median_us=... p99_us=... n=...
 * With "socket" after N, the same over a Unix stream socketpair (what a
 * server connection would cost without PIPES):
 *   sock_floor median_us=... p99_us=... n=...
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int
xfer(int fd, char *buf, int rd)
{
	size_t done = 0;

	while (done < 64) {
		ssize_t n = rd ? read(fd, buf + done, 64 - done) :
		    write(fd, buf + done, 64 - done);
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20000, a[2], b[2], i;
	int sock = argc > 2 && strcmp(argv[2], "socket") == 0;
	double *t;
	char buf[64];
	pid_t pid;

	if (n < 100)
		return 1;
	if (sock) {
		/* one socketpair: a[0]/b[1] the child's end, a[1]/b[0] ours */
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
		    (a[0] = dup(sv[1])) < 0 || (b[0] = dup(sv[0])) < 0)
			return 1;
		a[1] = sv[0];
		b[1] = sv[1];
	} else if (pipe(a) || pipe(b))
		return 1;
	if ((pid = fork()) == 0) {
		close(a[1]);
		close(b[0]);
		while (xfer(a[0], buf, 1) == 0 && xfer(b[1], buf, 0) == 0)
			;
		_exit(0);
	}
	close(a[0]);
	close(b[1]);
	if ((t = calloc((size_t)n, sizeof *t)) == NULL)
		return 1;
	memset(buf, 'x', sizeof buf);
	for (i = 0; i < n + 1000; i++) {
		double t0 = now_us();
		if (xfer(a[1], buf, 0) || xfer(b[0], buf, 1))
			return 1;
		if (i >= 1000)
			t[i - 1000] = now_us() - t0;
	}
	close(a[1]);
	close(b[0]);  /* a socket's child sees EOF only once both go */
	waitpid(pid, NULL, 0);
	qsort(t, (size_t)n, sizeof *t, cmp);
	printf("%s median_us=%.2f p99_us=%.2f n=%d\n",
	    sock ? "sock_floor" : "pipe_floor", t[n / 2], t[n * 99 / 100], n);
	free(t);
	return 0;
}
