/*
 * server.c - `pyshelfd --server`, the supervisor: its options, its start
 * (paths, the pid file's lock, the daemon, the socket, adopting live
 * workers), the poll loop that serves every connection and control
 * channel without letting one stall another, and its two ways out:
 * SIGTERM (every worker checkpoints and exits first) and exit-empty.
 *
 * It never starts Python nor opens the store: see server.h.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

static int server_warg(server *, const char *, char *);
static int server_options_parse(server *, int, char **);
static int server_usage_fail(const char *, ...)
    __attribute__((format(printf, 1, 2)));
static int server_start(server *);
static void server_signals(server *);
static void server_stop(server *);
static int server_pollfds(server *, struct pollfd **, void ***, size_t *,
    size_t *, size_t *);
static int server_empty(server *, int64_t);
static int server_loop(server *);
static int server_poll_timeout(server *, int64_t);

/* Monotonic milliseconds. */
int64_t
server_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A line in the log (stderr: the log file for a daemon), with the time
 * and our pid. */
void
server_log(const char *fmt, ...)
{
	char msg[1200], when[32];
	struct tm tm;
	time_t t = time(NULL);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	localtime_r(&t, &tm);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s pyshelfd[%ld]: %s\n", when, (long)getpid(), msg);
	fflush(stderr);
}

/* The supervisor's options; the per-worker ones are kept for the
 * workers' command lines. */
static const struct option server_longopts[] = {
	{"server", no_argument, NULL, 's'},
	{"socket", required_argument, NULL, 'S'},
	{"db", required_argument, NULL, 'd'},
	{"foreground", no_argument, NULL, 'f'},
	{"exit-empty", required_argument, NULL, 'e'},
	{"create-db", no_argument, NULL, 'D'},
	{"allow-foreign-store", no_argument, NULL, 'F'},
	{"idle-exit", required_argument, NULL, 'I'},
	{"hard-grace", required_argument, NULL, 'G'},
	{"lease", required_argument, NULL, 'l'},
	{"checkpoint-interval", required_argument, NULL, 'i'},
	{"sync", required_argument, NULL, 'y'},
	{"max-frame", required_argument, NULL, 'm'},
	{"map-max", required_argument, NULL, 'M'},
	{"memory-limit", required_argument, NULL, 'L'},
	{"sweep-interval", required_argument, NULL, 'w'},
	{"sweep-batch", required_argument, NULL, 'b'},
	{"sweep-batch-ms", required_argument, NULL, 't'},
	{"sweep-pause-ms", required_argument, NULL, 'p'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0}
};

/* Refuse the command line (exit status 2). */
static int
server_usage_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "pyshelfd: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: pyshelfd --server [--socket PATH] [--db DIR] "
	    "[--foreground] [options]; see pyshelfd --help\n");
	return 2;
}

/* Parse a number of seconds (finite, >= 0); -1 on garbage. */
static int
server_seconds(const char *arg, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(arg, &end);
	return errno != 0 || end == arg || *end != '\0' ||
	    !(*out >= 0 && *out <= 1e9) ? -1 : 0;
}

/* Keep a per-worker option for the workers' command lines, by its full
 * name (getopt_long takes abbreviations; the worker may not read them
 * the same way).  -1 when there are too many. */
static int
server_warg(server *s, const char *name, char *value)
{
	char *opt;

	if (s->opt.wargc + 2 >= (int)(sizeof s->opt.wargv /
	    sizeof s->opt.wargv[0]) || asprintf(&opt, "--%s", name) < 0)
		return -1;
	s->opt.wargv[s->opt.wargc++] = opt;  /* lives as long as we do */
	if (value != NULL)
		s->opt.wargv[s->opt.wargc++] = value;
	return 0;
}

/* Keep a sweep option (a whole number) for the sweep's command line;
 * -1 when it is not one or there are too many.  The sweep checks its
 * range. */
static int
server_sarg(server *s, const char *name, char *value)
{
	char *opt;

	if (value[0] == '\0' || strspn(value, "0123456789") !=
	    strlen(value) || strlen(value) > 9)
		return -1;
	if (s->opt.sargc + 2 >= (int)(sizeof s->opt.sargv /
	    sizeof s->opt.sargv[0]) || asprintf(&opt, "--%s", name) < 0)
		return -1;
	s->opt.sargv[s->opt.sargc++] = opt;  /* lives as long as we do */
	s->opt.sargv[s->opt.sargc++] = value;
	return 0;
}

/* Read the command line; -1: go on, else the exit status. */
static int
server_options_parse(server *s, int argc, char **argv)
{
	worker_options scratch;
	double d;
	int c, li = -1;

	memset(&scratch, 0, sizeof scratch);
	s->opt.exit_empty = 10;
	s->opt.sweep_interval = 60;
	s->opt.max_frame = WIRE_DEFAULT_MAX_FRAME;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", server_longopts, &li)) !=
	    -1) {
		const char *name = li >= 0 ? server_longopts[li].name : "?";

		switch (c) {
		case 's':
			break;
		case 'S':
			s->opt.socket_path = optarg;
			break;
		case 'd':
			s->opt.db = optarg;
			break;
		case 'f':
			s->opt.foreground = 1;
			break;
		case 'e':
			if (server_seconds(optarg, &s->opt.exit_empty) != 0)
				return server_usage_fail("bad value '%s' for "
				    "--exit-empty (seconds)", optarg);
			break;
		case 'D': case 'F':
			if (c == 'D')
				s->opt.create_db = 1;
			else if (s->opt.sargc + 1 < (int)(sizeof s->opt.sargv /
			    sizeof s->opt.sargv[0]))
				s->opt.sargv[s->opt.sargc++] =
				    "--allow-foreign-store";
			if (server_warg(s, name, NULL) != 0)
				return server_usage_fail("too many options");
			break;
		case 'I': case 'G': case 'l': case 'i': case 'y': case 'm':
		case 'M': case 'L':
			if ((c == 'I' || c == 'G') ?
			    server_seconds(optarg, &d) != 0 :
			    pyshelfd_option_value(c, optarg, &scratch) != 0)
				return server_usage_fail("bad value '%s' for "
				    "--%s (see pyshelfd --help)", optarg, name);
			if (c == 'm')
				s->opt.max_frame = scratch.max_frame;
			if (server_warg(s, name, optarg) != 0)
				return server_usage_fail("too many options");
			break;
		case 'w':
			if (server_seconds(optarg, &s->opt.sweep_interval) != 0)
				return server_usage_fail("bad value '%s' for "
				    "--sweep-interval (seconds)", optarg);
			break;
		case 'b': case 't': case 'p':
			if (server_sarg(s, name, optarg) != 0)
				return server_usage_fail("bad value '%s' for "
				    "--%s (a whole number)", optarg, name);
			break;
		case 'h':
			pyshelfd_usage(stdout);
			return 0;
		default:
			return server_usage_fail("option %s: unknown in "
			    "--server mode or missing its value",
			    argv[optind - 1]);
		}
		li = -1;
	}
	if (optind != argc)
		return server_usage_fail("unexpected argument '%s'",
		    argv[optind]);
	return -1;
}

/* Block the signals the loop takes from a signalfd (SIGPIPE too: a
 * write to a gone peer is EPIPE, never a death); workers get an empty
 * mask back before exec. */
static void
server_signals(server *s)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGPIPE);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sigdelset(&set, SIGPIPE);
	s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

/*
 * A store the workers could not create (its parent is missing and no
 * --create-db) is refused here, as a usage error (exit 2) with the
 * worker's words: a server left running for it would keep its options,
 * and refuse the next client's create_db=True as well.
 */
static int
server_store_parent(server *s)
{
	char *cause;

	if (s->opt.create_db || s->opt.db == NULL ||
	    worker_session_db_parent(s->opt.db, &cause) == 0)
		return 0;
	if (cause == NULL)
		return 0; /* out of memory: the worker says it */
	fprintf(stderr, "pyshelfd: %s\n", cause);
	free(cause);
	return -1;
}

/*
 * Start: paths, the pid file's lock (a second server for the socket ends
 * here, exit 0), the daemon, then the socket and the workers already
 * running.  -1: go on serving; else the exit status.
 */
static int
server_start(server *s)
{
	char *cause = NULL;
	int rc;

	if (server_store_parent(s) != 0)
		return 2;
	if (server_listen_paths(s, &cause) != 0 ||
	    (rc = server_listen_lock(s, &cause)) < 0) {
		fprintf(stderr, "pyshelfd: --server: %s\n", cause != NULL ?
		    cause : strerror(errno));
		free(cause);
		return 1;
	}
	if (rc == 1) {
		fprintf(stderr, "pyshelfd: %s\n", cause);
		free(cause);
		return 0;
	}
	if (!s->opt.foreground && server_listen_daemon(s) != 0)
		return 1;
	server_signals(s);
	if (s->sigfd < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
		server_listen_ready(s, 1, "signalfd/prctl failed");
		return 1;
	}
	if (server_listen_bind(s, &cause) != 0) {
		server_listen_ready(s, 1, cause != NULL ? cause : "bind failed");
		free(cause);
		server_listen_remove(s);
		return 1;
	}
	server_worker_adopt(s);
	s->start_wall_ms = store_now_ms();
	server_sweep_start(s);
	server_log("listening on %s for the store %s (%d worker%s adopted)",
	    s->sock_path, s->db, server_worker_count(s),
	    server_worker_count(s) == 1 ? "" : "s");
	server_listen_ready(s, 0, NULL);
	return -1;
}

/* SIGTERM or SIGINT: refuse what waits, ask every worker to stop
 * (CTL_STOP); the loop ends once all are gone.  The socket still
 * accepts meanwhile, so that a new client is told the server is
 * stopping (server_stopping_error) rather than find a pid file locked
 * by a server that does not accept; it goes at exit. */
static void
server_stop(server *s)
{
	server_client *c, *next;

	if (s->stopping)
		return;
	s->stopping = 1;
	server_log("stopping: %d worker%s to end", server_worker_count(s),
	    server_worker_count(s) == 1 ? "" : "s");
	for (c = s->clients; c != NULL; c = next) {
		next = c->next;
		if (c->state == SERVER_CLIENT_CLOSE || c == (c->sess != NULL ?
		    c->sess->first : NULL))
			continue;
		c->sess = NULL;
		server_stopping_error(s, c);
	}
	server_worker_stop_all(s);
	server_sweep_stop(s);
}

/* The ERROR a client gets while the server stops (an attach, an
 * END_SESSION, a SESSIONS). */
void
server_stopping_error(server *s, server_client *c)
{
	server_client_error(c, WIRE_ERR_INTERNAL, "the server (pid %ld) is "
	    "stopping: its workers are checkpointing their sessions and "
	    "exiting; open again once it has exited (the next open starts a "
	    "new server)", (long)getpid());
	(void)s;
}

/* Milliseconds until the next deadline (a held client's, exit-empty's),
 * -1 for none. */
static int
server_poll_timeout(server *s, int64_t now)
{
	server_client *c;
	int64_t next = -1, t;

	for (c = s->clients; c != NULL; c = c->next)
		if (c->deadline_ms != 0 && (next < 0 || c->deadline_ms < next))
			next = c->deadline_ms;
	if (s->empty_since != 0) {
		t = s->empty_since + (int64_t)(s->opt.exit_empty * 1000);
		if (next < 0 || t < next)
			next = t;
	}
	if ((t = server_sweep_due(s)) != 0 && (next < 0 || t < next))
		next = t;
	if (next < 0)
		return -1;
	return next <= now ? 0 : next - now > 60000 ? 60000 : (int)(next - now);
}

/* Set up the poll set: the signalfd, the listening socket, the held
 * connections (not the waiting ones: nothing is read from them), then
 * the control channels; *obj[i] is what (*pfd)[i] belongs to.  -1 when
 * out of memory. */
static int
server_pollfds(server *s, struct pollfd **pfd, void ***obj, size_t *cap,
    size_t *nout, size_t *nclients)
{
	struct pollfd *np;
	server_client *c;
	server_session *ss;
	void **no;
	size_t n;

	n = 2 + (size_t)server_client_count(s);
	for (ss = s->sessions; ss != NULL; ss = ss->next)
		n++;
	if (n > *cap) {
		np = realloc(*pfd, n * sizeof **pfd);
		if (np != NULL)
			*pfd = np;
		no = realloc(*obj, n * sizeof **obj);
		if (no != NULL)
			*obj = no;
		if (np == NULL || no == NULL) {
			server_log("out of memory");
			return -1;
		}
		*cap = n;
	}
	n = 0;
	(*pfd)[n].fd = s->sigfd;
	(*pfd)[n].events = POLLIN;
	(*obj)[n++] = NULL;
	(*pfd)[n].fd = s->lfd;  /* -1 once closed: poll skips it */
	(*pfd)[n].events = POLLIN;
	(*obj)[n++] = NULL;
	for (c = s->clients; c != NULL; c = c->next) {
		if (c->state == SERVER_CLIENT_WAIT ||
		    c->state == SERVER_CLIENT_ADMIN)
			continue;
		(*pfd)[n].fd = c->fd;
		(*pfd)[n].events = c->outpos < c->outlen ? POLLOUT :
		    c->state == SERVER_CLIENT_CLOSE ? 0 : POLLIN;
		(*obj)[n++] = c;
	}
	*nclients = n;
	for (ss = s->sessions; ss != NULL; ss = ss->next) {
		if (ss->ctl < 0)
			continue;
		(*pfd)[n].fd = ss->ctl;
		(*pfd)[n].events = POLLIN | (ss->want_out || ss->stop == 1 ?
		    POLLOUT : 0);
		(*obj)[n++] = ss;
	}
	*nout = n;
	return 0;
}

/* Exit-empty: true once no worker ran and no client was connected for
 * --exit-empty seconds (never while stopping: that ends otherwise). */
static int
server_empty(server *s, int64_t now)
{
	/* a sweep running does not count: it would keep a server whose
	 * --exit-empty is longer than --sweep-interval forever; it goes on
	 * alone, and the next server's sweep resumes what it leaves */
	if (s->stopping || s->opt.exit_empty <= 0 ||
	    server_worker_count(s) != 0 || server_client_count(s) != 0) {
		s->empty_since = 0;
		return 0;
	}
	if (s->empty_since == 0)
		s->empty_since = now;
	if (now - s->empty_since < (int64_t)(s->opt.exit_empty * 1000))
		return 0;
	server_log("no session and no client for %g s: exiting",
	    s->opt.exit_empty);
	return 1;
}

/* Serve until SIGTERM has ended every worker or exit-empty. */
static int
server_loop(server *s)
{
	struct signalfd_siginfo si;
	struct pollfd *pfd = NULL;
	void **obj = NULL;
	size_t cap = 0, n, i, nclients;
	int64_t now;

	for (;;) {
		now = server_now_ms();
		if (s->stopping && server_worker_count(s) == 0)
			break;
		if (server_empty(s, now))
			break;
		if (server_pollfds(s, &pfd, &obj, &cap, &n, &nclients) != 0)
			break;
		for (i = 0; i < n; i++)
			pfd[i].revents = 0;
		if (poll(pfd, n, server_poll_timeout(s, now)) < 0 &&
		    errno != EINTR) {
			server_log("poll: %s", strerror(errno));
			break;
		}
		/* signals first; then connections; then control channels:
		 * the handlers free only clients that are not polled
		 * (waiting ones), and sessions are freed by the gc at the
		 * end, so the entries taken above stay valid */
		if (pfd[0].revents & POLLIN)
			while (read(s->sigfd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo == SIGCHLD)
					server_worker_reap(s);
				else if (si.ssi_signo != SIGHUP)
					server_stop(s);
			}
		if (s->lfd >= 0 && (pfd[1].revents & POLLIN))
			server_client_accept(s);
		for (i = 2; i < nclients; i++)
			if (pfd[i].revents != 0)
				server_client_io(s, obj[i], pfd[i].revents);
		for (i = nclients; i < n; i++)
			if (pfd[i].revents != 0 &&
			    ((server_session *)obj[i])->ctl == pfd[i].fd)
				server_worker_ctl_io(s, obj[i],
				    pfd[i].revents);
		server_client_timeouts(s, server_now_ms());
		server_sweep_tick(s, server_now_ms());
		server_worker_gc(s);
	}
	free(pfd);
	free(obj);
	return 0;
}

/*
 * `pyshelfd --server ...`: the exit status.  0 after SIGTERM (every
 * worker ended) or exit-empty, and when another server already runs for
 * the socket; 1 when it could not start; 2 on bad usage.
 */
int
server_main(int argc, char **argv)
{
	static server s;
	server_client *c;
	int rc;

	s.argv0 = argv[0];
	s.lfd = s.sigfd = s.pidfd = s.ready_fd = -1;
	if ((rc = server_options_parse(&s, argc, argv)) >= 0)
		return rc;
	if ((rc = server_start(&s)) >= 0)
		return rc;
	rc = server_loop(&s);
	while ((c = s.clients) != NULL)
		server_client_free(&s, c);
	server_listen_remove(&s);
	server_log("exit");
	return rc;
}
