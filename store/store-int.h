/*
 * store-int.h - what the store's files share and nothing outside store/
 * sees: the store and transaction structs and the key layout helpers.
 */
#ifndef PYSHELF_STORE_INT_H
#define PYSHELF_STORE_INT_H

#include <lmdb.h>
#include <pthread.h>

#include "store.h"
#include "xxh.h"

/* A list of blob names (blob.c). */
struct blob_list {
	uint8_t (*v)[STORE_BLOB_NAME_SIZE];
	size_t n, cap;
};

/* A blob file mapped by entry_resolve, unmapped when its transaction
 * ends. */
struct blob_map {
	void *p;
	size_t n;
};

/* An open environment and its databases. */
struct store {
	MDB_env *env;             /* the LMDB environment */
	MDB_dbi meta;             /* name -> value */
	MDB_dbi sessions;         /* id -> session record */
	MDB_dbi names;            /* name -> id */
	MDB_dbi entries;          /* id . kind . key -> record */
	MDB_dbi expiry;           /* be64 expiry . id -> empty */
	MDB_dbi refs;             /* target's entry key -> referrer's kind .
	                             key, MDB_DUPSORT; valid when has_refs */
	int has_refs;             /* 0: a read-only open of a store made
	                             before refs existed (no rows) */
	MDB_dbi tombs;            /* name . 0 . be64 ended . id -> tombstone;
	                             valid when has_tombs */
	int has_tombs;            /* 0: a read-only open of a store made
	                             before tombstones existed */
	MDB_dbi calls;            /* session id . be64 started . call id
	                             -> call record; valid when has_calls */
	int has_calls;            /* 0: a read-only open of a store made
	                             before calls existed */
	MDB_dbi blobs;            /* entry key -> blob name . u64 size;
	                             valid when has_blobs */
	int has_blobs;            /* 0: a read-only open of a format 1
	                             store (no blob files) */
	int blobfd;               /* the blobs directory, or -1 */
	int meta_damaged;         /* a tolerant open could not read meta */
	pthread_mutex_t unsynced_lock;
	struct blob_list unsynced;/* files committed since the last
	                             store_sync() (INTERVAL, NEVER) */
	int unsynced_lost;        /* one could not be remembered: syncfs */
	struct blob_list reap;    /* dropped files waiting for store_reap()
	                             (defer_unlink; under unsynced_lock) */
	char *path;               /* directory, owned */
	store_options opt;        /* as opened, defaults filled in */
	void (*write_guard)(void *arg, int fd); /* before each write
	                             transaction (store_set_write_guard) */
	void *write_guard_arg;
	pthread_rwlock_t resize;  /* held shared by transactions, exclusively
	                             while the map grows */
	pthread_mutex_t map_lock; /* guards map_base */
	uintptr_t map_base;       /* where data.mdb is mapped (0: not known) */
	size_t map_base_size;     /* for a map of this size */
};

/* A running transaction. */
struct store_txn {
	store *s;                 /* its store */
	MDB_txn *txn;             /* the LMDB transaction */
	int readonly;             /* started by store_read */
	struct blob_list created; /* blob files this transaction wrote */
	struct blob_list dropped; /* blob files it dropped (unlinked after
	                             the commit) */
	struct blob_map *maps;    /* blob files it mapped */
	size_t nmaps, capmaps;
	int nogrow;               /* a full disk: growing the map is no
	                             help */
	int64_t blob_delta;       /* bytes of files written less dropped */
	char *cause;              /* malloc'd: which step failed and on
	                             what (store_txn_cause), or NULL */
	/* store_val_ok's bounds, found at its first call: the map, and
	 * the part of it the data file backs (past EOF a read is SIGBUS) */
	int bounds_known;
	uintptr_t map_lo, map_end, file_end;
	struct session_delta *deltas; /* entries and bytes each session
	                             gained or lost in this transaction,
	                             added to its record at commit
	                             (session_precommit) */
	size_t ndeltas, capdeltas;
};

/* What one transaction changed in one session's counts (session.c). */
struct session_delta {
	uint8_t id[STORE_ID_SIZE];
	int64_t entries;
	int64_t bytes;
};

/* Size of the session record's fixed part (version 2: with counts),
 * and of version 1's (no counts; formats 1 and 2). */
#define SESSION_REC_FIXED 96
#define SESSION_REC_FIXED_V1 80
/* Size of a tombstone record (its value). */
#define TOMB_REC_SIZE 48
/* Largest tombstone key: name . 0 . be64 ended . id. */
#define TOMB_KEY_MAX (STORE_NAME_MAX + 1 + 8 + STORE_ID_SIZE)
/* Size of an expiry key: be64 time . id. */
#define EXPIRY_KEY_SIZE (8 + STORE_ID_SIZE)
/* Size of the record header's fixed part. */
#define RECORD_FIXED 40
/* Largest entry key: id . kind . name. */
#define ENTRY_KEY_MAX (STORE_ID_SIZE + 1 + STORE_KEY_MAX)
/* Largest refs value: kind . name (LMDB's DUPSORT value limit is 511). */
#define REFS_VAL_MAX (1 + STORE_KEY_MAX)

/* env.c */
int store_map_err(int mdb_rc);
/* Mark env's data file close-on-exec (env open).  LMDB opens data.mdb
 * without O_CLOEXEC (its lock and meta descriptors have it), so every
 * program a process of ours starts (shipped code's os.system(),
 * subprocess with close_fds=False) would hold the store's file.  A
 * failure of fcntl() on a descriptor LMDB holds open cannot happen; it is
 * ignored. */
void env_cloexec(MDB_env *env);

/* txn.c */
/* Say which durable step of t failed (printf-style: the step, the path,
 * and what the system said), replacing an earlier sentence; store_write_
 * cause hands it out.  errno is kept.  Without memory it is left NULL:
 * the error code still says what failed. */
void store_txn_cause(store_txn *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* 1 when the bytes v points at lie in the part of the map the data file
 * backs (or, in a write transaction, in a page LMDB copied out of it), 0
 * when a damaged page gave a pointer or length that runs past it: then
 * STORE_E_CORRUPT, and the bytes must not be read. */
int store_val_ok(store_txn *t, const MDB_val *v);

/* session.c */
/* The expiry-index key of a session into k (EXPIRY_KEY_SIZE bytes): time 0
 * for dead sessions; returns 0 (no key) for a live session without lease. */
int session_decode(const uint8_t *id, const uint8_t *p, size_t n,
                   store_session *ss);
int session_expiry_key(const store_session *ss, uint8_t *k);
/* Note that the transaction changed session sid's entries by dentries and
 * their bytes by dbytes (entry.c, the purge).  STORE_E_NOMEM. */
int session_delta_note(store_txn *t, const uint8_t *sid, int64_t dentries,
                       int64_t dbytes);
/* Before a write transaction commits: add the noted changes to the
 * session records (a record without counts is counted whole). */
int session_precommit(store_txn *t);
/* Write every record of version 1 again with its counts (migration to
 * format 3, in the writable open's transaction). */
int session_counts_migrate(store_txn *t);

/* tomb.c */
size_t tomb_key(uint8_t *k, const char *name, uint64_t ended_ms,
                const uint8_t *id);

/* entry.c */
size_t entry_key_make(uint8_t *k, const uint8_t *sid, uint8_t kind,
                      const char *name, size_t name_len, uint64_t handle);
int entry_key_parse(const uint8_t *k, size_t n, store_key *out);
void entry_key_parse_any(const uint8_t *k, size_t n, store_key *out);
int entry_value(store_txn *t, const uint8_t *sid, uint8_t kind,
                const char *name, size_t name_len, uint64_t handle,
                MDB_val *v);
size_t entry_value_len(const MDB_val *v);

/* blob.c */
int blob_dir_open(store *s, char **cause);
int blob_write(store_txn *t, const MDB_val *k, const store_entry_in *in,
               size_t size, uint8_t *ref);
int blob_any(store_txn *t);
int blob_drop(store_txn *t, const MDB_val *k);
int blob_precommit(store_txn *t);
void blob_txn_end(store_txn *t, int committed);
void blob_unlink_list(store *s, const struct blob_list *l);
int blob_sync(store *s, char **cause);
int blob_sweep(store_txn *t, size_t *removed);
/* What blob_resolve found wrong with a blob record's file. */
enum blob_why {
	BLOB_WHY_NONE = 0,
	BLOB_WHY_REF,       /* the reference is malformed */
	BLOB_WHY_MISSING,   /* no such file (ENOENT at its open) */
	BLOB_WHY_SIZE,      /* *fsize bytes, not the reference's size */
	BLOB_WHY_DIGEST,    /* its bytes do not match the digest */
	BLOB_WHY_IO         /* the file system refused (errno kept) */
};
int blob_resolve(store_txn *t, store_record *r, int check,
                 enum blob_why *why, uint64_t *fsize);
int blob_map_at(int dirfd, store_record *r, int check, enum blob_why *why,
                uint64_t *fsize, void **map, uint64_t *maplen);

/* record.c */
void record_payload_digest_end(XXH3_state_t *st, unsigned flags,
                               const void *refs, size_t refs_len,
                               uint8_t out[STORE_DIGEST_SIZE]);

/* util.c */
void be64_put(uint8_t *p, uint64_t v);
uint64_t be64_get(const uint8_t *p);
void be32_put(uint8_t *p, uint32_t v);
uint32_t be32_get(const uint8_t *p);
void be16_put(uint8_t *p, uint16_t v);
uint16_t be16_get(const uint8_t *p);

#endif
