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

#include "pyshelf-ext.h"
#include "sockpath.h"

PyMODINIT_FUNC PyInit__pyshelf(void);

/* --- module ---------------------------------------------------------------- */

/* _setup(Error, RemoteError, UnknownHandleError, VolatileError,
 *        NotPicklableError, BackendDied, SessionNotFound, SessionEnded,
 *        SessionBusy, WorkerRestarted, ForkedError, loads) */
static PyObject *
mod_setup(PyObject *module, PyObject *args)
{
	module_state *st = PyModule_GetState(module);
	PyObject *o[EXC_COUNT + 1];
	int i;

	if (!PyArg_ParseTuple(args, "OOOOOOOOOOOO:_setup", &o[0], &o[1], &o[2],
	    &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11]))
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
	Py_VISIT(st->block_type);
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
	Py_CLEAR(st->block_type);
	return 0;
}

static void
mod_free(void *module)
{
	(void)mod_clear((PyObject *)module);
}

/* socket_path(db) -> str: where the server of store db (None: the
 * default store) listens; its pid file is that path and ".pid". */
static PyObject *
mod_socket_path(PyObject *Py_UNUSED(m), PyObject *arg)
{
	char path[4096];
	const char *db = NULL;
	int rc;

	if (arg != Py_None && (db = conn_utf8(arg, "db")) == NULL)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = sockpath_for(db, path, sizeof path);
	Py_END_ALLOW_THREADS
	if (rc != 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	return PyUnicode_DecodeFSDefault(path);
}

static PyMethodDef mod_methods[] = {
	{ "_setup", mod_setup, METH_VARARGS,
	  "_setup(Error, RemoteError, UnknownHandleError, VolatileError, "
	  "NotPicklableError, BackendDied, SessionNotFound, SessionEnded, "
	  "SessionBusy, WorkerRestarted, ForkedError, loads)" },
	{ "strerror", mod_strerror, METH_O, "strerror(rc) -> str" },
	{ "errcode_name", mod_errcode_name, METH_O, "errcode_name(code) -> str" },
	{ "socket_path", mod_socket_path, METH_O,
	  "socket_path(db) -> str: the socket of store db's server" },
	{ NULL, NULL, 0, NULL }
};

struct PyModuleDef pyshelf_module = {
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
		{ "ERR_NO_SESSION", PYSHELF_ERR_NO_SESSION },
		{ "ERR_SESSION_BUSY", PYSHELF_ERR_SESSION_BUSY },
		{ "ERR_BAD_REQUEST", PYSHELF_ERR_BAD_REQUEST },
		{ "ERR_UNKNOWN_CALL", PYSHELF_ERR_UNKNOWN_CALL },
		{ "ERR_WORKER_DIED", PYSHELF_ERR_WORKER_DIED },
		{ "ERR_WORKER_RESTARTED", PYSHELF_ERR_WORKER_RESTARTED },
		{ "FATE_UNKNOWN", PYSHELF_FATE_UNKNOWN },
		{ "FATE_NOT_RUN", PYSHELF_FATE_NOT_RUN },
		{ "FATE_SENT", PYSHELF_FATE_SENT },
		{ "FATE_STARTED", PYSHELF_FATE_STARTED },
		{ "FATE_DONE", PYSHELF_FATE_DONE },
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
	type = PyType_FromModuleAndSpec(m, &conn_block_spec, NULL);
	if (type == NULL)
		goto error;
	st->block_type = (PyTypeObject *)Py_NewRef(type);
	if (PyModule_AddObjectRef(m, "Block", type) < 0)
		goto error;
	Py_DECREF(type);
	return m;
error:
	Py_XDECREF(type);
	Py_DECREF(m);
	return NULL;
}
