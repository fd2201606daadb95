/*
 * pyio.c - the _pyshelfd module's definition, output() under the
 * backend's sys.stdout/sys.stderr (writes reach the client as OUTPUT of the
 * running request), the Python-level SIGINT/SIGTERM handler, and loading
 * the backend's Python half from the source compiled into pyshelfd.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>

#include "config.h"

#include <signal.h>
#include <string.h>

#include "pyexec.h"

/* backend-py.c, generated: the source, and its bytecode behind the magic
 * number of the Python that compiled it */
extern const char backend_py_source[];
extern const char backend_py_code[];
extern const size_t backend_py_code_len;

PyObject *pyio_backend;       /* _pyshelf_backend */
PyObject *pyio_RequestError;  /* _pyshelf_backend.RequestError */

static struct PyModuleDef pyio_module;

/* The context the module's owner gave pymod_start (the module's state);
 * all zero before. */
struct pyctx *
pyio_ctx(void)
{
	static struct pyctx none;
	PyObject *m = PyState_FindModule(&pyio_module);
	struct pyctx *c = m != NULL ? PyModule_GetState(m) : NULL;

	return c != NULL ? c : &none;
}

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
pyio_output(PyObject *self, PyObject *args)
{
	const struct pyctx *c = pyio_ctx();
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
pyio_in_child_of(const struct pyctx *c, int exact)
{
	if (exact)
		return c->in_child != NULL && c->in_child();
	return c->forked != NULL && *c->forked;
}

/* in_child(exact=1) -> whether this process was forked by shipped code;
 * exact=0 looks at the atfork flag only (no getpid(): for hot paths) */
static PyObject *
pyio_in_child(PyObject *self, PyObject *args)
{
	int exact = 1;

	if (!PyArg_ParseTuple(args, "|i:in_child", &exact))
		return NULL;
	return PyBool_FromLong(pyio_in_child_of(pyio_ctx(), exact));
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
pyio_on_signal(PyObject *self, PyObject *args)
{
	const struct pyctx *c = pyio_ctx();
	int signum;
	PyObject *frame;

	if (!PyArg_ParseTuple(args, "iO", &signum, &frame))
		return NULL;
	if (pyio_in_child_of(c, 1)) {
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
	default:
		PyErr_SetNone(PyExc_KeyboardInterrupt);
		return NULL;
	}
}

static PyMethodDef pyio_methods[] = {
	{"on_signal", pyio_on_signal, METH_VARARGS, "SIGINT/SIGTERM handler"},
	{"output", pyio_output, METH_VARARGS, "output(stream, data): send "
	    "output of the running request"},
	{"in_child", pyio_in_child, METH_VARARGS, "in_child(exact=1) -> "
	    "whether this process is a child forked by shipped code"},
	{NULL, NULL, 0, NULL}
};

/* ---------------------------------------------------------------------- */
/* the module                                                             */

static struct PyModuleDef pyio_module = {
	PyModuleDef_HEAD_INIT, "_pyshelfd",
	"pyshelfd's C half, for the backend's Python half",
	sizeof(struct pyctx), NULL,
	NULL, NULL, NULL, NULL
};

/* Add the methods of one table to m. */
static int
pyio_add_methods(PyObject *m, PyMethodDef *defs)
{
	PyObject *f;

	for (; defs->ml_name != NULL; defs++) {
		if ((f = PyCFunction_NewEx(defs, NULL, NULL)) == NULL)
			return -1;
		if (PyModule_AddObject(m, defs->ml_name, f) < 0) {
			Py_DECREF(f);
			return -1;
		}
	}
	return 0;
}

PyObject *
PyInit__pyshelfd(void)
{
	PyObject *m = NULL;

	pymod_NamespaceType.tp_base = &PyDict_Type;
	pymod_ns_ready();
	if (PyType_Ready(&pymod_NamespaceType) < 0 ||
	    PyType_Ready(&pymod_IdMapType) < 0 ||
	    PyType_Ready(&pybatch_SinkType) < 0 ||
	    PyType_Ready(&pybatch_BatchType) < 0 ||
	    PyType_Ready(&pydigest_DigestMapType) < 0)
		return NULL;
	if ((m = PyModule_Create(&pyio_module)) == NULL)
		return NULL;
	if (pyio_add_methods(m, pystore_methods) < 0 ||
	    pyio_add_methods(m, pyio_methods) < 0 ||
	    pyio_add_methods(m, pybatch_methods) < 0)
		goto error;
	pystore_StoreError = PyErr_NewException("_pyshelfd.StoreError",
	    PyExc_OSError, NULL);
	pystore_CorruptEntry = PyErr_NewException("_pyshelfd.CorruptEntry",
	    PyExc_RuntimeError, NULL);
	if (pystore_StoreError == NULL || pystore_CorruptEntry == NULL)
		goto error;
	pystore_StoreFull = PyErr_NewException("_pyshelfd.StoreFull",
	    pystore_StoreError, NULL);
	if (pystore_StoreFull == NULL)
		goto error;
	if (PyModule_AddIntConstant(m, "KEY_MAX", STORE_KEY_MAX) < 0 ||
	    PyModule_AddObjectRef(m, "StoreError", pystore_StoreError) < 0 ||
	    PyModule_AddObjectRef(m, "CorruptEntry", pystore_CorruptEntry) < 0 ||
	    PyModule_AddObjectRef(m, "StoreFull", pystore_StoreFull) < 0 ||
	    PyModule_AddObjectRef(m, "Namespace",
	    (PyObject *)&pymod_NamespaceType) < 0 ||
	    PyModule_AddObjectRef(m, "IdMap", (PyObject *)&pymod_IdMapType) < 0 ||
	    PyModule_AddObjectRef(m, "Sink", (PyObject *)&pybatch_SinkType) < 0 ||
	    PyModule_AddObjectRef(m, "Batch", (PyObject *)&pybatch_BatchType) < 0 ||
	    PyModule_AddObjectRef(m, "DigestMap",
	    (PyObject *)&pydigest_DigestMapType) < 0)
		goto error;
	return m;
error:
	Py_XDECREF(m);
	return NULL;
}

/* SIGINT/SIGTERM get our handler.  (sys.stdout/sys.stderr/sys.stdin are
 * set by the backend's init(): OutputStream objects over output().) */
int
pyio_setup(const struct pyctx *c)
{
	PyObject *sig = NULL, *h = NULL, *r;
	int rc = -1;

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

/* The backend's code: the embedded bytecode when this interpreter's magic
 * number is the one it was compiled with (and PYSHELFD_COMPILE_BACKEND is
 * not set), else the source, compiled.  New reference or NULL. */
static PyObject *
pyio_backend_code(const char **how)
{
	const unsigned char *m = (const unsigned char *)backend_py_code;
	const char *env = getenv("PYSHELFD_COMPILE_BACKEND");
	long magic;

	if (backend_py_code_len > 4 && (env == NULL || *env == '\0')) {
		magic = (long)m[0] | (long)m[1] << 8 | (long)m[2] << 16 |
		    (long)m[3] << 24;
		if (magic == PyImport_GetMagicNumber()) {
			*how = "bytecode";
			return PyMarshal_ReadObjectFromString(backend_py_code + 4,
			    (Py_ssize_t)backend_py_code_len - 4);
		}
	}
	*how = "source";
	return Py_CompileString(backend_py_source, "<pyshelf_backend>",
	    Py_file_input);
}

/* Load and import the backend's Python half. */
int
pymod_start(const struct pyctx *ctx, char **cause)
{
	PyObject *code = NULL, *r = NULL, *mod;
	const char *how = "source";
	struct pyctx *state;

	if ((code = pyio_backend_code(&how)) == NULL)
		goto error;
	/* _pyshelfd.BACKEND_CODE says which (ws.stats()["backend_code"]) */
	if ((mod = PyImport_ImportModule("_pyshelfd")) == NULL)
		goto error;
	/* the module keeps its own copy: the owner's may be on its stack */
	if ((state = PyModule_GetState(mod)) == NULL) {
		Py_DECREF(mod);
		goto error;
	}
	*state = *ctx;
	r = PyUnicode_FromString(how);
	if (r == NULL || PyObject_SetAttrString(mod, "BACKEND_CODE", r) < 0) {
		Py_DECREF(mod);
		goto error;
	}
	Py_CLEAR(r);
	Py_DECREF(mod);
	pyio_backend = PyImport_ExecCodeModule("_pyshelf_backend", code);
	if (pyio_backend == NULL)
		goto error;
	pyio_RequestError = PyObject_GetAttrString(pyio_backend,
	    "RequestError");
	if (pyio_RequestError == NULL)
		goto error;
	if (pyio_setup(ctx) < 0)
		goto error;
	r = PyObject_CallMethod(pyio_backend, "init", "i", ctx->read_only);
	if (r == NULL)
		goto error;
	Py_DECREF(r);
	Py_DECREF(code);
	return 0;
error:
	if (cause != NULL)
		*cause = strdup("the backend's Python half failed to start (see "
		    "the traceback above)");
	PyErr_Print();
	Py_XDECREF(r);
	Py_XDECREF(code);
	return -1;
}

/* Call a backend function. */
PyObject *
pyio_call(const char *name, PyObject *args)
{
	PyObject *f, *r;

	if ((f = PyObject_GetAttrString(pyio_backend, name)) == NULL)
		return NULL;
	r = PyObject_Call(f, args, NULL);
	Py_DECREF(f);
	return r;
}
