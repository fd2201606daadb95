/*
 * dispatch.c - serving one request: decode its frame, call the backend's
 * Python half, checkpoint what the request touched, and send the reply.
 * Every function here runs on the main thread with the GIL held.
 *
 * Order of a reply: OUTPUT frames (streamed while code runs), notices about
 * entries that cannot be persisted (OUTPUT on stderr), then RESULT / OK /
 * LISTING or ERROR.  The checkpoint runs before the reply, so a client that
 * has its reply knows the state it describes is committed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xxh.h"

#include "exec.h"
#include "pyexec.h"

static int dispatch_nomem(worker *, const wire_msg *);
static PyObject *dispatch_request_error(int, const char *);
static PyObject *dispatch_ws_get(int);
static int dispatch_nothing_to_write(worker *);
static int dispatch_no_notices(void);

/* Send an ERROR frame with a formatted message. */
int
dispatch_error(worker *w, uint64_t id, int code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	wire_buf b;
	int rc;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	worker_output_drain(w); /* the request's output before its reply */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_ERROR, id);
	wire_put_u64(&b, WIRE_TAG_ERRCODE, (uint64_t)code);
	wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
	rc = wire_end(&b) == WIRE_OK ? worker_send(w, &b) : -1;
	wire_buf_free(&b);
	return rc;
}

/* Turn the Python exception in flight into an ERROR frame. */
static int
dispatch_pyerror(worker *w, uint64_t id)
{
	PyObject *et, *ev, *etb, *s = NULL;
	const char *msg = NULL;
	long code = WIRE_ERR_INTERNAL;
	int rc;

	PyErr_Fetch(&et, &ev, &etb);
	PyErr_NormalizeException(&et, &ev, &etb);
	if (ev != NULL && PyErr_GivenExceptionMatches(ev, pymodule_RequestError)) {
		PyObject *c = PyObject_GetAttrString(ev, "code");
		if (c != NULL)
			code = PyLong_AsLong(c);
		Py_XDECREF(c);
		PyErr_Clear();
	} else if (ev != NULL &&
	    (PyErr_GivenExceptionMatches(ev, pystore_StoreError) ||
	    PyErr_GivenExceptionMatches(ev, pystore_CorruptEntry)))
		code = WIRE_ERR_STORE;  /* a damaged record is the store's */
	if (ev != NULL && (s = PyObject_Str(ev)) != NULL)
		msg = PyUnicode_AsUTF8(s);
	if (msg == NULL) {
		PyErr_Clear();
		msg = "unknown error";
	}
	if (code == WIRE_ERR_INTERNAL) {
		/* a bug in the backend: log the traceback for the operator */
		uint64_t saved = w->current_id;
		w->current_id = 0; /* the traceback goes to our stderr */
		/* PyErr_Display, not PyErr_Print: this may be a SystemExit
		 * (a __repr__ or __reduce__ of the user's raising it while a
		 * reply is made: QA6 2), which PyErr_Print would obey */
		if (et != NULL)
			PyErr_Display(et, ev, etb);
		w->current_id = saved;
	}
	rc = dispatch_error(w, id, (int)code, "%s%s%s",
	    code == WIRE_ERR_INTERNAL && et != NULL ?
	    ((PyTypeObject *)et)->tp_name : "",
	    code == WIRE_ERR_INTERNAL ? ": " : "", msg);
	Py_XDECREF(s);
	Py_XDECREF(et);
	Py_XDECREF(ev);
	Py_XDECREF(etb);
	return rc;
}

/* The Workspace's attributes that dispatch_nothing_to_write and
 * dispatch_no_notices read, by index into dispatch_ws_names. */
enum {
	DISPATCH_WS_DIRTY, DISPATCH_WS_DELETED, DISPATCH_WS_NS,
	DISPATCH_WS_NS_VERSION, DISPATCH_WS_CP_THREAD, DISPATCH_WS_NOTICES,
	DISPATCH_WS_STORE_NOTICES, DISPATCH_WS_N
};
static const char *const dispatch_ws_names[DISPATCH_WS_N] = {
	"dirty", "deleted", "ns", "ns_version", "cp_thread", "notices",
	"store_notices"
};

/* New reference to the attribute i of the Python half's Workspace (WS),
 * or NULL with no exception set. */
static PyObject *
dispatch_ws_get(int i)
{
	static PyObject *names[DISPATCH_WS_N], *ws_name;
	PyObject *ws, *v;

	if (names[i] == NULL &&
	    (names[i] = PyUnicode_InternFromString(dispatch_ws_names[i])) ==
	    NULL) {
		PyErr_Clear();
		return NULL;
	}
	if (ws_name == NULL &&
	    (ws_name = PyUnicode_InternFromString("WS")) == NULL) {
		PyErr_Clear();
		return NULL;
	}
	if ((ws = PyObject_GetAttr(pymodule_backend, ws_name)) == NULL) {
		PyErr_Clear();
		return NULL;
	}
	if ((v = PyObject_GetAttr(ws, names[i])) == NULL)
		PyErr_Clear();
	Py_DECREF(ws);
	return v;
}

/*
 * Nothing for a request's checkpoint to write: the test that
 * Workspace.checkpoint(full=0) starts with (no entry marked dirty or
 * deleted, the namespace's dict not written since its last diff, the
 * session record clean), made here so that the no-op request's path
 * does not call into the Python half.  What a request can change reaches
 * one of these: mark_reached puts what its code could reach by name, and
 * its handle arguments, in dirty; a binding or a deletion writes the
 * namespace's dict.  Also no checkpoint may run in another thread
 * (cp_thread set): it may hold this request's changes, not committed yet,
 * and the Python path waits for it.  Any doubt (an attribute missing or
 * of another type) answers no.  GIL held; never raises.
 */
static int
dispatch_nothing_to_write(worker *w)
{
	PyObject *v[DISPATCH_WS_CP_THREAD + 1] = { NULL };
	int i, idle = 0;

	if (w->sess_dirty)
		return 0;
	for (i = 0; i <= DISPATCH_WS_CP_THREAD; i++)
		if ((v[i] = dispatch_ws_get(i)) == NULL)
			goto out;
	idle = PyAnySet_CheckExact(v[DISPATCH_WS_DIRTY]) &&
	    PySet_GET_SIZE(v[DISPATCH_WS_DIRTY]) == 0 &&
	    PyAnySet_CheckExact(v[DISPATCH_WS_DELETED]) &&
	    PySet_GET_SIZE(v[DISPATCH_WS_DELETED]) == 0 &&
	    PyDict_Check(v[DISPATCH_WS_NS]) &&
	    PyLong_CheckExact(v[DISPATCH_WS_NS_VERSION]) &&
	    PyLong_AsUnsignedLongLong(v[DISPATCH_WS_NS_VERSION]) ==
	    pyns_dict_version(v[DISPATCH_WS_NS]) &&
	    v[DISPATCH_WS_CP_THREAD] == Py_None;
	if (PyErr_Occurred()) {
		PyErr_Clear();
		idle = 0;
	}
out:
	for (i = 0; i <= DISPATCH_WS_CP_THREAD; i++)
		Py_XDECREF(v[i]);
	return idle;
}

/* No notice waits to be sent (the Workspace's notices and store_notices
 * are empty lists): take_notices need not run.  GIL held; never raises. */
static int
dispatch_no_notices(void)
{
	PyObject *a = dispatch_ws_get(DISPATCH_WS_NOTICES),
	    *b = dispatch_ws_get(DISPATCH_WS_STORE_NOTICES);
	int none = a != NULL && b != NULL && PyList_CheckExact(a) &&
	    PyList_GET_SIZE(a) == 0 && PyList_CheckExact(b) &&
	    PyList_GET_SIZE(b) == 0;

	Py_XDECREF(a);
	Py_XDECREF(b);
	return none;
}

/* Checkpoint: 0 after a request, 1 on the interval (the Python half's
 * interval_checkpoint decides whether loaded mutable entries are looked
 * at: a request ran, shipped threads are alive, or its round robin has
 * not looked at them all yet), 2 everything.  On failure the exception
 * is left set and -1 returned. */
static int
dispatch_checkpoint_raw(worker *w, int full)
{
	PyObject *r;

	if (pystore_refuse_child(1))
		return -1;  /* a fork in shipped code never commits */
	if (w->opt.mode == 'r')
		return 0; /* read-only: nothing is ever written */
	if (full == 0)
		w->requests_since_full = 1;  /* a request ran */
	/* the no-op request's path: the checkpoint would return at once,
	 * and what a restart now would lose has not changed */
	if (full == 0 && dispatch_nothing_to_write(w))
		return 0;
	if (full == 1)
		r = pymodule_call("interval_checkpoint", Py_BuildValue("{s:i}",
		    "request_ran", w->requests_since_full));
	else
		r = pymodule_call("checkpoint", Py_BuildValue("{s:i}", "full",
		    full));
	if (r == NULL)
		return -1;  /* a failed full checkpoint is tried again */
	Py_DECREF(r);
	worker_restart_note(w);  /* what a hard restart now would lose */
	if (full != 0)
		w->requests_since_full = 0;
	return 0;
}

/* The last full-store message an interval checkpoint printed: while the
 * store stays full, each interval tries again, and says so only when what
 * it could not write changed. */
static char *dispatch_last_full;

/* Print the message of the StoreError that is set (cleared here) on one
 * line: a full store's as it is (an interval checkpoint, full == 1, only
 * when it changed since the last one), any other as a failed
 * checkpoint's. */
static void
dispatch_print_store_error(int is_full, int full)
{
	PyObject *et, *ev, *etb, *s;
	const char *p;

	PyErr_Fetch(&et, &ev, &etb);
	s = ev != NULL ? PyObject_Str(ev) : NULL;
	p = s != NULL ? PyUnicode_AsUTF8(s) : NULL;
	if (p == NULL) {
		PyErr_Clear();
		p = is_full ? "checkpoint incomplete: store is full" :
		    "store error";
	}
	if (!is_full)
		fprintf(stderr, "pyshelfd: checkpoint failed: %s\n", p);
	else {
		if (full != 1 || dispatch_last_full == NULL ||
		    strcmp(dispatch_last_full, p) != 0)
			fprintf(stderr, "pyshelfd: %s\n", p);
		free(dispatch_last_full);
		dispatch_last_full = strdup(p);
	}
	Py_XDECREF(s);
	Py_XDECREF(et);
	Py_XDECREF(ev);
	Py_XDECREF(etb);
}

/* Checkpoint outside a request; failures are logged to stderr. */
int
dispatch_checkpoint(worker *w, int full)
{
	uint64_t saved = w->current_id;

	w->current_id = 0;
	if (dispatch_checkpoint_raw(w, full) < 0) {
		/* a full store is an expected condition with a message that
		 * names what is missing (the client's stderr shows it at
		 * close): no traceback */
		if (PyErr_ExceptionMatches(pystore_StoreFull)) {
			dispatch_print_store_error(1, full);
		} else if (PyErr_ExceptionMatches(pystore_StoreError)) {
			/* its message says what failed (a durable step, an
			 * entry a thread kept changing): no traceback */
			dispatch_print_store_error(0, full);
		} else {
			fprintf(stderr, "pyshelfd: checkpoint failed:\n");
			PyErr_Print();
		}
		w->current_id = saved;
		return -1;
	}
	free(dispatch_last_full);
	dispatch_last_full = NULL;
	w->current_id = saved;
	return 0;
}

/* Send the backend's notices about volatile entries as stderr output. */
void
dispatch_notices(worker *w)
{
	PyObject *l;
	Py_ssize_t i;

	if (dispatch_no_notices())
		return;
	l = PyObject_CallMethod(pymodule_backend, "take_notices", NULL);
	if (l == NULL) {
		PyErr_Clear();
		return;
	}
	for (i = 0; PyList_Check(l) && i < PyList_GET_SIZE(l); i++) {
		Py_ssize_t n;
		const char *p = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(l, i), &n);
		if (p == NULL) {
			PyErr_Clear();
			continue;
		}
		worker_output(w, 2, "pyshelf: ", 9);
		worker_output(w, 2, p, (size_t)n);
	}
	Py_DECREF(l);
}

/* At detach: tell the client about shipped code's threads that are still
 * running (the backend's threads_notice() names them, the non-daemon ones
 * apart: pyshelfd waits a little for those, then exits without them). */
static void
dispatch_threads_notice(worker *w)
{
	PyObject *s = PyObject_CallMethod(pymodule_backend, "threads_notice", NULL);
	const char *p;
	Py_ssize_t n;

	if (s == NULL) {
		PyErr_Clear();
		return;
	}
	if (PyUnicode_Check(s) && (p = PyUnicode_AsUTF8AndSize(s, &n)) != NULL &&
	    n > 0)
		worker_output(w, 2, p, (size_t)n);
	PyErr_Clear();
	Py_DECREF(s);
}

/* Checkpoint what a request touched, then send the notices it produced.
 * Returns 0, or 1 when the checkpoint failed and an ERROR STORE went out
 * in place of the reply. */
static int
dispatch_commit(worker *w, uint64_t id)
{
	PyObject *et, *ev, *etb, *s;
	int full;

	if (dispatch_checkpoint_raw(w, 0) == 0) {
		dispatch_notices(w);
		return 0;
	}
	PyErr_Fetch(&et, &ev, &etb);
	PyErr_NormalizeException(&et, &ev, &etb);
	full = ev != NULL && PyErr_GivenExceptionMatches(ev, pystore_StoreFull);
	s = ev != NULL ? PyObject_Str(ev) : NULL;
	if (s == NULL)
		PyErr_Clear();
	dispatch_notices(w);
	/* a full store: the message names what was not written, and the
	 * rest of the checkpoint is committed (Workspace.checkpoint) */
	if (full)
		dispatch_error(w, id, WIRE_ERR_STORE, "the request ran; %s",
		    s != NULL ? PyUnicode_AsUTF8(s) :
		    "checkpoint incomplete: store is full");
	else
		dispatch_error(w, id, WIRE_ERR_STORE, "the request ran, but "
		    "its checkpoint failed: %s; the workspace is intact in "
		    "this backend's memory and the checkpoint is retried with "
		    "the next request or sync()",
		    s != NULL ? PyUnicode_AsUTF8(s) : "unknown error");
	PyErr_Clear();
	Py_XDECREF(s);
	Py_XDECREF(et);
	Py_XDECREF(ev);
	Py_XDECREF(etb);
	return 1;
}

/* Send the reply in b and free it. */
static int
dispatch_send(worker *w, wire_buf *b)
{
	int rc;

	worker_output_drain(w); /* the request's output before its reply */
	rc = wire_end(b) == WIRE_OK ? worker_send(w, b) : -1;

	wire_buf_free(b);
	return rc;
}

/* Finish a request whose reply is in b: checkpoint, notices, send.  On a
 * failed checkpoint the reply becomes ERROR STORE. */
static int
dispatch_finish(worker *w, uint64_t id, wire_buf *b)
{
	if (dispatch_commit(w, id) != 0) {
		wire_buf_free(b);
		return 0;
	}
	return dispatch_send(w, b);
}

/* dispatch_finish for a request that runs no shipped code and changes
 * nothing (a listing, STATS), or whose full checkpoint looked at every
 * entry (SYNC, DETACH): the interval checkpoints do not start a new
 * round robin for it, so that a client polling stats() or keys() leaves
 * an idle workspace idle. */
static int
dispatch_finish_read(worker *w, uint64_t id, wire_buf *b)
{
	int ran = w->requests_since_full;
	int rc = dispatch_finish(w, id, b);

	w->requests_since_full = ran;
	return rc;
}

/*
 * Put a Python str (or None) into a text field, as a C client can read it:
 * valid UTF-8 with no NUL.  A lone surrogate (a type or message made from
 * bytes with surrogateescape) is written \udcxx, a NUL \x00, as repr()
 * would; the field is never left out (a RESULT's TYPE_NAME is required).
 */
static void
dispatch_put_pystr(wire_buf *b, uint8_t tag, PyObject *o)
{
	PyObject *enc = NULL;
	Py_ssize_t n, i, nul = 0;
	const char *p;
	uint8_t *q;

	if (o == NULL || o == Py_None)
		return;
	if ((p = PyUnicode_AsUTF8AndSize(o, &n)) == NULL) {
		PyErr_Clear();
		enc = PyUnicode_Check(o) ? PyUnicode_AsEncodedString(o, "utf-8",
		    "backslashreplace") : NULL;
		if (enc == NULL) {
			PyErr_Clear();
			wire_put_str(b, tag, "?");
			return;
		}
		p = PyBytes_AS_STRING(enc);
		n = PyBytes_GET_SIZE(enc);
	}
	for (i = 0; i < n; i++)
		nul += p[i] == '\0';
	if (nul == 0)
		wire_put_bytes(b, tag, p, (size_t)n);
	else if ((q = wire_put_reserve(b, tag, (size_t)(n + 3 * nul))) != NULL)
		for (i = 0; i < n; i++) {
			if (p[i] != '\0') {
				*q++ = (uint8_t)p[i];
				continue;
			}
			memcpy(q, "\\x00", 4);
			q += 4;
		}
	Py_XDECREF(enc);
}

/* WANT_VALUE: 0 a handle, 1 the pickle, WIRE_WANT_REPR/JSON text; any
 * other value asks for the value (as 1 did before there were modes). */
static int
dispatch_want(const wire_msg *m, uint64_t dflt)
{
	uint64_t v = wire_msg_u64(m, WIRE_TAG_WANT_VALUE, dflt);

	return v <= WIRE_WANT_JSON ? (int)v : 1;
}

/* RESULT frame from (kind, handle, type, exc_type, message, value).  The
 * checkpoint runs first, so that a new handle's reply can say whether it
 * could be persisted (VOLATILE). */
static int
dispatch_result(worker *w, uint64_t id, PyObject *res)
{
	PyObject *kind, *handle, *tn, *et, *msg, *val, *vol = NULL; /* borrowed
	                                                         but vol */
	PyObject *bufs = NULL;  /* borrowed: the value's out-of-band buffers */
	Py_ssize_t i;
	uint8_t cid[16];
	wire_buf b;
	int rc;

	if (!PyArg_ParseTuple(res, "OOOOOO", &kind, &handle, &tn, &et, &msg,
	    &val))
		return dispatch_pyerror(w, id);
	if (dispatch_commit(w, id) != 0)
		return 0;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_RESULT, id);
	if (worker_calls_current(w, cid))
		wire_put_bytes(&b, WIRE_TAG_CALL_ID, cid, sizeof cid);
	wire_put_u64(&b, WIRE_TAG_KIND, PyLong_AsUnsignedLongLong(kind));
	if (PyLong_AsLong(kind) != WIRE_KIND_DIRECT &&
	    PyLong_AsLong(kind) != WIRE_KIND_TEXT) {
		wire_put_u64(&b, WIRE_TAG_HANDLE,
		    PyLong_AsUnsignedLongLong(handle));
		vol = pymodule_call("volatile_of", Py_BuildValue("{s:O}",
		    "hid", handle));
	}
	dispatch_put_pystr(&b, WIRE_TAG_TYPE_NAME, tn);
	dispatch_put_pystr(&b, WIRE_TAG_EXC_TYPE, et);
	dispatch_put_pystr(&b, WIRE_TAG_MESSAGE, msg);
	/* a value with out-of-band buffers: (pickle, [buffer, ...]), the
	 * buffers sent from their memory after the body (a LONG) */
	if (PyTuple_Check(val) && PyTuple_GET_SIZE(val) == 2 &&
	    PyList_Check(PyTuple_GET_ITEM(val, 1))) {
		bufs = PyTuple_GET_ITEM(val, 1);
		val = PyTuple_GET_ITEM(val, 0);
	}
	if (PyBytes_Check(val))
		wire_put_bytes(&b, WIRE_TAG_VALUE, PyBytes_AS_STRING(val),
		    (size_t)PyBytes_GET_SIZE(val));
	for (i = 0; bufs != NULL && i < PyList_GET_SIZE(bufs); i++) {
		Py_ssize_t n = PyObject_Length(PyList_GET_ITEM(bufs, i));
		wire_put_u64(&b, WIRE_TAG_OOB, n < 0 ? 0 : (uint64_t)n);
	}
	dispatch_put_pystr(&b, WIRE_TAG_VOLATILE, vol);
	Py_XDECREF(vol);
	if (PyErr_Occurred())
		PyErr_Clear();
	worker_output_drain(w); /* the request's output before its reply */
	if ((rc = wire_end(&b)) != WIRE_OK) {
		/* the reply could not be built (the pickle copied into it: out
		 * of memory, or a field over 4 GiB): say so, never leave the
		 * client waiting for a reply that does not come (QA6 1) */
		wire_buf_free(&b);
		return dispatch_error(w, id, WIRE_ERR_TOO_BIG, "the result (%zu "
		    "bytes pickled) cannot be sent: %s (at most %zu bytes: %s); "
		    "the call ran: return a handle to it (no DirectValue) to "
		    "keep it", PyBytes_Check(val) ? (size_t)PyBytes_GET_SIZE(val) :
		    (size_t)0, rc == WIRE_E_NOMEM ? "out of memory building its "
		    "reply" : "its pickle does not fit a reply's field of 4 GiB",
		    dispatch_long_limit(w), dispatch_long_limit_by(w));
	}
	rc = dispatch_long_send(w, &b, bufs);
	wire_buf_free(&b);
	return rc;
}

/*
 * The value of the VALUE or ARG_PICKLE field m->fields[*i]: its pickle
 * (bytes), or, when OOB fields follow it, (pickle, [bytearray, ...]) with
 * the next of the LONG's buffers (oob; *k counts those taken).  *i moves
 * past the OOB fields.  NULL with a RequestError when the OOB fields do
 * not match the buffers.
 */
static PyObject *
dispatch_value(const wire_msg *m, size_t *i, PyObject *oob, Py_ssize_t *k)
{
	const wire_field *f = &m->fields[*i];
	PyObject *pk, *l, *t;
	size_t j = *i + 1;
	Py_ssize_t n = 0;

	while (j < m->nfields && m->fields[j].tag == WIRE_TAG_OOB) {
		j++;
		n++;
	}
	pk = PyBytes_FromStringAndSize((const char *)f->data,
	    (Py_ssize_t)f->len);
	if (pk == NULL || n == 0) {
		*i = j - 1;
		return pk;
	}
	if (oob == NULL || *k + n > PyList_GET_SIZE(oob)) {
		Py_DECREF(pk);
		return dispatch_request_error(WIRE_ERR_BAD_REQUEST, "OOB fields "
		    "come only in a message carried by a LONG");
	}
	l = PyList_GetSlice(oob, *k, *k + n);
	t = l != NULL ? PyTuple_Pack(2, pk, l) : NULL;
	Py_DECREF(pk);
	Py_XDECREF(l);
	*k += n;
	*i = j - 1;
	return t;
}

/*
 * The MemoryError in flight was raised copying m's values (its VALUE or
 * ARG_PICKLE fields) out of the frame: ERROR{TOO_BIG} that names their
 * size and the limit, as a LONG refused at its head says them, instead
 * of INTERNAL with str(MemoryError()), which is empty, and a traceback on
 * stderr.  Clears the error; nothing of m was applied.
 */
static int
dispatch_nomem(worker *w, const wire_msg *m)
{
	size_t pk = 0, oob = 0, i;

	PyErr_Clear();
	for (i = 0; i < m->nfields; i++)
		if (m->fields[i].tag == WIRE_TAG_VALUE ||
		    m->fields[i].tag == WIRE_TAG_ARG_PICKLE)
			pk += m->fields[i].len;
		else if (m->fields[i].tag == WIRE_TAG_OOB)
			oob += (size_t)wire_field_u64(&m->fields[i]);
	return dispatch_error(w, m->id, WIRE_ERR_TOO_BIG, "%s message %llu "
	    "(%zu bytes pickled, and %zu in out-of-band buffers): cannot copy "
	    "its value: out of memory (at most %zu bytes: %s; a value pickled "
	    "in-band needs room for its pickle and for itself); nothing of it "
	    "was applied", wire_msg_name(m->type) != NULL ?
	    wire_msg_name(m->type) : "a", (unsigned long long)m->id, pk, oob,
	    dispatch_long_limit(w), dispatch_long_limit_by(w));
}

/* An OOB field where none may be: after a field that is not a pickle. */
static int
dispatch_oob_misplaced(const wire_msg *m)
{
	size_t i;

	for (i = 0; i < m->nfields; i++)
		if (m->fields[i].tag == WIRE_TAG_OOB && (i == 0 ||
		    (m->fields[i - 1].tag != WIRE_TAG_OOB &&
		    m->fields[i - 1].tag != WIRE_TAG_VALUE &&
		    m->fields[i - 1].tag != WIRE_TAG_ARG_PICKLE)))
			return 1;
	return 0;
}

/* Set a RequestError(code, msg) and return NULL. */
static PyObject *
dispatch_request_error(int code, const char *msg)
{
	PyObject *e = PyObject_CallFunction(pymodule_RequestError, "is", code,
	    msg);

	if (e != NULL) {
		PyErr_SetObject(pymodule_RequestError, e);
		Py_DECREF(e);
	}
	return NULL;
}

/* A str object from a field (UTF-8, strict). */
static PyObject *
dispatch_field_str(const wire_field *f)
{
	return PyUnicode_DecodeUTF8((const char *)f->data, (Py_ssize_t)f->len,
	    "strict");
}

/* The KEY of GET, SET, DEL as a str; NULL with a RequestError
 * (BAD_REQUEST: the client's error) when it is not UTF-8. */
static PyObject *
dispatch_key(const wire_msg *m)
{
	const wire_field *f = wire_msg_find(m, WIRE_TAG_KEY);
	PyObject *k = dispatch_field_str(f), *e;

	if (k == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
		PyErr_Clear();
		e = PyObject_CallFunction(pymodule_RequestError, "is",
		    WIRE_ERR_BAD_REQUEST, "KEY is not UTF-8: a global's name is "
		    "UTF-8 text");
		if (e != NULL) {
			PyErr_SetObject(pymodule_RequestError, e);
			Py_DECREF(e);
		}
	}
	return k;
}

/* EXEC: run shipped code (oob: a LONG's buffers, or NULL). */
static int
dispatch_exec(worker *w, const wire_msg *m, PyObject *oob)
{
	const wire_field *code = wire_msg_find(m, WIRE_TAG_CODE),
	    *func = wire_msg_find(m, WIRE_TAG_FUNC);
	PyObject *pcode = NULL, *pfunc = NULL, *args = NULL, *dg = NULL,
	    *a = NULL, *res = NULL;
	const wire_field *cid = wire_msg_find(m, WIRE_TAG_CALL_ID);
	XXH128_hash_t h;
	uint8_t d[16];
	Py_ssize_t k = 0;
	size_t i;
	int rc;

	/* a call id: from now on its reply, whatever it is, ends the call
	 * (and goes to its joiners) */
	if (cid != NULL && cid->len == 16)
		worker_calls_begin(w, cid->data, m->id, w->cur_conn);
	if ((pcode = dispatch_field_str(code)) == NULL)
		goto error;
	if (func != NULL) {
		if ((pfunc = dispatch_field_str(func)) == NULL)
			goto error;
	} else
		pfunc = Py_NewRef(Py_None);
	h = XXH3_128bits(code->data, code->len);
	wire_be64_put(d, h.high64);
	wire_be64_put(d + 8, h.low64);
	if ((dg = PyBytes_FromStringAndSize((const char *)d, 16)) == NULL ||
	    (args = PyList_New(0)) == NULL)
		goto error;
	for (i = 0; i < m->nfields; i++) {
		const wire_field *f = &m->fields[i];
		if (f->tag == WIRE_TAG_ARG_HANDLE)
			a = PyLong_FromUnsignedLongLong(wire_field_u64(f));
		else if (f->tag == WIRE_TAG_ARG_PICKLE)
			a = dispatch_value(m, &i, oob, &k);
		else
			continue;
		if (a == NULL && PyErr_ExceptionMatches(PyExc_MemoryError)) {
			rc = dispatch_nomem(w, m);
			goto out;
		}
		if (a == NULL || PyList_Append(args, a) < 0)
			goto error;
		Py_CLEAR(a);
	}
	worker_set_running(w, m->id, wire_msg_u64(m, WIRE_TAG_TIMEOUT_MS, 0));
	worker_reader_detach_early(w);  /* no DETACH waits behind it */
	res = pymodule_call("exec_request", Py_BuildValue(
	    "{s:O,s:O,s:O,s:O,s:i,s:i}", "code", pcode, "func", pfunc,
	    "digest", dg, "args", args, "want_value", dispatch_want(m, 0),
	    "oob", wire_msg_u64(m, WIRE_TAG_OOB_OK, 0) != 0));
	worker_set_running(w, 0, 0);
	if (res == NULL)
		goto error;
	rc = dispatch_result(w, m->id, res);
	goto out;
error:
	if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
		PyErr_Clear();
		rc = dispatch_error(w, m->id, WIRE_ERR_BAD_REQUEST,
		    "source or function name is not valid UTF-8");
	} else
		rc = dispatch_pyerror(w, m->id);
out:
	Py_XDECREF(pcode);
	Py_XDECREF(pfunc);
	Py_XDECREF(args);
	Py_XDECREF(dg);
	Py_XDECREF(a);
	Py_XDECREF(res);
	return rc;
}

/* Reply OK after a checkpoint: SET's or DEL's, which say themselves
 * that a request ran, or the full one of SYNC or DETACH, after which the
 * interval checkpoints need no new round robin (dispatch_finish_read). */
static int
dispatch_ok(worker *w, uint64_t id)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_OK, id);
	return dispatch_finish_read(w, id, &b);
}

/* HELLO: check the version, answer WELCOME with the session. */
static int
dispatch_hello(worker *w, const wire_msg *m)
{
	uint64_t v = wire_msg_u64(m, WIRE_TAG_VERSION, 0);
	wire_buf b;
	int rc;

	if (v != WIRE_PROTOCOL_VERSION)
		return dispatch_error(w, m->id, WIRE_ERR_VERSION, "protocol "
		    "version %llu is not supported; this pyshelfd speaks %d",
		    (unsigned long long)v, WIRE_PROTOCOL_VERSION);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_WELCOME, m->id);
	wire_put_u64(&b, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&b, WIRE_TAG_NAME, "pyshelfd " PACKAGE_VERSION);
	wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
	wire_put_u64(&b, WIRE_TAG_MAX_FRAME, w->opt.max_frame);
	wire_put_bytes(&b, WIRE_TAG_SESSION_ID, w->sess.id, STORE_ID_SIZE);
	wire_put_str(&b, WIRE_TAG_SESSION, w->sess.name);
	wire_put_u64(&b, WIRE_TAG_CREATED, (uint64_t)w->created);
	dispatch_put_lease(w, &b);
	if (w->has_ended) {
		char text[768], msg[1024];
		worker_session_tomb_text(&w->ended, text, sizeof text);
		snprintf(msg, sizeof msg, "a new, empty session was created: "
		    "%s", text);
		wire_put_u64(&b, WIRE_TAG_ENDED_MS, w->ended.ended_ms);
		wire_put_str(&b, WIRE_TAG_REASON, tomb_why_name(w->ended.why));
		wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
	}
	rc = wire_end(&b) == WIRE_OK ? worker_send(w, &b) : -1;
	wire_buf_free(&b);
	/* after WELCOME went out: from now on the reader answers PING */
	pthread_mutex_lock(&w->lock);
	w->hello_done = 1;
	if (w->cur_conn != NULL)
		w->cur_conn->attached = 1;
	pthread_mutex_unlock(&w->lock);
	return rc;
}

/* The lease fields of WELCOME and ATTACHED. */
void
dispatch_put_lease(worker *w, wire_buf *b)
{
	wire_put_u64(b, WIRE_TAG_LEASE_MS, w->sess.lease_ms);
	if (w->sess.lease_ms != 0)
		wire_put_u64(b, WIRE_TAG_EXPIRES_MS, w->sess.lease_ms >
		    UINT64_MAX - w->sess.last_seen_ms ? UINT64_MAX :
		    w->sess.last_seen_ms + w->sess.lease_ms);
}



/* PING that reached the queue (it came before HELLO was answered): PONG
 * in its turn. */
static int
dispatch_ping(worker *w, const wire_msg *m)
{
	wire_buf b;
	int rc;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_PONG, m->id);
	rc = wire_end(&b) == WIRE_OK ? worker_send(w, &b) : -1;
	wire_buf_free(&b);
	return rc;
}

/* Write the session record with its new lease (a live session only). */
static int
dispatch_lease_txn(store_txn *t, void *arg)
{
	worker *w = arg;
	store_session ss;
	int rc;

	if ((rc = session_get_by_id(t, w->sess.id, &ss)) != 0)
		return rc;
	if (ss.state != STORE_STATE_LIVE)
		return STORE_E_DEAD;
	return session_put(t, &w->sess);
}

/* SET_LEASE (ws.lease = S): the session's lease from now on (0:
 * forever), committed at once and counted from now; OK says the lease
 * and when it runs out. */
static int
dispatch_set_lease(worker *w, const wire_msg *m)
{
	store_session old = w->sess;
	wire_buf b;
	int rc;

	w->sess.lease_ms = wire_msg_u64(m, WIRE_TAG_LEASE_MS, 0);
	w->sess.last_seen_ms = store_now_ms();
	if ((rc = store_write(w->st, dispatch_lease_txn, w)) != 0) {
		w->sess.lease_ms = old.lease_ms;
		w->sess.last_seen_ms = old.last_seen_ms;
		return dispatch_error(w, m->id, rc == STORE_E_DEAD ?
		    WIRE_ERR_SESSION_DEAD : WIRE_ERR_STORE, "setting the "
		    "lease: %s", store_strerror(rc));
	}
	worker_lease_kick(w, w->sess.lease_ms);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_OK, m->id);
	dispatch_put_lease(w, &b);
	rc = wire_end(&b) == WIRE_OK ? worker_send(w, &b) : -1;
	wire_buf_free(&b);
	return rc;
}

/* GET: a global by value, or (WANT_VALUE=0) as a handle. */
static int
dispatch_get(worker *w, const wire_msg *m)
{
	PyObject *k, *res;
	int rc;

	if ((k = dispatch_key(m)) == NULL)
		return dispatch_pyerror(w, m->id);
	res = pymodule_call("get_request", Py_BuildValue("{s:O,s:i,s:i}",
	    "name", k, "want_value", dispatch_want(m, 1), "oob",
	    wire_msg_u64(m, WIRE_TAG_OOB_OK, 0) != 0));
	Py_DECREF(k);
	if (res == NULL)
		return dispatch_pyerror(w, m->id);
	rc = dispatch_result(w, m->id, res);
	Py_DECREF(res);
	return rc;
}

/* SET / DEL of a global (oob: a LONG's buffers, or NULL). */
static int
dispatch_set_del(worker *w, const wire_msg *m, PyObject *oob)
{
	PyObject *k, *res, *v = NULL;
	Py_ssize_t nb = 0;
	size_t i;

	if ((k = dispatch_key(m)) == NULL)
		return dispatch_pyerror(w, m->id);
	for (i = 0; m->type == WIRE_MSG_SET && i < m->nfields; i++)
		if (m->fields[i].tag == WIRE_TAG_VALUE) {
			v = dispatch_value(m, &i, oob, &nb);
			break;
		}
	if (m->type == WIRE_MSG_SET && v == NULL) {
		Py_DECREF(k);
		if (PyErr_ExceptionMatches(PyExc_MemoryError))
			return dispatch_nomem(w, m);
		return dispatch_pyerror(w, m->id);
	}
	if (m->type == WIRE_MSG_SET)
		res = pymodule_call("set_request", Py_BuildValue("{s:O,s:N}",
		    "name", k, "data", v));
	else
		res = pymodule_call("del_request", Py_BuildValue("{s:O}",
		    "name", k));
	Py_DECREF(k);
	if (res == NULL)
		return dispatch_pyerror(w, m->id);
	Py_DECREF(res);
	/* it bound or deleted (running a __del__ or an unpickled value's
	 * code): the interval checkpoints look at every entry again */
	w->requests_since_full = 1;
	return dispatch_ok(w, m->id);
}

/* Put one listing item: str -> tag, int -> u64 tag. */
static void
dispatch_put_item(wire_buf *b, uint8_t tag, PyObject *o)
{
	if (PyLong_Check(o))
		wire_put_u64(b, tag, PyLong_AsUnsignedLongLong(o));
	else
		dispatch_put_pystr(b, tag, o);
}

/* KEYS, HANDLES, LOST: a LISTING of rows of fields. */
static int
dispatch_listing(worker *w, const wire_msg *m)
{
	/* an exception's handle (FLAG_EXCINFO) adds EXC_TYPE and MESSAGE */
	static const uint8_t handles_tags[] = {WIRE_TAG_HANDLE,
	    WIRE_TAG_TYPE_NAME, WIRE_TAG_EXC_TYPE, WIRE_TAG_MESSAGE};
	static const uint8_t lost_tags[] = {WIRE_TAG_KEY, WIRE_TAG_TYPE_NAME,
	    WIRE_TAG_MESSAGE};
	const char *fn = m->type == WIRE_MSG_KEYS ? "keys_request" :
	    m->type == WIRE_MSG_HANDLES ? "handles_request" : "lost_request";
	const uint8_t *tags = m->type == WIRE_MSG_HANDLES ? handles_tags :
	    lost_tags;
	PyObject *l = PyObject_CallMethod(pymodule_backend, fn, NULL);
	Py_ssize_t i, j;
	wire_buf b;

	if (l == NULL)
		return dispatch_pyerror(w, m->id);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_LISTING, m->id);
	for (i = 0; i < PyList_GET_SIZE(l); i++) {
		PyObject *row = PyList_GET_ITEM(l, i); /* borrowed */
		if (m->type == WIRE_MSG_KEYS) {
			dispatch_put_item(&b, WIRE_TAG_KEY, row);
			continue;
		}
		for (j = 0; PyTuple_Check(row) && j < PyTuple_GET_SIZE(row) &&
		    j < (m->type == WIRE_MSG_HANDLES ? 4 : 3); j++)
			dispatch_put_item(&b, tags[j], PyTuple_GET_ITEM(row, j));
	}
	Py_DECREF(l);
	if (PyErr_Occurred())
		PyErr_Clear();
	return dispatch_finish_read(w, m->id, &b);
}

/* STATS: a LISTING with one DATA field of JSON. */
static int
dispatch_stats(worker *w, const wire_msg *m)
{
	PyObject *s = PyObject_CallMethod(pymodule_backend, "stats", NULL);
	wire_buf b;

	if (s == NULL)
		return dispatch_pyerror(w, m->id);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_LISTING, m->id);
	dispatch_put_pystr(&b, WIRE_TAG_DATA, s);
	Py_DECREF(s);
	return dispatch_finish_read(w, m->id, &b);
}

/* RELEASE: drop handles; no reply. */
static int
dispatch_release(worker *w, const wire_msg *m)
{
	PyObject *ids = PyList_New(0), *ws = NULL, *r;
	size_t i;

	if (ids == NULL)
		goto error;
	for (i = 0; i < m->nfields; i++) {
		PyObject *n;
		if (m->fields[i].tag != WIRE_TAG_HANDLE)
			continue;
		n = PyLong_FromUnsignedLongLong(wire_field_u64(&m->fields[i]));
		if (n == NULL || PyList_Append(ids, n) < 0) {
			Py_XDECREF(n);
			goto error;
		}
		Py_DECREF(n);
	}
	if ((ws = PyObject_GetAttrString(pymodule_backend, "WS")) == NULL)
		goto error;
	if ((r = PyObject_CallMethod(ws, "release", "O", ids)) == NULL)
		goto error;
	Py_DECREF(r);
	Py_DECREF(ws);
	Py_DECREF(ids);
	return 0;
error:
	fprintf(stderr, "pyshelfd: release failed:\n");
	PyErr_Print();
	Py_XDECREF(ws);
	Py_XDECREF(ids);
	return 0;
}

/* End the session, leaving its tombstone. */
static int
dispatch_kill_txn(store_txn *t, void *arg)
{
	return session_end(t, arg, STORE_END_CLOSED, store_now_ms(), NULL);
}

/* CLOSE: end the session for good: tombstone, mark dead, purge, reply,
 * exit. */
static int
dispatch_close(worker *w, const wire_msg *m)
{
	int rc = store_write(w->st, dispatch_kill_txn, w->sess.id);
	wire_buf b;

	if (rc == 0)
		rc = session_purge(w->st, w->sess.id, 1000, NULL);
	if (rc == 0) /* the lock itself goes when this process exits */
		session_lock_remove(w->st, w->sess.id);
	if (rc != 0)
		return dispatch_error(w, m->id, WIRE_ERR_STORE, "closing the "
		    "session: %s", store_strerror(rc));
	pthread_mutex_lock(&w->lock);   /* the reader refuses attaches now */
	w->closed = 1;
	pthread_mutex_unlock(&w->lock);
	w->detached = 1;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_OK, m->id);
	rc = wire_end(&b) == WIRE_OK ? worker_send(w, &b) : -1;
	wire_buf_free(&b);
	if (w->opt.server) {
		/* the session is gone for every other client too */
		wire_buf_init(&b);
		wire_begin(&b, WIRE_MSG_ERROR, 0);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_SESSION_DEAD);
		wire_put_str(&b, WIRE_TAG_MESSAGE, "the session was closed "
		    "(close_session) by another client");
		wire_put_u64(&b, WIRE_TAG_ENDED_MS, store_now_ms());
		wire_put_str(&b, WIRE_TAG_REASON, tomb_why_name(STORE_END_CLOSED));
		if (wire_end(&b) == WIRE_OK)
			worker_conn_broadcast(w, w->cur_conn, &b);
		wire_buf_free(&b);
	}
	return rc;
}

/* Server mode: DETACH (the reader queued it, and reads its connection no
 * more: worker_reader_detach).  As in stdio mode, whose exit syncs: a full
 * checkpoint, synced, then OK; then the connection goes.  The session,
 * and the threads its code started, stay. */
static int
dispatch_detach(worker *w, const wire_msg *m)
{
	int rc;

	if (dispatch_checkpoint_raw(w, 2) < 0)
		rc = dispatch_pyerror(w, m->id);
	else {
		(void)store_sync(w->st);
		/* out of the count before the OK: the client may attach
		 * again (flag 'r' or 'n') the moment it has it, and the
		 * attach, served on another thread, must find it gone */
		pthread_mutex_lock(&w->lock);
		worker_conn_unlist_locked(w, w->cur_conn);
		pthread_mutex_unlock(&w->lock);
		worker_control_state(w);
		rc = dispatch_ok(w, m->id);
	}
	pthread_mutex_lock(&w->lock);
	worker_conn_drop_locked(w, w->cur_conn);
	pthread_mutex_unlock(&w->lock);
	worker_control_state(w);
	return rc;
}

void
dispatch_checkpoint_owed(worker *w)
{
	int owed;

	if (!w->opt.server)
		return;
	pthread_mutex_lock(&w->lock);
	owed = w->cp_owed;
	w->cp_owed = 0;
	pthread_mutex_unlock(&w->lock);
	if (owed && !w->closed && dispatch_checkpoint(w, 2) == 0)
		(void)store_sync(w->st);
}

/* Serve one frame. */
int
dispatch_frame(worker *w, const uint8_t *p, size_t n)
{
	wire_msg m;
	const char *why = NULL;
	size_t used;
	int rc;

	if (worker_in_child())
		_exit(0);  /* a fork in shipped code never serves requests */
	wire_msg_init(&m);
	if (wire_parse(p, n, w->opt.max_frame, &m, &used) != WIRE_OK) {
		rc = dispatch_error(w, 0, WIRE_ERR_MALFORMED, "malformed frame");
		goto out;
	}
	if ((rc = wire_msg_check(&m, &why)) != WIRE_OK) {
		rc = dispatch_error(w, m.id, (int)wire_errcode_for(rc),
		    "%s (type 0x%04x)",
		    why != NULL ? why : "bad message", m.type);
		goto out;
	}
	if (w->opt.server) {
		int attached;
		pthread_mutex_lock(&w->lock);
		attached = w->cur_conn != NULL && w->cur_conn->attached;
		pthread_mutex_unlock(&w->lock);
		if (!attached) {
			rc = dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST,
			    "the first message must be ATTACH");
			goto out;
		}
		if (m.type == WIRE_MSG_HELLO) {
			rc = dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST,
			    "HELLO goes to the server, once per connection");
			goto out;
		}
	} else if (!w->hello_done && m.type != WIRE_MSG_HELLO) {
		rc = dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST,
		    "the first message must be HELLO");
		goto out;
	}
	w->current_id = m.id;
	if (!dispatch_long_frame(w, &m, &rc))
		rc = dispatch_msg(w, &m, NULL);
	w->current_id = 0;
out:
	wire_msg_free(&m);
	return rc;
}

/* Serve one message; see exec.h. */
int
dispatch_msg(worker *w, const wire_msg *mp, PyObject *oob)
{
	const wire_msg m = *mp;
	int rc;

	if (w->opt.mode == 'r' && (m.type == WIRE_MSG_SET ||
	    m.type == WIRE_MSG_DEL || m.type == WIRE_MSG_CLOSE ||
	    m.type == WIRE_MSG_SET_LEASE))
		return dispatch_error(w, m.id, WIRE_ERR_READ_ONLY, "session '%s' "
		    "is open read-only (flag 'r'): %s would change it; nothing "
		    "was changed", w->sess.name, wire_msg_name(m.type));
	if (dispatch_oob_misplaced(&m))
		return dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST, "an OOB "
		    "field follows neither a VALUE, an ARG_PICKLE nor another "
		    "OOB");
	switch (m.type) {
	case WIRE_MSG_HELLO:
		rc = dispatch_hello(w, &m);
		break;
	case WIRE_MSG_ATTACH:
		/* server mode: the reader answers the ATTACH of CTL_CONN
		 * (worker-control.c); one more is an error */
		rc = dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST, "%s",
		    w->opt.server ? "this connection is attached already" :
		    "ATTACH is for a server; this pyshelfd serves stdio (HELLO)");
		break;
	case WIRE_MSG_PIPES:
		rc = w->opt.server ? worker_conn_pipes(w, w->cur_conn, m.id) :
		    dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST, "PIPES is "
		    "for a connection to a server; stdio is on pipes already");
		break;
	case WIRE_MSG_CALLS:
	case WIRE_MSG_CALL_RESULT:
		/* answered by the reader once attached; queued only when
		 * sent before */
		rc = dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST, "%s before "
		    "the handshake", wire_msg_name(m.type));
		break;
	case WIRE_MSG_EXEC:
		rc = dispatch_exec(w, &m, oob);
		break;
	case WIRE_MSG_GET:
		rc = dispatch_get(w, &m);
		break;
	case WIRE_MSG_SET:
	case WIRE_MSG_DEL:
		rc = dispatch_set_del(w, &m, oob);
		break;
	case WIRE_MSG_KEYS:
	case WIRE_MSG_HANDLES:
	case WIRE_MSG_LOST:
		rc = dispatch_listing(w, &m);
		break;
	case WIRE_MSG_STATS:
		rc = dispatch_stats(w, &m);
		break;
	case WIRE_MSG_RELEASE:
		rc = dispatch_release(w, &m);
		break;
	case WIRE_MSG_SYNC:
		rc = dispatch_checkpoint_raw(w, 2) < 0 ?
		    dispatch_pyerror(w, m.id) :
		    (store_sync(w->st), dispatch_ok(w, m.id));
		break;
	case WIRE_MSG_DETACH:
		if (w->opt.server) {
			rc = dispatch_detach(w, &m);
			break;
		}
		/* the checkpoint first, then the notice about threads still
		 * running (pyshelfd waits for them only after it) */
		if (dispatch_checkpoint_raw(w, 2) < 0)
			rc = dispatch_pyerror(w, m.id);
		else {
			dispatch_threads_notice(w);
			rc = dispatch_ok(w, m.id);
		}
		w->detached = 1;
		break;
	case WIRE_MSG_CLOSE:
		rc = dispatch_close(w, &m);
		break;
	case WIRE_MSG_SET_LEASE:
		rc = dispatch_set_lease(w, &m);
		break;
	case WIRE_MSG_PING:
		rc = dispatch_ping(w, &m);
		break;
	case WIRE_MSG_INTERRUPT:
		rc = 0;   /* it came before HELLO was answered: nothing runs */
		break;
	default:
		rc = dispatch_error(w, m.id, WIRE_ERR_BAD_REQUEST, "%s is not a "
		    "request a client may send", wire_msg_name(m.type));
		break;
	}
	return rc;
}

/* Session no longer served: clear the pid, renew the lease from now. */
static int
dispatch_release_txn(store_txn *t, void *arg)
{
	worker *w = arg;
	store_session ss;
	int rc;

	if ((rc = session_get_by_id(t, w->sess.id, &ss)) != 0)
		return rc == STORE_E_NOTFOUND ? 0 : rc;
	if (ss.state != STORE_STATE_LIVE)
		return 0;
	w->sess.pid = 0;
	w->sess.last_seen_ms = store_now_ms();
	w->sess.state = ss.state;
	return session_put(t, &w->sess);
}

void
dispatch_release_session(worker *w)
{
	if (!w->closed && w->opt.mode != 'r')
		store_write(w->st, dispatch_release_txn, w);
}

/* The worker's side of _pyshelfd's SIGINT/SIGTERM handler (pyctx's
 * on_signal; GIL held, in the worker process).  A SIGINT sent by our own
 * reader thread carries a stop reason (interrupt or timeout) for the
 * running code.  Any other SIGINT or a SIGTERM asks for a clean shutdown:
 * running code gets KeyboardInterrupt, idle workers just leave their
 * loop.  An enum pyctx_sig. */
int
dispatch_signal(worker *w, int signum)
{
	int ours, kind, running;

	pthread_mutex_lock(&w->lock);
	ours = w->sigs_inflight;
	w->sigs_inflight = 0;
	kind = w->stop_kind;
	running = w->running_id != 0;
	pthread_mutex_unlock(&w->lock);
	if (signum == SIGINT && ours) {
		if (!running || kind == WORKER_STOP_NONE)
			return PYCTX_SIG_NONE; /* the code finished first */
		return kind == WORKER_STOP_TIMEOUT ? PYCTX_SIG_TIMEOUT :
		    kind == WORKER_STOP_SHUTDOWN ? PYCTX_SIG_SHUTDOWN :
		    PYCTX_SIG_INTERRUPT;
	}
	w->terminate = 1;
	if (!running)
		return PYCTX_SIG_NONE;
	return signum == SIGTERM ? PYCTX_SIG_SHUTDOWN : PYCTX_SIG_INTERRUPT;
}
