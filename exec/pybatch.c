/*
 * pybatch.c - the checkpoint's hot path in C: pickling many entries with
 * one reused C pickler into a C sink (pysink.c), digesting them, skipping
 * the ones whose digest did not change; the commit is pycommit.c's.
 *
 *  - Batch: the records of one checkpoint.  dump_keys() for the fast path,
 *    add() for records pickled elsewhere (cloudpickle, volatile), delete(),
 *    then commit().
 *
 * Every function runs with the GIL held, except the LMDB transaction.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"
#include "pyexec.h"
#include "pybatch.h"

/* ---------------------------------------------------------------------- */
/* Batch                                                                  */

/* A pickler's bound methods, looked up once per batch. */
struct pmeth {
	PyObject *dump;        /* pickler.dump */
	PyObject *clear_memo;  /* pickler.clear_memo */
};

/* Fill pm from pickler; 0 or -1. */
static int
pybatch_pmeth_get(struct pmeth *pm, PyObject *pickler)
{
	pm->dump = PyObject_GetAttrString(pickler, "dump");
	pm->clear_memo = PyObject_GetAttrString(pickler, "clear_memo");
	if (pm->dump == NULL || pm->clear_memo == NULL) {
		Py_CLEAR(pm->dump);
		Py_CLEAR(pm->clear_memo);
		return -1;
	}
	return 0;
}

static void
pybatch_pmeth_clear(struct pmeth *pm)
{
	Py_CLEAR(pm->dump);
	Py_CLEAR(pm->clear_memo);
}

void
pybatch_rec_clear(brec *r)
{
	Py_CLEAR(r->key);
	Py_CLEAR(r->refs);
	Py_CLEAR(r->oob);
	Py_CLEAR(r->tn);
	PyMem_Free(r->data);
	r->in.type_name = NULL;
	r->data = NULL;
	r->in_arena = 0;
	r->late_digest = 0;
	r->out = 0;
	r->oob_len = 0;
}

/* Hold type name tn (a str) in r. */
static int
pybatch_rec_type(brec *r, PyObject *tn)
{
	if ((r->in.type_name = PyUnicode_AsUTF8(tn)) == NULL)
		return -1;
	r->tn = Py_NewRef(tn);
	return 0;
}

/* Split a key tuple into r's kind/name/handle. */
int
pybatch_rec_key(brec *r, PyObject *key)
{
	PyObject *kind, *k;
	const char *ks;

	if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
		PyErr_SetString(PyExc_TypeError, "an entry key is (kind, key)");
		return -1;
	}
	kind = PyTuple_GET_ITEM(key, 0);
	k = PyTuple_GET_ITEM(key, 1);
	if ((ks = PyUnicode_AsUTF8(kind)) == NULL)
		return -1;
	if (ks[0] == 'g') {
		Py_ssize_t n;
		r->in.kind = STORE_KIND_GLOBAL;
		if ((r->in.name = PyUnicode_AsUTF8AndSize(k, &n)) == NULL)
			return -1;
		if (n == 0 || n > STORE_KEY_MAX) {
			PyErr_Format(PyExc_ValueError, "global name of %zd bytes: "
			    "must be 1 to %d", n, STORE_KEY_MAX);
			return -1;
		}
		r->in.name_len = (size_t)n;
	} else {
		r->in.kind = STORE_KIND_HANDLE;
		r->in.handle = PyLong_AsUnsignedLongLong(k);
		if (PyErr_Occurred())
			return -1;
	}
	r->key = Py_NewRef(key);
	return 0;
}

/* A new slot at the end of the batch (zeroed). */
static brec *
pybatch_slot(batchobject *b)
{
	if (b->n == b->cap) {
		size_t ncap = b->cap == 0 ? 64 : b->cap * 2;
		brec *n = PyMem_Realloc(b->recs, ncap * sizeof *n);
		if (n == NULL) {
			PyErr_NoMemory();
			return NULL;
		}
		b->recs = n;
		b->cap = ncap;
	}
	memset(&b->recs[b->n], 0, sizeof b->recs[b->n]);
	return &b->recs[b->n];
}

/* Make room for n more records, and an arena guess for them (one
 * allocation each instead of a series of doublings). */
static int
pybatch_reserve(batchobject *b, size_t n)
{
	size_t guess = n * 64;

	if (b->n + n > b->cap) {
		brec *r = PyMem_Realloc(b->recs, (b->n + n) * sizeof *r);
		if (r == NULL) {
			PyErr_NoMemory();
			return -1;
		}
		b->recs = r;
		b->cap = b->n + n;
	}
	if (guess > BATCH_KEEP_ARENA)
		guess = BATCH_KEEP_ARENA;
	if (b->alen + guess > b->acap) {
		char *a = PyMem_Realloc(b->arena, b->alen + guess);
		if (a == NULL) {
			PyErr_NoMemory();
			return -1;
		}
		b->arena = a;
		b->acap = b->alen + guess;
	}
	return 0;
}

/* r's data: the OOB header, u32 n, u64 pickle length, n x u64 buffer
 * lengths (STORAGE.md), then the pickle (len bytes at pk); r holds the
 * buffers (a list) and the OOB flag.  0, or -1 with an exception. */
static int
pybatch_oob_data(brec *r, const char *pk, size_t len, PyObject *oob)
{
	Py_ssize_t i, n = PyList_GET_SIZE(oob);
	size_t head = 12 + 8 * (size_t)n;

	if ((r->data = PyMem_Malloc(head + len + 1)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	wire_be32_put((uint8_t *)r->data, (uint32_t)n);
	wire_be64_put((uint8_t *)r->data + 4, len);
	for (i = 0; i < n; i++) {
		Py_buffer v;
		if (PyObject_GetBuffer(PyList_GET_ITEM(oob, i), &v,
		    PyBUF_SIMPLE) < 0)
			return -1;
		wire_be64_put((uint8_t *)r->data + 12 + 8 * i, (uint64_t)v.len);
		r->oob_len += (size_t)v.len;
		PyBuffer_Release(&v);
	}
	memcpy(r->data + head, pk, len);
	r->data_len = head + len;
	r->in.flags |= STORE_FLAG_OOB;
	r->oob = Py_NewRef(oob);
	return 0;
}

/* The sink's bytes, with the OOB header in front when there are buffers. */
static int
pybatch_take_data(brec *r, sinkobject *sk)
{
	if (sk->oob != NULL && PyList_GET_SIZE(sk->oob) > 0)
		return pybatch_oob_data(r, sk->buf, sk->len, sk->oob);
	if (sk->buf != NULL) {
		/* take the sink's buffer as it is: no copy */
		r->data = sk->buf;
		r->data_len = sk->len;
		sk->buf = NULL;
		sk->len = sk->cap = 0;
		return 0;
	}
	if ((r->data = PyMem_Malloc(1)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	r->data_len = 0;
	return 0;
}

/* A record whose out-of-band buffers and pickle come to this many bytes,
 * and whose key has no digest yet, gets its content digest from the
 * commit's copy (store_entry_in.payload_digest): there is nothing to
 * compare it with, so it is written whatever its digest is, and the copy
 * into the map computes it in the same pass: one pass over a large new
 * array instead of two. */
#define LATE_DIGEST_MIN ((size_t)1 << 20)

/* The content digest of r, whose payload before the buffers is
 * data[0..len), into r->digest, then: is it what digests holds for key?
 * 1 changed (write it), 0 unchanged, -1 with an exception.  A large new
 * one is left to the commit (r->late_digest, 1). */
static int
pybatch_digest(brec *r, PyObject *digests, PyObject *key, const void *data,
             size_t len, const void *refs, size_t refs_len)
{
	uint8_t old[16];
	int had = -2;    /* not asked yet */

	if (r->oob != NULL && r->oob_len + len >= LATE_DIGEST_MIN) {
		if ((had = pydigest_get(digests, key, old)) < 0)
			return -1;
		if (!had) {
			r->late_digest = 1;
			return 1;
		}
	}
	if (pystore_content_digest_raw(data, len, r->oob, r->in.flags, refs,
	    refs_len, r->digest) < 0)
		return -1;
	if (had == -2 && (had = pydigest_get(digests, key, old)) < 0)
		return -1;
	return !had || memcmp(old, r->digest, 16) != 0;
}

/* Plain data: pickle obj straight into the batch's arena (pyenc.c), digest
 * it and keep it when it changed.  Large bytes and bytearrays go out of
 * band: the record then holds its own copy of the (small) pickle behind
 * the OOB header, and the objects, written from their memory at commit.
 * 1 added, 0 unchanged, 2 not plain (nothing done), -1 with an
 * exception. */
static int
pybatch_dump_plain(batchobject *b, PyObject *idmap, PyObject *key,
                 PyObject *obj, unsigned flags, PyObject *tn,
                 PyObject *digests)
{
	size_t start = b->alen, len;
	PyObject *oob = NULL, *refs = NULL;
	const char *rp;
	size_t rn;
	brec *rec;
	int r;

	/* another entry's object: the record is a reference to that entry,
	 * which the plain writer does not write */
	if (pyidmap_alias(idmap, obj, key))
		return 2;
	if ((r = pyenc_plain(obj, idmap, &b->arena, &b->alen, &b->acap,
	    &oob, &refs)) <= 0)
		return r < 0 ? -1 : 2;
	len = b->alen - start;
	if ((rec = pybatch_slot(b)) == NULL)
		goto error;
	rec->in.flags = (uint16_t)flags;
	rec->refs = refs;   /* stolen; NULL: none */
	refs = NULL;
	rp = rec->refs != NULL ? PyBytes_AS_STRING(rec->refs) : "";
	rn = rec->refs != NULL ? (size_t)PyBytes_GET_SIZE(rec->refs) : 0;
	if (oob != NULL) {
		r = pybatch_oob_data(rec, b->arena + start, len, oob);
		b->alen = start;   /* the record has its own copy */
		Py_CLEAR(oob);
		if (r < 0 || (r = pybatch_digest(rec, digests, key, rec->data,
		    rec->data_len, rp, rn)) < 0)
			goto error_rec;
	} else if ((r = pybatch_digest(rec, digests, key, b->arena + start, len,
	    rp, rn)) < 0)
		goto error_rec;
	if (r == 0) {
		/* unchanged: not written */
		pybatch_rec_clear(rec);
		b->alen = start;
		return 0;
	}
	if (pybatch_rec_key(rec, key) < 0 || pybatch_rec_type(rec, tn) < 0)
		goto error_rec;
	rec->in.pickler = STORE_PICKLER_PICKLE;
	if (rec->data == NULL) {
		rec->in_arena = 1;
		rec->aoff = start;
		rec->data_len = len;
	}
	if (rec->refs != NULL)
		b->nrefs++;
	b->n++;
	return 1;
error_rec:
	pybatch_rec_clear(rec);
error:
	Py_XDECREF(oob);
	Py_XDECREF(refs);
	b->alen = start;
	return -1;
}

/* Pickle obj into the sink and, when it changed, into a record.
 * Returns 1 when added, 0 when unchanged, -1 with an exception. */
static int
pybatch_dump_obj(batchobject *b, const struct pmeth *pm, sinkobject *sk,
               PyObject *idmap, PyObject *key, PyObject *obj, unsigned flags,
               PyObject *tn, PyObject *digests)
{
	PyObject *r = NULL, *refs = NULL;
	brec *rec;
	int rc;

	if ((rc = pybatch_dump_plain(b, idmap, key, obj, flags, tn, digests))
	    != 2)
		return rc;
	pysink_reset(sk);
	if ((r = PyObject_CallNoArgs(pm->clear_memo)) == NULL)
		return -1;
	Py_DECREF(r);
	pyidmap_begin(idmap, obj, key);
	r = PyObject_CallOneArg(pm->dump, obj);
	refs = pyidmap_end(idmap);
	if (r == NULL || refs == NULL) {
		Py_XDECREF(r);
		Py_XDECREF(refs);
		return -1;
	}
	Py_DECREF(r);
	if ((rec = pybatch_slot(b)) == NULL)
		goto error;
	rec->in.pickler = STORE_PICKLER_PICKLE;
	rec->in.flags = (uint16_t)flags;
	if (PyBytes_GET_SIZE(refs) > 0) {
		rec->refs = refs; /* stolen */
		b->nrefs++;
	} else
		Py_DECREF(refs);
	refs = NULL;
	if (pybatch_rec_key(rec, key) < 0 || pybatch_take_data(rec, sk) < 0)
		goto error_rec;
	if ((rc = pybatch_digest(rec, digests, key, rec->data, rec->data_len,
	    rec->refs != NULL ? PyBytes_AS_STRING(rec->refs) : "",
	    rec->refs != NULL ? (size_t)PyBytes_GET_SIZE(rec->refs) : 0)) < 0)
		goto error_rec;
	if (rc == 0) {
		pybatch_rec_clear(rec);
		return 0;
	}
	if (pybatch_rec_type(rec, tn) < 0)
		goto error_rec;
	b->n++;
	return 1;
error_rec:
	pybatch_rec_clear(rec);
error:
	Py_XDECREF(refs);
	return -1;
}

/* ---------------------------------------------------------------------- */
/* type names                                                             */

static PyObject *type_names;  /* type -> "module.Qualname", a cache */

/* "module.Qualname" of obj's type ("dict" for builtins); new reference. */
PyObject *
pybatch_type_name(PyObject *obj)
{
	/* the last type asked about: entries come in runs of one type.  Both
	 * references are strong, so the address cannot be reused. */
	static PyObject *last_tp, *last_tn;
	PyTypeObject *tp = Py_TYPE(obj);
	PyObject *tn, *mod = NULL, *qn = NULL;

	if ((PyObject *)tp == last_tp)
		return Py_NewRef(last_tn);
	if (type_names == NULL && (type_names = PyDict_New()) == NULL)
		return NULL;
	tn = PyDict_GetItemWithError(type_names, (PyObject *)tp); /* borrowed */
	if (tn != NULL) {
		Py_XSETREF(last_tp, Py_NewRef((PyObject *)tp));
		Py_XSETREF(last_tn, Py_NewRef(tn));
		return Py_NewRef(tn);
	}
	if (PyErr_Occurred())
		return NULL;
	if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE))
		tn = PyUnicode_FromString(tp->tp_name);
	else {
		mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
		qn = PyObject_GetAttrString((PyObject *)tp, "__qualname__");
		if (mod == NULL || qn == NULL)
			goto out;
		if (PyUnicode_Check(mod) &&
		    PyUnicode_CompareWithASCIIString(mod, "builtins") != 0)
			tn = PyUnicode_FromFormat("%U.%U", mod, qn);
		else
			tn = Py_NewRef(qn);
	}
	if (tn != NULL && PyDict_Size(type_names) < 4096 &&
	    PyDict_SetItem(type_names, (PyObject *)tp, tn) < 0)
		Py_CLEAR(tn);
out:
	Py_XDECREF(mod);
	Py_XDECREF(qn);
	return tn;
}

/* type_name(obj) */
static PyObject *
pybatch_type_name_py(PyObject *self, PyObject *obj)
{
	return pybatch_type_name(obj);
}

/* One object to dump: its key and flags (references held). */
struct ditem {
	PyObject *key, *obj;
	unsigned flags;
};

/* Put *items (n of them) in the order of their objects' addresses, so
 * that dump_keys walks the objects in the order of their memory, not in
 * the keys' hash order: objects made one after another (the dicts of one
 * comprehension) lie side by side, and the hardware fetches the next ones
 * while one is pickled.  A 10,000-dict checkpoint pickled 1.5 ms faster
 * than in a random order.  Without memory for the sort, they stay in the
 * keys' order, which costs nothing but speed. */
static void
pybatch_sort_items(struct ditem **items, size_t n)
{
	struct skey *k = PyMem_Malloc(2 * n * sizeof *k);
	struct ditem *a = *items, *sorted = PyMem_Malloc(n * sizeof *sorted);
	size_t i;

	if (k != NULL && sorted != NULL) {
		for (i = 0; i < n; i++) {
			k[i].k = (uintptr_t)a[i].obj;
			k[i].i = i;
		}
		pysort_radix(k, k + n, n);
		for (i = 0; i < n; i++)
			sorted[i] = a[k[i].i];
		*items = sorted;
		sorted = a;
	}
	PyMem_Free(sorted);
	PyMem_Free(k);
}

/* The objects of keys (new references, in *items, *n of them), looked up
 * ("g": shadow, "h": handles with flags from hflags); those of type skip and
 * missing ones are left out.  0, or -1 with an exception. */
static int
pybatch_gather(PyObject *keys, PyObject *shadow, PyObject *handles,
            PyObject *hflags, PyObject *skip, struct ditem **items,
            size_t *n)
{
	PyObject *it, *key;
	struct ditem *a = NULL, *na;
	size_t cap = 0;

	*items = NULL;
	*n = 0;
	if ((it = PyObject_GetIter(keys)) == NULL)
		return -1;
	if (PyAnySet_Check(keys))
		cap = (size_t)PySet_GET_SIZE(keys);
	if (cap > 0 && (a = PyMem_Malloc(cap * sizeof *a)) == NULL) {
		PyErr_NoMemory();
		goto error;
	}
	while ((key = PyIter_Next(it)) != NULL) {
		PyObject *obj, *fl, *kind, *k; /* borrowed */
		unsigned flags = 0;
		if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
			Py_DECREF(key);
			continue;
		}
		kind = PyTuple_GET_ITEM(key, 0);
		k = PyTuple_GET_ITEM(key, 1);
		if (PyUnicode_Check(kind) && PyUnicode_GET_LENGTH(kind) == 1 &&
		    PyUnicode_READ_CHAR(kind, 0) == 'g')
			obj = PyDict_GetItemWithError(shadow, k);
		else {
			obj = PyDict_GetItemWithError(handles, k);
			fl = PyDict_GetItemWithError(hflags, k);
			if (fl != NULL)
				flags = (unsigned)PyLong_AsUnsignedLong(fl);
		}
		if (obj == NULL || (PyObject *)Py_TYPE(obj) == skip ||
		    PyErr_Occurred()) {
			Py_DECREF(key);
			if (PyErr_Occurred())
				goto error;
			continue;
		}
		if (*n == cap) {
			cap = cap == 0 ? 64 : 2 * cap;
			if ((na = PyMem_Realloc(a, cap * sizeof *a)) == NULL) {
				Py_DECREF(key);
				PyErr_NoMemory();
				goto error;
			}
			a = na;
		}
		a[*n].key = key;     /* the iterator's reference */
		a[*n].obj = Py_NewRef(obj);
		a[(*n)++].flags = flags;
	}
	if (PyErr_Occurred())
		goto error;
	Py_DECREF(it);
	*items = a;
	return 0;
error:
	Py_DECREF(it);
	while (*n > 0) {
		(*n)--;
		Py_DECREF(a[*n].key);
		Py_DECREF(a[*n].obj);
	}
	PyMem_Free(a);
	return -1;
}

/* dump_keys(pickler, sink, idmap, keys, shadow, handles, hflags, digests,
 * skip_type) -> (written, failed items): pickles each key's object, looking it
 * up ("g": shadow, "h": handles with flags from hflags); objects of
 * skip_type (placeholders) and missing ones are left alone.  The objects
 * are pickled in the order of their addresses (pybatch_sort_items). */
static PyObject *
pybatch_dump_keys(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = {"pickler", "sink", "idmap", "keys", "shadow",
	    "handles", "hflags", "digests", "skip_type", NULL};
	batchobject *b = (batchobject *)self;
	PyObject *pickler, *sink, *idmap, *keys, *shadow, *handles, *hflags,
	    *digests, *skip, *failed = NULL, *res = NULL;
	struct pmeth pm = {NULL, NULL};
	struct ditem *items = NULL;
	Py_ssize_t written = 0;
	size_t n = 0, i;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!OOO!O!O!O!O:dump_keys",
	    names, &pickler,
	    &pysink_SinkType, &sink, &idmap, &keys, &PyDict_Type, &shadow,
	    &PyDict_Type, &handles, &PyDict_Type, &hflags,
	    &pydigest_DigestMapType, &digests, &skip))
		return NULL;
	if (pybatch_pmeth_get(&pm, pickler) < 0 || (failed = PyList_New(0)) == NULL ||
	    pybatch_gather(keys, shadow, handles, hflags, skip, &items, &n) < 0 ||
	    pybatch_reserve(b, n) < 0)
		goto out;
	if (n > 16)
		pybatch_sort_items(&items, n);
	for (i = 0; i < n; i++) {
		PyObject *key = items[i].key, *obj = items[i].obj, *tn;
		int rc;
		/* an exception's handle keeps its exc_type and message in its
		 * record's type-name area, for listings that unpickle nothing */
		tn = items[i].flags & STORE_FLAG_EXCINFO ?
		    PyObject_CallMethod(pymodule_backend, "excinfo_type_name", "(O)",
		    obj) : pybatch_type_name(obj);
		if (tn == NULL)
			goto out;
		if (!PyUnicode_Check(tn)) {
			PyErr_Format(PyExc_TypeError, "excinfo_type_name() "
			    "returned %.200s, not str", Py_TYPE(tn)->tp_name);
			Py_DECREF(tn);
			goto out;
		}
		rc = pybatch_dump_obj(b, &pm, (sinkobject *)sink, idmap, key,
		    obj, items[i].flags, tn, digests);
		if (rc < 0) {
			/* any exception, SystemExit too (a __reduce__ of the
			 * user's: QA6 4): the entry goes the slow way, where it
			 * stays volatile; the rest of the checkpoint goes on */
			PyObject *item;
			PyErr_Clear();
			item = Py_BuildValue("(OOIO)", key, obj, items[i].flags,
			    tn);
			if (item == NULL || PyList_Append(failed, item) < 0) {
				Py_XDECREF(item);
				Py_DECREF(tn);
				goto out;
			}
			Py_DECREF(item);
		} else
			written += rc;
		Py_DECREF(tn);
	}
	res = pyfields_named(pyfields_Dumped, Py_BuildValue("nO", written,
	    failed));
out:
	pysink_reset((sinkobject *)sink);
	pybatch_pmeth_clear(&pm);
	for (i = 0; i < n; i++) {
		Py_DECREF(items[i].key);
		Py_DECREF(items[i].obj);
	}
	PyMem_Free(items);
	Py_XDECREF(failed);
	return res;
}

PyMethodDef pybatch_methods[] = {
	{"type_name", pybatch_type_name_py, METH_O, "type_name(obj)"},
	{"plain_dumps", pyenc_plain_dumps, METH_O,
	 "plain_dumps(obj) -> the fast path's pickle of obj, or None"},
	{NULL, NULL, 0, NULL}
};

/* add(key, pickler, flags, type_name, refs, digest, parts): a record
 * pickled elsewhere; parts are bytes-likes concatenated as the payload. */
static PyObject *
pybatch_add(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = {"key", "pickler", "flags", "type_name", "refs",
	    "digest", "parts", NULL};
	batchobject *b = (batchobject *)self;
	PyObject *key, *refs, *digest, *parts, *tn;
	int pickler, flags;
	brec *rec;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "OiiO!O!O!O!:add", names,
	    &key, &pickler, &flags,
	    &PyUnicode_Type, &tn, &PyBytes_Type, &refs, &PyBytes_Type, &digest,
	    &PyList_Type, &parts))
		return NULL;
	if (PyBytes_GET_SIZE(digest) != 16) {
		PyErr_SetString(PyExc_ValueError, "a digest is 16 bytes");
		return NULL;
	}
	if ((rec = pybatch_slot(b)) == NULL)
		return NULL;
	if (pybatch_rec_key(rec, key) < 0 || pybatch_rec_type(rec, tn) < 0)
		goto error;
	rec->in.pickler = (uint8_t)pickler;
	rec->in.flags = (uint16_t)flags;
	if (PyBytes_GET_SIZE(refs) > 0) {
		rec->refs = Py_NewRef(refs);
		b->nrefs++;
	}
	memcpy(rec->digest, PyBytes_AS_STRING(digest), 16);
	rec->oob = Py_NewRef(parts); /* the whole payload, in pieces */
	b->n++;
	Py_RETURN_NONE;
error:
	pybatch_rec_clear(rec);
	return NULL;
}

/* refs() -> [(key, refs)] of the records that refer to other entries */
static PyObject *
pybatch_refs(PyObject *self, PyObject *unused)
{
	batchobject *b = (batchobject *)self;
	PyObject *l = PyList_New(0), *t;
	size_t i;

	if (l == NULL)
		return NULL;
	for (i = 0; b->nrefs > 0 && i < b->n; i++) {
		if (b->recs[i].refs == NULL)
			continue;
		t = PyTuple_Pack(2, b->recs[i].key, b->recs[i].refs);
		if (t == NULL || PyList_Append(l, t) < 0) {
			Py_XDECREF(t);
			Py_DECREF(l);
			return NULL;
		}
		Py_DECREF(t);
	}
	return l;
}

/* drop(keys): forget the records of these keys (a set). */
static PyObject *
pybatch_drop(PyObject *self, PyObject *keys)
{
	batchobject *b = (batchobject *)self;
	size_t i, j = 0;
	int r;

	for (i = 0; i < b->n; i++) {
		if ((r = PySequence_Contains(keys, b->recs[i].key)) < 0)
			return NULL;
		if (r)
			pybatch_rec_clear(&b->recs[i]);
		else
			b->recs[j++] = b->recs[i];
	}
	b->n = j;
	Py_RETURN_NONE;
}

/* delete(key): remove an entry in the same transaction. */
static PyObject *
pybatch_delete(PyObject *self, PyObject *key)
{
	batchobject *b = (batchobject *)self;

	if (b->dels == NULL && (b->dels = PyList_New(0)) == NULL)
		return NULL;
	if (PyList_Append(b->dels, key) < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* unref(target, referrer): forget that index row in the same transaction
 * (the referrer's record no longer refers to target). */
static PyObject *
pybatch_unref(PyObject *self, PyObject *args)
{
	batchobject *b = (batchobject *)self;
	PyObject *target, *referrer, *pair;
	int rc;

	if (!PyArg_ParseTuple(args, "O!O!:unref", &PyTuple_Type, &target,
	    &PyTuple_Type, &referrer))
		return NULL;
	if (b->unrefs == NULL && (b->unrefs = PyList_New(0)) == NULL)
		return NULL;
	if ((pair = PyTuple_Pack(2, target, referrer)) == NULL)
		return NULL;
	rc = PyList_Append(b->unrefs, pair);
	Py_DECREF(pair);
	if (rc < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* records() -> [(key, bytes, refs)]: every record, with the bytes it
 * writes and the references it holds (b"" when none). */
static PyObject *
pybatch_records(PyObject *self, PyObject *unused)
{
	batchobject *b = (batchobject *)self;
	PyObject *l = PyList_New(0), *t, *empty = PyBytes_FromString("");
	Py_ssize_t j;
	size_t i;

	if (l == NULL || empty == NULL)
		goto error;
	for (i = 0; i < b->n; i++) {
		brec *r = &b->recs[i];
		size_t bytes = r->data_len;
		for (j = 0; r->oob != NULL && j < PyList_GET_SIZE(r->oob); j++) {
			Py_buffer v;
			if (PyObject_GetBuffer(PyList_GET_ITEM(r->oob, j), &v,
			    PyBUF_SIMPLE) < 0)
				goto error;
			bytes += (size_t)v.len;
			PyBuffer_Release(&v);
		}
		t = Py_BuildValue("OnO", r->key, (Py_ssize_t)bytes,
		    r->refs != NULL ? r->refs : empty);
		if (t == NULL || PyList_Append(l, t) < 0) {
			Py_XDECREF(t);
			goto error;
		}
		Py_DECREF(t);
	}
	Py_DECREF(empty);
	return l;
error:
	Py_XDECREF(l);
	Py_XDECREF(empty);
	return NULL;
}

/* clear(): forget every record and delete (a checkpoint starts with it:
 * one that raised may have left some). */
static PyObject *
pybatch_clear(PyObject *self, PyObject *unused)
{
	pycommit_reset((batchobject *)self);
	Py_RETURN_NONE;
}

static Py_ssize_t
pybatch_len(PyObject *self)
{
	batchobject *b = (batchobject *)self;

	return (Py_ssize_t)b->n + (b->dels != NULL ? PyList_GET_SIZE(b->dels) : 0);
}

static int
pybatch_traverse(PyObject *self, visitproc visit, void *arg)
{
	batchobject *b = (batchobject *)self;
	size_t i;

	for (i = 0; i < b->n; i++) {
		Py_VISIT(b->recs[i].key);
		Py_VISIT(b->recs[i].refs);
		Py_VISIT(b->recs[i].oob);
	}
	Py_VISIT(b->dels);
	Py_VISIT(b->unrefs);
	return 0;
}

static int
pybatch_clear_gc(PyObject *self)
{
	pycommit_reset((batchobject *)self);
	return 0;
}

static void
pybatch_dealloc(PyObject *self)
{
	batchobject *b = (batchobject *)self;

	PyObject_GC_UnTrack(self);
	pycommit_reset(b);
	PyMem_Free(b->recs);
	PyMem_Free(b->arena);
	pycommit_scratch_free(b);
	Py_TYPE(self)->tp_free(self);
}

static PyMethodDef pybatch_type_methods[] = {
	{"dump_keys", (PyCFunction)(void (*)(void))pybatch_dump_keys,
	 METH_VARARGS | METH_KEYWORDS,
	 "dump_keys(pickler, sink, idmap, keys, shadow, handles, hflags, "
	 "digests, skip_type) -> (n, failed)"},
	{"add", (PyCFunction)(void (*)(void))pybatch_add,
	 METH_VARARGS | METH_KEYWORDS,
	 "add(key, pickler, flags, type_name, refs, digest, parts)"},
	{"delete", pybatch_delete, METH_O, "delete(key)"},
	{"clear", pybatch_clear, METH_NOARGS, "clear(): forget every record"},
	{"refs", pybatch_refs, METH_NOARGS, "refs() -> [(key, refs)]"},
	{"drop", pybatch_drop, METH_O, "drop(keys)"},
	{"unref", pybatch_unref, METH_VARARGS,
	 "unref(target, referrer): forget that references-index row"},
	{"commit", (PyCFunction)(void (*)(void))pycommit_commit,
	 METH_VARARGS | METH_KEYWORDS,
	 "commit(digests, refs_of) -> (records written, [(key, refs)])"},
	{"commit_part", (PyCFunction)(void (*)(void))pycommit_commit_part,
	 METH_VARARGS | METH_KEYWORDS,
	 "commit_part(digests, refs_of, keys, dels, unrefs) -> (records "
	 "written, [(key, refs)]); the batch keeps its records"},
	{"records", pybatch_records, METH_NOARGS,
	 "records() -> [(key, bytes, refs)]"},
	{NULL, NULL, 0, NULL}
};

static PySequenceMethods pybatch_as_seq = {.sq_length = pybatch_len};

PyTypeObject pybatch_BatchType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.Batch",
	.tp_basicsize = sizeof(batchobject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "the records of one checkpoint",
	.tp_methods = pybatch_type_methods,
	.tp_as_sequence = &pybatch_as_seq,
	.tp_dealloc = pybatch_dealloc,
	.tp_traverse = pybatch_traverse,
	.tp_clear = pybatch_clear_gc,
	.tp_new = PyType_GenericNew,
};
