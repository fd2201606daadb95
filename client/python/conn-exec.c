/*
 * conn-exec.c - Connection.exec() and interrupt(), and exec's callbacks, which libpyshelf
 * calls with the GIL released: streamed output handed to a Python callable,
 * signals looked at every CONN_TICK_MS (a first KeyboardInterrupt becomes
 * an INTERRUPT, a second abandons the wait), notices outside exec().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <limits.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pyshelf-ext.h"

static void conn_stash(exec_ctx *);
static int conn_on_output(void *, int, const void *, size_t);
static int conn_on_wait(void *);
static int conn_withdrawn(ConnObject *, const exec_ctx *, int);

/* --- exec callbacks (called with the GIL released) ---------------------- */

/* Take the raised exception as one normalised object (traceback attached);
 * the 3.11 spelling of PyErr_GetRaisedException(). */
PyObject *
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
void
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
int
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

/*
 * exec(code, func, args, want_value, timeout_ms, on_output) -> result tuple
 * (see conn_result).  args: a sequence of ints (handles) and bytes
 * (pickles); on_output: None or callable(stream, bytes).
 */
PyObject *
conn_exec(ConnObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "code", "func", "args", "want_value",
	    "timeout_ms", "on_output", "call_id", NULL };
	PyObject *code = NULL, *func = Py_None, *argseq = NULL;
	PyObject *on_output = Py_None, *items = NULL, *ret = NULL;
	PyObject *call_id = Py_None;
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
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOpKOO:exec", kwlist,
	    &code, &func, &argseq, &want_value, &timeout_ms, &on_output,
	    &call_id))
		return NULL;
	if (call_id != Py_None) {
		if (!PyBytes_Check(call_id) || PyBytes_GET_SIZE(call_id) != 16) {
			PyErr_SetString(PyExc_ValueError,
			    "call_id must be 16 bytes or None");
			return NULL;
		}
		memcpy(req.call_id, PyBytes_AS_STRING(call_id), 16);
	}
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
	/* a value (by value, or a DirectValue's): large buffers may come
	 * out of band (pickle 5) */
	req.want_value = (want_value ? PYSHELF_WANT_PICKLE :
	    PYSHELF_WANT_HANDLE) | PYSHELF_WANT_BUFFERS;
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
	/* the id sent (drawn when none was given), also after a failure:
	 * the caller may send the call again under it */
	memcpy(self->last_call_id, req.call_id, sizeof self->last_call_id);
	self->has_call_id = 1;

	if (ctx.exc != NULL) {
		/* Ctrl-C twice, or on_output raised: that wins. */
		conn_exc_restore(ctx.exc); /* stolen */
		ctx.exc = NULL;
		goto error;
	}
	if (rc != PYSHELF_OK) {
		if (!conn_withdrawn(self, &ctx, rc))
			conn_error(self, self->conn, rc);
		goto error;
	}
	ret = conn_result(conn_state(self), &res);
error:
	pyshelf_result_free(&res);
	if (begun)
		conn_end(self);
	Py_XDECREF(ctx.exc);
	conn_args_free(cargs, nargs);
	Py_XDECREF(items);
	return ret;
}

/* Send INTERRUPT (hard: HARD=1) from any thread; a broken connection is
 * BackendDied. */
static PyObject *
conn_interrupt_as(ConnObject *self, int (*send)(pyshelf_conn *))
{
	pyshelf_conn *c = self->conn;
	int rc;

	if (c == NULL)
		Py_RETURN_NONE;
	self->interrupting++;
	Py_BEGIN_ALLOW_THREADS
	rc = send(c);
	Py_END_ALLOW_THREADS
	self->interrupting--;
	if (rc == PYSHELF_E_CLOSED || rc == PYSHELF_E_IO)
		return conn_died(conn_state(self), c, pyshelf_strerror(rc));
	Py_RETURN_NONE;
}

/* interrupt(): stop the running exec; callable from any thread. */
PyObject *
conn_interrupt(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_interrupt_as(self, pyshelf_interrupt);
}

/* interrupt_hard(): INTERRUPT{HARD}; callable from any thread. */
PyObject *
conn_interrupt_hard(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
	return conn_interrupt_as(self, pyshelf_interrupt_hard);
}

/*
 * A Ctrl-C reached a call that waited in the worker's queue: the worker
 * took it out (it never ran) and said so (ERROR WORKER_RESTARTED, REASON
 * "withdrawn").  The user pressed Ctrl-C: KeyboardInterrupt, with the
 * worker's words.  1 when that is what rc was.
 */
static int
conn_withdrawn(ConnObject *self, const exec_ctx *ctx, int rc)
{
	const char *reason = NULL;

	if (rc != PYSHELF_E_REMOTE || ctx->sigints == 0 ||
	    pyshelf_remote_errcode(self->conn) != PYSHELF_ERR_WORKER_RESTARTED)
		return 0;
	(void)pyshelf_remote_ended(self->conn, &reason);
	if (reason == NULL || strcmp(reason, "withdrawn") != 0)
		return 0;
	PyErr_Format(PyExc_KeyboardInterrupt, "pyshelf: %s",
	    pyshelf_errmsg(self->conn));
	return 1;
}

/*
 * call_result(call_id, wait=True, timeout_ms=-1, on_output=None) -> result
 * tuple (see conn_result): the journaled call's output replayed to
 * on_output, then its result.  Ctrl-C while it waits stops the wait (the
 * call itself is not this request's: it is not interrupted).
 */
PyObject *
conn_call_result(ConnObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "call_id", "wait", "timeout_ms", "on_output",
	    NULL };
	PyObject *on_output = Py_None, *ret = NULL;
	Py_buffer id;
	pyshelf_exec_req req;
	pyshelf_result res;
	exec_ctx ctx;
	int wait = 1, timeout_ms = -1, rc;

	memset(&req, 0, sizeof req);
	memset(&res, 0, sizeof res);
	memset(&ctx, 0, sizeof ctx);
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|piO:call_result",
	    kwlist, &id, &wait, &timeout_ms, &on_output))
		return NULL;
	if (id.len != 16) {
		PyErr_SetString(PyExc_ValueError, "call_id must be 16 bytes");
		goto done;
	}
	if (on_output != Py_None && !PyCallable_Check(on_output)) {
		PyErr_Format(PyExc_TypeError, "on_output must be callable, not "
		    "%.200s", Py_TYPE(on_output)->tp_name);
		goto done;
	}
	if (conn_begin(self) < 0)
		goto done;
	req.on_output = conn_on_output;
	req.on_wait = conn_on_wait;
	req.wait_tick_ms = CONN_TICK_MS;
	req.ctx = &ctx;
	ctx.conn = self->conn;
	ctx.on_output = on_output != Py_None ? on_output : NULL; /* borrowed */
	/* one Ctrl-C is enough: there is no exec of ours to interrupt */
	ctx.sigints = 1;

	ctx.ts = PyEval_SaveThread();
	rc = pyshelf_call_result(self->conn, id.buf, wait, timeout_ms, &req,
	    &res);
	PyEval_RestoreThread(ctx.ts);
	if (ctx.exc != NULL) {
		conn_exc_restore(ctx.exc); /* stolen */
		ctx.exc = NULL;
	} else if (rc == PYSHELF_E_TIMEOUT)
		PyErr_SetString(PyExc_TimeoutError, "the call still runs");
	else if (rc != PYSHELF_OK)
		conn_error(self, self->conn, rc);
	else
		ret = conn_result(conn_state(self), &res);
	pyshelf_result_free(&res);
	conn_end(self);
done:
	Py_XDECREF(ctx.exc);
	PyBuffer_Release(&id);
	return ret;
}
