/*
 * worker-threads.c - threads of shipped code are code running.  A
 * thread that shipped code started and that is alive keeps the worker as
 * a running call does: no idle exit, no hibernation for flag 'n' or 'r'
 * (SessionBusy says why), and the session's lease does not run out (the
 * lease keeper renews it; the idle clock, and so the lease clock, starts
 * when the last such thread ends with no client attached).  There is one
 * count, w->threads, and everything reads it: the above, stats() and
 * pyshelf.sessions() ("threads"), the interval checkpoints (the backend's
 * _shipped_threads) and the log at exit.  The backend keeps it through
 * its wrapper of _thread.start_new_thread (backend_process.py,
 * _count_threads; _pyshelfd.threads: worker_threads_change), which every
 * thread Python code starts goes through: threading.Thread, daemon or
 * not, and _thread.start_new_thread, from Python or from a C extension.
 * Threads that C code creates itself (pthread_create,
 * PyThread_start_new_thread) are not counted, even while they call into
 * Python, nor are the worker's own (reader, lease, control, output),
 * which are C threads.  The count is exact at any time, costs nothing
 * per request, and the end of the last thread wakes the main loop at
 * once.  When the worker exits anyway (the server stops, the session is
 * ended), the threads still alive are stopped after the final
 * checkpoint, and the log says how many.
 */
#include "config.h"

#include <stdio.h>
#include <unistd.h>

#include "exec.h"

/* worker_threads_stay said so in the log (one bit per reason), since
 * the worker last went idle with threads alive (main thread only). */
#define THREADS_TOLD_IDLE  1
#define THREADS_TOLD_LEASE 2

/*
 * The pyctx callback behind _pyshelfd.threads(delta): a thread of shipped
 * code began (1: before _thread.start_new_thread starts it) or ended
 * (-1: its function is over); 0 only reads.  Any thread (a thread of
 * shipped code, GIL held).  When the last one ends with no client and
 * nothing running, the worker is idle from now on (its idle exit and its
 * lease count from here) and the main loop is woken to see it.  The
 * number alive after the change.
 */
int
worker_threads_change(worker *w, int delta)
{
	int n, wake = 0;

	if (worker_in_child())
		return 0;   /* the parent's count: not this process's */
	pthread_mutex_lock(&w->lock);
	w->threads += delta;
	if (w->threads < 0)
		w->threads = 0;   /* a thread begun before the count began */
	n = w->threads;
	if (delta < 0 && n == 0) {
		wake = 1;
		if (w->nconns == 0 && w->running_id == 0)
			w->idle_since_ms = worker_mono_ms();
	}
	pthread_mutex_unlock(&w->lock);
	if (wake && write(w->wake_fd, "t", 1) < 0) {
		/* a full pipe wakes the main thread anyway */
	}
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

/*
 * Main thread, idle tick: no client attached, nothing running or queued
 * since idle_since (monotonic ms), but n threads of shipped code alive,
 * so neither the idle exit (limit_ms, 0: never) nor the end of the lease
 * happens.  Say so in the log once when either would have happened.
 * *due_ms: when to look again (0: not before the last thread ends,
 * which wakes the main loop).
 */
void
worker_threads_stay(worker *w, int n, uint64_t idle_since,
    uint64_t limit_ms, uint64_t *due_ms)
{
	uint64_t now = worker_mono_ms(), lease_due;

	*due_ms = 0;
	if (limit_ms != 0 && !(w->threads_told & THREADS_TOLD_IDLE)) {
		if (now >= idle_since + limit_ms) {
			worker_log(w, "pyshelfd: session '%s' is idle for "
			    "--idle-exit, but not exiting: %d thread%s of "
			    "shipped code %s running (it exits once none "
			    "is)\n", w->sess.name, n, n == 1 ? "" : "s",
			    n == 1 ? "is" : "are");
			w->threads_told |= THREADS_TOLD_IDLE;
		} else
			*due_ms = idle_since + limit_ms;
	}
	if (!(w->threads_told & THREADS_TOLD_LEASE)) {
		if (worker_end_lease_due(w, idle_since, &lease_due)) {
			worker_log(w, "pyshelfd: session '%s': its lease ran "
			    "out with no client attached, but %d thread%s of "
			    "shipped code %s running: the session lives on, "
			    "and its lease counts from when the last one "
			    "ends\n", w->sess.name, n, n == 1 ? "" : "s",
			    n == 1 ? "is" : "are");
			w->threads_told |= THREADS_TOLD_LEASE;
		} else if (lease_due != 0 && (*due_ms == 0 ||
		    lease_due < *due_ms))
			*due_ms = lease_due;
	}
}

/* Main thread: the worker is not idle-with-threads any more (a client,
 * a call, or no thread alive): the next such stay is told again. */
void
worker_threads_busy(worker *w)
{
	w->threads_told = 0;
}

/*
 * At exit, after the final checkpoint (or with none: the session ended):
 * server mode, the threads of shipped code still alive are stopped with
 * the interpreter; say so in the log, naming the session and why.
 */
void
worker_threads_log_exit(worker *w)
{
	int n = worker_threads_alive(w);

	if (!w->opt.server || n == 0)
		return;
	worker_log(w, "pyshelfd: session '%s': %d thread%s of shipped code "
	    "still running %s stopped now, %s\n", w->sess.name, n,
	    n == 1 ? "" : "s", n == 1 ? "is" : "are",
	    w->ended_here || w->closed ? "with the session (it ended)" :
	    worker_control_stopping(w) ? "after the final checkpoint (the "
	    "server is stopping)" : "after the final checkpoint");
}
