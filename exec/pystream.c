/*
 * pystream.c - the _pyshelfd functions behind the backend's streams and
 * signals: output() under the backend's sys.stdout/sys.stderr (writes
 * reach the client as OUTPUT of the running request, through the
 * context's output callback), in_child(), the Python-level
 * SIGINT/SIGTERM handler with its installation, and threads(), which the
 * backend's wrapper of _thread.start_new_thread calls as threads of
 * shipped code begin and end (the worker counts them as code running).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <signal.h>
#include <string.h>

#include "wire.h"
#include "pyexec.h"

/* ---------------------------------------------------------------------- */
/* output                                                                 */

/*
 * output(stream, data): send data (str, or any bytes-like object) as
 * output of the running request on stream 1 (stdout) or 2 (stderr); the
 * number of characters (str) or bytes written.  The backend's
 * OutputStream objects (sys.stdout/sys.stderr) write through this: their
 * write is output bound to their stream, with no Python frame between
 * print() and here.  A client that is gone is not an error (the code keeps
 * running so that the workspace still gets checkpointed).
 */
static PyObject *
pystream_output(PyObject *self, PyObject *args)
{
	const struct pyctx *c = pymodule_ctx();
	Py_buffer view;
	PyObject *data;
	const char *p;
	Py_ssize_t n;
	int stream;

	if (!PyArg_ParseTuple(args, "iO:output", &stream, &data))
		return NULL;
	if (stream != 1 && stream != 2) {
		PyErr_SetString(PyExc_ValueError, "stream must be 1 or 2");
		return NULL;
	}
	if (PyUnicode_Check(data)) {
		PyObject *enc = NULL;

		if ((p = PyUnicode_AsUTF8AndSize(data, &n)) == NULL) {
			/* lone surrogates: stderr escapes them, as Python's
			 * own stderr does; stdout is strict */
			if (stream != 2 ||
			    !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
				return NULL;
			PyErr_Clear();
			if ((enc = PyUnicode_AsEncodedString(data, "utf-8",
			    "backslashreplace")) == NULL)
				return NULL;
			p = PyBytes_AS_STRING(enc);
			n = PyBytes_GET_SIZE(enc);
		}
		if (n > 0 && c->output != NULL)
			(void)c->output(c->owner, stream, p, (size_t)n);
		Py_XDECREF(enc);
		return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(data));
	}
	if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
		return NULL;
	n = view.len;
	if (n > 0 && c->output != NULL)
		(void)c->output(c->owner, stream, view.buf, (size_t)n);
	PyBuffer_Release(&view);
	return PyLong_FromSsize_t(n);
}

/* Is this a child forked by shipped code?  exact: compare the pid (the
 * owner's in_child), else the atfork flag only. */
int
pystream_in_child_of(const struct pyctx *c, int exact)
{
	if (exact)
		return c->in_child != NULL && c->in_child();
	return c->forked != NULL && *c->forked;
}

/* in_child(exact=1) -> whether this process was forked by shipped code;
 * exact=0 looks at the atfork flag only (no getpid(): for hot paths) */
static PyObject *
pystream_in_child(PyObject *self, PyObject *args)
{
	int exact = 1;

	if (!PyArg_ParseTuple(args, "|i:in_child", &exact))
		return NULL;
	return PyBool_FromLong(pystream_in_child_of(pymodule_ctx(), exact));
}

/* ---------------------------------------------------------------------- */
/* signals                                                                */

/*
 * on_signal(signum, frame): SIGINT sent by our own reader thread carries a
 * stop reason (interrupt or timeout) and raises in the running code.  Any
 * other SIGINT or a SIGTERM asks for a clean shutdown: running code gets
 * KeyboardInterrupt, idle workers just leave their loop.
 */
static PyObject *
pystream_on_signal(PyObject *self, PyObject *args)
{
	const struct pyctx *c = pymodule_ctx();
	int signum;
	PyObject *frame;

	if (!PyArg_ParseTuple(args, "iO", &signum, &frame))
		return NULL;
	if (pystream_in_child_of(c, 1)) {
		/* a child of shipped code that kept our handler (the backend
		 * resets it after a fork): behave as a plain Python process,
		 * and never touch the parent's state */
		if (signum == SIGTERM) {
			signal(SIGTERM, SIG_DFL);
			raise(SIGTERM);
			Py_RETURN_NONE;
		}
		PyErr_SetNone(PyExc_KeyboardInterrupt);
		return NULL;
	}
	switch (c->on_signal != NULL ? c->on_signal(c->owner, signum) :
	    PYCTX_SIG_INTERRUPT) {
	case PYCTX_SIG_NONE:
		Py_RETURN_NONE;
	case PYCTX_SIG_TIMEOUT:
		PyErr_SetString(PyExc_TimeoutError,
		    "pyshelf: the request ran past its timeout and was "
		    "stopped by the backend");
		return NULL;
	case PYCTX_SIG_SHUTDOWN:
		PyErr_SetString(PyExc_KeyboardInterrupt,
		    "pyshelf: the backend is stopping (SIGTERM: the server or "
		    "its host is shutting down); this call was stopped here, "
		    "and the workspace is checkpointed as it is now");
		return NULL;
	default:
		PyErr_SetNone(PyExc_KeyboardInterrupt);
		return NULL;
	}
}

/*
 * threads(delta=0) -> the number of threads of shipped code alive, after
 * adding delta (1: one began, -1: one ended; the backend's wrapper of
 * _thread.start_new_thread, which threading.Thread goes through).  In a child forked by shipped code the
 * count is the parent's and is left alone: 0.
 */
static PyObject *
pystream_threads(PyObject *self, PyObject *args)
{
	const struct pyctx *c = pymodule_ctx();
	int delta = 0;

	if (!PyArg_ParseTuple(args, "|i:threads", &delta))
		return NULL;
	if (delta < -1 || delta > 1) {
		PyErr_SetString(PyExc_ValueError, "delta must be -1, 0 or 1");
		return NULL;
	}
	if (c->threads == NULL || pystream_in_child_of(c, 0))
		return PyLong_FromLong(0);
	return PyLong_FromLong(c->threads(c->owner, delta));
}

/* descriptors                                                            */

/* worker_fd(fd) -> whether fd is one of the backend's own (os.close and
 * os.dup2 of shipped code refuse it: backend_process.py). */
static PyObject *
pystream_worker_fd(PyObject *self, PyObject *args)
{
	const struct pyctx *c = pymodule_ctx();
	int fd;

	(void)self;
	if (!PyArg_ParseTuple(args, "i", &fd))
		return NULL;
	return PyBool_FromLong(c->fd_owned != NULL && c->fd_owned(fd));
}

/* worker_fds(lo, hi) -> the backend's own fds in [lo, hi), ascending, as
 * a tuple (os.closerange of shipped code closes around them). */
static PyObject *
pystream_worker_fds(PyObject *self, PyObject *args)
{
	const struct pyctx *c = pymodule_ctx();
	int lo, hi, n = 0, i, fds[4096];
	PyObject *t = NULL, *v;

	(void)self;
	if (!PyArg_ParseTuple(args, "ii", &lo, &hi))
		return NULL;
	if (c->fds_list != NULL)
		n = c->fds_list(lo, hi, fds, 4096);
	if ((t = PyTuple_New(n)) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if ((v = PyLong_FromLong(fds[i])) == NULL) {
			Py_DECREF(t);
			return NULL;
		}
		PyTuple_SET_ITEM(t, i, v);  /* stolen */
	}
	return t;
}

/*
 * The audit hook: shipped code that looks up, through ctypes, a C
 * function that closes or replaces fds (close, close_range, closefrom,
 * dup2, dup3, syscall) bypasses the os wrappers of backend_process.py;
 * the owner then checks its fds before it writes anything (worker-fds.c).
 * Every other event costs a comparison of its name's first bytes.
 */
static int
pystream_audit(const char *event, PyObject *args, void *data)
{
	const struct pyctx *c = data;
	PyObject *name;
	const char *s;

	if (strncmp(event, "ctypes.dlsym", 12) != 0 || c->fds_suspect == NULL)
		return 0;
	if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 2)
		return 0;
	name = PyTuple_GET_ITEM(args, 1);  /* borrowed */
	if (!PyUnicode_Check(name)) {
		c->fds_suspect();  /* by ordinal: cannot tell */
		return 0;
	}
	if ((s = PyUnicode_AsUTF8(name)) == NULL) {
		PyErr_Clear();
		c->fds_suspect();
		return 0;
	}
	if (strstr(s, "close") != NULL || strstr(s, "dup") != NULL ||
	    strcmp(s, "syscall") == 0)
		c->fds_suspect();
	return 0;
}

PyMethodDef pystream_methods[] = {
	{"worker_fd", pystream_worker_fd, METH_VARARGS, "worker_fd(fd) -> "
	    "whether fd is one of the backend's own"},
	{"worker_fds", pystream_worker_fds, METH_VARARGS, "worker_fds(lo, hi) "
	    "-> the backend's own fds in [lo, hi)"},
	{"on_signal", pystream_on_signal, METH_VARARGS, "SIGINT/SIGTERM handler"},
	{"output", pystream_output, METH_VARARGS, "output(stream, data): send "
	    "output of the running request"},
	{"in_child", pystream_in_child, METH_VARARGS, "in_child(exact=1) -> "
	    "whether this process is a child forked by shipped code"},
	{"threads", pystream_threads, METH_VARARGS, "threads(delta=0) -> "
	    "threads of shipped code alive, after adding delta"},
	{NULL, NULL, 0, NULL}
};

/* SIGINT/SIGTERM get our handler.  (sys.stdout/sys.stderr/sys.stdin are
 * set by the backend's init(): OutputStream objects over output().) */
int
pystream_setup(const struct pyctx *c)
{
	PyObject *sig = NULL, *h = NULL, *r;
	int rc = -1;

	if (c->fds_suspect != NULL &&
	    PySys_AddAuditHook(pystream_audit, (void *)pymodule_ctx()) < 0)
		goto out;
	if ((sig = PyImport_ImportModule("signal")) == NULL)
		goto out;
	if ((h = PyObject_GetAttrString(PyImport_AddModule("_pyshelfd"),
	    "on_signal")) == NULL)
		goto out;
	if ((r = PyObject_CallMethod(sig, "signal", "iO", SIGINT, h)) == NULL)
		goto out;
	Py_DECREF(r);
	if ((r = PyObject_CallMethod(sig, "signal", "iO", SIGTERM, h)) == NULL)
		goto out;
	Py_DECREF(r);
	if ((r = PyObject_CallMethod(sig, "set_wakeup_fd", "i",
	    c->wake_fd)) == NULL)
		goto out;
	Py_DECREF(r);
	rc = 0;
out:
	Py_XDECREF(sig);
	Py_XDECREF(h);
	return rc;
}
