/*
 * worker-output.c - output of the running request: fds 1 and 2 are pipes
 * (worker_output_start) that the forwarder thread reads, so that what C
 * code, faulthandler or the children of shipped code write there reaches
 * the client as OUTPUT frames of the current request; worker_output puts
 * sys.stdout/sys.stderr into the same pipes, so one stream keeps its
 * order whoever wrote it, and worker_output_drain sends what waits before
 * each reply.  Outside a request the bytes go to pyshelfd's own stderr.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif

#include "exec.h"

/* Hand bytes of stream 1/2 on: an OUTPUT frame of the current request, or
 * pyshelfd's own stderr outside a request.  Any thread but a child's. */
static int
worker_output_emit(worker *w, int stream, const char *p, size_t n)
{
	uint64_t id = w->current_id;
	int rc;

	if (id == 0) {
		rc = wire_write_all(w->log_fd >= 0 ? w->log_fd : 2, p, n);
		return rc == WIRE_OK ? 0 : -1;
	}
	/* to the request's connection; a call's to its joiners and its
	 * journal too (worker-calls.c) */
	return worker_calls_output(w, stream, p, n);
}

/* Send what waits in the pipe of stream s (drain_lock held), at most
 * limit bytes (a writer that never stops must not hold us forever). */
static void
worker_output_pump(worker *w, int s, size_t limit)
{
	char buf[65536];
	size_t total = 0;
	ssize_t got;

	while (w->pipe_r[s] >= 0 && total < limit) {
		got = read(w->pipe_r[s], buf, sizeof buf);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		(void)worker_output_emit(w, s, buf, (size_t)got);
		total += (size_t)got;
	}
}

/* One poll() asks both pipes (every reply comes here, and most requests
 * write nothing: two read()s ending in EAGAIN cost twice as much). */
void
worker_output_drain(worker *w)
{
	struct pollfd pfd[2];
	int s, n;

	if (w->pipe_r[1] < 0 && w->pipe_r[2] < 0)
		return;
	pthread_mutex_lock(&w->drain_lock);
	pfd[0] = (struct pollfd){w->pipe_r[1], POLLIN, 0};
	pfd[1] = (struct pollfd){w->pipe_r[2], POLLIN, 0};
	while ((n = poll(pfd, 2, 0)) < 0 && errno == EINTR)
		;
	if (n > 0)
		for (s = 1; s <= 2; s++)
			if (pfd[s - 1].revents != 0)
				worker_output_pump(w, s, (size_t)16 << 20);
	pthread_mutex_unlock(&w->drain_lock);
}

/* Output of the current request (sys.stdout/sys.stderr, notices): into
 * the pipe of its stream, like what C code writes to fd 1 or 2, so that
 * one stream keeps the order of its writes whoever wrote them, and the
 * forwarder sends many small writes as one frame (one syscall per
 * write here, as before the pipes).  Outside a request, straight to
 * pyshelfd's stderr, as the forwarder would.  In a child of shipped code
 * the same: its fds 1 and 2 are the parent's pipes. */
int
worker_output(worker *w, int stream, const char *p, size_t n)
{
	int rc, fd;

	fd = stream == 1 ? 1 : 2;
	if (w->current_id == 0 && !worker_in_child())
		fd = w->log_fd >= 0 ? w->log_fd : 2;
	Py_BEGIN_ALLOW_THREADS
	rc = wire_write_all(fd, p, n);
	Py_END_ALLOW_THREADS
	return rc == WIRE_OK ? 0 : -1;
}

/* Forwarder thread: what C code, faulthandler, os.write(1, ...) and the
 * children of shipped code write to fds 1 and 2 reaches the client as
 * output of the running request. */
static void *
worker_output_forwarder(void *arg)
{
	worker *w = arg;
	struct pollfd pfd[3];
	int i;

	for (;;) {
		pfd[0] = (struct pollfd){w->fwd_quit_fd, POLLIN, 0};
		pfd[1] = (struct pollfd){w->pipe_r[1], POLLIN, 0};
		pfd[2] = (struct pollfd){w->pipe_r[2], POLLIN, 0};
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		/* a file in place of one of these would be read and sent
		 * (worker-fds.c) */
		for (i = 0; i < 3; i++)
			if (pfd[i].revents != 0)
				worker_fds_verify(w, pfd[i].fd, "polled by the "
				    "output forwarder");
		if (pfd[0].revents != 0)
			break;
		for (i = 1; i <= 2; i++) {
			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			pthread_mutex_lock(&w->drain_lock);
			worker_output_pump(w, i, (size_t)1 << 20);
			pthread_mutex_unlock(&w->drain_lock);
		}
	}
	return NULL;
}

/* Make fds 1 and 2 pipes read by the forwarder.  fd 1 is never the
 * protocol (that has a private copy): a stray write to it cannot corrupt
 * frames, and what it gets is the request's stdout. */
int
worker_output_start(worker *w, char **cause)
{
	int s, p[2];
	sigset_t set, old;

	w->pipe_r[1] = w->pipe_r[2] = -1;
	if ((w->fwd_quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		goto fail;
	for (s = 1; s <= 2; s++) {
		if (pipe2(p, O_CLOEXEC) != 0)
			goto fail;
		if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0 || dup2(p[1], s) < 0) {
			close(p[0]);
			close(p[1]);
			goto fail;
		}
		close(p[1]);
		w->pipe_r[s] = p[0];
	}
#ifdef __SANITIZE_ADDRESS__
	/* a sanitizer report comes as the process dies, when the forwarder
	 * may never read it: straight to our own stderr */
	__sanitizer_set_report_fd((void *)(intptr_t)w->log_fd);
#endif
	/* the forwarder must never take SIGINT/SIGTERM meant for Python */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	s = pthread_create(&w->forwarder, NULL, worker_output_forwarder, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (s != 0) {
		errno = s;
		goto fail;
	}
	w->forwarder_on = 1;
	return 0;
fail:
	asprintf(cause, "setting up the output pipes: %s", strerror(errno));
	dup2(w->log_fd, 1);
	dup2(w->log_fd, 2);
	return -1;
}

/* Stop forwarding: fds 1 and 2 go back to pyshelfd's stderr, what the
 * pipes still hold is sent, the forwarder leaves. */
void
worker_output_stop(worker *w)
{
	uint64_t one = 1;
	int s;

	if (w->log_fd >= 0) {
		fflush(stdout);
		fflush(stderr);
		dup2(w->log_fd, 1);
		dup2(w->log_fd, 2);
	}
	if (w->forwarder_on) {
		if (write(w->fwd_quit_fd, &one, sizeof one) < 0) {
			/* counter full: the forwarder is awake anyway */
		}
		pthread_join(w->forwarder, NULL);
		w->forwarder_on = 0;
	}
	worker_output_drain(w);
	for (s = 1; s <= 2; s++) {
		if (w->pipe_r[s] >= 0)
			close(w->pipe_r[s]);
		w->pipe_r[s] = -1;
	}
}
