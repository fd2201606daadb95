/*
 * server-client.c - a client connection while the supervisor holds it:
 * the uid check at accept, HELLO (version) -> WELCOME, ATTACH, then the
 * wait for its session's worker (server-worker.c hands it over).
 *
 * Reads are non-blocking and take exactly the bytes of the frame being
 * read (the header, then its body): nothing past ATTACH is ever read, so
 * the worker gets the connection with whatever the client sent next
 * still in the socket.  Frames before the hand-over are capped at
 * WIRE_PREAUTH_MAX_FRAME and must each arrive within
 * SERVER_FRAME_DEADLINE_MS.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

static int server_client_read(server *, server_client *);
static void server_client_frame(server *, server_client *);
static void server_client_hello(server *, server_client *, wire_msg *);
static void server_client_attach(server *, server_client *, wire_msg *);

/* Take every pending connection: strangers (another uid) get
 * ERROR{AUTH} and are closed before a byte of theirs is read. */
void
server_client_accept(server *s)
{
	struct ucred cr;
	socklen_t crlen;
	server_client *c, **pp;
	int fd;

	/* a store made since the start gets its record (nothing to do
	 * once recorded) */
	(void)server_listen_record(s, NULL);
	while ((fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK |
	    SOCK_CLOEXEC)) >= 0) {
		crlen = sizeof cr;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) != 0) {
			server_log("accept: SO_PEERCRED: %s", strerror(errno));
			close(fd);
			continue;
		}
		if ((c = calloc(1, sizeof *c)) == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->pid = cr.pid;
		/* at the tail: waiting clients are handed over in order */
		for (pp = &s->clients; *pp != NULL; pp = &(*pp)->next)
			;
		*pp = c;
		if (cr.uid != getuid()) {
			server_log("refused pid %ld: uid %u is not ours",
			    (long)cr.pid, (unsigned)cr.uid);
			server_client_error(c, WIRE_ERR_AUTH, "uid %u is not "
			    "allowed to use this server (owned by uid %u)",
			    (unsigned)cr.uid, (unsigned)getuid());
			continue;
		}
		c->state = SERVER_CLIENT_HELLO;
		c->deadline_ms = server_now_ms() + SERVER_FRAME_DEADLINE_MS;
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
	    errno != ECONNABORTED)
		server_log("accept: %s", strerror(errno));
}

/* Number of connections held (for exit-empty). */
int
server_client_count(const server *s)
{
	const server_client *c;
	int n = 0;

	for (c = s->clients; c != NULL; c = c->next)
		n++;
	return n;
}

/* Forget a connection: closes its fd (when still ours). */
void
server_client_free(server *s, server_client *c)
{
	server_client **pp;

	for (pp = &s->clients; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->sess != NULL && c->sess->first == c)
		c->sess->first = NULL;
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	free(c->out);
	free(c->session);
	free(c);
}

/*
 * Answer with ERROR{code, MESSAGE} and close once it is written (or after
 * SERVER_FRAME_DEADLINE_MS, for a peer that reads nothing).
 */
void
server_client_error(server_client *c, uint64_t code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	wire_buf b;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_ERROR, c->rid);
	wire_put_u64(&b, WIRE_TAG_ERRCODE, code);
	wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
	if (c->signal != 0)
		wire_put_u64(&b, WIRE_TAG_SIGNAL, (uint64_t)c->signal);
	free(c->out);
	c->out = NULL;
	c->outlen = c->outpos = 0;
	if (wire_end(&b) == WIRE_OK) {
		c->out = b.data;  /* taken over */
		c->outlen = b.len;
	} else {
		wire_buf_free(&b);
	}
	c->state = SERVER_CLIENT_CLOSE;
	c->deadline_ms = server_now_ms() + SERVER_FRAME_DEADLINE_MS;
	if (c->fd >= 0)
		(void)shutdown(c->fd, SHUT_RD);
}

/* Write what is queued; a closing client whose ERROR is out is freed. */
void
server_client_flush(server *s, server_client *c)
{
	ssize_t n;

	while (c->outpos < c->outlen) {
		n = send(c->fd, c->out + c->outpos, c->outlen - c->outpos,
		    MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			server_client_free(s, c);
			return;
		}
		c->outpos += (size_t)n;
	}
	if (c->state == SERVER_CLIENT_CLOSE)
		server_client_free(s, c);
}

/*
 * Read on towards the end of the current frame: the 16-byte header
 * first, checked against WIRE_PREAUTH_MAX_FRAME, then exactly its body.
 * 1 when the frame is complete, 0 when more must come, -1 when c was
 * freed or refused.
 */
static int
server_client_read(server *s, server_client *c)
{
	size_t need, flen = WIRE_HEADER_SIZE;
	ssize_t n;
	uint8_t *p;
	int rc;

	for (;;) {
		if (c->len >= WIRE_HEADER_SIZE) {
			rc = wire_peek(c->buf, c->len, WIRE_PREAUTH_MAX_FRAME,
			    &flen);
			if (rc != WIRE_OK) {
				server_client_error(c, wire_errcode_for(rc),
				    "%s (before ATTACH a frame has at most "
				    "%u bytes)", wire_strerror(rc),
				    WIRE_PREAUTH_MAX_FRAME);
				return -1;
			}
			if (c->len == flen)
				return 1;
		}
		if (c->cap < flen) {
			if ((p = realloc(c->buf, flen)) == NULL) {
				server_client_free(s, c);
				return -1;
			}
			c->buf = p;
			c->cap = flen;
		}
		need = flen - c->len;
		n = read(c->fd, c->buf + c->len, need);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0) {
			server_client_free(s, c);
			return -1;
		}
		c->len += (size_t)n;
		if (c->len == WIRE_HEADER_SIZE)
			c->rid = wire_be64_get(c->buf + 8);
	}
}

/* Readiness on a held connection. */
void
server_client_io(server *s, server_client *c, short revents)
{
	if (c->outpos < c->outlen || c->state == SERVER_CLIENT_CLOSE) {
		if (revents & (POLLOUT | POLLERR | POLLHUP))
			server_client_flush(s, c);
		return;
	}
	if (c->state != SERVER_CLIENT_HELLO && c->state != SERVER_CLIENT_ATTACH)
		return;
	if (!(revents & (POLLIN | POLLERR | POLLHUP)))
		return;
	if (server_client_read(s, c) == 1)
		server_client_frame(s, c);
}

/* A complete frame in c->buf: HELLO or ATTACH by state. */
static void
server_client_frame(server *s, server_client *c)
{
	wire_msg m;
	size_t used;
	int rc;

	wire_msg_init(&m);
	rc = wire_parse(c->buf, c->len, WIRE_PREAUTH_MAX_FRAME, &m, &used);
	if (rc != WIRE_OK) {
		server_client_error(c, wire_errcode_for(rc), "%s",
		    wire_strerror(rc));
		goto out;
	}
	if (c->state == SERVER_CLIENT_HELLO)
		server_client_hello(s, c, &m);
	else if (m.type == WIRE_MSG_END_SESSION)
		server_end_request(s, c, &m);  /* server-end.c */
	else
		server_client_attach(s, c, &m);
out:
	wire_msg_free(&m);
}

/*
 * HELLO: the protocol version first (a client of another version must
 * hear how to get a matching server, whatever else its HELLO holds), then
 * the schema; WELCOME with the supervisor's pid and the workers' frame
 * limit.
 */
static void
server_client_hello(server *s, server_client *c, wire_msg *m)
{
	const char *why = NULL;
	uint64_t v;
	wire_buf b;

	if (m->type != WIRE_MSG_HELLO) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "the first frame "
		    "must be HELLO, not %s", wire_msg_name(m->type) != NULL ?
		    wire_msg_name(m->type) : "an unknown type");
		return;
	}
	v = wire_msg_u64(m, WIRE_TAG_VERSION, 0);
	if (v != WIRE_PROTOCOL_VERSION) {
		server_client_error(c, WIRE_ERR_VERSION, "this pyshelfd "
		    "server (pid %ld) speaks protocol %d, the client protocol "
		    "%llu: restart the server with `kill -TERM %ld`; every "
		    "session's state is in the store, so this loses nothing "
		    "(each worker checkpoints and exits), and the next open "
		    "starts a server that matches the client",
		    (long)getpid(), WIRE_PROTOCOL_VERSION,
		    (unsigned long long)v, (long)getpid());
		return;
	}
	if (wire_msg_check(m, &why) != WIRE_OK) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "HELLO: %s",
		    why != NULL ? why : "bad fields");
		return;
	}
	if (server_listen_store_gone(s)) {
		/* attaching would serve the deleted store, or mix it with the
		 * new one in the workers it starts */
		server_log("refused a client: the store %s was deleted, "
		    "moved or replaced after this server opened it", s->db);
		server_client_error(c, WIRE_ERR_STORE, "the store %s was "
		    "deleted, moved or replaced after this server (pid %ld) "
		    "opened it: the server still serves the store it opened, "
		    "which is no longer at that path, and takes no new "
		    "client. Stop it (kill -TERM %ld) and open again: the "
		    "next open starts a server for the store now at that path",
		    s->db, (long)getpid(), (long)getpid());
		return;
	}
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_WELCOME, c->rid);
	wire_put_u64(&b, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
	wire_put_str(&b, WIRE_TAG_NAME, "pyshelfd " PACKAGE_VERSION);
	wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
	wire_put_u64(&b, WIRE_TAG_MAX_FRAME, s->opt.max_frame);
	if (wire_end(&b) != WIRE_OK) {
		wire_buf_free(&b);
		server_client_free(s, c);
		return;
	}
	free(c->out);
	c->out = b.data;  /* taken over */
	c->outlen = b.len;
	c->outpos = 0;
	c->len = 0;
	c->state = SERVER_CLIENT_ATTACH;
	c->deadline_ms = server_now_ms() + SERVER_FRAME_DEADLINE_MS;
	server_client_flush(s, c);
}

/*
 * ATTACH: its session name and mode; read-only is not served here (the
 * client serves flag 'r' with a private stdio backend): MODE "r" only
 * asks the session's idle worker to go (server_worker_route).  The frame stays
 * in c->buf, verbatim, for the worker's CTL_CONN.
 */
static void
server_client_attach(server *s, server_client *c, wire_msg *m)
{
	const wire_field *f;
	const char *why = NULL;

	if (m->type == WIRE_MSG_SESSIONS) {
		server_admin_sessions(s, c, m);
		return;
	}
	if (m->type != WIRE_MSG_ATTACH) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "after WELCOME "
		    "the server takes ATTACH or SESSIONS, not %s", wire_msg_name(m->type)
		    != NULL ? wire_msg_name(m->type) : "an unknown type");
		return;
	}
	if (wire_msg_check(m, &why) != WIRE_OK) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "ATTACH: %s",
		    why != NULL ? why : "bad fields");
		return;
	}
	f = wire_msg_find(m, WIRE_TAG_SESSION);
	if (f == NULL || f->len == 0 || f->len > STORE_NAME_MAX ||
	    (c->session = wire_field_strdup(f)) == NULL) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "ATTACH: a "
		    "session name has 1 to %d bytes", STORE_NAME_MAX);
		return;
	}
	c->mode = wire_msg_u64(m, WIRE_TAG_CREATE, 0) ? 'c' : 'w';
	if ((f = wire_msg_find(m, WIRE_TAG_MODE)) != NULL) {
		if (f->len != 1 || strchr("cwnr", f->data[0]) == NULL) {
			server_client_error(c, WIRE_ERR_BAD_REQUEST, "ATTACH: "
			    "MODE %s is not served by the server: read-only "
			    "(flag 'r') is served by a private stdio backend; "
			    "the server takes 'c', 'w' or 'n'", f->len == 1 &&
			    f->data[0] == 'r' ? "'r'" : "of that value");
			return;
		}
		c->mode = f->data[0];
	}
	c->state = SERVER_CLIENT_WAIT;
	c->deadline_ms = 0;
	server_worker_route(s, c);
}

/* Drop held connections past their deadline. */
void
server_client_timeouts(server *s, int64_t now)
{
	server_client *c, *next;

	for (c = s->clients; c != NULL; c = next) {
		next = c->next;
		if (c->deadline_ms == 0 || now < c->deadline_ms)
			continue;
		if (c->state == SERVER_CLIENT_CLOSE) {
			server_client_free(s, c);
			continue;
		}
		if (c->state == SERVER_CLIENT_ADMIN) {
			server_admin_timeout(s, c);
			continue;
		}
		server_log("dropped pid %ld: no %s within %d s", (long)c->pid,
		    c->state == SERVER_CLIENT_HELLO ? "HELLO" : "ATTACH",
		    SERVER_FRAME_DEADLINE_MS / 1000);
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "no complete %s "
		    "within %d s: closing", c->state == SERVER_CLIENT_HELLO ?
		    "HELLO" : "ATTACH", SERVER_FRAME_DEADLINE_MS / 1000);
		server_client_flush(s, c);
	}
}
