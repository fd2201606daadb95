/*
 * worker-restart.c - the hard interrupt (server mode).  Code stuck in C
 * (sum(itertools.repeat(1, 10**11))) never sees the SIGINT that would
 * raise KeyboardInterrupt.  At INTERRUPT HARD=1, or when a stop has not
 * taken effect within --hard-grace, the reader thread tells the waiting
 * clients what is lost (ERROR WORKER_RESTARTED: the changes since the
 * last checkpoint, the volatile entries), journals the call as lost, and
 * execs /proc/self/exe again with --adopt: the same pid (the supervisor's
 * child stays its child), the client connections and the control channel
 * kept open across the exec, the session resumed from its last
 * checkpoint by the new image (its lock goes with the old image's
 * descriptor).  Its clients get no ATTACHED again: their next request
 * just works.  Bytes a connection had read but not acted on (a request
 * sent right behind the INTERRUPT, half a frame) go over too, and so do
 * the plain requests that waited in the queue behind the lost call (a
 * request must not take the error of a call it only waited for): each
 * connection's in a memfd named beside its descriptor in --adopt
 * ("FD:MEMFD"), its queued requests first; the new image acts on them
 * before it reads on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exec.h"
#include "journal.h"
#include "pyexec.h"

/* How many entries the store could not take yet (WS.unwritten; 0 when
 * there is none).  GIL held. */
static int
worker_restart_unwritten(PyObject *ws)
{
	PyObject *u = PyObject_GetAttrString(ws, "unwritten");
	Py_ssize_t n = 0;

	if (u != NULL && u != Py_None)
		n = PyObject_Length(u);
	Py_XDECREF(u);
	PyErr_Clear();
	return n > 0 ? (int)n : 0;
}

/* Main thread, GIL held, after a checkpoint: what a restart now would
 * lose, as a sentence for WORKER_RESTARTED (and how many entries live
 * only in memory, for flag 'r'). */
void
worker_restart_note(worker *w)
{
	char when[32], names[640];
	PyObject *ws = NULL, *vol = NULL, *keys = NULL;
	time_t t = time(NULL);
	struct tm tm;
	size_t len = 0;
	Py_ssize_t i, n;
	int mem = 0;

	if (!w->opt.server)
		return;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof when, "%H:%M:%S UTC", &tm) == 0)
		snprintf(when, sizeof when, "?");
	names[0] = '\0';
	if ((ws = PyObject_GetAttrString(pymodule_backend, "WS")) != NULL &&
	    (vol = PyObject_GetAttrString(ws, "volatile")) != NULL &&
	    (keys = PySequence_List(vol)) != NULL) {
		n = PyList_GET_SIZE(keys);
		mem = (int)n + worker_restart_unwritten(ws);
		for (i = 0; i < n && len < sizeof names - 64; i++) {
			PyObject *k = PyList_GET_ITEM(keys, i), *name;
			const char *s = NULL;
			if (!PyTuple_Check(k) || PyTuple_GET_SIZE(k) != 2)
				continue;
			name = PyTuple_GET_ITEM(k, 1);
			if (PyUnicode_Check(name))
				s = PyUnicode_AsUTF8(name);
			if (s != NULL)
				len += (size_t)snprintf(names + len,
				    sizeof names - len, "%s%s", len ? ", " : "",
				    s);
			else if (PyLong_Check(name))
				len += (size_t)snprintf(names + len,
				    sizeof names - len, "%shandle %lld",
				    len ? ", " : "", PyLong_AsLongLong(name));
			PyErr_Clear();
		}
		if (i < n && len < sizeof names - 8)
			snprintf(names + len, sizeof names - len, ", ...");
	}
	PyErr_Clear();
	Py_XDECREF(keys);
	Py_XDECREF(vol);
	Py_XDECREF(ws);
	pthread_mutex_lock(&w->lock);
	snprintf(w->lost_text, sizeof w->lost_text, "changes since the last "
	    "checkpoint at %s%s%s", when, names[0] ? "; volatile entries: " :
	    "; no volatile entries", names);
	w->mem_only = mem;
	pthread_mutex_unlock(&w->lock);
}

/* Whether m is an EXEC that the call journal answers (it carries a call
 * id): worker_calls_lost told it already. */
static int
worker_restart_journaled(const worker *w, const wire_msg *m)
{
	return m->type == WIRE_MSG_EXEC && w->journal != NULL &&
	    wire_msg_find(m, WIRE_TAG_CALL_ID) != NULL;
}

/* Whether a queued frame goes over to the new image, to be served there
 * as if it came after the restart: a plain request (not a LONG's frame,
 * a DETACH, an ATTACH, or an EXEC with a call id, which the journal
 * answered as lost) of an attached connection that the new image keeps,
 * read at a frame's start.  Its client then gets its answer from the new
 * image: a request that only waited behind the lost call does not take
 * that call's error.  w->lock held. */
static int
worker_restart_keeps_locked(worker *w, const worker_frame *f,
    const wire_msg *m)
{
	return f->kind == WORKER_FRAME_WIRE && f->conn->attached &&
	    !f->conn->gone && f->conn->lng.state == WORKER_LONG_NONE &&
	    m->type != WIRE_MSG_ATTACH && m->type != WIRE_MSG_LONG &&
	    m->type != WIRE_MSG_PART && m->type != WIRE_MSG_INTERRUPT &&
	    !worker_restart_journaled(w, m);
}

/* The queue at a restart (the new image does not see it): the requests
 * it keeps (worker_restart_keeps_locked) are returned, in order, for
 * their connections' carried bytes, unless the server is stopping (the
 * new image then serves nothing); every other one is told that it will
 * not be served, and each connection still waiting for its ATTACHED to
 * come again.  Calls got theirs from worker_calls_lost. */
static worker_frame *
worker_restart_drop_queue(worker *w, const char *msg, int stopping)
{
	worker_frame *f, *next, *kept = NULL, **tail = &kept;
	wire_buf b;
	wire_msg m;
	size_t used;
	int keep;

	pthread_mutex_lock(&w->lock);
	f = w->qhead;
	w->qhead = w->qtail = NULL;
	pthread_mutex_unlock(&w->lock);
	wire_msg_init(&m);
	for (; f != NULL; f = next) {
		next = f->next;
		if (wire_parse(f->data, f->len, w->opt.max_frame, &m, &used) !=
		    WIRE_OK)
			continue;  /* the new image would refuse it too */
		pthread_mutex_lock(&w->lock);
		keep = !stopping && worker_restart_keeps_locked(w, f, &m);
		pthread_mutex_unlock(&w->lock);
		if (keep) {
			f->next = NULL;
			*tail = f;
			tail = &f->next;
			continue;
		}
		if (m.type != WIRE_MSG_RELEASE &&
		    m.type != WIRE_MSG_INTERRUPT &&
		    !worker_restart_journaled(w, &m)) {
			wire_buf_init(&b);
			wire_begin(&b, WIRE_MSG_ERROR, m.id);
			wire_put_u64(&b, WIRE_TAG_ERRCODE,
			    WIRE_ERR_WORKER_RESTARTED);
			wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
			if (wire_end(&b) == WIRE_OK)
				(void)worker_send_to(w, f->conn, &b);
			wire_buf_free(&b);
		}
		if (m.type == WIRE_MSG_ATTACH) {
			/* not attached: it reconnects */
			pthread_mutex_lock(&w->lock);
			worker_conn_drop_locked(w, f->conn);
			pthread_mutex_unlock(&w->lock);
		}
		/* not freed: the process is about to be replaced */
	}
	wire_msg_free(&m);
	return kept;
}

/* Is arg the option name (--name or --name=...)?  2: it takes the next
 * argument too; 1: the value is in it; 0: not it. */
static int
worker_restart_opt(const char *arg, const char *name)
{
	size_t n = strlen(name);

	if (strncmp(arg, name, n) != 0)
		return 0;
	if (arg[n] == '\0')
		return 2;
	return arg[n] == '=' ? 1 : 0;
}

/* Write n bytes of p to fd; 0, or -1. */
static int
worker_restart_write(int fd, const uint8_t *p, size_t n)
{
	size_t off = 0;
	ssize_t k;

	while (off < n) {
		if ((k = write(fd, p + off, n - off)) < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		off += (size_t)k;
	}
	return 0;
}

/* A memfd (kept across exec) holding c's kept queued frames (of kept, in
 * their order), then n bytes of p, or -1 when there is nothing to carry
 * or it failed (the bytes are then lost: the client's requests get no
 * answer, as before). */
static int
worker_restart_carry(const worker_frame *kept, const worker_conn *c,
    const uint8_t *p, size_t n)
{
	const worker_frame *f;
	int fd, any = n > 0;

	for (f = kept; f != NULL && !any; f = f->next)
		any = f->conn == c;
	if (!any || (fd = memfd_create("pyshelf-carried", 0)) < 0)
		return -1;
	for (f = kept; f != NULL; f = f->next)
		if (f->conn == c && worker_restart_write(fd, f->data,
		    f->len) != 0)
			goto fail;
	if (worker_restart_write(fd, p, n) != 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

/* Read the carried bytes of memfd mfd into c's buffer, and close it. */
static int
worker_restart_take(worker_conn *c, int mfd)
{
	struct stat st;
	ssize_t k;
	size_t off = 0, n;

	if (fstat(mfd, &st) != 0 || st.st_size < 0) {
		close(mfd);
		return -1;
	}
	n = (size_t)st.st_size;
	if (n > 0 && (c->buf = malloc(n < 65536 ? 65536 : n)) == NULL) {
		close(mfd);
		return -1;
	}
	c->cap = n > 0 ? (n < 65536 ? 65536 : n) : 0;
	while (off < n) {
		k = pread(mfd, c->buf + off, n - off, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	c->len = off;
	close(mfd);
	return off == n ? 0 : -1;
}

void
worker_restart_exec(worker *w, const char *why)
{
	char msg[1400], adopt[4096], lost[1024];
	char **argv;
	size_t len = 0;
	worker_frame *kept;
	worker_conn *c;
	int i, k, n, skip, ctl, stopping;

	pthread_mutex_lock(&w->lock);
	if (w->restarting) {
		pthread_mutex_unlock(&w->lock);
		return;
	}
	w->restarting = 1;
	snprintf(lost, sizeof lost, "%s", w->lost_text[0] ? w->lost_text :
	    "changes since the last checkpoint");
	stopping = w->stop_asked;
	pthread_mutex_unlock(&w->lock);
	if (stopping)
		snprintf(msg, sizeof msg, "the server is stopping (SIGTERM), "
		    "and this call did not stop within --hard-grace: it was "
		    "ended as a hard interrupt ends it, and the session is kept "
		    "as of its last checkpoint; lost: %s", lost);
	else
		snprintf(msg, sizeof msg, "the worker was restarted (%s) and "
		    "resumed the session from its last checkpoint; lost: %s",
		    why, lost);
	worker_log(w, "pyshelfd: restarting: %s\n", why);
	worker_calls_lost(w, msg);
	kept = worker_restart_drop_queue(w, msg, stopping);
	if (w->journal != NULL) {
		char *cause = NULL;
		if (journal_persist(w->journal, &cause) != 0) {
			worker_log(w, "pyshelfd: persisting the calls before "
			    "the restart: %s\n", cause != NULL ? cause : "?");
			free(cause);
		}
	}
	/* the descriptors to keep: the control channel first (-1: none),
	 * then every client connection */
	pthread_mutex_lock(&w->ctl_lock);
	ctl = w->ctl_fd;
	pthread_mutex_unlock(&w->ctl_lock);
	len = (size_t)snprintf(adopt, sizeof adopt, "%d", ctl);
	if (ctl >= 0)
		(void)fcntl(ctl, F_SETFD, 0);
	pthread_mutex_lock(&w->lock);
	for (c = w->conns; c != NULL && len < sizeof adopt - 32; c = c->next) {
		int mfd;
		/* one in the middle of a PART's data (read straight into
		 * a buffer, not into c->buf) cannot be carried: it ends,
		 * and its client connects again */
		if (!c->attached || worker_long_midpart_locked(c))
			continue;
		len += (size_t)snprintf(adopt + len, sizeof adopt - len, ",%d",
		    c->fd);
		(void)fcntl(c->fd, F_SETFD, 0);
		if (c->out_fd != c->fd) {
			/* on pipes (PIPES): FD/OUT_FD; the socket they
			 * replaced closes with the exec */
			len += (size_t)snprintf(adopt + len, sizeof adopt -
			    len, "/%d", c->out_fd);
			(void)fcntl(c->out_fd, F_SETFD, 0);
		}
		if ((mfd = worker_restart_carry(kept, c, c->buf + c->cur,
		    c->len - c->cur)) >= 0)
			len += (size_t)snprintf(adopt + len, sizeof adopt - len,
			    ":%d", mfd);
	}
	pthread_mutex_unlock(&w->lock);
	/* the command line again, without the descriptors of the first
	 * exec, and never --new (that would empty the session) */
	n = w->opt.argc;
	if ((argv = calloc((size_t)n + 4, sizeof *argv)) == NULL)
		goto fail;
	for (i = 0, k = 0; i < n; i++) {
		const char *a = w->opt.argv[i];
		if (strcmp(a, "--stopping") == 0)
			continue;
		if ((skip = worker_restart_opt(a, "--adopt")) != 0 ||
		    (skip = worker_restart_opt(a, "--control-fd")) != 0) {
			if (skip == 2)
				i++;
			continue;
		}
		if (strcmp(a, "--new") == 0)
			a = "--create";
		argv[k++] = (char *)a;
	}
	argv[k++] = "--adopt";
	argv[k++] = adopt;
	/* the new image keeps the stop: it opens the session (its last
	 * checkpoint), and exits */
	if (stopping)
		argv[k++] = "--stopping";
	argv[k] = NULL;
	/* fds 1 and 2 are the output pipes, whose reader the exec closes */
	if (w->log_fd >= 0) {
		(void)dup2(w->log_fd, 1);
		(void)dup2(w->log_fd, 2);
	}
	{
		/* this is the reader thread, which blocks SIGINT and SIGTERM:
		 * the new image must not inherit that */
		sigset_t none;
		sigemptyset(&none);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
	}
	execv("/proc/self/exe", argv);
	worker_log(w, "pyshelfd: restarting: exec: %s\n", strerror(errno));
	free(argv);
fail:
	pthread_mutex_lock(&w->lock);
	w->restarting = 0;
	pthread_mutex_unlock(&w->lock);
}

int
worker_restart_adopt(worker *w, char **cause)
{
	const char *p = w->opt.adopt;
	worker_conn *c;
	char *end;
	long fd, ofd, mfd;
	int first = 1;

	if (p == NULL)
		return 0;
	while (*p != '\0') {
		errno = 0;
		fd = strtol(p, &end, 10);
		ofd = fd;
		mfd = -1;
		if (errno == 0 && end != p && *end == '/' && !first) {
			/* FD/OUT_FD: a connection on pipes */
			const char *q = end + 1;
			ofd = strtol(q, &end, 10);
			if (errno != 0 || end == q || ofd < 0 ||
			    ofd > 1 << 20 || fcntl((int)ofd, F_GETFD) < 0)
				end = (char *)p;  /* refused below */
		}
		if (errno == 0 && end != p && *end == ':' && !first) {
			/* FD:MEMFD: the bytes it had read, carried over */
			const char *q = end + 1;
			mfd = strtol(q, &end, 10);
			if (errno != 0 || end == q || mfd < 0 ||
			    mfd > 1 << 20 || fcntl((int)mfd, F_GETFD) < 0)
				end = (char *)p;  /* refused below */
		}
		if (errno != 0 || end == p || (*end != ',' && *end != '\0') ||
		    fd < -1 || fd > 1 << 20 ||
		    (fd >= 0 && fcntl((int)fd, F_GETFD) < 0)) {
			asprintf(cause, "--adopt %s: not a list of open "
			    "descriptors", w->opt.adopt);
			return -1;
		}
		if (fd >= 0)
			(void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
		if (ofd != fd)
			(void)fcntl((int)ofd, F_SETFD, FD_CLOEXEC);
		if (first)
			w->ctl_fd = (int)fd;
		else if (fd >= 0) {
			if ((c = worker_conn_add(w, (int)fd, (int)ofd, 1)) ==
			    NULL) {
				asprintf(cause, "out of memory");
				return -1;
			}
			c->max = w->opt.max_frame;
			c->attached = 1;  /* ATTACHED went out before */
			w->attaches++;
			if (mfd >= 0 && worker_restart_take(c, (int)mfd) != 0)
				worker_log(w, "pyshelfd: --adopt: the bytes "
				    "carried over for fd %ld could not be read; "
				    "a request is lost\n", fd);
		}
		first = 0;
		p = *end == ',' ? end + 1 : end;
	}
	return 0;
}
