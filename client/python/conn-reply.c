/*
 * conn-reply.c - what every Connection method shares: claiming the connection for a
 * call, turning libpyshelf errors and results into Python objects (the
 * exception classes _setup() gave), and arguments into pyshelf_arg.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <limits.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pyshelf-ext.h"

/* --- helpers --------------------------------------------------------------- */

/* The module state of the Connection type's module. */
module_state *
conn_state(ConnObject *self)
{
	return PyType_GetModuleState(Py_TYPE(self));
}

/* Claim the connection for one call.  Raises and returns -1 when it is
 * closed or busy. */
int
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
void
conn_end(ConnObject *self)
{
	self->busy = 0;
}

/* A str as UTF-8 without NUL (what), or NULL with an exception set.  The
 * result is borrowed from s, which the caller keeps alive. */
const char *
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
PyObject *
conn_str(const char *s)
{
	if (s == NULL)
		Py_RETURN_NONE;
	return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

/* A waitpid() status as a subprocess-style return code, or None. */
PyObject *
conn_status_obj(int wstatus)
{
	if (WIFEXITED(wstatus))
		return PyLong_FromLong(WEXITSTATUS(wstatus));
	if (WIFSIGNALED(wstatus))
		return PyLong_FromLong(-WTERMSIG(wstatus));
	Py_RETURN_NONE;
}

/* Raise RemoteError or the subclass for code, with (msg, code, name). */
PyObject *
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
	case PYSHELF_ERR_WORKER_RESTARTED:
		cls = st->exc[EXC_RESTARTED]; /* borrowed */
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
 * The message says what is known of the request: not run, run in part,
 * or sent and not answered.
 */
PyObject *
conn_died(module_state *st, pyshelf_conn *c, const char *why)
{
	PyObject *status = NULL, *msg = NULL, *exc = NULL, *text = NULL;
	int wstatus = 0, got;
	const char *what;

	switch (pyshelf_request_fate(c)) {
	case PYSHELF_FATE_NOT_RUN:
		what = "pyshelfd had died before it read this request, which "
		    "did not run";
		break;
	case PYSHELF_FATE_STARTED:
		what = "pyshelfd died while it ran this request";
		break;
	case PYSHELF_FATE_SENT:
		what = "pyshelfd died after this request was sent to it and "
		    "before it answered (the request may have run)";
		break;
	default:
		what = "pyshelfd died";
	}

	if ((text = conn_str(why != NULL ? why : "")) == NULL)
		return NULL;

	Py_BEGIN_ALLOW_THREADS
	got = pyshelf_backend_status(c, &wstatus, CONN_DEATH_MS);
	Py_END_ALLOW_THREADS
	if (got == PYSHELF_OK) {
		if ((status = conn_status_obj(wstatus)) == NULL)
			goto error;
		if (WIFSIGNALED(wstatus))
			msg = PyUnicode_FromFormat("%s: %U (killed by signal "
			    "%d)", what, text, WTERMSIG(wstatus));
		else if (WEXITSTATUS(wstatus) == 70)  /* exec.h's
		                                         WORKER_FDS_EXIT */
			msg = PyUnicode_FromFormat("%s: %U (exit status 70: "
			    "the backend found descriptors of its own closed "
			    "or replaced by the code it ran, and exited before "
			    "touching the files in their place; the session "
			    "keeps its last checkpoint)", what, text);
		else
			msg = PyUnicode_FromFormat("%s: %U (exit status %d)",
			    what, text, WEXITSTATUS(wstatus));
	} else {
		status = Py_NewRef(Py_None);
		msg = PyUnicode_FromFormat("%s: %U", what, text);
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
PyObject *
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
	case PYSHELF_E_FORKED:
		err = st->exc[EXC_FORKED];
		break;
	}
	/* A copy: msg is the connection's and may change below. */
	if ((text = conn_str(msg)) == NULL)
		return NULL;
	if (rc == PYSHELF_E_PROTOCOL &&
	    pyshelf_remote_errcode(c) == PYSHELF_ERR_SESSION_DEAD) {
		/* the session was ended under this connection (another
		 * client's close_session(), pyshelf.end()): SessionEnded */
		Py_DECREF(text);
		return conn_remote(st, c, msg, PYSHELF_ERR_SESSION_DEAD);
	}
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
/* A Block: one out-of-band buffer of a reply, malloc'd by libpyshelf and
 * owned here; a writable buffer, so that pickle.loads(buffers=) builds a
 * numpy array on it without a copy. */
typedef struct {
	PyObject_HEAD
	void *data;          /* owned (free()) */
	Py_ssize_t len;      /* bytes at data */
} BlockObject;

static int
block_getbuffer(PyObject *o, Py_buffer *view, int flags)
{
	BlockObject *b = (BlockObject *)o;

	return PyBuffer_FillInfo(view, o, b->data, b->len, 0, flags);
}

static void
block_dealloc(PyObject *o)
{
	PyTypeObject *tp = Py_TYPE(o);

	free(((BlockObject *)o)->data);
	tp->tp_free(o);
	Py_DECREF(tp);
}

static PyType_Slot block_slots[] = {
	{ Py_bf_getbuffer, block_getbuffer },
	{ Py_tp_dealloc, block_dealloc },
	{ Py_tp_doc, "An out-of-band buffer of a value that came back." },
	{ 0, NULL }
};

PyType_Spec conn_block_spec = {
	"pyshelf._pyshelf.Block", sizeof(BlockObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, block_slots
};

/* The reply's buffers as a list of Blocks, each taking its memory from
 * r (whose data pointers are set to NULL). */
static PyObject *
conn_blocks(module_state *st, const pyshelf_result *r)
{
	PyObject *l = PyList_New((Py_ssize_t)r->nbuffers);
	BlockObject *b;
	size_t i;

	for (i = 0; l != NULL && i < r->nbuffers; i++) {
		if ((b = PyObject_New(BlockObject, st->block_type)) == NULL) {
			Py_CLEAR(l);
			break;
		}
		b->data = r->buffers[i].data;
		b->len = (Py_ssize_t)r->buffers[i].len;
		r->buffers[i].data = NULL;   /* the Block's now */
		PyList_SET_ITEM(l, (Py_ssize_t)i, (PyObject *)b);
	}
	return l;
}

/* Nonzero when p[0..n) is a pickle of None alone (PROTO, NONE, STOP, or
 * NONE, STOP): what a call that returned nothing sends back, made here
 * without a memoryview and a call of loads(). */
static int
conn_pickle_is_none(const unsigned char *p, size_t n)
{
	if (n == 4 && p[0] == 0x80 && p[1] <= 5)
		p += 2, n -= 2;
	return n == 2 && p[0] == 'N' && p[1] == '.';
}

PyObject *
conn_result(module_state *st, const pyshelf_result *r)
{
	PyObject *value = NULL, *view = NULL, *ret = NULL, *tmp;
	PyObject *tn = NULL, *et = NULL, *msg = NULL, *vol = NULL;
	PyObject *ltype, *lvalue, *ltb;   /* loads()'s error, while released */

	static PyObject *release;     /* interned "release" */

	if (r->kind == PYSHELF_KIND_DIRECT && r->nbuffers == 0 &&
	    conn_pickle_is_none(r->value, r->value_len))
		value = Py_NewRef(Py_None);
	else if (r->kind == PYSHELF_KIND_DIRECT) {
		if (st->loads == NULL) {
			PyErr_SetString(PyExc_RuntimeError,
			    "pyshelf._pyshelf._setup() was not called");
			goto error;
		}
		view = PyMemoryView_FromMemory((char *)r->value,
		    (Py_ssize_t)r->value_len, PyBUF_READ);
		if (view == NULL)
			goto error;
		if (r->nbuffers > 0) {
			PyObject *bl = conn_blocks(st, r), *a, *kw;
			if (bl == NULL)
				goto error;
			a = PyTuple_Pack(1, view);
			kw = a != NULL ? Py_BuildValue("{s:O}", "buffers", bl) :
			    NULL;
			value = kw != NULL ? PyObject_Call(st->loads, a, kw) :
			    NULL;
			Py_XDECREF(a);
			Py_XDECREF(kw);
			Py_DECREF(bl);
		} else
			value = PyObject_CallOneArg(st->loads, view);
		/* The buffer is the connection's: nothing may keep a view.  An
		 * unpickling error is kept aside while the view is released
		 * (a call with an exception set is a SystemError), and is the
		 * one raised. */
		PyErr_Fetch(&ltype, &lvalue, &ltb);
		if (release == NULL)
			release = PyUnicode_InternFromString("release");
		tmp = release != NULL ?
		    PyObject_CallMethodNoArgs(view, release) : NULL;
		Py_XDECREF(tmp);
		if (ltype != NULL) {
			if (tmp == NULL)
				PyErr_Clear();
			PyErr_Restore(ltype, lvalue, ltb);
		}
		if (tmp == NULL || value == NULL)
			goto error;
	} else if (r->kind == PYSHELF_KIND_EXCINFO) {
		/* the traceback's text, or None */
		if ((value = conn_str(r->text)) == NULL)
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
int
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
		} else if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2 &&
		    PyBytes_Check(PyTuple_GET_ITEM(item, 0)) &&
		    PyTuple_Check(PyTuple_GET_ITEM(item, 1))) {
			/* (pickle, (buffer, ...)): out-of-band buffers, sent
			 * from their memory; the tuple keeps them alive */
			PyObject *bt = PyTuple_GET_ITEM(item, 1); /* borrowed */
			Py_ssize_t j, nb = PyTuple_GET_SIZE(bt);
			pyshelf_buffer *bufs;
			args[i].kind = PYSHELF_ARG_PICKLE;
			args[i].data = PyBytes_AS_STRING(PyTuple_GET_ITEM(item, 0));
			args[i].len = (size_t)PyBytes_GET_SIZE(
			    PyTuple_GET_ITEM(item, 0));
			if ((bufs = PyMem_Calloc((size_t)nb + 1,
			    sizeof *bufs)) == NULL) {
				PyErr_NoMemory();
				goto error;
			}
			args[i].buffers = bufs;
			args[i].nbuffers = (size_t)nb;
			for (j = 0; j < nb; j++) {
				Py_buffer v;
				if (PyObject_GetBuffer(PyTuple_GET_ITEM(bt, j), &v,
				    PyBUF_SIMPLE) < 0)
					goto error;
				/* the object (held by the tuple) keeps the
				 * memory: a PickleBuffer's raw() of an array
				 * that is not resized while the call runs */
				bufs[j].data = v.buf;
				bufs[j].len = (size_t)v.len;
				PyBuffer_Release(&v);
			}
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
	conn_args_free(args, n);
	return -1;
}

/* Free what conn_args() allocated. */
void
conn_args_free(pyshelf_arg *args, Py_ssize_t n)
{
	Py_ssize_t i;

	for (i = 0; args != NULL && i < n; i++)
		PyMem_Free((void *)args[i].buffers);
	PyMem_Free(args);
}
