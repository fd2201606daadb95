/*
 * _pyshelf.c - pyshelf._pyshelf, the C extension under the Python client.
 *
 * One type, Connection, wraps a pyshelf_conn from libpyshelf.  Every call
 * that waits on the backend releases the GIL; pyshelf_exec() takes it back
 * to hand streamed output to a Python callable and, on EINTR or every
 * CONN_TICK_MS, to run the interpreter's signal handlers: the first
 * KeyboardInterrupt becomes an INTERRUPT request (the exec then ends with a
 * KeyboardInterrupt excinfo), a second one abandons the wait and is raised.
 *
 * The Python layer (pyshelf/__init__.py and friends) owns the objects the
 * user sees; it gives this module its exception classes and pickle.loads
 * through _setup() once, at import.  Results come back as plain tuples.
 *
 * Threads: one call at a time per Connection (a busy flag, checked with the
 * GIL held, turns a second one into RuntimeError), except interrupt(),
 * which may run in another thread while exec() waits.
 *
 * Reference discipline follows Modules/_pickle.c: locals start NULL, every
 * call is checked, and the error path releases what was taken.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <limits.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pyshelf.h"

/* How often exec() looks at signals while it waits, in milliseconds. */
#define CONN_TICK_MS 100
/* How long an error path waits for a dying backend's exit status. */
#define CONN_DEATH_MS 2000

/* The exception classes the Python layer hands to _setup(). */
enum {
	EXC_ERROR,           /* pyshelf.Error */
	EXC_REMOTE,          /* pyshelf.RemoteError(msg, code, code_name) */
	EXC_UNKNOWN_HANDLE,  /* pyshelf.UnknownHandleError */
	EXC_VOLATILE,        /* pyshelf.VolatileError */
	EXC_NOT_PICKLABLE,   /* pyshelf.NotPicklableError */
	EXC_BACKEND_DIED,    /* pyshelf.BackendDied(msg, status) */
	EXC_NOT_FOUND,       /* pyshelf.SessionNotFound(msg, code, code_name) */
	EXC_ENDED,           /* pyshelf.SessionEnded(msg, code, code_name,
	                        ended, reason) */
	EXC_BUSY,            /* pyshelf.SessionBusy(msg, code, code_name, pid) */
	EXC_COUNT
};

typedef struct {
	PyTypeObject *conn_type;  /* Connection */
	PyObject *exc[EXC_COUNT]; /* NULL until _setup() */
	PyObject *loads;          /* pickle.loads, NULL until _setup() */
} module_state;

typedef struct {
	PyObject_HEAD
	pyshelf_conn *conn;  /* owned; NULL once closed */
	int busy;            /* a call runs with the GIL released */
	int interrupting;    /* interrupt() calls in flight */
	PyObject *notice;    /* callable(stream, bytes) for the backend's
	                        notices outside exec(), or NULL; must not
	                        refer back to this object (no GC here) */
} ConnObject;

/* What exec()'s callbacks share with it while the GIL is released. */
typedef struct {
	pyshelf_conn *conn;   /* for pyshelf_interrupt() */
	PyObject *on_output;  /* borrowed: callable(stream, bytes) or NULL */
	PyThreadState *ts;    /* saved thread state while the GIL is out */
	PyObject *exc;        /* exception to raise afterwards, owned */
	int output_failed;    /* on_output raised: stop calling it */
	int sigints;          /* KeyboardInterrupts seen during the wait */
} exec_ctx;

static struct PyModuleDef pyshelf_module;

PyMODINIT_FUNC PyInit__pyshelf(void);
static module_state *conn_state(ConnObject *);
static int conn_begin(ConnObject *);
static void conn_end(ConnObject *);
static PyObject *conn_error(ConnObject *, pyshelf_conn *, int);
static PyObject *conn_died(module_state *, pyshelf_conn *, const char *);
static PyObject *conn_status_obj(int);
static PyObject *conn_remote(module_state *, pyshelf_conn *, const char *,
    uint64_t);
static PyObject *conn_result(module_state *, const pyshelf_result *);
static const char *conn_utf8(PyObject *, const char *);
static PyObject *conn_str(const char *);
static int conn_args(PyObject *, pyshelf_arg **, Py_ssize_t *);
static PyObject *conn_exc_fetch(void);
static void conn_exc_restore(PyObject *);
static void conn_stash(exec_ctx *);
static int conn_on_output(void *, int, const void *, size_t);
static int conn_on_wait(void *);
static int conn_on_notice(void *, int, const void *, size_t);

/* --- helpers --------------------------------------------------------------- */

/* The module state of the Connection type's module. */
static module_state *
conn_state(ConnObject *self)
{
	return PyType_GetModuleState(Py_TYPE(self));
}

/* Claim the connection for one call.  Raises and returns -1 when it is
 * closed or busy. */
static int
conn_begin(ConnObject *self)
{
	module_state *st = conn_state(self);

	if (self->conn == NULL) {
		PyErr_SetString(st->exc[EXC_ERROR] != NULL ? st->exc[EXC_ERROR] :
		    PyExc_ValueError, "the connection is closed");
		return -1;
	}
	if (self->busy) {
		PyErr_SetString(PyExc_RuntimeError,
		    "another call is running on this pyshelf connection");
		return -1;
	}
	self->busy = 1;
	return 0;
}

/* Give the connection back. */
static void
conn_end(ConnObject *self)
{
	self->busy = 0;
}

/* A str as UTF-8 without NUL (what), or NULL with an exception set.  The
 * result is borrowed from s, which the caller keeps alive. */
static const char *
conn_utf8(PyObject *s, const char *what)
{
	const char *p;
	Py_ssize_t n;

	if (!PyUnicode_Check(s)) {
		PyErr_Format(PyExc_TypeError, "%s must be str, not %.200s", what,
		    Py_TYPE(s)->tp_name);
		return NULL;
	}
	if ((p = PyUnicode_AsUTF8AndSize(s, &n)) == NULL)
		return NULL;
	if ((size_t)n != strlen(p)) {
		PyErr_Format(PyExc_ValueError, "%s contains a NUL character", what);
		return NULL;
	}
	return p;
}

/* Text from the backend as str (None for NULL); bad UTF-8 is replaced,
 * so that an odd exception message never loses a result. */
static PyObject *
conn_str(const char *s)
{
	if (s == NULL)
		Py_RETURN_NONE;
	return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

/* A waitpid() status as a subprocess-style return code, or None. */
static PyObject *
conn_status_obj(int wstatus)
{
	if (WIFEXITED(wstatus))
		return PyLong_FromLong(WEXITSTATUS(wstatus));
	if (WIFSIGNALED(wstatus))
		return PyLong_FromLong(-WTERMSIG(wstatus));
	Py_RETURN_NONE;
}

/* Raise RemoteError or the subclass for code, with (msg, code, name). */
static PyObject *
conn_remote(module_state *st, pyshelf_conn *c, const char *msg, uint64_t code)
{
	PyObject *cls, *exc, *text;

	switch (code) {
	case PYSHELF_ERR_USAGE:
		/* pyshelfd refused an option: its own words */
		if ((text = conn_str(msg)) != NULL) {
			PyErr_SetObject(PyExc_ValueError, text);
			Py_DECREF(text);
		}
		return NULL;
	case PYSHELF_ERR_NO_SESSION:
		cls = st->exc[EXC_NOT_FOUND]; /* borrowed */
		break;
	case PYSHELF_ERR_SESSION_DEAD:
		cls = st->exc[EXC_ENDED]; /* borrowed */
		break;
	case PYSHELF_ERR_SESSION_BUSY:
		cls = st->exc[EXC_BUSY]; /* borrowed */
		break;
	case PYSHELF_ERR_UNKNOWN_HANDLE:
		cls = st->exc[EXC_UNKNOWN_HANDLE]; /* borrowed */
		break;
	case PYSHELF_ERR_VOLATILE:
		cls = st->exc[EXC_VOLATILE]; /* borrowed */
		break;
	case PYSHELF_ERR_PICKLE:
		cls = st->exc[EXC_NOT_PICKLABLE]; /* borrowed */
		break;
	default:
		cls = st->exc[EXC_REMOTE]; /* borrowed */
	}
	if (cls == NULL) {
		PyErr_Format(PyExc_RuntimeError, "pyshelf backend error %llu: %s",
		    (unsigned long long)code, msg);
		return NULL;
	}
	if ((text = conn_str(msg)) == NULL)
		return NULL;
	if (code == PYSHELF_ERR_SESSION_BUSY) {
		uint64_t pid = pyshelf_remote_pid(c);
		PyObject *p = pid != 0 ? PyLong_FromUnsignedLongLong(pid) :
		    Py_NewRef(Py_None);
		exc = p == NULL ? NULL : PyObject_CallFunction(cls, "OKsO", text,
		    (unsigned long long)code, pyshelf_errcode_name(code), p);
		Py_XDECREF(p);
	} else if (code == PYSHELF_ERR_SESSION_DEAD) {
		const char *reason = NULL;
		uint64_t ended = pyshelf_remote_ended(c, &reason);
		PyObject *e = ended != 0 ? PyFloat_FromDouble((double)ended /
		    1000.0) : Py_NewRef(Py_None);
		PyObject *r = e == NULL ? NULL : conn_str(reason);
		exc = r == NULL ? NULL : PyObject_CallFunction(cls, "OKsOO", text,
		    (unsigned long long)code, pyshelf_errcode_name(code), e, r);
		Py_XDECREF(e);
		Py_XDECREF(r);
	} else
		exc = PyObject_CallFunction(cls, "OKs", text,
		    (unsigned long long)code, pyshelf_errcode_name(code));
	Py_DECREF(text);
	if (exc == NULL)
		return NULL;
	PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
	Py_DECREF(exc);
	return NULL;
}

/*
 * Raise BackendDied(message, status) for a connection whose backend went
 * away; waits up to CONN_DEATH_MS (GIL released) for its exit status.
 */
static PyObject *
conn_died(module_state *st, pyshelf_conn *c, const char *why)
{
	PyObject *status = NULL, *msg = NULL, *exc = NULL, *text = NULL;
	int wstatus = 0, got;

	if ((text = conn_str(why != NULL ? why : "")) == NULL)
		return NULL;

	Py_BEGIN_ALLOW_THREADS
	got = pyshelf_backend_status(c, &wstatus, CONN_DEATH_MS);
	Py_END_ALLOW_THREADS
	if (got == PYSHELF_OK) {
		if ((status = conn_status_obj(wstatus)) == NULL)
			goto error;
		if (WIFSIGNALED(wstatus))
			msg = PyUnicode_FromFormat("pyshelfd died: %U (killed by "
			    "signal %d)", text, WTERMSIG(wstatus));
		else
			msg = PyUnicode_FromFormat("pyshelfd died: %U (exit "
			    "status %d)", text, WEXITSTATUS(wstatus));
	} else {
		status = Py_NewRef(Py_None);
		msg = PyUnicode_FromFormat("pyshelfd died: %U", text);
	}
	if (msg == NULL)
		goto error;
	if (st->exc[EXC_BACKEND_DIED] == NULL) {
		PyErr_SetObject(PyExc_ConnectionError, msg);
		goto error;
	}
	exc = PyObject_CallFunctionObjArgs(st->exc[EXC_BACKEND_DIED], msg,
	    status, NULL);
	if (exc == NULL)
		goto error;
	PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
error:
	Py_XDECREF(exc);
	Py_XDECREF(msg);
	Py_XDECREF(status);
	Py_XDECREF(text);
	return NULL;
}

/* Raise the Python exception for a libpyshelf failure rc on c. */
static PyObject *
conn_error(ConnObject *self, pyshelf_conn *c, int rc)
{
	module_state *st = conn_state(self);
	PyObject *err = st->exc[EXC_ERROR]; /* borrowed */
	const char *msg = pyshelf_errmsg(c);
	PyObject *text = NULL;
	int wstatus, exited;

	if (*msg == '\0')
		msg = pyshelf_strerror(rc);
	if (err == NULL)
		err = PyExc_RuntimeError;
	switch (rc) {
	case PYSHELF_E_NOMEM:
		return PyErr_NoMemory();
	case PYSHELF_E_REMOTE:
		return conn_remote(st, c, msg, pyshelf_remote_errcode(c));
	case PYSHELF_E_CLOSED:
	case PYSHELF_E_IO:
		return conn_died(st, c, msg);
	case PYSHELF_E_INVAL:
		err = PyExc_ValueError;
		break;
	case PYSHELF_E_BUSY:
		err = PyExc_RuntimeError;
		break;
	}
	/* A copy: msg is the connection's and may change below. */
	if ((text = conn_str(msg)) == NULL)
		return NULL;
	if (rc == PYSHELF_E_PROTOCOL) {
		/* A truncated frame is often a backend that crashed mid-write. */
		Py_BEGIN_ALLOW_THREADS
		exited = pyshelf_backend_status(c, &wstatus, 200) == PYSHELF_OK;
		Py_END_ALLOW_THREADS
		if (exited) {
			conn_died(st, c, PyUnicode_AsUTF8(text));
			Py_DECREF(text);
			return NULL;
		}
	}
	PyErr_SetObject(err, text);
	Py_DECREF(text);
	return NULL;
}

/*
 * A result as the tuple (kind, handle, type_name, exc_type, message, value,
 * volatile).  value is pickle.loads() of a direct result's pickle, read
 * through a memoryview of the connection's buffer (no copy), else None.
 */
static PyObject *
conn_result(module_state *st, const pyshelf_result *r)
{
	PyObject *value = NULL, *view = NULL, *ret = NULL, *tmp;
	PyObject *tn = NULL, *et = NULL, *msg = NULL, *vol = NULL;
	PyObject *ltype, *lvalue, *ltb;   /* loads()'s error, while released */

	if (r->kind == PYSHELF_KIND_DIRECT) {
		if (st->loads == NULL) {
			PyErr_SetString(PyExc_RuntimeError,
			    "pyshelf._pyshelf._setup() was not called");
			goto error;
		}
		view = PyMemoryView_FromMemory((char *)r->value,
		    (Py_ssize_t)r->value_len, PyBUF_READ);
		if (view == NULL)
			goto error;
		value = PyObject_CallOneArg(st->loads, view);
		/* The buffer is the connection's: nothing may keep a view.  An
		 * unpickling error is kept aside while the view is released
		 * (a call with an exception set is a SystemError), and is the
		 * one raised. */
		PyErr_Fetch(&ltype, &lvalue, &ltb);
		tmp = PyObject_CallMethod(view, "release", NULL);
		Py_XDECREF(tmp);
		if (ltype != NULL) {
			if (tmp == NULL)
				PyErr_Clear();
			PyErr_Restore(ltype, lvalue, ltb);
		}
		if (tmp == NULL || value == NULL)
			goto error;
	} else
		value = Py_NewRef(Py_None);
	if ((tn = conn_str(r->type_name)) == NULL ||
	    (et = conn_str(r->exc_type)) == NULL ||
	    (msg = conn_str(r->message)) == NULL ||
	    (vol = conn_str(r->volatile_reason)) == NULL)
		goto error;
	ret = Py_BuildValue("(iKOOOOO)", r->kind, (unsigned long long)r->handle,
	    tn, et, msg, value, vol);
error:
	Py_XDECREF(vol);
	Py_XDECREF(msg);
	Py_XDECREF(et);
	Py_XDECREF(tn);
	Py_XDECREF(view);
	Py_XDECREF(value);
	return ret;
}

/*
 * Convert exec()'s argument sequence (ints: handles; bytes: pickles) into
 * an array of pyshelf_arg borrowing from the tuple *items, which the caller
 * keeps alive and immutable.  Returns 0, or -1 with an exception.
 */
static int
conn_args(PyObject *items, pyshelf_arg **argsp, Py_ssize_t *np)
{
	pyshelf_arg *args = NULL;
	PyObject *item; /* borrowed */
	Py_ssize_t i, n = PyTuple_GET_SIZE(items);

	*argsp = NULL;
	*np = 0;
	if (n == 0)
		return 0;
	if ((args = PyMem_Calloc((size_t)n, sizeof *args)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		item = PyTuple_GET_ITEM(items, i);
		if (PyLong_Check(item)) {
			args[i].kind = PYSHELF_ARG_HANDLE;
			args[i].handle = PyLong_AsUnsignedLongLong(item);
			if (args[i].handle == (unsigned long long)-1 &&
			    PyErr_Occurred())
				goto error;
		} else if (PyBytes_Check(item)) {
			args[i].kind = PYSHELF_ARG_PICKLE;
			args[i].data = PyBytes_AS_STRING(item);
			args[i].len = (size_t)PyBytes_GET_SIZE(item);
		} else {
			PyErr_Format(PyExc_TypeError, "exec() argument %zd must be "
			    "int (a handle) or bytes (a pickle), not %.200s", i,
			    Py_TYPE(item)->tp_name);
			goto error;
		}
	}
	*argsp = args;
	*np = n;
	return 0;
error:
	PyMem_Free(args);
	return -1;
}

/* --- exec callbacks (called with the GIL released) ---------------------- */

/* Take the raised exception as one normalised object (traceback attached);
 * the 3.11 spelling of PyErr_GetRaisedException(). */
static PyObject *
conn_exc_fetch(void)
{
	PyObject *type = NULL, *value = NULL, *tb = NULL;

	PyErr_Fetch(&type, &value, &tb);
	if (type == NULL)
		return NULL;
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb != NULL && value != NULL)
		(void)PyException_SetTraceback(value, tb);
	Py_XDECREF(type);
	Py_XDECREF(tb);
	return value;
}

/* Raise exc again (stolen); the inverse of conn_exc_fetch(). */
static void
conn_exc_restore(PyObject *exc)
{
	PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));

	PyErr_Restore(type, exc, PyException_GetTraceback(exc));
}

/* Keep the current exception for after the wait (the GIL is held);
 * a KeyboardInterrupt replaces an earlier exception, others do not. */
static void
conn_stash(exec_ctx *ctx)
{
	PyObject *exc = conn_exc_fetch();

	if (exc == NULL)
		return;
	if (ctx->exc == NULL)
		ctx->exc = exc;
	else if (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
		Py_SETREF(ctx->exc, exc);
	} else
		Py_XDECREF(exc);
}

/*
 * One OUTPUT frame: call on_output(stream, bytes) with the GIL.  An
 * exception stops further calls and is raised after the result; a
 * KeyboardInterrupt raised meanwhile counts as a Ctrl-C (see conn_on_wait).
 */
static int
conn_on_output(void *arg, int stream, const void *data, size_t len)
{
	exec_ctx *ctx = arg;
	PyObject *chunk = NULL, *res = NULL;
	int stop = 0, interrupt = 0;

	if (ctx->on_output == NULL || ctx->output_failed)
		return 0;
	PyEval_RestoreThread(ctx->ts);
	chunk = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
	if (chunk != NULL)
		res = PyObject_CallFunction(ctx->on_output, "iO", stream, chunk);
	if (res == NULL) {
		if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
			if (ctx->sigints++ == 0) {
				PyErr_Clear();
				interrupt = 1;
			} else {
				conn_stash(ctx);
				stop = 1;
			}
		} else {
			conn_stash(ctx);
			ctx->output_failed = 1;
		}
	}
	Py_XDECREF(res);
	Py_XDECREF(chunk);
	ctx->ts = PyEval_SaveThread();
	if (interrupt)
		(void)pyshelf_interrupt(ctx->conn);
	return stop;
}

/*
 * The wait was interrupted by a signal, or a tick passed: run the
 * interpreter's signal handlers.  First KeyboardInterrupt: interrupt the
 * backend and keep waiting.  Second (or another exception from a
 * handler): interrupt and stop waiting; the exception is raised.
 */
static int
conn_on_wait(void *arg)
{
	exec_ctx *ctx = arg;
	int act = PYSHELF_WAIT_CONTINUE;

	PyEval_RestoreThread(ctx->ts);
	if (PyErr_CheckSignals() < 0) {
		if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) &&
		    ctx->sigints++ == 0) {
			PyErr_Clear();
			act = PYSHELF_WAIT_INTERRUPT;
		} else {
			conn_stash(ctx);
			act = PYSHELF_WAIT_ABANDON;
		}
	}
	ctx->ts = PyEval_SaveThread();
	if (act == PYSHELF_WAIT_ABANDON && ctx->sigints <= 1)
		(void)pyshelf_interrupt(ctx->conn);
	return act;
}

/*
 * OUTPUT outside exec(): the backend's notices.  Called by libpyshelf in a
 * call that released the GIL (any of them but exec), so take it here.
 */
static int
conn_on_notice(void *arg, int stream, const void *data, size_t len)
{
	ConnObject *self = arg;
	PyGILState_STATE g = PyGILState_Ensure();
	PyObject *fn = self->notice, *chunk = NULL, *res = NULL;

	if (fn != NULL) {
		Py_INCREF(fn);
		chunk = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
		if (chunk != NULL)
			res = PyObject_CallFunction(fn, "iO", stream, chunk);
		if (res == NULL)
			PyErr_WriteUnraisable(fn);
		Py_XDECREF(res);
		Py_XDECREF(chunk);
		Py_DECREF(fn);
	}
	PyGILState_Release(g);
	return 0;
}

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
	Py_ssize_t i, n = 0;
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
	if (extra != NULL && extra != Py_None) {
		if ((tuple = PySequence_Tuple(extra)) == NULL)
			goto error;
		n = PyTuple_GET_SIZE(tuple);
	}
	if ((argv = PyMem_Calloc((size_t)n + 1, sizeof *argv)) == NULL) {
		PyErr_NoMemory();
		goto error;
	}
	for (i = 0; i < n; i++) {
		argv[i] = conn_utf8(PyTuple_GET_ITEM(tuple, i), "args items");
		if (argv[i] == NULL)
			goto error;
	}
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

/* hello(name=None) -> dict of the WELCOME fields */
static PyObject *
conn_hello(ConnObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "name", NULL };
	const pyshelf_welcome *w = NULL;
	const char *name = NULL;
	PyObject *sid = NULL, *ret = NULL;
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
		PyObject *e = Py_BuildValue("{s:d,s:s,s:s}", "ended",
		    (double)w->ended_ms / 1000.0, "reason",
		    w->ended_reason != NULL ? w->ended_reason : "",
		    "message", w->ended_message != NULL ? w->ended_message : "");
		if (e == NULL || PyDict_SetItemString(ret, "ended", e) < 0)
			Py_CLEAR(ret);
		Py_XDECREF(e);
	}
	return ret;
}

/*
 * exec(code, func, args, want_value, timeout_ms, on_output) -> result tuple
 * (see conn_result).  args: a sequence of ints (handles) and bytes
 * (pickles); on_output: None or callable(stream, bytes).
 */
static PyObject *
conn_exec(ConnObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "code", "func", "args", "want_value",
	    "timeout_ms", "on_output", NULL };
	PyObject *code = NULL, *func = Py_None, *argseq = NULL;
	PyObject *on_output = Py_None, *items = NULL, *ret = NULL;
	unsigned long long timeout_ms = 0;
	pyshelf_exec_req req;
	pyshelf_result res;
	pyshelf_arg *cargs = NULL;
	Py_ssize_t nargs = 0;
	exec_ctx ctx;
	int want_value = 0, rc, begun = 0;

	memset(&req, 0, sizeof req);
	memset(&res, 0, sizeof res);
	memset(&ctx, 0, sizeof ctx);
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOpKO:exec", kwlist,
	    &code, &func, &argseq, &want_value, &timeout_ms, &on_output))
		return NULL;
	/* borrowed: code and func live in args for the whole call */
	if ((req.code = conn_utf8(code, "code")) == NULL)
		return NULL;
	if (func != Py_None && (req.func = conn_utf8(func, "func")) == NULL)
		return NULL;
	if (on_output != Py_None && !PyCallable_Check(on_output)) {
		PyErr_Format(PyExc_TypeError, "on_output must be callable, not "
		    "%.200s", Py_TYPE(on_output)->tp_name);
		return NULL;
	}
	/* A private tuple: nobody can change the arguments while the GIL is
	 * released and cargs borrows their bytes. */
	if (argseq != NULL && argseq != Py_None)
		items = PySequence_Tuple(argseq);
	else
		items = PyTuple_New(0);
	if (items == NULL || conn_args(items, &cargs, &nargs) < 0)
		goto error;
	if (conn_begin(self) < 0)
		goto error;
	begun = 1;

	req.args = cargs;
	req.nargs = (size_t)nargs;
	req.want_value = want_value;
	req.timeout_ms = timeout_ms;
	req.on_output = conn_on_output;
	req.on_wait = conn_on_wait;
	req.wait_tick_ms = CONN_TICK_MS;
	req.ctx = &ctx;
	ctx.conn = self->conn;
	ctx.on_output = on_output != Py_None ? on_output : NULL; /* borrowed */

	ctx.ts = PyEval_SaveThread();
	rc = pyshelf_exec(self->conn, &req, &res);
	PyEval_RestoreThread(ctx.ts);

	if (ctx.exc != NULL) {
		/* Ctrl-C twice, or on_output raised: that wins. */
		conn_exc_restore(ctx.exc); /* stolen */
		ctx.exc = NULL;
		goto error;
	}
	if (rc != PYSHELF_OK) {
		conn_error(self, self->conn, rc);
		goto error;
	}
	ret = conn_result(conn_state(self), &res);
error:
	pyshelf_result_free(&res);
	if (begun)
		conn_end(self);
	Py_XDECREF(ctx.exc);
	PyMem_Free(cargs);
	Py_XDECREF(items);
	return ret;
}

/* interrupt(): stop the running exec; callable from any thread. */
static PyObject *
conn_interrupt(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	pyshelf_conn *c = self->conn;
	int rc;

	if (c == NULL)
		Py_RETURN_NONE;
	self->interrupting++;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_interrupt(c);
	Py_END_ALLOW_THREADS
	self->interrupting--;
	if (rc == PYSHELF_E_CLOSED || rc == PYSHELF_E_IO)
		return conn_died(conn_state(self), c, pyshelf_strerror(rc));
	Py_RETURN_NONE;
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
	rc = pyshelf_get(self->conn, k, want_value, &res);
	Py_END_ALLOW_THREADS
	if (rc != PYSHELF_OK)
		conn_error(self, self->conn, rc);
	else
		ret = conn_result(conn_state(self), &res);
	pyshelf_result_free(&res);
	conn_end(self);
	return ret;
}

/* set(key, pickle) */
static PyObject *
conn_set(ConnObject *self, PyObject *args)
{
	PyObject *key = NULL, *ret = NULL;
	const char *k;
	Py_buffer data;
	int rc;

	if (!PyArg_ParseTuple(args, "Uy*:set", &key, &data))
		return NULL;
	if ((k = conn_utf8(key, "key")) == NULL || conn_begin(self) < 0)
		goto error;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_set(self->conn, k, data.buf, (size_t)data.len);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		conn_error(self, self->conn, rc);
	else
		ret = Py_NewRef(Py_None);
error:
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

/* stats() -> str (JSON) */
static PyObject *
conn_stats(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *ret;
	char *json = NULL;
	int rc;

	if (conn_begin(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = pyshelf_stats(self->conn, &json);
	Py_END_ALLOW_THREADS
	conn_end(self);
	if (rc != PYSHELF_OK)
		return conn_error(self, self->conn, rc);
	ret = PyUnicode_FromString(json);
	pyshelf_free(json);
	return ret;
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
	{ "attach_fds", (PyCFunction)conn_attach_fds, METH_VARARGS,
	  "attach_fds(rfd, wfd): speak the protocol over these descriptors" },
	{ "hello", (PyCFunction)(void (*)(void))conn_hello,
	  METH_VARARGS | METH_KEYWORDS, "hello(name=None) -> dict" },
	{ "exec", (PyCFunction)(void (*)(void))conn_exec,
	  METH_VARARGS | METH_KEYWORDS,
	  "exec(code, func=None, args=(), want_value=False, timeout_ms=0, "
	  "on_output=None) -> (kind, handle, type_name, exc_type, message, "
	  "value, volatile)" },
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
	{ "detach", (PyCFunction)conn_detach, METH_NOARGS,
	  "detach(): the backend checkpoints and exits" },
	{ "close_session", (PyCFunction)conn_close_session, METH_NOARGS,
	  "close_session(): end the session for good" },
	{ "close", (PyCFunction)conn_close, METH_NOARGS,
	  "close() -> backend return code or None" },
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

static PyType_Spec conn_spec = {
	"pyshelf._pyshelf.Connection",
	sizeof(ConnObject),
	0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
	conn_slots
};

/* --- module ---------------------------------------------------------------- */

/* _setup(Error, RemoteError, UnknownHandleError, VolatileError,
 *        NotPicklableError, BackendDied, SessionNotFound, SessionEnded,
 *        SessionBusy, loads) */
static PyObject *
mod_setup(PyObject *module, PyObject *args)
{
	module_state *st = PyModule_GetState(module);
	PyObject *o[EXC_COUNT + 1];
	int i;

	if (!PyArg_ParseTuple(args, "OOOOOOOOOO:_setup", &o[0], &o[1], &o[2],
	    &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9]))
		return NULL;
	for (i = 0; i < EXC_COUNT; i++) {
		if (!PyExceptionClass_Check(o[i])) {
			PyErr_Format(PyExc_TypeError, "_setup argument %d must be "
			    "an exception class, not %.200s", i + 1,
			    Py_TYPE(o[i])->tp_name);
			return NULL;
		}
	}
	if (!PyCallable_Check(o[EXC_COUNT])) {
		PyErr_SetString(PyExc_TypeError, "loads must be callable");
		return NULL;
	}
	for (i = 0; i < EXC_COUNT; i++)
		Py_XSETREF(st->exc[i], Py_NewRef(o[i]));
	Py_XSETREF(st->loads, Py_NewRef(o[EXC_COUNT]));
	Py_RETURN_NONE;
}

/* strerror(rc) -> str */
static PyObject *
mod_strerror(PyObject *module, PyObject *arg)
{
	long rc = PyLong_AsLong(arg);

	if (rc == -1 && PyErr_Occurred())
		return NULL;
	if (rc < INT_MIN || rc > INT_MAX)
		rc = INT_MIN;
	return PyUnicode_FromString(pyshelf_strerror((int)rc));
}

/* errcode_name(code) -> str */
static PyObject *
mod_errcode_name(PyObject *module, PyObject *arg)
{
	unsigned long long code = PyLong_AsUnsignedLongLong(arg);

	if (code == (unsigned long long)-1 && PyErr_Occurred())
		return NULL;
	return PyUnicode_FromString(pyshelf_errcode_name(code));
}

static int
mod_traverse(PyObject *module, visitproc visit, void *arg)
{
	module_state *st = PyModule_GetState(module);
	int i;

	if (st == NULL)
		return 0;
	Py_VISIT(st->conn_type);
	for (i = 0; i < EXC_COUNT; i++)
		Py_VISIT(st->exc[i]);
	Py_VISIT(st->loads);
	return 0;
}

static int
mod_clear(PyObject *module)
{
	module_state *st = PyModule_GetState(module);
	int i;

	if (st == NULL)
		return 0;
	Py_CLEAR(st->conn_type);
	for (i = 0; i < EXC_COUNT; i++)
		Py_CLEAR(st->exc[i]);
	Py_CLEAR(st->loads);
	return 0;
}

static void
mod_free(void *module)
{
	(void)mod_clear((PyObject *)module);
}

static PyMethodDef mod_methods[] = {
	{ "_setup", mod_setup, METH_VARARGS,
	  "_setup(Error, RemoteError, UnknownHandleError, VolatileError, "
	  "NotPicklableError, BackendDied, SessionNotFound, SessionEnded, "
	  "SessionBusy, loads)" },
	{ "strerror", mod_strerror, METH_O, "strerror(rc) -> str" },
	{ "errcode_name", mod_errcode_name, METH_O, "errcode_name(code) -> str" },
	{ NULL, NULL, 0, NULL }
};

static struct PyModuleDef pyshelf_module = {
	PyModuleDef_HEAD_INIT,
	"pyshelf._pyshelf",
	"C extension of the pyshelf client (over libpyshelf).",
	sizeof(module_state),
	mod_methods,
	NULL,
	mod_traverse,
	mod_clear,
	mod_free
};

/* Integer constants the Python layer uses. */
static int
mod_add_constants(PyObject *m)
{
	static const struct { const char *name; long value; } consts[] = {
		{ "KIND_DIRECT", PYSHELF_KIND_DIRECT },
		{ "KIND_WRAPPED", PYSHELF_KIND_WRAPPED },
		{ "KIND_EXCINFO", PYSHELF_KIND_EXCINFO },
		{ "STDOUT", PYSHELF_STDOUT },
		{ "STDERR", PYSHELF_STDERR },
		{ "ERR_UNKNOWN_HANDLE", PYSHELF_ERR_UNKNOWN_HANDLE },
		{ "ERR_UNPICKLE", PYSHELF_ERR_UNPICKLE },
		{ "ERR_PICKLE", PYSHELF_ERR_PICKLE },
		{ "ERR_NOT_FOUND", PYSHELF_ERR_NOT_FOUND },
		{ "ERR_VOLATILE", PYSHELF_ERR_VOLATILE },
		{ "ERR_SESSION_DEAD", PYSHELF_ERR_SESSION_DEAD },
		{ "ERR_BAD_REQUEST", PYSHELF_ERR_BAD_REQUEST },
	};
	size_t i;

	for (i = 0; i < sizeof consts / sizeof consts[0]; i++) {
		if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0)
			return -1;
	}
	return 0;
}

PyMODINIT_FUNC
PyInit__pyshelf(void)
{
	PyObject *m = NULL, *type = NULL;
	module_state *st;

	if ((m = PyModule_Create(&pyshelf_module)) == NULL)
		return NULL;
	st = PyModule_GetState(m);
	type = PyType_FromModuleAndSpec(m, &conn_spec, NULL);
	if (type == NULL)
		goto error;
	st->conn_type = (PyTypeObject *)Py_NewRef(type);
	if (PyModule_AddObjectRef(m, "Connection", type) < 0 ||
	    mod_add_constants(m) < 0)
		goto error;
	Py_DECREF(type);
	return m;
error:
	Py_XDECREF(type);
	Py_DECREF(m);
	return NULL;
}
