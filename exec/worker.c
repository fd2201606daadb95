/*
 * worker.c - one worker's life: its descriptors (the protocol on private
 * copies of stdin and stdout), opening its session (worker-session.c),
 * the interpreter, the output forwarder (worker-output.c) and the reader
 * thread (worker-reader.c); then the main loop, which reads requests
 * itself while idle (worker-reader.c), runs them with the GIL, and
 * interval checkpoints when idle; then the clean shutdown path.  Also
 * what the other parts share: worker_send, the one write path to the
 * client; worker_set_running, the deadline the reader watches; the guard
 * against children of shipped code; and the ERROR that says why a worker
 * cannot start.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "pyexec.h"

worker *the_worker;

/* How long the exit waits for non-daemon threads of shipped code (after
 * the final checkpoint of DETACH; a thread that ends in time gets its
 * work into the exit's checkpoint).  Well below the client's close
 * timeout (60 s), which covers this and the checkpoints. */
#define WORKER_THREAD_GRACE_S 2.0

static int worker_send_fatal(worker *w, const char *cause);

/* Monotonic clock in ms. */
uint64_t
worker_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
worker_log(worker *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdprintf(w != NULL && w->log_fd >= 0 ? w->log_fd : 2, fmt, ap);
	va_end(ap);
}

/* Send to the connection of the frame being served; the final reply of
 * a call goes to its joiners too (worker-calls.c). */
int
worker_send(worker *w, const wire_buf *b)
{
	if (w->forked)   /* set in every child (worker_atfork_child): no
	                    getpid() on this path, which every frame takes */
		_exit(0); /* shipped code's child got back here: never send */
	worker_fds_settle(w);  /* before anything is written */
	if (w->call != NULL && worker_calls_reply(w, b))
		return 0;
	return worker_send_to(w, w->cur_conn != NULL ? w->cur_conn :
	    w->stdio_conn, b);
}

/* Is this process a child that shipped code forked?  (Threads do not
 * survive a fork, so only the thread that forked can get here.)  The
 * atfork flag says so for every fork() (os.fork, multiprocessing,
 * subprocess); the pid is compared only every 256th time, a backstop for
 * a child made without fork()'s handlers (a raw clone), so that the hot
 * paths that ask (every request, every output write) make no getpid(). */
int
worker_in_child(void)
{
	static _Thread_local unsigned n;
	worker *w = the_worker;

	if (w == NULL || w->pid == 0)
		return 0;
	if (w->forked)
		return 1;
	if ((n++ & 255) == 0 && getpid() != w->pid)
		w->forked = 1;  /* from now on, without asking again */
	return w->forked;
}

/* worker_atfork_child: point a connection's descriptors at /dev/null. */
static void
worker_atfork_cut_conn(const worker_conn *c, int nul)
{
	if (c->fd > 2 && c->fd != nul)
		(void)dup3(nul, c->fd, O_CLOEXEC);
	if (c->out_fd > 2 && c->out_fd != nul)
		(void)dup3(nul, c->out_fd, O_CLOEXEC);
	if (c->sock_fd > 2 && c->sock_fd != nul)
		(void)dup3(nul, c->sock_fd, O_CLOEXEC);
}

/* pthread_atfork child handler: the child of a fork in shipped code must
 * never read or write the protocol, nor wake the parent's threads, nor
 * hold the session's lock after the parent is gone.  Point
 * every descriptor of ours at /dev/null rather than closing it, so that
 * the numbers are not reused by the child for files our stale copies of
 * them would then write to.  (The store: see pystore.c, which refuses in
 * a child; LMDB must not be used after a fork at all.)  Only
 * async-signal-safe calls here. */
static void
worker_atfork_child(void)
{
	worker *w = the_worker;
	int fds[10], i, nul;
	worker_conn *c;

	if (w == NULL || w->pid == 0)
		return;
	w->forked = 1;
	fds[0] = w->in_fd;
	fds[1] = w->out_fd;
	fds[2] = w->wake_fd;
	fds[3] = w->wake_fd_r;
	fds[4] = w->rwake_fd;
	fds[5] = w->fwd_quit_fd;
	fds[6] = w->pipe_r[1];
	fds[7] = w->pipe_r[2];
	/* the session's lock: the child shares its open file description,
	 * so the lock would outlive this process for as long as the child
	 * runs; replacing the child's copy drops nothing here */
	fds[8] = w->lock_fd;
	fds[9] = w->busy_fd;
	if ((nul = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
		return;
	for (i = 0; i < 10; i++)
		if (fds[i] > 2 && fds[i] != nul)
			(void)dup3(nul, fds[i], O_CLOEXEC);
	/* server mode: the client sockets and the control channel (no lock
	 * here: only the forking thread exists in the child) */
	for (c = w->conns, i = 0; c != NULL && i < 4096; c = c->next, i++)
		worker_atfork_cut_conn(c, nul);
	/* and DETACH's, out of the table while its OK goes */
	if (w->cur_conn != NULL && w->cur_conn->unlisted)
		worker_atfork_cut_conn(w->cur_conn, nul);
	if (w->ctl_fd > 2 && w->ctl_fd != nul)
		(void)dup3(nul, w->ctl_fd, O_CLOEXEC);
	if (w->ctl_listen_fd > 2 && w->ctl_listen_fd != nul)
		(void)dup3(nul, w->ctl_listen_fd, O_CLOEXEC);
	close(nul);
}

/* Mark code as running or finished.  The reader is not woken: it
 * looks at the running code when it takes the connections over (a call
 * longer than WORKER_TAKEOVER_MS), or, when it has them already, at a
 * deadline. */
void
worker_set_running(worker *w, uint64_t id, uint64_t timeout_ms)
{
	if (id == 0)
		worker_fds_settle(w);  /* code ended: before its output and
		                          reply are read and written */
	pthread_mutex_lock(&w->lock);
	w->running_id = id;
	w->running_conn = id != 0 ? w->cur_conn : NULL;
	w->deadline_ms = id != 0 && timeout_ms != 0 ?
	    worker_mono_ms() + timeout_ms : 0;
	w->stop_sent_ms = 0;
	w->stop_first_ms = 0;
	w->stop_kind = WORKER_STOP_NONE;
	if (id == 0 && w->nconns == 0)
		w->idle_since_ms = worker_mono_ms();
	pthread_mutex_unlock(&w->lock);
	if (id != 0 && timeout_ms != 0)
		worker_reader_deadline(w);
}

/* Block (GIL released) until a frame, a signal, or timeout_ms; the main
 * thread reads the connections itself meanwhile (worker-reader.c). */
static void
worker_wait(worker *w, int timeout_ms)
{
	Py_BEGIN_ALLOW_THREADS
	worker_reader_idle_wait(w, timeout_ms);
	Py_END_ALLOW_THREADS
	if (PyErr_CheckSignals() < 0)
		PyErr_Clear(); /* our handler raises only while code runs */
}

/* Server mode: has the worker been idle (no client, nothing running or
 * queued, no thread of shipped code alive) for --idle-exit?  Then it may exit, unless it holds volatile
 * entries, or entries a full store could not take yet (either would be
 * lost).  *wait_ms: when to look again.  GIL held. */
static int stay_told;   /* worker_idle_due said why it stays */

static int
worker_idle_due(worker *w, uint64_t *due_ms)
{
	uint64_t since, limit = (uint64_t)(w->opt.idle_exit * 1000), now;
	PyObject *ws, *vol;
	Py_ssize_t nvol = 0;
	static const char *const keep[] = {"volatile", "unwritten"};
	size_t i;
	int threads;

	*due_ms = 0;
	if (!w->opt.server)
		return 0;
	pthread_mutex_lock(&w->lock);
	since = w->nconns == 0 && w->qhead == NULL && w->running_id == 0 ?
	    w->idle_since_ms : 0;
	threads = w->threads;
	pthread_mutex_unlock(&w->lock);
	if (since == 0 || threads > 0)
		stay_told = 0;
	if (since == 0 || threads == 0)
		worker_threads_busy(w);
	if (since == 0)
		return 0;
	if (threads > 0) {
		/* threads of shipped code are code running */
		worker_threads_stay(w, threads, since, limit, due_ms);
		return 0;
	}
	/* the lease ran out with no client and nothing running: end the
	 * session, once the supervisor routes no more attaches here */
	if (worker_end_lease_due(w, since, due_ms)) {
		if (worker_control_idle(w)) {
			/* failing, it exits idle as usual: the sweeper's
			 * next run ends the session */
			(void)worker_end(w, STORE_END_EXPIRED, NULL, NULL);
			return 1;
		}
		*due_ms = worker_mono_ms() + 1000;
		return 0;
	}
	if (limit == 0)
		return 0;
	now = worker_mono_ms();
	if (now < since + limit) {
		if (*due_ms == 0 || since + limit < *due_ms)
			*due_ms = since + limit;
		return 0;
	}
	/* never while an entry lives only in this process */
	if ((ws = PyObject_GetAttrString(pymodule_backend, "WS")) != NULL) {
		for (i = 0; i < sizeof keep / sizeof keep[0] && nvol == 0;
		    i++) {
			if ((vol = PyObject_GetAttrString(ws, keep[i])) ==
			    NULL)
				break;
			if (vol != Py_None)
				nvol = PyObject_Length(vol);
			Py_DECREF(vol);
		}
	}
	Py_XDECREF(ws);
	PyErr_Clear();
	if (nvol != 0) {
		if (!stay_told)
			worker_log(w, "pyshelfd: idle, but not exiting: %zd "
			    "entries live only in this worker (volatile, or "
			    "not written: the store is full)\n", nvol);
		stay_told = 1;
		if (*due_ms == 0 || now + limit < *due_ms)
			*due_ms = now + limit;  /* look again later */
		return 0;
	}
	if (worker_control_idle(w))
		return 1;
	*due_ms = now + 1000;  /* the supervisor's answer wakes us first */
	return 0;
}

/* The main loop: requests, then interval checkpoints when idle. */
static void
worker_loop(worker *w)
{
	uint64_t interval = (uint64_t)(w->opt.checkpoint_interval * 1000);
	uint64_t next_cp = worker_mono_ms() + interval, idle_due;
	worker_frame *f;
	int eof;

	for (;;) {
		if (worker_in_child())
			_exit(0); /* a fork in shipped code returned here */
		if (w->ended_here)
			break;    /* END_SESSION or the lease (worker-end.c) */
		if (worker_control_hibernating(w)) {
			w->idle_exited = 1;  /* flag 'n' wants the session */
			break;
		}
		if (worker_control_stopping(w)) {
			/* CTL_STOP: serve no more; checkpoint and exit */
			worker_control_stop_queue(w);
			break;
		}
		if (w->new_lease) {
			/* an ATTACH's LEASE_MS (the reader answered it) */
			pthread_mutex_lock(&w->lock);
			w->sess.lease_ms = w->new_lease_ms;
			w->new_lease = 0;
			pthread_mutex_unlock(&w->lock);
			w->sess_dirty = 1;
			worker_lease_kick(w, w->sess.lease_ms);
		}
		if ((f = worker_reader_pop(w, &eof)) != NULL) {
			w->cur_conn = f->conn;
			pthread_mutex_lock(&w->call_lock);
			w->out_conn = f->conn;
			w->out_id = f->len >= WIRE_HEADER_SIZE ?
			    wire_be64_get(f->data + 8) : 0;
			pthread_mutex_unlock(&w->call_lock);
			dispatch_frame(w, f->data, f->len);
			if (f->kind == WORKER_FRAME_WAIT)
				dispatch_long_answer(w, f->conn);
			pthread_mutex_lock(&w->call_lock);
			w->out_conn = NULL;
			w->out_id = 0;
			pthread_mutex_unlock(&w->call_lock);
			w->cur_conn = NULL;
			worker_reader_frame_free(w, f);
			if (w->detached && (!w->opt.server || w->closed))
				break;
			w->detached = 0;
		} else if ((eof && !w->opt.server) || w->terminate)
			break;
		dispatch_checkpoint_owed(w);  /* a client left (server mode) */
		if (interval > 0 && !w->closed && worker_mono_ms() >= next_cp) {
			dispatch_checkpoint(w, 1);
			if (w->opt.sync == STORE_SYNC_INTERVAL)
				store_sync(w->st);
			next_cp = worker_mono_ms() + interval;
		}
		if (f == NULL) {
			uint64_t now, due;

			if (worker_idle_due(w, &idle_due)) {
				w->idle_exited = 1;
				break;
			}
			/* idle: unlink the blob files the checkpoints dropped
			 * (tens of ms for a large one, kept off the replies),
			 * free what clients that left sent half of */
			store_reap(w->st);
			dispatch_long_sweep(w);
			now = worker_mono_ms();
			due = interval == 0 ? 0 : next_cp;
			if (idle_due != 0 && (due == 0 || idle_due < due))
				due = idle_due;
			worker_wait(w, due == 0 ? -1 :
			    (int)(due > now ? due - now : 0));
		}
	}
}

/* Set up fds: the protocol keeps private copies of stdin and stdout; fd
 * 0 then reads /dev/null (sys.stdin, input() and the children of shipped
 * code see EOF, never protocol bytes), fd 1 points at stderr until the
 * output pipes replace fds 1 and 2, so that stray C-level writes cannot
 * corrupt frames. */
static int
worker_fds(worker *w, char **cause)
{
	int p[2], nul;

	w->log_fd = -1;
	w->pipe_r[1] = w->pipe_r[2] = -1;
	w->fwd_quit_fd = -1;
	w->in_fd = w->out_fd = -1;
	w->busy_fd = -1;
	if (w->opt.server) {
		/* the protocol is on the sockets the supervisor hands over;
		 * stdin and stdout are nobody's */
		if ((w->log_fd = fcntl(2, F_DUPFD_CLOEXEC, 3)) < 0 ||
		    dup2(2, 1) < 0) {
			asprintf(cause, "setting up stdio: %s", strerror(errno));
			return -1;
		}
	} else if ((w->in_fd = fcntl(0, F_DUPFD_CLOEXEC, 3)) < 0 ||
	    (w->out_fd = fcntl(1, F_DUPFD_CLOEXEC, 3)) < 0 ||
	    (w->log_fd = fcntl(2, F_DUPFD_CLOEXEC, 3)) < 0 || dup2(2, 1) < 0) {
		asprintf(cause, "setting up stdio: %s", strerror(errno));
		return -1;
	}
	if ((nul = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0 ||
	    dup2(nul, 0) < 0) {
		asprintf(cause, "/dev/null: %s", strerror(errno));
		return -1;
	}
	close(nul);
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
		asprintf(cause, "pipe: %s", strerror(errno));
		return -1;
	}
	w->wake_fd_r = p[0];
	w->wake_fd = p[1];
	if ((w->rwake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		asprintf(cause, "eventfd: %s", strerror(errno));
		return -1;
	}
	if ((w->busy_fd = timerfd_create(CLOCK_MONOTONIC,
	    TFD_CLOEXEC | TFD_NONBLOCK)) < 0) {
		asprintf(cause, "timerfd_create: %s", strerror(errno));
		return -1;
	}
	if (!w->opt.server &&
	    (w->stdio_conn = worker_conn_add(w, w->in_fd, w->out_fd, 0)) ==
	    NULL) {
		asprintf(cause, "out of memory");
		return -1;
	}
	return 0;
}

/* Tell the client why this worker cannot serve it (an ERROR with id 0,
 * before any HELLO is answered), so that it need not read our stderr.
 * 1 when a stdio client was sent it (the message is its to show), else
 * 0 (server mode: the first CTL_CONN's client, and our stderr is the
 * server's log, which keeps it). */
static int
worker_send_fatal(worker *w, const char *cause)
{
	int code = w->fatal_code != 0 ? w->fatal_code : WIRE_ERR_STORE;
	int told = 0;
	wire_buf b;

	if (w->out_fd <= 0 && !w->opt.server)
		return 0;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_ERROR, 0);
	wire_put_u64(&b, WIRE_TAG_ERRCODE, (uint64_t)code);
	wire_put_str(&b, WIRE_TAG_MESSAGE, cause != NULL ? cause :
	    "pyshelfd failed to start");
	if (code == WIRE_ERR_SESSION_BUSY && w->fatal_pid > 0)
		wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)w->fatal_pid);
	if (code == WIRE_ERR_SESSION_DEAD && w->fatal_has_tomb) {
		wire_put_u64(&b, WIRE_TAG_ENDED_MS, w->fatal_tomb.ended_ms);
		wire_put_str(&b, WIRE_TAG_REASON,
		    tomb_why_name(w->fatal_tomb.why));
	}
	if (wire_end(&b) == WIRE_OK) {
		if (w->opt.server)  /* to the client of the first CTL_CONN */
			worker_control_refuse(w, &b);
		else
			told = wire_write_all(w->out_fd, b.data, b.len) == 0;
	}
	wire_buf_free(&b);
	return told;
}

/* Wait up to WORKER_THREAD_GRACE_S for shipped code's non-daemon threads,
 * then make the interpreter's exit not wait for those still running.  The
 * workspace is checkpointed before any wait: DETACH did it; after end of
 * input or a signal it is done here.  A closed session waits for none. */
static void
worker_threads_end(worker *w)
{
	PyObject *r = PyObject_CallMethod(pymodule_backend, "nondaemon_threads",
	    NULL);
	long n = r != NULL ? PyLong_AsLong(r) : -1;

	Py_XDECREF(r);
	if (n < 0)
		goto error;
	if (n == 0)
		return;
	if (!w->detached && !w->closed)
		(void)dispatch_checkpoint(w, 2);
	r = PyObject_CallMethod(pymodule_backend, "end_threads", "d",
	    w->closed ? 0.0 : WORKER_THREAD_GRACE_S);
	Py_XDECREF(r);
	if (r != NULL)
		return;
error:
	fprintf(stderr, "pyshelfd: ending the threads of shipped code:\n");
	PyErr_Print();
}

/* Run a stdio worker until the client detaches or input ends. */
int
worker_run(worker *w)
{
	char *cause = NULL;
	int rc = 1;

	the_worker = w;
	w->lock_fd = -1;
	w->ctl_fd = w->ctl_listen_fd = -1;
	w->pid = getpid();
	w->in_owner = WORKER_IN_MAIN;
	w->main_busy = 1;  /* until its loop first waits for a request */
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->ctl_lock, NULL);
	pthread_mutex_init(&w->call_lock, NULL);
	pthread_mutex_init(&w->drain_lock, NULL);
	pthread_atfork(NULL, NULL, worker_atfork_child);
	signal(SIGPIPE, SIG_IGN);
	if (worker_fds(w, &cause) != 0)
		goto fail;
	if (w->opt.server && (worker_restart_adopt(w, &cause) != 0 ||
	    worker_control_start(w, &cause) != 0))
		goto fail;
	if (worker_output_start(w, &cause) != 0 ||
	    worker_session_open(w, &cause) != 0)
		goto fail;
	if (interp_init(&cause) != 0)
		goto fail_store;
	{
		/* what the _pyshelfd module works on (it keeps a copy) */
		struct pyctx pc = {
			.st = w->st, .sess = &w->sess,
			.sess_dirty = &w->sess_dirty, .forked = &w->forked,
			.wake_fd = w->wake_fd, .read_only = w->opt.mode == 'r',
			.owner = w, .output = worker_output,
			.in_child = worker_in_child,
			.on_signal = dispatch_signal,
			.threads = worker_threads_change,
			.fd_owned = worker_fds_owned,
			.fds_list = worker_fds_list,
			.fds_suspect = worker_fds_suspect
		};
		if (pymodule_start(&pc, &cause) != 0)
			goto fail_py;
	}
	w->main_thread = pthread_self();
	if (worker_calls_start(w, &cause) != 0)
		goto fail_py;
	if (w->opt.server) {
		pthread_mutex_lock(&w->lock);
		if (w->nconns == 0)
			w->idle_since_ms = worker_mono_ms();
		pthread_mutex_unlock(&w->lock);
		worker_restart_note(w);
	}
	if (w->opt.adopt != NULL)
		worker_reader_carried(w);
	if (worker_reader_start(w, &cause) != 0)
		goto fail_py;
	if (worker_lease_start(w, &cause) != 0) {
		/* not fatal: the lease then counts from the last commit */
		worker_log(w, "pyshelfd: %s\n", cause);
		free(cause);
		cause = NULL;
	}
	worker_control_ready(w);
	worker_control_state(w);
	/* what is open now is ours: shipped code must not close it, and
	 * the threads that poll it verify it (worker-fds.c) */
	if (worker_fds_snapshot() != 0)
		worker_log(w, "pyshelfd: listing /proc/self/fd: %s; the "
		    "worker's descriptors are not guarded\n", strerror(errno));
	store_set_write_guard(w->st, worker_fds_store_guard, w);
	worker_loop(w);
	worker_fds_stop();
	/* DETACH checkpointed already; now give shipped code's non-daemon
	 * threads a bounded time to end, and leave the rest behind (their
	 * changes after the last checkpoint are lost, as the detach notice
	 * said): an endless thread must not hang the exit until the client
	 * kills us */
	worker_threads_end(w);
	rc = w->closed || dispatch_checkpoint(w, 2) == 0 ? 0 : 1;
	worker_threads_log_exit(w);
	worker_lease_stop(w);
	worker_reader_stop(w);
	worker_calls_stop(w);
	dispatch_release_session(w);
	store_sync(w->st);
	worker_output_stop(w);
	worker_control_stop(w);
	if (interp_fini() != 0)
		rc = 1;
	store_close(w->st);
	/* last: the record says "not served" before the lock says so */
	session_unlock(w->lock_fd);
	w->lock_fd = -1;
	return rc;
fail_py:
	worker_calls_stop(w);
	interp_fini();
fail_store:
	store_close(w->st);
	session_unlock(w->lock_fd);
	w->lock_fd = -1;
fail:
	worker_output_stop(w);
	/* a stdio client raises it: no second copy on its user's terminal */
	if (!worker_send_fatal(w, cause))
		fprintf(stderr, "pyshelfd: %s\n", cause != NULL ? cause :
		    "failed");
	free(cause);
	return 1;
}
