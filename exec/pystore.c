/*
 * pystore.c - the store side of the _pyshelfd module: reading one entry,
 * listing keys, handle ids, digests and out-of-band buffer framing.
 * Checkpoints are written by pybatch.c.
 *
 * All functions here are called with the GIL held.  Store transactions
 * never call back into Python code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "xxh.h"

#include "exec.h"
#include "pyexec.h"

PyObject *pystore_StoreError;   /* the store failed (full, I/O) */
PyObject *pystore_CorruptEntry; /* a record failed its digest */
PyObject *pystore_StoreFull;    /* StoreError: map_max reached, disk full */

/* A parsed entry key. */
typedef struct {
	uint8_t kind;          /* STORE_KIND_* */
	const char *name;      /* borrowed from the str */
	Py_ssize_t name_len;
	uint64_t handle;
} pykey;

static PyObject *pystore_g;   /* "g", made once */

/* Convert ("g", name) / ("h", id) arguments into k. */
static int
pystore_key(PyObject *kind, PyObject *key, pykey *k)
{
	const char *ks = PyUnicode_AsUTF8(kind);

	if (ks == NULL)
		return -1;
	memset(k, 0, sizeof *k);
	if (ks[0] == 'g' && ks[1] == '\0') {
		k->kind = STORE_KIND_GLOBAL;
		if ((k->name = PyUnicode_AsUTF8AndSize(key, &k->name_len)) == NULL)
			return -1;
		if (k->name_len == 0 || k->name_len > STORE_KEY_MAX) {
			PyErr_Format(PyExc_ValueError, "global name of %zd bytes: "
			    "must be 1 to %d", k->name_len, STORE_KEY_MAX);
			return -1;
		}
		return 0;
	}
	if (ks[0] == 'h' && ks[1] == '\0') {
		k->kind = STORE_KIND_HANDLE;
		k->handle = PyLong_AsUnsignedLongLong(key);
		return PyErr_Occurred() ? -1 : 0;
	}
	PyErr_Format(PyExc_ValueError, "entry kind must be 'g' or 'h', not %R",
	    kind);
	return -1;
}

/* Raise StoreError for rc, naming what was being done. */
static PyObject *
pystore_raise(int rc, const char *what)
{
	PyErr_Format(rc == STORE_E_CORRUPT ? pystore_CorruptEntry :
	    rc == STORE_E_FULL ? pystore_StoreFull : pystore_StoreError,
	    "%s: %s", what, store_strerror(rc));
	return NULL;
}

/* In a child forked by shipped code the store is the parent's: LMDB must
 * never be used after a fork (the reader table and the write lock are the
 * parent's), so every entry point refuses there.  1 with an exception. */
int
pystore_refuse_child(int exact)
{
	/* reads take the atfork flag only (a getpid() per entry loaded adds
	 * up); commits compare the pid as well */
	if (!(exact ? worker_in_child() : the_worker->forked))
		return 0;
	PyErr_SetString(PyExc_RuntimeError, "pyshelf: the workspace's store "
	    "cannot be used in a process forked by shipped code (load the "
	    "globals the child needs before forking; the child's changes are "
	    "never persisted)");
	return 1;
}

/* Arguments and results of one entry read. */
struct get_arg {
	pykey k;               /* which entry */
	int mode;              /* 0 full, 2 flags (header only), 3 refs,
	                          4 flags and type name (digest unchecked),
	                          5 check (digest checked, no payload) */
	int rc;                /* store result */
	PyObject *result;      /* new reference */
};

static int
pystore_get_txn(store_txn *t, void *arg)
{
	struct get_arg *ga = arg;
	store_record r;
	PyObject *payload = NULL, *digest = NULL;

	if (ga->mode == 2) {   /* the key and the header's flags only */
		uint16_t flags = 0;
		int rc = entry_exists(t, the_worker->sess.id, ga->k.kind,
		    ga->k.name, (size_t)ga->k.name_len, ga->k.handle, &flags);
		ga->rc = rc == 0 ? STORE_E_NOTFOUND : rc < 0 ? rc : 0;
		if (rc == 1)
			ga->result = PyLong_FromLong(flags);
		return 0;
	}
	ga->rc = (ga->mode == 4 ? entry_get_nocheck : entry_get)(t,
	    the_worker->sess.id, ga->k.kind, ga->k.name,
	    (size_t)ga->k.name_len, ga->k.handle, &r);
	if (ga->rc != 0)
		return 0;
	if (ga->mode == 5) {
		/* a volatile record's payload is its reason (short text) */
		int vol = (r.flags & STORE_FLAG_VOLATILE) != 0;
		ga->result = Py_BuildValue("(iNy#N)", r.flags,
		    PyUnicode_DecodeUTF8(r.type_name, r.type_len, "replace"),
		    (const char *)r.refs, (Py_ssize_t)r.refs_len,
		    vol ? PyUnicode_DecodeUTF8((const char *)r.payload,
		    (Py_ssize_t)r.payload_len, "replace") : Py_NewRef(Py_None));
		return 0;
	}
	if (ga->mode == 4) {
		ga->result = Py_BuildValue("(iN)", r.flags,
		    PyUnicode_DecodeUTF8(r.type_name, r.type_len, "replace"));
		return 0;
	}
	if (ga->mode == 3) {
		ga->result = PyBytes_FromStringAndSize((const char *)r.refs,
		    (Py_ssize_t)r.refs_len);
		return 0;
	}
	/* one copy out of the map, into a writable buffer that out-of-band
	 * pickle buffers (numpy arrays) can keep using */
	payload = PyByteArray_FromStringAndSize((const char *)r.payload,
	    (Py_ssize_t)r.payload_len);
	if (payload == NULL)
		goto error;
	digest = pystore_content_digest(r.payload, r.payload_len, NULL,
	    r.flags, r.refs, r.refs_len);
	if (digest == NULL)
		goto error;
	ga->result = Py_BuildValue("iis#NNy#", r.pickler, r.flags, r.type_name,
	    (Py_ssize_t)r.type_len, payload, digest, (const char *)r.refs,
	    (Py_ssize_t)r.refs_len);
	return 0;
error:
	Py_XDECREF(payload);
	Py_XDECREF(digest);
	return 0;
}

/* Shared body of get/get_refs/flags/head. */
static PyObject *
pystore_get_common(PyObject *args, int mode)
{
	PyObject *kind, *key;
	struct get_arg ga;
	int rc;

	if (!PyArg_ParseTuple(args, "OO", &kind, &key))
		return NULL;
	memset(&ga, 0, sizeof ga);
	ga.mode = mode;
	if (pystore_key(kind, key, &ga.k) < 0 || pystore_refuse_child(0))
		return NULL;
	if ((rc = store_read(the_worker->st, pystore_get_txn, &ga)) != 0)
		return pystore_raise(rc, "reading an entry");
	if (ga.rc == STORE_E_NOTFOUND)
		Py_RETURN_NONE;
	if (ga.rc == STORE_E_CORRUPT) {
		PyErr_Format(pystore_CorruptEntry, "entry %s %R is corrupt (%s); "
		    "it was not loaded",
		    ga.k.kind == STORE_KIND_GLOBAL ? "global" : "handle", key,
		    mode == 0 || mode == 3 || mode == 5 ?
		    "its digest does not match" : "its layout is broken");
		return NULL;
	}
	if (ga.rc != 0)
		return pystore_raise(ga.rc, "reading an entry");
	return ga.result; /* NULL with an exception when building failed */
}

/* get(kind, key) -> (pickler, flags, type_name, payload, digest, refs) |
 * None */
static PyObject *
pystore_get(PyObject *self, PyObject *args)
{
	return pystore_get_common(args, 0);
}

/* get_refs(kind, key) -> the record's refs blob | None */
static PyObject *
pystore_get_refs(PyObject *self, PyObject *args)
{
	return pystore_get_common(args, 3);
}

/* head(kind, key) -> (flags, type name) | None: the record's layout only,
 * its digest unchecked (no pass over the payload) */
static PyObject *
pystore_head(PyObject *self, PyObject *args)
{
	return pystore_get_common(args, 4);
}

/* check(kind, key) -> (flags, type name, refs, volatile reason or None) |
 * None: the record read and its digest checked (CorruptEntry when it
 * does not match), its pickle neither copied nor run */
static PyObject *
pystore_check(PyObject *self, PyObject *args)
{
	return pystore_get_common(args, 5);
}

/* flags(kind, key) -> the record's flags (header only, unchecked) | None */
static PyObject *
pystore_flags(PyObject *self, PyObject *args)
{
	return pystore_get_common(args, 2);
}

/* Collects keys for list_keys. */
static int
pystore_list_one(const store_key *k, void *arg)
{
	PyObject *list = arg, *item;
	int rc;

	if (k->kind == STORE_KIND_GLOBAL)
		item = PyUnicode_DecodeUTF8(k->name, (Py_ssize_t)k->name_len,
		    "surrogateescape");
	else
		item = PyLong_FromUnsignedLongLong(k->handle);
	if (item == NULL)
		return -1;
	rc = PyList_Append(list, item);
	Py_DECREF(item);
	return rc;
}

struct list_arg {
	uint8_t kind;
	PyObject *list;
};

static int
pystore_list_txn(store_txn *t, void *arg)
{
	struct list_arg *la = arg;

	return entry_list(t, the_worker->sess.id, la->kind, pystore_list_one,
	    la->list);
}

/* list_keys(kind) -> list of names or handle ids */
static PyObject *
pystore_list_keys(PyObject *self, PyObject *kind)
{
	struct list_arg la;
	const char *ks = PyUnicode_AsUTF8(kind);
	int rc;

	if (ks == NULL || pystore_refuse_child(0))
		return NULL;
	la.kind = ks[0] == 'g' ? STORE_KIND_GLOBAL : STORE_KIND_HANDLE;
	if ((la.list = PyList_New(0)) == NULL)
		return NULL;
	rc = store_read(the_worker->st, pystore_list_txn, &la);
	if (rc != 0) {
		Py_DECREF(la.list);
		if (PyErr_Occurred())
			return NULL;
		return pystore_raise(rc, "listing entries");
	}
	return la.list;
}

/* The entry key tuple ("g", name) / ("h", id) of k; new reference. */
static PyObject *
pystore_key_tuple(const store_key *k)
{
	if (k->kind == STORE_KIND_GLOBAL)
		return Py_BuildValue("(sN)", "g", PyUnicode_DecodeUTF8(k->name,
		    (Py_ssize_t)k->name_len, "surrogateescape"));
	return Py_BuildValue("(sN)", "h",
	    PyLong_FromUnsignedLongLong(k->handle));
}

/* Arguments and results of referrers(). */
struct referrers_arg {
	PyObject *targets;     /* list of keys or global names */
	PyObject *item;        /* the one being listed (borrowed) */
	PyObject *target;      /* its key, made for the first row (strong) */
	PyObject *out;         /* list of (target, referrer) */
};

/* Collects one referrer of ra->target. */
static int
pystore_referrer_one(const store_key *k, void *arg)
{
	struct referrers_arg *ra = arg;
	PyObject *rk, *pair;
	int rc;

	if (ra->target == NULL && (ra->target = PyUnicode_Check(ra->item) ?
	    Py_BuildValue("(sO)", "g", ra->item) : Py_NewRef(ra->item)) == NULL)
		return -1;
	if ((rk = pystore_key_tuple(k)) == NULL)
		return -1;
	pair = PyTuple_Pack(2, ra->target, rk);
	Py_DECREF(rk);
	if (pair == NULL)
		return -1;
	rc = PyList_Append(ra->out, pair);
	Py_DECREF(pair);
	return rc;
}

static int
pystore_referrers_txn(store_txn *t, void *arg)
{
	struct referrers_arg *ra = arg;
	Py_ssize_t i;
	int rc;

	for (i = 0; i < PyList_GET_SIZE(ra->targets); i++) {
		PyObject *key = PyList_GET_ITEM(ra->targets, i); /* borrowed */
		store_key sk;
		pykey pk;
		if (PyUnicode_Check(key))
			rc = pystore_key(pystore_g, key, &pk);
		else if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
			PyErr_SetString(PyExc_TypeError, "an entry key is "
			    "(kind, key), or a global's name");
			return -1;
		} else
			rc = pystore_key(PyTuple_GET_ITEM(key, 0),
			    PyTuple_GET_ITEM(key, 1), &pk);
		if (rc < 0) {
			/* a name that cannot be a store key has no rows */
			if (!PyErr_ExceptionMatches(PyExc_ValueError))
				return -1;
			PyErr_Clear();
			continue;
		}
		memset(&sk, 0, sizeof sk);
		sk.kind = pk.kind;
		sk.name = pk.name;
		sk.name_len = (size_t)pk.name_len;
		sk.handle = pk.handle;
		ra->item = key;
		rc = refs_list(t, the_worker->sess.id, &sk, pystore_referrer_one,
		    ra);
		Py_CLEAR(ra->target);
		/* a damaged row must not stop checkpoints: the rows of this
		 * target from it on are passed over (pyshelf-dump --check says
		 * which) */
		if (rc != 0 && rc != STORE_E_CORRUPT)
			return rc;
	}
	return 0;
}

/* referrers(targets) -> [(target, referrer)]: the records the store's
 * reverse index says may refer to each target, a key or a global's name
 * (rows may be stale: check the referrer's refs blob).  A target whose
 * name cannot be a store key (too long, not UTF-8) has none; a damaged
 * row ends its target's list. */
static PyObject *
pystore_referrers(PyObject *self, PyObject *targets)
{
	struct referrers_arg ra;
	int rc;

	if (!PyList_Check(targets)) {
		PyErr_SetString(PyExc_TypeError, "referrers() needs a list");
		return NULL;
	}
	if (pystore_refuse_child(0))
		return NULL;
	if (pystore_g == NULL &&
	    (pystore_g = PyUnicode_InternFromString("g")) == NULL)
		return NULL;
	ra.targets = targets;
	ra.item = ra.target = NULL;
	if ((ra.out = PyList_New(0)) == NULL)
		return NULL;
	rc = store_read(the_worker->st, pystore_referrers_txn, &ra);
	if (rc != 0) {
		Py_DECREF(ra.out);
		if (PyErr_Occurred())
			return NULL;
		return pystore_raise(rc, "reading the references index");
	}
	return ra.out;
}

static int
pystore_refs_any_txn(store_txn *t, void *arg)
{
	return refs_any(t, the_worker->sess.id, arg);
}

/* refs_any() -> whether the session has rows in the references index */
static PyObject *
pystore_refs_any(PyObject *self, PyObject *unused)
{
	int any = 0, rc;

	if (pystore_refuse_child(0))
		return NULL;
	if ((rc = store_read(the_worker->st, pystore_refs_any_txn, &any)) != 0)
		return pystore_raise(rc, "reading the references index");
	return PyBool_FromLong(any);
}

/* room() -> (map_max, disk_free): the store's size limit (--map-max) and
 * the bytes free on its file system (-1 when statvfs fails), so that a
 * full store's message can say which of the two ran out. */
static PyObject *
pystore_room(PyObject *self, PyObject *unused)
{
	struct statvfs sv;
	size_t map_max = 0;
	long long disk_free = -1;

	(void)store_usage(the_worker->st, NULL, NULL, &map_max);
	if (statvfs(store_path(the_worker->st), &sv) == 0)
		disk_free = (long long)sv.f_bavail * (long long)sv.f_frsize;
	return Py_BuildValue("KL", (unsigned long long)map_max, disk_free);
}

/* next_handle() -> a fresh handle id of this session */
static PyObject *
pystore_next_handle(PyObject *self, PyObject *unused)
{
	uint64_t id = the_worker->sess.next_handle++;

	the_worker->sess_dirty = 1;
	return PyLong_FromUnsignedLongLong(id);
}

/* peek_next_handle() -> the id the next handle will get */
static PyObject *
pystore_peek_next_handle(PyObject *self, PyObject *unused)
{
	return PyLong_FromUnsignedLongLong(the_worker->sess.next_handle);
}

/* session_dirty() -> whether the session record needs writing */
static PyObject *
pystore_session_dirty(PyObject *self, PyObject *unused)
{
	return PyBool_FromLong(the_worker->sess_dirty);
}

/*
 * The content digest that decides whether an entry changed: XXH3-128 of the
 * payload (data[0..len), then each buffer of parts, a sequence or NULL), the
 * flags (u16 big-endian) and the refs blob; 16 bytes, high half first.
 */
int
pystore_content_digest_raw(const void *data, size_t len, PyObject *parts,
                           unsigned flags, const void *refs, size_t refs_len,
                           uint8_t out[16])
{
	XXH3_state_t st;
	XXH128_hash_t h;
	uint8_t fb[2], small[512];
	Py_ssize_t i;

	if (parts == NULL && len + 2 + refs_len <= sizeof small) {
		/* most entries: one shot over a copy is faster than the
		 * streaming state, and gives the same digest */
		if (len > 0)
			memcpy(small, data, len);
		wire_be16_put(small + len, (uint16_t)flags);
		if (refs_len > 0)
			memcpy(small + len + 2, refs, refs_len);
		h = XXH3_128bits(small, len + 2 + refs_len);
		goto out;
	}
	XXH3_128bits_reset(&st);
	if (len > 0)
		XXH3_128bits_update(&st, data, len);
	for (i = 0; parts != NULL && i < PySequence_Fast_GET_SIZE(parts); i++) {
		Py_buffer v;
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(parts, i), &v,
		    PyBUF_SIMPLE) < 0)
			return -1;
		XXH3_128bits_update(&st, v.buf, (size_t)v.len);
		PyBuffer_Release(&v);
	}
	wire_be16_put(fb, (uint16_t)flags);
	XXH3_128bits_update(&st, fb, 2);
	XXH3_128bits_update(&st, refs, refs_len);
	h = XXH3_128bits_digest(&st);
out:
	wire_be64_put(out, h.high64);
	wire_be64_put(out + 8, h.low64);
	return 0;
}

/* The same as a 16-byte bytes object. */
PyObject *
pystore_content_digest(const void *data, size_t len, PyObject *parts,
                       unsigned flags, const void *refs, size_t refs_len)
{
	uint8_t out[16];

	if (pystore_content_digest_raw(data, len, parts, flags, refs, refs_len,
	    out) < 0)
		return NULL;
	return PyBytes_FromStringAndSize((const char *)out, 16);
}

/* digest(parts, flags, refs) -> 16 bytes: the content digest of a payload
 * given in pieces. */
static PyObject *
pystore_digest(PyObject *self, PyObject *args)
{
	PyObject *parts, *fast, *res;
	Py_buffer refs;
	unsigned flags;

	if (!PyArg_ParseTuple(args, "OIy*:digest", &parts, &flags, &refs))
		return NULL;
	if ((fast = PySequence_Fast(parts, "parts must be a sequence")) == NULL) {
		PyBuffer_Release(&refs);
		return NULL;
	}
	res = pystore_content_digest(NULL, 0, fast, flags, refs.buf,
	    (size_t)refs.len);
	Py_DECREF(fast);
	PyBuffer_Release(&refs);
	return res;
}

/* oob_header(pickle_len, [buffer lengths]) -> bytes:
 * u32 count, u64 pickle length, u64 length per buffer (all big-endian). */
static PyObject *
pystore_oob_header(PyObject *self, PyObject *args)
{
	unsigned long long plen;
	PyObject *lens, *fast, *res = NULL;
	Py_ssize_t i, n;
	uint8_t *p;

	if (!PyArg_ParseTuple(args, "KO:oob_header", &plen, &lens))
		return NULL;
	if ((fast = PySequence_Fast(lens, "lengths must be a sequence")) == NULL)
		return NULL;
	n = PySequence_Fast_GET_SIZE(fast);
	if ((res = PyBytes_FromStringAndSize(NULL, 12 + 8 * n)) == NULL)
		goto out;
	p = (uint8_t *)PyBytes_AS_STRING(res);
	wire_be32_put(p, (uint32_t)n);
	wire_be64_put(p + 4, plen);
	for (i = 0; i < n; i++) {
		unsigned long long l = PyLong_AsUnsignedLongLong(
		    PySequence_Fast_GET_ITEM(fast, i));
		if (PyErr_Occurred()) {
			Py_CLEAR(res);
			goto out;
		}
		wire_be64_put(p + 12 + 8 * i, l);
	}
out:
	Py_DECREF(fast);
	return res;
}

/* oob_split(memoryview) -> (pickle view, [buffer views]) */
static PyObject *
pystore_oob_split(PyObject *self, PyObject *mv)
{
	Py_buffer v;
	PyObject *list = NULL, *pk = NULL, *res = NULL;
	const uint8_t *p;
	uint64_t n, plen, off, i, l;

	if (PyObject_GetBuffer(mv, &v, PyBUF_SIMPLE) < 0)
		return NULL;
	p = v.buf;
	if (v.len < 12)
		goto corrupt;
	n = wire_be32_get(p);
	plen = wire_be64_get(p + 4);
	if (n > ((uint64_t)v.len - 12) / 8)
		goto corrupt;
	off = 12 + 8 * n;
	if (plen > (uint64_t)v.len - off)
		goto corrupt;
	if ((pk = PySequence_GetSlice(mv, (Py_ssize_t)off,
	    (Py_ssize_t)(off + plen))) == NULL)
		goto error;
	off += plen;
	if ((list = PyList_New(0)) == NULL)
		goto error;
	for (i = 0; i < n; i++) {
		PyObject *b;
		l = wire_be64_get(p + 12 + 8 * i);
		if (l > (uint64_t)v.len - off)
			goto corrupt;
		b = PySequence_GetSlice(mv, (Py_ssize_t)off,
		    (Py_ssize_t)(off + l));
		if (b == NULL || PyList_Append(list, b) < 0) {
			Py_XDECREF(b);
			goto error;
		}
		Py_DECREF(b);
		off += l;
	}
	res = PyTuple_Pack(2, pk, list);
	goto error;
corrupt:
	PyErr_SetString(pystore_CorruptEntry, "out-of-band buffer table "
	    "runs past the payload");
error:
	PyBuffer_Release(&v);
	Py_XDECREF(pk);
	Py_XDECREF(list);
	return res;
}

/* dict_version(d) -> the dict's version tag: changes on every write. */
static PyObject *
pystore_dict_version(PyObject *self, PyObject *d)
{
	if (!PyDict_Check(d)) {
		PyErr_Format(PyExc_TypeError, "dict_version() needs a dict, not "
		    "%.200s", Py_TYPE(d)->tp_name);
		return NULL;
	}
	return PyLong_FromUnsignedLongLong(pymod_dict_version(d));
}

PyMethodDef pystore_methods[] = {
	{"get", pystore_get, METH_VARARGS, "get(kind, key)"},
	{"get_refs", pystore_get_refs, METH_VARARGS, "get_refs(kind, key)"},
	{"flags", pystore_flags, METH_VARARGS, "flags(kind, key)"},
	{"check", pystore_check, METH_VARARGS, "check(kind, key) -> (flags, "
	    "type name, refs, volatile reason or None)"},
	{"head", pystore_head, METH_VARARGS, "head(kind, key) -> (flags, "
	 "type name) | None, the digest unchecked"},
	{"list_keys", pystore_list_keys, METH_O, "list_keys(kind)"},
	{"referrers", pystore_referrers, METH_O,
	 "referrers(targets) -> [(target, referrer)]"},
	{"refs_any", pystore_refs_any, METH_NOARGS, "refs_any() -> bool"},
	{"room", pystore_room, METH_NOARGS, "room() -> (map_max, disk_free)"},
	{"next_handle", pystore_next_handle, METH_NOARGS, "next handle id"},
	{"session_dirty", pystore_session_dirty, METH_NOARGS, ""},
	{"peek_next_handle", pystore_peek_next_handle, METH_NOARGS, ""},
	{"digest", pystore_digest, METH_VARARGS, "digest(parts, flags, refs)"},
	{"oob_header", pystore_oob_header, METH_VARARGS, ""},
	{"oob_split", pystore_oob_split, METH_O, ""},
	{"dict_version", pystore_dict_version, METH_O, ""},
	{NULL, NULL, 0, NULL}
};
