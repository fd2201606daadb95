/*
 * conn.c - the Connection type of pyshelf._pyshelf: one pyshelf_conn, its methods
 * (spawn, hello, get, set, keys, handles, close...; exec and interrupt
 * are in conn-exec.c) and its type spec.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <limits.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pyshelf-ext.h"

/* --- Connection methods --------------------------------------------------- */

/* Connection(): an unconnected connection. */
static PyObject *
conn_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { NULL };
	ConnObject *self;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Connection", kwlist))
		return NULL;
	if ((self = (ConnObject *)type->tp_alloc(type, 0)) == NULL)
		return NULL;
	if ((rc = pyshelf_create(&self->conn)) != PYSHELF_OK) {
		Py_DECREF(self);
		if (rc == PYSHELF_E_NOMEM)
			return PyErr_NoMemory();
		PyErr_SetString(PyExc_RuntimeError, pyshelf_strerror(rc));
		return NULL;
	}
	return (PyObject *)self;
}

/* Close (detach, reap) if still open; the GIL is released meanwhile. */
static void
conn_dealloc(ConnObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	pyshelf_conn *c = self->conn;

	self->conn = NULL;
	if (c != NULL) {
		pyshelf_set_output_handler(c, NULL, NULL);
		Py_BEGIN_ALLOW_THREADS
		(void)pyshelf_close(c, NULL);
		Py_END_ALLOW_THREADS
	}
	Py_CLEAR(self->notice);
	tp->tp_free((PyObject *)self);
	Py_DECREF(tp);
}

/* A NULL-ended argv of the UTF-8 strings in the sequence extra (None or
 * NULL: empty), borrowed from *tuple, which the caller releases with
 * Py_XDECREF after PyMem_Free of the argv.  NULL with an exception set. */
static const char **
conn_argv(PyObject *extra, const char *what, PyObject **tuple)
{
	const char **argv;
	Py_ssize_t i, n = 0;

	*tuple = NULL;
	if (extra != NULL && extra != Py_None) {
		if ((*tuple = PySequence_Tuple(extra)) == NULL)
			return NULL;
		n = PyTuple_GET_SIZE(*tuple);
	}
	if ((argv = PyMem_Calloc((size_t)n + 1, sizeof *argv)) == NULL) {
		PyErr_NoMemory();
		return NULL;
	}
	for (i = 0; i < n; i++)
		if ((argv[i] = conn_utf8(PyTuple_GET_ITEM(*tuple, i), what))
		    == NULL) {
			PyMem_Free(argv);
			return NULL;
		}
	return argv;
}

/* spawn(backend, db, session, create=True, args=()) */
static PyObject *
conn_spawn(ConnObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "backend", "db", "session", "create", "args",
	    NULL };
	PyObject *backend = NULL, *db = Py_None, *session = Py_None;
	PyObject *extra = NULL, *bpath = NULL, *dpath = NULL, *tuple = NULL;
	PyObject *ret = NULL;
	const char **argv = NULL, *sess = NULL;
	int create = 1, rc, begun = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOpO:spawn", kwlist,
	    &backend, &db, &session, &create, &extra))
		return NULL;
	if (!PyUnicode_FSConverter(backend, &bpath))
		goto error;
	if (db != Py_None && !PyUnicode_FSConverter(db, &dpath))
		goto error;
	if (session != Py_None && (sess = conn_utf8(session, "session")) == NULL)
		goto error;
	if ((argv = conn_argv(extra, "args items", &tuple)) == NULL)
		goto error;
	if (conn_begin(self) < 0)
		goto error;
	begun = 1;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_spawn(self->conn, PyBytes_AS_STRING(bpath),
	    dpath != NULL ? PyBytes_AS_STRING(dpath) : NULL, sess,
	    create ? PYSHELF_SPAWN_CREATE : 0, argv);
	Py_END_ALLOW_THREADS
	if (rc != PYSHELF_OK) {
		conn_error(self, self->conn, rc);
		goto error;
	}
	ret = Py_NewRef(Py_None);
error:
	if (begun)
		conn_end(self);
	PyMem_Free(argv);
	Py_XDECREF(tuple);
	Py_XDECREF(dpath);
	Py_XDECREF(bpath);
	return ret;
}

/* attach_fds(rfd, wfd): the connection owns them from now on. */
static PyObject *
conn_attach_fds(ConnObject *self, PyObject *args)
{
	int rfd, wfd, rc;

	if (!PyArg_ParseTuple(args, "ii:attach_fds", &rfd, &wfd))
		return NULL;
	if (conn_begin(self) < 0)
		return NULL;
	rc = pyshelf_attach_fds(self->conn, rfd, wfd);
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	Py_RETURN_NONE;
}

/* The WELCOME (or ATTACHED) fields as a dict; "ended" only when a session
 * of the name had ended, "worker_died" etc. only in server mode. */
static PyObject *
conn_welcome_dict(const pyshelf_welcome *w)
{
	PyObject *sid = NULL, *ret = NULL, *e = NULL;

	if (w->has_session)
		sid = PyBytes_FromStringAndSize((const char *)w->session_id,
		    sizeof w->session_id);
	else
		sid = Py_NewRef(Py_None);
	if (sid == NULL)
		return NULL;
	ret = Py_BuildValue("{s:K,s:s,s:K,s:K,s:O,s:s,s:O,s:K,s:K}",
	    "version", (unsigned long long)w->version, "name", w->name,
	    "pid", (unsigned long long)w->pid,
	    "max_frame", (unsigned long long)w->max_frame,
	    "session_id", sid, "session", w->session,
	    "created", w->created ? Py_True : Py_False,
	    "lease_ms", (unsigned long long)w->lease_ms,
	    "expires_ms", (unsigned long long)w->expires_ms);
	Py_DECREF(sid);
	if (ret != NULL && w->has_ended) {
		e = Py_BuildValue("{s:d,s:s,s:s}", "ended",
		    (double)w->ended_ms / 1000.0, "reason",
		    w->ended_reason != NULL ? w->ended_reason : "",
		    "message", w->ended_message != NULL ? w->ended_message : "");
		if (e == NULL || PyDict_SetItemString(ret, "ended", e) < 0)
			Py_CLEAR(ret);
		Py_CLEAR(e);
	}
	if (ret != NULL && w->server_pid != 0) {
		e = Py_BuildValue("{s:K,s:O,s:i,s:s}", "server_pid",
		    (unsigned long long)w->server_pid, "worker_died",
		    w->worker_died ? Py_True : Py_False, "worker_signal",
		    w->worker_signal, "worker_message",
		    w->worker_message != NULL ? w->worker_message : "");
		if (e == NULL || PyDict_Update(ret, e) < 0)
			Py_CLEAR(ret);
		Py_CLEAR(e);
	}
	return ret;
}

/* hello(name=None) -> dict of the WELCOME fields */
static PyObject *
conn_hello(ConnObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "name", NULL };
	const pyshelf_welcome *w = NULL;
	const char *name = NULL;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|z:hello", kwlist, &name))
		return NULL;
	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_hello(self->conn, name, &w);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	return conn_welcome_dict(w);
}

/*
 * connect(socket, db, session, flag="c", lease_ms=None, backend=None,
 *         server_args=(), start=True, name=None) -> dict of the WELCOME and
 * ATTACHED fields.  socket None: the store's own server, started when
 * none answers (start).
 */
static PyObject *
conn_connect(ConnObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "socket", "db", "session", "flag",
	    "lease_ms", "backend", "server_args", "start", "name", NULL };
	PyObject *sock = Py_None, *db = Py_None, *session = Py_None;
	PyObject *lease = Py_None, *backend = Py_None, *extra = NULL;
	PyObject *spath = NULL, *dpath = NULL, *bpath = NULL, *tuple = NULL;
	PyObject *ret = NULL;
	const char **argv = NULL, *sess = NULL, *flag = "c", *name = NULL;
	const pyshelf_welcome *w = NULL;
	pyshelf_connect_opts opts;
	unsigned flags = 0;
	int start = 1, rc, begun = 0;

	memset(&opts, 0, sizeof opts);
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|sOOOpz:connect",
	    kwlist, &sock, &db, &session, &flag, &lease, &backend, &extra,
	    &start, &name))
		return NULL;
	if (strcmp(flag, "c") == 0)
		flags = PYSHELF_CONNECT_CREATE;
	else if (strcmp(flag, "n") == 0)
		flags = PYSHELF_CONNECT_NEW;
	else if (strcmp(flag, "r") == 0)
		flags = PYSHELF_CONNECT_READ;  /* only asks an idle worker to go */
	else if (strcmp(flag, "w") != 0)
		return PyErr_Format(PyExc_ValueError, "a server serves flag "
		    "'c', 'w' or 'n', not '%s'", flag);
	if (!start)
		flags |= PYSHELF_CONNECT_NO_START;
	if (sock != Py_None && !PyUnicode_FSConverter(sock, &spath))
		goto error;
	if (db != Py_None && !PyUnicode_FSConverter(db, &dpath))
		goto error;
	if (backend != Py_None && !PyUnicode_FSConverter(backend, &bpath))
		goto error;
	if (session != Py_None && (sess = conn_utf8(session, "session")) == NULL)
		goto error;
	if (lease != Py_None) {
		opts.lease_ms = PyLong_AsUnsignedLongLong(lease);
		if (opts.lease_ms == (unsigned long long)-1 && PyErr_Occurred())
			goto error;
		opts.has_lease = 1;
	}
	if ((argv = conn_argv(extra, "server_args items", &tuple)) == NULL)
		goto error;
	opts.backend = bpath != NULL ? PyBytes_AS_STRING(bpath) : NULL;
	opts.server_args = argv;
	opts.client_name = name;
	if (conn_begin(self) < 0)
		goto error;
	begun = 1;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_connect(self->conn, spath != NULL ?
	    PyBytes_AS_STRING(spath) : NULL, dpath != NULL ?
	    PyBytes_AS_STRING(dpath) : NULL, sess, flags, &opts, &w);
	Py_END_ALLOW_THREADS
	if (rc != PYSHELF_OK) {
		conn_error(self, self->conn, rc);
		goto error;
	}
	ret = conn_welcome_dict(w);
error:
	if (begun)
		conn_end(self);
	PyMem_Free(argv);
	Py_XDECREF(tuple);
	Py_XDECREF(bpath);
	Py_XDECREF(dpath);
	Py_XDECREF(spath);
	return ret;
}

/* set_lease(lease_ms) -> expires_ms (0: never). */
static PyObject *
conn_set_lease(ConnObject *self, PyObject *arg)
{
	unsigned long long ms = PyLong_AsUnsignedLongLong(arg);
	uint64_t expires = 0;
	int rc;

	if (ms == (unsigned long long)-1 && PyErr_Occurred())
		return NULL;
	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_set_lease(self->conn, (uint64_t)ms, &expires);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	return PyLong_FromUnsignedLongLong(expires);
}

/*
 * end_session(socket, db, name) -> ended_ms, or None when no server
 * answers at the socket (the caller ends it offline).
 */
static PyObject *
conn_end_session(ConnObject *self, PyObject *args)
{
	PyObject *sock, *db, *session, *spath = NULL, *dpath = NULL;
	PyObject *ret = NULL;
	const char *name;
	uint64_t ended = 0;
	int rc, no_server = 0;

	if (!PyArg_ParseTuple(args, "OOO:end_session", &sock, &db, &session))
		return NULL;
	if (sock != Py_None && !PyUnicode_FSConverter(sock, &spath))
		goto error;
	if (db != Py_None && !PyUnicode_FSConverter(db, &dpath))
		goto error;
	if ((name = conn_utf8(session, "session")) == NULL)
		goto error;
	if (conn_begin(self) < 0)
		goto error;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_end_session(self->conn, spath != NULL ?
	    PyBytes_AS_STRING(spath) : NULL, dpath != NULL ?
	    PyBytes_AS_STRING(dpath) : NULL, name, &no_server, &ended);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc == PYSHELF_E_SPAWN && no_server && sock == Py_None)
		ret = Py_NewRef(Py_None);
	else if (rc != PYSHELF_OK)
		conn_error(self, self->conn, rc);
	else
		ret = PyLong_FromUnsignedLongLong(ended);
error:
	Py_XDECREF(dpath);
	Py_XDECREF(spath);
	return ret;
}

/*
 * server_sessions(socket, db) -> str or None: the JSON rows of the
 * sessions the store's running server has workers for (SESSIONS to the
 * supervisor), None when no server runs.  Starts no server.
 */
static PyObject *
conn_server_sessions(ConnObject *self, PyObject *args)
{
	PyObject *sock = Py_None, *db = Py_None, *spath = NULL, *dpath = NULL;
	PyObject *ret = NULL;
	char *json = NULL;
	int rc, begun = 0;

	if (!PyArg_ParseTuple(args, "OO:server_sessions", &sock, &db))
		return NULL;
	if (sock != Py_None && !PyUnicode_FSConverter(sock, &spath))
		goto error;
	if (db != Py_None && !PyUnicode_FSConverter(db, &dpath))
		goto error;
	if (conn_begin(self) < 0)
		goto error;
	begun = 1;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_server_sessions(self->conn, spath != NULL ?
	    PyBytes_AS_STRING(spath) : NULL, dpath != NULL ?
	    PyBytes_AS_STRING(dpath) : NULL, &json);
	Py_END_ALLOW_THREADS
	if (rc != PYSHELF_OK) {
		conn_error(self, self->conn, rc);
		goto error;
	}
	if (json == NULL) {
		ret = Py_NewRef(Py_None);
		goto error;
	}
	ret = PyUnicode_DecodeUTF8(json, (Py_ssize_t)strlen(json), "replace");
error:
	if (begun)
		conn_end(self);
	pyshelf_free(json);
	Py_XDECREF(dpath);
	Py_XDECREF(spath);
	return ret;
}

/* release(ids): drop handles (an iterable of ints); no reply. */
static PyObject *
conn_release(ConnObject *self, PyObject *ids)
{
	PyObject *items = NULL, *ret = NULL;
	uint64_t *v = NULL;
	Py_ssize_t i, n;
	int rc, begun = 0;

	if ((items = PySequence_Tuple(ids)) == NULL)
		return NULL;
	n = PyTuple_GET_SIZE(items);
	if (n > 0 && (v = PyMem_Calloc((size_t)n, sizeof *v)) == NULL) {
		PyErr_NoMemory();
		goto error;
	}
	for (i = 0; i < n; i++) {
		v[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(items, i));
		if (v[i] == (unsigned long long)-1 && PyErr_Occurred())
			goto error;
	}
	if (conn_begin(self) < 0)
		goto error;
	begun = 1;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_release(self->conn, v, (size_t)n);
	Py_END_ALLOW_THREADS
	if (rc != PYSHELF_OK) {
		conn_error(self, self->conn, rc);
		goto error;
	}
	ret = Py_NewRef(Py_None);
error:
	if (begun)
		conn_end(self);
	PyMem_Free(v);
	Py_DECREF(items);
	return ret;
}

/* get(key, want_value) -> result tuple */
static PyObject *
conn_get(ConnObject *self, PyObject *args)
{
	PyObject *key = NULL, *ret = NULL;
	const char *k;
	pyshelf_result res;
	int want_value = 1, rc;

	memset(&res, 0, sizeof res);
	if (!PyArg_ParseTuple(args, "U|p:get", &key, &want_value))
		return NULL;
	/* borrowed: key lives in args for the whole call */
	if ((k = conn_utf8(key, "key")) == NULL || conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_get(self->conn, k, want_value ? PYSHELF_WANT_PICKLE |
	    PYSHELF_WANT_BUFFERS : PYSHELF_WANT_HANDLE, &res);
	Py_END_ALLOW_THREADS
	if (rc != PYSHELF_OK)
		conn_error(self, self->conn, rc);
	else
		ret = conn_result(conn_state(self), &res);
	pyshelf_result_free(&res);
	conn_end(self);
	return ret;
}

/* set(key, pickle, buffers=()): buffers, the pickle's out-of-band
 * buffers (objects with the buffer protocol), are sent from their memory */
static PyObject *
conn_set(ConnObject *self, PyObject *args)
{
	PyObject *key = NULL, *ret = NULL, *bt = NULL;
	pyshelf_buffer *bufs = NULL;
	Py_buffer data, *views = NULL;
	Py_ssize_t i, nb = 0, got = 0;
	const char *k;
	int rc;

	if (!PyArg_ParseTuple(args, "Uy*|O!:set", &key, &data, &PyTuple_Type,
	    &bt))
		return NULL;
	nb = bt != NULL ? PyTuple_GET_SIZE(bt) : 0;
	if (nb > 0 && ((views = PyMem_Calloc((size_t)nb, sizeof *views)) ==
	    NULL || (bufs = PyMem_Calloc((size_t)nb, sizeof *bufs)) == NULL)) {
		PyErr_NoMemory();
		goto error;
	}
	for (got = 0; got < nb; got++) {
		if (PyObject_GetBuffer(PyTuple_GET_ITEM(bt, got), &views[got],
		    PyBUF_SIMPLE) < 0)
			goto error;
		bufs[got].data = views[got].buf;
		bufs[got].len = (size_t)views[got].len;
	}
	if ((k = conn_utf8(key, "key")) == NULL || conn_begin(self) < 0)
		goto error;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_set_buffers(self->conn, k, data.buf, (size_t)data.len,
	    bufs, (size_t)nb);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		conn_error(self, self->conn, rc);
	else
		ret = Py_NewRef(Py_None);
error:
	for (i = 0; i < got; i++)
		PyBuffer_Release(&views[i]);
	PyMem_Free(views);
	PyMem_Free(bufs);
	PyBuffer_Release(&data);
	return ret;
}

/* delete(key) */
static PyObject *
conn_delete(ConnObject *self, PyObject *key)
{
	const char *k;
	int rc;

	if ((k = conn_utf8(key, "key")) == NULL || conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_del(self->conn, k);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	Py_RETURN_NONE;
}

/* keys() -> list of str */
static PyObject *
conn_keys(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *list = NULL, *s;
	char **keys = NULL;
	size_t i, n = 0;
	int rc;

	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_keys(self->conn, &keys, &n);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	if ((list = PyList_New((Py_ssize_t)n)) == NULL)
		goto done;
	for (i = 0; i < n; i++) {
		if ((s = PyUnicode_FromString(keys[i])) == NULL) {
			Py_CLEAR(list);
			goto done;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, s); /* stolen */
	}
done:
	pyshelf_strv_free(keys, n);
	return list;
}

/* handles() -> list of (id, type_name, exc_type, message): the last two
 * None unless the handle is an exception's */
static PyObject *
conn_handles(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *list = NULL, *t;
	pyshelf_handle_info *v = NULL;
	size_t i, n = 0;
	int rc;

	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_handles(self->conn, &v, &n);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	if ((list = PyList_New((Py_ssize_t)n)) == NULL)
		goto done;
	for (i = 0; i < n; i++) {
		t = Py_BuildValue("(Kszz)", (unsigned long long)v[i].handle,
		    v[i].type_name, v[i].exc_type, v[i].message);
		if (t == NULL) {
			Py_CLEAR(list);
			goto done;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, t); /* stolen */
	}
done:
	pyshelf_handles_free(v, n);
	return list;
}

/* lost() -> list of (key, type_name, reason) */
static PyObject *
conn_lost(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *list = NULL, *t;
	pyshelf_lost_entry *v = NULL;
	size_t i, n = 0;
	int rc;

	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_lost(self->conn, &v, &n);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	if ((list = PyList_New((Py_ssize_t)n)) == NULL)
		goto done;
	for (i = 0; i < n; i++) {
		t = Py_BuildValue("(sss)", v[i].key, v[i].type_name, v[i].reason);
		if (t == NULL) {
			Py_CLEAR(list);
			goto done;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, t); /* stolen */
	}
done:
	pyshelf_lost_free(v, n);
	return list;
}

/* A request answered by JSON text: stats(), calls(). */
static PyObject *
conn_json(ConnObject *self, int (*fn)(pyshelf_conn *, char **))
{
	PyObject *ret;
	char *json = NULL;
	int rc;

	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = fn(self->conn, &json);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	ret = PyUnicode_FromString(json);
	pyshelf_free(json);
	return ret;
}

/* stats() -> str (JSON) */
static PyObject *
conn_stats(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_json(self, pyshelf_stats);
}

/* calls() -> str (JSON list of the session's journaled calls) */
static PyObject *
conn_calls(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_json(self, pyshelf_calls);
}

/* A request without arguments or results: sync, ping, detach... */
static PyObject *
conn_simple(ConnObject *self, int (*fn)(pyshelf_conn *))
{
	int rc;

	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = fn(self->conn);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	Py_RETURN_NONE;
}

static PyObject *
conn_sync(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_simple(self, pyshelf_sync);
}

static PyObject *
conn_ping(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_simple(self, pyshelf_ping);
}

static PyObject *
conn_detach(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_simple(self, pyshelf_detach);
}

static PyObject *
conn_close_session(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_simple(self, pyshelf_close_session);
}

/*
 * close() -> the backend's return code (exit status, or -signal), or None
 * when there was no spawned backend.  Detaches first when still attached.
 * Idempotent: later calls return None.
 */
static PyObject *
conn_close(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	pyshelf_conn *c;
	int wstatus = -1;

	if (self->conn == NULL)
		Py_RETURN_NONE;
	if (conn_begin(self) < 0)
		return NULL;
	/* An interrupt() in another thread may still be writing. */
	while (self->interrupting > 0) {
		Py_BEGIN_ALLOW_THREADS
		usleep(1000);
		Py_END_ALLOW_THREADS
	}
	c = self->conn;
	self->conn = NULL;
	Py_BEGIN_ALLOW_THREADS
	(void)pyshelf_close(c, &wstatus);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (wstatus == -1)
		Py_RETURN_NONE;
	return conn_status_obj(wstatus);
}

/* backend_status(timeout_ms=0) -> return code, or None while running */
static PyObject *
conn_backend_status(ConnObject *self, PyObject *args)
{
	int timeout_ms = 0, wstatus = 0, rc;

	if (!PyArg_ParseTuple(args, "|i:backend_status", &timeout_ms))
		return NULL;
	if (self->conn == NULL)
		Py_RETURN_NONE;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_backend_status(self->conn, &wstatus, timeout_ms);
	Py_END_ALLOW_THREADS
	if (rc != PYSHELF_OK)
		Py_RETURN_NONE;
	return conn_status_obj(wstatus);
}

/* request_fate() -> FATE_*: what became of the last request (whether a
 * request that failed with BackendDied can have run). */
static PyObject *
conn_request_fate(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	if (self->conn == NULL)
		return PyLong_FromLong(PYSHELF_FATE_UNKNOWN);
	return PyLong_FromLong(pyshelf_request_fate(self->conn));
}

/* set_spin(us) */
static PyObject *
conn_set_spin(ConnObject *self, PyObject *arg)
{
	unsigned long us = PyLong_AsUnsignedLong(arg);

	if (us == (unsigned long)-1 && PyErr_Occurred())
		return NULL;
	if (self->conn == NULL || us > UINT32_MAX)
		return PyErr_Format(PyExc_ValueError, "bad spin or closed");
	pyshelf_set_spin(self->conn, (unsigned)us);
	Py_RETURN_NONE;
}

/* set_close_timeout(ms) */
static PyObject *
conn_set_close_timeout(ConnObject *self, PyObject *arg)
{
	long ms = PyLong_AsLong(arg);

	if (ms == -1 && PyErr_Occurred())
		return NULL;
	if (self->conn == NULL || ms > INT_MAX ||
	    pyshelf_set_close_timeout(self->conn, (int)ms) != PYSHELF_OK)
		return PyErr_Format(PyExc_ValueError, "bad timeout or closed");
	Py_RETURN_NONE;
}

/* set_max_frame(bytes) */
static PyObject *
conn_set_max_frame(ConnObject *self, PyObject *arg)
{
	size_t n = PyLong_AsSize_t(arg);

	if (n == (size_t)-1 && PyErr_Occurred())
		return NULL;
	if (self->conn == NULL ||
	    pyshelf_set_max_frame(self->conn, n) != PYSHELF_OK)
		return PyErr_Format(PyExc_ValueError, "bad size or closed");
	Py_RETURN_NONE;
}

/* set_output_handler(callable or None): the backend's notices outside
 * exec() go to callable(stream, bytes); it must not refer back to the
 * connection. */
static PyObject *
conn_set_output_handler(ConnObject *self, PyObject *fn)
{
	if (fn != Py_None && !PyCallable_Check(fn)) {
		PyErr_Format(PyExc_TypeError, "the handler must be callable or "
		    "None, not %.200s", Py_TYPE(fn)->tp_name);
		return NULL;
	}
	if (self->conn == NULL)
		Py_RETURN_NONE;
	Py_XSETREF(self->notice, fn != Py_None ? Py_NewRef(fn) : NULL);
	pyshelf_set_output_handler(self->conn, self->notice != NULL ?
	    conn_on_notice : NULL, self);
	Py_RETURN_NONE;
}

/* pid: the spawned backend's pid, or None */
static PyObject *
conn_get_pid(ConnObject *self, void *Py_UNUSED(closure))
{
	long pid = self->conn != NULL ? pyshelf_backend_pid(self->conn) : -1;

	if (pid < 0)
		Py_RETURN_NONE;
	return PyLong_FromLong(pid);
}

/* last_call_id: the 16 bytes the last exec() sent, or None */
static PyObject *
conn_get_last_call_id(ConnObject *self, void *Py_UNUSED(closure))
{
	if (!self->has_call_id)
		Py_RETURN_NONE;
	return PyBytes_FromStringAndSize((const char *)self->last_call_id,
	    sizeof self->last_call_id);
}

/* closed: True once close() ran */
static PyObject *
conn_get_closed(ConnObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(self->conn == NULL);
}

static PyMethodDef conn_methods[] = {
	{ "spawn", (PyCFunction)(void (*)(void))conn_spawn,
	  METH_VARARGS | METH_KEYWORDS,
	  "spawn(backend, db=None, session=None, create=True, args=())" },
	{ "server_sessions", (PyCFunction)conn_server_sessions, METH_VARARGS,
	  "server_sessions(socket, db) -> str or None: SESSIONS to the "
	  "store's running server" },
	{ "attach_fds", (PyCFunction)conn_attach_fds, METH_VARARGS,
	  "attach_fds(rfd, wfd): speak the protocol over these descriptors" },
	{ "hello", (PyCFunction)(void (*)(void))conn_hello,
	  METH_VARARGS | METH_KEYWORDS, "hello(name=None) -> dict" },
	{ "connect", (PyCFunction)(void (*)(void))conn_connect,
	  METH_VARARGS | METH_KEYWORDS,
	  "connect(socket, db, session, flag='c', lease_ms=None, backend=None, "
	  "server_args=(), start=True, name=None) -> dict: attach through a "
	  "server" },
	{ "calls", (PyCFunction)conn_calls, METH_NOARGS,
	  "calls() -> JSON str: the session's journaled calls" },
	{ "call_result", (PyCFunction)(void (*)(void))conn_call_result,
	  METH_VARARGS | METH_KEYWORDS,
	  "call_result(call_id, wait=True, timeout_ms=-1, on_output=None) -> "
	  "result tuple" },
	{ "interrupt_hard", (PyCFunction)conn_interrupt_hard, METH_NOARGS,
	  "interrupt_hard(): restart the worker under the running call" },
	{ "exec", (PyCFunction)(void (*)(void))conn_exec,
	  METH_VARARGS | METH_KEYWORDS,
	  "exec(code, func=None, args=(), want_value=False, timeout_ms=0, "
	  "on_output=None, call_id=None) -> (kind, handle, type_name, "
	  "exc_type, message, value, volatile)" },
	{ "interrupt", (PyCFunction)conn_interrupt, METH_NOARGS,
	  "interrupt(): stop the running exec (any thread)" },
	{ "release", (PyCFunction)conn_release, METH_O,
	  "release(ids): drop these handles" },
	{ "get", (PyCFunction)conn_get, METH_VARARGS,
	  "get(key, want_value=True) -> result tuple" },
	{ "set", (PyCFunction)conn_set, METH_VARARGS,
	  "set(key, pickle): bind a global" },
	{ "delete", (PyCFunction)conn_delete, METH_O,
	  "delete(key): delete a global" },
	{ "keys", (PyCFunction)conn_keys, METH_NOARGS, "keys() -> list" },
	{ "handles", (PyCFunction)conn_handles, METH_NOARGS,
	  "handles() -> list of (id, type_name)" },
	{ "lost", (PyCFunction)conn_lost, METH_NOARGS,
	  "lost() -> list of (key, type_name, reason)" },
	{ "stats", (PyCFunction)conn_stats, METH_NOARGS, "stats() -> JSON str" },
	{ "sync", (PyCFunction)conn_sync, METH_NOARGS, "sync(): checkpoint" },
	{ "ping", (PyCFunction)conn_ping, METH_NOARGS, "ping()" },
	{ "set_lease", (PyCFunction)conn_set_lease, METH_O,
	  "set_lease(lease_ms) -> expires_ms (0: never)" },
	{ "end_session", (PyCFunction)conn_end_session, METH_VARARGS,
	  "end_session(socket, db, name) -> ended_ms, or None when no "
	  "server answers at the store's socket" },
	{ "detach", (PyCFunction)conn_detach, METH_NOARGS,
	  "detach(): the backend checkpoints and exits" },
	{ "close_session", (PyCFunction)conn_close_session, METH_NOARGS,
	  "close_session(): end the session for good" },
	{ "close", (PyCFunction)conn_close, METH_NOARGS,
	  "close() -> backend return code or None" },
	{ "request_fate", (PyCFunction)conn_request_fate, METH_NOARGS,
	  "request_fate() -> FATE_*: whether the last request can have run" },
	{ "backend_status", (PyCFunction)conn_backend_status, METH_VARARGS,
	  "backend_status(timeout_ms=0) -> return code, or None if running" },
	{ "set_spin", (PyCFunction)conn_set_spin, METH_O,
	  "set_spin(us): busy-poll before blocking reads" },
	{ "set_close_timeout", (PyCFunction)conn_set_close_timeout, METH_O,
	  "set_close_timeout(ms)" },
	{ "set_max_frame", (PyCFunction)conn_set_max_frame, METH_O,
	  "set_max_frame(bytes)" },
	{ "set_output_handler", (PyCFunction)conn_set_output_handler, METH_O,
	  "set_output_handler(fn): fn(stream, bytes) gets the backend's "
	  "notices outside exec()" },
	{ NULL, NULL, 0, NULL }
};

static PyGetSetDef conn_getset[] = {
	{ "pid", (getter)conn_get_pid, NULL, "the spawned backend's pid", NULL },
	{ "closed", (getter)conn_get_closed, NULL, "close() has run", NULL },
	{ "last_call_id", (getter)conn_get_last_call_id, NULL,
	  "the CALL_ID of the last exec() (bytes), or None", NULL },
	{ NULL, NULL, NULL, NULL, NULL }
};

static PyType_Slot conn_slots[] = {
	{ Py_tp_doc, (void *)"A connection to a pyshelf backend." },
	{ Py_tp_new, (void *)conn_new },
	{ Py_tp_dealloc, (void *)conn_dealloc },
	{ Py_tp_methods, conn_methods },
	{ Py_tp_getset, conn_getset },
	{ 0, NULL }
};

PyType_Spec conn_spec = {
	"pyshelf._pyshelf.Connection",
	sizeof(ConnObject),
	0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
	conn_slots
};
