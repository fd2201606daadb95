/*
 * pystore.c - the store side of the _pyshelfd module: reading one entry,
 * listing keys, handle ids, digests and out-of-band buffer framing.
 * Checkpoints are written by pybatch.c and pycommit.c.
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
#include <sys/uio.h>

#include "wire.h"
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
	if (!pystream_in_child_of(pymodule_ctx(), exact))
		return 0;
	PyErr_SetString(PyExc_RuntimeError, "pyshelf: the workspace's store "
	    "cannot be used in a process forked by shipped code (load the "
	    "globals the child needs before forking; the child's changes are "
	    "never persisted)");
	return 1;
}

/* The module's context, when it has a store (1 with an exception when
 * not: _pyshelfd used before pymodule_start). */
static const struct pyctx *
pystore_ctx(void)
{
	const struct pyctx *c = pymodule_ctx();

	if (c->st != NULL && c->sess != NULL)
		return c;
	PyErr_SetString(PyExc_RuntimeError, "_pyshelfd has no store (the "
	    "module was not started)");
	return NULL;
}

/* Arguments and results of one entry read.  The transaction copies what
 * it reads into here (C memory, and the payload into a bytearray made
 * before it began); the Python objects are built after it ended. */
struct get_arg {
	const uint8_t *sid;    /* the session */
	pykey k;               /* which entry */
	int mode;              /* 0 full, 2 flags (header only), 3 refs,
	                          4 flags and type name (digest unchecked),
	                          5 check (digest checked, no payload) */
	int rc;                /* store result */
	int nomem;             /* our copy failed (an exception is set for
	                          the bytearray's) */
	uint8_t pickler;       /* the record's, copied out */
	uint16_t flags;
	char *copy;            /* type name, refs, reason: small, or
	                          malloc'd when they do not fit */
	char small[256];
	size_t type_len, refs_len, text_len;
	PyObject *payload;     /* mode 0: the bytearray filled (strong) */
};

static int
pystore_get_txn(store_txn *t, void *arg)
{
	struct get_arg *ga = arg;
	store_record r;
	size_t text_len;

	if (ga->mode == 2) {   /* the key and the header's flags only */
		int rc = entry_exists(t, ga->sid, ga->k.kind, ga->k.name,
		    (size_t)ga->k.name_len, ga->k.handle, &ga->flags);
		ga->rc = rc == 0 ? STORE_E_NOTFOUND : rc < 0 ? rc : 0;
		return 0;
	}
	ga->rc = (ga->mode == 4 ? entry_get_nocheck : entry_get)(t, ga->sid,
	    ga->k.kind, ga->k.name, (size_t)ga->k.name_len, ga->k.handle, &r);
	if (ga->rc != 0)
		return 0;
	ga->pickler = r.pickler;
	ga->flags = r.flags;
	ga->type_len = r.type_len;
	ga->refs_len = r.refs_len;
	/* a volatile record's payload is its reason (short text) */
	text_len = ga->mode == 5 && (r.flags & STORE_FLAG_VOLATILE) ?
	    r.payload_len : 0;
	ga->text_len = text_len;
	ga->copy = ga->small;
	if (r.type_len + r.refs_len + text_len + 1 > sizeof ga->small &&
	    (ga->copy = malloc(r.type_len + r.refs_len + text_len + 1)) ==
	    NULL) {
		ga->nomem = 1;
		return 0;
	}
	memcpy(ga->copy, r.type_name, r.type_len);
	if (r.refs_len > 0)
		memcpy(ga->copy + r.type_len, r.refs, r.refs_len);
	if (text_len > 0)
		memcpy(ga->copy + r.type_len + r.refs_len, r.payload, text_len);
	if (ga->mode != 0)
		return 0;
	/* one copy out of the map, into a writable buffer that out-of-band
	 * pickle buffers (numpy arrays) can keep using: the bytearray was
	 * made before the transaction; growing it is an allocation only (a
	 * bytearray is not tracked by the garbage collector), so no Python
	 * code runs in here */
	if (PyByteArray_Resize(ga->payload, (Py_ssize_t)r.payload_len) < 0) {
		ga->nomem = 1;
		return 0;
	}
	if (r.payload_len > 0)
		memcpy(PyByteArray_AS_STRING(ga->payload), r.payload,
		    r.payload_len);
	return 0;
}

/* The result of a read of mode ga->mode, built from what it copied out;
 * new reference or NULL. */
static PyObject *
pystore_get_result(struct get_arg *ga)
{
	const char *tn = ga->copy, *refs = ga->copy + ga->type_len;
	PyObject *rec, *item;

	switch (ga->mode) {
	case 2:
		return PyLong_FromLong(ga->flags);
	case 3:
		return PyBytes_FromStringAndSize(refs, (Py_ssize_t)ga->refs_len);
	case 4:
		return pyfields_named(pyfields_Head, Py_BuildValue("(iN)",
		    ga->flags, PyUnicode_DecodeUTF8(tn, (Py_ssize_t)ga->type_len,
		    "replace")));
	case 5:
		return pyfields_named(pyfields_Check, Py_BuildValue("(iNy#N)",
		    ga->flags, PyUnicode_DecodeUTF8(tn, (Py_ssize_t)ga->type_len,
		    "replace"), refs, (Py_ssize_t)ga->refs_len,
		    ga->flags & STORE_FLAG_VOLATILE ? PyUnicode_DecodeUTF8(
		    refs + ga->refs_len, (Py_ssize_t)ga->text_len, "replace") :
		    Py_NewRef(Py_None)));
	}
	/* the hot one (every entry loaded): items set in place */
	if ((rec = PyStructSequence_New(pyfields_Record)) == NULL)
		return NULL;
	PyStructSequence_SET_ITEM(rec, 3, Py_NewRef(ga->payload));
	if ((item = PyLong_FromLong(ga->pickler)) == NULL)
		goto error;
	PyStructSequence_SET_ITEM(rec, 0, item);
	if ((item = PyLong_FromLong(ga->flags)) == NULL)
		goto error;
	PyStructSequence_SET_ITEM(rec, 1, item);
	if ((item = PyUnicode_FromStringAndSize(tn,
	    (Py_ssize_t)ga->type_len)) == NULL)
		goto error;
	PyStructSequence_SET_ITEM(rec, 2, item);
	if ((item = pystore_content_digest(PyByteArray_AS_STRING(ga->payload),
	    (size_t)PyByteArray_GET_SIZE(ga->payload), NULL, ga->flags, refs,
	    ga->refs_len)) == NULL)
		goto error;
	PyStructSequence_SET_ITEM(rec, 4, item);
	if ((item = PyBytes_FromStringAndSize(refs,
	    (Py_ssize_t)ga->refs_len)) == NULL)
		goto error;
	PyStructSequence_SET_ITEM(rec, 5, item);
	return rec;
error:
	Py_DECREF(rec);  /* unset items are NULL: the dealloc skips them */
	return NULL;
}

/* Shared body of get/get_refs/flags/head. */
static PyObject *
pystore_get_common(PyObject *args, int mode)
{
	const struct pyctx *c;
	PyObject *kind, *key, *res = NULL;
	struct get_arg ga;
	int rc;

	if (!PyArg_ParseTuple(args, "OO", &kind, &key))
		return NULL;
	memset(&ga, 0, sizeof ga);
	ga.mode = mode;
	if (pystore_key(kind, key, &ga.k) < 0 || pystore_refuse_child(0) ||
	    (c = pystore_ctx()) == NULL)
		return NULL;
	ga.sid = c->sess->id;
	if (mode == 0 && (ga.payload = PyByteArray_FromStringAndSize(NULL,
	    0)) == NULL)
		return NULL;
	if ((rc = store_read(c->st, pystore_get_txn, &ga)) != 0) {
		pystore_raise(rc, "reading an entry");
		goto out;
	}
	if (ga.rc == STORE_E_NOTFOUND) {
		res = Py_NewRef(Py_None);
		goto out;
	}
	if (ga.rc == STORE_E_CORRUPT) {
		PyErr_Format(pystore_CorruptEntry, "entry %s %R is corrupt (%s); "
		    "it was not loaded",
		    ga.k.kind == STORE_KIND_GLOBAL ? "global" : "handle", key,
		    mode == 0 || mode == 3 || mode == 5 ?
		    "its digest does not match" : "its layout is broken");
		goto out;
	}
	if (ga.rc != 0) {
		pystore_raise(ga.rc, "reading an entry");
		goto out;
	}
	if (ga.nomem) {
		if (!PyErr_Occurred())
			PyErr_NoMemory();
		goto out;
	}
	res = pystore_get_result(&ga);
out:
	if (ga.copy != ga.small)
		free(ga.copy);
	Py_XDECREF(ga.payload);
	return res;
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

/* Keys listed in a read transaction, copied out of it: the Python objects
 * are made after it ended.  Names are packed into one growing buffer. */
struct keylist {
	struct keyrow {
		uint8_t kind;
		uint64_t handle;       /* kind 'h' */
		size_t name_off, name_len; /* kind 'g': in names */
		size_t target;         /* referrers: index of the target */
	} *rows;
	size_t n, cap;
	char *names;
	size_t names_len, names_cap;
	size_t target;             /* the target rows are listed for */
	int nomem;                 /* a copy failed */
};

/* Copy k into kl; 0, or STORE_E_NOMEM with kl->nomem set (no exception:
 * inside a transaction). */
static int
pystore_keylist_add(const store_key *k, void *arg)
{
	struct keylist *kl = arg;
	struct keyrow *row;

	if (kl->n == kl->cap) {
		size_t cap = kl->cap ? 2 * kl->cap : 64;
		void *p = realloc(kl->rows, cap * sizeof *kl->rows);
		if (p == NULL) {
			kl->nomem = 1;
			return STORE_E_NOMEM;
		}
		kl->rows = p;
		kl->cap = cap;
	}
	row = &kl->rows[kl->n];
	row->kind = k->kind;
	row->handle = k->handle;
	row->target = kl->target;
	row->name_off = kl->names_len;
	row->name_len = k->kind == STORE_KIND_GLOBAL ? k->name_len : 0;
	if (row->name_len > kl->names_cap - kl->names_len) {
		size_t cap = kl->names_cap ? 2 * kl->names_cap : 1024;
		void *p;
		while (cap - kl->names_len < row->name_len)
			cap *= 2;
		if ((p = realloc(kl->names, cap)) == NULL) {
			kl->nomem = 1;
			return STORE_E_NOMEM;
		}
		kl->names = p;
		kl->names_cap = cap;
	}
	if (row->name_len > 0)
		memcpy(kl->names + kl->names_len, k->name, row->name_len);
	kl->names_len += row->name_len;
	kl->n++;
	return 0;
}

static void
pystore_keylist_free(struct keylist *kl)
{
	free(kl->rows);
	free(kl->names);
}

/* Row i's name (str) or handle id (int); new reference. */
static PyObject *
pystore_keylist_item(const struct keylist *kl, size_t i)
{
	const struct keyrow *row = &kl->rows[i];

	if (row->kind == STORE_KIND_GLOBAL)
		return PyUnicode_DecodeUTF8(kl->names + row->name_off,
		    (Py_ssize_t)row->name_len, "surrogateescape");
	return PyLong_FromUnsignedLongLong(row->handle);
}

struct list_arg {
	const uint8_t *sid;
	uint8_t kind;
	struct keylist kl;
};

static int
pystore_list_txn(store_txn *t, void *arg)
{
	struct list_arg *la = arg;

	return entry_list(t, la->sid, la->kind, pystore_keylist_add, &la->kl);
}

/* list_keys(kind) -> list of names or handle ids */
static PyObject *
pystore_list_keys(PyObject *self, PyObject *kind)
{
	const struct pyctx *c;
	struct list_arg la;
	const char *ks = PyUnicode_AsUTF8(kind);
	PyObject *list = NULL, *item;
	size_t i;
	int rc;

	if (ks == NULL || pystore_refuse_child(0) ||
	    (c = pystore_ctx()) == NULL)
		return NULL;
	memset(&la, 0, sizeof la);
	la.sid = c->sess->id;
	la.kind = ks[0] == 'g' ? STORE_KIND_GLOBAL : STORE_KIND_HANDLE;
	if ((rc = store_read(c->st, pystore_list_txn, &la)) != 0) {
		if (la.kl.nomem)
			PyErr_NoMemory();
		else
			pystore_raise(rc, "listing entries");
		goto out;
	}
	if ((list = PyList_New((Py_ssize_t)la.kl.n)) == NULL)
		goto out;
	for (i = 0; i < la.kl.n; i++) {
		if ((item = pystore_keylist_item(&la.kl, i)) == NULL) {
			Py_CLEAR(list);
			goto out;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, item);
	}
out:
	pystore_keylist_free(&la.kl);
	return list;
}

/* The entry key tuple ("g", name) / ("h", id) of row i; new reference. */
static PyObject *
pystore_key_tuple(const struct keylist *kl, size_t i)
{
	return Py_BuildValue("(sN)", kl->rows[i].kind == STORE_KIND_GLOBAL ?
	    "g" : "h", pystore_keylist_item(kl, i));
}

/* Arguments and results of referrers(): the targets parsed before the
 * transaction (names borrowed from the list's str objects, which the
 * caller's list keeps alive), their referrers copied out of it. */
struct referrers_arg {
	const uint8_t *sid;
	store_key *keys;       /* the targets that can be store keys */
	size_t *index;         /* their index in the targets list */
	size_t nkeys;
	struct keylist kl;     /* rows; row.target indexes keys */
};

static int
pystore_referrers_txn(store_txn *t, void *arg)
{
	struct referrers_arg *ra = arg;
	size_t i;
	int rc;

	for (i = 0; i < ra->nkeys; i++) {
		ra->kl.target = i;
		rc = refs_list(t, ra->sid, &ra->keys[i], pystore_keylist_add,
		    &ra->kl);
		/* a damaged row must not stop checkpoints: the rows of this
		 * target from it on are passed over (pyshelf-dump --check says
		 * which) */
		if (rc != 0 && rc != STORE_E_CORRUPT)
			return rc;
	}
	return 0;
}

/* Parse the targets into ra->keys; 0 or -1 with an exception. */
static int
pystore_referrers_keys(PyObject *targets, struct referrers_arg *ra)
{
	Py_ssize_t i, n = PyList_GET_SIZE(targets);
	int rc;

	ra->keys = PyMem_Calloc((size_t)n + 1, sizeof *ra->keys);
	ra->index = PyMem_Calloc((size_t)n + 1, sizeof *ra->index);
	if (ra->keys == NULL || ra->index == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		PyObject *key = PyList_GET_ITEM(targets, i); /* borrowed */
		store_key *sk = &ra->keys[ra->nkeys];
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
		sk->kind = pk.kind;
		sk->name = pk.name;
		sk->name_len = (size_t)pk.name_len;
		sk->handle = pk.handle;
		ra->index[ra->nkeys++] = (size_t)i;
	}
	return 0;
}

/* The (target, referrer) pairs of ra's rows, in order; new list or NULL. */
static PyObject *
pystore_referrers_list(PyObject *targets, const struct referrers_arg *ra)
{
	PyObject *out, *target = NULL, *rk, *pair;
	size_t i, last = (size_t)-1;

	if ((out = PyList_New(0)) == NULL)
		return NULL;
	for (i = 0; i < ra->kl.n; i++) {
		size_t ti = ra->kl.rows[i].target;
		if (ti != last) {
			/* the target's key, made once for its rows */
			PyObject *item = PyList_GET_ITEM(targets,
			    (Py_ssize_t)ra->index[ti]);
			Py_XDECREF(target);
			target = PyUnicode_Check(item) ?
			    Py_BuildValue("(sO)", "g", item) : Py_NewRef(item);
			if (target == NULL)
				goto error;
			last = ti;
		}
		if ((rk = pystore_key_tuple(&ra->kl, i)) == NULL)
			goto error;
		pair = PyTuple_Pack(2, target, rk);
		Py_DECREF(rk);
		if (pair == NULL || PyList_Append(out, pair) < 0) {
			Py_XDECREF(pair);
			goto error;
		}
		Py_DECREF(pair);
	}
	Py_XDECREF(target);
	return out;
error:
	Py_XDECREF(target);
	Py_DECREF(out);
	return NULL;
}

/* referrers(targets) -> [(target, referrer)]: the records the store's
 * reverse index says may refer to each target, a key or a global's name
 * (rows may be stale: check the referrer's refs blob).  A target whose
 * name cannot be a store key (too long, not UTF-8) has none; a damaged
 * row ends its target's list. */
static PyObject *
pystore_referrers(PyObject *self, PyObject *targets)
{
	const struct pyctx *c;
	struct referrers_arg ra;
	PyObject *out = NULL;
	int rc;

	if (!PyList_Check(targets)) {
		PyErr_SetString(PyExc_TypeError, "referrers() needs a list");
		return NULL;
	}
	if (pystore_refuse_child(0) || (c = pystore_ctx()) == NULL)
		return NULL;
	if (pystore_g == NULL &&
	    (pystore_g = PyUnicode_InternFromString("g")) == NULL)
		return NULL;
	memset(&ra, 0, sizeof ra);
	ra.sid = c->sess->id;
	/* the list is ours until we return: no Python code runs between
	 * parsing it and building the result */
	Py_INCREF(targets);
	if (pystore_referrers_keys(targets, &ra) < 0)
		goto out;
	if ((rc = store_read(c->st, pystore_referrers_txn, &ra)) != 0) {
		if (ra.kl.nomem)
			PyErr_NoMemory();
		else
			pystore_raise(rc, "reading the references index");
		goto out;
	}
	out = pystore_referrers_list(targets, &ra);
out:
	pystore_keylist_free(&ra.kl);
	PyMem_Free(ra.keys);
	PyMem_Free(ra.index);
	Py_DECREF(targets);
	return out;
}

struct refs_any_arg {
	const uint8_t *sid;
	int any;
};

static int
pystore_refs_any_txn(store_txn *t, void *arg)
{
	struct refs_any_arg *a = arg;

	return refs_any(t, a->sid, &a->any);
}

/* refs_any() -> whether the session has rows in the references index */
static PyObject *
pystore_refs_any(PyObject *self, PyObject *unused)
{
	const struct pyctx *c;
	struct refs_any_arg a = { NULL, 0 };
	int rc;

	if (pystore_refuse_child(0) || (c = pystore_ctx()) == NULL)
		return NULL;
	a.sid = c->sess->id;
	if ((rc = store_read(c->st, pystore_refs_any_txn, &a)) != 0)
		return pystore_raise(rc, "reading the references index");
	return PyBool_FromLong(a.any);
}

/* room() -> (map_max, disk_free): the store's size limit (--map-max) and
 * the bytes free on its file system (-1 when statvfs fails), so that a
 * full store's message can say which of the two ran out. */
static PyObject *
pystore_room(PyObject *self, PyObject *unused)
{
	const struct pyctx *c = pystore_ctx();
	struct statvfs sv;
	size_t map_max = 0;
	long long disk_free = -1;

	if (c == NULL)
		return NULL;
	(void)store_usage(c->st, NULL, NULL, &map_max);
	if (statvfs(store_path(c->st), &sv) == 0)
		disk_free = (long long)sv.f_bavail * (long long)sv.f_frsize;
	return pyfields_named(pyfields_Room, Py_BuildValue("KL",
	    (unsigned long long)map_max, disk_free));
}

/* next_handle() -> a fresh handle id of this session */
static PyObject *
pystore_next_handle(PyObject *self, PyObject *unused)
{
	const struct pyctx *c = pystore_ctx();
	uint64_t id;

	if (c == NULL)
		return NULL;
	id = c->sess->next_handle++;
	*c->sess_dirty = 1;
	return PyLong_FromUnsignedLongLong(id);
}

/* peek_next_handle() -> the id the next handle will get */
static PyObject *
pystore_peek_next_handle(PyObject *self, PyObject *unused)
{
	const struct pyctx *c = pystore_ctx();

	return c == NULL ? NULL :
	    PyLong_FromUnsignedLongLong(c->sess->next_handle);
}

/* session_dirty() -> whether the session record needs writing */
static PyObject *
pystore_session_dirty(PyObject *self, PyObject *unused)
{
	const struct pyctx *c = pystore_ctx();

	return c == NULL ? NULL : PyBool_FromLong(*c->sess_dirty);
}

/*
 * The content digest that decides whether an entry changed: the store's
 * payload digest (record_payload_digest, store/record.c: XXH3-128 of the
 * payload, then the flags and the refs blob) of data[0..len) followed by
 * each buffer of parts (a PySequence_Fast, or NULL).
 */
int
pystore_content_digest_raw(const void *data, size_t len, PyObject *parts,
                           unsigned flags, const void *refs, size_t refs_len,
                           uint8_t out[16])
{
	struct iovec iov_small[8], *iov = iov_small;
	Py_buffer v_small[8], *v = v_small;
	Py_ssize_t i, n = parts != NULL ? PySequence_Fast_GET_SIZE(parts) : 0;
	int rc = -1;

	if (n > 8) {
		iov = PyMem_Malloc((size_t)n * sizeof *iov);
		v = PyMem_Malloc((size_t)n * sizeof *v);
		if (iov == NULL || v == NULL) {
			PyErr_NoMemory();
			n = 0;
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(parts, i), &v[i],
		    PyBUF_SIMPLE) < 0) {
			n = i;
			goto out;
		}
		iov[i].iov_base = v[i].buf;
		iov[i].iov_len = (size_t)v[i].len;
	}
	record_payload_digest(data, len, iov, (size_t)n, flags, refs, refs_len,
	    out);
	rc = 0;
out:
	for (i = 0; i < n; i++)
		PyBuffer_Release(&v[i]);
	if (iov != iov_small)
		PyMem_Free(iov);
	if (v != v_small)
		PyMem_Free(v);
	return rc;
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
	return PyLong_FromUnsignedLongLong(pyns_dict_version(d));
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
