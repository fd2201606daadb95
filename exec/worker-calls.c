/*
 * worker-calls.c - call ids (docs/PROTOCOL.md, "Calls").  Every EXEC may
 * carry a CALL_ID the client chose; the session's journal (journal.c)
 * keeps each call's state, output and final frame.  Here:
 *  - the reader thread notes a new call id (journal_begin) before it
 *    queues the EXEC, so that a re-send while it waits or runs joins it;
 *    an id the journal knows runs no code: its output is replayed and its
 *    RESULT (or ERROR) sent, or, while it runs, the connection joins it;
 *    CALLS and CALL_RESULT are answered here at once, even while code
 *    runs (no Python: the journal is C);
 *  - the running call's OUTPUT goes to the journal, to its requester if
 *    still attached and to every joiner; its final reply likewise, and a
 *    call whose clients all left is persisted when it ends.
 * Ordering: a call's output is journaled and sent under the journal's
 * (recursive) lock, and a join replays and registers under it too, so a
 * joiner gets every byte once.  Lock order: journal, call_lock, w->lock,
 * a connection's out_lock.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "journal.h"

/* Someone who gets a call's output and final frame. */
typedef struct worker_joiner {
	worker_conn *conn;           /* holds a ref */
	uint64_t req_id;             /* the id its frames carry */
} worker_joiner;

/* A queued or running call with an id. */
typedef struct worker_call {
	struct worker_call *next;
	uint8_t id[16];
	worker_joiner who[8];        /* [0]: the requester; then joiners */
	int n;
} worker_call;

int
worker_calls_start(worker *w, char **cause)
{
	char *jc = NULL;
	int rc;

	if (w->opt.mode == 'r')
		return 0;  /* read-only: nothing is journaled */
	if ((w->journal = journal_new(w->st, w->sess.id, NULL)) == NULL) {
		asprintf(cause, "out of memory");
		return -1;
	}
	if ((rc = journal_load(w->journal, &jc)) != 0) {
		/* calls are a convenience: serve without the old ones */
		worker_log(w, "pyshelfd: reading the session's calls: %s\n",
		    jc != NULL ? jc : store_strerror(rc));
		free(jc);
	}
	return 0;
}

void
worker_calls_stop(worker *w)
{
	char *cause = NULL;
	int rc;

	if (w->journal == NULL)
		return;
	if (!w->closed && (rc = journal_persist(w->journal, &cause)) != 0) {
		worker_log(w, "pyshelfd: persisting the calls: %s\n",
		    cause != NULL ? cause : store_strerror(rc));
		free(cause);
	}
	journal_free(w->journal);
	w->journal = NULL;
}

/* call_lock held. */
/*
 * CTL_STATE after a call began or ended.  The state names the running
 * call only while no client is attached (worker_control_state), and a
 * client's attach or detach sends it anew: with clients attached, a
 * call's start or end changes nothing in it, and nothing is formatted.
 */
static void
worker_calls_state(worker *w)
{
	int n;

	if (!w->opt.server)
		return;
	pthread_mutex_lock(&w->lock);
	n = w->nconns;
	pthread_mutex_unlock(&w->lock);
	if (n == 0)
		worker_control_state(w);
}

static worker_call *
worker_calls_find(worker *w, const uint8_t id[16])
{
	worker_call *k;

	for (k = w->calls; k != NULL; k = k->next)
		if (memcmp(k->id, id, 16) == 0)
			return k;
	return NULL;
}

/* Add a recipient (call_lock held).  -1 when the call has too many. */
static int
worker_calls_add(worker *w, worker_call *k, worker_conn *c, uint64_t id)
{
	if (k->n >= (int)(sizeof k->who / sizeof k->who[0]))
		return -1;
	pthread_mutex_lock(&w->lock);
	worker_conn_ref_locked(c);
	pthread_mutex_unlock(&w->lock);
	k->who[k->n].conn = c;
	k->who[k->n].req_id = id;
	k->n++;
	return 0;
}

/* A new call (call_lock held). */
static worker_call *
worker_calls_new(worker *w, const uint8_t id[16], worker_conn *c,
    uint64_t req)
{
	worker_call *k = calloc(1, sizeof *k);

	if (k == NULL)
		return NULL;
	memcpy(k->id, id, 16);
	(void)worker_calls_add(w, k, c, req);
	k->next = w->calls;
	w->calls = k;
	return k;
}

static void
worker_calls_free(worker *w, worker_call *k)
{
	int i;

	for (i = 0; i < k->n; i++)
		worker_conn_unref(w, k->who[i].conn);
	free(k);
}

/* call_lock held. */
static void
worker_calls_unlink(worker *w, worker_call *k)
{
	worker_call **pp;

	for (pp = &w->calls; *pp != NULL; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			return;
		}
}

static void worker_calls_send_error(worker *, worker_conn *, uint64_t, int,
    const char *);

/* Send a frame of type with request id and body to c; when there is no
 * memory to build it, an ERROR saying so instead. */
static int
worker_calls_send_body(worker *w, worker_conn *c, uint16_t type,
    uint64_t id, const uint8_t *body, size_t n)
{
	wire_buf b;
	uint8_t *p;
	int rc = -1, built;

	wire_buf_init(&b);
	wire_begin(&b, type, id);
	/* the body is fields already: reserve it as one blob, then drop the
	 * field header the reservation wrote */
	if (n > 0 && (p = wire_put_reserve(&b, 0, n)) != NULL) {
		memcpy(p, body, n);
		memmove(p - WIRE_FIELD_HEADER_SIZE, p, n);
		b.len -= WIRE_FIELD_HEADER_SIZE;
	}
	if ((built = wire_end(&b) == WIRE_OK))
		rc = worker_send_to(w, c, &b);
	wire_buf_free(&b);
	if (!built) {
		/* no memory for the copy: an answer all the same, never a
		 * client left waiting (QA6 1) */
		worker_calls_send_error(w, c, id, WIRE_ERR_TOO_BIG, "the call "
		    "ran, but its reply could not be copied for this client: "
		    "out of memory (pyshelfd --memory-limit, or the machine's)");
	}
	return rc;
}

/* An OUTPUT frame to c. */
static void
worker_calls_send_output(worker *w, worker_conn *c, uint64_t id,
    int stream, const void *p, size_t n)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_OUTPUT, id);
	wire_put_u64(&b, WIRE_TAG_STREAM, (uint64_t)stream);
	wire_put_bytes(&b, WIRE_TAG_DATA, p, n);
	if (wire_end(&b) == WIRE_OK)
		(void)worker_send_to(w, c, &b);
	wire_buf_free(&b);
}

/* An ERROR frame to c. */
static void
worker_calls_send_error(worker *w, worker_conn *c, uint64_t id, int code,
    const char *msg)
{
	wire_buf b;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_ERROR, id);
	wire_put_u64(&b, WIRE_TAG_ERRCODE, (uint64_t)code);
	wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
	if (wire_end(&b) == WIRE_OK)
		(void)worker_send_to(w, c, &b);
	wire_buf_free(&b);
}

/* What a replay sends to. */
struct worker_calls_replay {
	worker *w;
	worker_conn *c;
	uint64_t req_id;
	const uint8_t *id;
};

/* journal_replay's fn: output, the final frame, or the join. */
static int
worker_calls_replay_fn(void *ctx, int stream, const uint8_t *p, size_t n)
{
	struct worker_calls_replay *r = ctx;
	worker *w = r->w;
	worker_call *k;
	int rc = 0;

	switch (stream) {
	case JOURNAL_STDOUT:
	case JOURNAL_STDERR:
		worker_calls_send_output(w, r->c, r->req_id, stream, p, n);
		return 0;
	case JOURNAL_END_RESULT:
		(void)worker_calls_send_body(w, r->c, WIRE_MSG_RESULT,
		    r->req_id, p, n);
		return 0;
	case JOURNAL_END_ERROR:
		if (p != NULL)
			(void)worker_calls_send_body(w, r->c, WIRE_MSG_ERROR,
			    r->req_id, p, n);
		else
			worker_calls_send_error(w, r->c, r->req_id,
			    WIRE_ERR_WORKER_RESTARTED, "the call was lost: its "
			    "worker restarted or died while it ran");
		return 0;
	case JOURNAL_JOIN:
		pthread_mutex_lock(&w->call_lock);
		if ((k = worker_calls_find(w, r->id)) == NULL ||
		    worker_calls_add(w, k, r->c, r->req_id) != 0)
			rc = -1;
		pthread_mutex_unlock(&w->call_lock);
		if (rc != 0)
			worker_calls_send_error(w, r->c, r->req_id,
			    WIRE_ERR_BAD_REQUEST, k == NULL ? "the call is not "
			    "running in this worker" : "too many connections "
			    "wait for this call");
		return 0;
	}
	return 0;
}

int
worker_calls_exec(worker *w, worker_conn *c, const wire_msg *m)
{
	const wire_field *cid = wire_msg_find(m, WIRE_TAG_CALL_ID),
	    *code = wire_msg_find(m, WIRE_TAG_CODE);
	struct worker_calls_replay r = {w, c, m->id, NULL};
	int known;

	if (w->journal == NULL || cid == NULL || cid->len != 16)
		return 0;
	journal_lock(w->journal);
	known = journal_begin(w->journal, cid->data, (const char *)code->data,
	    code->len) != 0 && journal_find(w->journal, cid->data, NULL);
	if (!known) {
		pthread_mutex_lock(&w->call_lock);
		if (worker_calls_find(w, cid->data) == NULL)
			(void)worker_calls_new(w, cid->data, c, m->id);
		pthread_mutex_unlock(&w->call_lock);
		journal_unlock(w->journal);
		return 0;  /* queue it: it runs in its turn */
	}
	r.id = cid->data;
	(void)journal_replay(w->journal, cid->data, worker_calls_replay_fn,
	    &r);
	journal_unlock(w->journal);
	return 1;
}

void
worker_calls_list(worker *w, worker_conn *c, const wire_msg *m)
{
	char *json = w->journal != NULL ? journal_list_json(w->journal) :
	    strdup("[]");
	wire_buf b;

	if (json == NULL) {
		worker_calls_send_error(w, c, m->id, WIRE_ERR_INTERNAL,
		    "out of memory");
		return;
	}
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_LISTING, m->id);
	wire_put_bytes(&b, WIRE_TAG_DATA, json, strlen(json));
	if (wire_end(&b) == WIRE_OK)
		(void)worker_send_to(w, c, &b);
	wire_buf_free(&b);
	free(json);
}

void
worker_calls_result(worker *w, worker_conn *c, const wire_msg *m)
{
	const wire_field *cid = wire_msg_find(m, WIRE_TAG_CALL_ID);
	struct worker_calls_replay r = {w, c, m->id, NULL};
	journal_call_info info;
	int wait = wire_msg_u64(m, WIRE_TAG_WAIT, 1) != 0;

	if (w->journal == NULL || cid == NULL || cid->len != 16) {
		worker_calls_send_error(w, c, m->id, WIRE_ERR_UNKNOWN_CALL,
		    "no such call in this session");
		return;
	}
	journal_lock(w->journal);
	if (!journal_find(w->journal, cid->data, &info))
		worker_calls_send_error(w, c, m->id, WIRE_ERR_UNKNOWN_CALL,
		    "no such call in this session (unknown, or older than "
		    "the journal keeps)");
	else if (!wait && (info.state == JOURNAL_QUEUED ||
	    info.state == JOURNAL_RUNNING))
		worker_calls_send_error(w, c, m->id, WIRE_ERR_BAD_REQUEST,
		    "still running");
	else {
		r.id = cid->data;
		(void)journal_replay(w->journal, cid->data,
		    worker_calls_replay_fn, &r);
	}
	journal_unlock(w->journal);
}

void
worker_calls_begin(worker *w, const uint8_t id[16], uint64_t req_id,
    worker_conn *c)
{
	worker_call *k;

	if (w->journal == NULL)
		return;
	journal_lock(w->journal);
	pthread_mutex_lock(&w->call_lock);
	if ((k = worker_calls_find(w, id)) == NULL) {
		/* queued before it could be noted (not attached yet) */
		(void)journal_begin(w->journal, id, "", 0);
		k = worker_calls_new(w, id, c, req_id);
	}
	w->call = k;
	pthread_mutex_unlock(&w->call_lock);
	journal_set_state(w->journal, id, JOURNAL_RUNNING);
	journal_unlock(w->journal);
	worker_calls_state(w);
}

int
worker_calls_output(worker *w, int stream, const char *p, size_t n)
{
	worker_call *k;
	int i;

	if (w->journal != NULL)
		journal_lock(w->journal);
	pthread_mutex_lock(&w->call_lock);
	if ((k = w->call) != NULL) {
		journal_output(w->journal, k->id, stream, p, n);
		for (i = 0; i < k->n; i++)
			worker_calls_send_output(w, k->who[i].conn,
			    k->who[i].req_id, stream, p, n);
	} else if (w->out_conn != NULL)
		worker_calls_send_output(w, w->out_conn, w->out_id, stream, p,
		    n);
	pthread_mutex_unlock(&w->call_lock);
	if (w->journal != NULL)
		journal_unlock(w->journal);
	return 0;
}

/* Is any recipient of k still attached?  (w->lock held.) */
static int
worker_calls_attached_locked(worker_call *k)
{
	int i;

	for (i = 0; i < k->n; i++)
		if (!k->who[i].conn->gone)
			return 1;
	return 0;
}

/* End call k with the frame in b (RESULT or ERROR): journal it, send it
 * to every recipient with their own request ids.  Journal and call_lock
 * held; k is unlinked here. */
static void
worker_calls_end(worker *w, worker_call *k, const wire_buf *b, int lost)
{
	const uint8_t *body = b->data + WIRE_HEADER_SIZE;
	size_t n = b->len - WIRE_HEADER_SIZE;
	uint16_t type = wire_be16_get(b->data + 4);
	int i, detached;

	pthread_mutex_lock(&w->lock);
	detached = !worker_calls_attached_locked(k);
	pthread_mutex_unlock(&w->lock);
	if (type == WIRE_MSG_RESULT)
		journal_end(w->journal, k->id, body, n, detached);
	else
		journal_end_error(w->journal, k->id, body, n, lost, detached);
	for (i = 0; i < k->n; i++)
		if (k->who[i].req_id == wire_be64_get(b->data + 8))
			/* b itself: no copy of a reply of megabytes (under
			 * --memory-limit the copy could fail: QA6 1) */
			(void)worker_send_to(w, k->who[i].conn, b);
		else
			(void)worker_calls_send_body(w, k->who[i].conn, type,
			    k->who[i].req_id, body, n);
	worker_calls_unlink(w, k);
	if (w->call == k)
		w->call = NULL;
}

int
worker_calls_reply(worker *w, const wire_buf *b)
{
	worker_call *k;
	uint16_t type;

	if (w->journal == NULL || b->len < WIRE_HEADER_SIZE)
		return 0;
	type = wire_be16_get(b->data + 4);
	if (type != WIRE_MSG_RESULT && type != WIRE_MSG_ERROR)
		return 0;
	journal_lock(w->journal);
	pthread_mutex_lock(&w->call_lock);
	k = w->call;
	if (k == NULL || k->n == 0 ||
	    wire_be64_get(b->data + 8) != k->who[0].req_id) {
		pthread_mutex_unlock(&w->call_lock);
		journal_unlock(w->journal);
		return 0;
	}
	worker_calls_end(w, k, b, 0);
	pthread_mutex_unlock(&w->call_lock);
	journal_unlock(w->journal);
	worker_calls_free(w, k);
	worker_calls_state(w);
	return 1;
}

void
worker_calls_lost(worker *w, const char *message)
{
	worker_call *k;
	wire_buf b;

	if (w->journal == NULL)
		return;
	journal_lock(w->journal);
	pthread_mutex_lock(&w->call_lock);
	while ((k = w->calls) != NULL) {
		wire_buf_init(&b);
		wire_begin(&b, WIRE_MSG_ERROR, k->n > 0 ? k->who[0].req_id : 0);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_WORKER_RESTARTED);
		wire_put_str(&b, WIRE_TAG_MESSAGE, message);
		if (wire_end(&b) == WIRE_OK)
			worker_calls_end(w, k, &b, 1);
		else
			worker_calls_unlink(w, k);
		wire_buf_free(&b);
		/* not freed: the process is about to be replaced */
	}
	w->call = NULL;
	pthread_mutex_unlock(&w->call_lock);
	journal_unlock(w->journal);
}

int
worker_calls_joined(worker *w, worker_conn *c)
{
	int i, in = 0;

	pthread_mutex_lock(&w->call_lock);
	for (i = 0; w->call != NULL && i < w->call->n; i++)
		if (w->call->who[i].conn == c)
			in = 1;
	pthread_mutex_unlock(&w->call_lock);
	return in;
}

int
worker_calls_running_hex(worker *w, char hex[33])
{
	static const char digits[] = "0123456789abcdef";
	int i, running = 0;

	pthread_mutex_lock(&w->call_lock);
	if (w->call != NULL) {
		for (i = 0; i < 16; i++) {
			hex[2 * i] = digits[w->call->id[i] >> 4];
			hex[2 * i + 1] = digits[w->call->id[i] & 15];
		}
		hex[32] = '\0';
		running = 1;
	}
	pthread_mutex_unlock(&w->call_lock);
	return running;
}

/* The request id a running call's RESULT should carry CALL_ID for: 1 and
 * id copied when the request being served is a call. */
int
worker_calls_current(worker *w, uint8_t id[16])
{
	int in = 0;

	pthread_mutex_lock(&w->call_lock);
	if (w->call != NULL) {
		memcpy(id, w->call->id, 16);
		in = 1;
	}
	pthread_mutex_unlock(&w->call_lock);
	return in;
}

int
worker_calls_withdraw(worker *w, const uint8_t id[16], const wire_buf *b)
{
	worker_call *k;

	if (w->journal == NULL)
		return -1;
	journal_lock(w->journal);
	pthread_mutex_lock(&w->call_lock);
	if ((k = worker_calls_find(w, id)) == NULL || k == w->call) {
		pthread_mutex_unlock(&w->call_lock);
		journal_unlock(w->journal);
		return -1;
	}
	worker_calls_end(w, k, b, 1);
	pthread_mutex_unlock(&w->call_lock);
	journal_unlock(w->journal);
	worker_calls_free(w, k);
	return 0;
}
