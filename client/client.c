/*
 * client.c - libpyshelf: one connection to a pyshelf backend.
 *
 * A connection is a wire_conn (the read side and its buffer), a request
 * buffer, and the state that keeps requests and replies in step: every
 * request gets a fresh id (next_id), cur_id is the request whose reply is
 * awaited, and a frame carrying an older id is a late reply to a request
 * that was abandoned (a callback gave up on it), so it is skipped.
 *
 * Writes go through wlock because pyshelf_interrupt() writes from another
 * thread while the requesting thread waits; exec_id, the id an INTERRUPT
 * must carry, is read and written under the same lock.  Everything else is
 * touched only by the one thread in a request, which the busy flag
 * enforces.
 *
 * Errors: client_fail() records a sentence and returns the code; errors
 * that leave the stream out of step (I/O, EOF, a bad frame) are sticky
 * through client_fatal(): every later request returns the same code and
 * the message of the first failure stays readable.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"
#include "sockpath.h"
#include "pyshelf.h"
#include "client-int.h"

/* NAME sent in HELLO when the caller gives none. */
#define CLIENT_NAME "libpyshelf"
/* Default wait in pyshelf_close() for a spawned backend's detach reply and
 * exit (pyshelf.h says why it is long: it covers the final checkpoint). */
#define CLIENT_CLOSE_MS 60000
/* Default limit on frames from the backend: the backend was started or
 * chosen by the caller, so this only catches garbage; values of hundreds
 * of MB must get through. */
#define CLIENT_MAX_IN (1024u * 1024 * 1024)
/* pyshelf_errmsg() in the child of a fork() (PYSHELF_E_FORKED). */
#define CLIENT_FORKED_MSG "this connection belongs to the process that " \
	"set it up, and this process is a child of its fork(): nothing was " \
	"sent; open a connection of its own here"
/* A request buffer larger than this is freed after its request. */
#define CLIENT_KEEP_WBUF (1024u * 1024)

/* The public error codes are the wire's; wire.h is not installed. */
_Static_assert(PYSHELF_ERR_MALFORMED == WIRE_ERR_MALFORMED, "errcode");
_Static_assert(PYSHELF_ERR_UNKNOWN_HANDLE == WIRE_ERR_UNKNOWN_HANDLE,
    "errcode");
_Static_assert(PYSHELF_ERR_PICKLE == WIRE_ERR_PICKLE, "errcode");
_Static_assert(PYSHELF_ERR_NOT_FOUND == WIRE_ERR_NOT_FOUND, "errcode");
_Static_assert(PYSHELF_ERR_VOLATILE == WIRE_ERR_VOLATILE, "errcode");
_Static_assert(PYSHELF_ERR_BAD_REQUEST == WIRE_ERR_BAD_REQUEST, "errcode");
_Static_assert(PYSHELF_ERR_SESSION_BUSY == WIRE_ERR_SESSION_BUSY, "errcode");
_Static_assert(PYSHELF_ERR_USAGE == WIRE_ERR_USAGE, "errcode");
_Static_assert(PYSHELF_ERR_READ_ONLY == WIRE_ERR_READ_ONLY, "errcode");
_Static_assert(PYSHELF_ERR_UNKNOWN_CALL == WIRE_ERR_UNKNOWN_CALL, "errcode");
_Static_assert(PYSHELF_ERR_WORKER_DIED == WIRE_ERR_WORKER_DIED, "errcode");
_Static_assert(PYSHELF_ERR_WORKER_RESTARTED == WIRE_ERR_WORKER_RESTARTED,
    "errcode");
_Static_assert(PYSHELF_KIND_DIRECT == WIRE_KIND_DIRECT, "kind");
_Static_assert(PYSHELF_KIND_WRAPPED == WIRE_KIND_WRAPPED, "kind");
_Static_assert(PYSHELF_KIND_EXCINFO == WIRE_KIND_EXCINFO, "kind");
_Static_assert(PYSHELF_KIND_TEXT == WIRE_KIND_TEXT, "kind");
_Static_assert(PYSHELF_WANT_REPR == WIRE_WANT_REPR, "want");
_Static_assert(PYSHELF_WANT_JSON == WIRE_WANT_JSON, "want");

/* The send buffer asked for a connection to a server. */
#define CLIENT_SOCK_SNDBUF (4 << 20)

struct pyshelf_conn {
	wire_conn wc;            /* read side: fds, buffer, max_body */
	int rfd;                 /* read fd, -1 before spawn/attach */
	int wfd;                 /* write fd (== rfd for a socket) */
	int wfd_is_socket;       /* write with send(MSG_NOSIGNAL) */
	pid_t pid;               /* spawned backend, -1 when none */
	int reaped;              /* pid has been waited for */
	int wstatus;             /* its waitpid() status once reaped */
	wire_buf wbuf;           /* the request being built */
	wire_msg msg;            /* the last frame read; borrows wc's buffer */
	uint64_t next_id;        /* last request id used */
	uint64_t cur_id;         /* the request whose reply is awaited */
	pthread_mutex_t wlock;   /* serialises writes to wfd */
	uint64_t exec_id;        /* running EXEC's id, 0 if none; under wlock */
	atomic_flag busy;        /* a request is running */
	int broken;              /* sticky PYSHELF_E_* once out of step */
	int finished;            /* 1 detached, 2 session closed */
	char *errmsg;            /* last failure's sentence, owned */
	size_t errcap;           /* bytes allocated at errmsg */
	uint64_t remote_code;    /* ERRCODE of the last PYSHELF_E_REMOTE */
	uint64_t remote_pid;     /* its PID field, 0 when absent */
	uint64_t remote_ended;   /* its ENDED_MS field, 0 when absent */
	char *remote_reason;     /* its REASON field (owned), or NULL */
	uint64_t peer_max;       /* largest body the backend accepts */
	unsigned spin_us;        /* busy-poll before sleeping in a read */
	int rcvtimeo_ms;         /* SO_RCVTIMEO set on a server's socket
	                            (0: none), -1 not set by us yet */
	int close_ms;            /* pyshelf_close()'s wait for the backend */
	int have_welcome;        /* hello succeeded */
	pyshelf_welcome welcome; /* what WELCOME said; strings below */
	char *welcome_name;      /* owned copy of WELCOME.NAME */
	char *welcome_session;   /* owned copy of WELCOME.SESSION */
	char *welcome_reason;    /* owned copy of WELCOME.REASON */
	char *welcome_message;   /* owned copy of WELCOME.MESSAGE */
	pyshelf_output_fn notice_fn; /* OUTPUT outside an exec, or NULL */
	void *notice_ctx;        /* its ctx */
	int server;              /* attached through a server (connect) */
	char *worker_message;    /* owned: the previous worker's death */
	pyshelf_buffer *sbufs;   /* owned array, borrowed bytes: out-of-band
	                            buffers sent after the request in wbuf */
	size_t nsbufs, sbufcap;  /* entries used and allocated */
	wire_long rl;            /* the LONG being (or last) received: its
	                            body holds msg's fields */
	pyshelf_buffer *rbufs;   /* owned: its buffers, until client_result
	                            hands them to a pyshelf_result */
	size_t nrbufs;           /* number of rbufs */
	int fate;                /* PYSHELF_FATE_* of the request in flight:
	                            UNKNOWN while it is built and written */
	atomic_int intr_sent;    /* an INTERRUPT went out after it (written
	                            by pyshelf_interrupt()'s thread) */
	pid_t owner;             /* the process that set up rfd/wfd; any
	                            other (a fork()'s child) is refused */
};

static void client_vset(pyshelf_conn *, const char *, va_list)
    __attribute__((format(printf, 2, 0)));
static int client_fail(pyshelf_conn *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static int client_fatal(pyshelf_conn *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void client_clear(pyshelf_conn *);
static int client_enter(pyshelf_conn *, int);
static int client_forked(const pyshelf_conn *);
static pid_t client_self(void);
static void client_leave(pyshelf_conn *);
static void client_begin(pyshelf_conn *, uint16_t);
static int client_send(pyshelf_conn *, int);
static int client_add_bufs(pyshelf_conn *, const pyshelf_buffer *, size_t);
static void client_rbufs_free(pyshelf_conn *);
static int client_write_error(pyshelf_conn *, int);
static int client_send_long(pyshelf_conn *, int);
static int client_send_interrupt(pyshelf_conn *, int *, int);
static int client_read(pyshelf_conn *, const pyshelf_exec_req *, int64_t);
static int client_read_error(pyshelf_conn *, int, int);
static void client_read_reset(pyshelf_conn *);
static int client_reply(pyshelf_conn *, const pyshelf_exec_req *, int64_t);
static int client_notice(pyshelf_conn *);
static int client_remote(pyshelf_conn *);
static int client_unexpected(pyshelf_conn *, const char *);
static int client_roundtrip(pyshelf_conn *, uint16_t, uint16_t);
static int client_result(pyshelf_conn *, pyshelf_result *);
static int client_exec_build(pyshelf_conn *, pyshelf_exec_req *);
static uint64_t client_want(int);
static int client_put_text(pyshelf_conn *, uint8_t, int, const char *,
                           size_t);
static int client_set(pyshelf_conn *, const char *, int, const void *,
    size_t, const pyshelf_buffer *, size_t, const char *);
static int client_exec_wait(pyshelf_conn *, const pyshelf_exec_req *,
    pyshelf_result *, int64_t);
static int client_output(pyshelf_conn *, const pyshelf_exec_req *);
static int client_welcome(pyshelf_conn *);
static int client_end_session(pyshelf_conn *, uint16_t, int, int64_t);
static int client_listing(pyshelf_conn *, uint16_t);
static int client_simple(pyshelf_conn *, uint16_t, uint16_t);
static void client_close_backend(pyshelf_conn *, int *);
static void client_close_forked(pyshelf_conn *);
static void client_free(pyshelf_conn *);
static const char *client_msg_name(uint16_t);

/* --- errors -------------------------------------------------------------- */

/* Return a static sentence for a PYSHELF_E_* code. */
const char *
pyshelf_strerror(int rc)
{
	switch (rc) {
	case PYSHELF_OK:
		return "success";
	case PYSHELF_E_INVAL:
		return "invalid argument";
	case PYSHELF_E_NOMEM:
		return "out of memory";
	case PYSHELF_E_SPAWN:
		return "the backend could not be started";
	case PYSHELF_E_IO:
		return "reading from or writing to the backend failed";
	case PYSHELF_E_CLOSED:
		return "the backend closed the connection";
	case PYSHELF_E_PROTOCOL:
		return "the backend broke the protocol";
	case PYSHELF_E_TOO_BIG:
		return "request larger than the backend's maximum frame size";
	case PYSHELF_E_REMOTE:
		return "the backend reported an error";
	case PYSHELF_E_CANCELED:
		return "the request was abandoned";
	case PYSHELF_E_BUSY:
		return "another request is running on this connection";
	case PYSHELF_E_TIMEOUT:
		return "timed out";
	case PYSHELF_E_NOTCONN:
		return "no backend on this connection";
	case PYSHELF_E_FORKED:
		return "the connection belongs to the parent of this fork()";
	}
	return "unknown pyshelf error";
}

/* Return a static name for a backend ERRCODE. */
const char *
pyshelf_errcode_name(uint64_t code)
{
	return wire_errcode_name(code);
}

/* Format a sentence into c->errmsg, growing it; keeps a truncated
 * sentence when memory runs out. */
static void
client_vset(pyshelf_conn *c, const char *fmt, va_list ap)
{
	va_list ap2;
	char *p;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(c->errmsg, c->errcap, fmt, ap);
	if (n >= 0 && (size_t)n >= c->errcap) {
		if ((p = realloc(c->errmsg, (size_t)n + 1)) != NULL) {
			c->errmsg = p;
			c->errcap = (size_t)n + 1;
		}
		if (c->errcap > 0)
			vsnprintf(c->errmsg, c->errcap, fmt, ap2);
	}
	va_end(ap2);
}

/* Record a failure that leaves the connection usable; returns rc. */
static int
client_fail(pyshelf_conn *c, int rc, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	client_vset(c, fmt, ap);
	va_end(ap);
	errno = saved;
	return rc;
}

/* Record a failure that leaves the stream out of step: sticky. */
static int
client_fatal(pyshelf_conn *c, int rc, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	client_vset(c, fmt, ap);
	va_end(ap);
	c->broken = rc;
	errno = saved;
	return rc;
}

/* Forget the last failure. */
static void
client_clear(pyshelf_conn *c)
{
	if (c->errmsg != NULL)
		c->errmsg[0] = '\0';
	c->remote_code = 0;
	c->remote_pid = 0;
	c->remote_ended = 0;
	free(c->remote_reason);
	c->remote_reason = NULL;
}

/* Reap a spawned backend seen dead (EOF or a broken pipe), so that no
 * zombie is left behind.  Its stdout ends as its files close, a moment
 * before it can be waited for: a short, bounded wait covers that; one that
 * is still running after it (stdout closed by hand) is left alone. */
static void
client_reap(pyshelf_conn *c)
{
	int st;

	if (c->pid > 0 && !c->reaped && spawn_wait(c->pid, 1000, &st) == 0) {
		c->reaped = 1;
		c->wstatus = st;
	}
}

/* Return the last failure's sentence. */
const char *
pyshelf_errmsg(const pyshelf_conn *c)
{
	if (c != NULL && client_forked(c))
		return CLIENT_FORKED_MSG;
	if (c == NULL || c->errmsg == NULL)
		return "";
	return c->errmsg;
}

/* Return the ERRCODE of the last PYSHELF_E_REMOTE. */
uint64_t
pyshelf_remote_errcode(const pyshelf_conn *c)
{
	return c != NULL ? c->remote_code : 0;
}

/* Return the PID field of the last PYSHELF_E_REMOTE. */
uint64_t
pyshelf_remote_pid(const pyshelf_conn *c)
{
	return c != NULL ? c->remote_pid : 0;
}

/* Return the ENDED_MS and REASON fields of the last PYSHELF_E_REMOTE. */
uint64_t
pyshelf_remote_ended(const pyshelf_conn *c, const char **reason)
{
	if (reason != NULL)
		*reason = c != NULL ? c->remote_reason : NULL;
	return c != NULL ? c->remote_ended : 0;
}

/* --- life cycle ------------------------------------------------------------ */

/* Create an unconnected connection. */
int
pyshelf_create(pyshelf_conn **connp)
{
	pyshelf_conn *c;

	if (connp == NULL)
		return PYSHELF_E_INVAL;
	*connp = NULL;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return PYSHELF_E_NOMEM;
	if (pthread_mutex_init(&c->wlock, NULL) != 0) {
		free(c);
		return PYSHELF_E_NOMEM;
	}
	wire_conn_init(&c->wc, -1, -1, CLIENT_MAX_IN);
	wire_buf_init(&c->wbuf);
	wire_msg_init(&c->msg);
	atomic_flag_clear(&c->busy);
	c->rfd = c->wfd = -1;
	c->rcvtimeo_ms = -1;
	c->pid = -1;
	c->peer_max = WIRE_DEFAULT_MAX_FRAME;
	c->close_ms = CLIENT_CLOSE_MS;
	*connp = c;
	return PYSHELF_OK;
}

/* Set the spin before blocking reads. */
int
pyshelf_set_spin(pyshelf_conn *c, unsigned spin_us)
{
	if (c == NULL)
		return PYSHELF_E_INVAL;
	c->spin_us = spin_us;
	return PYSHELF_OK;
}

/* Set the largest frame body accepted from the backend. */
int
pyshelf_set_max_frame(pyshelf_conn *c, size_t max_body)
{
	if (c == NULL || max_body == 0 || max_body > UINT32_MAX)
		return PYSHELF_E_INVAL;
	c->wc.max_body = max_body;
	return PYSHELF_OK;
}

/* Set pyshelf_close()'s wait for the backend. */
int
pyshelf_set_close_timeout(pyshelf_conn *c, int timeout_ms)
{
	if (c == NULL || timeout_ms < 0)
		return PYSHELF_E_INVAL;
	c->close_ms = timeout_ms;
	return PYSHELF_OK;
}

/* Start a stdio backend on pipes; see pyshelf.h. */
int
pyshelf_spawn(pyshelf_conn *c, const char *backend, const char *db,
    const char *session, unsigned flags, const char *const *extra_args)
{
	const char **argv;
	char why[512], exe[4096];
	size_t nextra = 0, i, n = 0;
	pid_t pid;
	int rfd, wfd, rc;

	if ((rc = client_enter(c, 0)) != PYSHELF_OK)
		return rc;
	if ((flags & ~1u) != 0) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "pyshelf_spawn: flags must be 0 or PYSHELF_SPAWN_CREATE");
		goto out;
	}
	if (backend == NULL || *backend == '\0') {
		const char *env = getenv("PYSHELFD");

		backend = env != NULL && *env != '\0' ? env : "pyshelfd";
	}
	if (spawn_find(backend, exe, sizeof exe, why, sizeof why) < 0) {
		rc = client_fail(c, PYSHELF_E_SPAWN, "%s", why);
		goto out;
	}
	while (extra_args != NULL && extra_args[nextra] != NULL)
		nextra++;
	if ((argv = calloc(nextra + 9, sizeof *argv)) == NULL) {
		rc = client_fail(c, PYSHELF_E_NOMEM, "out of memory");
		goto out;
	}
	argv[n++] = exe;
	argv[n++] = "--stdio";
	if (db != NULL) {
		argv[n++] = "--db";
		argv[n++] = db;
	}
	argv[n++] = "--session";
	argv[n++] = session != NULL ? session : "default";
	if (flags & PYSHELF_SPAWN_CREATE)
		argv[n++] = "--create";
	for (i = 0; i < nextra; i++)
		argv[n++] = extra_args[i];
	argv[n] = NULL;

	if (spawn_start((char *const *)argv, &pid, &rfd, &wfd, why,
	    sizeof why) < 0)
		rc = client_fail(c, errno == ENOMEM ? PYSHELF_E_NOMEM :
		    PYSHELF_E_SPAWN, "%s", why);
	else {
		c->pid = pid;
		c->reaped = 0;
		c->rfd = c->wc.rfd = rfd;
		c->wfd = c->wc.wfd = wfd;
		c->wfd_is_socket = 0;
		rc = PYSHELF_OK;
	}
	free(argv);
out:
	client_leave(c);
	return rc;
}

/* Use existing descriptors; see pyshelf.h. */
int
pyshelf_attach_fds(pyshelf_conn *c, int rfd, int wfd)
{
	int rc;

	if ((rc = client_enter(c, 0)) != PYSHELF_OK)
		return rc;
	if (rfd < 0 || wfd < 0) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "pyshelf_attach_fds: negative descriptor");
	} else {
		c->rfd = c->wc.rfd = rfd;
		c->wfd = c->wc.wfd = wfd;
		c->wfd_is_socket = io_is_socket(wfd);
		rc = PYSHELF_OK;
	}
	client_leave(c);
	return rc;
}

/* --- server mode ------------------------------------------------------------ */

/* How long an auto-start waits for another client's start (the lock) and
 * for its own `pyshelfd --server` to be ready is the server's business:
 * it exits once its socket accepts, or with its reason.  Nothing here
 * times out but the server. */

/* Connect a new stream socket to path.  Returns the fd, or -1 with errno
 * (ENOENT: no socket; ECONNREFUSED: a socket nobody listens on). */
static int
client_sock_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd, e, sndbuf = CLIENT_SOCK_SNDBUF;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	/* a value streamed in PARTs of megabytes crosses in a few steps
	 * per PART, not one per 200 KiB (the default); only advice, capped
	 * by net.core.wmem_max */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
	while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		if (errno == EINTR)
			continue;
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Does a connect() error mean "no server there" (so start one)? */
static int
client_no_server(int e)
{
	return e == ENOENT || e == ECONNREFUSED;
}

/* The store directory as the server gets it: absolute, because the
 * daemon does not run in this directory.  Returns a malloc'd path. */
static char *
client_abs_db(const char *db)
{
	char cwd[4096], *out;
	size_t n;

	if (db[0] == '/')
		return strdup(db);
	if (getcwd(cwd, sizeof cwd) == NULL)
		return NULL;
	n = strlen(cwd) + 1 + strlen(db) + 1;
	if ((out = malloc(n)) != NULL)
		snprintf(out, n, "%s/%s", cwd, db);
	return out;
}

/* Trim a captured stderr to its last non-empty line, without a trailing
 * newline: that is pyshelfd's sentence (usage and errors end there). */
static const char *
client_last_line(char *text)
{
	size_t n = strlen(text);
	char *p;

	while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' ||
	    text[n - 1] == ' '))
		text[--n] = '\0';
	p = strrchr(text, '\n');
	return p != NULL ? p + 1 : text;
}

/*
 * Run `backend --server [--db DB] [args...]` and wait for it to exit: 0
 * means its socket accepts.  Called with the start lock held.
 */
static int
client_start_server(pyshelf_conn *c, const char *db,
    const pyshelf_connect_opts *o)
{
	const char *backend = o != NULL ? o->backend : NULL;
	const char *const *extra = o != NULL ? o->server_args : NULL;
	const char **argv = NULL;
	char why[512], exe[4096], err[2048];
	char *adb = NULL;
	size_t nextra = 0, i, n = 0;
	int rc, st;

	if (backend == NULL || *backend == '\0') {
		const char *env = getenv("PYSHELFD");

		backend = env != NULL && *env != '\0' ? env : "pyshelfd";
	}
	if (spawn_find(backend, exe, sizeof exe, why, sizeof why) < 0)
		return client_fail(c, PYSHELF_E_SPAWN, "%s", why);
	if (db != NULL && (adb = client_abs_db(db)) == NULL)
		return client_fail(c, PYSHELF_E_NOMEM, "out of memory");
	while (extra != NULL && extra[nextra] != NULL)
		nextra++;
	if ((argv = calloc(nextra + 5, sizeof *argv)) == NULL) {
		free(adb);
		return client_fail(c, PYSHELF_E_NOMEM, "out of memory");
	}
	argv[n++] = exe;
	argv[n++] = "--server";
	if (adb != NULL) {
		argv[n++] = "--db";
		argv[n++] = adb;
	}
	for (i = 0; i < nextra; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (spawn_run((char *const *)argv, &st, err, sizeof err, why,
	    sizeof why) < 0)
		rc = client_fail(c, errno == ENOMEM ? PYSHELF_E_NOMEM :
		    PYSHELF_E_SPAWN, "%s", why);
	else if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		rc = PYSHELF_OK;
	else if (WIFEXITED(st) && WEXITSTATUS(st) == 2 && err[0] != '\0')
		/* a refused option: its reason is the first line (the usage
		 * line follows), a usage error as spawn's (ValueError) */
		rc = client_fail(c, PYSHELF_E_INVAL, "%.*s",
		    (int)strcspn(err, "\n"), err);
	else if (WIFEXITED(st))
		rc = client_fail(c, PYSHELF_E_SPAWN, "%s --server exited "
		    "with status %d: %s", exe, WEXITSTATUS(st),
		    err[0] != '\0' ? client_last_line(err) : "(no message)");
	else
		rc = client_fail(c, PYSHELF_E_SPAWN, "%s --server was killed "
		    "by signal %d (%s)%s%s", exe, WTERMSIG(st),
		    strsignal(WTERMSIG(st)), err[0] != '\0' ? ": " : "",
		    client_last_line(err));
	free(argv);
	free(adb);
	return rc;
}

/*
 * Connect to the store's own server, starting it as tmux does: connect;
 * when nobody answers, take the start lock, try once more (a racing
 * client may have started it), remove a stale socket, start the server,
 * connect.  Returns the fd, or -1 with the error recorded in *rc.
 */
static int
client_autostart(pyshelf_conn *c, const char *path, const char *db,
    unsigned flags, const pyshelf_connect_opts *o, int *rc)
{
	char dir[4096], name[256], lock[4096 + 300];
	char *cause = NULL;
	struct stat st;
	int fd, lfd = -1, e;

	if ((fd = client_sock_connect(path)) >= 0)
		return fd;
	e = errno;
	if (!client_no_server(e) || (flags & PYSHELF_CONNECT_NO_START)) {
		*rc = client_fail(c, PYSHELF_E_SPAWN, "cannot connect to the "
		    "pyshelf server at %s: %s", path, strerror(e));
		return -1;
	}
	if (sockpath_dir(dir, sizeof dir) < 0 ||
	    sockpath_name(db, name, sizeof name) < 0) {
		*rc = client_fail(c, PYSHELF_E_SPAWN, "cannot name the "
		    "server's socket: %s", strerror(errno));
		return -1;
	}
	if (sockpath_dir_make(dir, &cause) < 0) {
		*rc = client_fail(c, PYSHELF_E_SPAWN, "cannot start a pyshelf "
		    "server: %s", cause != NULL ? cause : strerror(errno));
		free(cause);
		return -1;
	}
	free(cause);
	snprintf(lock, sizeof lock, "%s/%s.lock", dir, name);
	/* close-on-exec: the server must not inherit (and so hold) it */
	if ((lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		*rc = client_fail(c, PYSHELF_E_SPAWN, "cannot open the start "
		    "lock %s: %s", lock, strerror(errno));
		return -1;
	}
	while (flock(lfd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		*rc = client_fail(c, PYSHELF_E_SPAWN, "cannot lock %s: %s",
		    lock, strerror(errno));
		close(lfd);
		return -1;
	}
	if ((fd = client_sock_connect(path)) >= 0)
		goto out;               /* another client started it */
	e = errno;
	if (!client_no_server(e)) {
		*rc = client_fail(c, PYSHELF_E_SPAWN, "cannot connect to the "
		    "pyshelf server at %s: %s", path, strerror(e));
		goto out;
	}
	/* a socket nobody listens on is a dead server's: only a socket is
	 * removed, and only under the lock every starter takes */
	if (e == ECONNREFUSED && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		(void)unlink(path);
	if ((*rc = client_start_server(c, db, o)) != PYSHELF_OK)
		goto out;
	if ((fd = client_sock_connect(path)) < 0)
		*rc = client_fail(c, PYSHELF_E_SPAWN, "the pyshelf server "
		    "started but %s does not accept: %s", path,
		    strerror(errno));
out:
	close(lfd);                     /* unlocks */
	return fd;
}

/* Copy the session fields of WELCOME (stdio) or ATTACHED (server mode)
 * into c->welcome; an ATTACHED also says how the previous worker died. */
static int
client_session_fields(pyshelf_conn *c, int attached)
{
	const wire_field *f, *msg;
	pyshelf_welcome *w = &c->welcome;
	char *session = NULL, *reason = NULL, *message = NULL, *wmsg = NULL;
	int sig;

	f = wire_msg_find(&c->msg, WIRE_TAG_SESSION);
	session = f != NULL ? wire_field_strdup(f) : strdup("");
	if ((f = wire_msg_find(&c->msg, WIRE_TAG_REASON)) != NULL)
		reason = wire_field_strdup(f);
	msg = wire_msg_find(&c->msg, WIRE_TAG_MESSAGE);
	if (msg != NULL)
		message = wire_field_strdup(msg);
	if (session == NULL || (f != NULL && reason == NULL) ||
	    (msg != NULL && message == NULL))
		goto nomem;
	w->session = session;
	free(c->welcome_session);
	c->welcome_session = session;
	session = NULL;
	if ((f = wire_msg_find(&c->msg, WIRE_TAG_SESSION_ID)) != NULL) {
		w->has_session = 1;
		memcpy(w->session_id, f->data, sizeof w->session_id);
	}
	w->created = wire_msg_u64(&c->msg, WIRE_TAG_CREATED, 0) != 0;
	w->lease_ms = wire_msg_u64(&c->msg, WIRE_TAG_LEASE_MS, 0);
	w->expires_ms = wire_msg_u64(&c->msg, WIRE_TAG_EXPIRES_MS, 0);
	w->ended_ms = wire_msg_u64(&c->msg, WIRE_TAG_ENDED_MS, 0);
	w->has_ended = wire_msg_find(&c->msg, WIRE_TAG_ENDED_MS) != NULL;
	free(c->welcome_reason);
	free(c->welcome_message);
	free(c->worker_message);
	c->welcome_reason = reason;
	c->welcome_message = c->worker_message = NULL;
	w->worker_died = 0;
	w->worker_signal = 0;
	w->worker_message = "";
	sig = (int)wire_msg_u64(&c->msg, WIRE_TAG_SIGNAL, 0);
	if (attached && (wire_msg_find(&c->msg, WIRE_TAG_SIGNAL) != NULL ||
	    (message != NULL && !w->has_ended))) {
		/* MESSAGE is the tombstone's with ENDED_MS, else the death's */
		w->worker_died = 1;
		w->worker_signal = sig;
		if (message != NULL && !w->has_ended && (sig == 0 ||
		    strstr(message, "signal") != NULL))
			wmsg = message, message = NULL;
		else if (message != NULL && !w->has_ended) {
			/* the sentence must name the signal */
			size_t n = strlen(message) + 64;

			if ((wmsg = malloc(n)) == NULL)
				goto nomem;
			snprintf(wmsg, n, "%s (killed by signal %d, SIG%s)",
			    message, sig, sigabbrev_np(sig) != NULL ?
			    sigabbrev_np(sig) : "?");
			free(message);
			message = NULL;
		} else {
			size_t n = 160;

			if ((wmsg = malloc(n)) == NULL)
				goto nomem;
			snprintf(wmsg, n, "the session's worker was killed by "
			    "signal %d (SIG%s)", sig, sigabbrev_np(sig) != NULL ?
			    sigabbrev_np(sig) : "?");
		}
		c->worker_message = wmsg;
		w->worker_message = wmsg;
	}
	c->welcome_message = message;
	w->ended_reason = c->welcome_reason;
	w->ended_message = c->welcome_message;
	return PYSHELF_OK;
nomem:
	free(session);
	free(reason);
	free(message);
	return client_fail(c, PYSHELF_E_NOMEM, "out of memory");
}

/* Close the descriptors a reply brought that were not taken. */
static void
client_drop_fds(pyshelf_conn *c)
{
	int i;

	for (i = 0; i < c->wc.nfds; i++)
		close(c->wc.fds[i]);
	c->wc.nfds = 0;
	c->wc.fds[0] = c->wc.fds[1] = -1;
}

/*
 * Server mode, once attached: ask the worker for a pair of pipes and go
 * on over them (PIPES, PROTOCOL.md 7.1).  A round trip over a pipe costs
 * what stdio's does; over a Unix socket it cost 1.6x that on our machines
 * (docs/BENCHMARKS.md).  A server that does not know PIPES answers ERROR
 * and the connection stays on its socket, as it does with
 * PYSHELF_NO_PIPES=1 in the environment.
 */
static int
client_take_pipes(pyshelf_conn *c)
{
	const char *no = getenv("PYSHELF_NO_PIPES");
	struct stat a, b;
	int rc, sock = c->rfd;

	if ((no != NULL && no[0] != '\0' && strcmp(no, "0") != 0) ||
	    !c->wfd_is_socket || c->rfd != c->wfd)
		return PYSHELF_OK;
	client_begin(c, WIRE_MSG_PIPES);
	if ((rc = client_send(c, 0)) != PYSHELF_OK)
		return rc;
	c->wc.take_fds = 1;
	rc = client_reply(c, NULL, -1);
	c->wc.take_fds = 0;
	if (rc != PYSHELF_OK) {
		client_drop_fds(c);
		return rc;
	}
	if (c->msg.type == WIRE_MSG_ERROR) {
		/* a server from before PIPES: the socket it is */
		client_drop_fds(c);
		client_clear(c);
		return PYSHELF_OK;
	}
	if (c->msg.type != WIRE_MSG_OK || c->wc.nfds != 2 ||
	    wire_conn_pending(&c->wc) || fstat(c->wc.fds[0], &a) != 0 ||
	    fstat(c->wc.fds[1], &b) != 0 || !S_ISFIFO(a.st_mode) ||
	    !S_ISFIFO(b.st_mode)) {
		int n = c->wc.nfds;
		client_drop_fds(c);
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the worker answered "
		    "PIPES with %s and %d descriptor%s, not OK and two pipes",
		    client_msg_name(c->msg.type), n, n == 1 ? "" : "s");
	}
	c->rfd = c->wc.rfd = c->wc.fds[0];
	c->wfd = c->wc.wfd = c->wc.fds[1];
	c->wc.nfds = 0;
	c->wc.fds[0] = c->wc.fds[1] = -1;
	c->wfd_is_socket = 0;
	c->rcvtimeo_ms = -1;
	close(sock);
	return PYSHELF_OK;
}

/* The HELLO/WELCOME then ATTACH/ATTACHED handshake of server mode. */
static int
client_server_handshake(pyshelf_conn *c, const char *session,
    unsigned flags, const pyshelf_connect_opts *o)
{
	const char *name = o != NULL && o->client_name != NULL ?
	    o->client_name : CLIENT_NAME;
	uint64_t server_pid;
	int rc;

	client_begin(c, WIRE_MSG_HELLO);
	wire_put_u64(&c->wbuf, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&c->wbuf, WIRE_TAG_NAME, name);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK)
		goto refused;
	if (c->msg.type == WIRE_MSG_ERROR)
		return client_remote(c);   /* VERSION, AUTH: its sentence */
	if (c->msg.type != WIRE_MSG_WELCOME)
		return client_unexpected(c, "HELLO");
	if ((rc = client_welcome(c)) != PYSHELF_OK)
		return rc;
	server_pid = c->welcome.pid;

	client_begin(c, WIRE_MSG_ATTACH);
	wire_put_str(&c->wbuf, WIRE_TAG_SESSION, session);
	if (flags & (PYSHELF_CONNECT_CREATE | PYSHELF_CONNECT_NEW))
		wire_put_u64(&c->wbuf, WIRE_TAG_CREATE, 1);
	wire_put_str(&c->wbuf, WIRE_TAG_MODE, (flags & PYSHELF_CONNECT_READ) ?
	    "r" : (flags & PYSHELF_CONNECT_NEW) ? "n" :
	    (flags & PYSHELF_CONNECT_CREATE) ? "c" : "w");
	if (o != NULL && o->has_lease)
		wire_put_u64(&c->wbuf, WIRE_TAG_LEASE_MS, o->lease_ms);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK)
		goto refused;
	if (c->msg.type == WIRE_MSG_ERROR)
		return client_remote(c);
	if (c->msg.type != WIRE_MSG_ATTACHED)
		return client_unexpected(c, "ATTACH");
	if ((rc = client_session_fields(c, 1)) != PYSHELF_OK)
		return rc;
	c->welcome.server_pid = server_pid;
	c->welcome.pid = wire_msg_u64(&c->msg, WIRE_TAG_PID, 0);
	if (wire_msg_find(&c->msg, WIRE_TAG_MAX_FRAME) != NULL) {
		c->welcome.max_frame = wire_msg_u64(&c->msg,
		    WIRE_TAG_MAX_FRAME, WIRE_DEFAULT_MAX_FRAME);
		if (c->welcome.max_frame > 0) {
			c->peer_max = c->welcome.max_frame;
			if (c->welcome.max_frame > c->wc.max_body &&
			    c->welcome.max_frame <= UINT32_MAX)
				c->wc.max_body = c->welcome.max_frame;
		}
	}
	return client_take_pipes(c);
refused:
	/* a server that refuses says why in an ERROR (id 0) and closes */
	if (rc == PYSHELF_E_PROTOCOL && c->msg.id == 0 &&
	    c->msg.type == WIRE_MSG_ERROR) {
		c->broken = 0;
		client_clear(c);
		return client_remote(c);
	}
	return rc;
}

/* Was the last ATTACH refused by the worker of a session that was just
 * closed and is ending (SESSION_DEAD "closed", with its PID), for a
 * MODE that makes a new session? */
static int
client_closing_worker(const pyshelf_conn *c, unsigned flags)
{
	return (flags & (PYSHELF_CONNECT_CREATE | PYSHELF_CONNECT_NEW)) != 0 &&
	    c->remote_code == WIRE_ERR_SESSION_DEAD && c->remote_pid != 0 &&
	    c->remote_reason != NULL && strcmp(c->remote_reason, "closed") == 0;
}

/* Was the last ATTACH refused by a worker that found its session idle
 * and is checkpointing and exiting so that flag 'n' can replace it
 * (SESSION_BUSY "hibernating", with its PID)?  Its successor serves the
 * next ATTACH. */
static int
client_hibernating_worker(const pyshelf_conn *c)
{
	return c->remote_code == WIRE_ERR_SESSION_BUSY && c->remote_pid != 0 &&
	    c->remote_reason != NULL &&
	    strcmp(c->remote_reason, "hibernating") == 0;
}

/* Wait (up to 10 s) until process pid is gone. */
static void
client_wait_gone(pid_t pid)
{
	struct timespec nap = {0, 20000000L};
	int i;

	for (i = 0; i < 500 && pid > 0; i++) {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return;
		nanosleep(&nap, NULL);
	}
}

/* Attach through a server; see pyshelf.h. */
int
pyshelf_connect(pyshelf_conn *c, const char *socket_path, const char *db,
    const char *session, unsigned flags, const pyshelf_connect_opts *opts,
    const pyshelf_welcome **welcome)
{
	char path[4096];
	struct timespec nap;
	int rc = PYSHELF_OK, fd, tries, welcomed;

	if (welcome != NULL)
		*welcome = NULL;
	if ((rc = client_enter(c, 0)) != PYSHELF_OK)
		return rc;
	if ((flags & ~(unsigned)(PYSHELF_CONNECT_CREATE | PYSHELF_CONNECT_NEW |
	    PYSHELF_CONNECT_NO_START | PYSHELF_CONNECT_READ)) != 0) {
		rc = client_fail(c, PYSHELF_E_INVAL, "pyshelf_connect: unknown "
		    "flags");
		goto out;
	}
	if (session == NULL)
		session = "default";
	if (socket_path != NULL) {
		if ((fd = client_sock_connect(socket_path)) < 0) {
			rc = client_fail(c, PYSHELF_E_SPAWN, "cannot connect to "
			    "the pyshelf server at %s: %s", socket_path,
			    strerror(errno));
			goto out;
		}
	} else {
		if (sockpath_for(db, path, sizeof path) < 0) {
			rc = client_fail(c, PYSHELF_E_SPAWN, "cannot name the "
			    "pyshelf server's socket: %s", strerror(errno));
			goto out;
		}
		if ((fd = client_autostart(c, path, db, flags, opts, &rc)) < 0)
			goto out;
	}
	for (tries = 1; ; tries++) {
		c->rfd = c->wc.rfd = fd;
		c->wfd = c->wc.wfd = fd;
		c->wfd_is_socket = 1;
		c->server = 1;
		c->rcvtimeo_ms = -1;
		rc = client_server_handshake(c, session, flags, opts);
		if (rc == PYSHELF_OK) {
			c->have_welcome = 1;
			if (welcome != NULL)
				*welcome = &c->welcome;
			goto out;
		}
		/* back to no backend, the failure kept for pyshelf_errmsg() */
		close(fd);
		c->rfd = c->wc.rfd = c->wfd = c->wc.wfd = -1;
		c->wc.rlen = c->wc.rpos = 0;
		c->broken = 0;
		c->server = 0;
		welcomed = c->have_welcome;
		c->have_welcome = 0;
		/* EOF after WELCOME: the ATTACH went to a worker that was
		 * ending (its session closed, its idle time out) as it came;
		 * the next one goes to its successor.  A few tries, spaced.
		 * So too for a session just closed whose worker is still on
		 * its way out: with MODE c or n, once that worker (its PID)
		 * is gone, the next ATTACH makes the new session. */
		if (tries >= 5)
			break;
		if (rc == PYSHELF_E_REMOTE && (client_closing_worker(c, flags) ||
		    client_hibernating_worker(c)))
			client_wait_gone((pid_t)c->remote_pid);
		else if (rc != PYSHELF_E_CLOSED || !welcomed)
			break;
		nap.tv_sec = 0;
		nap.tv_nsec = 100000000L * tries;
		nanosleep(&nap, NULL);
		if ((fd = client_sock_connect(socket_path != NULL ? socket_path :
		    path)) < 0)
			break;
		client_clear(c);
	}
out:
	client_leave(c);
	return rc;
}

/*
 * SESSIONS on a connection that has just had its WELCOME: the
 * supervisor's rows as malloc'd JSON text in *json.  An old server that
 * does not know the message says so in an ERROR and closes: told as a
 * sentence that says to restart it.
 */
static int
client_sessions_request(pyshelf_conn *c, const char *path, char **json)
{
	const wire_field *f;
	uint64_t pid = c->welcome.pid;
	int rc;

	client_begin(c, WIRE_MSG_SESSIONS);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK) {
		if (rc != PYSHELF_E_PROTOCOL || c->msg.id != 0 ||
		    c->msg.type != WIRE_MSG_ERROR)
			return rc;
		c->broken = 0;
		client_clear(c);
	}
	if (c->msg.type == WIRE_MSG_ERROR) {
		rc = client_remote(c);
		if (c->remote_code == WIRE_ERR_BAD_REQUEST ||
		    c->remote_code == WIRE_ERR_UNKNOWN_TYPE)
			rc = client_fail(c, PYSHELF_E_REMOTE, "the pyshelf server "
			    "at %s (pid %llu) is older than this client: it does "
			    "not answer SESSIONS; restart it with `kill -TERM "
			    "%llu` (each worker checkpoints and exits: nothing is "
			    "lost) and list again", path, (unsigned long long)pid,
			    (unsigned long long)pid);
		return rc;
	}
	if (c->msg.type != WIRE_MSG_LISTING ||
	    (f = wire_msg_find(&c->msg, WIRE_TAG_DATA)) == NULL)
		return client_unexpected(c, "SESSIONS");
	if ((*json = wire_field_strdup(f)) == NULL)
		return client_fail(c, PYSHELF_E_NOMEM, "out of memory");
	return PYSHELF_OK;
}

/* The live sessions of a running server; see pyshelf.h. */
int
pyshelf_server_sessions(pyshelf_conn *c, const char *socket_path,
    const char *db, char **json)
{
	char path[4096];
	int rc, fd;

	if (json != NULL)
		*json = NULL;
	if ((rc = client_enter(c, 0)) != PYSHELF_OK)
		return rc;
	if (json == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL, "pyshelf_server_sessions: "
		    "NULL output");
		goto out;
	}
	if (socket_path == NULL && sockpath_for(db, path, sizeof path) < 0) {
		rc = client_fail(c, PYSHELF_E_SPAWN, "cannot name the pyshelf "
		    "server's socket: %s", strerror(errno));
		goto out;
	}
	if (socket_path != NULL)
		snprintf(path, sizeof path, "%s", socket_path);
	if ((fd = client_sock_connect(path)) < 0) {
		if (!client_no_server(errno))
			rc = client_fail(c, PYSHELF_E_SPAWN, "cannot connect to "
			    "the pyshelf server at %s: %s", path,
			    strerror(errno));
		goto out;       /* no server: no live sessions, *json NULL */
	}
	c->rfd = c->wc.rfd = c->wfd = c->wc.wfd = fd;
	c->wfd_is_socket = 1;
	c->server = 1;
	c->rcvtimeo_ms = -1;
	client_begin(c, WIRE_MSG_HELLO);
	wire_put_u64(&c->wbuf, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&c->wbuf, WIRE_TAG_NAME, CLIENT_NAME);
	if ((rc = client_send(c, 0)) == PYSHELF_OK &&
	    (rc = client_reply(c, NULL, -1)) == PYSHELF_OK) {
		if (c->msg.type == WIRE_MSG_ERROR)
			rc = client_remote(c);
		else if (c->msg.type != WIRE_MSG_WELCOME)
			rc = client_unexpected(c, "HELLO");
		else if ((rc = client_welcome(c)) == PYSHELF_OK)
			rc = client_sessions_request(c, path, json);
	}
	/* one request per connection: back to no backend */
	close(fd);
	c->rfd = c->wc.rfd = c->wfd = c->wc.wfd = -1;
	c->wc.rlen = c->wc.rpos = 0;
	c->broken = 0;
	c->server = 0;
	c->have_welcome = 0;
out:
	client_leave(c);
	return rc;
}

/*
 * Start a call: take the busy flag and refuse a connection that cannot
 * take it (want_conn: 1 for a request, which needs a backend; 0 for
 * spawn/attach, which need none yet).  Gives the flag back on failure,
 * except for PYSHELF_E_BUSY, where it belongs to the other call.
 */
static int
client_enter(pyshelf_conn *c, int want_conn)
{
	int rc = PYSHELF_OK;

	if (c == NULL)
		return PYSHELF_E_INVAL;
	/* Before the busy flag, which a thread of the parent may have held
	 * at the fork: the child's copy would stay set for good.  Nothing
	 * of c is written (that thread may have left it half updated);
	 * pyshelf_errmsg() gives CLIENT_FORKED_MSG. */
	if (client_forked(c))
		return PYSHELF_E_FORKED;
	if (atomic_flag_test_and_set(&c->busy))
		return PYSHELF_E_BUSY;
	if (c->broken != 0) {
		c->fate = PYSHELF_FATE_NOT_RUN;   /* this one is never sent */
		client_leave(c);
		return c->broken; /* errmsg still holds the first failure */
	}
	client_clear(c);
	if (want_conn && c->rfd < 0)
		rc = client_fail(c, PYSHELF_E_NOTCONN, "no backend: call "
		    "pyshelf_spawn() or pyshelf_attach_fds() first");
	else if (!want_conn && c->rfd >= 0)
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "the connection already has a backend");
	else if (want_conn && c->finished != 0)
		rc = client_fail(c, PYSHELF_E_NOTCONN, "the session was %s; "
		    "only pyshelf_close() is left", c->finished == 1 ?
		    "detached" : "closed");
	if (rc != PYSHELF_OK)
		client_leave(c);
	else if (!want_conn)
		c->owner = client_self();  /* it sets the connection up */
	return rc;
}

/*
 * This process's pid, without a system call per request: getpid() cost
 * 1.6 us on our 2-vCPU VMs, 4 % of a no-op call (docs/BENCHMARKS.md,
 * "The fork check").
 * Read once, then set again in every child of fork() by an atfork handler
 * (fork() runs them; a process made by a raw clone() is not seen).
 */
static pid_t client_self_pid;
static pthread_once_t client_self_once = PTHREAD_ONCE_INIT;

/* fork()'s child handler: the child's own pid. */
static void
client_self_atfork(void)
{
	client_self_pid = getpid();
}

static void
client_self_init(void)
{
	client_self_pid = getpid();
	(void)pthread_atfork(NULL, NULL, client_self_atfork);
}

/* Return this process's pid. */
static pid_t
client_self(void)
{
	(void)pthread_once(&client_self_once, client_self_init);
	return client_self_pid;
}

/* Nonzero when c has descriptors that another process set up: this one
 * is the child of a fork() and must leave them alone. */
static int
client_forked(const pyshelf_conn *c)
{
	return c->rfd >= 0 && c->owner != client_self();
}

/* End a request. */
static void
client_leave(pyshelf_conn *c)
{
	atomic_flag_clear(&c->busy);
}

/* --- frames out ------------------------------------------------------------ */

/* Start a request frame with a fresh id in c->wbuf. */
static void
client_begin(pyshelf_conn *c, uint16_t type)
{
	c->cur_id = ++c->next_id;
	c->nsbufs = 0;
	c->fate = PYSHELF_FATE_UNKNOWN;
	atomic_store_explicit(&c->intr_sent, 0, memory_order_relaxed);
	wire_buf_reset(&c->wbuf);
	wire_begin(&c->wbuf, type, c->cur_id);
}

/* Finish and write the request in c->wbuf; an EXEC also becomes the
 * target of pyshelf_interrupt(). */
static int
client_send(pyshelf_conn *c, int is_exec)
{
	size_t body;
	int rc, r, e = 0;

	rc = wire_end(&c->wbuf);
	if (rc == WIRE_E_NOMEM)
		rc = client_fail(c, PYSHELF_E_NOMEM,
		    "out of memory building a request");
	else if (rc != WIRE_OK)
		rc = client_fail(c, PYSHELF_E_TOO_BIG, "request too large: "
		    "a field or the frame exceeds 4 GiB");
	else if ((body = c->wbuf.len - WIRE_HEADER_SIZE) > c->peer_max ||
	    c->nsbufs > 0)
		rc = client_send_long(c, is_exec);
	else {
		pthread_mutex_lock(&c->wlock);
		if (!c->wfd_is_socket)
			wire_pipe_grow(c->wfd, c->wbuf.len);
		r = io_write(c->wfd, c->wfd_is_socket, c->wbuf.data,
		    c->wbuf.len);
		e = errno;
		if (r == 0 && is_exec)
			c->exec_id = c->cur_id;
		pthread_mutex_unlock(&c->wlock);
		if (r == 0)
			c->fate = PYSHELF_FATE_SENT;
		rc = r == 0 ? PYSHELF_OK : client_write_error(c, e);
	}
	if (c->wbuf.cap > CLIENT_KEEP_WBUF)
		wire_buf_free(&c->wbuf);
	else
		wire_buf_reset(&c->wbuf);
	return rc;
}

/* Add n out-of-band buffers to send after the request in c->wbuf (the
 * bytes are borrowed).  0, or -1 (out of memory). */
static int
client_add_bufs(pyshelf_conn *c, const pyshelf_buffer *b, size_t n)
{
	pyshelf_buffer *nb;
	size_t cap;

	if (n > c->sbufcap - c->nsbufs) {
		cap = c->nsbufs + n < 16 ? 16 : (c->nsbufs + n) * 2;
		if ((nb = realloc(c->sbufs, cap * sizeof *nb)) == NULL)
			return -1;
		c->sbufs = nb;
		c->sbufcap = cap;
	}
	memcpy(c->sbufs + c->nsbufs, b, n * sizeof *b);
	c->nsbufs += n;
	return 0;
}

/* Write n bytes at p as PARTs of the current request (wlock held). */
static int
client_write_parts(pyshelf_conn *c, const uint8_t *p, size_t n)
{
	size_t psz = wire_part_size((size_t)c->peer_max), k;
	uint8_t hdr[WIRE_PART_HEADER_SIZE];

	while (n > 0) {
		k = n < psz ? n : psz;
		wire_part_header(hdr, c->cur_id, k);
		if (!c->wfd_is_socket)
			wire_pipe_grow(c->wfd, k);  /* the reader may have
			                               shrunk it meanwhile */
		if (io_write(c->wfd, c->wfd_is_socket, hdr, sizeof hdr) < 0 ||
		    io_write(c->wfd, c->wfd_is_socket, p, k) < 0)
			return -1;
		p += k;
		n -= k;
	}
	return 0;
}

/* Write the request in c->wbuf (finished) as a LONG: the head, its body
 * in PARTs, then the out-of-band buffers from their memory. */
static int
client_send_long(pyshelf_conn *c, int is_exec)
{
	uint8_t head[WIRE_HEADER_SIZE + 2 * (WIRE_FIELD_HEADER_SIZE + 8)];
	size_t body = c->wbuf.len - WIRE_HEADER_SIZE, i;
	uint64_t total = body;
	wire_buf h;
	int r, e = 0;

	wire_buf_init(&h);
	wire_long_head(&h, wire_be16_get(c->wbuf.data + 4), c->cur_id, body);
	if (wire_end(&h) != WIRE_OK || h.len != sizeof head) {
		wire_buf_free(&h);
		return client_fail(c, PYSHELF_E_NOMEM,
		    "out of memory building a request");
	}
	memcpy(head, h.data, sizeof head);
	wire_buf_free(&h);
	for (i = 0; i < c->nsbufs; i++)
		total += c->sbufs[i].len;
	pthread_mutex_lock(&c->wlock);
	if (!c->wfd_is_socket)
		wire_pipe_grow(c->wfd, total);
	r = io_write(c->wfd, c->wfd_is_socket, head, sizeof head);
	if (r == 0)
		r = client_write_parts(c, c->wbuf.data + WIRE_HEADER_SIZE, body);
	for (i = 0; r == 0 && i < c->nsbufs; i++)
		r = client_write_parts(c, c->sbufs[i].data, c->sbufs[i].len);
	e = errno;
	if (r == 0 && is_exec)
		c->exec_id = c->cur_id;
	pthread_mutex_unlock(&c->wlock);
	c->nsbufs = 0;
	if (r == 0)
		c->fate = PYSHELF_FATE_SENT;
	return r == 0 ? PYSHELF_OK : client_write_error(c, e);
}

/* Turn a failed write into a sticky error. */
static int
client_write_error(pyshelf_conn *c, int e)
{
	errno = e;
	if (e == EPIPE || e == ECONNRESET) {
		/* the request is not whole at the backend: it cannot run */
		c->fate = PYSHELF_FATE_NOT_RUN;
		client_reap(c);
		errno = e;
		return client_fatal(c, PYSHELF_E_CLOSED, "the backend closed "
		    "the connection (write: %s)", strerror(e));
	}
	return client_fatal(c, PYSHELF_E_IO, "write to the backend failed: %s",
	    strerror(e));
}

/* Write an INTERRUPT for the running exec of c, or, when none runs, with
 * id 0 for whatever runs in the session (hard: with HARD=1).  Thread-safe;
 * sets no error text, since the
 * requesting thread may be reading it.  Built by hand, without the
 * codec's buffer, so that it allocates nothing.  Returns 0, or -1 with
 * *err set to errno. */
static int
client_send_interrupt(pyshelf_conn *c, int *err, int hard)
{
	uint8_t frame[WIRE_HEADER_SIZE + WIRE_FIELD_HEADER_SIZE + 8];
	size_t n = WIRE_HEADER_SIZE;
	int rc = 0;

	pthread_mutex_lock(&c->wlock);
	if (c->wfd >= 0) {
		wire_be16_put(frame + 4, WIRE_MSG_INTERRUPT);
		wire_be16_put(frame + 6, 0);
		wire_be64_put(frame + 8, c->exec_id);
		if (hard) {
			frame[n] = WIRE_TAG_HARD;
			wire_be32_put(frame + n + 1, 8);
			wire_be64_put(frame + n + WIRE_FIELD_HEADER_SIZE, 1);
			n += WIRE_FIELD_HEADER_SIZE + 8;
		}
		wire_be32_put(frame, (uint32_t)(n - WIRE_HEADER_SIZE));
		if ((rc = io_write(c->wfd, c->wfd_is_socket, frame, n)) < 0)
			*err = errno;
		else
			atomic_store(&c->intr_sent, 1);
	}
	pthread_mutex_unlock(&c->wlock);
	return rc;
}

/* INTERRUPT, HARD=1 when hard: the one body of the two calls below. */
static int
client_interrupt(pyshelf_conn *c, int hard)
{
	int e = 0;

	if (c == NULL)
		return PYSHELF_E_INVAL;
	if (client_forked(c))
		return PYSHELF_E_FORKED;   /* the parent's call, not ours */
	if (client_send_interrupt(c, &e, hard) == 0)
		return PYSHELF_OK;
	return e == EPIPE || e == ECONNRESET ? PYSHELF_E_CLOSED : PYSHELF_E_IO;
}

/* Interrupt the running exec; see pyshelf.h. */
int
pyshelf_interrupt(pyshelf_conn *c)
{
	return client_interrupt(c, 0);
}

/* What became of the last request; see pyshelf.h. */
int
pyshelf_request_fate(const pyshelf_conn *c)
{
	return c != NULL ? c->fate : PYSHELF_FATE_UNKNOWN;
}

/* Hard interrupt; see pyshelf.h. */
int
pyshelf_interrupt_hard(pyshelf_conn *c)
{
	return client_interrupt(c, 1);
}

/* --- frames in ------------------------------------------------------------- */

/*
 * Whether client_read_frame may wait for a reply in read() itself: on a
 * server's socket (blocking, ours), with no deadline and no spin, once
 * SO_RCVTIMEO is the tick (ms, 0: none).  Then a reply costs one read()
 * where the floor pays one, and no poll(); a read() that times out, or
 * that a signal interrupts, comes back as a tick.
 */
static int
client_read_direct(pyshelf_conn *c, int ms, int64_t deadline)
{
	struct timeval tv;

	if (!c->server || !c->wfd_is_socket || c->rfd != c->wfd ||
	    c->rfd < 0 || deadline >= 0 || c->spin_us > 0 || ms < 0)
		return 0;
	if (c->rcvtimeo_ms == ms)
		return 1;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	if (setsockopt(c->rfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
		return 0;
	c->rcvtimeo_ms = ms;
	return 1;
}

/*
 * Read the next frame into c->msg and check it against its schema.  The
 * codec is asked only for what is already there (timeout 0); waiting is
 * io_wait()'s, so that hooks->on_wait sees EINTR and ticks.  deadline is
 * on io_now_us()'s clock, < 0 for none (then PYSHELF_E_TIMEOUT, not sticky).
 * Without a deadline, a reply is waited for first unless one is buffered,
 * and read with no poll() of the codec's after io_wait's: one poll() per
 * reply; none on a server's socket (client_read_direct).
 */
static int
client_read_frame(pyshelf_conn *c, const pyshelf_exec_req *hooks,
    int64_t deadline)
{
	const char *why = NULL, *name;
	int64_t left;
	int rc, ms, act, e = 0, waited = 0, direct, tick = -1;

	if (hooks != NULL && hooks->on_wait != NULL && hooks->wait_tick_ms > 0)
		tick = hooks->wait_tick_ms > INT32_MAX ? INT32_MAX :
		    (int)hooks->wait_tick_ms;
	direct = client_read_direct(c, tick < 0 ? 0 : tick, deadline);
	for (;;) {
		if (direct && !wire_conn_pending(&c->wc)) {
			/* read() waits, up to a tick */
			c->wc.ready = 1;
			rc = wire_conn_read(&c->wc, &c->msg, 0);
			if (rc == WIRE_OK)
				break;
			if (rc != WIRE_E_TIMEOUT)
				return client_read_error(c, rc, errno);
			goto tick;   /* a tick passed, or a signal came */
		}
		/* with a deadline, what arrived is read even when it passed */
		if (waited || deadline >= 0 || wire_conn_pending(&c->wc)) {
			rc = wire_conn_read(&c->wc, &c->msg, 0);
			if (rc == WIRE_OK)
				break;
			if (rc != WIRE_E_TIMEOUT)
				return client_read_error(c, rc, errno);
		}
		waited = 0;
		ms = tick;
		if (deadline >= 0) {
			left = (deadline - io_now_us() + 999) / 1000;
			if (left <= 0)
				return client_fail(c, PYSHELF_E_TIMEOUT,
				    "no reply from the backend in time");
			if (ms < 0 || left < ms)
				ms = (int)(left > INT32_MAX ? INT32_MAX : left);
		}
		rc = io_wait(c->rfd, c->spin_us, ms);
		if (rc > 0) {
			c->wc.ready = 1;
			waited = 1;
			continue;
		}
		if (rc < 0 && errno != EINTR)
			return client_fatal(c, PYSHELF_E_IO, "waiting for the "
			    "backend failed: %s", strerror(errno));
tick:
		if (hooks == NULL || hooks->on_wait == NULL)
			continue;
		act = hooks->on_wait(hooks->ctx);
		if (act == PYSHELF_WAIT_INTERRUPT) {
			if (client_send_interrupt(c, &e, 0) < 0)
				return client_write_error(c, e);
		} else if (act == PYSHELF_WAIT_ABANDON)
			return client_fail(c, PYSHELF_E_CANCELED, "the request "
			    "was abandoned while waiting for its reply");
	}
	if (wire_msg_check(&c->msg, &why) != WIRE_OK) {
		name = client_msg_name(c->msg.type);
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent a "
		    "bad %s frame: %s", name, why != NULL ? why : "?");
	}
	return PYSHELF_OK;
}

/* The most bytes a LONG may declare: this machine's memory. */
static size_t
client_long_limit(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);

	return pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : SIZE_MAX;
}

/* Free the buffers of the last LONG received that no result took. */
static void
client_rbufs_free(pyshelf_conn *c)
{
	size_t i;

	for (i = 0; i < c->nrbufs; i++)
		free(c->rbufs[i].data);
	free(c->rbufs);
	c->rbufs = NULL;
	c->nrbufs = 0;
}

/* The body of the LONG in c->rl is complete: parse it into c->msg and
 * allocate its buffers. */
static int
client_long_body(pyshelf_conn *c)
{
	const char *why = "";
	size_t i;
	int rc;

	if ((rc = wire_long_parse(&c->rl, &c->msg, &why)) != WIRE_OK)
		return rc == WIRE_E_NOMEM ? client_fatal(c, PYSHELF_E_NOMEM,
		    "out of memory reading a message") :
		    client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent a "
		    "bad LONG message: %s", rc == WIRE_E_TOO_BIG ? why :
		    wire_strerror(rc));
	if (c->rl.nbufs == 0)
		return PYSHELF_OK;
	if ((c->rbufs = calloc(c->rl.nbufs, sizeof *c->rbufs)) == NULL)
		goto nomem;
	c->nrbufs = c->rl.nbufs;
	for (i = 0; i < c->nrbufs; i++) {
		c->rbufs[i].len = (size_t)c->rl.buf_len[i];
		if ((c->rbufs[i].data = malloc(c->rbufs[i].len + 1)) == NULL)
			goto nomem;
		wire_mem_advise(c->rbufs[i].data, c->rbufs[i].len);
	}
	return PYSHELF_OK;
nomem:
	return client_fatal(c, PYSHELF_E_NOMEM, "out of memory: the backend's "
	    "reply needs %zu bytes for its buffers", c->rl.buf_total);
}

/* Read the PARTs of the LONG whose head is in c->msg, leaving the message
 * it carries in c->msg (its fields borrow c->rl) and its buffers in
 * c->rbufs. */
static int
client_read_long(pyshelf_conn *c, const pyshelf_exec_req *hooks,
    int64_t deadline)
{
	const char *why = "";
	const wire_field *d;
	size_t idx, off, room, k, n;
	const uint8_t *p;
	int rc, parsed = 0;

	rc = wire_long_begin(&c->rl, &c->msg, client_long_limit(), &why);
	if (rc == WIRE_E_NOMEM)
		return client_fatal(c, PYSHELF_E_NOMEM, "out of memory reading "
		    "a reply of %llu bytes", (unsigned long long)
		    wire_msg_u64(&c->msg, WIRE_TAG_LONG_LEN, 0));
	if (rc != WIRE_OK && rc != WIRE_NEED_MORE)
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent a "
		    "bad LONG: %s", why);
	for (;;) {
		if (rc == WIRE_OK && !parsed) {
			if ((rc = client_long_body(c)) != PYSHELF_OK)
				return rc;
			parsed = 1;
		}
		if (parsed && (room = wire_long_want(&c->rl, &idx, &off)) == 0)
			break;
		/* a PART read straight into its place: no copy but the read */
		rc = parsed ? wire_conn_read_part(&c->wc, c->rl.id,
		    (uint8_t *)c->rbufs[idx].data + off, room, &n) :
		    wire_conn_read_part(&c->wc, c->rl.id, c->rl.frame +
		    WIRE_HEADER_SIZE + c->rl.got, c->rl.body_len - c->rl.got,
		    &n);
		if (rc == WIRE_OK && parsed) {
			wire_long_took(&c->rl, n);
			continue;
		}
		if (rc == WIRE_OK) {
			c->rl.got += n;
			rc = c->rl.got == c->rl.body_len ? WIRE_OK :
			    WIRE_NEED_MORE;
			continue;
		}
		if (rc != WIRE_NEED_MORE)
			return client_read_error(c, rc, errno);
		if ((rc = client_read_frame(c, hooks, deadline)) != PYSHELF_OK)
			return rc;
		if (c->msg.type != WIRE_MSG_PART || c->msg.id != c->rl.id)
			return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend "
			    "sent %s in the middle of the PARTs of message %llu",
			    client_msg_name(c->msg.type),
			    (unsigned long long)c->rl.id);
		d = wire_msg_find(&c->msg, WIRE_TAG_DATA);
		p = d->data;
		n = d->len;
		if (!parsed) {
			k = c->rl.body_len - c->rl.got;
			k = n < k ? n : k;
			rc = wire_long_add(&c->rl, p, k, &why);
			p += k;
			n -= k;
			if (rc == WIRE_NEED_MORE)
				continue;
			if ((rc = client_long_body(c)) != PYSHELF_OK)
				return rc;
			parsed = 1;
		}
		for (; n > 0; p += k, n -= k) {
			if ((room = wire_long_want(&c->rl, &idx, &off)) == 0)
				return client_fatal(c, PYSHELF_E_PROTOCOL, "the "
				    "backend sent more PART bytes than message "
				    "%llu declares", (unsigned long long)c->rl.id);
			k = n < room ? n : room;
			memcpy((uint8_t *)c->rbufs[idx].data + off, p, k);
			wire_long_took(&c->rl, k);
		}
	}
	/* c->msg was the last PART: parse the body again into it */
	if ((rc = wire_long_parse(&c->rl, &c->msg, &why)) != WIRE_OK)
		return client_fatal(c, PYSHELF_E_PROTOCOL, "bad LONG body");
	if (wire_msg_check(&c->msg, &why) != WIRE_OK)
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent a "
		    "bad %s (in a LONG): %s", client_msg_name(c->msg.type),
		    why != NULL ? why : "?");
	return PYSHELF_OK;
}

/* Read the next message into c->msg: a frame, or a LONG assembled. */
static int
client_read(pyshelf_conn *c, const pyshelf_exec_req *hooks, int64_t deadline)
{
	int rc;

	wire_long_free(&c->rl);
	client_rbufs_free(c);
	if ((rc = client_read_frame(c, hooks, deadline)) == PYSHELF_OK &&
	    c->msg.type == WIRE_MSG_LONG)
		rc = client_read_long(c, hooks, deadline);
	if (rc == PYSHELF_OK)  /* a whole message: a grown pipe goes back */
		wire_pipe_settle(c->wc.rfd, &c->wc.pipe_got);
	return rc;
}

/* A reset on read: the backend closed the connection with bytes that we
 * wrote unread.  The request in flight was the last thing written, unless
 * an INTERRUPT followed it: then the backend never read it whole, and it
 * did not run. */
static void
client_read_reset(pyshelf_conn *c)
{
	if (c->fate == PYSHELF_FATE_SENT && !atomic_load(&c->intr_sent))
		c->fate = PYSHELF_FATE_NOT_RUN;
}

/* End of file on a pipe (stdio, or a server connection on PIPES): a
 * pipe has no reset to say that the backend closed it with our bytes
 * unread, but the bytes are still in our request pipe, which FIONREAD
 * counts from either end.  The backend may be gone with them unread
 * while its threads were still exiting when we wrote (a killed worker is
 * a zombie before its last thread has closed its files). */
static void
client_read_unread(pyshelf_conn *c)
{
	int n = 0;

	if (c->wfd >= 0 && !c->wfd_is_socket &&
	    ioctl(c->wfd, FIONREAD, &n) == 0 && n > 0)
		client_read_reset(c);
}

/* Turn a codec read error into a sticky error. */
static int
client_read_error(pyshelf_conn *c, int rc, int e)
{
	switch (rc) {
	case WIRE_E_TRUNCATED:
		/* the backend died in the middle of a frame: a dead peer,
		 * as at a frame boundary, not a protocol error */
	case WIRE_E_EOF:
		client_read_unread(c);
		client_reap(c);
		if (c->server)
			return client_fatal(c, PYSHELF_E_CLOSED, "the session's "
			    "worker closed the connection (it died, or the "
			    "server ended it); connect again to resume");
		return client_fatal(c, PYSHELF_E_CLOSED,
		    "the backend closed the connection");
	case WIRE_E_TOO_BIG:
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent a "
		    "frame larger than the limit of %zu bytes", c->wc.max_body);
	case WIRE_E_NOMEM:
		return client_fatal(c, PYSHELF_E_NOMEM,
		    "out of memory reading a frame");
	case WIRE_E_IO:
		if (e == ECONNRESET) {
			client_read_reset(c);
			client_reap(c);
			return client_fatal(c, PYSHELF_E_CLOSED, "the backend "
			    "closed the connection (read: %s)", strerror(e));
		}
		return client_fatal(c, PYSHELF_E_IO,
		    "read from the backend failed: %s", strerror(e));
	}
	return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent a "
	    "malformed frame (%s)", wire_strerror(rc));
}

/* Name of a message type for messages, never NULL. */
static const char *
client_msg_name(uint16_t type)
{
	const char *name = wire_msg_name(type);

	return name != NULL ? name : "unknown";
}

/*
 * Read frames until one answers the current request; late replies to
 * abandoned requests (older ids) are skipped.  OUTPUT frames of the
 * current request are returned to an exec (hooks set); for any other
 * request they are the backend's notices and go to the notice handler.
 */
static int
client_reply(pyshelf_conn *c, const pyshelf_exec_req *hooks, int64_t deadline)
{
	const wire_field *f;
	int rc;

	for (;;) {
		if ((rc = client_read(c, hooks, deadline)) != PYSHELF_OK)
			return rc;
		if (c->msg.id == c->cur_id) {
			if (c->msg.type != WIRE_MSG_OUTPUT)
				c->fate = PYSHELF_FATE_DONE;
			if (hooks != NULL || c->msg.type != WIRE_MSG_OUTPUT)
				return PYSHELF_OK;
			c->fate = PYSHELF_FATE_STARTED;
			if ((rc = client_notice(c)) != PYSHELF_OK)
				return rc;
			continue;
		}
		if (c->msg.id != 0 && c->msg.id < c->cur_id)
			continue;
		if (c->msg.id == 0 && c->msg.type == WIRE_MSG_ERROR) {
			f = wire_msg_find(&c->msg, WIRE_TAG_MESSAGE);
			c->remote_code = wire_msg_u64(&c->msg, WIRE_TAG_ERRCODE,
			    0);
			/* SESSION_DEAD (the session was ended under us): when
			 * and why, for pyshelf_remote_ended() */
			c->remote_ended = wire_msg_u64(&c->msg,
			    WIRE_TAG_ENDED_MS, 0);
			free(c->remote_reason);
			c->remote_reason = (f = wire_msg_find(&c->msg,
			    WIRE_TAG_REASON)) != NULL ? wire_field_strdup(f) :
			    NULL;
			f = wire_msg_find(&c->msg, WIRE_TAG_MESSAGE);
			return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend "
			    "gave up on the connection: %s: %.*s",
			    wire_errcode_name(c->remote_code),
			    f != NULL ? (int)f->len : 0,
			    f != NULL ? (const char *)f->data : "");
		}
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent %s "
		    "for request %llu while request %llu was waiting",
		    client_msg_name(c->msg.type),
		    (unsigned long long)c->msg.id,
		    (unsigned long long)c->cur_id);
	}
}

/* An OUTPUT frame outside an exec: hand it to the notice handler. */
static int
client_notice(pyshelf_conn *c)
{
	const wire_field *data = wire_msg_find(&c->msg, WIRE_TAG_DATA);
	uint64_t stream = wire_msg_u64(&c->msg, WIRE_TAG_STREAM, 0);

	if (stream != PYSHELF_STDOUT && stream != PYSHELF_STDERR)
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent "
		    "OUTPUT for stream %llu", (unsigned long long)stream);
	if (c->notice_fn != NULL && data->len > 0)
		(void)c->notice_fn(c->notice_ctx, (int)stream, data->data,
		    data->len);
	return PYSHELF_OK;
}

/* Set the handler of OUTPUT frames outside an exec. */
int
pyshelf_set_output_handler(pyshelf_conn *c, pyshelf_output_fn fn, void *ctx)
{
	if (c == NULL)
		return PYSHELF_E_INVAL;
	c->notice_fn = fn;
	c->notice_ctx = ctx;
	return PYSHELF_OK;
}

/* The current message is an ERROR: record its code and message. */
static int
client_remote(pyshelf_conn *c)
{
	const wire_field *f = wire_msg_find(&c->msg, WIRE_TAG_MESSAGE);
	const wire_field *r = wire_msg_find(&c->msg, WIRE_TAG_REASON);
	uint64_t code = wire_msg_u64(&c->msg, WIRE_TAG_ERRCODE, 0);

	c->remote_pid = wire_msg_u64(&c->msg, WIRE_TAG_PID, 0);
	c->remote_ended = wire_msg_u64(&c->msg, WIRE_TAG_ENDED_MS, 0);
	free(c->remote_reason);
	c->remote_reason = r != NULL ? wire_field_strdup(r) : NULL;

	if (f != NULL && f->len > 0)
		client_fail(c, PYSHELF_E_REMOTE, "%.*s", (int)f->len,
		    (const char *)f->data);
	else
		client_fail(c, PYSHELF_E_REMOTE, "backend error %s",
		    wire_errcode_name(code));
	c->remote_code = code;
	return PYSHELF_E_REMOTE;
}

/* The current message is not a valid answer to what: sticky. */
static int
client_unexpected(pyshelf_conn *c, const char *what)
{
	return client_fatal(c, PYSHELF_E_PROTOCOL, "unexpected %s reply to %s",
	    client_msg_name(c->msg.type), what);
}

/* Send a request without fields and expect one reply of type expect. */
static int
client_roundtrip(pyshelf_conn *c, uint16_t type, uint16_t expect)
{
	int rc;

	client_begin(c, type);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK)
		return rc;
	if (c->msg.type == expect)
		return PYSHELF_OK;
	if (c->msg.type == WIRE_MSG_ERROR)
		return client_remote(c);
	return client_unexpected(c, client_msg_name(type));
}

/* --- handshake ------------------------------------------------------------- */

/* Send HELLO and read WELCOME; see pyshelf.h. */
int
pyshelf_hello(pyshelf_conn *c, const char *client_name,
    const pyshelf_welcome **welcome)
{
	char *saved;
	int rc;

	if (welcome != NULL)
		*welcome = NULL;
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	client_begin(c, WIRE_MSG_HELLO);
	wire_put_u64(&c->wbuf, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&c->wbuf, WIRE_TAG_NAME,
	    client_name != NULL ? client_name : CLIENT_NAME);
	rc = client_send(c, 0);
	if (rc == PYSHELF_E_CLOSED && c->errmsg != NULL &&
	    (saved = strdup(c->errmsg)) != NULL) {
		/* a backend that refused to start said why before it exited:
		 * read what it left in the pipe (there already, or EOF; the
		 * bound is for a peer that keeps its end open) */
		c->broken = 0;
		if (client_read(c, NULL, io_now_us() + 1000000) ==
		    PYSHELF_OK && c->msg.id == 0 &&
		    c->msg.type == WIRE_MSG_ERROR) {
			free(saved);
			goto fatal;
		}
		client_clear(c);
		rc = client_fatal(c, PYSHELF_E_CLOSED, "%s", saved);
		free(saved);
		goto out;
	}
	if (rc != PYSHELF_OK)
		goto out;
	rc = client_reply(c, NULL, -1);
	if (rc == PYSHELF_E_PROTOCOL && c->msg.id == 0 &&
	    c->msg.type == WIRE_MSG_ERROR)
		goto fatal;
	if (rc != PYSHELF_OK)
		goto out;
	if (c->msg.type == WIRE_MSG_ERROR)
		rc = client_remote(c);
	else if (c->msg.type != WIRE_MSG_WELCOME)
		rc = client_unexpected(c, "HELLO");
	else if ((rc = client_welcome(c)) == PYSHELF_OK && welcome != NULL)
		*welcome = &c->welcome;
out:
	client_leave(c);
	return rc;
fatal:
	/* the backend cannot serve and exits: its reason is the answer */
	c->broken = 0;
	client_clear(c);
	rc = client_remote(c);
	c->finished = 2;
	client_reap(c);
	goto out;
}

/* Copy WELCOME's fields into c->welcome; adopt the backend's limit. */
static int
client_welcome(pyshelf_conn *c)
{
	const wire_field *f;
	pyshelf_welcome *w = &c->welcome;
	char *name;
	int rc;

	f = wire_msg_find(&c->msg, WIRE_TAG_NAME);
	if ((name = f != NULL ? wire_field_strdup(f) : strdup("")) == NULL)
		return client_fail(c, PYSHELF_E_NOMEM, "out of memory");
	free(c->welcome_name);
	c->welcome_name = name;
	memset(w, 0, sizeof *w);
	w->version = wire_msg_u64(&c->msg, WIRE_TAG_VERSION, 0);
	w->name = name;
	w->session = "";
	w->worker_message = "";
	w->pid = wire_msg_u64(&c->msg, WIRE_TAG_PID, 0);
	w->max_frame = wire_msg_u64(&c->msg, WIRE_TAG_MAX_FRAME,
	    WIRE_DEFAULT_MAX_FRAME);
	if ((rc = client_session_fields(c, 0)) != PYSHELF_OK)
		return rc;
	if (w->max_frame > 0) {
		c->peer_max = w->max_frame;
		if (w->max_frame > c->wc.max_body && w->max_frame <= UINT32_MAX)
			c->wc.max_body = w->max_frame;
	}
	c->have_welcome = 1;
	return PYSHELF_OK;
}

/* --- exec ------------------------------------------------------------------ */

/* Run code in the workspace; see pyshelf.h. */
int
pyshelf_exec(pyshelf_conn *c, pyshelf_exec_req *req, pyshelf_result *res)
{
	int rc;

	if (res != NULL)
		memset(res, 0, sizeof *res);
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (req == NULL || res == NULL || req->code == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "pyshelf_exec: request, code and result are required");
		goto out;
	}
	if ((rc = client_exec_build(c, req)) != PYSHELF_OK ||
	    (rc = client_send(c, 1)) != PYSHELF_OK)
		goto out;
	rc = client_exec_wait(c, req, res, -1);
	pthread_mutex_lock(&c->wlock);
	c->exec_id = 0;
	pthread_mutex_unlock(&c->wlock);
out:
	client_leave(c);
	return rc;
}

/* The WANT_VALUE a want_value asks for: the modes, else 1 (by value). */
static uint64_t
client_want(int want)
{
	want &= ~PYSHELF_WANT_BUFFERS;
	if (want == PYSHELF_WANT_REPR || want == PYSHELF_WANT_JSON)
		return (uint64_t)want;
	return want ? 1 : 0;
}

/*
 * Put plain data given as text as a pickle field: the pickle (protocol 2)
 * of a call of ast.literal_eval or json.loads on the text, which the
 * backend's unpickler makes into the value:
 *   PROTO 2, GLOBAL "mod\nname\n", BINUNICODE text, TUPLE1, REDUCE, STOP.
 * Returns 0, or -1 when the text does not fit BINUNICODE's u32 length.
 */
static int
client_put_text(pyshelf_conn *c, uint8_t tag, int kind, const char *text,
    size_t len)
{
	const char *global = kind == PYSHELF_ARG_JSON ? "cjson\nloads\n" :
	    "cast\nliteral_eval\n";
	size_t glen = strlen(global), n;
	uint8_t *p;

	if (len > UINT32_MAX)
		return -1;
	n = 2 + glen + 5 + len + 3;
	p = wire_put_reserve(&c->wbuf, tag, n);
	if (p == NULL)              /* the buffer is out of memory: the send
	                               reports it */
		return 0;
	*p++ = 0x80;
	*p++ = 2;
	memcpy(p, global, glen);
	p += glen;
	*p++ = 'X';
	*p++ = (uint8_t)len;
	*p++ = (uint8_t)(len >> 8);
	*p++ = (uint8_t)(len >> 16);
	*p++ = (uint8_t)(len >> 24);
	memcpy(p, text, len);
	p += len;
	*p++ = 0x85;                /* TUPLE1 */
	*p++ = 'R';                 /* REDUCE */
	*p = '.';                   /* STOP */
	return 0;
}

/* Fill an all-zero call id with 128 random bits (getrandom: the calls of
 * many clients must never collide). */
static int
client_call_id(pyshelf_conn *c, uint8_t id[16])
{
	static const uint8_t zero[16];
	size_t have = 0;
	ssize_t got;

	if (memcmp(id, zero, sizeof zero) != 0)
		return PYSHELF_OK;
	while (have < 16) {
		got = getrandom(id + have, 16 - have, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return client_fail(c, PYSHELF_E_IO, "cannot draw a call "
			    "id: getrandom: %s", strerror(errno));
		have += (size_t)got;
	}
	return PYSHELF_OK;
}

/* Encode an EXEC request into c->wbuf after checking its arguments; an
 * all-zero call id is drawn and written back into req. */
static int
client_exec_build(pyshelf_conn *c, pyshelf_exec_req *req)
{
	const pyshelf_arg *a;
	size_t i;
	int rc;

	if (req->nargs > 0 && (req->func == NULL || req->args == NULL))
		return client_fail(c, PYSHELF_E_INVAL, "pyshelf_exec: "
		    "arguments need a function (func) to be passed to");
	for (i = 0; i < req->nargs; i++) {
		a = &req->args[i];
		if (a->kind == PYSHELF_ARG_HANDLE)
			continue;
		if (a->kind == PYSHELF_ARG_LITERAL ||
		    a->kind == PYSHELF_ARG_JSON) {
			if (a->data == NULL)
				return client_fail(c, PYSHELF_E_INVAL,
				    "pyshelf_exec: argument %zu has no text", i);
			continue;
		}
		if (a->kind != PYSHELF_ARG_PICKLE ||
		    (a->data == NULL && a->len > 0))
			return client_fail(c, PYSHELF_E_INVAL, "pyshelf_exec: "
			    "argument %zu is neither a handle, a pickle nor "
			    "text", i);
	}
	if (req->want_value < 0)
		return client_fail(c, PYSHELF_E_INVAL, "pyshelf_exec: "
		    "want_value must be one of PYSHELF_WANT_*");
	if ((rc = client_call_id(c, req->call_id)) != PYSHELF_OK)
		return rc;
	client_begin(c, WIRE_MSG_EXEC);
	wire_put_str(&c->wbuf, WIRE_TAG_CODE, req->code);
	if (req->func != NULL)
		wire_put_str(&c->wbuf, WIRE_TAG_FUNC, req->func);
	for (i = 0; i < req->nargs; i++) {
		a = &req->args[i];
		if (a->kind == PYSHELF_ARG_HANDLE)
			wire_put_u64(&c->wbuf, WIRE_TAG_ARG_HANDLE, a->handle);
		else if (a->kind == PYSHELF_ARG_PICKLE) {
			size_t j;
			wire_put_bytes(&c->wbuf, WIRE_TAG_ARG_PICKLE,
			    a->len > 0 ? a->data : "", a->len);
			for (j = 0; a->buffers != NULL && j < a->nbuffers; j++)
				wire_put_u64(&c->wbuf, WIRE_TAG_OOB,
				    a->buffers[j].len);
			if (a->buffers != NULL && a->nbuffers > 0 &&
			    client_add_bufs(c, a->buffers, a->nbuffers) < 0)
				return client_fail(c, PYSHELF_E_NOMEM,
				    "out of memory building a request");
		} else if (client_put_text(c, WIRE_TAG_ARG_PICKLE, a->kind,
		    a->data, a->len > 0 ? a->len : strlen(a->data)) != 0)
			return client_fail(c, PYSHELF_E_INVAL, "pyshelf_exec: "
			    "argument %zu: text longer than 4 GiB", i);
	}
	if (req->want_value)
		wire_put_u64(&c->wbuf, WIRE_TAG_WANT_VALUE,
		    client_want(req->want_value));
	if (req->want_value & PYSHELF_WANT_BUFFERS)
		wire_put_u64(&c->wbuf, WIRE_TAG_OOB_OK, 1);
	if (req->timeout_ms > 0)
		wire_put_u64(&c->wbuf, WIRE_TAG_TIMEOUT_MS, req->timeout_ms);
	wire_put_bytes(&c->wbuf, WIRE_TAG_CALL_ID, req->call_id,
	    sizeof req->call_id);
	return PYSHELF_OK;
}

/* Read OUTPUT frames until the RESULT (or ERROR) of the exec (or of a
 * CALL_RESULT), until deadline (io_now_us() clock, < 0: none). */
static int
client_exec_wait(pyshelf_conn *c, const pyshelf_exec_req *req,
    pyshelf_result *res, int64_t deadline)
{
	int rc;

	for (;;) {
		if ((rc = client_reply(c, req, deadline)) != PYSHELF_OK)
			return rc;
		switch (c->msg.type) {
		case WIRE_MSG_OUTPUT:
			if ((rc = client_output(c, req)) != PYSHELF_OK)
				return rc;
			continue;
		case WIRE_MSG_RESULT:
			return client_result(c, res);
		case WIRE_MSG_ERROR:
			return client_remote(c);
		}
		return client_unexpected(c, "EXEC or CALL_RESULT");
	}
}

/* Hand an OUTPUT frame to the caller's callback. */
static int
client_output(pyshelf_conn *c, const pyshelf_exec_req *req)
{
	const wire_field *data = wire_msg_find(&c->msg, WIRE_TAG_DATA);
	uint64_t stream = wire_msg_u64(&c->msg, WIRE_TAG_STREAM, 0);

	if (stream != PYSHELF_STDOUT && stream != PYSHELF_STDERR)
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent "
		    "OUTPUT for stream %llu", (unsigned long long)stream);
	c->fate = PYSHELF_FATE_STARTED;  /* the backend runs it */
	if (req->on_output == NULL || data->len == 0)
		return PYSHELF_OK;
	if (req->on_output(req->ctx, (int)stream, data->data, data->len) != 0)
		return client_fail(c, PYSHELF_E_CANCELED,
		    "the output callback abandoned the request");
	return PYSHELF_OK;
}

/* Fill res from the current RESULT message. */
static int
client_result(pyshelf_conn *c, pyshelf_result *res)
{
	const wire_field *f;
	uint64_t kind = wire_msg_u64(&c->msg, WIRE_TAG_KIND, 0);
	const wire_msg *m = &c->msg;

	memset(res, 0, sizeof *res);
	if (kind == WIRE_KIND_DIRECT) {
		if ((f = wire_msg_find(m, WIRE_TAG_VALUE)) == NULL)
			return client_fatal(c, PYSHELF_E_PROTOCOL,
			    "the backend sent a direct RESULT without VALUE");
		res->value = f->data;
		res->value_len = f->len;
		/* the buffers are the result's now */
		res->buffers = c->rbufs;
		res->nbuffers = c->nrbufs;
		c->rbufs = NULL;
		c->nrbufs = 0;
	} else if (kind == WIRE_KIND_TEXT) {
		if ((f = wire_msg_find(m, WIRE_TAG_VALUE)) == NULL)
			return client_fatal(c, PYSHELF_E_PROTOCOL,
			    "the backend sent a text RESULT without VALUE");
		if ((res->text = wire_field_strdup(f)) == NULL)
			goto nomem;
		res->text_len = f->len;
		f = wire_msg_find(m, WIRE_TAG_TYPE_NAME);
		if (f != NULL && (res->type_name = wire_field_strdup(f)) == NULL)
			goto nomem;
	} else if (kind == WIRE_KIND_WRAPPED || kind == WIRE_KIND_EXCINFO) {
		if (wire_msg_find(m, WIRE_TAG_HANDLE) == NULL ||
		    wire_msg_find(m, WIRE_TAG_TYPE_NAME) == NULL ||
		    (kind == WIRE_KIND_EXCINFO &&
		    wire_msg_find(m, WIRE_TAG_EXC_TYPE) == NULL))
			return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend "
			    "sent a RESULT of kind %llu without its fields",
			    (unsigned long long)kind);
		res->handle = wire_msg_u64(m, WIRE_TAG_HANDLE, 0);
		f = wire_msg_find(m, WIRE_TAG_TYPE_NAME);
		if ((res->type_name = wire_field_strdup(f)) == NULL)
			goto nomem;
		if (kind == WIRE_KIND_EXCINFO) {
			f = wire_msg_find(m, WIRE_TAG_EXC_TYPE);
			if ((res->exc_type = wire_field_strdup(f)) == NULL)
				goto nomem;
			f = wire_msg_find(m, WIRE_TAG_MESSAGE);
			res->message = f != NULL ? wire_field_strdup(f) :
			    strdup("");
			if (res->message == NULL)
				goto nomem;
			/* VALUE, when there: the traceback's text (a text with
			 * a NUL, which the backend never sends, is left out) */
			f = wire_msg_find(m, WIRE_TAG_VALUE);
			if (f != NULL && (f->len == 0 ||
			    memchr(f->data, '\0', f->len) == NULL)) {
				if ((res->text = wire_field_strdup(f)) == NULL)
					goto nomem;
				res->text_len = f->len;
			}
		}
	} else
		return client_fatal(c, PYSHELF_E_PROTOCOL, "the backend sent a "
		    "RESULT of unknown kind %llu", (unsigned long long)kind);
	if ((f = wire_msg_find(m, WIRE_TAG_VOLATILE)) != NULL &&
	    (res->volatile_reason = wire_field_strdup(f)) == NULL)
		goto nomem;
	res->kind = (int)kind;
	return PYSHELF_OK;

nomem:
	pyshelf_result_free(res);
	return client_fail(c, PYSHELF_E_NOMEM, "out of memory");
}

/* Free a result's strings. */
void
pyshelf_result_free(pyshelf_result *res)
{
	size_t i;

	if (res == NULL)
		return;
	free(res->type_name);
	free(res->exc_type);
	free(res->message);
	free(res->volatile_reason);
	free(res->text);
	for (i = 0; i < res->nbuffers; i++)
		free(res->buffers[i].data);
	free(res->buffers);
	memset(res, 0, sizeof *res);
}

/* --- release and the mapping ----------------------------------------------- */

/* Send RELEASE for n handles; no reply. */
int
pyshelf_release(pyshelf_conn *c, const uint64_t *handles, size_t n)
{
	size_t i;
	int rc;

	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (n > 0 && handles == NULL)
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "pyshelf_release: handles is NULL");
	else if (n > 0) {
		client_begin(c, WIRE_MSG_RELEASE);
		for (i = 0; i < n; i++)
			wire_put_u64(&c->wbuf, WIRE_TAG_HANDLE, handles[i]);
		rc = client_send(c, 0);
	}
	client_leave(c);
	return rc;
}

/* Read a global by value or as a handle. */
int
pyshelf_get(pyshelf_conn *c, const char *key, int want_value,
    pyshelf_result *res)
{
	int rc;

	if (res != NULL)
		memset(res, 0, sizeof *res);
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (key == NULL || res == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "pyshelf_get: key and result are required");
		goto out;
	}
	client_begin(c, WIRE_MSG_GET);
	wire_put_str(&c->wbuf, WIRE_TAG_KEY, key);
	wire_put_u64(&c->wbuf, WIRE_TAG_WANT_VALUE, client_want(want_value));
	if (want_value & PYSHELF_WANT_BUFFERS)
		wire_put_u64(&c->wbuf, WIRE_TAG_OOB_OK, 1);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK)
		goto out;
	if (c->msg.type == WIRE_MSG_RESULT)
		rc = client_result(c, res);
	else if (c->msg.type == WIRE_MSG_ERROR)
		rc = client_remote(c);
	else
		rc = client_unexpected(c, "GET");
out:
	client_leave(c);
	return rc;
}

/* SET key to a pickle (kind PYSHELF_ARG_PICKLE) or to text made into a
 * pickle (PYSHELF_ARG_LITERAL, PYSHELF_ARG_JSON). */
static int
client_set(pyshelf_conn *c, const char *key, int kind, const void *data,
    size_t len, const pyshelf_buffer *bufs, size_t nbufs, const char *what)
{
	size_t i;
	int rc;

	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (key == NULL || (data == NULL && len > 0) ||
	    (kind != PYSHELF_ARG_PICKLE && data == NULL)) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "%s: key and data are required", what);
		goto out;
	}
	client_begin(c, WIRE_MSG_SET);
	wire_put_str(&c->wbuf, WIRE_TAG_KEY, key);
	if (kind == PYSHELF_ARG_PICKLE) {
		wire_put_bytes(&c->wbuf, WIRE_TAG_VALUE, len > 0 ? data : "",
		    len);
		for (i = 0; bufs != NULL && i < nbufs; i++)
			wire_put_u64(&c->wbuf, WIRE_TAG_OOB, bufs[i].len);
		if (bufs != NULL && nbufs > 0 &&
		    client_add_bufs(c, bufs, nbufs) < 0) {
			rc = client_fail(c, PYSHELF_E_NOMEM, "out of memory");
			goto out;
		}
	} else if (client_put_text(c, WIRE_TAG_VALUE, kind, data, len) != 0) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "%s: text longer than 4 GiB", what);
		goto out;
	}
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK)
		goto out;
	if (c->msg.type == WIRE_MSG_ERROR)
		rc = client_remote(c);
	else if (c->msg.type != WIRE_MSG_OK)
		rc = client_unexpected(c, "SET");
out:
	client_leave(c);
	return rc;
}

/* Bind a global to a pickled value. */
int
pyshelf_set(pyshelf_conn *c, const char *key, const void *data, size_t len)
{
	return client_set(c, key, PYSHELF_ARG_PICKLE, data, len, NULL, 0,
	    "pyshelf_set");
}

/* Bind a global to a pickle with out-of-band buffers; see pyshelf.h. */
int
pyshelf_set_buffers(pyshelf_conn *c, const char *key, const void *data,
    size_t len, const pyshelf_buffer *bufs, size_t nbufs)
{
	return client_set(c, key, PYSHELF_ARG_PICKLE, data, len, bufs, nbufs,
	    "pyshelf_set_buffers");
}

/* Bind a global to plain data given as text; see pyshelf.h. */
int
pyshelf_set_text(pyshelf_conn *c, const char *key, int kind,
    const char *text)
{
	int rc;

	if (kind != PYSHELF_ARG_LITERAL && kind != PYSHELF_ARG_JSON) {
		if ((rc = client_enter(c, 1)) != PYSHELF_OK)
			return rc;
		rc = client_fail(c, PYSHELF_E_INVAL, "pyshelf_set_text: kind "
		    "must be PYSHELF_ARG_LITERAL or PYSHELF_ARG_JSON");
		client_leave(c);
		return rc;
	}
	return client_set(c, key, kind, text, text != NULL ? strlen(text) : 0,
	    NULL, 0, "pyshelf_set_text");
}

/* Delete a global. */
int
pyshelf_del(pyshelf_conn *c, const char *key)
{
	int rc;

	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (key == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL, "pyshelf_del: no key");
		goto out;
	}
	client_begin(c, WIRE_MSG_DEL);
	wire_put_str(&c->wbuf, WIRE_TAG_KEY, key);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK)
		goto out;
	if (c->msg.type == WIRE_MSG_ERROR)
		rc = client_remote(c);
	else if (c->msg.type != WIRE_MSG_OK)
		rc = client_unexpected(c, "DEL");
out:
	client_leave(c);
	return rc;
}

/* Send a field-less request that is answered by LISTING. */
static int
client_listing(pyshelf_conn *c, uint16_t type)
{
	return client_roundtrip(c, type, WIRE_MSG_LISTING);
}

/* List the globals' names. */
int
pyshelf_keys(pyshelf_conn *c, char ***keysp, size_t *np)
{
	char **keys = NULL;
	size_t i, n = 0;
	int rc;

	if (keysp != NULL)
		*keysp = NULL;
	if (np != NULL)
		*np = 0;
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (keysp == NULL || np == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL, "pyshelf_keys: NULL output");
		goto out;
	}
	if ((rc = client_listing(c, WIRE_MSG_KEYS)) != PYSHELF_OK)
		goto out;
	for (i = 0; i < c->msg.nfields; i++) {
		if (c->msg.fields[i].tag != WIRE_TAG_KEY) {
			rc = client_unexpected(c, "KEYS (a field other than KEY)");
			goto out;
		}
	}
	if (c->msg.nfields > 0 &&
	    (keys = calloc(c->msg.nfields, sizeof *keys)) == NULL)
		goto nomem;
	for (n = 0; n < c->msg.nfields; n++) {
		if ((keys[n] = wire_field_strdup(&c->msg.fields[n])) == NULL)
			goto nomem;
	}
	*keysp = keys;
	*np = n;
	goto out;
nomem:
	pyshelf_strv_free(keys, n);
	rc = client_fail(c, PYSHELF_E_NOMEM, "out of memory");
out:
	client_leave(c);
	return rc;
}

/* How many HANDLES rows the listing's fields make: (HANDLE, TYPE_NAME)
 * or, for an exception's handle, (HANDLE, TYPE_NAME, EXC_TYPE, MESSAGE);
 * 0 with *bad set when the fields are in any other order. */
static size_t
client_handle_rows(const wire_msg *m, int *bad)
{
	size_t i = 0, rows = 0;

	*bad = 0;
	while (i < m->nfields) {
		if (i + 1 >= m->nfields || m->fields[i].tag != WIRE_TAG_HANDLE ||
		    m->fields[i + 1].tag != WIRE_TAG_TYPE_NAME)
			goto bad;
		i += 2;
		if (i < m->nfields && m->fields[i].tag == WIRE_TAG_EXC_TYPE) {
			if (i + 1 >= m->nfields ||
			    m->fields[i + 1].tag != WIRE_TAG_MESSAGE)
				goto bad;
			i += 2;
		}
		rows++;
	}
	return rows;
bad:
	*bad = 1;
	return 0;
}

/* List the live handles: LISTING of (HANDLE, TYPE_NAME[, EXC_TYPE,
 * MESSAGE]) rows. */
int
pyshelf_handles(pyshelf_conn *c, pyshelf_handle_info **hp, size_t *np)
{
	pyshelf_handle_info *v = NULL;
	const wire_field *f;
	size_t i, n = 0, count;
	int rc, bad;

	if (hp != NULL)
		*hp = NULL;
	if (np != NULL)
		*np = 0;
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (hp == NULL || np == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "pyshelf_handles: NULL output");
		goto out;
	}
	if ((rc = client_listing(c, WIRE_MSG_HANDLES)) != PYSHELF_OK)
		goto out;
	count = client_handle_rows(&c->msg, &bad);
	if (bad) {
		rc = client_unexpected(c, "HANDLES (not HANDLE, TYPE_NAME "
		    "[, EXC_TYPE, MESSAGE] rows)");
		goto out;
	}
	if (count > 0 && (v = calloc(count, sizeof *v)) == NULL)
		goto nomem;
	for (n = 0, i = 0; n < count; n++) {
		f = &c->msg.fields[i];
		v[n].handle = wire_field_u64(&f[0]);
		v[n].type_name = wire_field_strdup(&f[1]);
		i += 2;
		if (i < c->msg.nfields &&
		    c->msg.fields[i].tag == WIRE_TAG_EXC_TYPE) {
			v[n].exc_type = wire_field_strdup(&f[2]);
			v[n].message = wire_field_strdup(&f[3]);
			i += 2;
			if (v[n].exc_type == NULL || v[n].message == NULL) {
				n++; /* free the partial entry too */
				goto nomem;
			}
		}
		if (v[n].type_name == NULL) {
			n++;
			goto nomem;
		}
	}
	*hp = v;
	*np = n;
	goto out;
nomem:
	pyshelf_handles_free(v, n);
	rc = client_fail(c, PYSHELF_E_NOMEM, "out of memory");
out:
	client_leave(c);
	return rc;
}

/* List the entries not restored: LISTING of (KEY, TYPE_NAME, MESSAGE). */
int
pyshelf_lost(pyshelf_conn *c, pyshelf_lost_entry **lp, size_t *np)
{
	static const uint8_t order[3] = { WIRE_TAG_KEY, WIRE_TAG_TYPE_NAME,
	    WIRE_TAG_MESSAGE };
	pyshelf_lost_entry *v = NULL;
	size_t i, n = 0, count;
	int rc;

	if (lp != NULL)
		*lp = NULL;
	if (np != NULL)
		*np = 0;
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (lp == NULL || np == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL, "pyshelf_lost: NULL output");
		goto out;
	}
	if ((rc = client_listing(c, WIRE_MSG_LOST)) != PYSHELF_OK)
		goto out;
	count = c->msg.nfields / 3;
	for (i = 0; i < c->msg.nfields; i++) {
		if (c->msg.nfields % 3 != 0 ||
		    c->msg.fields[i].tag != order[i % 3]) {
			rc = client_unexpected(c,
			    "LOST (not KEY, TYPE_NAME, MESSAGE triples)");
			goto out;
		}
	}
	if (count > 0 && (v = calloc(count, sizeof *v)) == NULL)
		goto nomem;
	for (n = 0; n < count; n++) {
		const wire_field *f = &c->msg.fields[3 * n];

		v[n].key = wire_field_strdup(&f[0]);
		v[n].type_name = wire_field_strdup(&f[1]);
		v[n].reason = wire_field_strdup(&f[2]);
		if (v[n].key == NULL || v[n].type_name == NULL ||
		    v[n].reason == NULL) {
			n++; /* free the partial entry too */
			goto nomem;
		}
	}
	*lp = v;
	*np = n;
	goto out;
nomem:
	pyshelf_lost_free(v, n);
	rc = client_fail(c, PYSHELF_E_NOMEM, "out of memory");
out:
	client_leave(c);
	return rc;
}

/* A field-less request answered by LISTING with one DATA (JSON text),
 * copied out NUL-terminated. */
static int
client_listing_data(pyshelf_conn *c, uint16_t type, char **json,
    const char *what)
{
	const wire_field *f;
	int rc;

	if (json != NULL)
		*json = NULL;
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (json == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL, "%s: NULL output", what);
		goto out;
	}
	if ((rc = client_listing(c, type)) != PYSHELF_OK)
		goto out;
	if ((f = wire_msg_find(&c->msg, WIRE_TAG_DATA)) == NULL) {
		rc = client_unexpected(c, client_msg_name(type));
		goto out;
	}
	if ((*json = malloc((size_t)f->len + 1)) == NULL) {
		rc = client_fail(c, PYSHELF_E_NOMEM, "out of memory");
		goto out;
	}
	memcpy(*json, f->data, f->len);
	(*json)[f->len] = '\0';
out:
	client_leave(c);
	return rc;
}

/* Read the backend's statistics: LISTING with one DATA (JSON). */
int
pyshelf_stats(pyshelf_conn *c, char **json)
{
	return client_listing_data(c, WIRE_MSG_STATS, json, "pyshelf_stats");
}

/* List the session's journaled calls: LISTING with one DATA (JSON). */
int
pyshelf_calls(pyshelf_conn *c, char **json)
{
	return client_listing_data(c, WIRE_MSG_CALLS, json, "pyshelf_calls");
}

/* Replay a journaled call and take its result; see pyshelf.h. */
int
pyshelf_call_result(pyshelf_conn *c, const uint8_t call_id[16], int wait,
    int timeout_ms, const pyshelf_exec_req *hooks, pyshelf_result *res)
{
	pyshelf_exec_req none;
	int rc;

	if (res != NULL)
		memset(res, 0, sizeof *res);
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	if (call_id == NULL || res == NULL) {
		rc = client_fail(c, PYSHELF_E_INVAL,
		    "pyshelf_call_result: call id and result are required");
		goto out;
	}
	if (hooks == NULL) {
		/* the replayed OUTPUT is the call's, not a notice: dropped */
		memset(&none, 0, sizeof none);
		hooks = &none;
	}
	client_begin(c, WIRE_MSG_CALL_RESULT);
	wire_put_bytes(&c->wbuf, WIRE_TAG_CALL_ID, call_id, 16);
	wire_put_u64(&c->wbuf, WIRE_TAG_WAIT, wait ? 1 : 0);
	if ((rc = client_send(c, 0)) != PYSHELF_OK)
		goto out;
	rc = client_exec_wait(c, hooks, res, timeout_ms < 0 ? -1 :
	    io_now_us() + (int64_t)timeout_ms * 1000);
out:
	client_leave(c);
	return rc;
}

/* Field-less request answered by OK or PONG. */
static int
client_simple(pyshelf_conn *c, uint16_t type, uint16_t expect)
{
	int rc;

	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	rc = client_roundtrip(c, type, expect);
	client_leave(c);
	return rc;
}

/* Checkpoint now. */
int
pyshelf_sync(pyshelf_conn *c)
{
	return client_simple(c, WIRE_MSG_SYNC, WIRE_MSG_OK);
}

/* Round trip. */
int
pyshelf_ping(pyshelf_conn *c)
{
	return client_simple(c, WIRE_MSG_PING, WIRE_MSG_PONG);
}

/* --- leases; ending a session without attaching ----------------------------- */

/* SET_LEASE; see pyshelf.h. */
int
pyshelf_set_lease(pyshelf_conn *c, uint64_t lease_ms, uint64_t *expires_ms)
{
	int rc;

	if (expires_ms != NULL)
		*expires_ms = 0;
	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	client_begin(c, WIRE_MSG_SET_LEASE);
	wire_put_u64(&c->wbuf, WIRE_TAG_LEASE_MS, lease_ms);
	if ((rc = client_send(c, 0)) == PYSHELF_OK &&
	    (rc = client_reply(c, NULL, -1)) == PYSHELF_OK)
		rc = c->msg.type == WIRE_MSG_OK ? PYSHELF_OK :
		    c->msg.type == WIRE_MSG_ERROR ? client_remote(c) :
		    client_unexpected(c, "SET_LEASE");
	if (rc == PYSHELF_OK) {
		c->welcome.lease_ms = wire_msg_u64(&c->msg, WIRE_TAG_LEASE_MS,
		    lease_ms);
		c->welcome.expires_ms = wire_msg_u64(&c->msg,
		    WIRE_TAG_EXPIRES_MS, 0);
		if (expires_ms != NULL)
			*expires_ms = c->welcome.expires_ms;
	}
	client_leave(c);
	return rc;
}

/* HELLO, then END_SESSION on a fresh connection to the supervisor. */
static int
client_end_request(pyshelf_conn *c, const char *name, uint64_t *ended_ms,
    int *welcomed)
{
	int rc;

	*welcomed = 0;
	client_begin(c, WIRE_MSG_HELLO);
	wire_put_u64(&c->wbuf, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&c->wbuf, WIRE_TAG_NAME, CLIENT_NAME);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK)
		return rc;
	if (c->msg.type == WIRE_MSG_ERROR)
		return client_remote(c);
	if (c->msg.type != WIRE_MSG_WELCOME)
		return client_unexpected(c, "HELLO");
	*welcomed = 1;
	client_begin(c, WIRE_MSG_END_SESSION);
	wire_put_str(&c->wbuf, WIRE_TAG_SESSION, name);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, -1)) != PYSHELF_OK) {
		/* the worker, or the server, refused: an ERROR, then EOF */
		if (rc == PYSHELF_E_PROTOCOL && c->msg.type == WIRE_MSG_ERROR) {
			c->broken = 0;
			return client_remote(c);
		}
		return rc;
	}
	if (c->msg.type == WIRE_MSG_ERROR)
		return client_remote(c);
	if (c->msg.type != WIRE_MSG_OK)
		return client_unexpected(c, "END_SESSION");
	*ended_ms = wire_msg_u64(&c->msg, WIRE_TAG_ENDED_MS, 0);
	return PYSHELF_OK;
}

/* END_SESSION through the store's server; see pyshelf.h. */
int
pyshelf_end_session(pyshelf_conn *c, const char *socket_path,
    const char *db, const char *name, int *no_server, uint64_t *ended_ms)
{
	char path[4096];
	struct timespec nap;
	int rc, fd, e, tries, welcomed;

	*no_server = 0;
	*ended_ms = 0;
	if ((rc = client_enter(c, 0)) != PYSHELF_OK)
		return rc;
	if (name == NULL || *name == '\0' || strlen(name) > 255) {
		rc = client_fail(c, PYSHELF_E_INVAL, "a session name has 1 to "
		    "%d bytes", 255);
		goto out;
	}
	if (socket_path == NULL) {
		if (sockpath_for(db, path, sizeof path) < 0) {
			rc = client_fail(c, PYSHELF_E_SPAWN, "cannot name the "
			    "pyshelf server's socket: %s", strerror(errno));
			goto out;
		}
		socket_path = path;
	}
	for (tries = 1; ; tries++) {
		if ((fd = client_sock_connect(socket_path)) < 0) {
			e = errno;
			*no_server = client_no_server(e);
			rc = client_fail(c, PYSHELF_E_SPAWN, "cannot connect to "
			    "the pyshelf server at %s: %s", socket_path,
			    strerror(e));
			goto out;
		}
		c->rfd = c->wc.rfd = c->wfd = c->wc.wfd = fd;
		c->wfd_is_socket = 1;
		c->server = 1;
		c->rcvtimeo_ms = -1;
		rc = client_end_request(c, name, ended_ms, &welcomed);
		/* back to no backend; the failure kept for pyshelf_errmsg() */
		close(fd);
		c->rfd = c->wc.rfd = c->wfd = c->wc.wfd = -1;
		c->wc.rlen = c->wc.rpos = 0;
		c->broken = 0;
		c->server = 0;
		/* EOF after WELCOME: it went to a worker on its way out (its
		 * session just ended, or it idled out); its successor answers
		 * the next one, as pyshelf_connect() does */
		if (rc != PYSHELF_E_CLOSED || !welcomed || tries >= 5)
			break;
		nap.tv_sec = 0;
		nap.tv_nsec = 100000000L * tries;
		nanosleep(&nap, NULL);
		client_clear(c);
	}
out:
	client_leave(c);
	return rc;
}

/* --- ending ---------------------------------------------------------------- */

/* DETACH (how = 1) or CLOSE (how = 2), waiting for the reply until
 * deadline (io_now_us() clock, < 0 for none). */
static int
client_end_session(pyshelf_conn *c, uint16_t type, int how, int64_t deadline)
{
	int rc;

	client_begin(c, type);
	if ((rc = client_send(c, 0)) != PYSHELF_OK ||
	    (rc = client_reply(c, NULL, deadline)) != PYSHELF_OK)
		return rc;
	if (c->msg.type == WIRE_MSG_ERROR)
		return client_remote(c);
	if (c->msg.type != WIRE_MSG_OK)
		return client_unexpected(c, client_msg_name(type));
	c->finished = how;
	return PYSHELF_OK;
}

/* Detach: the session persists, the backend exits. */
int
pyshelf_detach(pyshelf_conn *c)
{
	int rc;

	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	rc = client_end_session(c, WIRE_MSG_DETACH, 1, -1);
	client_leave(c);
	return rc;
}

/* End the session for good. */
int
pyshelf_close_session(pyshelf_conn *c)
{
	int rc;

	if ((rc = client_enter(c, 1)) != PYSHELF_OK)
		return rc;
	rc = client_end_session(c, WIRE_MSG_CLOSE, 2, -1);
	client_leave(c);
	return rc;
}

/* Return the spawned backend's pid, -1 if none. */
long
pyshelf_backend_pid(const pyshelf_conn *c)
{
	return c != NULL && c->pid > 0 ? (long)c->pid : -1;
}

/* Reap the spawned backend within timeout_ms. */
int
pyshelf_backend_status(pyshelf_conn *c, int *wstatus, int timeout_ms)
{
	int rc, st;

	if (c == NULL)
		return PYSHELF_E_INVAL;
	if (c->pid <= 0)
		return PYSHELF_E_NOTCONN;
	if (client_forked(c) && !c->reaped)
		return PYSHELF_E_FORKED;   /* the backend is not our child */
	if (!c->reaped) {
		rc = spawn_wait(c->pid, timeout_ms, &st);
		if (rc > 0)
			return PYSHELF_E_TIMEOUT;
		if (rc < 0)
			return PYSHELF_E_IO;
		c->reaped = 1;
		c->wstatus = st;
	}
	if (wstatus != NULL)
		*wstatus = c->wstatus;
	return PYSHELF_OK;
}

/*
 * Wait for a spawned backend to end after its stdin was closed: first for
 * EOF on its stdout (it closes when the process exits), then for the
 * process; kill it when close_ms runs out.  *rc gets PYSHELF_E_TIMEOUT
 * when it had to be killed, PYSHELF_E_IO when waitpid failed.
 */
static void
client_close_backend(pyshelf_conn *c, int *rc)
{
	int64_t deadline = io_now_us() + (int64_t)c->close_ms * 1000, left;
	char scratch[4096];
	ssize_t got;
	int r, st;

	while (c->rfd >= 0) {
		left = (deadline - io_now_us() + 999) / 1000;
		if (left <= 0)
			break;
		r = io_wait(c->rfd, 0, (int)(left > INT32_MAX ? INT32_MAX :
		    left));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got = read(c->rfd, scratch, sizeof scratch);
		if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
			break;
	}
	left = (deadline - io_now_us() + 999) / 1000;
	r = spawn_wait(c->pid, left > 0 ? (int)(left > INT32_MAX ? INT32_MAX :
	    left) : 0, &st);
	if (r > 0) {
		r = spawn_kill(c->pid, &st);
		*rc = PYSHELF_E_TIMEOUT;
	}
	if (r < 0) {
		*rc = PYSHELF_E_IO;
		return;
	}
	c->reaped = 1;
	c->wstatus = st;
}

/* Close and free; see pyshelf.h. */
int
pyshelf_close(pyshelf_conn *c, int *wstatus)
{
	int rc = PYSHELF_OK;

	if (wstatus != NULL)
		*wstatus = -1;
	if (c == NULL)
		return PYSHELF_OK;
	if (client_forked(c)) {
		client_close_forked(c);
		return PYSHELF_OK;
	}
	if (c->rfd >= 0 && c->have_welcome && !c->broken && !c->finished &&
	    !atomic_flag_test_and_set(&c->busy)) {
		/* Bounded: a hung backend must not hang the close. */
		(void)client_end_session(c, WIRE_MSG_DETACH, 1, io_now_us() +
		    (int64_t)c->close_ms * 1000);
		client_leave(c);
	}
	/* The backend sees EOF on its stdin: a clean shutdown. */
	pthread_mutex_lock(&c->wlock);
	if (c->wfd >= 0 && c->wfd != c->rfd)
		close(c->wfd);
	else if (c->wfd >= 0 && c->wfd_is_socket)
		(void)shutdown(c->wfd, SHUT_WR);
	c->wfd = -1;
	c->exec_id = 0;
	pthread_mutex_unlock(&c->wlock);
	if (c->pid > 0 && !c->reaped)
		client_close_backend(c, &rc);
	if (c->rfd >= 0)
		close(c->rfd);
	if (c->reaped && wstatus != NULL)
		*wstatus = c->wstatus;
	pthread_mutex_destroy(&c->wlock);
	client_free(c);
	return rc;
}

/* Free c's memory (its descriptors are closed). */
static void
client_free(pyshelf_conn *c)
{
	wire_conn_free(&c->wc);
	wire_buf_free(&c->wbuf);
	wire_msg_free(&c->msg);
	wire_long_free(&c->rl);
	client_rbufs_free(c);
	free(c->sbufs);
	free(c->errmsg);
	free(c->welcome_name);
	free(c->welcome_session);
	free(c->welcome_reason);
	free(c->welcome_message);
	free(c->worker_message);
	free(c->remote_reason);
	free(c);
}

/*
 * pyshelf_close() in the child of a fork(): close the inherited
 * descriptors and free, nothing else.  No DETACH and no shutdown() of the
 * socket (both would end the parent's conversation), no wait for or kill
 * of the parent's backend.  wlock is left alone: a thread of the parent
 * may have held it at the fork, and that thread does not exist here.
 */
static void
client_close_forked(pyshelf_conn *c)
{
	if (c->wfd >= 0 && c->wfd != c->rfd)
		close(c->wfd);
	if (c->rfd >= 0)
		close(c->rfd);
	client_drop_fds(c);
	client_free(c);
}

/* --- freeing --------------------------------------------------------------- */

/* Free a pyshelf_keys() array. */
void
pyshelf_strv_free(char **strv, size_t n)
{
	size_t i;

	if (strv == NULL)
		return;
	for (i = 0; i < n; i++)
		free(strv[i]);
	free(strv);
}

/* Free a pyshelf_handles() array. */
void
pyshelf_handles_free(pyshelf_handle_info *v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(v[i].type_name);
		free(v[i].exc_type);
		free(v[i].message);
	}
	free(v);
}

/* Free a pyshelf_lost() array. */
void
pyshelf_lost_free(pyshelf_lost_entry *v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(v[i].key);
		free(v[i].type_name);
		free(v[i].reason);
	}
	free(v);
}

/* Free memory returned by the library. */
void
pyshelf_free(void *p)
{
	free(p);
}
