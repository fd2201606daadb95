/*
 * pipe_stream.c - the floor for moving bytes: BYTES bytes written by one
 * C process and read by another, in 1 MiB writes and reads, over a pipe
 * and over a Unix socketpair.  The reader touches nothing it reads.
 * Prints one line per channel, the best of ROUNDS:
 *   pipe_stream channel=pipe bytes=... seconds=... gbps=...
 * Usage: pipe_stream [BYTES [ROUNDS]]   (default 1 GiB, 3 rounds)
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Write total bytes of buf (CHUNK long) to fd. */
static int
put(int fd, const char *buf, size_t total)
{
	size_t left = total, off;
	ssize_t n;

	while (left > 0) {
		size_t k = left < CHUNK ? left : CHUNK;
		for (off = 0; off < k; off += (size_t)n)
			if ((n = write(fd, buf + off, k - off)) <= 0)
				return -1;
		left -= k;
	}
	return 0;
}

/* Read total bytes from fd into buf (CHUNK long). */
static int
get(int fd, char *buf, size_t total)
{
	ssize_t n;

	while (total > 0) {
		if ((n = read(fd, buf, total < CHUNK ? total : CHUNK)) <= 0)
			return -1;
		total -= (size_t)n;
	}
	return 0;
}

/* Seconds to move total bytes from a child to this process over fds
 * (fds[0] read here, fds[1] written by the child). */
static double
run(int fds[2], size_t total, char *buf)
{
	double t0;
	pid_t pid;
	int st;

	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		close(fds[0]);
		_exit(put(fds[1], buf, total) == 0 ? 0 : 1);
	}
	close(fds[1]);
	t0 = now_s();
	if (get(fds[0], buf, total) < 0)
		t0 = -1;
	else
		t0 = now_s() - t0;
	close(fds[0]);
	waitpid(pid, &st, 0);
	return t0;
}

int
main(int argc, char **argv)
{
	size_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 1ull << 30;
	int rounds = argc > 2 ? atoi(argv[2]) : 3, i, c, fds[2];
	const char *names[] = { "pipe", "socketpair" };
	double best, t;
	char *buf;

	if ((buf = malloc(CHUNK)) == NULL)
		return 1;
	memset(buf, 'x', CHUNK);
	for (c = 0; c < 2; c++) {
		best = 0;
		for (i = 0; i < rounds; i++) {
			if ((c == 0 ? pipe(fds) : socketpair(AF_UNIX,
			    SOCK_STREAM, 0, fds)) < 0)
				return 1;
			if ((t = run(fds, total, buf)) < 0)
				return 1;
			if (best == 0 || t < best)
				best = t;
		}
		printf("pipe_stream channel=%s bytes=%zu seconds=%.4f gbps=%.3f\n",
		    names[c], total, best, total / best / 1e9);
	}
	free(buf);
	return 0;
}
