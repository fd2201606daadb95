/*
 * pydigest.c - DigestMap: entry key -> the content digest of what the store
 * holds for it, so that a checkpoint skips the entries that did not change.
 *
 * It is a dict's job, done without a dict's per-entry costs: a checkpoint
 * looks up (and then sets) one digest per entry it pickles, and with a dict
 * each of those hashes a key tuple (tuple hashes are not cached) and each
 * set allocates a 16-byte bytes object.  Here the hash is the name's own
 * (cached by str) or the handle id, and the digest sits in the slot.
 *
 * Keys are entry keys: ("g", name) with name a str, ("h", id) with id an
 * int.  From Python it is a small mapping: m[key], m[key] = digest (16
 * bytes), del m[key], key in m, len(m), m.get(key[, default]),
 * m.pop(key[, default]).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <stdint.h>
#include <string.h>

#include "pyexec.h"

typedef struct {
	PyObject *key;        /* the key tuple, strong; NULL: empty slot */
	Py_hash_t hash;
	uint8_t dg[16];
} dslot;

typedef struct {
	PyObject_HEAD
	dslot *slots;         /* open addressing, linear probing */
	size_t cap;           /* power of two, or 0 */
	size_t used;
} digestmapobject;

/* The parts of an entry key; -1 with TypeError when it is not one. */
static int
dkey_parse(PyObject *key, int *kind, PyObject **name, uint64_t *handle,
           Py_hash_t *hash)
{
	PyObject *k, *v;

	if (!PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 2)
		goto bad;
	k = PyTuple_GET_ITEM(key, 0);
	v = PyTuple_GET_ITEM(key, 1);
	if (!PyUnicode_CheckExact(k) || PyUnicode_GET_LENGTH(k) != 1)
		goto bad;
	*kind = (int)PyUnicode_READ_CHAR(k, 0);
	if (*kind == 'g' && PyUnicode_CheckExact(v)) {
		Py_hash_t h = PyObject_Hash(v);   /* cached by the str */
		if (h == -1)
			return -1;
		*name = v;
		*handle = 0;
		*hash = h;
		return 0;
	}
	if (*kind == 'h' && PyLong_CheckExact(v)) {
		uint64_t x = PyLong_AsUnsignedLongLong(v);
		if (x == (uint64_t)-1 && PyErr_Occurred())
			return -1;
		*name = NULL;
		*handle = x;
		x *= 0x9E3779B97F4A7C15ull;
		*hash = (Py_hash_t)(x ^ (x >> 29));
		return 0;
	}
bad:
	PyErr_Format(PyExc_TypeError, "not an entry key: %R", key);
	return -1;
}

/* Does slot s hold the key (kind, name | handle)?  No Python code runs:
 * both names are exact str. */
static int
dslot_match(const dslot *s, int kind, PyObject *name, uint64_t handle)
{
	PyObject *k = PyTuple_GET_ITEM(s->key, 0), *v = PyTuple_GET_ITEM(s->key, 1);

	if ((int)PyUnicode_READ_CHAR(k, 0) != kind)
		return 0;
	if (kind == 'g')
		return v == name || (PyUnicode_GET_LENGTH(v) ==
		    PyUnicode_GET_LENGTH(name) && PyUnicode_Compare(v, name) == 0);
	return PyLong_AsUnsignedLongLong(v) == handle;
}

/* The slot holding the parsed key, or the empty slot where the probe ends
 * (m->cap > 0). */
static dslot *
dmap_probe(digestmapobject *m, int kind, PyObject *name, uint64_t handle,
           Py_hash_t h)
{
	size_t i;

	for (i = (size_t)h & (m->cap - 1); m->slots[i].key != NULL;
	    i = (i + 1) & (m->cap - 1))
		if (m->slots[i].hash == h &&
		    dslot_match(&m->slots[i], kind, name, handle))
			break;
	return &m->slots[i];
}

/* The slot of key, or NULL (absent, or an error when PyErr_Occurred()). */
static dslot *
dmap_find(digestmapobject *m, PyObject *key)
{
	PyObject *name;
	uint64_t handle;
	Py_hash_t h;
	dslot *s;
	int kind;

	if (dkey_parse(key, &kind, &name, &handle, &h) < 0 || m->cap == 0)
		return NULL;
	s = dmap_probe(m, kind, name, handle, h);
	return s->key != NULL ? s : NULL;
}

static int
dmap_resize(digestmapobject *m, size_t cap)
{
	dslot *n = PyMem_Calloc(cap, sizeof *n);
	size_t i, j;

	if (n == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < m->cap; i++) {
		if (m->slots[i].key == NULL)
			continue;
		for (j = (size_t)m->slots[i].hash & (cap - 1); n[j].key != NULL;
		    j = (j + 1) & (cap - 1))
			;
		n[j] = m->slots[i];
	}
	PyMem_Free(m->slots);
	m->slots = n;
	m->cap = cap;
	return 0;
}

/* C entry points (pybatch.c). */
int
pydigest_reserve(PyObject *self, size_t n)
{
	digestmapobject *m = (digestmapobject *)self;
	size_t cap = m->cap == 0 ? 64 : m->cap;

	while ((m->used + n) * 3 > cap * 2)
		cap *= 2;
	return cap == m->cap ? 0 : dmap_resize(m, cap);
}

/* get: 1 and out filled, 0 absent, -1. */
int
pydigest_get(PyObject *self, PyObject *key, uint8_t out[16])
{
	dslot *s = dmap_find((digestmapobject *)self, key);

	if (s == NULL)
		return PyErr_Occurred() ? -1 : 0;
	memcpy(out, s->dg, 16);
	return 1;
}

int
pydigest_set(PyObject *self, PyObject *key, const uint8_t dg[16])
{
	digestmapobject *m = (digestmapobject *)self;
	PyObject *name;
	uint64_t handle;
	Py_hash_t h;
	dslot *s;
	int kind;

	if (dkey_parse(key, &kind, &name, &handle, &h) < 0)
		return -1;
	if ((m->used + 1) * 3 > m->cap * 2 &&
	    dmap_resize(m, m->cap == 0 ? 64 : m->cap * 2) < 0)
		return -1;
	s = dmap_probe(m, kind, name, handle, h);
	if (s->key == NULL) {
		s->key = Py_NewRef(key);
		s->hash = h;
		m->used++;
	}
	memcpy(s->dg, dg, 16);
	return 0;
}

/* Remove slot s; backward-shift deletion keeps the probe chains whole. */
static void
dmap_remove(digestmapobject *m, dslot *s)
{
	size_t i = (size_t)(s - m->slots), j, k;
	PyObject *key = s->key;

	s->key = NULL;
	m->used--;
	for (j = (i + 1) & (m->cap - 1); m->slots[j].key != NULL;
	    j = (j + 1) & (m->cap - 1)) {
		k = (size_t)m->slots[j].hash & (m->cap - 1);
		if (pyexec_shift_back(i, j, k)) {
			m->slots[i] = m->slots[j];
			m->slots[j].key = NULL;
			i = j;
		}
	}
	Py_DECREF(key);
}

static PyObject *
dmap_subscript(PyObject *self, PyObject *key)
{
	dslot *s = dmap_find((digestmapobject *)self, key);

	if (s == NULL) {
		if (!PyErr_Occurred())
			PyErr_SetObject(PyExc_KeyError, key);
		return NULL;
	}
	return PyBytes_FromStringAndSize((const char *)s->dg, 16);
}

static int
dmap_ass_subscript(PyObject *self, PyObject *key, PyObject *v)
{
	dslot *s;

	if (v != NULL) {
		if (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) != 16) {
			PyErr_SetString(PyExc_TypeError,
			    "a digest is 16 bytes");
			return -1;
		}
		return pydigest_set(self, key,
		    (const uint8_t *)PyBytes_AS_STRING(v));
	}
	if ((s = dmap_find((digestmapobject *)self, key)) == NULL) {
		if (!PyErr_Occurred())
			PyErr_SetObject(PyExc_KeyError, key);
		return -1;
	}
	dmap_remove((digestmapobject *)self, s);
	return 0;
}

static Py_ssize_t
dmap_len(PyObject *self)
{
	return (Py_ssize_t)((digestmapobject *)self)->used;
}

static int
dmap_contains(PyObject *self, PyObject *key)
{
	if (dmap_find((digestmapobject *)self, key) != NULL)
		return 1;
	return PyErr_Occurred() ? -1 : 0;
}

/* get(key, default=None) */
static PyObject *
dmap_get(PyObject *self, PyObject *args)
{
	PyObject *key, *dflt = Py_None;
	dslot *s;

	if (!PyArg_UnpackTuple(args, "get", 1, 2, &key, &dflt))
		return NULL;
	if ((s = dmap_find((digestmapobject *)self, key)) != NULL)
		return PyBytes_FromStringAndSize((const char *)s->dg, 16);
	if (PyErr_Occurred())
		return NULL;
	return Py_NewRef(dflt);
}

/* pop(key[, default]) */
static PyObject *
dmap_pop(PyObject *self, PyObject *args)
{
	PyObject *key, *dflt = NULL, *res;
	dslot *s;

	if (!PyArg_UnpackTuple(args, "pop", 1, 2, &key, &dflt))
		return NULL;
	if ((s = dmap_find((digestmapobject *)self, key)) == NULL) {
		if (PyErr_Occurred())
			return NULL;
		if (dflt == NULL) {
			PyErr_SetObject(PyExc_KeyError, key);
			return NULL;
		}
		return Py_NewRef(dflt);
	}
	if ((res = PyBytes_FromStringAndSize((const char *)s->dg, 16)) == NULL)
		return NULL;
	dmap_remove((digestmapobject *)self, s);
	return res;
}

static void
dmap_dealloc(PyObject *self)
{
	digestmapobject *m = (digestmapobject *)self;
	size_t i;

	for (i = 0; i < m->cap; i++)
		Py_XDECREF(m->slots[i].key);
	PyMem_Free(m->slots);
	Py_TYPE(self)->tp_free(self);
}

static PyMethodDef dmap_methods[] = {
	{"get", dmap_get, METH_VARARGS, "get(key, default=None) -> digest"},
	{"pop", dmap_pop, METH_VARARGS, "pop(key[, default]) -> digest"},
	{NULL, NULL, 0, NULL}
};

static PyMappingMethods dmap_as_mapping = {
	.mp_length = dmap_len,
	.mp_subscript = dmap_subscript,
	.mp_ass_subscript = dmap_ass_subscript,
};

static PySequenceMethods dmap_as_sequence = {
	.sq_contains = dmap_contains,
};

PyTypeObject pydigest_DigestMapType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.DigestMap",
	.tp_basicsize = sizeof(digestmapobject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "entry key -> content digest of the stored record",
	.tp_methods = dmap_methods,
	.tp_as_mapping = &dmap_as_mapping,
	.tp_as_sequence = &dmap_as_sequence,
	.tp_dealloc = dmap_dealloc,
	.tp_new = PyType_GenericNew,
};
