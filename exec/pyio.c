/*
 * pyio.c - the _pyshelfd module's definition, the Stream objects that
 * replace sys.stdout/sys.stderr (each write becomes an OUTPUT frame of the
 * running request), the Python-level SIGINT/SIGTERM handler, and loading
 * the backend's Python half from the source compiled into pyshelfd.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>

#include "config.h"

#include <signal.h>
#include <string.h>

#include "exec.h"
#include "pyexec.h"

/* backend-py.c, generated: the source, and its bytecode behind the magic
 * number of the Python that compiled it */
extern const char backend_py_source[];
extern const char backend_py_code[];
extern const size_t backend_py_code_len;

PyObject *pyio_backend;       /* _pyshelf_backend */
PyObject *pyio_RequestError;  /* _pyshelf_backend.RequestError */

/* ---------------------------------------------------------------------- */
/* Stream                                                                 */

typedef struct {
	PyObject_HEAD
	int stream;            /* 1 stdout, 2 stderr */
} streamobject;

/* write(s): send s (str or bytes) as an OUTPUT frame right away. */
static PyObject *
stream_write(PyObject *self, PyObject *s)
{
	streamobject *so = (streamobject *)self;
	const char *p;
	Py_ssize_t n;

	if (PyUnicode_Check(s)) {
		if ((p = PyUnicode_AsUTF8AndSize(s, &n)) == NULL)
			return NULL;
	} else if (PyBytes_Check(s)) {
		p = PyBytes_AS_STRING(s);
		n = PyBytes_GET_SIZE(s);
	} else {
		PyErr_Format(PyExc_TypeError, "write() argument must be str, "
		    "not %.200s", Py_TYPE(s)->tp_name);
		return NULL;
	}
	if (n > 0 && worker_output(the_worker, so->stream, p, (size_t)n) != 0) {
		/* the client is gone: the output has nowhere to go; keep
		 * running so that the workspace still gets checkpointed */
	}
	if (PyUnicode_Check(s))
		return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(s));
	return PyLong_FromSsize_t(n);
}

static PyObject *
stream_flush(PyObject *self, PyObject *unused)
{
	Py_RETURN_NONE;
}

static PyObject *
stream_false(PyObject *self, PyObject *unused)
{
	Py_RETURN_FALSE;
}

static PyObject *
stream_true(PyObject *self, PyObject *unused)
{
	Py_RETURN_TRUE;
}

static PyObject *
stream_get_encoding(PyObject *self, void *closure)
{
	return PyUnicode_FromString("utf-8");
}

static PyMethodDef stream_methods[] = {
	{"write", stream_write, METH_O, "send text to the client"},
	{"flush", stream_flush, METH_NOARGS, "no-op: writes are sent at once"},
	{"isatty", stream_false, METH_NOARGS, ""},
	{"writable", stream_true, METH_NOARGS, ""},
	{"readable", stream_false, METH_NOARGS, ""},
	{"seekable", stream_false, METH_NOARGS, ""},
	{NULL, NULL, 0, NULL}
};

static PyGetSetDef stream_getset[] = {
	{"encoding", stream_get_encoding, NULL, "always utf-8", NULL},
	{NULL, NULL, NULL, NULL, NULL}
};

static PyTypeObject StreamType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.Stream",
	.tp_basicsize = sizeof(streamobject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "stdout/stderr of shipped code, streamed to the client",
	.tp_methods = stream_methods,
	.tp_getset = stream_getset,
};

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
	worker *w = the_worker;
	int signum, ours, kind, running;
	PyObject *frame;

	if (!PyArg_ParseTuple(args, "iO", &signum, &frame))
		return NULL;
	pthread_mutex_lock(&w->lock);
	ours = w->sigs_inflight;
	w->sigs_inflight = 0;
	kind = w->stop_kind;
	running = w->running_id != 0;
	pthread_mutex_unlock(&w->lock);
	if (signum == SIGINT && ours) {
		if (!running || kind == WORKER_STOP_NONE)
			Py_RETURN_NONE; /* the code finished first */
		if (kind == WORKER_STOP_TIMEOUT)
			PyErr_SetString(PyExc_TimeoutError,
			    "pyshelf: the request ran past its timeout and was "
			    "stopped by the backend");
		else
			PyErr_SetNone(PyExc_KeyboardInterrupt);
		return NULL;
	}
	w->terminate = 1;
	if (running) {
		PyErr_SetNone(PyExc_KeyboardInterrupt);
		return NULL;
	}
	Py_RETURN_NONE;
}

static PyMethodDef pyio_methods[] = {
	{"on_signal", pyio_on_signal, METH_VARARGS, "SIGINT/SIGTERM handler"},
	{NULL, NULL, 0, NULL}
};

/* ---------------------------------------------------------------------- */
/* the module                                                             */

static struct PyModuleDef pyio_module = {
	PyModuleDef_HEAD_INIT, "_pyshelfd",
	"pyshelfd's C half, for the backend's Python half", -1, NULL,
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
	    PyType_Ready(&StreamType) < 0 ||
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

/* Make a Stream for fd-like number n. */
static PyObject *
pyio_stream_new(int n)
{
	streamobject *so = PyObject_New(streamobject, &StreamType);

	if (so != NULL)
		so->stream = n;
	return (PyObject *)so;
}

/* sys.stdout/sys.stderr become Streams; SIGINT/SIGTERM our handler. */
int
pyio_setup(void)
{
	PyObject *out = NULL, *err = NULL, *sig = NULL, *h = NULL, *r;
	int rc = -1;

	if ((out = pyio_stream_new(1)) == NULL ||
	    (err = pyio_stream_new(2)) == NULL)
		goto out;
	if (PySys_SetObject("stdout", out) < 0 ||
	    PySys_SetObject("stderr", err) < 0)
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
	    the_worker->wake_fd)) == NULL)
		goto out;
	Py_DECREF(r);
	rc = 0;
out:
	Py_XDECREF(out);
	Py_XDECREF(err);
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
pymod_start(worker *w, char **cause)
{
	PyObject *code = NULL, *r = NULL, *mod;
	const char *how = "source";

	if ((code = pyio_backend_code(&how)) == NULL)
		goto error;
	/* _pyshelfd.BACKEND_CODE says which (ws.stats()["backend_code"]) */
	if ((mod = PyImport_ImportModule("_pyshelfd")) == NULL)
		goto error;
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
	if (pyio_setup() < 0)
		goto error;
	r = PyObject_CallMethod(pyio_backend, "init", "i", w->opt.mode == 'r');
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
