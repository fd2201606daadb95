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
	if (c->own_fds) {
		close(c->fd);
		if (c->out_fd != c->fd)
			close(c->out_fd);
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
worker_conn_drop_locked(worker *w, worker_conn *c)
{
	worker_conn **pp;

	if (c->gone)
		return;
	for (pp = &w->conns; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->next = NULL;
	c->gone = 1;
	w->nconns--;
	if (w->nconns == 0 && w->running_id == 0)
		w->idle_since_ms = worker_mono_ms();
	pthread_mutex_lock(&c->out_lock);
	c->out_closed = 1;
	pthread_mutex_unlock(&c->out_lock);
	/* the peer sees EOF now, whoever still holds a reference */
	if (c->own_fds)
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
