/*
 * pyenc.c - a protocol-5 pickle writer for plain data, the checkpoint's
 * fast path.
 *
 * Most workspace entries are plain data: dicts, lists, tuples and sets of
 * ints, floats, strings, bytes, bools and None.  The stdlib C pickler pays,
 * per entry, a method call for dump(), one for clear_memo(), one for the
 * persistent-id hook on every object in the graph, a memo insert for every
 * container and string, and a bytes object handed to the sink's write().
 * For a three-key dict that is most of the checkpoint.  pyenc_plain()
 * writes the same opcodes straight into a C buffer, and gives up (returns
 * 0, writes nothing) on anything else, so that the stdlib pickler, which
 * knows everything, takes the entry:
 *
 *  - any object whose type is not exactly one of the above (subclasses,
 *    instances, functions, numpy arrays, ...);
 *  - a container reached twice (shared or recursive): the stdlib pickler
 *    memoizes it, and identity within the entry must survive;
 *  - a container that is another entry's object (in the IdMap), unless
 *    the caller takes references (refs): it is then written as a
 *    persistent reference, the entry key (kind, name or id) and BINPERSID,
 *    as the stdlib pickler writes what the IdMap's persistent_id returns
 *    (without its memo), and its key goes into the refs blob;
 *  - a string that is not valid UTF-8 (lone surrogates), an int beyond 64
 *    bits, nesting deeper than PYENC_DEPTH.
 *
 * Large bytes and bytearrays (PYENC_OOB_MIN and more) go out of band when
 * the caller asks: the pickle says builtins.bytes(NEXT_BUFFER) (bytearray
 * likewise), and the object itself is handed back, to be written straight
 * from its memory into the record, as numpy's buffers are; no copy into the
 * pickle.  A bytearray is mutable, so, like a container, it must not be
 * reached twice nor be another entry's object.
 *
 * What it writes loads with pickle.loads (given the buffers) into an equal
 * object of the same types.  It writes no FRAME (optional in protocol 4+)
 * and no MEMOIZE (nothing is reached twice), so it is deterministic: the
 * same value always gives the same bytes, which is what the digest that
 * skips unchanged entries needs.  No Python code runs while it works (no
 * __hash__, no __eq__, no allocation of Python objects: the out-of-band
 * objects are collected in a C array and put in a list at the end), so
 * the graph cannot change under it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <stdint.h>
#include <string.h>

#include "pyexec.h"

#if PY_VERSION_HEX < 0x030B0000
#define PyFloat_Pack8 _PyFloat_Pack8
#endif

#define PYENC_DEPTH 64      /* deeper graphs go to the stdlib pickler */
#define PYENC_OOB_MIN (64u << 10) /* bytes(array)s this large: out of band */

/* The opcodes used (Lib/pickle.py). */
enum {
	OP_MARK = '(', OP_STOP = '.', OP_NONE = 'N', OP_BININT = 'J',
	OP_BININT1 = 'K', OP_BININT2 = 'M', OP_BINFLOAT = 'G',
	OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE = 'X',
	OP_BINUNICODE8 = 0x8d, OP_SHORT_BINBYTES = 'C', OP_BINBYTES = 'B',
	OP_BINBYTES8 = 0x8e, OP_EMPTY_DICT = '}', OP_SETITEM = 's',
	OP_SETITEMS = 'u', OP_EMPTY_LIST = ']', OP_APPEND = 'a',
	OP_APPENDS = 'e', OP_EMPTY_TUPLE = ')', OP_TUPLE = 't',
	OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
	OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a,
	OP_EMPTY_SET = 0x8f, OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91,
	OP_PROTO = 0x80, OP_STACK_GLOBAL = 0x93, OP_BYTEARRAY8 = 0x96,
	OP_NEXT_BUFFER = 0x97, OP_REDUCE = 'R', OP_BINPERSID = 'Q'
};

/* The stdlib pickler's batch size for SETITEMS/APPENDS/ADDITEMS. */
#define BATCH 1000

struct enc {
	char *buf;
	size_t len, cap;
	PyObject *idmap;
	PyObject *root;
	PyObject **seen;       /* containers written so far: seen_small,
	                          then a hash table */
	size_t nseen, capseen;
	PyObject *seen_small[16];
	int want_oob;          /* large bytes(array)s out of band */
	PyObject **oob;        /* those written so far, strong references */
	size_t noob, capoob;
	int want_refs;         /* other entries' objects by reference */
	PyObject **refs;       /* the keys of those written so far, borrowed
	                          from the IdMap (no Python code runs) */
	size_t nrefs, caprefs;
};

/* Make room for n more bytes; 0 or -1 (out of memory). */
static int
enc_room(struct enc *e, size_t n)
{
	size_t ncap;
	char *b;

	if (e->len + n <= e->cap)
		return 0;
	ncap = e->cap < 256 ? 256 : e->cap;
	while (ncap < e->len + n)
		ncap *= 2;
	if ((b = PyMem_Realloc(e->buf, ncap)) == NULL) {
		return -1;
	}
	e->buf = b;
	e->cap = ncap;
	return 0;
}

static void
put_le(char *p, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		p[i] = (char)(v >> (8 * i));
}

/* Opcode op followed by a little-endian length of n bytes, then data. */
static int
enc_sized(struct enc *e, int op, int n, const void *data, size_t len)
{
	if (enc_room(e, 1 + (size_t)n + len) < 0)
		return -1;
	e->buf[e->len++] = (char)op;
	put_le(e->buf + e->len, len, n);
	e->len += (size_t)n;
	memcpy(e->buf + e->len, data, len);
	e->len += len;
	return 0;
}

static int
enc_op(struct enc *e, int op)
{
	if (enc_room(e, 1) < 0)
		return -1;
	e->buf[e->len++] = (char)op;
	return 0;
}

/* An int as the stdlib pickler writes it: BININT1/BININT2/BININT when it
 * fits 32 bits, else LONG1 (two's complement, little-endian, shortest).
 * Returns 1 written, 0 beyond 64 bits, -1 out of memory. */
static int
enc_int(struct enc *e, PyObject *o)
{
	int overflow = 0, n;
	long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
	char tmp[9];

	if (overflow != 0)
		return 0;
	if (v == -1 && PyErr_Occurred()) {
		PyErr_Clear();
		return 0;
	}
	if (v >= 0 && v <= 0xff) {
		if (enc_room(e, 2) < 0)
			return -1;
		e->buf[e->len++] = (char)OP_BININT1;
		e->buf[e->len++] = (char)v;
		return 1;
	}
	if (v >= 0 && v <= 0xffff) {
		if (enc_room(e, 3) < 0)
			return -1;
		e->buf[e->len++] = (char)OP_BININT2;
		put_le(e->buf + e->len, (uint64_t)v, 2);
		e->len += 2;
		return 1;
	}
	if (v >= INT32_MIN && v <= INT32_MAX) {
		if (enc_room(e, 5) < 0)
			return -1;
		e->buf[e->len++] = (char)OP_BININT;
		put_le(e->buf + e->len, (uint64_t)v, 4);
		e->len += 4;
		return 1;
	}
	/* shortest two's complement: drop top bytes while they only repeat
	 * the sign of the byte below */
	put_le(tmp, (uint64_t)v, 8);
	n = 8;
	while (n > 1 && ((tmp[n - 1] == 0 && !(tmp[n - 2] & 0x80)) ||
	    (tmp[n - 1] == (char)0xff && (tmp[n - 2] & 0x80))))
		n--;
	if (enc_room(e, 2 + (size_t)n) < 0)
		return -1;
	e->buf[e->len++] = (char)OP_LONG1;
	e->buf[e->len++] = (char)n;
	memcpy(e->buf + e->len, tmp, (size_t)n);
	e->len += (size_t)n;
	return 1;
}

static int
enc_float(struct enc *e, PyObject *o)
{
	if (enc_room(e, 9) < 0)
		return -1;
	e->buf[e->len] = (char)OP_BINFLOAT;
	if (PyFloat_Pack8(PyFloat_AS_DOUBLE(o), e->buf + e->len + 1, 0) < 0) {
		PyErr_Clear();
		return 0;
	}
	e->len += 9;
	return 1;
}

static int
enc_str(struct enc *e, PyObject *o)
{
	Py_ssize_t n;
	const char *s = PyUnicode_AsUTF8AndSize(o, &n);

	if (s == NULL) {
		/* lone surrogates: the stdlib pickler writes them with
		 * surrogatepass; leave it to it */
		PyErr_Clear();
		return 0;
	}
	if (n < 256)
		return enc_sized(e, OP_SHORT_BINUNICODE, 1, s, (size_t)n) < 0 ?
		    -1 : 1;
	if ((uint64_t)n <= 0xffffffffu)
		return enc_sized(e, OP_BINUNICODE, 4, s, (size_t)n) < 0 ? -1 : 1;
	return enc_sized(e, OP_BINUNICODE8, 8, s, (size_t)n) < 0 ? -1 : 1;
}

/* o (bytes or bytearray) out of band: builtins.<type>(next buffer), and o
 * kept (a strong reference in a C array: no Python allocation here). */
static int
enc_oob(struct enc *e, PyObject *o, const char *type, size_t tlen)
{
	static const char builtins[] = "builtins";

	if (e->noob == e->capoob) {
		size_t ncap = e->capoob == 0 ? 4 : e->capoob * 2;
		PyObject **n = PyMem_Realloc(e->oob, ncap * sizeof *n);

		if (n == NULL)
			return -1;
		e->oob = n;
		e->capoob = ncap;
	}
	if (enc_sized(e, OP_SHORT_BINUNICODE, 1, builtins,
	    sizeof builtins - 1) < 0 ||
	    enc_sized(e, OP_SHORT_BINUNICODE, 1, type, tlen) < 0 ||
	    enc_op(e, OP_STACK_GLOBAL) < 0 || enc_op(e, OP_NEXT_BUFFER) < 0 ||
	    enc_op(e, OP_TUPLE1) < 0 || enc_op(e, OP_REDUCE) < 0)
		return -1;
	e->oob[e->noob++] = Py_NewRef(o);
	return 1;
}

static int
enc_bytes(struct enc *e, PyObject *o)
{
	size_t n = (size_t)PyBytes_GET_SIZE(o);
	const char *s = PyBytes_AS_STRING(o);

	if (e->want_oob && n >= PYENC_OOB_MIN)
		return enc_oob(e, o, "bytes", 5);
	if (n < 256)
		return enc_sized(e, OP_SHORT_BINBYTES, 1, s, n) < 0 ? -1 : 1;
	if ((uint64_t)n <= 0xffffffffu)
		return enc_sized(e, OP_BINBYTES, 4, s, n) < 0 ? -1 : 1;
	return enc_sized(e, OP_BINBYTES8, 8, s, n) < 0 ? -1 : 1;
}

static size_t
seen_hash(const void *p, size_t cap)
{
	uintptr_t x = (uintptr_t)p >> 4;

	x *= (uintptr_t)0x9E3779B97F4A7C15ull;
	return (size_t)(x >> 17) & (cap - 1);
}

/* Insert o into the open-addressing table (room guaranteed); 0 when it
 * was there already. */
static int
seen_insert(PyObject **tab, size_t cap, PyObject *o)
{
	size_t i;

	for (i = seen_hash(o, cap); tab[i] != NULL; i = (i + 1) & (cap - 1))
		if (tab[i] == o)
			return 0;
	tab[i] = o;
	return 1;
}

/* Note container o as written: 1, 0 when it was already (shared or
 * recursive), -1 out of memory.  A short array first, then a hash table
 * kept at most half full. */
static int
enc_seen(struct enc *e, PyObject *o)
{
	size_t i, ncap;
	PyObject **n;

	if (e->seen == e->seen_small) {
		for (i = 0; i < e->nseen; i++)
			if (e->seen[i] == o)
				return 0;
		if (e->nseen < e->capseen) {
			e->seen[e->nseen++] = o;
			return 1;
		}
	} else if ((e->nseen + 1) * 2 <= e->capseen) {
		if (!seen_insert(e->seen, e->capseen, o))
			return 0;
		e->nseen++;
		return 1;
	}
	/* (re)build the table, four times as large */
	ncap = e->capseen * 4;
	if ((n = PyMem_Calloc(ncap, sizeof *n)) == NULL)
		return -1;
	if (e->seen == e->seen_small) {
		for (i = 0; i < e->nseen; i++)
			seen_insert(n, ncap, e->seen[i]);
	} else {
		for (i = 0; i < e->capseen; i++)
			if (e->seen[i] != NULL)
				seen_insert(n, ncap, e->seen[i]);
		PyMem_Free(e->seen);
	}
	e->seen = n;
	e->capseen = ncap;
	if (!seen_insert(n, ncap, o))
		return 0;
	e->nseen++;
	return 1;
}

static int enc_obj(struct enc *e, PyObject *o, int depth);

/* Another entry's object, whose entry key is key: a persistent reference
 * (when the caller takes them), the key tuple then BINPERSID; the key is
 * noted for the refs blob.  1, 0 (not plain: no references wanted, or a
 * key that is not ("g", str) / ("h", int)), -1 out of memory. */
static int
enc_ref(struct enc *e, PyObject *key)
{
	PyObject *kind, *k;
	Py_UCS4 c;
	int r;

	if (!e->want_refs || !PyTuple_CheckExact(key) ||
	    PyTuple_GET_SIZE(key) != 2)
		return 0;
	kind = PyTuple_GET_ITEM(key, 0);
	k = PyTuple_GET_ITEM(key, 1);
	if (!PyUnicode_CheckExact(kind) || PyUnicode_GET_LENGTH(kind) != 1)
		return 0;
	c = PyUnicode_READ_CHAR(kind, 0);
	if (!(c == 'g' && PyUnicode_CheckExact(k)) &&
	    !(c == 'h' && PyLong_CheckExact(k)))
		return 0;
	if ((r = enc_str(e, kind)) <= 0 || (r = PyUnicode_CheckExact(k) ?
	    enc_str(e, k) : enc_int(e, k)) <= 0)
		return r;
	if (enc_op(e, OP_TUPLE2) < 0 || enc_op(e, OP_BINPERSID) < 0)
		return -1;
	if (e->nrefs == e->caprefs) {
		size_t ncap = e->caprefs == 0 ? 8 : 2 * e->caprefs;
		PyObject **n = PyMem_Realloc(e->refs, ncap * sizeof *n);
		if (n == NULL)
			return -1;
		e->refs = n;
		e->caprefs = ncap;
	}
	e->refs[e->nrefs++] = key;
	return 1;
}

/* A bytearray: BYTEARRAY8 as the stdlib pickler writes it, or out of band.
 * Mutable, so checked as containers are (not another entry's, not twice). */
static int
enc_bytearray(struct enc *e, PyObject *o)
{
	size_t n = (size_t)PyByteArray_GET_SIZE(o);
	PyObject *key;
	int r;

	if (o != e->root && (key = pyidmap_key(e->idmap, o)) != NULL)
		return enc_ref(e, key);
	if ((r = enc_seen(e, o)) <= 0)
		return r;
	if (e->want_oob && n >= PYENC_OOB_MIN)
		return enc_oob(e, o, "bytearray", 9);
	return enc_sized(e, OP_BYTEARRAY8, 8, PyByteArray_AS_STRING(o), n) < 0 ?
	    -1 : 1;
}

/* Items of a sequence (borrowed array) in MARK ... op batches: list
 * (APPEND/APPENDS) and set bodies. */
static int
enc_items(struct enc *e, PyObject *const *items, Py_ssize_t n, int one,
          int many, int depth)
{
	Py_ssize_t i, j, k;
	int r;

	for (i = 0; i < n; i = j) {
		j = i + BATCH < n ? i + BATCH : n;
		if (j - i == 1 && one != 0) {
			if ((r = enc_obj(e, items[i], depth)) <= 0)
				return r;
			if (enc_op(e, one) < 0)
				return -1;
			continue;
		}
		if (enc_op(e, OP_MARK) < 0)
			return -1;
		for (k = i; k < j; k++)
			if ((r = enc_obj(e, items[k], depth)) <= 0)
				return r;
		if (enc_op(e, many) < 0)
			return -1;
	}
	return 1;
}

static int
enc_dict(struct enc *e, PyObject *o, int depth)
{
	Py_ssize_t n = PyDict_GET_SIZE(o), pos = 0, done = 0, inbatch = 0;
	PyObject *k, *v;
	int r;

	if (enc_op(e, OP_EMPTY_DICT) < 0)
		return -1;
	if (n == 1) {
		if (!PyDict_Next(o, &pos, &k, &v))
			return 0;
		if ((r = enc_obj(e, k, depth)) <= 0 ||
		    (r = enc_obj(e, v, depth)) <= 0)
			return r;
		return enc_op(e, OP_SETITEM) < 0 ? -1 : 1;
	}
	while (PyDict_Next(o, &pos, &k, &v)) {
		if (inbatch == 0 && enc_op(e, OP_MARK) < 0)
			return -1;
		if ((r = enc_obj(e, k, depth)) <= 0 ||
		    (r = enc_obj(e, v, depth)) <= 0)
			return r;
		done++;
		if (++inbatch == BATCH || done == n) {
			if (enc_op(e, OP_SETITEMS) < 0)
				return -1;
			inbatch = 0;
		}
	}
	/* the dict cannot change size here (no Python code runs), but be
	 * exact about what was written */
	if (done != n)
		return 0;
	return 1;
}

/* A set: EMPTY_SET, then MARK ... ADDITEMS batches; a frozenset: MARK
 * items FROZENSET.  Iterating a set of exact types runs no Python code. */
static int
enc_set(struct enc *e, PyObject *o, int frozen, int depth)
{
	Py_ssize_t n = PySet_GET_SIZE(o), i = 0, k;
	PyObject *it, *item, **items;
	int r;

	if (n == 0) {
		if (frozen)
			return enc_op(e, OP_MARK) < 0 || enc_op(e, OP_FROZENSET) < 0 ?
			    -1 : 1;
		return enc_op(e, OP_EMPTY_SET) < 0 ? -1 : 1;
	}
	if ((items = PyMem_Malloc((size_t)n * sizeof *items)) == NULL) {
		return -1;
	}
	if ((it = PyObject_GetIter(o)) == NULL) {
		PyMem_Free(items);
		return -1;
	}
	while (i < n && (item = PyIter_Next(it)) != NULL) {
		items[i++] = item;   /* the set keeps it alive */
		Py_DECREF(item);
	}
	Py_DECREF(it);
	if (PyErr_Occurred()) {
		PyMem_Free(items);
		return -1;
	}
	if (frozen) {
		r = enc_op(e, OP_MARK) < 0 ? -1 : 1;
		for (k = 0; r > 0 && k < i; k++)
			r = enc_obj(e, items[k], depth);
		if (r > 0)
			r = enc_op(e, OP_FROZENSET) < 0 ? -1 : 1;
	} else
		r = enc_op(e, OP_EMPTY_SET) < 0 ? -1 :
		    enc_items(e, items, i, 0, OP_ADDITEMS, depth);
	PyMem_Free(items);
	return r;
}

static int
enc_tuple(struct enc *e, PyObject *o, int depth)
{
	Py_ssize_t n = PyTuple_GET_SIZE(o), i;
	static const int small[] = {OP_EMPTY_TUPLE, OP_TUPLE1, OP_TUPLE2,
	    OP_TUPLE3};
	int r;

	if (n > 3 && enc_op(e, OP_MARK) < 0)
		return -1;
	for (i = 0; i < n; i++)
		if ((r = enc_obj(e, PyTuple_GET_ITEM(o, i), depth)) <= 0)
			return r;
	return enc_op(e, n <= 3 ? small[n] : OP_TUPLE) < 0 ? -1 : 1;
}

/* 1 written, 0 not plain, -1 out of memory. */
static int
enc_obj(struct enc *e, PyObject *o, int depth)
{
	PyTypeObject *tp = Py_TYPE(o);
	PyObject *key;
	int r;

	if (o == Py_None)
		return enc_op(e, OP_NONE) < 0 ? -1 : 1;
	if (o == Py_True || o == Py_False)
		return enc_op(e, o == Py_True ? OP_NEWTRUE : OP_NEWFALSE) < 0 ?
		    -1 : 1;
	if (tp == &PyUnicode_Type)
		return enc_str(e, o);
	if (tp == &PyLong_Type)
		return enc_int(e, o);
	if (tp == &PyFloat_Type)
		return enc_float(e, o);
	if (tp == &PyBytes_Type)
		return enc_bytes(e, o);
	if (tp == &PyByteArray_Type)
		return enc_bytearray(e, o);
	if (tp != &PyDict_Type && tp != &PyList_Type && tp != &PyTuple_Type &&
	    tp != &PySet_Type && tp != &PyFrozenSet_Type)
		return 0;
	if (depth >= PYENC_DEPTH)
		return 0;
	if (o != e->root && (key = pyidmap_key(e->idmap, o)) != NULL)
		return enc_ref(e, key);    /* another entry's */
	/* () is a singleton the stdlib pickler does not memoize either */
	if ((tp != &PyTuple_Type || PyTuple_GET_SIZE(o) > 0) &&
	    (r = enc_seen(e, o)) <= 0)
		return r;
	if (tp == &PyDict_Type)
		return enc_dict(e, o, depth + 1);
	if (tp == &PyTuple_Type)
		return enc_tuple(e, o, depth + 1);
	if (tp == &PyList_Type) {
		if (enc_op(e, OP_EMPTY_LIST) < 0)
			return -1;
		/* no Python code runs: the list's array stays put */
		return enc_items(e, PySequence_Fast_ITEMS(o),
		    PyList_GET_SIZE(o), OP_APPEND, OP_APPENDS, depth + 1);
	}
	return enc_set(e, o, tp == &PyFrozenSet_Type, depth + 1);
}

/* keep: the out-of-band objects of e as a new list in *oob (NULL when
 * there are none); else *oob = NULL.  e's references go to the list or are
 * dropped.  0, or -1 with an exception. */
static int
enc_oob_list(struct enc *e, int keep, PyObject **oob)
{
	PyObject *l = NULL;
	size_t i;
	int rc = 0;

	if (keep && e->noob > 0) {
		if ((l = PyList_New((Py_ssize_t)e->noob)) == NULL)
			rc = -1;
		for (i = 0; l != NULL && i < e->noob; i++)
			PyList_SET_ITEM(l, (Py_ssize_t)i, e->oob[i]); /* stolen */
	}
	for (i = 0; l == NULL && i < e->noob; i++)
		Py_DECREF(e->oob[i]);
	PyMem_Free(e->oob);
	if (oob != NULL)
		*oob = l;
	return rc;
}

int
pyenc_plain(PyObject *obj, PyObject *idmap, char **buf, size_t *len,
            size_t *cap, PyObject **oob, PyObject **refs)
{
	struct enc e;
	size_t start = *len;
	int r;

	memset(&e, 0, sizeof e);
	e.want_oob = oob != NULL;
	e.want_refs = refs != NULL;
	if (refs != NULL)
		*refs = NULL;
	e.buf = *buf;
	e.len = *len;
	e.cap = *cap;
	e.idmap = idmap;
	e.root = obj;
	e.seen = e.seen_small;
	e.capseen = sizeof e.seen_small / sizeof e.seen_small[0];
	if (enc_room(&e, 2) == 0) {
		e.buf[e.len++] = (char)OP_PROTO;
		e.buf[e.len++] = 5;
		r = enc_obj(&e, obj, 0);
		if (r > 0)
			r = enc_op(&e, OP_STOP) < 0 ? -1 : 1;
	} else
		r = -1;
	if (e.seen != e.seen_small)
		PyMem_Free(e.seen);
	*buf = e.buf;
	*cap = e.cap;
	/* Python objects may be made now: the pickle is written */
	if (enc_oob_list(&e, r > 0, oob) < 0)
		r = -1;
	if (r > 0 && e.nrefs > 0 &&
	    (*refs = pyrefs_blob(e.refs, e.nrefs)) == NULL) {
		if (oob != NULL)
			Py_CLEAR(*oob);
		r = -1;
	}
	PyMem_Free(e.refs);
	if (r > 0) {
		*len = e.len;
		return 1;
	}
	*len = start;
	if (r < 0) {
		if (!PyErr_Occurred())
			PyErr_NoMemory();
		return -1;
	}
	return 0;
}

/* plain_dumps(obj) -> bytes, or None when obj is not plain data (tests:
 * what the checkpoint's fast path writes for obj, no entry references). */
PyObject *
pyenc_plain_dumps(PyObject *self, PyObject *obj)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	PyObject *res;
	int r;

	(void)self;
	r = pyenc_plain(obj, NULL, &buf, &len, &cap, NULL, NULL);
	if (r < 0)
		res = NULL;
	else if (r == 0)
		res = Py_NewRef(Py_None);
	else
		res = PyBytes_FromStringAndSize(buf, (Py_ssize_t)len);
	PyMem_Free(buf);
	return res;
}
