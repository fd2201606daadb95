/*
 * pyexec.h - what the files of the _pyshelfd module (exec/py*.c) share,
 * and what dispatch.c, interp.c and worker.c call of them.  Include after
 * Python.h.
 * Every function here needs the GIL held and returns with it held.
 */
#ifndef PYSHELF_PYEXEC_H
#define PYSHELF_PYEXEC_H

#include "store.h"

struct worker;

/* What a SIGINT/SIGTERM means to the running code (pyctx.on_signal). */
enum pyctx_sig {
	PYCTX_SIG_NONE = 0,       /* nothing to raise */
	PYCTX_SIG_INTERRUPT = 1,  /* raise KeyboardInterrupt */
	PYCTX_SIG_TIMEOUT = 2,    /* raise TimeoutError (request timeout) */
	PYCTX_SIG_SHUTDOWN = 3    /* raise KeyboardInterrupt saying the
	                             backend is stopping (SIGTERM) */
};

/*
 * What the _pyshelfd module works on, given by its owner (the worker) to
 * pymodule_start(), which keeps a copy: the py*.c files reach the
 * store, the session record and the worker through this only, never
 * through a global of worker.c, so that each owner (a worker of server
 * mode, a test) can hand in its own.  Pointers are the owner's and must
 * outlive the interpreter.
 */
struct pyctx {
	store *st;                   /* the open store */
	store_session *sess;         /* the session record, as last written:
	                                next_handle is taken from it, a commit
	                                writes it and sets last_seen_ms */
	int *sess_dirty;             /* *sess changed since the last commit */
	const int *forked;           /* nonzero in a child forked by shipped
	                                code (the atfork flag: no getpid()) */
	int wake_fd;                 /* Python's signal wakeup fd */
	int read_only;               /* the session is open read-only */
	struct worker *owner;        /* first argument of the callbacks */
	/* Send output of the running request on stream 1/2 (releases the
	 * GIL around the write); -1 when the client is gone. */
	int (*output)(struct worker *owner, int stream, const char *p,
	              size_t n);
	/* Is this a child forked by shipped code (the atfork flag, and now and
	 * then the pid)? */
	int (*in_child)(void);
	/* A SIGINT/SIGTERM reached the worker process (not a child): what
	 * the running code must raise (enum pyctx_sig). */
	int (*on_signal)(struct worker *owner, int signum);
	/* A thread of shipped code began (delta 1) or ended (-1) (the
	 * backend's hook on threading.Thread); any thread, GIL held.  The
	 * number of such threads alive after it. */
	int (*threads)(struct worker *owner, int delta);
	/* Is fd one of the backend's own (shipped code must not close it)? */
	int (*fd_owned)(int fd);
	/* The backend's own fds in [lo, hi), ascending, at most max: how
	 * many. */
	int (*fds_list)(int lo, int hi, int *out, int max);
	/* Shipped code looked up a C function that closes fds (the audit
	 * hook, pystream.c): the owner checks its fds before writing. */
	void (*fds_suspect)(void);
};

/* Open addressing with linear probing and backward-shift deletion (the
 * IdMap, the DigestMap): with a hole at slot i, may the entry at slot j,
 * whose home slot is k, move back into it?  Yes unless k lies in the
 * cyclic range (i, j]. */
static inline int
pyexec_shift_back(size_t i, size_t j, size_t k)
{
	return (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j);
}

/* pyns.c */
extern PyTypeObject pyns_NamespaceType;
/* Fill the Namespace's mapping slots from dict's (before PyType_Ready). */
void pyns_ready(void);
/* A dict's version tag (3.12+: a new number every call). */
uint64_t pyns_dict_version(PyObject *d);
/* The names written through Namespace ns since the last call (a set, new
 * reference), or NULL without an exception when every global must be
 * compared (a write went around it). */
PyObject *pyns_take_changed(PyObject *ns);

/* pyidmap.c */
extern PyTypeObject pyidmap_IdMapType;
/* Map obj to key too (an object keeps its first key; later ones are
 * aliases) / key no longer has obj (no type check: an IdMap); 0 or -1. */
int pyidmap_add(PyObject *idmap, PyObject *obj, PyObject *key);
int pyidmap_discard(PyObject *idmap, PyObject *obj, PyObject *key);
/* Make room for n more mappings; 0 or -1. */
int pyidmap_reserve(PyObject *idmap, size_t n);
/* The key of the entry obj is the object of (borrowed), or NULL (also for
 * a NULL idmap). */
PyObject *pyidmap_key(PyObject *idmap, PyObject *obj);

/* Is obj mapped to an entry other than key (key's record of it is then a
 * reference to that entry)? */
int pyidmap_alias(PyObject *idmap, PyObject *obj, PyObject *key);
/* Start a dump of root for entry key (NULL: none) with idmap (no type
 * check: an IdMap); both borrowed until the end. */
void pyidmap_begin(PyObject *idmap, PyObject *root, PyObject *key);
/* End it: the refs blob (new reference) or NULL. */
PyObject *pyidmap_end(PyObject *idmap);

/* pysink.c */
extern PyTypeObject pysink_SinkType;
typedef struct {
	PyObject_HEAD
	char *buf;           /* pickle bytes of the current dump */
	size_t len, cap;
	PyObject *oob;       /* list of PickleBuffers of the current dump */
} sinkobject;
/* Forget the current dump. */
void pysink_reset(sinkobject *s);

/* pysort.c */
/* A 64-bit sort key and what it sorts: a record's in (pycommit_order), or
 * an index (pybatch_sort_items). */
struct skey {
	uint64_t k;
	union {
		store_entry_in *in;
		size_t i;
	};
};
/* Stable LSD radix sort of a[0..n) on k; tmp has room for n. */
void pysort_radix(struct skey *a, struct skey *tmp, size_t n);
/* Key order of two records' entries (LMDB's: memcmp, then length). */
int pysort_cmp(const store_entry_in *a, const store_entry_in *b);
/* Sort a[0..n) (their in) of one kind, all equal in their first off
 * bytes, into key order; tmp has room for n. */
void pysort_keys(struct skey *a, struct skey *tmp, size_t n, size_t off);

/* pyfields.c */
/* The record types of _pyshelfd (struct sequences). */
extern PyTypeObject *pyfields_Record, *pyfields_Head, *pyfields_Check,
    *pyfields_Room, *pyfields_Dumped, *pyfields_Committed, *pyfields_Result;
/* Make them; add them and the constants of wire.h and store.h that the
 * Python half uses to module m.  0 or -1. */
int pyfields_init(PyObject *m);
/* A record of type tp with the items of tuple t (stolen, NULL passed
 * through); new reference or NULL. */
PyObject *pyfields_named(PyTypeObject *tp, PyObject *t);

/* pyrefs.c */
/* The refs blob of these entry keys (bytes, new reference), deduplicated;
 * NULL with an exception. */
PyObject *pyrefs_blob(PyObject *const *keys, size_t n);
extern PyMethodDef pyrefs_methods[];

/* pydiff.c */
extern PyMethodDef pydiff_methods[];

/* pybatch.c */
extern PyTypeObject pybatch_BatchType;
extern PyMethodDef pybatch_methods[];
/* "module.Qualname" of obj's type, cached per type; new reference. */
PyObject *pybatch_type_name(PyObject *obj);

/* pyenc.c */
/* Append obj's protocol-5 pickle to the PyMem buffer *buf (*len used of
 * *cap) when obj is plain data (exact dict/list/tuple/set/frozenset of
 * None/bool/int/float/str/bytes/bytearray, nothing mutable reached twice):
 * 1.  0 when it is not (nothing appended, no exception); -1 with an
 * exception.  oob non-NULL: bytes and bytearrays of 64 KiB or more go out
 * of band, *oob is then a new list of them in the pickle's NEXT_BUFFER
 * order, or NULL when there are none; oob NULL: everything in band.  A
 * container or bytearray that idmap maps (another entry's object) is not
 * plain when refs is NULL; else it is written as a persistent reference
 * to that entry, and *refs is the refs blob of those (bytes, new
 * reference), or NULL when there are none. */
int pyenc_plain(PyObject *obj, PyObject *idmap, char **buf, size_t *len,
                size_t *cap, PyObject **oob, PyObject **refs);
/* plain_dumps(obj) -> bytes or None: the above, for tests. */
PyObject *pyenc_plain_dumps(PyObject *self, PyObject *obj);

/* pydigest.c */
extern PyTypeObject pydigest_DigestMapType;
/* The digest map holds for key: 1 (out filled), 0 absent, -1 error. */
int pydigest_get(PyObject *map, PyObject *key, uint8_t out[16]);
/* Set it; 0 or -1. */
int pydigest_set(PyObject *map, PyObject *key, const uint8_t dg[16]);
/* Make room for n more keys; 0 or -1. */
int pydigest_reserve(PyObject *map, size_t n);

/* pystore.c */
extern PyObject *pystore_StoreError;
extern PyObject *pystore_CorruptEntry;
extern PyObject *pystore_StoreFull;
extern PyMethodDef pystore_methods[];
/* In a process forked by shipped code: raise and return 1 (the store is
 * the parent's and must not be touched); else 0.  exact: compare the pid
 * too (commits), else the flag the atfork handler sets (reads). */
int pystore_refuse_child(int exact);
/* The content digest of a payload (data, then the buffers of parts, a
 * PySequence_Fast or NULL), its flags and refs: the store's payload digest
 * (record_payload_digest), 16 bytes. */
PyObject *pystore_content_digest(const void *data, size_t len,
                                 PyObject *parts, unsigned flags,
                                 const void *refs, size_t refs_len);
/* The same into out; 0 or -1 (a part that is not a buffer). */
int pystore_content_digest_raw(const void *data, size_t len, PyObject *parts,
                               unsigned flags, const void *refs,
                               size_t refs_len, uint8_t out[16]);

/* pystream.c */
extern PyMethodDef pystream_methods[];
/* Install the SIGINT/SIGTERM handler and the signal wakeup fd. */
int pystream_setup(const struct pyctx *c);
/* Is this a child forked by shipped code?  exact: compare the pid, else
 * the atfork flag only (no getpid(): for hot paths). */
int pystream_in_child_of(const struct pyctx *c, int exact);

/* pymodule.c */
extern PyObject *pymodule_backend;  /* the _pyshelf_backend module */
extern PyObject *pymodule_RequestError;
PyObject *PyInit__pyshelfd(void);
/* Call _pyshelf_backend.name(**kwargs), kwargs a dict (stolen; NULL
 * passes its exception on); new reference or NULL. */
PyObject *pymodule_call(const char *name, PyObject *kwargs);
/* The module's context (a copy of pymodule_start's; all zero before). */
struct pyctx *pymodule_ctx(void);
/* Import the backend's Python half with ctx (copied: pymodule_ctx) and
 * create the workspace.  0, or -1 with *cause malloc'd. */
int pymodule_start(const struct pyctx *ctx, char **cause);

#endif
