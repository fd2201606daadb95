/*
 * worker.c - one worker: the store and session it serves, the reader
 * thread that takes frames off the wire (answering PING and INTERRUPT at
 * once, even while code runs), the main loop that runs requests with the
 * GIL, interval checkpoints, timeouts, and the clean shutdown path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif

#include "exec.h"
#include "pyexec.h"

worker *the_worker;

/* How long the exit waits for non-daemon threads of shipped code (after
 * the final checkpoint of DETACH; a thread that ends in time gets its
 * work into the exit's checkpoint).  Well below the client's close
 * timeout (60 s), which covers this and the checkpoints. */
#define WORKER_THREAD_GRACE_S 2.0

static int worker_open_session(worker *w, char **cause);
static void *worker_reader(void *arg);
static void worker_sweep(worker *w);
static void worker_send_fatal(worker *w, const char *cause);

/* Monotonic clock in ms. */
uint64_t
worker_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Write one encoded buffer to the client under the output lock. */
int
worker_send(worker *w, const wire_buf *b)
{
	int rc;

	if (w->forked)   /* set in every child (worker_atfork_child): no
	                    getpid() on this path, which every frame takes */
		_exit(0); /* shipped code's child got back here: never send */
	pthread_mutex_lock(&w->out_lock);
	/* after the frame that says the connection closes, nothing more */
	rc = w->out_closed ? WIRE_E_IO :
	    wire_write_all(w->out_fd, b->data, b->len);
	pthread_mutex_unlock(&w->out_lock);
	if (rc != WIRE_OK) {
		pthread_mutex_lock(&w->lock);
		w->eof = 1;
		pthread_mutex_unlock(&w->lock);
		return -1;
	}
	return 0;
}

/* Is this process a child that shipped code forked?  (Threads do not
 * survive a fork, so only the thread that forked can get here.) */
int
worker_in_child(void)
{
	worker *w = the_worker;

	return w != NULL && w->pid != 0 && (w->forked || getpid() != w->pid);
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
	int fds[9], i, nul;

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
	if ((nul = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
		return;
	for (i = 0; i < 9; i++)
		if (fds[i] > 2 && fds[i] != nul)
			(void)dup3(nul, fds[i], O_CLOEXEC);
	close(nul);
}

/* Hand bytes of stream 1/2 on: an OUTPUT frame of the current request, or
 * pyshelfd's own stderr outside a request.  Any thread but a child's. */
static int
worker_emit(worker *w, int stream, const char *p, size_t n)
{
	uint64_t id = w->current_id;
	wire_buf b;
	int rc;

	if (id == 0) {
		rc = wire_write_all(w->log_fd >= 0 ? w->log_fd : 2, p, n);
		return rc == WIRE_OK ? 0 : -1;
	}
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_OUTPUT, id);
	wire_put_u64(&b, WIRE_TAG_STREAM, (uint64_t)stream);
	wire_put_bytes(&b, WIRE_TAG_DATA, p, n);
	rc = wire_end(&b) == WIRE_OK ? worker_send(w, &b) : -1;
	wire_buf_free(&b);
	return rc;
}

/* Send what waits in the pipe of stream s (drain_lock held), at most
 * limit bytes (a writer that never stops must not hold us forever). */
static void
worker_pump(worker *w, int s, size_t limit)
{
	char buf[65536];
	size_t total = 0;
	ssize_t got;

	while (w->pipe_r[s] >= 0 && total < limit) {
		got = read(w->pipe_r[s], buf, sizeof buf);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		(void)worker_emit(w, s, buf, (size_t)got);
		total += (size_t)got;
	}
}

void
worker_drain(worker *w)
{
	if (w->pipe_r[1] < 0 && w->pipe_r[2] < 0)
		return;
	pthread_mutex_lock(&w->drain_lock);
	worker_pump(w, 1, (size_t)16 << 20);
	worker_pump(w, 2, (size_t)16 << 20);
	pthread_mutex_unlock(&w->drain_lock);
}

/* Output of the current request (sys.stdout/sys.stderr, notices): into
 * the pipe of its stream, like what C code writes to fd 1 or 2, so that
 * one stream keeps the order of its writes whoever wrote them, and the
 * forwarder sends many small writes as one frame (one syscall per
 * write here, as before the pipes).  Outside a request, straight to
 * pyshelfd's stderr, as the forwarder would.  In a child of shipped code
 * the same: its fds 1 and 2 are the parent's pipes. */
int
worker_output(worker *w, int stream, const char *p, size_t n)
{
	int rc, fd;

	fd = stream == 1 ? 1 : 2;
	if (w->current_id == 0 && !worker_in_child())
		fd = w->log_fd >= 0 ? w->log_fd : 2;
	Py_BEGIN_ALLOW_THREADS
	rc = wire_write_all(fd, p, n);
	Py_END_ALLOW_THREADS
	return rc == WIRE_OK ? 0 : -1;
}

/* Forwarder thread: what C code, faulthandler, os.write(1, ...) and the
 * children of shipped code write to fds 1 and 2 reaches the client as
 * output of the running request. */
static void *
worker_forwarder(void *arg)
{
	worker *w = arg;
	struct pollfd pfd[3];
	int i;

	for (;;) {
		pfd[0] = (struct pollfd){w->fwd_quit_fd, POLLIN, 0};
		pfd[1] = (struct pollfd){w->pipe_r[1], POLLIN, 0};
		pfd[2] = (struct pollfd){w->pipe_r[2], POLLIN, 0};
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents != 0)
			break;
		for (i = 1; i <= 2; i++) {
			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			pthread_mutex_lock(&w->drain_lock);
			worker_pump(w, i, (size_t)1 << 20);
			pthread_mutex_unlock(&w->drain_lock);
		}
	}
	return NULL;
}

/* Make fds 1 and 2 pipes read by the forwarder.  fd 1 is never the
 * protocol (that has a private copy): a stray write to it cannot corrupt
 * frames, and what it gets is the request's stdout. */
static int
worker_output_start(worker *w, char **cause)
{
	int s, p[2];
	sigset_t set, old;

	w->pipe_r[1] = w->pipe_r[2] = -1;
	if ((w->fwd_quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		goto fail;
	for (s = 1; s <= 2; s++) {
		if (pipe2(p, O_CLOEXEC) != 0)
			goto fail;
		if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0 || dup2(p[1], s) < 0) {
			close(p[0]);
			close(p[1]);
			goto fail;
		}
		close(p[1]);
		w->pipe_r[s] = p[0];
	}
#ifdef __SANITIZE_ADDRESS__
	/* a sanitizer report comes as the process dies, when the forwarder
	 * may never read it: straight to our own stderr */
	__sanitizer_set_report_fd((void *)(intptr_t)w->log_fd);
#endif
	/* the forwarder must never take SIGINT/SIGTERM meant for Python */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	s = pthread_create(&w->forwarder, NULL, worker_forwarder, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (s != 0) {
		errno = s;
		goto fail;
	}
	w->forwarder_on = 1;
	return 0;
fail:
	asprintf(cause, "setting up the output pipes: %s", strerror(errno));
	dup2(w->log_fd, 1);
	dup2(w->log_fd, 2);
	return -1;
}

/* Stop forwarding: fds 1 and 2 go back to pyshelfd's stderr, what the
 * pipes still hold is sent, the forwarder leaves. */
static void
worker_output_stop(worker *w)
{
	uint64_t one = 1;
	int s;

	if (w->log_fd >= 0) {
		fflush(stdout);
		fflush(stderr);
		dup2(w->log_fd, 1);
		dup2(w->log_fd, 2);
	}
	if (w->forwarder_on) {
		if (write(w->fwd_quit_fd, &one, sizeof one) < 0) {
			/* counter full: the forwarder is awake anyway */
		}
		pthread_join(w->forwarder, NULL);
		w->forwarder_on = 0;
	}
	worker_drain(w);
	for (s = 1; s <= 2; s++) {
		if (w->pipe_r[s] >= 0)
			close(w->pipe_r[s]);
		w->pipe_r[s] = -1;
	}
}

/* Mark code as running or finished; wakes the reader so that it watches
 * the new deadline. */
void
worker_set_running(worker *w, uint64_t id, uint64_t timeout_ms)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->lock);
	w->running_id = id;
	w->deadline_ms = id != 0 && timeout_ms != 0 ?
	    worker_mono_ms() + timeout_ms : 0;
	w->stop_sent_ms = 0;
	w->stop_kind = WORKER_STOP_NONE;
	pthread_mutex_unlock(&w->lock);
	if (write(w->rwake_fd, &one, sizeof one) < 0) {
		/* the counter is full: the reader is awake anyway */
	}
}

/* Wake the main thread (queue or state changed). */
static void
worker_wake(worker *w)
{
	char c = 1;

	if (write(w->wake_fd, &c, 1) < 0 && errno != EAGAIN) {
		/* a full pipe already wakes the reader of it */
	}
}

/* Ask the running code to stop: SIGINT to the main thread, whose handler
 * (pystream.c) raises KeyboardInterrupt or TimeoutError. Lock held. */
static void
worker_stop_locked(worker *w, int reason)
{
	w->sigs_inflight = 1;
	w->stop_kind = reason;
	w->stop_sent_ms = worker_mono_ms();
	pthread_kill(w->main_thread, SIGINT);
}

/* Has the main thread answered HELLO?  Until then the reader answers
 * nothing itself: a PING goes through the queue, behind the HELLO, so
 * that nothing is sent before WELCOME. */
static int
worker_hello_done(worker *w)
{
	int done;

	pthread_mutex_lock(&w->lock);
	done = w->hello_done;
	pthread_mutex_unlock(&w->lock);
	return done;
}

/* Reader: answer PING, act on INTERRUPT, queue the rest. */
static int
worker_reader_frame(worker *w, const uint8_t *p, size_t n, wire_msg *m)
{
	worker_frame *f;
	wire_buf b;

	if ((m->type == WIRE_MSG_INTERRUPT || m->type == WIRE_MSG_PING) &&
	    !worker_hello_done(w))
		goto queue;
	if (m->type == WIRE_MSG_INTERRUPT) {
		pthread_mutex_lock(&w->lock);
		if (w->running_id != 0 && (m->id == 0 || m->id == w->running_id))
			worker_stop_locked(w, WORKER_STOP_INTERRUPT);
		pthread_mutex_unlock(&w->lock);
		return 0;
	}
	if (m->type == WIRE_MSG_PING) {
		wire_buf_init(&b);
		wire_begin(&b, WIRE_MSG_PONG, m->id);
		if (wire_end(&b) == WIRE_OK)
			worker_send(w, &b);
		wire_buf_free(&b);
		return 0;
	}
queue:
	if ((f = malloc(sizeof *f + n)) == NULL)
		return -1;
	f->next = NULL;
	f->len = n;
	memcpy(f->data, p, n);
	pthread_mutex_lock(&w->lock);
	if (w->qtail != NULL)
		w->qtail->next = f;
	else
		w->qhead = f;
	w->qtail = f;
	pthread_mutex_unlock(&w->lock);
	worker_wake(w);
	return 0;
}

/* How long the reader may block: until the running request's deadline, or
 * until a stop should be sent again (code that swallowed the first). */
static int
worker_reader_timeout(worker *w)
{
	uint64_t now = worker_mono_ms(), due = 0;
	int t = -1, kind = WORKER_STOP_NONE;

	pthread_mutex_lock(&w->lock);
	if (w->running_id != 0) {
		if (w->stop_sent_ms != 0) {
			due = w->stop_sent_ms + 1000;
			kind = w->stop_kind;
		} else if (w->deadline_ms != 0) {
			due = w->deadline_ms;
			kind = WORKER_STOP_TIMEOUT;
		}
		if (due != 0 && due <= now) {
			worker_stop_locked(w, kind);
			due = w->stop_sent_ms + 1000;
		}
		if (due != 0)
			t = (int)(due - now > 0 ? due - now : 1);
	}
	pthread_mutex_unlock(&w->lock);
	return t;
}

/* Reader thread body. */
static void *
worker_reader(void *arg)
{
	worker *w = arg;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, flen;
	wire_msg m;
	int rc;
	/* the frame size limit: PROTOCOL.md's 64 KiB until a HELLO came */
	size_t max = w->opt.max_frame < WIRE_PREAUTH_MAX_FRAME ?
	    w->opt.max_frame : WIRE_PREAUTH_MAX_FRAME;

	wire_msg_init(&m);
	for (;;) {
		/* frames already buffered */
		while ((rc = wire_peek(buf, len, max, &flen)) ==
		    WIRE_OK && len >= flen) {
			if (wire_parse(buf, flen, max, &m, &flen)
			    != WIRE_OK) {
				rc = WIRE_E_MALFORMED;
				break;
			}
			if (worker_reader_frame(w, buf, flen, &m) < 0) {
				rc = WIRE_E_NOMEM;
				break;
			}
			if (m.type == WIRE_MSG_HELLO)
				max = w->opt.max_frame;
			memmove(buf, buf + flen, len - flen);
			len -= flen;
		}
		if (rc < 0)
			break;
		if (rc == WIRE_OK && flen > cap) {
			uint8_t *nb = realloc(buf, flen);
			if (nb == NULL) {
				rc = WIRE_E_NOMEM;
				break;
			}
			buf = nb;
			cap = flen;
		} else if (cap - len < 4096) {
			size_t ncap = cap < 65536 ? 65536 : cap * 2;
			uint8_t *nb = realloc(buf, ncap);
			if (nb == NULL) {
				rc = WIRE_E_NOMEM;
				break;
			}
			buf = nb;
			cap = ncap;
		}
		{
			struct pollfd pfd[2] = {{w->in_fd, POLLIN, 0},
			    {w->rwake_fd, POLLIN, 0}};
			int t = worker_reader_timeout(w);
			ssize_t got;
			if (poll(pfd, 2, t) < 0 && errno != EINTR) {
				rc = WIRE_E_IO;
				break;
			}
			if (pfd[1].revents & POLLIN) {
				uint64_t v;
				int quit;
				if (read(w->rwake_fd, &v, sizeof v) < 0) {
					/* spurious: nothing to drain */
				}
				pthread_mutex_lock(&w->lock);
				quit = w->quit;
				pthread_mutex_unlock(&w->lock);
				if (quit) {
					rc = WIRE_E_EOF;
					break;
				}
			}
			if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			got = read(w->in_fd, buf + len, cap - len);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				rc = got == 0 ? WIRE_E_EOF : WIRE_E_IO;
				break;
			}
			len += (size_t)got;
		}
	}
	if (rc == WIRE_E_TOO_BIG || rc == WIRE_E_MALFORMED) {
		wire_buf b;
		wire_buf_init(&b);
		wire_begin(&b, WIRE_MSG_ERROR, 0);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, rc == WIRE_E_TOO_BIG ?
		    WIRE_ERR_TOO_BIG : WIRE_ERR_MALFORMED);
		wire_put_str(&b, WIRE_TAG_MESSAGE, rc == WIRE_E_TOO_BIG ?
		    "frame larger than the maximum frame size; closing" :
		    "malformed frame; closing the connection");
		if (wire_end(&b) == WIRE_OK)
			worker_send(w, &b);
		wire_buf_free(&b);
		pthread_mutex_lock(&w->out_lock);
		w->out_closed = 1;
		pthread_mutex_unlock(&w->out_lock);
		fprintf(stderr, "pyshelfd: %s from the client; closing\n",
		    wire_strerror(rc));
	}
	wire_msg_free(&m);
	free(buf);
	pthread_mutex_lock(&w->lock);
	w->eof = 1;
	/* a client that went away does not get to keep code running */
	if (w->running_id != 0)
		worker_stop_locked(w, WORKER_STOP_INTERRUPT);
	pthread_mutex_unlock(&w->lock);
	worker_wake(w);
	return NULL;
}

/* Pop the next queued frame, or NULL. */
static worker_frame *
worker_pop(worker *w, int *eof)
{
	worker_frame *f;

	pthread_mutex_lock(&w->lock);
	f = w->qhead;
	if (f != NULL) {
		w->qhead = f->next;
		if (w->qhead == NULL)
			w->qtail = NULL;
	}
	*eof = w->eof;
	pthread_mutex_unlock(&w->lock);
	return f;
}

/* Block (GIL released) until a frame, a signal, or timeout_ms. */
static void
worker_wait(worker *w, int timeout_ms)
{
	struct pollfd pfd = {w->wake_fd_r, POLLIN, 0};
	char drain[64];

	Py_BEGIN_ALLOW_THREADS
	if (poll(&pfd, 1, timeout_ms) > 0) {
		while (read(w->wake_fd_r, drain, sizeof drain) > 0)
			;
	}
	Py_END_ALLOW_THREADS
	if (PyErr_CheckSignals() < 0)
		PyErr_Clear(); /* our handler raises only while code runs */
}

/* The main loop: requests, then interval checkpoints when idle. */
static void
worker_loop(worker *w)
{
	uint64_t interval = (uint64_t)(w->opt.checkpoint_interval * 1000);
	uint64_t next_cp = worker_mono_ms() + interval;
	worker_frame *f;
	int eof;

	for (;;) {
		if (worker_in_child())
			_exit(0); /* a fork in shipped code returned here */
		if ((f = worker_pop(w, &eof)) != NULL) {
			dispatch_frame(w, f->data, f->len);
			free(f);
			if (w->detached)
				break;
		} else if (eof || w->terminate)
			break;
		if (interval > 0 && worker_mono_ms() >= next_cp) {
			dispatch_checkpoint(w, 1);
			if (w->opt.sync == STORE_SYNC_INTERVAL)
				store_sync(w->st);
			next_cp = worker_mono_ms() + interval;
		}
		if (f == NULL) {
			uint64_t now;

			/* idle: unlink the blob files the checkpoints dropped
			 * (tens of ms for a large one, kept off the replies) */
			store_reap(w->st);
			now = worker_mono_ms();
			worker_wait(w, interval == 0 ? -1 :
			    (int)(next_cp > now ? next_cp - now : 0));
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
	if ((w->in_fd = fcntl(0, F_DUPFD_CLOEXEC, 3)) < 0 ||
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
	return 0;
}

/* Why this worker cannot serve (set where it fails; sent by
 * worker_send_fatal): an ERRCODE, and the holder's pid (SESSION_BUSY) or
 * the old session's tombstone (SESSION_DEAD). */
static int worker_fatal_code = WIRE_ERR_STORE;
static long worker_fatal_pid;
static const store_tomb *worker_fatal_tomb;

/* Tell the client why this worker cannot serve it (an ERROR with id 0,
 * before any HELLO is answered), so that it need not read our stderr. */
static void
worker_send_fatal(worker *w, const char *cause)
{
	wire_buf b;

	if (w->out_fd <= 0)
		return;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_ERROR, 0);
	wire_put_u64(&b, WIRE_TAG_ERRCODE, (uint64_t)worker_fatal_code);
	wire_put_str(&b, WIRE_TAG_MESSAGE, cause != NULL ? cause :
	    "pyshelfd failed to start");
	if (worker_fatal_code == WIRE_ERR_SESSION_BUSY && worker_fatal_pid > 0)
		wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)worker_fatal_pid);
	if (worker_fatal_code == WIRE_ERR_SESSION_DEAD &&
	    worker_fatal_tomb != NULL) {
		wire_put_u64(&b, WIRE_TAG_ENDED_MS, worker_fatal_tomb->ended_ms);
		wire_put_str(&b, WIRE_TAG_REASON,
		    tomb_why_name(worker_fatal_tomb->why));
	}
	if (wire_end(&b) == WIRE_OK)
		(void)wire_write_all(w->out_fd, b.data, b.len);
	wire_buf_free(&b);
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
	sigset_t set, old;
	int rc = 1;

	the_worker = w;
	w->lock_fd = -1;
	w->pid = getpid();
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->out_lock, NULL);
	pthread_mutex_init(&w->drain_lock, NULL);
	pthread_atfork(NULL, NULL, worker_atfork_child);
	signal(SIGPIPE, SIG_IGN);
	if (worker_fds(w, &cause) != 0 || worker_output_start(w, &cause) != 0 ||
	    worker_open_session(w, &cause) != 0)
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
			.on_signal = dispatch_signal
		};
		if (pymodule_start(&pc, &cause) != 0)
			goto fail_py;
	}
	w->main_thread = pthread_self();
	/* the reader must never take SIGINT/SIGTERM meant for Python */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	rc = pthread_create(&w->reader, NULL, worker_reader, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		asprintf(&cause, "cannot start the reader thread");
		rc = 1;
		goto fail_py;
	}
	worker_loop(w);
	/* DETACH checkpointed already; now give shipped code's non-daemon
	 * threads a bounded time to end, and leave the rest behind (their
	 * changes after the last checkpoint are lost, as the detach notice
	 * said): an endless thread must not hang the exit until the client
	 * kills us */
	worker_threads_end(w);
	rc = w->closed || dispatch_checkpoint(w, 2) == 0 ? 0 : 1;
	dispatch_release_session(w);
	store_sync(w->st);
	/* the reader may sit in poll() on a client that stays connected:
	 * tell it to leave, and wake it */
	pthread_mutex_lock(&w->lock);
	w->quit = 1;
	pthread_mutex_unlock(&w->lock);
	{
		uint64_t one = 1;
		if (write(w->rwake_fd, &one, sizeof one) < 0) {
			/* counter full: the reader is awake anyway */
		}
	}
	pthread_join(w->reader, NULL);
	worker_output_stop(w);
	if (interp_fini() != 0)
		rc = 1;
	store_close(w->st);
	/* last: the record says "not served" before the lock says so */
	session_unlock(w->lock_fd);
	w->lock_fd = -1;
	return rc;
fail_py:
	interp_fini();
fail_store:
	store_close(w->st);
	session_unlock(w->lock_fd);
	w->lock_fd = -1;
fail:
	worker_output_stop(w);
	fprintf(stderr, "pyshelfd: %s\n", cause != NULL ? cause : "failed");
	worker_send_fatal(w, cause);
	free(cause);
	return 1;
}

/* Say how a session ended. */
void
worker_tomb_text(const store_tomb *tb, char *buf, size_t n)
{
	char when[64], why[160];
	time_t t = (time_t)(tb->ended_ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(when, sizeof when, "at %llu ms since the epoch",
		    (unsigned long long)tb->ended_ms);
	switch (tb->why) {
	case STORE_END_EXPIRED:
		snprintf(why, sizeof why, "its lease of %.0f s ran out with no "
		    "client attached", (double)tb->lease_ms / 1000);
		break;
	case STORE_END_CLOSED:
		snprintf(why, sizeof why, "it was closed (close_session)");
		break;
	case STORE_END_REPLACED:
		snprintf(why, sizeof why, "it was replaced by a new session "
		    "(flag 'n')");
		break;
	default:
		snprintf(why, sizeof why, "reason %d", tb->why);
	}
	snprintf(buf, n, "session '%s' ended on %s (%s): reason %s; its %llu "
	    "entries (%llu bytes) were deleted", tb->name, when, why,
	    tomb_why_name(tb->why), (unsigned long long)tb->entries,
	    (unsigned long long)tb->bytes);
}

/*
 * Is pid exiting: a zombie, PF_EXITING, or SIGKILL pending?  Its session
 * lock goes within moments then (the kernel drops it as the process's
 * files close), so a reopen right after `kill -9` waits for it instead of
 * failing.  0 when it cannot tell (no /proc, another pid namespace).
 */
static int
worker_pid_dying(long pid)
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
	if ((f = fopen(path, "r")) == NULL)
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
	if ((f = fopen(path, "r")) == NULL)
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
worker_lock(worker *w, const uint8_t *id, int shared, long *holder)
{
	struct timespec nap = {0, 10 * 1000 * 1000};
	uint64_t until = worker_mono_ms() + 60000;
	int rc;

	while ((rc = session_lock(w->st, id, shared, &w->lock_fd, holder)) ==
	    STORE_E_BUSY && worker_pid_dying(*holder) &&
	    worker_mono_ms() < until)
		nanosleep(&nap, NULL);
	return rc;
}

/* What the look-up before the lock found. */
struct open_look {
	worker *w;
	int rc;               /* of session_get_by_name */
	store_session ss;     /* the live session of the name (rc 0) */
	int has_tomb;         /* the name's newest tombstone: */
	store_tomb tomb;
};

static int
worker_open_look(store_txn *t, void *arg)
{
	struct open_look *ol = arg;

	ol->rc = session_get_by_name(t, ol->w->opt.session, &ol->ss);
	if (ol->rc != 0 && ol->rc != STORE_E_NOTFOUND)
		return ol->rc;
	ol->has_tomb = tomb_last(t, ol->w->opt.session, &ol->tomb) == 0;
	return 0;
}

/* Argument for claiming the session. */
struct open_arg {
	worker *w;
	const uint8_t *id;    /* the locked id */
	int creating;         /* no session had the name: make it with id */
	int retry;            /* out: the name changed hands since the look */
};

/* Claim the locked session (or create it), in one write transaction. */
static int
worker_open_txn(store_txn *t, void *arg)
{
	struct open_arg *oa = arg;
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
worker_open_ro_txn(store_txn *t, void *arg)
{
	struct open_arg *oa = arg;
	int rc = session_get_by_name(t, oa->w->opt.session, &oa->w->sess);

	oa->retry = 0;
	if (rc == STORE_E_NOTFOUND ||
	    (rc == 0 && memcmp(oa->w->sess.id, oa->id, STORE_ID_SIZE) != 0))
		oa->retry = 1;
	return rc == STORE_E_NOTFOUND ? 0 : rc;
}

/* Flag 'n': end the live session of the name (it must not be in use). */
static int
worker_replace_txn(store_txn *t, void *arg)
{
	int rc = session_end(t, arg, STORE_END_REPLACED, store_now_ms(), NULL);

	return rc == STORE_E_DEAD || rc == STORE_E_NOTFOUND ? 0 : rc;
}

/* Refuse with the holder named. */
static int
worker_busy(worker *w, long holder, char **cause)
{
	worker_fatal_code = WIRE_ERR_SESSION_BUSY;
	worker_fatal_pid = holder;
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
worker_claim(worker *w, char **cause)
{
	static store_tomb tomb;
	struct open_look ol;
	struct open_arg oa;
	uint8_t id[STORE_ID_SIZE];
	char text[768];
	long holder = 0;
	int rc, tries, replaced = 0, ro = w->opt.mode == 'r';

	for (tries = 0; tries < 32; tries++) {
		memset(&ol, 0, sizeof ol);
		ol.w = w;
		if ((rc = store_read(w->st, worker_open_look, &ol)) != 0)
			goto store_err;
		if (ol.rc == 0 && w->opt.mode == 'n' && !replaced) {
			if ((rc = worker_lock(w, ol.ss.id, 0, &holder)) ==
			    STORE_E_BUSY)
				return worker_busy(w, holder, cause);
			if (rc != 0)
				goto lock_err;
			rc = store_write(w->st, worker_replace_txn, ol.ss.id);
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
				tomb = ol.tomb;
				worker_fatal_code = WIRE_ERR_SESSION_DEAD;
				worker_fatal_tomb = &tomb;
				worker_tomb_text(&tomb, text, sizeof text);
				asprintf(cause, "%s", text);
			} else {
				worker_fatal_code = WIRE_ERR_NO_SESSION;
				asprintf(cause, "no session named '%s' in this "
				    "store", w->opt.session);
			}
			return -1;
		}
		if (ol.rc == 0)
			memcpy(id, ol.ss.id, STORE_ID_SIZE);
		else if ((rc = store_random(id, sizeof id)) != 0)
			goto store_err;
		if ((rc = worker_lock(w, id, ro, &holder)) == STORE_E_BUSY)
			return worker_busy(w, holder, cause);
		if (rc != 0)
			goto lock_err;
		memset(&oa, 0, sizeof oa);
		oa.w = w;
		oa.id = id;
		oa.creating = ol.rc == STORE_E_NOTFOUND;
		rc = ro ? store_read(w->st, worker_open_ro_txn, &oa) :
		    store_write(w->st, worker_open_txn, &oa);
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
 * Refuse a store directory whose parent is missing too, unless asked
 * (--create-db): a typo in a path must not grow a new tree of
 * directories.
 */
static int
worker_check_db(worker *w, const char *db, char **cause)
{
	struct stat st;
	char *parent, *slash;
	int ok;

	if (w->opt.create_db || stat(db, &st) == 0 || errno != ENOENT)
		return 0;
	if ((parent = strdup(db)) == NULL)
		return asprintf(cause, "out of memory"), -1;
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
	if (!ok) {
		worker_fatal_code = WIRE_ERR_USAGE;
		asprintf(cause, "store directory %s does not exist, and neither "
		    "does its parent %s: not creating them (a typo? pass "
		    "--create-db, create_db=True, to make the missing "
		    "directories)", db, parent);
	}
	free(parent);
	return ok ? 0 : -1;
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
worker_check_owner(worker *w, const char *db, char **cause)
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
		worker_fatal_code = WIRE_ERR_USAGE;
	free(file);
	return rc;
}

/* Open the store, sweep it, and open the session. */
static int
worker_open_session(worker *w, char **cause)
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
	if ((so.create && worker_check_db(w, db, cause) != 0) ||
	    worker_check_owner(w, db, cause) != 0) {
		free(path);
		return -1;
	}
	rc = store_open(&w->st, db, &so, &scause);
	if (rc != 0) {
		if (rc == STORE_E_NOTSTORE && !so.create) {
			worker_fatal_code = WIRE_ERR_NO_SESSION;
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
	if (!ro)
		worker_sweep(w);
	if (worker_claim(w, cause) != 0) {
		store_close(w->st);
		w->st = NULL;
		return -1;
	}
	return 0;
}

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
static void
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
