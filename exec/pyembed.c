/*
 * pyembed.c - loading the backend's Python half from the code compiled
 * into pyshelfd: the modules _pyshelf_backend is made of (pyembed_modules[],
 * exec/backend-py.c), in order, before _pyshelf_backend itself, each as
 * bytecode or, when the bytecode is not this interpreter's, as source.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>

#include "config.h"

#include <stdlib.h>

#include "pyembed.h"

static PyObject *pyembed_code(const struct pyembed_module *m);
static PyObject *pyembed_exec(const char *name, PyObject *code);

/* m's code: its bytecode when the magic number it was compiled behind is
 * this interpreter's (and PYSHELFD_COMPILE_BACKEND is not set, as for the
 * top module in pymodule.c), else its source, compiled.  New reference or
 * NULL. */
static PyObject *
pyembed_code(const struct pyembed_module *m)
{
	const unsigned char *b = (const unsigned char *)m->code;
	const char *env = getenv("PYSHELFD_COMPILE_BACKEND");
	long magic;

	if (m->code_len > 4 && (env == NULL || *env == '\0')) {
		magic = (long)b[0] | (long)b[1] << 8 | (long)b[2] << 16 |
		    (long)b[3] << 24;
		if (magic == PyImport_GetMagicNumber())
			return PyMarshal_ReadObjectFromString(m->code + 4,
			    (Py_ssize_t)m->code_len - 4);
	}
	return Py_CompileString(m->source, m->filename, Py_file_input);
}

/* Execute code as the module name, into sys.modules (its __file__ is the
 * code's co_filename).  New reference or NULL. */
static PyObject *
pyembed_exec(const char *name, PyObject *code)
{
	PyObject *n, *mod;

	if ((n = PyUnicode_FromString(name)) == NULL)
		return NULL;
	mod = PyImport_ExecCodeModuleObject(n, code, NULL, NULL);
	Py_DECREF(n);
	return mod;
}

PyObject *
pyembed_import(const char *name, PyObject *code)
{
	const struct pyembed_module *m;
	PyObject *c, *mod;

	for (m = pyembed_modules; m->name != NULL; m++) {
		if ((c = pyembed_code(m)) == NULL)
			return NULL;
		mod = pyembed_exec(m->name, c);
		Py_DECREF(c);
		if (mod == NULL)
			return NULL;
		Py_DECREF(mod);		/* sys.modules holds it */
	}
	return pyembed_exec(name, code);
}
