/*
 * pydiff.c - the namespace diff: which globals were bound, rebound or
 * deleted since the last checkpoint (collect()), keeping the shadow dict,
 * the IdMap and the dirty/deleted sets in step.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>

#include "wire.h"
#include "pyexec.h"

/* Atoms: pickled inline, never referenced by identity. */
static int
pydiff_atomic(PyObject *o)
{
	return o == Py_None || PyLong_Check(o) || PyFloat_Check(o) ||
	    PyUnicode_Check(o) || PyBytes_Check(o) || PyComplex_Check(o);
}

/* Is name a dunder ("__name__")? */
static int
pydiff_dunder(PyObject *name)
{
	Py_ssize_t n = PyUnicode_GET_LENGTH(name);

	return n > 4 && PyUnicode_READ_CHAR(name, 0) == '_' &&
	    PyUnicode_READ_CHAR(name, 1) == '_' &&
	    PyUnicode_READ_CHAR(name, n - 1) == '_' &&
	    PyUnicode_READ_CHAR(name, n - 2) == '_';
}

/* The entry key ("g", name) of a global; new reference. */
static PyObject *
pydiff_gkey(PyObject *name)
{
	static PyObject *g;   /* interned "g", kept for the process */

	if (g == NULL && (g = PyUnicode_InternFromString("g")) == NULL)
		return NULL;
	return PyTuple_Pack(2, g, name);
}

/* A global rebound (or newly bound) to v: shadow, idmap, dirty. */
static int
pydiff_bind(PyObject *name, PyObject *v, PyObject *old, PyObject *shadow,
             PyObject *idmap, PyObject *dirty, PyObject *deleted)
{
	PyObject *key = pydiff_gkey(name);
	int rc = -1;

	if (key == NULL)
		return -1;
	if (old != NULL && !pydiff_atomic(old) &&
	    pyidmap_discard(idmap, old, key) < 0)
		goto out;
	if (PyDict_SetItem(shadow, name, v) < 0)
		goto out;
	if (!pydiff_atomic(v) && pyidmap_add(idmap, v, key) < 0)
		goto out;
	if (PySet_Add(dirty, key) < 0 || (PySet_GET_SIZE(deleted) > 0 &&
	    PySet_Discard(deleted, key) < 0))
		goto out;
	rc = 0;
out:
	Py_DECREF(key);
	return rc;
}

/* Note (name, old) in unbound: old is no longer the global's. */
static int
pydiff_note_unbound(PyObject *unbound, PyObject *name, PyObject *old)
{
	PyObject *pair = PyTuple_Pack(2, name, old);
	int rc;

	if (pair == NULL)
		return -1;
	rc = PyList_Append(unbound, pair);
	Py_DECREF(pair);
	return rc;
}

/* The global name was deleted: forget its old object (kept in graves). */
static int
pydiff_unbind(PyObject *name, PyObject *old, PyObject *shadow,
               PyObject *idmap, PyObject *dirty, PyObject *deleted,
               PyObject *graves, PyObject *unbound)
{
	PyObject *key;
	int rc = -1;

	if (PyList_Append(graves, old) < 0)
		return -1;
	if ((key = pydiff_gkey(name)) == NULL)
		return -1;
	if (!pydiff_atomic(old) && (pyidmap_discard(idmap, old, key) < 0 ||
	    pydiff_note_unbound(unbound, name, old) < 0))
		goto out;
	if (PyDict_DelItem(shadow, name) == 0 && PySet_Discard(dirty, key) >= 0 &&
	    PySet_Add(deleted, key) == 0)
		rc = 0;
out:
	Py_DECREF(key);
	return rc;
}

/* Compare one global (v NULL: not bound) with the shadow; bind or unbind.
 * *found counts the names the shadow knew. */
static int
pydiff_one(PyObject *name, PyObject *v, PyObject *shadow,
                 PyObject *idmap, PyObject *dirty, PyObject *deleted,
                 PyObject *graves, PyObject *unbound, PyObject *fresh,
                 Py_ssize_t *found)
{
	PyObject *old = PyDict_GetItemWithError(shadow, name); /* borrowed */

	if (old == NULL && PyErr_Occurred())
		return -1;
	if (old != NULL)
		(*found)++;
	if (v == NULL)
		return old == NULL ? 0 : pydiff_unbind(name, old, shadow, idmap,
		    dirty, deleted, graves, unbound);
	if (old == v)
		return 0;
	if (old != NULL && (PyList_Append(graves, old) < 0 ||
	    (!pydiff_atomic(old) &&
	    pydiff_note_unbound(unbound, name, old) < 0)))
		return -1;
	if (old == NULL && fresh != NULL && PyList_Append(fresh, name) < 0)
		return -1;
	return pydiff_bind(name, v, old, shadow, idmap, dirty, deleted);
}

/* How many diffs looked only at the noted names, and how many at all. */
static unsigned long long diffs_tracked, diffs_full;

/* diff_counts() -> (tracked, full) */
static PyObject *
pydiff_counts(PyObject *self, PyObject *unused)
{
	return Py_BuildValue("KK", diffs_tracked, diffs_full);
}

/* collect(ns, shadow, idmap, dirty, deleted[, fresh]) -> unbound: find
 * globals bound, rebound or deleted since shadow was last brought up to
 * date; return [(name, old object)] for the names whose previous object
 * (one other entries may refer to) is no longer theirs, and append to the
 * list fresh (unless None) the names bound that the shadow did not know
 * (new, or stored and not loaded).  A Namespace that noted every write
 * since the last collect names the globals to look at (the cost grows with
 * what was written); otherwise every global is compared with the shadow. */
static PyObject *
pydiff_collect(PyObject *self, PyObject *args)
{
	PyObject *ns, *shadow, *idmap, *dirty, *deleted, *k, *v, *gone = NULL,
	    *graves = NULL, *unbound = NULL, *changed = NULL, *it = NULL,
	    *fresh = Py_None;
	Py_ssize_t pos = 0, i, known, found = 0;

	if (!PyArg_ParseTuple(args, "O!O!OO!O!|O:collect", &PyDict_Type, &ns,
	    &PyDict_Type, &shadow, &idmap, &PySet_Type, &dirty, &PySet_Type,
	    &deleted, &fresh))
		return NULL;
	if (fresh == Py_None)
		fresh = NULL;
	else if (!PyList_Check(fresh)) {
		PyErr_SetString(PyExc_TypeError, "collect(): fresh must be a "
		    "list or None");
		return NULL;
	}
	/* replaced objects are kept alive until the walk is over: a __del__
	 * that touches the namespace must not run in the middle of it */
	if ((graves = PyList_New(0)) == NULL ||
	    (unbound = PyList_New(0)) == NULL)
		goto error;
	/* the noted names, unless they are a good part of the namespace: then
	 * one pass in the dict's order beats a lookup per name */
	if (PyObject_TypeCheck(ns, &pyns_NamespaceType) &&
	    (changed = pyns_take_changed(ns)) != NULL &&
	    PySet_GET_SIZE(changed) * 4 > PyDict_GET_SIZE(ns))
		Py_CLEAR(changed);
	if (changed != NULL) {
		if (PySet_GET_SIZE(changed) > 0 && pyidmap_reserve(idmap,
		    (size_t)PySet_GET_SIZE(changed)) < 0)
			goto error;
		if ((it = PyObject_GetIter(changed)) == NULL)
			goto error;
		while ((k = PyIter_Next(it)) != NULL) {
			int rc = 0;
			if (PyUnicode_Check(k) && !pydiff_dunder(k)) {
				v = PyDict_GetItemWithError(ns, k); /* borrowed */
				rc = v == NULL && PyErr_Occurred() ? -1 :
				    pydiff_one(k, v, shadow, idmap, dirty,
				    deleted, graves, unbound, fresh, &found);
			}
			Py_DECREF(k);
			if (rc < 0)
				goto error;
		}
		if (PyErr_Occurred())
			goto error;
		diffs_tracked++;
		goto done;
	}
	if (PyErr_Occurred())
		goto error;
	diffs_full++;
	known = PyDict_GET_SIZE(shadow);
	/* the names the shadow does not know yet are (mostly) new objects */
	if (PyDict_GET_SIZE(ns) > known &&
	    pyidmap_reserve(idmap, (size_t)(PyDict_GET_SIZE(ns) - known)) < 0)
		goto error;
	while (PyDict_Next(ns, &pos, &k, &v)) { /* borrowed k, v */
		if (!PyUnicode_Check(k) || pydiff_dunder(k))
			continue;
		if (pydiff_one(k, v, shadow, idmap, dirty, deleted, graves,
		    unbound, fresh, &found) < 0)
			goto error;
	}
	if ((gone = PyList_New(0)) == NULL)
		goto error;
	/* when every name the shadow knew was found bound, none is gone */
	pos = 0;
	while (found < known && PyDict_Next(shadow, &pos, &k, &v)) {
		int r = PyDict_Contains(ns, k);
		if (r < 0 || (!r && PyList_Append(gone, k) < 0))
			goto error;
	}
	for (i = 0; i < PyList_GET_SIZE(gone); i++) {
		PyObject *name = PyList_GET_ITEM(gone, i); /* borrowed */
		PyObject *old = PyDict_GetItemWithError(shadow, name);
		if (old == NULL || pydiff_unbind(name, old, shadow, idmap, dirty,
		    deleted, graves, unbound) < 0)
			goto error;
	}
done:
	Py_XDECREF(it);
	Py_XDECREF(changed);
	Py_XDECREF(gone);
	Py_DECREF(graves);
	return unbound;
error:
	Py_XDECREF(it);
	Py_XDECREF(changed);
	Py_XDECREF(gone);
	Py_XDECREF(graves);
	Py_XDECREF(unbound);
	return NULL;
}

PyMethodDef pydiff_methods[] = {
	{"collect", pydiff_collect, METH_VARARGS,
	 "collect(ns, shadow, idmap, dirty, deleted[, fresh]) -> "
	 "[(name, old)] for the names whose old (non-atomic) object was "
	 "replaced or removed"},
	{"diff_counts", pydiff_counts, METH_NOARGS,
	 "diff_counts() -> (namespace diffs of the noted names, full ones)"},
	{NULL, NULL, 0, NULL}
};
