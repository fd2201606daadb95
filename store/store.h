/*
 * store.h - pyshelf's persistent store: sessions and their entries in one
 * LMDB environment.  No Python here; the backend, the sweeper and the admin
 * tool all link this library.  docs/STORAGE.md gives the bytes.
 *
 * Caveats, stated once:
 *  - Do not use a store across fork(): open it again in the child (LMDB).
 *  - Every function returns 0 or a negative STORE_E_* code; store_strerror()
 *    names it.  Where a sentence helps, a "char **cause" out-parameter gets
 *    a malloc'd one (free it) that says which step failed.
 *  - Bytes handed to a callback inside store_read()/store_write() are
 *    borrowed from the map: valid only until the callback returns.
 *  - Write callbacks may run more than once (the map grows by itself when
 *    full, and the transaction is then retried from the start): they must
 *    only do store operations, which are idempotent when repeated.
 *  - A store may be used from several threads, but one transaction belongs
 *    to the thread that runs its callback.  A callback must not start
 *    another transaction (store_read/store_write) on the same store.
 */
#ifndef PYSHELF_STORE_H
#define PYSHELF_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Format of the databases and records; a store with a newer one is
 * refused (STORE_E_VERSION). */
#define STORE_FORMAT_VERSION 3

/* Error codes (negative).  Chosen outside LMDB's MDB_* range. */
#define STORE_E_NOTFOUND   (-40001) /* no such session or entry */
#define STORE_E_EXISTS     (-40002) /* the name is taken */
#define STORE_E_CORRUPT    (-40003) /* a record fails its checks */
#define STORE_E_VERSION    (-40004) /* the store has a newer format */
#define STORE_E_FULL       (-40005) /* map at its configured maximum or disk full */
#define STORE_E_NOMEM      (-40006) /* allocation failed */
#define STORE_E_INVAL      (-40007) /* a bad argument (name too long...) */
#define STORE_E_IO         (-40008) /* the file system refused (errno kept) */
#define STORE_E_LMDB       (-40009) /* another LMDB error; the cause says */
#define STORE_E_NOTSTORE   (-40010) /* the directory is not a pyshelf store */
#define STORE_E_READONLY   (-40011) /* a write on a read-only store */
#define STORE_E_DEAD       (-40012) /* the session has ended */
#define STORE_E_BUSY       (-40013) /* another process holds the session's
                                       lock (session_lock) */
#define STORE_E_DAMAGED    (-40014) /* the store's pages fail the
                                       structural check: not written */
#define STORE_E_KEY        (-40015) /* a global's name is empty, longer
                                       than STORE_KEY_MAX bytes or not
                                       UTF-8 (refs_blob_add) */

/* Entry kinds, the byte after the session id in an entry key. */
#define STORE_KIND_GLOBAL 'g' /* key is the global's UTF-8 name */
#define STORE_KIND_HANDLE 'h' /* key is a big-endian u64 handle id */

/* Session states. */
#define STORE_STATE_LIVE 1
#define STORE_STATE_DEAD 2

/* Why a session ended (a tombstone's reason). */
#define STORE_END_EXPIRED  1 /* its lease ran out; the sweep ended it */
#define STORE_END_CLOSED   2 /* a client closed it (close_session) */
#define STORE_END_REPLACED 3 /* opened with flag 'n': a new one took its
                                name */
#define STORE_END_ENDED    4 /* ended without attaching (pyshelf.end(),
                                END_SESSION, pyshelfd --sweep --end) */

/* How long a tombstone is kept before a sweep drops it: 90 days. */
#define STORE_TOMB_KEEP_MS (90ull * 24 * 3600 * 1000)

/* Record flags. */
#define STORE_FLAG_EXCINFO  0x0001 /* a (type, value, traceback) triple */
#define STORE_FLAG_VOLATILE 0x0002 /* not picklable: payload is the reason */
#define STORE_FLAG_OOB      0x0004 /* payload has out-of-band pickle buffers */
#define STORE_FLAG_HIDDEN   0x0008 /* a handle the backend made to hold an old
                                      object several records share */
#define STORE_FLAG_BLOB     0x0010 /* the payload is in a blob file; the
                                      record holds its reference.  Set and
                                      cleared by the store: entry_get and
                                      entry_resolve never show it */

/* Picklers, in the record header. */
#define STORE_PICKLER_NONE        0 /* raw bytes / UTF-8 text */
#define STORE_PICKLER_PICKLE      1 /* stdlib pickle */
#define STORE_PICKLER_CLOUDPICKLE 2 /* cloudpickle (pickle protocol 5) */

#define STORE_ID_SIZE 16
#define STORE_TOKEN_SIZE 32
#define STORE_DIGEST_SIZE 16
#define STORE_NAME_MAX 255     /* session name bytes */
#define STORE_KEY_MAX 480      /* global name bytes (LMDB key limit 511) */
#define STORE_BLOB_NAME_SIZE 16 /* a blob file's name: random bytes */
#define STORE_BLOB_REF_SIZE 40  /* name . u64 size . digest */
#define STORE_BLOB_MIN_DEFAULT ((size_t)1 << 20) /* payloads this large or
                                                   larger go to files */

typedef struct store store;
typedef struct store_txn store_txn;

/* Sync policies (see docs/STORAGE.md for what each survives). */
enum store_sync {
	STORE_SYNC_ALWAYS = 0,   /* fsync every commit: survives power loss */
	STORE_SYNC_INTERVAL = 1, /* no fsync per commit; store_sync() flushes */
	STORE_SYNC_NEVER = 2     /* leave it to the kernel; survives SIGKILL */
};

/* How to open a store.  Zero-initialise, then set what you need. */
typedef struct store_options {
	size_t map_initial;  /* first map size in bytes (0: 64 MiB) */
	size_t map_max;      /* largest map it may grow to (0: 1 TiB) */
	int readonly;        /* open read-only (admin tools) */
	int check_pages;     /* a read-only open checks the pages too, as a
	                        writable one always does (a program that
	                        serves what it reads: pyshelfd --read-only) */
	int create;          /* create the directory when missing */
	enum store_sync sync;/* commit durability */
	size_t blob_min;     /* payloads of at least this many bytes go to
	                        blob files (0: STORE_BLOB_MIN_DEFAULT;
	                        SIZE_MAX: never) */
	int tolerant;        /* read-only: a meta database that cannot be
	                        read (a damaged page) does not fail the
	                        open; store_meta then says format 0
	                        (pyshelf-dump --check, which reports it) */
	/* called with LMDB's sentence when an assertion of LMDB fails (a
	 * damaged page it met): instead of LMDB's line on stderr; the
	 * process then aborts as LMDB would (NULL: LMDB prints it) */
	void (*on_assert)(const char *msg);
	int defer_unlink;    /* the files a commit drops wait for
	                        store_reap(), store_close() or the next
	                        store_write() instead of being unlinked
	                        by the commit */
} store_options;

/* A session record (the "sessions" database). */
typedef struct store_session {
	uint8_t id[STORE_ID_SIZE];       /* random, never reused */
	char name[STORE_NAME_MAX + 1];   /* unique while live */
	uint8_t token_hash[32];          /* SHA-256 of the resume token */
	uint8_t state;                   /* STORE_STATE_* */
	uint64_t created_ms;             /* wall clock, ms since the epoch */
	uint64_t last_seen_ms;           /* last attach, request or ping */
	uint64_t lease_ms;               /* lease length; expiry = last_seen + lease */
	uint64_t next_handle;            /* next handle id to hand out */
	uint64_t pid;                    /* worker serving it (0: none) */
	/* Its entries and their stored bytes (as session_count counts
	 * them), kept by the store in the commit of every change: the
	 * session_put caller's values are not read.  Valid when
	 * counts_known; 0 for a record of version 1 (format 2 and before),
	 * which gets its counts at its next write. */
	uint64_t entries;
	uint64_t bytes;
	int counts_known;
} store_session;

/* A tombstone (the "tombstones" database): what is left of an ended
 * session once it is purged. */
typedef struct store_tomb {
	char name[STORE_NAME_MAX + 1];   /* the name it had */
	uint8_t id[STORE_ID_SIZE];       /* its id */
	uint8_t why;                     /* STORE_END_* */
	uint64_t ended_ms;               /* when it ended (wall clock, ms) */
	uint64_t created_ms;             /* when it was created */
	uint64_t last_seen_ms;           /* its last attach, request or detach */
	uint64_t lease_ms;               /* its lease */
	uint64_t entries;                /* entries freed */
	uint64_t bytes;                  /* their stored bytes */
} store_tomb;

/* A decoded record header (the "entries" values). */
typedef struct store_record {
	uint8_t version;                 /* record format version */
	uint8_t pickler;                 /* STORE_PICKLER_* */
	uint16_t flags;                  /* STORE_FLAG_* */
	uint64_t time_ms;                /* when written */
	uint8_t digest[STORE_DIGEST_SIZE]; /* XXH3-128, see STORAGE.md */
	const char *type_name;           /* not NUL-terminated; borrowed */
	uint32_t type_len;
	const uint8_t *refs;             /* persistent references blob; borrowed */
	uint32_t refs_len;
	const uint8_t *payload;          /* borrowed */
	size_t payload_len;
} store_record;

/* What a writer supplies for one entry. */
typedef struct store_entry_in {
	uint8_t kind;                    /* STORE_KIND_* */
	const char *name;                /* global name (kind 'g') */
	size_t name_len;
	uint64_t handle;                 /* handle id (kind 'h') */
	uint8_t pickler;
	uint16_t flags;
	const char *type_name;           /* NUL-terminated */
	const uint8_t *refs;             /* may be NULL */
	uint32_t refs_len;
	const struct iovec *iov;         /* payload pieces, gathered in order */
	int iovcnt;
	/* NULL, or where the put stores the payload digest
	 * (record_payload_digest: XXH3-128 of the payload, then the flags,
	 * then the refs blob).  Not stored in the record: it is the
	 * writer's own change detection (the backend's content digest),
	 * computed in the pass that copies the payload into the map instead
	 * of in a pass of its own. */
	uint8_t *payload_digest;
} store_entry_in;

/* A blob record's reference, decoded (blob_ref_decode). */
typedef struct store_blob_ref {
	uint8_t name[STORE_BLOB_NAME_SIZE]; /* file blobs/<32 hex digits> */
	uint64_t size;                   /* the file's size: the payload's */
	uint8_t digest[STORE_DIGEST_SIZE]; /* XXH3-128 of the file */
} store_blob_ref;

/* A key as listed (kind plus name or handle id); name borrowed. */
typedef struct store_key {
	uint8_t kind;
	const char *name;                /* kind 'g': not NUL-terminated */
	size_t name_len;
	uint64_t handle;                 /* kind 'h' */
	size_t value_len;                /* stored size, from the leaf */
} store_key;

/* env.c */

/* Default store directory: $XDG_DATA_HOME/pyshelf, else
 * ~/.local/share/pyshelf.  Returns a malloc'd string or NULL. */
char *store_default_path(void);
/*
 * Open (and with opt->create, create) the store at path.
 * @param[out] out  the store on success
 * @param[out] cause  on failure, a malloc'd sentence (may be NULL)
 * Errors: STORE_E_VERSION (newer format), STORE_E_NOTSTORE, STORE_E_IO,
 * STORE_E_LMDB, STORE_E_NOMEM.
 */
int store_open(store **out, const char *path, const store_options *opt,
               char **cause);
/* Close; no transaction may be running. */
void store_close(store *s);
/*
 * The quick structural check of the store at path (data.mdb read with
 * pread, never mapped: safe on any damage): the meta pages, then up to
 * budget pages breadth first from the databases' roots (docs/STORAGE.md,
 * "Open checks").  fn (may be NULL) gets a sentence per problem.  Returns
 * the number of problems (0: sound as far as it looked), or STORE_E_NOTSTORE
 * (no data.mdb), STORE_E_IO, STORE_E_NOMEM.  A writable store_open runs it
 * with STORE_CHECK_BUDGET and refuses a store that fails it
 * (STORE_E_DAMAGED).
 */
/*
 * Before LMDB opens data.mdb at path: a meta page that LMDB would accept
 * (its flag, magic and version) whose page size is not one (a power of
 * two from 512 to 64 KiB, the same on both pages) would have LMDB map
 * and read the file with it: a SIGBUS.  1 then, with a sentence in why;
 * 0 (also when there is no file or a page LMDB refuses by itself).
 */
int store_check_meta_pages(const char *path, char *why, size_t cap);
#define STORE_CHECK_BUDGET 256
int store_check_structure(const char *path, size_t budget,
                          void (*fn)(const char *problem, void *arg),
                          void *arg);
/*
 * Salvage's scan of data.mdb (docs/STORAGE.md, "Salvage"), for a store
 * whose trees cannot all be walked: pread, never mapped, so safe on any
 * damage.  The meta page read is the newer sound one (the older when the
 * newer is damaged: its snapshot is intact, LMDB never reuses its pages
 * before the next commit).  The trees are walked as by
 * store_check_structure (each problem to problem, may be NULL), then
 * every page of the file is read in order, and each sound leaf page that
 * is not on the free list gives fn its nodes: the database its page was
 * reached in ("meta", "sessions", "entries", ...), or NULL for a page no
 * walk reached (below a damaged branch or root page); key and value
 * borrowed until fn returns (a value on overflow pages read whole).
 * Nodes of sub-databases and of sorted duplicates (the refs index) are
 * passed by.  fn returns 0 to go on; anything else ends the scan and is
 * returned.  Returns 0; STORE_E_DAMAGED when no meta page is sound
 * (reported); STORE_E_NOTSTORE (no data.mdb), STORE_E_IO, STORE_E_NOMEM.
 */
typedef int store_scan_fn(const char *db, uint64_t pgno, const uint8_t *key,
                          size_t key_len, const uint8_t *val, size_t val_len,
                          void *arg);
typedef struct store_scan_info {
	int meta_used;         /* the LMDB meta page read: 0 or 1 */
	int meta_other_bad;    /* the other one is damaged (if it was the
	                          newer, the last commit is not seen) */
	int free_bad;          /* the free-page list was not read whole:
	                          free pages may be read as current */
	uint64_t problems;     /* problems of the walk */
	uint64_t pages;        /* pages read by the linear pass */
	uint64_t leaves;       /* sound leaf pages among them */
	uint64_t orphans;      /* of those, leaves no walk reached */
	uint64_t bad;          /* damaged pages met (their nodes are lost) */
	uint64_t lost_values;  /* values whose overflow pages are damaged */
} store_scan_info;
int store_scan_pages(const char *path, store_scan_fn *fn,
                     void (*problem)(const char *problem, void *arg),
                     void *arg, store_scan_info *info);
/* Static English text for a code (STORE_E_* or MDB_*). */
const char *store_strerror(int rc);
/* Flush committed data to disk (for STORE_SYNC_INTERVAL/NEVER). */
int store_sync(store *s);
/* store_sync, saying which durable step failed: cause (may be NULL) as
 * store_write_cause's ("fdatasync PATH/blobs/<name>: ...", "fsync
 * PATH/blobs: ...", "mdb_env_sync PATH/data.mdb: ..."; also openat and
 * syncfs); NULL on success. */
int store_sync_cause(store *s, char **cause);
/* Map size now and bytes in use (pages * page size). */
int store_usage(store *s, size_t *map_size, size_t *used, size_t *map_max);
/* Format version and creation time recorded in meta (STORE_E_CORRUPT and
 * format 0 when a tolerant open could not read meta). */
int store_meta(store *s, uint32_t *format, uint64_t *created_ms);
/* Unlink the blob files that commits dropped since the last call (with
 * defer_unlink; otherwise there are none).  Returns how many.  Unlinking
 * a large file costs milliseconds (the file system frees its pages and
 * extents): a server calls this when idle, off its requests' path. */
size_t store_reap(store *s);
/* How many blob files wait for store_reap() (defer_unlink). */
size_t store_reap_pending(store *s);
/* Payloads of this many bytes or more go to blob files. */
size_t store_blob_min(const store *s);
/* Path the store was opened at (borrowed, valid until store_close). */
const char *store_path(const store *s);
/* Call guard(arg, fd) before each write transaction begins, fd the
 * environment's data file descriptor, in the thread that writes: a
 * process whose descriptors foreign code may close checks there that fd
 * is still the data file (the guard may exit the process).  NULL: none.
 * Set it before other threads write. */
void store_set_write_guard(store *s, void (*guard)(void *arg, int fd),
    void *arg);

/* compact.c */

/*
 * Give the pages LMDB freed back to the file system: write a compacting
 * copy of PATH/data.mdb (LMDB's MDB_CP_COMPACT) to PATH/data.mdb.compact,
 * fsync it, rename it over data.mdb and fsync PATH; blobs/ and every other
 * file are left alone.  Only while no process has the store open:
 * STORE_E_BUSY (the cause names the holder's pid when the kernel says it)
 * otherwise; a process that opens the store meanwhile waits until the swap
 * is done.  A crash at any step leaves the old data.mdb, or the new one,
 * whole (and maybe a data.mdb.compact, removed by the next run).
 * @param[out] before, after  data.mdb's bytes before and after
 * @param[out] cause  on failure, a malloc'd sentence (may be NULL)
 * Errors: STORE_E_BUSY, STORE_E_NOTSTORE (no data.mdb), STORE_E_DAMAGED
 * (the quick structural check fails: not copied), STORE_E_FULL,
 * STORE_E_IO, STORE_E_READONLY, STORE_E_LMDB, STORE_E_NOMEM.
 */
int store_compact(const char *path, uint64_t *before, uint64_t *after,
                  char **cause);

/* txn.c */

/* Grow the map, up to map_max, until about bytes more fit, so that a
 * large store_write does not fill the map and run twice.  0, or
 * STORE_E_FULL when map_max is too small (nothing changed then). */
int store_reserve(store *s, size_t bytes);

/*
 * Run fn in a read-only transaction over one consistent snapshot.
 * Returns fn's result, or an error from starting the transaction.
 */
int store_read(store *s, int (*fn)(store_txn *, void *), void *arg);
/*
 * Run fn in a write transaction and commit when it returns 0; abort when it
 * returns nonzero (that value is returned).  When the map is full the
 * transaction is aborted, the map grown (up to map_max) and fn run again.
 * Errors: STORE_E_FULL (map_max reached or disk full: nothing written),
 * STORE_E_READONLY, STORE_E_LMDB.
 */
int store_write(store *s, int (*fn)(store_txn *, void *), void *arg);
/*
 * store_write, saying which durable step failed.
 * @param[out] cause  (may be NULL) on failure, a malloc'd sentence (free
 *   it) naming the step, the file and what the system said, as in
 *   "fdatasync /srv/shelf/blobs/3fa0...: No space left on device" or
 *   "mdb_txn_commit /srv/shelf/data.mdb: Input/output error".  The steps:
 *   a blob file's openat, write, close and fdatasync, the fsync of the
 *   blobs directory (STORE_SYNC_ALWAYS), LMDB's mdb_txn_begin and
 *   mdb_txn_commit, and a blob file that would pass map_max.  NULL on
 *   success, for an error no such step made (fn's own, STORE_E_READONLY,
 *   the map at map_max), or when there was no memory for the sentence.
 *   errno is read where the step failed, before any cleanup.
 * Returns what store_write returns.
 */
int store_write_cause(store *s, int (*fn)(store_txn *, void *), void *arg,
                      char **cause);

/* session.c */

/*
 * Create a live session named name with a fresh random id; token (32 bytes)
 * is kept only as its SHA-256.  Errors: STORE_E_EXISTS, STORE_E_INVAL.
 */
int session_create(store_txn *t, const char *name, const uint8_t *token,
                   uint64_t lease_ms, uint64_t now_ms, store_session *out);
/* Look a live or dead session up.  STORE_E_NOTFOUND when absent. */
int session_get_by_name(store_txn *t, const char *name, store_session *out);
int session_get_by_id(store_txn *t, const uint8_t *id, store_session *out);
/* Rewrite a session record, keeping the expiry index in step. */
int session_put(store_txn *t, const store_session *ss);
/* Nonzero when token hashes to the session's token hash. */
int session_token_ok(const store_session *ss, const uint8_t *token);
/* Call fn for each session in id order; stop early when fn returns
 * nonzero (that value is returned). */
int session_list(store_txn *t, int (*fn)(const store_session *, void *),
                 void *arg);
/*
 * Call fn for each session whose lease ran out at or before now_ms, and for
 * each dead session not yet purged, reading only the expired end of the
 * expiry index.
 */
int session_expired(store_txn *t, uint64_t now_ms,
                    int (*fn)(const uint8_t *id, uint64_t expiry_ms, void *),
                    void *arg);
/*
 * Mark a session dead: state dead, name freed for reuse, expiry key moved
 * to the front of the index (time 0) so the sweeper finds it first.
 */
int session_kill(store_txn *t, const uint8_t *id);
/*
 * Delete a dead session's entries, then its rows in refs, then its rows
 * in calls (the call journal's), up to batch of them (each refs or calls
 * row counts as one) in each write transaction, until none is left, then
 * the session record itself.  Resumable after a crash
 * (entries go first, the record last).
 * *deleted (may be NULL) counts entries removed (not refs rows).
 */
int session_purge(store *s, const uint8_t *id, size_t batch, size_t *deleted);
/*
 * One write transaction of session_purge: up to batch deletions (0:
 * 1000), stopping early once batch_ms milliseconds have gone by in it
 * (0: no time bound), or, when nothing of the session is left, the
 * removal of its record (*finished set to 1).  A caller loops on it,
 * other writers getting the write lock between its calls (the sweeper,
 * exec/sweep.c).  Blob files dropped are unlinked after the commit, as
 * by store_write.  *deleted (may be NULL) counts entries removed.
 */
int session_purge_step(store *s, const uint8_t *id, size_t batch,
                       uint64_t batch_ms, size_t *deleted, int *finished);
/* Count the entries and their bytes without reading values. */
int session_count(store_txn *t, const uint8_t *id, uint64_t *nentries,
                  uint64_t *nbytes);
/*
 * Create a live session as session_create does, with the given id (a
 * caller that locks the id before the session exists: session_lock).
 * Errors: STORE_E_EXISTS (the name or the id is taken), STORE_E_INVAL.
 */
int session_create_id(store_txn *t, const char *name, const uint8_t *id,
                      const uint8_t *token, uint64_t lease_ms,
                      uint64_t now_ms, store_session *out);
/*
 * End a live session for the reason why (STORE_END_*): count its entries
 * and bytes, write its tombstone (kept STORE_TOMB_KEEP_MS) and kill it
 * (session_kill).  The purge that follows frees what the tombstone counts.
 * out (may be NULL) gets the tombstone.  STORE_E_DEAD when it has already
 * ended (no second tombstone), STORE_E_NOTFOUND, STORE_E_INVAL for a bad
 * why.
 */
int session_end(store_txn *t, const uint8_t *id, int why, uint64_t now_ms,
                store_tomb *out);

/*
 * Session locks: who serves a session is known by an OFD lock
 * (fcntl F_OFD_SETLK) on the file locks/<id in hex> in the store
 * directory, never by a pid.  The kernel drops the lock when the last
 * descriptor of its open file description closes, so when the process
 * that holds it dies, however it dies; it works across pid namespaces
 * sharing the store.  A fork()ed child shares the description: its exit
 * does not drop the lock, but a child that lives on would keep it, so the
 * holder closes its copy in children (pthread_atfork, as pyshelfd does).
 * The descriptor is O_CLOEXEC: an exec()ed program never holds it.
 */
/*
 * Take the lock of session id: shared (readers: several may hold it) or
 * exclusive.  Never waits.  On success *fd holds it (release it with
 * session_unlock) and the file says the caller's pid.  STORE_E_BUSY when
 * another open file description holds a conflicting lock: *holder gets
 * its pid when it is known (it wrote it and runs in the caller's pid
 * namespace), else 0.  STORE_E_IO (errno kept) when the file cannot be
 * made.
 */
int session_lock(store *s, const uint8_t *id, int shared, int *fd,
                 long *holder);
/* 1 when some process holds the lock of id (*holder as in session_lock,
 * may be NULL), 0 when nobody does, or STORE_E_IO. */
int session_locked(store *s, const uint8_t *id, long *holder);
/* Release a lock taken by session_lock (closes fd; -1 is ignored). */
void session_unlock(int fd);
/* Remove the lock file of an ended session (after its purge).  A file
 * that is not there is 0. */
int session_lock_remove(store *s, const uint8_t *id);

/* tomb.c */

/* The newest tombstone of name.  STORE_E_NOTFOUND when it has none (or
 * the store has no tombstones database: read-only, made before it). */
int tomb_last(store_txn *t, const char *name, store_tomb *out);
/* Call fn for each tombstone, by name, then oldest first; a nonzero return
 * stops the walk and is returned.  Malformed ones are skipped. */
int tomb_list(store_txn *t, int (*fn)(const store_tomb *, void *),
              void *arg);
/* Drop the tombstones of sessions that ended before before_ms (and any
 * malformed one).  *dropped (may be NULL) counts them. */
int tomb_sweep(store_txn *t, uint64_t before_ms, size_t *dropped);
/* "expired", "closed", "replaced", "ended" or "unknown". */
const char *tomb_why_name(int why);

/* calls.c */

/*
 * The call journal's rows (the "calls" database, docs/STORAGE.md 3.9):
 * key session id (16) . u64 started . call id (16), value a versioned
 * record.  exec/journal.c writes and reads them; the purge of a session
 * deletes them; pyshelf-dump lists and checks them.  A read-only open of a
 * store made before the database existed has no rows.
 */
#define STORE_CALL_KEY_SIZE (STORE_ID_SIZE + 8 + STORE_ID_SIZE)
#define STORE_CALL_FIXED 56      /* the record's fixed part */
/* States, as the journal's (JOURNAL_*). */
#define STORE_CALL_QUEUED  1
#define STORE_CALL_RUNNING 2
#define STORE_CALL_DONE    3
#define STORE_CALL_LOST    4
/* What ended it: the body is a RESULT's or an ERROR's fields. */
#define STORE_CALL_END_NONE   0
#define STORE_CALL_END_RESULT 1
#define STORE_CALL_END_ERROR  2
/* Chunk kinds in a record's output. */
#define STORE_CHUNK_GAP    0     /* u64: bytes of output dropped here */
#define STORE_CHUNK_STDOUT 1     /* u32 length, then the bytes */
#define STORE_CHUNK_STDERR 2

/* A call record, decoded (pointers borrowed from the value) or to
 * encode. */
typedef struct store_call {
	uint8_t sid[STORE_ID_SIZE];      /* its session (from the key) */
	uint8_t id[STORE_ID_SIZE];       /* the call id (from the key) */
	uint8_t state;                   /* STORE_CALL_* */
	uint8_t end;                     /* STORE_CALL_END_* */
	uint64_t started_ms;             /* in the key and the record */
	uint64_t ended_ms;               /* 0: not ended */
	uint64_t output_bytes;           /* output written, dropped or not */
	uint64_t output_dropped;         /* of those, not kept */
	const char *summary;             /* UTF-8, not NUL-terminated */
	uint32_t summary_len;
	const uint8_t *chunks;           /* walk with calls_chunk_next */
	uint32_t chunks_len;
	const uint8_t *body;             /* the final frame's fields */
	uint32_t body_len;
} store_call;

/* Bytes of an encoded record. */
size_t calls_record_size(size_t summary_len, size_t chunks_len,
                         size_t body_len);
/* Encode c into dst (calls_record_size() bytes), check value included.
 * sid and id are the key's, not the record's. */
void calls_record_encode(uint8_t *dst, const store_call *c);
/* Decode and verify a record (layout, check value, every chunk).  out
 * borrows from p; sid and id are left alone.  STORE_E_CORRUPT with *why
 * (may be NULL) a static sentence. */
int calls_record_decode(const uint8_t *p, size_t n, store_call *out,
                        const char **why);
/* Bytes of one chunk of output of len bytes (kind STDOUT/STDERR), or of a
 * gap (kind GAP: len is the bytes dropped). */
size_t calls_chunk_size(int kind, uint64_t len);
/* Append a chunk at dst (calls_chunk_size bytes); returns its size.  A
 * gap: p NULL, len the bytes dropped. */
size_t calls_chunk_put(uint8_t *dst, int kind, const void *p, uint64_t len);
/* The chunk at *off of chunks p[0..n): 1 with *off moved past it, 0 at
 * the end, STORE_E_CORRUPT (why) for a bad kind or a length past the end.
 * A gap: *data NULL, *len the bytes dropped. */
int calls_chunk_next(const uint8_t *p, size_t n, size_t *off, int *kind,
                     const uint8_t **data, uint64_t *len, const char **why);
/* Write (insert or replace) a call's row, keyed by c->sid, started_ms and
 * c->id.  STORE_E_READONLY in a read transaction; STORE_E_INVAL for a
 * record over 4 GiB parts. */
int calls_put(store_txn *t, const store_call *c);
/* Delete a call's row; one that is not there is 0. */
int calls_del(store_txn *t, const uint8_t *sid, uint64_t started_ms,
              const uint8_t *id);
/*
 * Call fn for each row of session sid (NULL: every session), in key order
 * (by session, then oldest first).  fn gets the decoded call (rc 0) or,
 * for a row that does not parse, rc STORE_E_CORRUPT, why, and the key's
 * fields only (a malformed key: sid and id zero).  A nonzero return from
 * fn stops the walk and is returned.
 */
int calls_list(store_txn *t, const uint8_t *sid,
               int (*fn)(const store_call *c, int rc, const char *why,
                         void *arg),
               void *arg);
/* "queued", "running", "done", "lost" or "unknown". */
const char *calls_state_name(int state);

/* entry.c */

/* Write (insert or replace) one entry; payload gathered from iov. */
int entry_put(store_txn *t, const uint8_t *sid, const store_entry_in *in,
              uint64_t now_ms);
/*
 * Write n entries, fastest in key order (LMDB's: bytes, then length):
 * those past the store's last key are appended without a search.  Any
 * order is correct; a key given twice keeps its last record.
 */
int entry_put_sorted(store_txn *t, const uint8_t *sid,
                     const store_entry_in *const *ins, size_t n,
                     uint64_t now_ms);
/*
 * Get one entry's decoded record, its digest checked.  Borrowed: from the
 * map, or for a blob record from its file, mapped until the transaction
 * ends (entry_resolve).  Errors: STORE_E_NOTFOUND, STORE_E_CORRUPT,
 * STORE_E_IO.
 */
int entry_get(store_txn *t, const uint8_t *sid, uint8_t kind,
              const char *name, size_t name_len, uint64_t handle,
              store_record *out);
/* 1 when the entry exists, 0 when not, or a negative STORE_E_* code; reads
 * no value past the record header.  flags (may be NULL): the record's
 * flags, unchecked (STORE_E_CORRUPT when it is shorter than a header). */
int entry_exists(store_txn *t, const uint8_t *sid, uint8_t kind,
                 const char *name, size_t name_len, uint64_t handle,
                 uint16_t *flags);
/* Fetch one entry's layout without checking its digest (no pass over the
 * payload): for its header, type name and refs when the payload is not
 * wanted.  STORE_E_NOTFOUND, or STORE_E_CORRUPT when the layout itself is
 * broken (record_decode_nocheck).  A blob record's file is not read:
 * payload is NULL and payload_len the file's size. */
int entry_get_nocheck(store_txn *t, const uint8_t *sid, uint8_t kind,
                      const char *name, size_t name_len, uint64_t handle,
                      store_record *out);
/*
 * Resolve a record decoded by record_decode[_nocheck] from a value of this
 * transaction (entry_walk): a blob record's payload becomes its file,
 * mapped until the transaction ends, its digest checked when check is
 * set, and STORE_FLAG_BLOB is cleared; other records are left alone.
 * STORE_E_CORRUPT for a malformed reference, a missing file, a file of
 * the wrong size or (check) a digest that differs; STORE_E_IO.
 */
int entry_resolve(store_txn *t, store_record *r, int check);
/* Decode a blob record's payload.  STORE_E_CORRUPT when it is not
 * STORE_BLOB_REF_SIZE bytes. */
int blob_ref_decode(const uint8_t *p, size_t n, store_blob_ref *out);
/*
 * Walk the `blobs` database (entry key -> file) in key order: fn gets the
 * entry's session id and key, and the file's name and size (size 0 and
 * name NULL for a malformed row).  For the admin tool's check.
 */
int blob_walk(store_txn *t,
              int (*fn)(const uint8_t *sid, const store_key *key,
                        const uint8_t *name, uint64_t size, void *),
              void *arg);
/*
 * In read transaction t the entry's record names blob file `name`, which
 * is gone: has a newer commit replaced or deleted the entry since t began
 * (1: the file was dropped, and unlinked, not damaged), or does the entry
 * still name it (0: the file is missing)?  Files are unlinked without
 * waiting for older readers of other processes (docs/STORAGE.md, 4.1).
 * STORE_E_INVAL in a write transaction; an LMDB error as a STORE_E_*.
 */
int blob_superseded(store_txn *t, const uint8_t *sid, const store_key *k,
                    const uint8_t *name);
/* Delete one entry.  STORE_E_NOTFOUND when absent. */
int entry_del(store_txn *t, const uint8_t *sid, uint8_t kind,
              const char *name, size_t name_len, uint64_t handle);
/*
 * List a session's keys (of one kind, or both with kind 0) in key order,
 * without reading values.  fn's store_key borrows from the map.
 */
int entry_list(store_txn *t, const uint8_t *sid, uint8_t kind,
               int (*fn)(const store_key *, void *), void *arg);
/*
 * Walk every entry of the store (all sessions) in key order, values read
 * but not verified: for the admin tool.  sid is borrowed.
 */
int entry_walk(store_txn *t,
               int (*fn)(const uint8_t *sid, const store_key *,
                         const uint8_t *val, size_t len, void *),
               void *arg);

/* refs.c */

/*
 * The reverse index of persistent references (the "refs" database): for
 * an entry of a session (the target), the entries of the same session
 * whose records (may) refer to it, found without reading a record.  Rows
 * may be stale: check each against the referrer's refs blob.  Of a
 * store_key argument only kind, name, name_len and handle are read; a name
 * is 1 to STORE_KEY_MAX bytes.  A store opened read-only that was made
 * before this database existed has no rows.
 */
/* Note that referrer's record (may) refer to target.  Idempotent: a row
 * already there is 0.  STORE_E_INVAL for a bad kind or name,
 * STORE_E_READONLY in a read transaction. */
int refs_put(store_txn *t, const uint8_t *sid, const store_key *target,
             const store_key *referrer);
/* Forget that row.  A row that is not there is 0.  STORE_E_INVAL,
 * STORE_E_READONLY as refs_put. */
int refs_del(store_txn *t, const uint8_t *sid, const store_key *target,
             const store_key *referrer);
/* Call fn for each referrer noted for target, in LMDB's order; fn's key
 * borrows from the map (name not NUL-terminated; value_len 0).  A nonzero
 * return from fn stops the walk and is returned.  0 when there are none.
 * STORE_E_INVAL for a bad target, STORE_E_CORRUPT for a malformed row. */
int refs_list(store_txn *t, const uint8_t *sid, const store_key *target,
              int (*fn)(const store_key *referrer, void *), void *arg);
/* *any = 1 when the session has at least one row, else 0. */
int refs_any(store_txn *t, const uint8_t *sid, int *any);

/*
 * The refs blob (docs/STORAGE.md, "Refs blob"): a record's list of
 * persistent references, each u8 kind ('g' or 'h'), u16 big-endian key
 * length, the key (a global's UTF-8 name of 1 to STORE_KEY_MAX bytes, or a
 * handle's u64 big-endian id, 8 bytes).  These two functions are its only
 * encoder and parser: every writer and reader (the backend, the admin
 * tool) goes through them.
 */
/* A refs blob being built; zero-initialise, free with refs_blob_free.
 * p (malloc'd, owned by the buffer) holds len bytes. */
typedef struct store_refs_buf {
	uint8_t *p;
	size_t len, cap;
} store_refs_buf;
/*
 * Append one reference to b: ref->kind, and ref->name/name_len (kind 'g')
 * or ref->handle (kind 'h'); other fields are not read.  No duplicate
 * check (the caller deduplicates).  Nothing is appended on error.
 * Errors: STORE_E_KEY (a name that is empty, over STORE_KEY_MAX bytes or
 * not UTF-8: the 16-bit length can never overflow), STORE_E_INVAL (a kind
 * that is neither), STORE_E_NOMEM.
 */
int refs_blob_add(store_refs_buf *b, const store_key *ref);
/* Free b's bytes and zero it (b may be reused). */
void refs_blob_free(store_refs_buf *b);
/*
 * Read the reference at *off (start at 0) of the blob p[0..n).
 * @param[out] ref  kind and name/name_len (kind 'g', borrowed from p, not
 *                  NUL-terminated) or handle (kind 'h', name NULL);
 *                  value_len 0
 * @param[out] why  on error, a static sentence saying what is wrong
 * Returns 1 with *off moved past it, 0 at the end of the blob, or
 * STORE_E_CORRUPT (*off left at the bad reference) when the blob ends
 * inside a header, a key runs past its end, the kind is unknown, a
 * handle's key is not 8 bytes, or a name is empty, too long or not UTF-8.
 */
int refs_blob_next(const uint8_t *p, size_t n, size_t *off, store_key *ref,
                   const char **why);

/* record.c */

/* Size of the encoded record for these header fields and payload size. */
size_t record_size(size_t type_len, size_t refs_len, size_t payload_len);
/*
 * Encode a record into dst (record_size() bytes), gathering the payload
 * from iov, and compute its digest (and in->payload_digest, when asked).
 */
void record_encode(uint8_t *dst, const store_entry_in *in, uint64_t now_ms);
/*
 * Decode and verify a record.  STORE_E_CORRUPT when it is too short, of an
 * unknown version, or its digest does not match.  out borrows from p.
 */
int record_decode(const uint8_t *p, size_t n, store_record *out);
/* Decode without checking the digest (for damage reports). */
int record_decode_nocheck(const uint8_t *p, size_t n, store_record *out);
/*
 * The payload digest (the backend's content digest, which says whether an
 * entry changed): XXH3-128 of the payload, then the flags (u16 big-endian),
 * then the refs blob; high half first, each big-endian.  The payload is
 * data[0..len) followed by each of parts[0..nparts) (either may be empty:
 * a payload written in pieces, such as a pickle and its out-of-band
 * buffers, gives the same digest as the same bytes whole).  This is the
 * digest entry_put stamps into store_entry_in.payload_digest, for map and
 * blob-file records alike.  Cannot fail; needs no store.
 */
void record_payload_digest(const void *data, size_t len,
                           const struct iovec *parts, size_t nparts,
                           unsigned flags, const void *refs, size_t refs_len,
                           uint8_t out[STORE_DIGEST_SIZE]);

/* util.c */

/* Wall clock in ms since the epoch. */
uint64_t store_now_ms(void);
/* Fill p with n random bytes from getrandom(2).  STORE_E_IO on failure. */
int store_random(void *p, size_t n);
/* SHA-256 of p[0..n) into out[32]. */
void store_sha256(const void *p, size_t n, uint8_t out[32]);
/* Hex of p[0..n) into out (2n+1 bytes). */
void store_hex(const uint8_t *p, size_t n, char *out);
/* Parse 2n hex chars; 0 or STORE_E_INVAL. */
int store_unhex(const char *s, uint8_t *p, size_t n);

#endif
