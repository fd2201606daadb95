/*
 * worker-sweep.c - the sweep a stdio worker runs before it claims its
 * session in a store it may write (sweep.c does the work): it ends the
 * sessions whose lease ran out, unless a process holds their lock,
 * purges what ended sessions left, and drops tombstones older than
 * STORE_TOMB_KEEP_MS, with the sweeper's defaults (pyshelfd --sweep).
 * With no server, leases count from the last time a session was seen.
 * A failure only cuts the sweep short.
 */
#include "config.h"

#include <string.h>

#include "exec.h"

/* Sweep at start. */
void
worker_sweep(worker *w)
{
	sweep_options o;
	sweep_stats stats;

	memset(&o, 0, sizeof o);
	o.batch = 1000;
	o.batch_ms = 5;
	o.pause_us = 1000;
	(void)sweep_run(w->st, &o, &stats);
}
