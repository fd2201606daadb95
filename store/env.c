/*
 * env.c - opening and closing the LMDB environment (the store_* lifecycle),
 * the meta database with its format version, sync and usage.  The
 * transaction runners are in txn.c.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "sockpath.h"
#include "store-int.h"

#define DEFAULT_MAP_INITIAL ((size_t)64 << 20)
#define DEFAULT_MAP_MAX ((size_t)1 << 40)
#define MAX_READERS 1022
#define MAX_DBS 16 /* nine are in use */

static int env_setcause(char **cause, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int env_open_refs(store *s, MDB_txn *txn, char **cause);
static int env_open_dbis(store *s, char **cause);
static int env_check_meta(store *s, char **cause);
static int env_check_pages(store *s, char **cause);
static int env_sweep(store_txn *t, void *arg);
static void env_resize_lock_init(pthread_rwlock_t *l);
static void env_assert(MDB_env *env, const char *msg);

/* Map an LMDB or errno code to a STORE_E_* code. */
int
store_map_err(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case MDB_NOTFOUND:
		return STORE_E_NOTFOUND;
	case MDB_KEYEXIST:
		return STORE_E_EXISTS;
	case MDB_MAP_FULL:
	case ENOSPC:
	case EDQUOT:
		return STORE_E_FULL;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
		return STORE_E_CORRUPT;
	case MDB_VERSION_MISMATCH:
		return STORE_E_VERSION;
	case ENOMEM:
		return STORE_E_NOMEM;
	case EACCES:
	case EROFS:
		return STORE_E_READONLY;
	case EIO:
		return STORE_E_IO;
	default:
		return rc < 0 && rc > -40000 ? STORE_E_LMDB : (rc > 0 ? STORE_E_IO : rc);
	}
}

/* Text for a code. */
const char *
store_strerror(int rc)
{
	switch (rc) {
	case 0:
		return "success";
	case STORE_E_NOTFOUND:
		return "not found";
	case STORE_E_EXISTS:
		return "already exists";
	case STORE_E_CORRUPT:
		return "corrupt record (digest or layout check failed)";
	case STORE_E_VERSION:
		return "store has a newer format than this program understands";
	case STORE_E_FULL:
		return "store is full (map at its maximum size, or disk full); nothing was written";
	case STORE_E_NOMEM:
		return "out of memory";
	case STORE_E_INVAL:
		return "invalid argument";
	case STORE_E_IO:
		return "I/O error";
	case STORE_E_LMDB:
		return "LMDB error";
	case STORE_E_NOTSTORE:
		return "not a pyshelf store";
	case STORE_E_READONLY:
		return "store is read-only";
	case STORE_E_DEAD:
		return "session has ended";
	case STORE_E_BUSY:
		return "session is in use by another process";
	case STORE_E_DAMAGED:
		return "store is damaged (its pages fail the structural check): "
		    "not written; run pyshelf-dump --check";
	case STORE_E_KEY:
		return "a global's name is empty, too long or not UTF-8";
	default:
		return mdb_strerror(rc);
	}
}

/* Put a malloc'd sentence in *cause (when asked) and return -1. */
/* Mark env's data file close-on-exec; see store-int.h. */
void
env_cloexec(MDB_env *env)
{
	mdb_filehandle_t fd;
	int flags;

	if (mdb_env_get_fd(env, &fd) == 0 && fd >= 0 &&
	    (flags = fcntl(fd, F_GETFD)) >= 0 && !(flags & FD_CLOEXEC))
		(void)fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

static int
env_setcause(char **cause, const char *fmt, ...)
{
	va_list ap;

	if (cause == NULL)
		return -1;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) < 0)
		*cause = NULL;
	va_end(ap);
	return -1;
}

/* $XDG_DATA_HOME/pyshelf or ~/.local/share/pyshelf: sockpath.h's one
 * rule, which also names the default store's server socket. */
char *
store_default_path(void)
{
	return sockpath_default_store();
}

/* Create path and its missing parents with mode. */
static int
env_mkdirs(const char *path, mode_t mode)
{
	char *copy = strdup(path), *q;
	int rc = 0;

	if (copy == NULL)
		return -1;
	for (q = copy + 1; *q != '\0'; q++) {
		if (*q != '/')
			continue;
		*q = '\0';
		if (mkdir(copy, 0700) != 0 && errno != EEXIST) {
			rc = -1;
			break;
		}
		*q = '/';
	}
	if (rc == 0 && mkdir(copy, mode) != 0 && errno != EEXIST)
		rc = -1;
	free(copy);
	return rc;
}

/*
 * Make the resize lock prefer its writer: glibc's default prefers readers,
 * and a thread waiting to grow or remap the map would then wait for as long
 * as other threads keep a read or write transaction going.  The price: the
 * lock is not recursive, so a callback must not start another transaction.
 */
static void
env_resize_lock_init(pthread_rwlock_t *l)
{
	pthread_rwlockattr_t ra;

	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra,
	    PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(l, &ra);
	pthread_rwlockattr_destroy(&ra);
}

/* Open the environment and its databases, checking the format. */
int
store_open(store **out, const char *path, const store_options *opt,
           char **cause)
{
	store *s;
	struct stat st;
	char *data = NULL;
	unsigned flags = MDB_NOTLS;
	int rc, existed;

	if (cause != NULL)
		*cause = NULL;
	*out = NULL;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return STORE_E_NOMEM;
	if (opt != NULL)
		s->opt = *opt;
	if (s->opt.map_initial == 0)
		s->opt.map_initial = DEFAULT_MAP_INITIAL;
	if (s->opt.map_max == 0)
		s->opt.map_max = DEFAULT_MAP_MAX;
	if (s->opt.map_initial > s->opt.map_max)
		s->opt.map_initial = s->opt.map_max;
	if (s->opt.blob_min == 0)
		s->opt.blob_min = STORE_BLOB_MIN_DEFAULT;
	s->blobfd = -1;
	env_resize_lock_init(&s->resize);
	pthread_mutex_init(&s->unsynced_lock, NULL);
	pthread_mutex_init(&s->map_lock, NULL);
	if ((s->path = strdup(path)) == NULL) {
		rc = STORE_E_NOMEM;
		goto free_s;
	}

	if (stat(path, &st) != 0) {
		if (errno != ENOENT || !s->opt.create || s->opt.readonly) {
			rc = errno == ENOENT ? STORE_E_NOTSTORE : STORE_E_IO;
			env_setcause(cause, "%s: %s", path, strerror(errno));
			goto free_s;
		}
		if (env_mkdirs(path, 0700) != 0) {
			/* env_mkdirs copies the path: ENOMEM is not the disk */
			rc = errno == ENOMEM ? STORE_E_NOMEM : STORE_E_IO;
			env_setcause(cause, "mkdir %s: %s", path, strerror(errno));
			goto free_s;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		rc = STORE_E_NOTSTORE;
		env_setcause(cause, "%s: not a directory", path);
		goto free_s;
	}
	if (asprintf(&data, "%s/data.mdb", path) < 0) {
		rc = STORE_E_NOMEM;
		goto free_s;
	}
	/* a store that exists is checked before it is written (below); a
	 * new one has nothing to check */
	existed = stat(data, &st) == 0 && st.st_size > 0;
	if (stat(data, &st) != 0 && (s->opt.readonly || !s->opt.create)) {
		if (errno == EACCES) {
			/* there may well be a store: we may not look */
			rc = STORE_E_READONLY;
			env_setcause(cause, "%s: permission denied (this user "
			    "may not read the store's directory)", path);
		} else {
			rc = STORE_E_NOTSTORE;
			env_setcause(cause, "%s: no pyshelf store here (no "
			    "data.mdb)", path);
		}
		goto free_data;
	}

	if ((rc = mdb_env_create(&s->env)) != 0)
		goto lmdb_err;
	if (s->opt.on_assert != NULL) {
		mdb_env_set_userctx(s->env, s);
		mdb_env_set_assert(s->env, env_assert);
	}
	mdb_env_set_maxreaders(s->env, MAX_READERS);
	mdb_env_set_maxdbs(s->env, MAX_DBS);
	if ((rc = mdb_env_set_mapsize(s->env, s->opt.map_initial)) != 0)
		goto lmdb_err;
	if (s->opt.readonly)
		flags |= MDB_RDONLY;
	if (s->opt.sync != STORE_SYNC_ALWAYS)
		flags |= MDB_NOSYNC;
	if (existed) {
		char why[160];
		if (store_check_meta_pages(path, why, sizeof why) == 1) {
			env_setcause(cause, "%s: the store is damaged (%s): run "
			    "pyshelf-dump --check --db %s to see the damage, and "
			    "pyshelf-dump --salvage OUT --db %s to copy what is "
			    "intact into a new store", path, why, path, path);
			rc = STORE_E_DAMAGED;
			goto close_env;
		}
	}
	if ((rc = mdb_env_open(s->env, path, flags, 0600)) != 0)
		goto lmdb_err;
	env_cloexec(s->env);
	/* Free the reader slots of processes killed inside a read
	 * transaction: LMDB keeps them while any process has the environment
	 * open, and they pin every page freed since, so the file would only
	 * grow. */
	mdb_reader_check(s->env, NULL);
	/* LMDB trusts its pages, and a write transaction on a damaged one
	 * writes out of bounds: look at them before any write.  (Read-only
	 * opens go on unless check_pages: pyshelf-dump reads what it can, in
	 * a child, and says what is damaged.) */
	if ((!s->opt.readonly || s->opt.check_pages) && existed &&
	    (rc = env_check_pages(s, cause)) != 0)
		goto close_env;
	if ((rc = env_open_dbis(s, cause)) != 0)
		goto close_env;
	if ((rc = env_check_meta(s, cause)) != 0)
		goto close_env;
	if ((rc = blob_dir_open(s, cause)) != 0)
		goto close_env;
	if (!s->opt.readonly && (rc = store_write(s, env_sweep, NULL)) != 0) {
		env_setcause(cause, "%s: removing orphan blob files: %s", path,
		    store_strerror(rc));
		goto close_env;
	}
	free(data);
	*out = s;
	return 0;

lmdb_err:
	env_setcause(cause, "%s: %s", path, mdb_strerror(rc));
	rc = store_map_err(rc);
close_env:
	if (s->env != NULL)
		mdb_env_close(s->env);
	if (s->blobfd >= 0)
		close(s->blobfd);
free_data:
	free(data);
free_s:
	pthread_rwlock_destroy(&s->resize);
	pthread_mutex_destroy(&s->unsynced_lock);
	pthread_mutex_destroy(&s->map_lock);
	free(s->path);
	free(s);
	return rc;
}

/* LMDB's assertion hook: the caller's on_assert has the sentence, then
 * the process aborts as mdb_assert_fail would, without LMDB's own line on
 * stderr (mdb_assert_fail prints and aborts once this returns). */
static void
env_assert(MDB_env *env, const char *msg)
{
	store *s = mdb_env_get_userctx(env);

	if (s != NULL && s->opt.on_assert != NULL)
		s->opt.on_assert(msg);
	signal(SIGABRT, SIG_DFL);
	abort();
}

/* The first problem the structural check finds, for the refusal. */
static void
env_first_problem(const char *problem, void *arg)
{
	char *first = arg;

	if (first[0] == '\0')
		snprintf(first, 256, "%s", problem);
}

/*
 * Refuse to write to a store whose pages fail the quick check.  Other
 * processes may be committing meanwhile: the check runs inside a read
 * transaction, which keeps the pages of its snapshot and of every newer
 * one from being reused under it, and a problem is only believed when a
 * second look, in a new transaction, finds one too (a meta page read
 * while another process rewrites it).
 */
static int
env_check_pages(store *s, char **cause)
{
	char first[256] = "";
	MDB_txn *txn = NULL;
	int n = 0, pass, rc;

	for (pass = 0; pass < 2; pass++) {
		rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
		if (rc == MDB_MAP_RESIZED) {
			mdb_env_set_mapsize(s->env, 0);
			rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
		}
		if (rc != 0)
			txn = NULL;  /* checked all the same */
		first[0] = '\0';
		n = store_check_structure(s->path, STORE_CHECK_BUDGET,
		    env_first_problem, first);
		if (txn != NULL)
			mdb_txn_abort(txn);
		if (n <= 0)
			break;
	}
	if (n == 0)
		return 0;
	if (n < 0) {
		env_setcause(cause, "%s: checking data.mdb: %s", s->path,
		    store_strerror(n));
		return n;
	}
	env_setcause(cause, "%s: the store is damaged (%s%s); it is not "
	    "opened for writing, so that nothing makes it worse: run "
	    "pyshelf-dump --check --db %s to see the damage, and "
	    "pyshelf-dump --salvage OUT --db %s to copy what is intact into "
	    "a new store", s->path, first, n > 1 ? ", and more" : "",
	    s->path, s->path);
	return STORE_E_DAMAGED;
}

/*
 * Open the refs database (MDB_DUPSORT) in txn, creating it unless
 * read-only.  A read-only open of a store made before refs existed goes on
 * without it (has_refs 0: no rows); one that is not MDB_DUPSORT is not
 * ours (STORE_E_NOTSTORE).
 */
static int
env_open_refs(store *s, MDB_txn *txn, char **cause)
{
	unsigned flags = MDB_DUPSORT | (s->opt.readonly ? 0 : MDB_CREATE);
	unsigned got;
	int rc;

	s->has_refs = 0;
	rc = mdb_dbi_open(txn, "refs", flags, &s->refs);
	if (rc == MDB_NOTFOUND && s->opt.readonly)
		return 0;
	if (rc == 0 && (rc = mdb_dbi_flags(txn, s->refs, &got)) == 0 &&
	    !(got & MDB_DUPSORT))
		rc = MDB_INCOMPATIBLE;
	if (rc == MDB_INCOMPATIBLE) {
		env_setcause(cause, "%s: not a pyshelf store ('refs' is not a "
		    "DUPSORT database)", s->path);
		return STORE_E_NOTSTORE;
	}
	if (rc != 0) {
		env_setcause(cause, "%s: open database refs: %s", s->path,
		    mdb_strerror(rc));
		return store_map_err(rc);
	}
	s->has_refs = 1;
	return 0;
}

/* Open the nine named databases (creating them unless read-only). */
static int
env_open_dbis(store *s, char **cause)
{
	static const char *names[] = {"meta", "sessions", "names", "entries",
	    "expiry"};
	MDB_dbi *dbis[] = {&s->meta, &s->sessions, &s->names, &s->entries,
	    &s->expiry};
	MDB_txn *txn;
	unsigned cflag = s->opt.readonly ? 0 : MDB_CREATE;
	size_t i;
	int rc;

	rc = mdb_txn_begin(s->env, NULL, s->opt.readonly ? MDB_RDONLY : 0, &txn);
	if (rc == MDB_MAP_RESIZED) {
		mdb_env_set_mapsize(s->env, 0);
		rc = mdb_txn_begin(s->env, NULL,
		    s->opt.readonly ? MDB_RDONLY : 0, &txn);
	}
	if (rc != 0) {
		env_setcause(cause, "%s: begin: %s", s->path, mdb_strerror(rc));
		return store_map_err(rc);
	}
	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		rc = mdb_dbi_open(txn, names[i], cflag, dbis[i]);
		if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
			mdb_txn_abort(txn);
			env_setcause(cause, "%s: not a pyshelf store (no '%s' "
			    "database)", s->path, names[i]);
			return STORE_E_NOTSTORE;
		}
		if (rc != 0) {
			mdb_txn_abort(txn);
			env_setcause(cause, "%s: open database %s: %s", s->path,
			    names[i], mdb_strerror(rc));
			return store_map_err(rc);
		}
	}
	if ((rc = env_open_refs(s, txn, cause)) != 0) {
		mdb_txn_abort(txn);
		return rc;
	}
	/* tombstones came later, like refs: a read-only open of a store
	 * made before goes on without them; an older pyshelf never opens
	 * the database and only writes no tombstones */
	s->has_tombs = 0;
	rc = mdb_dbi_open(txn, "tombstones", cflag, &s->tombs);
	if (rc == 0)
		s->has_tombs = 1;
	else if (rc != MDB_NOTFOUND || !s->opt.readonly) {
		mdb_txn_abort(txn);
		env_setcause(cause, "%s: open database tombstones: %s", s->path,
		    mdb_strerror(rc));
		return rc == MDB_INCOMPATIBLE ? STORE_E_NOTSTORE :
		    store_map_err(rc);
	}
	/* calls came later still (the journal of server mode), the same
	 * way: no format bump, created by a writable open */
	s->has_calls = 0;
	rc = mdb_dbi_open(txn, "calls", cflag, &s->calls);
	if (rc == 0)
		s->has_calls = 1;
	else if (rc != MDB_NOTFOUND || !s->opt.readonly) {
		mdb_txn_abort(txn);
		env_setcause(cause, "%s: open database calls: %s", s->path,
		    mdb_strerror(rc));
		return rc == MDB_INCOMPATIBLE ? STORE_E_NOTSTORE :
		    store_map_err(rc);
	}
	/* blobs came with format 2: a read-only open of a format 1 store
	 * goes on without it (no blob records) */
	s->has_blobs = 0;
	rc = mdb_dbi_open(txn, "blobs", cflag, &s->blobs);
	if (rc == 0)
		s->has_blobs = 1;
	else if (rc != MDB_NOTFOUND || !s->opt.readonly) {
		mdb_txn_abort(txn);
		env_setcause(cause, "%s: open database blobs: %s", s->path,
		    mdb_strerror(rc));
		return rc == MDB_INCOMPATIBLE ? STORE_E_NOTSTORE :
		    store_map_err(rc);
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		env_setcause(cause, "%s: commit: %s", s->path, mdb_strerror(rc));
		return store_map_err(rc);
	}
	return 0;
}

/* Argument of the meta check transaction. */
struct meta_arg {
	uint32_t format;   /* found format, 0 when new */
	int fresh;         /* the store was just created */
	uint32_t migrated; /* the older format it was migrated from */
};

/* Write the format and creation time into an empty meta database. */
static int
env_meta_init(store_txn *t, void *arg)
{
	struct meta_arg *ma = arg;
	uint8_t buf[8];
	MDB_val k, v;
	int rc;

	k.mv_data = "format";
	k.mv_size = 6;
	if ((rc = mdb_get(t->txn, t->s->meta, &k, &v)) == 0) {
		if (v.mv_size != 4)
			return STORE_E_NOTSTORE;
		ma->format = be32_get(v.mv_data);
		if (ma->format < STORE_FORMAT_VERSION && !t->readonly) {
			/* format 1 -> 2: its records are format 2 records
			 * (no blob flag); `blobs` was just created, empty.
			 * 2 -> 3: the session records get their counts */
			if ((rc = session_counts_migrate(t)) != 0)
				return rc;
			be32_put(buf, STORE_FORMAT_VERSION);
			v.mv_data = buf;
			v.mv_size = 4;
			if ((rc = mdb_put(t->txn, t->s->meta, &k, &v, 0)) != 0)
				return store_map_err(rc);
			ma->migrated = ma->format;
		}
		return 0;
	}
	if (rc != MDB_NOTFOUND)
		return store_map_err(rc);
	if (t->readonly)
		return STORE_E_NOTSTORE;
	be32_put(buf, STORE_FORMAT_VERSION);
	v.mv_data = buf;
	v.mv_size = 4;
	if ((rc = mdb_put(t->txn, t->s->meta, &k, &v, 0)) != 0)
		return store_map_err(rc);
	be64_put(buf, store_now_ms());
	k.mv_data = "created";
	k.mv_size = 7;
	v.mv_size = 8;
	if ((rc = mdb_put(t->txn, t->s->meta, &k, &v, 0)) != 0)
		return store_map_err(rc);
	ma->format = STORE_FORMAT_VERSION;
	ma->fresh = 1;
	return 0;
}

/* Refuse a store of a newer format; stamp a new one. */
static int
env_check_meta(store *s, char **cause)
{
	struct meta_arg ma = {0, 0, 0};
	int rc;

	if (s->opt.readonly)
		rc = store_read(s, env_meta_init, &ma);
	else
		rc = store_write(s, env_meta_init, &ma);
	/* tolerant: the pyshelf databases all opened, so a meta that
	 * cannot be read (or holds no sound format) is a damaged page */
	if (rc == STORE_E_NOTSTORE && !(s->opt.readonly && s->opt.tolerant)) {
		env_setcause(cause, "%s: not a pyshelf store (no format "
		    "version in meta)", s->path);
		return rc;
	}
	if (rc != 0 && s->opt.readonly && s->opt.tolerant) {
		s->meta_damaged = 1;   /* the caller reports it */
		return 0;
	}
	if (rc != 0) {
		env_setcause(cause, "%s: reading meta: %s", s->path,
		    store_strerror(rc));
		return rc;
	}
	if (ma.format > STORE_FORMAT_VERSION) {
		env_setcause(cause, "%s: store format %u is newer than this "
		    "pyshelf understands (%d); upgrade pyshelf", s->path,
		    ma.format, STORE_FORMAT_VERSION);
		return STORE_E_VERSION;
	}
	return 0;
}

/* Close the environment. */
void
store_close(store *s)
{
	if (s == NULL)
		return;
	if (s->blobfd >= 0)
		store_reap(s);
	mdb_env_close(s->env);
	if (s->blobfd >= 0)
		close(s->blobfd);
	pthread_rwlock_destroy(&s->resize);
	pthread_mutex_destroy(&s->unsynced_lock);
	pthread_mutex_destroy(&s->map_lock);
	free(s->unsynced.v);
	free(s->path);
	free(s);
}

/* Unlink the dropped files queued by defer_unlink. */
size_t
store_reap(store *s)
{
	struct blob_list l;

	pthread_mutex_lock(&s->unsynced_lock);
	l = s->reap;
	memset(&s->reap, 0, sizeof s->reap);
	pthread_mutex_unlock(&s->unsynced_lock);
	if (l.n > 0)
		blob_unlink_list(s, &l);
	free(l.v);
	return l.n;
}

/* How many files wait for store_reap(). */
size_t
store_reap_pending(store *s)
{
	size_t n;

	pthread_mutex_lock(&s->unsynced_lock);
	n = s->reap.n;
	pthread_mutex_unlock(&s->unsynced_lock);
	return n;
}

size_t
store_blob_min(const store *s)
{
	return s->opt.blob_min;
}

const char *
store_path(const store *s)
{
	return s->path;
}

/* Flush to disk. */
int
store_sync(store *s)
{
	return store_sync_cause(s, NULL);
}

/* Flush to disk, saying which step failed. */
int
store_sync_cause(store *s, char **cause)
{
	int rc;

	if (cause != NULL)
		*cause = NULL;
	if (s->opt.readonly)
		return 0;
	/* the files first: a synced record never names an unsynced file */
	if ((rc = blob_sync(s, cause)) != 0)
		return rc;
	if ((rc = mdb_env_sync(s->env, 1)) != 0 && cause != NULL &&
	    asprintf(cause, "mdb_env_sync %s/data.mdb: %s", s->path,
	    mdb_strerror(rc)) < 0)
		*cause = NULL;
	return store_map_err(rc);
}

/* Sizes of the map and of what is used. */
int
store_usage(store *s, size_t *map_size, size_t *used, size_t *map_max)
{
	MDB_envinfo info;
	MDB_stat st;
	int rc;

	if ((rc = mdb_env_info(s->env, &info)) != 0)
		return store_map_err(rc);
	if ((rc = mdb_env_stat(s->env, &st)) != 0)
		return store_map_err(rc);
	if (map_size != NULL)
		*map_size = info.me_mapsize;
	if (used != NULL)
		*used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
	if (map_max != NULL)
		*map_max = s->opt.map_max;
	return 0;
}

/* Argument for reading meta. */
struct meta_read {
	uint32_t format;
	uint64_t created;
};

static int
env_meta_read(store_txn *t, void *arg)
{
	struct meta_read *mr = arg;
	MDB_val k, v;

	k.mv_data = "format";
	k.mv_size = 6;
	if (mdb_get(t->txn, t->s->meta, &k, &v) == 0 && v.mv_size == 4)
		mr->format = be32_get(v.mv_data);
	k.mv_data = "created";
	k.mv_size = 7;
	if (mdb_get(t->txn, t->s->meta, &k, &v) == 0 && v.mv_size == 8)
		mr->created = be64_get(v.mv_data);
	return 0;
}

/* Format and creation time. */
int
store_meta(store *s, uint32_t *format, uint64_t *created_ms)
{
	struct meta_read mr = {0, 0};
	int rc = s->meta_damaged ? STORE_E_CORRUPT :
	    store_read(s, env_meta_read, &mr);

	if (format != NULL)
		*format = mr.format;
	if (created_ms != NULL)
		*created_ms = mr.created;
	return rc;
}

/* At a writable open: remove the blob files no row names (blob.c). */
static int
env_sweep(store_txn *t, void *arg)
{
	size_t removed;

	(void)arg;
	return blob_sweep(t, &removed);
}
