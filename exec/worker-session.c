/*
 * worker-session.c - opening what a worker serves: the checks on the
 * store's path and owner, opening the store (and sweeping it), then
 * claiming the session: its lock first (the lock says who serves it; a
 * holder on its way out is waited for), then the write transaction that
 * creates, replaces (flag 'n') or takes over its record (read-only: a
 * look that it is still the name's).  When opening fails, the worker's
 * fatal_* fields say why, for the client.  Also the sentence that says
 * how a session ended (its tombstone).
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"

/* Say how a session ended, in its user's terms (what was done to it,
 * when, and what was deleted); REASON carries the keyword. */
void
worker_session_tomb_text(const store_tomb *tb, char *buf, size_t n)
{
	char when[64], what[160];
	time_t t = (time_t)(tb->ended_ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(when, sizeof when, "%llu ms since the epoch",
		    (unsigned long long)tb->ended_ms);
	switch (tb->why) {
	case STORE_END_EXPIRED:
		snprintf(what, sizeof what, "expired on %s (its lease of %.0f s "
		    "ran out with no client attached)", when,
		    (double)tb->lease_ms / 1000);
		break;
	case STORE_END_CLOSED:
		snprintf(what, sizeof what, "was closed (close_session()) on %s",
		    when);
		break;
	case STORE_END_REPLACED:
		snprintf(what, sizeof what, "was replaced by a new session "
		    "(flag 'n') on %s", when);
		break;
	case STORE_END_ENDED:
		snprintf(what, sizeof what, "was ended without attaching "
		    "(pyshelf.end()) on %s", when);
		break;
	default:
		snprintf(what, sizeof what, "ended on %s (reason %d)", when,
		    tb->why);
	}
	snprintf(buf, n, "session '%s' %s, and its %llu entries (%llu bytes) "
	    "were deleted", tb->name, what, (unsigned long long)tb->entries,
	    (unsigned long long)tb->bytes);
}

/*
 * Is pid exiting: a zombie, PF_EXITING, or SIGKILL pending?  Its session
 * lock goes within moments then (the kernel drops it as the process's
 * files close), so a reopen right after `kill -9` waits for it instead of
 * failing.  0 when it cannot tell (no /proc, another pid namespace).
 */
static int
worker_session_pid_dying(long pid)
{
	char path[64], buf[1024], *p;
	unsigned long long flags = 0, pend;
	char state = 0;
	size_t got;
	FILE *f;
	int dying = 0;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	got = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[got] = '\0';
	/* pid (comm) state ppid pgrp session tty_nr tpgid flags ... */
	if ((p = strrchr(buf, ')')) != NULL &&
	    sscanf(p + 1, " %c %*d %*d %*d %*d %*d %llu", &state, &flags) == 2 &&
	    (state == 'Z' || state == 'X' || (flags & 0x4) != 0))
		return 1; /* 0x4: PF_EXITING */
	snprintf(path, sizeof path, "/proc/%ld/status", pid);
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	while (fgets(buf, sizeof buf, f) != NULL) {
		if ((sscanf(buf, "SigPnd: %llx", &pend) == 1 ||
		    sscanf(buf, "ShdPnd: %llx", &pend) == 1) &&
		    (pend & (1ull << (SIGKILL - 1))) != 0)
			dying = 1;
	}
	fclose(f);
	return dying;
}

/* session_lock, waiting (up to a minute: far more than an exit takes)
 * while the holder is a process on its way out. */
static int
worker_session_lock(worker *w, const uint8_t *id, int shared, long *holder)
{
	struct timespec nap = {0, 10 * 1000 * 1000};
	uint64_t until = worker_mono_ms() + 60000;
	int rc;

	/* a holder of our own pid: the image before a hard restart's exec,
	 * whose lock goes as the exec closes its descriptor */
	while ((rc = session_lock(w->st, id, shared, &w->lock_fd, holder)) ==
	    STORE_E_BUSY && (worker_session_pid_dying(*holder) ||
	    *holder == (long)getpid()) && worker_mono_ms() < until)
		nanosleep(&nap, NULL);
	return rc;
}

/* What the look-up before the lock found. */
struct worker_session_look_arg {
	worker *w;
	int rc;               /* of session_get_by_name */
	store_session ss;     /* the live session of the name (rc 0) */
	int has_tomb;         /* the name's newest tombstone: */
	store_tomb tomb;
};

static int
worker_session_look(store_txn *t, void *arg)
{
	struct worker_session_look_arg *ol = arg;

	ol->rc = session_get_by_name(t, ol->w->opt.session, &ol->ss);
	if (ol->rc != 0 && ol->rc != STORE_E_NOTFOUND)
		return ol->rc;
	/* one past its time is as good as dropped (a sweep will) */
	ol->has_tomb = tomb_last(t, ol->w->opt.session, &ol->tomb) == 0 &&
	    ol->tomb.ended_ms + STORE_TOMB_KEEP_MS >= store_now_ms();
	return 0;
}

/* Argument for claiming the session. */
struct worker_session_claim_arg {
	worker *w;
	const uint8_t *id;    /* the locked id */
	int creating;         /* no session had the name: make it with id */
	int retry;            /* out: the name changed hands since the look */
};

/* Claim the locked session (or create it), in one write transaction. */
static int
worker_session_claim_txn(store_txn *t, void *arg)
{
	struct worker_session_claim_arg *oa = arg;
	worker *w = oa->w;
	uint8_t token[STORE_TOKEN_SIZE];
	uint64_t now = store_now_ms();
	int rc;

	oa->retry = 0;
	w->created = 0;
	rc = session_get_by_name(t, w->opt.session, &w->sess);
	if (rc == STORE_E_NOTFOUND && oa->creating) {
		if ((rc = store_random(token, sizeof token)) != 0)
			return rc;
		if ((rc = session_create_id(t, w->opt.session, oa->id, token,
		    w->opt.lease_ms, now, &w->sess)) != 0)
			return rc;
		w->created = 1;
	} else if (rc == STORE_E_NOTFOUND ||
	    (rc == 0 && memcmp(w->sess.id, oa->id, STORE_ID_SIZE) != 0)) {
		oa->retry = 1;
		return 1; /* abort: look again */
	} else if (rc != 0)
		return rc;
	/* the pid is for people (pyshelf-dump); the lock decides */
	w->sess.pid = (uint64_t)getpid();
	w->sess.last_seen_ms = now;
	if (w->opt.lease_set)
		w->sess.lease_ms = w->opt.lease_ms;
	return session_put(t, &w->sess);
}

/* Read-only: the locked session must still be the name's. */
static int
worker_session_claim_ro_txn(store_txn *t, void *arg)
{
	struct worker_session_claim_arg *oa = arg;
	int rc = session_get_by_name(t, oa->w->opt.session, &oa->w->sess);

	oa->retry = 0;
	if (rc == STORE_E_NOTFOUND ||
	    (rc == 0 && memcmp(oa->w->sess.id, oa->id, STORE_ID_SIZE) != 0))
		oa->retry = 1;
	return rc == STORE_E_NOTFOUND ? 0 : rc;
}

/* Flag 'n': end the live session of the name (it must not be in use). */
static int
worker_session_replace_txn(store_txn *t, void *arg)
{
	int rc = session_end(t, arg, STORE_END_REPLACED, store_now_ms(), NULL);

	return rc == STORE_E_DEAD || rc == STORE_E_NOTFOUND ? 0 : rc;
}

/* Server mode: end the session of the name if its lease, counted from
 * no earlier than the supervisor's start, ran out (its lock is ours). */
static int
worker_session_expire_txn(store_txn *t, void *arg)
{
	worker *w = arg;
	store_session ss;
	uint64_t now = store_now_ms(), from;
	int rc;

	if ((rc = session_get_by_name(t, w->opt.session, &ss)) != 0)
		return rc == STORE_E_NOTFOUND ? 0 : rc;
	from = ss.last_seen_ms > w->opt.since_ms ? ss.last_seen_ms :
	    w->opt.since_ms;
	if (ss.state != STORE_STATE_LIVE || ss.lease_ms == 0 ||
	    from + ss.lease_ms > now)
		return 0;
	return session_end(t, ss.id, STORE_END_EXPIRED, now, NULL);
}

/*
 * Server mode, where no sweep runs at a worker's start: a session whose
 * lease ran out is ended here rather than revived by the attach (the
 * sweeper deletes it), as a stdio open's sweep would have.  1 when it
 * ended it, 0 when it is in use or not expired, or a STORE_E_* code.
 */
static int
worker_session_expire(worker *w, const store_session *ss)
{
	uint64_t from = ss->last_seen_ms > w->opt.since_ms ? ss->last_seen_ms :
	    w->opt.since_ms;
	long holder = 0;
	int rc;

	if (!w->opt.server || ss->lease_ms == 0 ||
	    from + ss->lease_ms > store_now_ms())
		return 0;
	if (session_lock(w->st, ss->id, 0, &w->lock_fd, &holder) != 0)
		return 0;   /* in use: not expired */
	rc = store_write(w->st, worker_session_expire_txn, w);
	session_unlock(w->lock_fd);
	w->lock_fd = -1;
	if (rc != 0)
		return rc;
	worker_control_ended(w);
	return 1;
}

/* Refuse with the holder named. */
static int
worker_session_busy(worker *w, long holder, char **cause)
{
	w->fatal_code = WIRE_ERR_SESSION_BUSY;
	w->fatal_pid = holder;
	if (holder > 0)
		asprintf(cause, "session '%s' is in use by pyshelfd pid %ld",
		    w->opt.session, holder);
	else
		asprintf(cause, "session '%s' is in use by another pyshelfd "
		    "(its pid is not known here: another pid namespace?)",
		    w->opt.session);
	return -1;
}

/*
 * Find the session, take its lock, then claim it.  The lock comes first:
 * it is what says who serves a session; the write transaction after it
 * checks that the name still belongs to the locked id (a sweep or a 'n'
 * in between makes it look again).
 */
static int
worker_session_claim(worker *w, char **cause)
{
	struct worker_session_look_arg ol;
	struct worker_session_claim_arg oa;
	uint8_t id[STORE_ID_SIZE];
	char text[768];
	long holder = 0;
	int rc, tries, replaced = 0, expired = 0, ro = w->opt.mode == 'r';

	for (tries = 0; tries < 32; tries++) {
		memset(&ol, 0, sizeof ol);
		ol.w = w;
		if ((rc = store_read(w->st, worker_session_look, &ol)) != 0)
			goto store_err;
		if (ol.rc == 0 && !expired && (rc = worker_session_expire(w,
		    &ol.ss)) != 0) {
			if (rc < 0)
				goto store_err;
			expired = 1;
			continue;   /* look again: ended */
		}
		if (ol.rc == 0 && w->opt.mode == 'n' && !replaced) {
			rc = worker_session_lock(w, ol.ss.id, 0, &holder);
			if (rc == STORE_E_BUSY)
				return worker_session_busy(w, holder, cause);
			if (rc != 0)
				goto lock_err;
			rc = store_write(w->st, worker_session_replace_txn,
			    ol.ss.id);
			if (rc == 0)
				rc = session_purge(w->st, ol.ss.id, 1000, NULL);
			if (rc == 0)
				session_lock_remove(w->st, ol.ss.id);
			session_unlock(w->lock_fd);
			w->lock_fd = -1;
			if (rc != 0)
				goto store_err;
			replaced = 1;
			continue;
		}
		if (ol.rc == STORE_E_NOTFOUND && !w->opt.create) {
			if (ol.has_tomb) {
				w->fatal_code = WIRE_ERR_SESSION_DEAD;
				w->fatal_tomb = ol.tomb;
				w->fatal_has_tomb = 1;
				worker_session_tomb_text(&w->fatal_tomb, text,
				    sizeof text);
				asprintf(cause, "%s", text);
			} else {
				w->fatal_code = WIRE_ERR_NO_SESSION;
				asprintf(cause, "no session named '%s' in this "
				    "store", w->opt.session);
			}
			return -1;
		}
		if (ol.rc == 0)
			memcpy(id, ol.ss.id, STORE_ID_SIZE);
		else if ((rc = store_random(id, sizeof id)) != 0)
			goto store_err;
		rc = worker_session_lock(w, id, ro, &holder);
		if (rc == STORE_E_BUSY)
			return worker_session_busy(w, holder, cause);
		if (rc != 0)
			goto lock_err;
		memset(&oa, 0, sizeof oa);
		oa.w = w;
		oa.id = id;
		oa.creating = ol.rc == STORE_E_NOTFOUND;
		rc = ro ? store_read(w->st, worker_session_claim_ro_txn, &oa) :
		    store_write(w->st, worker_session_claim_txn, &oa);
		if (rc == 0 && !oa.retry) {
			if (w->created && ol.has_tomb && w->opt.mode == 'c') {
				w->has_ended = 1;
				w->ended = ol.tomb;
			}
			return 0;
		}
		session_unlock(w->lock_fd);
		w->lock_fd = -1;
		if (!oa.retry)
			goto store_err;
	}
	asprintf(cause, "session '%s': its name kept changing hands while "
	    "opening it", w->opt.session);
	return -1;
lock_err:
	asprintf(cause, "session '%s': cannot take its lock in %s/locks: %s",
	    w->opt.session, store_path(w->st), rc == STORE_E_IO ?
	    strerror(errno) : store_strerror(rc));
	return -1;
store_err:
	asprintf(cause, "session '%s': %s", w->opt.session,
	    store_strerror(rc));
	return -1;
}

/*
 * Refuse a store directory whose parent is missing too: a typo in a path
 * must not grow a new tree of directories (--create-db allows it; the
 * callers check that).  The worker's open and the supervisor's start
 * (which refuses such a store before it daemonizes) both ask here.  0, or
 * -1 with *cause (NULL when out of memory).
 */
int
worker_session_db_parent(const char *db, char **cause)
{
	struct stat st;
	char *parent, *slash;
	int ok;

	*cause = NULL;
	if (stat(db, &st) == 0 || errno != ENOENT)
		return 0;
	if ((parent = strdup(db)) == NULL)
		return -1;
	while ((slash = strrchr(parent, '/')) != NULL && slash[1] == '\0' &&
	    slash != parent)
		*slash = '\0'; /* trailing slashes */
	slash = strrchr(parent, '/');
	if (slash == NULL)
		strcpy(parent, ".");
	else if (slash == parent)
		parent[1] = '\0';
	else
		*slash = '\0';
	ok = stat(parent, &st) == 0;
	if (!ok && asprintf(cause, "store directory %s does not exist, and "
	    "neither does its parent %s: not creating them (a typo? pass "
	    "--create-db, create_db=True, to make the missing directories)",
	    db, parent) < 0)
		*cause = NULL;
	free(parent);
	return ok ? 0 : -1;
}

/* The same, for the worker's open: a refusal is a USAGE error. */
static int
worker_session_check_db(worker *w, const char *db, char **cause)
{
	if (w->opt.create_db || worker_session_db_parent(db, cause) == 0)
		return 0;
	if (*cause == NULL)
		return asprintf(cause, "out of memory"), -1;
	w->fatal_code = WIRE_ERR_USAGE;
	return -1;
}

/*
 * Refuse a store that another user owns or may write to (unless
 * --allow-foreign-store): its records are pickles, and loading one runs
 * what its writer put there with our rights (as root: anybody's code as
 * root).  The directory and data.mdb must belong to us or to root, and
 * the directory must not be writable by group or others (who could put
 * their own data.mdb there).  A store that does not exist yet passes: we
 * make it.  0, or -1 with *cause.
 */
static int
worker_session_check_owner(worker *w, const char *db, char **cause)
{
	static const char *const what[2] = {"store directory", "data file"};
	struct stat st;
	char *file;
	uid_t me = geteuid();
	int i, rc = 0;

	if (w->opt.allow_foreign)
		return 0;
	if (asprintf(&file, "%s/data.mdb", db) < 0)
		return asprintf(cause, "out of memory"), -1;
	for (i = 0; i < 2 && rc == 0; i++) {
		if (stat(i == 0 ? db : file, &st) != 0)
			continue;   /* not there (yet), or stat says it later */
		if (st.st_uid != me && st.st_uid != 0) {
			asprintf(cause, "%s %s is owned by uid %lu, not by this "
			    "user (uid %lu) or root: refusing to load its "
			    "pickles, which run code as this user (pass "
			    "--allow-foreign-store to open it anyway)", what[i],
			    i == 0 ? db : file, (unsigned long)st.st_uid,
			    (unsigned long)me);
			rc = -1;
		} else if (i == 0 && (st.st_mode & (S_IWGRP | S_IWOTH))) {
			asprintf(cause, "store directory %s is writable by %s "
			    "(mode %04o): another user could put pickles there "
			    "that run code as this user; refusing (chmod go-w "
			    "it, or pass --allow-foreign-store)", db,
			    (st.st_mode & S_IWOTH) ? "others" : "its group",
			    (unsigned)(st.st_mode & 07777));
			rc = -1;
		}
	}
	if (rc != 0)
		w->fatal_code = WIRE_ERR_USAGE;
	free(file);
	return rc;
}

/* Open the store w->opt says (its path and owner checked), not the
 * session: w->st is set.  0, or -1 with *cause and w->fatal_*. */
int
worker_session_store(worker *w, char **cause)
{
	store_options so;
	char *path = NULL, *scause = NULL;
	const char *db = w->opt.db;
	int rc, ro = w->opt.mode == 'r';

	memset(&so, 0, sizeof so);
	/* 'w' and 'r' need the session, so the store, to exist */
	so.create = w->opt.create;
	so.readonly = ro;
	so.check_pages = 1;  /* read-only too: LMDB would crash on a bad page */
	so.sync = w->opt.sync;
	so.defer_unlink = 1;
	so.map_max = w->opt.map_max;
	if (db == NULL) {
		if ((path = store_default_path()) == NULL)
			return asprintf(cause, "out of memory"), -1;
		db = path;
		w->opt.create_db = 1; /* the default's parents are ours */
	}
	if ((so.create && worker_session_check_db(w, db, cause) != 0) ||
	    worker_session_check_owner(w, db, cause) != 0) {
		free(path);
		return -1;
	}
	rc = store_open(&w->st, db, &so, &scause);
	if (rc != 0) {
		if (rc == STORE_E_NOTSTORE && !so.create) {
			w->fatal_code = WIRE_ERR_NO_SESSION;
			asprintf(cause, "no session named '%s': no pyshelf store "
			    "at %s (%s)", w->opt.session, db, scause != NULL ?
			    scause : store_strerror(rc));
		} else
			asprintf(cause, "cannot open store: %s", scause != NULL ?
			    scause : store_strerror(rc));
		free(scause);
		free(path);
		return -1;
	}
	free(path);
	return 0;
}

/* Open the store, sweep it (stdio mode: in server mode the supervisor's
 * sweeper does it, counting leases from its start), and open the
 * session. */
int
worker_session_open(worker *w, char **cause)
{
	if (worker_session_store(w, cause) != 0)
		return -1;
	if (w->opt.mode != 'r' && !w->opt.server)
		worker_sweep(w);
	if (worker_session_claim(w, cause) != 0) {
		store_close(w->st);
		w->st = NULL;
		return -1;
	}
	return 0;
}
