/*
 * compact.c - giving back the pages LMDB freed: a compacting copy of
 * data.mdb (mdb_env_copyfd2 with MDB_CP_COMPACT) swapped in while no
 * process has the store open.
 *
 * Who has the store open is told by LMDB's own lock: every process with
 * the environment open (a reader or a writer, any mode but MDB_NOLOCK)
 * holds a shared POSIX record lock on byte 0 of lock.mdb for the life of
 * its environment, and the first one to open it takes that byte
 * exclusively while it sets the lock table up.  store_compact takes it
 * exclusively (refusing when it cannot: someone has the store open), reads
 * the store with MDB_NOLOCK, and keeps the lock across the swap, so that a
 * process that opens the store meanwhile waits in LMDB's open (F_SETLKW)
 * until the new data.mdb is in place and its lock table set up for it.
 * docs/OPERATIONS.md, "Giving space back", says what an admin sees.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-int.h"

/* Set *cause (may be NULL) to a malloc'd sentence; errno is kept. */
static void
compact_cause(char **cause, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
compact_cause(char **cause, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	if (cause != NULL) {
		free(*cause);
		*cause = NULL;
		va_start(ap, fmt);
		if (vasprintf(cause, fmt, ap) < 0)
			*cause = NULL;
		va_end(ap);
	}
	errno = saved;
}

/* The STORE_E_* code for an errno of the file system. */
static int
compact_errno(int e)
{
	return e == ENOSPC || e == EDQUOT ? STORE_E_FULL :
	    e == ENOMEM ? STORE_E_NOMEM : e == EACCES || e == EROFS ?
	    STORE_E_READONLY : STORE_E_IO;
}

/*
 * Take byte 0 of lock.mdb (fd) exclusively with a POSIX lock: LMDB's
 * "nobody else has this environment open".  0, or STORE_E_BUSY with the
 * holder's pid in the cause when the kernel says it.
 */
static int
compact_lock(int fd, const char *path, char **cause)
{
	struct flock fl;

	memset(&fl, 0, sizeof fl);
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 0;
	fl.l_len = 1;
	if (fcntl(fd, F_SETLK, &fl) == 0)
		return 0;
	if (errno != EAGAIN && errno != EACCES) {
		compact_cause(cause, "fcntl %s/lock.mdb: %s", path,
		    strerror(errno));
		return STORE_E_IO;
	}
	memset(&fl, 0, sizeof fl);
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_len = 1;
	if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK &&
	    fl.l_pid > 0)
		compact_cause(cause, "%s is open in another process (pid %ld: "
		    "a pyshelfd worker, pyshelfd --stdio or pyshelf-dump); "
		    "stop it first (pyshelfd --help: SIGTERM)", path,
		    (long)fl.l_pid);
	else
		compact_cause(cause, "%s is open in another process (a "
		    "pyshelfd worker, pyshelfd --stdio or pyshelf-dump); stop "
		    "it first", path);
	return STORE_E_BUSY;
}

/* Write the compacting copy of the store at path into tmp (created, owned
 * and moded as data.mdb is, synced).  *after is its size. */
static int
compact_copy(const char *path, const char *tmp, const struct stat *st,
             uint64_t *after, char **cause)
{
	MDB_env *env = NULL;
	struct stat ts;
	int fd = -1, rc;

	if ((rc = mdb_env_create(&env)) != 0)
		goto lmdb;
	mdb_env_set_maxdbs(env, 16);
	rc = mdb_env_open(env, path, MDB_RDONLY | MDB_NOLOCK, 0600);
	if (rc != 0)
		goto lmdb;
	env_cloexec(env);
	if (unlink(tmp) != 0 && errno != ENOENT) {
		compact_cause(cause, "unlink %s: %s", tmp, strerror(errno));
		rc = compact_errno(errno);
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    st->st_mode & 0777);
	if (fd < 0) {
		compact_cause(cause, "open %s: %s", tmp, strerror(errno));
		rc = compact_errno(errno);
		goto out;
	}
	if ((st->st_uid != geteuid() || st->st_gid != getegid()) &&
	    fchown(fd, st->st_uid, st->st_gid) != 0) {
		compact_cause(cause, "fchown %s: %s", tmp, strerror(errno));
		rc = compact_errno(errno);
		goto out;
	}
	if ((rc = mdb_env_copyfd2(env, fd, MDB_CP_COMPACT)) != 0)
		goto lmdb;
	if (fsync(fd) != 0 || fstat(fd, &ts) != 0) {
		compact_cause(cause, "fsync %s: %s", tmp, strerror(errno));
		rc = compact_errno(errno);
		goto out;
	}
	*after = (uint64_t)ts.st_size;
	rc = close(fd);
	fd = -1;
	if (rc != 0) {
		compact_cause(cause, "close %s: %s", tmp, strerror(errno));
		rc = compact_errno(errno);
	}
	goto out;
lmdb:
	compact_cause(cause, "copying %s/data.mdb to %s: %s", path, tmp,
	    mdb_strerror(rc));
	rc = store_map_err(rc);
out:
	if (fd >= 0)
		close(fd);
	if (env != NULL)
		mdb_env_close(env);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

/* Rename tmp over data.mdb and make the rename durable. */
static int
compact_swap(const char *path, const char *tmp, const char *data,
             char **cause)
{
	int dfd;

	if (rename(tmp, data) != 0) {
		compact_cause(cause, "rename %s to %s: %s", tmp, data,
		    strerror(errno));
		unlink(tmp);
		return compact_errno(errno);
	}
	if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    fsync(dfd) != 0) {
		compact_cause(cause, "fsync %s: %s", path, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return compact_errno(errno);
	}
	close(dfd);
	return 0;
}

/*
 * Set LMDB's lock table up for the new data.mdb before anyone else can
 * open it: an environment opened here, while this process holds byte 0
 * exclusively, is LMDB's first opener (its own F_SETLK succeeds: POSIX
 * locks of one process do not conflict), which resets the table and takes
 * the last transaction id from the new file.  Closing it drops this
 * process's locks on lock.mdb: the waiting openers go on.
 */
static int
compact_reset_locks(const char *path, char **cause)
{
	MDB_env *env;
	int rc;

	if ((rc = mdb_env_create(&env)) != 0)
		goto out;
	mdb_env_set_maxdbs(env, 16);
	rc = mdb_env_open(env, path, MDB_RDONLY, 0600);
	mdb_env_close(env);
out:
	if (rc != 0)
		compact_cause(cause, "opening %s after the swap: %s", path,
		    mdb_strerror(rc));
	return store_map_err(rc);
}

/* Compact the store at path (store.h). */
int
store_compact(const char *path, uint64_t *before, uint64_t *after,
              char **cause)
{
	char *data = NULL, *lock = NULL, *tmp = NULL;
	struct stat st;
	int lfd = -1, rc, n;

	if (cause != NULL)
		*cause = NULL;
	*before = *after = 0;
	if (asprintf(&data, "%s/data.mdb", path) < 0)
		data = NULL;
	if (asprintf(&lock, "%s/lock.mdb", path) < 0)
		lock = NULL;
	if (asprintf(&tmp, "%s/data.mdb.compact", path) < 0)
		tmp = NULL;
	if (data == NULL || lock == NULL || tmp == NULL) {
		rc = STORE_E_NOMEM;
		goto out;
	}
	if (stat(data, &st) != 0) {
		compact_cause(cause, errno == ENOENT ? "%s: no pyshelf store "
		    "here (no data.mdb)" : "%s: %s", path, strerror(errno));
		rc = errno == ENOENT ? STORE_E_NOTSTORE : compact_errno(errno);
		goto out;
	}
	*before = (uint64_t)st.st_size;
	if ((lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		compact_cause(cause, "open %s: %s", lock, strerror(errno));
		rc = compact_errno(errno);
		goto out;
	}
	if ((rc = compact_lock(lfd, path, cause)) != 0)
		goto out;
	/* never copy damage into the only copy left */
	n = store_check_structure(path, STORE_CHECK_BUDGET, NULL, NULL);
	if (n != 0) {
		compact_cause(cause, n > 0 ? "%s: the store is damaged; it is "
		    "not compacted: run pyshelf-dump --check --db %s" :
		    "%s: checking the store: %s", path, n > 0 ? path :
		    store_strerror(n));
		rc = n > 0 ? STORE_E_DAMAGED : n;
		goto out;
	}
	if ((rc = compact_copy(path, tmp, &st, after, cause)) != 0)
		goto out;
	if ((rc = compact_swap(path, tmp, data, cause)) != 0)
		goto out;
	rc = compact_reset_locks(path, cause);
out:
	if (lfd >= 0)
		close(lfd);
	free(data);
	free(lock);
	free(tmp);
	return rc;
}
