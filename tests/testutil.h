/*
 * testutil.h - helpers the check suites share: temporary directories that
 * are unique per test, whole-buffer pipe I/O, child processes that die with
 * the test that forked them, and a monotonic clock.
 *
 * Everything is static inline so that a suite pays only for what it uses;
 * include "config.h" first (it brings _GNU_SOURCE for nftw and prctl).
 */
#ifndef PYSHELF_TESTUTIL_H
#define PYSHELF_TESTUTIL_H

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every tcase's timeout, in seconds.  A timeout only ends a test that
 * hangs; it never times one: shared CI machines run the suites with every
 * core busy, where the slowest test (check_store's Big and Purge tcases,
 * ~10 s each idle) takes several times as long.  This is far above that
 * (more than 10x a loaded run), so that no test can fail for being slow. */
#define TU_TIMEOUT 900

/* nftw callback: remove one file or (depth first) directory. */
static inline int
tu_rmtree_one(const char *path, const struct stat *sb, int flag,
              struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove path and everything under it; a missing path is not an error. */
static inline void
tu_rmtree(const char *path)
{
	if (path != NULL && path[0] != '\0')
		nftw(path, tu_rmtree_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* $TMPDIR when set and absolute, else /tmp. */
static inline const char *
tu_tmpdir(void)
{
	const char *t = getenv("TMPDIR");

	return t != NULL && t[0] == '/' ? t : "/tmp";
}

/*
 * Make a fresh directory parent/prefix.XXXXXX (mkdtemp) into buf of size n.
 * Returns 0, or -1 with errno set.
 */
static inline int
tu_mkdtemp(char *buf, size_t n, const char *parent, const char *prefix)
{
	int len = snprintf(buf, n, "%s/%s.XXXXXX", parent, prefix);

	if (len < 0 || (size_t)len >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return mkdtemp(buf) != NULL ? 0 : -1;
}

/*
 * fork(), with the child set to get SIGKILL when the process that forked it
 * ends: a test that times out or fails never leaves a writer running.
 * Children must leave with _exit() and must not call ck_assert.
 */
static inline pid_t
tu_fork(void)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127); /* the parent died before prctl */
	}
	return pid;
}

/* Wait for pid; returns its exit code, 128+signal when killed, -1 on
 * error. */
static inline int
tu_wait(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

/* Write all n bytes; 0 or -1. */
static inline int
tu_write_full(int fd, const void *p, size_t n)
{
	const char *q = p;

	while (n > 0) {
		ssize_t w = write(fd, q, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		q += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read exactly n bytes; 1 when read, 0 on EOF before any byte, -1 on
 * error or EOF in the middle. */
static inline int
tu_read_full(int fd, void *p, size_t n)
{
	char *q = p;
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, q + got, n - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			return got == 0 ? 0 : -1;
		got += (size_t)r;
	}
	return 1;
}

/* Monotonic clock in milliseconds. */
static inline uint64_t
tu_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#endif
