/*
 * pycommit.c - a Batch's commit: every record, every delete, the
 * references index and the session record in one write transaction with
 * the GIL released, the records in key order, out-of-band buffers
 * written from where they are.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"
#include "pyexec.h"

#include "pybatch.h"

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

/* The store key of a record's (or a parsed key's) in. */
static store_key
pycommit_skey(const store_entry_in *in)
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
pycommit_index_refs(store_txn *t, struct bcommit *bc)
{
	batchobject *b = bc->b;
	size_t i, off, n;
	Py_ssize_t j;
	int rc;

	/* in the records' key order: a target's referrers then come in the
	 * order of its duplicates, which LMDB inserts without moving others */
	for (i = 0; b->nrefs > 0 && i < bc->n; i++) {
		const brec *r = (const brec *)b->order[i]; /* in is the first */
		const uint8_t *p;
		const char *why;
		store_key rk, tk;
		if (r->refs == NULL || PyBytes_GET_SIZE(r->refs) == 0)
			continue;
		rk = pycommit_skey(&r->in);
		p = (const uint8_t *)PyBytes_AS_STRING(r->refs);
		n = (size_t)PyBytes_GET_SIZE(r->refs);
		off = 0;
		/* the store's iterator: a blob it calls damaged is refused */
		while ((rc = refs_blob_next(p, n, &off, &tk, &why)) == 1)
			if ((rc = refs_put(t, bc->sess.id, &tk, &rk)) != 0)
				return rc;
		if (rc != 0)
			return STORE_E_INVAL;
	}
	for (j = 0; j + 1 < bc->nunrefs; j += 2) {
		store_key tk = pycommit_skey(&bc->unrefs[j].in),
		    rk = pycommit_skey(&bc->unrefs[j + 1].in);
		if ((rc = refs_del(t, bc->sess.id, &tk, &rk)) != 0)
			return rc;
	}
	return 0;
}

static int
pycommit_txn(store_txn *t, void *arg)
{
	struct bcommit *bc = arg;
	store_session cur;
	Py_ssize_t j;
	int rc;

	/* a session ended under us (END_SESSION, pyshelf.end()) takes no
	 * more records: they would outlive its purge */
	if ((rc = session_get_by_id(t, bc->sess.id, &cur)) != 0)
		return rc == STORE_E_NOTFOUND ? STORE_E_DEAD : rc;
	if (cur.state != STORE_STATE_LIVE)
		return STORE_E_DEAD;
	rc = entry_put_sorted(t, bc->sess.id,
	    (const store_entry_in *const *)bc->b->order, bc->n, bc->now);
	if (rc != 0 || (rc = pycommit_index_refs(t, bc)) != 0)
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
pycommit_nparts(const brec *r)
{
	return (r->data != NULL || r->in_arena ? 1 : 0) +
	    (r->oob != NULL ? (size_t)PyList_GET_SIZE(r->oob) : 0);
}

/* b->order: the records in key order, globals ('g') before handles. */
static void
pycommit_order(struct bcommit *bc)
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
	pysort_keys(a, tmp, ng, 0);
	pysort_keys(a + ng, tmp, nh - ng, 0);
	bc->n = n = nh;
	for (i = 0; i < n; i++) {
		bc->b->order[i] = a[i].in;
#ifdef PYSHELF_DEBUG
		assert(i == 0 ||
		    pysort_cmp(bc->b->order[i - 1], bc->b->order[i]) <= 0);
#endif
	}
}

/* Room in b's commit arrays for n records of nparts pieces in all. */
static int
pycommit_scratch(batchobject *b, size_t n, size_t nparts)
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
void
pycommit_scratch_free(batchobject *b)
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
pycommit_prepare(struct bcommit *bc)
{
	batchobject *b = bc->b;
	size_t i, total = 0, nviews = 0, k = 0, before;
	size_t blob_min = store_blob_min(bc->ctx->st);
	Py_ssize_t j;

	for (i = 0; i < b->n; i++) {
		if (b->recs[i].oob == NULL || b->recs[i].out)
			continue;
		total += pycommit_nparts(&b->recs[i]);
		nviews += (size_t)PyList_GET_SIZE(b->recs[i].oob);
	}
	if (pycommit_scratch(b, b->n, total) < 0)
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
	pycommit_order(bc);
	return 0;
}

/* Parse the delete keys. */
static int
pycommit_prepare_dels(struct bcommit *bc)
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
		if (pybatch_rec_key(&bc->dels[j], PyList_GET_ITEM(b->dels, j)) < 0)
			return -1;
	bc->nunrefs = b->unrefs != NULL ? 2 * PyList_GET_SIZE(b->unrefs) : 0;
	if ((bc->unrefs = PyMem_Calloc((size_t)bc->nunrefs + 1,
	    sizeof *bc->unrefs)) == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (j = 0; j < bc->nunrefs; j += 2) {
		PyObject *pair = PyList_GET_ITEM(b->unrefs, j / 2);
		if (pybatch_rec_key(&bc->unrefs[j], PyTuple_GET_ITEM(pair, 0)) < 0 ||
		    pybatch_rec_key(&bc->unrefs[j + 1], PyTuple_GET_ITEM(pair, 1)) < 0)
			return -1;
	}
	return 0;
}

/* After the commit: digests[key] = the digest written, for every record;
 * returns (n, [(key, refs)]) for the records whose references the caller must
 * note: those with references, and those of keys in refs_of (which had
 * some). */
static PyObject *
pycommit_written(batchobject *b, PyObject *digests, PyObject *refs_of)
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
	return pyfields_named(pyfields_Committed, Py_BuildValue("nN",
	    (Py_ssize_t)n, l));
error:
	Py_DECREF(l);
	return NULL;
}

/* Drop every record and delete (after a commit, or to abandon). */
void
pycommit_reset(batchobject *b)
{
	size_t i;

	for (i = 0; i < b->n; i++)
		pybatch_rec_clear(&b->recs[i]);
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
		pycommit_scratch_free(b);
	if (b->acap > BATCH_KEEP_ARENA) {
		PyMem_Free(b->arena);
		b->arena = NULL;
		b->acap = 0;
	}
}

/* One write transaction with the records not left out, the batch's
 * deletes and unrefs, and the session record; then digests holds the
 * digest of every record written, and the result names the records whose
 * references must be noted again (pycommit_written).  A full store is
 * StoreFull, so that the caller can commit what fits (commit_part). */
static PyObject *
pycommit_run(batchobject *b, PyObject *digests, PyObject *refs_of)
{
	struct bcommit bc;
	PyObject *res = NULL;
	Py_ssize_t j;
	size_t i;
	char *cause = NULL;
	int rc;

	if (pystore_refuse_child(1))
		return NULL;  /* a fork in shipped code never commits */
	memset(&bc, 0, sizeof bc);
	bc.b = b;
	bc.ctx = pymodule_ctx();
	if (bc.ctx->st == NULL) {
		PyErr_SetString(PyExc_RuntimeError, "_pyshelfd has no store "
		    "(the module was not started)");
		return NULL;
	}
	if (pycommit_prepare(&bc) < 0 || pycommit_prepare_dels(&bc) < 0)
		goto out;
	bc.now = store_now_ms();
	bc.sess = *bc.ctx->sess;
	bc.sess.last_seen_ms = bc.now;
	Py_BEGIN_ALLOW_THREADS
	if (bc.bytes > ((size_t)1 << 20))
		store_reserve(bc.ctx->st, bc.bytes);
	rc = store_write_cause(bc.ctx->st, pycommit_txn, &bc, &cause);
	Py_END_ALLOW_THREADS
	if (rc != 0) {
		/* the step that failed and its path, when the store knows
		 * them: "fdatasync DB/blobs/ab12...: No space left on device" */
		PyErr_Format(rc == STORE_E_CORRUPT ? pystore_CorruptEntry :
		    rc == STORE_E_FULL ? pystore_StoreFull : pystore_StoreError,
		    "checkpoint not written: %s%s%s%s", store_strerror(rc),
		    cause != NULL ? " (" : "", cause != NULL ? cause : "",
		    cause != NULL ? ")" : "");
		free(cause);
		goto out;
	}
	bc.ctx->sess->last_seen_ms = bc.now;
	*bc.ctx->sess_dirty = 0;
	res = pycommit_written(bc.b, digests, refs_of);
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
 * pycommit_run).  The batch is emptied whether or not the commit
 * succeeds, but for StoreFull: then it keeps everything for commit_part
 * (the caller clears it). */
PyObject *
pycommit_commit(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = {"digests", "refs_of", NULL};
	PyObject *res, *digests, *refs_of;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!:commit", names,
	    &pydigest_DigestMapType,
	    &digests, &PyDict_Type, &refs_of))
		return NULL;
	res = pycommit_run((batchobject *)self, digests, refs_of);
	if (res != NULL || !PyErr_ExceptionMatches(pystore_StoreFull))
		pycommit_reset((batchobject *)self);
	return res;
}

/* commit_part(digests, refs_of, keys, dels, unrefs) -> (n, [(key, refs)]):
 * a commit of the records whose key is in the set keys, the deletes in the
 * list dels and the index rows in the list unrefs (the batch's own deletes
 * and unrefs are left out).  The batch keeps its records, so that a
 * checkpoint that does not fit in the store can commit it piece by piece:
 * what fits now, the rest once there is room. */
PyObject *
pycommit_commit_part(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = {"digests", "refs_of", "keys", "dels", "unrefs",
	    NULL};
	batchobject *b = (batchobject *)self;
	PyObject *res = NULL, *digests, *refs_of, *keys, *dels, *unrefs,
	    *sdels, *sunrefs;
	size_t i;
	int r;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!OO!O!:commit_part", names,
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
	res = pycommit_run(b, digests, refs_of);
	b->dels = sdels;
	b->unrefs = sunrefs;
out:
	for (i = 0; i < b->n; i++)
		b->recs[i].out = 0;
	return res;
}
