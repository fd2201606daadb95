/*
 * worker-control.c - server mode: the worker's control channel to its
 * supervisor (docs/PROTOCOL.md, "Server mode").  An AF_UNIX SOCK_SEQPACKET
 * socket, one frame per packet: first the end of a socketpair the
 * supervisor gave at the exec (--control-fd), later whatever connects to
 * the worker's --control socket (a supervisor that restarted after a
 * crash; same uid only), which replaces the channel.  The supervisor
 * sends CTL_CONN (a client's socket, SCM_RIGHTS, with its ATTACH frame),
 * CTL_IDLE_OK, CTL_QUERY and CTL_STOP (the server stops: stop the running
 * call, serve no more, checkpoint and exit); the worker sends CTL_READY
 * (on every new channel), CTL_STATE (clients, running call) and
 * CTL_IDLE.  Flags 'n' and 'r' make a lingering idle worker hibernate
 * (worker_control_hibernate).  A worker that loses
 * its channel serves on; idle, it then exits without asking.
 * The reader thread reads the channel; any thread writes it (ctl_lock).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "exec.h"

/* The largest control packet: an ATTACH frame (at most the pre-handshake
 * frame size) inside a CTL_CONN, with room to spare. */
#define WORKER_CONTROL_MAX (WIRE_PREAUTH_MAX_FRAME + 4096)

static int worker_control_hibernate(worker *, char);

/* Send one encoded frame on the control channel; -1 when there is none
 * or it broke (the reader sees the break and closes it). */
static int
worker_control_send(worker *w, const wire_buf *b)
{
	ssize_t n = -1;

	if (w->forked)
		_exit(0);
	pthread_mutex_lock(&w->ctl_lock);
	if (w->ctl_fd >= 0)
		do
			n = send(w->ctl_fd, b->data, b->len, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
	pthread_mutex_unlock(&w->ctl_lock);
	return n == (ssize_t)b->len ? 0 : -1;
}

/* CTL_ENDED: this worker's session ended (worker-end.c): the supervisor
 * sweeps soon. */
void
worker_control_ended(worker *w)
{
	wire_buf b;

	if (!w->opt.server)
		return;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_ENDED, 0);
	if (wire_end(&b) == WIRE_OK)
		(void)worker_control_send(w, &b);
	wire_buf_free(&b);
}

void
worker_control_ready(worker *w)
{
	wire_buf b;

	if (!w->opt.server)
		return;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_READY, 0);
	wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
	wire_put_bytes(&b, WIRE_TAG_SESSION_ID, w->sess.id, STORE_ID_SIZE);
	wire_put_str(&b, WIRE_TAG_SESSION, w->sess.name);
	if (wire_end(&b) == WIRE_OK)
		(void)worker_control_send(w, &b);
	wire_buf_free(&b);
}

void
worker_control_state(worker *w)
{
	char json[96], hex[33];
	int n, running;
	wire_buf b;

	if (!w->opt.server)
		return;
	pthread_mutex_lock(&w->lock);
	n = w->nconns;
	pthread_mutex_unlock(&w->lock);
	/* the running call only while no client is attached: with clients
	 * the supervisor needs nothing more (it routes to this worker
	 * anyway), and a CTL_STATE at every call's start and end woke the
	 * supervisor twice per request (a no-op through the server cost
	 * 1.5x stdio's) */
	running = n == 0 && worker_calls_running_hex(w, hex);
	if (running)
		snprintf(json, sizeof json, "{\"clients\": %d, \"running\": "
		    "\"%s\"}", n, hex);
	else
		snprintf(json, sizeof json, "{\"clients\": %d, \"running\": "
		    "null}", n);
	pthread_mutex_lock(&w->ctl_lock);
	if (strcmp(json, w->state_sent) == 0) {
		pthread_mutex_unlock(&w->ctl_lock);
		return;
	}
	snprintf(w->state_sent, sizeof w->state_sent, "%s", json);
	pthread_mutex_unlock(&w->ctl_lock);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_STATE, 0);
	wire_put_bytes(&b, WIRE_TAG_DATA, json, strlen(json));
	if (wire_end(&b) == WIRE_OK)
		(void)worker_control_send(w, &b);
	wire_buf_free(&b);
}

/*
 * CTL_QUERY (the supervisor lists sessions for pyshelf.sessions()): answer
 * at once, from the reader thread, with a CTL_STATE that echoes the
 * query's number, names the running call whether or not clients are
 * attached, and counts the threads of shipped code alive.  It leaves
 * state_sent alone: the regular CTL_STATEs go on as before.
 */
static void
worker_control_query(worker *w, uint64_t q)
{
	char json[192], hex[33];
	int n, running, threads;
	wire_buf b;

	pthread_mutex_lock(&w->lock);
	n = w->nconns;
	threads = w->threads;
	pthread_mutex_unlock(&w->lock);
	running = worker_calls_running_hex(w, hex);
	snprintf(json, sizeof json, "{\"clients\": %d, \"running\": %s%s%s, "
	    "\"threads\": %d, \"query\": %llu}", n, running ? "\"" : "",
	    running ? hex : "null", running ? "\"" : "", threads,
	    (unsigned long long)q);
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_STATE, 0);
	wire_put_bytes(&b, WIRE_TAG_DATA, json, strlen(json));
	if (wire_end(&b) == WIRE_OK)
		(void)worker_control_send(w, &b);
	wire_buf_free(&b);
}

/* Close the control channel (it broke, or a new one replaces it). */
static void
worker_control_close(worker *w)
{
	pthread_mutex_lock(&w->ctl_lock);
	if (w->ctl_fd >= 0) {
		worker_fds_forget(w->ctl_fd);
		close(w->ctl_fd);
	}
	w->ctl_fd = -1;
	w->state_sent[0] = '\0';
	pthread_mutex_unlock(&w->ctl_lock);
	pthread_mutex_lock(&w->lock);
	/* no one to ask: an idle worker now exits without asking */
	w->ctl_idle_asked = 0;
	pthread_mutex_unlock(&w->lock);
}

/*
 * ATTACH (it came in CTL_CONN; the supervisor did HELLO), answered here
 * by the reader thread, so that a client attaches while code runs: the
 * connection joins the session the worker serves.  The first ATTACH is
 * the one the worker was started for (--create / --new from its MODE);
 * a later one with MODE "n" would replace a session that is live in
 * this worker: refused (SESSION_BUSY), whether or not other clients use
 * it (close_session() first).  MODE "w" and "c" attach.  LEASE_MS sets
 * the session's lease (the main thread writes it).  ATTACHED says what
 * WELCOME says in stdio mode, plus what the supervisor knew of the
 * session's previous worker (SIGNAL, MESSAGE).  1: the connection is
 * refused (drop it).
 */
static int
worker_control_attach(worker *w, worker_conn *c, const wire_msg *m,
    uint64_t sig, const char *ctl_message)
{
	const wire_field *mf = wire_msg_find(m, WIRE_TAG_MODE),
	    *sf = wire_msg_find(m, WIRE_TAG_SESSION);
	char mode = mf != NULL && mf->len == 1 ? (char)mf->data[0] :
	    wire_msg_u64(m, WIRE_TAG_CREATE, 0) ? 'c' : 'w';
	char msg[2048];
	size_t mlen = 0;
	int first = w->attaches == 0, others, busy, closed;
	const char *why = NULL;
	wire_buf b;

	msg[0] = '\0';
	wire_buf_init(&b);
	if (wire_msg_check(m, &why) != WIRE_OK)
		snprintf(msg, sizeof msg, "%s (ATTACH)", why != NULL ? why :
		    "bad message");
	else if (mode != 'c' && mode != 'w' && mode != 'n' &&
	    (mode != 'r' || first))
		snprintf(msg, sizeof msg, "MODE must be \"c\", \"w\" or \"n\" "
		    "(read-only is served by a private stdio backend; MODE "
		    "\"r\" only asks a worker that runs to go)");
	else if (sf == NULL || sf->len != strlen(w->sess.name) ||
	    memcmp(sf->data, w->sess.name, sf->len) != 0)
		snprintf(msg, sizeof msg, "this worker serves session '%s', "
		    "not the one ATTACH names", w->sess.name);
	if (msg[0] != '\0') {
		wire_begin(&b, WIRE_MSG_ERROR, m->id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_BAD_REQUEST);
		wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
		goto refuse;
	}
	pthread_mutex_lock(&w->lock);
	closed = w->closed;
	pthread_mutex_unlock(&w->lock);
	if (closed) {
		/* CLOSE ended the session and this worker is on its way out;
		 * the attach came before the supervisor saw it go */
		snprintf(msg, sizeof msg, "session '%s' was closed "
		    "(close_session())", w->sess.name);
		wire_begin(&b, WIRE_MSG_ERROR, m->id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_SESSION_DEAD);
		wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
		wire_put_str(&b, WIRE_TAG_REASON, "closed");
		/* its PID: a client with MODE c or n waits for it to go and
		 * attaches again, to a new session (PROTOCOL.md 7.4) */
		wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
		goto refuse;
	}
	if (!first && worker_control_hibernate(w, mode)) {
		/* idle, it checkpoints and exits: the client attaches again
		 * once this pid is gone, and the next worker serves it (for
		 * flag 'n': makes the new session) */
		snprintf(msg, sizeof msg, "session '%s' was idle in its worker "
		    "(pid %ld), which is checkpointing and exiting; attach "
		    "again once it is gone", w->sess.name, (long)getpid());
		wire_begin(&b, WIRE_MSG_ERROR, m->id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_SESSION_BUSY);
		wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
		wire_put_str(&b, WIRE_TAG_REASON, "hibernating");
		wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
		goto refuse;
	}
	if ((mode == 'n' || mode == 'r') && !first) {
		char tmsg[160];
		int mem, threads;

		pthread_mutex_lock(&w->lock);
		others = w->nconns - 1;
		busy = w->running_id != 0 || w->qhead != NULL;
		mem = w->mem_only;
		threads = w->threads;
		pthread_mutex_unlock(&w->lock);
		/* a thread of shipped code is code running: replacing the
		 * session or opening it read-only would stop it */
		snprintf(tmsg, sizeof tmsg, "%d thread%s of shipped code "
		    "running", threads, threads == 1 ? "" : "s");
		if (mode == 'r')
			snprintf(msg, sizeof msg, "session '%s' is in use in its "
			    "worker (pid %ld: %s): flag 'r' opens it read-only "
			    "only while no client is attached and nothing runs",
			    w->sess.name, (long)getpid(), others > 0 ? "other "
			    "clients attached" : busy ? "code running" :
			    threads > 0 ? tmsg : mem > 0 ?
			    "entries live only in its memory (volatile, or not "
			    "written: the store is full); they would be lost" :
			    "busy");
		else
			snprintf(msg, sizeof msg, "session '%s' is in use in its "
			    "worker (pid %ld: %s): flag 'n' replaces a session "
			    "only while no client is attached and nothing runs; "
			    "close_session() it first", w->sess.name,
			    (long)getpid(), others > 0 ? "other clients "
			    "attached" : busy ? "code running" : threads > 0 ?
			    tmsg : "busy");
		wire_begin(&b, WIRE_MSG_ERROR, m->id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_SESSION_BUSY);
		wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
		wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
		goto refuse;
	}
	if (wire_msg_find(m, WIRE_TAG_LEASE_MS) != NULL) {
		pthread_mutex_lock(&w->lock);
		w->new_lease_ms = wire_msg_u64(m, WIRE_TAG_LEASE_MS, 0);
		w->new_lease = 1;
		pthread_mutex_unlock(&w->lock);
	}
	wire_begin(&b, WIRE_MSG_ATTACHED, m->id);
	wire_put_bytes(&b, WIRE_TAG_SESSION_ID, w->sess.id, STORE_ID_SIZE);
	wire_put_str(&b, WIRE_TAG_SESSION, w->sess.name);
	wire_put_u64(&b, WIRE_TAG_CREATED, (uint64_t)(first && w->created));
	wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)getpid());
	wire_put_u64(&b, WIRE_TAG_MAX_FRAME, w->opt.max_frame);
	if (wire_msg_find(m, WIRE_TAG_LEASE_MS) != NULL)
		wire_put_u64(&b, WIRE_TAG_LEASE_MS,
		    wire_msg_u64(m, WIRE_TAG_LEASE_MS, 0));
	else
		dispatch_put_lease(w, &b);
	if (first && w->has_ended) {
		char text[768];
		worker_session_tomb_text(&w->ended, text, sizeof text);
		mlen = (size_t)snprintf(msg, sizeof msg, "a new, empty session "
		    "was created: %s", text);
		wire_put_u64(&b, WIRE_TAG_ENDED_MS, w->ended.ended_ms);
		wire_put_str(&b, WIRE_TAG_REASON, tomb_why_name(w->ended.why));
	}
	if (ctl_message != NULL && mlen < sizeof msg)
		snprintf(msg + mlen, sizeof msg - mlen, "%s%s", mlen ? "; " : "",
		    ctl_message);
	if (msg[0] != '\0')
		wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
	if (sig != 0)
		wire_put_u64(&b, WIRE_TAG_SIGNAL, sig);
	if (wire_end(&b) != WIRE_OK || worker_send_to(w, c, &b) != 0) {
		wire_buf_free(&b);
		return 1;
	}
	wire_buf_free(&b);
	pthread_mutex_lock(&w->lock);
	c->attached = 1;
	pthread_mutex_unlock(&w->lock);
	w->attaches++;
	return 0;
refuse:
	if (wire_end(&b) == WIRE_OK)
		(void)worker_send_to(w, c, &b);
	wire_buf_free(&b);
	return 1;
}

/*
 * Flag 'n' (QA 02) asks for a new session where this worker lingers with
 * no client attached, nothing running or queued and no thread of shipped
 * code alive (waiting out its --idle-exit), and flag 'r' for the session
 * read-only (a private backend, which needs the session's lock; not while
 * entries live only in this worker's memory: they would be lost).  The worker hibernates:
 * the main thread leaves its loop, checkpoints and exits as an idle exit
 * does, so that the session is free for the next worker.  Once
 * hibernating, every attach is refused the same way (the supervisor may
 * route a few before it sees the exit).  The asking connection is in the
 * table already (nconns counts it).  1: refuse the attach.
 */
static int
worker_control_hibernate(worker *w, char mode)
{
	int hib;

	pthread_mutex_lock(&w->lock);
	if (!w->hibernating && (mode == 'n' || (mode == 'r' &&
	    w->mem_only == 0)) && w->nconns <= 1 &&
	    w->running_id == 0 && w->qhead == NULL && w->threads == 0 &&
	    !w->stop_asked && !w->ended_here)
		w->hibernating = 1;
	hib = w->hibernating;
	pthread_mutex_unlock(&w->lock);
	if (hib) {
		char c = 1;
		if (write(w->wake_fd, &c, 1) < 0) {
			/* full: the main thread wakes anyway */
		}
	}
	return hib;
}

/* CTL_CONN: a client's socket and its ATTACH frame: a new connection,
 * attached here. */
static void
worker_control_conn(worker *w, const wire_msg *m, int fd)
{
	const wire_field *data = wire_msg_find(m, WIRE_TAG_DATA),
	    *msg = wire_msg_find(m, WIRE_TAG_MESSAGE);
	char *text = NULL;
	worker_conn *c;
	wire_msg am;
	size_t used;
	int ok;

	wire_msg_init(&am);
	ok = fd >= 0 && data != NULL && wire_parse(data->data, data->len,
	    WIRE_PREAUTH_MAX_FRAME, &am, &used) == WIRE_OK &&
	    used == data->len && (am.type == WIRE_MSG_ATTACH ||
	    am.type == WIRE_MSG_END_SESSION);
	if (!ok) {
		wire_msg_free(&am);
		worker_log(w, "pyshelfd: CTL_CONN without a client socket "
		    "and its ATTACH frame; ignored\n");
		if (fd >= 0)
			close(fd);
		return;
	}
	if (msg != NULL)
		text = wire_field_strdup(msg);
	if ((c = worker_conn_add(w, fd, fd, 1)) == NULL) {
		close(fd);
		free(text);
		wire_msg_free(&am);
		return;
	}
	c->max = w->opt.max_frame;  /* the supervisor did the handshake */
	if (am.type == WIRE_MSG_END_SESSION) {
		/* pyshelf.end(): answered here, the connection dropped */
		worker_end_request(w, c, &am);
		pthread_mutex_lock(&w->lock);
		worker_conn_drop_locked(w, c);
		pthread_mutex_unlock(&w->lock);
		free(text);
		wire_msg_free(&am);
		return;
	}
	pthread_mutex_lock(&w->lock);
	w->ctl_idle_asked = 0;  /* not idle any more */
	w->ctl_idle_ok = 0;
	pthread_mutex_unlock(&w->lock);
	if (worker_control_attach(w, c, &am, wire_msg_u64(m, WIRE_TAG_SIGNAL,
	    0), text) != 0) {
		pthread_mutex_lock(&w->lock);
		worker_conn_drop_locked(w, c);
		pthread_mutex_unlock(&w->lock);
	}
	worker_control_state(w);
	free(text);
	wire_msg_free(&am);
}

void
worker_control_readable(worker *w)
{
	uint8_t *buf;
	wire_msg m;
	ssize_t n;
	size_t used;
	int fd = -1, nfd = 0, running;

	if ((buf = malloc(WORKER_CONTROL_MAX)) == NULL)
		return;
	/* one fd per packet: any more are closed */
	do
		n = wire_recv_fds(w->ctl_fd, buf, WORKER_CONTROL_MAX, &fd, 1,
		    &nfd, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN) {
		free(buf);
		return;
	}
	if (n <= 0) {
		/* the supervisor went away: serve on without it */
		if (n < 0)
			worker_log(w, "pyshelfd: control channel: %s\n",
			    strerror(errno));
		worker_control_close(w);
		free(buf);
		return;
	}
	wire_msg_init(&m);
	if (wire_parse(buf, (size_t)n, WORKER_CONTROL_MAX, &m, &used) !=
	    WIRE_OK || wire_msg_check(&m, NULL) != WIRE_OK) {
		worker_log(w, "pyshelfd: a malformed control frame; "
		    "ignored\n");
		if (fd >= 0)
			close(fd);
		goto out;
	}
	switch (m.type) {
	case WIRE_MSG_CTL_CONN:
		worker_control_conn(w, &m, fd);
		break;
	case WIRE_MSG_CTL_QUERY:
		if (fd >= 0)
			close(fd);
		worker_control_query(w, wire_msg_u64(&m, WIRE_TAG_QUERY, 0));
		break;
	case WIRE_MSG_CTL_STOP:
		if (fd >= 0)
			close(fd);
		pthread_mutex_lock(&w->lock);
		running = w->running_id != 0;
		pthread_mutex_unlock(&w->lock);
		worker_log(w, "pyshelfd: the server is stopping: %s\n", running ?
		    "stopping the running call, then checkpointing and "
		    "exiting" : "checkpointing and exiting");
		worker_reader_shutdown(w);
		break;
	case WIRE_MSG_CTL_IDLE_OK:
		if (fd >= 0)
			close(fd);
		pthread_mutex_lock(&w->lock);
		if (w->ctl_idle_asked)
			w->ctl_idle_ok = 1;
		pthread_mutex_unlock(&w->lock);
		{
			char c = 1;
			if (write(w->wake_fd, &c, 1) < 0) {
				/* full: the main thread wakes anyway */
			}
		}
		break;
	default:
		if (fd >= 0)
			close(fd);
		worker_log(w, "pyshelfd: control frame %s not for a worker; "
		    "ignored\n", wire_msg_name(m.type) != NULL ?
		    wire_msg_name(m.type) : "?");
	}
out:
	wire_msg_free(&m);
	free(buf);
}

/* A supervisor (after a crash of the one before) connects to --control:
 * same uid only; it becomes the control channel. */
void
worker_control_accept(worker *w)
{
	struct ucred cr;
	socklen_t len = sizeof cr;
	int fd;

	fd = accept4(w->ctl_listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 ||
	    cr.uid != geteuid()) {
		worker_log(w, "pyshelfd: control connection of uid %ld "
		    "refused\n", (long)cr.uid);
		close(fd);
		return;
	}
	pthread_mutex_lock(&w->ctl_lock);
	if (w->ctl_fd >= 0) {
		worker_fds_forget(w->ctl_fd);
		close(w->ctl_fd);
	}
	w->ctl_fd = fd;
	(void)worker_fds_add(fd);
	w->state_sent[0] = '\0';
	pthread_mutex_unlock(&w->ctl_lock);
	pthread_mutex_lock(&w->lock);
	w->ctl_idle_asked = 0;
	w->ctl_idle_ok = 0;
	pthread_mutex_unlock(&w->lock);
	worker_control_ready(w);
	worker_control_state(w);
}

/* Listen on --control PATH (a stale socket of an earlier worker of the
 * session is replaced). */
static int
worker_control_listen(worker *w, char **cause)
{
	struct sockaddr_un sa;
	int fd;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (strlen(w->opt.control_path) >= sizeof sa.sun_path) {
		asprintf(cause, "--control %s: path too long for a socket",
		    w->opt.control_path);
		return -1;
	}
	strcpy(sa.sun_path, w->opt.control_path);
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) < 0)
		goto fail;
	(void)unlink(w->opt.control_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    chmod(w->opt.control_path, 0600) != 0 || listen(fd, 8) != 0) {
		close(fd);
		goto fail;
	}
	w->ctl_listen_fd = fd;
	return 0;
fail:
	asprintf(cause, "--control %s: %s", w->opt.control_path,
	    strerror(errno));
	return -1;
}

int
worker_control_start(worker *w, char **cause)
{
	if (w->opt.stopping)
		w->stop_asked = w->terminate = 1;  /* see worker_restart_exec */
	if (w->ctl_fd < 0 && w->opt.control_fd >= 0) {
		w->ctl_fd = w->opt.control_fd;
		(void)fcntl(w->ctl_fd, F_SETFD, FD_CLOEXEC);
	}
	if (w->opt.control_path != NULL && w->ctl_listen_fd < 0 &&
	    worker_control_listen(w, cause) != 0)
		return -1;
	return 0;
}

int
worker_control_idle(worker *w)
{
	int have, asked, ok;
	wire_buf b;

	pthread_mutex_lock(&w->ctl_lock);
	have = w->ctl_fd >= 0;
	pthread_mutex_unlock(&w->ctl_lock);
	if (!have)
		return 1;   /* no supervisor to ask */
	pthread_mutex_lock(&w->lock);
	asked = w->ctl_idle_asked;
	ok = w->ctl_idle_ok;
	if (!asked)
		w->ctl_idle_asked = 1;
	pthread_mutex_unlock(&w->lock);
	if (ok)
		return 1;
	if (asked)
		return 0;
	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_IDLE, 0);
	if (wire_end(&b) == WIRE_OK && worker_control_send(w, &b) != 0) {
		wire_buf_free(&b);
		return 1;  /* the channel broke: no one to ask */
	}
	wire_buf_free(&b);
	return 0;
}

void
worker_control_refuse(worker *w, const wire_buf *b)
{
	struct pollfd pfd = {w->ctl_fd, POLLIN, 0};
	const wire_field *data;
	uint8_t *buf, *copy;
	wire_msg m;
	ssize_t n;
	size_t used;
	int fd = -1, nfd = 0;

	if (w->ctl_fd < 0 || poll(&pfd, 1, 10000) <= 0 ||
	    (buf = malloc(WORKER_CONTROL_MAX)) == NULL)
		return;
	n = wire_recv_fds(w->ctl_fd, buf, WORKER_CONTROL_MAX, &fd, 1, &nfd, 0);
	wire_msg_init(&m);
	if (fd >= 0 && n > 0 && (copy = malloc(b->len)) != NULL) {
		memcpy(copy, b->data, b->len);
		/* the reply carries the ATTACH's request id */
		if (wire_parse(buf, (size_t)n, WORKER_CONTROL_MAX, &m, &used) ==
		    WIRE_OK && (data = wire_msg_find(&m, WIRE_TAG_DATA)) !=
		    NULL && data->len >= WIRE_HEADER_SIZE)
			memcpy(copy + 8, data->data + 8, 8);
		(void)wire_write_all(fd, copy, b->len);
		free(copy);
	}
	wire_msg_free(&m);
	if (fd >= 0)
		close(fd);
	free(buf);
}

void
worker_control_stop(worker *w)
{
	pthread_mutex_lock(&w->ctl_lock);
	if (w->ctl_fd >= 0)
		close(w->ctl_fd);
	w->ctl_fd = -1;
	pthread_mutex_unlock(&w->ctl_lock);
	if (w->ctl_listen_fd >= 0) {
		close(w->ctl_listen_fd);
		w->ctl_listen_fd = -1;
		if (w->opt.control_path != NULL && !w->restarting)
			(void)unlink(w->opt.control_path);
	}
}

int
worker_control_stopping(worker *w)
{
	int stop;

	pthread_mutex_lock(&w->lock);
	stop = w->stop_asked;
	pthread_mutex_unlock(&w->lock);
	return stop;
}

void
worker_control_stop_queue(worker *w)
{
	static const char msg[] = "the server is stopping (SIGTERM): this "
	    "request was waiting for its turn and never ran; the session is "
	    "checkpointed and the server exits (open again to start a new "
	    "one)";

	worker_frame *f;
	wire_buf b;
	wire_msg m;
	size_t used;
	int eof;

	/* the calls with an id (queued: none runs now) end in the journal,
	 * their requesters and joiners told */
	worker_calls_lost(w, msg);
	wire_msg_init(&m);
	while ((f = worker_reader_pop(w, &eof)) != NULL) {
		if (wire_parse(f->data, f->len, w->opt.max_frame, &m, &used) ==
		    WIRE_OK && m.type != WIRE_MSG_RELEASE &&
		    m.type != WIRE_MSG_INTERRUPT &&
		    !(m.type == WIRE_MSG_EXEC && w->journal != NULL &&
		    wire_msg_find(&m, WIRE_TAG_CALL_ID) != NULL)) {
			wire_buf_init(&b);
			wire_begin(&b, WIRE_MSG_ERROR, m.id);
			wire_put_u64(&b, WIRE_TAG_ERRCODE,
			    WIRE_ERR_WORKER_RESTARTED);
			wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
			if (wire_end(&b) == WIRE_OK)
				(void)worker_send_to(w, f->conn, &b);
			wire_buf_free(&b);
		}
		worker_reader_frame_free(w, f);
	}
	wire_msg_free(&m);
}

int
worker_control_hibernating(worker *w)
{
	int hib;

	pthread_mutex_lock(&w->lock);
	hib = w->hibernating;
	pthread_mutex_unlock(&w->lock);
	return hib;
}
