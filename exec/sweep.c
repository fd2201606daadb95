/*
 * sweep.c - the sweeper: it ends the sessions whose lease ran out and
 * that no process holds (a tombstone each), then deletes what ended
 * sessions left (entries, refs and calls rows, blob files, last the
 * record) in write transactions bounded by count and by time, letting
 * the write lock go between them, and drops old tombstones.
 *
 * Two callers: a stdio worker before it claims its session
 * (worker-sweep.c), and, in server mode, `pyshelfd --sweep`, a child the
 * supervisor starts (fork + exec) at its start and on a timer, so that
 * routing attaches never waits on a delete and a crash of the sweep
 * takes nothing with it.  A sweep killed halfway resumes at the next one:
 * an ended session stays at time 0 of the expiry index until its record,
 * deleted last, goes.
 *
 * `--sweep --end NAME` ends one session first (pyshelf.end() with no
 * server running), then sweeps.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

/* Most sessions one sweep looks at (the rest wait for the next). */
#define SWEEP_MAX_IDS 1024

/* Expired or ended session ids, from the expiry index. */
struct sweep_ids {
	uint8_t (*ids)[STORE_ID_SIZE];
	int n;
};

/* The exit statuses of `pyshelfd --sweep --end NAME`. */
enum {
	SWEEP_EXIT_NOTFOUND = 3,  /* no session of that name */
	SWEEP_EXIT_ENDED = 4,     /* it had ended already (stdout: when, why) */
	SWEEP_EXIT_BUSY = 5       /* a process serves it (stdout: its pid) */
};

static volatile sig_atomic_t sweep_stop;

static void
sweep_on_term(int sig)
{
	(void)sig;
	sweep_stop = 1;
}

static int
sweep_collect(const uint8_t *id, uint64_t when, void *arg)
{
	struct sweep_ids *si = arg;

	(void)when;
	memcpy(si->ids[si->n++], id, STORE_ID_SIZE);
	return si->n == SWEEP_MAX_IDS ? 1 : 0;
}

static int
sweep_list(store_txn *t, void *arg)
{
	int rc = session_expired(t, store_now_ms(), sweep_collect, arg);

	return rc == 1 ? 0 : rc;
}

/* Argument of one sweep kill. */
struct sweep_kill {
	store *st;
	const sweep_options *o;
	const uint8_t *id;
};

/*
 * End an expired session unless a process holds its lock or its lease,
 * counted from no earlier than o->since_ms (the server's start: its
 * downtime is not counted), has not run out.  0: ended, or dead already
 * (the purge follows); 1: leave it.
 */
static int
sweep_kill(store_txn *t, void *arg)
{
	struct sweep_kill *sk = arg;
	store_session ss;
	uint64_t now = store_now_ms(), from;
	int rc;

	if ((rc = session_get_by_id(t, sk->id, &ss)) != 0)
		return rc == STORE_E_NOTFOUND ? 0 : rc;
	if (ss.state != STORE_STATE_LIVE)
		return 0;
	from = ss.last_seen_ms > sk->o->since_ms ? ss.last_seen_ms :
	    sk->o->since_ms;
	if (ss.lease_ms == 0 || from + ss.lease_ms > now)
		return 1;
	/* in this write transaction: an opener that locks it later finds
	 * it ended when it looks again */
	if (session_locked(sk->st, sk->id, NULL) != 0)
		return 1; /* in use (or cannot tell): leave it */
	return session_end(t, sk->id, STORE_END_EXPIRED, now, NULL);
}

/* Drop tombstones past their time. */
static int
sweep_tombs(store_txn *t, void *arg)
{
	uint64_t now = store_now_ms();

	(void)arg;
	return tomb_sweep(t, now > STORE_TOMB_KEEP_MS ?
	    now - STORE_TOMB_KEEP_MS : 0, NULL);
}

/* Delete an ended session, batch after batch. */
static int
sweep_purge(store *st, const sweep_options *o, const uint8_t *id,
    sweep_stats *stats)
{
	struct timespec nap;
	size_t n, total = 0;
	char hex[2 * STORE_ID_SIZE + 1];
	int rc, finished = 0;

	store_hex(id, STORE_ID_SIZE, hex);
	while (!finished && !sweep_stop) {
		rc = session_purge_step(st, id, o->batch, o->batch_ms, &n,
		    &finished);
		if (rc != 0) {
			if (o->log != NULL)
				fprintf(o->log, "pyshelfd: sweep: session %s: "
				    "%s\n", hex, store_strerror(rc));
			return rc;
		}
		total += n;
		stats->entries += n;
		/* the files this commit dropped: unlinked once it is on disk
		 * (an fsync here holds no lock; a commit's own would hold the
		 * write lock through it) */
		if (store_reap_pending(st) > 0) {
			if ((rc = store_sync(st)) != 0)
				return rc;
			store_reap(st);
		}
		if (o->progress && o->log != NULL && !finished)
			fprintf(o->log, "pyshelfd: sweep: session %s: %zu "
			    "entries deleted\n", hex, total);
		if (!finished && o->pause_us > 0) {
			nap.tv_sec = (time_t)(o->pause_us / 1000000);
			nap.tv_nsec = (long)(o->pause_us % 1000000) * 1000;
			nanosleep(&nap, NULL);
		}
	}
	if (!finished)
		return 0; /* stopped: the next sweep resumes */
	stats->purged++;
	session_lock_remove(st, id);
	return 0;
}

/* Sweep: end expired sessions (leaving tombstones), purge the ended, drop
 * old tombstones.  An error on one session cuts the sweep short. */
int
sweep_run(store *st, const sweep_options *o, sweep_stats *stats)
{
	struct sweep_ids si;
	struct sweep_kill sk;
	int i, rc;

	memset(stats, 0, sizeof *stats);
	si.n = 0;
	if ((si.ids = malloc(SWEEP_MAX_IDS * sizeof *si.ids)) == NULL)
		return STORE_E_NOMEM;
	if ((rc = store_read(st, sweep_list, &si)) != 0)
		goto out;
	sk.st = st;
	sk.o = o;
	for (i = 0; i < si.n && !sweep_stop; i++) {
		sk.id = si.ids[i];
		rc = store_write(st, sweep_kill, &sk);
		if (rc == 1) {
			rc = 0;
			continue;
		}
		if (rc != 0)
			goto out;
		stats->seen++;
		if ((rc = sweep_purge(st, o, si.ids[i], stats)) != 0)
			goto out;
	}
	if (!sweep_stop)
		rc = store_write(st, sweep_tombs, NULL);
out:
	free(si.ids);
	return rc;
}

/* --- pyshelfd --sweep ------------------------------------------------------ */

static const struct option sweep_longopts[] = {
	{"sweep", no_argument, NULL, 'w'},
	{"db", required_argument, NULL, 'd'},
	{"since", required_argument, NULL, 's'},
	{"sweep-batch", required_argument, NULL, 'b'},
	{"sweep-batch-ms", required_argument, NULL, 't'},
	{"sweep-pause-ms", required_argument, NULL, 'p'},
	{"end", required_argument, NULL, 'e'},
	{"progress", no_argument, NULL, 'P'},
	{"end-only", no_argument, NULL, 'E'},
	{"sync", required_argument, NULL, 'y'},
	{"allow-foreign-store", no_argument, NULL, 'F'},
	{NULL, 0, NULL, 0}
};

/* Parse a whole number up to max; -1 on garbage. */
static int
sweep_num(const char *arg, uint64_t max, uint64_t *out)
{
	char *end;

	errno = 0;
	if (*arg < '0' || *arg > '9')
		return -1;
	*out = strtoull(arg, &end, 10);
	return errno != 0 || *end != '\0' || *out > max ? -1 : 0;
}

/* Refuse the command line (exit status 2). */
static int
sweep_usage(const char *what, const char *arg)
{
	fprintf(stderr, "pyshelfd: --sweep: bad %s '%s'\nusage: pyshelfd "
	    "--sweep [--db DIR] [--end NAME] [--since MS] [--sweep-batch N] "
	    "[--sweep-batch-ms MS] [--sweep-pause-ms MS] [--progress] "
	    "[--sync POLICY]; see pyshelfd --help\n", what, arg);
	return 2;
}

/* Read the command line into o and w->opt; -1: go on, else the exit
 * status. */
static int
sweep_options_parse(int argc, char **argv, sweep_options *o, worker *w)
{
	uint64_t v;
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "", sweep_longopts, NULL)) != -1) {
		switch (c) {
		case 'w':
			break;
		case 'd':
			w->opt.db = optarg;
			break;
		case 's':
			if (sweep_num(optarg, UINT64_MAX / 2, &o->since_ms))
				return sweep_usage("--since (ms since the "
				    "epoch)", optarg);
			break;
		case 'b':
			if (sweep_num(optarg, 1u << 30, &v) || v == 0)
				return sweep_usage("--sweep-batch", optarg);
			o->batch = (size_t)v;
			break;
		case 't':
			if (sweep_num(optarg, 3600000, &o->batch_ms))
				return sweep_usage("--sweep-batch-ms", optarg);
			break;
		case 'p':
			if (sweep_num(optarg, 3600000, &v))
				return sweep_usage("--sweep-pause-ms", optarg);
			o->pause_us = v * 1000;
			break;
		case 'e':
			o->end = optarg;
			break;
		case 'P':
			o->progress = 1;
			break;
		case 'E':
			o->end_only = 1;
			break;
		case 'y':
			if (pyshelfd_option_value('y', optarg, &w->opt) != 0)
				return sweep_usage("--sync", optarg);
			break;
		case 'F':
			w->opt.allow_foreign = 1;
			break;
		default:
			return sweep_usage("option", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return sweep_usage("argument", argv[optind]);
	if (o->end_only && o->end == NULL)
		return sweep_usage("--end-only without", "--end");
	if (o->end != NULL && (strlen(o->end) == 0 ||
	    strlen(o->end) > STORE_NAME_MAX))
		return sweep_usage("session name", o->end);
	return -1;
}

/* What --end found. */
struct sweep_end {
	const char *name;
	store *st;
	int status;          /* 0 or a SWEEP_EXIT_* */
	long holder;         /* BUSY: the holder's pid, 0 unknown */
	store_tomb tomb;     /* 0: the new tombstone; ENDED: the last one */
};

/* End the live session of the name, unless a process serves it. */
static int
sweep_end_txn(store_txn *t, void *arg)
{
	struct sweep_end *se = arg;
	store_session ss;
	int rc;

	se->status = 0;
	se->holder = 0;
	rc = session_get_by_name(t, se->name, &ss);
	if (rc == STORE_E_NOTFOUND) {
		se->status = tomb_last(t, se->name, &se->tomb) == 0 ?
		    SWEEP_EXIT_ENDED : SWEEP_EXIT_NOTFOUND;
		return 1;
	}
	if (rc != 0)
		return rc;
	if ((rc = session_locked(se->st, ss.id, &se->holder)) != 0) {
		se->status = SWEEP_EXIT_BUSY;
		return 1;
	}
	return session_end(t, ss.id, STORE_END_ENDED, store_now_ms(),
	    &se->tomb);
}

/* --end NAME: the exit status when it did not end it, else -1. */
static int
sweep_end(store *st, const char *name)
{
	struct sweep_end se;
	char text[768];
	int rc;

	memset(&se, 0, sizeof se);
	se.name = name;
	se.st = st;
	rc = store_write(st, sweep_end_txn, &se);
	if (rc != 0 && rc != 1) {
		fprintf(stderr, "pyshelfd: ending session '%s': %s\n", name,
		    store_strerror(rc));
		return 1;
	}
	switch (se.status) {
	case SWEEP_EXIT_NOTFOUND:
		fprintf(stderr, "pyshelfd: no session named '%s' in this "
		    "store\n", name);
		return se.status;
	case SWEEP_EXIT_ENDED:
		worker_session_tomb_text(&se.tomb, text, sizeof text);
		printf("%llu %s\n", (unsigned long long)se.tomb.ended_ms,
		    tomb_why_name(se.tomb.why));
		fprintf(stderr, "pyshelfd: %s\n", text);
		return se.status;
	case SWEEP_EXIT_BUSY:
		printf("%ld\n", se.holder);
		fprintf(stderr, "pyshelfd: session '%s' is in use by a "
		    "pyshelfd (pid %ld): end it through its server\n", name,
		    se.holder);
		return se.status;
	}
	printf("%llu %s\n", (unsigned long long)se.tomb.ended_ms,
	    tomb_why_name(se.tomb.why));
	fflush(stdout);
	return -1;
}

/*
 * `pyshelfd --sweep ...`: 0 when the sweep ran (or there is no store),
 * 1 when it failed, 2 on bad usage; with --end, 3, 4 or 5 when it did
 * not end the session (SWEEP_EXIT_*).
 */
int
sweep_main(int argc, char **argv)
{
	static worker w;
	sweep_options o;
	sweep_stats stats;
	struct sigaction sa;
	char *cause = NULL;
	int rc;

	memset(&o, 0, sizeof o);
	o.batch = 1000;
	o.batch_ms = 5;
	o.pause_us = 1000;  /* lets a waiting writer take the lock: without
	                       it the sweep takes it again at once (the
	                       mutex is not fair) and a live commit waits
	                       through several batches (BENCHMARKS.md) */
	o.log = stderr;
	w.opt.mode = 'w';
	w.opt.session = "-";
	/* no fsync per commit, which would hold the write lock through it:
	 * the deletions are synced before any blob file goes, and at the
	 * end; a crash before loses only deletions the next sweep redoes */
	w.opt.sync = STORE_SYNC_INTERVAL;
	if ((rc = sweep_options_parse(argc, argv, &o, &w)) >= 0)
		return rc;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = sweep_on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (worker_session_store(&w, &cause) != 0) {
		if (w.fatal_code == WIRE_ERR_NO_SESSION) {
			/* no store: nothing to sweep, no session to end */
			free(cause);
			if (o.end == NULL)
				return 0;
			fprintf(stderr, "pyshelfd: no session named '%s': no "
			    "pyshelf store at %s\n", o.end, w.opt.db != NULL ?
			    w.opt.db : "the default path");
			return SWEEP_EXIT_NOTFOUND;
		}
		fprintf(stderr, "pyshelfd: --sweep: %s\n", cause != NULL ?
		    cause : "cannot open the store");
		free(cause);
		return 1;
	}
	if (o.end != NULL && ((rc = sweep_end(w.st, o.end)) >= 0 ||
	    o.end_only)) {
		store_close(w.st);
		return rc >= 0 ? rc : 0;
	}
	rc = sweep_run(w.st, &o, &stats);
	if (rc == 0 && (stats.seen != 0 || stats.entries != 0))
		fprintf(stderr, "pyshelfd: sweep: %zu session%s ended or "
		    "resumed, %zu purged, %llu entries deleted\n", stats.seen,
		    stats.seen == 1 ? "" : "s", stats.purged,
		    (unsigned long long)stats.entries);
	else if (rc != 0)
		fprintf(stderr, "pyshelfd: sweep: %s\n", store_strerror(rc));
	store_sync(w.st);
	store_close(w.st);
	return rc == 0 ? 0 : 1;
}
