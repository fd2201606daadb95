/*
 * worker-threads.c - the threads of shipped code alive in this worker
 * (threading.Thread, daemon or not), counted by the backend's hook on
 * threading.Thread's bootstrap (backend_process.py, _pyshelfd.threads:
 * worker_threads_change), so that the count is exact at any time and
 * costs nothing per request.  stats() and the server's session list
 * show it.
 */
#include "config.h"

#include <stdio.h>
#include <unistd.h>

#include "exec.h"

/*
 * The pyctx callback behind _pyshelfd.threads(delta): a thread of shipped
 * code began (1) or ended (-1); 0 only reads.  Any thread (a thread of
 * shipped code, GIL held).  When the last one ends with no client and
 * nothing running, the worker is idle from now on (its idle exit and its
 * lease count from here) and the main loop is woken to see it.  The
 * number alive after the change.
 */
int
worker_threads_change(worker *w, int delta)
{
	int n;

	if (worker_in_child())
		return 0;   /* the parent's count: not this process's */
	pthread_mutex_lock(&w->lock);
	w->threads += delta;
	if (w->threads < 0)
		w->threads = 0;   /* a thread begun before the count began */
	n = w->threads;
	pthread_mutex_unlock(&w->lock);
	return n;
}

/* How many threads of shipped code are alive.  Any thread. */
int
worker_threads_alive(worker *w)
{
	int n;

	pthread_mutex_lock(&w->lock);
	n = w->threads;
	pthread_mutex_unlock(&w->lock);
	return n;
}
