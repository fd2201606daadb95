/*
 * pyrefs.c - the refs blob (a record's persistent references: u8 kind,
 * u16 big-endian length, key bytes; docs/STORAGE.md) on the Python side:
 * the blob of a dump's entry keys (pyidmap.c, pyenc.c), and refs_encode()
 * / refs_parse() for the backend's Python half, which had its own copy of
 * the codec.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>

#include "wire.h"
#include "pyexec.h"

/* Append one persistent reference to the refs blob. */
static int
pyrefs_encode_key(PyObject *key, char **buf, size_t *len, size_t *cap)
{
	PyObject *kind, *k; /* borrowed */
	const char *name = NULL, *ks;
	Py_ssize_t nlen = 8;
	uint8_t hb[8];

	if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
		PyErr_SetString(PyExc_TypeError, "entry key must be a pair");
		return -1;
	}
	kind = PyTuple_GET_ITEM(key, 0);
	k = PyTuple_GET_ITEM(key, 1);
	if ((ks = PyUnicode_AsUTF8(kind)) == NULL)
		return -1;
	if (ks[0] == 'g') {
		if ((name = PyUnicode_AsUTF8AndSize(k, &nlen)) == NULL)
			return -1;
		/* the length field is 16 bits; pyidmap_add_py never maps such a
		 * key, so this is a bug, and refused rather than truncated */
		if (nlen == 0 || nlen > STORE_KEY_MAX) {
			PyErr_Format(PyExc_ValueError, "a reference to a global "
			    "of %zd bytes: must be 1 to %d", nlen, STORE_KEY_MAX);
			return -1;
		}
	} else {
		wire_be64_put(hb, PyLong_AsUnsignedLongLong(k));
		if (PyErr_Occurred())
			return -1;
		name = (const char *)hb;
	}
	if (*len + 3 + (size_t)nlen > *cap) {
		size_t ncap = (*cap + 3 + (size_t)nlen) * 2;
		char *n = PyMem_Realloc(*buf, ncap);
		if (n == NULL) {
			PyErr_NoMemory();
			return -1;
		}
		*buf = n;
		*cap = ncap;
	}
	(*buf)[*len] = ks[0];
	wire_be16_put((uint8_t *)*buf + *len + 1, (uint16_t)nlen);
	memcpy(*buf + *len + 3, name, (size_t)nlen);
	*len += 3 + (size_t)nlen;
	return 0;
}

/* The refs blob of keys[0..n) (bytes, deduplicated, in first-seen
 * order). */
PyObject *
pyrefs_blob(PyObject *const *keys, size_t n)
{
	PyObject *seen = NULL, *res = NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0, i;
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
		    pyrefs_encode_key(keys[i], &buf, &len, &cap) < 0)
			goto error;
	}
	res = PyBytes_FromStringAndSize(buf, (Py_ssize_t)len);
error:
	PyMem_Free(buf);
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
 * bytes-like), in order.  Names are decoded with surrogateescape.  A blob
 * that ends inside a reference gives the ones before it. */
static PyObject *
pyrefs_parse_py(PyObject *self, PyObject *blob)
{
	Py_buffer v;
	PyObject *out = NULL, *key;
	const uint8_t *p;
	size_t off, n, len;

	if (PyObject_GetBuffer(blob, &v, PyBUF_SIMPLE) < 0)
		return NULL;
	if ((out = PyList_New(0)) == NULL)
		goto out;
	p = v.buf;
	n = (size_t)v.len;
	for (off = 0; off + 3 <= n; off += 3 + len) {
		len = (size_t)p[off + 1] << 8 | p[off + 2];
		if (off + 3 + len > n)
			break;
		if (p[off] == STORE_KIND_GLOBAL)
			key = Py_BuildValue("(sN)", "g", PyUnicode_DecodeUTF8(
			    (const char *)p + off + 3, (Py_ssize_t)len,
			    "surrogateescape"));
		else if (p[off] == STORE_KIND_HANDLE && len == 8)
			key = Py_BuildValue("(sK)", "h", (unsigned long long)
			    wire_be64_get(p + off + 3));
		else
			break;
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
