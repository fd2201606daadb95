/*
 * check_wire.c - the check suite of the wire codec (proto/wire.c, conn.c).
 *
 * Core: every message type encoded and parsed back, repeated fields, u64
 * edge values, empty and large fields, many frames in one buffer, a
 * stream fed byte by byte, and wire_conn over socket pairs.
 * Limits: truncated, oversized and malformed frames, and every schema rule.
 * Golden: exact bytes of a few frames, so that a layout change without a
 * WIRE_PROTOCOL_VERSION bump fails here.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "wire.h"
#include "testutil.h"

#define MIB (1024u * 1024)

/* One field of a test message: a u64 or a byte string. */
struct fspec {
	uint8_t tag;          /* 0 ends the list */
	int is_u64;           /* v holds the value, else s[0..n) */
	uint64_t v;           /* the u64 value */
	const char *s;        /* the bytes */
	size_t n;             /* their length */
};

/* One test message. */
struct mspec {
	uint16_t type;        /* WIRE_MSG_* */
	uint64_t id;          /* request id */
	struct fspec f[14];   /* fields, in order, ended by tag 0 */
};

#define FU(t, val) { WIRE_TAG_##t, 1, (val), NULL, 0 }
#define FS(t, str) { WIRE_TAG_##t, 0, 0, (str), sizeof(str) - 1 }

#define SID16 "0123456789abcdef"
#define B32 "0123456789abcdef0123456789abcdef"

/* A valid example of every message type, with every optional field. */
static const struct mspec specs[] = {
	{ WIRE_MSG_HELLO, 1, { FU(VERSION, 1), FS(NAME, "check_wire") } },
	{ WIRE_MSG_HELLO, 1, { FU(VERSION, 1) } },
	{ WIRE_MSG_WELCOME, 1, { FU(VERSION, 1), FS(NAME, "pyshelfd"),
	    FU(PID, 4242), FU(MAX_FRAME, WIRE_DEFAULT_MAX_FRAME),
	    FS(SESSION_ID, SID16), FS(SESSION, "main"), FU(CREATED, 1),
	    FS(NONCE, B32) } },
	{ WIRE_MSG_AUTH, 2, { FS(MAC, B32) } },
	{ WIRE_MSG_ATTACH, 3, { FS(SESSION, "main"), FS(TOKEN, B32),
	    FU(CREATE, 1), FS(MODE, "c"), FU(LEASE_MS, 0) } },
	{ WIRE_MSG_ATTACHED, 3, { FS(SESSION_ID, SID16), FS(SESSION, "main"),
	    FU(CREATED, 0), FS(TOKEN, B32), FU(PID, 7), FU(MAX_FRAME, 65536),
	    FU(LEASE_MS, 1000), FU(EXPIRES_MS, 2000), FU(ENDED_MS, 3),
	    FS(REASON, "expired"), FS(MESSAGE, "m"), FU(SIGNAL, 9) } },
	{ WIRE_MSG_EXEC, 4, { FS(CODE, "def f(a, b):\n    return a + b\n"),
	    FS(FUNC, "f"), FU(ARG_HANDLE, 1), FS(ARG_PICKLE, "\x80\x05K#."),
	    FU(ARG_HANDLE, UINT64_MAX), FS(ARG_PICKLE, ""),
	    FU(WANT_VALUE, 1), FU(TIMEOUT_MS, 0), FS(CALL_ID, SID16) } },
	{ WIRE_MSG_EXEC, 5, { FS(CODE, "") } },
	{ WIRE_MSG_RESULT, 4, { FU(KIND, WIRE_KIND_EXCINFO), FU(HANDLE, 9),
	    FS(TYPE_NAME, "ZeroDivisionError"), FS(EXC_TYPE, "ZeroDivisionError"),
	    FS(MESSAGE, "division by zero"), FS(VOLATILE, "cannot pickle"),
	    FS(CALL_ID, SID16) } },
	{ WIRE_MSG_RESULT, 4, { FU(KIND, WIRE_KIND_DIRECT),
	    FS(VALUE, "\x80\x05K*.") } },
	{ WIRE_MSG_OUTPUT, 4, { FU(STREAM, 1), FS(DATA, "a\0b\n") } },
	{ WIRE_MSG_INTERRUPT, 4, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_INTERRUPT, 0, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_INTERRUPT, 0, { FU(HARD, 1) } },
	{ WIRE_MSG_CALLS, 20, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_CALL_RESULT, 21, { FS(CALL_ID, SID16), FU(WAIT, 1) } },
	{ WIRE_MSG_CTL_CONN, 0, { FS(DATA, "frame"), FU(PID, 1), FU(SIGNAL, 11),
	    FS(MESSAGE, "killed by signal 11") } },
	{ WIRE_MSG_CTL_READY, 0, { FU(PID, 2), FS(SESSION_ID, SID16),
	    FS(SESSION, "main") } },
	{ WIRE_MSG_CTL_STATE, 0, { FS(DATA, "{}") } },
	{ WIRE_MSG_CTL_IDLE, 0, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_CTL_IDLE_OK, 0, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_CTL_ENDED, 0, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_END_SESSION, 30, { FS(SESSION, "main") } },
	{ WIRE_MSG_SET_LEASE, 31, { FU(LEASE_MS, 60000) } },
	{ WIRE_MSG_OK, 31, { FU(LEASE_MS, 60000), FU(EXPIRES_MS, 9) } },
	{ WIRE_MSG_OK, 30, { FU(ENDED_MS, 9), FS(REASON, "ended") } },
	{ WIRE_MSG_CTL_QUERY, 0, { FU(QUERY, 7) } },
	{ WIRE_MSG_CTL_STOP, 0, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_SESSIONS, 22, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_RELEASE, 6, { FU(HANDLE, 1), FU(HANDLE, 2), FU(HANDLE, 3) } },
	{ WIRE_MSG_RELEASE, 6, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_GET, 7, { FS(KEY, "x"), FU(WANT_VALUE, 0) } },
	{ WIRE_MSG_SET, 8, { FS(KEY, "x"), FS(VALUE, "\x80\x05K\x01.") } },
	{ WIRE_MSG_SET, 9, { FS(KEY, "x"), FS(VALUE, "\x80\x05\x97."),
	    FU(OOB, 3), FU(OOB, 0) } },
	{ WIRE_MSG_GET, 9, { FS(KEY, "x"), FU(WANT_VALUE, 1), FU(OOB_OK, 1) } },
	{ WIRE_MSG_LONG, 10, { FU(LONG_TYPE, WIRE_MSG_SET),
	    FU(LONG_LEN, 1u << 31) } },
	{ WIRE_MSG_PART, 10, { FS(DATA, "abc") } },
	{ WIRE_MSG_DEL, 9, { FS(KEY, "x") } },
	{ WIRE_MSG_PIPES, 3, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_KEYS, 10, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_HANDLES, 11, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_LOST, 12, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_SYNC, 13, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_DETACH, 14, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_CLOSE, 15, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_STATS, 16, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_PING, 17, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_PONG, 17, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_OK, 18, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_LISTING, 12, { FS(KEY, "a"), FS(TYPE_NAME, "socket"),
	    FS(MESSAGE, "cannot pickle"), FS(KEY, "b"), FS(TYPE_NAME, "Lock"),
	    FS(MESSAGE, "cannot pickle"), FU(HANDLE, 3), FS(DATA, "{}") } },
	{ WIRE_MSG_LISTING, 10, { { 0, 0, 0, NULL, 0 } } },
	{ WIRE_MSG_ERROR, 19, { FU(ERRCODE, WIRE_ERR_NOT_FOUND),
	    FS(MESSAGE, "name 'x' is not defined") } },
	{ WIRE_MSG_ERROR, 19, { FU(ERRCODE, WIRE_ERR_WORKER_DIED),
	    FS(MESSAGE, "killed by signal 9"), FU(PID, 5), FU(SIGNAL, 9) } },
};
#define NSPECS (sizeof specs / sizeof specs[0])

/* Shared by the checked fixtures of Core and Limits. */
static wire_buf tb;
static wire_msg tm;

/* Checked fixture: an empty buffer and message for each test. */
static void
setup(void)
{
	wire_buf_init(&tb);
	wire_msg_init(&tm);
}

/* Checked fixture: free them (skipped by check when a test fails). */
static void
teardown(void)
{
	wire_buf_free(&tb);
	wire_msg_free(&tm);
}

/* Encode sp at the end of b; returns wire_end()'s result. */
static int
encode_spec(wire_buf *b, const struct mspec *sp)
{
	const struct fspec *f;

	wire_begin(b, sp->type, sp->id);
	for (f = sp->f; f->tag != 0; f++) {
		if (f->is_u64)
			wire_put_u64(b, f->tag, f->v);
		else
			wire_put_bytes(b, f->tag, f->s, f->n);
	}
	return wire_end(b);
}

/* Assert that m holds exactly sp, and passes its schema. */
static void
assert_spec(const wire_msg *m, const struct mspec *sp)
{
	const char *why = NULL;
	size_t i;

	ck_assert_uint_eq(m->type, sp->type);
	ck_assert_uint_eq(m->flags, 0);
	ck_assert_uint_eq(m->id, sp->id);
	ck_assert_msg(wire_msg_check(m, &why) == WIRE_OK, "%s: %s",
	    wire_msg_name(m->type), why);
	for (i = 0; sp->f[i].tag != 0; i++) {
		ck_assert_uint_lt(i, m->nfields);
		ck_assert_uint_eq(m->fields[i].tag, sp->f[i].tag);
		if (sp->f[i].is_u64) {
			ck_assert_uint_eq(m->fields[i].len, 8);
			ck_assert_uint_eq(wire_field_u64(&m->fields[i]),
			    sp->f[i].v);
		} else {
			ck_assert_uint_eq(m->fields[i].len, sp->f[i].n);
			ck_assert(sp->f[i].n == 0 || memcmp(m->fields[i].data,
			    sp->f[i].s, sp->f[i].n) == 0);
		}
	}
	ck_assert_uint_eq(i, m->nfields);
}

/* Every message type encodes and parses back to the same fields. */
START_TEST(test_roundtrip_each)
{
	size_t i, used;

	for (i = 0; i < NSPECS; i++) {
		wire_buf_reset(&tb);
		ck_assert_int_eq(encode_spec(&tb, &specs[i]), WIRE_OK);
		ck_assert_int_eq(wire_parse(tb.data, tb.len,
		    WIRE_DEFAULT_MAX_FRAME, &tm, &used), WIRE_OK);
		ck_assert_uint_eq(used, tb.len);
		assert_spec(&tm, &specs[i]);
	}
}
END_TEST

/* The specs cover every message type that has a name, and no more. */
START_TEST(test_all_types_covered)
{
	unsigned t, named = 0;
	size_t i;
	int found;

	for (t = 0; t <= 0xFFFF; t++) {
		if (wire_msg_name((uint16_t)t) == NULL)
			continue;
		named++;
		for (found = 0, i = 0; i < NSPECS; i++)
			found |= specs[i].type == t;
		ck_assert_msg(found, "no test message for %s",
		    wire_msg_name((uint16_t)t));
	}
	ck_assert_uint_eq(named, 41);
	ck_assert_str_eq(wire_msg_name(WIRE_MSG_EXEC), "EXEC");
	ck_assert_ptr_null(wire_msg_name(0));
}
END_TEST

/* All messages in one buffer come back one by one, in order. */
START_TEST(test_many_frames)
{
	size_t i, off = 0, used;

	for (i = 0; i < NSPECS; i++)
		ck_assert_int_eq(encode_spec(&tb, &specs[i]), WIRE_OK);
	for (i = 0; i < NSPECS; i++) {
		ck_assert_int_eq(wire_parse(tb.data + off, tb.len - off,
		    WIRE_DEFAULT_MAX_FRAME, &tm, &used), WIRE_OK);
		assert_spec(&tm, &specs[i]);
		off += used;
	}
	ck_assert_uint_eq(off, tb.len);
	ck_assert_int_eq(wire_parse(tb.data + off, 0, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_NEED_MORE);
}
END_TEST

/* Interleaved repeated arguments keep their order; RELEASE of many. */
START_TEST(test_repeated)
{
	size_t i, used;
	uint8_t pk[1] = { 0 };

	wire_begin(&tb, WIRE_MSG_EXEC, 1);
	wire_put_str(&tb, WIRE_TAG_CODE, "pass");
	for (i = 0; i < 100; i++) {
		pk[0] = (uint8_t)i;
		if (i % 3 == 0)
			wire_put_bytes(&tb, WIRE_TAG_ARG_PICKLE, pk, 1);
		else
			wire_put_u64(&tb, WIRE_TAG_ARG_HANDLE, i);
	}
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_OK);
	ck_assert_int_eq(wire_msg_check(&tm, NULL), WIRE_OK);
	ck_assert_uint_eq(tm.nfields, 101);
	for (i = 0; i < 100; i++) {
		const wire_field *f = &tm.fields[i + 1];
		if (i % 3 == 0) {
			ck_assert_uint_eq(f->tag, WIRE_TAG_ARG_PICKLE);
			ck_assert_uint_eq(f->data[0], i);
		} else {
			ck_assert_uint_eq(f->tag, WIRE_TAG_ARG_HANDLE);
			ck_assert_uint_eq(wire_field_u64(f), i);
		}
	}

	wire_buf_reset(&tb);
	wire_begin(&tb, WIRE_MSG_RELEASE, 2);
	for (i = 0; i < 5000; i++)
		wire_put_u64(&tb, WIRE_TAG_HANDLE, i + 1);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_OK);
	ck_assert_int_eq(wire_msg_check(&tm, NULL), WIRE_OK);
	ck_assert_uint_eq(tm.nfields, 5000);
	ck_assert_uint_eq(wire_field_u64(&tm.fields[4999]), 5000);
	ck_assert_uint_ge(tm.cap, 5000);
	ck_assert_uint_le(tm.cap, 10000);
}
END_TEST

/* u64 values and ids at the edges survive, byte order is big-endian. */
START_TEST(test_u64_edges)
{
	static const uint64_t v[] = { 0, 1, 0x7F, 0x80, 0xFF, 0x100,
	    0xFFFFFFFFu, 0x100000000u, INT64_MAX, (uint64_t)INT64_MAX + 1,
	    UINT64_MAX - 1, UINT64_MAX, 0x0123456789ABCDEFu };
	const size_t nv = sizeof v / sizeof v[0];
	uint8_t be[8];
	size_t i, used;

	for (i = 0; i < nv; i++) {
		wire_buf_reset(&tb);
		wire_begin(&tb, WIRE_MSG_RELEASE, v[i]);
		wire_put_u64(&tb, WIRE_TAG_HANDLE, v[i]);
		ck_assert_int_eq(wire_end(&tb), WIRE_OK);
		ck_assert_int_eq(wire_parse(tb.data, tb.len, 1024, &tm, &used),
		    WIRE_OK);
		ck_assert_uint_eq(tm.id, v[i]);
		ck_assert_uint_eq(wire_msg_u64(&tm, WIRE_TAG_HANDLE, 7), v[i]);
	}
	wire_be64_put(be, 0x0102030405060708u);
	ck_assert_mem_eq(be, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	ck_assert_uint_eq(wire_be64_get(be), 0x0102030405060708u);
	wire_be32_put(be, 0xA1B2C3D4u);
	ck_assert_mem_eq(be, "\xA1\xB2\xC3\xD4", 4);
	ck_assert_uint_eq(wire_be32_get(be), 0xA1B2C3D4u);
	wire_be16_put(be, 0xBEEF);
	ck_assert_mem_eq(be, "\xBE\xEF", 2);
	ck_assert_uint_eq(wire_be16_get(be), 0xBEEF);
	/* absent field: the default */
	ck_assert_uint_eq(wire_msg_u64(&tm, WIRE_TAG_KIND, 77), 77);
}
END_TEST

/* Empty bytes and strings are fields of length 0; strdup gives "". */
START_TEST(test_empty)
{
	const wire_field *f;
	size_t used;
	char *s;

	wire_begin(&tb, WIRE_MSG_OUTPUT, 1);
	wire_put_u64(&tb, WIRE_TAG_STREAM, 2);
	wire_put_bytes(&tb, WIRE_TAG_DATA, NULL, 0);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	wire_begin(&tb, WIRE_MSG_DEL, 2);
	wire_put_str(&tb, WIRE_TAG_KEY, "");
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_uint_eq(tb.len, 2 * WIRE_HEADER_SIZE +
	    3 * WIRE_FIELD_HEADER_SIZE + 8);

	ck_assert_int_eq(wire_parse(tb.data, tb.len, 64, &tm, &used), WIRE_OK);
	ck_assert_int_eq(wire_msg_check(&tm, NULL), WIRE_OK);
	ck_assert_ptr_nonnull(f = wire_msg_find(&tm, WIRE_TAG_DATA));
	ck_assert_uint_eq(f->len, 0);
	ck_assert_int_eq(wire_parse(tb.data + used, tb.len - used, 64, &tm,
	    &used), WIRE_OK);
	ck_assert_int_eq(wire_msg_check(&tm, NULL), WIRE_OK);
	ck_assert_ptr_nonnull(f = wire_msg_find(&tm, WIRE_TAG_KEY));
	ck_assert_ptr_nonnull(s = wire_field_strdup(f));
	ck_assert_str_eq(s, "");
	free(s);
	ck_assert_ptr_null(wire_msg_find(&tm, WIRE_TAG_VALUE));
}
END_TEST

/* A 10 MB value, written in place with wire_put_reserve. */
START_TEST(test_big_field)
{
	const size_t n = 10 * 1000 * 1000;
	const wire_field *f;
	uint8_t *p;
	size_t i, used;

	wire_begin(&tb, WIRE_MSG_SET, 1);
	wire_put_str(&tb, WIRE_TAG_KEY, "big");
	ck_assert_ptr_nonnull(p = wire_put_reserve(&tb, WIRE_TAG_VALUE, n));
	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + 7);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_uint_eq(wire_be32_get(tb.data), tb.len - WIRE_HEADER_SIZE);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, n, &tm, &used),
	    WIRE_E_TOO_BIG);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_OK);
	ck_assert_int_eq(wire_msg_check(&tm, NULL), WIRE_OK);
	f = wire_msg_find(&tm, WIRE_TAG_VALUE);
	ck_assert_uint_eq(f->len, n);
	for (i = 0; i < n; i += 4099)
		ck_assert_uint_eq(f->data[i], (uint8_t)(i * 31 + 7));
	ck_assert_uint_eq(f->data[n - 1], (uint8_t)((n - 1) * 31 + 7));
}
END_TEST

/* Fed one byte at a time, the parser says NEED_MORE until the end. */
START_TEST(test_byte_by_byte)
{
	size_t i, n, used = 0;
	uint8_t *copy;

	ck_assert_int_eq(encode_spec(&tb, &specs[6]), WIRE_OK); /* EXEC */
	n = tb.len;
	/* a fresh allocation per step lets valgrind/ASan see overreads */
	for (i = 0; i < n; i++) {
		copy = malloc(i > 0 ? i : 1);
		ck_assert_ptr_nonnull(copy);
		memcpy(copy, tb.data, i);
		ck_assert_int_eq(wire_parse(copy, i, WIRE_DEFAULT_MAX_FRAME,
		    &tm, &used), WIRE_NEED_MORE);
		ck_assert_uint_eq(tm.nfields, 0);
		free(copy);
	}
	ck_assert_int_eq(wire_parse(tb.data, n, WIRE_DEFAULT_MAX_FRAME, &tm,
	    &used), WIRE_OK);
	ck_assert_uint_eq(used, n);
	assert_spec(&tm, &specs[6]);
}
END_TEST

/* Sticky errors: a failed frame is dropped, earlier frames stay. */
START_TEST(test_sticky)
{
	size_t len1;

	ck_assert_int_eq(encode_spec(&tb, &specs[0]), WIRE_OK);
	len1 = tb.len;
	wire_begin(&tb, WIRE_MSG_SET, 2);
	wire_put_str(&tb, WIRE_TAG_KEY, "k");
	ck_assert_ptr_null(wire_put_reserve(&tb, WIRE_TAG_VALUE,
	    (size_t)UINT32_MAX + 1));
	ck_assert_int_eq(tb.err, WIRE_E_TOO_BIG);
	wire_put_u64(&tb, WIRE_TAG_KIND, 1); /* ignored */
	ck_assert_int_eq(wire_end(&tb), WIRE_E_TOO_BIG);
	ck_assert_uint_eq(tb.len, len1);
	ck_assert_int_eq(tb.err, 0);
	/* the buffer goes on */
	ck_assert_int_eq(encode_spec(&tb, &specs[0]), WIRE_OK);
	ck_assert_uint_eq(tb.len, 2 * len1);
	ck_assert_mem_eq(tb.data, tb.data + len1, len1);
}
END_TEST

/* Names and sentences for every code. */
START_TEST(test_names)
{
	int rc;

	for (rc = WIRE_E_TIMEOUT; rc <= WIRE_NEED_MORE; rc++)
		ck_assert_str_ne(wire_strerror(rc), "unknown wire error");
	ck_assert_str_eq(wire_strerror(-100), "unknown wire error");
	ck_assert_str_eq(wire_errcode_name(WIRE_ERR_MALFORMED), "MALFORMED");
	ck_assert_str_eq(wire_errcode_name(WIRE_ERR_UNKNOWN_HANDLE),
	    "UNKNOWN_HANDLE");
	ck_assert_str_eq(wire_errcode_name(WIRE_ERR_BAD_REQUEST),
	    "BAD_REQUEST");
	ck_assert_str_eq(wire_errcode_name(0), "?");
	ck_assert_str_eq(wire_errcode_name(WIRE_ERR_SESSION_BUSY),
	    "SESSION_BUSY");
	ck_assert_str_eq(wire_errcode_name(WIRE_ERR_READ_ONLY), "READ_ONLY");
	ck_assert_str_eq(wire_errcode_name(WIRE_ERR_WORKER_RESTARTED),
	    "WORKER_RESTARTED");
	ck_assert_str_eq(wire_errcode_name(22), "?");
	ck_assert_str_eq(wire_errcode_name(UINT64_MAX), "?");
	ck_assert_uint_eq(wire_errcode_for(WIRE_E_MALFORMED),
	    WIRE_ERR_MALFORMED);
	ck_assert_uint_eq(wire_errcode_for(WIRE_E_TOO_BIG), WIRE_ERR_TOO_BIG);
	ck_assert_uint_eq(wire_errcode_for(WIRE_E_UNKNOWN),
	    WIRE_ERR_UNKNOWN_TYPE);
	ck_assert_uint_eq(wire_errcode_for(WIRE_E_SCHEMA),
	    WIRE_ERR_BAD_REQUEST);
	ck_assert_uint_eq(wire_errcode_for(WIRE_E_NOMEM), WIRE_ERR_INTERNAL);
	ck_assert_str_eq(wire_tag_name(WIRE_TAG_CODE), "CODE");
	ck_assert_str_eq(wire_tag_name(WIRE_TAG_MAC), "MAC");
	ck_assert_ptr_null(wire_tag_name(0));
	ck_assert_str_eq(wire_tag_name(WIRE_TAG_CALL_ID), "CALL_ID");
	ck_assert_str_eq(wire_tag_name(WIRE_TAG_LONG_TYPE), "LONG_TYPE");
	ck_assert_str_eq(wire_tag_name(WIRE_TAG_OOB_OK), "OOB_OK");
	ck_assert_ptr_null(wire_tag_name(42));
	ck_assert_ptr_null(wire_tag_name(200));
}
END_TEST

/* A socket pair, both ends of which the test closes. */
static void
make_pair(int sv[2])
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

/* Milliseconds on the monotonic clock. */
static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Several frames in one write come out one read each; pending says so. */
START_TEST(test_conn_frames)
{
	wire_conn c;
	size_t i;
	int sv[2];

	make_pair(sv);
	wire_conn_init(&c, sv[0], sv[0], WIRE_DEFAULT_MAX_FRAME);
	for (i = 0; i < NSPECS; i++)
		ck_assert_int_eq(encode_spec(&tb, &specs[i]), WIRE_OK);
	ck_assert_int_eq(wire_write_all(sv[1], tb.data, tb.len), WIRE_OK);
	ck_assert_int_eq(wire_conn_pending(&c), 0);
	for (i = 0; i < NSPECS; i++) {
		ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_OK);
		assert_spec(&tm, &specs[i]);
		ck_assert_int_eq(wire_conn_pending(&c), i + 1 < NSPECS);
	}
	ck_assert_int_eq(wire_conn_read(&c, &tm, 0), WIRE_E_TIMEOUT);
	close(sv[1]);
	ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_E_EOF);
	wire_conn_free(&c);
	close(sv[0]);
}
END_TEST

/* Write a message as a LONG of parts of at most psz bytes to fd: the
 * body, then the buffers (the senders' way, wire-long.c). */
static void
write_long(int fd, const wire_buf *m, const uint8_t *bufs, size_t nb,
    size_t psz)
{
	uint8_t hdr[WIRE_PART_HEADER_SIZE];
	uint64_t id = wire_be64_get(m->data + 8);
	size_t body = m->len - WIRE_HEADER_SIZE, k, off;
	wire_buf h;

	wire_buf_init(&h);
	wire_long_head(&h, wire_be16_get(m->data + 4), id, body);
	ck_assert_int_eq(wire_end(&h), WIRE_OK);
	ck_assert_int_eq(wire_write_all(fd, h.data, h.len), WIRE_OK);
	wire_buf_free(&h);
	for (off = 0; off < body; off += k) {
		k = body - off < psz ? body - off : psz;
		wire_part_header(hdr, id, k);
		ck_assert_int_eq(wire_write_all(fd, hdr, sizeof hdr), WIRE_OK);
		ck_assert_int_eq(wire_write_all(fd, m->data + WIRE_HEADER_SIZE +
		    off, k), WIRE_OK);
	}
	for (off = 0; off < nb; off += k) {
		k = nb - off < psz ? nb - off : psz;
		wire_part_header(hdr, id, k);
		ck_assert_int_eq(wire_write_all(fd, hdr, sizeof hdr), WIRE_OK);
		ck_assert_int_eq(wire_write_all(fd, bufs + off, k), WIRE_OK);
	}
}

/* A SET with two out-of-band buffers as a LONG of small PARTs, read by
 * the frame (wire_conn_read + wire_long) and, for the buffers, straight
 * into place (wire_conn_read_part): the same message and bytes. */
START_TEST(test_long_roundtrip)
{
	static uint8_t bufs[3000];
	uint8_t got[2][2000];
	wire_conn c;
	wire_long l;
	const char *why = NULL;
	size_t i, n, idx, off, room;
	int sv[2], rc, direct;

	for (i = 0; i < sizeof bufs; i++)
		bufs[i] = (uint8_t)(i * 7);
	for (direct = 0; direct < 2; direct++) {
		make_pair(sv);
		wire_conn_init(&c, sv[0], sv[0], 64);
		wire_buf_reset(&tb);
		wire_begin(&tb, WIRE_MSG_SET, 77);
		wire_put_str(&tb, WIRE_TAG_KEY, "a-key-long-enough-to-split");
		wire_put_bytes(&tb, WIRE_TAG_VALUE, "\x80\x05\x97\x97.", 5);
		wire_put_u64(&tb, WIRE_TAG_OOB, 1000);
		wire_put_u64(&tb, WIRE_TAG_OOB, 2000);
		ck_assert_int_eq(wire_end(&tb), WIRE_OK);
		write_long(sv[1], &tb, bufs, sizeof bufs, wire_part_size(64));
		ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_OK);
		ck_assert_uint_eq(tm.type, WIRE_MSG_LONG);
		ck_assert_int_eq(wire_msg_check(&tm, &why), WIRE_OK);
		ck_assert_int_eq(wire_long_begin(&l, &tm, 1 << 20, &why),
		    WIRE_NEED_MORE);
		do {
			ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_OK);
			ck_assert_uint_eq(tm.type, WIRE_MSG_PART);
			rc = wire_long_add(&l, tm.fields[0].data,
			    tm.fields[0].len, &why);
		} while (rc == WIRE_NEED_MORE);
		ck_assert_int_eq(rc, WIRE_OK);
		ck_assert_int_eq(wire_long_parse(&l, &tm, &why), WIRE_OK);
		ck_assert_int_eq(wire_msg_check(&tm, &why), WIRE_OK);
		ck_assert_uint_eq(tm.type, WIRE_MSG_SET);
		ck_assert_uint_eq(tm.id, 77);
		ck_assert_uint_eq(l.nbufs, 2);
		ck_assert_uint_eq(l.buf_total, 3000);
		while ((room = wire_long_want(&l, &idx, &off)) > 0) {
			if (direct) {
				rc = wire_conn_read_part(&c, 77, got[idx] + off,
				    room, &n);
				if (rc == WIRE_OK) {
					wire_long_took(&l, n);
					continue;
				}
				/* a PART across the two buffers */
				ck_assert_int_eq(rc, WIRE_NEED_MORE);
			}
			ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_OK);
			for (i = 0; i < tm.fields[0].len; i += n) {
				room = wire_long_want(&l, &idx, &off);
				n = tm.fields[0].len - i < room ?
				    tm.fields[0].len - i : room;
				memcpy(got[idx] + off, tm.fields[0].data + i, n);
				wire_long_took(&l, n);
			}
		}
		ck_assert(memcmp(got[0], bufs, 1000) == 0);
		ck_assert(memcmp(got[1], bufs + 1000, 2000) == 0);
		wire_long_free(&l);
		/* what is not a PART of the id is left for wire_conn_read */
		wire_buf_reset(&tb);
		wire_begin(&tb, WIRE_MSG_PING, 78);
		ck_assert_int_eq(wire_end(&tb), WIRE_OK);
		ck_assert_int_eq(wire_write_all(sv[1], tb.data, tb.len),
		    WIRE_OK);
		ck_assert_int_eq(wire_conn_read_part(&c, 77, got[0], 100, &n),
		    WIRE_NEED_MORE);
		ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_OK);
		ck_assert_uint_eq(tm.type, WIRE_MSG_PING);
		wire_conn_free(&c);
		close(sv[0]);
		close(sv[1]);
	}
}
END_TEST

/* A frame split over writes: timeouts keep the partial bytes. */
START_TEST(test_conn_split_timeout)
{
	wire_conn c;
	long t0;
	int sv[2];

	make_pair(sv);
	wire_conn_init(&c, sv[0], sv[0], WIRE_DEFAULT_MAX_FRAME);
	ck_assert_int_eq(encode_spec(&tb, &specs[6]), WIRE_OK);
	t0 = now_ms();
	ck_assert_int_eq(wire_conn_read(&c, &tm, 60), WIRE_E_TIMEOUT);
	ck_assert_int_ge(now_ms() - t0, 59);
	ck_assert_int_eq(wire_write_all(sv[1], tb.data, 5), WIRE_OK);
	ck_assert_int_eq(wire_conn_read(&c, &tm, 20), WIRE_E_TIMEOUT);
	ck_assert_int_eq(wire_write_all(sv[1], tb.data + 5, 20), WIRE_OK);
	c.spin_us = 2000; /* the spin path times out the same way */
	ck_assert_int_eq(wire_conn_read(&c, &tm, 20), WIRE_E_TIMEOUT);
	ck_assert_int_eq(wire_conn_read(&c, &tm, 0), WIRE_E_TIMEOUT);
	ck_assert_int_eq(wire_write_all(sv[1], tb.data + 25, tb.len - 25),
	    WIRE_OK);
	ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_OK);
	assert_spec(&tm, &specs[6]);
	wire_conn_free(&c);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* A pipe (stdio's transport, and a server's PIPES) as sv[0] read end,
 * sv[1] write end. */
static void
make_pipe(int sv[2])
{
	ck_assert_int_eq(pipe(sv), 0);
}

/*
 * What wire_conn_read() says (within timeout_ms) of n bytes of data from
 * a peer that then closed its end, on a fresh connection from mk.
 */
static int
read_after_close(void (*mk)(int *), const void *data, size_t n,
    int timeout_ms)
{
	wire_conn c;
	wire_msg m;
	int sv[2], rc;

	mk(sv);
	wire_conn_init(&c, sv[0], sv[1], WIRE_DEFAULT_MAX_FRAME);
	ck_assert_int_eq(wire_write_all(sv[1], data, n), WIRE_OK);
	close(sv[1]);
	rc = wire_conn_read(&c, &m, timeout_ms);
	wire_conn_free(&c);
	close(sv[0]);
	return rc;
}

/* A peer that dies in the middle of a frame (EOF after part of a header
 * or of a body) closed the connection: TRUNCATED, not MALFORMED, on a
 * socket and on a pipe, and from a process SIGKILLed mid-write.  Bytes
 * that do not form a frame stay MALFORMED. */
START_TEST(test_conn_eof_mid_frame)
{
	static const uint8_t garbage[WIRE_HEADER_SIZE] = {
		0, 0, 0, 4, 0, 1, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1 };
	void (*pair[2])(int *) = { make_pair, make_pipe };
	struct pollfd pfd;
	wire_conn c;
	pid_t pid;
	int sv[2], st, k;

	ck_assert_int_eq(encode_spec(&tb, &specs[0]), WIRE_OK);
	for (k = 0; k < 2; k++) {
		/* the body cut short */
		ck_assert_int_eq(read_after_close(pair[k], tb.data,
		    tb.len - 1, 1000), WIRE_E_TRUNCATED);
		/* the header cut short */
		ck_assert_int_eq(read_after_close(pair[k], tb.data, 3, -1),
		    WIRE_E_TRUNCATED);

		/* a whole frame, then a clean end: EOF */
		pair[k](sv);
		wire_conn_init(&c, sv[0], sv[1], WIRE_DEFAULT_MAX_FRAME);
		ck_assert_int_eq(wire_write_all(sv[1], tb.data, tb.len),
		    WIRE_OK);
		close(sv[1]);
		ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_OK);
		ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_E_EOF);
		wire_conn_free(&c);
		close(sv[0]);

		/* garbage (flags not 0), then the end: still MALFORMED */
		ck_assert_int_eq(read_after_close(pair[k], garbage,
		    sizeof garbage, 1000), WIRE_E_MALFORMED);

		/* a writer SIGKILLed in the middle of a big frame */
		pair[k](sv);
		wire_buf_reset(&tb);
		wire_begin(&tb, WIRE_MSG_SET, 9);
		wire_put_str(&tb, WIRE_TAG_KEY, "big");
		ck_assert_ptr_nonnull(wire_put_reserve(&tb, WIRE_TAG_VALUE,
		    4u << 20));
		ck_assert_int_eq(wire_end(&tb), WIRE_OK);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			close(sv[0]);
			/* stops in write(): the reader is not reading yet */
			(void)wire_write_all(sv[1], tb.data, tb.len);
			_exit(0);
		}
		close(sv[1]);
		wire_conn_init(&c, sv[0], -1, WIRE_DEFAULT_MAX_FRAME);
		/* some of the frame is in, and the rest (more than a pipe
		 * or socket holds) cannot be: the writer is in its write() */
		pfd.fd = sv[0];
		pfd.events = POLLIN;
		ck_assert_int_eq(poll(&pfd, 1, 30000), 1);
		ck_assert_int_eq(kill(pid, SIGKILL), 0);
		ck_assert_int_eq(waitpid(pid, &st, 0), pid);
		ck_assert(WIFSIGNALED(st));
		ck_assert_int_eq(wire_conn_read(&c, &tm, 10000),
		    WIRE_E_TRUNCATED);
		wire_conn_free(&c);
		close(sv[0]);
		wire_buf_reset(&tb);
		ck_assert_int_eq(encode_spec(&tb, &specs[0]), WIRE_OK);
	}
}
END_TEST

/* A LONG's PART read straight into place (wire_conn_read_part) when the
 * peer dies in its data or in the next PART's header: TRUNCATED. */
START_TEST(test_conn_part_eof_mid_frame)
{
	uint8_t dst[100];
	wire_conn c;
	size_t n;
	int sv[2], cut;

	for (cut = 0; cut < 2; cut++) {
		make_pipe(sv);
		wire_conn_init(&c, sv[0], sv[1], WIRE_DEFAULT_MAX_FRAME);
		wire_buf_reset(&tb);
		wire_begin(&tb, WIRE_MSG_PART, 5);
		ck_assert_ptr_nonnull(wire_put_reserve(&tb, WIRE_TAG_DATA,
		    sizeof dst));
		ck_assert_int_eq(wire_end(&tb), WIRE_OK);
		/* cut 0: in the data; cut 1: in the header */
		ck_assert_int_eq(wire_write_all(sv[1], tb.data, cut == 0 ?
		    tb.len - 10 : WIRE_HEADER_SIZE + 2), WIRE_OK);
		close(sv[1]);
		ck_assert_int_eq(wire_conn_read_part(&c, 5, dst, sizeof dst,
		    &n), WIRE_E_TRUNCATED);
		wire_conn_free(&c);
		close(sv[0]);
	}
}
END_TEST

/* Child: write the frames of b to fd, with small pauses, and exit. */
static void
child_writer(int fd, const wire_buf *b, size_t chunk)
{
	size_t off = 0, n;

	while (off < b->len) {
		n = b->len - off < chunk ? b->len - off : chunk;
		if (wire_write_all(fd, b->data + off, n) != WIRE_OK)
			_exit(1);
		off += n;
	}
	_exit(0);
}

/* Big frames from another process grow the buffer; spinning reads. */
START_TEST(test_conn_big_from_child)
{
	const size_t n = 10 * 1000 * 1000;
	wire_conn c;
	uint8_t *p;
	pid_t pid;
	int sv[2], st, k;

	make_pair(sv);
	for (k = 0; k < 3; k++) {
		wire_begin(&tb, WIRE_MSG_SET, (uint64_t)k + 1);
		wire_put_str(&tb, WIRE_TAG_KEY, "big");
		p = wire_put_reserve(&tb, WIRE_TAG_VALUE, n);
		ck_assert_ptr_nonnull(p);
		memset(p, 'a' + k, n);
		ck_assert_int_eq(wire_end(&tb), WIRE_OK);
		ck_assert_int_eq(encode_spec(&tb, &specs[0]), WIRE_OK);
	}
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		child_writer(sv[1], &tb, 777777);
	}
	close(sv[1]);
	wire_conn_init(&c, sv[0], sv[0], WIRE_DEFAULT_MAX_FRAME);
	c.spin_us = 50;
	for (k = 0; k < 3; k++) {
		ck_assert_int_eq(wire_conn_read(&c, &tm, 10000), WIRE_OK);
		ck_assert_uint_eq(tm.type, WIRE_MSG_SET);
		ck_assert_uint_eq(tm.id, (uint64_t)k + 1);
		ck_assert_uint_eq(tm.fields[1].len, n);
		ck_assert_uint_eq(tm.fields[1].data[n - 1], 'a' + k);
		ck_assert_int_eq(wire_conn_read(&c, &tm, 10000), WIRE_OK);
		assert_spec(&tm, &specs[0]);
	}
	ck_assert_int_eq(wire_conn_read(&c, &tm, 10000), WIRE_E_EOF);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	wire_conn_free(&c);
	close(sv[0]);
}
END_TEST

/* wire_write_all over a pipe fills it and finishes once drained. */
START_TEST(test_write_all_pipe)
{
	static uint8_t big[1 << 20];
	static uint8_t got[1 << 20];
	size_t off = 0;
	ssize_t r;
	pid_t pid;
	int pfd[2], st;

	memset(big, 0x5A, sizeof big);
	ck_assert_int_eq(pipe(pfd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(pfd[0]);
		_exit(wire_write_all(pfd[1], big, sizeof big) == WIRE_OK ? 0 : 1);
	}
	close(pfd[1]);
	while ((r = read(pfd[0], got + off, sizeof got - off)) > 0)
		off += (size_t)r;
	ck_assert_uint_eq(off, sizeof big);
	ck_assert_mem_eq(got, big, sizeof big);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(pfd[0]);
	/* a closed descriptor is an I/O error */
	ck_assert_int_eq(wire_write_all(pfd[0], big, 1), WIRE_E_IO);
	ck_assert_int_eq(errno, EBADF);
}
END_TEST

/* A pipe grown for a long transfer and set back after (wire-pipe.c):
 * short writes leave it alone, a shrink refused while it holds more than
 * the idle size (EBUSY) is kept for the next boundary, a socket is left
 * alone, errno is kept throughout. */
START_TEST(test_pipe_size)
{
	static uint8_t fill[200 * 1024];
	size_t got;
	int pfd[2], sv[2];
	ssize_t r;

	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(fcntl(pfd[0], F_GETPIPE_SZ), WIRE_PIPE_IDLE);
	errno = 1234;
	wire_pipe_grow(pfd[1], WIRE_PIPE_LONG - 1);       /* short: no */
	ck_assert_int_eq(fcntl(pfd[0], F_GETPIPE_SZ), WIRE_PIPE_IDLE);
	wire_pipe_grow(pfd[1], WIRE_PIPE_LONG);
	ck_assert_int_eq(fcntl(pfd[0], F_GETPIPE_SZ), WIRE_PIPE_BIG);
	ck_assert_int_eq(errno, 1234);
	/* more than the idle size in it: not yet */
	ck_assert_int_eq(write(pfd[1], fill, sizeof fill), (ssize_t)sizeof fill);
	ck_assert_int_eq(wire_pipe_shrink(pfd[0]), -1);
	ck_assert_int_eq(errno, 1234);
	got = WIRE_PIPE_LONG;
	wire_pipe_settle(pfd[0], &got);
	ck_assert_uint_eq(got, WIRE_PIPE_LONG);            /* kept: retry */
	ck_assert_int_eq(fcntl(pfd[0], F_GETPIPE_SZ), WIRE_PIPE_BIG);
	/* drained: the next boundary sets it back */
	for (size_t n = 0; n < sizeof fill; n += (size_t)r)
		ck_assert_int_gt(r = read(pfd[0], fill, sizeof fill - n), 0);
	got = WIRE_PIPE_LONG - 1;                          /* too few bytes */
	wire_pipe_settle(pfd[0], &got);
	ck_assert_uint_eq(got, WIRE_PIPE_LONG - 1);
	ck_assert_int_eq(fcntl(pfd[0], F_GETPIPE_SZ), WIRE_PIPE_BIG);
	got = WIRE_PIPE_LONG;
	wire_pipe_settle(pfd[0], &got);
	ck_assert_uint_eq(got, 0);
	ck_assert_int_eq(fcntl(pfd[0], F_GETPIPE_SZ), WIRE_PIPE_IDLE);
	ck_assert_int_eq(wire_pipe_shrink(pfd[0]), 0);     /* small: nothing */
	ck_assert_int_eq(errno, 1234);
	close(pfd[0]);
	close(pfd[1]);
	/* a socket (and a closed descriptor) is no pipe: left alone */
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	wire_pipe_grow(sv[0], WIRE_PIPE_BIG);
	ck_assert_int_eq(wire_pipe_shrink(sv[0]), 0);
	got = WIRE_PIPE_BIG;
	wire_pipe_settle(sv[1], &got);
	ck_assert_uint_eq(got, 0);
	ck_assert_int_eq(wire_pipe_shrink(pfd[0]), 0);
	ck_assert_int_eq(errno, 1234);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* Build a raw frame header into p. */
static void
raw_header(uint8_t *p, uint32_t body, uint16_t type, uint16_t flags,
    uint64_t id)
{
	wire_be32_put(p, body);
	wire_be16_put(p + 4, type);
	wire_be16_put(p + 6, flags);
	wire_be64_put(p + 8, id);
}

/* Truncated headers and bodies need more; nothing is allocated. */
START_TEST(test_truncated)
{
	uint8_t f[WIRE_HEADER_SIZE + 13];
	size_t used, i, fl;

	raw_header(f, 13, WIRE_MSG_RELEASE, 0, 1);
	f[16] = WIRE_TAG_HANDLE;
	wire_be32_put(f + 17, 8);
	wire_be64_put(f + 21, 42);
	for (i = 0; i < sizeof f; i++) {
		ck_assert_int_eq(wire_parse(f, i, 1024, &tm, &used),
		    WIRE_NEED_MORE);
		ck_assert_int_eq(wire_peek(f, i, 1024, &fl),
		    i < WIRE_HEADER_SIZE ? WIRE_NEED_MORE : WIRE_OK);
	}
	ck_assert_ptr_null(tm.fields);
	ck_assert_int_eq(wire_peek(f, sizeof f, 1024, &fl), WIRE_OK);
	ck_assert_uint_eq(fl, sizeof f);
	ck_assert_int_eq(wire_parse(f, sizeof f, 1024, &tm, &used), WIRE_OK);
	ck_assert_uint_eq(wire_msg_u64(&tm, WIRE_TAG_HANDLE, 0), 42);
}
END_TEST

/* A length above the limit is refused from the header alone. */
START_TEST(test_oversized)
{
	uint8_t h[WIRE_HEADER_SIZE];
	size_t used, fl = 12345;
	wire_conn c;
	int sv[2];

	raw_header(h, UINT32_MAX, WIRE_MSG_EXEC, 0, 1);
	ck_assert_int_eq(wire_peek(h, sizeof h, WIRE_DEFAULT_MAX_FRAME, &fl),
	    WIRE_E_TOO_BIG);
	ck_assert_uint_eq(fl, 12345);
	ck_assert_int_eq(wire_parse(h, sizeof h, WIRE_DEFAULT_MAX_FRAME, &tm,
	    &used), WIRE_E_TOO_BIG);
	ck_assert_ptr_null(tm.fields);
	/* exactly at the limit is fine, one more is not */
	raw_header(h, WIRE_PREAUTH_MAX_FRAME, WIRE_MSG_HELLO, 0, 1);
	ck_assert_int_eq(wire_peek(h, sizeof h, WIRE_PREAUTH_MAX_FRAME, &fl),
	    WIRE_OK);
	ck_assert_uint_eq(fl, WIRE_PREAUTH_MAX_FRAME + WIRE_HEADER_SIZE);
	raw_header(h, WIRE_PREAUTH_MAX_FRAME + 1, WIRE_MSG_HELLO, 0, 1);
	ck_assert_int_eq(wire_peek(h, sizeof h, WIRE_PREAUTH_MAX_FRAME, &fl),
	    WIRE_E_TOO_BIG);

	/* through a connection: no buffer is grown for it */
	make_pair(sv);
	wire_conn_init(&c, sv[0], sv[0], WIRE_PREAUTH_MAX_FRAME);
	raw_header(h, 1u << 30, WIRE_MSG_HELLO, 0, 1);
	ck_assert_int_eq(wire_write_all(sv[1], h, sizeof h), WIRE_OK);
	ck_assert_int_eq(wire_conn_read(&c, &tm, 1000), WIRE_E_TOO_BIG);
	ck_assert_uint_lt(c.rcap, WIRE_PREAUTH_MAX_FRAME);
	ck_assert_int_ne(wire_conn_pending(&c), 0);
	wire_conn_free(&c);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* Fields that run past the body, or a cut field header, are malformed. */
START_TEST(test_field_overrun)
{
	uint8_t f[64];
	size_t used;

	memset(f, 0, sizeof f);
	raw_header(f, 13, WIRE_MSG_RELEASE, 0, 1);
	f[16] = WIRE_TAG_HANDLE;
	wire_be32_put(f + 17, 9); /* one byte past the body */
	ck_assert_int_eq(wire_parse(f, sizeof f, 1024, &tm, &used),
	    WIRE_E_MALFORMED);
	wire_be32_put(f + 17, UINT32_MAX);
	ck_assert_int_eq(wire_parse(f, sizeof f, 1024, &tm, &used),
	    WIRE_E_MALFORMED);
	raw_header(f, 4, WIRE_MSG_RELEASE, 0, 1); /* field header cut */
	ck_assert_int_eq(wire_parse(f, sizeof f, 1024, &tm, &used),
	    WIRE_E_MALFORMED);
	ck_assert_ptr_null(tm.fields);
	raw_header(f, 0, WIRE_MSG_PING, 0, 1); /* empty body is fine */
	ck_assert_int_eq(wire_parse(f, sizeof f, 1024, &tm, &used), WIRE_OK);
	ck_assert_uint_eq(used, WIRE_HEADER_SIZE);
	ck_assert_uint_eq(tm.nfields, 0);
}
END_TEST

/* Flags other than 0 are malformed in version 1. */
START_TEST(test_flags)
{
	uint8_t h[WIRE_HEADER_SIZE];
	size_t used, fl;
	uint16_t fv;

	for (fv = 1; fv != 0; fv <<= 1) {
		raw_header(h, 0, WIRE_MSG_PING, fv, 1);
		ck_assert_int_eq(wire_peek(h, sizeof h, 1024, &fl),
		    WIRE_E_MALFORMED);
		ck_assert_int_eq(wire_parse(h, sizeof h, 1024, &tm, &used),
		    WIRE_E_MALFORMED);
	}
	tm.type = WIRE_MSG_PING; /* a hand-built message with flags */
	tm.flags = 1;
	ck_assert_int_eq(wire_msg_check(&tm, NULL), WIRE_E_SCHEMA);
}
END_TEST

/* Unknown types parse but fail the check with WIRE_E_UNKNOWN. */
START_TEST(test_unknown_type)
{
	static const uint16_t t[] = { 0, 4, 0x00FF, 0x0107, 0x01F2, 0x7F01,
	    0x0E00, 0x0E06,
	    0xFFFF };
	const char *why = NULL;
	size_t i, used;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		wire_buf_reset(&tb);
		wire_begin(&tb, t[i], 1);
		wire_put_u64(&tb, WIRE_TAG_VERSION, 1);
		ck_assert_int_eq(wire_end(&tb), WIRE_OK);
		ck_assert_int_eq(wire_parse(tb.data, tb.len, 1024, &tm, &used),
		    WIRE_OK);
		ck_assert_int_eq(wire_msg_check(&tm, &why), WIRE_E_UNKNOWN);
		ck_assert_ptr_nonnull(why);
		ck_assert_ptr_null(wire_msg_name(t[i]));
	}
}
END_TEST

/* Parse a message built from sp leaving out field skip (or none, -1). */
static int
check_without(const struct mspec *sp, int skip, const char **why)
{
	const struct fspec *f;
	size_t used;
	int i;

	wire_buf_reset(&tb);
	wire_begin(&tb, sp->type, sp->id);
	for (i = 0, f = sp->f; f->tag != 0; f++, i++) {
		if (i == skip)
			continue;
		if (f->is_u64)
			wire_put_u64(&tb, f->tag, f->v);
		else
			wire_put_bytes(&tb, f->tag, f->s, f->n);
	}
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_OK);
	return wire_msg_check(&tm, why);
}

/* Leaving out each required field fails; optional ones may go. */
START_TEST(test_missing_required)
{
	static const struct { uint16_t type; uint8_t tag; } req[] = {
		{ WIRE_MSG_HELLO, WIRE_TAG_VERSION },
		{ WIRE_MSG_WELCOME, WIRE_TAG_VERSION },
		{ WIRE_MSG_AUTH, WIRE_TAG_MAC },
		{ WIRE_MSG_ATTACH, WIRE_TAG_SESSION },
		{ WIRE_MSG_ATTACHED, WIRE_TAG_SESSION_ID },
		{ WIRE_MSG_ATTACHED, WIRE_TAG_SESSION },
		{ WIRE_MSG_ATTACHED, WIRE_TAG_CREATED },
		{ WIRE_MSG_EXEC, WIRE_TAG_CODE },
		{ WIRE_MSG_RESULT, WIRE_TAG_KIND },
		{ WIRE_MSG_OUTPUT, WIRE_TAG_STREAM },
		{ WIRE_MSG_OUTPUT, WIRE_TAG_DATA },
		{ WIRE_MSG_GET, WIRE_TAG_KEY },
		{ WIRE_MSG_SET, WIRE_TAG_KEY },
		{ WIRE_MSG_SET, WIRE_TAG_VALUE },
		{ WIRE_MSG_DEL, WIRE_TAG_KEY },
		{ WIRE_MSG_ERROR, WIRE_TAG_ERRCODE },
		{ WIRE_MSG_ERROR, WIRE_TAG_MESSAGE },
		{ WIRE_MSG_CALL_RESULT, WIRE_TAG_CALL_ID },
		{ WIRE_MSG_CTL_CONN, WIRE_TAG_DATA },
		{ WIRE_MSG_CTL_READY, WIRE_TAG_PID },
		{ WIRE_MSG_CTL_READY, WIRE_TAG_SESSION_ID },
		{ WIRE_MSG_CTL_READY, WIRE_TAG_SESSION },
		{ WIRE_MSG_CTL_STATE, WIRE_TAG_DATA },
		{ WIRE_MSG_END_SESSION, WIRE_TAG_SESSION },
		{ WIRE_MSG_SET_LEASE, WIRE_TAG_LEASE_MS },
		{ WIRE_MSG_CTL_QUERY, WIRE_TAG_QUERY },
		{ WIRE_MSG_LONG, WIRE_TAG_LONG_TYPE },
		{ WIRE_MSG_LONG, WIRE_TAG_LONG_LEN },
		{ WIRE_MSG_PART, WIRE_TAG_DATA },
	};
	const size_t nreq = sizeof req / sizeof req[0];
	const char *why;
	size_t s, r;
	int i, required, rc;

	for (s = 0; s < NSPECS; s++) {
		for (i = 0; specs[s].f[i].tag != 0; i++) {
			required = 0;
			for (r = 0; r < nreq; r++)
				required |= req[r].type == specs[s].type &&
				    req[r].tag == specs[s].f[i].tag;
			why = NULL;
			rc = check_without(&specs[s], i, &why);
			/* repeated fields may go once: another remains */
			if (required)
				ck_assert_msg(rc == WIRE_E_SCHEMA, "%s without %s",
				    wire_msg_name(specs[s].type),
				    wire_tag_name(specs[s].f[i].tag));
			else
				ck_assert_msg(rc == WIRE_OK, "%s without %s: %s",
				    wire_msg_name(specs[s].type),
				    wire_tag_name(specs[s].f[i].tag), why);
		}
	}
}
END_TEST

/* Build type with tag/len/fill fields in order; return the check result. */
static int
check_raw(uint16_t type, const uint8_t *tags, const uint32_t *lens,
    size_t n, uint8_t fill)
{
	size_t i, used;
	uint8_t *p;

	wire_buf_reset(&tb);
	wire_begin(&tb, type, 1);
	for (i = 0; i < n; i++) {
		p = wire_put_reserve(&tb, tags[i], lens[i]);
		if (p != NULL && lens[i] > 0)
			memset(p, fill, lens[i]);
	}
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_OK);
	return wire_msg_check(&tm, NULL);
}

/* Repeats, foreign tags, wrong sizes and NULs break the schema. */
START_TEST(test_schema_rules)
{
	const uint8_t code_code[] = { WIRE_TAG_CODE, WIRE_TAG_CODE };
	const uint8_t code_tag[] = { WIRE_TAG_CODE, 0 };
	const uint8_t key[] = { WIRE_TAG_KEY };
	const uint8_t ver[] = { WIRE_TAG_VERSION };
	const uint8_t rel[] = { WIRE_TAG_HANDLE };
	const uint8_t att[] = { WIRE_TAG_SESSION, WIRE_TAG_TOKEN };
	const uint8_t aut[] = { WIRE_TAG_MAC };
	const uint32_t l2[] = { 1, 1 }, l1[] = { 1 }, l8[] = { 8 };
	uint8_t odd[2] = { WIRE_TAG_CODE, 0 };
	uint32_t l[2];
	const char *why;
	size_t used;
	unsigned t;

	ck_assert_int_eq(check_raw(WIRE_MSG_EXEC, code_code, l2, 2, 'x'),
	    WIRE_E_SCHEMA);
	/* every tag that EXEC does not allow */
	for (t = 0; t < 256; t++) {
		if (t == WIRE_TAG_CODE || t == WIRE_TAG_FUNC ||
		    t == WIRE_TAG_ARG_HANDLE || t == WIRE_TAG_ARG_PICKLE ||
		    t == WIRE_TAG_WANT_VALUE || t == WIRE_TAG_TIMEOUT_MS ||
		    t == WIRE_TAG_OOB || t == WIRE_TAG_OOB_OK)
			continue;
		odd[1] = (uint8_t)t;
		l[0] = 1;
		l[1] = 8;
		ck_assert_int_eq(check_raw(WIRE_MSG_EXEC, odd, l, 2, 'x'),
		    WIRE_E_SCHEMA);
	}
	ck_assert_int_eq(check_raw(WIRE_MSG_EXEC, code_tag, l2, 2, 'x'),
	    WIRE_E_SCHEMA);
	ck_assert_int_eq(check_raw(WIRE_MSG_KEYS, key, l1, 1, 'x'),
	    WIRE_E_SCHEMA);
	/* u64 of 7 and 9 bytes, and of 8 */
	l[0] = 7;
	ck_assert_int_eq(check_raw(WIRE_MSG_HELLO, ver, l, 1, 0),
	    WIRE_E_SCHEMA);
	l[0] = 9;
	ck_assert_int_eq(check_raw(WIRE_MSG_HELLO, ver, l, 1, 0),
	    WIRE_E_SCHEMA);
	ck_assert_int_eq(check_raw(WIRE_MSG_HELLO, ver, l8, 1, 0), WIRE_OK);
	l[0] = 7;
	ck_assert_int_eq(check_raw(WIRE_MSG_RELEASE, rel, l, 1, 0),
	    WIRE_E_SCHEMA);
	ck_assert_uint_eq(wire_msg_u64(&tm, WIRE_TAG_HANDLE, 99), 99);
	ck_assert_uint_eq(wire_field_u64(&tm.fields[0]), 0);
	/* fixed sizes */
	l[0] = 4;
	l[1] = 31;
	ck_assert_int_eq(check_raw(WIRE_MSG_ATTACH, att, l, 2, 'x'),
	    WIRE_E_SCHEMA);
	l[1] = 32;
	ck_assert_int_eq(check_raw(WIRE_MSG_ATTACH, att, l, 2, 'x'), WIRE_OK);
	l[0] = 33;
	ck_assert_int_eq(check_raw(WIRE_MSG_AUTH, aut, l, 1, 0),
	    WIRE_E_SCHEMA);
	/* NUL in a string, but fine in bytes */
	wire_buf_reset(&tb);
	wire_begin(&tb, WIRE_MSG_DEL, 1);
	wire_put_bytes(&tb, WIRE_TAG_KEY, "a\0b", 3);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, 1024, &tm, &used),
	    WIRE_OK);
	why = NULL;
	ck_assert_int_eq(wire_msg_check(&tm, &why), WIRE_E_SCHEMA);
	ck_assert_str_eq(why, "string field contains a NUL byte");
	ck_assert_ptr_null(wire_field_strdup(&tm.fields[0]));
}
END_TEST

/* WIRE_MAX_FIELDS fields parse; one more is refused before allocating. */
START_TEST(test_max_fields)
{
	size_t i, used;

	wire_begin(&tb, WIRE_MSG_RELEASE, 1);
	for (i = 0; i < WIRE_MAX_FIELDS; i++)
		wire_put_u64(&tb, WIRE_TAG_HANDLE, i);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_OK);
	ck_assert_uint_eq(tm.nfields, WIRE_MAX_FIELDS);
	ck_assert_uint_eq(tm.cap, WIRE_MAX_FIELDS);
	ck_assert_int_eq(wire_msg_check(&tm, NULL), WIRE_OK);
	wire_msg_free(&tm);

	wire_buf_reset(&tb);
	wire_begin(&tb, WIRE_MSG_RELEASE, 1);
	for (i = 0; i < WIRE_MAX_FIELDS + 1; i++)
		wire_put_bytes(&tb, WIRE_TAG_HANDLE, NULL, 0);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, WIRE_DEFAULT_MAX_FRAME,
	    &tm, &used), WIRE_E_TOO_BIG);
	ck_assert_ptr_null(tm.fields);
	ck_assert_uint_eq(tm.nfields, 0);
}
END_TEST

/* The body must fit a u32: checked before any byte is written. */
START_TEST(test_u32_body)
{
	/* Pretend the body is already 13 bytes short of 4 GiB: the 13-byte
	 * u64 field would fit, one byte more does not.  The check comes
	 * before any byte is written, so no 4 GiB buffer is needed. */
	wire_begin(&tb, WIRE_MSG_SET, 1);
	tb.len = WIRE_HEADER_SIZE + (size_t)UINT32_MAX - 12;
	wire_put_u64(&tb, WIRE_TAG_KIND, 1);
	ck_assert_int_eq(tb.err, WIRE_E_TOO_BIG);
	ck_assert_int_eq(wire_end(&tb), WIRE_E_TOO_BIG);
	ck_assert_uint_eq(tb.len, 0);

	wire_begin(&tb, WIRE_MSG_SET, 1);
	ck_assert_ptr_null(wire_put_reserve(&tb, WIRE_TAG_VALUE, UINT32_MAX));
	ck_assert_int_eq(wire_end(&tb), WIRE_E_TOO_BIG);
	ck_assert_uint_eq(tb.len, 0);
}
END_TEST

/* Calls out of order are caller bugs, reported and contained. */
START_TEST(test_misuse)
{
	wire_put_u64(&tb, WIRE_TAG_KIND, 1);
	ck_assert_int_eq(wire_end(&tb), WIRE_E_MALFORMED);
	ck_assert_int_eq(wire_end(&tb), WIRE_E_MALFORMED);
	wire_begin(&tb, WIRE_MSG_PING, 1);
	wire_begin(&tb, WIRE_MSG_PING, 2);
	ck_assert_int_eq(wire_end(&tb), WIRE_E_MALFORMED);
	ck_assert_uint_eq(tb.len, 0);
	wire_begin(&tb, WIRE_MSG_DEL, 1);
	wire_put_str(&tb, WIRE_TAG_KEY, NULL);
	ck_assert_int_eq(wire_end(&tb), WIRE_E_MALFORMED);
	ck_assert_uint_eq(tb.len, 0);
}
END_TEST

/* The golden frames, byte for byte (docs/PROTOCOL.md shows the first two). */
static const uint8_t golden_hello[] = {
	0x00, 0x00, 0x00, 0x14,  0x00, 0x01,  0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x01, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
	0x02, 0x00, 0x00, 0x00, 0x02,  'p', 'y',
};
static const uint8_t golden_exec[] = {
	0x00, 0x00, 0x00, 0x45,  0x01, 0x00,  0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
	0x06, 0x00, 0x00, 0x00, 0x16,
	'f', ' ', '=', ' ', 'l', 'a', 'm', 'b', 'd', 'a', ' ',
	'a', ',', ' ', 'b', ':', ' ', 'a', ' ', '+', ' ', 'b',
	0x07, 0x00, 0x00, 0x00, 0x01,  'f',
	0x08, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
	0x09, 0x00, 0x00, 0x00, 0x05,  0x80, 0x05, 0x4b, 0x23, 0x2e,
	0x0a, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
};
static const uint8_t golden_result[] = {
	0x00, 0x00, 0x00, 0x22,  0x01, 0x01,  0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
	0x0c, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
	0x0d, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08,
	0x0e, 0x00, 0x00, 0x00, 0x03,  'i', 'n', 't',
};
static const uint8_t golden_error[] = {
	0x00, 0x00, 0x00, 0x29,  0x7f, 0x00,  0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
	0x14, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0b,
	0x10, 0x00, 0x00, 0x00, 0x17,
	'n', 'a', 'm', 'e', ' ', '\'', 'x', '\'', ' ', 'i', 's', ' ',
	'n', 'o', 't', ' ', 'd', 'e', 'f', 'i', 'n', 'e', 'd',
};

/* Assert that b holds exactly the golden bytes g, and that they parse. */
static void
assert_golden(const wire_buf *b, const uint8_t *g, size_t n)
{
	wire_msg m;
	size_t used;

	ck_assert_uint_eq(b->len, n);
	ck_assert_mem_eq(b->data, g, n);
	wire_msg_init(&m);
	ck_assert_int_eq(wire_parse(g, n, WIRE_PREAUTH_MAX_FRAME, &m, &used),
	    WIRE_OK);
	ck_assert_uint_eq(used, n);
	ck_assert_int_eq(wire_msg_check(&m, NULL), WIRE_OK);
	wire_msg_free(&m);
}

/* The layout of version 3, byte for byte (the frames below are as in
 * version 1 but for the version number: versions 2 and 3 added fields,
 * messages and error codes). */
START_TEST(test_golden)
{
	wire_buf b;

	ck_assert_int_eq(WIRE_PROTOCOL_VERSION, 3);
	ck_assert_int_eq(WIRE_HEADER_SIZE, 16);
	ck_assert_int_eq(WIRE_FIELD_HEADER_SIZE, 5);

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_HELLO, 1);
	wire_put_u64(&b, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&b, WIRE_TAG_NAME, "py");
	ck_assert_int_eq(wire_end(&b), WIRE_OK);
	assert_golden(&b, golden_hello, sizeof golden_hello);

	wire_buf_reset(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 2);
	wire_put_str(&b, WIRE_TAG_CODE, "f = lambda a, b: a + b");
	wire_put_str(&b, WIRE_TAG_FUNC, "f");
	wire_put_u64(&b, WIRE_TAG_ARG_HANDLE, 7);
	wire_put_bytes(&b, WIRE_TAG_ARG_PICKLE, "\x80\x05K#.", 5);
	wire_put_u64(&b, WIRE_TAG_WANT_VALUE, 1);
	ck_assert_int_eq(wire_end(&b), WIRE_OK);
	assert_golden(&b, golden_exec, sizeof golden_exec);

	wire_buf_reset(&b);
	wire_begin(&b, WIRE_MSG_RESULT, 2);
	wire_put_u64(&b, WIRE_TAG_KIND, WIRE_KIND_WRAPPED);
	wire_put_u64(&b, WIRE_TAG_HANDLE, 8);
	wire_put_str(&b, WIRE_TAG_TYPE_NAME, "int");
	ck_assert_int_eq(wire_end(&b), WIRE_OK);
	assert_golden(&b, golden_result, sizeof golden_result);

	wire_buf_reset(&b);
	wire_begin(&b, WIRE_MSG_ERROR, 3);
	wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_NOT_FOUND);
	wire_put_str(&b, WIRE_TAG_MESSAGE, "name 'x' is not defined");
	ck_assert_int_eq(wire_end(&b), WIRE_OK);
	assert_golden(&b, golden_error, sizeof golden_error);
	wire_buf_free(&b);
}
END_TEST

/* A LONG's sizes are checked before anything is allocated, and PARTs
 * that lie about them are refused. */
START_TEST(test_long_limits)
{
	wire_long l;
	const char *why = NULL;
	size_t idx, off;

	/* a LONG carrying a LONG or a PART, or a type past u16 */
	wire_begin(&tb, WIRE_MSG_LONG, 1);
	wire_put_u64(&tb, WIRE_TAG_LONG_TYPE, WIRE_MSG_PART);
	wire_put_u64(&tb, WIRE_TAG_LONG_LEN, 1);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, 100, &tm, &off), WIRE_OK);
	ck_assert_int_eq(wire_long_begin(&l, &tm, 100, &why), WIRE_E_SCHEMA);
	ck_assert_ptr_nonnull(why);
	wire_long_free(&l);
	/* a body over the limit, and over 4 GiB */
	wire_buf_reset(&tb);
	wire_long_head(&tb, WIRE_MSG_SET, 2, 101);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, 100, &tm, &off), WIRE_OK);
	ck_assert_int_eq(wire_long_begin(&l, &tm, 100, &why), WIRE_E_TOO_BIG);
	wire_long_free(&l);
	wire_buf_reset(&tb);
	wire_long_head(&tb, WIRE_MSG_SET, 2, (uint64_t)UINT32_MAX + 1);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, 100, &tm, &off), WIRE_OK);
	ck_assert_int_eq(wire_long_begin(&l, &tm, SIZE_MAX, &why),
	    WIRE_E_TOO_BIG);
	wire_long_free(&l);
	/* a PART past LONG_LEN */
	wire_buf_reset(&tb);
	wire_long_head(&tb, WIRE_MSG_SET, 3, 4);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	ck_assert_int_eq(wire_parse(tb.data, tb.len, 100, &tm, &off), WIRE_OK);
	ck_assert_int_eq(wire_long_begin(&l, &tm, 100, &why), WIRE_NEED_MORE);
	ck_assert_int_eq(wire_long_add(&l, (const uint8_t *)"abcde", 5, &why),
	    WIRE_E_SCHEMA);
	ck_assert_int_eq(wire_long_add(&l, (const uint8_t *)"ab", 2, &why),
	    WIRE_NEED_MORE);
	ck_assert_int_eq(wire_long_add(&l, (const uint8_t *)"cd", 2, &why),
	    WIRE_OK);
	/* "abcd" is no body: a field runs past it */
	ck_assert_int_eq(wire_long_parse(&l, &tm, &why), WIRE_E_MALFORMED);
	wire_long_free(&l);
	/* buffers whose sum passes the limit, or overflows */
	wire_buf_reset(&tb);
	wire_begin(&tb, WIRE_MSG_SET, 4);
	wire_put_u64(&tb, WIRE_TAG_OOB, 60);
	wire_put_u64(&tb, WIRE_TAG_OOB, 60);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	memset(&l, 0, sizeof l);
	l.frame = tb.data;
	l.body_len = l.got = tb.len - WIRE_HEADER_SIZE;
	l.limit = 100;
	ck_assert_int_eq(wire_long_parse(&l, &tm, &why), WIRE_E_TOO_BIG);
	l.limit = 200;
	ck_assert_int_eq(wire_long_parse(&l, &tm, &why), WIRE_OK);
	ck_assert_uint_eq(l.nbufs, 2);
	ck_assert_uint_eq(wire_long_want(&l, &idx, &off), 60);
	wire_long_took(&l, 60);
	ck_assert_uint_eq(wire_long_want(&l, &idx, &off), 60);
	ck_assert_uint_eq(idx, 1);
	wire_long_took(&l, 60);
	ck_assert_uint_eq(wire_long_want(&l, &idx, &off), 0);
	free(l.buf_len);
	wire_buf_reset(&tb);
	wire_begin(&tb, WIRE_MSG_SET, 5);
	wire_put_u64(&tb, WIRE_TAG_OOB, UINT64_MAX);
	wire_put_u64(&tb, WIRE_TAG_OOB, 2);
	ck_assert_int_eq(wire_end(&tb), WIRE_OK);
	memset(&l, 0, sizeof l);
	l.frame = tb.data;
	l.body_len = l.got = tb.len - WIRE_HEADER_SIZE;
	l.limit = SIZE_MAX;
	ck_assert_int_eq(wire_long_parse(&l, &tm, &why), WIRE_E_TOO_BIG);
	free(l.buf_len);
	/* the PART size under a limit */
	ck_assert_uint_eq(wire_part_size(64), 64 - WIRE_FIELD_HEADER_SIZE);
	ck_assert_uint_eq(wire_part_size(WIRE_DEFAULT_MAX_FRAME), WIRE_PART_MAX);
	ck_assert_uint_eq(wire_part_size(2), 1);
}
END_TEST

/* Every number on the wire: renumbering any of them changes the layout. */
START_TEST(test_golden_numbers)
{
	static const unsigned msgs[] = {
		WIRE_MSG_HELLO, 0x0001, WIRE_MSG_WELCOME, 0x0002,
		WIRE_MSG_AUTH, 0x0003, WIRE_MSG_ATTACH, 0x0010,
		WIRE_MSG_ATTACHED, 0x0011, WIRE_MSG_EXEC, 0x0100,
		WIRE_MSG_RESULT, 0x0101, WIRE_MSG_OUTPUT, 0x0102,
		WIRE_MSG_INTERRUPT, 0x0103, WIRE_MSG_RELEASE, 0x0104,
		WIRE_MSG_CALLS, 0x0105, WIRE_MSG_CALL_RESULT, 0x0106,
		WIRE_MSG_CTL_CONN, 0x0E01, WIRE_MSG_CTL_READY, 0x0E02,
		WIRE_MSG_CTL_STATE, 0x0E03, WIRE_MSG_CTL_IDLE, 0x0E04,
		WIRE_MSG_CTL_IDLE_OK, 0x0E05, WIRE_MSG_CTL_ENDED, 0x0E10,
		WIRE_MSG_END_SESSION, 0x0201, WIRE_MSG_SET_LEASE, 0x0202,
		WIRE_MSG_CTL_QUERY, 0x0E20, WIRE_MSG_SESSIONS, 0x0200,
		WIRE_MSG_CTL_STOP, 0x0E30,
		WIRE_MSG_GET, 0x0110, WIRE_MSG_SET, 0x0111,
		WIRE_MSG_DEL, 0x0112, WIRE_MSG_KEYS, 0x0113,
		WIRE_MSG_HANDLES, 0x0114, WIRE_MSG_LOST, 0x0115,
		WIRE_MSG_SYNC, 0x0120, WIRE_MSG_DETACH, 0x0121,
		WIRE_MSG_CLOSE, 0x0122, WIRE_MSG_STATS, 0x0123,
		WIRE_MSG_PING, 0x0124, WIRE_MSG_PONG, 0x0125,
		WIRE_MSG_OK, 0x01F0, WIRE_MSG_LISTING, 0x01F1,
		WIRE_MSG_LONG, 0x0130, WIRE_MSG_PART, 0x0131,
		WIRE_MSG_ERROR, 0x7F00,
	};
	static const unsigned tags[] = {
		WIRE_TAG_VERSION, WIRE_TAG_NAME, WIRE_TAG_SESSION_ID,
		WIRE_TAG_TOKEN, WIRE_TAG_CREATE, WIRE_TAG_CODE, WIRE_TAG_FUNC,
		WIRE_TAG_ARG_HANDLE, WIRE_TAG_ARG_PICKLE, WIRE_TAG_WANT_VALUE,
		WIRE_TAG_TIMEOUT_MS, WIRE_TAG_KIND, WIRE_TAG_HANDLE,
		WIRE_TAG_TYPE_NAME, WIRE_TAG_EXC_TYPE, WIRE_TAG_MESSAGE,
		WIRE_TAG_VALUE, WIRE_TAG_STREAM, WIRE_TAG_DATA,
		WIRE_TAG_ERRCODE, WIRE_TAG_KEY, WIRE_TAG_VOLATILE, WIRE_TAG_PID,
		WIRE_TAG_MAX_FRAME, WIRE_TAG_SESSION, WIRE_TAG_CREATED,
		WIRE_TAG_NONCE, WIRE_TAG_MAC, WIRE_TAG_LEASE_MS,
		WIRE_TAG_EXPIRES_MS, WIRE_TAG_ENDED_MS, WIRE_TAG_REASON,
		WIRE_TAG_CALL_ID, WIRE_TAG_MODE, WIRE_TAG_HARD, WIRE_TAG_WAIT,
		WIRE_TAG_SIGNAL, WIRE_TAG_LONG_TYPE, WIRE_TAG_LONG_LEN,
		WIRE_TAG_OOB, WIRE_TAG_OOB_OK,
	};
	static const unsigned errs[] = {
		WIRE_ERR_MALFORMED, WIRE_ERR_TOO_BIG, WIRE_ERR_UNKNOWN_TYPE,
		WIRE_ERR_VERSION, WIRE_ERR_AUTH, WIRE_ERR_NO_SESSION,
		WIRE_ERR_SESSION_DEAD, WIRE_ERR_UNKNOWN_HANDLE,
		WIRE_ERR_UNPICKLE, WIRE_ERR_PICKLE, WIRE_ERR_NOT_FOUND,
		WIRE_ERR_STORE, WIRE_ERR_VOLATILE, WIRE_ERR_INTERNAL,
		WIRE_ERR_BAD_REQUEST, WIRE_ERR_SESSION_BUSY, WIRE_ERR_USAGE,
		WIRE_ERR_READ_ONLY, WIRE_ERR_UNKNOWN_CALL, WIRE_ERR_WORKER_DIED,
		WIRE_ERR_WORKER_RESTARTED,
	};
	size_t i;

	ck_assert_int_eq(WIRE_PROTOCOL_VERSION, 3);
	for (i = 0; i < sizeof msgs / sizeof msgs[0]; i += 2)
		ck_assert_uint_eq(msgs[i], msgs[i + 1]);
	for (i = 0; i < sizeof tags / sizeof tags[0]; i++)
		ck_assert_uint_eq(tags[i], i + 1);
	for (i = 0; i < sizeof errs / sizeof errs[0]; i++)
		ck_assert_uint_eq(errs[i], i + 1);
	/* the admin lane's tags start at 48 (38-47: other lanes') */
	ck_assert_uint_eq(WIRE_TAG_QUERY, 48);
	ck_assert_int_eq(WIRE_KIND_DIRECT, 1);
	ck_assert_int_eq(WIRE_KIND_WRAPPED, 2);
	ck_assert_int_eq(WIRE_KIND_EXCINFO, 3);
	ck_assert_uint_eq(WIRE_DEFAULT_MAX_FRAME, 64u * 1024 * 1024);
	ck_assert_uint_eq(WIRE_PREAUTH_MAX_FRAME, 64u * 1024);
}
END_TEST

/* The wire codec suite: Core, Limits and Golden. */
static Suite *
wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc;

	tc = tcase_create("Core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_roundtrip_each);
	tcase_add_test(tc, test_all_types_covered);
	tcase_add_test(tc, test_many_frames);
	tcase_add_test(tc, test_repeated);
	tcase_add_test(tc, test_u64_edges);
	tcase_add_test(tc, test_empty);
	tcase_add_test(tc, test_big_field);
	tcase_add_test(tc, test_byte_by_byte);
	tcase_add_test(tc, test_sticky);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_conn_frames);
	tcase_add_test(tc, test_conn_split_timeout);
	tcase_add_test(tc, test_conn_eof_mid_frame);
	tcase_add_test(tc, test_conn_part_eof_mid_frame);
	tcase_add_test(tc, test_conn_big_from_child);
	tcase_add_test(tc, test_write_all_pipe);
	tcase_add_test(tc, test_pipe_size);
	tcase_add_test(tc, test_long_roundtrip);
	suite_add_tcase(s, tc);

	tc = tcase_create("Limits");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_oversized);
	tcase_add_test(tc, test_field_overrun);
	tcase_add_test(tc, test_flags);
	tcase_add_test(tc, test_unknown_type);
	tcase_add_test(tc, test_missing_required);
	tcase_add_test(tc, test_schema_rules);
	tcase_add_test(tc, test_max_fields);
	tcase_add_test(tc, test_u32_body);
	tcase_add_test(tc, test_misuse);
	tcase_add_test(tc, test_long_limits);
	suite_add_tcase(s, tc);

	tc = tcase_create("Golden");
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_golden);
	tcase_add_test(tc, test_golden_numbers);
	suite_add_tcase(s, tc);
	return s;
}

/* Run the suite; fail unless every test passed. */
int
main(void)
{
	SRunner *sr = srunner_create(wire_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
