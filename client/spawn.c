/*
 * spawn.c - starting a stdio backend and reaping it.
 *
 * The child is set up the way a daemon helper should be, whatever state
 * the caller (often a multithreaded Python process) is in:
 *  - stdin and stdout are the protocol pipes, stderr is inherited, and
 *    every other descriptor is closed at exec (the pipes are created
 *    close-on-exec, and close_range(CLOSE_RANGE_CLOEXEC) catches
 *    descriptors the caller left inheritable);
 *  - its own process group, so a terminal's Ctrl-C reaches the client
 *    only, which turns it into an INTERRUPT request;
 *  - signal handlers reset to the default and an empty signal mask (all
 *    signals are blocked around fork() so that no handler of the caller
 *    runs in the child before that);
 *  - only async-signal-safe calls between fork() and exec();
 *  - a failed exec() is reported through a close-on-exec pipe carrying
 *    errno, so a missing backend is a clean error, not an EOF later;
 *  - the caller's environment, with glibc.malloc.hugetlb=1 added to
 *    GLIBC_TUNABLES unless the caller chose a value for that tunable
 *    (see spawn_env()).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__) && __has_include(<linux/close_range.h>)
#include <linux/close_range.h>
#endif

#include "client-int.h"

static int spawn_pipe(int[2]);
static void spawn_child(char *const[], char *const[], int, int, int, int)
    __attribute__((noreturn));
static char **spawn_env(char **);

extern char **environ;
static void spawn_close_pair(int[2]);

/* pipe2(O_CLOEXEC) with both ends moved above 2, so that dup2() onto
 * 0 and 1 in the child can never clobber one end with the other. */
static int
spawn_pipe(int fds[2])
{
	int i, moved;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	for (i = 0; i < 2; i++) {
		if (fds[i] > 2)
			continue;
		if ((moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0) {
			spawn_close_pair(fds);
			return -1;
		}
		close(fds[i]);
		fds[i] = moved;
	}
	return 0;
}

/* Close both ends of a pipe, keeping errno. */
static void
spawn_close_pair(int fds[2])
{
	int saved = errno;

	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	fds[0] = fds[1] = -1;
	errno = saved;
}

/*
 * The backend's environment: the caller's, with glibc's malloc told to
 * back its heap with transparent huge pages (glibc.malloc.hugetlb=1, an
 * madvise(MADV_HUGEPAGE) on what it takes from the kernel).  A fresh
 * backend's first checkpoint of a large value then faults its buffers in
 * 2 MiB at a time instead of 4 KiB (docs/BENCHMARKS.md).  A value the caller
 * set for that tunable is kept; other tunables are kept and the setting is
 * appended to them.  Built before fork(): the child may not allocate.
 * Returns a malloc'd array (and in *owned a malloc'd string or NULL), both
 * for the caller to free, or NULL when out of memory: the caller then
 * passes its own environment unchanged.
 */
static char **
spawn_env(char **owned)
{
	static const char name[] = "GLIBC_TUNABLES=";
	static const char ours[] = "glibc.malloc.hugetlb=1";
	static char alone[] = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1";
	size_t n = 0, i, at;
	char **env;

	*owned = NULL;
	while (environ != NULL && environ[n] != NULL)
		n++;
	if ((env = malloc((n + 2) * sizeof *env)) == NULL)
		return NULL;
	at = n;
	for (i = 0; i < n; i++) {
		env[i] = environ[i];
		if (strncmp(environ[i], name, sizeof name - 1) == 0)
			at = i;
	}
	env[n] = env[n + 1] = NULL;
	if (at == n) {
		env[n] = alone;
	} else if (strstr(env[at], "glibc.malloc.hugetlb=") == NULL) {
		size_t len = strlen(env[at]);
		int sep = len > sizeof name - 1;

		if ((*owned = malloc(len + sep + sizeof ours)) == NULL) {
			free(env);
			return NULL;
		}
		memcpy(*owned, env[at], len);
		if (sep)
			(*owned)[len] = ':';
		memcpy(*owned + len + sep, ours, sizeof ours);
		env[at] = *owned;
	}
	return env;
}

/*
 * The child between fork() and exec(): async-signal-safe calls only.
 * stdin and stdout become infd and outfd, stderr stderrfd unless it is -1
 * (inherited).  Reports errno on errfd and exits 127 when anything fails.
 */
static void
spawn_child(char *const argv[], char *const envp[], int infd, int outfd,
    int stderrfd, int errfd)
{
	struct sigaction dfl;
	sigset_t none;
	int sig, e;

	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (sig = 1; sig < NSIG; sig++) {
		struct sigaction cur;

		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sigaction(sig, NULL, &cur) == 0 &&
		    cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN)
			sigaction(sig, &dfl, NULL);
	}
	(void)setpgid(0, 0);
	if (dup2(infd, 0) < 0 || dup2(outfd, 1) < 0 ||
	    (stderrfd >= 0 && dup2(stderrfd, 2) < 0))
		goto fail;
#if defined(CLOSE_RANGE_CLOEXEC)
	/* Everything above stderr closes at exec, errfd included. */
	(void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(argv[0], argv, envp);
fail:
	e = errno;
	while (write(errfd, &e, sizeof e) < 0 && errno == EINTR)
		;
	_exit(127);
}

/* Is path a regular file this process may execute? */
static int
spawn_executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	    access(path, X_OK) == 0;
}

/* Try dir/name; 1 (out set) when it is an executable file. */
static int
spawn_try(const char *dir, size_t dirlen, const char *name, char *out,
    size_t outlen)
{
	int n;

	if (dirlen == 0) {              /* an empty PATH entry is "." */
		dir = ".";
		dirlen = 1;
	}
	n = snprintf(out, outlen, "%.*s/%s", (int)dirlen, dir, name);
	return n > 0 && (size_t)n < outlen && spawn_executable(out);
}

/* Find the backend to exec; see client-int.h. */
int
spawn_find(const char *name, char *out, size_t outlen, char *why,
    size_t whylen)
{
	static const char *const installed[] = {
		PYSHELF_BINDIR, PYSHELF_LIBEXECDIR
	};
	const char *path, *p, *colon;
	size_t i;

	if (strchr(name, '/') != NULL) {        /* a path: as given */
		if (strlen(name) >= outlen) {
			snprintf(why, whylen, "backend path too long: %.64s...",
			    name);
			errno = ENAMETOOLONG;
			return -1;
		}
		strcpy(out, name);
		return 0;
	}
	if ((path = getenv("PATH")) == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; ; p = colon + 1) {
		colon = strchr(p, ':');
		if (spawn_try(p, colon != NULL ? (size_t)(colon - p) :
		    strlen(p), name, out, outlen))
			return 0;
		if (colon == NULL)
			break;
	}
	for (i = 0; i < sizeof installed / sizeof installed[0]; i++)
		if (spawn_try(installed[i], strlen(installed[i]), name, out,
		    outlen))
			return 0;
	snprintf(why, whylen, "cannot find %s: not on PATH, nor in %s or %s "
	    "(pass its path, or set PYSHELFD)", name, PYSHELF_BINDIR,
	    PYSHELF_LIBEXECDIR);
	errno = ENOENT;
	return -1;
}

/* Start argv[0] with its stdin and stdout on new pipes; see client-int.h. */
int
spawn_start(char *const argv[], pid_t *pid, int *rfd, int *wfd, char *why,
    size_t whylen)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	char **env = NULL, *owned = NULL;
	sigset_t all, old;
	pid_t child;
	ssize_t got;
	int child_errno, saved, status;

	if (spawn_pipe(in) < 0 || spawn_pipe(out) < 0 || spawn_pipe(err) < 0) {
		snprintf(why, whylen, "cannot create pipes: %s", strerror(errno));
		goto fail;
	}
	/* the pipes keep the kernel's default size: each side grows the
	 * one it writes to for the length of a long transfer only
	 * (proto/wire-pipe.c), so that idle backends do not hold the
	 * user's pipe pages (pipe-user-pages-soft) */
	/* Out of memory here costs the backend its huge pages, nothing else. */
	env = spawn_env(&owned);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	child = fork();
	if (child == 0)
		spawn_child(argv, env != NULL ? env : environ, in[0], out[1],
		    -1, err[1]);
	saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	free(env);
	free(owned);
	env = NULL;
	owned = NULL;
	if (child < 0) {
		errno = saved;
		snprintf(why, whylen, "cannot fork: %s", strerror(errno));
		goto fail;
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	in[0] = out[1] = err[1] = -1;

	/* EOF: the exec closed the pipe.  An int: the child's errno. */
	do
		got = read(err[0], &child_errno, sizeof child_errno);
	while (got < 0 && errno == EINTR);
	close(err[0]);
	err[0] = -1;
	if (got == (ssize_t)sizeof child_errno) {
		while (waitpid(child, &status, 0) < 0 && errno == EINTR)
			;
		snprintf(why, whylen, "cannot execute %s: %s", argv[0],
		    strerror(child_errno));
		errno = child_errno;
		goto fail;
	}
	*pid = child;
	*rfd = out[0];
	*wfd = in[1];
	return 0;

fail:
	free(env);
	free(owned);
	spawn_close_pair(in);
	spawn_close_pair(out);
	spawn_close_pair(err);
	return -1;
}

/* Reap pid within timeout_ms; polls waitpid(WNOHANG) with a growing nap. */
int
spawn_wait(pid_t pid, int timeout_ms, int *wstatus)
{
	int64_t deadline = timeout_ms < 0 ? -1 :
	    io_now_us() + (int64_t)timeout_ms * 1000;
	struct timespec nap;
	long nap_us = 200;
	pid_t got;
	int status;

	for (;;) {
		got = waitpid(pid, &status, WNOHANG);
		if (got == pid) {
			if (wstatus != NULL)
				*wstatus = status;
			return 0;
		}
		if (got < 0 && errno != EINTR)
			return -1;
		if (got < 0)
			continue;
		if (deadline >= 0 && io_now_us() >= deadline)
			return 1;
		nap.tv_sec = 0;
		nap.tv_nsec = nap_us * 1000;
		nanosleep(&nap, NULL);
		if (nap_us < 20000)
			nap_us *= 2;
	}
}

/* SIGKILL pid and reap it. */
int
spawn_kill(pid_t pid, int *wstatus)
{
	if (kill(pid, SIGKILL) < 0 && errno != ESRCH)
		return -1;
	return spawn_wait(pid, -1, wstatus);
}

/*
 * Collect child's stderr from fd until it exits: keep the first n - 1
 * bytes at out (NUL-terminated), drop the rest.  The exit, not EOF, ends
 * the wait: a daemon it left behind may hold the pipe a while longer (it
 * should not; it must not hang this).  Returns waitpid()'s status.
 */
static int
spawn_collect(pid_t child, int fd, char *out, size_t n)
{
	char scratch[512];
	struct pollfd pfd;
	size_t have = 0, take;
	ssize_t got;
	int status = 0, exited = 0, eof = 0;
	pid_t w;

	while (!eof) {
		if (!exited) {
			w = waitpid(child, &status, WNOHANG);
			if (w == child || (w < 0 && errno != EINTR))
				exited = 1;
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, exited ? 0 : 20) <= 0) {
			if (exited)
				break;          /* gone, nothing more buffered */
			continue;
		}
		got = read(fd, scratch, sizeof scratch);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			eof = 1;
			break;
		}
		if (n > 0 && have < n - 1) {
			take = (size_t)got < n - 1 - have ? (size_t)got :
			    n - 1 - have;
			memcpy(out + have, scratch, take);
			have += take;
		}
	}
	if (!exited)
		while (waitpid(child, &status, 0) < 0 && errno == EINTR)
			;
	if (n > 0)
		out[have] = '\0';
	return status;
}

/* Run argv to its exit with its stderr captured; see client-int.h. */
int
spawn_run(char *const argv[], int *wstatus, char *errout, size_t errlen,
    char *why, size_t whylen)
{
	int null = -1, err[2] = { -1, -1 }, ex[2] = { -1, -1 };
	char **env = NULL, *owned = NULL;
	sigset_t all, old;
	pid_t child;
	ssize_t got;
	int child_errno, saved, status, rc = -1;

	if (errlen > 0)
		errout[0] = '\0';
	if ((null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
		snprintf(why, whylen, "cannot open /dev/null: %s",
		    strerror(errno));
		return -1;
	}
	if (spawn_pipe(err) < 0 || spawn_pipe(ex) < 0) {
		snprintf(why, whylen, "cannot create pipes: %s", strerror(errno));
		goto out;
	}
	env = spawn_env(&owned);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	child = fork();
	if (child == 0)
		spawn_child(argv, env != NULL ? env : environ, null, null,
		    err[1], ex[1]);
	saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (child < 0) {
		errno = saved;
		snprintf(why, whylen, "cannot fork: %s", strerror(errno));
		goto out;
	}
	close(err[1]);
	close(ex[1]);
	err[1] = ex[1] = -1;
	do
		got = read(ex[0], &child_errno, sizeof child_errno);
	while (got < 0 && errno == EINTR);
	status = spawn_collect(child, err[0], errout, errlen);
	if (got == (ssize_t)sizeof child_errno) {
		snprintf(why, whylen, "cannot execute %s: %s", argv[0],
		    strerror(child_errno));
		errno = child_errno;
		goto out;
	}
	*wstatus = status;
	rc = 0;
out:
	saved = errno;
	free(env);
	free(owned);
	spawn_close_pair(err);
	spawn_close_pair(ex);
	close(null);
	errno = saved;
	return rc;
}
