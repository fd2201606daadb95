/*
 * pymodule.c - the _pyshelfd builtin module: its definition (types,
 * functions and constants of pyns.c, pyidmap.c, pystore.c, pysink.c,
 * pybatch.c, pydiff.c, pydigest.c, pystream.c), the context its owner
 * hands to pymodule_start, loading the backend's Python half from
 * the source compiled into pyshelfd, and calls into that half.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>

#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"
#include "pyexec.h"
#include "pyembed.h"

/* backend-py.c, generated: the source, and its bytecode behind the magic
 * number of the Python that compiled it */
extern const char backend_py_source[];
extern const char backend_py_code[];
extern const size_t backend_py_code_len;

PyObject *pymodule_backend;       /* _pyshelf_backend */
PyObject *pymodule_RequestError;  /* _pyshelf_backend.RequestError */

/* The context the module's owner gave pymodule_start, copied (the
 * owner's may be on its stack); all zero before.  Set once per process,
 * which has one interpreter.  Kept here, not in the module's state
 * (PyModule_GetState), because a single-phase module with a state is
 * initialised again when shipped code re-imports it (del sys.modules,
 * importlib.reload): a new, zeroed state, and new exception classes the
 * Python half's handlers would not catch; with m_size -1, as before, a
 * re-import gets a copy of the same module dict. */
static struct pyctx pymodule_state;

/* The context the module's owner gave pymodule_start (all zero before). */
struct pyctx *
pymodule_ctx(void)
{
	return &pymodule_state;
}

/* ---------------------------------------------------------------------- */
/* the module                                                             */

static struct PyModuleDef pymodule_def = {
	PyModuleDef_HEAD_INIT, "_pyshelfd",
	"pyshelfd's C half, for the backend's Python half", -1, NULL,
	NULL, NULL, NULL, NULL
};

/* Add the methods of one table to m. */
static int
pymodule_add_methods(PyObject *m, PyMethodDef *defs)
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

	pyns_NamespaceType.tp_base = &PyDict_Type;
	pyns_ready();
	if (PyType_Ready(&pyns_NamespaceType) < 0 ||
	    PyType_Ready(&pyidmap_IdMapType) < 0 ||
	    PyType_Ready(&pysink_SinkType) < 0 ||
	    PyType_Ready(&pybatch_BatchType) < 0 ||
	    PyType_Ready(&pydigest_DigestMapType) < 0)
		return NULL;
	if ((m = PyModule_Create(&pymodule_def)) == NULL)
		return NULL;
	if (pymodule_add_methods(m, pystore_methods) < 0 ||
	    pymodule_add_methods(m, pystream_methods) < 0 ||
	    pymodule_add_methods(m, pybatch_methods) < 0 ||
	    pymodule_add_methods(m, pydiff_methods) < 0 ||
	    pymodule_add_methods(m, pyrefs_methods) < 0)
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
	if (pyfields_init(m) < 0 ||
	    PyModule_AddObjectRef(m, "StoreError", pystore_StoreError) < 0 ||
	    PyModule_AddObjectRef(m, "CorruptEntry", pystore_CorruptEntry) < 0 ||
	    PyModule_AddObjectRef(m, "StoreFull", pystore_StoreFull) < 0 ||
	    PyModule_AddObjectRef(m, "Namespace",
	    (PyObject *)&pyns_NamespaceType) < 0 ||
	    PyModule_AddObjectRef(m, "IdMap", (PyObject *)&pyidmap_IdMapType) < 0 ||
	    PyModule_AddObjectRef(m, "Sink", (PyObject *)&pysink_SinkType) < 0 ||
	    PyModule_AddObjectRef(m, "Batch", (PyObject *)&pybatch_BatchType) < 0 ||
	    PyModule_AddObjectRef(m, "DigestMap",
	    (PyObject *)&pydigest_DigestMapType) < 0)
		goto error;
	return m;
error:
	Py_XDECREF(m);
	return NULL;
}

/* The backend's code: the embedded bytecode when this interpreter's magic
 * number is the one it was compiled with (and PYSHELFD_COMPILE_BACKEND is
 * not set), else the source, compiled.  New reference or NULL. */
static PyObject *
pymodule_backend_code(const char **how)
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
pymodule_start(const struct pyctx *ctx, char **cause)
{
	PyObject *code = NULL, *r = NULL, *mod;
	const char *how = "source";

	if ((code = pymodule_backend_code(&how)) == NULL)
		goto error;
	/* _pyshelfd.BACKEND_CODE says which (ws.stats()["backend_code"]) */
	if ((mod = PyImport_ImportModule("_pyshelfd")) == NULL)
		goto error;
	pymodule_state = *ctx;
	r = PyUnicode_FromString(how);
	if (r == NULL || PyObject_SetAttrString(mod, "BACKEND_CODE", r) < 0) {
		Py_DECREF(mod);
		goto error;
	}
	Py_CLEAR(r);
	Py_DECREF(mod);
	pymodule_backend = pyembed_import("_pyshelf_backend", code);
	if (pymodule_backend == NULL)
		goto error;
	pymodule_RequestError = PyObject_GetAttrString(pymodule_backend,
	    "RequestError");
	if (pymodule_RequestError == NULL)
		goto error;
	if (pystream_setup(ctx) < 0)
		goto error;
	r = pymodule_call("init", Py_BuildValue("{s:i}", "read_only",
	    ctx->read_only));
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

/*
 * Call the backend's function name with keyword arguments: kwargs is a
 * dict (stolen; NULL: building it failed, the exception is passed on) of
 * the parameter names the Python half's function declares, so that the
 * C half never depends on the order of its parameters.  New reference
 * or NULL.
 */
PyObject *
pymodule_call(const char *name, PyObject *kwargs)
{
	/* the functions called, by the address of their (literal) name:
	 * a request makes two or three calls, and a look-up by a C string
	 * makes a str each time */
	static struct { const char *name; PyObject *f; } cache[16];
	static PyObject *noargs;
	PyObject *f = NULL, *r = NULL;
	size_t i;

	if (kwargs == NULL)
		return NULL;
	for (i = 0; i < sizeof cache / sizeof cache[0] && cache[i].name; i++)
		if (cache[i].name == name) {
			f = Py_NewRef(cache[i].f);
			break;
		}
	if (f == NULL) {
		if ((f = PyObject_GetAttrString(pymodule_backend, name)) == NULL)
			goto out;
		if (i < sizeof cache / sizeof cache[0]) {
			cache[i].f = Py_NewRef(f);
			cache[i].name = name;
		}
	}
	if (noargs == NULL && (noargs = PyTuple_New(0)) == NULL)
		goto out;
	r = PyObject_Call(f, noargs, kwargs);
out:
	Py_XDECREF(f);
	Py_DECREF(kwargs);
	return r;
}
