/*
 * worker-long.c - a client's LONG (docs/PROTOCOL.md 7.7) on the reading
 * side of its connection: the out-of-band buffers of a pushed value read
 * straight into their memory, with no copy but the read.
 *
 * The main thread judges a LONG (dispatch-long.c): its head, its body,
 * the limits, the memory its buffers get.  The thread that reads the
 * connection (the input owner, worker-reader.c) only follows: it queues
 * the LONG's head and each PART of its body as WORKER_FRAME_WAIT, and
 * reads nothing more of that connection until the main thread has served
 * the frame and answered (worker_long_answer).  Only the main thread waits
 * so, reading in its idle wait, where it serves the frame next; when the
 * reader thread takes the connections (main runs code), it waits for no
 * answer (worker_long_cancel_locked), and a LONG it reads the head or a
 * body PART of goes as frames, copied by the main thread, as any frame:
 * PING and INTERRUPT are never held up behind a LONG; the main thread,
 * reading again, queues the next PART as WAIT, and the answer to it lends
 * the buffers for the rest.  The answers:
 *  - BODY: more of the body is to come: its PARTs are queued (WAIT);
 *  - DATA: the body is in, and the buffers are allocated at their full
 *    size: from now on each PART of the LONG that fits is taken here,
 *    its header parsed, its data read by read() into the buffers (what
 *    came in the same read as the header is copied from the connection's
 *    buffer: at most one read's worth per PART); when the last byte is
 *    in, an empty PART of the LONG is queued, which tells the main thread
 *    that the buffers are full (no client PART can reach it in that
 *    state: every PART of the LONG that fits is taken here);
 *  - DROP: the LONG was refused (one ERROR said so): its PARTs are
 *    dropped here, not queued;
 *  - NONE: the LONG is over (served, or no LONG is open).
 * Anything else on the connection goes its usual way; a frame that
 * reaches the queue ends the LONG here, and the main thread, which sees
 * it while the LONG is open, answers that LONG with an ERROR (a PART of
 * it: it runs past the buffers; another frame: "interrupted by ...").
 * While the state is DATA the memory is the main thread's, lent: it
 * frees it only once the reader has let go (a frame queued after the
 * state left DATA, or the connection dropped, which only its reader or
 * the reader thread does, never while reading it).
 * Nothing here touches Python.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"

/* Input owner: how a frame about to be queued goes; see exec.h. */
int
worker_long_kind(worker_conn *c, const wire_msg *m, int may_wait)
{
	worker_long *l = &c->lng;
	int mine = m->type == WIRE_MSG_PART && m->id == l->id;

	switch (l->state) {
	case WORKER_LONG_DROP:
		if (mine)
			return -1;
		break;
	case WORKER_LONG_BODY:
		if (mine && may_wait)
			return WORKER_FRAME_WAIT;
		break;
	}
	/* DATA too: the frame ends it (the memory is the main thread's
	 * again once the frame is queued).  A PART with no LONG known here
	 * waits too: its LONG may have begun while the reader thread read
	 * (as frames), and the main thread's answer lends its buffers for
	 * the rest */
	memset(l, 0, sizeof *l);
	return may_wait && (m->type == WIRE_MSG_LONG ||
	    m->type == WIRE_MSG_PART) ? WORKER_FRAME_WAIT : WORKER_FRAME_WIRE;
}

/* The reader thread takes the connections: stop waiting for answers;
 * see exec.h. */
void
worker_long_cancel_locked(worker *w)
{
	worker_conn *c;

	for (c = w->conns; c != NULL; c = c->next)
		if (c->lng.state == WORKER_LONG_WAIT) {
			memset(&c->lng, 0, sizeof c->lng);
			c->lng.resume = 1;
		}
}

/* Account for n bytes written at the current place. */
static void
worker_long_took(worker_long *l, size_t n)
{
	l->off += n;
	l->left -= n;
	l->part_left -= n;
	while (l->idx < l->nbufs && l->off == l->dst_len[l->idx]) {
		l->idx++;
		l->off = 0;
	}
}

/* Room at the current place (the buffers are not full: left > 0). */
static size_t
worker_long_room(const worker_long *l)
{
	return (size_t)l->dst_len[l->idx] - l->off;
}

/* All in: tell the main thread with an empty PART of the LONG, and let
 * the memory go.  0, or -1 when out of memory. */
static int
worker_long_done(worker *w, worker_conn *c)
{
	uint8_t hdr[WIRE_PART_HEADER_SIZE];
	uint64_t id = c->lng.id;

	memset(&c->lng, 0, sizeof c->lng);
	wire_pipe_settle(c->fd, &c->pipe_got);  /* the pushed value is in */
	wire_part_header(hdr, id, 0);
	return worker_reader_queue(w, c, hdr, sizeof hdr, WORKER_FRAME_WIRE);
}

/* Input owner, state DATA, no PART half read: take the PARTs of the LONG
 * at the start of c->buf; see exec.h. */
int
worker_long_parse(worker *w, worker_conn *c)
{
	worker_long *l = &c->lng;
	const uint8_t *h = c->buf;
	size_t len, k, have, used;

	if (c->len < WIRE_HEADER_SIZE)
		return WIRE_NEED_MORE;
	len = wire_be32_get(h);
	if (wire_be16_get(h + 4) != WIRE_MSG_PART || wire_be16_get(h + 6) != 0 ||
	    wire_be64_get(h + 8) != l->id || len < WIRE_FIELD_HEADER_SIZE ||
	    len > c->max)
		return 0;  /* not a PART of the LONG: a frame as usual */
	if (c->len < WIRE_PART_HEADER_SIZE)
		return WIRE_NEED_MORE;
	k = len - WIRE_FIELD_HEADER_SIZE;
	if (h[WIRE_HEADER_SIZE] != WIRE_TAG_DATA ||
	    wire_be32_get(h + WIRE_HEADER_SIZE + 1) != k || k > l->left)
		return 0;  /* not one DATA field, or past the buffers: the
		              main thread says what is wrong */
	l->part_left = k;
	used = WIRE_PART_HEADER_SIZE;
	while (l->part_left > 0 && used < c->len) {
		have = c->len - used;
		if (have > l->part_left)
			have = l->part_left;
		if (have > worker_long_room(l))
			have = worker_long_room(l);
		memcpy(l->dst[l->idx] + l->off, c->buf + used, have);
		used += have;
		worker_long_took(l, have);
	}
	memmove(c->buf, c->buf + used, c->len - used);
	c->len -= used;
	if (l->left == 0 && worker_long_done(w, c) < 0)
		return WIRE_E_NOMEM;
	return WORKER_LONG_TAKEN;
}

/* Input owner, state DATA, a PART half read: read the rest of its data
 * into the buffers; see exec.h. */
int
worker_long_read(worker *w, worker_conn *c)
{
	worker_long *l = &c->lng;
	size_t n = l->part_left;
	ssize_t got;

	if (n > worker_long_room(l))
		n = worker_long_room(l);
	got = read(c->fd, l->dst[l->idx] + l->off, n);
	if (got < 0 && (errno == EINTR || errno == EAGAIN))
		return WIRE_OK;
	if (got <= 0)
		return got == 0 ? WIRE_E_EOF : WIRE_E_IO;
	worker_long_took(l, (size_t)got);
	c->pipe_got += (size_t)got;
	if (l->left == 0 && worker_long_done(w, c) < 0)
		return WIRE_E_NOMEM;
	return WIRE_OK;
}

/* Main thread: answer the WAIT frame of c just served; see exec.h. */
int
worker_long_answer(worker *w, worker_conn *c, int state, uint64_t id,
    uint8_t *const *dst, const uint64_t *len, size_t nbufs, size_t idx,
    size_t off)
{
	uint64_t one = 1;
	size_t i, left = 0;
	int reader;

	for (i = idx; state == WORKER_LONG_DATA && i < nbufs; i++)
		left += (size_t)len[i] - (i == idx ? off : 0);
	if (state == WORKER_LONG_DATA && left == 0)
		state = WORKER_LONG_NONE;  /* cannot be: it would be served */
	pthread_mutex_lock(&w->lock);
	if (c->lng.state != WORKER_LONG_WAIT) {
		/* the reader thread took over meanwhile: the LONG goes on as
		 * frames, which the main thread copies */
		pthread_mutex_unlock(&w->lock);
		return 0;
	}
	memset(&c->lng, 0, sizeof c->lng);
	if (state != WORKER_LONG_NONE) {
		c->lng.state = state;
		c->lng.id = id;
	}
	if (state == WORKER_LONG_DATA) {
		c->lng.dst = dst;
		c->lng.dst_len = len;
		c->lng.nbufs = nbufs;
		c->lng.idx = idx;
		c->lng.off = off;
		c->lng.left = left;
	}
	c->lng.resume = 1;
	reader = w->in_owner == WORKER_IN_READER;
	pthread_mutex_unlock(&w->lock);
	/* the main thread acts on it in its next wait; the reader thread
	 * must be woken to */
	if (reader && write(w->rwake_fd, &one, sizeof one) < 0) {
		/* the counter is full: the reader is awake anyway */
	}
	return 1;
}

/* Is a PART's data half read on c (its input is not at a frame's
 * start)?  w->lock held. */
int
worker_long_midpart_locked(worker_conn *c)
{
	return c->lng.state == WORKER_LONG_DATA && c->lng.part_left > 0;
}
