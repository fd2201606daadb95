/*
 * check_engine.c - the check suite of the backend: a real pyshelfd
 * (PYSHELFD, else ./pyshelfd) spawned over pipes and driven with the wire
 * codec, as a client in another language would.
 *
 * Core: handshake, blocks, shipped functions, handles, errors in shipped
 * code, streamed output, interrupt and timeout.
 * Limits: what a broken or hostile client sends: garbage bytes, oversized
 * and truncated frames, unknown types, missing fields, requests before
 * HELLO, a wrong version, unknown handles, unpicklable arguments.  The
 * backend answers with an error and keeps serving, or closes the
 * connection; it never crashes.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "wire.h"
#include "testutil.h"

/* A running backend and our ends of its pipes. */
struct be {
	pid_t pid;
	int to;              /* its stdin */
	int from;            /* its stdout */
	wire_conn conn;
	wire_msg m;
	char dir[64];
};

static struct be B;

/* Start pyshelfd on a fresh store. */
static void
be_start(void)
{
	const char *path = getenv("PYSHELFD");
	int in[2], out[2];
	char db[96];

	if (path == NULL)
		path = "./pyshelfd";
	strcpy(B.dir, "/tmp/check_engine.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(B.dir));
	snprintf(db, sizeof db, "%s/db", B.dir);
	ck_assert_int_eq(pipe(in), 0);
	ck_assert_int_eq(pipe(out), 0);
	B.pid = fork();
	ck_assert_int_ge(B.pid, 0);
	if (B.pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		execl(path, path, "--stdio", "--db", db, "--session", "t",
		    "--create", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	B.to = in[1];
	B.from = out[0];
	wire_conn_init(&B.conn, B.from, B.to, WIRE_DEFAULT_MAX_FRAME);
	wire_msg_init(&B.m);
}

/* Wait for the backend to exit; returns its status. */
static int
be_wait(void)
{
	int st = 0, i;

	close(B.to);
	for (i = 0; i < 1000; i++) {
		if (waitpid(B.pid, &st, WNOHANG) == B.pid)
			break;
		usleep(10000);
	}
	if (i == 1000) {
		kill(B.pid, SIGKILL);
		waitpid(B.pid, &st, 0);
	}
	close(B.from);
	wire_conn_free(&B.conn);
	wire_msg_free(&B.m);
	{
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", B.dir);
		if (system(cmd) != 0) {
			/* a leftover temp dir is not a test failure */
		}
	}
	return st;
}

/* Send one frame built by the caller. */
static void
be_send(wire_buf *b)
{
	ck_assert_int_eq(wire_end(b), WIRE_OK);
	ck_assert_int_eq(wire_write_all(B.to, b->data, b->len), WIRE_OK);
	wire_buf_free(b);
}

/* Read the next frame that is not OUTPUT (output is collected). */
static int
be_reply(char *out, size_t outsz)
{
	int rc;

	for (;;) {
		rc = wire_conn_read(&B.conn, &B.m, 30000);
		if (rc != WIRE_OK)
			return rc;
		if (B.m.type != WIRE_MSG_OUTPUT)
			return WIRE_OK;
		if (out != NULL) {
			const wire_field *d = wire_msg_find(&B.m, WIRE_TAG_DATA);
			size_t have = strlen(out);
			if (d != NULL && have + d->len < outsz) {
				memcpy(out + have, d->data, d->len);
				out[have + d->len] = '\0';
			}
		}
	}
}

static void
be_hello(void)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_HELLO, 1);
	wire_put_u64(&b, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&b, WIRE_TAG_NAME, "check_engine");
	be_send(&b);
	ck_assert_int_eq(be_reply(NULL, 0), WIRE_OK);
	ck_assert_int_eq(B.m.type, WIRE_MSG_WELCOME);
	ck_assert_uint_eq(B.m.id, 1);
	ck_assert_int_eq(wire_msg_check(&B.m, NULL), WIRE_OK);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_CREATED, 9), 1);
}

/* EXEC of a block; returns after the reply is in B.m. */
static void
be_exec(uint64_t id, const char *code, const char *func, uint64_t handle,
        uint64_t timeout_ms, char *out, size_t outsz)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, id);
	wire_put_str(&b, WIRE_TAG_CODE, code);
	if (func != NULL)
		wire_put_str(&b, WIRE_TAG_FUNC, func);
	if (handle != 0)
		wire_put_u64(&b, WIRE_TAG_ARG_HANDLE, handle);
	if (timeout_ms != 0)
		wire_put_u64(&b, WIRE_TAG_TIMEOUT_MS, timeout_ms);
	be_send(&b);
	ck_assert_int_eq(be_reply(out, outsz), WIRE_OK);
	ck_assert_uint_eq(B.m.id, id);
}

/* The reply's string field as a NUL-terminated copy in buf. */
static const char *
be_str(uint8_t tag, char *buf, size_t n)
{
	const wire_field *f = wire_msg_find(&B.m, tag);

	if (f == NULL || f->len >= n)
		return "";
	memcpy(buf, f->data, f->len);
	buf[f->len] = '\0';
	return buf;
}

START_TEST(test_handshake_and_block)
{
	char s[256], out[256] = "";

	be_start();
	be_hello();
	be_exec(2, "x = [1, 2]\nprint('hi', len(x))\nx", NULL, 0, 0, out,
	    sizeof out);
	ck_assert_int_eq(B.m.type, WIRE_MSG_RESULT);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_KIND, 0), WIRE_KIND_WRAPPED);
	ck_assert_str_eq(be_str(WIRE_TAG_TYPE_NAME, s, sizeof s), "list");
	ck_assert_str_eq(out, "hi 2\n");
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

START_TEST(test_function_with_handle)
{
	char s[256];
	uint64_t h;

	be_start();
	be_hello();
	be_exec(2, "[1, 2, 3]", NULL, 0, 0, NULL, 0);
	h = wire_msg_u64(&B.m, WIRE_TAG_HANDLE, 0);
	ck_assert_uint_ne(h, 0);
	be_exec(3, "def f(a):\n    return DirectValue(sum(a))\n", "f", h, 0,
	    NULL, 0);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_KIND, 0), WIRE_KIND_DIRECT);
	ck_assert_ptr_nonnull(wire_msg_find(&B.m, WIRE_TAG_VALUE));
	/* the same object gets the same handle back */
	be_exec(4, "def same(a):\n    return a\n", "same", h, 0, NULL, 0);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_HANDLE, 0), h);
	be_exec(5, "def boom():\n    raise KeyError('k')\n", "boom", 0, 0, NULL,
	    0);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_KIND, 0), WIRE_KIND_EXCINFO);
	ck_assert_str_eq(be_str(WIRE_TAG_EXC_TYPE, s, sizeof s), "KeyError");
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

START_TEST(test_timeout_and_interrupt)
{
	char s[256];
	wire_buf b;
	struct timespec t0, t1;

	be_start();
	be_hello();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	be_exec(2, "while True:\n    pass\n", NULL, 0, 300, NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_str_eq(be_str(WIRE_TAG_EXC_TYPE, s, sizeof s), "TimeoutError");
	/* the loop never ends by itself: a reply is the proof; the bound
	 * only tells a hang apart, however busy the machine */
	ck_assert_int_lt(t1.tv_sec - t0.tv_sec, 120);
	/* code that swallows the first interrupt still stops */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 3);
	wire_put_str(&b, WIRE_TAG_CODE, "import time\nn = 0\nwhile True:\n"
	    "    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n"
	    "        n += 1\n        if n > 1:\n            raise\n");
	be_send(&b);
	usleep(200000);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_INTERRUPT, 3);
	be_send(&b);
	ck_assert_int_eq(be_reply(NULL, 0), WIRE_OK);
	ck_assert_uint_eq(B.m.id, 3);
	ck_assert_str_eq(be_str(WIRE_TAG_EXC_TYPE, s, sizeof s),
	    "KeyboardInterrupt");
	/* still usable */
	be_exec(4, "n", NULL, 0, 0, NULL, 0);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_KIND, 0), WIRE_KIND_WRAPPED);
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

/* Expect an ERROR reply with code. */
static void
expect_error(uint64_t code)
{
	ck_assert_int_eq(be_reply(NULL, 0), WIRE_OK);
	ck_assert_int_eq(B.m.type, WIRE_MSG_ERROR);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_ERRCODE, 0), code);
	ck_assert_ptr_nonnull(wire_msg_find(&B.m, WIRE_TAG_MESSAGE));
}

START_TEST(test_request_errors_keep_serving)
{
	wire_buf b;

	be_start();
	/* before HELLO */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_KEYS, 7);
	be_send(&b);
	expect_error(WIRE_ERR_BAD_REQUEST);
	/* wrong version */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_HELLO, 8);
	wire_put_u64(&b, WIRE_TAG_VERSION, 99);
	be_send(&b);
	expect_error(WIRE_ERR_VERSION);
	be_hello();
	/* unknown type */
	wire_buf_init(&b);
	wire_begin(&b, 0x4242, 9);
	be_send(&b);
	expect_error(WIRE_ERR_UNKNOWN_TYPE);
	/* EXEC without CODE */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 10);
	wire_put_str(&b, WIRE_TAG_FUNC, "f");
	be_send(&b);
	expect_error(WIRE_ERR_BAD_REQUEST);
	/* unknown handle */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 11);
	wire_put_str(&b, WIRE_TAG_CODE, "def f(a):\n    return a\n");
	wire_put_str(&b, WIRE_TAG_FUNC, "f");
	wire_put_u64(&b, WIRE_TAG_ARG_HANDLE, 123456);
	be_send(&b);
	expect_error(WIRE_ERR_UNKNOWN_HANDLE);
	/* an argument that is not a pickle */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 12);
	wire_put_str(&b, WIRE_TAG_CODE, "def f(a):\n    return a\n");
	wire_put_str(&b, WIRE_TAG_FUNC, "f");
	wire_put_bytes(&b, WIRE_TAG_ARG_PICKLE, "garbage", 7);
	be_send(&b);
	expect_error(WIRE_ERR_UNPICKLE);
	/* a result asked for by value that cannot be pickled */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 13);
	wire_put_str(&b, WIRE_TAG_CODE, "(i for i in range(3))");
	wire_put_u64(&b, WIRE_TAG_WANT_VALUE, 1);
	be_send(&b);
	expect_error(WIRE_ERR_PICKLE);
	/* source that is not UTF-8 */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 14);
	wire_put_bytes(&b, WIRE_TAG_CODE, "\xff\xfe", 2);
	be_send(&b);
	expect_error(WIRE_ERR_BAD_REQUEST);
	/* a missing global */
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_GET, 15);
	wire_put_str(&b, WIRE_TAG_KEY, "nope");
	be_send(&b);
	expect_error(WIRE_ERR_NOT_FOUND);
	/* and it still serves */
	be_exec(16, "1 + 1", NULL, 0, 0, NULL, 0);
	ck_assert_int_eq(B.m.type, WIRE_MSG_RESULT);
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

START_TEST(test_garbage_closes_cleanly)
{
	static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

	be_start();
	be_hello();
	ck_assert_int_eq(wire_write_all(B.to, junk, sizeof junk - 1), WIRE_OK);
	/* 'GET ' as a length is ~1.2 GB: above the maximum frame */
	expect_error(WIRE_ERR_TOO_BIG);
	ck_assert_int_eq(wire_conn_read(&B.conn, &B.m, 10000), WIRE_E_EOF);
	/* exits 0: the workspace was checkpointed before leaving */
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

START_TEST(test_bad_flags_and_truncation)
{
	uint8_t hdr[16] = {0, 0, 0, 0, 0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2};
	uint8_t bad[21] = {0, 0, 0, 5, 0x01, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    3, 1, 0, 0, 0, 9};

	be_start();
	be_hello();
	/* a field whose length runs past the body: closed as malformed */
	ck_assert_int_eq(wire_write_all(B.to, bad, sizeof bad), WIRE_OK);
	expect_error(WIRE_ERR_MALFORMED);
	ck_assert_int_eq(be_wait() & 0x7f, 0); /* not killed by a signal */
	/* nonzero flags */
	be_start();
	be_hello();
	ck_assert_int_eq(wire_write_all(B.to, hdr, sizeof hdr), WIRE_OK);
	expect_error(WIRE_ERR_MALFORMED);
	ck_assert_int_eq(be_wait() & 0x7f, 0);
	/* a truncated frame, then the client goes away */
	be_start();
	be_hello();
	ck_assert_int_eq(wire_write_all(B.to, hdr, 9), WIRE_OK);
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

/* Send GET, SET or DEL of key (n bytes); expect an ERROR with code. */
static void
key_request(uint16_t type, uint64_t id, const char *key, size_t n,
            uint64_t code)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, type, id);
	wire_put_bytes(&b, WIRE_TAG_KEY, key, n);
	if (type == WIRE_MSG_SET)
		wire_put_bytes(&b, WIRE_TAG_VALUE, "\x80\x05K\x01.", 5);
	be_send(&b);
	expect_error(code);
	ck_assert_uint_eq(B.m.id, id);
}

/* A KEY that can never name a global (not UTF-8, empty, longer than
 * the store's key limit) is the client's error, BAD_REQUEST, for GET,
 * SET and DEL alike, also when no such global exists; a __x__ name is
 * not a global (NOT_FOUND), and DEL of __name__ deletes nothing. */
START_TEST(test_bad_keys_are_bad_requests)
{
	static const uint16_t types[3] = {WIRE_MSG_GET, WIRE_MSG_SET,
	    WIRE_MSG_DEL};
	static char longkey[600];
	uint64_t id = 2;
	int i;

	memset(longkey, 'k', sizeof longkey);
	be_start();
	be_hello();
	for (i = 0; i < 3; i++) {
		key_request(types[i], id++, "\xff\xfe", 2,
		    WIRE_ERR_BAD_REQUEST);
		key_request(types[i], id++, "", 0, WIRE_ERR_BAD_REQUEST);
		key_request(types[i], id++, longkey, sizeof longkey,
		    WIRE_ERR_BAD_REQUEST);
	}
	key_request(WIRE_MSG_DEL, id++, "__name__", 8, WIRE_ERR_NOT_FOUND);
	be_exec(id, "__name__", NULL, 0, 0, NULL, 0);
	ck_assert_int_eq(B.m.type, WIRE_MSG_RESULT);
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

/* Before HELLO, a body over 64 KiB (PROTOCOL.md, section 8) is refused
 * unread; after it, the same size is an ordinary request. */
START_TEST(test_preauth_frame_limit)
{
	static char name[100 * 1024];
	wire_buf b;

	memset(name, 'n', sizeof name - 1);
	be_start();
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_HELLO, 1);
	wire_put_u64(&b, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&b, WIRE_TAG_NAME, name);
	ck_assert_int_eq(wire_end(&b), WIRE_OK);
	/* the backend refuses after the header and closes: the rest of the
	 * body may not get into the pipe (EPIPE), which is fine */
	(void)wire_write_all(B.to, b.data, b.len);
	wire_buf_free(&b);
	expect_error(WIRE_ERR_TOO_BIG);
	ck_assert_int_eq(wire_conn_read(&B.conn, &B.m, 10000), WIRE_E_EOF);
	ck_assert_int_eq(be_wait() & 0x7f, 0);

	be_start();
	be_hello();
	name[sizeof name - 1] = '\0';
	memcpy(name, "len('", 5);
	memcpy(name + sizeof name - 3, "')", 2);
	be_exec(2, name, NULL, 0, 0, NULL, 0);
	ck_assert_int_eq(B.m.type, WIRE_MSG_RESULT);
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

/* PING before HELLO is answered in its turn (an error: HELLO comes
 * first), never before WELCOME. */
START_TEST(test_ping_before_hello)
{
	wire_buf b;

	be_start();
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_PING, 5);
	be_send(&b);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_HELLO, 1);
	wire_put_u64(&b, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&b, WIRE_TAG_NAME, "check_engine");
	be_send(&b);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_PING, 6);
	be_send(&b);
	expect_error(WIRE_ERR_BAD_REQUEST);
	ck_assert_uint_eq(B.m.id, 5);
	ck_assert_int_eq(be_reply(NULL, 0), WIRE_OK);
	ck_assert_int_eq(B.m.type, WIRE_MSG_WELCOME);
	ck_assert_int_eq(be_reply(NULL, 0), WIRE_OK);
	ck_assert_int_eq(B.m.type, WIRE_MSG_PONG);
	ck_assert_uint_eq(B.m.id, 6);
	ck_assert_int_eq(WEXITSTATUS(be_wait()), 0);
}
END_TEST

/* A malformed frame while code runs: the closing ERROR is the last frame
 * the client gets (no result of the interrupted request after it). */
START_TEST(test_nothing_after_closing_error)
{
	static const uint8_t bad[21] = {0, 0, 0, 5, 0x01, 0x24, 0, 0, 0, 0,
	    0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 9};
	wire_buf b;

	be_start();
	be_hello();
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_EXEC, 2);
	wire_put_str(&b, WIRE_TAG_CODE, "import time\nprint('started', "
	    "flush=True)\nwhile True:\n    time.sleep(0.01)\n");
	be_send(&b);
	/* its output first: the code runs */
	ck_assert_int_eq(wire_conn_read(&B.conn, &B.m, 30000), WIRE_OK);
	ck_assert_int_eq(B.m.type, WIRE_MSG_OUTPUT);
	ck_assert_int_eq(wire_write_all(B.to, bad, sizeof bad), WIRE_OK);
	/* more of its output may come first (print's end, as a frame of
	 * its own), then the closing ERROR */
	do
		ck_assert_int_eq(wire_conn_read(&B.conn, &B.m, 30000), WIRE_OK);
	while (B.m.type == WIRE_MSG_OUTPUT);
	ck_assert_int_eq(B.m.type, WIRE_MSG_ERROR);
	ck_assert_uint_eq(wire_msg_u64(&B.m, WIRE_TAG_ERRCODE, 0),
	    WIRE_ERR_MALFORMED);
	ck_assert_int_eq(wire_conn_read(&B.conn, &B.m, 30000), WIRE_E_EOF);
	ck_assert_int_eq(be_wait() & 0x7f, 0);
}
END_TEST

static Suite *
engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *core = tcase_create("Core"), *lim = tcase_create("Limits");

	tcase_set_timeout(core, TU_TIMEOUT);
	tcase_set_timeout(lim, TU_TIMEOUT);
	tcase_add_test(core, test_handshake_and_block);
	tcase_add_test(core, test_function_with_handle);
	tcase_add_test(core, test_timeout_and_interrupt);
	tcase_add_test(lim, test_request_errors_keep_serving);
	tcase_add_test(lim, test_garbage_closes_cleanly);
	tcase_add_test(lim, test_bad_flags_and_truncation);
	tcase_add_test(lim, test_preauth_frame_limit);
	tcase_add_test(lim, test_bad_keys_are_bad_requests);
	tcase_add_test(lim, test_ping_before_hello);
	tcase_add_test(lim, test_nothing_after_closing_error);
	suite_add_tcase(s, core);
	suite_add_tcase(s, lim);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(engine_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
