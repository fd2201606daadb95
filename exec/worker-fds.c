/*
 * worker-fds.c - the worker's own descriptors, as shipped code may meet
 * them.  Daemonizing code (python-daemon, os.closerange(3, 4096)) closes
 * every fd above 2 and opens files, which then get the numbers of the
 * worker's sockets, pipes, timers and store files: the worker would poll
 * and write the user's files in their place (QA2 07).
 *
 * Two defences, both on this table of (number, device, inode) taken
 * when each fd was opened:
 *  - protection: the `_pyshelfd` module's os.close / os.closerange /
 *    os.dup2 wrappers (backend_process.py) ask worker_fds_owned and leave
 *    the worker's fds alone (closerange skips them; close and dup2 onto
 *    one raise OSError EBADF);
 *  - detection, for what bypasses Python (ctypes, C extensions): the
 *    threads that poll (the reader, the output forwarder, the main thread
 *    idle) verify an fd of ours before acting on an event of it, and the
 *    reader checks them all now and then while code runs; an fd closed or
 *    replaced ends the worker (worker_fds_fatal): it stops using every fd
 *    and exits at once, so that nothing more is read from or written to a
 *    file it does not own; the session keeps its last checkpoint.
 *
 * The table holds what was open when the worker was about to serve
 * (worker_fds_snapshot: /proc/self/fd; the store's files, the pipes, the
 * control channel) and what it opens later (connections, a new control
 * channel: worker_fds_add), until the worker closes it (worker_fds_forget).
 * An fd is the worker's only while its device and inode are the ones
 * recorded, so a stale entry never protects a user's file.  No Python.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exec.h"

/* One fd of the worker's (the table is indexed by its number). */
struct worker_fd {
	dev_t dev;                   /* device and inode when registered */
	ino_t ino;
	int on;                      /* registered */
};

static pthread_mutex_t fds_lock = PTHREAD_MUTEX_INITIALIZER;
static struct worker_fd *fds_tab;    /* fds_lock */
static int fds_cap;                  /* entries in fds_tab */
static int fds_enabled;              /* detection on (fds_lock) */
static atomic_int fds_suspect;       /* shipped code looked up a
                                        function that closes fds */

/* Record fd (fds_lock held).  0, or -1 (out of memory, fd not open). */
static int
worker_fds_add_locked(int fd)
{
	struct worker_fd *nt;
	struct stat st;
	int ncap;

	if (fd <= 2 || fstat(fd, &st) != 0)
		return -1;
	if (fd >= fds_cap) {
		ncap = fds_cap < 64 ? 64 : fds_cap;
		while (ncap <= fd)
			ncap *= 2;
		if ((nt = realloc(fds_tab, sizeof *nt * (size_t)ncap)) == NULL)
			return -1;
		memset(nt + fds_cap, 0, sizeof *nt * (size_t)(ncap - fds_cap));
		fds_tab = nt;
		fds_cap = ncap;
	}
	fds_tab[fd].dev = st.st_dev;
	fds_tab[fd].ino = st.st_ino;
	fds_tab[fd].on = 1;
	return 0;
}

int
worker_fds_add(int fd)
{
	int rc;

	pthread_mutex_lock(&fds_lock);
	rc = worker_fds_add_locked(fd);
	pthread_mutex_unlock(&fds_lock);
	return rc;
}

void
worker_fds_forget(int fd)
{
	pthread_mutex_lock(&fds_lock);
	if (fd >= 0 && fd < fds_cap)
		fds_tab[fd].on = 0;
	pthread_mutex_unlock(&fds_lock);
}

int
worker_fds_snapshot(void)
{
	DIR *d;
	struct dirent *e;
	char *end;
	long fd;
	int rc = 0;

	if ((d = opendir("/proc/self/fd")) == NULL)
		return -1;
	pthread_mutex_lock(&fds_lock);
	while ((e = readdir(d)) != NULL) {
		fd = strtol(e->d_name, &end, 10);
		if (*end != '\0' || end == e->d_name || fd <= 2 ||
		    fd == dirfd(d) || fd > 1 << 24)
			continue;
		if (worker_fds_add_locked((int)fd) != 0)
			rc = -1;
	}
	fds_enabled = 1;
	pthread_mutex_unlock(&fds_lock);
	closedir(d);
	return rc;
}

void
worker_fds_stop(void)
{
	pthread_mutex_lock(&fds_lock);
	fds_enabled = 0;
	pthread_mutex_unlock(&fds_lock);
}

/* Is registered fd still what it was?  fds_lock held. */
static int
worker_fds_same_locked(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && st.st_dev == fds_tab[fd].dev &&
	    st.st_ino == fds_tab[fd].ino;
}

int
worker_fds_owned(int fd)
{
	int rc;

	pthread_mutex_lock(&fds_lock);
	rc = fd > 2 && fd < fds_cap && fds_tab[fd].on &&
	    worker_fds_same_locked(fd);
	pthread_mutex_unlock(&fds_lock);
	return rc;
}

int
worker_fds_list(int lo, int hi, int *out, int max)
{
	int fd, n = 0;

	pthread_mutex_lock(&fds_lock);
	if (lo < 3)
		lo = 3;
	for (fd = lo; fd < hi && fd < fds_cap && n < max; fd++)
		if (fds_tab[fd].on && worker_fds_same_locked(fd))
			out[n++] = fd;
	pthread_mutex_unlock(&fds_lock);
	return n;
}

int
worker_fds_intact(int fd)
{
	int rc = 1;

	pthread_mutex_lock(&fds_lock);
	if (fds_enabled && fd > 2 && fd < fds_cap && fds_tab[fd].on)
		rc = worker_fds_same_locked(fd);
	pthread_mutex_unlock(&fds_lock);
	return rc;
}

int
worker_fds_check(void)
{
	int fd, bad = -1;

	pthread_mutex_lock(&fds_lock);
	for (fd = 3; fds_enabled && fd < fds_cap && bad < 0; fd++)
		if (fds_tab[fd].on && !worker_fds_same_locked(fd))
			bad = fd;
	pthread_mutex_unlock(&fds_lock);
	return bad;
}

void
worker_fds_verify(worker *w, int fd, const char *what)
{
	/* a child of shipped code: its copies point at /dev/null
	 * (worker_atfork_child), and it is not the worker */
	if (w != NULL && w->forked)
		return;
	if (!worker_fds_intact(fd))
		worker_fds_fatal(w, fd, what);
}

void
worker_fds_fatal(worker *w, int fd, const char *what)
{
	/* the log fd may be one of those gone: then say nothing (fd 2 is
	 * the output pipe, whose reader may be gone too) */
	if (w != NULL && w->log_fd > 2 && worker_fds_intact(w->log_fd))
		worker_log(w, "pyshelfd: fd %d (%s) of this worker was closed "
		    "or replaced behind its back (shipped code that closed "
		    "descriptors it does not own: close_range, or close() from "
		    "C); exiting at once, without touching its descriptors "
		    "again: the session keeps its last checkpoint, the running "
		    "call is lost\n", fd, what);
	_exit(WORKER_FDS_EXIT);
}

void
worker_fds_store_guard(void *arg, int fd)
{
	worker_fds_verify(arg, fd, "the store's data file");
}

void
worker_fds_suspect(void)
{
	atomic_store(&fds_suspect, 1);
}

void
worker_fds_settle(worker *w)
{
	int bad;

	if (atomic_load_explicit(&fds_suspect, memory_order_relaxed) == 0 ||
	    w->forked || atomic_exchange(&fds_suspect, 0) == 0)
		return;  /* (a child of shipped code: see worker_fds_verify) */
	if ((bad = worker_fds_check()) >= 0)
		worker_fds_fatal(w, bad, "after shipped code looked up a "
		    "function that closes descriptors");
}
