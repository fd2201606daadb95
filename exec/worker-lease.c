/*
 * worker-lease.c - keeping a served session's lease fresh in the store.
 * A session is kept while a client is attached or code runs, and its
 * lease counts from the record's last_seen; but last_seen was written
 * only by an attach and by a checkpoint that wrote something.  A client
 * attached (reading, idle, or waiting on one long call) for longer than
 * the lease, then a worker that dies (an OOM kill, a reboot) left a
 * record that looked expired: the next open, or the sweeper, ended the
 * session and deleted everything in it.
 *
 * So a thread of its own (it sleeps almost always, and never touches
 * Python) writes last_seen = now every quarter of the lease (at least
 * every 60 s, at most every 250 ms) while a client is attached or code
 * runs (a call, or a thread of shipped code: worker-threads.c).  After a crash the lease then runs from at most that long before
 * the crash.  A record no longer live (closed, ended) is left alone.  It
 * looks at the record's lease at least every 5 s (a read), so that a
 * lease set later (ATTACH, SET_LEASE) is followed.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "exec.h"

#define LEASE_TOUCH_MIN_MS 250
#define LEASE_TOUCH_MAX_MS 60000
#define LEASE_LOOK_MS 5000        /* read the record's lease this often */

struct lease_touch {
	const uint8_t *id;
	uint64_t lease_ms;    /* out: the record's lease */
};

static int
worker_lease_look(store_txn *t, void *arg)
{
	struct lease_touch *lt = arg;
	store_session ss;
	int rc;

	if ((rc = session_get_by_id(t, lt->id, &ss)) == 0)
		lt->lease_ms = ss.lease_ms;
	return rc == STORE_E_NOTFOUND ? 0 : rc;
}

static int
worker_lease_txn(store_txn *t, void *arg)
{
	struct lease_touch *lt = arg;
	store_session ss;
	int rc;

	if ((rc = session_get_by_id(t, lt->id, &ss)) != 0)
		return rc == STORE_E_NOTFOUND ? 0 : rc;
	lt->lease_ms = ss.lease_ms;
	if (ss.state != STORE_STATE_LIVE)
		return 0;
	ss.last_seen_ms = store_now_ms();
	return session_put(t, &ss);
}

/* How long to sleep between touches for a lease of lease_ms. */
static uint64_t
worker_lease_period(uint64_t lease_ms)
{
	uint64_t p = lease_ms / 4;

	if (lease_ms == 0 || p > LEASE_TOUCH_MAX_MS)
		return LEASE_TOUCH_MAX_MS;
	return p < LEASE_TOUCH_MIN_MS ? LEASE_TOUCH_MIN_MS : p;
}

/* The shorter of the record's lease and the one the worker was told of
 * last (the record may lag until the next commit), 0 being forever: a
 * shorter period only costs a few more touches. */
static uint64_t
worker_lease_shorter(uint64_t rec, int have_hint, uint64_t hint)
{
	if (!have_hint || hint == 0)
		return rec;
	return rec == 0 || hint < rec ? hint : rec;
}

static void *
worker_lease_main(void *arg)
{
	worker *w = arg;
	struct lease_touch lt;
	struct timespec at;
	uint64_t period, sleep_ms, since_touch = 0, hint = 0;
	int in_use, gone, have_hint = 0;

	memset(&lt, 0, sizeof lt);
	lt.id = w->sess.id;
	(void)store_read(w->st, worker_lease_look, &lt);
	pthread_mutex_lock(&w->lease_lock);
	for (;;) {
		period = worker_lease_period(worker_lease_shorter(lt.lease_ms,
		    have_hint, hint));
		sleep_ms = period < LEASE_LOOK_MS ? period : LEASE_LOOK_MS;
		clock_gettime(CLOCK_MONOTONIC, &at);
		at.tv_sec += (time_t)(sleep_ms / 1000);
		at.tv_nsec += (long)(sleep_ms % 1000) * 1000000L;
		if (at.tv_nsec >= 1000000000L) {
			at.tv_sec++;
			at.tv_nsec -= 1000000000L;
		}
		while (!w->lease_quit && !w->lease_kick &&
		    pthread_cond_timedwait(&w->lease_cond, &w->lease_lock,
		    &at) != ETIMEDOUT)
			;
		if (w->lease_quit)
			break;
		if (w->lease_kick) {
			/* the lease changed (it may reach the record only at
			 * the next commit): its new length, touch nothing yet */
			w->lease_kick = 0;
			hint = w->lease_hint_ms;
			have_hint = 1;
			continue;
		}
		pthread_mutex_unlock(&w->lease_lock);
		since_touch += sleep_ms;
		pthread_mutex_lock(&w->lock);
		in_use = w->nconns > 0 || w->running_id != 0 ||
		    w->threads > 0;
		gone = w->closed || w->ended_here;
		pthread_mutex_unlock(&w->lock);
		(void)store_read(w->st, worker_lease_look, &lt);
		if (gone || !in_use) {
			since_touch = 0;
		} else if (since_touch >= worker_lease_period(
		    worker_lease_shorter(lt.lease_ms, have_hint, hint))) {
			(void)store_write(w->st, worker_lease_txn, &lt);
			since_touch = 0;
		}
		pthread_mutex_lock(&w->lease_lock);
	}
	pthread_mutex_unlock(&w->lease_lock);
	return NULL;
}

void
worker_lease_kick(worker *w, uint64_t lease_ms)
{
	if (!w->lease_on)
		return;
	pthread_mutex_lock(&w->lease_lock);
	w->lease_kick = 1;
	w->lease_hint_ms = lease_ms;
	pthread_cond_signal(&w->lease_cond);
	pthread_mutex_unlock(&w->lease_lock);
}

int
worker_lease_start(worker *w, char **cause)
{
	pthread_condattr_t ca;
	int rc;

	w->lease_on = 0;
	w->lease_quit = 0;
	w->lease_kick = 0;
	if (w->opt.mode == 'r')
		return 0;   /* a reader writes nothing */
	pthread_mutex_init(&w->lease_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->lease_cond, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = pthread_create(&w->leaser, NULL, worker_lease_main, w)) !=
	    0) {
		asprintf(cause, "cannot start the lease thread: %s",
		    strerror(rc));
		pthread_cond_destroy(&w->lease_cond);
		pthread_mutex_destroy(&w->lease_lock);
		return -1;
	}
	w->lease_on = 1;
	return 0;
}

void
worker_lease_stop(worker *w)
{
	if (!w->lease_on)
		return;
	pthread_mutex_lock(&w->lease_lock);
	w->lease_quit = 1;
	pthread_cond_signal(&w->lease_cond);
	pthread_mutex_unlock(&w->lease_lock);
	pthread_join(w->leaser, NULL);
	pthread_cond_destroy(&w->lease_cond);
	pthread_mutex_destroy(&w->lease_lock);
	w->lease_on = 0;
}
