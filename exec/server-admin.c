/*
 * server-admin.c - the supervisor's answers to admin requests, which a
 * client sends after HELLO instead of ATTACH (server-client.c routes them
 * here): SESSIONS, the sessions that have a worker, with what only the
 * server knows (the worker's pid, its attached clients, the call it is
 * running, the threads of shipped code alive in it), for
 * pyshelf.sessions().  The supervisor never opens the
 * store: the client reads the records itself (pyshelf-dump --sessions)
 * and merges these rows in by session id.
 *
 * The running call is asked of each worker (CTL_QUERY, answered by its
 * reader thread at once, even while code runs), because a worker's
 * regular CTL_STATE names it only while no client is attached.  The
 * answer waits for every worker's reply, or SERVER_ADMIN_WAIT_MS; a
 * worker that did not answer by then is listed with what the supervisor
 * last heard from it.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server.h"
#include "wire.h"

static void server_admin_query(server_session *ss, uint64_t q);

/* Is ss a session with a running worker that can be asked? */
static int
server_admin_askable(const server_session *ss)
{
	return ss->pid > 0 && ss->ready && ss->ctl >= 0;
}

/* Append to a growing string; -1 when out of memory. */
static int
server_admin_append(char **p, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s);
	char *np;

	if (*len + n + 1 > *cap) {
		size_t nc = (*cap ? *cap * 2 : 256) + n;
		if ((np = realloc(*p, nc)) == NULL)
			return -1;
		*p = np;
		*cap = nc;
	}
	memcpy(*p + *len, s, n + 1);
	*len += n;
	return 0;
}

/* The JSON array of the sessions with a worker, for client c's query. */
static char *
server_admin_json(server *s, const server_client *c, size_t *len)
{
	char row[256], hex[2 * 16 + 1], *out = NULL;
	const server_session *ss;
	size_t cap = 0, i;
	int first = 1, fresh;

	*len = 0;
	if (server_admin_append(&out, len, &cap, "[") != 0)
		goto nomem;
	for (ss = s->sessions; ss != NULL; ss = ss->next) {
		if (ss->pid <= 0 || !ss->ready)
			continue;
		for (i = 0; i < sizeof ss->id; i++)
			snprintf(hex + 2 * i, 3, "%02x", ss->id[i]);
		fresh = ss->q_seq >= c->admin_q;
		snprintf(row, sizeof row, "%s{\"id\": \"%s\", \"pid\": %ld, "
		    "\"clients\": %d, \"running\": %s%s%s, \"threads\": %d, "
		    "\"answered\": %s}",
		    first ? "" : ", ", hex, (long)ss->pid,
		    fresh ? ss->q_clients : ss->clients,
		    fresh && ss->q_running[0] ? "\"" : "",
		    fresh && ss->q_running[0] ? ss->q_running : "null",
		    fresh && ss->q_running[0] ? "\"" : "",
		    fresh ? ss->q_threads : 0, fresh ? "true" : "false");
		if (server_admin_append(&out, len, &cap, row) != 0)
			goto nomem;
		first = 0;
	}
	if (server_admin_append(&out, len, &cap, "]") != 0)
		goto nomem;
	return out;
nomem:
	free(out);
	return NULL;
}

/* Answer c's SESSIONS when every worker asked has replied, or (force) at
 * its deadline; then c may send another request. */
static void
server_admin_try(server *s, server_client *c, int force)
{
	const server_session *ss;
	size_t len;
	char *json;
	wire_buf b;

	if (!force)
		for (ss = s->sessions; ss != NULL; ss = ss->next) {
			if (server_admin_askable(ss) && ss->q_seq < c->admin_q)
				return;
			/* a worker that is starting (its session not yet
			 * known): asked once it is ready */
			if (ss->pid > 0 && !ss->ready && ss->ctl >= 0)
				return;
		}
	if ((json = server_admin_json(s, c, &len)) == NULL) {
		server_client_error(c, WIRE_ERR_INTERNAL, "SESSIONS: out of "
		    "memory");
		server_client_flush(s, c);
		return;
	}
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_LISTING, c->rid);
	wire_put_bytes(&b, WIRE_TAG_DATA, json, len);
	free(json);
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

/* SESSIONS from c (server.h): ask every worker, then answer. */
void
server_admin_sessions(server *s, server_client *c, wire_msg *m)
{
	const char *why = NULL;
	server_session *ss;

	if (wire_msg_check(m, &why) != WIRE_OK) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "SESSIONS: %s",
		    why != NULL ? why : "bad fields");
		return;
	}
	c->admin_q = ++s->admin_q;
	for (ss = s->sessions; ss != NULL; ss = ss->next)
		if (server_admin_askable(ss))
			server_admin_query(ss, c->admin_q);
	c->state = SERVER_CLIENT_ADMIN;
	c->len = 0;
	c->deadline_ms = server_now_ms() + SERVER_ADMIN_WAIT_MS;
	server_admin_try(s, c, 0);
}

/* Send ss a CTL_QUERY numbered q. */
static void
server_admin_query(server_session *ss, uint64_t q)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_QUERY, 0);
	wire_put_u64(&b, WIRE_TAG_QUERY, q);
	if (wire_end(&b) == WIRE_OK &&
	    send(ss->ctl, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) !=
	    (ssize_t)b.len)
		server_log("worker pid %ld: CTL_QUERY: %s", (long)ss->pid,
		    strerror(errno));
	wire_buf_free(&b);
}

/* A worker became ready (server.h): a SESSIONS that waits for it asks
 * it now. */
void
server_admin_ready(server *s, server_session *ss)
{
	server_client *c;

	for (c = s->clients; c != NULL; c = c->next)
		if (c->state == SERVER_CLIENT_ADMIN) {
			if (server_admin_askable(ss))
				server_admin_query(ss, s->admin_q);
			return;
		}
}

/* A worker answered a CTL_QUERY (server.h): answer who can be. */
void
server_admin_answered(server *s)
{
	server_client *c, *next;

	for (c = s->clients; c != NULL; c = next) {
		next = c->next;
		if (c->state == SERVER_CLIENT_ADMIN)
			server_admin_try(s, c, 0);
	}
}

/* c's deadline passed (server.h): answer with what is known. */
void
server_admin_timeout(server *s, server_client *c)
{
	server_admin_try(s, c, 1);
}
