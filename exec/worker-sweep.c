/*
 * worker-sweep.c - the sweep a worker runs before it claims its session
 * in a store it may write: it ends the sessions whose lease ran out,
 * unless a process holds their lock (leaving tombstones that say so),
 * purges their records, and drops tombstones older than
 * STORE_TOMB_KEEP_MS.  A failure only cuts the sweep short.
 */
#include "config.h"

#include <string.h>

#include "exec.h"

/* Collects expired session ids (up to a bound per sweep). */
struct sweep_arg {
	uint8_t ids[64][STORE_ID_SIZE];
	int n;
};

static int
worker_sweep_collect(const uint8_t *id, uint64_t when, void *arg)
{
	struct sweep_arg *sa = arg;

	(void)when;
	memcpy(sa->ids[sa->n++], id, STORE_ID_SIZE);
	return sa->n == 64 ? 1 : 0;
}

static int
worker_sweep_list(store_txn *t, void *arg)
{
	int rc = session_expired(t, store_now_ms(), worker_sweep_collect, arg);

	return rc == 1 ? 0 : rc;
}

/* Argument of one sweep kill. */
struct sweep_kill {
	worker *w;
	const uint8_t *id;
};

/* End an expired session unless a process holds its lock; a dead one
 * (ended, not purged yet) goes on to the purge. */
static int
worker_sweep_kill(store_txn *t, void *arg)
{
	struct sweep_kill *sk = arg;
	store_session ss;
	int rc;

	if ((rc = session_get_by_id(t, sk->id, &ss)) != 0)
		return rc == STORE_E_NOTFOUND ? 0 : rc;
	if (ss.state != STORE_STATE_LIVE)
		return 0;
	/* in this write transaction: an opener that locks it later finds
	 * it ended when it looks again */
	if (session_locked(sk->w->st, sk->id, NULL) != 0)
		return 1; /* in use (or cannot tell): leave it */
	return session_end(t, sk->id, STORE_END_EXPIRED, store_now_ms(), NULL);
}

/* Drop tombstones past their time. */
static int
worker_sweep_tombs(store_txn *t, void *arg)
{
	uint64_t now = store_now_ms();

	(void)arg;
	return tomb_sweep(t, now > STORE_TOMB_KEEP_MS ?
	    now - STORE_TOMB_KEEP_MS : 0, NULL);
}

/* Sweep at start: end expired sessions (leaving tombstones), purge the
 * ended, drop old tombstones. */
void
worker_sweep(worker *w)
{
	struct sweep_arg sa;
	struct sweep_kill sk;
	int i;

	memset(&sa, 0, sizeof sa);
	if (store_read(w->st, worker_sweep_list, &sa) != 0)
		return;
	sk.w = w;
	for (i = 0; i < sa.n; i++) {
		sk.id = sa.ids[i];
		if (store_write(w->st, worker_sweep_kill, &sk) != 0)
			continue;
		if (session_purge(w->st, sa.ids[i], 1000, NULL) == 0)
			session_lock_remove(w->st, sa.ids[i]);
	}
	store_write(w->st, worker_sweep_tombs, NULL);
}
