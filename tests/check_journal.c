/*
 * check_journal.c - the call journal (exec/journal.c) without Python:
 * calls, states, output and replay (Core), its bounds with a gap marker
 * (Bounds), the `calls` database it persists to and reads back, damaged
 * records included (Store), and threads using it at once (Threads).
 *
 * Each test that needs a store opens its own in a directory of its own
 * (check forks per test; LMDB forbids crossing fork()).  main() removes
 * the suite's temporary tree at the end.
 */
#include "config.h"

#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "journal.h"
#include "testutil.h"

static char base_dir[PATH_MAX];
static char db_dir[PATH_MAX + 8];
static store *S;
static const uint8_t SID[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
    14, 15, 16};

/* A clock the tests move. */
static uint64_t fake_now = 1000000;
static uint64_t
fake_clock(void)
{
	return fake_now;
}

/* Call id number i. */
static void
cid(uint8_t *id, unsigned i)
{
	memset(id, 0xa5, 16);
	id[0] = (uint8_t)i;
	id[1] = (uint8_t)(i >> 8);
	id[15] = (uint8_t)(i * 7);
}

/* What a replay saw, in order: "o:<bytes>" "e:<bytes>" "R:<body>"
 * "E:<body>" "J" each followed by '|'. */
struct seen {
	char buf[1 << 16];
	size_t n;
	int stop_at;   /* return nonzero at this call (0: never) */
	int calls;
};

static int
seen_fn(void *ctx, int stream, const uint8_t *p, size_t n)
{
	struct seen *s = ctx;
	const char *tag = stream == JOURNAL_STDOUT ? "o:" :
	    stream == JOURNAL_STDERR ? "e:" : stream == JOURNAL_END_RESULT ?
	    "R:" : stream == JOURNAL_END_ERROR ? "E:" : "J";

	s->calls++;
	ck_assert(s->n + strlen(tag) + n + 2 < sizeof s->buf);
	memcpy(s->buf + s->n, tag, strlen(tag));
	s->n += strlen(tag);
	if (n > 0) {
		memcpy(s->buf + s->n, p, n);
		s->n += n;
	}
	s->buf[s->n++] = '|';
	s->buf[s->n] = '\0';
	if (stream == JOURNAL_JOIN)
		ck_assert(p == NULL && n == 0);
	return s->stop_at == s->calls ? 7 : 0;
}

static void
replay(journal *j, const uint8_t *id, struct seen *s)
{
	memset(s, 0, sizeof *s);
	ck_assert_int_eq(journal_replay(j, id, seen_fn, s), 0);
}

static void
out_str(journal *j, const uint8_t *id, int stream, const char *s)
{
	journal_output(j, id, stream, s, strlen(s));
}

/* --- Core ---------------------------------------------------------------- */

START_TEST(test_begin_find_list)
{
	journal_limits lim = {0};
	journal_call_info ci;
	uint8_t a[16], b[16], c[16];
	char *json;
	journal *j;

	lim.clock = fake_clock;
	fake_now = 5000;
	cid(a, 1);
	cid(b, 2);
	cid(c, 3);
	j = journal_new(NULL, SID, &lim);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq(journal_find(j, a, &ci), 0);
	ck_assert_int_eq(journal_begin(j, a, "\n  \n   x = 1  \ny = 2\n", 20),
	    0);
	/* a known id is refused and nothing changes */
	ck_assert_int_eq(journal_begin(j, a, "other", 5), -1);
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_str_eq(ci.summary, "x = 1");
	ck_assert_int_eq(ci.state, JOURNAL_QUEUED);
	ck_assert_uint_eq(ci.started_ms, 5000);
	ck_assert_uint_eq(ci.ended_ms, 0);
	ck_assert(memcmp(ci.id, a, 16) == 0);
	fake_now = 6000;
	journal_set_state(j, a, JOURNAL_RUNNING);
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_int_eq(ci.state, JOURNAL_RUNNING);
	out_str(j, a, JOURNAL_STDOUT, "hello\n");
	fake_now = 7000;
	journal_end(j, a, (const uint8_t *)"RES", 3, 0);
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_int_eq(ci.state, JOURNAL_DONE);
	ck_assert_uint_eq(ci.ended_ms, 7000);
	ck_assert_uint_eq(ci.output_bytes, 6);
	ck_assert_int_eq(ci.end_error, 0);
	/* an ended call takes no more output or state */
	out_str(j, a, JOURNAL_STDOUT, "late");
	journal_set_state(j, a, JOURNAL_RUNNING);
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_int_eq(ci.state, JOURNAL_DONE);
	ck_assert_uint_eq(ci.output_bytes, 6);

	ck_assert_int_eq(journal_begin(j, b, "print(\"q\\\\\")\t", 13), 0);
	ck_assert_int_eq(journal_begin(j, c, NULL, 0), 0);
	journal_end_error(j, c, (const uint8_t *)"ERR", 3, 0, 0);
	ck_assert_int_eq(journal_find(j, c, &ci), 1);
	ck_assert_int_eq(ci.end_error, 1);
	ck_assert_uint_eq(journal_count(j), 3);
	json = journal_list_json(j);
	ck_assert_ptr_nonnull(json);
	ck_assert_str_eq(json,
	    "[{\"id\": \"0100a5a5a5a5a5a5a5a5a5a5a5a5a507\", \"summary\":"
	    " \"x = 1\", \"state\": \"done\", \"started\": 5000, \"ended\""
	    ": 7000, \"output_bytes\": 6, \"output_dropped\": 0}, {\"id\""
	    ": \"0200a5a5a5a5a5a5a5a5a5a5a5a5a50e\", \"summary\": \"print"
	    "(\\\"q\\\\\\\\\\\")\", \"state\": \"queued\", \"started\": 7"
	    "000, \"ended\": null, \"output_bytes\": 0, \"output_dropped\""
	    ": 0}, {\"id\": \"0300a5a5a5a5a5a5a5a5a5a5a5a5a515\", \"summa"
	    "ry\": \"\", \"state\": \"done\", \"started\": 7000, \"ended\""
	    ": 7000, \"output_bytes\": 0, \"output_dropped\": 0}]");
	free(json);
	journal_free(j);
}
END_TEST

START_TEST(test_summary_cut_utf8)
{
	journal_call_info ci;
	char code[300];
	uint8_t a[16], b[16];
	journal *j = journal_new(NULL, SID, NULL);

	cid(a, 1);
	cid(b, 2);
	/* 79 ASCII bytes then a 2-byte character: it does not fit in 80 */
	memset(code, 'a', 79);
	memcpy(code + 79, "\xc3\xa9tail\nnext", 11);
	ck_assert_int_eq(journal_begin(j, a, code, 90), 0);
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_uint_eq(strlen(ci.summary), 79);
	/* a byte that is not UTF-8 becomes '?', a control byte ' ' */
	ck_assert_int_eq(journal_begin(j, b, "a\xff\x01z", 4), 0);
	ck_assert_int_eq(journal_find(j, b, &ci), 1);
	ck_assert_str_eq(ci.summary, "a? z");
	journal_free(j);
}
END_TEST

START_TEST(test_replay_done_running_lost)
{
	uint8_t a[16], b[16], c[16], d[16];
	struct seen s;
	journal *j = journal_new(NULL, SID, NULL);

	cid(a, 1);
	cid(b, 2);
	cid(c, 3);
	cid(d, 4);
	ck_assert_int_eq(journal_replay(j, a, seen_fn, &s), -1);
	journal_begin(j, a, "a", 1);
	journal_set_state(j, a, JOURNAL_RUNNING);
	out_str(j, a, JOURNAL_STDOUT, "one ");
	out_str(j, a, JOURNAL_STDOUT, "two\n");
	out_str(j, a, JOURNAL_STDERR, "warn\n");
	out_str(j, a, JOURNAL_STDOUT, "three\n");
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "o:one two\n|e:warn\n|o:three\n|J|");
	journal_end(j, a, (const uint8_t *)"body", 4, 0);
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "o:one two\n|e:warn\n|o:three\n|R:body|");
	/* a nonzero return stops it and is returned */
	memset(&s, 0, sizeof s);
	s.stop_at = 2;
	ck_assert_int_eq(journal_replay(j, a, seen_fn, &s), 7);
	ck_assert_int_eq(s.calls, 2);
	/* queued: only a join */
	journal_begin(j, b, "b", 1);
	replay(j, b, &s);
	ck_assert_str_eq(s.buf, "J|");
	/* lost by set_state, its ERROR body given after */
	journal_begin(j, c, "c", 1);
	journal_set_state(j, c, JOURNAL_RUNNING);
	journal_set_state(j, c, JOURNAL_LOST);
	replay(j, c, &s);
	ck_assert_str_eq(s.buf, "E:|");
	journal_end_error(j, c, (const uint8_t *)"restarted", 9, 1, 0);
	replay(j, c, &s);
	ck_assert_str_eq(s.buf, "E:restarted|");
	/* an ERROR ending of a call that ran */
	journal_begin(j, d, "d", 1);
	journal_end_error(j, d, (const uint8_t *)"boom", 4, 0, 0);
	replay(j, d, &s);
	ck_assert_str_eq(s.buf, "E:boom|");
	/* a RESULT without fields is still a RESULT */
	cid(d, 5);
	journal_begin(j, d, "e", 1);
	journal_end(j, d, NULL, 0, 0);
	replay(j, d, &s);
	ck_assert_str_eq(s.buf, "R:|");
	journal_free(j);
}
END_TEST

/* --- Bounds -------------------------------------------------------------- */

START_TEST(test_output_bound_gap)
{
	journal_limits lim = {0};
	journal_call_info ci;
	uint8_t a[16], b[16];
	char big[300];
	struct seen s;
	journal *j;

	lim.max_call_output = 10;
	j = journal_new(NULL, SID, &lim);
	cid(a, 1);
	cid(b, 2);
	journal_begin(j, a, "a", 1);
	out_str(j, a, JOURNAL_STDOUT, "0123456");
	out_str(j, a, JOURNAL_STDERR, "abcdef");
	/* 13 written, 10 kept: the oldest 3 went first */
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "e:[pyshelf: 3 bytes of output dropped]\n|"
	    "o:3456|e:abcdef|J|");
	out_str(j, a, JOURNAL_STDOUT, "XYZWV");
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "e:[pyshelf: 8 bytes of output dropped]\n|"
	    "e:bcdef|o:XYZWV|J|");
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_uint_eq(ci.output_bytes, 18);
	ck_assert_uint_eq(ci.output_dropped, 8);
	/* one write larger than the bound: its end stays */
	memset(big, 'q', sizeof big);
	memcpy(big + sizeof big - 4, "END!", 4);
	journal_output(j, a, JOURNAL_STDOUT, big, sizeof big);
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "e:[pyshelf: 308 bytes of output dropped]\n|"
	    "o:qqqqqqEND!|J|");
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_uint_eq(ci.output_bytes, 318);
	ck_assert_uint_eq(ci.output_dropped, 308);
	/* the same from a fresh call: nothing kept before */
	journal_begin(j, b, "b", 1);
	journal_output(j, b, JOURNAL_STDERR, big, 25);
	replay(j, b, &s);
	ck_assert_str_eq(s.buf, "e:[pyshelf: 15 bytes of output dropped]\n|"
	    "e:qqqqqqqqqq|J|");
	journal_free(j);
}
END_TEST

START_TEST(test_calls_bound_oldest_done_first)
{
	journal_limits lim = {0};
	uint8_t id[16];
	unsigned i;
	journal *j;

	lim.max_calls = 3;
	j = journal_new(NULL, SID, &lim);
	/* call 0 runs throughout: never dropped */
	cid(id, 0);
	journal_begin(j, id, "run", 3);
	journal_set_state(j, id, JOURNAL_RUNNING);
	for (i = 1; i <= 5; i++) {
		cid(id, i);
		ck_assert_int_eq(journal_begin(j, id, "x", 1), 0);
		journal_end(j, id, (const uint8_t *)"r", 1, 0);
	}
	ck_assert_uint_eq(journal_count(j), 3);
	cid(id, 0);
	ck_assert_int_eq(journal_find(j, id, NULL), 1);
	for (i = 1; i <= 3; i++) {
		cid(id, i);
		ck_assert_int_eq(journal_find(j, id, NULL), 0);
	}
	for (i = 4; i <= 5; i++) {
		cid(id, i);
		ck_assert_int_eq(journal_find(j, id, NULL), 1);
	}
	/* queued ones are never dropped, past the bound too */
	for (i = 10; i < 15; i++) {
		cid(id, i);
		ck_assert_int_eq(journal_begin(j, id, "q", 1), 0);
	}
	ck_assert_uint_eq(journal_count(j), 6);
	for (i = 10; i < 15; i++) {
		cid(id, i);
		ck_assert_int_eq(journal_find(j, id, NULL), 1);
	}
	journal_free(j);
}
END_TEST

START_TEST(test_bytes_bound_and_keep)
{
	journal_limits lim = {0};
	uint8_t id[16], body[400];
	unsigned i;
	journal *j;

	memset(body, 'b', sizeof body);
	lim.max_bytes = 1000;
	lim.keep_ms = 60000;
	lim.clock = fake_clock;
	fake_now = 1000000;
	j = journal_new(NULL, SID, &lim);
	for (i = 1; i <= 3; i++) {
		cid(id, i);
		journal_begin(j, id, "x", 1);
		out_str(j, id, JOURNAL_STDOUT, "0123456789");
		journal_end(j, id, body, sizeof body, 0);
		fake_now += 1000;
	}
	/* 3 x 410 > 1000: the first went */
	ck_assert_uint_eq(journal_count(j), 2);
	cid(id, 1);
	ck_assert_int_eq(journal_find(j, id, NULL), 0);
	/* call 2 ended at 1001000, call 3 at 1002000: keep 60 s */
	fake_now = 1001000 + 60000 - 1;
	ck_assert_uint_eq(journal_count(j), 2);
	free(journal_list_json(j)); /* listing applies the time bound */
	ck_assert_uint_eq(journal_count(j), 2);
	fake_now = 1001000 + 60000;
	free(journal_list_json(j));
	ck_assert_uint_eq(journal_count(j), 1);
	cid(id, 3);
	ck_assert_int_eq(journal_find(j, id, NULL), 1);
	journal_free(j);
}
END_TEST

/* The time bound's pass runs only when the earliest ended call expires:
 * calls that end out of list order, a lost one, and each after its own
 * keep_ms, neither sooner nor later. */
START_TEST(test_keep_each_at_its_time)
{
	journal_limits lim = {0};
	uint8_t a[16], b[16], c[16], d[16];
	journal *j;

	lim.keep_ms = 1000;
	lim.clock = fake_clock;
	fake_now = 5000000;
	j = journal_new(NULL, SID, &lim);
	cid(a, 1);
	cid(b, 2);
	journal_begin(j, a, "a", 1);
	journal_begin(j, b, "b", 1);
	fake_now += 100;
	journal_end(j, b, (const uint8_t *)"rb", 2, 0);   /* b: 5000100 */
	fake_now += 400;
	journal_end(j, a, (const uint8_t *)"ra", 2, 0);   /* a: 5000500 */
	fake_now = 5000100 + 999;
	free(journal_list_json(j));
	ck_assert_uint_eq(journal_count(j), 2);
	fake_now = 5000100 + 1000;                        /* b expires */
	free(journal_list_json(j));
	ck_assert_uint_eq(journal_count(j), 1);
	ck_assert_int_eq(journal_find(j, a, NULL), 1);
	fake_now = 5000500 + 999;
	free(journal_list_json(j));
	ck_assert_uint_eq(journal_count(j), 1);
	fake_now = 5000500 + 1000;                        /* a expires */
	free(journal_list_json(j));
	ck_assert_uint_eq(journal_count(j), 0);
	/* a lost call ends when it is lost; a new call's begin drops it */
	cid(c, 3);
	journal_begin(j, c, "c", 1);
	journal_set_state(j, c, JOURNAL_LOST);            /* c: 5001500 */
	fake_now += 1000;
	cid(d, 4);
	journal_begin(j, d, "d", 1);
	ck_assert_int_eq(journal_find(j, c, NULL), 0);
	ck_assert_int_eq(journal_find(j, d, NULL), 1);
	journal_free(j);
}
END_TEST

/* --- Store --------------------------------------------------------------- */

static void
setup_store(void)
{
	store_options o = {0};
	char *cause = NULL;
	static char dir[PATH_MAX];
	int rc;

	ck_assert_int_eq(tu_mkdtemp(dir, sizeof dir, base_dir, "t"), 0);
	snprintf(db_dir, sizeof db_dir, "%s/db", dir);
	o.create = 1;
	rc = store_open(&S, db_dir, &o, &cause);
	ck_assert_msg(rc == 0, "store_open: %s", cause ? cause : "");
}

static void
reopen_store(int readonly)
{
	store_options o = {0};
	char *cause = NULL;
	int rc;

	store_close(S);
	o.readonly = readonly;
	rc = store_open(&S, db_dir, &o, &cause);
	ck_assert_msg(rc == 0, "store_open: %s", cause ? cause : "");
}

/* Count the session's rows (n) and the damaged ones among them. */
struct rows {
	int n, bad;
};

static int
rows_fn(const store_call *c, int rc, const char *why, void *arg)
{
	struct rows *r = arg;

	(void)c;
	(void)why;
	r->n++;
	if (rc != 0)
		r->bad++;
	return 0;
}

static int
rows_txn(store_txn *t, void *arg)
{
	return calls_list(t, SID, rows_fn, arg);
}

static struct rows
rows(void)
{
	struct rows r = {0, 0};

	ck_assert_int_eq(store_read(S, rows_txn, &r), 0);
	return r;
}

START_TEST(test_persist_detached_and_load)
{
	journal_limits lim = {0};
	journal_call_info ci;
	uint8_t a[16], b[16], c[16];
	char *cause = NULL;
	struct seen s;
	journal *j;

	lim.clock = fake_clock;
	fake_now = 2000000;
	cid(a, 1);
	cid(b, 2);
	cid(c, 3);
	j = journal_new(S, SID, &lim);
	ck_assert_int_eq(journal_load(j, &cause), 0);
	ck_assert_uint_eq(journal_count(j), 0);
	journal_begin(j, a, "for i in range(3): print(i)", 27);
	journal_set_state(j, a, JOURNAL_RUNNING);
	out_str(j, a, JOURNAL_STDOUT, "0\n1\n2\n");
	/* attached: kept in memory only */
	journal_end(j, a, (const uint8_t *)"A", 1, 0);
	ck_assert_int_eq(rows().n, 0);
	journal_begin(j, b, "long()", 6);
	journal_set_state(j, b, JOURNAL_RUNNING);
	out_str(j, b, JOURNAL_STDERR, "err\n");
	fake_now += 10;
	/* detached: persisted by journal_end itself, alone (a, which
	 * ended attached, waits for the persist at exit) */
	journal_end(j, b, (const uint8_t *)"Bres", 4, 1);
	ck_assert_int_eq(rows().n, 1);
	journal_begin(j, c, "still()", 7);
	journal_set_state(j, c, JOURNAL_RUNNING);
	out_str(j, c, JOURNAL_STDOUT, "partial");
	/* at exit: everything listed, the running one too */
	ck_assert_int_eq(journal_persist(j, &cause), 0);
	ck_assert_int_eq(rows().n, 3);
	journal_free(j);

	/* a new worker reads them back */
	reopen_store(0);
	fake_now += 1000;
	j = journal_new(S, SID, &lim);
	ck_assert_int_eq(journal_load(j, &cause), 0);
	ck_assert_uint_eq(journal_load_skipped(j), 0);
	ck_assert_uint_eq(journal_count(j), 3);
	ck_assert_int_eq(journal_find(j, b, &ci), 1);
	ck_assert_int_eq(ci.state, JOURNAL_DONE);
	ck_assert_str_eq(ci.summary, "long()");
	ck_assert_uint_eq(ci.started_ms, 2000000);
	ck_assert_uint_eq(ci.ended_ms, 2000010);
	ck_assert_uint_eq(ci.output_bytes, 4);
	replay(j, b, &s);
	ck_assert_str_eq(s.buf, "e:err\n|R:Bres|");
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "o:0\n1\n2\n|R:A|");
	/* persisted while running: its worker is gone, so it is lost */
	ck_assert_int_eq(journal_find(j, c, &ci), 1);
	ck_assert_int_eq(ci.state, JOURNAL_LOST);
	ck_assert_uint_eq(ci.ended_ms, fake_now);
	replay(j, c, &s);
	ck_assert_str_eq(s.buf, "o:partial|E:|");
	/* a known id is not run again */
	ck_assert_int_eq(journal_begin(j, b, "long()", 6), -1);
	journal_free(j);
}
END_TEST

START_TEST(test_persist_drops_rows)
{
	journal_limits lim = {0};
	uint8_t id[16];
	char *cause = NULL;
	unsigned i;
	journal *j;

	lim.clock = fake_clock;
	lim.max_calls = 2;
	lim.keep_ms = 1000;
	fake_now = 3000000;
	j = journal_new(S, SID, &lim);
	for (i = 1; i <= 2; i++) {
		cid(id, i);
		journal_begin(j, id, "x", 1);
		journal_end(j, id, (const uint8_t *)"r", 1, 1);
		fake_now++;
	}
	ck_assert_int_eq(rows().n, 2);
	/* a third pushes the first out: its row goes with the next persist,
	 * here the detached end of the third */
	cid(id, 3);
	journal_begin(j, id, "x", 1);
	journal_end(j, id, (const uint8_t *)"r", 1, 1);
	ck_assert_int_eq(rows().n, 2);
	cid(id, 1);
	ck_assert_int_eq(journal_find(j, id, NULL), 0);
	journal_free(j);

	/* past keep_ms, a load leaves them out and the next persist deletes
	 * their rows */
	fake_now += 5000;
	j = journal_new(S, SID, &lim);
	ck_assert_int_eq(journal_load(j, &cause), 0);
	ck_assert_uint_eq(journal_count(j), 0);
	ck_assert_int_eq(rows().n, 2);
	ck_assert_int_eq(journal_persist(j, &cause), 0);
	ck_assert_int_eq(rows().n, 0);
	journal_free(j);
}
END_TEST

/* Write a raw value under a call key of SID with LMDB directly (the store
 * closed). */
static void
raw_put(const uint8_t *id, uint64_t started, const void *val, size_t n)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	uint8_t kb[40];
	int i;

	store_close(S);
	S = NULL;
	memcpy(kb, SID, 16);
	for (i = 0; i < 8; i++)
		kb[16 + i] = (uint8_t)(started >> (56 - 8 * i));
	memcpy(kb + 24, id, 16);
	ck_assert_int_eq(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 16);
	mdb_env_set_mapsize(env, 64 << 20);
	ck_assert_int_eq(mdb_env_open(env, db_dir, 0, 0600), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "calls", 0, &dbi), 0);
	k.mv_data = kb;
	k.mv_size = sizeof kb;
	v.mv_data = (void *)val;
	v.mv_size = n;
	ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	reopen_store(0);
}

/* A copy of a call's stored value, flipped at byte flip. */
struct grab {
	uint8_t v[4096];
	size_t n;
};

static int
grab_fn(const store_call *c, int rc, const char *why, void *arg)
{
	struct grab *g = arg;
	size_t n = calls_record_size(c->summary_len, c->chunks_len,
	    c->body_len);

	(void)why;
	ck_assert_int_eq(rc, 0);
	ck_assert(n <= sizeof g->v);
	calls_record_encode(g->v, c);
	g->n = n;
	return 1;
}

static int
grab_txn(store_txn *t, void *arg)
{
	return calls_list(t, SID, grab_fn, arg);
}

START_TEST(test_load_skips_damaged)
{
	journal_limits lim = {0};
	uint8_t a[16], b[16], c[16];
	char *cause = NULL;
	struct grab g;
	struct seen s;
	journal *j;

	lim.clock = fake_clock;
	fake_now = 4000000;
	cid(a, 1);
	cid(b, 2);
	cid(c, 3);
	j = journal_new(S, SID, &lim);
	journal_begin(j, a, "good", 4);
	out_str(j, a, JOURNAL_STDOUT, "out");
	journal_end(j, a, (const uint8_t *)"R", 1, 1);
	journal_free(j);
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(store_read(S, grab_txn, &g), 1);
	/* b: the same record with one output byte flipped (the check value
	 * catches it); c: garbage */
	g.v[g.n - 3] ^= 0x20;
	raw_put(b, 4000000, g.v, g.n);
	raw_put(c, 4000001, "garbage", 7);
	ck_assert_int_eq(rows().n, 3);
	ck_assert_int_eq(rows().bad, 2);
	j = journal_new(S, SID, &lim);
	ck_assert_int_eq(journal_load(j, &cause), 0);
	ck_assert_uint_eq(journal_load_skipped(j), 2);
	ck_assert_uint_eq(journal_count(j), 1);
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "o:out|R:R|");
	ck_assert_int_eq(journal_find(j, b, NULL), 0);
	journal_free(j);
}
END_TEST


/* A record whose gaps are not at its head (the journal never writes one,
 * but a record is data): they join the head gap, and output over this
 * journal's per-call bound is trimmed as it loads. */
static int
odd_put_txn(store_txn *t, void *arg)
{
	return calls_put(t, arg);
}

START_TEST(test_load_odd_chunks)
{
	journal_limits lim = {0};
	journal_call_info ci;
	uint8_t a[16], chunks[64];
	store_call sc;
	char *cause = NULL;
	struct seen s;
	size_t o = 0;
	journal *j;

	cid(a, 1);
	o += calls_chunk_put(chunks + o, STORE_CHUNK_STDOUT, "abc", 3);
	o += calls_chunk_put(chunks + o, STORE_CHUNK_GAP, NULL, 5);
	o += calls_chunk_put(chunks + o, STORE_CHUNK_STDERR, "defgh", 5);
	o += calls_chunk_put(chunks + o, STORE_CHUNK_GAP, NULL, 2);
	memset(&sc, 0, sizeof sc);
	memcpy(sc.sid, SID, 16);
	memcpy(sc.id, a, 16);
	sc.state = STORE_CALL_DONE;
	sc.end = STORE_CALL_END_RESULT;
	sc.started_ms = 10;
	sc.ended_ms = 20;
	sc.output_bytes = 15;
	sc.output_dropped = 7;
	sc.summary = "odd";
	sc.summary_len = 3;
	sc.chunks = chunks;
	sc.chunks_len = (uint32_t)o;
	sc.body = (const uint8_t *)"B";
	sc.body_len = 1;
	ck_assert_int_eq(store_write(S, odd_put_txn, &sc), 0);
	lim.max_call_output = 6;
	lim.clock = fake_clock;
	fake_now = 30;
	j = journal_new(S, SID, &lim);
	ck_assert_int_eq(journal_load(j, &cause), 0);
	replay(j, a, &s);
	ck_assert_str_eq(s.buf, "e:[pyshelf: 9 bytes of output dropped]\n|"
	    "o:c|e:defgh|R:B|");
	ck_assert_int_eq(journal_find(j, a, &ci), 1);
	ck_assert_uint_eq(ci.output_bytes, 15);
	ck_assert_uint_eq(ci.output_dropped, 9);
	journal_free(j);
}
END_TEST


/* Persists from two threads at once, one of them ending calls detached
 * while it holds the journal's lock (as the worker does): no deadlock,
 * and once they are done the rows are exactly the calls listed. */
static journal *PJ;
static atomic_int pj_done;

static void *
thread_end_detached(void *arg)
{
	uint8_t id[16];
	unsigned i;

	(void)arg;
	for (i = 0; i < 300; i++) {
		cid(id, 1000 + i);
		journal_lock(PJ);
		ck_assert_int_eq(journal_begin(PJ, id, "x", 1), 0);
		out_str(PJ, id, JOURNAL_STDOUT, "out\n");
		journal_end(PJ, id, (const uint8_t *)"r", 1, 1);
		journal_unlock(PJ);
	}
	atomic_store(&pj_done, 1);
	return NULL;
}

static void *
thread_persist(void *arg)
{
	char *cause = NULL;

	(void)arg;
	while (!atomic_load(&pj_done)) {
		ck_assert_int_eq(journal_persist(PJ, &cause), 0);
		free(journal_list_json(PJ));
	}
	return NULL;
}

/* The call ids of SID's rows (looked up after the transaction: the
 * journal's lock is never taken inside one). */
struct ids {
	uint8_t v[64][16];
	int n;
};

static int
ids_fn(const store_call *c, int rc, const char *why, void *arg)
{
	struct ids *ids = arg;

	(void)why;
	ck_assert_int_eq(rc, 0);
	ck_assert_int_lt(ids->n, 64);
	memcpy(ids->v[ids->n++], c->id, 16);
	return 0;
}

static int
ids_txn(store_txn *t, void *arg)
{
	return calls_list(t, SID, ids_fn, arg);
}

START_TEST(test_persist_threads)
{
	journal_limits lim = {0};
	pthread_t a, b;
	char *cause = NULL;
	struct ids ids;
	int i;

	lim.max_calls = 50;
	PJ = journal_new(S, SID, &lim);
	atomic_store(&pj_done, 0);
	ck_assert_int_eq(pthread_create(&b, NULL, thread_persist, NULL), 0);
	ck_assert_int_eq(pthread_create(&a, NULL, thread_end_detached, NULL),
	    0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	ck_assert_int_eq(journal_persist(PJ, &cause), 0);
	ck_assert_uint_eq(journal_count(PJ), 50);
	ck_assert_int_eq(rows().n, 50);
	memset(&ids, 0, sizeof ids);
	ck_assert_int_eq(store_read(S, ids_txn, &ids), 0);
	ck_assert_int_eq(ids.n, 50);
	for (i = 0; i < ids.n; i++)
		ck_assert_int_eq(journal_find(PJ, ids.v[i], NULL), 1);
	journal_free(PJ);
}
END_TEST

/* --- Threads ------------------------------------------------------------- */

static journal *TJ;

static void *
thread_output(void *arg)
{
	uint8_t id[16];
	int i;

	cid(id, (unsigned)(uintptr_t)arg);
	for (i = 0; i < 20000; i++)
		journal_output(TJ, id, JOURNAL_STDOUT, "x", 1);
	return NULL;
}

static void *
thread_list(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < 300; i++) {
		char *s = journal_list_json(TJ);

		ck_assert_ptr_nonnull(s);
		free(s);
	}
	return NULL;
}

START_TEST(test_threads)
{
	journal_limits lim = {0};
	journal_call_info ci;
	pthread_t t[4];
	uint8_t id[16];
	unsigned i;

	lim.max_call_output = 5000;
	TJ = journal_new(NULL, SID, &lim);
	for (i = 0; i < 3; i++) {
		cid(id, i);
		journal_begin(TJ, id, "t", 1);
		ck_assert_int_eq(pthread_create(&t[i], NULL, thread_output,
		    (void *)(uintptr_t)i), 0);
	}
	ck_assert_int_eq(pthread_create(&t[3], NULL, thread_list, NULL), 0);
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < 3; i++) {
		cid(id, i);
		ck_assert_int_eq(journal_find(TJ, id, &ci), 1);
		ck_assert_uint_eq(ci.output_bytes, 20000);
		ck_assert_uint_eq(ci.output_dropped, 15000);
	}
	journal_free(TJ);
}
END_TEST

static void
teardown_store(void)
{
	store_close(S);
	S = NULL;
}

static Suite *
journal_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc;

	tc = tcase_create("Core");
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_begin_find_list);
	tcase_add_test(tc, test_summary_cut_utf8);
	tcase_add_test(tc, test_replay_done_running_lost);
	suite_add_tcase(s, tc);

	tc = tcase_create("Bounds");
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_output_bound_gap);
	tcase_add_test(tc, test_calls_bound_oldest_done_first);
	tcase_add_test(tc, test_bytes_bound_and_keep);
	tcase_add_test(tc, test_keep_each_at_its_time);
	suite_add_tcase(s, tc);

	tc = tcase_create("Store");
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_checked_fixture(tc, setup_store, teardown_store);
	tcase_add_test(tc, test_persist_detached_and_load);
	tcase_add_test(tc, test_persist_drops_rows);
	tcase_add_test(tc, test_load_skips_damaged);
	tcase_add_test(tc, test_load_odd_chunks);
	tcase_add_test(tc, test_persist_threads);
	suite_add_tcase(s, tc);

	tc = tcase_create("Threads");
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	if (tu_mkdtemp(base_dir, sizeof base_dir, tu_tmpdir(),
	    "check_journal") != 0) {
		fprintf(stderr, "check_journal: mkdtemp failed\n");
		return EXIT_FAILURE;
	}
	sr = srunner_create(journal_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tu_rmtree(base_dir);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
