/*
 * pyrefs.c - the refs blob (a record's persistent references; its one
 * codec is the store's, store/refs.c) for Python objects: the blob of a
 * dump's entry keys (pyidmap.c, pyenc.c), and refs_encode() /
 * refs_parse() for the backend's Python half, which had its own copy of
 * the codec.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>

#include "wire.h"
#include "pyexec.h"

/* Append the reference of entry key ("g", name) / ("h", id) to b, through
 * the store's encoder (refs_blob_add), which refuses a name it cannot hold
 * rather than wrap its 16-bit length.  0 or -1 with an exception. */
static int
pyrefs_encode_key(PyObject *key, store_refs_buf *b)
{
	PyObject *kind, *k; /* borrowed */
	const char *ks;
	Py_ssize_t nlen = 0;
	store_key ref;
	int rc;

	if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
		PyErr_SetString(PyExc_TypeError, "entry key must be a pair");
		return -1;
	}
	kind = PyTuple_GET_ITEM(key, 0);
	k = PyTuple_GET_ITEM(key, 1);
	if ((ks = PyUnicode_AsUTF8(kind)) == NULL)
		return -1;
	memset(&ref, 0, sizeof ref);
	if (ks[0] == 'g') {
		ref.kind = STORE_KIND_GLOBAL;
		if ((ref.name = PyUnicode_AsUTF8AndSize(k, &nlen)) == NULL)
			return -1;
		ref.name_len = (size_t)nlen;
	} else {
		ref.kind = STORE_KIND_HANDLE;
		ref.handle = PyLong_AsUnsignedLongLong(k);
		if (PyErr_Occurred())
			return -1;
	}
	if ((rc = refs_blob_add(b, &ref)) == 0)
		return 0;
	/* pyidmap_add_py never maps a key the store cannot hold, so from a
	 * dump this is a bug, and refused rather than truncated */
	if (rc == STORE_E_KEY)
		PyErr_Format(PyExc_ValueError, "a reference to a global of %zd "
		    "bytes: must be 1 to %d", nlen, STORE_KEY_MAX);
	else if (rc == STORE_E_NOMEM)
		PyErr_NoMemory();
	else
		PyErr_Format(PyExc_ValueError, "a reference to %R: %s", key,
		    store_strerror(rc));
	return -1;
}

/* The refs blob of keys[0..n) (bytes, deduplicated, in first-seen
 * order). */
PyObject *
pyrefs_blob(PyObject *const *keys, size_t n)
{
	PyObject *seen = NULL, *res = NULL;
	store_refs_buf b = {NULL, 0, 0};
	size_t i;
	int r;

	if (n == 0)
		return PyBytes_FromStringAndSize("", 0);
	if ((seen = PySet_New(NULL)) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if ((r = PySet_Contains(seen, keys[i])) < 0)
			goto error;
		if (r)
			continue;
		if (PySet_Add(seen, keys[i]) < 0 ||
		    pyrefs_encode_key(keys[i], &b) < 0)
			goto error;
	}
	res = PyBytes_FromStringAndSize((const char *)b.p, (Py_ssize_t)b.len);
error:
	refs_blob_free(&b);
	Py_DECREF(seen);
	return res;
}

/* refs_encode(keys) -> bytes: the refs blob of the entry keys ("g", name)
 * / ("h", id), deduplicated; ValueError for a name the store cannot hold
 * (empty, over KEY_MAX bytes), never a truncated length. */
static PyObject *
pyrefs_encode_py(PyObject *self, PyObject *keys)
{
	PyObject *fast, *res;

	if ((fast = PySequence_Fast(keys, "refs_encode() needs a sequence of "
	    "entry keys")) == NULL)
		return NULL;
	res = pyrefs_blob(PySequence_Fast_ITEMS(fast),
	    (size_t)PySequence_Fast_GET_SIZE(fast));
	Py_DECREF(fast);
	return res;
}

/* refs_parse(blob) -> tuple of the entry keys of a refs blob (a
 * bytes-like), in order, read with the store's iterator (refs_blob_next).
 * Names are decoded with surrogateescape.  A damaged blob gives the
 * references before the damage (as the Python half's parser did: the
 * record's digest, checked on reading, is what catches damage). */
static PyObject *
pyrefs_parse_py(PyObject *self, PyObject *blob)
{
	Py_buffer v;
	PyObject *out = NULL, *key;
	const char *why;
	store_key ref;
	size_t off = 0;

	if (PyObject_GetBuffer(blob, &v, PyBUF_SIMPLE) < 0)
		return NULL;
	if ((out = PyList_New(0)) == NULL)
		goto out;
	while (refs_blob_next(v.buf, (size_t)v.len, &off, &ref, &why) == 1) {
		if (ref.kind == STORE_KIND_GLOBAL)
			key = Py_BuildValue("(sN)", "g", PyUnicode_DecodeUTF8(
			    ref.name, (Py_ssize_t)ref.name_len,
			    "surrogateescape"));
		else
			key = Py_BuildValue("(sK)", "h",
			    (unsigned long long)ref.handle);
		if (key == NULL || PyList_Append(out, key) < 0) {
			Py_XDECREF(key);
			Py_CLEAR(out);
			goto out;
		}
		Py_DECREF(key);
	}
	Py_SETREF(out, PyList_AsTuple(out));
out:
	PyBuffer_Release(&v);
	return out;
}

PyMethodDef pyrefs_methods[] = {
	{"refs_encode", pyrefs_encode_py, METH_O,
	 "refs_encode(keys) -> the refs blob of these entry keys"},
	{"refs_parse", pyrefs_parse_py, METH_O,
	 "refs_parse(blob) -> tuple of the entry keys of a refs blob"},
	{NULL, NULL, 0, NULL}
};
