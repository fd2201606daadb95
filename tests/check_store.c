/*
 * check_store.c - the store library's suite: every call of store.h round
 * trips (Core), edges and refusals (Limits), ranges of 100,000 entries and
 * a purged session's refs rows (Purge), map growth and 100 MB values (Big),
 * several processes on one environment (Procs) and SIGKILL in the middle
 * of commits and of a purge (Crash).
 *
 * check forks per test and LMDB forbids using an environment across fork(),
 * so every test opens its store itself, in a directory of its own made by
 * the checked fixture.  Tests that fork writers do it while no store is
 * open.  A failed test skips its checked teardown; main() removes the
 * suite's whole temporary tree at the end, whatever happened.
 *
 * Environment: TMPDIR (where the tree goes), CK_RUN_CASE, CK_FORK as usual.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "store.h"
#include "testutil.h"

#define MiB ((size_t)1 << 20)

/* The suite's temporary tree (made by main) and this test's directory. */
static char base_dir[PATH_MAX];
static char test_dir[PATH_MAX];
/* test_dir/db: where the store of a test lives. */
static char db_dir[PATH_MAX + 8];
/* The store the fixture or the test opened, closed by the teardown. */
static store *S;

/* --- payload patterns ---------------------------------------------------- */

/* One step of xorshift64. */
static uint64_t
xs64(uint64_t x)
{
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

/* Fill p[0..n) with bytes that depend on seed and on the position. */
static void
pattern_fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
	size_t i;

	for (i = 0; i < n; i += 8) {
		x = xs64(x);
		memcpy(p + i, &x, n - i < 8 ? n - i : 8);
	}
}

/* Nonzero when p[0..n) is pattern_fill(seed). */
static int
pattern_ok(const uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
	size_t i;

	for (i = 0; i < n; i += 8) {
		x = xs64(x);
		if (memcmp(p + i, &x, n - i < 8 ? n - i : 8) != 0)
			return 0;
	}
	return 1;
}

/* A seed that ties an entry number to its session. */
static uint64_t
seed_of(const uint8_t *sid, uint64_t i)
{
	uint64_t tag;

	memcpy(&tag, sid, sizeof tag);
	return tag ^ (i * 0xD6E8FEB86659FD93ull);
}

/* --- fixture -------------------------------------------------------------- */

/* Checked fixture: a fresh directory for this test. */
static void
setup_dir(void)
{
	S = NULL;
	if (tu_mkdtemp(test_dir, sizeof test_dir, base_dir, "t") != 0)
		ck_abort_msg("mkdtemp under %s: %s", base_dir, strerror(errno));
	snprintf(db_dir, sizeof db_dir, "%s/db", test_dir);
}

/* Open (creating) the store at db_dir with opt into S; fail the test on an
 * error, naming the cause. */
static void
open_S(const store_options *opt)
{
	store_options o = {0};
	char *cause = NULL;
	int rc;

	if (opt != NULL)
		o = *opt;
	o.create = 1;
	rc = store_open(&S, db_dir, &o, &cause);
	ck_assert_msg(rc == 0, "store_open %s: %s (%s)", db_dir,
	    store_strerror(rc), cause != NULL ? cause : "no cause");
	free(cause);
}

/* Close S if open. */
static void
close_S(void)
{
	store_close(S);
	S = NULL;
}

/* Checked fixture: a fresh directory and a store open in it. */
static void
setup_store(void)
{
	setup_dir();
	open_S(NULL);
}

/* Checked teardown (skipped after a failure; main cleans up then). */
static void
teardown(void)
{
	close_S();
	tu_rmtree(test_dir);
}

/* --- callbacks and wrappers ---------------------------------------------- */

/* Argument of the session callbacks. */
struct sess_arg {
	const char *name;      /* by name / create */
	const uint8_t *id;     /* by id / kill */
	const uint8_t *token;  /* create */
	uint64_t lease, now;   /* create */
	store_session ss;      /* in (put) or out */
};

static int
cb_session_create(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_create(t, sa->name, sa->token, sa->lease, sa->now,
	    &sa->ss);
}

static int
cb_session_by_name(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_get_by_name(t, sa->name, &sa->ss);
}

static int
cb_session_by_id(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_get_by_id(t, sa->id, &sa->ss);
}

static int
cb_session_put(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_put(t, &sa->ss);
}

static int
cb_session_kill(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_kill(t, sa->id);
}

/* Find the session by name, creating it when missing: run by concurrent
 * writers, which LMDB serialises, so exactly one of them creates it. */
static int
cb_session_get_or_create(store_txn *t, void *a)
{
	struct sess_arg *sa = a;
	int rc = session_get_by_name(t, sa->name, &sa->ss);

	if (rc == STORE_E_NOTFOUND)
		rc = session_create(t, sa->name, sa->token, sa->lease, sa->now,
		    &sa->ss);
	return rc;
}

/* Create session name (lease, now) in s; fail the test on an error. */
static void
mk_session(store *s, const char *name, uint64_t lease, uint64_t now,
           store_session *out)
{
	struct sess_arg sa = {0};
	int rc;

	sa.name = name;
	sa.lease = lease;
	sa.now = now;
	rc = store_write(s, cb_session_create, &sa);
	ck_assert_msg(rc == 0, "session_create %s: %s", name,
	    store_strerror(rc));
	*out = sa.ss;
}

/* Mark a session dead. */
static void
kill_session(store *s, const uint8_t *id)
{
	struct sess_arg sa = {0};
	int rc;

	sa.id = id;
	rc = store_write(s, cb_session_kill, &sa);
	ck_assert_msg(rc == 0, "session_kill: %s", store_strerror(rc));
}

/* Argument of the entry callbacks. */
struct ent_arg {
	const uint8_t *sid;      /* the session */
	store_entry_in in;       /* put */
	uint64_t now;            /* put */
	uint8_t kind;            /* get / del */
	const char *name;
	size_t name_len;
	uint64_t handle;
	store_record rec;        /* get: header fields (pointers stale) */
	uint8_t *payload;        /* get: malloc'd copy of the payload */
	char type[300];          /* get: type name, NUL-terminated */
	uint8_t refs[300];       /* get: refs blob (first 300 bytes) */
};

static int
cb_entry_put(store_txn *t, void *a)
{
	struct ent_arg *ea = a;

	return entry_put(t, ea->sid, &ea->in, ea->now);
}

static int
cb_entry_del(store_txn *t, void *a)
{
	struct ent_arg *ea = a;

	return entry_del(t, ea->sid, ea->kind, ea->name, ea->name_len,
	    ea->handle);
}

static int
cb_entry_exists(store_txn *t, void *a)
{
	struct ent_arg *ea = a;

	uint16_t flags = 0xffff;
	int rc = entry_exists(t, ea->sid, ea->kind, ea->name, ea->name_len,
	    ea->handle, &flags);

	ea->rec.flags = flags;
	return rc;
}

/* Get an entry and copy out what the test checks. */
static int
cb_entry_get(store_txn *t, void *a)
{
	struct ent_arg *ea = a;
	int rc;

	rc = entry_get(t, ea->sid, ea->kind, ea->name, ea->name_len,
	    ea->handle, &ea->rec);
	if (rc != 0)
		return rc;
	ea->payload = malloc(ea->rec.payload_len + 1);
	if (ea->payload == NULL)
		return STORE_E_NOMEM;
	memcpy(ea->payload, ea->rec.payload, ea->rec.payload_len);
	snprintf(ea->type, sizeof ea->type, "%.*s", (int)ea->rec.type_len,
	    ea->rec.type_name);
	memcpy(ea->refs, ea->rec.refs,
	    ea->rec.refs_len < sizeof ea->refs ? ea->rec.refs_len :
	    sizeof ea->refs);
	ea->rec.type_name = NULL;
	ea->rec.refs = NULL;
	ea->rec.payload = NULL;
	return 0;
}

/* Write one entry whose payload is p[0..n) in one piece. */
static int
put_one(store *s, const uint8_t *sid, uint8_t kind, const char *name,
        uint64_t handle, const void *p, size_t n)
{
	struct ent_arg ea = {0};
	struct iovec iov;

	iov.iov_base = (void *)p;
	iov.iov_len = n;
	ea.sid = sid;
	ea.in.kind = kind;
	ea.in.name = name;
	ea.in.name_len = name != NULL ? strlen(name) : 0;
	ea.in.handle = handle;
	ea.in.pickler = STORE_PICKLER_PICKLE;
	ea.in.type_name = "bytes";
	ea.in.iov = &iov;
	ea.in.iovcnt = 1;
	ea.now = 1234;
	return store_write(s, cb_entry_put, &ea);
}

/* Read one entry; on 0 *out is a malloc'd copy of its payload. */
static int
get_one(store *s, const uint8_t *sid, uint8_t kind, const char *name,
        uint64_t handle, uint8_t **out, size_t *len)
{
	struct ent_arg ea = {0};
	int rc;

	ea.sid = sid;
	ea.kind = kind;
	ea.name = name;
	ea.name_len = name != NULL ? strlen(name) : 0;
	ea.handle = handle;
	rc = store_read(s, cb_entry_get, &ea);
	if (rc == 0) {
		*out = ea.payload;
		*len = ea.rec.payload_len;
	}
	return rc;
}

/* Argument of the count callback. */
struct count_arg {
	const uint8_t *sid;
	uint64_t n, bytes;
};

static int
cb_count(store_txn *t, void *a)
{
	struct count_arg *ca = a;

	return session_count(t, ca->sid, &ca->n, &ca->bytes);
}

/* Entries of a session. */
static uint64_t
count_entries(store *s, const uint8_t *sid)
{
	struct count_arg ca = {sid, 0, 0};
	int rc = store_read(s, cb_count, &ca);

	ck_assert_msg(rc == 0, "session_count: %s", store_strerror(rc));
	return ca.n;
}

/*
 * Numbered entries: entry i of a "fill" is global "g<i>" when i is odd and
 * handle i when even (or all of one kind), with a payload of size_of(i)
 * pattern bytes seeded by the session and i.
 */
struct fill_arg {
	const uint8_t *sid;
	uint64_t first, n;       /* entries first .. first+n-1 */
	uint8_t kind;            /* 'g', 'h', or 0 for alternating */
	size_t size;             /* payload size; 0: small and varying */
	uint64_t bad;            /* verify: first entry that failed */
	int rc;                  /* verify: its error */
};

/* Kind of entry i of a fill. */
static uint8_t
fill_kind(const struct fill_arg *fa, uint64_t i)
{
	if (fa->kind != 0)
		return fa->kind;
	return i % 2 ? STORE_KIND_GLOBAL : STORE_KIND_HANDLE;
}

/* Payload size of entry i of a fill. */
static size_t
fill_size(const struct fill_arg *fa, uint64_t i)
{
	return fa->size != 0 ? fa->size : 8 + (size_t)(i * 37 % 57);
}

/* Write the fill's entries in the current transaction. */
static int
cb_fill(store_txn *t, void *a)
{
	struct fill_arg *fa = a;
	uint8_t small[128], *buf = small;
	char name[32];
	store_entry_in in;
	struct iovec iov;
	uint64_t i;
	size_t n;
	int rc = 0;

	for (i = fa->first; i < fa->first + fa->n && rc == 0; i++) {
		n = fill_size(fa, i);
		if (n > sizeof small && (buf = malloc(n)) == NULL)
			return STORE_E_NOMEM;
		pattern_fill(buf, n, seed_of(fa->sid, i));
		memset(&in, 0, sizeof in);
		in.kind = fill_kind(fa, i);
		snprintf(name, sizeof name, "g%llu", (unsigned long long)i);
		in.name = name;
		in.name_len = strlen(name);
		in.handle = i;
		in.type_name = "int";
		iov.iov_base = buf;
		iov.iov_len = n;
		in.iov = &iov;
		in.iovcnt = 1;
		rc = entry_put(t, fa->sid, &in, 1000 + i);
		if (buf != small)
			free(buf);
		buf = small;
	}
	return rc;
}

/* Check the fill's entries read back intact (digest and pattern). */
static int
cb_verify(store_txn *t, void *a)
{
	struct fill_arg *fa = a;
	store_record r;
	char name[32];
	uint64_t i;
	int rc;

	for (i = fa->first; i < fa->first + fa->n; i++) {
		snprintf(name, sizeof name, "g%llu", (unsigned long long)i);
		rc = entry_get(t, fa->sid, fill_kind(fa, i), name, strlen(name),
		    i, &r);
		if (rc == 0 && (r.payload_len != fill_size(fa, i) ||
		    !pattern_ok(r.payload, r.payload_len, seed_of(fa->sid, i)) ||
		    r.time_ms != 1000 + i))
			rc = STORE_E_CORRUPT;
		if (rc != 0) {
			fa->bad = i;
			fa->rc = rc;
			return rc;
		}
	}
	return 0;
}

/* Write entries first..first+n-1 of session sid in one transaction. */
static void
fill(store *s, const uint8_t *sid, uint64_t first, uint64_t n, uint8_t kind,
     size_t size)
{
	struct fill_arg fa = {sid, first, n, kind, size, 0, 0};
	int rc = store_write(s, cb_fill, &fa);

	ck_assert_msg(rc == 0, "fill %llu+%llu: %s", (unsigned long long)first,
	    (unsigned long long)n, store_strerror(rc));
}

/* Fail unless entries first..first+n-1 of sid read back intact. */
static void
verify(store *s, const uint8_t *sid, uint64_t first, uint64_t n, uint8_t kind,
       size_t size)
{
	struct fill_arg fa = {sid, first, n, kind, size, 0, 0};
	int rc = store_read(s, cb_verify, &fa);

	ck_assert_msg(rc == 0, "entry %llu: %s", (unsigned long long)fa.bad,
	    store_strerror(fa.rc));
}

/* Put sessions in id order (for neighbours on both sides of a range). */
static int
cmp_session_id(const void *a, const void *b)
{
	return memcmp(((const store_session *)a)->id,
	    ((const store_session *)b)->id, STORE_ID_SIZE);
}

/* --- Core: store_* ------------------------------------------------------- */

START_TEST(test_open_meta_usage)
{
	uint32_t format = 0;
	uint64_t created = 0, created2 = 0, now = store_now_ms();
	size_t map = 0, used = 0, max = 0;

	ck_assert_int_eq(store_meta(S, &format, &created), 0);
	ck_assert_uint_eq(format, STORE_FORMAT_VERSION);
	ck_assert_msg(created <= now && created + 60000 > now,
	    "created %llu, now %llu", (unsigned long long)created,
	    (unsigned long long)now);
	ck_assert_str_eq(store_path(S), db_dir);
	ck_assert_int_eq(store_usage(S, &map, &used, &max), 0);
	ck_assert_uint_eq(map, 64 * MiB);           /* the default */
	ck_assert_uint_eq(max, (size_t)1 << 40);    /* the default */
	ck_assert_uint_gt(used, 0);
	ck_assert_uint_lt(used, MiB);
	ck_assert_int_eq(store_usage(S, NULL, NULL, NULL), 0);
	ck_assert_int_eq(store_sync(S), 0);
	ck_assert_int_eq(store_meta(S, NULL, NULL), 0);
	close_S();

	/* Reopening keeps the creation time; the map options are taken. */
	{
		store_options o = {0};

		o.map_initial = 2 * MiB;
		o.map_max = 8 * MiB;
		open_S(&o);
	}
	ck_assert_int_eq(store_meta(S, &format, &created2), 0);
	ck_assert_uint_eq(created2, created);
	ck_assert_int_eq(store_usage(S, &map, &used, &max), 0);
	ck_assert_uint_eq(map, 2 * MiB);
	ck_assert_uint_eq(max, 8 * MiB);
	close_S();
	{
		store_options o = {0};

		o.map_initial = 8 * MiB;        /* cut to the maximum */
		o.map_max = 2 * MiB;
		open_S(&o);
	}
	ck_assert_int_eq(store_usage(S, &map, &used, &max), 0);
	ck_assert_uint_eq(map, 2 * MiB);
	ck_assert_uint_eq(max, 2 * MiB);
}
END_TEST

START_TEST(test_default_path)
{
	char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	char *saved_xdg = getenv("XDG_DATA_HOME") ?
	    strdup(getenv("XDG_DATA_HOME")) : NULL;
	char xdg[PATH_MAX + 8], want[PATH_MAX + 32];
	store_options o = {0};
	char *p, *cause = NULL;
	store *s = NULL;
	int rc;

	setenv("HOME", "/home/someone", 1);
	setenv("XDG_DATA_HOME", "/xdg/data", 1);
	p = store_default_path();
	ck_assert_str_eq(p, "/xdg/data/pyshelf");
	free(p);
	/* A relative XDG_DATA_HOME is invalid (XDG spec): ignored. */
	setenv("XDG_DATA_HOME", "relative/data", 1);
	p = store_default_path();
	ck_assert_str_eq(p, "/home/someone/.local/share/pyshelf");
	free(p);
	setenv("XDG_DATA_HOME", "", 1);
	p = store_default_path();
	ck_assert_str_eq(p, "/home/someone/.local/share/pyshelf");
	free(p);
	unsetenv("XDG_DATA_HOME");
	p = store_default_path();
	ck_assert_str_eq(p, "/home/someone/.local/share/pyshelf");
	free(p);

	/* The default path is created, parents included, on first open. */
	snprintf(xdg, sizeof xdg, "%s/x/y", test_dir);
	setenv("XDG_DATA_HOME", xdg, 1);
	p = store_default_path();
	snprintf(want, sizeof want, "%s/pyshelf", xdg);
	ck_assert_str_eq(p, want);
	o.create = 1;
	rc = store_open(&s, p, &o, &cause);
	ck_assert_msg(rc == 0, "open %s: %s", p, cause ? cause : "?");
	ck_assert_str_eq(store_path(s), want);
	store_close(s);
	snprintf(want, sizeof want, "%s/pyshelf/data.mdb", xdg);
	ck_assert_int_eq(access(want, F_OK), 0);
	free(p);

	if (saved_home != NULL)
		setenv("HOME", saved_home, 1);
	if (saved_xdg != NULL)
		setenv("XDG_DATA_HOME", saved_xdg, 1);
	else
		unsetenv("XDG_DATA_HOME");
	free(saved_home);
	free(saved_xdg);
}
END_TEST

START_TEST(test_strerror)
{
	static const int codes[] = {STORE_E_NOTFOUND, STORE_E_EXISTS,
	    STORE_E_CORRUPT, STORE_E_VERSION, STORE_E_FULL, STORE_E_NOMEM,
	    STORE_E_INVAL, STORE_E_IO, STORE_E_LMDB, STORE_E_NOTSTORE,
	    STORE_E_READONLY, STORE_E_DEAD};
	size_t i, j, n = sizeof codes / sizeof codes[0];

	ck_assert_str_eq(store_strerror(0), "success");
	for (i = 0; i < n; i++) {
		const char *m = store_strerror(codes[i]);
		ck_assert_ptr_nonnull(m);
		ck_assert_uint_gt(strlen(m), 5);
		for (j = 0; j < i; j++)
			ck_assert_str_ne(m, store_strerror(codes[j]));
	}
	ck_assert_str_eq(store_strerror(MDB_MAP_FULL),
	    mdb_strerror(MDB_MAP_FULL));
}
END_TEST

/* Argument of test_read_write_results' callbacks. */
struct rw_arg {
	const uint8_t *sid;
	int ret;                 /* what the callback returns */
	int calls;
};

/* Write an entry, then return rw->ret: nonzero aborts. */
static int
cb_write_then_return(store_txn *t, void *a)
{
	struct rw_arg *rw = a;
	store_entry_in in = {0};

	rw->calls++;
	in.kind = STORE_KIND_GLOBAL;
	in.name = "aborted";
	in.name_len = 7;
	if (entry_put(t, rw->sid, &in, 1) != 0)
		return -1;
	return rw->ret;
}

/* Writing in a read transaction is refused. */
static int
cb_put_in_read(store_txn *t, void *a)
{
	struct rw_arg *rw = a;
	store_entry_in in = {0};
	store_session ss = {0};
	int rc1, rc2, rc3;

	rw->calls++;
	in.kind = STORE_KIND_HANDLE;
	in.handle = 1;
	rc1 = entry_put(t, rw->sid, &in, 1);
	rc2 = entry_del(t, rw->sid, STORE_KIND_HANDLE, NULL, 0, 1);
	rc3 = session_put(t, &ss);
	if (rc1 != STORE_E_READONLY || rc2 != STORE_E_READONLY ||
	    rc3 != STORE_E_READONLY)
		return -1;
	return rw->ret;
}

START_TEST(test_read_write_results)
{
	store_session ss;
	struct rw_arg rw = {NULL, 0, 0};
	uint8_t *p;
	size_t n;

	mk_session(S, "rw", 0, 1, &ss);
	rw.sid = ss.id;
	rw.ret = 4242; /* a callback's own result aborts and comes back */
	ck_assert_int_eq(store_write(S, cb_write_then_return, &rw), 4242);
	ck_assert_int_eq(rw.calls, 1);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "aborted", 0, &p, &n),
	    STORE_E_NOTFOUND);
	rw.ret = STORE_E_INVAL;
	ck_assert_int_eq(store_write(S, cb_write_then_return, &rw),
	    STORE_E_INVAL);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "aborted", 0, &p, &n),
	    STORE_E_NOTFOUND);
	rw.ret = 0;
	ck_assert_int_eq(store_write(S, cb_write_then_return, &rw), 0);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "aborted", 0, &p, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(p);

	rw.ret = 17;
	rw.calls = 0;
	ck_assert_int_eq(store_read(S, cb_put_in_read, &rw), 17);
	ck_assert_int_eq(rw.calls, 1);
}
END_TEST

START_TEST(test_readonly_open)
{
	store_session ss;
	store_options o = {0};
	char *cause = NULL;
	struct rw_arg rw = {NULL, 0, 0};
	uint8_t *p;
	size_t n;
	int rc;

	mk_session(S, "ro", 0, 1, &ss);
	ck_assert_int_eq(put_one(S, ss.id, 'g', "x", 0, "hello", 5), 0);
	close_S();
	o.readonly = 1;
	rc = store_open(&S, db_dir, &o, &cause);
	ck_assert_msg(rc == 0, "read-only open: %s", cause ? cause : "?");
	ck_assert_int_eq(get_one(S, ss.id, 'g', "x", 0, &p, &n), 0);
	ck_assert_mem_eq(p, "hello", 5);
	free(p);
	rw.sid = ss.id;
	ck_assert_int_eq(store_write(S, cb_write_then_return, &rw),
	    STORE_E_READONLY);
	ck_assert_int_eq(rw.calls, 0);
	ck_assert_int_eq(store_sync(S), 0);
}
END_TEST

/* One open, write, sync, reopen per policy. */
START_TEST(test_sync_policies)
{
	static const enum store_sync pol[] = {STORE_SYNC_ALWAYS,
	    STORE_SYNC_INTERVAL, STORE_SYNC_NEVER};
	store_session ss[3];
	store_options o = {0};
	char name[8];
	size_t i;

	close_S();
	for (i = 0; i < 3; i++) {
		o.sync = pol[i];
		open_S(&o);
		snprintf(name, sizeof name, "s%zu", i);
		mk_session(S, name, 0, 1, &ss[i]);
		fill(S, ss[i].id, 0, 50, 0, 0);
		ck_assert_int_eq(store_sync(S), 0);
		close_S();
	}
	open_S(NULL);
	for (i = 0; i < 3; i++)
		verify(S, ss[i].id, 0, 50, 0, 0);
}
END_TEST

/* --- Core: sessions ------------------------------------------------------ */

START_TEST(test_session_create_get)
{
	uint8_t token[STORE_TOKEN_SIZE], other[STORE_TOKEN_SIZE], h[32];
	struct sess_arg sa = {0};
	store_session a, b;

	ck_assert_int_eq(store_random(token, sizeof token), 0);
	memcpy(other, token, sizeof other);
	other[31] ^= 1;
	sa.name = "alpha";
	sa.token = token;
	sa.lease = 30000;
	sa.now = 1700000000000ull;
	ck_assert_int_eq(store_write(S, cb_session_create, &sa), 0);
	a = sa.ss;
	ck_assert_str_eq(a.name, "alpha");
	ck_assert_uint_eq(a.state, STORE_STATE_LIVE);
	ck_assert_uint_eq(a.created_ms, sa.now);
	ck_assert_uint_eq(a.last_seen_ms, sa.now);
	ck_assert_uint_eq(a.lease_ms, 30000);
	ck_assert_uint_eq(a.next_handle, 1);
	ck_assert_uint_eq(a.pid, 0);
	store_sha256(token, sizeof token, h);
	ck_assert_mem_eq(a.token_hash, h, 32);
	ck_assert(session_token_ok(&a, token));
	ck_assert(!session_token_ok(&a, other));

	/* By name and by id, every field. */
	memset(&sa.ss, 0, sizeof sa.ss);
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_mem_eq(&sa.ss, &a, sizeof a);
	sa.id = a.id;
	memset(&sa.ss, 0xee, sizeof sa.ss);
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa), 0);
	ck_assert_mem_eq(sa.ss.id, a.id, STORE_ID_SIZE);
	ck_assert_str_eq(sa.ss.name, "alpha");
	ck_assert(session_token_ok(&sa.ss, token));

	/* A second session gets another id; the name is taken. */
	sa.name = "beta";
	ck_assert_int_eq(store_write(S, cb_session_create, &sa), 0);
	b = sa.ss;
	ck_assert_mem_ne(a.id, b.id, STORE_ID_SIZE);
	sa.name = "alpha";
	ck_assert_int_eq(store_write(S, cb_session_create, &sa),
	    STORE_E_EXISTS);

	/* Survives a reopen. */
	close_S();
	open_S(NULL);
	sa.name = "beta";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_mem_eq(sa.ss.id, b.id, STORE_ID_SIZE);
}
END_TEST

START_TEST(test_session_put_absent)
{
	uint8_t token[STORE_TOKEN_SIZE], other[STORE_TOKEN_SIZE];
	struct sess_arg sa = {0};
	store_session a;

	ck_assert_int_eq(store_random(token, sizeof token), 0);
	mk_session(S, "alpha", 30000, 1700000000000ull, &a);

	/* session_put rewrites every field. */
	a.last_seen_ms += 5000;
	a.next_handle = 99;
	a.pid = 4321;
	a.lease_ms = 1;
	sa.ss = a;
	ck_assert_int_eq(store_write(S, cb_session_put, &sa), 0);
	sa.id = a.id;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa), 0);
	ck_assert_uint_eq(sa.ss.last_seen_ms, a.last_seen_ms);
	ck_assert_uint_eq(sa.ss.next_handle, 99);
	ck_assert_uint_eq(sa.ss.pid, 4321);
	ck_assert_uint_eq(sa.ss.lease_ms, 1);
	ck_assert_uint_eq(sa.ss.created_ms, a.created_ms);

	/* Absent ones. */
	sa.name = "gamma";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa),
	    STORE_E_NOTFOUND);
	memset(other, 0, sizeof other);
	sa.id = other;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa),
	    STORE_E_NOTFOUND);

	/* A session made without a token accepts none. */
	sa.name = "tokenless";
	sa.token = NULL;
	ck_assert_int_eq(store_write(S, cb_session_create, &sa), 0);
	ck_assert(!session_token_ok(&sa.ss, token));
	ck_assert(!session_token_ok(&a, token));
}
END_TEST

/* Collects session_list's output. */
struct list_arg {
	store_session ss[64];
	int n;
	int stop_at;             /* return 99 at this one (or -1) */
};

static int
cb_collect_session(const store_session *ss, void *a)
{
	struct list_arg *la = a;

	if (la->n < 64)
		la->ss[la->n] = *ss;
	if (la->n++ == la->stop_at)
		return 99;
	return 0;
}

static int
cb_session_list(store_txn *t, void *a)
{
	return session_list(t, cb_collect_session, a);
}

START_TEST(test_session_list)
{
	store_session made[40];
	struct list_arg la;
	char name[16];
	int i;

	la.n = 0;
	la.stop_at = -1;
	ck_assert_int_eq(store_read(S, cb_session_list, &la), 0);
	ck_assert_int_eq(la.n, 0);
	for (i = 0; i < 40; i++) {
		snprintf(name, sizeof name, "s%d", i);
		mk_session(S, name, (uint64_t)i, 10, &made[i]);
	}
	kill_session(S, made[7].id);    /* dead ones are listed too */
	qsort(made, 40, sizeof made[0], cmp_session_id);
	ck_assert_int_eq(store_read(S, cb_session_list, &la), 0);
	ck_assert_int_eq(la.n, 40);
	for (i = 0; i < 40; i++) {
		ck_assert_mem_eq(la.ss[i].id, made[i].id, STORE_ID_SIZE);
		ck_assert_str_eq(la.ss[i].name, made[i].name);
	}
	la.n = 0;
	la.stop_at = 4;
	ck_assert_int_eq(store_read(S, cb_session_list, &la), 99);
	ck_assert_int_eq(la.n, 5);
}
END_TEST

START_TEST(test_session_kill)
{
	struct sess_arg sa = {0};
	store_session a, a2;
	uint8_t none[STORE_ID_SIZE] = {0};

	mk_session(S, "alpha", 1000, 50, &a);
	a.pid = 77;
	sa.ss = a;
	ck_assert_int_eq(store_write(S, cb_session_put, &sa), 0);
	kill_session(S, a.id);
	sa.id = a.id;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa), 0);
	ck_assert_uint_eq(sa.ss.state, STORE_STATE_DEAD);
	ck_assert_uint_eq(sa.ss.pid, 0);
	ck_assert_str_eq(sa.ss.name, "alpha");
	/* The name is free: by name finds nothing, and it can be reused. */
	sa.name = "alpha";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa),
	    STORE_E_NOTFOUND);
	mk_session(S, "alpha", 1000, 60, &a2);
	ck_assert_mem_ne(a2.id, a.id, STORE_ID_SIZE);
	/* Killing again is harmless and leaves the new owner's name. */
	kill_session(S, a.id);
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_mem_eq(sa.ss.id, a2.id, STORE_ID_SIZE);
	sa.id = none;
	ck_assert_int_eq(store_write(S, cb_session_kill, &sa),
	    STORE_E_NOTFOUND);
}
END_TEST

START_TEST(test_session_count)
{
	store_session a, b;
	struct count_arg ca;
	uint64_t want_bytes = 0, i;

	mk_session(S, "a", 0, 1, &a);
	mk_session(S, "b", 0, 1, &b);
	ca.sid = a.id;
	ck_assert_int_eq(store_read(S, cb_count, &ca), 0);
	ck_assert_uint_eq(ca.n, 0);
	ck_assert_uint_eq(ca.bytes, 0);
	fill(S, a.id, 0, 100, 0, 0);
	fill(S, b.id, 0, 7, 0, 0);
	for (i = 0; i < 100; i++)
		want_bytes += record_size(3, 0, 8 + (size_t)(i * 37 % 57));
	ck_assert_int_eq(store_read(S, cb_count, &ca), 0);
	ck_assert_uint_eq(ca.n, 100);
	ck_assert_uint_eq(ca.bytes, want_bytes);
	ck_assert_uint_eq(count_entries(S, b.id), 7);
}
END_TEST

/* Collects session_expired's output. */
struct exp_arg {
	uint8_t id[2048][STORE_ID_SIZE];
	uint64_t when[2048];
	int n;
	int stop_at;             /* return 7 at this one (or -1) */
	uint64_t now;
};

static int
cb_collect_expired(const uint8_t *id, uint64_t when, void *a)
{
	struct exp_arg *ea = a;

	if (ea->n < 2048) {
		memcpy(ea->id[ea->n], id, STORE_ID_SIZE);
		ea->when[ea->n] = when;
	}
	if (ea->n++ == ea->stop_at)
		return 7;
	return 0;
}

static int
cb_expired(store_txn *t, void *a)
{
	struct exp_arg *ea = a;

	ea->n = 0;
	return session_expired(t, ea->now, cb_collect_expired, a);
}

/* Expired sessions of S at now, into ea. */
static void
expired_at(struct exp_arg *ea, uint64_t now)
{
	int rc;

	ea->now = now;
	ea->stop_at = -1;
	rc = store_read(S, cb_expired, ea);
	ck_assert_msg(rc == 0, "session_expired: %s", store_strerror(rc));
}

/* Rewrite a session with a new last_seen. */
static void
touch_session(store_session *ss, uint64_t last_seen)
{
	struct sess_arg sa = {0};

	ss->last_seen_ms = last_seen;
	sa.ss = *ss;
	ck_assert_int_eq(store_write(S, cb_session_put, &sa), 0);
}

START_TEST(test_expiry_index)
{
	const uint64_t now = 1000000;
	store_session s1, s2, s3, s4, s5, s6, many;
	struct exp_arg *ea = calloc(1, sizeof *ea);
	char name[16];
	int i;

	ck_assert_ptr_nonnull(ea);
	mk_session(S, "s1", 100, now - 200, &s1);   /* now - 100: expired */
	mk_session(S, "s2", 1000, now, &s2);        /* now + 1000 */
	mk_session(S, "s3", 50, now - 50, &s3);     /* exactly now: expired */
	mk_session(S, "s4", 0, 0, &s4);             /* no lease: never */
	mk_session(S, "s5", 10000000, now, &s5);    /* far, but killed */
	mk_session(S, "s6", 10, now + 5, &s6);      /* now + 15 */
	kill_session(S, s5.id);
	for (i = 0; i < 1000; i++) {                /* a crowd not expired */
		snprintf(name, sizeof name, "m%d", i);
		mk_session(S, name, 5000 + (uint64_t)i, now, &many);
	}

	expired_at(ea, now);
	ck_assert_int_eq(ea->n, 3);
	ck_assert_mem_eq(ea->id[0], s5.id, STORE_ID_SIZE);  /* dead: at 0 */
	ck_assert_uint_eq(ea->when[0], 0);
	ck_assert_mem_eq(ea->id[1], s1.id, STORE_ID_SIZE);
	ck_assert_uint_eq(ea->when[1], now - 100);
	ck_assert_mem_eq(ea->id[2], s3.id, STORE_ID_SIZE);
	ck_assert_uint_eq(ea->when[2], now);

	expired_at(ea, 0);                      /* only the dead */
	ck_assert_int_eq(ea->n, 1);
	ck_assert_mem_eq(ea->id[0], s5.id, STORE_ID_SIZE);

	/* A renewal moves the key; an old lapse moves it back. */
	touch_session(&s1, now);                /* now + 100 */
	touch_session(&s2, now - 2000);         /* now - 1000 */
	expired_at(ea, now);
	ck_assert_int_eq(ea->n, 3);
	ck_assert_mem_eq(ea->id[0], s5.id, STORE_ID_SIZE);
	ck_assert_mem_eq(ea->id[1], s2.id, STORE_ID_SIZE);
	ck_assert_uint_eq(ea->when[1], now - 1000);
	ck_assert_mem_eq(ea->id[2], s3.id, STORE_ID_SIZE);
	expired_at(ea, now + 100);
	ck_assert_int_eq(ea->n, 5);             /* + s6 at now+15, s1 */
	ck_assert_mem_eq(ea->id[3], s6.id, STORE_ID_SIZE);
	ck_assert_mem_eq(ea->id[4], s1.id, STORE_ID_SIZE);
	ck_assert_uint_eq(ea->when[4], now + 100);

	/* Dropping the lease takes the session out of the index. */
	s3.lease_ms = 0;
	touch_session(&s3, now);
	expired_at(ea, now);
	ck_assert_int_eq(ea->n, 2);

	/* One key per session, never a stale one: all keys, in order. */
	expired_at(ea, UINT64_MAX);
	ck_assert_int_eq(ea->n, 1000 + 4);      /* s1, s2, s5, s6, crowd */
	for (i = 1; i < ea->n; i++)
		ck_assert_uint_le(ea->when[i - 1], ea->when[i]);
	for (i = 0; i < ea->n; i++)
		ck_assert_mem_ne(ea->id[i], s4.id, STORE_ID_SIZE);

	/* The callback's result stops the walk. */
	ea->now = UINT64_MAX;
	ea->stop_at = 2;
	ck_assert_int_eq(store_read(S, cb_expired, ea), 7);
	ck_assert_int_eq(ea->n, 3);
	free(ea);
}
END_TEST

/* --- Core: entries ------------------------------------------------------- */

START_TEST(test_entry_put_get)
{
	static const uint8_t refs[] = {'g', 0, 3, 'f', 'o', 'o',
	    'h', 0, 8, 0, 0, 0, 0, 0, 0, 1, 2};
	uint8_t big[5000];
	struct iovec iov[4];
	struct ent_arg ea = {0}, ga = {0};
	store_session ss;

	mk_session(S, "e", 0, 1, &ss);
	pattern_fill(big, sizeof big, 5);
	iov[0].iov_base = (void *)"head-";
	iov[0].iov_len = 5;
	iov[1].iov_base = NULL;                  /* an empty piece */
	iov[1].iov_len = 0;
	iov[2].iov_base = big;
	iov[2].iov_len = sizeof big;
	iov[3].iov_base = (void *)"-tail";
	iov[3].iov_len = 5;
	ea.sid = ss.id;
	ea.in.kind = STORE_KIND_GLOBAL;
	ea.in.name = "result";
	ea.in.name_len = 6;
	ea.in.pickler = STORE_PICKLER_CLOUDPICKLE;
	ea.in.flags = STORE_FLAG_EXCINFO | STORE_FLAG_OOB;
	ea.in.type_name = "builtins.ValueError";
	ea.in.refs = refs;
	ea.in.refs_len = sizeof refs;
	ea.in.iov = iov;
	ea.in.iovcnt = 4;
	ea.now = 1700000000123ull;
	ck_assert_int_eq(store_write(S, cb_entry_put, &ea), 0);

	ga.sid = ss.id;
	ga.kind = STORE_KIND_GLOBAL;
	ga.name = "result";
	ga.name_len = 6;
	ck_assert_int_eq(store_read(S, cb_entry_get, &ga), 0);
	ck_assert_uint_eq(ga.rec.version, 1);
	ck_assert_uint_eq(ga.rec.pickler, STORE_PICKLER_CLOUDPICKLE);
	ck_assert_uint_eq(ga.rec.flags, STORE_FLAG_EXCINFO | STORE_FLAG_OOB);
	ck_assert_uint_eq(ga.rec.time_ms, 1700000000123ull);
	ck_assert_str_eq(ga.type, "builtins.ValueError");
	ck_assert_uint_eq(ga.rec.type_len, 19);
	ck_assert_uint_eq(ga.rec.refs_len, sizeof refs);
	ck_assert_mem_eq(ga.refs, refs, sizeof refs);
	ck_assert_uint_eq(ga.rec.payload_len, 5 + sizeof big + 5);
	ck_assert_mem_eq(ga.payload, "head-", 5);
	ck_assert_mem_eq(ga.payload + 5, big, sizeof big);
	ck_assert_mem_eq(ga.payload + 5 + sizeof big, "-tail", 5);
	free(ga.payload);
}
END_TEST

/* Argument of cb_put_sorted: n entries, all with payload "v<name>:<tag>". */
struct sorted_arg {
	const uint8_t *sid;
	store_entry_in *in;
	const store_entry_in **order;
	struct iovec *iov;
	char (*names)[40];
	char (*vals)[48];
	size_t n;
};

static int
cb_put_sorted(store_txn *t, void *a)
{
	struct sorted_arg *sa = a;

	return entry_put_sorted(t, sa->sid,
	    (const store_entry_in *const *)sa->order, sa->n, 99);
}

/* Fill sa with n entries: globals named fmt % idx[i] (or handles idx[i]
 * when kind is 'h'), payload tagged tag; order as given. */
static void
sorted_fill(struct sorted_arg *sa, const uint8_t *sid, uint8_t kind,
            const char *fmt, const unsigned *idx, size_t n, const char *tag)
{
	size_t i;

	sa->sid = sid;
	sa->n = n;
	sa->in = calloc(n, sizeof *sa->in);
	sa->order = calloc(n, sizeof *sa->order);
	sa->iov = calloc(n, sizeof *sa->iov);
	sa->names = calloc(n, sizeof *sa->names);
	sa->vals = calloc(n, sizeof *sa->vals);
	ck_assert(sa->in && sa->order && sa->iov && sa->names && sa->vals);
	for (i = 0; i < n; i++) {
		store_entry_in *in = &sa->in[i];
		if (kind == STORE_KIND_GLOBAL) {
			snprintf(sa->names[i], sizeof sa->names[i], fmt, idx[i]);
			in->name = sa->names[i];
			in->name_len = strlen(sa->names[i]);
			snprintf(sa->vals[i], sizeof sa->vals[i], "v%s:%s",
			    sa->names[i], tag);
		} else {
			in->handle = idx[i];
			snprintf(sa->vals[i], sizeof sa->vals[i], "v%u:%s",
			    idx[i], tag);
		}
		in->kind = kind;
		in->pickler = STORE_PICKLER_PICKLE;
		in->type_name = "dict";
		sa->iov[i].iov_base = sa->vals[i];
		sa->iov[i].iov_len = strlen(sa->vals[i]);
		in->iov = &sa->iov[i];
		in->iovcnt = 1;
		sa->order[i] = in;
	}
}

static void
sorted_free(struct sorted_arg *sa)
{
	free(sa->in);
	free(sa->order);
	free(sa->iov);
	free(sa->names);
	free(sa->vals);
}

/* The payload of one entry is "v<name or id>:<tag>". */
static void
sorted_check(const uint8_t *sid, uint8_t kind, const char *name,
             uint64_t handle, const char *tag)
{
	char want[64];
	uint8_t *p;
	size_t n;
	int rc;

	if (kind == STORE_KIND_GLOBAL)
		snprintf(want, sizeof want, "v%s:%s", name, tag);
	else
		snprintf(want, sizeof want, "v%llu:%s",
		    (unsigned long long)handle, tag);
	rc = get_one(S, sid, kind, name, handle, &p, &n);
	ck_assert_msg(rc == 0, "%s %llu: %s", name ? name : "handle",
	    (unsigned long long)handle, store_strerror(rc));
	ck_assert_uint_eq(n, strlen(want));
	ck_assert_mem_eq(p, want, n);
	free(p);
}

/* entry_put_sorted: appends past the store's last key, plain puts inside
 * it, any order and duplicates accepted, nothing written on an error. */
START_TEST(test_entry_put_sorted)
{
	enum { N = 3000 };
	static unsigned idx[N + 10];
	store_session a, b;
	struct sorted_arg sa;
	char name[40];
	unsigned i;
	int rc;

	mk_session(S, "sa", 0, 1, &a);
	mk_session(S, "sb", 0, 1, &b);
	/* 1. a new store, in key order: every put is an append */
	for (i = 0; i < N; i++)
		idx[i] = i;
	sorted_fill(&sa, a.id, STORE_KIND_GLOBAL, "n%05u", idx, N, "1");
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	sorted_free(&sa);
	ck_assert_uint_eq(count_entries(S, a.id), N);
	/* 2. names between the existing ones (puts inside the range), in key
	 * order, then handles (past every name of the session) */
	for (i = 0; i < N; i += 3)
		idx[i / 3] = i;
	sorted_fill(&sa, a.id, STORE_KIND_GLOBAL, "n%05u_x", idx, N / 3, "2");
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	sorted_free(&sa);
	for (i = 0; i < 100; i++)
		idx[i] = 1000 - 10 * i;   /* descending: not key order */
	sorted_fill(&sa, a.id, STORE_KIND_HANDLE, NULL, idx, 100, "3");
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	sorted_free(&sa);
	/* 3. the other session: before or after a's range, whichever its
	 * random id gives; replacements of a's names, unsorted, one twice */
	for (i = 0; i < 50; i++)
		idx[i] = (i * 37) % 50;
	sorted_fill(&sa, b.id, STORE_KIND_GLOBAL, "n%05u", idx, 50, "4");
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	sorted_free(&sa);
	for (i = 0; i < 10; i++)
		idx[i] = 9 - i;
	idx[10] = 5;
	sorted_fill(&sa, a.id, STORE_KIND_GLOBAL, "n%05u", idx, 11, "5");
	snprintf(sa.vals[10], sizeof sa.vals[10], "vn00005:6");
	sa.iov[10].iov_len = strlen(sa.vals[10]);
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	sorted_free(&sa);

	ck_assert_uint_eq(count_entries(S, a.id), N + N / 3 + 100);
	ck_assert_uint_eq(count_entries(S, b.id), 50);
	for (i = 0; i < N; i++) {
		snprintf(name, sizeof name, "n%05u", i);
		sorted_check(a.id, STORE_KIND_GLOBAL, name, 0,
		    i == 5 ? "6" : i < 10 ? "5" : "1");
		if (i % 3 == 0) {
			snprintf(name, sizeof name, "n%05u_x", i);
			sorted_check(a.id, STORE_KIND_GLOBAL, name, 0, "2");
		}
	}
	for (i = 0; i < 100; i++)
		sorted_check(a.id, STORE_KIND_HANDLE, NULL, 1000 - 10 * i, "3");
	for (i = 0; i < 50; i++) {
		snprintf(name, sizeof name, "n%05u", i);
		sorted_check(b.id, STORE_KIND_GLOBAL, name, 0, "4");
	}

	/* 4. a bad entry in the middle: STORE_E_INVAL, and the transaction
	 * (store_write aborts it) leaves nothing of the batch behind */
	for (i = 0; i < 20; i++)
		idx[i] = 90000 + i;
	sorted_fill(&sa, a.id, STORE_KIND_GLOBAL, "z%05u", idx, 20, "7");
	sa.in[10].name_len = STORE_KEY_MAX + 1;
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa),
	    STORE_E_INVAL);
	sa.in[10].name_len = strlen(sa.names[10]);
	sa.in[10].kind = 'x';
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa),
	    STORE_E_INVAL);
	ck_assert_uint_eq(count_entries(S, a.id), N + N / 3 + 100);
	{
		uint8_t *p;
		size_t n;
		rc = get_one(S, a.id, STORE_KIND_GLOBAL, "z90000", 0, &p, &n);
		ck_assert_int_eq(rc, STORE_E_NOTFOUND);
	}
	/* 5. a read transaction cannot write; an empty batch is a no-op */
	ck_assert_int_eq(store_read(S, cb_put_sorted, &sa),
	    STORE_E_READONLY);
	sa.n = 0;
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	sorted_free(&sa);
}
END_TEST

START_TEST(test_entry_replace_del)
{
	struct ent_arg ea = {0};
	store_session ss;
	uint8_t *p;
	size_t n;

	mk_session(S, "e", 0, 1, &ss);
	ea.sid = ss.id;
	ck_assert_int_eq(put_one(S, ss.id, 'g', "result", 0, "v1", 2), 0);
	/* A handle, then a replacement of the global. */
	ck_assert_int_eq(put_one(S, ss.id, 'h', NULL, 42, "h42", 3), 0);
	ck_assert_int_eq(put_one(S, ss.id, 'g', "result", 0, "v2", 2), 0);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "result", 0, &p, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_mem_eq(p, "v2", 2);
	free(p);
	ck_assert_int_eq(get_one(S, ss.id, 'h', NULL, 42, &p, &n), 0);
	ck_assert_mem_eq(p, "h42", 3);
	free(p);
	/* The same key in the other kind is another entry. */
	ck_assert_int_eq(get_one(S, ss.id, 'h', NULL, 43, &p, &n),
	    STORE_E_NOTFOUND);

	/* Exists, reading keys only: 1, then 0 once deleted; a bad name. */
	ea.kind = STORE_KIND_HANDLE;
	ea.handle = 42;
	ck_assert_int_eq(store_read(S, cb_entry_exists, &ea), 1);
	ea.handle = 43;
	ck_assert_int_eq(store_read(S, cb_entry_exists, &ea), 0);
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = "result";
	ea.name_len = 0;
	ck_assert_int_eq(store_read(S, cb_entry_exists, &ea), STORE_E_INVAL);
	ea.name_len = 6;
	ck_assert_int_eq(store_read(S, cb_entry_exists, &ea), 1);
	ck_assert_uint_eq(ea.rec.flags, 0);    /* put_one's record */

	/* Delete. */
	ea.kind = STORE_KIND_HANDLE;
	ea.handle = 42;
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), 0);
	ck_assert_int_eq(store_read(S, cb_entry_exists, &ea), 0);
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), STORE_E_NOTFOUND);
	ck_assert_int_eq(get_one(S, ss.id, 'h', NULL, 42, &p, &n),
	    STORE_E_NOTFOUND);
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = "result";
	ea.name_len = 6;
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), 0);
	ck_assert_uint_eq(count_entries(S, ss.id), 0);
}
END_TEST

/* Collects entry_list's output. */
struct keys_arg {
	store_key k[16];
	char names[16][32];
	int n;
	int stop_at;
};

static int
cb_collect_key(const store_key *k, void *a)
{
	struct keys_arg *ka = a;

	if (ka->n < 16) {
		ka->k[ka->n] = *k;
		snprintf(ka->names[ka->n], sizeof ka->names[0], "%.*s",
		    (int)k->name_len, k->name != NULL ? k->name : "");
		ka->k[ka->n].name = NULL;
	}
	if (ka->n++ == ka->stop_at)
		return 5;
	return 0;
}

/* Argument of cb_list. */
struct list_keys {
	const uint8_t *sid;
	uint8_t kind;
	struct keys_arg ka;
};

static int
cb_list(store_txn *t, void *a)
{
	struct list_keys *lk = a;

	lk->ka.n = 0;
	return entry_list(t, lk->sid, lk->kind, cb_collect_key, &lk->ka);
}

START_TEST(test_entry_list)
{
	static const uint64_t handles[] = {1, 2, 255, 256, (uint64_t)1 << 40};
	store_session a, b;
	struct list_keys lk;
	int i;

	mk_session(S, "a", 0, 1, &a);
	mk_session(S, "b", 0, 1, &b);
	memset(&lk, 0, sizeof lk);
	lk.sid = a.id;
	lk.ka.stop_at = -1;
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 0);
	/* Written out of order, listed in key order. */
	ck_assert_int_eq(put_one(S, a.id, 'h', NULL, 256, "x", 1), 0);
	ck_assert_int_eq(put_one(S, a.id, 'g', "zeta", 0, "xx", 2), 0);
	ck_assert_int_eq(put_one(S, a.id, 'h', NULL, (uint64_t)1 << 40, "", 0),
	    0);
	ck_assert_int_eq(put_one(S, a.id, 'h', NULL, 1, "x", 1), 0);
	ck_assert_int_eq(put_one(S, a.id, 'g', "alpha", 0, "xxx", 3), 0);
	ck_assert_int_eq(put_one(S, a.id, 'h', NULL, 255, "x", 1), 0);
	ck_assert_int_eq(put_one(S, a.id, 'g', "al", 0, "x", 1), 0);
	ck_assert_int_eq(put_one(S, a.id, 'h', NULL, 2, "x", 1), 0);
	/* The neighbour's keys are never listed. */
	fill(S, b.id, 0, 20, 0, 0);

	lk.kind = STORE_KIND_GLOBAL;
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 3);
	ck_assert_str_eq(lk.ka.names[0], "al");
	ck_assert_str_eq(lk.ka.names[1], "alpha");
	ck_assert_str_eq(lk.ka.names[2], "zeta");
	for (i = 0; i < 3; i++)
		ck_assert_uint_eq(lk.ka.k[i].kind, STORE_KIND_GLOBAL);
	ck_assert_uint_eq(lk.ka.k[1].value_len, record_size(5, 0, 3));
	ck_assert_uint_eq(lk.ka.k[2].value_len, record_size(5, 0, 2));

	lk.kind = STORE_KIND_HANDLE;
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 5);
	for (i = 0; i < 5; i++) {
		ck_assert_uint_eq(lk.ka.k[i].kind, STORE_KIND_HANDLE);
		ck_assert_uint_eq(lk.ka.k[i].handle, handles[i]);
		ck_assert_uint_eq(lk.ka.k[i].name_len, 0);
	}
	ck_assert_uint_eq(lk.ka.k[4].value_len, record_size(5, 0, 0));

	lk.kind = 0;                            /* both: globals first */
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 8);
	ck_assert_str_eq(lk.ka.names[0], "al");
	ck_assert_uint_eq(lk.ka.k[3].kind, STORE_KIND_HANDLE);
	ck_assert_uint_eq(lk.ka.k[3].handle, 1);

	lk.ka.stop_at = 1;                      /* early stop */
	ck_assert_int_eq(store_read(S, cb_list, &lk), 5);
	ck_assert_int_eq(lk.ka.n, 2);

	lk.sid = b.id;
	lk.ka.stop_at = -1;
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 20);
}
END_TEST

/* Tallies entry_walk's output. */
struct walk_arg {
	uint8_t a[STORE_ID_SIZE], b[STORE_ID_SIZE];
	int na, nb, other, bad;
};

static int
cb_walk_one(const uint8_t *sid, const store_key *k, const uint8_t *val,
            size_t len, void *arg)
{
	struct walk_arg *wa = arg;
	store_record r;

	if (record_decode(val, len, &r) != 0 || k->value_len != len)
		wa->bad++;
	if (memcmp(sid, wa->a, STORE_ID_SIZE) == 0)
		wa->na++;
	else if (memcmp(sid, wa->b, STORE_ID_SIZE) == 0)
		wa->nb++;
	else
		wa->other++;
	return 0;
}

static int
cb_walk(store_txn *t, void *a)
{
	return entry_walk(t, cb_walk_one, a);
}

static int
cb_walk_stop(const uint8_t *sid, const store_key *k, const uint8_t *val,
             size_t len, void *arg)
{
	(*(int *)arg)++;
	return 3;
}

static int
cb_walk_stopper(store_txn *t, void *a)
{
	return entry_walk(t, cb_walk_stop, a);
}

START_TEST(test_entry_walk)
{
	store_session a, b;
	struct walk_arg wa;
	int calls = 0;

	memset(&wa, 0, sizeof wa);
	ck_assert_int_eq(store_read(S, cb_walk, &wa), 0);
	ck_assert_int_eq(wa.na + wa.nb + wa.other, 0);
	mk_session(S, "a", 0, 1, &a);
	mk_session(S, "b", 0, 1, &b);
	fill(S, a.id, 0, 33, 0, 0);
	fill(S, b.id, 0, 12, 'h', 3000);
	memcpy(wa.a, a.id, STORE_ID_SIZE);
	memcpy(wa.b, b.id, STORE_ID_SIZE);
	ck_assert_int_eq(store_read(S, cb_walk, &wa), 0);
	ck_assert_int_eq(wa.na, 33);
	ck_assert_int_eq(wa.nb, 12);
	ck_assert_int_eq(wa.other, 0);
	ck_assert_int_eq(wa.bad, 0);
	ck_assert_int_eq(store_read(S, cb_walk_stopper, &calls), 3);
	ck_assert_int_eq(calls, 1);
}
END_TEST

/* --- Core: refs ---------------------------------------------------------- */

/* A global's key, as refs_* take it. */
static store_key
key_g(const char *name)
{
	store_key k;

	memset(&k, 0, sizeof k);
	k.kind = STORE_KIND_GLOBAL;
	k.name = name;
	k.name_len = name != NULL ? strlen(name) : 0;
	return k;
}

/* A handle's key, as refs_* take it. */
static store_key
key_h(uint64_t id)
{
	store_key k;

	memset(&k, 0, sizeof k);
	k.kind = STORE_KIND_HANDLE;
	k.handle = id;
	return k;
}

/* Argument of the refs callbacks. */
struct refs_arg {
	const uint8_t *sid;
	store_key target;         /* put, del, list */
	store_key referrer;       /* put, del */
	int any;                  /* refs_any's answer */
	int n;                    /* list: referrers seen */
	int stop_at;              /* list: return 7 at this one (or -1) */
	store_key k[16];          /* list: the first 16 (name copied below) */
	char names[16][STORE_KEY_MAX + 1];
};

static int
cb_refs_put(store_txn *t, void *a)
{
	struct refs_arg *ra = a;

	return refs_put(t, ra->sid, &ra->target, &ra->referrer);
}

static int
cb_refs_del(store_txn *t, void *a)
{
	struct refs_arg *ra = a;

	return refs_del(t, ra->sid, &ra->target, &ra->referrer);
}

static int
cb_refs_any(store_txn *t, void *a)
{
	struct refs_arg *ra = a;

	return refs_any(t, ra->sid, &ra->any);
}

/* Copy one referrer out of the map. */
static int
cb_collect_referrer(const store_key *k, void *a)
{
	struct refs_arg *ra = a;

	if (ra->n < 16) {
		ra->k[ra->n] = *k;
		snprintf(ra->names[ra->n], sizeof ra->names[0], "%.*s",
		    (int)k->name_len, k->name != NULL ? k->name : "");
		ra->k[ra->n].name = NULL;
	}
	if (ra->n++ == ra->stop_at)
		return 7;
	return 0;
}

static int
cb_refs_list(store_txn *t, void *a)
{
	struct refs_arg *ra = a;

	ra->n = 0;
	return refs_list(t, ra->sid, &ra->target, cb_collect_referrer, ra);
}

/* Note (put) or forget (del) that referrer refers to target in sid. */
static int
refs_put1(store *s, const uint8_t *sid, store_key target, store_key referrer)
{
	struct refs_arg ra;

	memset(&ra, 0, sizeof ra);
	ra.sid = sid;
	ra.target = target;
	ra.referrer = referrer;
	return store_write(s, cb_refs_put, &ra);
}

static int
refs_del1(store *s, const uint8_t *sid, store_key target, store_key referrer)
{
	struct refs_arg ra;

	memset(&ra, 0, sizeof ra);
	ra.sid = sid;
	ra.target = target;
	ra.referrer = referrer;
	return store_write(s, cb_refs_del, &ra);
}

/* refs_list of target in sid into *ra (all of it); returns its result. */
static int
refs_list1(store *s, const uint8_t *sid, store_key target,
           struct refs_arg *ra)
{
	memset(ra, 0, sizeof *ra);
	ra->sid = sid;
	ra->target = target;
	ra->stop_at = -1;
	return store_read(s, cb_refs_list, ra);
}

/* refs_any of sid, failing the test on an error. */
static int
refs_any1(store *s, const uint8_t *sid)
{
	struct refs_arg ra;
	int rc;

	memset(&ra, 0, sizeof ra);
	ra.sid = sid;
	ra.any = -1;
	rc = store_read(s, cb_refs_any, &ra);
	ck_assert_msg(rc == 0, "refs_any: %s", store_strerror(rc));
	return ra.any;
}

/* Globals and handles as targets and as referrers, listed in LMDB's order
 * of the values (kind byte, then name bytes or big-endian id); a second
 * put of a row keeps one row; an early stop; rows survive a reopen. */
START_TEST(test_refs_put_list)
{
	store_session a;
	struct refs_arg *ra = calloc(1, sizeof *ra);

	ck_assert_ptr_nonnull(ra);
	mk_session(S, "a", 0, 1, &a);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("x"), ra), 0);
	ck_assert_int_eq(ra->n, 0);
	/* x is referred to by zeta, h 256, al, h 1; written out of order */
	ck_assert_int_eq(refs_put1(S, a.id, key_g("x"), key_g("zeta")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("x"), key_h(256)), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("x"), key_g("al")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("x"), key_h(1)), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("x"), key_g("zeta")), 0);
	/* handle 5 by x (put twice: one row), the largest handle by 0 */
	ck_assert_int_eq(refs_put1(S, a.id, key_h(5), key_g("x")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_h(5), key_g("x")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_h(UINT64_MAX), key_h(0)), 0);

	ck_assert_int_eq(refs_list1(S, a.id, key_g("x"), ra), 0);
	ck_assert_int_eq(ra->n, 4);              /* zeta once */
	ck_assert_uint_eq(ra->k[0].kind, STORE_KIND_GLOBAL);
	ck_assert_str_eq(ra->names[0], "al");
	ck_assert_uint_eq(ra->k[0].name_len, 2);
	ck_assert_str_eq(ra->names[1], "zeta");
	ck_assert_uint_eq(ra->k[2].kind, STORE_KIND_HANDLE);
	ck_assert_uint_eq(ra->k[2].handle, 1);
	ck_assert_uint_eq(ra->k[2].name_len, 0);
	ck_assert_uint_eq(ra->k[3].handle, 256);
	ck_assert_uint_eq(ra->k[3].value_len, 0);
	ck_assert_int_eq(refs_list1(S, a.id, key_h(5), ra), 0);
	ck_assert_int_eq(ra->n, 1);
	ck_assert_uint_eq(ra->k[0].kind, STORE_KIND_GLOBAL);
	ck_assert_str_eq(ra->names[0], "x");
	ck_assert_int_eq(refs_list1(S, a.id, key_h(UINT64_MAX), ra), 0);
	ck_assert_int_eq(ra->n, 1);
	ck_assert_uint_eq(ra->k[0].kind, STORE_KIND_HANDLE);
	ck_assert_uint_eq(ra->k[0].handle, 0);
	/* none for a target that only starts like one, or another handle */
	ck_assert_int_eq(refs_list1(S, a.id, key_g("xx"), ra), 0);
	ck_assert_int_eq(ra->n, 0);
	ck_assert_int_eq(refs_list1(S, a.id, key_h(6), ra), 0);
	ck_assert_int_eq(ra->n, 0);

	memset(ra, 0, sizeof *ra);              /* early stop */
	ra->sid = a.id;
	ra->target = key_g("x");
	ra->stop_at = 1;
	ck_assert_int_eq(store_read(S, cb_refs_list, ra), 7);
	ck_assert_int_eq(ra->n, 2);

	close_S();                              /* and after a reopen */
	open_S(NULL);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("x"), ra), 0);
	ck_assert_int_eq(ra->n, 4);
	ck_assert_str_eq(ra->names[1], "zeta");
	ck_assert_uint_eq(ra->k[3].handle, 256);
	ck_assert_int_eq(refs_any1(S, a.id), 1);
	free(ra);
}
END_TEST

/* Deleting one row leaves the target's others; a missing row is 0; the
 * session has no row once the last one is gone. */
START_TEST(test_refs_del)
{
	store_session a;
	struct refs_arg *ra = calloc(1, sizeof *ra);

	ck_assert_ptr_nonnull(ra);
	mk_session(S, "a", 0, 1, &a);
	ck_assert_int_eq(refs_any1(S, a.id), 0);
	ck_assert_int_eq(refs_del1(S, a.id, key_g("t"), key_g("r")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("t"), key_g("r1")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("t"), key_g("r2")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("t"), key_h(3)), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_h(9), key_g("r1")), 0);
	ck_assert_int_eq(refs_any1(S, a.id), 1);

	ck_assert_int_eq(refs_del1(S, a.id, key_g("t"), key_g("r2")), 0);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 2);
	ck_assert_str_eq(ra->names[0], "r1");
	ck_assert_uint_eq(ra->k[1].handle, 3);
	/* missing: the row, a referrer of another kind, the target */
	ck_assert_int_eq(refs_del1(S, a.id, key_g("t"), key_g("r2")), 0);
	ck_assert_int_eq(refs_del1(S, a.id, key_g("t"), key_h(4)), 0);
	ck_assert_int_eq(refs_del1(S, a.id, key_h(10), key_g("r1")), 0);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 2);

	ck_assert_int_eq(refs_del1(S, a.id, key_g("t"), key_g("r1")), 0);
	ck_assert_int_eq(refs_del1(S, a.id, key_g("t"), key_h(3)), 0);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 0);
	ck_assert_int_eq(refs_any1(S, a.id), 1);    /* h 9 still has one */
	ck_assert_int_eq(refs_del1(S, a.id, key_h(9), key_g("r1")), 0);
	ck_assert_int_eq(refs_any1(S, a.id), 0);
	free(ra);
}
END_TEST

/* Two sessions' rows for the same target never mix; refs_any sees only
 * its own session's, whichever side of it the other's ids sort. */
START_TEST(test_refs_sessions)
{
	store_session ss[3];
	struct refs_arg *ra = calloc(1, sizeof *ra);
	int i;

	ck_assert_ptr_nonnull(ra);
	mk_session(S, "s0", 0, 1, &ss[0]);
	mk_session(S, "s1", 0, 1, &ss[1]);
	mk_session(S, "s2", 0, 1, &ss[2]);
	qsort(ss, 3, sizeof ss[0], cmp_session_id);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(refs_any1(S, ss[i].id), 0);
	ck_assert_int_eq(refs_put1(S, ss[1].id, key_g("t"), key_g("mid")), 0);
	ck_assert_int_eq(refs_any1(S, ss[0].id), 0);
	ck_assert_int_eq(refs_any1(S, ss[1].id), 1);
	ck_assert_int_eq(refs_any1(S, ss[2].id), 0);
	ck_assert_int_eq(refs_put1(S, ss[0].id, key_g("t"), key_g("low")), 0);
	ck_assert_int_eq(refs_put1(S, ss[2].id, key_g("t"), key_g("high")), 0);
	ck_assert_int_eq(refs_put1(S, ss[2].id, key_g("t"), key_h(2)), 0);

	ck_assert_int_eq(refs_list1(S, ss[0].id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 1);
	ck_assert_str_eq(ra->names[0], "low");
	ck_assert_int_eq(refs_list1(S, ss[1].id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 1);
	ck_assert_str_eq(ra->names[0], "mid");
	ck_assert_int_eq(refs_list1(S, ss[2].id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 2);
	ck_assert_str_eq(ra->names[0], "high");
	/* the middle one's last row gone: the neighbours still have theirs */
	ck_assert_int_eq(refs_del1(S, ss[1].id, key_g("t"), key_g("mid")), 0);
	ck_assert_int_eq(refs_any1(S, ss[1].id), 0);
	ck_assert_int_eq(refs_any1(S, ss[0].id), 1);
	ck_assert_int_eq(refs_any1(S, ss[2].id), 1);
	ck_assert_int_eq(refs_list1(S, ss[2].id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 2);
	free(ra);
}
END_TEST

/* --- Core: records and utilities ----------------------------------------- */

/* Big-endian reads for checking the layout by hand. */
static uint64_t
rd_be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* The refs blob of the sample record: one reference, to handle 9. */
static const uint8_t sample_refs[] = {'h', 0, 8, 0, 0, 0, 0, 0, 0, 0, 9};

/* Encode the sample record (a volatile "socket" with two payload pieces)
 * into buf, which is filled with 0xa5 first; returns its size. */
static size_t
sample_record(uint8_t *buf, size_t bufsize)
{
	struct iovec iov[2];
	store_entry_in in = {0};
	size_t n;

	iov[0].iov_base = (void *)"pay";
	iov[0].iov_len = 3;
	iov[1].iov_base = (void *)"load";
	iov[1].iov_len = 4;
	in.kind = STORE_KIND_HANDLE;
	in.pickler = STORE_PICKLER_PICKLE;
	in.flags = STORE_FLAG_VOLATILE;
	in.type_name = "socket";
	in.refs = sample_refs;
	in.refs_len = sizeof sample_refs;
	in.iov = iov;
	in.iovcnt = 2;
	n = record_size(6, sizeof sample_refs, 7);
	ck_assert_uint_eq(n, 40 + 6 + sizeof sample_refs + 7);
	ck_assert_uint_lt(n, bufsize);
	memset(buf, 0xa5, bufsize);
	record_encode(buf, &in, 0x0102030405060708ull);
	ck_assert_uint_eq(buf[n], 0xa5);                /* no overrun */
	return n;
}

/* The digest field of the n-byte record at buf: XXH3-128 of bytes 0..15
 * and 32..end, high64 then low64, both big-endian (docs/STORAGE.md),
 * computed here independently of record.c. */
static void
check_record_digest(const uint8_t *buf, size_t n)
{
	XXH3_state_t *st = XXH3_createState();
	XXH128_hash_t h;

	ck_assert_ptr_nonnull(st);
	XXH3_128bits_reset(st);
	XXH3_128bits_update(st, buf, 16);
	XXH3_128bits_update(st, buf + 32, n - 32);
	h = XXH3_128bits_digest(st);
	XXH3_freeState(st);
	ck_assert_uint_eq(rd_be(buf + 16, 8), h.high64);
	ck_assert_uint_eq(rd_be(buf + 24, 8), h.low64);
}

/* in's payload digest (store.h): XXH3-128 of the payload pieces, the
 * flags (u16 big-endian) and the refs, computed here independently. */
static void
check_payload_digest(const store_entry_in *in, const uint8_t pd[16])
{
	XXH3_state_t *st = XXH3_createState();
	XXH128_hash_t h;
	uint8_t fb[2] = {(uint8_t)(in->flags >> 8), (uint8_t)in->flags};
	int i;

	ck_assert_ptr_nonnull(st);
	XXH3_128bits_reset(st);
	for (i = 0; i < in->iovcnt; i++)
		XXH3_128bits_update(st, in->iov[i].iov_base, in->iov[i].iov_len);
	XXH3_128bits_update(st, fb, 2);
	XXH3_128bits_update(st, in->refs, in->refs_len);
	h = XXH3_128bits_digest(st);
	XXH3_freeState(st);
	ck_assert_uint_eq(rd_be(pd, 8), h.high64);
	ck_assert_uint_eq(rd_be(pd + 8, 8), h.low64);
}

START_TEST(test_record_layout)
{
	const uint8_t *refs = sample_refs;
	uint8_t buf[256];
	store_record r;
	size_t n = sample_record(buf, sizeof buf);

	/* The layout, byte by byte (docs/STORAGE.md). */
	ck_assert_uint_eq(buf[0], 1);
	ck_assert_uint_eq(buf[1], STORE_PICKLER_PICKLE);
	ck_assert_uint_eq(rd_be(buf + 2, 2), STORE_FLAG_VOLATILE);
	ck_assert_uint_eq(rd_be(buf + 4, 4), 6);
	ck_assert_uint_eq(rd_be(buf + 8, 8), 0x0102030405060708ull);
	ck_assert_uint_eq(rd_be(buf + 32, 4), sizeof sample_refs);
	ck_assert_uint_eq(rd_be(buf + 36, 4), 0);
	ck_assert_mem_eq(buf + 40, "socket", 6);
	ck_assert_mem_eq(buf + 46, refs, sizeof sample_refs);
	ck_assert_mem_eq(buf + 46 + sizeof sample_refs, "payload", 7);
	check_record_digest(buf, n);

	ck_assert_int_eq(record_decode(buf, n, &r), 0);
	ck_assert_uint_eq(r.version, 1);
	ck_assert_uint_eq(r.pickler, STORE_PICKLER_PICKLE);
	ck_assert_uint_eq(r.flags, STORE_FLAG_VOLATILE);
	ck_assert_uint_eq(r.time_ms, 0x0102030405060708ull);
	ck_assert_mem_eq(r.digest, buf + 16, 16);
	ck_assert_ptr_eq(r.type_name, (const char *)buf + 40);
	ck_assert_uint_eq(r.type_len, 6);
	ck_assert_uint_eq(r.refs_len, sizeof sample_refs);
	ck_assert_mem_eq(r.refs, refs, sizeof sample_refs);
	ck_assert_uint_eq(r.payload_len, 7);
	ck_assert_mem_eq(r.payload, "payload", 7);
}
END_TEST

START_TEST(test_record_damage)
{
	uint8_t buf[256], copy[256];
	store_entry_in in = {0};
	store_record r;
	size_t n = sample_record(buf, sizeof buf), i;

	/* Every single flipped bit of the record is caught. */
	for (i = 0; i < n * 8; i++) {
		memcpy(copy, buf, n);
		copy[i / 8] ^= (uint8_t)(1u << (i % 8));
		ck_assert_msg(record_decode(copy, n, &r) == STORE_E_CORRUPT,
		    "bit %zu flipped but accepted", i);
	}
	/* nocheck decodes a damaged payload for the damage report. */
	memcpy(copy, buf, n);
	copy[n - 1] ^= 0xff;
	ck_assert_int_eq(record_decode_nocheck(copy, n, &r), 0);
	ck_assert_uint_eq(r.payload_len, 7);
	/* Short, and lengths pointing past the end. */
	for (i = 0; i < n; i++)
		ck_assert_int_eq(record_decode(buf, i, &r) == 0, 0);
	ck_assert_int_eq(record_decode_nocheck(buf, 39, &r), STORE_E_CORRUPT);
	memcpy(copy, buf, n);
	copy[4] = 0xff;                                  /* type length */
	ck_assert_int_eq(record_decode_nocheck(copy, n, &r), STORE_E_CORRUPT);
	memcpy(copy, buf, n);
	copy[32] = 0x80;                                 /* refs length */
	ck_assert_int_eq(record_decode_nocheck(copy, n, &r), STORE_E_CORRUPT);
	memcpy(copy, buf, n);
	copy[0] = 2;                                     /* a newer version */
	ck_assert_int_eq(record_decode_nocheck(copy, n, &r), STORE_E_CORRUPT);

	/* The smallest record: no type, refs or payload; its payload digest
	 * is that of the flags alone. */
	in.kind = STORE_KIND_GLOBAL;
	in.flags = STORE_FLAG_EXCINFO;
	in.payload_digest = copy;
	ck_assert_uint_eq(record_size(0, 0, 0), 40);
	record_encode(buf, &in, 0);
	ck_assert_int_eq(record_decode(buf, 40, &r), 0);
	ck_assert_uint_eq(r.type_len + r.refs_len + r.payload_len, 0);
	check_payload_digest(&in, copy);
}
END_TEST

/* Records of 1 MiB and more are copied and hashed a chunk at a time
 * (record_copy_digest): the digest must be the one of the layout, whatever
 * the pieces' sizes, and still catch damage anywhere in the payload. */
START_TEST(test_record_large_digest)
{
	static const size_t shapes[][4] = {
		{ 1u << 20, 0, 0, 0 },               /* one piece */
		{ (1u << 20) - 200, 0, 0, 0 },       /* just under: one shot */
		{ 1, 70001, (1u << 20) + 3, 5 },     /* odd pieces */
		{ 32u << 10, 32u << 10, 0, 1u << 20 }, /* chunk-sized, empty */
		{ (3u << 20) + 17, 0, 0, 0 },
	};
	size_t si;

	for (si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
		store_entry_in in = {0};
		struct iovec iov[4];
		uint8_t *src[4], *buf, pd[16];
		size_t n, total = 0, off;
		store_record r;
		int i;

		for (i = 0; i < 4; i++) {
			size_t j;

			src[i] = malloc(shapes[si][i] + 1);
			ck_assert_ptr_nonnull(src[i]);
			for (j = 0; j < shapes[si][i]; j++)
				src[i][j] = (uint8_t)(j * 131 + i * 7 + si);
			iov[i].iov_base = src[i];
			iov[i].iov_len = shapes[si][i];
			total += shapes[si][i];
		}
		in.kind = STORE_KIND_GLOBAL;
		in.name = "big";
		in.name_len = 3;
		in.flags = (uint16_t)(STORE_FLAG_OOB | si << 8);
		in.type_name = "bytes";
		in.refs = sample_refs;
		in.refs_len = sizeof sample_refs;
		in.iov = iov;
		in.iovcnt = 4;
		/* the payload digest, in the copy's pass or in one shot; or not */
		memset(pd, 0, sizeof pd);
		in.payload_digest = si != 3 ? pd : NULL;
		n = record_size(5, sizeof sample_refs, total);
		ck_assert_ptr_nonnull(buf = malloc(n + 1));
		buf[n] = 0xa5;
		record_encode(buf, &in, 42);
		ck_assert_uint_eq(buf[n], 0xa5);          /* no overrun */
		if (in.payload_digest != NULL)
			check_payload_digest(&in, pd);
		else
			ck_assert_uint_eq(rd_be(pd, 8) | rd_be(pd + 8, 8), 0);
		off = 40 + 5 + sizeof sample_refs;
		for (i = 0; i < 4; i++) {
			ck_assert(memcmp(buf + off, src[i], shapes[si][i]) == 0);
			off += shapes[si][i];
		}
		ck_assert_uint_eq(off, n);
		check_record_digest(buf, n);
		ck_assert_int_eq(record_decode(buf, n, &r), 0);
		ck_assert_uint_eq(r.payload_len, total);
		/* a flipped bit at the start, in the middle, at the end */
		for (off = 40; off < n; off += (n - 40) / 2) {
			buf[off] ^= 0x10;
			ck_assert_int_eq(record_decode(buf, n, &r),
			    STORE_E_CORRUPT);
			buf[off] ^= 0x10;
		}
		buf[n - 1] ^= 1;
		ck_assert_int_eq(record_decode(buf, n, &r), STORE_E_CORRUPT);
		free(buf);
		for (i = 0; i < 4; i++)
			free(src[i]);
	}
}
END_TEST

START_TEST(test_util)
{
	static const uint8_t abc_sha[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01,
	    0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0,
	    0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
	    0xf2, 0x00, 0x15, 0xad};
	static const uint8_t empty_sha[4] = {0xe3, 0xb0, 0xc4, 0x42};
	uint8_t a[64], b[64], h[32], back[8];
	uint8_t *large;
	char hex[2 * 64 + 1];
	uint64_t t0, t1;
	size_t i;
	int zeros = 0;

	ck_assert_int_eq(store_random(a, sizeof a), 0);
	ck_assert_int_eq(store_random(b, sizeof b), 0);
	ck_assert_mem_ne(a, b, sizeof a);
	ck_assert_int_eq(store_random(a, 0), 0);
	large = malloc(1 << 20);                 /* longer than one call */
	ck_assert_ptr_nonnull(large);
	memset(large, 0, 1 << 20);
	ck_assert_int_eq(store_random(large, 1 << 20), 0);
	for (i = (1 << 20) - 4096; i < 1 << 20; i++)
		zeros += large[i] == 0;
	ck_assert_int_lt(zeros, 64);             /* the tail was filled */
	free(large);

	store_sha256("abc", 3, h);
	ck_assert_mem_eq(h, abc_sha, 32);
	store_sha256("", 0, h);
	ck_assert_mem_eq(h, empty_sha, 4);

	store_hex(abc_sha, 4, hex);
	ck_assert_str_eq(hex, "ba7816bf");
	store_hex(abc_sha, 0, hex);
	ck_assert_str_eq(hex, "");
	store_hex(a, sizeof a, hex);
	ck_assert_uint_eq(strlen(hex), 128);
	ck_assert_int_eq(store_unhex(hex, b, sizeof b), 0);
	ck_assert_mem_eq(a, b, sizeof a);
	ck_assert_int_eq(store_unhex("BA7816Bf", back, 4), 0);
	ck_assert_mem_eq(back, abc_sha, 4);
	ck_assert_int_eq(store_unhex("ba7816b", back, 4), STORE_E_INVAL);
	ck_assert_int_eq(store_unhex("ba7816bf00", back, 4), STORE_E_INVAL);
	ck_assert_int_eq(store_unhex("ba7816bg", back, 4), STORE_E_INVAL);
	ck_assert_int_eq(store_unhex("ba 816bf", back, 4), STORE_E_INVAL);
	ck_assert_int_eq(store_unhex("", back, 0), 0);

	t0 = store_now_ms();
	t1 = (uint64_t)time(NULL) * 1000;
	ck_assert_uint_le(t0 > t1 ? t0 - t1 : t1 - t0, 2000);
}
END_TEST

/* --- Limits -------------------------------------------------------------- */

START_TEST(test_name_limits)
{
	char name[STORE_NAME_MAX + 2], key[STORE_KEY_MAX + 2];
	struct sess_arg sa = {0};
	store_session ss;
	struct list_keys lk;
	uint8_t *p;
	size_t n;

	memset(name, 'n', sizeof name);
	name[STORE_NAME_MAX + 1] = '\0';
	sa.name = name;
	ck_assert_int_eq(store_write(S, cb_session_create, &sa),
	    STORE_E_INVAL);                          /* 256 bytes */
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa),
	    STORE_E_INVAL);
	sa.name = "";
	ck_assert_int_eq(store_write(S, cb_session_create, &sa),
	    STORE_E_INVAL);
	name[STORE_NAME_MAX] = '\0';
	sa.name = name;
	ck_assert_int_eq(store_write(S, cb_session_create, &sa), 0);
	ss = sa.ss;
	ck_assert_uint_eq(strlen(ss.name), STORE_NAME_MAX);
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_str_eq(sa.ss.name, name);

	memset(key, 'k', sizeof key);
	key[STORE_KEY_MAX + 1] = '\0';
	ck_assert_int_eq(put_one(S, ss.id, 'g', key, 0, "x", 1),
	    STORE_E_INVAL);                          /* 481 bytes */
	ck_assert_int_eq(get_one(S, ss.id, 'g', key, 0, &p, &n),
	    STORE_E_INVAL);
	ck_assert_int_eq(put_one(S, ss.id, 'g', "", 0, "x", 1), STORE_E_INVAL);
	ck_assert_int_eq(put_one(S, ss.id, 'x', "abc", 0, "x", 1),
	    STORE_E_INVAL);                          /* unknown kind */
	key[STORE_KEY_MAX] = '\0';
	ck_assert_int_eq(put_one(S, ss.id, 'g', key, 0, "ok", 2), 0);
	ck_assert_int_eq(get_one(S, ss.id, 'g', key, 0, &p, &n), 0);
	ck_assert_mem_eq(p, "ok", 2);
	free(p);
	/* Handle ids at both ends of the range. */
	ck_assert_int_eq(put_one(S, ss.id, 'h', NULL, UINT64_MAX, "max", 3), 0);
	ck_assert_int_eq(put_one(S, ss.id, 'h', NULL, 0, "zero", 4), 0);
	memset(&lk, 0, sizeof lk);
	lk.sid = ss.id;
	lk.kind = STORE_KIND_HANDLE;
	lk.ka.stop_at = -1;
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 2);
	ck_assert_uint_eq(lk.ka.k[0].handle, 0);
	ck_assert_uint_eq(lk.ka.k[1].handle, UINT64_MAX);
	lk.kind = STORE_KIND_GLOBAL;
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 1);
	ck_assert_uint_eq(lk.ka.k[0].name_len, STORE_KEY_MAX);
}
END_TEST

/* A lease that would overflow last_seen + lease never expires. */
START_TEST(test_lease_overflow)
{
	struct exp_arg *ea = calloc(1, sizeof *ea);
	store_session a;

	ck_assert_ptr_nonnull(ea);
	mk_session(S, "forever", UINT64_MAX, 1700000000000ull, &a);
	expired_at(ea, 1700000000001ull);
	ck_assert_int_eq(ea->n, 0);
	expired_at(ea, UINT64_MAX);
	ck_assert_int_eq(ea->n, 1);
	ck_assert_uint_eq(ea->when[0], UINT64_MAX);
	free(ea);
}
END_TEST

/* Refusals of read-only opens. */
START_TEST(test_notstore)
{
	static char sentinel;        /* *out must be reset to NULL */
	store_options o = {0};
	char path[PATH_MAX + 32], *cause = NULL;
	store *s = (store *)(void *)&sentinel;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	int rc, fd;

	/* A missing directory. */
	o.readonly = 1;
	snprintf(path, sizeof path, "%s/missing", test_dir);
	rc = store_open(&s, path, &o, &cause);
	ck_assert_int_eq(rc, STORE_E_NOTSTORE);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(cause);
	ck_assert_msg(strstr(cause, path) != NULL &&
	    strstr(cause, "No such file") != NULL, "cause: %s", cause);
	free(cause);
	ck_assert_int_eq(access(path, F_OK), -1);   /* not created */
	/* ... also without create when writable. */
	o.readonly = 0;
	ck_assert_int_eq(store_open(&s, path, &o, NULL), STORE_E_NOTSTORE);
	ck_assert_int_eq(access(path, F_OK), -1);

	/* An empty directory. */
	o.readonly = 1;
	ck_assert_int_eq(mkdir(path, 0700), 0);
	rc = store_open(&s, path, &o, &cause);
	ck_assert_int_eq(rc, STORE_E_NOTSTORE);
	ck_assert_msg(cause != NULL && strstr(cause, "no pyshelf store") !=
	    NULL, "cause: %s", cause ? cause : "(none)");
	free(cause);
	ck_assert_int_eq(access(path, F_OK), 0);
	snprintf(path, sizeof path, "%s/missing/data.mdb", test_dir);
	ck_assert_int_eq(access(path, F_OK), -1);   /* nothing made */

	/* A plain file. */
	snprintf(path, sizeof path, "%s/file", test_dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	rc = store_open(&s, path, &o, &cause);
	ck_assert_int_eq(rc, STORE_E_NOTSTORE);
	ck_assert_msg(cause != NULL && strstr(cause, "not a directory") !=
	    NULL, "cause: %s", cause ? cause : "(none)");
	free(cause);

	/* Another program's LMDB environment. */
	snprintf(path, sizeof path, "%s/foreign", test_dir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 4);
	ck_assert_int_eq(mdb_env_open(env, path, 0, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "other", MDB_CREATE, &dbi), 0);
	k.mv_data = "k";
	k.mv_size = 1;
	v = k;
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	rc = store_open(&s, path, &o, &cause);
	ck_assert_int_eq(rc, STORE_E_NOTSTORE);
	ck_assert_msg(cause != NULL && strstr(cause, "not a pyshelf store") !=
	    NULL, "cause: %s", cause ? cause : "(none)");
	free(cause);
	/* A NULL cause is allowed. */
	ck_assert_int_eq(store_open(&s, path, &o, NULL), STORE_E_NOTSTORE);
}
END_TEST

/* Put meta key = val with the raw LMDB API into the store at dir. */
static void
raw_put_meta(const char *dir, const char *key, const void *val, size_t len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;

	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	ck_assert_int_eq(mdb_env_open(env, dir, 0, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	k.mv_data = (void *)key;
	k.mv_size = strlen(key);
	v.mv_data = (void *)val;
	v.mv_size = len;
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

START_TEST(test_newer_format_refused)
{
	uint8_t fmt[4] = {0, 0, 0, STORE_FORMAT_VERSION + 1}, bad[3] = {0};
	store_options o = {0};
	char *cause = NULL, want[64];
	store *s;
	int rc;

	close_S();
	raw_put_meta(db_dir, "format", fmt, 4);
	snprintf(want, sizeof want, "format %d is newer",
	    STORE_FORMAT_VERSION + 1);
	rc = store_open(&s, db_dir, &o, &cause);
	ck_assert_int_eq(rc, STORE_E_VERSION);
	ck_assert_msg(cause != NULL && strstr(cause, want) != NULL,
	    "cause: %s", cause ? cause : "(none)");
	free(cause);
	o.readonly = 1;
	rc = store_open(&s, db_dir, &o, &cause);
	ck_assert_int_eq(rc, STORE_E_VERSION);
	ck_assert_msg(cause != NULL && strstr(cause, want) != NULL,
	    "cause: %s", cause ? cause : "(none)");
	free(cause);
	/* The refusal wrote nothing: the newer format is still there. */
	o.readonly = 0;
	ck_assert_int_eq(store_open(&s, db_dir, &o, NULL), STORE_E_VERSION);

	/* The current format opens again; a malformed one is refused. */
	fmt[3] = STORE_FORMAT_VERSION;
	raw_put_meta(db_dir, "format", fmt, 4);
	open_S(NULL);
	close_S();
	raw_put_meta(db_dir, "format", bad, sizeof bad);
	rc = store_open(&s, db_dir, &o, &cause);
	ck_assert_int_eq(rc, STORE_E_NOTSTORE);
	ck_assert_msg(cause != NULL && strstr(cause, "format") != NULL,
	    "cause: %s", cause ? cause : "(none)");
	free(cause);
}
END_TEST

/* Flip one byte of every occurrence of marker in path; returns the count. */
static int
flip_marker(const char *path, const char *marker)
{
	size_t mlen = strlen(marker), n;
	uint8_t *buf, *p, *q;
	struct stat st;
	int fd, found = 0;

	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	n = (size_t)st.st_size;
	buf = malloc(n);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, n, 0), (ssize_t)n);
	for (p = buf; (q = memmem(p, n - (size_t)(p - buf), marker, mlen)) !=
	    NULL; p = q + mlen) {
		uint8_t c = q[mlen / 2] ^ 0x20;
		ck_assert_int_eq(pwrite(fd, &c, 1, (off_t)(q - buf) +
		    (off_t)(mlen / 2)), 1);
		found++;
	}
	free(buf);
	close(fd);
	return found;
}

/* entry_get_nocheck of the entry ea names: its type name and payload
 * length into ea (the payload is not copied). */
static int
cb_entry_get_nocheck(store_txn *t, void *a)
{
	struct ent_arg *ea = a;
	int rc = entry_get_nocheck(t, ea->sid, ea->kind, ea->name,
	    ea->name_len, ea->handle, &ea->rec);

	if (rc == 0)
		snprintf(ea->type, sizeof ea->type, "%.*s",
		    (int)ea->rec.type_len, ea->rec.type_name);
	ea->rec.type_name = NULL;
	ea->rec.refs = NULL;
	ea->rec.payload = NULL;
	return rc;
}

/* Counts records that fail their digest in an entry walk. */
static int
cb_walk_damage(const uint8_t *sid, const store_key *k, const uint8_t *val,
               size_t len, void *arg)
{
	store_record r;

	if (record_decode(val, len, &r) == STORE_E_CORRUPT &&
	    record_decode_nocheck(val, len, &r) == 0)
		(*(int *)arg)++;
	return 0;
}

static int
cb_walk_damaged(store_txn *t, void *a)
{
	return entry_walk(t, cb_walk_damage, a);
}

START_TEST(test_corrupt_payload)
{
	static const char small_marker[] = "<<pyshelf small marker 5b1e77>>";
	static const char big_marker[] = "<<pyshelf overflow marker c9d2>>";
	uint8_t small[200], *big;
	char path[PATH_MAX + 32];
	store_session ss;
	uint8_t *p;
	size_t n;
	int damaged = 0;

	mk_session(S, "c", 0, 1, &ss);
	pattern_fill(small, sizeof small, 1);
	memcpy(small + 50, small_marker, strlen(small_marker));
	big = malloc(100000);
	ck_assert_ptr_nonnull(big);
	pattern_fill(big, 100000, 2);
	memcpy(big + 70000, big_marker, strlen(big_marker));
	ck_assert_int_eq(put_one(S, ss.id, 'g', "small", 0, small,
	    sizeof small), 0);
	ck_assert_int_eq(put_one(S, ss.id, 'h', NULL, 7, big, 100000), 0);
	fill(S, ss.id, 100, 20, 0, 0);
	close_S();

	snprintf(path, sizeof path, "%s/data.mdb", db_dir);
	ck_assert_int_ge(flip_marker(path, small_marker), 1);
	ck_assert_int_ge(flip_marker(path, big_marker), 1);

	open_S(NULL);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "small", 0, &p, &n),
	    STORE_E_CORRUPT);
	ck_assert_int_eq(get_one(S, ss.id, 'h', NULL, 7, &p, &n),
	    STORE_E_CORRUPT);
	verify(S, ss.id, 100, 20, 0, 0);         /* the others are fine */
	{   /* the layout without the digest: header and type name */
		struct ent_arg ea = {0};
		ea.sid = ss.id;
		ea.kind = 'h';
		ea.handle = 7;
		ck_assert_int_eq(store_read(S, cb_entry_get_nocheck, &ea), 0);
		ck_assert_str_eq(ea.type, "bytes");
		ck_assert_uint_eq(ea.rec.payload_len, 100000);
		ck_assert_uint_eq(ea.rec.pickler, STORE_PICKLER_PICKLE);
		ea.handle = 8;
		ck_assert_int_eq(store_read(S, cb_entry_get_nocheck, &ea),
		    STORE_E_NOTFOUND);
	}
	ck_assert_int_eq(store_read(S, cb_walk_damaged, &damaged), 0);
	ck_assert_int_eq(damaged, 2);
	/* Rewriting a damaged entry repairs it. */
	ck_assert_int_eq(put_one(S, ss.id, 'g', "small", 0, small,
	    sizeof small), 0);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "small", 0, &p, &n), 0);
	ck_assert_mem_eq(p, small, sizeof small);
	free(p);
	free(big);
}
END_TEST

/* Write value number i of size sz (pattern) as handle i. */
static int
put_big(store *s, const uint8_t *sid, uint64_t i, uint8_t *buf, size_t sz)
{
	pattern_fill(buf, sz, seed_of(sid, i));
	return put_one(s, sid, 'h', NULL, i, buf, sz);
}

/* Fail unless handle i reads back as put_big wrote it. */
static void
check_big(store *s, const uint8_t *sid, uint64_t i, size_t sz)
{
	uint8_t *p;
	size_t n;
	int rc = get_one(s, sid, 'h', NULL, i, &p, &n);

	ck_assert_msg(rc == 0, "value %llu: %s", (unsigned long long)i,
	    store_strerror(rc));
	ck_assert_uint_eq(n, sz);
	ck_assert_msg(pattern_ok(p, n, seed_of(sid, i)), "value %llu differs",
	    (unsigned long long)i);
	free(p);
}

/* A configured maximum: STORE_E_FULL past it, nothing committed lost. */
START_TEST(test_reserve)
{
	store_options o = {0};
	size_t map, used;

	o.map_initial = MiB;
	o.map_max = 64 * MiB;
	close_S();
	open_S(&o);
	ck_assert_int_eq(store_usage(S, &map, &used, NULL), 0);
	ck_assert_uint_eq(map, MiB);
	/* grows ahead of a large write, by doubling */
	ck_assert_int_eq(store_reserve(S, 20 * MiB), 0);
	ck_assert_int_eq(store_usage(S, &map, &used, NULL), 0);
	ck_assert_uint_ge(map, used + 20 * MiB);
	ck_assert_uint_le(map, 64 * MiB);
	/* already room: nothing changes */
	ck_assert_int_eq(store_reserve(S, MiB), 0);
	/* past the maximum: STORE_E_FULL, the map at its maximum at most */
	ck_assert_int_eq(store_reserve(S, 100 * MiB), STORE_E_FULL);
	ck_assert_int_eq(store_usage(S, &map, &used, NULL), 0);
	ck_assert_uint_le(map, 64 * MiB);
}
END_TEST

START_TEST(test_map_max_full)
{
	const size_t sz = 200 * 1024;
	store_options o = {0};
	store_session ss;
	size_t map, used, max;
	uint8_t *buf = malloc(8 * MiB);
	uint64_t i, full_at = 0;
	struct ent_arg ea = {0};
	int rc;

	ck_assert_ptr_nonnull(buf);
	o.blob_min = SIZE_MAX;  /* the values in the map */
	o.map_initial = MiB;
	o.map_max = 4 * MiB;
	o.sync = STORE_SYNC_NEVER;
	close_S();
	open_S(&o);
	mk_session(S, "f", 0, 1, &ss);
	for (i = 0; i < 100; i++) {
		rc = put_big(S, ss.id, i, buf, sz);
		if (rc != 0) {
			ck_assert_int_eq(rc, STORE_E_FULL);
			full_at = i;
			break;
		}
	}
	ck_assert_msg(full_at >= 10 && full_at < 20, "full at %llu",
	    (unsigned long long)full_at);
	ck_assert_int_eq(store_usage(S, &map, &used, &max), 0);
	ck_assert_uint_eq(map, 4 * MiB);
	ck_assert_uint_eq(max, 4 * MiB);
	ck_assert_uint_le(used, map);
	/* Full again, and still nothing lost. */
	ck_assert_int_eq(put_big(S, ss.id, full_at, buf, sz), STORE_E_FULL);
	ck_assert_int_eq(put_big(S, ss.id, 1000, buf, 8 * MiB), STORE_E_FULL);
	for (i = 0; i < full_at; i++)
		check_big(S, ss.id, i, sz);
	ck_assert_uint_eq(count_entries(S, ss.id), full_at);
	close_S();
	open_S(&o);
	for (i = 0; i < full_at; i++)
		check_big(S, ss.id, i, sz);
	/* Deleting makes room again. */
	ea.sid = ss.id;
	ea.kind = STORE_KIND_HANDLE;
	for (i = 0; i < 4; i++) {
		ea.handle = i;
		ck_assert_int_eq(store_write(S, cb_entry_del, &ea), 0);
	}
	ck_assert_int_eq(put_big(S, ss.id, full_at, buf, sz), 0);
	check_big(S, ss.id, full_at, sz);
	free(buf);
}
END_TEST

/* refs_put, refs_del and refs_list of each bad target or referrer, in one
 * write transaction that must then have written nothing. */
static int
cb_refs_bad(store_txn *t, void *a)
{
	struct refs_arg *ra = a;
	char big[STORE_KEY_MAX + 1];
	store_key bad[5], good = key_g("ok");
	int i;

	memset(big, 'b', sizeof big);
	bad[0] = key_g("x");
	bad[0].kind = 'x';                       /* unknown kind */
	bad[1] = key_h(1);
	bad[1].kind = 0;
	bad[2] = key_g("");                      /* empty name */
	bad[3] = key_g(NULL);
	bad[4] = key_g("x");
	bad[4].name = big;                       /* 481 bytes */
	bad[4].name_len = sizeof big;
	for (i = 0; i < 5; i++) {
		if (refs_put(t, ra->sid, &good, &bad[i]) != STORE_E_INVAL ||
		    refs_put(t, ra->sid, &bad[i], &good) != STORE_E_INVAL ||
		    refs_del(t, ra->sid, &good, &bad[i]) != STORE_E_INVAL ||
		    refs_del(t, ra->sid, &bad[i], &good) != STORE_E_INVAL ||
		    refs_list(t, ra->sid, &bad[i], cb_collect_referrer, ra) !=
		    STORE_E_INVAL)
			return 1000 + i;
	}
	return 0;
}

/* Writes in a read transaction are refused, before the arguments are
 * looked at; reads work. */
static int
cb_refs_in_read(store_txn *t, void *a)
{
	struct refs_arg *ra = a;
	store_key bad = key_g("");

	if (refs_put(t, ra->sid, &ra->target, &ra->referrer) !=
	    STORE_E_READONLY ||
	    refs_del(t, ra->sid, &ra->target, &ra->referrer) !=
	    STORE_E_READONLY ||
	    refs_put(t, ra->sid, &bad, &bad) != STORE_E_READONLY)
		return -1;
	if (refs_any(t, ra->sid, &ra->any) != 0)
		return -2;
	ra->n = 0;
	return refs_list(t, ra->sid, &ra->target, cb_collect_referrer, ra);
}

START_TEST(test_refs_limits)
{
	char big[STORE_KEY_MAX + 1];
	store_key bigk = key_g("x");
	store_session a;
	struct refs_arg *ra = calloc(1, sizeof *ra);

	ck_assert_ptr_nonnull(ra);
	mk_session(S, "a", 0, 1, &a);
	ra->sid = a.id;
	ck_assert_int_eq(store_write(S, cb_refs_bad, ra), 0);
	ck_assert_int_eq(refs_any1(S, a.id), 0);

	/* 480-byte names, as target and as referrer (a 481-byte value) */
	memset(big, 'n', sizeof big);
	bigk.name = big;
	bigk.name_len = STORE_KEY_MAX;
	ck_assert_int_eq(refs_put1(S, a.id, bigk, bigk), 0);
	ck_assert_int_eq(refs_list1(S, a.id, bigk, ra), 0);
	ck_assert_int_eq(ra->n, 1);
	ck_assert_uint_eq(ra->k[0].name_len, STORE_KEY_MAX);
	ck_assert_mem_eq(ra->names[0], big, STORE_KEY_MAX);

	memset(ra, 0, sizeof *ra);
	ra->sid = a.id;
	ra->target = bigk;
	ra->referrer = key_h(7);
	ra->stop_at = -1;
	ck_assert_int_eq(store_read(S, cb_refs_in_read, ra), 0);
	ck_assert_int_eq(ra->any, 1);
	ck_assert_int_eq(ra->n, 1);
	ck_assert_int_eq(refs_del1(S, a.id, bigk, bigk), 0);
	ck_assert_int_eq(refs_any1(S, a.id), 0);
	free(ra);
}
END_TEST

/* Open the store at dir with the raw LMDB API and begin a write. */
static void
raw_begin(const char *dir, MDB_env **env, MDB_txn **txn)
{
	ck_assert_int_eq(mdb_env_create(env), 0);
	mdb_env_set_maxdbs(*env, 8);
	ck_assert_int_eq(mdb_env_open(*env, dir, 0, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(*env, NULL, 0, txn), 0);
}

/* Commit and close what raw_begin opened. */
static void
raw_commit(MDB_env *env, MDB_txn *txn)
{
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Drop the refs database from the store at dir (as if made before it). */
static void
raw_drop_refs(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	raw_begin(dir, &env, &txn);
	ck_assert_int_eq(mdb_dbi_open(txn, "refs", 0, &dbi), 0);
	ck_assert_int_eq(mdb_drop(txn, dbi, 1), 0);
	raw_commit(env, txn);
}

/* A store made before refs existed: read-only opens see no rows, the first
 * writable open adds the database.  A refs that is not DUPSORT is not
 * ours. */
START_TEST(test_refs_older_store)
{
	store_options o = {0};
	store_session a;
	struct refs_arg *ra = calloc(1, sizeof *ra);
	char *cause = NULL;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	uint8_t *p;
	size_t n;
	int rc;

	ck_assert_ptr_nonnull(ra);
	mk_session(S, "old", 0, 1, &a);
	ck_assert_int_eq(put_one(S, a.id, 'g', "t", 0, "tt", 2), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("t"), key_h(1)), 0);
	close_S();
	raw_drop_refs(db_dir);

	o.readonly = 1;
	open_S(&o);
	ck_assert_int_eq(refs_any1(S, a.id), 0);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 0);              /* fn never called */
	ck_assert_int_eq(refs_list1(S, a.id, key_g(""), ra), STORE_E_INVAL);
	ck_assert_int_eq(get_one(S, a.id, 'g', "t", 0, &p, &n), 0);
	ck_assert_mem_eq(p, "tt", 2);
	free(p);
	close_S();
	/* still absent: the read-only open created nothing */
	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	ck_assert_int_eq(mdb_env_open(env, db_dir, MDB_RDONLY, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "refs", 0, &dbi), MDB_NOTFOUND);
	mdb_txn_abort(txn);
	mdb_env_close(env);

	open_S(NULL);                            /* writable: adds it */
	ck_assert_int_eq(refs_any1(S, a.id), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("t"), key_h(2)), 0);
	close_S();
	open_S(&o);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("t"), ra), 0);
	ck_assert_int_eq(ra->n, 1);
	ck_assert_uint_eq(ra->k[0].handle, 2);
	close_S();

	/* a refs database without MDB_DUPSORT */
	raw_drop_refs(db_dir);
	raw_begin(db_dir, &env, &txn);
	ck_assert_int_eq(mdb_dbi_open(txn, "refs", MDB_CREATE, &dbi), 0);
	k.mv_data = "k";
	k.mv_size = 1;
	v = k;
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	raw_commit(env, txn);
	for (o.readonly = 0; o.readonly < 2; o.readonly++) {
		rc = store_open(&S, db_dir, &o, &cause);
		ck_assert_int_eq(rc, STORE_E_NOTSTORE);
		ck_assert_ptr_null(S);
		ck_assert_msg(cause != NULL && strstr(cause, "'refs'") != NULL,
		    "cause: %s", cause ? cause : "(none)");
		free(cause);
		cause = NULL;
	}
	free(ra);
}
END_TEST

/* Put value p[0..n) under target's key in sid's refs, with raw LMDB. */
static void
raw_put_ref(const char *dir, const uint8_t *sid, const char *target,
            const void *p, size_t n)
{
	uint8_t key[STORE_ID_SIZE + 1 + 32];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;

	memcpy(key, sid, STORE_ID_SIZE);
	key[STORE_ID_SIZE] = STORE_KIND_GLOBAL;
	memcpy(key + STORE_ID_SIZE + 1, target, strlen(target));
	k.mv_data = key;
	k.mv_size = STORE_ID_SIZE + 1 + strlen(target);
	v.mv_data = (void *)p;
	v.mv_size = n;
	raw_begin(dir, &env, &txn);
	ck_assert_int_eq(mdb_dbi_open(txn, "refs", MDB_DUPSORT, &dbi), 0);
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	raw_commit(env, txn);
}

/* A malformed row makes refs_list fail with STORE_E_CORRUPT; rows put by
 * refs_put have the layout of STORAGE.md 3.6. */
START_TEST(test_refs_corrupt_row)
{
	static const struct {
		const char *target;
		const char *val;
		size_t len;
	} bad[] = {
		{"empty", "", 0},
		{"kind", "xname", 5},                /* unknown kind */
		{"kind0", "\0\0\0\0\0\0\0\0\1", 9},
		{"short", "h\0\0\0\0\0\0\1", 8},     /* handle of 7 bytes */
		{"long", "h\0\0\0\0\0\0\0\0\1", 10}, /* handle of 9 bytes */
		{"noname", "g", 1},                  /* global without name */
	};
	store_session a;
	struct refs_arg *ra = calloc(1, sizeof *ra);
	size_t i;

	ck_assert_ptr_nonnull(ra);
	mk_session(S, "a", 0, 1, &a);
	close_S();
	/* the layout, byte by byte: a row written by hand reads back */
	raw_put_ref(db_dir, a.id, "good", "h\0\0\0\0\0\0\1\2", 9);
	raw_put_ref(db_dir, a.id, "good", "gname", 5);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		raw_put_ref(db_dir, a.id, bad[i].target, bad[i].val,
		    bad[i].len);
	open_S(NULL);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("good"), ra), 0);
	ck_assert_int_eq(ra->n, 2);
	ck_assert_str_eq(ra->names[0], "name");
	ck_assert_uint_eq(ra->k[1].handle, 0x0102);
	/* refs_put of the same two rows adds nothing */
	ck_assert_int_eq(refs_put1(S, a.id, key_g("good"), key_g("name")), 0);
	ck_assert_int_eq(refs_put1(S, a.id, key_g("good"), key_h(0x0102)), 0);
	ck_assert_int_eq(refs_list1(S, a.id, key_g("good"), ra), 0);
	ck_assert_int_eq(ra->n, 2);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(refs_list1(S, a.id, key_g(bad[i].target), ra) ==
		    STORE_E_CORRUPT, "row %s", bad[i].target);
		ck_assert_int_eq(ra->n, 0);
	}
	free(ra);
}
END_TEST

/* --- Purge: range deletes ------------------------------------------------- */

/* Kill and purge the middle one of three sessions of n, 1000 and 1000
 * entries (neighbours on both sides in key order), in batches of batch. */
static void
purge_between_neighbours(uint64_t n, size_t batch)
{
	store_session ss[3];
	struct sess_arg sa = {0};
	struct exp_arg *ea = calloc(1, sizeof *ea);
	struct list_keys lk;
	size_t deleted = 0;
	int i;

	ck_assert_ptr_nonnull(ea);
	open_S(NULL);
	mk_session(S, "n0", 0, 1, &ss[0]);
	mk_session(S, "n1", 0, 1, &ss[1]);
	mk_session(S, "n2", 0, 1, &ss[2]);
	qsort(ss, 3, sizeof ss[0], cmp_session_id);
	fill(S, ss[0].id, 0, 1000, 0, 0);
	fill(S, ss[2].id, 0, 1000, 0, 0);
	fill(S, ss[1].id, 0, n, 0, 0);
	ck_assert_uint_eq(count_entries(S, ss[1].id), n);
	memset(&lk, 0, sizeof lk);
	lk.sid = ss[1].id;
	lk.ka.stop_at = -1;
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, (int)n);

	kill_session(S, ss[1].id);
	expired_at(ea, 0);
	ck_assert_int_eq(ea->n, 1);
	ck_assert_mem_eq(ea->id[0], ss[1].id, STORE_ID_SIZE);
	ck_assert_int_eq(session_purge(S, ss[1].id, batch, &deleted), 0);
	ck_assert_uint_eq(deleted, n);
	ck_assert_uint_eq(count_entries(S, ss[1].id), 0);
	ck_assert_int_eq(store_read(S, cb_list, &lk), 0);
	ck_assert_int_eq(lk.ka.n, 0);
	sa.id = ss[1].id;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa),
	    STORE_E_NOTFOUND);
	expired_at(ea, UINT64_MAX);
	ck_assert_int_eq(ea->n, 0);
	/* The neighbours are untouched. */
	for (i = 0; i < 3; i += 2) {
		ck_assert_uint_eq(count_entries(S, ss[i].id), 1000);
		verify(S, ss[i].id, 0, 1000, 0, 0);
		sa.name = ss[i].name;
		ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	}
	/* Purging again is harmless. */
	ck_assert_int_eq(session_purge(S, ss[1].id, batch, &deleted), 0);
	ck_assert_uint_eq(deleted, 0);
	free(ea);
}

START_TEST(test_purge_one)
{
	purge_between_neighbours(1, 100);
}
END_TEST

START_TEST(test_purge_100k)
{
	purge_between_neighbours(100000, 1000);
}
END_TEST

START_TEST(test_purge_100k_batch_7)
{
	purge_between_neighbours(100000, 7);
}
END_TEST

START_TEST(test_purge_exact_batches)
{
	purge_between_neighbours(300, 100);     /* the last batch is full */
}
END_TEST

START_TEST(test_purge_default_batch)
{
	purge_between_neighbours(2500, 0);      /* 0: the default */
}
END_TEST

/* A purge never takes the name from the session that reused it. */
START_TEST(test_purge_reused_name)
{
	store_session old, young;
	struct sess_arg sa = {0};
	size_t deleted;

	mk_session(S, "w", 0, 1, &old);
	fill(S, old.id, 0, 10, 0, 0);
	kill_session(S, old.id);
	mk_session(S, "w", 0, 2, &young);
	fill(S, young.id, 0, 10, 0, 0);
	ck_assert_int_eq(session_purge(S, old.id, 3, &deleted), 0);
	ck_assert_uint_eq(deleted, 10);
	sa.name = "w";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_mem_eq(sa.ss.id, young.id, STORE_ID_SIZE);
	verify(S, young.id, 0, 10, 0, 0);
	ck_assert_int_eq(session_purge(S, old.id, 3, NULL), 0);
}
END_TEST

/* Rows of a "refs fill" of a session's entries 0..n-1 (keys as fill()
 * makes them: global "g<i>" when i is odd, handle i when even): entry i
 * is referred to by entries i+1 .. i+per (mod n), and a global "hub" by
 * all n, n * (per + 1) rows in all when per < n. */
struct refs_fill {
	const uint8_t *sid;
	uint64_t n, per;
	uint64_t rows;            /* count: rows found */
};

/* The key of fill entry i, its name (if any) in buf. */
static store_key
fill_key(uint64_t i, char *buf, size_t size)
{
	snprintf(buf, size, "g%llu", (unsigned long long)i);
	return i % 2 ? key_g(buf) : key_h(i);
}

/* Put the rows of a refs fill in one transaction. */
static int
cb_refs_fill(store_txn *t, void *a)
{
	struct refs_fill *rf = a;
	char tn[32], rn[32];
	store_key target, referrer, hub = key_g("hub");
	uint64_t i, j;
	int rc;

	for (i = 0; i < rf->n; i++) {
		target = fill_key(i, tn, sizeof tn);
		for (j = 1; j <= rf->per; j++) {
			referrer = fill_key((i + j) % rf->n, rn, sizeof rn);
			if ((rc = refs_put(t, rf->sid, &target, &referrer)) != 0)
				return rc;
		}
		if ((rc = refs_put(t, rf->sid, &hub, &target)) != 0)
			return rc;
	}
	return 0;
}

/* Count a referrer. */
static int
cb_count_referrer(const store_key *k, void *a)
{
	(void)k;
	(*(uint64_t *)a)++;
	return 0;
}

/* Count the rows of a refs fill that are there. */
static int
cb_refs_fill_count(store_txn *t, void *a)
{
	struct refs_fill *rf = a;
	char tn[32];
	store_key target, hub = key_g("hub");
	uint64_t i;
	int rc;

	rf->rows = 0;
	for (i = 0; i < rf->n; i++) {
		target = fill_key(i, tn, sizeof tn);
		rc = refs_list(t, rf->sid, &target, cb_count_referrer,
		    &rf->rows);
		if (rc != 0)
			return rc;
	}
	return refs_list(t, rf->sid, &hub, cb_count_referrer, &rf->rows);
}

/* Put a refs fill of n entries of sid, per referrers each. */
static void
refs_fill_put(store *s, const uint8_t *sid, uint64_t n, uint64_t per)
{
	struct refs_fill rf = {sid, n, per, 0};
	int rc = store_write(s, cb_refs_fill, &rf);

	ck_assert_msg(rc == 0, "refs fill: %s", store_strerror(rc));
}

/* Rows of a refs fill of n, per that are there. */
static uint64_t
refs_fill_count(store *s, const uint8_t *sid, uint64_t n, uint64_t per)
{
	struct refs_fill rf = {sid, n, per, 0};
	int rc = store_read(s, cb_refs_fill_count, &rf);

	ck_assert_msg(rc == 0, "refs count: %s", store_strerror(rc));
	return rf.rows;
}

/* The purge deletes the middle session's rows and none of its
 * neighbours'; *deleted still counts entries only. */
START_TEST(test_purge_refs)
{
	store_session ss[3];
	size_t deleted = 0;
	int i;

	open_S(NULL);
	mk_session(S, "n0", 0, 1, &ss[0]);
	mk_session(S, "n1", 0, 1, &ss[1]);
	mk_session(S, "n2", 0, 1, &ss[2]);
	qsort(ss, 3, sizeof ss[0], cmp_session_id);
	for (i = 0; i < 3; i++) {
		fill(S, ss[i].id, 0, 200, 0, 0);
		refs_fill_put(S, ss[i].id, 200, 4);
		ck_assert_uint_eq(refs_fill_count(S, ss[i].id, 200, 4), 1000);
	}
	kill_session(S, ss[1].id);
	ck_assert_int_eq(session_purge(S, ss[1].id, 0, &deleted), 0);
	ck_assert_uint_eq(deleted, 200);
	ck_assert_uint_eq(count_entries(S, ss[1].id), 0);
	ck_assert_int_eq(refs_any1(S, ss[1].id), 0);
	ck_assert_uint_eq(refs_fill_count(S, ss[1].id, 200, 4), 0);
	for (i = 0; i < 3; i += 2) {
		ck_assert_int_eq(refs_any1(S, ss[i].id), 1);
		ck_assert_uint_eq(refs_fill_count(S, ss[i].id, 200, 4), 1000);
		verify(S, ss[i].id, 0, 200, 0, 0);
	}
	/* a session with rows and no entries; purging again is harmless */
	refs_fill_put(S, ss[1].id, 10, 1);
	ck_assert_int_eq(session_purge(S, ss[1].id, 0, &deleted), 0);
	ck_assert_uint_eq(deleted, 0);
	ck_assert_int_eq(refs_any1(S, ss[1].id), 0);
	ck_assert_int_eq(session_purge(S, ss[1].id, 0, &deleted), 0);
	ck_assert_uint_eq(deleted, 0);
}
END_TEST

/* The last committed transaction id of the store at dir, read with the raw
 * LMDB API (no store of this process may have it open). */
static size_t
raw_last_txnid(const char *dir)
{
	MDB_env *env;
	MDB_envinfo info;

	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
	ck_assert_int_eq(mdb_env_info(env, &info), 0);
	mdb_env_close(env);
	return info.me_last_txnid;
}

/* Purge 50 entries and 150 rows (one target with 50 referrers, more than a
 * batch) in batches of 3: every row counts against the batch, so it takes
 * ceil(200 / 3) = 67 commits, then one for the record. */
START_TEST(test_purge_refs_batch_3)
{
	store_session a, b;
	size_t deleted = 0, t0, t1;

	open_S(NULL);
	mk_session(S, "a", 0, 1, &a);
	mk_session(S, "b", 0, 1, &b);
	fill(S, a.id, 0, 50, 0, 0);
	refs_fill_put(S, a.id, 50, 2);
	fill(S, b.id, 0, 50, 0, 0);
	refs_fill_put(S, b.id, 50, 2);
	ck_assert_uint_eq(refs_fill_count(S, a.id, 50, 2), 150);
	kill_session(S, a.id);
	close_S();
	t0 = raw_last_txnid(db_dir);
	open_S(NULL);
	ck_assert_int_eq(session_purge(S, a.id, 3, &deleted), 0);
	close_S();
	t1 = raw_last_txnid(db_dir);
	open_S(NULL);
	ck_assert_uint_eq(deleted, 50);
	ck_assert_uint_eq(t1 - t0, 67 + 1);
	ck_assert_int_eq(refs_any1(S, a.id), 0);
	ck_assert_uint_eq(refs_fill_count(S, a.id, 50, 2), 0);
	ck_assert_uint_eq(count_entries(S, a.id), 0);
	ck_assert_uint_eq(refs_fill_count(S, b.id, 50, 2), 150);
	verify(S, b.id, 0, 50, 0, 0);
}
END_TEST

/* --- Big: map growth and large values ------------------------------------ */

START_TEST(test_map_growth_200mib)
{
	const uint64_t nvals = 210;
	store_options o = {0};
	store_session ss;
	size_t map, used, max;
	uint8_t *buf = malloc(MiB);
	uint64_t i;

	ck_assert_ptr_nonnull(buf);
	o.map_initial = MiB;
	o.sync = STORE_SYNC_NEVER;
	o.blob_min = SIZE_MAX;  /* the values in the map: it must grow */
	open_S(&o);
	ck_assert_int_eq(store_usage(S, &map, &used, &max), 0);
	ck_assert_uint_eq(map, MiB);
	mk_session(S, "g", 0, 1, &ss);
	for (i = 0; i < nvals; i++) {
		int rc = put_big(S, ss.id, i, buf, MiB);
		ck_assert_msg(rc == 0, "value %llu: %s", (unsigned long long)i,
		    store_strerror(rc));
	}
	ck_assert_int_eq(store_usage(S, &map, &used, &max), 0);
	ck_assert_msg(used > 200 * MiB && map >= used, "map %zu used %zu",
	    map, used);
	for (i = 0; i < nvals; i++)
		check_big(S, ss.id, i, MiB);
	ck_assert_int_eq(store_sync(S), 0);
	close_S();

	/* Reopened with the small first map: it fits the data by itself. */
	open_S(&o);
	ck_assert_int_eq(store_usage(S, &map, &used, &max), 0);
	ck_assert_uint_ge(map, used);
	for (i = 0; i < nvals; i++)
		check_big(S, ss.id, i, MiB);
	ck_assert_int_eq(put_big(S, ss.id, nvals, buf, MiB), 0);
	check_big(S, ss.id, nvals, MiB);
	free(buf);
}
END_TEST

START_TEST(test_value_100mb)
{
	const size_t sz = 100000000;
	static const size_t cuts[] = {0, 1, 4096, 4097, 33333333, 33333334,
	    99999999, 100000000};
	struct iovec iov[7];
	struct ent_arg ea = {0};
	store_session ss;
	uint8_t *buf = malloc(sz), *p;
	size_t n, i;
	int round;

	ck_assert_ptr_nonnull(buf);
	/* first in a blob file (the default for a value this large), then
	 * in the map */
	for (round = 0; round < 2; round++) {
	store_options o = {0};

	o.blob_min = round == 0 ? 0 : SIZE_MAX;
	if (round == 1)
		tu_rmtree(db_dir);
	open_S(&o);
	mk_session(S, "big", 0, 1, &ss);
	pattern_fill(buf, sz, 100);
	for (i = 0; i < 7; i++) {               /* uneven pieces */
		iov[i].iov_base = buf + cuts[i];
		iov[i].iov_len = cuts[i + 1] - cuts[i];
	}
	ea.sid = ss.id;
	ea.in.kind = STORE_KIND_GLOBAL;
	ea.in.name = "huge";
	ea.in.name_len = 4;
	ea.in.pickler = STORE_PICKLER_PICKLE;
	ea.in.type_name = "numpy.ndarray";
	ea.in.iov = iov;
	ea.in.iovcnt = 7;
	ea.now = 5;
	ck_assert_int_eq(store_write(S, cb_entry_put, &ea), 0);
	memset(buf, 0, sz);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "huge", 0, &p, &n), 0);
	ck_assert_uint_eq(n, sz);
	ck_assert(pattern_ok(p, n, 100));
	free(p);
	close_S();
	open_S(&o);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "huge", 0, &p, &n), 0);
	ck_assert_uint_eq(n, sz);
	ck_assert(pattern_ok(p, n, 100));
	free(p);
	close_S();
	}
	free(buf);
}
END_TEST

/* --- Blob: large payloads in files beside data.mdb ------------------------ */

#define BLOB_MIN_TEST 4096

/* Open S with blob files from BLOB_MIN_TEST bytes (and sync). */
static void
open_blob_S(enum store_sync sync, size_t map_max)
{
	store_options o = {0};

	o.blob_min = BLOB_MIN_TEST;
	o.sync = sync;
	o.map_max = map_max;
	if (map_max != 0)
		o.map_initial = map_max;
	open_S(&o);
}

/* How many files the blobs directory holds (dot files aside). */
static int
count_blob_files(void)
{
	char dir[PATH_MAX + 16];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof dir, "%s/blobs", db_dir);
	d = opendir(dir);
	ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* The path of the only blob file whose name is 32 hex digits into out. */
static void
the_blob_file(char *out, size_t cap)
{
	char dir[PATH_MAX + 16];
	struct dirent *de;
	DIR *d;
	int n = 0;

	ck_assert_uint_ge(cap, sizeof dir + 40);
	snprintf(dir, sizeof dir, "%s/blobs", db_dir);
	d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		if (strlen(de->d_name) == 32) {
			snprintf(out, cap, "%s/%s", dir, de->d_name);
			n++;
		}
	closedir(d);
	ck_assert_int_eq(n, 1);
}

/* Put global name with an n-byte patterned payload (seed) in three
 * pieces, a refs blob, and the payload digest asked for into pd. */
static int
put_blob(const uint8_t *sid, const char *name, uint8_t *buf, size_t n,
         uint64_t seed, uint8_t pd[16])
{
	struct ent_arg ea = {0};
	struct iovec iov[3];
	int rc;

	pattern_fill(buf, n, seed);
	iov[0].iov_base = buf;
	iov[0].iov_len = 7;
	iov[1].iov_base = buf + 7;
	iov[1].iov_len = n / 2;
	iov[2].iov_base = buf + 7 + n / 2;
	iov[2].iov_len = n - 7 - n / 2;
	ea.sid = sid;
	ea.in.kind = STORE_KIND_GLOBAL;
	ea.in.name = name;
	ea.in.name_len = strlen(name);
	ea.in.pickler = STORE_PICKLER_CLOUDPICKLE;
	ea.in.flags = STORE_FLAG_OOB;
	ea.in.type_name = "numpy.ndarray";
	ea.in.refs = sample_refs;
	ea.in.refs_len = sizeof sample_refs;
	ea.in.iov = iov;
	ea.in.iovcnt = 3;
	ea.in.payload_digest = pd;
	ea.now = 77;
	rc = store_write(S, cb_entry_put, &ea);
	if (rc == 0 && pd != NULL)
		check_payload_digest(&ea.in, pd);
	return rc;
}

/* Read global name back and check it holds the seed's pattern. */
static void
check_blob(const uint8_t *sid, const char *name, size_t n, uint64_t seed)
{
	struct ent_arg ea = {0};

	ea.sid = sid;
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = name;
	ea.name_len = strlen(name);
	ck_assert_int_eq(store_read(S, cb_entry_get, &ea), 0);
	ck_assert_uint_eq(ea.rec.payload_len, n);
	ck_assert(pattern_ok(ea.payload, n, seed));
	/* the store's own flag never shows */
	ck_assert_uint_eq(ea.rec.flags, STORE_FLAG_OOB);
	ck_assert_str_eq(ea.type, "numpy.ndarray");
	ck_assert_int_eq(memcmp(ea.refs, sample_refs, sizeof sample_refs), 0);
	free(ea.payload);
}

static int
cb_get_nocheck(store_txn *t, void *a)
{
	struct ent_arg *ea = a;

	return entry_get_nocheck(t, ea->sid, ea->kind, ea->name, ea->name_len,
	    ea->handle, &ea->rec);
}

START_TEST(test_blob_roundtrip)
{
	const size_t n = 10000;
	uint8_t *buf = malloc(n + 8), pd[16];   /* values up to n + 4 */
	struct ent_arg ea = {0};
	struct count_arg ca = {0};
	store_session ss;
	uint64_t i;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_ALWAYS, 0);
	mk_session(S, "b", 0, 1, &ss);
	ck_assert_int_eq(put_blob(ss.id, "big", buf, n, 1, pd), 0);
	ck_assert_int_eq(count_blob_files(), 1);
	check_blob(ss.id, "big", n, 1);
	/* small values stay in the map */
	ck_assert_int_eq(put_one(S, ss.id, 'g', "small", 0, "abc", 3), 0);
	ck_assert_int_eq(count_blob_files(), 1);
	/* the header alone: flags without BLOB, no payload, its size */
	ea.sid = ss.id;
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = "big";
	ea.name_len = 3;
	ck_assert_int_eq(store_read(S, cb_entry_exists, &ea), 1);
	ck_assert_uint_eq(ea.rec.flags, STORE_FLAG_OOB);
	ck_assert_int_eq(store_read(S, cb_get_nocheck, &ea), 0);
	ck_assert_ptr_null(ea.rec.payload);
	ck_assert_uint_eq(ea.rec.payload_len, n);
	ck_assert_uint_eq(ea.rec.flags, STORE_FLAG_OOB);
	/* sizes count the file */
	ca.sid = ss.id;
	ck_assert_int_eq(store_read(S, cb_count, &ca), 0);
	ck_assert_uint_eq(ca.n, 2);
	ck_assert_uint_eq(ca.bytes, record_size(13, sizeof sample_refs, n) +
	    record_size(5, 0, 3));
	/* a new value: a new file, the old one gone */
	ck_assert_int_eq(put_blob(ss.id, "big", buf, n + 1, 2, NULL), 0);
	ck_assert_int_eq(count_blob_files(), 1);
	check_blob(ss.id, "big", n + 1, 2);
	/* a small value in its place: no file */
	ck_assert_int_eq(put_one(S, ss.id, 'g', "big", 0, "xy", 2), 0);
	ck_assert_int_eq(count_blob_files(), 0);
	ck_assert_int_eq(put_blob(ss.id, "big", buf, n, 3, NULL), 0);
	ck_assert_int_eq(count_blob_files(), 1);
	/* deleted: no file */
	ea.kind = STORE_KIND_GLOBAL;
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), 0);
	ck_assert_int_eq(count_blob_files(), 0);
	/* several, across a reopen: every file kept, none swept */
	for (i = 0; i < 5; i++) {
		char name[16];

		snprintf(name, sizeof name, "a%" PRIu64, i);
		ck_assert_int_eq(put_blob(ss.id, name, buf, n + i, 10 + i,
		    NULL), 0);
	}
	close_S();
	open_blob_S(STORE_SYNC_INTERVAL, 0);
	ck_assert_int_eq(count_blob_files(), 5);
	for (i = 0; i < 5; i++) {
		char name[16];

		snprintf(name, sizeof name, "a%" PRIu64, i);
		check_blob(ss.id, name, n + i, 10 + i);
	}
	ck_assert_int_eq(put_blob(ss.id, "a0", buf, n, 20, NULL), 0);
	ck_assert_int_eq(store_sync(S), 0);
	check_blob(ss.id, "a0", n, 20);
	free(buf);
}
END_TEST

/* entry_put_sorted: a key given twice keeps its last value, and one file;
 * a batch over keys that have files drops exactly theirs. */
START_TEST(test_blob_put_sorted)
{
	const size_t n = 5000;
	struct sorted_arg sa = {0};
	store_entry_in in[6];
	const store_entry_in *order[6];
	struct iovec iov[6];
	uint8_t *bufs[6];
	store_session ss;
	static const char *names[6] = {"a", "b", "b", "c", "d", "e"};
	size_t i;

	open_blob_S(STORE_SYNC_NEVER, 0);
	mk_session(S, "s", 0, 1, &ss);
	for (i = 0; i < 6; i++) {
		/* c stays small: the others are files */
		size_t len = i == 3 ? 10 : n + i;

		bufs[i] = malloc(len);
		ck_assert_ptr_nonnull(bufs[i]);
		pattern_fill(bufs[i], len, 30 + i);
		memset(&in[i], 0, sizeof in[i]);
		in[i].kind = STORE_KIND_GLOBAL;
		in[i].name = names[i];
		in[i].name_len = 1;
		in[i].pickler = STORE_PICKLER_CLOUDPICKLE;
		in[i].flags = STORE_FLAG_OOB;
		in[i].type_name = "numpy.ndarray";
		in[i].refs = sample_refs;
		in[i].refs_len = sizeof sample_refs;
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = len;
		in[i].iov = &iov[i];
		in[i].iovcnt = 1;
		order[i] = &in[i];
	}
	sa.sid = ss.id;
	sa.order = order;
	sa.n = 6;
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	ck_assert_int_eq(count_blob_files(), 4);   /* a, b (once), d, e */
	check_blob(ss.id, "b", n + 2, 32);
	check_blob(ss.id, "e", n + 5, 35);
	/* again, in reverse order: every file replaced, none left behind */
	for (i = 0; i < 6; i++)
		order[i] = &in[5 - i];
	ck_assert_int_eq(store_write(S, cb_put_sorted, &sa), 0);
	ck_assert_int_eq(count_blob_files(), 4);
	check_blob(ss.id, "b", n + 1, 31);         /* the last given */
	check_blob(ss.id, "a", n, 30);
	for (i = 0; i < 6; i++)
		free(bufs[i]);
}
END_TEST

/* Puts a file, then fails: the transaction aborts. */
static int
cb_put_then_fail(store_txn *t, void *a)
{
	int rc = cb_entry_put(t, a);

	return rc != 0 ? rc : STORE_E_INVAL;
}

START_TEST(test_blob_abort)
{
	const size_t n = 8000;
	uint8_t *buf = malloc(n);
	struct ent_arg ea = {0};
	struct iovec iov = {buf, n};
	store_session ss;
	uint8_t *p;
	size_t len;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_ALWAYS, 0);
	mk_session(S, "s", 0, 1, &ss);
	ck_assert_int_eq(put_blob(ss.id, "kept", buf, n, 5, NULL), 0);
	ea.sid = ss.id;
	ea.in.kind = STORE_KIND_GLOBAL;
	ea.in.name = "kept";
	ea.in.name_len = 4;
	ea.in.type_name = "bytes";
	ea.in.iov = &iov;
	ea.in.iovcnt = 1;
	ck_assert_int_eq(store_write(S, cb_put_then_fail, &ea), STORE_E_INVAL);
	/* the new file is gone, the old value and its file are whole */
	ck_assert_int_eq(count_blob_files(), 1);
	check_blob(ss.id, "kept", n, 5);
	ea.in.name = "new";
	ea.in.name_len = 3;
	ck_assert_int_eq(store_write(S, cb_put_then_fail, &ea), STORE_E_INVAL);
	ck_assert_int_eq(count_blob_files(), 1);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "new", 0, &p, &len),
	    STORE_E_NOTFOUND);
	free(buf);
}
END_TEST

START_TEST(test_blob_damage)
{
	const size_t n = 6000;
	uint8_t *buf = malloc(n), c, *p;
	char path[PATH_MAX + 64];
	struct ent_arg ea = {0};
	store_session ss;
	size_t len;
	int fd;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_NEVER, 0);
	mk_session(S, "s", 0, 1, &ss);
	ck_assert_int_eq(put_blob(ss.id, "x", buf, n, 6, NULL), 0);
	the_blob_file(path, sizeof path);
	/* one flipped byte */
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &c, 1, 4321), 1);
	c ^= 0x01;
	ck_assert_int_eq(pwrite(fd, &c, 1, 4321), 1);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "x", 0, &p, &len),
	    STORE_E_CORRUPT);
	/* the header is still there, unchecked */
	ea.sid = ss.id;
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = "x";
	ea.name_len = 1;
	ck_assert_int_eq(store_read(S, cb_get_nocheck, &ea), 0);
	ck_assert_uint_eq(ea.rec.payload_len, n);
	c ^= 0x01;
	ck_assert_int_eq(pwrite(fd, &c, 1, 4321), 1);
	check_blob(ss.id, "x", n, 6);
	/* cut short */
	ck_assert_int_eq(ftruncate(fd, (off_t)n - 1), 0);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "x", 0, &p, &len),
	    STORE_E_CORRUPT);
	close(fd);
	/* gone */
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "x", 0, &p, &len),
	    STORE_E_CORRUPT);
	/* the entry can still be replaced or deleted */
	ck_assert_int_eq(put_blob(ss.id, "x", buf, n, 7, NULL), 0);
	check_blob(ss.id, "x", n, 7);
	free(buf);
}
END_TEST

START_TEST(test_blob_orphans_swept)
{
	const size_t n = 5000;
	uint8_t *buf = malloc(n);
	char orphan[PATH_MAX + 64], foreign[PATH_MAX + 64];
	store_options ro = {0};
	store_session ss;
	store *r;
	int fd;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_NEVER, 0);
	mk_session(S, "s", 0, 1, &ss);
	ck_assert_int_eq(put_blob(ss.id, "x", buf, n, 8, NULL), 0);
	close_S();
	/* what a crash leaves: a file no row names; and one not ours */
	snprintf(orphan, sizeof orphan, "%s/blobs/"
	    "0123456789abcdef0123456789abcdef", db_dir);
	snprintf(foreign, sizeof foreign, "%s/blobs/NOTES.txt", db_dir);
	fd = open(orphan, O_WRONLY | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "half", 4), 4);
	close(fd);
	fd = open(foreign, O_WRONLY | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	/* a read-only open changes nothing */
	ro.readonly = 1;
	ck_assert_int_eq(store_open(&r, db_dir, &ro, NULL), 0);
	store_close(r);
	ck_assert_int_eq(access(orphan, F_OK), 0);
	/* a writable open removes the orphan only */
	open_blob_S(STORE_SYNC_NEVER, 0);
	ck_assert_int_eq(access(orphan, F_OK), -1);
	ck_assert_int_eq(access(foreign, F_OK), 0);
	check_blob(ss.id, "x", n, 8);
	ck_assert_int_eq(count_blob_files(), 2);   /* x's and NOTES.txt */
	free(buf);
}
END_TEST

static int
cb_count_blob_row(const uint8_t *sid, const store_key *k, const uint8_t *name,
                  uint64_t size, void *a)
{
	(void)sid;
	(void)k;
	ck_assert_ptr_nonnull(name);
	ck_assert_uint_ge(size, BLOB_MIN_TEST);
	(*(int *)a)++;
	return 0;
}

static int
cb_blob_walk(store_txn *t, void *a)
{
	*(int *)a = 0;
	return blob_walk(t, cb_count_blob_row, a);
}

START_TEST(test_blob_purge)
{
	const size_t n = 5000;
	uint8_t *buf = malloc(n);
	store_session a, b;
	size_t deleted = 0;
	int rows = 0;
	char name[16];
	int i;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_NEVER, 0);
	mk_session(S, "a", 0, 1, &a);
	mk_session(S, "b", 0, 1, &b);
	for (i = 0; i < 5; i++) {
		snprintf(name, sizeof name, "v%d", i);
		ck_assert_int_eq(put_blob(a.id, name, buf, n, (uint64_t)i,
		    NULL), 0);
		ck_assert_int_eq(put_one(S, a.id, 'g', name + 1, 0, "s", 1), 0);
	}
	ck_assert_int_eq(put_blob(b.id, "kept", buf, n, 99, NULL), 0);
	ck_assert_int_eq(count_blob_files(), 6);
	ck_assert_int_eq(store_read(S, cb_blob_walk, &rows), 0);
	ck_assert_int_eq(rows, 6);
	kill_session(S, a.id);
	ck_assert_int_eq(session_purge(S, a.id, 3, &deleted), 0);
	ck_assert_uint_eq(deleted, 10);
	ck_assert_int_eq(count_blob_files(), 1);
	ck_assert_int_eq(store_read(S, cb_blob_walk, &rows), 0);
	ck_assert_int_eq(rows, 1);
	check_blob(b.id, "kept", n, 99);
	free(buf);
}
END_TEST

/* map_max bounds the store's whole size: the map and the files. */
START_TEST(test_blob_map_max)
{
	const size_t n = 700 * 1024;
	uint8_t *buf = malloc(n);
	struct ent_arg ea = {0};
	store_session ss;
	uint8_t *p;
	size_t len;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_NEVER, 2 * MiB);
	mk_session(S, "s", 0, 1, &ss);
	ck_assert_int_eq(put_blob(ss.id, "a", buf, n, 1, NULL), 0);
	ck_assert_int_eq(put_blob(ss.id, "b", buf, n, 2, NULL), 0);
	ck_assert_int_eq(put_blob(ss.id, "c", buf, n, 3, NULL), STORE_E_FULL);
	ck_assert_int_eq(count_blob_files(), 2);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "c", 0, &p, &len),
	    STORE_E_NOTFOUND);
	/* the count survives a reopen */
	close_S();
	open_blob_S(STORE_SYNC_NEVER, 2 * MiB);
	ck_assert_int_eq(put_blob(ss.id, "c", buf, n, 3, NULL), STORE_E_FULL);
	/* deleting makes room */
	ea.sid = ss.id;
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = "a";
	ea.name_len = 1;
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), 0);
	ck_assert_int_eq(put_blob(ss.id, "c", buf, n, 3, NULL), 0);
	check_blob(ss.id, "b", n, 2);
	check_blob(ss.id, "c", n, 3);
	free(buf);
}
END_TEST

/* defer_unlink: dropped files wait for store_reap(), the next
 * store_write() or store_close(). */
START_TEST(test_blob_deferred_unlink)
{
	const size_t n = 5000;
	uint8_t *buf = malloc(n);
	store_options o = {0};
	struct ent_arg ea = {0};
	store_session ss;

	ck_assert_ptr_nonnull(buf);
	o.blob_min = BLOB_MIN_TEST;
	o.defer_unlink = 1;
	open_S(&o);
	mk_session(S, "s", 0, 1, &ss);
	ck_assert_int_eq(put_blob(ss.id, "x", buf, n, 1, NULL), 0);
	ck_assert_uint_eq(store_reap(S), 0);
	ck_assert_int_eq(put_blob(ss.id, "x", buf, n, 2, NULL), 0);
	ck_assert_int_eq(count_blob_files(), 2);
	/* the next write unlinks the waiting file before it starts */
	ck_assert_int_eq(put_blob(ss.id, "x", buf, n, 3, NULL), 0);
	ck_assert_int_eq(count_blob_files(), 2);
	check_blob(ss.id, "x", n, 3);
	ck_assert_uint_eq(store_reap(S), 1);
	ck_assert_int_eq(count_blob_files(), 1);
	check_blob(ss.id, "x", n, 3);
	/* deleted, then closed: the close unlinks it */
	ea.sid = ss.id;
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = "x";
	ea.name_len = 1;
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), 0);
	ck_assert_int_eq(count_blob_files(), 1);
	close_S();
	ck_assert_int_eq(count_blob_files(), 0);
	free(buf);
}
END_TEST

/* Collects blob names by global name (blob_walk). */
struct names_arg {
	uint8_t x[STORE_BLOB_NAME_SIZE], y[STORE_BLOB_NAME_SIZE];
};

static int
cb_blob_name(const uint8_t *sid, const store_key *k, const uint8_t *name,
             uint64_t size, void *a)
{
	struct names_arg *na = a;

	(void)sid;
	(void)size;
	if (k->name_len == 1 && k->name[0] == 'x')
		memcpy(na->x, name, STORE_BLOB_NAME_SIZE);
	if (k->name_len == 1 && k->name[0] == 'y')
		memcpy(na->y, name, STORE_BLOB_NAME_SIZE);
	return 0;
}

/* In a snapshot taken before: x is rebound by another process (its file
 * dropped), and y's file is removed by hand (damage). */
struct superseded_arg {
	const uint8_t *sid;
	int x_corrupt, y_corrupt, x_superseded, y_superseded;
};

static int
cb_superseded(store_txn *t, void *a)
{
	struct superseded_arg *sa = a;
	struct names_arg na;
	char path[PATH_MAX + 64], hex[2 * STORE_BLOB_NAME_SIZE + 1];
	store_key kx = {STORE_KIND_GLOBAL, "x", 1, 0, 0};
	store_key ky = {STORE_KIND_GLOBAL, "y", 1, 0, 0};
	store_record r;
	pid_t pid;

	memset(&na, 0, sizeof na);
	if (blob_walk(t, cb_blob_name, &na) != 0)
		return -1;
	pid = tu_fork();
	if (pid == 0) {
		store_options o = {0};
		uint8_t buf[5000];
		struct iovec iov = {buf, sizeof buf};
		struct ent_arg ea = {0};
		store *s;

		o.blob_min = BLOB_MIN_TEST;
		if (store_open(&s, db_dir, &o, NULL) != 0)
			_exit(10);
		memset(buf, 'n', sizeof buf);
		ea.sid = sa->sid;
		ea.in.kind = STORE_KIND_GLOBAL;
		ea.in.name = "x";
		ea.in.name_len = 1;
		ea.in.type_name = "bytes";
		ea.in.iov = &iov;
		ea.in.iovcnt = 1;
		if (store_write(s, cb_entry_put, &ea) != 0)
			_exit(11);
		store_close(s);
		store_hex(na.y, sizeof na.y, hex);
		snprintf(path, sizeof path, "%s/blobs/%s", db_dir, hex);
		_exit(unlink(path) == 0 ? 0 : 12);
	}
	if (pid < 0 || tu_wait(pid) != 0)
		return -2;
	sa->x_corrupt = entry_get(t, sa->sid, 'g', "x", 1, 0, &r);
	sa->y_corrupt = entry_get(t, sa->sid, 'g', "y", 1, 0, &r);
	sa->x_superseded = blob_superseded(t, sa->sid, &kx, na.x);
	sa->y_superseded = blob_superseded(t, sa->sid, &ky, na.y);
	return 0;
}

static int
cb_superseded_in_write(store_txn *t, void *a)
{
	store_key kx = {STORE_KIND_GLOBAL, "x", 1, 0, 0};
	uint8_t name[STORE_BLOB_NAME_SIZE] = {0};

	return blob_superseded(t, a, &kx, name);
}

START_TEST(test_blob_superseded)
{
	const size_t n = 5000;
	uint8_t *buf = malloc(n);
	struct superseded_arg sa = {0};
	store_session ss;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_NEVER, 0);
	mk_session(S, "s", 0, 1, &ss);
	ck_assert_int_eq(put_blob(ss.id, "x", buf, n, 1, NULL), 0);
	ck_assert_int_eq(put_blob(ss.id, "y", buf, n, 2, NULL), 0);
	sa.sid = ss.id;
	ck_assert_int_eq(store_read(S, cb_superseded, &sa), 0);
	ck_assert_int_eq(sa.x_corrupt, STORE_E_CORRUPT);
	ck_assert_int_eq(sa.y_corrupt, STORE_E_CORRUPT);
	ck_assert_int_eq(sa.x_superseded, 1);     /* rebound: not damage */
	ck_assert_int_eq(sa.y_superseded, 0);     /* still named: missing */
	ck_assert_int_eq(store_write(S, cb_superseded_in_write, ss.id),
	    STORE_E_INVAL);
	free(buf);
}
END_TEST

/* Drop the blobs database and stamp format 1: a store as format 1 made
 * it. */
static void
make_format1(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint8_t one[4] = {0, 0, 0, 1};

	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	ck_assert_int_eq(mdb_env_open(env, dir, 0, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "blobs", 0, &dbi), 0);
	ck_assert_int_eq(mdb_drop(txn, dbi, 1), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	raw_put_meta(dir, "format", one, 4);
}

/* The counts in sid's record equal a walk of its entries. */
static void
counts_match(const uint8_t *sid, uint64_t want_entries)
{
	struct count_arg ca = {sid, 0, 0};
	struct sess_arg sa = {0};

	sa.id = sid;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa), 0);
	ck_assert_int_eq(store_read(S, cb_count, &ca), 0);
	ck_assert(sa.ss.counts_known);
	ck_assert_uint_eq(ca.n, want_entries);
	ck_assert_uint_eq(sa.ss.entries, ca.n);
	ck_assert_uint_eq(sa.ss.bytes, ca.bytes);
}

/* Entries put, replaced (smaller, larger, into and out of a blob file),
 * put in order, deleted and purged: the session record's counts follow
 * in each commit, and a session_put caller cannot change them. */
START_TEST(test_session_counts)
{
	static const unsigned idx[] = {1, 2, 3, 4, 5};
	const size_t n = 3 * BLOB_MIN_TEST;
	uint8_t *buf = malloc(n);
	struct sorted_arg so = {0};
	struct ent_arg ea = {0};
	struct sess_arg sa = {0};
	store_session a, b;

	ck_assert_ptr_nonnull(buf);
	open_blob_S(STORE_SYNC_NEVER, 0);
	mk_session(S, "a", 0, 1, &a);
	mk_session(S, "b", 0, 1, &b);
	ck_assert(a.counts_known && a.entries == 0 && a.bytes == 0);
	counts_match(a.id, 0);
	memset(buf, 'x', n);
	ck_assert_int_eq(put_one(S, a.id, 'g', "x", 0, buf, 10), 0);
	counts_match(a.id, 1);
	ck_assert_int_eq(put_one(S, a.id, 'g', "x", 0, buf, 1000), 0);
	counts_match(a.id, 1);
	ck_assert_int_eq(put_one(S, a.id, 'g', "x", 0, buf, 3), 0);
	counts_match(a.id, 1);
	ck_assert_int_eq(put_one(S, a.id, 'h', NULL, 7, buf, 50), 0);
	counts_match(a.id, 2);
	ck_assert_int_eq(put_blob(a.id, "y", buf, n, 1, NULL), 0);
	counts_match(a.id, 3);
	ck_assert_int_eq(put_blob(a.id, "y", buf, n - 100, 2, NULL), 0);
	counts_match(a.id, 3);
	ck_assert_int_eq(put_one(S, a.id, 'g', "y", 0, buf, 20), 0);
	counts_match(a.id, 3);
	sorted_fill(&so, a.id, STORE_KIND_GLOBAL, "s%u", idx, 5, "one");
	ck_assert_int_eq(store_write(S, cb_put_sorted, &so), 0);
	counts_match(a.id, 8);
	ck_assert_int_eq(store_write(S, cb_put_sorted, &so), 0);
	counts_match(a.id, 8);
	sorted_free(&so);
	/* b's keys sort after a's or before: appended or not, its own */
	ck_assert_int_eq(put_one(S, b.id, 'g', "z", 0, buf, 5), 0);
	counts_match(b.id, 1);
	counts_match(a.id, 8);
	ea.sid = a.id;
	ea.kind = STORE_KIND_GLOBAL;
	ea.name = "x";
	ea.name_len = 1;
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), 0);
	counts_match(a.id, 7);
	ck_assert_int_eq(store_write(S, cb_entry_del, &ea), STORE_E_NOTFOUND);
	counts_match(a.id, 7);
	/* the caller's counts are not read */
	sa.id = a.id;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa), 0);
	sa.ss.entries = 12345;
	sa.ss.bytes = 1;
	sa.ss.counts_known = 0;
	ck_assert_int_eq(store_write(S, cb_session_put, &sa), 0);
	counts_match(a.id, 7);
	/* a purge in batches: a dead session's record follows until it
	 * goes */
	kill_session(S, a.id);
	counts_match(a.id, 7);
	ck_assert_int_eq(session_purge(S, a.id, 2, NULL), 0);
	sa.id = a.id;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa),
	    STORE_E_NOTFOUND);
	counts_match(b.id, 1);
	free(buf);
}
END_TEST

/* Rewrite the record of sid at dir as version 1 (no counts) and stamp
 * format 2: a session as pyshelf before the counts wrote it. */
static void
make_v1_record(const char *dir, const uint8_t *sid)
{
	uint8_t rec[80 + STORE_NAME_MAX], two[4] = {0, 0, 0, 2};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	size_t nlen;

	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	ck_assert_int_eq(mdb_env_open(env, dir, 0, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "sessions", 0, &dbi), 0);
	k.mv_data = (void *)sid;
	k.mv_size = STORE_ID_SIZE;
	ck_assert_int_eq(mdb_get(txn, dbi, &k, &v), 0);
	ck_assert_uint_ge(v.mv_size, 96);
	ck_assert_uint_eq(((uint8_t *)v.mv_data)[0], 2);
	nlen = v.mv_size - 96;
	memcpy(rec, v.mv_data, 80);
	memcpy(rec + 80, (uint8_t *)v.mv_data + 96, nlen);
	rec[0] = 1;
	v.mv_data = rec;
	v.mv_size = 80 + nlen;
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	raw_put_meta(dir, "format", two, 4);
}

static int
cb_list_one(const store_session *ss, void *arg)
{
	*(store_session *)arg = *ss;
	return 0;
}

static int
cb_session_list_one(store_txn *t, void *a)
{
	return session_list(t, cb_list_one, a);
}

/* A format 2 store's session records (version 1, no counts) list with
 * counts unknown on a read-only open; a writable open counts them once
 * and stamps format 3. */
START_TEST(test_session_counts_old_record)
{
	store_options ro = {0};
	store_session ss, got;
	uint8_t buf[100];
	uint32_t format;

	open_S(NULL);
	mk_session(S, "old", 0, 1, &ss);
	memset(buf, 'q', sizeof buf);
	ck_assert_int_eq(put_one(S, ss.id, 'g', "a", 0, buf, 10), 0);
	ck_assert_int_eq(put_one(S, ss.id, 'g', "b", 0, buf, 100), 0);
	close_S();
	make_v1_record(db_dir, ss.id);
	ro.readonly = 1;
	ck_assert_int_eq(store_open(&S, db_dir, &ro, NULL), 0);
	ck_assert_int_eq(store_meta(S, &format, NULL), 0);
	ck_assert_uint_eq(format, 2);
	memset(&got, 0xee, sizeof got);
	ck_assert_int_eq(store_read(S, cb_session_list_one, &got), 0);
	ck_assert_str_eq(got.name, "old");
	ck_assert_int_eq(got.counts_known, 0);
	ck_assert_uint_eq(got.entries, 0);
	close_S();
	open_S(NULL);
	ck_assert_int_eq(store_meta(S, &format, NULL), 0);
	ck_assert_uint_eq(format, STORE_FORMAT_VERSION);
	counts_match(ss.id, 2);
	ck_assert_int_eq(put_one(S, ss.id, 'g', "c", 0, buf, 1), 0);
	counts_match(ss.id, 3);
}
END_TEST

START_TEST(test_blob_format1_store)
{
	const size_t n = 5000;
	uint8_t *buf = malloc(n), *p;
	char blobs[PATH_MAX + 16];
	store_options ro = {0};
	store_session ss;
	uint32_t format;
	size_t len;

	ck_assert_ptr_nonnull(buf);
	/* a format 1 store: large values in the map, no blobs database */
	ro.blob_min = SIZE_MAX;
	open_S(&ro);
	mk_session(S, "s", 0, 1, &ss);
	pattern_fill(buf, n, 4);
	ck_assert_int_eq(put_one(S, ss.id, 'g', "old", 0, buf, n), 0);
	close_S();
	make_format1(db_dir);
	snprintf(blobs, sizeof blobs, "%s/blobs", db_dir);
	ck_assert_int_eq(rmdir(blobs), 0);
	/* read-only: opens as it is, reads, and writes nothing */
	ro.readonly = 1;
	ro.blob_min = 0;
	ck_assert_int_eq(store_open(&S, db_dir, &ro, NULL), 0);
	ck_assert_int_eq(store_meta(S, &format, NULL), 0);
	ck_assert_uint_eq(format, 1);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "old", 0, &p, &len), 0);
	ck_assert(len == n && pattern_ok(p, n, 4));
	free(p);
	close_S();
	ck_assert_int_eq(access(blobs, F_OK), -1);
	/* writable: migrated to this format, old values kept, files used */
	open_blob_S(STORE_SYNC_NEVER, 0);
	ck_assert_int_eq(store_meta(S, &format, NULL), 0);
	ck_assert_uint_eq(format, STORE_FORMAT_VERSION);
	ck_assert_int_eq(get_one(S, ss.id, 'g', "old", 0, &p, &len), 0);
	ck_assert(len == n && pattern_ok(p, n, 4));
	free(p);
	ck_assert_int_eq(put_blob(ss.id, "new", buf, n, 5, NULL), 0);
	ck_assert_int_eq(count_blob_files(), 1);
	check_blob(ss.id, "new", n, 5);
	free(buf);
}
END_TEST

/* --- Procs: several processes on one environment --------------------------- */

/* blob_min of the children's stores: by default large values stay in the
 * map (it must grow); the kill test with blob files lowers it. */
static size_t child_blob_min = SIZE_MAX;

/* Open the store at db_dir in a child; NULL on failure. */
static store *
child_open(size_t map_initial, enum store_sync sync)
{
	store_options o = {0};
	store *s;

	o.create = 1;
	o.map_initial = map_initial;
	o.sync = sync;
	o.blob_min = child_blob_min;
	return store_open(&s, db_dir, &o, NULL) == 0 ? s : NULL;
}

/* Block until the parent writes a byte to (or closes) fd. */
static void
child_wait_go(int fd)
{
	char c;

	(void)tu_read_full(fd, &c, 1);
}

/* Session name in s, created by whoever comes first; 0 or an error. */
static int
child_session(store *s, const char *name, store_session *out)
{
	struct sess_arg sa = {0};
	int rc;

	sa.name = name;
	sa.now = 1;
	rc = store_write(s, cb_session_get_or_create, &sa);
	*out = sa.ss;
	return rc;
}

/* Writer number w: 2000 entries into the shared session, 10 a commit. */
static int
child_writer(int w, int gofd)
{
	struct fill_arg fa = {NULL, 0, 10, 0, 0, 0, 0};
	store_session ss;
	store *s = child_open(0, STORE_SYNC_NEVER);
	uint64_t i;

	if (s == NULL)
		return 10;
	child_wait_go(gofd);
	if (child_session(s, "shared", &ss) != 0)
		return 11;
	fa.sid = ss.id;
	for (i = 0; i < 2000; i += 10) {
		fa.first = (uint64_t)w * 1000000 + i;
		if (store_write(s, cb_fill, &fa) != 0)
			return 12;
		if (store_read(s, cb_verify, &fa) != 0)
			return 13;
	}
	store_close(s);
	return 0;
}

START_TEST(test_two_writers)
{
	int go[2], w, code;
	pid_t pid[2];
	store_session ss;
	struct sess_arg sa = {0};

	ck_assert_int_eq(pipe(go), 0);
	for (w = 0; w < 2; w++) {              /* no store open here */
		pid[w] = tu_fork();
		ck_assert_int_ge(pid[w], 0);
		if (pid[w] == 0) {
			close(go[1]);
			_exit(child_writer(w, go[0]));
		}
	}
	close(go[0]);
	close(go[1]);                          /* both start now */
	for (w = 0; w < 2; w++) {
		code = tu_wait(pid[w]);
		ck_assert_msg(code == 0, "writer %d exited with %d", w, code);
	}
	open_S(NULL);
	sa.name = "shared";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ss = sa.ss;
	ck_assert_uint_eq(count_entries(S, ss.id), 4000);
	verify(S, ss.id, 0, 2000, 0, 0);
	verify(S, ss.id, 1000000, 2000, 0, 0);
}
END_TEST

/* Reads whether the grower has finished (its "done" global exists). */
static int
cb_grower_done(store_txn *t, void *a)
{
	store_session ss;
	store_record r;
	int rc = session_get_by_name(t, "grow", &ss);

	(void)a;
	if (rc != 0)
		return rc;
	return entry_get(t, ss.id, STORE_KIND_GLOBAL, "done", 4, 0, &r);
}

/* The grower: 64 values of 1 MiB from a 1 MiB map, one a commit. */
static int
child_grower(int gofd)
{
	store *s = child_open(MiB, STORE_SYNC_NEVER);
	store_session ss;
	uint8_t *buf = malloc(MiB);
	uint64_t i;

	if (s == NULL || buf == NULL)
		return 20;
	child_wait_go(gofd);
	if (child_session(s, "grow", &ss) != 0)
		return 21;
	for (i = 0; i < 64; i++) {
		if (put_big(s, ss.id, i, buf, MiB) != 0)
			return 22;
	}
	if (put_one(s, ss.id, 'g', "done", 0, "1", 1) != 0)
		return 23;
	store_close(s);
	free(buf);
	return 0;
}

/* The small writer: 5 entries a commit from a 1 MiB map until it has
 * written 2000 and seen the grower finish; reports its map size. */
static int
child_small_writer(int gofd, int outfd)
{
	struct fill_arg fa = {NULL, 0, 5, 0, 0, 0, 0};
	store *s = child_open(MiB, STORE_SYNC_NEVER);
	store_session ss;
	size_t map = 0;
	uint64_t i;
	int done = 0;

	if (s == NULL)
		return 30;
	child_wait_go(gofd);
	if (child_session(s, "small", &ss) != 0)
		return 31;
	fa.sid = ss.id;
	for (i = 0; !(done && i >= 2000); i += 5) {
		fa.first = i;
		if (store_write(s, cb_fill, &fa) != 0)
			return 32;
		if (store_read(s, cb_verify, &fa) != 0)
			return 33;
		done = store_read(s, cb_grower_done, NULL) == 0;
		if (i > 1000000)
			return 34;
	}
	if (store_usage(s, &map, NULL, NULL) != 0)
		return 35;
	if (tu_write_full(outfd, &i, sizeof i) != 0 ||
	    tu_write_full(outfd, &map, sizeof map) != 0)
		return 36;
	store_close(s);
	return 0;
}

/* One process grows the map while another writes: the writer must follow
 * the growth (MDB_MAP_RESIZED) and lose nothing. */
START_TEST(test_writer_and_grower)
{
	int go[2], out[2], code;
	pid_t grower, writer;
	struct sess_arg sa = {0};
	uint64_t written = 0;
	size_t map = 0;

	ck_assert_int_eq(pipe(go), 0);
	ck_assert_int_eq(pipe(out), 0);
	grower = tu_fork();
	ck_assert_int_ge(grower, 0);
	if (grower == 0) {
		close(go[1]);
		_exit(child_grower(go[0]));
	}
	writer = tu_fork();
	ck_assert_int_ge(writer, 0);
	if (writer == 0) {
		close(go[1]);
		close(out[0]);
		_exit(child_small_writer(go[0], out[1]));
	}
	close(go[0]);
	close(out[1]);
	close(go[1]);
	ck_assert_int_eq(tu_read_full(out[0], &written, sizeof written), 1);
	ck_assert_int_eq(tu_read_full(out[0], &map, sizeof map), 1);
	close(out[0]);
	code = tu_wait(grower);
	ck_assert_msg(code == 0, "grower exited with %d", code);
	code = tu_wait(writer);
	ck_assert_msg(code == 0, "writer exited with %d", code);
	/* The writer's map follows the grower's 64 MiB of data. */
	ck_assert_msg(map >= 64 * MiB, "writer's map stayed at %zu", map);

	open_S(NULL);
	sa.name = "grow";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_uint_eq(count_entries(S, sa.ss.id), 65);
	{
		uint64_t i;

		for (i = 0; i < 64; i++)
			check_big(S, sa.ss.id, i, MiB);
	}
	sa.name = "small";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_uint_eq(count_entries(S, sa.ss.id), written);
	verify(S, sa.ss.id, 0, written, 0, 0);
}
END_TEST

/* Argument of a thread of test_threads. */
struct thr_arg {
	const uint8_t *sid;      /* the session all threads write */
	int no;                  /* thread number */
	volatile int *stop;      /* readers: stop when set */
	int rc;                  /* 0, or what went wrong */
	uint64_t bad;            /* the value that failed */
};

#define THR_VALUES 120
#define THR_SIZE (64 * 1024)

/* Write THR_VALUES values of 64 KiB, one a commit, reading each back. */
static void *
thr_writer(void *a)
{
	struct thr_arg *ta = a;
	uint8_t *buf = malloc(THR_SIZE), *p;
	uint64_t i, h;
	size_t n;

	ta->rc = buf == NULL ? STORE_E_NOMEM : 0;
	for (i = 0; i < THR_VALUES && ta->rc == 0; i++) {
		h = (uint64_t)ta->no * 1000 + i;
		if ((ta->rc = put_big(S, ta->sid, h, buf, THR_SIZE)) != 0)
			break;
		if ((ta->rc = get_one(S, ta->sid, 'h', NULL, h, &p, &n)) != 0)
			break;
		if (n != THR_SIZE || !pattern_ok(p, n, seed_of(ta->sid, h)))
			ta->rc = STORE_E_CORRUPT;
		free(p);
	}
	if (ta->rc != 0)
		ta->bad = i;
	free(buf);
	return NULL;
}

/* Read the fixed entries 0..99 over and over until told to stop. */
static void *
thr_reader(void *a)
{
	struct thr_arg *ta = a;
	struct fill_arg fa = {ta->sid, 0, 100, 0, 0, 0, 0};

	while (!*ta->stop && ta->rc == 0)
		ta->rc = store_read(S, cb_verify, &fa);
	return NULL;
}

/* Threads of one process share a store while the map grows under them. */
START_TEST(test_threads)
{
	struct thr_arg ta[6];
	pthread_t th[6];
	store_options o = {0};
	store_session ss;
	volatile int stop = 0;
	size_t map;
	int i;

	o.map_initial = MiB;
	o.sync = STORE_SYNC_NEVER;
	open_S(&o);
	mk_session(S, "t", 0, 1, &ss);
	fill(S, ss.id, 0, 100, 0, 0);
	for (i = 0; i < 6; i++) {
		memset(&ta[i], 0, sizeof ta[i]);
		ta[i].sid = ss.id;
		ta[i].no = i + 1;
		ta[i].stop = &stop;
		ck_assert_int_eq(pthread_create(&th[i], NULL,
		    i < 4 ? thr_writer : thr_reader, &ta[i]), 0);
	}
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	stop = 1;
	for (i = 4; i < 6; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	for (i = 0; i < 6; i++)
		ck_assert_msg(ta[i].rc == 0, "thread %d: value %llu: %s", i,
		    (unsigned long long)ta[i].bad, store_strerror(ta[i].rc));
	ck_assert_int_eq(store_usage(S, &map, NULL, NULL), 0);
	ck_assert_uint_ge(map, 16 * MiB);
	ck_assert_uint_eq(count_entries(S, ss.id), 100 + 4 * THR_VALUES);
	for (i = 0; i < 4; i++) {
		uint64_t v;

		for (v = 0; v < THR_VALUES; v++)
			check_big(S, ss.id, (uint64_t)(i + 1) * 1000 + v,
			    THR_SIZE);
	}
	verify(S, ss.id, 0, 100, 0, 0);
}
END_TEST

/* Holds a read transaction for 3 ms. */
static int
cb_read_slowly(store_txn *t, void *a)
{
	struct timespec ts = {0, 3000000};

	(void)t;
	(void)a;
	nanosleep(&ts, NULL);
	return 0;
}

/* Keeps read transactions going, one after another, until told to stop. */
static void *
thr_slow_reader(void *a)
{
	struct thr_arg *ta = a;

	while (!*ta->stop && ta->rc == 0)
		ta->rc = store_read(S, cb_read_slowly, NULL);
	return NULL;
}

/* Growing the map needs every other transaction of the process out of the
 * way: readers that overlap one another without pause must not keep the
 * writer waiting for ever (the resize lock prefers its writer). */
START_TEST(test_grow_under_readers)
{
	struct thr_arg ta[3];
	pthread_t th[3];
	store_options o = {0};
	store_session ss;
	volatile int stop = 0;
	uint8_t *buf = malloc(MiB);
	uint64_t i, t0;
	int k;

	ck_assert_ptr_nonnull(buf);
	o.map_initial = MiB;
	o.sync = STORE_SYNC_NEVER;
	open_S(&o);
	mk_session(S, "r", 0, 1, &ss);
	for (k = 0; k < 3; k++) {
		memset(&ta[k], 0, sizeof ta[k]);
		ta[k].stop = &stop;
		ck_assert_int_eq(pthread_create(&th[k], NULL, thr_slow_reader,
		    &ta[k]), 0);
		nanosleep(&(struct timespec){0, 1000000}, NULL); /* stagger */
	}
	t0 = tu_mono_ms();
	for (i = 0; i < 24; i++)               /* 1 MiB grows to 32 MiB */
		ck_assert_int_eq(put_big(S, ss.id, i, buf, MiB), 0);
	stop = 1;
	for (k = 0; k < 3; k++) {
		ck_assert_int_eq(pthread_join(th[k], NULL), 0);
		ck_assert_int_eq(ta[k].rc, 0);
	}
	/* "for ever" is what this tells apart: a writer starved by the
	 * readers never finishes; a busy machine only makes it slow (the
	 * tcase's TU_TIMEOUT is the outer bound) */
	ck_assert_msg(tu_mono_ms() - t0 < 600000, "writes took %llu ms",
	    (unsigned long long)(tu_mono_ms() - t0));
	for (i = 0; i < 24; i++)
		check_big(S, ss.id, i, MiB);
	free(buf);
}
END_TEST

/* --- Crash: SIGKILL ------------------------------------------------------- */

/* Payload size of committed entry i in the kill test: mostly small, every
 * 50th on overflow pages. */
static size_t
commit_size(uint64_t i)
{
	return i % 50 == 0 ? 20000 + (size_t)(i % 1000) :
	    16 + (size_t)(i * 37 % 400);
}

/* Commit entries 0, 1, 2... one per transaction, reporting each number
 * after its commit; runs until killed. */
static int
child_committer(enum store_sync sync, int outfd)
{
	store *s = child_open(MiB, sync);
	store_session ss;
	uint8_t *buf = malloc(21000);
	uint32_t i;

	if (s == NULL || buf == NULL)
		return 40;
	if (child_session(s, "k", &ss) != 0)
		return 41;
	for (i = 0; i < 10000000; i++) {
		if (put_big(s, ss.id, i, buf, commit_size(i)) != 0)
			return 42;
		if (sync == STORE_SYNC_INTERVAL && i % 64 == 63 &&
		    store_sync(s) != 0)
			return 43;
		if (tu_write_full(outfd, &i, sizeof i) != 0)
			return 44;
	}
	return 45;
}

/* Kill a committer with SIGKILL after target commits (or a time limit);
 * every commit it reported reads back intact and the store works. */
static void
kill_committer(enum store_sync sync, uint32_t target)
{
	int out[2], code, r;
	pid_t pid;
	uint32_t got, next = 0;
	uint64_t t0, n;
	struct sess_arg sa = {0};

	ck_assert_int_eq(pipe(out), 0);
	pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(out[0]);
		_exit(child_committer(sync, out[1]));
	}
	close(out[1]);
	t0 = tu_mono_ms();
	while (next < target && tu_mono_ms() - t0 < 8000) {
		r = tu_read_full(out[0], &got, sizeof got);
		ck_assert_msg(r == 1, "committer died early (%d)", r);
		ck_assert_uint_eq(got, next);
		next++;
	}
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	while ((r = tu_read_full(out[0], &got, sizeof got)) == 1) {
		ck_assert_uint_eq(got, next);
		next++;
	}
	close(out[0]);
	code = tu_wait(pid);
	ck_assert_msg(code == 128 + SIGKILL, "committer ended with %d", code);
	ck_assert_uint_gt(next, 100);

	open_S(NULL);
	sa.name = "k";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	n = count_entries(S, sa.ss.id);
	/* All reported commits, and at most the one not yet reported. */
	ck_assert_msg(n == next || n == next + 1, "%llu entries, %u reported",
	    (unsigned long long)n, next);
	for (got = 0; got < n; got++)
		check_big(S, sa.ss.id, got, commit_size(got));
	ck_assert_int_eq(put_one(S, sa.ss.id, 'g', "after", 0, "ok", 2), 0);
	if (child_blob_min != SIZE_MAX) {
		/* every large one was a file; the open removed any file the
		 * kill left between writing it and its commit */
		int rows = 0;

		ck_assert_int_eq(store_read(S, cb_blob_walk, &rows), 0);
		ck_assert_int_eq(rows, (int)((n + 49) / 50));
		ck_assert_int_eq(count_blob_files(), rows);
	}
}

START_TEST(test_kill_during_commits_never)
{
	kill_committer(STORE_SYNC_NEVER, 3000);
}
END_TEST

START_TEST(test_kill_during_commits_interval)
{
	kill_committer(STORE_SYNC_INTERVAL, 3000);
}
END_TEST

START_TEST(test_kill_during_commits_always)
{
	kill_committer(STORE_SYNC_ALWAYS, 2000);
}
END_TEST

/* The same with every 50th value (20 KB) in a blob file. */
START_TEST(test_kill_during_commits_blobs)
{
	child_blob_min = 10000;
	kill_committer(STORE_SYNC_ALWAYS, 2000);
}
END_TEST

/* Commits nothing. */
static int
cb_nop(store_txn *t, void *a)
{
	(void)t;
	(void)a;
	return 0;
}

/*
 * Purge a session as session_purge does, one batch of 100 at a time:
 * report on fd once at least `first` entries are gone, go on purging
 * (the kill may land inside a batch) but stop short of `most`, then wait
 * to be killed.  So the parent's SIGKILL always finds a purge partway,
 * however slow the machine (a purge left to run freely could finish
 * before a loaded parent saw it start).
 */
static int
child_purger(const uint8_t *id, int outfd, size_t first, size_t most)
{
	store *s = child_open(0, STORE_SYNC_ALWAYS);
	size_t gone = 0, d;
	int finished = 0, told = 0;
	char c = 'p';

	if (s == NULL)
		return 50;
	while (gone + 100 <= most) {
		d = 0;
		if (session_purge_step(s, id, 100, 0, &d, &finished) != 0)
			return 52;
		if (finished)
			return 53;
		gone += d;
		if (!told && gone >= first) {
			if (tu_write_full(outfd, &c, 1) != 0)
				return 51;
			told = 1;
		}
	}
	for (;;)
		pause();
}

/* A purge killed partway finishes on the next run. */
START_TEST(test_purge_killed)
{
	const uint64_t n = 100000;
	store_session ss[3];
	struct sess_arg sa = {0};
	struct exp_arg *ea = calloc(1, sizeof *ea);
	int out[2], code;
	uint64_t left;
	size_t deleted = 0;
	pid_t pid;
	char c;

	ck_assert_ptr_nonnull(ea);
	open_S(NULL);
	mk_session(S, "n0", 0, 1, &ss[0]);
	mk_session(S, "n1", 0, 1, &ss[1]);
	mk_session(S, "n2", 3600000, store_now_ms(), &ss[2]);
	qsort(ss, 3, sizeof ss[0], cmp_session_id);
	fill(S, ss[0].id, 0, 1000, 0, 0);
	fill(S, ss[2].id, 0, 1000, 0, 0);
	fill(S, ss[1].id, 0, n, 0, 0);
	refs_fill_put(S, ss[0].id, 100, 1);
	refs_fill_put(S, ss[1].id, 100, 1);     /* deleted after the entries */
	kill_session(S, ss[1].id);
	close_S();                              /* none open across fork */

	ck_assert_int_eq(pipe(out), 0);
	pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(out[0]);
		_exit(child_purger(ss[1].id, out[1], n * 4 / 10, n * 9 / 10));
	}
	close(out[1]);
	/* 40 % gone: kill it while it goes on (it never passes 90 %) */
	ck_assert_int_eq(tu_read_full(out[0], &c, 1), 1);
	close(out[0]);
	open_S(NULL);          /* a store of our own, open across the kill */
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	code = tu_wait(pid);
	ck_assert_msg(code == 128 + SIGKILL, "purger ended with %d", code);
	/* A writer killed after writing its meta page but before publishing
	 * the new transaction id in the lock file leaves readers one commit
	 * behind until the next writer takes over its lock (LMDB's
	 * mdb_mutex_failed); an empty write does that. */
	ck_assert_int_eq(store_write(S, cb_nop, NULL), 0);
	left = count_entries(S, ss[1].id);
	ck_assert_msg(left >= n / 10 && left <= n * 6 / 10, "%llu left",
	    (unsigned long long)left);
	ck_assert_uint_eq(left % 100, 0);       /* whole batches only */

	/* The sweeper finds it first (dead: time 0) and finishes the job;
	 * our store was open during the kill (robust writer lock). */
	expired_at(ea, store_now_ms());
	ck_assert_int_eq(ea->n, 1);
	ck_assert_mem_eq(ea->id[0], ss[1].id, STORE_ID_SIZE);
	ck_assert_uint_eq(ea->when[0], 0);
	ck_assert_int_eq(session_purge(S, ss[1].id, 100, &deleted), 0);
	ck_assert_uint_eq(deleted, left);
	ck_assert_uint_eq(count_entries(S, ss[1].id), 0);
	ck_assert_int_eq(refs_any1(S, ss[1].id), 0);
	ck_assert_uint_eq(refs_fill_count(S, ss[0].id, 100, 1), 200);
	sa.id = ss[1].id;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa),
	    STORE_E_NOTFOUND);
	expired_at(ea, store_now_ms());
	ck_assert_int_eq(ea->n, 0);
	verify(S, ss[0].id, 0, 1000, 0, 0);
	verify(S, ss[2].id, 0, 1000, 0, 0);
	ck_assert_uint_eq(count_entries(S, ss[0].id), 1000);
	ck_assert_uint_eq(count_entries(S, ss[2].id), 1000);
	close_S();
	open_S(NULL);                           /* and it opens cleanly */
	verify(S, ss[2].id, 0, 1000, 0, 0);
	free(ea);
}
END_TEST

/* Holds a read transaction: reports on fd, then sleeps until killed. */
static int
cb_hold_read(store_txn *t, void *a)
{
	char c = 'r';

	(void)t;
	if (tu_write_full(*(int *)a, &c, 1) != 0)
		return 1;
	for (;;)
		pause();
	return 0;
}

/* A reader killed inside its transaction must not pin old pages forever:
 * with another process keeping the environment open, a later open clears
 * the dead reader, and rewriting a value reuses its freed pages. */
START_TEST(test_killed_reader_reclaimed)
{
	int rfd[2], hfd[2], go[2], code;
	pid_t reader, holder;
	store_session ss;
	struct sess_arg sa = {0};
	size_t used0, used1;
	uint8_t *buf = malloc(MiB);
	char c;
	int i;

	ck_assert_ptr_nonnull(buf);
	open_S(NULL);
	mk_session(S, "r", 0, 1, &ss);
	ck_assert_int_eq(put_big(S, ss.id, 0, buf, MiB), 0);
	close_S();
	free(buf);                   /* the children start with a clean heap */

	ck_assert_int_eq(pipe(rfd), 0);
	ck_assert_int_eq(pipe(hfd), 0);
	ck_assert_int_eq(pipe(go), 0);
	holder = tu_fork();
	ck_assert_int_ge(holder, 0);
	if (holder == 0) {                      /* keeps the lock table */
		store *s = child_open(0, STORE_SYNC_NEVER);
		close(go[1]);
		c = 'h';
		if (s == NULL || tu_write_full(hfd[1], &c, 1) != 0)
			_exit(60);
		child_wait_go(go[0]);
		store_close(s);
		_exit(0);
	}
	ck_assert_int_eq(tu_read_full(hfd[0], &c, 1), 1);
	reader = tu_fork();
	ck_assert_int_ge(reader, 0);
	if (reader == 0) {
		store *s = child_open(0, STORE_SYNC_NEVER);
		if (s == NULL)
			_exit(61);
		_exit(store_read(s, cb_hold_read, &rfd[1]) == 0 ? 0 : 62);
	}
	ck_assert_int_eq(tu_read_full(rfd[0], &c, 1), 1);
	ck_assert_int_eq(kill(reader, SIGKILL), 0);
	code = tu_wait(reader);
	ck_assert_int_eq(code, 128 + SIGKILL);

	buf = malloc(MiB);
	ck_assert_ptr_nonnull(buf);
	sa.name = "r";
	open_S(NULL);
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa), 0);
	ck_assert_int_eq(store_usage(S, NULL, &used0, NULL), 0);
	for (i = 1; i <= 40; i++)
		ck_assert_int_eq(put_big(S, ss.id, 0, buf, MiB), 0);
	ck_assert_int_eq(store_usage(S, NULL, &used1, NULL), 0);
	ck_assert_msg(used1 < used0 + 8 * MiB, "grew from %zu to %zu bytes",
	    used0, used1);
	check_big(S, ss.id, 0, MiB);
	close(go[1]);
	close(go[0]);
	code = tu_wait(holder);
	ck_assert_int_eq(code, 0);
	free(buf);
}
END_TEST

/* --- tombstones and session locks (issue 13) --------------------------------- */

/* Arguments of the tombstone callbacks. */
struct tomb_arg {
	const uint8_t *id;
	int why;
	uint64_t now;
	const char *name;
	store_tomb tb;
	store_tomb list[8];
	size_t n;
	size_t dropped;
};

static int
cb_session_end(store_txn *t, void *arg)
{
	struct tomb_arg *ta = arg;

	return session_end(t, ta->id, ta->why, ta->now, &ta->tb);
}

static int
cb_tomb_last(store_txn *t, void *arg)
{
	struct tomb_arg *ta = arg;

	return tomb_last(t, ta->name, &ta->tb);
}

static int
cb_tomb_one(const store_tomb *tb, void *arg)
{
	struct tomb_arg *ta = arg;

	ck_assert_uint_lt(ta->n, 8);
	ta->list[ta->n++] = *tb;
	return 0;
}

static int
cb_tomb_list(store_txn *t, void *arg)
{
	struct tomb_arg *ta = arg;

	ta->n = 0;
	return tomb_list(t, cb_tomb_one, ta);
}

static int
cb_tomb_sweep(store_txn *t, void *arg)
{
	struct tomb_arg *ta = arg;

	return tomb_sweep(t, ta->now, &ta->dropped);
}

/* The newest tombstone of name, or STORE_E_NOTFOUND. */
static int
last_tomb(const char *name, store_tomb *out)
{
	struct tomb_arg ta;
	int rc;

	memset(&ta, 0, sizeof ta);
	ta.name = name;
	rc = store_read(S, cb_tomb_last, &ta);
	*out = ta.tb;
	return rc;
}

static int
end_session(const uint8_t *id, int why, uint64_t now, store_tomb *out)
{
	struct tomb_arg ta;
	int rc;

	memset(&ta, 0, sizeof ta);
	ta.id = id;
	ta.why = why;
	ta.now = now;
	rc = store_write(S, cb_session_end, &ta);
	if (out != NULL)
		*out = ta.tb;
	return rc;
}

/* session_end counts, records and kills; tomb_last finds the newest of
 * exactly that name; tomb_list and tomb_sweep. */
START_TEST(test_tombstones)
{
	store_session a, a2, ab;
	struct sess_arg sa = {0};
	struct tomb_arg ta;
	struct count_arg ca;
	store_tomb tb, tb2;

	memset(&ta, 0, sizeof ta);
	mk_session(S, "alpha", 1000, 50, &a);
	fill(S, a.id, 0, 3, STORE_KIND_GLOBAL, 100);
	ca.sid = a.id;
	ck_assert_int_eq(store_read(S, cb_count, &ca), 0);
	ck_assert_int_eq(last_tomb("alpha", &tb), STORE_E_NOTFOUND);
	ck_assert_int_eq(end_session(a.id, 0, 5000, NULL), STORE_E_INVAL);
	ck_assert_int_eq(end_session(a.id, STORE_END_EXPIRED, 5000, &tb), 0);
	ck_assert_str_eq(tb.name, "alpha");
	ck_assert_mem_eq(tb.id, a.id, STORE_ID_SIZE);
	ck_assert_uint_eq(tb.why, STORE_END_EXPIRED);
	ck_assert_uint_eq(tb.ended_ms, 5000);
	ck_assert_uint_eq(tb.created_ms, 50);
	ck_assert_uint_eq(tb.last_seen_ms, 50);
	ck_assert_uint_eq(tb.lease_ms, 1000);
	ck_assert_uint_eq(tb.entries, 3);
	ck_assert_uint_eq(tb.bytes, ca.bytes);
	ck_assert_uint_gt(tb.bytes, 300);
	/* killed: dead, name free; a second end writes no second one */
	sa.id = a.id;
	ck_assert_int_eq(store_read(S, cb_session_by_id, &sa), 0);
	ck_assert_uint_eq(sa.ss.state, STORE_STATE_DEAD);
	ck_assert_int_eq(end_session(a.id, STORE_END_CLOSED, 5500, NULL),
	    STORE_E_DEAD);
	ck_assert_int_eq(last_tomb("alpha", &tb2), 0);
	ck_assert_mem_eq(&tb2, &tb, sizeof tb);
	ck_assert_str_eq(tomb_why_name(tb2.why), "expired");
	/* the name again, ended later: the newest wins */
	mk_session(S, "alpha", 0, 5600, &a2);
	ck_assert_int_eq(end_session(a2.id, STORE_END_CLOSED, 6000, NULL), 0);
	ck_assert_int_eq(last_tomb("alpha", &tb2), 0);
	ck_assert_uint_eq(tb2.ended_ms, 6000);
	ck_assert_uint_eq(tb2.why, STORE_END_CLOSED);
	ck_assert_uint_eq(tb2.entries, 0);
	ck_assert_mem_eq(tb2.id, a2.id, STORE_ID_SIZE);
	/* names that extend or cut it are not it */
	mk_session(S, "alphabet", 0, 1, &ab);
	ck_assert_int_eq(end_session(ab.id, STORE_END_REPLACED, 9000, NULL), 0);
	ck_assert_int_eq(last_tomb("alpha", &tb2), 0);
	ck_assert_uint_eq(tb2.ended_ms, 6000);
	ck_assert_int_eq(last_tomb("alph", &tb2), STORE_E_NOTFOUND);
	ck_assert_int_eq(last_tomb("alphabet", &tb2), 0);
	ck_assert_str_eq(tomb_why_name(tb2.why), "replaced");
	ck_assert_int_eq(last_tomb("", &tb2), STORE_E_INVAL);
	/* by name, then oldest first */
	ck_assert_int_eq(store_read(S, cb_tomb_list, &ta), 0);
	ck_assert_uint_eq(ta.n, 3);
	ck_assert_uint_eq(ta.list[0].ended_ms, 5000);
	ck_assert_uint_eq(ta.list[1].ended_ms, 6000);
	ck_assert_str_eq(ta.list[2].name, "alphabet");
	/* a sweep drops those that ended before its time */
	ta.now = 6000;
	ck_assert_int_eq(store_read(S, cb_tomb_sweep, &ta), STORE_E_READONLY);
	ck_assert_int_eq(store_write(S, cb_tomb_sweep, &ta), 0);
	ck_assert_uint_eq(ta.dropped, 1);
	ck_assert_int_eq(store_read(S, cb_tomb_list, &ta), 0);
	ck_assert_uint_eq(ta.n, 2);
	ck_assert_uint_eq(ta.list[0].ended_ms, 6000);
	ta.now = UINT64_MAX;
	ck_assert_int_eq(store_write(S, cb_tomb_sweep, &ta), 0);
	ck_assert_uint_eq(ta.dropped, 2);
	ck_assert_int_eq(last_tomb("alpha", &tb2), STORE_E_NOTFOUND);
	/* the tombstones survive a reopen, read-only too */
	mk_session(S, "z", 0, 1, &a);
	ck_assert_int_eq(end_session(a.id, STORE_END_CLOSED, 7, NULL), 0);
	close_S();
	{
		store_options o = {0};
		o.readonly = 1;
		open_S(&o);
	}
	ck_assert_int_eq(last_tomb("z", &tb2), 0);
	ck_assert_uint_eq(tb2.ended_ms, 7);
}
END_TEST

static int
cb_create_id(store_txn *t, void *arg)
{
	struct sess_arg *sa = arg;

	return session_create_id(t, sa->name, sa->id, NULL, 0, 1, &sa->ss);
}

/* session_create_id takes the id it is given, never a taken one. */
START_TEST(test_session_create_id)
{
	struct sess_arg sa = {0};
	uint8_t id[STORE_ID_SIZE];

	memset(id, 0xab, sizeof id);
	sa.name = "given";
	sa.id = id;
	ck_assert_int_eq(store_write(S, cb_create_id, &sa), 0);
	ck_assert_mem_eq(sa.ss.id, id, STORE_ID_SIZE);
	ck_assert_int_eq(store_write(S, cb_create_id, &sa), STORE_E_EXISTS);
	sa.name = "other";         /* the id is taken */
	ck_assert_int_eq(store_write(S, cb_create_id, &sa), STORE_E_EXISTS);
	kill_session(S, id);       /* also once dead: ids are never reused */
	ck_assert_int_eq(store_write(S, cb_create_id, &sa), STORE_E_EXISTS);
	sa.name = "given";
	ck_assert_int_eq(store_read(S, cb_session_by_name, &sa),
	    STORE_E_NOTFOUND);
}
END_TEST

/* Who holds a session is known by its lock: exclusive or shared, dropped
 * by the kernel when the holder dies, kept when a forked child exits. */
START_TEST(test_session_lock)
{
	uint8_t id[STORE_ID_SIZE];
	long holder = -1;
	int fd, fd2, fd3, p[2], st;
	pid_t pid;
	char c;

	memset(id, 0x5a, sizeof id);
	ck_assert_int_eq(session_locked(S, id, &holder), 0);  /* no file */
	ck_assert_int_eq(holder, 0);
	ck_assert_int_eq(session_lock(S, id, 0, &fd, &holder), 0);
	ck_assert_int_ge(fd, 0);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* another open file description of this very process conflicts */
	ck_assert_int_eq(session_locked(S, id, &holder), 1);
	ck_assert_int_eq(holder, getpid());
	ck_assert_int_eq(session_lock(S, id, 0, &fd2, &holder), STORE_E_BUSY);
	ck_assert_int_eq(fd2, -1);
	ck_assert_int_eq(holder, getpid());
	ck_assert_int_eq(session_lock(S, id, 1, &fd2, NULL), STORE_E_BUSY);
	/* a forked child's exit does not drop it */
	pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_int_eq(session_locked(S, id, NULL), 1);
	session_unlock(fd);
	ck_assert_int_eq(session_locked(S, id, NULL), 0);
	/* readers share; a writer waits for all of them */
	ck_assert_int_eq(session_lock(S, id, 1, &fd, NULL), 0);
	ck_assert_int_eq(session_lock(S, id, 1, &fd2, NULL), 0);
	ck_assert_int_eq(session_lock(S, id, 0, &fd3, NULL), STORE_E_BUSY);
	session_unlock(fd);
	ck_assert_int_eq(session_lock(S, id, 0, &fd3, NULL), STORE_E_BUSY);
	session_unlock(fd2);
	ck_assert_int_eq(session_locked(S, id, NULL), 0);
	/* a holder that dies, by SIGKILL, lets go */
	ck_assert_int_eq(pipe(p), 0);
	pid = tu_fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(p[0]);
		if (session_lock(S, id, 0, &fd, NULL) != 0)
			_exit(1);
		if (write(p[1], "k", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	ck_assert_int_eq(tu_read_full(p[0], &c, 1), 1);
	close(p[0]);
	ck_assert_int_eq(session_locked(S, id, &holder), 1);
	ck_assert_int_eq(holder, pid);
	ck_assert_int_eq(session_lock(S, id, 0, &fd, &holder), STORE_E_BUSY);
	ck_assert_int_eq(holder, pid);
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_int_eq(session_locked(S, id, NULL), 0);
	ck_assert_int_eq(session_lock(S, id, 0, &fd, NULL), 0);
	/* the file goes with the session; the lock held stays held */
	ck_assert_int_eq(session_lock_remove(S, id), 0);
	ck_assert_int_eq(session_locked(S, id, NULL), 0);
	ck_assert_int_eq(session_lock_remove(S, id), 0);
	session_unlock(fd);
	session_unlock(-1);
}
END_TEST

/* --- damaged pages (issue 14) ------------------------------------------ */

/* Read the whole of data.mdb into a malloc'd buffer. */
static uint8_t *
damage_read(size_t *n)
{
	char path[PATH_MAX + 32];
	struct stat st;
	uint8_t *p;
	FILE *f;

	snprintf(path, sizeof path, "%s/data.mdb", db_dir);
	ck_assert_int_eq(stat(path, &st), 0);
	*n = (size_t)st.st_size;
	ck_assert_ptr_nonnull(p = malloc(*n));
	ck_assert_ptr_nonnull(f = fopen(path, "rb"));
	ck_assert_uint_eq(fread(p, 1, *n, f), *n);
	fclose(f);
	return p;
}

static void
damage_write(const uint8_t *p, size_t n)
{
	char path[PATH_MAX + 32];
	FILE *f;

	snprintf(path, sizeof path, "%s/data.mdb", db_dir);
	ck_assert_ptr_nonnull(f = fopen(path, "r+b"));
	ck_assert_uint_eq(fwrite(p, 1, n, f), n);
	fclose(f);
}

static int
cb_walk_visit(const uint8_t *sid, const store_key *k, const uint8_t *val,
              size_t len, void *arg)
{
	store_record r;

	(void)sid;
	(void)k;
	(void)arg;
	return record_decode(val, len, &r) == 0 ? 0 : 1;
}

static int
cb_walk_count(store_txn *t, void *a)
{
	(void)a;
	return entry_walk(t, cb_walk_visit, NULL);
}

/* A leaf node whose value length runs past the end of the file (every
 * copy of it: pages copied on write keep stale ones): a read-only open
 * reads the other entries and gets STORE_E_CORRUPT for this one (once
 * SIGBUS in record_digest); the structural check names it; a writable
 * open refuses the store and writes nothing. */
START_TEST(test_value_past_the_file)
{
	store_options ro = {0};
	store_session ss;
	uint8_t key[STORE_ID_SIZE + 2], *raw, *again, *out;
	char *cause = NULL;
	size_t n, n2, i, hits = 0, len;
	int rc;

	open_S(NULL);
	mk_session(S, "s", 0, 1, &ss);
	ck_assert_int_eq(put_one(S, ss.id, STORE_KIND_GLOBAL, "a", 0, "A", 1), 0);
	ck_assert_int_eq(put_one(S, ss.id, STORE_KIND_GLOBAL, "n", 0,
	    "value of n", 10), 0);
	close_S();
	raw = damage_read(&n);
	memcpy(key, ss.id, STORE_ID_SIZE);
	key[STORE_ID_SIZE] = STORE_KIND_GLOBAL;
	key[STORE_ID_SIZE + 1] = 'n';
	for (i = 8; i + sizeof key <= n; i++)
		if (memcmp(raw + i, key, sizeof key) == 0 &&
		    raw[i - 2] == sizeof key && raw[i - 1] == 0) {
			/* mn_lo, mn_hi: a data size of 0x7ff0ffff */
			memcpy(raw + i - 8, "\xff\xff\xf0\x7f", 4);
			hits++;
		}
	ck_assert_uint_gt(hits, 0);
	damage_write(raw, n);

	ro.readonly = 1;
	rc = store_open(&S, db_dir, &ro, NULL);
	ck_assert_int_eq(rc, 0);
	rc = get_one(S, ss.id, STORE_KIND_GLOBAL, "n", 0, &out, &len);
	ck_assert_int_eq(rc, STORE_E_CORRUPT);
	rc = get_one(S, ss.id, STORE_KIND_GLOBAL, "a", 0, &out, &len);
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(len, 1);
	free(out);
	ck_assert_int_eq(store_read(S, cb_walk_count, NULL), STORE_E_CORRUPT);
	close_S();

	ck_assert_int_gt(store_check_structure(db_dir, STORE_CHECK_BUDGET,
	    NULL, NULL), 0);
	rc = store_open(&S, db_dir, &(store_options){0}, &cause);
	ck_assert_int_eq(rc, STORE_E_DAMAGED);
	ck_assert_ptr_null(S);
	ck_assert_ptr_nonnull(cause);
	ck_assert_ptr_nonnull(strstr(cause, "pyshelf-dump --check"));
	ck_assert_ptr_nonnull(strstr(store_strerror(rc), "damaged"));
	free(cause);
	again = damage_read(&n2);
	ck_assert(n2 == n && memcmp(raw, again, n) == 0);   /* not written */
	free(again);
	free(raw);
}
END_TEST

/* A sound store passes the structural check, whatever its size; a
 * damaged meta page or page header does not. */
START_TEST(test_structure_check)
{
	store_session ss;
	uint8_t *raw;
	size_t n;
	char name[32];
	int i;

	open_S(NULL);
	mk_session(S, "s", 0, 1, &ss);
	for (i = 0; i < 3000; i++) {
		snprintf(name, sizeof name, "g%05d", i);
		ck_assert_int_eq(put_one(S, ss.id, STORE_KIND_GLOBAL, name, 0,
		    name, strlen(name)), 0);
	}
	close_S();
	ck_assert_int_eq(store_check_structure(db_dir, STORE_CHECK_BUDGET,
	    NULL, NULL), 0);
	ck_assert_int_eq(store_check_structure(db_dir, 1u << 20, NULL, NULL),
	    0);
	open_S(NULL);                  /* a sound store opens for writing */
	close_S();
	raw = damage_read(&n);
	for (i = 2; (size_t)i < n / 4096; i++)
		raw[(size_t)i * 4096 + 10] ^= 0x40;  /* every page's flags */
	damage_write(raw, n);
	ck_assert_int_gt(store_check_structure(db_dir, 1u << 20, NULL, NULL),
	    0);
	for (i = 2; (size_t)i < n / 4096; i++)
		raw[(size_t)i * 4096 + 10] ^= 0x40;
	raw[16] ^= 0xff;               /* meta page 0's magic */
	raw[4096 + 16] ^= 0xff;        /* and meta page 1's */
	damage_write(raw, n);
	ck_assert_int_gt(store_check_structure(db_dir, STORE_CHECK_BUDGET,
	    NULL, NULL), 0);
	free(raw);
}
END_TEST

/* --- suite ----------------------------------------------------------------- */

/* --- the refs blob codec and the payload digest (refs.c, record.c) ----- */

/* One reference of a blob, as the test expects to read it back. */
struct exp_ref {
	uint8_t kind;
	const char *name;        /* kind 'g' */
	size_t name_len;
	uint64_t handle;         /* kind 'h' */
};

/* The layout of docs/STORAGE.md, built by hand: encoder and parser must
 * agree with it, not only with each other. */
START_TEST(test_refs_blob_roundtrip)
{
	static char longest[STORE_KEY_MAX];
	const struct exp_ref want[] = {
		{'g', "x", 1, 0},
		{'h', NULL, 0, 0},
		{'h', NULL, 0, UINT64_MAX},
		{'g', "caf\xc3\xa9_\xf0\x9f\x90\x8d", 10, 0}, /* é and a snake */
		{'g', longest, STORE_KEY_MAX, 0},
		{'h', NULL, 0, 0x0102030405060708ull},
	};
	size_t n = sizeof want / sizeof want[0], i, off = 0, o;
	store_refs_buf b = {0};
	store_key k, rk;
	const char *why = "untouched";
	uint8_t *exp;
	int rc;

	memset(longest, 'n', sizeof longest);
	ck_assert_ptr_nonnull(exp = malloc(4096));
	for (i = 0, o = 0; i < n; i++) {
		memset(&k, 0, sizeof k);
		k.kind = want[i].kind;
		k.name = want[i].name;
		k.name_len = want[i].name_len;
		k.handle = want[i].handle;
		ck_assert_int_eq(refs_blob_add(&b, &k), 0);
		exp[o++] = want[i].kind;
		if (want[i].kind == 'h') {
			int j;

			exp[o++] = 0;
			exp[o++] = 8;
			for (j = 7; j >= 0; j--)
				exp[o++] = (uint8_t)(want[i].handle >> (8 * j));
		} else {
			exp[o++] = (uint8_t)(want[i].name_len >> 8);
			exp[o++] = (uint8_t)want[i].name_len;
			memcpy(exp + o, want[i].name, want[i].name_len);
			o += want[i].name_len;
		}
	}
	ck_assert_uint_eq(b.len, o);
	ck_assert_mem_eq(b.p, exp, o);
	for (i = 0; (rc = refs_blob_next(b.p, b.len, &off, &rk, &why)) == 1;
	    i++) {
		ck_assert_uint_lt(i, n);
		ck_assert_uint_eq(rk.kind, want[i].kind);
		ck_assert_uint_eq(rk.value_len, 0);
		if (want[i].kind == 'h') {
			ck_assert_uint_eq(rk.handle, want[i].handle);
			ck_assert_ptr_null(rk.name);
		} else {
			ck_assert_uint_eq(rk.name_len, want[i].name_len);
			/* borrowed from the blob, not copied */
			ck_assert(rk.name > (const char *)b.p &&
			    rk.name < (const char *)b.p + b.len);
			ck_assert_mem_eq(rk.name, want[i].name, rk.name_len);
		}
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(i, n);
	ck_assert_uint_eq(off, b.len);
	ck_assert_str_eq(why, "untouched");
	/* the end stays the end */
	ck_assert_int_eq(refs_blob_next(b.p, b.len, &off, &rk, &why), 0);
	/* an empty blob has no reference; NULL is an empty blob */
	off = 0;
	ck_assert_int_eq(refs_blob_next(NULL, 0, &off, &rk, &why), 0);
	/* the record test's sample blob: handle 9 */
	off = 0;
	ck_assert_int_eq(refs_blob_next(sample_refs, sizeof sample_refs, &off,
	    &rk, &why), 1);
	ck_assert_uint_eq(rk.kind, 'h');
	ck_assert_uint_eq(rk.handle, 9);
	refs_blob_free(&b);
	ck_assert_ptr_null(b.p);
	ck_assert_uint_eq(b.len + b.cap, 0);
	free(exp);
}
END_TEST

/* A name over the store's key limit is refused, so the 16-bit length can
 * never wrap (a 65,537-byte name would have been written as 1 byte); so is
 * an empty name, one that is not UTF-8, and an unknown kind.  A refused
 * reference leaves the blob as it was. */
START_TEST(test_refs_blob_key_limit)
{
	static char big[65537];
	const struct { const char *name; size_t len; } bad[] = {
		{big, STORE_KEY_MAX + 1},
		{big, 65536},            /* length field would read 0 */
		{big, 65537},            /* ... and 1 */
		{"", 0},
		{"a\xff", 2},            /* not UTF-8 */
		{"\xc0\xaf", 2},         /* overlong '/' */
		{"\xed\xa0\x80", 3},     /* a surrogate */
		{"\xe2\x82", 2},         /* cut short */
	};
	store_refs_buf b = {0};
	store_key k = {0};
	size_t i, len;

	memset(big, 'a', sizeof big);
	k.kind = STORE_KIND_GLOBAL;
	k.name = "ok";
	k.name_len = 2;
	ck_assert_int_eq(refs_blob_add(&b, &k), 0);
	len = b.len;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		k.name = bad[i].name;
		k.name_len = bad[i].len;
		ck_assert_msg(refs_blob_add(&b, &k) == STORE_E_KEY,
		    "name %zu (%zu bytes) accepted", i, bad[i].len);
		ck_assert_uint_eq(b.len, len);
	}
	k.kind = 'x';
	k.name = "ok";
	k.name_len = 2;
	ck_assert_int_eq(refs_blob_add(&b, &k), STORE_E_INVAL);
	k.kind = 0;
	ck_assert_int_eq(refs_blob_add(&b, &k), STORE_E_INVAL);
	ck_assert_uint_eq(b.len, len);
	ck_assert_mem_eq(b.p, "g\0\2ok", 5);
	/* exactly at the limit is fine */
	k.kind = STORE_KIND_GLOBAL;
	k.name = big;
	k.name_len = STORE_KEY_MAX;
	ck_assert_int_eq(refs_blob_add(&b, &k), 0);
	ck_assert_uint_eq(b.len, len + 3 + STORE_KEY_MAX);
	ck_assert_str_ne(store_strerror(STORE_E_KEY),
	    store_strerror(STORE_E_INVAL));
	refs_blob_free(&b);
}
END_TEST

/* Every way a stored blob can be damaged: the parser stops at the bad
 * reference (off left there, after the good ones) with its sentence, and
 * never reads past the blob (each case is copied into a buffer of its own
 * size, for ASan and valgrind). */
START_TEST(test_refs_blob_damaged)
{
	static uint8_t toolong[3 + STORE_KEY_MAX + 1] = {'g',
	    (STORE_KEY_MAX + 1) >> 8, (STORE_KEY_MAX + 1) & 0xff};
	static const struct {
		const uint8_t *p;
		size_t n;
		const char *why;
	} cases[] = {
		{(const uint8_t *)"g", 1,
		    "refs blob ends inside a reference's header"},
		{(const uint8_t *)"g\0", 2,
		    "refs blob ends inside a reference's header"},
		{(const uint8_t *)"g\0\4abc", 6,
		    "a reference's key runs past the refs blob"},
		{(const uint8_t *)"h\0\10\0\0\0\0\0\0\0", 10,
		    "a reference's key runs past the refs blob"},
		{(const uint8_t *)"g\377\377a", 4,
		    "a reference's key runs past the refs blob"},
		{(const uint8_t *)"x\0\1a", 4,
		    "a reference of unknown kind (not 'g' or 'h')"},
		{(const uint8_t *)"\0\0\0", 3,
		    "a reference of unknown kind (not 'g' or 'h')"},
		{(const uint8_t *)"g\0\0", 3,
		    "a global reference with an empty or too long name"},
		{toolong, sizeof toolong,
		    "a global reference with an empty or too long name"},
		{(const uint8_t *)"h\0\0", 3,
		    "a handle reference whose id is not 8 bytes"},
		{(const uint8_t *)"h\0\7\0\0\0\0\0\0\0", 10,
		    "a handle reference whose id is not 8 bytes"},
		{(const uint8_t *)"g\0\2\303(", 5,
		    "a global reference whose name is not UTF-8"},
		{(const uint8_t *)"g\0\3\355\240\200", 6,
		    "a global reference whose name is not UTF-8"},
	};
	const uint8_t good[] = {'g', 0, 1, 'a', 'h', 0, 8, 0, 0, 0, 0, 0, 0,
	    0, 5};
	size_t i;

	memset(toolong + 3, 'a', STORE_KEY_MAX + 1);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t n = sizeof good + cases[i].n, off = 0;
		uint8_t *p = malloc(n);
		const char *why = NULL;
		store_key rk;
		int rc, seen = 0;

		ck_assert_ptr_nonnull(p);
		memcpy(p, good, sizeof good);
		memcpy(p + sizeof good, cases[i].p, cases[i].n);
		while ((rc = refs_blob_next(p, n, &off, &rk, &why)) == 1)
			seen++;
		ck_assert_msg(rc == STORE_E_CORRUPT, "case %zu: rc %d", i, rc);
		ck_assert_int_eq(seen, 2);
		ck_assert_uint_eq(off, sizeof good);
		ck_assert_ptr_nonnull(why);
		ck_assert_str_eq(why, cases[i].why);
		/* asked again, the same answer at the same place */
		ck_assert_int_eq(refs_blob_next(p, n, &off, &rk, &why),
		    STORE_E_CORRUPT);
		ck_assert_uint_eq(off, sizeof good);
		free(p);
	}
	/* a good blob cut anywhere inside a reference is damaged */
	for (i = 1; i < sizeof good; i++) {
		size_t off = 0;
		const char *why = NULL;
		uint8_t *p = malloc(i);
		store_key rk;
		int rc;

		ck_assert_ptr_nonnull(p);
		memcpy(p, good, i);
		while ((rc = refs_blob_next(p, i, &off, &rk, &why)) == 1)
			;
		ck_assert_int_eq(rc, i == 4 ? 0 : STORE_E_CORRUPT);
		free(p);
	}
}
END_TEST

/* record_payload_digest is XXH3-128 of payload, flags, refs (computed
 * here independently), however the payload is cut, small (one shot) or
 * large (streamed). */
START_TEST(test_payload_digest_fn)
{
	static const size_t sizes[] = {0, 1, 100, 498, 499, 500, 4096, 70001};
	uint8_t *buf = malloc(70001), d1[16], d2[16], d3[16];
	size_t i;

	ck_assert_ptr_nonnull(buf);
	pattern_fill(buf, 70001, 5);
	for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i];
		struct iovec iov[3];
		store_entry_in in = {0};

		iov[0].iov_base = buf;
		iov[0].iov_len = n / 3;
		iov[1].iov_base = buf + n / 3;
		iov[1].iov_len = 0;
		iov[2].iov_base = buf + n / 3;
		iov[2].iov_len = n - n / 3;
		in.flags = (uint16_t)(0x0102 + i);
		in.refs = sample_refs;
		in.refs_len = sizeof sample_refs;
		in.iov = iov;
		in.iovcnt = 3;
		record_payload_digest(buf, n, NULL, 0, in.flags, sample_refs,
		    sizeof sample_refs, d1);
		check_payload_digest(&in, d1);
		record_payload_digest(NULL, 0, iov, 3, in.flags, sample_refs,
		    sizeof sample_refs, d2);
		ck_assert_mem_eq(d1, d2, 16);
		record_payload_digest(buf, n / 3, iov + 1, 2, in.flags,
		    sample_refs, sizeof sample_refs, d3);
		ck_assert_mem_eq(d1, d3, 16);
		/* the flags and the refs count */
		record_payload_digest(buf, n, NULL, 0, in.flags ^ 1,
		    sample_refs, sizeof sample_refs, d2);
		ck_assert(memcmp(d1, d2, 16) != 0);
		record_payload_digest(buf, n, NULL, 0, in.flags, sample_refs,
		    sizeof sample_refs - 1, d2);
		ck_assert(memcmp(d1, d2, 16) != 0);
	}
	free(buf);
}
END_TEST

/* The digest a put stamps (payload_digest) is record_payload_digest's,
 * for a record in the map, a large one in the map (the copy's fused pass)
 * and one in a blob file (the write's pass). */
START_TEST(test_payload_digest_stamped)
{
	static const size_t sizes[] = {20, 700, (1u << 20) + 5, 3u << 20};
	const size_t nmax = 3u << 20;
	uint8_t *buf = malloc(nmax), pd[16], d[16];
	store_options o = {0};
	store_session ss;
	size_t i;
	int blob;

	ck_assert_ptr_nonnull(buf);
	for (blob = 0; blob < 2; blob++) {
		o.blob_min = blob ? 4096 : SIZE_MAX;
		open_S(&o);
		mk_session(S, "d", 0, 1, &ss);
		for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			struct iovec iov[3];
			size_t n = sizes[i];

			memset(pd, 0, sizeof pd);
			ck_assert_int_eq(put_blob(ss.id, "v", buf, n, i, pd), 0);
			ck_assert_int_eq(count_blob_files(),
			    blob && n >= 4096 ? 1 : 0);
			iov[0].iov_base = buf;
			iov[0].iov_len = 7;
			iov[1].iov_base = buf + 7;
			iov[1].iov_len = n - 7;
			record_payload_digest(NULL, 0, iov, 2, STORE_FLAG_OOB,
			    sample_refs, sizeof sample_refs, d);
			ck_assert_mem_eq(pd, d, 16);
			record_payload_digest(buf, n, NULL, 0, STORE_FLAG_OOB,
			    sample_refs, sizeof sample_refs, d);
			ck_assert_mem_eq(pd, d, 16);
			check_blob(ss.id, "v", n, i);
		}
		close_S();
		tu_rmtree(db_dir);
	}
	free(buf);
}
END_TEST

/* A tcase of fixture setup (store open or just a directory), with the
 * shared timeout (TU_TIMEOUT: far above what any test takes loaded). */

/* --- the calls database (issue 16: the call journal) --------------------- */

/* A call of session sid with id byte i, started at started. */
static void
call_fill(store_call *c, const uint8_t *sid, int i, uint64_t started,
          uint8_t *chunks, uint32_t *clen)
{
	size_t o = 0;

	memset(c, 0, sizeof *c);
	memcpy(c->sid, sid, STORE_ID_SIZE);
	memset(c->id, i, STORE_ID_SIZE);
	c->state = STORE_CALL_DONE;
	c->end = STORE_CALL_END_RESULT;
	c->started_ms = started;
	c->ended_ms = started + 5;
	c->output_bytes = 12;
	c->output_dropped = 7;
	c->summary = "print(x)";
	c->summary_len = 8;
	o += calls_chunk_put(chunks + o, STORE_CHUNK_GAP, NULL, 7);
	o += calls_chunk_put(chunks + o, STORE_CHUNK_STDOUT, "ab", 2);
	o += calls_chunk_put(chunks + o, STORE_CHUNK_STDERR, "cde", 3);
	*clen = (uint32_t)o;
	c->chunks = chunks;
	c->chunks_len = *clen;
	c->body = (const uint8_t *)"BODY";
	c->body_len = 4;
}

struct calls_put_arg {
	const store_call *c;
	const uint8_t *sid;
	uint64_t started;
	const uint8_t *id;
};

static int
cb_calls_put(store_txn *t, void *arg)
{
	struct calls_put_arg *a = arg;

	if (a->c != NULL)
		return calls_put(t, a->c);
	return calls_del(t, a->sid, a->started, a->id);
}

struct calls_seen {
	int n, bad;
	store_call last;
	uint8_t body[16];
	const char *why;
};

static int
cb_calls_seen(const store_call *c, int rc, const char *why, void *arg)
{
	struct calls_seen *cs = arg;

	cs->n++;
	if (rc != 0) {
		cs->bad++;
		cs->why = why;
		return 0;
	}
	cs->last = *c;
	memcpy(cs->body, c->body, c->body_len < 16 ? c->body_len : 16);
	cs->last.summary = NULL;
	cs->last.chunks = NULL;
	cs->last.body = NULL;
	return 0;
}

struct calls_list_arg {
	const uint8_t *sid;
	struct calls_seen cs;
};

static int
cb_calls_list(store_txn *t, void *arg)
{
	struct calls_list_arg *a = arg;

	return calls_list(t, a->sid, cb_calls_seen, &a->cs);
}

static struct calls_seen
calls_seen_of(store *s, const uint8_t *sid)
{
	struct calls_list_arg a;

	memset(&a, 0, sizeof a);
	a.sid = sid;
	ck_assert_int_eq(store_read(s, cb_calls_list, &a), 0);
	return a.cs;
}

/* The record's bytes, offset by offset (docs/STORAGE.md 3.9), and every
 * way a damaged one is refused. */
START_TEST(test_calls_codec)
{
	uint8_t chunks[64], rec[256], sid[STORE_ID_SIZE] = {9};
	uint8_t cat[256];
	store_call c, d;
	const char *why = NULL;
	uint32_t clen;
	size_t n, off = 0;
	const uint8_t *data;
	uint64_t len;
	int kind;

	call_fill(&c, sid, 1, 0x0102030405060708ull, chunks, &clen);
	ck_assert_uint_eq(clen, 9 + 7 + 8);
	n = calls_record_size(8, clen, 4);
	ck_assert_uint_eq(n, 56 + 8 + 24 + 4);
	calls_record_encode(rec, &c);
	ck_assert_uint_eq(rec[0], 1);
	ck_assert_uint_eq(rec[1], STORE_CALL_DONE);
	ck_assert_uint_eq(rec[2], STORE_CALL_END_RESULT);
	ck_assert_uint_eq(rec[3], 0);
	ck_assert_mem_eq(rec + 4, "\0\0\0\x08", 4);
	ck_assert_mem_eq(rec + 8, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	ck_assert_mem_eq(rec + 16, "\x01\x02\x03\x04\x05\x06\x07\x0d", 8);
	ck_assert_mem_eq(rec + 24, "\0\0\0\0\0\0\0\x0c", 8);
	ck_assert_mem_eq(rec + 32, "\0\0\0\0\0\0\0\x07", 8);
	ck_assert_mem_eq(rec + 48, "\0\0\0\x18", 4);
	ck_assert_mem_eq(rec + 52, "\0\0\0\x04", 4);
	ck_assert_mem_eq(rec + 56, "print(x)", 8);
	ck_assert_mem_eq(rec + 64, "\0\0\0\0\0\0\0\0\x07", 9);
	ck_assert_mem_eq(rec + 73, "\x01\0\0\0\x02" "ab", 7);
	ck_assert_mem_eq(rec + 80, "\x02\0\0\0\x03" "cde", 8);
	ck_assert_mem_eq(rec + 88, "BODY", 4);
	/* the check value: XXH3-64 of bytes 0..39 and 56..end */
	memcpy(cat, rec, 40);
	memcpy(cat + 40, rec + 56, n - 56);
	{
		uint64_t h = XXH3_64bits(cat, 40 + n - 56);
		int i;

		for (i = 0; i < 8; i++)
			ck_assert_uint_eq(rec[40 + i],
			    (uint8_t)(h >> (56 - 8 * i)));
	}
	memset(&d, 0, sizeof d);
	ck_assert_int_eq(calls_record_decode(rec, n, &d, &why), 0);
	ck_assert_uint_eq(d.started_ms, c.started_ms);
	ck_assert_uint_eq(d.ended_ms, c.ended_ms);
	ck_assert_uint_eq(d.output_bytes, 12);
	ck_assert_uint_eq(d.output_dropped, 7);
	ck_assert_uint_eq(d.summary_len, 8);
	ck_assert_mem_eq(d.summary, "print(x)", 8);
	ck_assert_uint_eq(d.body_len, 4);
	ck_assert_mem_eq(d.body, "BODY", 4);
	ck_assert_int_eq(calls_chunk_next(d.chunks, d.chunks_len, &off, &kind,
	    &data, &len, &why), 1);
	ck_assert(kind == STORE_CHUNK_GAP && data == NULL && len == 7);
	ck_assert_int_eq(calls_chunk_next(d.chunks, d.chunks_len, &off, &kind,
	    &data, &len, &why), 1);
	ck_assert(kind == STORE_CHUNK_STDOUT && len == 2);
	ck_assert_mem_eq(data, "ab", 2);
	ck_assert_int_eq(calls_chunk_next(d.chunks, d.chunks_len, &off, &kind,
	    &data, &len, &why), 1);
	ck_assert(kind == STORE_CHUNK_STDERR && len == 3);
	ck_assert_int_eq(calls_chunk_next(d.chunks, d.chunks_len, &off, &kind,
	    &data, &len, &why), 0);

	/* every byte flipped is caught: layout or check value */
	for (off = 0; off < n; off++) {
		rec[off] ^= 0x40;
		why = NULL;
		ck_assert_msg(calls_record_decode(rec, n, &d, &why) ==
		    STORE_E_CORRUPT && why != NULL, "byte %zu", off);
		rec[off] ^= 0x40;
	}
	ck_assert_int_eq(calls_record_decode(rec, n - 1, &d, &why),
	    STORE_E_CORRUPT);
	ck_assert_int_eq(calls_record_decode(rec, 55, &d, &why),
	    STORE_E_CORRUPT);
	ck_assert_str_eq(calls_state_name(STORE_CALL_LOST), "lost");
	ck_assert_str_eq(calls_state_name(9), "unknown");
	/* a chunk of a bad kind or past the end, with a good check value */
	c.chunks = (const uint8_t *)"\x03\0\0\0\0";
	c.chunks_len = 5;
	calls_record_encode(rec, &c);
	ck_assert_int_eq(calls_record_decode(rec, calls_record_size(8, 5, 4),
	    &d, &why), STORE_E_CORRUPT);
	ck_assert_str_eq(why, "an output chunk of an unknown kind");
	c.chunks = (const uint8_t *)"\x01\0\0\0\x09xx";
	c.chunks_len = 7;
	calls_record_encode(rec, &c);
	ck_assert_int_eq(calls_record_decode(rec, calls_record_size(8, 7, 4),
	    &d, &why), STORE_E_CORRUPT);
	ck_assert_str_eq(why, "an output chunk runs past the end");
}
END_TEST

/* Rows by session, oldest first; put replaces, del deletes; a damaged row
 * is listed as such, not skipped silently, and stops nothing. */
START_TEST(test_calls_rows)
{
	uint8_t chunks[64], a[STORE_ID_SIZE], b[STORE_ID_SIZE];
	struct calls_put_arg pa = {0};
	struct calls_seen cs;
	store_call c;
	uint32_t clen;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;

	memset(a, 0x11, sizeof a);
	memset(b, 0x22, sizeof b);
	call_fill(&c, a, 1, 300, chunks, &clen);
	pa.c = &c;
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	call_fill(&c, a, 2, 100, chunks, &clen);
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	call_fill(&c, b, 3, 200, chunks, &clen);
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	cs = calls_seen_of(S, a);
	ck_assert_int_eq(cs.n, 2);
	ck_assert_int_eq(cs.bad, 0);
	/* the last is the newest (started 300), call id 1 */
	ck_assert_uint_eq(cs.last.started_ms, 300);
	ck_assert_uint_eq(cs.last.id[0], 1);
	ck_assert_uint_eq(cs.last.sid[0], 0x11);
	ck_assert_mem_eq(cs.body, "BODY", 4);
	cs = calls_seen_of(S, NULL);
	ck_assert_int_eq(cs.n, 3);
	ck_assert_uint_eq(cs.last.sid[0], 0x22);
	/* replace, then delete (twice: the second finds nothing) */
	call_fill(&c, a, 2, 100, chunks, &clen);
	c.state = STORE_CALL_LOST;
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	ck_assert_int_eq(calls_seen_of(S, a).n, 2);
	pa.c = NULL;
	pa.sid = a;
	pa.started = 300;
	memset(c.id, 1, sizeof c.id);
	pa.id = c.id;
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	cs = calls_seen_of(S, a);
	ck_assert_int_eq(cs.n, 1);
	ck_assert_uint_eq(cs.last.state, STORE_CALL_LOST);
	/* a damaged row (written with LMDB directly) */
	close_S();
	raw_begin(db_dir, &env, &txn);
	ck_assert_int_eq(mdb_dbi_open(txn, "calls", 0, &dbi), 0);
	memset(chunks, 0x11, 16);
	k.mv_data = chunks;
	k.mv_size = 16 + 8 + 16;
	v.mv_data = "junk";
	v.mv_size = 4;
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	raw_commit(env, txn);
	open_S(NULL);
	cs = calls_seen_of(S, a);
	ck_assert_int_eq(cs.n, 2);
	ck_assert_int_eq(cs.bad, 1);
	ck_assert_str_eq(cs.why, "shorter than the record's fixed part");
}
END_TEST

/* A store made before calls existed: a read-only open goes on without it
 * (no rows, and it creates nothing), a writable one creates it. */
START_TEST(test_calls_older_store)
{
	uint8_t chunks[64], a[STORE_ID_SIZE];
	struct calls_put_arg pa = {0};
	store_options o = {0};
	store_call c;
	uint32_t clen;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	memset(a, 0x33, sizeof a);
	call_fill(&c, a, 1, 300, chunks, &clen);
	pa.c = &c;
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	close_S();
	raw_begin(db_dir, &env, &txn);
	ck_assert_int_eq(mdb_dbi_open(txn, "calls", 0, &dbi), 0);
	ck_assert_int_eq(mdb_drop(txn, dbi, 1), 0);
	raw_commit(env, txn);

	o.readonly = 1;
	open_S(&o);
	ck_assert_int_eq(calls_seen_of(S, a).n, 0);
	ck_assert_int_eq(calls_seen_of(S, NULL).n, 0);
	close_S();
	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 8);
	ck_assert_int_eq(mdb_env_open(env, db_dir, MDB_RDONLY, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "calls", 0, &dbi), MDB_NOTFOUND);
	mdb_txn_abort(txn);
	mdb_env_close(env);

	open_S(NULL);
	ck_assert_int_eq(calls_seen_of(S, a).n, 0);
	ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
	close_S();
	open_S(&o);
	ck_assert_int_eq(calls_seen_of(S, a).n, 1);
}
END_TEST

/* The purge deletes a session's calls rows, after its entries and refs
 * rows, each row one deletion of the batch; neighbours keep theirs. */
START_TEST(test_purge_calls)
{
	struct calls_put_arg pa = {0};
	uint8_t chunks[64];
	store_session ss[3];
	store_call c;
	uint32_t clen;
	size_t deleted = 0, t0, t1;
	int i, k;

	open_S(NULL);
	mk_session(S, "c0", 0, 1, &ss[0]);
	mk_session(S, "c1", 0, 1, &ss[1]);
	mk_session(S, "c2", 0, 1, &ss[2]);
	qsort(ss, 3, sizeof ss[0], cmp_session_id);
	pa.c = &c;
	for (i = 0; i < 3; i++) {
		fill(S, ss[i].id, 0, 5, 0, 0);
		for (k = 0; k < 10; k++) {
			call_fill(&c, ss[i].id, k, 1000 + (uint64_t)k, chunks,
			    &clen);
			ck_assert_int_eq(store_write(S, cb_calls_put, &pa), 0);
		}
		ck_assert_int_eq(calls_seen_of(S, ss[i].id).n, 10);
	}
	kill_session(S, ss[1].id);
	close_S();
	t0 = raw_last_txnid(db_dir);
	open_S(NULL);
	/* 5 entries and 10 rows in batches of 3: 15 / 3 = 5 commits, a
	 * sixth transaction that finds nothing left (LMDB commits nothing
	 * then: no new transaction id), then the record's */
	ck_assert_int_eq(session_purge(S, ss[1].id, 3, &deleted), 0);
	ck_assert_uint_eq(deleted, 5);
	close_S();
	t1 = raw_last_txnid(db_dir);
	ck_assert_uint_eq(t1 - t0, 5 + 1);
	open_S(NULL);
	ck_assert_int_eq(calls_seen_of(S, ss[1].id).n, 0);
	ck_assert_int_eq(calls_seen_of(S, ss[0].id).n, 10);
	ck_assert_int_eq(calls_seen_of(S, ss[2].id).n, 10);
	ck_assert_int_eq(calls_seen_of(S, NULL).n, 20);
	verify(S, ss[0].id, 0, 5, 0, 0);
	verify(S, ss[2].id, 0, 5, 0, 0);
}
END_TEST

static TCase *
tcase_new(const char *name, int with_store)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, with_store ? setup_store : setup_dir,
	    teardown);
	tcase_set_timeout(tc, TU_TIMEOUT);
	return tc;
}

static Suite *
store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc;

	tc = tcase_new("Core", 1);
	tcase_add_test(tc, test_open_meta_usage);
	tcase_add_test(tc, test_default_path);
	tcase_add_test(tc, test_strerror);
	tcase_add_test(tc, test_read_write_results);
	tcase_add_test(tc, test_readonly_open);
	tcase_add_test(tc, test_sync_policies);
	tcase_add_test(tc, test_session_create_get);
	tcase_add_test(tc, test_session_put_absent);
	tcase_add_test(tc, test_session_list);
	tcase_add_test(tc, test_session_kill);
	tcase_add_test(tc, test_tombstones);
	tcase_add_test(tc, test_calls_codec);
	tcase_add_test(tc, test_calls_rows);
	tcase_add_test(tc, test_calls_older_store);
	tcase_add_test(tc, test_session_create_id);
	tcase_add_test(tc, test_session_lock);
	tcase_add_test(tc, test_session_count);
	tcase_add_test(tc, test_expiry_index);
	tcase_add_test(tc, test_entry_put_get);
	tcase_add_test(tc, test_entry_put_sorted);
	tcase_add_test(tc, test_entry_replace_del);
	tcase_add_test(tc, test_entry_list);
	tcase_add_test(tc, test_entry_walk);
	tcase_add_test(tc, test_refs_put_list);
	tcase_add_test(tc, test_refs_del);
	tcase_add_test(tc, test_refs_sessions);
	tcase_add_test(tc, test_record_layout);
	tcase_add_test(tc, test_record_damage);
	tcase_add_test(tc, test_record_large_digest);
	tcase_add_test(tc, test_refs_blob_roundtrip);
	tcase_add_test(tc, test_refs_blob_key_limit);
	tcase_add_test(tc, test_refs_blob_damaged);
	tcase_add_test(tc, test_payload_digest_fn);
	tcase_add_test(tc, test_util);
	suite_add_tcase(s, tc);

	tc = tcase_new("Limits", 1);
	tcase_add_test(tc, test_name_limits);
	tcase_add_test(tc, test_lease_overflow);
	tcase_add_test(tc, test_notstore);
	tcase_add_test(tc, test_newer_format_refused);
	tcase_add_test(tc, test_corrupt_payload);
	tcase_add_test(tc, test_purge_reused_name);
	tcase_add_test(tc, test_map_max_full);
	tcase_add_test(tc, test_reserve);
	tcase_add_test(tc, test_refs_limits);
	tcase_add_test(tc, test_refs_older_store);
	tcase_add_test(tc, test_refs_corrupt_row);
	suite_add_tcase(s, tc);

	tc = tcase_new("Purge", 0);
	tcase_add_test(tc, test_purge_one);
	tcase_add_test(tc, test_purge_exact_batches);
	tcase_add_test(tc, test_purge_default_batch);
	tcase_add_test(tc, test_purge_100k);
	tcase_add_test(tc, test_purge_100k_batch_7);
	tcase_add_test(tc, test_purge_refs);
	tcase_add_test(tc, test_purge_refs_batch_3);
	tcase_add_test(tc, test_purge_calls);
	suite_add_tcase(s, tc);

	tc = tcase_new("Big", 0);
	tcase_add_test(tc, test_map_growth_200mib);
	tcase_add_test(tc, test_value_100mb);
	suite_add_tcase(s, tc);

	tc = tcase_new("Blob", 0);
	tcase_add_test(tc, test_blob_roundtrip);
	tcase_add_test(tc, test_blob_put_sorted);
	tcase_add_test(tc, test_blob_abort);
	tcase_add_test(tc, test_blob_damage);
	tcase_add_test(tc, test_blob_orphans_swept);
	tcase_add_test(tc, test_blob_purge);
	tcase_add_test(tc, test_blob_map_max);
	tcase_add_test(tc, test_blob_deferred_unlink);
	tcase_add_test(tc, test_blob_superseded);
	tcase_add_test(tc, test_blob_format1_store);
	tcase_add_test(tc, test_session_counts);
	tcase_add_test(tc, test_session_counts_old_record);
	tcase_add_test(tc, test_payload_digest_stamped);
	suite_add_tcase(s, tc);

	tc = tcase_new("Damage", 0);
	tcase_add_test(tc, test_value_past_the_file);
	tcase_add_test(tc, test_structure_check);
	suite_add_tcase(s, tc);

	tc = tcase_new("Procs", 0);
	tcase_add_test(tc, test_two_writers);
	tcase_add_test(tc, test_writer_and_grower);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_grow_under_readers);
	suite_add_tcase(s, tc);

	tc = tcase_new("Crash", 0);
	tcase_add_test(tc, test_kill_during_commits_never);
	tcase_add_test(tc, test_kill_during_commits_interval);
	tcase_add_test(tc, test_kill_during_commits_always);
	tcase_add_test(tc, test_kill_during_commits_blobs);
	tcase_add_test(tc, test_purge_killed);
	tcase_add_test(tc, test_killed_reader_reclaimed);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	if (tu_mkdtemp(base_dir, sizeof base_dir, tu_tmpdir(),
	    "check_store") != 0) {
		fprintf(stderr, "check_store: mkdtemp in %s: %s\n", tu_tmpdir(),
		    strerror(errno));
		return EXIT_FAILURE;
	}
	sr = srunner_create(store_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tu_rmtree(base_dir);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
