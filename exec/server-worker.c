/*
 * server-worker.c - the supervisor's side of its workers: one
 * `pyshelfd --worker` per live session, started with fork + exec of our
 * own binary, a SOCK_SEQPACKET control channel to each (CTL_CONN hands a
 * client over with SCM_RIGHTS; CTL_READY, CTL_STATE and CTL_IDLE come
 * back), reaping (how a worker ended is told to the next client of its
 * session), and adoption: a supervisor started after one that died
 * connects to the control sockets the live workers listen on.
 *
 * A client whose worker is starting waits (SERVER_CLIENT_WAIT) until
 * CTL_READY; the first one, whose ATTACH the worker answers itself, is
 * handed over at once, and our copy of its fd is kept until READY so
 * that a worker dying first can still be reported to it.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server.h"

static server_session *server_worker_find(server *, const char *);
static int server_worker_start(server *, server_session *,
    server_client *);
static int server_worker_send(server *, server_session *, server_client *);
static void server_worker_flush(server *, server_session *);
static void server_worker_ended(server *, server_session *, int, int);
static void server_worker_msg(server *, server_session *, wire_msg *);
static void server_worker_ready(server *, server_session *, wire_msg *);
static void server_worker_exec(server *, server_session *, int,
    const char *, int);

/* The session of that name (ignoring adopted ones not yet named). */
static server_session *
server_worker_find(server *s, const char *name)
{
	server_session *ss;

	for (ss = s->sessions; ss != NULL; ss = ss->next)
		if (ss->name != NULL && strcmp(ss->name, name) == 0)
			return ss;
	return NULL;
}

/* Number of workers alive (or not yet reaped). */
int
server_worker_count(const server *s)
{
	const server_session *ss;
	int n = 0;

	for (ss = s->sessions; ss != NULL; ss = ss->next)
		if (ss->pid > 0 || ss->ctl >= 0)
			n++;
	return n;
}

/*
 * Route a client whose ATTACH is read: to its session's worker when one
 * is ready, else it waits for the worker, which is started now when none
 * runs (this client first).
 */
void
server_worker_route(server *s, server_client *c)
{
	server_session *ss;

	if (s->stopping) {
		server_stopping_error(s, c);
		return;
	}
	if ((ss = server_worker_find(s, c->session)) == NULL) {
		if ((ss = calloc(1, sizeof *ss)) == NULL ||
		    (ss->name = strdup(c->session)) == NULL) {
			free(ss);
			server_client_error(c, WIRE_ERR_INTERNAL, "out of "
			    "memory");
			return;
		}
		ss->ctl = -1;
		ss->next = s->sessions;
		s->sessions = ss;
	}
	if (c->mode == 'r' && (ss->pid == 0 && ss->ctl < 0)) {
		/* MODE r starts no worker: none holds the session here, so a
		 * read-only backend may open it */
		server_client_error(c, WIRE_ERR_NO_SESSION, "no worker of this "
		    "server serves session '%s'", c->session);
		return;
	}
	c->sess = ss;
	if (ss->pid == 0 && ss->ctl < 0) {
		(void)server_worker_start(s, ss, c);
		return;
	}
	server_worker_flush(s, ss);
}

/*
 * In the child: the worker's command line, then exec.  The control end
 * loses CLOEXEC; the signal mask the supervisor blocks for its signalfd
 * is cleared (exec keeps it).
 */
static void
server_worker_exec(server *s, server_session *ss, int fd, const char *path,
    int mode)
{
	char *argv[80], fdbuf[16], since[32];
	sigset_t none;
	int n = 0, i, nul;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if ((nul = open("/dev/null", O_RDONLY)) >= 0 && nul != 0) {
		dup2(nul, 0);
		close(nul);
	}
	if (fcntl(fd, F_SETFD, 0) != 0)
		_exit(127);
	snprintf(fdbuf, sizeof fdbuf, "%d", fd);
	argv[n++] = (char *)s->argv0;
	argv[n++] = "--worker";
	/* the default store without --db: the worker then makes its missing
	 * parents (~/.local/share), as a stdio pyshelfd does; a --db naming
	 * it would be refused on a fresh account (the quick start) */
	if (s->opt.db != NULL) {
		argv[n++] = "--db";
		argv[n++] = s->db;
	}
	argv[n++] = "--session";
	argv[n++] = ss->name;
	argv[n++] = "--control-fd";
	argv[n++] = fdbuf;
	argv[n++] = "--control";
	argv[n++] = (char *)path;
	snprintf(since, sizeof since, "%llu",
	    (unsigned long long)s->start_wall_ms);
	argv[n++] = "--since";
	argv[n++] = since;
	if (mode == 'c')
		argv[n++] = "--create";
	else if (mode == 'n')
		argv[n++] = "--new";
	for (i = 0; i < s->opt.wargc; i++)
		argv[n++] = s->opt.wargv[i];
	argv[n] = NULL;
	execv("/proc/self/exe", argv);
	fprintf(stderr, "pyshelfd: exec of the worker: %s\n", strerror(errno));
	_exit(127);
}

/*
 * Start the worker of ss for client c (fork + exec), and hand c over at
 * once (the worker answers its ATTACH).  -1 when it could not start; c
 * got the ERROR.
 */
static int
server_worker_start(server *s, server_session *ss, server_client *c)
{
	char path[4096], hex[33];
	uint8_t rnd[16];
	int sv[2], i;
	pid_t pid;

	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		server_client_error(c, WIRE_ERR_INTERNAL, "getrandom: %s",
		    strerror(errno));
		return -1;
	}
	for (i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
	snprintf(path, sizeof path, "%s/%s", s->wdir, hex);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		server_client_error(c, WIRE_ERR_INTERNAL, "socketpair: %s",
		    strerror(errno));
		return -1;
	}
	if ((pid = fork()) < 0) {
		server_client_error(c, WIRE_ERR_INTERNAL, "fork: %s",
		    strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0)
		server_worker_exec(s, ss, sv[1], path, c->mode);
	close(sv[1]);
	(void)fcntl(sv[0], F_SETFL, O_NONBLOCK);
	ss->ctl = sv[0];
	ss->pid = pid;
	ss->child = 1;
	ss->ready = ss->idle_ok = ss->clients = ss->running = 0;
	ss->first = c;
	server_log("started worker pid %ld for session '%s' (client pid %ld)",
	    (long)pid, ss->name, (long)c->pid);
	if (server_worker_send(s, ss, c) < 0)
		server_log("worker pid %ld: CTL_CONN: %s", (long)pid,
		    strerror(errno));
	return 0;
}

/*
 * CTL_CONN{DATA = the ATTACH frame, PID, [SIGNAL, MESSAGE]} with c's fd;
 * how the session's last worker died goes to the first client since.
 * 0: sent (c is freed, unless it is the first client, kept until READY);
 * 1: the channel is full (try at POLLOUT); -1: the channel is broken.
 */
static int
server_worker_send(server *s, server_session *ss, server_client *c)
{
	wire_buf b;
	ssize_t n;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_CONN, 0);
	wire_put_bytes(&b, WIRE_TAG_DATA, c->buf, c->len);
	wire_put_u64(&b, WIRE_TAG_PID, (uint64_t)c->pid);
	if (ss->died_signal != 0)
		wire_put_u64(&b, WIRE_TAG_SIGNAL, (uint64_t)ss->died_signal);
	if (ss->died_msg != NULL)
		wire_put_str(&b, WIRE_TAG_MESSAGE, ss->died_msg);
	if (wire_end(&b) != WIRE_OK) {
		wire_buf_free(&b);
		errno = ENOMEM;
		return -1;
	}
	do
		n = wire_send_fds(ss->ctl, b.data, b.len, &c->fd, 1,
		    MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	wire_buf_free(&b);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
	/* told once: to the first client attaching since the death */
	free(ss->died_msg);
	ss->died_msg = NULL;
	ss->died_signal = 0;
	if (c != ss->first)
		server_client_free(s, c);
	return 0;
}

/* Hand over the clients waiting for ss, in arrival order, while its
 * worker is ready and takes connections. */
static void
server_worker_flush(server *s, server_session *ss)
{
	server_client *c, *next;
	int rc;

	if (ss->ctl < 0 || !ss->ready || ss->idle_ok)
		return;
	for (c = s->clients; c != NULL; c = next) {
		next = c->next;
		if (c->sess != ss || c->state != SERVER_CLIENT_WAIT ||
		    c == ss->first)
			continue;
		if ((rc = server_worker_send(s, ss, c)) == 1) {
			ss->want_out = 1;
			return;
		}
		if (rc < 0) {
			server_log("worker pid %ld: CTL_CONN: %s",
			    (long)ss->pid, strerror(errno));
			return;
		}
	}
}

/* Read the control channel: frames, or its end. */
void
server_worker_ctl_io(server *s, server_session *ss, short revents)
{
	uint8_t buf[SERVER_CTL_MAX];
	wire_msg m;
	size_t used;
	ssize_t n;

	if ((revents & POLLOUT) && ss->stop == 1)
		server_worker_stop_all(s);  /* sends to those still waiting */
	if ((revents & POLLOUT) && ss->want_out) {
		ss->want_out = 0;
		server_worker_flush(s, ss);
	}
	if (!(revents & (POLLIN | POLLHUP | POLLERR)))
		return;
	wire_msg_init(&m);
	while (ss->ctl >= 0) {
		n = recv(ss->ctl, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			close(ss->ctl);
			ss->ctl = -1;
			ss->want_out = 0;
			/* a child is done when reaped; an adopted worker's
			 * end is all we ever learn */
			if (!ss->child || ss->pid == 0)
				server_worker_ended(s, ss, 0, 0);
			break;
		}
		if ((size_t)n > sizeof buf ||
		    wire_parse(buf, (size_t)n, SERVER_CTL_MAX, &m, &used) !=
		    WIRE_OK || used != (size_t)n) {
			server_log("worker pid %ld: a bad control message "
			    "(%zd bytes) ignored", (long)ss->pid, n);
			continue;
		}
		server_worker_msg(s, ss, &m);
	}
	wire_msg_free(&m);
}

/* CTL_READY: who the worker is (again on every new control channel). */
static void
server_worker_ready(server *s, server_session *ss, wire_msg *m)
{
	const wire_field *id = wire_msg_find(m, WIRE_TAG_SESSION_ID);
	const wire_field *nm = wire_msg_find(m, WIRE_TAG_SESSION);
	server_session *old;
	char *name;

	if (id != NULL && id->len == sizeof ss->id)
		memcpy(ss->id, id->data, sizeof ss->id);
	if (ss->pid == 0)
		ss->pid = (pid_t)wire_msg_u64(m, WIRE_TAG_PID, 0);
	if (ss->name == NULL && nm != NULL &&
	    (name = wire_field_strdup(nm)) != NULL) {
		/* adopted: a record of the same name (an earlier worker's
		 * end) gives its clients and its record to this one */
		if ((old = server_worker_find(s, name)) != NULL &&
		    old->pid == 0 && old->ctl < 0) {
			ss->died_signal = old->died_signal;
			ss->died_msg = old->died_msg;
			old->died_msg = NULL;
			free(old->name);
			old->name = NULL;  /* collected by server_worker_gc */
		}
		ss->name = name;
		server_log("adopted worker pid %ld of session '%s'",
		    (long)ss->pid, ss->name);
	}
	ss->ready = 1;
	server_admin_ready(s, ss);
	if (ss->first != NULL)
		server_client_free(s, ss->first);  /* the worker has it */
	server_worker_flush(s, ss);
}

/*
 * A CTL_STATE that answers a CTL_QUERY ({"clients": n, "running":
 * "<hex>"|null, "threads": n, "query": q}): kept apart from the routing state (the
 * regular CTL_STATEs), and handed to the SESSIONS waiting for it
 * (server-admin.c).  0 when json is a regular CTL_STATE.
 */
static int
server_worker_query_answer(server *s, server_session *ss, const char *json)
{
	const char *p, *q;

	if ((q = strstr(json, "\"query\"")) == NULL ||
	    (q = strchr(q, ':')) == NULL)
		return 0;
	ss->q_clients = (p = strstr(json, "\"clients\"")) != NULL &&
	    (p = strchr(p, ':')) != NULL ? atoi(p + 1) : 0;
	ss->q_threads = (p = strstr(json, "\"threads\"")) != NULL &&
	    (p = strchr(p, ':')) != NULL ? atoi(p + 1) : 0;
	ss->q_running[0] = '\0';
	if ((p = strstr(json, "\"running\"")) != NULL &&
	    (p = strchr(p, ':')) != NULL) {
		p += 1 + strspn(p + 1, " ");
		if (*p == '"' && strspn(p + 1, "0123456789abcdef") == 32 &&
		    p[33] == '"')
			snprintf(ss->q_running, sizeof ss->q_running, "%.32s",
			    p + 1);
	}
	ss->q_seq = strtoull(q + 1, NULL, 10);
	server_admin_answered(s);
	return 1;
}

/* One control message from a worker. */
static void
server_worker_msg(server *s, server_session *ss, wire_msg *m)
{
	const wire_field *f;
	const char *p;
	char json[256];

	switch (m->type) {
	case WIRE_MSG_CTL_READY:
		server_worker_ready(s, ss, m);
		/* the worker opened the store: one it just made gets the
		 * record of its server now */
		(void)server_listen_record(s, NULL);
		break;
	case WIRE_MSG_CTL_STATE:
		/* {"clients": n, "running": "<hex>"|null} */
		if ((f = wire_msg_find(m, WIRE_TAG_DATA)) == NULL)
			break;
		snprintf(json, sizeof json, "%.*s", (int)(f->len < 255 ?
		    f->len : 255), (const char *)f->data);
		if (server_worker_query_answer(s, ss, json))
			break;
		if ((p = strstr(json, "\"clients\"")) != NULL &&
		    (p = strchr(p, ':')) != NULL)
			ss->clients = atoi(p + 1);
		ss->running = (p = strstr(json, "\"running\"")) != NULL &&
		    (p = strchr(p, ':')) != NULL &&
		    strncmp(p + 1 + strspn(p + 1, " "), "null", 4) != 0;
		if (ss->idle_ok && (ss->clients > 0 || ss->running)) {
			/* it did not go after all: route to it again */
			ss->idle_ok = 0;
			server_worker_flush(s, ss);
		}
		break;
	case WIRE_MSG_CTL_IDLE:
		/* always yes: a worker that got a CTL_CONN after asking
		 * ignores the yes and serves on (its CTL_STATE, or a second
		 * CTL_IDLE, tells us which); until then its attaches wait */
		{
			wire_buf b;

			wire_buf_init(&b);
			wire_begin(&b, WIRE_MSG_CTL_IDLE_OK, 0);
			if (wire_end(&b) == WIRE_OK &&
			    send(ss->ctl, b.data, b.len, MSG_NOSIGNAL |
			    MSG_DONTWAIT) == (ssize_t)b.len)
				ss->idle_ok = 1;
			wire_buf_free(&b);
		}
		break;
	case WIRE_MSG_CTL_ENDED:
		server_sweep_soon(s);
		break;
	default:
		server_log("worker pid %ld: control message 0x%04x ignored",
		    (long)ss->pid, m->type);
	}
}

/*
 * The worker of ss ended: known says whether st is its wait status (a
 * child) or nothing is known (an adopted worker's channel closed).  The
 * record goes to the session's next CTL_CONNs; waiting clients get a new
 * worker, or (when it died before READY other than by refusing its
 * session) an ERROR with the cause.
 */
static void
server_worker_ended(server *s, server_session *ss, int known, int st)
{
	char how[256];
	server_client *c, *next, *first = ss->first;
	int was_ready = ss->ready, refused, sig = 0, clean;
	pid_t pid = ss->pid;

	clean = ss->idle_ok || s->stopping;
	if (known && WIFSIGNALED(st)) {
		sig = WTERMSIG(st);
		snprintf(how, sizeof how, "killed by signal %d (SIG%s)", sig,
		    sigabbrev_np(sig) != NULL ? sigabbrev_np(sig) : "?");
		clean = 0;
	} else if (known && WIFEXITED(st)) {
		snprintf(how, sizeof how, "exited with status %d%s",
		    WEXITSTATUS(st), WEXITSTATUS(st) == WORKER_FDS_EXIT ?
		    " (it found descriptors of its own closed or replaced by "
		    "the code it ran, and exited before touching the files "
		    "in their place)" : "");
		clean = WEXITSTATUS(st) == 0;
	} else {
		snprintf(how, sizeof how, "ended; how is not known (it was "
		    "started by an earlier server)");
	}
	server_log("worker pid %ld of session '%s' %s", (long)pid,
	    ss->name != NULL ? ss->name : "?", how);
	if (ss->ctl >= 0)
		close(ss->ctl);
	ss->ctl = -1;
	ss->pid = 0;
	ss->child = ss->ready = ss->idle_ok = ss->want_out = 0;
	ss->clients = ss->running = 0;
	ss->first = NULL;
	/* exit status 1 before READY: it refused the session and told the
	 * first client why; the others may fare better (another mode) */
	refused = !was_ready && known && WIFEXITED(st) && WEXITSTATUS(st) == 1;
	free(ss->died_msg);
	ss->died_msg = NULL;
	ss->died_signal = 0;
	/* a refusal lost nothing of the session: not a death to report to
	 * its next client */
	if (!clean && !refused) {
		ss->died_signal = sig;
		if (asprintf(&ss->died_msg, "the session's previous worker "
		    "(pid %ld) %s", (long)pid, how) < 0)
			ss->died_msg = NULL;
	}
	if (ss->name == NULL)
		return;
	if (first != NULL) {
		first->sess = NULL;
		if (refused) {
			server_client_free(s, first);
		} else {
			first->signal = sig;
			server_client_error(first, WIRE_ERR_WORKER_DIED, "the "
			    "worker for session '%s' (pid %ld) %s before it "
			    "was ready (see %s)", ss->name, (long)pid, how,
			    s->opt.foreground ? "the server's stderr" :
			    s->log_path);
		}
	}
	for (c = s->clients; c != NULL; c = next) {
		next = c->next;
		if (c->sess != ss || c->state != SERVER_CLIENT_WAIT)
			continue;
		if (!s->stopping && (was_ready || refused || clean)) {
			(void)server_worker_start(s, ss, c);
			return;  /* the others wait for its READY */
		}
		c->sess = NULL;
		c->signal = sig;
		if (s->stopping)
			server_stopping_error(s, c);
		else
			server_client_error(c, WIRE_ERR_WORKER_DIED, "the "
			    "worker for session '%s' (pid %ld) %s before it "
			    "was ready", ss->name, (long)pid, how);
	}
}

/* SIGCHLD: reap every child that ended (workers, and orphans that came
 * to us as the child subreaper). */
void
server_worker_reap(server *s)
{
	server_session *ss;
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (server_sweep_reaped(s, pid, st))
			continue;
		for (ss = s->sessions; ss != NULL; ss = ss->next)
			if (ss->child && ss->pid == pid)
				break;
		if (ss == NULL)
			continue;
		/* what it sent before it died first: a CTL_READY not yet
		 * read means its first client was served, not left */
		if (ss->ctl >= 0)
			server_worker_ctl_io(s, ss, POLLIN);
		server_worker_ended(s, ss, 1, st);
	}
}

/* Free sessions with no worker, no client waiting and nothing to tell. */
void
server_worker_gc(server *s)
{
	server_session **pp = &s->sessions, *ss;
	server_client *c;

	while ((ss = *pp) != NULL) {
		for (c = s->clients; c != NULL; c = c->next)
			if (c->sess == ss)
				break;
		if (c != NULL || ss->pid > 0 || ss->ctl >= 0 ||
		    (ss->name != NULL && ss->died_msg != NULL)) {
			pp = &ss->next;
			continue;
		}
		*pp = ss->next;
		free(ss->name);
		free(ss->died_msg);
		free(ss);
	}
}

/*
 * Ask every worker to stop: CTL_STOP on its control channel (it stops
 * its running call, as a hard interrupt after --hard-grace, then
 * checkpoints and exits); the loop waits until all are gone.  Never a
 * SIGTERM while the channel works: shipped code may ignore it (SIG_IGN,
 * a library's own handler) or leave it fatal (SIG_DFL: no checkpoint).
 * A worker without a channel (an adopted one not yet ready) gets the
 * SIGTERM, as before.
 */
void
server_worker_stop_all(server *s)
{
	server_session *ss;
	wire_buf b;
	ssize_t n;

	wire_buf_init(&b);
	wire_begin(&b, WIRE_MSG_CTL_STOP, 0);
	if (wire_end(&b) != WIRE_OK)
		b.len = 0;
	for (ss = s->sessions; ss != NULL; ss = ss->next) {
		if (ss->stop == 2)
			continue;
		ss->stop = 2;
		n = -1;
		if (ss->ctl >= 0 && b.len > 0)
			do
				n = send(ss->ctl, b.data, b.len, MSG_NOSIGNAL |
				    MSG_DONTWAIT);
			while (n < 0 && errno == EINTR);
		if (n == (ssize_t)b.len)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ss->stop = 1;  /* sent at POLLOUT */
			continue;
		}
		if (ss->pid > 0 && kill(ss->pid, SIGTERM) != 0 &&
		    errno == ESRCH && !ss->child && ss->ctl >= 0) {
			close(ss->ctl);
			ss->ctl = -1;
			ss->pid = 0;
		}
	}
	wire_buf_free(&b);
}

/*
 * At start: connect to every control socket in the workers' directory
 * (live workers of a server that died), unlink the dead ones, and take
 * each live one's CTL_READY, waiting up to SERVER_ADOPT_WAIT_MS; one
 * that does not tell who it is by then is let go.
 */
void
server_worker_adopt(server *s)
{
	struct sockaddr_un sa;
	struct pollfd pfd[256];
	server_session *ss, *list[256];
	struct dirent *de;
	struct stat st;
	int64_t end;
	DIR *d;
	int fd, n = 0, i, left;

	if ((d = opendir(s->wdir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL && n < 256) {
		if (de->d_name[0] == '.')
			continue;
		memset(&sa, 0, sizeof sa);
		sa.sun_family = AF_UNIX;
		if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s",
		    s->wdir, de->d_name) >= sizeof sa.sun_path ||
		    lstat(sa.sun_path, &st) != 0 || !S_ISSOCK(st.st_mode))
			continue;
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0)
			break;
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
			server_log("removed the dead control socket %s (%s)",
			    sa.sun_path, strerror(errno));
			(void)unlink(sa.sun_path);
			close(fd);
			continue;
		}
		(void)fcntl(fd, F_SETFL, O_NONBLOCK);
		if ((ss = calloc(1, sizeof *ss)) == NULL) {
			close(fd);
			break;
		}
		ss->ctl = fd;
		ss->next = s->sessions;
		s->sessions = ss;
		list[n++] = ss;
	}
	closedir(d);
	end = server_now_ms() + SERVER_ADOPT_WAIT_MS;
	for (;;) {
		for (i = left = 0; i < n; i++)
			if (list[i]->ctl >= 0 && !list[i]->ready) {
				pfd[left].fd = list[i]->ctl;
				pfd[left++].events = POLLIN;
			}
		if (left == 0 || server_now_ms() >= end)
			break;
		if (poll(pfd, left, (int)(end - server_now_ms())) <= 0)
			continue;
		for (i = 0; i < n; i++)
			if (list[i]->ctl >= 0 && !list[i]->ready)
				server_worker_ctl_io(s, list[i], POLLIN);
	}
	for (i = 0; i < n; i++)
		if (list[i]->ctl >= 0 && !list[i]->ready) {
			server_log("a worker on %s did not say who it is within "
			    "%d ms: not adopted", s->wdir,
			    SERVER_ADOPT_WAIT_MS);
			close(list[i]->ctl);
			list[i]->ctl = -1;
		}
	server_worker_gc(s);
}
