/*
 * worker-conn.c - the worker's client connections.  A stdio worker has
 * one (its copies of stdin and stdout); a server-mode worker one per
 * client the supervisor handed over, all serving the same session.  The
 * main thread reads them all while idle, the reader thread while code
 * runs (worker-reader.c); a frame, the running call and its joiners
 * hold references, so that a connection that drops while its request runs
 * is freed (and its socket closed) only when the last of them lets go.
 * A dropped connection is shut down at once, so its peer sees EOF then.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exec.h"

worker_conn *
worker_conn_add(worker *w, int fd, int out_fd, int own_fds)
{
	worker_conn *c = calloc(1, sizeof *c);

	if (c == NULL)
		return NULL;
	c->fd = fd;
	c->out_fd = out_fd;
	c->own_fds = own_fds;
	c->sock_fd = -1;
	c->refs = 1;  /* the table's */
	/* ours while it lives: shipped code may not close it */
	(void)worker_fds_add(fd);
	if (out_fd != fd)
		(void)worker_fds_add(out_fd);
	/* PROTOCOL.md's 64 KiB until the handshake is done */
	c->max = w->opt.max_frame < WIRE_PREAUTH_MAX_FRAME ?
	    w->opt.max_frame : WIRE_PREAUTH_MAX_FRAME;
	pthread_mutex_init(&c->out_lock, NULL);
	pthread_mutex_lock(&w->lock);
	c->serial = ++w->conn_serial;
	c->next = w->conns;
	w->conns = c;
	w->nconns++;
	w->idle_since_ms = 0;
	pthread_mutex_unlock(&w->lock);
	return c;
}

void
worker_conn_ref_locked(worker_conn *c)
{
	c->refs++;
}

void
worker_conn_unref_locked(worker *w, worker_conn *c)
{
	(void)w;
	if (c == NULL || --c->refs > 0)
		return;
	worker_fds_forget(c->fd);
	worker_fds_forget(c->out_fd);
	if (c->sock_fd >= 0)
		worker_fds_forget(c->sock_fd);
	if (c->own_fds) {
		close(c->fd);
		if (c->out_fd != c->fd)
			close(c->out_fd);
		if (c->sock_fd >= 0)
			close(c->sock_fd);
	}
	pthread_mutex_destroy(&c->out_lock);
	free(c->buf);
	free(c);
}

void
worker_conn_unref(worker *w, worker_conn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	worker_conn_unref_locked(w, c);
	pthread_mutex_unlock(&w->lock);
}

void
worker_conn_unlist_locked(worker *w, worker_conn *c)
{
	worker_conn **pp;

	if (c->unlisted)
		return;
	for (pp = &w->conns; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->next = NULL;
	c->unlisted = 1;
	w->nconns--;
	if (w->nconns == 0 && w->running_id == 0)
		w->idle_since_ms = worker_mono_ms();
}

void
worker_conn_drop_locked(worker *w, worker_conn *c)
{
	if (c->gone)
		return;
	worker_conn_unlist_locked(w, c);
	c->gone = 1;
	pthread_mutex_lock(&c->out_lock);
	c->out_closed = 1;
	if (c->own_fds && c->fd != c->out_fd) {
		/* pipes: no shutdown(); /dev/null takes their numbers, which
		 * stay ours until the last reference goes */
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul >= 0) {
			worker_conn_cut_fd(c->out_fd, nul);
			worker_conn_cut_fd(c->fd, nul);
			close(nul);
		}
		if (c->sock_fd >= 0)
			(void)shutdown(c->sock_fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&c->out_lock);
	/* the peer sees EOF now, whoever still holds a reference */
	if (c->own_fds && c->fd == c->out_fd)
		(void)shutdown(c->fd, SHUT_RDWR);
	worker_conn_unref_locked(w, c);
}

int
worker_conn_live(worker *w, worker_conn *c)
{
	int live;

	pthread_mutex_lock(&w->lock);
	live = c != NULL && !c->gone;
	pthread_mutex_unlock(&w->lock);
	return live;
}

/* Write one encoded buffer to c under its output lock. */
int
worker_send_to(worker *w, worker_conn *c, const wire_buf *b)
{
	int rc;

	if (w->forked)   /* set in every child (worker_atfork_child) */
		_exit(0); /* shipped code's child got back here: never send */
	if (c == NULL)
		return -1;
	pthread_mutex_lock(&c->out_lock);
	/* after the frame that says the connection closes, nothing more */
	if (!c->out_closed)
		wire_pipe_grow(c->out_fd, b->len);
	rc = c->out_closed ? WIRE_E_IO :
	    wire_write_all(c->out_fd, b->data, b->len);
	if (rc != WIRE_OK)
		c->out_closed = 1;
	pthread_mutex_unlock(&c->out_lock);
	if (rc != WIRE_OK) {
		if (!w->opt.server) {
			/* stdio: the one client is gone, so is the worker */
			pthread_mutex_lock(&w->lock);
			w->eof = 1;
			pthread_mutex_unlock(&w->lock);
		}
		return -1;
	}
	return 0;
}

void
worker_conn_broadcast(worker *w, worker_conn *skip, const wire_buf *b)
{
	worker_conn *c, *list[256];
	int i, n = 0;

	pthread_mutex_lock(&w->lock);
	for (c = w->conns; c != NULL && n < 256; c = c->next)
		if (c != skip && c->attached) {
			worker_conn_ref_locked(c);
			list[n++] = c;
		}
	pthread_mutex_unlock(&w->lock);
	for (i = 0; i < n; i++) {
		(void)worker_send_to(w, list[i], b);
		worker_conn_unref(w, list[i]);
	}
}

void
worker_conn_cut_fd(int fd, int nul)
{
	if (fd > 2 && fd != nul && dup3(nul, fd, O_CLOEXEC) == fd)
		(void)worker_fds_add(fd);  /* what it is now */
}

/* sendmsg() all of b on a socket, the descriptors with its first byte;
 * out_lock held.  WIRE_OK or WIRE_E_IO. */
static int
worker_conn_send_fds(int fd, const wire_buf *b, const int *fds, int nfds)
{
	struct pollfd pfd = {fd, POLLOUT, 0};
	ssize_t put;

	for (;;) {
		put = wire_send_fds(fd, b->data, b->len, fds, nfds, 0);
		if (put > 0)
			break;
		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    (poll(&pfd, 1, -1) >= 0 || errno == EINTR))
			continue;
		return WIRE_E_IO;
	}
	/* the descriptors went with the first byte; the rest as it goes */
	return (size_t)put == b->len ? WIRE_OK :
	    wire_write_all(fd, b->data + put, b->len - (size_t)put);
}

int
worker_conn_pipes(worker *w, worker_conn *c, uint64_t id)
{
	int req[2] = {-1, -1}, rep[2] = {-1, -1}, give[2], rc;
	const char *why = NULL;
	wire_buf b;

	if (!w->opt.server || c == NULL || !c->own_fds)
		why = "PIPES is for a connection to a server";
	else if (c->sock_fd >= 0 || c->fd != c->out_fd)
		why = "this connection is on pipes already";
	else if (pipe2(req, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0)
		why = "no pipes could be made; go on over the socket";
	wire_buf_init(&b);
	if (why != NULL) {
		if (req[0] >= 0) {
			close(req[0]);
			close(req[1]);
		}
		wire_begin(&b, WIRE_MSG_ERROR, id);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_BAD_REQUEST);
		wire_put_str(&b, WIRE_TAG_MESSAGE, why);
		rc = wire_end(&b) == WIRE_OK ? worker_send_to(w, c, &b) : -1;
		wire_buf_free(&b);
		return rc;
	}
	/* the kernel's default size: a long transfer grows the pipe it
	 * goes through for its length (proto/wire-pipe.c) */
	/* read after poll() only, as a socket is: never blocks the reader */
	(void)fcntl(req[0], F_SETFL, O_NONBLOCK);
	give[0] = rep[0];
	give[1] = req[1];
	wire_begin(&b, WIRE_MSG_OK, id);
	rc = wire_end(&b) == WIRE_OK ? WIRE_OK : WIRE_E_NOMEM;
	pthread_mutex_lock(&c->out_lock);
	if (rc == WIRE_OK)
		rc = c->out_closed ? WIRE_E_IO :
		    worker_conn_send_fds(c->out_fd, &b, give, 2);
	if (rc == WIRE_OK) {
		/* the OK is the socket's last byte: from here on, pipes */
		(void)worker_fds_add(rep[1]);
		c->out_fd = rep[1];
	} else
		c->out_closed = 1;
	pthread_mutex_unlock(&c->out_lock);
	wire_buf_free(&b);
	close(rep[0]);
	close(req[1]);
	if (rc != WIRE_OK) {
		close(req[0]);
		close(rep[1]);
		return -1;
	}
	(void)worker_fds_add(req[0]);
	pthread_mutex_lock(&w->lock);
	c->sock_fd = c->fd;
	c->fd = req[0];
	pthread_mutex_unlock(&w->lock);
	return 0;
}
