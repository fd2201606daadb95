/*
 * dump-check.h - what the two halves of pyshelf-dump --check share:
 * dump-check.c (the session, name, expiry and refs databases, the pages,
 * the run and its summary) and dump-check-entry.c (the entries and the
 * blob index).
 */
#ifndef PYSHELF_DUMP_CHECK_H
#define PYSHELF_DUMP_CHECK_H

#include "dump.h"

/* Problems reported for one session before they are only counted (a
 * whole session of orphans would otherwise print a line per entry). */
#define CHECK_ORPHANS_SHOWN 5
/* Cross-check the pickle's persistent ids against the refs blob when both
 * are at most this long (quadratic; longer lists are only resolved). */
#define CHECK_CROSS_MAX 256

/* The state of one --check run. */
struct check {
	struct dump *d;
	store_txn *t;
	uint64_t problems;        /* found so far */
	uint64_t sessions;        /* session records seen */
	uint64_t entries;         /* entries seen */
	uint64_t bytes;           /* their stored bytes */
	uint64_t blobs;           /* blob files among them */
	uint64_t changed;         /* entries whose file a newer commit
	                             dropped while the check ran */
	uint64_t total;           /* entries in the database (progress) */
	uint8_t sid[STORE_ID_SIZE]; /* session of the entries being walked */
	int have_sid;             /* sid is set */
	int sid_exists;           /* it has a (parsable) record */
	store_session ss;         /* its record, when it exists */
	uint64_t orphans;         /* orphan entries of sid */
	uint64_t calls;           /* call journal rows seen */
	uint8_t call_sid[STORE_ID_SIZE]; /* session of the calls walked */
	int have_call_sid;        /* call_sid is set */
	int call_sid_exists;      /* it has a record */
};

/* dump-check.c */
void dump_check_mirror(const struct check *c);
void dump_check_problem(struct check *c, const uint8_t *sid, const char *sname,
                        const store_key *k, const char *what, const char *fmt,
                        ...)
    __attribute__((format(printf, 6, 7)));

/* dump-check-entry.c */
void dump_check_entry_enter_session(struct check *c, const uint8_t *sid);
int dump_check_entry(const uint8_t *sid, const store_key *k, const uint8_t *val,
                     size_t len, void *arg);
int dump_check_entry_blob_row(const uint8_t *sid, const store_key *k,
                              const uint8_t *name, uint64_t size, void *arg);

#endif
