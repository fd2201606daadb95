/*
 * worker-reader.c - the reader thread: it takes frames off the wire and
 * queues them for the main thread, except PING, answered at once, and
 * INTERRUPT, which stops the running code with SIGINT, so that both work
 * while code runs (once HELLO is answered; before that they queue too).
 * It also sends the stop when a request's deadline passes, again every
 * second while the code swallows it, and ends the connection with an
 * ERROR on a malformed or oversized frame; when input ends it stops
 * running code too (a client that left does not keep it running).  It
 * never touches Python.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"

/* Wake the main thread (queue or state changed). */
static void
worker_reader_wake(worker *w)
{
	char c = 1;

	if (write(w->wake_fd, &c, 1) < 0 && errno != EAGAIN) {
		/* a full pipe already wakes the reader of it */
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
	pthread_kill(w->main_thread, SIGINT);
}

/* Has the main thread answered HELLO?  Until then the reader answers
 * nothing itself: a PING goes through the queue, behind the HELLO, so
 * that nothing is sent before WELCOME. */
static int
worker_reader_hello_done(worker *w)
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
	    !worker_reader_hello_done(w))
		goto queue;
	if (m->type == WIRE_MSG_INTERRUPT) {
		pthread_mutex_lock(&w->lock);
		if (w->running_id != 0 && (m->id == 0 || m->id == w->running_id))
			worker_reader_stop_locked(w, WORKER_STOP_INTERRUPT);
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
	worker_reader_wake(w);
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
			worker_reader_stop_locked(w, kind);
			due = w->stop_sent_ms + 1000;
		}
		if (due != 0)
			t = (int)(due - now > 0 ? due - now : 1);
	}
	pthread_mutex_unlock(&w->lock);
	return t;
}

/* Reader thread body: reads frames until input ends or w->quit is set,
 * then sets w->eof and wakes the main thread. */
static void *
worker_reader_main(void *arg)
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
		worker_reader_stop_locked(w, WORKER_STOP_INTERRUPT);
	pthread_mutex_unlock(&w->lock);
	worker_reader_wake(w);
	return NULL;
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
