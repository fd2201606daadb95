/*
 * pyns.c - Namespace: a dict subclass serving as the workspace's globals;
 * its C __missing__ remembers absent names and otherwise asks a loader
 * (the lazy load of a stored global), so builtins stay cheap to look up.
 * It also notes the names written through it (ns[k] = v, del ns[k],
 * update(), and so the STORE_NAME / DELETE_NAME of shipped blocks), so
 * that a checkpoint looks at those and not at every global; a write that
 * goes around it (a function's STORE_GLOBAL, dict.__setitem__) shows as a
 * version change it did not make, and the next diff walks everything.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>

#include "wire.h"
#include "pyexec.h"

/* ---------------------------------------------------------------------- */
/* Namespace                                                              */

typedef struct {
	PyDictObject dict;   /* the globals themselves */
	PyObject *loader;    /* callable(name) -> value, or raises KeyError */
	PyObject *absent;    /* set of names known not to be stored */
	PyObject *changed;   /* set of str keys written through the mapping
	                      * since the last diff (pyns_take_changed) */
	uint64_t expect;     /* the dict's version after the last noted write */
	int untracked;       /* a write went around: the changed set is not
	                      * the whole story until the next full diff */
} nsobject;

/* The dict's version tag (a new value after every write).  Without one
 * (3.12+), a new number each time: every diff walks everything. */
uint64_t
pyns_dict_version(PyObject *d)
{
#if PY_VERSION_HEX < 0x030C0000
	return ((PyDictObject *)d)->ma_version_tag;
#else
	static uint64_t n;
	(void)d;
	return ++n;
#endif
}

/* Before a write through the Namespace: was there one around it? */
static void
pyns_pre_write(nsobject *ns)
{
	if (pyns_dict_version((PyObject *)ns) != ns->expect)
		ns->untracked = 1;
}

/* After a write of key through the Namespace (key NULL: not to note). */
static void
pyns_post_write(nsobject *ns, PyObject *key)
{
	if (key != NULL && !ns->untracked && PyUnicode_CheckExact(key)) {
		if (ns->changed == NULL && (ns->changed = PySet_New(NULL)) == NULL)
			ns->untracked = 1;
		else if (PySet_Add(ns->changed, key) < 0)
			ns->untracked = 1;
		if (ns->untracked)
			PyErr_Clear();   /* the full diff will do */
	}
	ns->expect = pyns_dict_version((PyObject *)ns);
}

/* ns[key] = v / del ns[key]: the dict's own, noted.  A global stored but
 * not loaded yet is loaded before it is deleted (del x after a restart):
 * loader(key, True), which also stands in for one that cannot be loaded,
 * so that it is found, and records that refer to it get its old object. */
static int
pyns_ass_sub(PyObject *self, PyObject *key, PyObject *v)
{
	nsobject *ns = (nsobject *)self;
	PyObject *et, *ev, *etb;
	int rc;

	if (v == NULL && PyUnicode_CheckExact(key)) {
		PyObject *old;
		if ((rc = PyDict_Contains(self, key)) < 0)
			return -1;
		if (!rc && ns->loader != NULL) {
			old = PyObject_CallFunctionObjArgs(ns->loader, key,
			    Py_True, NULL);
			if (old == NULL) {
				if (!PyErr_ExceptionMatches(PyExc_KeyError))
					return -1;
				PyErr_Clear();  /* absent: the dict says so */
			}
			Py_XDECREF(old);
		}
	}
	pyns_pre_write(ns);
	rc = PyDict_Type.tp_as_mapping->mp_ass_subscript(self, key, v);
	PyErr_Fetch(&et, &ev, &etb);
	pyns_post_write(ns, rc == 0 ? key : NULL);
	PyErr_Restore(et, ev, etb);
	return rc;
}

/* update(...): dict.update itself, noting the keys of a dict argument and
 * of the keywords; with any other argument, or a failure, which keys were
 * written is not known and the next diff walks everything. */
static PyObject *
pyns_update(PyObject *self, PyObject *args, PyObject *kwds)
{
	static PyObject *dict_update;   /* dict.update, kept */
	nsobject *ns = (nsobject *)self;
	PyObject *arg = NULL, *keys = NULL, *k, *v, *full, *res;
	Py_ssize_t pos = 0, i;

	if (!PyArg_UnpackTuple(args, "update", 0, 1, &arg))
		return NULL;
	if (dict_update == NULL && (dict_update = PyObject_GetAttrString(
	    (PyObject *)&PyDict_Type, "update")) == NULL)
		return NULL;
	/* the keys as they are now: a __del__ run by the update could change
	 * the argument */
	if (arg != NULL && PyDict_CheckExact(arg) &&
	    (keys = PyDict_Keys(arg)) == NULL)
		return NULL;
	if ((full = arg != NULL ? PyTuple_Pack(2, self, arg) :
	    PyTuple_Pack(1, self)) == NULL) {
		Py_XDECREF(keys);
		return NULL;
	}
	pyns_pre_write(ns);
	res = PyObject_Call(dict_update, full, kwds);
	Py_DECREF(full);
	if (res == NULL || (arg != NULL && keys == NULL)) {
		PyObject *et, *ev, *etb;
		PyErr_Fetch(&et, &ev, &etb);
		ns->untracked = 1;
		pyns_post_write(ns, NULL);
		PyErr_Restore(et, ev, etb);
		Py_XDECREF(keys);
		return res;
	}
	for (i = 0; keys != NULL && i < PyList_GET_SIZE(keys); i++)
		pyns_post_write(ns, PyList_GET_ITEM(keys, i));
	Py_XDECREF(keys);
	while (kwds != NULL && PyDict_Next(kwds, &pos, &k, &v))
		pyns_post_write(ns, k);
	pyns_post_write(ns, NULL);
	return res;
}

/* load_insert(name, value): a lazily loaded global enters the dict: not a
 * change to write back, so not noted (the caller updates the shadow). */
static PyObject *
pyns_load_insert(PyObject *self, PyObject *args)
{
	nsobject *ns = (nsobject *)self;
	PyObject *name, *v;
	int rc;

	if (!PyArg_ParseTuple(args, "UO:load_insert", &name, &v))
		return NULL;
	pyns_pre_write(ns);
	rc = PyDict_SetItem(self, name, v);
	ns->expect = pyns_dict_version(self);
	if (rc < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* For collect (pydiff.c): the names written since the last call, or NULL
 * (no exception) when they are not the whole story and every global must
 * be compared.  Either way the record starts afresh. */
PyObject *
pyns_take_changed(PyObject *self)
{
	nsobject *ns = (nsobject *)self;
	PyObject *c = NULL;

	if (!ns->untracked && ns->expect == pyns_dict_version(self)) {
		c = ns->changed;
		ns->changed = NULL;
		if (c == NULL && (c = PySet_New(NULL)) == NULL)
			PyErr_Clear();
	}
	Py_CLEAR(ns->changed);
	ns->untracked = 0;
	ns->expect = pyns_dict_version(self);
	return c;
}

static int
pyns_init(PyObject *self, PyObject *args, PyObject *kwds)
{
	nsobject *ns = (nsobject *)self;
	PyObject *loader = NULL;

	if (!PyArg_ParseTuple(args, "O:Namespace", &loader))
		return -1;
	if (!PyCallable_Check(loader)) {
		PyErr_Format(PyExc_TypeError, "loader must be callable, not "
		    "%.200s", Py_TYPE(loader)->tp_name);
		return -1;
	}
	Py_XSETREF(ns->loader, Py_NewRef(loader));
	if (ns->absent == NULL && (ns->absent = PySet_New(NULL)) == NULL)
		return -1;
	return 0;
}

/* dict.__missing__: absent names fail fast; others go to the loader. */
static PyObject *
pyns_missing(PyObject *self, PyObject *key)
{
	nsobject *ns = (nsobject *)self;
	PyObject *v;
	int r;

	if (ns->absent != NULL) {
		if ((r = PySet_Contains(ns->absent, key)) < 0)
			return NULL;
		if (r) {
			PyErr_SetObject(PyExc_KeyError, key);
			return NULL;
		}
	}
	if (ns->loader == NULL) {
		PyErr_SetObject(PyExc_KeyError, key);
		return NULL;
	}
	v = PyObject_CallOneArg(ns->loader, key);
	if (v == NULL && PyErr_ExceptionMatches(PyExc_KeyError) &&
	    ns->absent != NULL && PyUnicode_CheckExact(key)) {
		PyObject *et, *ev, *etb;
		PyErr_Fetch(&et, &ev, &etb);
		if (PySet_Add(ns->absent, key) < 0) {
			Py_XDECREF(et);
			Py_XDECREF(ev);
			Py_XDECREF(etb);
			return NULL;
		}
		PyErr_Restore(et, ev, etb);
	}
	return v;
}

static int
pyns_traverse(PyObject *self, visitproc visit, void *arg)
{
	nsobject *ns = (nsobject *)self;

	Py_VISIT(ns->loader);
	Py_VISIT(ns->absent);
	Py_VISIT(ns->changed);
	return PyDict_Type.tp_traverse(self, visit, arg);
}

static int
pyns_clear(PyObject *self)
{
	nsobject *ns = (nsobject *)self;

	Py_CLEAR(ns->loader);
	Py_CLEAR(ns->absent);
	Py_CLEAR(ns->changed);
	return PyDict_Type.tp_clear(self);
}

static void
pyns_dealloc(PyObject *self)
{
	nsobject *ns = (nsobject *)self;

	PyObject_GC_UnTrack(self);
	Py_CLEAR(ns->loader);
	Py_CLEAR(ns->absent);
	Py_CLEAR(ns->changed);
	PyDict_Type.tp_dealloc(self);
}

static PyMethodDef pyns_methods[] = {
	{"__missing__", pyns_missing, METH_O, "load a stored global"},
	{"update", (PyCFunction)(void (*)(void))pyns_update,
	 METH_VARARGS | METH_KEYWORDS, "dict.update, with the keys noted"},
	{"load_insert", pyns_load_insert, METH_VARARGS,
	 "load_insert(name, value): a loaded global, not a change"},
	{NULL, NULL, 0, NULL}
};

/* mp_length and mp_subscript are the dict's (pyns_ready fills them). */
static PyMappingMethods pyns_as_mapping = {
	.mp_ass_subscript = pyns_ass_sub,
};

void
pyns_ready(void)
{
	pyns_as_mapping.mp_length = PyDict_Type.tp_as_mapping->mp_length;
	pyns_as_mapping.mp_subscript = PyDict_Type.tp_as_mapping->mp_subscript;
}

PyTypeObject pyns_NamespaceType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.Namespace",
	.tp_basicsize = sizeof(nsobject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "workspace globals that load stored entries on first use",
	.tp_traverse = pyns_traverse,
	.tp_clear = pyns_clear,
	.tp_dealloc = pyns_dealloc,
	.tp_methods = pyns_methods,
	.tp_as_mapping = &pyns_as_mapping,
	.tp_init = pyns_init,
};
