/*
 * check_client.c - libpyshelf without a real backend.
 *
 * Error strings, argument checks, spawning a backend that does not exist
 * or exits at once, and the framing of every request against a fake
 * backend: a forked child on the other end of a socketpair that speaks the
 * protocol with the codec (proto/wire.h) and answers from a script chosen
 * by the CODE of each EXEC ("output", "loop", "stale", "die"...).
 *
 * Each test runs in its own process (check's fork mode); the fixture
 * starts the fake backend and connects.  The fake exits when its end of
 * the socket closes, so a failed test that skips the teardown leaves
 * nothing behind.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pyshelf.h"
#include "wire.h"
#include "testutil.h"

/* The connection to the fake backend, set up by the fixture. */
static pyshelf_conn *conn;
static pid_t fake_pid = -1;

/* --- the fake backend -------------------------------------------------------- */

static void fake_serve(int) __attribute__((noreturn));

/* Finish the frame in b and write it; the fake dies on any failure. */
static void
fake_send(int fd, wire_buf *b)
{
	if (wire_end(b) != WIRE_OK || wire_write_all(fd, b->data, b->len) !=
	    WIRE_OK)
		_exit(90);
	wire_buf_reset(b);
}

/* RESULT kind 1 with VALUE v. */
static void
fake_direct(int fd, wire_buf *b, uint64_t id, const char *v)
{
	wire_begin(b, WIRE_MSG_RESULT, id);
	wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_DIRECT);
	wire_put_bytes(b, WIRE_TAG_VALUE, v, strlen(v));
	fake_send(fd, b);
}

/* An empty reply (OK, PONG) or one with a single field. */
static void
fake_empty(int fd, wire_buf *b, uint16_t type, uint64_t id)
{
	wire_begin(b, type, id);
	fake_send(fd, b);
}

/* ERROR{code, msg}. */
static void
fake_error(int fd, wire_buf *b, uint64_t id, uint64_t code, const char *msg)
{
	wire_begin(b, WIRE_MSG_ERROR, id);
	wire_put_u64(b, WIRE_TAG_ERRCODE, code);
	wire_put_str(b, WIRE_TAG_MESSAGE, msg);
	fake_send(fd, b);
}

/* OUTPUT{stream, s}. */
static void
fake_output(int fd, wire_buf *b, uint64_t id, int stream, const char *s)
{
	wire_begin(b, WIRE_MSG_OUTPUT, id);
	wire_put_u64(b, WIRE_TAG_STREAM, (uint64_t)stream);
	wire_put_bytes(b, WIRE_TAG_DATA, s, strlen(s));
	fake_send(fd, b);
}

/* Describe an EXEC's fields as text: what "args" sends back.  Returns
 * its length (pickles are copied raw). */
static size_t
fake_describe(const wire_msg *m, char *out, size_t cap)
{
	size_t i, n = 0;
	const wire_field *f;

	out[0] = '\0';
	for (i = 0; i < m->nfields && n < cap; i++) {
		f = &m->fields[i];
		switch (f->tag) {
		case WIRE_TAG_FUNC:
			n += (size_t)snprintf(out + n, cap - n, "f=%.*s;",
			    (int)f->len, (const char *)f->data);
			break;
		case WIRE_TAG_ARG_HANDLE:
			n += (size_t)snprintf(out + n, cap - n, "h%llu;",
			    (unsigned long long)wire_field_u64(f));
			break;
		case WIRE_TAG_ARG_PICKLE:       /* raw: a pickle may hold NULs */
			if (n + f->len + 2 >= cap)
				break;
			out[n++] = 'p';
			memcpy(out + n, f->data, f->len);
			n += f->len;
			n += (size_t)snprintf(out + n, cap - n, ";");
			break;
		case WIRE_TAG_WANT_VALUE:
			n += (size_t)snprintf(out + n, cap - n, "w%llu;",
			    (unsigned long long)wire_field_u64(f));
			break;
		case WIRE_TAG_TIMEOUT_MS:
			n += (size_t)snprintf(out + n, cap - n, "t%llu;",
			    (unsigned long long)wire_field_u64(f));
			break;
		}
	}
	return n < cap ? n : cap - 1;
}

/* Start a RESULT of 1000 bytes, in one frame or (as_long) as a LONG
 * whose one PART carries the body, and die half way through the frame
 * or the PART: a backend killed while it writes a reply. */
static void
fake_die_mid_reply(int fd, wire_buf *b, uint64_t id, int as_long)
{
	uint8_t hdr[WIRE_PART_HEADER_SIZE], *v;
	size_t body;
	wire_buf h;

	wire_begin(b, WIRE_MSG_RESULT, id);
	wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_DIRECT);
	if ((v = wire_put_reserve(b, WIRE_TAG_VALUE, 1000)) == NULL)
		_exit(95);
	memset(v, 'x', 1000);
	if (wire_end(b) != WIRE_OK)
		_exit(95);
	body = b->len - WIRE_HEADER_SIZE;
	if (as_long) {
		wire_buf_init(&h);
		wire_long_head(&h, WIRE_MSG_RESULT, id, body);
		wire_part_header(hdr, id, body);
		if (wire_end(&h) != WIRE_OK ||
		    wire_write_all(fd, h.data, h.len) != WIRE_OK ||
		    wire_write_all(fd, hdr, sizeof hdr) != WIRE_OK ||
		    wire_write_all(fd, b->data + WIRE_HEADER_SIZE,
		    body / 2) != WIRE_OK)
			_exit(96);
	} else if (wire_write_all(fd, b->data, b->len / 2) != WIRE_OK)
		_exit(96);
	_exit(0);
}

/* Run one EXEC by its CODE. */
static void
fake_exec(int fd, wire_conn *wc, wire_buf *b, const wire_msg *m,
    char *released)
{
	const wire_field *code = wire_msg_find(m, WIRE_TAG_CODE);
	uint64_t id = m->id;
	char text[512], desc[512];
	wire_msg im;
	int rc;

	snprintf(text, sizeof text, "%.*s", (int)code->len,
	    (const char *)code->data);
	if (strcmp(text, "output") == 0) {
		fake_output(fd, b, id, 1, "hello ");
		fake_output(fd, b, id, 2, "err");
		fake_output(fd, b, id, 1, "world");
		fake_direct(fd, b, id, "PICKLE");
	} else if (strcmp(text, "wrapped") == 0) {
		wire_begin(b, WIRE_MSG_RESULT, id);
		wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_WRAPPED);
		wire_put_u64(b, WIRE_TAG_HANDLE, 7);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "list");
		wire_put_str(b, WIRE_TAG_VOLATILE, "why");
		fake_send(fd, b);
	} else if (strcmp(text, "text") == 0) {
		wire_begin(b, WIRE_MSG_RESULT, id);
		wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_TEXT);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "dict");
		wire_put_str(b, WIRE_TAG_VALUE, "{\"a\": [1, 2]}");
		fake_send(fd, b);
	} else if (strcmp(text, "raise") == 0) {
		wire_begin(b, WIRE_MSG_RESULT, id);
		wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_EXCINFO);
		wire_put_u64(b, WIRE_TAG_HANDLE, 8);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "tuple");
		wire_put_str(b, WIRE_TAG_EXC_TYPE, "ValueError");
		wire_put_str(b, WIRE_TAG_MESSAGE, "bad");
		fake_send(fd, b);
	} else if (strcmp(text, "raise_tb") == 0) {
		/* EXCINFO with its traceback in VALUE */
		wire_begin(b, WIRE_MSG_RESULT, id);
		wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_EXCINFO);
		wire_put_u64(b, WIRE_TAG_HANDLE, 10);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "tuple");
		wire_put_str(b, WIRE_TAG_EXC_TYPE, "ValueError");
		wire_put_str(b, WIRE_TAG_MESSAGE, "bad");
		wire_put_str(b, WIRE_TAG_VALUE, "Traceback (most recent call "
		    "last):\nValueError: bad\n");
		fake_send(fd, b);
	} else if (strcmp(text, "outdie") == 0) {
		fake_output(fd, b, id, 1, "started");
		_exit(0);
	} else if (strcmp(text, "error") == 0) {
		fake_error(fd, b, id, WIRE_ERR_UNKNOWN_HANDLE, "unknown handle 5");
	} else if (strcmp(text, "args") == 0) {
		wire_begin(b, WIRE_MSG_RESULT, id);
		wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_DIRECT);
		wire_put_bytes(b, WIRE_TAG_VALUE, desc,
		    fake_describe(m, desc, sizeof desc));
		fake_send(fd, b);
	} else if (strcmp(text, "released") == 0) {
		fake_direct(fd, b, id, released);
	} else if (strcmp(text, "loop") == 0) {
		/* Run until an INTERRUPT names this exec. */
		wire_msg_init(&im);
		for (;;) {
			if ((rc = wire_conn_read(wc, &im, -1)) != WIRE_OK)
				_exit(rc == WIRE_E_EOF ? 0 : 91);
			if (im.type == WIRE_MSG_INTERRUPT && im.id == id)
				break;
		}
		wire_msg_free(&im);
		wire_begin(b, WIRE_MSG_RESULT, id);
		wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_EXCINFO);
		wire_put_u64(b, WIRE_TAG_HANDLE, 9);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "tuple");
		wire_put_str(b, WIRE_TAG_EXC_TYPE, "KeyboardInterrupt");
		fake_send(fd, b);
	} else if (strcmp(text, "slow") == 0) {
		usleep(300000);
		fake_output(fd, b, id, 1, "late output");
		fake_direct(fd, b, id, "late");
	} else if (strcmp(text, "stale") == 0) {
		fake_direct(fd, b, id - 1, "stale");
		fake_direct(fd, b, id, "fresh");
	} else if (strcmp(text, "wrongid") == 0) {
		fake_direct(fd, b, id + 5, "future");
	} else if (strcmp(text, "garbage") == 0) {
		/* A header with nonzero flags: malformed. */
		static const uint8_t junk[16] = { 0, 0, 0, 0, 1, 1, 0xff, 0xff };
		if (wire_write_all(fd, junk, sizeof junk) != WIRE_OK)
			_exit(92);
	} else if (strcmp(text, "badkind") == 0) {
		wire_begin(b, WIRE_MSG_RESULT, id);
		wire_put_u64(b, WIRE_TAG_KIND, 42);
		fake_send(fd, b);
	} else if (strcmp(text, "die") == 0) {
		_exit(3);
	} else if (strcmp(text, "halfdie") == 0 ||
	    strcmp(text, "longdie") == 0) {
		fake_die_mid_reply(fd, b, id, text[0] == 'l');
	} else
		fake_error(fd, b, id, WIRE_ERR_BAD_REQUEST, "unknown script");
}

/* Answer the mapping and listing requests. */
static void
fake_mapping(int fd, wire_buf *b, const wire_msg *m)
{
	const wire_field *key = wire_msg_find(m, WIRE_TAG_KEY);
	char k[256] = "";

	if (key != NULL)
		snprintf(k, sizeof k, "%.*s", (int)key->len,
		    (const char *)key->data);
	switch (m->type) {
	case WIRE_MSG_GET:
		if (strcmp(k, "missing") == 0) {
			fake_error(fd, b, m->id, WIRE_ERR_NOT_FOUND, "no global");
		} else if (wire_msg_u64(m, WIRE_TAG_WANT_VALUE, 1) == 0) {
			wire_begin(b, WIRE_MSG_RESULT, m->id);
			wire_put_u64(b, WIRE_TAG_KIND, WIRE_KIND_WRAPPED);
			wire_put_u64(b, WIRE_TAG_HANDLE, 3);
			wire_put_str(b, WIRE_TAG_TYPE_NAME, "dict");
			fake_send(fd, b);
		} else {
			fake_output(fd, b, m->id, 2, "notice: x is volatile");
			fake_direct(fd, b, m->id, "value-of-x");
		}
		break;
	case WIRE_MSG_SET:
		fake_empty(fd, b, WIRE_MSG_OK, m->id);
		break;
	case WIRE_MSG_DEL:
		if (strcmp(k, "missing") == 0)
			fake_error(fd, b, m->id, WIRE_ERR_NOT_FOUND, "no global");
		else
			fake_empty(fd, b, WIRE_MSG_OK, m->id);
		break;
	case WIRE_MSG_KEYS:
		wire_begin(b, WIRE_MSG_LISTING, m->id);
		wire_put_str(b, WIRE_TAG_KEY, "a");
		wire_put_str(b, WIRE_TAG_KEY, "b");
		fake_send(fd, b);
		break;
	case WIRE_MSG_HANDLES:
		wire_begin(b, WIRE_MSG_LISTING, m->id);
		wire_put_u64(b, WIRE_TAG_HANDLE, 1);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "int");
		/* an exception's handle: its row adds EXC_TYPE, MESSAGE */
		wire_put_u64(b, WIRE_TAG_HANDLE, 7);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "tuple");
		wire_put_str(b, WIRE_TAG_EXC_TYPE, "KeyError");
		wire_put_str(b, WIRE_TAG_MESSAGE, "'r7'");
		wire_put_u64(b, WIRE_TAG_HANDLE, 2);
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "str");
		fake_send(fd, b);
		break;
	case WIRE_MSG_LOST:
		wire_begin(b, WIRE_MSG_LISTING, m->id);
		wire_put_str(b, WIRE_TAG_KEY, "g");
		wire_put_str(b, WIRE_TAG_TYPE_NAME, "generator");
		wire_put_str(b, WIRE_TAG_MESSAGE, "cannot pickle");
		fake_send(fd, b);
		break;
	case WIRE_MSG_STATS:
		wire_begin(b, WIRE_MSG_LISTING, m->id);
		wire_put_str(b, WIRE_TAG_DATA, "{\"a\": 1}");
		fake_send(fd, b);
		break;
	}
}

/* The fake backend's loop, in the forked child. */
static void
fake_serve(int fd)
{
	static const uint8_t sid[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
	    13, 14, 15, 16 };
	char released[256] = "";
	wire_conn wc;
	wire_msg m;
	wire_buf b;
	size_t i, n;
	int rc;

	wire_conn_init(&wc, fd, fd, WIRE_DEFAULT_MAX_FRAME);
	wire_msg_init(&m);
	wire_buf_init(&b);
	for (;;) {
		if ((rc = wire_conn_read(&wc, &m, -1)) != WIRE_OK)
			_exit(rc == WIRE_E_EOF ? 0 : 93);
		if (wire_msg_check(&m, NULL) != WIRE_OK)
			_exit(94);
		switch (m.type) {
		case WIRE_MSG_HELLO:
			wire_begin(&b, WIRE_MSG_WELCOME, m.id);
			wire_put_u64(&b, WIRE_TAG_VERSION, 1);
			wire_put_str(&b, WIRE_TAG_NAME, "fake");
			wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
			wire_put_u64(&b, WIRE_TAG_MAX_FRAME, 1u << 20);
			wire_put_bytes(&b, WIRE_TAG_SESSION_ID, sid, sizeof sid);
			wire_put_str(&b, WIRE_TAG_SESSION, "s");
			wire_put_u64(&b, WIRE_TAG_CREATED, 1);
			fake_send(fd, &b);
			break;
		case WIRE_MSG_EXEC:
			fake_exec(fd, &wc, &b, &m, released);
			break;
		case WIRE_MSG_RELEASE:
			for (i = 0, n = 0; i < m.nfields; i++)
				n += (size_t)snprintf(released + n,
				    sizeof released - n, "%llu,",
				    (unsigned long long)wire_field_u64(
				    &m.fields[i]));
			break;
		case WIRE_MSG_INTERRUPT:
			break; /* nothing runs */
		case WIRE_MSG_SYNC:
			fake_empty(fd, &b, WIRE_MSG_OK, m.id);
			break;
		case WIRE_MSG_PING:
			fake_empty(fd, &b, WIRE_MSG_PONG, m.id);
			break;
		case WIRE_MSG_DETACH:
		case WIRE_MSG_CLOSE:
			fake_empty(fd, &b, WIRE_MSG_OK, m.id);
			_exit(0);
		default:
			fake_mapping(fd, &b, &m);
		}
	}
}

/* --- fixture ----------------------------------------------------------------- */

/* Start the fake backend and connect to it; no HELLO yet. */
static void
fake_start(void)
{
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
	    0);
	fake_pid = fork();
	ck_assert_int_ge(fake_pid, 0);
	if (fake_pid == 0) {
		close(sv[0]);
		fake_serve(sv[1]);
	}
	close(sv[1]);
	ck_assert_int_eq(pyshelf_create(&conn), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_attach_fds(conn, sv[0], sv[0]), PYSHELF_OK);
}

/* Start the fake and say hello. */
static void
setup(void)
{
	fake_start();
	ck_assert_int_eq(pyshelf_hello(conn, NULL, NULL), PYSHELF_OK);
}

/* Close (detach) and reap the fake. */
static void
teardown(void)
{
	int st;

	pyshelf_close(conn, NULL);
	conn = NULL;
	if (fake_pid > 0)
		waitpid(fake_pid, &st, 0);
	fake_pid = -1;
}

/* Output collected by collect_output(). */
struct collected {
	char out[256];   /* stdout bytes */
	char err[256];   /* stderr bytes */
	int calls;       /* number of callbacks */
	int ret;         /* what the callback returns */
	int busy_rc;     /* rc of a forbidden re-entrant request */
};

static int
collect_output(void *ctx, int stream, const void *data, size_t len)
{
	struct collected *c = ctx;
	char *dst = stream == PYSHELF_STDOUT ? c->out : c->err;

	strncat(dst, data, len < 100 ? len : 100);
	c->calls++;
	c->busy_rc = pyshelf_ping(conn);
	return c->ret;
}

/* --- Core ------------------------------------------------------------------- */

START_TEST(test_strerror)
{
	const char *seen[16];
	int rc, j;

	for (rc = 0; rc >= PYSHELF_E_LAST; rc--) {
		const char *s = pyshelf_strerror(rc);

		ck_assert_ptr_nonnull(s);
		ck_assert_int_gt(strlen(s), 3);
		for (j = 0; j < -rc; j++)
			ck_assert_str_ne(s, seen[j]);
		seen[-rc] = s;
	}
	ck_assert_str_eq(pyshelf_strerror(-999), "unknown pyshelf error");
	ck_assert_str_eq(pyshelf_strerror(5), "unknown pyshelf error");
	ck_assert_str_eq(pyshelf_errcode_name(PYSHELF_ERR_UNKNOWN_HANDLE),
	    "UNKNOWN_HANDLE");
	ck_assert_str_eq(pyshelf_errcode_name(PYSHELF_ERR_NOT_FOUND),
	    "NOT_FOUND");
	ck_assert_str_eq(pyshelf_errcode_name(999), "?");
}
END_TEST

START_TEST(test_invalid_arguments)
{
	pyshelf_conn *c;
	pyshelf_result res;
	pyshelf_exec_req req;
	char **keys;
	size_t n;

	ck_assert_int_eq(pyshelf_create(NULL), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_ping(NULL), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_exec(NULL, NULL, NULL), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_interrupt(NULL), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_close(NULL, NULL), PYSHELF_OK);
	ck_assert_str_eq(pyshelf_errmsg(NULL), "");
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_set_max_frame(c, 0), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_set_close_timeout(c, -1), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_set_spin(c, 10), PYSHELF_OK);
	/* Not connected yet. */
	ck_assert_int_eq(pyshelf_ping(c), PYSHELF_E_NOTCONN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(c), "pyshelf_spawn"));
	memset(&req, 0, sizeof req);
	req.code = "1";
	ck_assert_int_eq(pyshelf_exec(c, &req, &res), PYSHELF_E_NOTCONN);
	ck_assert_int_eq(pyshelf_keys(c, &keys, &n), PYSHELF_E_NOTCONN);
	ck_assert_int_eq(pyshelf_interrupt(c), PYSHELF_OK); /* nothing runs */
	ck_assert_int_eq(pyshelf_backend_pid(c), -1);
	ck_assert_int_eq(pyshelf_backend_status(c, NULL, 0), PYSHELF_E_NOTCONN);
	ck_assert_int_eq(pyshelf_spawn(c, "/bin/true", NULL, "s", 0x80, NULL),
	    PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_attach_fds(c, -1, 1), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
}
END_TEST

START_TEST(test_request_validation)
{
	pyshelf_result res;
	pyshelf_exec_req req;
	pyshelf_arg args[2];
	uint64_t h = 1;

	memset(&req, 0, sizeof req);
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_exec(conn, NULL, &res), PYSHELF_E_INVAL);
	req.code = "args";
	ck_assert_int_eq(pyshelf_exec(conn, &req, NULL), PYSHELF_E_INVAL);
	memset(args, 0, sizeof args);
	args[0].kind = PYSHELF_ARG_HANDLE;
	args[0].handle = 1;
	req.args = args;
	req.nargs = 1;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_INVAL);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "function"));
	req.func = "f";
	args[1].kind = 77;
	req.nargs = 2;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_INVAL);
	args[1].kind = PYSHELF_ARG_PICKLE;
	args[1].data = NULL;
	args[1].len = 3;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_get(conn, NULL, 1, &res), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_set(conn, "k", NULL, 4), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_del(conn, NULL), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_release(conn, NULL, 2), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_release(conn, &h, 0), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_attach_fds(conn, 0, 1), PYSHELF_E_INVAL);
	/* None of that disturbed the stream. */
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_OK);
	ck_assert_str_eq(pyshelf_errmsg(conn), "");
}
END_TEST

START_TEST(test_spawn_missing_backend)
{
	pyshelf_conn *c;
	int rc;

	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	rc = pyshelf_spawn(c, "/nonexistent/dir/pyshelfd", "/tmp/db", "s",
	    PYSHELF_SPAWN_CREATE, NULL);
	ck_assert_int_eq(rc, PYSHELF_E_SPAWN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(c),
	    "/nonexistent/dir/pyshelfd"));
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(c), strerror(ENOENT)));
	ck_assert_int_eq(pyshelf_backend_pid(c), -1);
	ck_assert_int_eq(pyshelf_ping(c), PYSHELF_E_NOTCONN);
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
}
END_TEST

/* Write an executable script dir/name that exits with code. */
static void
write_exit_script(const char *dir, const char *name, int code)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fprintf(f, "#!/bin/sh\nexit %d\n", code);
	fclose(f);
	ck_assert_int_eq(chmod(path, 0755), 0);
}

/* Spawn backend and return its exit code. */
static int
spawn_exit_code(const char *backend)
{
	pyshelf_conn *c;
	int st = 0;

	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, backend, NULL, NULL, 0, NULL),
	    PYSHELF_OK);
	ck_assert_int_eq(pyshelf_backend_status(c, &st, 30000), PYSHELF_OK);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
	return WEXITSTATUS(st);
}

/* A bare name is looked up on PATH (first match wins, an empty entry
 * is "."); NULL means $PYSHELFD; a name found nowhere is a clear
 * PYSHELF_E_SPAWN that says where it looked. */
START_TEST(test_spawn_path_search)
{
	char a[] = "/tmp/pyshelf-path-XXXXXX", b[] = "/tmp/pyshelf-path-XXXXXX";
	char path[1200], *old_path, *old_backend, cwd[1024];
	pyshelf_conn *c;

	ck_assert_ptr_nonnull(mkdtemp(a));
	ck_assert_ptr_nonnull(mkdtemp(b));
	write_exit_script(a, "fake-pyshelfd", 41);
	write_exit_script(b, "fake-pyshelfd", 42);
	write_exit_script(b, "other-pyshelfd", 43);
	/* a plain file that is not executable is skipped */
	snprintf(path, sizeof path, "%s/noexec-pyshelfd", a);
	fclose(fopen(path, "w"));
	write_exit_script(b, "noexec-pyshelfd", 44);
	old_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
	old_backend = getenv("PYSHELFD") ? strdup(getenv("PYSHELFD")) : NULL;
	snprintf(path, sizeof path, "/nonexistent:%s:%s", a, b);
	setenv("PATH", path, 1);
	ck_assert_int_eq(spawn_exit_code("fake-pyshelfd"), 41);
	ck_assert_int_eq(spawn_exit_code("other-pyshelfd"), 43);
	ck_assert_int_eq(spawn_exit_code("noexec-pyshelfd"), 44);
	snprintf(path, sizeof path, "%s/other-pyshelfd", b);
	setenv("PYSHELFD", path, 1);
	ck_assert_int_eq(spawn_exit_code(NULL), 43);
	ck_assert_int_eq(spawn_exit_code(""), 43);
	/* an empty PATH entry is the current directory */
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_int_eq(chdir(b), 0);
	setenv("PATH", "/nonexistent:", 1);
	ck_assert_int_eq(spawn_exit_code("fake-pyshelfd"), 42);
	ck_assert_int_eq(chdir(cwd), 0);
	/* nowhere */
	setenv("PATH", a, 1);
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, "no-such-pyshelfd-xyz", NULL, NULL,
	    0, NULL), PYSHELF_E_SPAWN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(c),
	    "cannot find no-such-pyshelfd-xyz: not on PATH"));
	ck_assert_int_eq(pyshelf_backend_pid(c), -1);
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
	if (old_path != NULL)
		setenv("PATH", old_path, 1);
	else
		unsetenv("PATH");
	if (old_backend != NULL)
		setenv("PYSHELFD", old_backend, 1);
	else
		unsetenv("PYSHELFD");
	free(old_path);
	free(old_backend);
	snprintf(path, sizeof path, "rm -rf '%s' '%s'", a, b);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

START_TEST(test_spawn_backend_that_exits)
{
	pyshelf_conn *c;
	int st = 0;

	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, "/bin/false", NULL, NULL, 0, NULL),
	    PYSHELF_OK);
	ck_assert_int_gt(pyshelf_backend_pid(c), 0);
	ck_assert_int_eq(pyshelf_hello(c, "check", NULL), PYSHELF_E_CLOSED);
	ck_assert_int_eq(pyshelf_ping(c), PYSHELF_E_CLOSED); /* sticky */
	ck_assert_int_eq(pyshelf_backend_status(c, &st, 5000), PYSHELF_OK);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 1);
	ck_assert_int_eq(pyshelf_close(c, &st), PYSHELF_OK);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
}
END_TEST

START_TEST(test_hello)
{
	const pyshelf_welcome *w = NULL;

	pyshelf_close(conn, NULL);
	waitpid(fake_pid, NULL, 0);
	fake_start();
	ck_assert_int_eq(pyshelf_hello(conn, "check_client", &w), PYSHELF_OK);
	ck_assert_ptr_nonnull(w);
	ck_assert_uint_eq(w->version, 1);
	ck_assert_str_eq(w->name, "fake");
	ck_assert_uint_eq(w->pid, (uint64_t)fake_pid);
	ck_assert_uint_eq(w->max_frame, 1u << 20);
	ck_assert_int_eq(w->has_session, 1);
	ck_assert_int_eq(w->session_id[0], 1);
	ck_assert_int_eq(w->session_id[15], 16);
	ck_assert_str_eq(w->session, "s");
	ck_assert_int_eq(w->created, 1);
}
END_TEST

START_TEST(test_exec_output_and_direct_result)
{
	struct collected col;
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&col, 0, sizeof col);
	memset(&req, 0, sizeof req);
	req.code = "output";
	req.on_output = collect_output;
	req.ctx = &col;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_str_eq(col.out, "hello world");
	ck_assert_str_eq(col.err, "err");
	ck_assert_int_eq(col.calls, 3);
	ck_assert_int_eq(col.busy_rc, PYSHELF_E_BUSY);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_DIRECT);
	ck_assert_uint_eq(res.value_len, 6);
	ck_assert_int_eq(memcmp(res.value, "PICKLE", 6), 0);
	ck_assert_ptr_null(res.type_name);
	ck_assert_ptr_null(res.volatile_reason);
	pyshelf_result_free(&res);
	pyshelf_result_free(&res); /* twice is fine */
	/* Without a callback the output is dropped. */
	req.on_output = NULL;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_DIRECT);
	pyshelf_result_free(&res);
}
END_TEST

START_TEST(test_exec_wrapped_and_excinfo)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "wrapped";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_WRAPPED);
	ck_assert_uint_eq(res.handle, 7);
	ck_assert_str_eq(res.type_name, "list");
	ck_assert_str_eq(res.volatile_reason, "why");
	ck_assert_ptr_null(res.exc_type);
	ck_assert_ptr_null(res.value);
	pyshelf_result_free(&res);
	ck_assert_ptr_null(res.type_name);

	req.code = "raise";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_EXCINFO);
	ck_assert_uint_eq(res.handle, 8);
	ck_assert_str_eq(res.type_name, "tuple");
	ck_assert_str_eq(res.exc_type, "ValueError");
	ck_assert_str_eq(res.message, "bad");
	ck_assert_ptr_null(res.text);       /* no traceback sent */
	pyshelf_result_free(&res);

	req.code = "raise_tb";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_EXCINFO);
	ck_assert_str_eq(res.text, "Traceback (most recent call last):\n"
	    "ValueError: bad\n");
	ck_assert_uint_eq(res.text_len, strlen(res.text));
	ck_assert_int_eq(pyshelf_request_fate(conn), PYSHELF_FATE_DONE);
	pyshelf_result_free(&res);
	ck_assert_ptr_null(res.text);
}
END_TEST

START_TEST(test_exec_remote_error)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "error";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_REMOTE);
	ck_assert_uint_eq(pyshelf_remote_errcode(conn),
	    PYSHELF_ERR_UNKNOWN_HANDLE);
	ck_assert_str_eq(pyshelf_errmsg(conn), "unknown handle 5");
	ck_assert_int_eq(res.kind, 0);
	/* A remote error leaves the connection usable. */
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_OK);
	ck_assert_uint_eq(pyshelf_remote_errcode(conn), 0);
	ck_assert_str_eq(pyshelf_errmsg(conn), "");
}
END_TEST

START_TEST(test_exec_encodes_arguments)
{
	pyshelf_exec_req req;
	pyshelf_result res;
	pyshelf_arg args[3];

	memset(&req, 0, sizeof req);
	memset(args, 0, sizeof args);
	args[0].kind = PYSHELF_ARG_HANDLE;
	args[0].handle = 42;
	args[1].kind = PYSHELF_ARG_PICKLE;
	args[1].data = "abc";
	args[1].len = 3;
	args[2].kind = PYSHELF_ARG_PICKLE; /* empty pickle */
	req.code = "args";
	req.func = "fn";
	req.args = args;
	req.nargs = 3;
	req.want_value = 1;
	req.timeout_ms = 1500;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_DIRECT);
	ck_assert_int_eq((int)res.value_len, (int)strlen("f=fn;h42;pabc;p;w1;t1500;"));
	ck_assert_int_eq(memcmp(res.value, "f=fn;h42;pabc;p;w1;t1500;",
	    res.value_len), 0);
	pyshelf_result_free(&res);
}
END_TEST

/* Plain data: LITERAL and JSON arguments travel as pickles of a call of
 * ast.literal_eval / json.loads on the text (so the backend runs no code
 * to read them), want_value's text modes are sent as they are, and a
 * TEXT result is an owned NUL-terminated string. */
START_TEST(test_exec_plain_data)
{
	static const char lit[] = "\x80\x02" "cast\nliteral_eval\n"
	    "X\x06\0\0\0[1, 2]\x85R.";
	static const char js[] = "\x80\x02" "cjson\nloads\n"
	    "X\x02\0\0\0{}\x85R.";
	pyshelf_exec_req req;
	pyshelf_result res;
	pyshelf_arg args[2];
	char want[256];
	size_t n;

	memset(&req, 0, sizeof req);
	memset(args, 0, sizeof args);
	args[0].kind = PYSHELF_ARG_LITERAL;
	args[0].data = "[1, 2]";                /* len 0: strlen */
	args[1].kind = PYSHELF_ARG_JSON;
	args[1].data = "{}xyz";
	args[1].len = 2;
	req.code = "args";
	req.func = "fn";
	req.args = args;
	req.nargs = 2;
	req.want_value = PYSHELF_WANT_JSON;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_DIRECT);
	n = (size_t)snprintf(want, sizeof want, "f=fn;p");
	memcpy(want + n, lit, sizeof lit - 1);
	n += sizeof lit - 1;
	memcpy(want + n, ";p", 2);
	n += 2;
	memcpy(want + n, js, sizeof js - 1);
	n += sizeof js - 1;
	memcpy(want + n, ";w3;", 4);
	n += 4;
	ck_assert_uint_eq(res.value_len, n);
	ck_assert_int_eq(memcmp(res.value, want, n), 0);
	pyshelf_result_free(&res);

	req.want_value = PYSHELF_WANT_REPR;
	req.nargs = 0;
	req.func = NULL;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(memcmp(res.value, "w2;", 3), 0);
	pyshelf_result_free(&res);
	req.want_value = 7;                     /* any other: by value */
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(memcmp(res.value, "w1;", 3), 0);
	pyshelf_result_free(&res);

	req.code = "text";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_TEXT);
	ck_assert_str_eq(res.text, "{\"a\": [1, 2]}");
	ck_assert_uint_eq(res.text_len, strlen(res.text));
	ck_assert_str_eq(res.type_name, "dict");
	pyshelf_result_free(&res);
	ck_assert_ptr_null(res.text);

	/* bad: text argument without text, negative want */
	args[0].data = NULL;
	req.code = "args";
	req.func = "fn";
	req.nargs = 1;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_INVAL);
	args[0].data = "1";
	req.want_value = -1;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_set_text(conn, "k", PYSHELF_ARG_PICKLE, "1"),
	    PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_set_text(conn, "k", PYSHELF_ARG_JSON, NULL),
	    PYSHELF_E_INVAL);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_OK);
}
END_TEST

/* Interrupt from another thread after a short delay. */
static void *
interrupter(void *arg)
{
	struct timespec d = { 0, 100 * 1000 * 1000 };

	(void)arg;
	nanosleep(&d, NULL);
	return (void *)(intptr_t)pyshelf_interrupt(conn);
}

START_TEST(test_interrupt_from_thread)
{
	pyshelf_exec_req req;
	pyshelf_result res;
	pthread_t t;
	void *trc;

	memset(&req, 0, sizeof req);
	req.code = "loop";
	ck_assert_int_eq(pthread_create(&t, NULL, interrupter, NULL), 0);
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	pthread_join(t, &trc);
	ck_assert_int_eq((int)(intptr_t)trc, PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_EXCINFO);
	ck_assert_str_eq(res.exc_type, "KeyboardInterrupt");
	ck_assert_str_eq(res.message, "");
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_OK);
}
END_TEST

/* A thread that runs exec "loop" on conn until interrupted; rc and res
 * for the test to check. */
struct looper {
	pyshelf_result res;  /* the exec's result */
	int rc;              /* pyshelf_exec()'s return */
};

static void *
looper_run(void *arg)
{
	struct looper *l = arg;
	pyshelf_exec_req req;

	memset(&req, 0, sizeof req);
	req.code = "loop";
	/* the test's pings may hold the connection for a moment */
	while ((l->rc = pyshelf_exec(conn, &req, &l->res)) == PYSHELF_E_BUSY)
		;
	return NULL;
}

/* In a forked child: every use of the parent's connection is refused
 * with PYSHELF_E_FORKED, even with the busy flag copied set, and
 * pyshelf_close() returns at once.  Exit status: 0, or the failed step. */
static void
forked_child_checks(pyshelf_conn *c) __attribute__((noreturn));

static void
forked_child_checks(pyshelf_conn *c)
{
	if (pyshelf_ping(c) != PYSHELF_E_FORKED)
		_exit(10);
	if (strstr(pyshelf_errmsg(c), "child of its fork()") == NULL)
		_exit(11);
	if (pyshelf_hello(c, NULL, NULL) != PYSHELF_E_FORKED)
		_exit(12);
	if (pyshelf_interrupt(c) != PYSHELF_E_FORKED ||
	    pyshelf_interrupt_hard(c) != PYSHELF_E_FORKED)
		_exit(13);
	if (pyshelf_attach_fds(c, 0, 1) != PYSHELF_E_FORKED)
		_exit(14);
	if (pyshelf_close(c, NULL) != PYSHELF_OK)
		_exit(15);
	_exit(0);
}

/* Fork and run forked_child_checks(c) in the child; return its exit
 * status as the parent sees it. */
static int
fork_and_check(pyshelf_conn *c)
{
	pid_t pid;
	int st;

	ck_assert_int_ge(pid = fork(), 0);
	if (pid == 0)
		forked_child_checks(c);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

START_TEST(test_forked_child_is_refused)
{
	struct timespec d = { 0, 1000 * 1000 };
	struct looper l;
	pthread_t t;
	int i;

	/* a thread of the parent is inside a request at the fork */
	memset(&l, 0, sizeof l);
	ck_assert_int_eq(pthread_create(&t, NULL, looper_run, &l), 0);
	for (i = 0; i < 10000 && pyshelf_ping(conn) != PYSHELF_E_BUSY; i++)
		nanosleep(&d, NULL);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_E_BUSY);
	ck_assert_int_eq(fork_and_check(conn), 0);
	/* the parent's conversation goes on: its call ends as it should */
	ck_assert_int_eq(pyshelf_interrupt(conn), PYSHELF_OK);
	pthread_join(t, NULL);
	ck_assert_int_eq(l.rc, PYSHELF_OK);
	ck_assert_int_eq(l.res.kind, PYSHELF_KIND_EXCINFO);
	ck_assert_str_eq(l.res.exc_type, "KeyboardInterrupt");
	pyshelf_result_free(&l.res);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_OK);
	/* and a child forked while it is idle is refused the same way */
	ck_assert_int_eq(fork_and_check(conn), 0);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_OK);
}
END_TEST

/* on_wait: interrupt at the first tick, then count. */
static int
wait_interrupt(void *ctx)
{
	int *calls = ctx;

	return (*calls)++ == 0 ? PYSHELF_WAIT_INTERRUPT : PYSHELF_WAIT_CONTINUE;
}

START_TEST(test_interrupt_from_wait_callback)
{
	pyshelf_exec_req req;
	pyshelf_result res;
	int calls = 0;

	memset(&req, 0, sizeof req);
	req.code = "loop";
	req.on_wait = wait_interrupt;
	req.wait_tick_ms = 20;
	req.ctx = &calls;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_ge(calls, 1);
	ck_assert_str_eq(res.exc_type, "KeyboardInterrupt");
	pyshelf_result_free(&res);
}
END_TEST

static int
wait_abandon(void *ctx)
{
	(void)ctx;
	return PYSHELF_WAIT_ABANDON;
}

START_TEST(test_abandon_then_late_reply_is_skipped)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "slow";
	req.on_wait = wait_abandon;
	req.wait_tick_ms = 20;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_CANCELED);
	/* The slow exec's OUTPUT and RESULT arrive first and are skipped. */
	memset(&req, 0, sizeof req);
	req.code = "wrapped";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_WRAPPED);
	ck_assert_uint_eq(res.handle, 7);
	pyshelf_result_free(&res);
}
END_TEST

START_TEST(test_output_callback_abandons)
{
	struct collected col;
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&col, 0, sizeof col);
	col.ret = 1;
	memset(&req, 0, sizeof req);
	req.code = "output";
	req.on_output = collect_output;
	req.ctx = &col;
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_CANCELED);
	ck_assert_int_eq(col.calls, 1);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_OK);
}
END_TEST

START_TEST(test_stale_reply_is_skipped)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "stale";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(memcmp(res.value, "fresh", 5), 0);
	pyshelf_result_free(&res);
}
END_TEST

static int
collect_notice(void *ctx, int stream, const void *data, size_t len)
{
	struct collected *c = ctx;

	(void)stream;
	strncat(c->err, data, len < 100 ? len : 100);
	c->calls++;
	return 1; /* ignored */
}

START_TEST(test_mapping)
{
	struct collected col;
	pyshelf_result res;

	memset(&col, 0, sizeof col);
	/* Without a handler the notice is dropped. */
	ck_assert_int_eq(pyshelf_get(conn, "x", 1, &res), PYSHELF_OK);
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_set_output_handler(conn, collect_notice, &col),
	    PYSHELF_OK);
	ck_assert_int_eq(pyshelf_get(conn, "x", 1, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_DIRECT);
	ck_assert_int_eq(memcmp(res.value, "value-of-x", 10), 0);
	ck_assert_str_eq(col.err, "notice: x is volatile");
	ck_assert_int_eq(col.calls, 1);
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_get(conn, "x", 0, &res), PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_WRAPPED);
	ck_assert_uint_eq(res.handle, 3);
	ck_assert_str_eq(res.type_name, "dict");
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_get(conn, "missing", 1, &res),
	    PYSHELF_E_REMOTE);
	ck_assert_uint_eq(pyshelf_remote_errcode(conn), PYSHELF_ERR_NOT_FOUND);
	ck_assert_int_eq(pyshelf_set(conn, "k", "v", 1), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_set(conn, "k", NULL, 0), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_del(conn, "k"), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_del(conn, "missing"), PYSHELF_E_REMOTE);
	ck_assert_uint_eq(pyshelf_remote_errcode(conn), PYSHELF_ERR_NOT_FOUND);
}
END_TEST

START_TEST(test_listings)
{
	pyshelf_handle_info *h;
	pyshelf_lost_entry *l;
	char **keys, *json;
	size_t n;

	ck_assert_int_eq(pyshelf_keys(conn, &keys, &n), PYSHELF_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(keys[0], "a");
	ck_assert_str_eq(keys[1], "b");
	pyshelf_strv_free(keys, n);
	ck_assert_int_eq(pyshelf_handles(conn, &h, &n), PYSHELF_OK);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(h[0].handle, 1);
	ck_assert_str_eq(h[0].type_name, "int");
	ck_assert_ptr_null(h[0].exc_type);
	ck_assert_ptr_null(h[0].message);
	ck_assert_uint_eq(h[1].handle, 7);
	ck_assert_str_eq(h[1].type_name, "tuple");
	ck_assert_str_eq(h[1].exc_type, "KeyError");
	ck_assert_str_eq(h[1].message, "'r7'");
	ck_assert_uint_eq(h[2].handle, 2);
	ck_assert_str_eq(h[2].type_name, "str");
	ck_assert_ptr_null(h[2].exc_type);
	pyshelf_handles_free(h, n);
	ck_assert_int_eq(pyshelf_lost(conn, &l, &n), PYSHELF_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(l[0].key, "g");
	ck_assert_str_eq(l[0].type_name, "generator");
	ck_assert_str_eq(l[0].reason, "cannot pickle");
	pyshelf_lost_free(l, n);
	ck_assert_int_eq(pyshelf_stats(conn, &json), PYSHELF_OK);
	ck_assert_str_eq(json, "{\"a\": 1}");
	pyshelf_free(json);
	ck_assert_int_eq(pyshelf_sync(conn), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_keys(conn, NULL, &n), PYSHELF_E_INVAL);
}
END_TEST

START_TEST(test_release_has_no_reply)
{
	uint64_t ids[3] = { 4, 5, 6 };
	pyshelf_exec_req req;
	pyshelf_result res;

	ck_assert_int_eq(pyshelf_release(conn, ids, 3), PYSHELF_OK);
	memset(&req, 0, sizeof req);
	req.code = "released";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq((int)res.value_len, 6);
	ck_assert_int_eq(memcmp(res.value, "4,5,6,", 6), 0);
	pyshelf_result_free(&res);
}
END_TEST

START_TEST(test_detach_and_close_session)
{
	ck_assert_int_eq(pyshelf_detach(conn), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_E_NOTCONN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "detached"));
	pyshelf_close(conn, NULL);
	waitpid(fake_pid, NULL, 0);
	setup();
	ck_assert_int_eq(pyshelf_close_session(conn), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_E_NOTCONN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "closed"));
}
END_TEST

/* --- Limits -------------------------------------------------------------------- */

START_TEST(test_backend_dies_mid_request)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "die";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_CLOSED);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "closed"));
	/* read whole, then no reply: it may have run */
	ck_assert_int_eq(pyshelf_request_fate(conn), PYSHELF_FATE_SENT);
	/* Sticky, with the first failure's message; never sent. */
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_E_CLOSED);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "closed"));
	ck_assert_int_eq(pyshelf_request_fate(conn), PYSHELF_FATE_NOT_RUN);
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_CLOSED);
}
END_TEST

/* A backend that dies in the middle of a reply's frame, or of a PART of
 * a LONG reply, closed the connection (CLOSED, as a death between
 * frames), not a protocol error: the reply may have run, and the
 * failure is the same for the next request. */
START_TEST(test_backend_dies_mid_reply)
{
	static const char *const codes[] = { "halfdie", "longdie" };
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = codes[_i];
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_CLOSED);
	ck_assert_msg(strstr(pyshelf_errmsg(conn), "closed") != NULL, "%s",
	    pyshelf_errmsg(conn));
	ck_assert_ptr_null(strstr(pyshelf_errmsg(conn), "malformed"));
	ck_assert_int_ne(pyshelf_request_fate(conn), PYSHELF_FATE_NOT_RUN);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_E_CLOSED);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "closed"));
}
END_TEST

/* A backend that dies after output of the request: it had started it. */
START_TEST(test_backend_dies_while_the_request_runs)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	ck_assert_int_eq(pyshelf_request_fate(NULL), PYSHELF_FATE_UNKNOWN);
	req.code = "outdie";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_CLOSED);
	ck_assert_int_eq(pyshelf_request_fate(conn), PYSHELF_FATE_STARTED);
}
END_TEST

START_TEST(test_malformed_frame)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "garbage";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_PROTOCOL);
	ck_assert_int_eq(pyshelf_ping(conn), PYSHELF_E_PROTOCOL);
}
END_TEST

START_TEST(test_reply_with_wrong_id)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "wrongid";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_PROTOCOL);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "request"));
}
END_TEST

START_TEST(test_result_of_unknown_kind)
{
	pyshelf_exec_req req;
	pyshelf_result res;

	memset(&req, 0, sizeof req);
	req.code = "badkind";
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_E_PROTOCOL);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "kind 42"));
}
END_TEST

/* Values of any size, both ways, through a real pyshelfd whose frame
 * limit is 1 MiB: a 5 MiB pickle set and got back as one buffer; a 3 MiB
 * out-of-band buffer set with pyshelf_set_buffers(), passed as an exec
 * argument, and got back as a buffer (PYSHELF_WANT_BUFFERS) that the
 * caller may keep. */
START_TEST(test_values_larger_than_a_frame)
{
	static const char *const args[] = { "--max-frame", "1MiB", NULL };
	static const uint8_t oob_pk[] = { 0x80, 0x05, 0x97, '.' };
	char dir[] = "/tmp/check_client.XXXXXX", db[64];
	size_t n = 5u << 20, i;
	uint8_t *pk, *ba;
	pyshelf_buffer buf;
	pyshelf_exec_req req;
	pyshelf_result res;
	pyshelf_arg arg;
	pyshelf_conn *c;
	void *kept;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(db, sizeof db, "%s/db", dir);
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, NULL, db, "s", PYSHELF_SPAWN_CREATE,
	    args), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_hello(c, "check_client", NULL), PYSHELF_OK);
	/* bytes of 5 MiB: PROTO 5, BINBYTES8 n, the bytes, STOP */
	ck_assert_ptr_nonnull(pk = malloc(n + 12));
	memcpy(pk, "\x80\x05\x8e", 3);
	for (i = 0; i < 8; i++)
		pk[3 + i] = (uint8_t)(n >> (8 * i));
	for (i = 0; i < n; i++)
		pk[11 + i] = (uint8_t)(i * 13);
	pk[11 + n] = '.';
	ck_assert_int_eq(pyshelf_set(c, "b", pk, n + 12), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_get(c, "b", PYSHELF_WANT_PICKLE, &res),
	    PYSHELF_OK);
	ck_assert_int_eq(res.kind, PYSHELF_KIND_DIRECT);
	ck_assert_uint_eq(res.nbuffers, 0);
	ck_assert_uint_ge(res.value_len, n);   /* one pickle, one buffer */
	ck_assert(memmem(res.value, res.value_len, pk + 11, n) != NULL);
	pyshelf_result_free(&res);
	/* a bytearray of 3 MiB out of band: NEXT_BUFFER, STOP */
	ck_assert_ptr_nonnull(ba = malloc(3u << 20));
	for (i = 0; i < 3u << 20; i++)
		ba[i] = (uint8_t)(i * 7);
	buf.data = ba;
	buf.len = 3u << 20;
	ck_assert_int_eq(pyshelf_set_buffers(c, "ba", oob_pk, sizeof oob_pk,
	    &buf, 1), PYSHELF_OK);
	memset(&req, 0, sizeof req);
	memset(&arg, 0, sizeof arg);
	arg.kind = PYSHELF_ARG_PICKLE;
	arg.data = oob_pk;
	arg.len = sizeof oob_pk;
	arg.buffers = &buf;
	arg.nbuffers = 1;
	req.code = "def f(x):\n    return (len(x), x == ba)\n";
	req.func = "f";
	req.args = &arg;
	req.nargs = 1;
	req.want_value = PYSHELF_WANT_REPR;
	ck_assert_int_eq(pyshelf_exec(c, &req, &res), PYSHELF_OK);
	ck_assert_str_eq(res.text, "(3145728, True)");
	pyshelf_result_free(&res);
	/* a numpy array pickles its memory out of band */
	memset(&req, 0, sizeof req);
	req.code = "import numpy\nnb = numpy.frombuffer(ba, dtype=numpy.uint8)";
	ck_assert_int_eq(pyshelf_exec(c, &req, &res), PYSHELF_OK);
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_get(c, "nb", PYSHELF_WANT_PICKLE |
	    PYSHELF_WANT_BUFFERS, &res), PYSHELF_OK);
	ck_assert_uint_eq(res.nbuffers, 1);
	ck_assert_uint_eq(res.buffers[0].len, 3u << 20);
	ck_assert(memcmp(res.buffers[0].data, ba, 3u << 20) == 0);
	ck_assert_uint_lt(res.value_len, 1024);
	kept = res.buffers[0].data;    /* the caller keeps it */
	res.buffers[0].data = NULL;
	pyshelf_result_free(&res);
	ck_assert(memcmp(kept, ba, 3u << 20) == 0);
	pyshelf_free(kept);
	/* without PYSHELF_WANT_BUFFERS: one pickle */
	ck_assert_int_eq(pyshelf_get(c, "nb", PYSHELF_WANT_PICKLE, &res),
	    PYSHELF_OK);
	ck_assert_uint_eq(res.nbuffers, 0);
	ck_assert_uint_gt(res.value_len, 3u << 20);
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
	free(pk);
	free(ba);
	tu_rmtree(dir);
}
END_TEST

START_TEST(test_write_to_dead_pipe_is_not_sigpipe)
{
	pyshelf_conn *c;
	int in[2], out[2];

	signal(SIGPIPE, SIG_DFL);
	ck_assert_int_eq(pipe(in), 0);
	ck_assert_int_eq(pipe(out), 0);
	close(out[0]); /* nobody reads what we write */
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_attach_fds(c, in[0], out[1]), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_hello(c, NULL, NULL), PYSHELF_E_CLOSED);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(c), strerror(EPIPE)));
	/* its write failed: the backend never had it */
	ck_assert_int_eq(pyshelf_request_fate(c), PYSHELF_FATE_NOT_RUN);
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
	close(in[1]);
}
END_TEST

/* A backend stand-in: a shell script from fmt, written to a new file
 * named by template path (mkstemp's XXXXXX), mode 0700. */
static void __attribute__((format(printf, 2, 3)))
make_script(char *path, const char *fmt, ...)
{
	va_list ap;
	FILE *f;
	int fd;

	ck_assert_int_ge(fd = mkstemp(path), 0);
	ck_assert_ptr_nonnull(f = fdopen(fd, "w"));
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	chmod(path, 0700);
}

/* A backend that ignores SIGTERM, SIGHUP and SIGINT: only SIGKILL ends it. */
#define STUBBORN_SCRIPT "#!/bin/sh\ntrap '' TERM HUP INT\nexec sleep 30\n"

/* A backend that refuses to start says why in an ERROR with id 0 and
 * exits: pyshelf_hello() returns it as PYSHELF_E_REMOTE, its code, message
 * and PID, whether its HELLO got through or not; the backend is reaped. */
START_TEST(test_hello_gets_the_refusal)
{
	char path[] = "/tmp/check_client_refuseXXXXXX";
	pyshelf_conn *c;
	long pid;
	int st = 0, slow;

	/* slow: read the HELLO first; else exit at once (EPIPE on HELLO) */
	make_script(path, "#!/bin/sh\n[ \"$SLOW\" ] && head -c 16 >/dev/null\n"
	    "printf '"
	    "\\000\\000\\000\\111\\177\\000\\000\\000\\000\\000\\000\\000"
	    "\\000\\000\\000\\000\\024\\000\\000\\000\\010\\000\\000\\000"
	    "\\000\\000\\000\\000\\020\\020\\000\\000\\000\\052\\163\\145"
	    "\\163\\163\\151\\157\\156\\040\\047\\163\\047\\040\\151\\163"
	    "\\040\\151\\156\\040\\165\\163\\145\\040\\142\\171\\040\\160"
	    "\\171\\163\\150\\145\\154\\146\\144\\040\\160\\151\\144\\040"
	    "\\064\\062\\064\\062\\027\\000\\000\\000\\010\\000\\000\\000"
	    "\\000\\000\\000\\020\\222"
	    "'\nexit 1\n");
	for (slow = 0; slow < 2; slow++) {
		if (slow)
			setenv("SLOW", "1", 1);
		ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
		ck_assert_int_eq(pyshelf_spawn(c, path, NULL, NULL, 0, NULL),
		    PYSHELF_OK);
		pid = pyshelf_backend_pid(c);
		if (!slow)  /* it is gone before the HELLO is written */
			ck_assert_int_eq(pyshelf_backend_status(c, &st, 10000),
			    PYSHELF_OK);
		ck_assert_int_eq(pyshelf_hello(c, "check", NULL),
		    PYSHELF_E_REMOTE);
		ck_assert_uint_eq(pyshelf_remote_errcode(c),
		    PYSHELF_ERR_SESSION_BUSY);
		ck_assert_uint_eq(pyshelf_remote_pid(c), 4242);
		ck_assert_str_eq(pyshelf_errmsg(c),
		    "session 's' is in use by pyshelfd pid 4242");
		/* reaped already: no zombie left for the caller */
		ck_assert_int_eq(waitpid((pid_t)pid, &st, WNOHANG), -1);
		ck_assert_int_eq(errno, ECHILD);
		ck_assert_int_eq(pyshelf_ping(c), PYSHELF_E_NOTCONN);
		ck_assert_int_eq(pyshelf_close(c, &st), PYSHELF_OK);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	}
	unsetenv("SLOW");
	unlink(path);
}
END_TEST

/* A backend seen dead (EOF) is reaped at once. */
START_TEST(test_dead_backend_is_reaped_at_once)
{
	pyshelf_conn *c;
	long pid;
	int st = 0;

	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, "/bin/true", NULL, NULL, 0, NULL),
	    PYSHELF_OK);
	pid = pyshelf_backend_pid(c);
	ck_assert_int_ne(pyshelf_hello(c, "check", NULL), PYSHELF_OK);
	ck_assert_int_eq(waitpid((pid_t)pid, &st, WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
	ck_assert_int_eq(pyshelf_backend_status(c, &st, 0), PYSHELF_OK);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
}
END_TEST

START_TEST(test_close_kills_a_stubborn_backend)
{
	char path[] = "/tmp/check_client_stubXXXXXX";
	pyshelf_conn *c;
	int st = 0;

	make_script(path, STUBBORN_SCRIPT);
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_set_close_timeout(c, 200), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, path, "/tmp/db", "s",
	    PYSHELF_SPAWN_CREATE, NULL), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_backend_status(c, &st, 300), PYSHELF_E_TIMEOUT);
	ck_assert_int_eq(pyshelf_close(c, &st), PYSHELF_E_TIMEOUT);
	unlink(path);
	ck_assert(WIFSIGNALED(st));
	ck_assert_int_eq(WTERMSIG(st), SIGKILL);
}
END_TEST

/* Nothing reaches the socket from a forked child: no request, no
 * interrupt, and its close neither detaches nor shuts the socket down. */
START_TEST(test_forked_child_writes_nothing)
{
	pyshelf_conn *c;
	char byte;
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
	    0);
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_attach_fds(c, sv[0], sv[0]), PYSHELF_OK);
	ck_assert_int_eq(fork_and_check(c), 0);
	/* not a byte, and no EOF: the socket is still the parent's */
	ck_assert_int_eq(recv(sv[1], &byte, 1, MSG_DONTWAIT), -1);
	ck_assert_int_eq(errno, EAGAIN);
	/* the parent's own close is the one that ends it */
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
	ck_assert_int_eq(recv(sv[1], &byte, 1, 0), 0);
	close(sv[1]);
}
END_TEST

/* A forked child neither waits for nor kills the parent's spawned
 * backend: backend_status is refused and close returns at once. */
START_TEST(test_forked_child_leaves_the_backend)
{
	char path[] = "/tmp/check_client_forkXXXXXX";
	pyshelf_conn *c;
	pid_t pid;
	int st = 0;

	make_script(path, STUBBORN_SCRIPT);
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_set_close_timeout(c, 200), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, path, "/tmp/db", "s",
	    PYSHELF_SPAWN_CREATE, NULL), PYSHELF_OK);
	ck_assert_int_ge(pid = fork(), 0);
	if (pid == 0) {
		if (pyshelf_backend_status(c, &st, 0) != PYSHELF_E_FORKED)
			_exit(20);
		if (pyshelf_close(c, &st) != PYSHELF_OK || st != -1)
			_exit(21);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	/* still running, still the parent's to reap */
	ck_assert_int_eq(kill((pid_t)pyshelf_backend_pid(c), 0), 0);
	ck_assert_int_eq(pyshelf_backend_status(c, &st, 0), PYSHELF_E_TIMEOUT);
	ck_assert_int_eq(pyshelf_close(c, &st), PYSHELF_E_TIMEOUT);
	unlink(path);
	ck_assert(WIFSIGNALED(st));
	ck_assert_int_eq(WTERMSIG(st), SIGKILL);
}
END_TEST

START_TEST(test_spawned_child_hygiene)
{
	char path[] = "/tmp/check_client_envXXXXXX";
	char out[] = "/tmp/check_client_outXXXXXX";
	char buf[512] = "";
	const char *extra[] = { "--extra", "arg", NULL };
	pyshelf_conn *c;
	int leak, st, ofd;
	ssize_t got;

	/* A descriptor the caller forgot to mark close-on-exec. */
	ck_assert_int_ge(leak = open("/dev/null", O_RDONLY), 0);
	ck_assert_int_ge(ofd = mkstemp(out), 0);
	make_script(path, "#!/bin/sh\n{ echo \"$*\"; "
	    "if [ -e /proc/self/fd/%d ]; then echo leak; else echo noleak; fi; "
	    "echo pgid=$(cut -d' ' -f5 /proc/$$/stat); } > %s\n", leak, out);
	ck_assert_int_eq(pyshelf_create(&c), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_spawn(c, path, NULL, "sess", 0, extra),
	    PYSHELF_OK);
	ck_assert_int_eq(pyshelf_backend_status(c, &st, 5000), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_close(c, NULL), PYSHELF_OK);
	unlink(path);
	got = read(ofd, buf, sizeof buf - 1);
	ck_assert_int_gt(got, 0);
	unlink(out);
	close(ofd);
	close(leak);
	ck_assert_ptr_nonnull(strstr(buf, "--stdio --session sess --extra arg\n"));
	ck_assert_ptr_null(strstr(buf, "--db"));
	ck_assert_ptr_null(strstr(buf, "--create"));
#if defined(__linux__)
	{
		char mine[64];

		ck_assert_ptr_nonnull(strstr(buf, "noleak"));
		snprintf(mine, sizeof mine, "pgid=%ld\n", (long)getpgrp());
		ck_assert_ptr_nonnull(strstr(buf, "pgid="));
		ck_assert_ptr_null(strstr(buf, mine)); /* its own group */
	}
#endif
}
END_TEST

/* --- Server mode: a fake server on a Unix socket --------------------------- */

static char srv_dir[256];
static char srv_path[300];
static pid_t srv_pid = -1;

/*
 * The fake server: accepts connections one after the other and answers
 * HELLO with WELCOME (no session), ATTACH with ATTACHED (session "died":
 * with SIGNAL 9; "busy": ERROR SESSION_BUSY and a close), EXEC with a
 * DIRECT value of its CALL_ID in hex and, in it, how many hard interrupts
 * came before; CALLS with a JSON listing; CALL_RESULT with an OUTPUT and a
 * RESULT saying its WAIT.
 */
static void
fake_server(int lfd)
{
	static const uint8_t sid[16] = { 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
	    9, 9, 9, 9 };
	const wire_field *f;
	char text[128];
	wire_conn wc;
	wire_msg m;
	wire_buf b;
	int fd, rc, hard = 0, p[2];
	char sess[16];
	size_t i;

	wire_msg_init(&m);
	wire_buf_init(&b);
	for (;;) {
		if ((fd = accept(lfd, NULL, NULL)) < 0)
			_exit(80);
		sess[0] = '\0';
		wire_conn_init(&wc, fd, fd, WIRE_DEFAULT_MAX_FRAME);
		for (;;) {
			if ((rc = wire_conn_read(&wc, &m, -1)) != WIRE_OK)
				break;
			if (wire_msg_check(&m, NULL) != WIRE_OK)
				_exit(94);
			switch (m.type) {
			case WIRE_MSG_HELLO:
				wire_begin(&b, WIRE_MSG_WELCOME, m.id);
				wire_put_u64(&b, WIRE_TAG_VERSION,
				    WIRE_PROTOCOL_VERSION);
				wire_put_str(&b, WIRE_TAG_NAME, "fakeserver");
				wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
				wire_put_u64(&b, WIRE_TAG_MAX_FRAME, 1u << 20);
				fake_send(fd, &b);
				break;
			case WIRE_MSG_ATTACH:
				f = wire_msg_find(&m, WIRE_TAG_SESSION);
				if (f->len == 4 && memcmp(f->data, "busy", 4) == 0) {
					fake_error(fd, &b, m.id,
					    WIRE_ERR_SESSION_BUSY, "it is busy");
					goto next;
				}
				snprintf(sess, sizeof sess, "%.*s",
				    (int)(f->len < 15 ? f->len : 15), f->data);
				f = wire_msg_find(&m, WIRE_TAG_MODE);
				wire_begin(&b, WIRE_MSG_ATTACHED, m.id);
				wire_put_bytes(&b, WIRE_TAG_SESSION_ID, sid,
				    sizeof sid);
				wire_put_bytes(&b, WIRE_TAG_SESSION, f->data,
				    f->len);   /* the MODE, to check it */
				wire_put_u64(&b, WIRE_TAG_CREATED, 1);
				wire_put_u64(&b, WIRE_TAG_PID, 4242);
				f = wire_msg_find(&m, WIRE_TAG_SESSION);
				if (f->len == 4 && memcmp(f->data, "died", 4) == 0)
					wire_put_u64(&b, WIRE_TAG_SIGNAL, 9);
				fake_send(fd, &b);
				break;
			case WIRE_MSG_EXEC:
				f = wire_msg_find(&m, WIRE_TAG_CALL_ID);
				if (f == NULL || f->len != 16)
					_exit(95);
				for (i = 0; i < 16; i++)
					snprintf(text + 2 * i, 3, "%02x",
					    f->data[i]);
				snprintf(text + 32, sizeof text - 32, " hard=%d",
				    hard);
				fake_direct(fd, &b, m.id, text);
				break;
			case WIRE_MSG_INTERRUPT:
				hard += wire_msg_u64(&m, WIRE_TAG_HARD, 0) == 1;
				break;
			case WIRE_MSG_PIPES:
				/* "nofds": OK without its pipes; "onefd": OK
				 * with one; else a server from before PIPES */
				if (strcmp(sess, "nofds") == 0) {
					fake_empty(fd, &b, WIRE_MSG_OK, m.id);
					break;
				}
				if (strcmp(sess, "onefd") != 0) {
					fake_error(fd, &b, m.id,
					    WIRE_ERR_UNKNOWN_TYPE,
					    "unknown message type");
					break;
				}
				wire_begin(&b, WIRE_MSG_OK, m.id);
				if (wire_end(&b) != WIRE_OK || pipe(p) != 0 ||
				    wire_send_fds(fd, b.data, b.len, &p[0], 1, 0) !=
				    (ssize_t)b.len)
					_exit(97);
				close(p[0]);
				close(p[1]);
				break;
			case WIRE_MSG_CALLS:
				wire_begin(&b, WIRE_MSG_LISTING, m.id);
				wire_put_str(&b, WIRE_TAG_DATA, "[{\"id\": \"ab\"}]");
				fake_send(fd, &b);
				break;
			case WIRE_MSG_CALL_RESULT:
				fake_output(fd, &b, m.id, 1, "replayed");
				snprintf(text, sizeof text, "wait=%llu",
				    (unsigned long long)wire_msg_u64(&m,
				    WIRE_TAG_WAIT, 9));
				fake_direct(fd, &b, m.id, text);
				break;
			case WIRE_MSG_DETACH:
				fake_empty(fd, &b, WIRE_MSG_OK, m.id);
				goto next;
			default:
				_exit(96);
			}
		}
next:
		wire_conn_free(&wc);
		close(fd);
	}
}

/* Start the fake server on srv_dir/sock. */
static void
srv_setup(void)
{
	struct sockaddr_un sa;
	int lfd;

	ck_assert_int_eq(tu_mkdtemp(srv_dir, sizeof srv_dir, tu_tmpdir(),
	    "ckcli"), 0);
	snprintf(srv_path, sizeof srv_path, "%s/sock", srv_dir);
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	ck_assert_uint_lt(strlen(srv_path), sizeof sa.sun_path);
	strcpy(sa.sun_path, srv_path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(lfd, 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(listen(lfd, 8), 0);
	srv_pid = tu_fork();
	ck_assert_int_ge(srv_pid, 0);
	if (srv_pid == 0)
		fake_server(lfd);
	close(lfd);
	ck_assert_int_eq(pyshelf_create(&conn), PYSHELF_OK);
}

static void
srv_teardown(void)
{
	int st;

	pyshelf_close(conn, NULL);
	conn = NULL;
	if (srv_pid > 0) {
		kill(srv_pid, SIGKILL);
		waitpid(srv_pid, &st, 0);
	}
	srv_pid = -1;
	tu_rmtree(srv_dir);
}

/* Descriptors open in this process. */
static int
open_fds(void)
{
	int fd, n = 0;

	for (fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

/* PIPES answered OK without its two pipes: the handshake fails, says so,
 * and leaves no descriptor behind (the one that came is closed). */
START_TEST(test_connect_pipes_refused_reply)
{
	static const char *names[] = {"nofds", "onefd"};
	int i, before = open_fds();

	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL,
		    names[i], PYSHELF_CONNECT_CREATE, NULL, NULL),
		    PYSHELF_E_PROTOCOL);
		ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn),
		    "not OK and two pipes"));
		ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn),
		    i == 0 ? "0 descriptors" : "1 descriptor"));
		ck_assert_int_eq(open_fds(), before);
	}
	/* an older server (ERROR): the connection stays on its socket */
	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s",
	    PYSHELF_CONNECT_CREATE, NULL, NULL), PYSHELF_OK);
	ck_assert_int_eq(open_fds(), before + 1);
	ck_assert_str_eq(pyshelf_errmsg(conn), "");
}
END_TEST

START_TEST(test_connect_handshake)
{
	const pyshelf_welcome *w = NULL;

	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s",
	    PYSHELF_CONNECT_CREATE, NULL, &w), PYSHELF_OK);
	ck_assert_ptr_nonnull(w);
	ck_assert_uint_eq(w->version, 3);
	ck_assert_str_eq(w->name, "fakeserver");
	ck_assert_uint_eq(w->server_pid, (uint64_t)srv_pid);
	ck_assert_uint_eq(w->pid, 4242);       /* the worker's, from ATTACHED */
	ck_assert_int_eq(w->has_session, 1);
	ck_assert_int_eq(w->session_id[0], 9);
	ck_assert_str_eq(w->session, "c");     /* the fake echoes MODE */
	ck_assert_int_eq(w->created, 1);
	ck_assert_int_eq(w->worker_died, 0);
	ck_assert_int_eq(pyshelf_backend_pid(conn), -1);
	/* a second connect on a connected conn is refused */
	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s", 0, NULL,
	    NULL), PYSHELF_E_INVAL);
}
END_TEST

START_TEST(test_connect_modes_and_death)
{
	const pyshelf_welcome *w = NULL;
	pyshelf_conn *c2;

	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "died",
	    PYSHELF_CONNECT_NEW, NULL, &w), PYSHELF_OK);
	ck_assert_str_eq(w->session, "n");
	ck_assert_int_eq(w->worker_died, 1);
	ck_assert_int_eq(w->worker_signal, 9);
	ck_assert_ptr_nonnull(strstr(w->worker_message, "SIGKILL"));
	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s",
	    PYSHELF_CONNECT_NEW | 0x100, NULL, NULL), PYSHELF_E_INVAL);
	/* the fake serves one connection at a time: end this one first */
	pyshelf_close(conn, NULL);
	ck_assert_int_eq(pyshelf_create(&c2), PYSHELF_OK);
	conn = c2;
	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s", 0, NULL,
	    &w), PYSHELF_OK);
	ck_assert_str_eq(w->session, "w");
}
END_TEST

START_TEST(test_connect_refused_then_again)
{
	const pyshelf_welcome *w = NULL;

	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "busy",
	    PYSHELF_CONNECT_CREATE, NULL, &w), PYSHELF_E_REMOTE);
	ck_assert_uint_eq(pyshelf_remote_errcode(conn), PYSHELF_ERR_SESSION_BUSY);
	ck_assert_str_eq(pyshelf_errmsg(conn), "it is busy");
	ck_assert_ptr_null(w);
	/* the connection has no backend again: a new try works */
	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s",
	    PYSHELF_CONNECT_CREATE, NULL, &w), PYSHELF_OK);
}
END_TEST

START_TEST(test_connect_without_server)
{
	char path[400];

	snprintf(path, sizeof path, "%s/nobody", srv_dir);
	ck_assert_int_eq(pyshelf_connect(conn, path, NULL, "s",
	    PYSHELF_CONNECT_CREATE, NULL, NULL), PYSHELF_E_SPAWN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "nobody"));
	ck_assert_int_ne(access(path, F_OK), 0);   /* nothing started there */
}
END_TEST

START_TEST(test_exec_call_ids)
{
	static const uint8_t zero[16];
	pyshelf_exec_req req = { .code = "1" };
	pyshelf_result res;
	char hex[40];
	size_t i;

	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s",
	    PYSHELF_CONNECT_CREATE, NULL, NULL), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_ne(memcmp(req.call_id, zero, 16), 0); /* drawn */
	for (i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", req.call_id[i]);
	ck_assert_uint_eq(res.value_len, 32 + 7);
	ck_assert_int_eq(memcmp(res.value, hex, 32), 0);   /* and sent */
	pyshelf_result_free(&res);
	/* the same id again (a re-send): kept as given */
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_eq(memcmp(res.value, hex, 32), 0);
	pyshelf_result_free(&res);
	/* a fresh request: another id */
	memset(req.call_id, 0, sizeof req.call_id);
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_int_ne(memcmp(res.value, hex, 32), 0);
	pyshelf_result_free(&res);
}
END_TEST

START_TEST(test_calls_result_and_hard_interrupt)
{
	struct collected got;
	pyshelf_exec_req hooks, req = { .code = "1" };
	pyshelf_result res;
	uint8_t id[16] = { 1 };
	char *json = NULL;

	memset(&got, 0, sizeof got);
	memset(&hooks, 0, sizeof hooks);
	hooks.on_output = collect_output;
	hooks.ctx = &got;
	ck_assert_int_eq(pyshelf_connect(conn, srv_path, NULL, "s",
	    PYSHELF_CONNECT_CREATE, NULL, NULL), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_calls(conn, &json), PYSHELF_OK);
	ck_assert_str_eq(json, "[{\"id\": \"ab\"}]");
	pyshelf_free(json);
	ck_assert_int_eq(pyshelf_call_result(conn, id, 1, -1, &hooks, &res),
	    PYSHELF_OK);
	ck_assert_str_eq(got.out, "replayed");
	ck_assert_uint_eq(res.value_len, 6);
	ck_assert_int_eq(memcmp(res.value, "wait=1", 6), 0);
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_call_result(conn, id, 0, 5000, NULL, &res),
	    PYSHELF_OK);
	ck_assert_int_eq(memcmp(res.value, "wait=0", 6), 0);
	pyshelf_result_free(&res);
	/* a hard interrupt is sent with HARD=1 even with no exec running */
	ck_assert_int_eq(pyshelf_interrupt_hard(conn), PYSHELF_OK);
	ck_assert_int_eq(pyshelf_interrupt(conn), PYSHELF_OK); /* none: no-op */
	ck_assert_int_eq(pyshelf_exec(conn, &req, &res), PYSHELF_OK);
	ck_assert_uint_eq(res.value_len, 32 + 7);
	ck_assert_int_eq(memcmp((const char *)res.value + 32, " hard=1", 7), 0);
	pyshelf_result_free(&res);
	ck_assert_int_eq(pyshelf_detach(conn), PYSHELF_OK);
}
END_TEST

/* Auto-start: a `pyshelfd --server` that fails is PYSHELF_E_SPAWN with
 * its stderr sentence; the socket directory is made 0700; an open one is
 * refused before anything runs. */
START_TEST(test_autostart_failures)
{
	char script[800], run[400], marker[400];
	pyshelf_connect_opts o;
	struct stat st;
	FILE *f;

	memset(&o, 0, sizeof o);
	snprintf(run, sizeof run, "%s/run", srv_dir);
	ck_assert_int_eq(mkdir(run, 0700), 0);
	setenv("XDG_RUNTIME_DIR", run, 1);
	snprintf(script, sizeof script, "%s/fakepyshelfd", srv_dir);
	snprintf(marker, sizeof marker, "%s/ran", srv_dir);
	f = fopen(script, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "#!/bin/sh\necho \"$@\" > %s\necho noise >&2\n"
	    "echo 'pyshelfd: cannot serve: the test says no' >&2\nexit 3\n",
	    marker);
	fclose(f);
	ck_assert_int_eq(chmod(script, 0700), 0);
	o.backend = script;
	ck_assert_int_eq(pyshelf_connect(conn, NULL, "relative-db", "s",
	    PYSHELF_CONNECT_CREATE, &o, NULL), PYSHELF_E_SPAWN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn),
	    "exited with status 3: pyshelfd: cannot serve: the test says no"));
	ck_assert_int_eq(stat(marker, &st), 0);           /* it ran ... */
	f = fopen(marker, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(script, sizeof script, f));
	fclose(f);
	ck_assert_ptr_nonnull(strstr(script, "--server --db /"));  /* absolute */
	ck_assert_ptr_nonnull(strstr(script, "/relative-db"));
	snprintf(script, sizeof script, "%s/pyshelf", run);
	ck_assert_int_eq(stat(script, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	/* NO_START: nothing runs */
	unlink(marker);
	ck_assert_int_eq(pyshelf_connect(conn, NULL, "relative-db", "s",
	    PYSHELF_CONNECT_CREATE | PYSHELF_CONNECT_NO_START, &o, NULL),
	    PYSHELF_E_SPAWN);
	ck_assert_int_ne(access(marker, F_OK), 0);
	/* an open socket directory is refused before anything runs */
	ck_assert_int_eq(chmod(script, 0755), 0);
	ck_assert_int_eq(pyshelf_connect(conn, NULL, "relative-db", "s",
	    PYSHELF_CONNECT_CREATE, &o, NULL), PYSHELF_E_SPAWN);
	ck_assert_ptr_nonnull(strstr(pyshelf_errmsg(conn), "0700"));
	ck_assert_int_ne(access(marker, F_OK), 0);
}
END_TEST

static Suite *
client_suite(void)
{
	Suite *s = suite_create("client");
	TCase *core = tcase_create("Core");
	TCase *limits = tcase_create("Limits");
	TCase *alone = tcase_create("Standalone");
	TCase *server = tcase_create("Server");

	tcase_add_checked_fixture(core, setup, teardown);
	tcase_set_timeout(core, TU_TIMEOUT);
	tcase_add_test(core, test_request_validation);
	tcase_add_test(core, test_hello);
	tcase_add_test(core, test_exec_output_and_direct_result);
	tcase_add_test(core, test_exec_wrapped_and_excinfo);
	tcase_add_test(core, test_exec_remote_error);
	tcase_add_test(core, test_exec_encodes_arguments);
	tcase_add_test(core, test_exec_plain_data);
	tcase_add_test(core, test_interrupt_from_thread);
	tcase_add_test(core, test_interrupt_from_wait_callback);
	tcase_add_test(core, test_abandon_then_late_reply_is_skipped);
	tcase_add_test(core, test_output_callback_abandons);
	tcase_add_test(core, test_stale_reply_is_skipped);
	tcase_add_test(core, test_mapping);
	tcase_add_test(core, test_listings);
	tcase_add_test(core, test_release_has_no_reply);
	tcase_add_test(core, test_detach_and_close_session);
	tcase_add_test(core, test_forked_child_is_refused);
	suite_add_tcase(s, core);

	tcase_add_checked_fixture(limits, setup, teardown);
	tcase_set_timeout(limits, TU_TIMEOUT);
	tcase_add_test(limits, test_backend_dies_mid_request);
	tcase_add_loop_test(limits, test_backend_dies_mid_reply, 0, 2);
	tcase_add_test(limits, test_backend_dies_while_the_request_runs);
	tcase_add_test(limits, test_malformed_frame);
	tcase_add_test(limits, test_reply_with_wrong_id);
	tcase_add_test(limits, test_result_of_unknown_kind);
	suite_add_tcase(s, limits);

	tcase_set_timeout(alone, TU_TIMEOUT);
	tcase_add_test(alone, test_strerror);
	tcase_add_test(alone, test_invalid_arguments);
	tcase_add_test(alone, test_spawn_missing_backend);
	tcase_add_test(alone, test_spawn_backend_that_exits);
	tcase_add_test(alone, test_spawn_path_search);
	tcase_add_test(alone, test_write_to_dead_pipe_is_not_sigpipe);
	tcase_add_test(alone, test_close_kills_a_stubborn_backend);
	tcase_add_test(alone, test_hello_gets_the_refusal);
	tcase_add_test(alone, test_dead_backend_is_reaped_at_once);
	tcase_add_test(alone, test_spawned_child_hygiene);
	tcase_add_test(alone, test_forked_child_writes_nothing);
	tcase_add_test(alone, test_forked_child_leaves_the_backend);
	tcase_add_test(alone, test_values_larger_than_a_frame);
	suite_add_tcase(s, alone);

	tcase_add_checked_fixture(server, srv_setup, srv_teardown);
	tcase_set_timeout(server, TU_TIMEOUT);
	tcase_add_test(server, test_connect_handshake);
	tcase_add_test(server, test_connect_pipes_refused_reply);
	tcase_add_test(server, test_connect_modes_and_death);
	tcase_add_test(server, test_connect_refused_then_again);
	tcase_add_test(server, test_connect_without_server);
	tcase_add_test(server, test_exec_call_ids);
	tcase_add_test(server, test_calls_result_and_hard_interrupt);
	tcase_add_test(server, test_autostart_failures);
	suite_add_tcase(s, server);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(client_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
