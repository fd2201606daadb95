/*
 * dump.h - what the files of pyshelf-dump share: its options, the state of
 * one run, and prototypes grouped by file.  The tool lives in the tree and
 * reads the store's internal header for the raw layout that --check
 * verifies (store-int.h); everything it decodes goes through the store's
 * own functions (record_decode, session_get_by_id, entry_key_parse...).
 */
#ifndef PYSHELF_DUMP_H
#define PYSHELF_DUMP_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "store-int.h"
#include "pickledis.h"

/* Version of the --json output (the "dump_format" of the first row).
 * Fields are only ever added within one version. */
#define DUMP_FORMAT 1

/* Exit statuses. */
#define DUMP_EXIT_OK 0           /* done; with --check: the store is sound */
#define DUMP_EXIT_DAMAGE 1       /* damage found */
#define DUMP_EXIT_ERROR 2        /* bad usage, no store, no such session... */
#define DUMP_EXIT_INTERRUPTED 130 /* SIGINT */

/* Orders of the entries view. */
enum dump_sort {
	DUMP_SORT_KEY = 0,        /* store order: globals by name, handles by id */
	DUMP_SORT_SIZE,           /* biggest first */
	DUMP_SORT_TIME            /* newest first */
};

/* What the command line asked for. */
struct dump_opts {
	const char *db;           /* store directory */
	const char *session;      /* SESSION argument, or NULL */
	const char *key;          /* KEY argument, or NULL */
	int json;                 /* --json */
	int check;                /* --check */
	const char *salvage;      /* --salvage OUT, or NULL */
	int salvage_scan;         /* salvage by a scan of the pages, into
	                             what a walk that crashed saved in OUT */
	int records;              /* --sessions: the session records only */
	int compact;              /* --compact */
	int unpickle;             /* --unpickle (runs the pickle's code) */
	int quiet;                /* --quiet: no progress, problems only */
	enum dump_sort sort;      /* --sort */
	uint64_t top;             /* --top N; 0: all rows */
	size_t repr_max;          /* --unpickle: longest repr shown */
};

/* Nesting of the JSON writer (objects and arrays). */
#define DUMP_JSON_DEPTH 8

/* One run of the tool. */
struct dump {
	const struct dump_opts *o;  /* options */
	store *s;                   /* the store, read-only */
	FILE *out;                  /* where rows go (stdout) */
	uint64_t now_ms;            /* wall clock at start (for "expired") */
	uint32_t format;            /* the store's format (meta) */
	uint64_t created_ms;        /* the store's creation time (meta) */
	int progress;               /* show progress on stderr (a terminal) */
	uint64_t damaged;           /* damaged records met (any view) */
	int json_depth;             /* JSON writer: open containers */
	int json_comma[DUMP_JSON_DEPTH]; /* an item was written at this depth */
	pickledis *pd;              /* disassembler context */
	uint8_t *payload;           /* --unpickle: payload copied out of the
	                               snapshot (malloc'd) */
	size_t payload_len;
	uint16_t payload_flags;     /* its record flags */
	const char *blob;           /* the entry's blob file (blobs/...), or NULL */
	int want_unpickle;          /* the entry view saved a payload */
};

/* Set by the SIGINT handler; loops check it. */
extern volatile sig_atomic_t dump_interrupted;

/*
 * How far the run got, in memory shared with the parent: LMDB does not
 * verify its pages, and a damaged one can make it read anywhere, so the
 * store is read in a child process (pyshelf-dump.c), and when the child
 * dies of a signal the parent reports the crash as damage, with the
 * database and the last key the walk reached, and for --check the counts.
 */
struct dump_progress {
	char db[16];                /* database being read ("open": opening
	                               the store) */
	uint64_t n;                 /* its records passed */
	uint8_t key[ENTRY_KEY_MAX]; /* the last key passed in it */
	size_t key_len;
	int check;                  /* --check's counters below are set */
	uint64_t problems, sessions, entries, bytes, blobs, changed;
	char lmdb_assert[240];      /* LMDB's sentence when one of its
	                               assertions ended the child */
};
extern struct dump_progress *dump_prog;
void dump_progress_db(const char *db);
void dump_progress_key(const void *key, size_t len);
char *dump_progress_where(char *buf, size_t cap);

/* pyshelf-dump.c */
void dump_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* dump-out.c */
char *dump_out_time(char *buf, size_t cap, uint64_t ms);
char *dump_out_size(char *buf, size_t cap, uint64_t bytes);
char *dump_out_duration(char *buf, size_t cap, uint64_t ms);
char *dump_out_text(char *buf, size_t cap, const void *p, size_t n);
void dump_out_pad(FILE *f, const char *s, int width);
int dump_out_width(const char *s);
char *dump_out_key(char *buf, size_t cap, const store_key *k);
const char *dump_out_pickler(uint8_t pickler);
char *dump_out_flags(char *buf, size_t cap, uint16_t flags);
void dump_out_progress(struct dump *d, const char *what, uint64_t done,
                       uint64_t total, int final);
int dump_out_ambiguous(const char *name, size_t len);

/* dump-json.c */
void dump_json_row(struct dump *d, const char *row);
void dump_json_row_end(struct dump *d);
void dump_json_obj(struct dump *d, const char *key);
void dump_json_arr(struct dump *d, const char *key);
void dump_json_close(struct dump *d, char c);
void dump_json_str(struct dump *d, const char *key, const void *p, size_t n);
void dump_json_cstr(struct dump *d, const char *key, const char *s);
void dump_json_u64(struct dump *d, const char *key, uint64_t v);
void dump_json_bool(struct dump *d, const char *key, int v);
void dump_json_null(struct dump *d, const char *key);
void dump_json_header(struct dump *d, const char *view);
void dump_json_key_fields(struct dump *d, const store_key *k);

/* dump-list.c */
int dump_list_sessions(struct dump *d, store_txn *t);
int dump_list_records(struct dump *d, store_txn *t);
int dump_list_entries(struct dump *d, store_txn *t, const store_session *ss);
int dump_list_find_session(struct dump *d, store_txn *t, const char *arg,
                           store_session *out);

/* dump-entry.c */

/* One out-of-band payload split: the pickle and its buffers. */
struct dump_oob {
	const uint8_t *pickle;      /* borrowed from the payload */
	size_t pickle_len;
	uint32_t nbuffers;
	uint64_t *lengths;          /* malloc'd, nbuffers of them */
	size_t table_len;           /* header bytes before the pickle */
};
int dump_entry_oob_split(const uint8_t *p, size_t n, struct dump_oob *oob,
                         const char **why);
void dump_entry_oob_free(struct dump_oob *oob);
/* One reference of a record's refs blob. */
int dump_entry_parse_key(const char *arg, store_key *k, char *namebuf,
                         size_t cap);
int dump_entry_show(struct dump *d, store_txn *t, const store_session *ss,
                    const char *keyarg);
int dump_entry_fetch(store_txn *t, const uint8_t *sid, const store_key *k,
                     const uint8_t **val, size_t *len);
/*
 * A blob record (STORE_FLAG_BLOB): write "blobs/<name>" into path, then map
 * and verify its file (entry_resolve).  NULL when r now holds the payload,
 * else what is wrong, written into why (the record is left as it was);
 * *missing (may be NULL) is set when the file does not exist.
 */
const char *dump_entry_blob(store_txn *t, store_record *r, char *path,
                            size_t pathcap, char *why, size_t whycap,
                            int *missing);
const char *dump_entry_layout_why(const uint8_t *p, size_t n, char *buf,
                                  size_t cap);

/* dump-check.c */
int dump_check_run(struct dump *d, store_txn *t);
int dump_check_crashed(struct dump *d, const char *what);
int dump_check_unopened(struct dump *d, const char *cause);

/* dump-compact.c */
int dump_compact_run(struct dump *d);

/* dump-salvage.c */
/* One entry read back and verified (its bytes borrowed: the source
 * snapshot's, or the scan's copies). */
struct salvage_entry {
	store_key key;            /* name borrowed */
	store_record r;           /* payload from the map or a blob file */
};
int dump_salvage_run(struct dump *d, store_txn *t);
int dump_salvage_put(store_txn *t, const uint8_t *sid,
                     const struct salvage_entry *e);
void dump_salvage_lost_key(struct dump *d, const store_session *ss,
                           const store_key *k, const char *why);
int dump_salvage_out_ok(const char *out);
int dump_salvage_put_session(store_txn *t, store_session ss);

/* dump-scan.c */
int dump_salvage_scan(struct dump *d, int resume);

/* dump-unpickle.c */
int dump_unpickle_run(struct dump *d);

#endif
