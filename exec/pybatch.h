/*
 * pybatch.h - the Batch object, shared by pybatch.c (records, dumps) and
 * pycommit.c (the commit).  Include after pyexec.h.
 */
#ifndef PYSHELF_PYBATCH_H
#define PYSHELF_PYBATCH_H

#include <sys/uio.h>

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

/* pybatch.c */
/* Release what record r holds. */
void pybatch_rec_clear(brec *r);
/* Split a key tuple into r's kind/name/handle (r holds key); 0 or -1. */
int pybatch_rec_key(brec *r, PyObject *key);

/* pycommit.c */
/* Forget every record (keep the arrays unless large). */
void pycommit_reset(batchobject *b);
/* Free the commit's arrays. */
void pycommit_scratch_free(batchobject *b);
/* commit(digests, refs_of), commit_part(digests, refs_of, keys, dels,
 * unrefs): the methods. */
PyObject *pycommit_commit(PyObject *self, PyObject *args, PyObject *kw);
PyObject *pycommit_commit_part(PyObject *self, PyObject *args,
                               PyObject *kw);

#endif
