/*
 * dispatch-long.c - messages longer than a frame, on the worker's side:
 * assembling a client's LONG and its PARTs into one request (its
 * out-of-band buffers into bytearrays that the unpickler takes as they
 * are), and sending a reply that does not fit a frame, or carries
 * buffers, as a LONG.  The codec's part is proto/wire-long.c.
 *
 * The LONG is judged here, where frames are consumed: a connection has
 * at most one LONG open; any other frame on it ends the LONG with an
 * ERROR (nothing of it was applied) and is then served as usual.  A LONG
 * refused at its head, or broken by a lying PART, gets one ERROR, and the
 * rest of its PARTs are dropped in silence (by the connection's reader).
 * Its head and body come as frames; its buffers' bytes do not: once the
 * body is in and the bytearrays allocated, the reader of the connection
 * reads the PARTs' data straight into them (worker-long.c, which says
 * how the two hand over), and queues an empty PART when they are full.
 * Every function here runs on the main thread with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exec.h"
#include "pyexec.h"

/* A LONG being received on one connection. */
struct dispatch_long {
	struct dispatch_long *next;
	worker_conn *conn;     /* where it comes from (holds a ref) */
	uint64_t id;           /* its request id */
	int dead;              /* refused: its PARTs are dropped */
	int parsed;            /* the body is complete and parsed into m */
	int direct;            /* the reader fills the buffers (lent) */
	wire_long l;           /* the codec's assembly */
	wire_msg m;            /* the carried message, once parsed */
	PyObject *bufs;        /* list of bytearrays (the buffers), or NULL */
	uint8_t **mem;         /* their memory, lent to the reader */
};

/* The send buffer asked for a client's socket before a LONG reply. */
#define DISPATCH_LONG_SNDBUF (4 << 20)

/* The LONGs open, one at most per connection. */
static struct dispatch_long *dispatch_longs;

/* The most bytes (body and buffers) one LONG may declare: the machine's
 * memory, or --memory-limit when it is lower. */
size_t
dispatch_long_limit(worker *w)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	size_t lim = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz :
	    SIZE_MAX;

	if (w->opt.memory_limit != 0 && w->opt.memory_limit < lim)
		lim = w->opt.memory_limit;
	return lim;
}

/* What sets dispatch_long_limit(), as messages say it. */
const char *
dispatch_long_limit_by(const worker *w)
{
	return w->opt.memory_limit != 0 ? "pyshelfd --memory-limit" :
	    "this machine's memory";
}

/* Unlink and free s. */
static void
dispatch_long_drop(worker *w, struct dispatch_long *s)
{
	struct dispatch_long **pp;

	for (pp = &dispatch_longs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	Py_XDECREF(s->bufs);
	free(s->mem);
	wire_msg_free(&s->m);
	wire_long_free(&s->l);
	worker_conn_unref(w, s->conn);
	free(s);
}

/* Drop the LONGs of connections that are gone (their client left half
 * way: nothing of it is applied).  A gone connection is read no more
 * (its reader, or the reader thread, dropped it, and neither was reading
 * it then): lent memory is free to go. */
void
dispatch_long_sweep(worker *w)
{
	struct dispatch_long *s, *next;
	int gone;

	for (s = dispatch_longs; s != NULL; s = next) {
		next = s->next;
		pthread_mutex_lock(&w->lock);
		gone = s->conn->gone;
		pthread_mutex_unlock(&w->lock);
		if (gone)
			dispatch_long_drop(w, s);
	}
}

/* The LONG open on c, or NULL. */
static struct dispatch_long *
dispatch_long_find(worker_conn *c)
{
	struct dispatch_long *s;

	for (s = dispatch_longs; s != NULL; s = s->next)
		if (s->conn == c)
			return s;
	return NULL;
}

/* Refuse s with an ERROR to its id; its later PARTs are dropped. */
static int
dispatch_long_fail(worker *w, struct dispatch_long *s, int code,
    const char *why)
{
	int rc;

	rc = dispatch_error(w, s->id, code, "%s message %llu (%zu bytes, and "
	    "%zu in out-of-band buffers): %s; nothing of it was applied",
	    wire_msg_name(s->l.type) != NULL ? wire_msg_name(s->l.type) :
	    "LONG", (unsigned long long)s->id, s->l.body_len,
	    s->l.buf_total, why);
	Py_CLEAR(s->bufs);
	free(s->mem);
	s->mem = NULL;
	s->direct = 0;
	wire_msg_free(&s->m);
	wire_msg_init(&s->m);
	wire_long_free(&s->l);
	s->dead = 1;
	return rc;
}

/* Start a LONG on the current connection. */
static int
dispatch_long_begin(worker *w, const wire_msg *m)
{
	struct dispatch_long *s;
	const char *why = "out of memory";
	char msg[256];
	int rc;

	if ((s = calloc(1, sizeof *s)) == NULL)
		return dispatch_error(w, m->id, WIRE_ERR_INTERNAL, "out of "
		    "memory starting LONG message %llu",
		    (unsigned long long)m->id);
	wire_msg_init(&s->m);
	s->id = m->id;
	s->conn = w->cur_conn;
	pthread_mutex_lock(&w->lock);
	worker_conn_ref_locked(s->conn);
	pthread_mutex_unlock(&w->lock);
	s->next = dispatch_longs;
	dispatch_longs = s;
	rc = wire_long_begin(&s->l, m, dispatch_long_limit(w), &why);
	if (rc == WIRE_OK || rc == WIRE_NEED_MORE)
		return 0;
	s->l.body_len = (size_t)wire_msg_u64(m, WIRE_TAG_LONG_LEN, 0);
	if (rc == WIRE_E_TOO_BIG) {
		snprintf(msg, sizeof msg, "%s (at most %zu bytes: this "
		    "machine's memory, or pyshelfd --memory-limit)", why,
		    dispatch_long_limit(w));
		why = msg;
	} else if (rc == WIRE_E_NOMEM) {
		snprintf(msg, sizeof msg, "cannot allocate its body: out of "
		    "memory (pyshelfd --memory-limit %zu)",
		    w->opt.memory_limit);
		why = msg;
	}
	return dispatch_long_fail(w, s, rc == WIRE_E_SCHEMA ?
	    WIRE_ERR_BAD_REQUEST : WIRE_ERR_TOO_BIG, why);
}

/* The body is complete: parse and check it, and allocate its buffers as
 * bytearrays.  0, or the result of an ERROR sent (s is then dead). */
static int
dispatch_long_body(worker *w, struct dispatch_long *s, int *failed)
{
	const char *why = "malformed body";
	char msg[256];
	size_t i;
	int rc;

	*failed = 1;
	rc = wire_long_parse(&s->l, &s->m, &why);
	if (rc == WIRE_OK && wire_msg_check(&s->m, &why) != WIRE_OK)
		rc = WIRE_E_SCHEMA;
	if (rc == WIRE_E_TOO_BIG) {
		snprintf(msg, sizeof msg, "%s (at most %zu bytes: this "
		    "machine's memory, or pyshelfd --memory-limit)", why,
		    dispatch_long_limit(w));
		why = msg;
	}
	if (rc != WIRE_OK)
		return dispatch_long_fail(w, s, rc == WIRE_E_TOO_BIG ?
		    WIRE_ERR_TOO_BIG : WIRE_ERR_BAD_REQUEST, why);
	if ((s->bufs = PyList_New((Py_ssize_t)s->l.nbufs)) == NULL)
		goto nomem;
	if ((s->mem = calloc(s->l.nbufs + 1, sizeof *s->mem)) == NULL)
		goto nomem;
	for (i = 0; i < s->l.nbufs; i++) {
		PyObject *b = PyByteArray_FromStringAndSize(NULL,
		    (Py_ssize_t)s->l.buf_len[i]);
		if (b == NULL)
			goto nomem;
		s->mem[i] = (uint8_t *)PyByteArray_AS_STRING(b);
		wire_mem_advise(s->mem[i], s->l.buf_len[i]);
		PyList_SET_ITEM(s->bufs, (Py_ssize_t)i, b); /* stolen */
	}
	s->parsed = 1;
	*failed = 0;
	return 0;
nomem:
	PyErr_Clear();
	snprintf(msg, sizeof msg, "cannot allocate %zu bytes for its "
	    "out-of-band buffers: out of memory (pyshelfd --memory-limit "
	    "%zu)", s->l.buf_total, w->opt.memory_limit);
	return dispatch_long_fail(w, s, WIRE_ERR_TOO_BIG, msg);
}

/* The LONG s is complete: serve the message it carries as if it had come
 * in one frame (an EXEC with a CALL_ID the session knows first goes where
 * the reader sends one: replayed from the journal, not run again), then
 * drop s. */
static int
dispatch_long_serve(worker *w, struct dispatch_long *s)
{
	int rc = 0;

	/* the whole LONG is read: its connection's pipe, grown for it by
	 * the client, goes back to its idle size (worker_long_done did
	 * already when the reader filled the buffers; EBUSY, a next
	 * transfer begun, is left to the reader's next boundary) */
	if (s->conn != NULL)
		(void)wire_pipe_shrink(s->conn->fd);
	if (s->m.type != WIRE_MSG_EXEC ||
	    wire_msg_find(&s->m, WIRE_TAG_CALL_ID) == NULL ||
	    !worker_calls_exec(w, w->cur_conn, &s->m)) {
		w->current_id = s->m.id;
		rc = dispatch_msg(w, &s->m, s->bufs);
		w->current_id = 0;
	}
	dispatch_long_drop(w, s);
	return rc;
}

/* A PART of the LONG s: into the body, then into the buffers.  Serves
 * the message when it is complete. */
static int
dispatch_long_part(worker *w, struct dispatch_long *s, const wire_msg *m)
{
	const wire_field *d = wire_msg_find(m, WIRE_TAG_DATA);
	const uint8_t *p = d->data;
	size_t n = d->len, k, idx, off, room;
	const char *why = "";
	int rc, failed;

	if (s->direct) {
		/* the reader took every PART that fits: an empty one is its
		 * word that the buffers are full; a PART it did not take runs
		 * past them */
		if (n == 0)
			return dispatch_long_serve(w, s);
		return dispatch_long_fail(w, s, WIRE_ERR_BAD_REQUEST,
		    "a PART runs past the out-of-band buffers its OOB fields "
		    "declare");
	}
	if (!s->parsed) {
		k = s->l.body_len - s->l.got;
		k = n < k ? n : k;
		rc = wire_long_add(&s->l, p, k, &why);
		if (rc == WIRE_NEED_MORE)
			return 0;
		if (rc != WIRE_OK)
			return dispatch_long_fail(w, s, WIRE_ERR_BAD_REQUEST, why);
		p += k;
		n -= k;
		if ((rc = dispatch_long_body(w, s, &failed)) != 0 || failed)
			return rc;
	}
	while (n > 0) {
		if ((room = wire_long_want(&s->l, &idx, &off)) == 0)
			return dispatch_long_fail(w, s, WIRE_ERR_BAD_REQUEST,
			    "a PART runs past the out-of-band buffers its OOB "
			    "fields declare");
		k = n < room ? n : room;
		memcpy(PyByteArray_AS_STRING(PyList_GET_ITEM(s->bufs,
		    (Py_ssize_t)idx)) + off, p, k);
		wire_long_took(&s->l, k);
		p += k;
		n -= k;
	}
	if (wire_long_want(&s->l, &idx, &off) != 0)
		return 0;
	return dispatch_long_serve(w, s);
}

/* LONG and PART; see exec.h. */
int
dispatch_long_frame(worker *w, const wire_msg *m, int *rc)
{
	struct dispatch_long *s;

	dispatch_long_sweep(w);
	s = dispatch_long_find(w->cur_conn);
	if (m->type == WIRE_MSG_PART) {
		if (s != NULL && s->id == m->id) {
			*rc = s->dead ? 0 : dispatch_long_part(w, s, m);
			return 1;
		}
		if (s != NULL)  /* not its PART: the open LONG ends */
			*rc = s->dead ? 0 : dispatch_long_fail(w, s,
			    WIRE_ERR_BAD_REQUEST, "interrupted by a PART of "
			    "another message");
		if (s != NULL)
			dispatch_long_drop(w, s);
		*rc = dispatch_error(w, m->id, WIRE_ERR_BAD_REQUEST, "PART "
		    "of message %llu, which no LONG started",
		    (unsigned long long)m->id);
		return 1;
	}
	if (s != NULL) {
		/* any other frame ends the open LONG */
		if (!s->dead) {
			char why[128];
			snprintf(why, sizeof why, "interrupted by %s after %zu "
			    "bytes", wire_msg_name(m->type) != NULL ?
			    wire_msg_name(m->type) : "a frame", s->l.got);
			dispatch_long_fail(w, s, WIRE_ERR_BAD_REQUEST, why);
		}
		dispatch_long_drop(w, s);
	}
	if (m->type != WIRE_MSG_LONG)
		return 0;
	*rc = dispatch_long_begin(w, m);
	if ((s = dispatch_long_find(w->cur_conn)) != NULL && !s->dead &&
	    s->l.body_len == 0) {
		/* an empty body: complete at once (no buffers can follow
		 * an empty body, which has no OOB field) */
		int failed;
		if ((*rc = dispatch_long_body(w, s, &failed)) == 0 && !failed)
			*rc = dispatch_long_serve(w, s);
	}
	return 1;
}

/* Answer c's reader; see exec.h.  A LONG whose body is in and whose
 * buffers are not full lends their memory to the reader from here on. */
void
dispatch_long_answer(worker *w, worker_conn *c)
{
	struct dispatch_long *s = dispatch_long_find(c);
	size_t idx = 0, off = 0;

	if (s == NULL)
		worker_long_answer(w, c, WORKER_LONG_NONE, 0, NULL, NULL, 0, 0,
		    0);
	else if (s->dead)
		worker_long_answer(w, c, WORKER_LONG_DROP, s->id, NULL, NULL, 0,
		    0, 0);
	else if (!s->parsed)
		worker_long_answer(w, c, WORKER_LONG_BODY, s->id, NULL, NULL, 0,
		    0, 0);
	else if (wire_long_want(&s->l, &idx, &off) == 0)
		worker_long_answer(w, c, WORKER_LONG_NONE, 0, NULL, NULL, 0, 0,
		    0);  /* cannot be: it was served */
	else
		s->direct = worker_long_answer(w, c, WORKER_LONG_DATA, s->id,
		    s->mem, s->l.buf_len, s->l.nbufs, idx, off);
}

/* Write n bytes at p as PARTs of id to fd, each from its memory (out_lock
 * held).  WIRE_OK or WIRE_E_IO. */
static int
dispatch_long_parts(worker *w, int fd, uint64_t id, const uint8_t *p,
    size_t n)
{
	size_t psz = wire_part_size(w->opt.max_frame), k;
	uint8_t hdr[WIRE_PART_HEADER_SIZE];
	int rc = WIRE_OK;

	while (n > 0 && rc == WIRE_OK) {
		k = n < psz ? n : psz;
		wire_part_header(hdr, id, k);
		wire_pipe_grow(fd, k);  /* the reader may have shrunk it */
		if ((rc = wire_write_all(fd, hdr, sizeof hdr)) == WIRE_OK)
			rc = wire_write_all(fd, p, k);
		p += k;
		n -= k;
	}
	return rc;
}

/* Write the frame in b as a LONG, then the buffers' bytes (views), to c,
 * under its output lock so that no other frame (the output forwarder's)
 * comes between the PARTs.  GIL released by the caller.  0 or -1. */
static int
dispatch_long_write(worker *w, worker_conn *c, const wire_buf *b,
    const Py_buffer *views, Py_ssize_t nb)
{
	size_t body = b->len - WIRE_HEADER_SIZE;
	uint64_t id = wire_be64_get(b->data + 8), total = body;
	Py_ssize_t i;
	wire_buf h;
	int rc;

	wire_buf_init(&h);
	wire_long_head(&h, wire_be16_get(b->data + 4), id, body);
	if (wire_end(&h) != WIRE_OK) {
		wire_buf_free(&h);
		return -1;
	}
	for (i = 0; i < nb; i++)
		total += (uint64_t)views[i].len;
	pthread_mutex_lock(&c->out_lock);
	if (!c->out_closed)
		wire_pipe_grow(c->out_fd, total);
	rc = c->out_closed ? WIRE_E_IO : wire_write_all(c->out_fd, h.data,
	    h.len);
	if (rc == WIRE_OK)
		rc = dispatch_long_parts(w, c->out_fd, id,
		    b->data + WIRE_HEADER_SIZE, body);
	for (i = 0; i < nb && rc == WIRE_OK; i++)
		rc = dispatch_long_parts(w, c->out_fd, id, views[i].buf,
		    (size_t)views[i].len);
	if (rc != WIRE_OK)
		c->out_closed = 1;
	pthread_mutex_unlock(&c->out_lock);
	wire_buf_free(&h);
	if (rc != WIRE_OK && !w->opt.server) {
		/* stdio: the one client is gone, so is the worker */
		pthread_mutex_lock(&w->lock);
		w->eof = 1;
		pthread_mutex_unlock(&w->lock);
	}
	return rc == WIRE_OK ? 0 : -1;
}

/* Send the frame in b (complete) with the buffers (a list of objects
 * with the buffer protocol, or NULL) as a LONG to c. */
static int
dispatch_long_send_to(worker *w, worker_conn *c, const wire_buf *b,
    PyObject *bufs)
{
	Py_ssize_t i, nb = bufs != NULL ? PyList_GET_SIZE(bufs) : 0;
	Py_buffer *views;
	int rc;

	if (w->forked)
		_exit(0); /* shipped code's child got back here: never send */
	if (c == NULL)
		return -1;
	if ((views = calloc((size_t)nb + 1, sizeof *views)) == NULL)
		return dispatch_error(w, wire_be64_get(b->data + 8),
		    WIRE_ERR_INTERNAL, "out of memory sending a reply");
	for (i = 0; i < nb; i++)
		if (PyObject_GetBuffer(PyList_GET_ITEM(bufs, i), &views[i],
		    PyBUF_SIMPLE) < 0) {
			/* nothing was sent yet: the reply is an ERROR */
			PyErr_Clear();
			while (--i >= 0)
				PyBuffer_Release(&views[i]);
			free(views);
			return dispatch_error(w, wire_be64_get(b->data + 8),
			    WIRE_ERR_INTERNAL, "an out-of-band buffer of the "
			    "reply has no contiguous memory");
		}
	if (w->opt.server) {
		/* a client's socket: PARTs of megabytes cross in a few steps
		 * each, not one per 200 KiB; only advice (net.core.wmem_max) */
		int sndbuf = DISPATCH_LONG_SNDBUF;
		(void)setsockopt(c->out_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf,
		    sizeof sndbuf);
	}
	Py_BEGIN_ALLOW_THREADS
	rc = dispatch_long_write(w, c, b, views, nb);
	Py_END_ALLOW_THREADS
	for (i = 0; i < nb; i++)
		PyBuffer_Release(&views[i]);
	free(views);
	return rc;
}

/* Send a reply that may not fit a frame; see exec.h. */
int
dispatch_long_send(worker *w, const wire_buf *b, PyObject *bufs)
{
	worker_conn *c = w->cur_conn != NULL ? w->cur_conn : w->stdio_conn;
	int rc;

	if ((bufs == NULL || PyList_GET_SIZE(bufs) == 0) &&
	    b->len - WIRE_HEADER_SIZE <= w->opt.max_frame)
		return worker_send(w, b);
	rc = dispatch_long_send_to(w, c, b, bufs);
	if (w->call != NULL) {
		/* a call's reply is journaled for a client that comes back;
		 * one this long is not: the journal keeps a sentence */
		wire_buf e;
		char msg[256];
		wire_buf_init(&e);
		wire_begin(&e, WIRE_MSG_ERROR, wire_be64_get(b->data + 8));
		wire_put_u64(&e, WIRE_TAG_ERRCODE, WIRE_ERR_TOO_BIG);
		snprintf(msg, sizeof msg, "the call's result (%zu bytes) was "
		    "sent, and is too large to keep in the call journal",
		    b->len - WIRE_HEADER_SIZE);
		wire_put_str(&e, WIRE_TAG_MESSAGE, msg);
		if (wire_end(&e) == WIRE_OK)
			(void)worker_send(w, &e);
		wire_buf_free(&e);
	}
	return rc;
}
