/*
 * worker-end.c - ending the session this worker serves without a client
 * closing it: END_SESSION (pyshelf.end(), routed here by the supervisor,
 * answered by the reader thread even while code runs), and a lease that
 * ran out while the worker idled with no client (kept alive by volatile
 * entries, or an --idle-exit longer than the lease).  The session gets
 * its tombstone in one small transaction, every attached client an ERROR
 * SESSION_DEAD, running code a stop; the worker leaves its loop without a
 * checkpoint and tells the supervisor (CTL_ENDED), whose sweeper then
 * deletes what the session left.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"

/* Argument of the ending transaction. */
struct worker_end_arg {
	const uint8_t *id;
	int why;              /* STORE_END_* */
	store_tomb tomb;      /* out: the tombstone written */
};

static int
worker_end_txn(store_txn *t, void *arg)
{
	struct worker_end_arg *ea = arg;

	return session_end(t, ea->id, ea->why, store_now_ms(), &ea->tomb);
}

/* ERROR SESSION_DEAD for code, saying how the session ended. */
static void
worker_end_error(wire_buf *b, uint64_t id, const store_tomb *tb)
{
	char text[768];

	worker_session_tomb_text(tb, text, sizeof text);
	wire_begin(b, WIRE_MSG_ERROR, id);
	wire_put_u64(b, WIRE_TAG_ERRCODE, WIRE_ERR_SESSION_DEAD);
	wire_put_str(b, WIRE_TAG_MESSAGE, text);
	wire_put_u64(b, WIRE_TAG_ENDED_MS, tb->ended_ms);
	wire_put_str(b, WIRE_TAG_REASON, tomb_why_name(tb->why));
}

/*
 * End the session for the reason why (STORE_END_*), unless it has ended
 * already: tombstone, clients but skip told, running code stopped, the
 * main loop left, the supervisor told.  Any thread.  0, STORE_E_DEAD
 * (it had ended: nothing done), or a store error.  *tb (may be NULL)
 * gets the tombstone.
 */
int
worker_end(worker *w, int why, worker_conn *skip, store_tomb *tb)
{
	struct worker_end_arg ea;
	wire_buf b;
	int rc;

	memset(&ea, 0, sizeof ea);
	ea.id = w->sess.id;
	ea.why = why;
	pthread_mutex_lock(&w->lock);
	rc = w->closed ? STORE_E_DEAD : 0;
	pthread_mutex_unlock(&w->lock);
	if (rc == 0)
		rc = store_write(w->st, worker_end_txn, &ea);
	if (rc != 0)
		return rc;
	if (tb != NULL)
		*tb = ea.tomb;
	pthread_mutex_lock(&w->lock);   /* attaches are refused from now */
	w->closed = 1;
	w->ended_here = 1;
	w->end_tomb = ea.tomb;
	if (w->running_id != 0 && !w->sigs_inflight) {
		w->sigs_inflight = 1;
		w->stop_kind = WORKER_STOP_INTERRUPT;
		w->stop_sent_ms = worker_mono_ms();
		if (w->stop_first_ms == 0)
			w->stop_first_ms = w->stop_sent_ms;
		pthread_kill(w->main_thread, SIGINT);
	}
	pthread_mutex_unlock(&w->lock);
	wire_buf_init(&b);
	worker_end_error(&b, 0, &ea.tomb);
	if (wire_end(&b) == WIRE_OK)
		worker_conn_broadcast(w, skip, &b);
	wire_buf_free(&b);
	worker_log(w, "pyshelfd: session '%s' ended (%s)\n", w->sess.name,
	    tomb_why_name(why));
	worker_control_ended(w);
	if (write(w->wake_fd, "e", 1) < 0) {
		/* a full pipe wakes the main thread anyway */
	}
	return 0;
}

/*
 * END_SESSION on connection c (the reader thread; c is not attached):
 * end the session, answer OK{ENDED_MS, REASON} or ERROR SESSION_DEAD /
 * STORE / BAD_REQUEST.  The caller drops c after.
 */
void
worker_end_request(worker *w, worker_conn *c, const wire_msg *m)
{
	const wire_field *sf = wire_msg_find(m, WIRE_TAG_SESSION);
	const char *why = NULL;
	store_tomb tb;
	wire_buf b;
	int rc, ended;

	wire_buf_init(&b);
	if (wire_msg_check(m, &why) != WIRE_OK || sf == NULL ||
	    sf->len != strlen(w->sess.name) ||
	    memcmp(sf->data, w->sess.name, sf->len) != 0) {
		wire_begin(&b, WIRE_MSG_ERROR, m->id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_BAD_REQUEST);
		wire_put_str(&b, WIRE_TAG_MESSAGE, why != NULL ? why :
		    "END_SESSION names another session than this worker's");
		goto send;
	}
	memset(&tb, 0, sizeof tb);
	rc = worker_end(w, STORE_END_ENDED, c, &tb);
	if (rc == STORE_E_DEAD) {
		/* CLOSE or another END_SESSION came first: an END_SESSION or
		 * lease end here says when and why, as the tombstone would
		 * once this worker is gone (pyshelf.end's SessionEnded) */
		pthread_mutex_lock(&w->lock);
		ended = w->ended_here;
		tb = w->end_tomb;
		pthread_mutex_unlock(&w->lock);
		if (ended) {
			worker_end_error(&b, m->id, &tb);
			goto send;
		}
		wire_begin(&b, WIRE_MSG_ERROR, m->id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_SESSION_DEAD);
		wire_put_str(&b, WIRE_TAG_MESSAGE, "the session has ended "
		    "already");
		goto send;
	}
	if (rc != 0) {
		wire_begin(&b, WIRE_MSG_ERROR, m->id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_STORE);
		wire_put_str(&b, WIRE_TAG_MESSAGE, store_strerror(rc));
		goto send;
	}
	wire_begin(&b, WIRE_MSG_OK, m->id);
	wire_put_u64(&b, WIRE_TAG_ENDED_MS, tb.ended_ms);
	wire_put_str(&b, WIRE_TAG_REASON, tomb_why_name(tb.why));
send:
	if (wire_end(&b) == WIRE_OK)
		(void)worker_send_to(w, c, &b);
	wire_buf_free(&b);
}

/*
 * Main thread, idle (no client, nothing running or queued): has the
 * lease run out?  It runs from the later of the session's last seen time
 * (a request's commit, the attach that claimed it) and the moment the
 * worker went idle.  1 yes; 0 no, *due_ms (monotonic) when it will.
 */
int
worker_end_lease_due(worker *w, uint64_t idle_since_mono, uint64_t *due_ms)
{
	uint64_t now = worker_mono_ms(), wall = store_now_ms(), from, idle_wall;

	*due_ms = 0;
	if (w->sess.lease_ms == 0 || w->opt.mode == 'r')
		return 0;
	idle_wall = wall - (now > idle_since_mono ? now - idle_since_mono : 0);
	from = w->sess.last_seen_ms > idle_wall ? w->sess.last_seen_ms :
	    idle_wall;
	if (from + w->sess.lease_ms <= wall)
		return 1;
	*due_ms = now + (from + w->sess.lease_ms - wall);
	return 0;
}
