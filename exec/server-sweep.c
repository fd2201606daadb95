/*
 * server-sweep.c - the supervisor's sweeper: it starts `pyshelfd
 * --sweep` (sweep.c) as a child process at its start, then every
 * --sweep-interval seconds with a jitter of +-20% (so that the servers of
 * several stores started together do not sweep together), and soon after
 * a worker says its session ended (CTL_ENDED).  One sweep runs at a time;
 * a request for another while one runs starts it when that one ends.
 *
 * A child, not a thread or the loop itself: the supervisor never opens
 * the store, routing attaches never waits on a delete, and a sweep that
 * crashes takes nothing with it (the next one resumes where it stopped).
 * The child gets --since with the server's start time: a session's lease
 * runs from no earlier than that, so the time the server was down is not
 * counted against any session.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server.h"

/* When the next timed sweep is due: now + the interval, +-20%. */
static void
server_sweep_schedule(server *s, int64_t now)
{
	uint32_t r = 0;
	double f;

	if (s->opt.sweep_interval <= 0) {
		s->sweep_due_ms = 0;
		return;
	}
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint32_t)now * 2654435761u;
	f = 0.8 + 0.4 * ((double)r / 4294967296.0);
	s->sweep_due_ms = now + (int64_t)(s->opt.sweep_interval * 1000 * f);
}

/* In the child: the sweep's command line, then exec. */
static void
server_sweep_exec(server *s)
{
	char *argv[24], since[32];
	sigset_t none;
	int n = 0, i, nul;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if ((nul = open("/dev/null", O_RDWR)) >= 0) {
		dup2(nul, 0);
		dup2(nul, 1);
		if (nul > 1)
			close(nul);
	}
	snprintf(since, sizeof since, "%llu",
	    (unsigned long long)s->start_wall_ms);
	argv[n++] = (char *)s->argv0;
	argv[n++] = "--sweep";
	if (s->opt.db != NULL) {
		argv[n++] = "--db";
		argv[n++] = s->db;
	}
	argv[n++] = "--since";
	argv[n++] = since;
	for (i = 0; i < s->opt.sargc; i++)
		argv[n++] = s->opt.sargv[i];
	argv[n] = NULL;
	execv("/proc/self/exe", argv);
	fprintf(stderr, "pyshelfd: exec of the sweep: %s\n", strerror(errno));
	_exit(127);
}

/* Start a sweep now, or right after the one running. */
void
server_sweep_start(server *s)
{
	pid_t pid;

	if (s->stopping)
		return;
	if (s->sweep_pid > 0) {
		s->sweep_again = 1;
		return;
	}
	s->sweep_again = 0;
	if ((pid = fork()) < 0) {
		server_log("fork of the sweep: %s", strerror(errno));
		server_sweep_schedule(s, server_now_ms());
		return;
	}
	if (pid == 0)
		server_sweep_exec(s);
	s->sweep_pid = pid;
	s->sweep_due_ms = 0;
}

/* A session ended (CTL_ENDED): sweep it soon. */
void
server_sweep_soon(server *s)
{
	server_sweep_start(s);
}

/* Start the sweep that is due. */
void
server_sweep_tick(server *s, int64_t now)
{
	if (s->sweep_pid == 0 && s->sweep_due_ms != 0 && now >= s->sweep_due_ms)
		server_sweep_start(s);
}

/* The next sweep's time for the poll timeout (0: none). */
int64_t
server_sweep_due(const server *s)
{
	return s->sweep_pid == 0 ? s->sweep_due_ms : 0;
}

/* A child ended: 1 when it was the sweep (logged unless it went well). */
int
server_sweep_reaped(server *s, pid_t pid, int status)
{
	if (pid != s->sweep_pid || pid <= 0)
		return 0;
	s->sweep_pid = 0;
	if (WIFSIGNALED(status))
		server_log("sweep pid %ld killed by signal %d; the next one "
		    "resumes it", (long)pid, WTERMSIG(status));
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		server_log("sweep pid %ld exited with status %d", (long)pid,
		    WEXITSTATUS(status));
	server_sweep_schedule(s, server_now_ms());
	if (s->sweep_again)
		server_sweep_start(s);
	return 1;
}

/* SIGTERM: stop the sweep between two transactions. */
void
server_sweep_stop(server *s)
{
	if (s->sweep_pid > 0)
		kill(s->sweep_pid, SIGTERM);
	s->sweep_due_ms = 0;
	s->sweep_again = 0;
}
