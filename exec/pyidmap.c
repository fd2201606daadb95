/*
 * pyidmap.c - IdMap: object -> entry key, strong references, open
 * addressing; its pid() method is the picklers' persistent_id, and it
 * writes the refs blob of the entries a dump referred to.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>
#include <unistd.h>

#include "wire.h"
#include "pyexec.h"

/* ---------------------------------------------------------------------- */
/* IdMap                                                                  */

/* An object and the first of the entries whose object it is still (the
 * one records refer to).  The others, aliases (h = c), whose records are
 * a reference to key, are in the map's "more" dict, rarely used. */
typedef struct {
	PyObject *obj;       /* strong: keeps the address from being reused */
	PyObject *key;       /* strong: ("g", name) or ("h", id) */
} idslot;

typedef struct {
	PyObject_HEAD
	idslot *slots;       /* open addressing, linear probing */
	size_t cap;          /* power of two */
	size_t used;         /* live slots */
	size_t aliases;      /* keys in the lists of more */
	PyObject *more;      /* {address of a slot's obj: [its other keys]},
	                        or NULL */
	PyObject *root;      /* borrowed: object being pickled */
	PyObject *rootkey;   /* borrowed: the entry it is pickled for, or NULL */
	PyObject *group;     /* strong: keys pickled by value (a cycle's
	                        record), or NULL */
	PyObject *hits;      /* list of keys referenced during one dump */
} idmapobject;

static size_t
pyidmap_hash(const void *p, size_t cap)
{
	uintptr_t x = (uintptr_t)p >> 4;

	x ^= x >> 17;
	x *= (uintptr_t)0x9E3779B97F4A7C15ull;
	return (size_t)(x >> 7) & (cap - 1);
}

static idslot *
pyidmap_find(idmapobject *m, PyObject *obj)
{
	size_t i;

	if (m->cap == 0)
		return NULL;
	for (i = pyidmap_hash(obj, m->cap); m->slots[i].obj != NULL;
	    i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].obj == obj)
			return &m->slots[i];
	}
	return NULL;
}

/* Grow the table to cap (a power of two); rehashes every slot. */
static int
pyidmap_resize(idmapobject *m, size_t cap)
{
	idslot *old = m->slots, *n;
	size_t oldcap = m->cap, i, j;

	if ((n = PyMem_Calloc(cap, sizeof *n)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < oldcap; i++) {
		if (old[i].obj == NULL)
			continue;
		for (j = pyidmap_hash(old[i].obj, cap); n[j].obj != NULL;
		    j = (j + 1) & (cap - 1))
			;
		n[j] = old[i];
	}
	PyMem_Free(old);
	m->slots = n;
	m->cap = cap;
	return 0;
}

/* Make room for n more objects (one resize instead of several). */
int
pyidmap_reserve(PyObject *self, size_t n)
{
	idmapobject *m = (idmapobject *)self;
	size_t cap = m->cap == 0 ? 64 : m->cap;

	while ((m->used + n) * 2 > cap)
		cap *= 2;
	return cap == m->cap ? 0 : pyidmap_resize(m, cap);
}

/* The list of obj's other keys (borrowed), or NULL: none (or, with
 * create, an error).  The key of more is obj's address: obj is held by its
 * slot while it has a list. */
static PyObject *
pyidmap_more(idmapobject *m, PyObject *obj, int create)
{
	PyObject *addr, *l = NULL;

	if (m->more == NULL && (!create || (m->more = PyDict_New()) == NULL))
		return NULL;
	if ((addr = PyLong_FromVoidPtr(obj)) == NULL)
		return NULL;
	l = PyDict_GetItemWithError(m->more, addr);
	if (l == NULL && create && !PyErr_Occurred() &&
	    (l = PyList_New(0)) != NULL) {
		if (PyDict_SetItem(m->more, addr, l) < 0) {
			Py_DECREF(l);
			l = NULL;
		} else
			Py_DECREF(l);   /* the dict holds it */
	}
	Py_DECREF(addr);
	return l;
}

/* Forget obj's list of other keys once it is empty. */
static int
pyidmap_more_prune(idmapobject *m, PyObject *obj, PyObject *l)
{
	PyObject *addr;
	int rc;

	if (PyList_GET_SIZE(l) > 0)
		return 0;
	if ((addr = PyLong_FromVoidPtr(obj)) == NULL)
		return -1;
	rc = PyDict_DelItem(m->more, addr);
	Py_DECREF(addr);
	return rc;
}

/* Can key be a store key, so that records may refer to it?  ("g", name)
 * with a name of 1 to STORE_KEY_MAX UTF-8 bytes, or any ("h", id). */
static int
pyidmap_storable(PyObject *key)
{
	PyObject *kind, *k; /* borrowed */
	Py_ssize_t n;

	if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2)
		return 0;
	kind = PyTuple_GET_ITEM(key, 0);
	k = PyTuple_GET_ITEM(key, 1);
	if (!PyUnicode_Check(kind) || PyUnicode_GET_LENGTH(kind) != 1 ||
	    PyUnicode_READ_CHAR(kind, 0) != 'g')
		return 1;
	if (!PyUnicode_Check(k))
		return 0;
	if (PyUnicode_AsUTF8AndSize(k, &n) == NULL) {
		PyErr_Clear();   /* not encodable (a lone surrogate) */
		return 0;
	}
	return n > 0 && n <= STORE_KEY_MAX;
}

/* Map obj to key too: an object already mapped keeps its first key, and
 * key becomes one of its others (an alias).  A key that cannot be stored
 * (a global's name that is empty, longer than STORE_KEY_MAX or not UTF-8)
 * is not mapped: that global is kept in memory only, and a record that
 * refers to its object must hold the object by value, never by a
 * reference to a record that cannot exist.  0 or -1. */
int
pyidmap_add(PyObject *self, PyObject *obj, PyObject *key)
{
	idmapobject *m = (idmapobject *)self;
	idslot *s;
	size_t i;
	int r;

	if (!pyidmap_storable(key))
		return 0;

	/* the empty tuple is one object for everyone (CPython's singleton):
	 * no entry owns it, or every record holding a () would refer to the
	 * first global bound to one */
	if (PyTuple_CheckExact(obj) && PyTuple_GET_SIZE(obj) == 0)
		return 0;
	if ((s = pyidmap_find(m, obj)) != NULL) {
		PyObject *l;
		if ((r = PyObject_RichCompareBool(s->key, key, Py_EQ)) != 0)
			return r < 0 ? -1 : 0;
		if ((l = pyidmap_more(m, obj, 1)) == NULL)
			return -1;
		if ((r = PySequence_Contains(l, key)) != 0)
			return r < 0 ? -1 : 0;
		if (PyList_Append(l, key) < 0)
			return -1;
		m->aliases++;
		return 0;
	}
	if ((m->used + 1) * 2 > m->cap &&
	    pyidmap_resize(m, m->cap == 0 ? 64 : m->cap * 2) < 0)
		return -1;
	for (i = pyidmap_hash(obj, m->cap); m->slots[i].obj != NULL;
	    i = (i + 1) & (m->cap - 1))
		;
	m->slots[i].obj = Py_NewRef(obj);
	m->slots[i].key = Py_NewRef(key);
	m->used++;
	return 0;
}

/* add(obj, key): map obj to key. */
static PyObject *
pyidmap_add_py(PyObject *self, PyObject *args)
{
	PyObject *obj, *key;

	if (!PyArg_ParseTuple(args, "OO:add", &obj, &key))
		return NULL;
	if (pyidmap_add(self, obj, key) < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* key no longer has obj: forget that; obj is forgotten with its last
 * key, and its next key becomes the one records refer to.  Backward-shift
 * deletion keeps probe chains intact.  0 or -1. */
int
pyidmap_discard(PyObject *self, PyObject *obj, PyObject *key)
{
	idmapobject *m = (idmapobject *)self;
	idslot *s = pyidmap_find(m, obj), gone;
	PyObject *l;
	size_t i, j, k;
	Py_ssize_t n;
	int r;

	if (s == NULL)
		return 0;
	l = m->aliases > 0 ? pyidmap_more(m, obj, 0) : NULL;
	if (l == NULL && PyErr_Occurred())
		return -1;
	if (l != NULL && (n = PyList_GET_SIZE(l)) > 0) {
		if ((r = PyObject_RichCompareBool(s->key, key, Py_EQ)) < 0)
			return -1;
		if (r) {     /* the next one takes over */
			Py_SETREF(s->key, Py_NewRef(PyList_GET_ITEM(l, 0)));
			j = 0;
		} else {
			for (j = 0; j < (size_t)n; j++) {
				r = PyObject_RichCompareBool(PyList_GET_ITEM(l,
				    (Py_ssize_t)j), key, Py_EQ);
				if (r < 0)
					return -1;
				if (r)
					break;
			}
			if (j == (size_t)n)
				return 0;
		}
		if (PySequence_DelItem(l, (Py_ssize_t)j) < 0)
			return -1;
		m->aliases--;
		return pyidmap_more_prune(m, obj, l);
	}
	if ((r = PyObject_RichCompareBool(s->key, key, Py_EQ)) <= 0)
		return r;    /* not key's (any more): nothing to do */
	gone = *s;
	i = (size_t)(s - m->slots);
	m->slots[i].obj = NULL;
	m->slots[i].key = NULL;
	m->used--;
	for (j = (i + 1) & (m->cap - 1); m->slots[j].obj != NULL;
	    j = (j + 1) & (m->cap - 1)) {
		k = pyidmap_hash(m->slots[j].obj, m->cap);
		if (pyexec_shift_back(i, j, k)) {
			m->slots[i] = m->slots[j];
			m->slots[j].obj = NULL;
			m->slots[j].key = NULL;
			i = j;
		}
	}
	Py_DECREF(gone.obj);
	Py_DECREF(gone.key);
	return 0;
}

/* discard(obj, key): key no longer has obj. */
static PyObject *
pyidmap_discard_py(PyObject *self, PyObject *args)
{
	PyObject *obj, *key;

	if (!PyArg_ParseTuple(args, "OO:discard", &obj, &key))
		return NULL;
	if (pyidmap_discard(self, obj, key) < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* key(obj): the entry records refer to for obj, or None. */
static PyObject *
pyidmap_key_py(PyObject *self, PyObject *obj)
{
	idslot *s = pyidmap_find((idmapobject *)self, obj);

	return Py_NewRef(s != NULL ? s->key : Py_None);
}

/* Is obj another entry's than key's, that is, is key's record of obj a
 * reference to that entry (an alias)? */
int
pyidmap_alias(PyObject *self, PyObject *obj, PyObject *key)
{
	idmapobject *m = (idmapobject *)self;
	idslot *s;

	if (m->aliases == 0)   /* the common case: no object has two keys */
		return 0;
	s = pyidmap_find(m, obj);
	return s != NULL && s->key != key &&
	    PyObject_RichCompareBool(s->key, key, Py_EQ) == 0;
}

/* C entry points for pybatch.c and pyenc.c. */
PyObject *
pyidmap_key(PyObject *self, PyObject *obj)
{
	idslot *s;

	if (self == NULL || (s = pyidmap_find((idmapobject *)self, obj)) == NULL)
		return NULL;
	return s->key;
}

void
pyidmap_begin(PyObject *self, PyObject *root, PyObject *key)
{
	idmapobject *m = (idmapobject *)self;

	m->root = root; /* borrowed for the dump's duration */
	m->rootkey = key;
	Py_CLEAR(m->group);
	Py_CLEAR(m->hits);
}

static PyObject *pyidmap_end_py(PyObject *self, PyObject *unused);

PyObject *
pyidmap_end(PyObject *self)
{
	return pyidmap_end_py(self, NULL);
}

/* begin(root[, key[, group]]): start a dump of root for entry key (None:
 * no entry); the objects of the entries in the set group are pickled by
 * value, not referred to.  The caller holds root and key until end(). */
static PyObject *
pyidmap_begin_py(PyObject *self, PyObject *args)
{
	idmapobject *m = (idmapobject *)self;
	PyObject *root, *key = Py_None, *group = Py_None;

	if (!PyArg_ParseTuple(args, "O|OO:begin", &root, &key, &group))
		return NULL;
	if (group != Py_None && !PyAnySet_Check(group)) {
		PyErr_SetString(PyExc_TypeError, "begin(): group must be a set");
		return NULL;
	}
	pyidmap_begin(self, root, key == Py_None ? NULL : key);
	Py_XSETREF(m->group, group == Py_None ? NULL : Py_NewRef(group));
	Py_RETURN_NONE;
}

/* pid(obj): the persistent id of obj when it is another entry. */
static PyObject *
pyidmap_pid(PyObject *self, PyObject *obj)
{
	idmapobject *m = (idmapobject *)self;
	idslot *s;

	if (PyLong_CheckExact(obj) ||
	    PyUnicode_CheckExact(obj) || PyFloat_CheckExact(obj) ||
	    PyBytes_CheckExact(obj) || obj == Py_None || PyBool_Check(obj))
		Py_RETURN_NONE;
	if ((s = pyidmap_find(m, obj)) == NULL)
		Py_RETURN_NONE;
	/* the root is pickled by value, unless it is another entry's object:
	 * then the whole record is a reference to that entry */
	if (obj == m->root && (m->rootkey == NULL ||
	    !pyidmap_alias(self, obj, m->rootkey)))
		Py_RETURN_NONE;
	if (m->group != NULL) {
		int r = PySet_Contains(m->group, s->key);
		if (r < 0)
			return NULL;
		if (r)
			Py_RETURN_NONE;
	}
	if (m->hits == NULL && (m->hits = PyList_New(0)) == NULL)
		return NULL;
	if (PyList_Append(m->hits, s->key) < 0)
		return NULL;
	return Py_NewRef(s->key);
}

/* end(): finish a dump; return the refs blob (bytes, deduplicated). */
static PyObject *
pyidmap_end_py(PyObject *self, PyObject *unused)
{
	idmapobject *m = (idmapobject *)self;
	PyObject *res, *hits = m->hits;

	m->root = NULL;
	m->rootkey = NULL;
	Py_CLEAR(m->group);
	m->hits = NULL;
	if (hits == NULL)
		return PyBytes_FromStringAndSize("", 0);
	res = pyrefs_blob(PySequence_Fast_ITEMS(hits),
	    (size_t)PyList_GET_SIZE(hits));
	Py_DECREF(hits);
	return res;
}

static int
pyidmap_traverse(PyObject *self, visitproc visit, void *arg)
{
	idmapobject *m = (idmapobject *)self;
	size_t i;

	for (i = 0; i < m->cap; i++) {
		Py_VISIT(m->slots[i].obj);
		Py_VISIT(m->slots[i].key);
	}
	Py_VISIT(m->more);
	Py_VISIT(m->hits);
	Py_VISIT(m->group);
	return 0;
}

static int
pyidmap_clear(PyObject *self)
{
	idmapobject *m = (idmapobject *)self;
	idslot *slots = m->slots;
	size_t i, cap = m->cap;

	m->slots = NULL;
	m->cap = m->used = m->aliases = 0;
	for (i = 0; i < cap; i++) {
		Py_XDECREF(slots[i].obj);
		Py_XDECREF(slots[i].key);
	}
	PyMem_Free(slots);
	Py_CLEAR(m->more);
	Py_CLEAR(m->hits);
	Py_CLEAR(m->group);
	return 0;
}

static void
pyidmap_dealloc(PyObject *self)
{
	PyObject_GC_UnTrack(self);
	pyidmap_clear(self);
	Py_TYPE(self)->tp_free(self);
}

static Py_ssize_t
pyidmap_len(PyObject *self)
{
	return (Py_ssize_t)((idmapobject *)self)->used;
}

static PyMethodDef pyidmap_methods[] = {
	{"add", pyidmap_add_py, METH_VARARGS, "add(obj, key)"},
	{"discard", pyidmap_discard_py, METH_VARARGS,
	 "discard(obj, key): key no longer has obj"},
	{"begin", pyidmap_begin_py, METH_VARARGS, "begin(root[, key[, group]])"},
	{"pid", pyidmap_pid, METH_O, "persistent_id(obj)"},
	{"key", pyidmap_key_py, METH_O, "key(obj) -> the key records refer to"},
	{"end", pyidmap_end_py, METH_NOARGS, "end() -> refs blob"},
	{NULL, NULL, 0, NULL}
};

static PySequenceMethods pyidmap_as_seq = {.sq_length = pyidmap_len};

PyTypeObject pyidmap_IdMapType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.IdMap",
	.tp_basicsize = sizeof(idmapobject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "object -> entry key, for persistent references",
	.tp_traverse = pyidmap_traverse,
	.tp_clear = pyidmap_clear,
	.tp_dealloc = pyidmap_dealloc,
	.tp_methods = pyidmap_methods,
	.tp_as_sequence = &pyidmap_as_seq,
	.tp_new = PyType_GenericNew,
};
