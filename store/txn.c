/*
 * txn.c - the read/write transaction runners: a write that fills the map
 * grows it and runs again, a transaction follows growth done by other
 * processes, a failed durable step is named (store_write_cause), and the
 * bytes a damaged page points at are checked before they are read
 * (store_val_ok); a commit that ran out of disk half way is said to be
 * the full disk it is (txn_short_write).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "store-int.h"

static int txn_grow(store *s);

/* Fewer free bytes than this on the store's file system after a commit
 * failed with EIO: the disk filled up under it (txn_short_write). */
#define TXN_FULL_LEFT ((unsigned long long)1 << 20)

/*
 * The address LMDB mapped data.mdb at, for a map of mapsize bytes: LMDB
 * does not say (me_mapaddr is only set for MDB_FIXEDMAP), so it is looked
 * up in /proc/self/maps by the file's device and inode, once per mapping
 * (the map moves only when it grows).  0 when it cannot be found.
 */
static uintptr_t
txn_map_base(store *s, size_t mapsize, const struct stat *st)
{
	unsigned long lo, hi, off, ino;
	unsigned maj, mnr;
	uintptr_t base = 0;
	char line[512];
	FILE *f;

	pthread_mutex_lock(&s->map_lock);
	/* found, or looked for in vain, for this mapping: not again */
	if (s->map_base_size == mapsize) {
		base = s->map_base;
		goto out;
	}
	if ((f = fopen("/proc/self/maps", "re")) == NULL)
		goto out;
	while (fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off,
		    &maj, &mnr, &ino) != 6)
			continue;
		if (off == 0 && ino == (unsigned long)st->st_ino &&
		    maj == major(st->st_dev) && mnr == minor(st->st_dev) &&
		    hi - lo == mapsize) {
			base = (uintptr_t)lo;
			break;
		}
	}
	fclose(f);
	s->map_base = base;
	s->map_base_size = mapsize;
out:
	pthread_mutex_unlock(&s->map_lock);
	return base;
}

/* Find t's bounds for store_val_ok: the map's address and size, and the
 * data file's size now (the snapshot's pages are all in it: LMDB never
 * shrinks the file, and a commit writes its pages before its meta). */
static void
txn_bounds(store_txn *t)
{
	MDB_envinfo info;
	struct stat st;
	mdb_filehandle_t fd;
	uintptr_t base;
	size_t fsize;

	t->bounds_known = 1;
	t->map_lo = t->map_end = t->file_end = 0;
	if (mdb_env_info(t->s->env, &info) != 0 ||
	    mdb_env_get_fd(t->s->env, &fd) != 0 || fstat(fd, &st) != 0 ||
	    (base = txn_map_base(t->s, info.me_mapsize, &st)) == 0)
		return;       /* unknown: nothing is refused */
	fsize = st.st_size > 0 ? (size_t)st.st_size : 0;
	t->map_lo = base;
	t->map_end = base + info.me_mapsize;
	t->file_end = base + (fsize < info.me_mapsize ? fsize :
	    info.me_mapsize);
}

/* Does v lie where it can be read?  (store-int.h) */
int
store_val_ok(store_txn *t, const MDB_val *v)
{
	uintptr_t p = (uintptr_t)v->mv_data;

	if (!t->bounds_known)
		txn_bounds(t);
	if (v->mv_size == 0 || t->map_lo == 0)
		return 1;
	if (p < t->map_lo || p >= t->map_end)
		/* a write transaction's dirty pages are on the heap, where
		 * there is nothing to check against; a read transaction's
		 * bytes are all in the map */
		return !t->readonly && p != 0;
	return p < t->file_end && v->mv_size <= t->file_end - p;
}

/* Record the sentence of the step that failed. */
void
store_txn_cause(store_txn *t, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	free(t->cause);
	t->cause = NULL;
	va_start(ap, fmt);
	if (vasprintf(&t->cause, fmt, ap) < 0)
		t->cause = NULL;
	va_end(ap);
	errno = saved;
}

/* Begin an LMDB transaction, following another process's map growth. */
static int
txn_begin(store *s, unsigned flags, MDB_txn **txn)
{
	mdb_filehandle_t fd;
	int rc;

	if (!(flags & MDB_RDONLY) && s->write_guard != NULL &&
	    mdb_env_get_fd(s->env, &fd) == 0)
		s->write_guard(s->write_guard_arg, fd);
	rc = mdb_txn_begin(s->env, NULL, flags, txn);

	/* A loop, not an if: the other process may grow the map again
	 * between our adopting its size and beginning again. */
	while (rc == MDB_MAP_RESIZED) {
		/* Another process grew the map: adopt its size.  Needs no
		 * transaction of ours open, which the resize lock ensures. */
		pthread_rwlock_unlock(&s->resize);
		pthread_rwlock_wrlock(&s->resize);
		rc = mdb_env_set_mapsize(s->env, 0);
		pthread_rwlock_unlock(&s->resize);
		pthread_rwlock_rdlock(&s->resize);
		if (rc != 0)
			break; /* mmap refused the new size */
		rc = mdb_txn_begin(s->env, NULL, flags, txn);
	}
	return rc;
}

void
store_set_write_guard(store *s, void (*guard)(void *arg, int fd), void *arg)
{
	s->write_guard = guard;
	s->write_guard_arg = arg;
}

/* Run fn in a read transaction. */
int
store_read(store *s, int (*fn)(store_txn *, void *), void *arg)
{
	store_txn t = {.s = s, .txn = NULL, .readonly = 1};
	int rc;

	pthread_rwlock_rdlock(&s->resize);
	if ((rc = txn_begin(s, MDB_RDONLY, &t.txn)) != 0) {
		pthread_rwlock_unlock(&s->resize);
		return store_map_err(rc);
	}
	rc = fn(&t, arg);
	blob_txn_end(&t, 0);
	mdb_txn_abort(t.txn);
	pthread_rwlock_unlock(&s->resize);
	free(t.cause);
	return rc;
}

/* Double the map (up to the maximum).  STORE_E_FULL at the maximum. */
static int
txn_grow(store *s)
{
	MDB_envinfo info;
	size_t next;
	int rc;

	pthread_rwlock_wrlock(&s->resize);
	mdb_env_info(s->env, &info);
	if (info.me_mapsize >= s->opt.map_max) {
		pthread_rwlock_unlock(&s->resize);
		return STORE_E_FULL;
	}
	next = info.me_mapsize * 2;
	if (next > s->opt.map_max || next < info.me_mapsize)
		next = s->opt.map_max;
	rc = mdb_env_set_mapsize(s->env, next);
	pthread_rwlock_unlock(&s->resize);
	return rc == 0 ? 0 : store_map_err(rc);
}

/* Grow the map ahead of a large write so that the transaction does not
 * run, fill the map, and run again.  Best effort: 0, or STORE_E_FULL when
 * even map_max cannot hold it (the write will then say so itself). */
int
store_reserve(store *s, size_t bytes)
{
	size_t map, used, want;
	int rc;

	if (s->opt.readonly)
		return STORE_E_READONLY;
	for (;;) {
		if ((rc = store_usage(s, &map, &used, NULL)) != 0)
			return rc;
		/* room for the data, its pages' slack and the old copies of
		 * the pages a transaction rewrites */
		want = bytes + bytes / 8 + ((size_t)1 << 20);
		if (used + want <= map)
			return 0;
		if ((rc = txn_grow(s)) != 0)
			return rc;
	}
}

/*
 * A commit that failed with EIO: was it LMDB's short write (mdb.c,
 * mdb_page_flush: a pwritev that wrote part of the pages is EIO, "short
 * write, filesystem full?")?  A disk with room for its last bytes only is
 * the sign: then it is ENOSPC, the full disk that the caller handles by
 * committing what fits.  root may write into the reserved blocks too.
 */
static int
txn_short_write(store *s)
{
	struct statvfs v;
	unsigned long long left;

	if (statvfs(s->path, &v) != 0)
		return 0;
	left = (unsigned long long)(geteuid() == 0 ? v.f_bfree : v.f_bavail) *
	    v.f_frsize;
	return left < TXN_FULL_LEFT;
}

/* Run fn in a write transaction; grow and retry when the map is full. */
int
store_write(store *s, int (*fn)(store_txn *, void *), void *arg)
{
	return store_write_cause(s, fn, arg, NULL);
}

/* store_write, saying which step failed.  A run of fn that fails and is
 * retried (the map grew) leaves no sentence behind: only the run whose
 * error is returned speaks. */
int
store_write_cause(store *s, int (*fn)(store_txn *, void *), void *arg,
                  char **cause)
{
	store_txn t = {.s = s, .txn = NULL, .readonly = 0};
	int rc, nogrow;

	if (cause != NULL)
		*cause = NULL;
	if (s->opt.readonly)
		return STORE_E_READONLY;
	/* dropped files left for store_reap() go before new ones are
	 * written: their pages are freed for the new ones to use */
	if (s->opt.defer_unlink)
		store_reap(s);
	for (;;) {
		free(t.cause);
		t.cause = NULL;
		t.ndeltas = 0; /* a run again starts from nothing */
		pthread_rwlock_rdlock(&s->resize);
		if ((rc = txn_begin(s, 0, &t.txn)) != 0) {
			pthread_rwlock_unlock(&s->resize);
			if (rc == MDB_MAP_FULL && txn_grow(s) == 0)
				continue;
			store_txn_cause(&t, "mdb_txn_begin %s/data.mdb: %s",
			    s->path, mdb_strerror(rc));
			rc = store_map_err(rc);
			goto out;
		}
		rc = fn(&t, arg);
		if (rc == 0)
			rc = session_precommit(&t);
		if (rc == 0)
			rc = blob_precommit(&t);
		if (rc != 0) {
			mdb_txn_abort(t.txn);
			pthread_rwlock_unlock(&s->resize);
			nogrow = t.nogrow;
			blob_txn_end(&t, 0);
			if (rc == STORE_E_FULL && !nogrow &&
			    (rc = txn_grow(s)) == 0)
				continue;
			goto out;
		}
		rc = mdb_txn_commit(t.txn);
		pthread_rwlock_unlock(&s->resize);
		blob_txn_end(&t, rc == 0);
		if (rc == MDB_MAP_FULL && (rc = txn_grow(s)) == 0)
			continue;
		if (rc == EIO && txn_short_write(s))
			rc = ENOSPC;
		if (rc != 0 && rc != STORE_E_FULL)
			store_txn_cause(&t, "mdb_txn_commit %s/data.mdb: %s",
			    s->path, mdb_strerror(rc));
		rc = store_map_err(rc);
		goto out;
	}
out:
	if (rc != 0 && cause != NULL) {
		*cause = t.cause;
		t.cause = NULL;
	}
	free(t.cause);
	free(t.deltas);
	return rc;
}
