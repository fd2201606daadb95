/*
 * server-end.c - END_SESSION (pyshelf.end()): a client that sent HELLO
 * asks, instead of ATTACH, that a session end without attaching to it.
 * The supervisor never opens the store, so the session's worker does it:
 * the request is routed as an attach is (to the worker that runs, or to
 * one started for it, with flag 'w': a session that does not exist or has
 * ended is refused by the worker's start as for any attach, NO_SESSION or
 * SESSION_DEAD with the tombstone), and the worker answers it
 * (worker-end.c).  All attaches and ends of one session go through its
 * one worker, so they cannot race.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "server.h"

/* END_SESSION{SESSION}: route it to the session's worker; the frame
 * stays in c->buf for the worker's CTL_CONN. */
void
server_end_request(server *s, server_client *c, wire_msg *m)
{
	const wire_field *f;
	const char *why = NULL;

	if (wire_msg_check(m, &why) != WIRE_OK) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "END_SESSION: %s",
		    why != NULL ? why : "bad fields");
		return;
	}
	f = wire_msg_find(m, WIRE_TAG_SESSION);
	if (f == NULL || f->len == 0 || f->len > STORE_NAME_MAX ||
	    memchr(f->data, '\0', f->len) != NULL ||
	    (c->session = wire_field_strdup(f)) == NULL) {
		server_client_error(c, WIRE_ERR_BAD_REQUEST, "END_SESSION: a "
		    "session name has 1 to %d bytes", STORE_NAME_MAX);
		return;
	}
	c->mode = 'w';
	c->state = SERVER_CLIENT_WAIT;
	c->deadline_ms = 0;
	server_worker_route(s, c);
}
