/*
 * pybatch.c - the checkpoint's hot path in C: pickling many entries with
 * one reused C pickler into a C sink, digesting them, skipping the ones
 * whose digest did not change, and committing everything (and deletes) in
 * one write transaction with the GIL released.
 *
 *  - Sink: the pickler's file.  write() appends to a C buffer, buffer()
 *    (the pickler's buffer_callback) keeps out-of-band PickleBuffers.
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

/* ---------------------------------------------------------------------- */
/* Sink                                                                   */

typedef struct {
	PyObject_HEAD
	char *buf;           /* pickle bytes of the current dump */
	size_t len, cap;
	PyObject *oob;       /* list of PickleBuffers of the current dump */
} sinkobject;

/* write(b): append bytes-like b. */
static PyObject *
sink_write(PyObject *self, PyObject *arg)
{
	sinkobject *s = (sinkobject *)self;
	Py_buffer v;

	if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
		return NULL;
	if (s->len + (size_t)v.len > s->cap) {
		size_t ncap = (s->cap + (size_t)v.len) * 2;
		char *n = PyMem_Realloc(s->buf, ncap);
		if (n == NULL) {
			PyBuffer_Release(&v);
			return PyErr_NoMemory();
		}
		s->buf = n;
		s->cap = ncap;
	}
	memcpy(s->buf + s->len, v.buf, (size_t)v.len);
	s->len += (size_t)v.len;
	PyBuffer_Release(&v);
	return PyLong_FromSsize_t(v.len);
}

/* buffer(pb): keep an out-of-band buffer (pickle's buffer_callback). */
static PyObject *
sink_buffer(PyObject *self, PyObject *pb)
{
	sinkobject *s = (sinkobject *)self;

	if (s->oob == NULL && (s->oob = PyList_New(0)) == NULL)
		return NULL;
	if (PyList_Append(s->oob, pb) < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* reset(): forget the current dump. */
static void
sink_reset(sinkobject *s)
{
	s->len = 0;
	Py_CLEAR(s->oob);
}

static PyObject *
sink_reset_py(PyObject *self, PyObject *unused)
{
	sink_reset((sinkobject *)self);
	Py_RETURN_NONE;
}

/* getvalue() -> bytes of the current dump */
static PyObject *
sink_getvalue(PyObject *self, PyObject *unused)
{
	sinkobject *s = (sinkobject *)self;

	return PyBytes_FromStringAndSize(s->buf, (Py_ssize_t)s->len);
}

/* buffers() -> list of the current dump's PickleBuffers */
static PyObject *
sink_buffers(PyObject *self, PyObject *unused)
{
	sinkobject *s = (sinkobject *)self;

	return s->oob != NULL ? Py_NewRef(s->oob) : PyList_New(0);
}

static void
sink_dealloc(PyObject *self)
{
	sinkobject *s = (sinkobject *)self;

	PyObject_GC_UnTrack(self);
	Py_CLEAR(s->oob);
	PyMem_Free(s->buf);
	Py_TYPE(self)->tp_free(self);
}

static int
sink_traverse(PyObject *self, visitproc visit, void *arg)
{
	Py_VISIT(((sinkobject *)self)->oob);
	return 0;
}

static int
sink_clear(PyObject *self)
{
	Py_CLEAR(((sinkobject *)self)->oob);
	return 0;
}

static PyMethodDef sink_methods[] = {
	{"write", sink_write, METH_O, "append bytes"},
	{"buffer", sink_buffer, METH_O, "keep an out-of-band buffer"},
	{"reset", sink_reset_py, METH_NOARGS, "forget the current dump"},
	{"getvalue", sink_getvalue, METH_NOARGS, "the current dump's bytes"},
	{"buffers", sink_buffers, METH_NOARGS, "the current dump's buffers"},
	{NULL, NULL, 0, NULL}
};

PyTypeObject pybatch_SinkType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.Sink",
	.tp_basicsize = sizeof(sinkobject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "a pickler's file: bytes in C, out-of-band buffers kept",
	.tp_methods = sink_methods,
	.tp_dealloc = sink_dealloc,
	.tp_traverse = sink_traverse,
	.tp_clear = sink_clear,
	.tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------- */
/* Batch                                                                  */

/* One record to write.  in is what the store gets: its name borrows
 * from key, its type_name from tn, its refs from refs, and its iov is
 * filled at commit (the arena may move until then). */
typedef struct {
	store_entry_in in;       /* first: b->order points at it */
	PyObject *key;           /* ("g", name) / ("h", id), strong */
	PyObject *tn;            /* the type name (str), strong */
	PyObject *refs;          /* bytes, strong; NULL: no references */
	PyObject *oob;           /* list of PickleBuffers or parts, strong */
	char *data;              /* owned: the pickle (with OOB header) */
	size_t data_len, aoff;
	struct iovec iov1;       /* in.iov of a record in one piece */
	uint8_t in_arena;        /* the pickle is the batch's arena[aoff..] */
	uint8_t late_digest;     /* digest is computed by the commit's copy */
	uint8_t out;             /* left out of this commit (commit_part) */
	size_t oob_len;          /* bytes in the oob buffers */
	uint8_t digest[16];      /* the content digest */
} brec;

/* A pickler's bound methods, looked up once per batch. */
struct pmeth {
	PyObject *dump;        /* pickler.dump */
	PyObject *clear_memo;  /* pickler.clear_memo */
};

/* Fill pm from pickler; 0 or -1. */
static int
pmeth_get(struct pmeth *pm, PyObject *pickler)
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
pmeth_clear(struct pmeth *pm)
{
	Py_CLEAR(pm->dump);
	Py_CLEAR(pm->clear_memo);
}

typedef struct {
	PyObject_HEAD
	brec *recs;
	size_t n, cap;
	size_t nrefs;            /* records added with references (some may
	                            have been dropped since) */
	PyObject *dels;          /* list of keys to delete */
	PyObject *unrefs;        /* list of (target, referrer): index rows
	                            to forget */
	char *arena;             /* plain pickles, back to back (pyenc.c) */
	size_t alen, acap;
	/* the commit's arrays; like recs and arena, kept for the next
	 * checkpoint (the Workspace reuses its Batch) unless large */
	store_entry_in **order;  /* the records' in, sorted by key */
	struct skey *skeys;      /* two per record: the sort's */
	size_t scap;             /* records these have room for */
	struct iovec *iov;       /* every record's pieces */
	size_t iovcap;
} batchobject;

/* A batch keeps at most this many record slots, and an arena of at most
 * this many bytes, from one checkpoint to the next. */
#define BATCH_KEEP_RECS 65536
#define BATCH_KEEP_ARENA ((size_t)16 << 20)

static void
brec_clear(brec *r)
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
brec_type(brec *r, PyObject *tn)
{
	if ((r->in.type_name = PyUnicode_AsUTF8(tn)) == NULL)
		return -1;
	r->tn = Py_NewRef(tn);
	return 0;
}

/* Split a key tuple into r's kind/name/handle. */
static int
brec_key(brec *r, PyObject *key)
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
batch_slot(batchobject *b)
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
batch_reserve(batchobject *b, size_t n)
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
batch_oob_data(brec *r, const char *pk, size_t len, PyObject *oob)
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
batch_take_data(brec *r, sinkobject *sk)
{
	if (sk->oob != NULL && PyList_GET_SIZE(sk->oob) > 0)
		return batch_oob_data(r, sk->buf, sk->len, sk->oob);
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
batch_digest(brec *r, PyObject *digests, PyObject *key, const void *data,
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
batch_dump_plain(batchobject *b, PyObject *idmap, PyObject *key,
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
	if (pymod_idmap_alias(idmap, obj, key))
		return 2;
	if ((r = pyenc_plain(obj, idmap, &b->arena, &b->alen, &b->acap,
	    &oob, &refs)) <= 0)
		return r < 0 ? -1 : 2;
	len = b->alen - start;
	if ((rec = batch_slot(b)) == NULL)
		goto error;
	rec->in.flags = (uint16_t)flags;
	rec->refs = refs;   /* stolen; NULL: none */
	refs = NULL;
	rp = rec->refs != NULL ? PyBytes_AS_STRING(rec->refs) : "";
	rn = rec->refs != NULL ? (size_t)PyBytes_GET_SIZE(rec->refs) : 0;
	if (oob != NULL) {
		r = batch_oob_data(rec, b->arena + start, len, oob);
		b->alen = start;   /* the record has its own copy */
		Py_CLEAR(oob);
		if (r < 0 || (r = batch_digest(rec, digests, key, rec->data,
		    rec->data_len, rp, rn)) < 0)
			goto error_rec;
	} else if ((r = batch_digest(rec, digests, key, b->arena + start, len,
	    rp, rn)) < 0)
		goto error_rec;
	if (r == 0) {
		/* unchanged: not written */
		brec_clear(rec);
		b->alen = start;
		return 0;
	}
	if (brec_key(rec, key) < 0 || brec_type(rec, tn) < 0)
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
	brec_clear(rec);
error:
	Py_XDECREF(oob);
	Py_XDECREF(refs);
	b->alen = start;
	return -1;
}

/* Pickle obj into the sink and, when it changed, into a record.
 * Returns 1 when added, 0 when unchanged, -1 with an exception. */
static int
batch_dump_obj(batchobject *b, const struct pmeth *pm, sinkobject *sk,
               PyObject *idmap, PyObject *key, PyObject *obj, unsigned flags,
               PyObject *tn, PyObject *digests)
{
	PyObject *r = NULL, *refs = NULL;
	brec *rec;
	int rc;

	if ((rc = batch_dump_plain(b, idmap, key, obj, flags, tn, digests))
	    != 2)
		return rc;
	sink_reset(sk);
	if ((r = PyObject_CallNoArgs(pm->clear_memo)) == NULL)
		return -1;
	Py_DECREF(r);
	pymod_idmap_begin(idmap, obj, key);
	r = PyObject_CallOneArg(pm->dump, obj);
	refs = pymod_idmap_end(idmap);
	if (r == NULL || refs == NULL) {
		Py_XDECREF(r);
		Py_XDECREF(refs);
		return -1;
	}
	Py_DECREF(r);
	if ((rec = batch_slot(b)) == NULL)
		goto error;
	rec->in.pickler = STORE_PICKLER_PICKLE;
	rec->in.flags = (uint16_t)flags;
	if (PyBytes_GET_SIZE(refs) > 0) {
		rec->refs = refs; /* stolen */
		b->nrefs++;
	} else
		Py_DECREF(refs);
	refs = NULL;
	if (brec_key(rec, key) < 0 || batch_take_data(rec, sk) < 0)
		goto error_rec;
	if ((rc = batch_digest(rec, digests, key, rec->data, rec->data_len,
	    rec->refs != NULL ? PyBytes_AS_STRING(rec->refs) : "",
	    rec->refs != NULL ? (size_t)PyBytes_GET_SIZE(rec->refs) : 0)) < 0)
		goto error_rec;
	if (rc == 0) {
		brec_clear(rec);
		return 0;
	}
	if (brec_type(rec, tn) < 0)
		goto error_rec;
	b->n++;
	return 1;
error_rec:
	brec_clear(rec);
error:
	Py_XDECREF(refs);
	return -1;
}

/* ---------------------------------------------------------------------- */
/* type names and the namespace diff                                     */

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

/* Atoms: pickled inline, never referenced by identity. */
static int
pybatch_atomic(PyObject *o)
{
	return o == Py_None || PyLong_Check(o) || PyFloat_Check(o) ||
	    PyUnicode_Check(o) || PyBytes_Check(o) || PyComplex_Check(o);
}

/* Is name a dunder ("__name__")? */
static int
pybatch_dunder(PyObject *name)
{
	Py_ssize_t n = PyUnicode_GET_LENGTH(name);

	return n > 4 && PyUnicode_READ_CHAR(name, 0) == '_' &&
	    PyUnicode_READ_CHAR(name, 1) == '_' &&
	    PyUnicode_READ_CHAR(name, n - 1) == '_' &&
	    PyUnicode_READ_CHAR(name, n - 2) == '_';
}

/* The entry key ("g", name) of a global; new reference. */
static PyObject *
pybatch_gkey(PyObject *name)
{
	static PyObject *g;   /* interned "g", kept for the process */

	if (g == NULL && (g = PyUnicode_InternFromString("g")) == NULL)
		return NULL;
	return PyTuple_Pack(2, g, name);
}

/* A global rebound (or newly bound) to v: shadow, idmap, dirty. */
static int
pybatch_bind(PyObject *name, PyObject *v, PyObject *old, PyObject *shadow,
             PyObject *idmap, PyObject *dirty, PyObject *deleted)
{
	PyObject *key = pybatch_gkey(name);
	int rc = -1;

	if (key == NULL)
		return -1;
	if (old != NULL && !pybatch_atomic(old) &&
	    pymod_idmap_discard(idmap, old, key) < 0)
		goto out;
	if (PyDict_SetItem(shadow, name, v) < 0)
		goto out;
	if (!pybatch_atomic(v) && pymod_idmap_add(idmap, v, key) < 0)
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
pybatch_note_unbound(PyObject *unbound, PyObject *name, PyObject *old)
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
pybatch_unbind(PyObject *name, PyObject *old, PyObject *shadow,
               PyObject *idmap, PyObject *dirty, PyObject *deleted,
               PyObject *graves, PyObject *unbound)
{
	PyObject *key;
	int rc = -1;

	if (PyList_Append(graves, old) < 0)
		return -1;
	if ((key = pybatch_gkey(name)) == NULL)
		return -1;
	if (!pybatch_atomic(old) && (pymod_idmap_discard(idmap, old, key) < 0 ||
	    pybatch_note_unbound(unbound, name, old) < 0))
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
pybatch_diff_one(PyObject *name, PyObject *v, PyObject *shadow,
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
		return old == NULL ? 0 : pybatch_unbind(name, old, shadow, idmap,
		    dirty, deleted, graves, unbound);
	if (old == v)
		return 0;
	if (old != NULL && (PyList_Append(graves, old) < 0 ||
	    (!pybatch_atomic(old) &&
	    pybatch_note_unbound(unbound, name, old) < 0)))
		return -1;
	if (old == NULL && fresh != NULL && PyList_Append(fresh, name) < 0)
		return -1;
	return pybatch_bind(name, v, old, shadow, idmap, dirty, deleted);
}

/* How many diffs looked only at the noted names, and how many at all. */
static unsigned long long diffs_tracked, diffs_full;

/* diff_counts() -> (tracked, full) */
static PyObject *
pybatch_diff_counts(PyObject *self, PyObject *unused)
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
pybatch_collect(PyObject *self, PyObject *args)
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
	if (PyObject_TypeCheck(ns, &pymod_NamespaceType) &&
	    (changed = pymod_ns_take_changed(ns)) != NULL &&
	    PySet_GET_SIZE(changed) * 4 > PyDict_GET_SIZE(ns))
		Py_CLEAR(changed);
	if (changed != NULL) {
		if (PySet_GET_SIZE(changed) > 0 && pymod_idmap_reserve(idmap,
		    (size_t)PySet_GET_SIZE(changed)) < 0)
			goto error;
		if ((it = PyObject_GetIter(changed)) == NULL)
			goto error;
		while ((k = PyIter_Next(it)) != NULL) {
			int rc = 0;
			if (PyUnicode_Check(k) && !pybatch_dunder(k)) {
				v = PyDict_GetItemWithError(ns, k); /* borrowed */
				rc = v == NULL && PyErr_Occurred() ? -1 :
				    pybatch_diff_one(k, v, shadow, idmap, dirty,
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
	    pymod_idmap_reserve(idmap, (size_t)(PyDict_GET_SIZE(ns) - known)) < 0)
		goto error;
	while (PyDict_Next(ns, &pos, &k, &v)) { /* borrowed k, v */
		if (!PyUnicode_Check(k) || pybatch_dunder(k))
			continue;
		if (pybatch_diff_one(k, v, shadow, idmap, dirty, deleted, graves,
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
		if (old == NULL || pybatch_unbind(name, old, shadow, idmap, dirty,
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

/* One object to dump: its key and flags (references held). */
struct ditem {
	PyObject *key, *obj;
	unsigned flags;
};

/* A 64-bit sort key and what it sorts: a record's in (batch_order), or
 * an index (ditem_sort). */
struct skey {
	uint64_t k;
	union {
		store_entry_in *in;
		size_t i;
	};
};

/* Stable LSD radix sort of a[0..n) on k; tmp has room for n.  One pass
 * counts all eight bytes; a byte that is the same everywhere (the high
 * bytes of addresses, the padding of short names) costs no pass. */
static void
skey_radix(struct skey *a, struct skey *tmp, size_t n)
{
	struct skey *src = a, *dst = tmp, *t;
	size_t cnt[8][256], i, sum;
	int d;

	memset(cnt, 0, sizeof cnt);
	for (i = 0; i < n; i++)
		for (d = 0; d < 8; d++)
			cnt[d][(a[i].k >> (8 * d)) & 0xff]++;
	for (d = 0; d < 8; d++) {
		size_t *c = cnt[d];
		if (c[(a[0].k >> (8 * d)) & 0xff] == n)
			continue;   /* one byte value everywhere */
		for (i = 0, sum = 0; i < 256; i++) {
			size_t x = c[i];
			c[i] = sum;
			sum += x;
		}
		for (i = 0; i < n; i++)
			dst[c[(src[i].k >> (8 * d)) & 0xff]++] = src[i];
		t = src;
		src = dst;
		dst = t;
	}
	if (src != a)
		memcpy(a, src, n * sizeof *a);
}

/* Put *items (n of them) in the order of their objects' addresses, so
 * that dump_keys walks the objects in the order of their memory, not in
 * the keys' hash order: objects made one after another (the dicts of one
 * comprehension) lie side by side, and the hardware fetches the next ones
 * while one is pickled.  A 10,000-dict checkpoint pickled 1.5 ms faster
 * than in a random order.  Without memory for the sort, they stay in the
 * keys' order, which costs nothing but speed. */
static void
ditem_sort(struct ditem **items, size_t n)
{
	struct skey *k = PyMem_Malloc(2 * n * sizeof *k);
	struct ditem *a = *items, *sorted = PyMem_Malloc(n * sizeof *sorted);
	size_t i;

	if (k != NULL && sorted != NULL) {
		for (i = 0; i < n; i++) {
			k[i].k = (uintptr_t)a[i].obj;
			k[i].i = i;
		}
		skey_radix(k, k + n, n);
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
dump_gather(PyObject *keys, PyObject *shadow, PyObject *handles,
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
 * are pickled in the order of their addresses (ditem_sort). */
static PyObject *
batch_dump_keys(PyObject *self, PyObject *args)
{
	batchobject *b = (batchobject *)self;
	PyObject *pickler, *sink, *idmap, *keys, *shadow, *handles, *hflags,
	    *digests, *skip, *failed = NULL, *res = NULL;
	struct pmeth pm = {NULL, NULL};
	struct ditem *items = NULL;
	Py_ssize_t written = 0;
	size_t n = 0, i;

	if (!PyArg_ParseTuple(args, "OO!OOO!O!O!O!O:dump_keys", &pickler,
	    &pybatch_SinkType, &sink, &idmap, &keys, &PyDict_Type, &shadow,
	    &PyDict_Type, &handles, &PyDict_Type, &hflags,
	    &pydigest_DigestMapType, &digests, &skip))
		return NULL;
	if (pmeth_get(&pm, pickler) < 0 || (failed = PyList_New(0)) == NULL ||
	    dump_gather(keys, shadow, handles, hflags, skip, &items, &n) < 0 ||
	    batch_reserve(b, n) < 0)
		goto out;
	if (n > 16)
		ditem_sort(&items, n);
	for (i = 0; i < n; i++) {
		PyObject *key = items[i].key, *obj = items[i].obj, *tn;
		int rc;
		/* an exception's handle keeps its exc_type and message in its
		 * record's type-name area, for listings that unpickle nothing */
		tn = items[i].flags & STORE_FLAG_EXCINFO ?
		    PyObject_CallMethod(pyio_backend, "excinfo_type_name", "(O)",
		    obj) : pybatch_type_name(obj);
		if (tn == NULL)
			goto out;
		if (!PyUnicode_Check(tn)) {
			PyErr_Format(PyExc_TypeError, "excinfo_type_name() "
			    "returned %.200s, not str", Py_TYPE(tn)->tp_name);
			Py_DECREF(tn);
			goto out;
		}
		rc = batch_dump_obj(b, &pm, (sinkobject *)sink, idmap, key,
		    obj, items[i].flags, tn, digests);
		if (rc < 0) {
			PyObject *item;
			if (!PyErr_ExceptionMatches(PyExc_Exception)) {
				Py_DECREF(tn);
				goto out;
			}
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
	res = Py_BuildValue("nO", written, failed);
out:
	sink_reset((sinkobject *)sink);
	pmeth_clear(&pm);
	for (i = 0; i < n; i++) {
		Py_DECREF(items[i].key);
		Py_DECREF(items[i].obj);
	}
	PyMem_Free(items);
	Py_XDECREF(failed);
	return res;
}

PyMethodDef pybatch_methods[] = {
	{"collect", pybatch_collect, METH_VARARGS,
	 "collect(ns, shadow, idmap, dirty, deleted[, fresh]) -> "
	 "[(name, old)] for the names whose old (non-atomic) object was "
	 "replaced or removed"},
	{"type_name", pybatch_type_name_py, METH_O, "type_name(obj)"},
	{"diff_counts", pybatch_diff_counts, METH_NOARGS,
	 "diff_counts() -> (namespace diffs of the noted names, full ones)"},
	{"plain_dumps", pyenc_plain_dumps, METH_O,
	 "plain_dumps(obj) -> the fast path's pickle of obj, or None"},
	{NULL, NULL, 0, NULL}
};

/* add(key, pickler, flags, type_name, refs, digest, parts): a record
 * pickled elsewhere; parts are bytes-likes concatenated as the payload. */
static PyObject *
batch_add(PyObject *self, PyObject *args)
{
	batchobject *b = (batchobject *)self;
	PyObject *key, *refs, *digest, *parts, *tn;
	int pickler, flags;
	brec *rec;

	if (!PyArg_ParseTuple(args, "OiiO!O!O!O!:add", &key, &pickler, &flags,
	    &PyUnicode_Type, &tn, &PyBytes_Type, &refs, &PyBytes_Type, &digest,
	    &PyList_Type, &parts))
		return NULL;
	if (PyBytes_GET_SIZE(digest) != 16) {
		PyErr_SetString(PyExc_ValueError, "a digest is 16 bytes");
		return NULL;
	}
	if ((rec = batch_slot(b)) == NULL)
		return NULL;
	if (brec_key(rec, key) < 0 || brec_type(rec, tn) < 0)
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
	brec_clear(rec);
	return NULL;
}

/* refs() -> [(key, refs)] of the records that refer to other entries */
static PyObject *
batch_refs(PyObject *self, PyObject *unused)
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
batch_drop(PyObject *self, PyObject *keys)
{
	batchobject *b = (batchobject *)self;
	size_t i, j = 0;
	int r;

	for (i = 0; i < b->n; i++) {
		if ((r = PySequence_Contains(keys, b->recs[i].key)) < 0)
			return NULL;
		if (r)
			brec_clear(&b->recs[i]);
		else
			b->recs[j++] = b->recs[i];
	}
	b->n = j;
	Py_RETURN_NONE;
}

/* delete(key): remove an entry in the same transaction. */
static PyObject *
batch_delete(PyObject *self, PyObject *key)
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
batch_unref(PyObject *self, PyObject *args)
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

/* Everything one commit needs, outside the GIL. */
struct bcommit {
	batchobject *b;          /* its order and iov are filled for this commit */
	const struct pyctx *ctx; /* the store and session record written */
	size_t n;                /* records in this commit (b->order[0..n)) */
	size_t bytes;            /* payload bytes in all */
	Py_buffer *views;        /* acquired buffers */
	size_t nviews;
	brec *dels;              /* parsed delete keys */
	Py_ssize_t ndels;
	brec *unrefs;            /* parsed unref pairs: target, referrer */
	Py_ssize_t nunrefs;
	store_session sess;
	uint64_t now;
};

/* Key order of two records' entries, for puts in B-tree order. */
static int
batch_cmp(const store_entry_in *a, const store_entry_in *b)
{
	size_t n;
	int c;

	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	if (a->kind == STORE_KIND_HANDLE)
		return a->handle < b->handle ? -1 : a->handle > b->handle;
	n = a->name_len < b->name_len ? a->name_len : b->name_len;
	if ((c = memcmp(a->name, b->name, n)) != 0)
		return c;
	return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

/*
 * Sorting the records into key order (LMDB's: memcmp, then length) so that
 * the puts walk the B-tree left to right.  qsort's comparisons cost more
 * than the puts they save, so: a radix sort on the key's next 8 bytes
 * (big-endian, zero-padded; passes whose byte is the same everywhere are
 * skipped), then the same on the following 8 bytes within each run that
 * is still tied; short runs by insertion.
 */

static uint64_t
skey_chunk(const store_entry_in *in, size_t off)
{
	uint64_t v = 0;
	size_t i;

	if (in->kind == STORE_KIND_HANDLE)
		return off == 0 ? in->handle : 0;
	for (i = 0; i < 8; i++)
		v = v << 8 | (off + i < in->name_len ?
		    (uint8_t)in->name[off + i] : 0);
	return v;
}


/* Insertion sort by name length: for names equal up to zero padding. */
static void
skey_sort_len(struct skey *a, size_t n)
{
	size_t i, j;

	for (i = 1; i < n; i++) {
		struct skey x = a[i];
		for (j = i; j > 0 && a[j - 1].in->name_len > x.in->name_len; j--)
			a[j] = a[j - 1];
		a[j] = x;
	}
}

/* Sort a[0..n) of one kind, all equal in their first off bytes. */
static void
skey_sort(struct skey *a, struct skey *tmp, size_t n, size_t off)
{
	size_t i, j, k;
	int longer;

	if (n <= 16) {
		for (i = 1; i < n; i++) {
			struct skey x = a[i];
			for (j = i; j > 0 && batch_cmp(a[j - 1].in, x.in) > 0; j--)
				a[j] = a[j - 1];
			a[j] = x;
		}
		return;
	}
	for (i = 0; i < n; i++)
		a[i].k = skey_chunk(a[i].in, off);
	skey_radix(a, tmp, n);
	for (i = 0; i < n; i = j) {
		for (j = i + 1, longer = 0; j < n && a[j].k == a[i].k; j++)
			;
		if (j - i < 2)
			continue;
		for (k = i; k < j; k++)
			if (a[k].in->kind == STORE_KIND_GLOBAL &&
			    a[k].in->name_len > off + 8)
				longer = 1;
		if (longer)
			skey_sort(a + i, tmp, j - i, off + 8);
		else    /* tied up to zero padding: shorter first */
			skey_sort_len(a + i, j - i);
	}
}

/* The store key of a record's (or a parsed key's) in. */
static store_key
batch_skey(const store_entry_in *in)
{
	store_key k;

	memset(&k, 0, sizeof k);
	k.kind = in->kind;
	k.name = in->name;
	k.name_len = in->name_len;
	k.handle = in->handle;
	return k;
}

/* The references index in step with this commit: a row for every target
 * of every record written with references (rows already there stay),
 * and the rows the caller asked to forget (unref).  The refs blobs are
 * bytes the records hold: read without the GIL, they cannot change. */
static int
batch_index_refs(store_txn *t, struct bcommit *bc)
{
	batchobject *b = bc->b;
	size_t i, off, n, len;
	Py_ssize_t j;
	int rc;

	/* in the records' key order: a target's referrers then come in the
	 * order of its duplicates, which LMDB inserts without moving others */
	for (i = 0; b->nrefs > 0 && i < bc->n; i++) {
		const brec *r = (const brec *)b->order[i]; /* in is the first */
		const uint8_t *p;
		store_key rk, tk;
		if (r->refs == NULL || PyBytes_GET_SIZE(r->refs) == 0)
			continue;
		rk = batch_skey(&r->in);
		p = (const uint8_t *)PyBytes_AS_STRING(r->refs);
		n = (size_t)PyBytes_GET_SIZE(r->refs);
		for (off = 0; off + 3 <= n; off += 3 + len) {
			len = (size_t)p[off + 1] << 8 | p[off + 2];
			if (off + 3 + len > n)
				return STORE_E_INVAL;
			memset(&tk, 0, sizeof tk);
			tk.kind = p[off];
			tk.name = (const char *)p + off + 3;
			tk.name_len = len;
			if (tk.kind == STORE_KIND_HANDLE) {
				if (len != 8)
					return STORE_E_INVAL;
				tk.handle = wire_be64_get(p + off + 3);
			}
			if ((rc = refs_put(t, bc->sess.id, &tk, &rk)) != 0)
				return rc;
		}
	}
	for (j = 0; j + 1 < bc->nunrefs; j += 2) {
		store_key tk = batch_skey(&bc->unrefs[j].in),
		    rk = batch_skey(&bc->unrefs[j + 1].in);
		if ((rc = refs_del(t, bc->sess.id, &tk, &rk)) != 0)
			return rc;
	}
	return 0;
}

static int
batch_commit_txn(store_txn *t, void *arg)
{
	struct bcommit *bc = arg;
	Py_ssize_t j;
	int rc;

	rc = entry_put_sorted(t, bc->sess.id,
	    (const store_entry_in *const *)bc->b->order, bc->n, bc->now);
	if (rc != 0 || (rc = batch_index_refs(t, bc)) != 0)
		return rc;
	for (j = 0; j < bc->ndels; j++) {
		const store_entry_in *d = &bc->dels[j].in;
		rc = entry_del(t, bc->sess.id, d->kind, d->name, d->name_len,
		    d->handle);
		if (rc != 0 && rc != STORE_E_NOTFOUND)
			return rc;
	}
	return session_put(t, &bc->sess);
}

/* Count the iovecs a record needs. */
static size_t
batch_nparts(const brec *r)
{
	return (r->data != NULL || r->in_arena ? 1 : 0) +
	    (r->oob != NULL ? (size_t)PyList_GET_SIZE(r->oob) : 0);
}

/* b->order: the records in key order, globals ('g') before handles. */
static void
batch_order(struct bcommit *bc)
{
	size_t n = bc->b->n, i, ng = 0, nh;
	struct skey *a = bc->b->skeys, *tmp = a + n;
	brec *r = bc->b->recs;

	for (i = 0; i < n; i++)
		if (r[i].in.kind == STORE_KIND_GLOBAL && !r[i].out)
			a[ng++].in = &r[i].in;
	for (i = 0, nh = ng; i < n; i++)
		if (r[i].in.kind != STORE_KIND_GLOBAL && !r[i].out)
			a[nh++].in = &r[i].in;
	skey_sort(a, tmp, ng, 0);
	skey_sort(a + ng, tmp, nh - ng, 0);
	bc->n = n = nh;
	for (i = 0; i < n; i++) {
		bc->b->order[i] = a[i].in;
#ifdef PYSHELF_DEBUG
		assert(i == 0 ||
		    batch_cmp(bc->b->order[i - 1], bc->b->order[i]) <= 0);
#endif
	}
}

/* Room in b's commit arrays for n records of nparts pieces in all. */
static int
batch_scratch(batchobject *b, size_t n, size_t nparts)
{
	if (n > b->scap) {
		size_t cap = n < 64 ? 64 : n + n / 4;
		store_entry_in **order;
		struct skey *sk;
		order = PyMem_Realloc(b->order, cap * sizeof *order);
		if (order != NULL)
			b->order = order;
		sk = PyMem_Realloc(b->skeys, 2 * cap * sizeof *sk);
		if (sk != NULL)
			b->skeys = sk;
		if (order == NULL || sk == NULL) {
			PyErr_NoMemory();
			return -1;
		}
		b->scap = cap;
	}
	if (nparts > b->iovcap) {
		size_t cap = nparts < 64 ? 64 : nparts + nparts / 4;
		struct iovec *iov = PyMem_Realloc(b->iov, cap * sizeof *iov);
		if (iov == NULL) {
			PyErr_NoMemory();
			return -1;
		}
		b->iov = iov;
		b->iovcap = cap;
	}
	return 0;
}

/* Free the commit arrays. */
static void
batch_scratch_free(batchobject *b)
{
	PyMem_Free(b->order);
	PyMem_Free(b->skeys);
	PyMem_Free(b->iov);
	b->order = NULL;
	b->skeys = NULL;
	b->iov = NULL;
	b->scap = b->iovcap = 0;
}

/* Fill each record's in.iov (buffers acquired here) and bc's order. */
static int
batch_prepare(struct bcommit *bc)
{
	batchobject *b = bc->b;
	size_t i, total = 0, nviews = 0, k = 0, before;
	size_t blob_min = store_blob_min(bc->ctx->st);
	Py_ssize_t j;

	for (i = 0; i < b->n; i++) {
		if (b->recs[i].oob == NULL || b->recs[i].out)
			continue;
		total += batch_nparts(&b->recs[i]);
		nviews += (size_t)PyList_GET_SIZE(b->recs[i].oob);
	}
	if (batch_scratch(b, b->n, total) < 0)
		return -1;
	if (nviews > 0 && (bc->views = PyMem_Calloc(nviews,
	    sizeof *bc->views)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < b->n; i++) {
		brec *r = &b->recs[i];
		store_entry_in *in = &r->in;
		if (r->out)
			continue;
		in->payload_digest = r->late_digest ? r->digest : NULL;
		if (r->refs != NULL) {
			in->refs = (const uint8_t *)PyBytes_AS_STRING(r->refs);
			in->refs_len = (uint32_t)PyBytes_GET_SIZE(r->refs);
		} else {
			in->refs = NULL;
			in->refs_len = 0;
		}
		if (r->oob == NULL) {
			/* one piece (or none): the record's own iovec */
			in->iov = &r->iov1;
			in->iovcnt = r->data != NULL || r->in_arena ? 1 : 0;
			r->iov1.iov_base = r->in_arena ? b->arena + r->aoff : r->data;
			r->iov1.iov_len = r->data_len;
			if (r->data_len < blob_min)
				bc->bytes += r->data_len;
			continue;
		}
		in->iov = &b->iov[k];
		before = bc->bytes;
		if (r->data != NULL || r->in_arena) {
			b->iov[k].iov_base = r->in_arena ? b->arena + r->aoff :
			    r->data;
			b->iov[k++].iov_len = r->data_len;
			bc->bytes += r->data_len;
		}
		for (j = 0; j < PyList_GET_SIZE(r->oob); j++) {
			if (PyObject_GetBuffer(PyList_GET_ITEM(r->oob, j),
			    &bc->views[bc->nviews], PyBUF_SIMPLE) < 0)
				return -1;
			b->iov[k].iov_base = bc->views[bc->nviews].buf;
			bc->bytes += (size_t)bc->views[bc->nviews].len;
			b->iov[k++].iov_len =
			    (size_t)bc->views[bc->nviews++].len;
		}
		in->iovcnt = (int)(&b->iov[k] - in->iov);
		if (bc->bytes - before >= blob_min)
			bc->bytes = before;   /* a blob file: not in the map */
	}
	batch_order(bc);
	return 0;
}

/* Parse the delete keys. */
static int
batch_prepare_dels(struct bcommit *bc)
{
	batchobject *b = bc->b;
	Py_ssize_t j;

	bc->ndels = b->dels != NULL ? PyList_GET_SIZE(b->dels) : 0;
	if ((bc->dels = PyMem_Calloc((size_t)bc->ndels + 1,
	    sizeof *bc->dels)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (j = 0; j < bc->ndels; j++)
		if (brec_key(&bc->dels[j], PyList_GET_ITEM(b->dels, j)) < 0)
			return -1;
	bc->nunrefs = b->unrefs != NULL ? 2 * PyList_GET_SIZE(b->unrefs) : 0;
	if ((bc->unrefs = PyMem_Calloc((size_t)bc->nunrefs + 1,
	    sizeof *bc->unrefs)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (j = 0; j < bc->nunrefs; j += 2) {
		PyObject *pair = PyList_GET_ITEM(b->unrefs, j / 2);
		if (brec_key(&bc->unrefs[j], PyTuple_GET_ITEM(pair, 0)) < 0 ||
		    brec_key(&bc->unrefs[j + 1], PyTuple_GET_ITEM(pair, 1)) < 0)
			return -1;
	}
	return 0;
}

/* After the commit: digests[key] = the digest written, for every record;
 * returns (n, [(key, refs)]) for the records whose references the caller must
 * note: those with references, and those of keys in refs_of (which had
 * some). */
static PyObject *
batch_written(batchobject *b, PyObject *digests, PyObject *refs_of)
{
	PyObject *l = PyList_New(0);
	size_t i, n = 0;

	if (l == NULL)
		return NULL;
	if (pydigest_reserve(digests, b->n) < 0)
		goto error;
	for (i = 0; i < b->n; i++) {
		brec *r = &b->recs[i];
		PyObject *t;
		uint8_t was[16];
		int had = 0;
		if (r->out)
			continue;
		n++;
		/* a key in refs_of has a digest (a record written or loaded):
		 * a new key needs no look-up in the dict (tuple hashes are not
		 * cached) */
		if (r->refs == NULL && PyDict_GET_SIZE(refs_of) > 0 &&
		    ((had = pydigest_get(digests, r->key, was)) < 0 ||
		    (had && (had = PyDict_Contains(refs_of, r->key)) < 0)))
			goto error;
		if (pydigest_set(digests, r->key, r->digest) < 0)
			goto error;
		if (r->refs == NULL && !had)
			continue;
		if (r->refs == NULL && (r->refs = PyBytes_FromStringAndSize(
		    NULL, 0)) == NULL)
			goto error;
		t = PyTuple_Pack(2, r->key, r->refs);
		if (t == NULL || PyList_Append(l, t) < 0) {
			Py_XDECREF(t);
			goto error;
		}
		Py_DECREF(t);
	}
	return Py_BuildValue("nN", (Py_ssize_t)n, l);
error:
	Py_DECREF(l);
	return NULL;
}

/* Drop every record and delete (after a commit, or to abandon). */
static void
batch_reset(batchobject *b)
{
	size_t i;

	for (i = 0; i < b->n; i++)
		brec_clear(&b->recs[i]);
	b->n = 0;
	b->nrefs = 0;
	b->alen = 0;
	Py_CLEAR(b->dels);
	Py_CLEAR(b->unrefs);
	if (b->cap > BATCH_KEEP_RECS) {
		PyMem_Free(b->recs);
		b->recs = NULL;
		b->cap = 0;
	}
	if (b->scap > BATCH_KEEP_RECS)
		batch_scratch_free(b);
	if (b->acap > BATCH_KEEP_ARENA) {
		PyMem_Free(b->arena);
		b->arena = NULL;
		b->acap = 0;
	}
}

/* One write transaction with the records not left out, the batch's
 * deletes and unrefs, and the session record; then digests holds the
 * digest of every record written, and the result names the records whose
 * references must be noted again (batch_written).  A full store is
 * StoreFull, so that the caller can commit what fits (commit_part). */
static PyObject *
batch_commit_run(batchobject *b, PyObject *digests, PyObject *refs_of)
{
	struct bcommit bc;
	PyObject *res = NULL;
	Py_ssize_t j;
	size_t i;
	int rc;

	if (pystore_refuse_child(1))
		return NULL;  /* a fork in shipped code never commits */
	memset(&bc, 0, sizeof bc);
	bc.b = b;
	bc.ctx = pyio_ctx();
	if (bc.ctx->st == NULL) {
		PyErr_SetString(PyExc_RuntimeError, "_pyshelfd has no store "
		    "(the module was not started)");
		return NULL;
	}
	if (batch_prepare(&bc) < 0 || batch_prepare_dels(&bc) < 0)
		goto out;
	bc.now = store_now_ms();
	bc.sess = *bc.ctx->sess;
	bc.sess.last_seen_ms = bc.now;
	Py_BEGIN_ALLOW_THREADS
	if (bc.bytes > ((size_t)1 << 20))
		store_reserve(bc.ctx->st, bc.bytes);
	rc = store_write(bc.ctx->st, batch_commit_txn, &bc);
	Py_END_ALLOW_THREADS
	if (rc != 0) {
		PyErr_Format(rc == STORE_E_CORRUPT ? pystore_CorruptEntry :
		    rc == STORE_E_FULL ? pystore_StoreFull : pystore_StoreError,
		    "checkpoint not written: %s", store_strerror(rc));
		goto out;
	}
	bc.ctx->sess->last_seen_ms = bc.now;
	*bc.ctx->sess_dirty = 0;
	res = batch_written(bc.b, digests, refs_of);
out:
	for (i = 0; i < bc.nviews; i++)
		PyBuffer_Release(&bc.views[i]);
	for (j = 0; bc.dels != NULL && j < bc.ndels; j++)
		Py_CLEAR(bc.dels[j].key);
	for (j = 0; bc.unrefs != NULL && j < bc.nunrefs; j++)
		Py_CLEAR(bc.unrefs[j].key);
	PyMem_Free(bc.views);
	PyMem_Free(bc.dels);
	PyMem_Free(bc.unrefs);
	return res;
}

/* commit(digests, refs_of) -> (n, [(key, refs)]): every record, every
 * delete and the session record in one write transaction (see
 * batch_commit_run).  The batch is emptied whether or not the commit
 * succeeds, but for StoreFull: then it keeps everything for commit_part
 * (the caller clears it). */
static PyObject *
batch_commit(PyObject *self, PyObject *args)
{
	PyObject *res, *digests, *refs_of;

	if (!PyArg_ParseTuple(args, "O!O!:commit", &pydigest_DigestMapType,
	    &digests, &PyDict_Type, &refs_of))
		return NULL;
	res = batch_commit_run((batchobject *)self, digests, refs_of);
	if (res != NULL || !PyErr_ExceptionMatches(pystore_StoreFull))
		batch_reset((batchobject *)self);
	return res;
}

/* commit_part(digests, refs_of, keys, dels, unrefs) -> (n, [(key, refs)]):
 * a commit of the records whose key is in the set keys, the deletes in the
 * list dels and the index rows in the list unrefs (the batch's own deletes
 * and unrefs are left out).  The batch keeps its records, so that a
 * checkpoint that does not fit in the store can commit it piece by piece:
 * what fits now, the rest once there is room. */
static PyObject *
batch_commit_part(PyObject *self, PyObject *args)
{
	batchobject *b = (batchobject *)self;
	PyObject *res = NULL, *digests, *refs_of, *keys, *dels, *unrefs,
	    *sdels, *sunrefs;
	size_t i;
	int r;

	if (!PyArg_ParseTuple(args, "O!O!OO!O!:commit_part",
	    &pydigest_DigestMapType, &digests, &PyDict_Type, &refs_of, &keys,
	    &PyList_Type, &dels, &PyList_Type, &unrefs))
		return NULL;
	if (!PyAnySet_Check(keys)) {
		PyErr_SetString(PyExc_TypeError, "commit_part(): keys must be a "
		    "set");
		return NULL;
	}
	for (i = 0; i < b->n; i++) {
		if ((r = PySet_Contains(keys, b->recs[i].key)) < 0)
			goto out;
		b->recs[i].out = !r;
	}
	sdels = b->dels;
	sunrefs = b->unrefs;
	b->dels = dels;
	b->unrefs = unrefs;
	res = batch_commit_run(b, digests, refs_of);
	b->dels = sdels;
	b->unrefs = sunrefs;
out:
	for (i = 0; i < b->n; i++)
		b->recs[i].out = 0;
	return res;
}

/* records() -> [(key, bytes, refs)]: every record, with the bytes it
 * writes and the references it holds (b"" when none). */
static PyObject *
batch_records(PyObject *self, PyObject *unused)
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
batch_clear(PyObject *self, PyObject *unused)
{
	batch_reset((batchobject *)self);
	Py_RETURN_NONE;
}

static Py_ssize_t
batch_len(PyObject *self)
{
	batchobject *b = (batchobject *)self;

	return (Py_ssize_t)b->n + (b->dels != NULL ? PyList_GET_SIZE(b->dels) : 0);
}

static int
batch_traverse(PyObject *self, visitproc visit, void *arg)
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
batch_clear_gc(PyObject *self)
{
	batch_reset((batchobject *)self);
	return 0;
}

static void
batch_dealloc(PyObject *self)
{
	batchobject *b = (batchobject *)self;

	PyObject_GC_UnTrack(self);
	batch_reset(b);
	PyMem_Free(b->recs);
	PyMem_Free(b->arena);
	batch_scratch_free(b);
	Py_TYPE(self)->tp_free(self);
}

static PyMethodDef batch_methods[] = {
	{"dump_keys", batch_dump_keys, METH_VARARGS,
	 "dump_keys(pickler, sink, idmap, keys, shadow, handles, hflags, "
	 "digests, skip_type) -> (n, failed)"},
	{"add", batch_add, METH_VARARGS,
	 "add(key, pickler, flags, type_name, refs, digest, parts)"},
	{"delete", batch_delete, METH_O, "delete(key)"},
	{"clear", batch_clear, METH_NOARGS, "clear(): forget every record"},
	{"refs", batch_refs, METH_NOARGS, "refs() -> [(key, refs)]"},
	{"drop", batch_drop, METH_O, "drop(keys)"},
	{"unref", batch_unref, METH_VARARGS,
	 "unref(target, referrer): forget that references-index row"},
	{"commit", batch_commit, METH_VARARGS,
	 "commit(digests, refs_of) -> (records written, [(key, refs)])"},
	{"commit_part", batch_commit_part, METH_VARARGS,
	 "commit_part(digests, refs_of, keys, dels, unrefs) -> (records "
	 "written, [(key, refs)]); the batch keeps its records"},
	{"records", batch_records, METH_NOARGS,
	 "records() -> [(key, bytes, refs)]"},
	{NULL, NULL, 0, NULL}
};

static PySequenceMethods batch_as_seq = {.sq_length = batch_len};

PyTypeObject pybatch_BatchType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.Batch",
	.tp_basicsize = sizeof(batchobject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "the records of one checkpoint",
	.tp_methods = batch_methods,
	.tp_as_sequence = &batch_as_seq,
	.tp_dealloc = batch_dealloc,
	.tp_traverse = batch_traverse,
	.tp_clear = batch_clear_gc,
	.tp_new = PyType_GenericNew,
};
