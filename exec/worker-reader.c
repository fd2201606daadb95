/*
 * worker-reader.c - reading the client connections, by whichever thread
 * owns them: the main thread while it waits for requests, the reader
 * thread while code runs.  Frames are taken off the wire by one function
 * (worker_reader_input) and acted on by one (worker_reader_frame): PING
 * is answered at once, INTERRUPT stops the running code with SIGINT, and
 * the rest is queued for the main thread, so that PING and INTERRUPT
 * work while code runs (once HELLO is answered; before that they queue
 * too).  The reader thread also sends the stop when a request's deadline
 * passes, again every second while the code swallows it; either ends a
 * connection with an ERROR on a malformed or oversized frame; when input
 * ends the running code is stopped too (a client that left does not keep
 * it running).  Nothing here touches Python.
 *
 * The reader thread always reads the control channel and its listening
 * socket (server mode, worker-control.c).  Whoever owns them reads every
 * client connection of the worker (stdio: one; server mode: each client
 * of the session).  In server mode the owner also takes DETACH: queued
 * for the main thread's full checkpoint and read no more, or, while a
 * call runs, answered at once with the checkpoint owed to its end
 * (worker_reader_detach); the connection goes, the code it started runs
 * on.  It answers, through worker-calls.c, CALLS, CALL_RESULT and an
 * EXEC whose call id the session knows; a connection that ends is dropped
 * alone (a full checkpoint owed to it); and a stop that has not taken
 * effect after --hard-grace restarts the worker (worker-restart.c, reader
 * thread only).
 *
 * Who owns the connections (w->in_owner, with w->main_busy and
 * w->want_back, all under w->lock):
 *  - A request used to cross from the reader thread to the main thread
 *    through a pipe: a third wake-up per round trip, on top of the
 *    client's and the worker's.  Now the main thread, idle, polls the
 *    connections itself (worker_reader_idle_wait), reads what is there
 *    and serves it: no other thread wakes for a request.
 *  - Main is "busy" from the moment it leaves that wait until it enters
 *    it again (a request, a checkpoint, its loop), and notes since when
 *    (busy_since_us).  Leaving the wait it arms the busy timer (timerfd,
 *    WORKER_TAKEOVER_MS) unless it is armed already; it never disarms
 *    it.  When the timer fires, the reader takes the connections (owner
 *    := READER) if main has been busy since WORKER_TAKEOVER_MS ago; if
 *    main is busy since less long (it went idle and busy again since the
 *    timer was armed), the reader arms it again for the rest; if main is
 *    idle, it leaves it unarmed.  So short requests never wake the
 *    reader thread, back-to-back ones cost no timer syscall (one reader
 *    wake-up per WORKER_TAKEOVER_MS at most), and a PING or an INTERRUPT
 *    sent while code runs waits at most WORKER_TAKEOVER_MS (docs/
 *    PROTOCOL.md says so).
 *  - Main back in its wait while the reader owns them sets want_back and
 *    wakes the reader, which hands them back (owner := MAIN) at the top
 *    of its loop, between two polls, never in the middle of a read, and
 *    wakes main; main meanwhile only serves the queue.  Main busy again
 *    before that cancels want_back (the reader keeps them: no ping-pong).
 *  - So the owner changes only under w->lock and only while the old
 *    owner is outside worker_reader_input: main reads only while not
 *    busy and owner, the reader takes only while main is busy, and gives
 *    back only at its loop's top.  A connection's buffer (c->buf: a frame
 *    half read, split across writes however small) moves with the
 *    ownership and the lock's ordering; the next owner goes on where the
 *    last stopped.  A frame that arrives while ownership moves waits in
 *    the socket for the new owner's poll.
 *  - Frames queue in arrival order whoever read them, and main serves
 *    the queue before it reads again, so requests keep their order, also
 *    from several connections (server mode) and across a move.  Main
 *    queueing for itself writes no wake-up.
 *  - A connection the control channel adds (server mode, reader thread)
 *    is read only once attached; main, if it owns the connections, is
 *    woken to poll it too.  Deadlines: the reader sees them when it takes
 *    over (WORKER_TAKEOVER_MS at most after the code started, so a
 *    timeout is late by that at most), or, when it owns the connections
 *    already, through worker_reader_deadline.  The hard grace, the stop
 *    of code whose client left, and re-sent EXECs (worker-calls.c) are
 *    reader-side as before: they concern running code, and code that
 *    runs longer than WORKER_TAKEOVER_MS has the reader awake.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"

/* Is this the main thread? */
static int
worker_reader_on_main(worker *w)
{
	return pthread_equal(pthread_self(), w->main_thread);
}

/* Wake the main thread (queue or state changed); main itself needs no
 * wake-up. */
static void
worker_reader_wake(worker *w)
{
	char c = 1;

	if (worker_reader_on_main(w))
		return;
	if (write(w->wake_fd, &c, 1) < 0 && errno != EAGAIN) {
		/* a full pipe already wakes the reader of it */
	}
}

/* Wake the reader thread. */
static void
worker_reader_rwake(worker *w)
{
	uint64_t one = 1;

	if (write(w->rwake_fd, &one, sizeof one) < 0) {
		/* the counter is full: the reader is awake anyway */
	}
}

/* Ask the running code to stop: SIGINT to the main thread, whose handler
 * (the _pyshelfd module's) raises KeyboardInterrupt or TimeoutError.
 * Lock held. */
static void
worker_reader_stop_locked(worker *w, int reason)
{
	w->sigs_inflight = 1;
	w->stop_kind = reason;
	w->stop_sent_ms = worker_mono_ms();
	if (w->stop_first_ms == 0)
		w->stop_first_ms = w->stop_sent_ms;
	pthread_kill(w->main_thread, SIGINT);
}

/* A copy of the n bytes at p as a frame of kind, not queued yet; NULL
 * when out of memory. */
static worker_frame *
worker_reader_frame_new(const uint8_t *p, size_t n, int kind)
{
	worker_frame *f;

	if ((f = malloc(sizeof *f + n)) == NULL)  /* not calloc: a frame
	                                            of megabytes is written
	                                            over at once */
		return NULL;
	f->next = NULL;
	f->conn = NULL;
	f->len = n;
	f->kind = kind;
	memcpy(f->data, p, n);
	return f;
}

/* Put f, from c, at the end of the queue (it takes a reference to c).
 * w->lock held. */
static void
worker_reader_enqueue_locked(worker *w, worker_conn *c, worker_frame *f)
{
	f->conn = c;
	worker_conn_ref_locked(c);
	if (f->kind == WORKER_FRAME_WAIT)
		c->lng.state = WORKER_LONG_WAIT;  /* read on when answered */
	if (w->qtail != NULL)
		w->qtail->next = f;
	else
		w->qhead = f;
	w->qtail = f;
}

/* Queue a frame for the main thread (it holds a reference to c); see
 * exec.h. */
int
worker_reader_queue(worker *w, worker_conn *c, const uint8_t *p, size_t n,
    int kind)
{
	worker_frame *f;

	if ((f = worker_reader_frame_new(p, n, kind)) == NULL)
		return -1;
	pthread_mutex_lock(&w->lock);
	worker_reader_enqueue_locked(w, c, f);
	pthread_mutex_unlock(&w->lock);
	worker_reader_wake(w);
	return kind == WORKER_FRAME_WAIT ? 2 : 0;
}

/* Free a frame the main thread took. */
void
worker_reader_frame_free(worker *w, worker_frame *f)
{
	if (f == NULL)
		return;
	worker_conn_unref(w, f->conn);
	free(f);
}

/* Send a frame with no fields (PONG, OK) to c. */
static void
worker_reader_reply(worker *w, worker_conn *c, uint16_t type, uint64_t id)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, type, id);
	if (wire_end(&b) == WIRE_OK)
		(void)worker_send_to(w, c, &b);
	wire_buf_free(&b);
}

/*
 * INTERRUPT of an EXEC of c's that still waits in the queue (behind
 * another client's call; QA 16): take it out, so that it never runs, and
 * answer it ERROR WORKER_RESTARTED with REASON "withdrawn" (the client
 * raises KeyboardInterrupt); a call with an id ends so in the journal.
 * 1: found and withdrawn.
 */
static int
worker_reader_withdraw(worker *w, worker_conn *c, uint64_t id)
{
	worker_frame *f, *prev = NULL;
	const wire_field *cid;
	wire_buf b;
	wire_msg m;
	size_t used;

	if (id == 0)
		return 0;
	pthread_mutex_lock(&w->lock);
	for (f = w->qhead; f != NULL; prev = f, f = f->next)
		if (f->conn == c && f->len >= WIRE_HEADER_SIZE &&
		    wire_be16_get(f->data + 4) == WIRE_MSG_EXEC &&
		    wire_be64_get(f->data + 8) == id)
			break;
	if (f != NULL) {
		if (prev != NULL)
			prev->next = f->next;
		else
			w->qhead = f->next;
		if (w->qtail == f)
			w->qtail = prev;
	}
	pthread_mutex_unlock(&w->lock);
	if (f == NULL)
		return 0;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_ERROR, id);
	wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_WORKER_RESTARTED);
	/* not always behind another call: the worker may not have begun it
	 * yet (QA5 10: one client, Ctrl-C 1 ms after the call was sent) */
	wire_put_str(&b, WIRE_TAG_MESSAGE, "interrupted before it began to "
	    "run, while it waited in the worker's queue: withdrawn, it never "
	    "ran");
	wire_put_str(&b, WIRE_TAG_REASON, "withdrawn");
	wire_msg_init(&m);
	if (wire_end(&b) == WIRE_OK) {
		cid = wire_parse(f->data, f->len, w->opt.max_frame, &m, &used) ==
		    WIRE_OK ? wire_msg_find(&m, WIRE_TAG_CALL_ID) : NULL;
		if (cid == NULL || cid->len != 16 ||
		    worker_calls_withdraw(w, cid->data, &b) != 0)
			(void)worker_send_to(w, c, &b);
	}
	wire_msg_free(&m);
	wire_buf_free(&b);
	worker_reader_frame_free(w, f);
	return 1;
}

/* INTERRUPT: stop the running code when it is c's (its requester's or a
 * joiner's), or, with id 0, whatever runs in the session (server mode:
 * another client's call, or one left running by a client that went);
 * HARD=1 (server mode), or a stop that did not take effect, restarts the
 * worker. */
static void
worker_reader_interrupt(worker *w, worker_conn *c, const wire_msg *m)
{
	int mine, hard = wire_msg_u64(m, WIRE_TAG_HARD, 0) != 0;

	pthread_mutex_lock(&w->lock);
	if (!w->opt.server)
		mine = w->running_id != 0 && (m->id == 0 ||
		    m->id == w->running_id);
	else
		mine = w->running_id != 0 && (m->id == 0 ||
		    (c == w->running_conn && m->id == w->running_id));
	pthread_mutex_unlock(&w->lock);
	if (!mine && w->opt.server && w->running_id != 0)
		mine = worker_calls_joined(w, c);
	if (!mine && w->opt.server && worker_reader_withdraw(w, c, m->id))
		return;
	if (!mine)
		return;
	if (hard && w->opt.server) {
		worker_restart_exec(w, "hard interrupt (INTERRUPT HARD=1)");
		return;
	}
	pthread_mutex_lock(&w->lock);
	if (w->running_id != 0)
		worker_reader_stop_locked(w, WORKER_STOP_INTERRUPT);
	pthread_mutex_unlock(&w->lock);
}

/*
 * Server mode: DETACH of c.  What its client leaves must be durable when
 * its close() returns, as in stdio mode, so the main thread answers it,
 * after a full checkpoint (dispatch.c): it is queued, in its turn behind
 * what came before it, and c is read no more.  While a call runs (c's or
 * another client's) the main thread cannot checkpoint before it ends,
 * which may take hours: then it is answered at once, and the checkpoint
 * is owed till the call's end (cp_owed, set where c ends).  Checked and
 * queued under one hold of w->lock, so that a call starting meanwhile
 * finds it queued (worker_reader_detach_early).  1: answered (c ends);
 * 2: queued; -1: out of memory.
 */
static int
worker_reader_detach(worker *w, worker_conn *c, const uint8_t *p, size_t n,
    const wire_msg *m)
{
	worker_frame *f;

	(void)worker_long_kind(c, m, 0);  /* a LONG it interrupts ends */
	if ((f = worker_reader_frame_new(p, n, WORKER_FRAME_DETACH)) == NULL)
		return -1;
	pthread_mutex_lock(&w->lock);
	if (w->running_id != 0) {
		pthread_mutex_unlock(&w->lock);
		free(f);
		worker_reader_reply(w, c, WIRE_MSG_OK, m->id);
		return 1;
	}
	worker_reader_enqueue_locked(w, c, f);
	c->detaching = 1;
	w->detach_queued++;
	pthread_mutex_unlock(&w->lock);
	worker_reader_wake(w);
	return 2;
}

void
worker_reader_detach_early(worker *w)
{
	worker_frame *f, **pp, *list = NULL, *next;

	pthread_mutex_lock(&w->lock);
	if (w->detach_queued == 0) {
		pthread_mutex_unlock(&w->lock);
		return;
	}
	w->qtail = NULL;
	for (pp = &w->qhead; (f = *pp) != NULL;) {
		if (f->kind == WORKER_FRAME_DETACH) {
			*pp = f->next;
			f->next = list;
			list = f;
		} else {
			w->qtail = f;
			pp = &f->next;
		}
	}
	w->detach_queued = 0;
	w->cp_owed = 1;
	pthread_mutex_unlock(&w->lock);
	for (f = list; f != NULL; f = next) {
		next = f->next;
		worker_reader_reply(w, f->conn, WIRE_MSG_OK,
		    wire_be64_get(f->data + 8));
		pthread_mutex_lock(&w->lock);
		worker_conn_drop_locked(w, f->conn);
		pthread_mutex_unlock(&w->lock);
		worker_reader_frame_free(w, f);
	}
	worker_control_state(w);
}

/* Reader: answer PING, act on INTERRUPT, queue the rest.  1: the
 * connection is done with (DETACH); 2: a frame of a LONG was queued, and
 * the connection waits for the main thread's answer (worker-long.c). */
static int
worker_reader_frame(worker *w, worker_conn *c, const uint8_t *p, size_t n,
    wire_msg *m)
{
	int attached, kind;

	pthread_mutex_lock(&w->lock);
	attached = c->attached;
	pthread_mutex_unlock(&w->lock);
	if (!attached)
		goto queue;  /* nothing is answered before the handshake */
	switch (m->type) {
	case WIRE_MSG_INTERRUPT:
		if (wire_msg_check(m, NULL) == WIRE_OK)
			worker_reader_interrupt(w, c, m);
		return 0;
	case WIRE_MSG_PING:
		worker_reader_reply(w, c, WIRE_MSG_PONG, m->id);
		return 0;
	case WIRE_MSG_CALLS:
		if (wire_msg_check(m, NULL) != WIRE_OK)
			goto queue;  /* the main thread says what is wrong */
		worker_calls_list(w, c, m);
		return 0;
	case WIRE_MSG_CALL_RESULT:
		if (wire_msg_check(m, NULL) != WIRE_OK)
			goto queue;
		worker_calls_result(w, c, m);
		return 0;
	case WIRE_MSG_EXEC:
		if (wire_msg_check(m, NULL) != WIRE_OK ||
		    wire_msg_find(m, WIRE_TAG_CALL_ID) == NULL)
			goto queue;
		if (worker_calls_exec(w, c, m))
			return 0;  /* replayed or joined */
		goto queue;
	case WIRE_MSG_PIPES:
		if (!w->opt.server || wire_msg_check(m, NULL) != WIRE_OK)
			goto queue;  /* the main thread says what is wrong */
		/* answered by whoever reads: an attach must not wait for a
		 * call that another client left running */
		(void)worker_conn_pipes(w, c, m->id);
		return 0;
	case WIRE_MSG_DETACH:
		if (!w->opt.server)
			goto queue;  /* stdio: the worker's end, in its turn */
		/* server mode: this connection goes; the session, and what
		 * runs in it, stay */
		return worker_reader_detach(w, c, p, n, m);
	}
queue:
	if ((kind = worker_long_kind(c, m, worker_reader_on_main(w))) < 0)
		return 0;  /* a PART of a refused LONG */
	return worker_reader_queue(w, c, p, n, kind);
}

/* How long the reader may block: until the running request's deadline,
 * until a stop should be sent again (code that swallowed the first), or
 * until the hard grace of a stop runs out (server mode). */
static int
worker_reader_timeout(worker *w)
{
	uint64_t now = worker_mono_ms(), due = 0, grace;
	int t = -1, kind = WORKER_STOP_NONE, restart = 0;

	grace = (uint64_t)(w->opt.hard_grace * 1000);
	pthread_mutex_lock(&w->lock);
	if (grace == 0 && w->stop_asked)
		grace = WORKER_STOP_GRACE_MS;  /* a stop always ends */
	if (w->running_id != 0) {
		/* stdio: code that started after its client left (it was
		 * queued) is stopped too */
		if (!w->opt.server && w->eof && w->stop_sent_ms == 0)
			worker_reader_stop_locked(w, WORKER_STOP_INTERRUPT);
		if (w->stop_sent_ms != 0) {
			due = w->stop_sent_ms + 1000;
			kind = w->stop_kind;
		} else if (w->deadline_ms != 0) {
			due = w->deadline_ms;
			kind = WORKER_STOP_TIMEOUT;
		}
		if (due != 0 && due <= now) {
			worker_reader_stop_locked(w, kind);
			due = w->stop_sent_ms + 1000;
		}
		if (w->opt.server && grace > 0 && w->stop_first_ms != 0) {
			if (w->stop_first_ms + grace <= now)
				restart = 1;
			else if (due == 0 || w->stop_first_ms + grace < due)
				due = w->stop_first_ms + grace;
		}
		if (!w->opt.server && grace > 0 && w->eof_ms != 0) {
			/* stdio: the one client left, and its code swallows
			 * every stop (stuck in C): nobody is left to serve,
			 * so the process goes rather than spin on */
			if (w->eof_ms + grace <= now) {
				worker_log(w, "pyshelfd: the client left and its "
				    "running code did not stop within --hard-grace "
				    "(%.0f s); exiting: the session keeps its last "
				    "checkpoint\n", w->opt.hard_grace);
				_exit(1);
			}
			if (due == 0 || w->eof_ms + grace < due)
				due = w->eof_ms + grace;
		}
		if (due != 0)
			t = (int)(due > now ? due - now : 1);
	}
	pthread_mutex_unlock(&w->lock);
	if (restart) {
		worker_restart_exec(w, kind == WORKER_STOP_TIMEOUT ?
		    "the request's timeout did not take effect within the "
		    "hard grace" : kind == WORKER_STOP_SHUTDOWN ? "the server "
		    "is stopping, and the call did not stop within the hard "
		    "grace" : "the interrupt did not take effect within the "
		    "hard grace");
		return 1000;  /* the exec failed: try again later */
	}
	return t;
}

static void worker_reader_end(worker *w, worker_conn *c, int rc);

/* Act on the complete frames c's buffer holds.  WIRE_OK, or why the
 * connection ends (WIRE_E_EOF also for DETACH). */
static int
worker_reader_parse(worker *w, worker_conn *c)
{
	size_t flen;
	wire_msg m;
	int rc;

	wire_msg_init(&m);
	for (;;) {
		if (c->lng.state == WORKER_LONG_DATA) {
			/* a pushed value's buffers: straight into them */
			if ((rc = worker_long_parse(w, c)) ==
			    WORKER_LONG_TAKEN)
				continue;
			if (rc != 0)
				break;
		}
		if ((rc = wire_peek(c->buf, c->len, c->max, &flen)) != WIRE_OK)
			break;
		if (flen > c->cap) {
			uint8_t *nb = realloc(c->buf, flen);
			if (nb == NULL) {
				rc = WIRE_E_NOMEM;
				break;
			}
			c->buf = nb;
			c->cap = flen;
		}
		if (c->len < flen)
			break;
		if (wire_parse(c->buf, flen, c->max, &m, &flen) != WIRE_OK) {
			rc = WIRE_E_MALFORMED;
			break;
		}
		if (m.type == WIRE_MSG_HELLO || m.type == WIRE_MSG_ATTACH)
			c->max = w->opt.max_frame;
		/* a hard restart while acting on it carries the bytes after
		 * it over to the new image (worker-restart.c) */
		c->cur = flen;
		rc = worker_reader_frame(w, c, c->buf, flen, &m);
		c->cur = 0;
		/* a message ends here, unless the frame is part of a LONG
		 * (whose end is worker_long_done's or the main thread's) */
		if (m.type != WIRE_MSG_LONG && m.type != WIRE_MSG_PART)
			wire_pipe_settle(c->fd, &c->pipe_got);
		memmove(c->buf, c->buf + flen, c->len - flen);
		c->len -= flen;
		if (rc == 2) {
			rc = WIRE_OK;  /* the rest waits for the answer */
			break;
		}
		if (rc != 0) {
			rc = rc < 0 ? WIRE_E_NOMEM : WIRE_E_EOF;
			break;
		}
	}
	wire_msg_free(&m);
	return rc == WIRE_NEED_MORE ? WIRE_OK : rc;
}

/* Read what c has and act on the complete frames.  WIRE_OK, or why the
 * connection ends (WIRE_E_EOF also for DETACH). */
static int
worker_reader_input(worker *w, worker_conn *c)
{
	ssize_t got;

	if (c->lng.state == WORKER_LONG_DATA && c->lng.part_left > 0)
		return worker_long_read(w, c);
	if (c->cap - c->len < 4096) {
		size_t ncap = c->cap < 65536 ? 65536 : c->cap * 2;
		uint8_t *nb = realloc(c->buf, ncap);
		if (nb == NULL)
			return WIRE_E_NOMEM;
		c->buf = nb;
		c->cap = ncap;
	}
	got = read(c->fd, c->buf + c->len, c->cap - c->len);
	if (got < 0 && (errno == EINTR || errno == EAGAIN))
		return WIRE_OK;
	if (got <= 0)
		return got == 0 ? WIRE_E_EOF : WIRE_E_IO;
	c->len += (size_t)got;
	c->pipe_got += (size_t)got;
	return worker_reader_parse(w, c);
}

void
worker_reader_carried(worker *w)
{
	worker_conn *c, *next;
	int rc;

	for (c = w->conns; c != NULL; c = next) {
		next = c->next;
		if (c->len == 0 || c->gone)
			continue;
		if ((rc = worker_reader_parse(w, c)) != WIRE_OK)
			worker_reader_end(w, c, rc);
	}
}

/* A connection ended (rc says how): a bad frame gets an ERROR first.
 * Stdio: the worker's input ended, and a client that went away does not
 * get to keep code running.  Server mode: the connection is dropped
 * alone. */
static void
worker_reader_end(worker *w, worker_conn *c, int rc)
{
	/* a file in the connection's place reads as garbage or end of
	 * file: never write an ERROR into it */
	worker_fds_verify(w, c->fd, "a client connection");
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
			(void)worker_send_to(w, c, &b);
		wire_buf_free(&b);
		pthread_mutex_lock(&c->out_lock);
		c->out_closed = 1;
		pthread_mutex_unlock(&c->out_lock);
		/* pyshelfd's own stderr: fd 2 is the running request's
		 * output pipe, which would send this to its client */
		worker_log(w, "pyshelfd: %s from the client; closing\n",
		    wire_strerror(rc));
	}
	pthread_mutex_lock(&w->lock);
	memset(&c->lng, 0, sizeof c->lng);  /* its memory is let go */
	if (!w->opt.server) {
		w->eof = 1;
		w->eof_ms = worker_mono_ms();
		if (w->running_id != 0)
			worker_reader_stop_locked(w, WORKER_STOP_INTERRUPT);
	} else {
		/* a client that leaves without DETACH (or whose DETACH was
		 * answered while a call ran) gets its checkpoint as soon
		 * as the main thread can take it */
		if (c->attached && !c->gone)
			w->cp_owed = 1;
		worker_conn_drop_locked(w, c);
	}
	pthread_mutex_unlock(&w->lock);
	if (w->opt.server)
		worker_control_state(w);
	worker_reader_wake(w);
}

/* The most connections one poll watches; more wait their turn. */
#define WORKER_READER_MAX 1024

/* Add the connections to read to pfd (from pfd[n]) and cs, each with a
 * reference: those attached (stdio: the one, from its HELLO on too), but
 * not one waiting for the main thread's answer to a frame of its LONG;
 * none once stdio input ended.  One the main thread has answered since
 * is marked for worker_reader_resume (lng.resume 2), and counted in
 * *resumed.  w->lock held.  How many. */
static int
worker_reader_collect_locked(worker *w, struct pollfd *pfd, int n,
    worker_conn **cs, int *resumed)
{
	worker_conn *c;
	int nc = 0;

	*resumed = 0;

	for (c = w->conns; c != NULL && nc < WORKER_READER_MAX; c = c->next) {
		if (!w->opt.server && w->eof)
			break;
		if (w->opt.server && !c->attached)
			continue;  /* the control channel is attaching it */
		if (c->lng.state == WORKER_LONG_WAIT || c->detaching)
			continue;  /* until the main thread answers */
		if (c->lng.resume) {
			c->lng.resume = 2;
			(*resumed)++;
		}
		worker_conn_ref_locked(c);
		cs[nc++] = c;
		pfd[n + nc - 1] = (struct pollfd){c->fd, POLLIN, 0};
	}
	return nc;
}

/* Act on what the connections the main thread has answered (marked by
 * worker_reader_collect_locked) hold already, before polling them: their
 * frames after the one answered are in their buffers, not in the socket.
 * The caller owns the connections. */
static void
worker_reader_resume(worker *w, worker_conn **cs, int nc)
{
	int i, rc;

	for (i = 0; i < nc; i++) {
		if (cs[i]->lng.resume != 2)
			continue;
		cs[i]->lng.resume = 0;
		if (worker_conn_live(w, cs[i]) &&
		    (rc = worker_reader_parse(w, cs[i])) != WIRE_OK)
			worker_reader_end(w, cs[i], rc);
	}
}

/* Is c to be read (in the table, and not waiting for an answer)? */
static int
worker_reader_readable(worker *w, worker_conn *c)
{
	int ok;

	pthread_mutex_lock(&w->lock);
	ok = !c->gone && c->lng.state != WORKER_LONG_WAIT && !c->detaching;
	pthread_mutex_unlock(&w->lock);
	return ok;
}

/* Read the connections whose poll says so, then drop the references
 * worker_reader_collect_locked took.  The caller owns the connections. */
static void
worker_reader_serve(worker *w, const struct pollfd *pfd, worker_conn **cs,
    int nc)
{
	int i, rc;

	for (i = 0; i < nc; i++) {
		if (pfd[i].revents & POLLNVAL) {
			/* closed behind our back: never ours again */
			worker_fds_verify(w, cs[i]->fd, "a client connection");
			if (worker_reader_readable(w, cs[i]))
				worker_reader_end(w, cs[i], WIRE_E_IO);
		} else if ((pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    worker_reader_readable(w, cs[i]) &&
		    (rc = worker_reader_input(w, cs[i])) != WIRE_OK)
			worker_reader_end(w, cs[i], rc);
		worker_conn_unref(w, cs[i]);
	}
}

/* Microseconds on the monotonic clock. */
static uint64_t
worker_reader_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Arm the busy timer to fire in us microseconds. */
static void
worker_reader_arm(worker *w, uint64_t us)
{
	struct itimerspec its = {{0, 0}, {0, 0}};

	its.it_value.tv_sec = (time_t)(us / 1000000u);
	its.it_value.tv_nsec = (long)(us % 1000000u) * 1000L;
	if (us == 0)
		its.it_value.tv_nsec = 1;  /* 0 would disarm it */
	(void)timerfd_settime(w->busy_fd, 0, &its, NULL);
}

/* Reader thread: the busy timer fired.  Main busy with the connections
 * for WORKER_TAKEOVER_MS: take them.  Busy for less (the timer was armed
 * in an earlier busy spell, and main left and came back since): arm it
 * again for the rest.  Idle: let it be (main arms it when busy again). */
static void
worker_reader_takeover(worker *w)
{
	uint64_t ticks, now = worker_reader_now_us(), due, rearm = 0;

	if (read(w->busy_fd, &ticks, sizeof ticks) < 0) {
		/* spurious: nothing fired */
	}
	pthread_mutex_lock(&w->lock);
	w->busy_armed = 0;
	if (w->main_busy && w->in_owner == WORKER_IN_MAIN) {
		due = w->busy_since_us + WORKER_TAKEOVER_MS * 1000u;
		if (now >= due) {
			w->in_owner = WORKER_IN_READER;
			/* main runs something: it answers nobody soon */
			worker_long_cancel_locked(w);
		}
		else {
			rearm = due - now;
			w->busy_armed = 1;
		}
	}
	pthread_mutex_unlock(&w->lock);
	if (rearm != 0)
		worker_reader_arm(w, rearm);
}

/* Before acting on what a poll reported, make sure each fd it reported
 * on is still ours (worker-fds.c): shipped code that closed our fds from
 * C and opened files would have us read and write those files (and
 * spin: a file is always readable; a closed fd always POLLNVAL).  all:
 * check every fd of the worker (the periodic look while code runs).
 * Does not return when one is gone. */
static void
worker_reader_verify(worker *w, const struct pollfd *pfd, int n, int all)
{
	int i, bad;

	for (i = 0; i < n; i++)
		if (pfd[i].revents != 0)
			worker_fds_verify(w, pfd[i].fd, "polled by the reader "
			    "thread");
	if (all && (bad = worker_fds_check()) >= 0)
		worker_fds_fatal(w, bad, "found by the reader's periodic look");
}

/* Reader thread body: reads the control channel, and the connections
 * while it owns them, until w->quit is set. */
static void *
worker_reader_main(void *arg)
{
	worker *w = arg;
	struct pollfd pfd[WORKER_READER_MAX + 4];
	worker_conn *cs[WORKER_READER_MAX];
	int n, nc, t, quit, ctl_i, lis_i, back, resumed = 0, running, got;

	for (;;) {
		n = 0;
		pfd[n++] = (struct pollfd){w->rwake_fd, POLLIN, 0};
		pfd[n++] = (struct pollfd){w->busy_fd, POLLIN, 0};
		ctl_i = lis_i = -1;
		pthread_mutex_lock(&w->lock);
		/* main waits again: give the connections back, here where
		 * nothing of them is half done */
		if ((back = w->want_back)) {
			w->want_back = 0;
			w->in_owner = WORKER_IN_MAIN;
		}
		if (w->ctl_fd >= 0) {
			ctl_i = n;
			pfd[n++] = (struct pollfd){w->ctl_fd, POLLIN, 0};
		}
		if (w->ctl_listen_fd >= 0) {
			lis_i = n;
			pfd[n++] = (struct pollfd){w->ctl_listen_fd, POLLIN, 0};
		}
		nc = w->in_owner == WORKER_IN_READER ?
		    worker_reader_collect_locked(w, pfd, n, cs, &resumed) : 0;
		quit = w->quit;
		running = w->running_id != 0;
		pthread_mutex_unlock(&w->lock);
		if (back)
			worker_reader_wake(w);
		if (quit) {
			while (nc > 0)
				worker_conn_unref(w, cs[--nc]);
			break;
		}
		t = worker_reader_timeout(w);
		if (nc > 0 && resumed > 0) {
			worker_reader_resume(w, cs, nc);
			t = 0;
		}
		/* while code runs, look at our fds now and then: code that
		 * closed them from C may leave this poll waiting on files
		 * that never wake it */
		if (running && (t < 0 || t > WORKER_FDS_CHECK_MS))
			t = WORKER_FDS_CHECK_MS;
		if ((got = poll(pfd, (nfds_t)(n + nc), t)) < 0) {
			if (errno != EINTR)
				worker_log(w, "pyshelfd: poll: %s\n",
				    strerror(errno));
			/* should not happen: do not spin on it */
			memset(pfd, 0, sizeof pfd[0] * (size_t)(n + nc));
		}
		worker_reader_verify(w, pfd, n + nc, got == 0 && running);
		if (pfd[0].revents & POLLIN) {
			uint64_t v;
			if (read(w->rwake_fd, &v, sizeof v) < 0) {
				/* spurious: nothing to drain */
			}
		}
		if (pfd[1].revents & POLLIN)
			worker_reader_takeover(w);
		if ((ctl_i >= 0 && pfd[ctl_i].revents != 0) ||
		    (lis_i >= 0 && pfd[lis_i].revents != 0)) {
			if (ctl_i >= 0 && pfd[ctl_i].revents != 0)
				worker_control_readable(w);
			if (lis_i >= 0 && pfd[lis_i].revents != 0)
				worker_control_accept(w);
			/* a connection may have come: main, if it reads
			 * them, must poll it too */
			worker_reader_wake(w);
		}
		worker_reader_serve(w, pfd + n, cs, nc);
	}
	return NULL;
}

/* Main thread: leaving its wait (busy) or entering it.  Busy, it notes
 * since when, and arms the busy timer unless it is armed already (the
 * reader arms it again for the rest when it fires early): back-to-back
 * requests make no timer syscall, and wake the reader once per
 * WORKER_TAKEOVER_MS at most.  Idle, it asks the reader for the
 * connections back when the reader has them. */
static void
worker_reader_busy(worker *w, int busy)
{
	uint64_t now = busy ? worker_reader_now_us() : 0;
	int arm = 0, back = 0;

	pthread_mutex_lock(&w->lock);
	w->main_busy = busy;
	if (busy) {
		w->busy_since_us = now;
		w->want_back = 0;  /* not yet given back: the reader keeps them */
		if (w->in_owner == WORKER_IN_MAIN && !w->busy_armed)
			arm = w->busy_armed = 1;
	} else if (w->in_owner == WORKER_IN_READER && !w->want_back)
		back = w->want_back = 1;
	pthread_mutex_unlock(&w->lock);
	if (arm)
		worker_reader_arm(w, WORKER_TAKEOVER_MS * 1000u);
	if (back)
		worker_reader_rwake(w);
}

void
worker_reader_idle_wait(worker *w, int timeout_ms)
{
	struct pollfd pfd[WORKER_READER_MAX + 1];
	worker_conn *cs[WORKER_READER_MAX];
	char drain[64];
	int nc = 0, resumed = 0;
	ssize_t got;

	worker_fds_settle(w);  /* before the wake-ups below write */
	worker_reader_busy(w, 0);
	pfd[0] = (struct pollfd){w->wake_fd_r, POLLIN, 0};
	pthread_mutex_lock(&w->lock);
	if (w->in_owner == WORKER_IN_MAIN && w->qhead == NULL)
		nc = worker_reader_collect_locked(w, pfd, 1, cs, &resumed);
	pthread_mutex_unlock(&w->lock);
	if (resumed > 0) {
		/* what they hold may be requests: serve them first */
		worker_reader_resume(w, cs, nc);
		timeout_ms = 0;
	}
	if (poll(pfd, (nfds_t)(1 + nc), timeout_ms) <= 0)
		memset(pfd, 0, sizeof pfd[0] * (size_t)(1 + nc));
	if (pfd[0].revents & POLLNVAL)
		worker_fds_verify(w, w->wake_fd_r, "the main thread's wake pipe");
	if (pfd[0].revents & POLLIN) {
		/* one read: a pipe with more than this stays readable, and
		 * the next wait drains it; its write end is ours, so never
		 * end of file: that is a file in its place */
		if ((got = read(w->wake_fd_r, drain, sizeof drain)) == 0 ||
		    (got < 0 && errno != EAGAIN && errno != EINTR))
			worker_fds_verify(w, w->wake_fd_r,
			    "the main thread's wake pipe");
	}
	/* main owns what it collected: it is not busy, so the reader cannot
	 * take them until worker_reader_busy(w, 1) */
	worker_reader_serve(w, pfd + 1, cs, nc);
	worker_reader_busy(w, 1);
}

void
worker_reader_deadline(worker *w)
{
	int reader;

	pthread_mutex_lock(&w->lock);
	reader = w->in_owner == WORKER_IN_READER;
	pthread_mutex_unlock(&w->lock);
	if (reader)
		worker_reader_rwake(w);  /* it watches the new deadline */
}

void
worker_reader_shutdown(worker *w)
{
	pthread_mutex_lock(&w->lock);
	if (!w->stop_asked && w->running_id != 0) {
		/* the grace counts from the stop, even when an INTERRUPT
		 * went out earlier and the code swallowed it */
		w->stop_first_ms = 0;
		worker_reader_stop_locked(w, WORKER_STOP_SHUTDOWN);
	}
	w->stop_asked = 1;
	w->terminate = 1;
	pthread_mutex_unlock(&w->lock);
	worker_reader_wake(w);
}

/* Pop the next queued frame, or NULL. */
worker_frame *
worker_reader_pop(worker *w, int *eof)
{
	worker_frame *f;

	pthread_mutex_lock(&w->lock);
	f = w->qhead;
	if (f != NULL) {
		w->qhead = f->next;
		if (w->qhead == NULL)
			w->qtail = NULL;
		if (f->kind == WORKER_FRAME_DETACH)
			w->detach_queued--;
	}
	*eof = w->eof;
	pthread_mutex_unlock(&w->lock);
	return f;
}
/* Start the reader thread, with SIGINT and SIGTERM blocked in it: they
 * are meant for Python, on the main thread. */
int
worker_reader_start(worker *w, char **cause)
{
	sigset_t set, old;
	int rc;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	rc = pthread_create(&w->reader, NULL, worker_reader_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		asprintf(cause, "cannot start the reader thread");
		return -1;
	}
	return 0;
}

/* Make the reader leave and wait for it: it may sit in poll() on a client
 * that stays connected, so tell it to leave, and wake it. */
void
worker_reader_stop(worker *w)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->lock);
	w->quit = 1;
	pthread_mutex_unlock(&w->lock);
	if (write(w->rwake_fd, &one, sizeof one) < 0) {
		/* counter full: the reader is awake anyway */
	}
	pthread_join(w->reader, NULL);
}
