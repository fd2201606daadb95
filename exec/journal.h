/*
 * journal.h - the call journal of one session (a worker's): per call id
 * (16 bytes the client chose), the call's source summary, state, times,
 * its output (bounded) and the body of the frame that ended it (a RESULT,
 * or an ERROR), so that a call that ran while no client of it was attached
 * can be listed (CALLS), replayed and taken (CALL_RESULT), and an EXEC
 * re-sent with a known call id runs no code twice.
 *
 * Thread-safe: the reader thread, the output forwarder and the main thread
 * all call it.  Every function takes the journal's lock, which is
 * recursive: a caller that needs two steps to be one (record a chunk of
 * output and send it to the call's joiners; replay a call and join it) may
 * hold it around them with journal_lock/journal_unlock, and call journal
 * functions meanwhile.  No function blocks on anything but that lock and,
 * for the ones that persist (journal_end with detached, journal_persist,
 * journal_load), one small store transaction, run without the lock held.
 *
 * Bounds (docs/STORAGE.md 3.9): calls per session, bytes of output and
 * final bodies per session, output per call (oldest chunks dropped first,
 * a gap marker in their place), and how long an ended call is kept.  The
 * oldest ended calls are dropped first; a queued or running call is never
 * dropped.  Calls persisted in the store (the `calls` database) mirror
 * what the journal keeps: a dropped call's row is deleted by the next
 * transaction that persists.
 */
#ifndef PYSHELF_JOURNAL_H
#define PYSHELF_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A call's state (store records use the same numbers: STORE_CALL_*). */
enum {
	JOURNAL_QUEUED = 1,  /* received, waiting for the main thread */
	JOURNAL_RUNNING = 2, /* its code runs */
	JOURNAL_DONE = 3,    /* ended; the journal holds its final frame */
	JOURNAL_LOST = 4     /* ended without a result of its own: the
	                        worker restarted (hard interrupt) or died
	                        while it ran */
};

/* Output streams, as the OUTPUT frame's STREAM. */
#define JOURNAL_STDOUT 1
#define JOURNAL_STDERR 2

/* What journal_replay's fn gets besides output chunks (stream 1, 2). */
#define JOURNAL_END_RESULT 0  /* p, n: the RESULT frame's body */
#define JOURNAL_END_ERROR (-1)/* p, n: the ERROR frame's body that ended
                                 it; a lost call without one: p NULL, n 0
                                 (say WORKER_RESTARTED yourself) */
#define JOURNAL_JOIN (-2)     /* p NULL, n 0: the call has not ended;
                                 still under the journal's lock, so the
                                 caller joins it here (no output is lost
                                 or doubled between replay and join) */

/* Defaults of journal_limits (0 in a field means its default). */
#define JOURNAL_MAX_CALLS_DEFAULT 1000
#define JOURNAL_MAX_BYTES_DEFAULT ((uint64_t)64 << 20)       /* 64 MiB */
#define JOURNAL_MAX_CALL_OUTPUT_DEFAULT ((uint64_t)8 << 20)  /* 8 MiB */
#define JOURNAL_KEEP_MS_DEFAULT (24ull * 3600 * 1000)        /* 24 h */

/* The summary: first non-blank line of the code, at most this many bytes
 * (cut at a UTF-8 boundary). */
#define JOURNAL_SUMMARY_MAX 80

/* A gap marker, replayed as one OUTPUT to stderr (%llu: bytes dropped). */
#define JOURNAL_GAP_FMT "[pyshelf: %llu bytes of output dropped]\n"

typedef struct journal journal;

/* Bounds.  Zero-initialise; 0 in a field is its default. */
typedef struct journal_limits {
	size_t max_calls;          /* calls kept per session (1000) */
	uint64_t max_bytes;        /* output + final bodies kept per session,
	                              all calls together (64 MiB) */
	uint64_t max_call_output;  /* output kept per call (8 MiB) */
	uint64_t keep_ms;          /* an ended call is kept this long after
	                              it ended (24 h) */
	uint64_t (*clock)(void);   /* wall clock in ms (NULL: store_now_ms);
	                              for tests */
} journal_limits;

/* What journal_find says of a call. */
typedef struct journal_call_info {
	uint8_t id[16];
	char summary[JOURNAL_SUMMARY_MAX + 1]; /* NUL-terminated UTF-8 */
	int state;                 /* JOURNAL_* */
	uint64_t started_ms;       /* when journal_begin saw it (wall clock) */
	uint64_t ended_ms;         /* 0 while queued or running */
	uint64_t output_bytes;     /* output the call wrote, dropped or not */
	uint64_t output_dropped;   /* of those, bytes no longer kept */
	int end_error;             /* it ended with an ERROR frame, not a
	                              RESULT (or lost) */
} journal_call_info;

/*
 * A new, empty journal of session session_id.  st (may be NULL: memory
 * only) is where calls are persisted; it must outlive the journal.  lim
 * NULL: the defaults.  NULL when out of memory.
 */
journal *journal_new(store *st, const uint8_t session_id[16],
                     const journal_limits *lim);
/* Free it and everything it holds (persists nothing). */
void journal_free(journal *j);
/*
 * Read the session's persisted calls into the journal (at worker start,
 * before any journal_begin).  A call persisted while queued or running
 * comes back LOST (its worker is gone).  Calls past keep_ms are not loaded
 * (their rows are deleted by the next persist), nor are records that do
 * not parse (counted by journal_load_skipped; pyshelf-dump --check reports
 * them): a damaged record never stops a worker.  0, or a STORE_E_* code
 * with *cause (may be NULL) a malloc'd sentence, when the store could not
 * be read.  0 without a store.
 */
int journal_load(journal *j, char **cause);
/* Records journal_load skipped as damaged. */
size_t journal_load_skipped(journal *j);
/*
 * Note a new call, QUEUED, with the summary of its code.  0, or -1 when the
 * id is already known (nothing changed: replay or join it instead) or no
 * memory.  May drop the oldest ended calls to keep the bounds.
 */
int journal_begin(journal *j, const uint8_t id[16], const char *code,
                  size_t code_len);
/* QUEUED -> RUNNING (or any state -> LOST).  An unknown id, or a change
 * of an ended call, is ignored. */
void journal_set_state(journal *j, const uint8_t id[16], int state);
/* Append output of a queued or running call (stream JOURNAL_STDOUT or
 * _STDERR); beyond max_call_output the oldest chunks go first, counted in
 * a gap.  An unknown or ended id is ignored. */
void journal_output(journal *j, const uint8_t id[16], int stream,
                    const void *p, size_t n);
/*
 * The call ended with a RESULT whose body (fields, without the 16-byte
 * header, so that it can be re-sent with another request id) is
 * result_body[0..n): state DONE, the body kept.  detached: no client of
 * it is attached any more: the call is persisted now (one small write
 * transaction; a failure is retried by the next persist).
 */
void journal_end(journal *j, const uint8_t id[16], const uint8_t *result_body,
                 size_t n, int detached);
/* journal_end for a call that ended with an ERROR frame (its body); state
 * DONE, or LOST when lost is set (body may then be NULL). */
void journal_end_error(journal *j, const uint8_t id[16],
                       const uint8_t *error_body, size_t n, int lost,
                       int detached);
/* 1 and *out filled (may be NULL) when the id is known, else 0. */
int journal_find(journal *j, const uint8_t id[16], journal_call_info *out);
/*
 * Replay a call, under the journal's lock: fn gets each output chunk kept
 * (stream JOURNAL_STDOUT/_STDERR; a gap as one JOURNAL_STDERR chunk with
 * the JOURNAL_GAP_FMT text), then either the final body (JOURNAL_END_RESULT
 * or JOURNAL_END_ERROR) or, for a call that has not ended, JOURNAL_JOIN.
 * fn must not block long (it only queues) and a nonzero return stops the
 * replay and is returned.  Returns 0, or -1 for an unknown id (fn never
 * called).  Borrowed bytes are valid only during fn.
 */
int journal_replay(journal *j, const uint8_t id[16],
                   int (*fn)(void *ctx, int stream, const uint8_t *p,
                             size_t n),
                   void *ctx);
/*
 * The CALLS listing: a malloc'd JSON list, oldest first, of
 * {"id": hex32, "summary": str, "state": "queued"|"running"|"done"|"lost",
 *  "started": ms, "ended": ms|null, "output_bytes": n,
 *  "output_dropped": n}.  NULL when out of memory.
 */
char *journal_list_json(journal *j);
/*
 * Persist every call listed that the store does not hold as it is (all of
 * them, queued and running ones too: at worker exit, and before a hard
 * restart's exec) and delete the rows of calls dropped since the last
 * persist, in one write transaction.  0 (also without a store), or a
 * STORE_E_* code with *cause (may be NULL) a malloc'd sentence.
 */
int journal_persist(journal *j, char **cause);
/* Calls listed now. */
size_t journal_count(journal *j);
/* Hold / release the journal's (recursive) lock. */
void journal_lock(journal *j);
void journal_unlock(journal *j);
/* "queued", "running", "done", "lost" or "unknown". */
const char *journal_state_name(int state);

#endif
