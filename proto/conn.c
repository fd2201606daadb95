/*
 * conn.c - blocking frame I/O on file descriptors.
 *
 * A wire_conn keeps one read buffer: bytes rbuf[rpos..rlen) are received
 * but not yet handed out.  wire_conn_read() peeks at the header first, so
 * a length above the limit is refused before any buffer is grown for it,
 * then reads until the whole frame is buffered and parses it in place.
 * The returned message borrows the buffer, so consumed bytes are only
 * compacted away at the start of the next read.
 *
 * Waiting is poll() with a deadline on CLOCK_MONOTONIC; with spin_us set,
 * a short busy-poll comes first, which saves the wakeup latency of a
 * blocking poll when the peer answers within microseconds.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

/* Smallest read buffer: small frames arrive many per read(). */
#define WIRE_CONN_MIN_BUF (16u * 1024)
/* An empty buffer larger than this is freed rather than kept. */
#define WIRE_CONN_KEEP_BUF (1024u * 1024)

static int64_t wire_conn_now_us(void);
static int wire_conn_room(wire_conn *, size_t);
static int wire_conn_wait(wire_conn *, int64_t);
static int wire_conn_fill(wire_conn *, int64_t, int);

/* Microseconds on the monotonic clock. */
static int64_t
wire_conn_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Set up a connection over fds (not taken over: close them yourself). */
void
wire_conn_init(wire_conn *c, int rfd, int wfd, size_t max_body)
{
	c->rfd = rfd;
	c->wfd = wfd;
	c->max_body = max_body;
	c->rbuf = NULL;
	c->rlen = 0;
	c->rpos = 0;
	c->rcap = 0;
	c->spin_us = 0;
	c->ready = 0;
	c->take_fds = 0;
	c->fds[0] = c->fds[1] = -1;
	c->nfds = 0;
	c->pipe_got = 0;
}

/* Free the read buffer; the fds are left open. */
void
wire_conn_free(wire_conn *c)
{
	free(c->rbuf);
	c->rbuf = NULL;
	c->rlen = c->rpos = c->rcap = 0;
}

/*
 * Make the buffer able to hold need unconsumed bytes: move them to the
 * front, then grow (doubling) when still short.  Returns WIRE_OK or
 * WIRE_E_NOMEM.
 */
static int
wire_conn_room(wire_conn *c, size_t need)
{
	size_t avail = c->rlen - c->rpos, cap;
	uint8_t *p;

	if (c->rpos > 0 && (c->rcap - c->rlen < need - avail || avail == 0)) {
		memmove(c->rbuf, c->rbuf + c->rpos, avail);
		c->rlen = avail;
		c->rpos = 0;
	}
	if (need <= c->rcap - c->rpos)
		return WIRE_OK;
	cap = c->rcap > WIRE_CONN_MIN_BUF ? c->rcap : WIRE_CONN_MIN_BUF;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if ((p = realloc(c->rbuf, cap)) == NULL)
		return WIRE_E_NOMEM;
	c->rbuf = p;
	c->rcap = cap;
	return WIRE_OK;
}

/*
 * Wait until rfd is readable or the deadline (us, monotonic; < 0 = none)
 * passes.  Busy-polls first when c->spin_us is set.  Returns WIRE_OK,
 * WIRE_E_TIMEOUT or WIRE_E_IO.
 */
static int
wire_conn_wait(wire_conn *c, int64_t deadline)
{
	struct pollfd pfd;
	int64_t now, spin_end = -1, left;
	int rc, ms, spinning;

	pfd.fd = c->rfd;
	pfd.events = POLLIN;
	if (c->spin_us > 0)
		spin_end = wire_conn_now_us() + c->spin_us;
	for (;;) {
		now = wire_conn_now_us();
		spinning = spin_end >= 0 && now < spin_end &&
		    (deadline < 0 || now < deadline);
		if (spinning || (deadline >= 0 && now >= deadline))
			ms = 0;
		else if (deadline < 0)
			ms = -1;
		else {
			/* Round up: never wake before the deadline. */
			left = (deadline - now + 999) / 1000;
			ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		pfd.revents = 0;
		rc = poll(&pfd, 1, ms);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			return WIRE_E_IO;
		}
		if (rc > 0) {
			if (pfd.revents & POLLNVAL) {
				errno = EBADF;
				return WIRE_E_IO;
			}
			return WIRE_OK; /* POLLHUP/POLLERR: read() will tell */
		}
		if (spinning || ms != 0)
			continue; /* still spinning, or back to check the clock */
		return WIRE_E_TIMEOUT;
	}
}

/*
 * Read once into the buffer after waiting for data (ready: the caller
 * knows rfd is readable, so the first read() goes without a poll()).
 * Returns WIRE_OK (some bytes arrived), WIRE_E_EOF, WIRE_E_TIMEOUT or
 * WIRE_E_IO.
 */
static int
wire_conn_fill(wire_conn *c, int64_t deadline, int ready)
{
	ssize_t got;
	int rc;

	for (;;) {
		if (ready)
			ready = 0;  /* poll() said readable: read() won't block */
		else if ((rc = wire_conn_wait(c, deadline)) != WIRE_OK)
			return rc;
		got = c->take_fds ? wire_recv_fds(c->rfd, c->rbuf + c->rlen,
		    c->rcap - c->rlen, c->fds, 2, &c->nfds, 0) :
		    read(c->rfd, c->rbuf + c->rlen, c->rcap - c->rlen);
		if (got > 0) {
			c->rlen += (size_t)got;
			c->pipe_got += (size_t)got;
			return WIRE_OK;
		}
		if (got == 0)
			return WIRE_E_EOF;
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return WIRE_E_IO;
	}
}

/* Read the next complete frame into m; see wire.h. */
int
wire_conn_read(wire_conn *c, wire_msg *m, int timeout_ms)
{
	int64_t deadline = -1;
	size_t avail, need, used;
	int rc, ready = c->ready;

	c->ready = 0;
	if (timeout_ms >= 0)
		deadline = wire_conn_now_us() + (int64_t)timeout_ms * 1000;
	if (c->rpos == c->rlen) {
		c->rpos = c->rlen = 0;
		if (c->rcap > WIRE_CONN_KEEP_BUF)
			wire_conn_free(c); /* a big frame has gone: give it back */
	}
	for (;;) {
		avail = c->rlen - c->rpos;
		rc = WIRE_NEED_MORE; /* rbuf may be NULL: no pointer into it */
		if (avail > 0)
			rc = wire_peek(c->rbuf + c->rpos, avail, c->max_body,
			    &need);
		if (rc < 0)
			return rc;
		if (rc == WIRE_NEED_MORE)
			need = WIRE_HEADER_SIZE;
		else if (avail >= need) {
			rc = wire_parse(c->rbuf + c->rpos, avail, c->max_body, m,
			    &used);
			if (rc == WIRE_OK)
				c->rpos += used;
			return rc;
		}
		if ((rc = wire_conn_room(c, need)) != WIRE_OK)
			return rc;
		rc = wire_conn_fill(c, deadline, ready);
		ready = 0;
		if (rc == WIRE_E_EOF && avail > 0)
			return WIRE_E_TRUNCATED; /* the peer cut a frame short */
		if (rc != WIRE_OK)
			return rc;
	}
}

/* Nonzero when wire_conn_read() would return without reading. */
int
wire_conn_pending(const wire_conn *c)
{
	size_t avail = c->rlen - c->rpos, need;
	int rc;

	if (avail == 0)
		return 0;
	rc = wire_peek(c->rbuf + c->rpos, avail, c->max_body, &need);
	if (rc < 0)
		return 1;
	return rc == WIRE_OK && avail >= need;
}

/* Write all of p[0..n), retrying on EINTR and short writes; waits for
 * POLLOUT when fd is non-blocking. */
int
wire_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *q = p;
	struct pollfd pfd;
	ssize_t put;

	while (n > 0) {
		put = write(fd, q, n);
		if (put > 0) {
			q += put;
			n -= (size_t)put;
			continue;
		}
		if (put == 0) {
			errno = EIO;
			return WIRE_E_IO;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return WIRE_E_IO;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return WIRE_E_IO;
	}
	return WIRE_OK;
}

/*
 * Read the DATA of the next frame straight into dst when it is a PART of
 * id whose data fits in room bytes; see wire.h.
 */
int
wire_conn_read_part(wire_conn *c, uint64_t id, uint8_t *dst, size_t room,
                    size_t *n)
{
	const uint8_t *h;
	size_t avail, len, k, need;
	ssize_t got;
	int rc;

	*n = 0;
	/* the frame's header, then DATA's, without consuming them */
	for (need = WIRE_HEADER_SIZE;; need = WIRE_PART_HEADER_SIZE) {
		while ((avail = c->rlen - c->rpos) < need) {
			if ((rc = wire_conn_room(c, need)) != WIRE_OK)
				return rc;
			if ((rc = wire_conn_fill(c, -1, 0)) != WIRE_OK)
				return rc == WIRE_E_EOF && avail > 0 ?
				    WIRE_E_TRUNCATED : rc;
		}
		h = c->rbuf + c->rpos;
		len = wire_be32_get(h);
		if (wire_be16_get(h + 4) != WIRE_MSG_PART ||
		    wire_be16_get(h + 6) != 0 || wire_be64_get(h + 8) != id ||
		    len > c->max_body || len < WIRE_FIELD_HEADER_SIZE ||
		    len - WIRE_FIELD_HEADER_SIZE > room)
			return WIRE_NEED_MORE;  /* not for here: a frame */
		if (need == WIRE_PART_HEADER_SIZE)
			break;
	}
	if (h[WIRE_HEADER_SIZE] != WIRE_TAG_DATA ||
	    wire_be32_get(h + WIRE_HEADER_SIZE + 1) !=
	    len - WIRE_FIELD_HEADER_SIZE)
		return WIRE_NEED_MORE;   /* not one DATA field: a frame */
	len -= WIRE_FIELD_HEADER_SIZE;
	c->rpos += WIRE_PART_HEADER_SIZE;
	avail -= WIRE_PART_HEADER_SIZE;
	k = avail < len ? avail : len;
	memcpy(dst, c->rbuf + c->rpos, k);
	c->rpos += k;
	while (k < len) {
		got = read(c->rfd, dst + k, len - k);
		if (got > 0) {
			k += (size_t)got;
			c->pipe_got += (size_t)got;
			continue;
		}
		if (got == 0)
			return WIRE_E_TRUNCATED;  /* the peer cut a frame short */
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if ((rc = wire_conn_wait(c, -1)) != WIRE_OK)
				return rc;
		} else if (errno != EINTR)
			return WIRE_E_IO;
	}
	*n = len;
	return WIRE_OK;
}

ssize_t
wire_send_fds(int sock, const void *p, size_t n, const int *fds, int nfds,
    int flags)
{
	union {
		char buf[CMSG_SPACE(WIRE_MAX_PASS_FDS * sizeof(int))];
		struct cmsghdr align;
	} cm;
	struct iovec iov = {(void *)p, n};
	struct cmsghdr *ch;
	struct msghdr mh;

	if (nfds < 1 || nfds > WIRE_MAX_PASS_FDS) {
		errno = EINVAL;
		return -1;
	}
	memset(&cm, 0, sizeof cm);
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.buf;
	mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
	ch = CMSG_FIRSTHDR(&mh);
	ch->cmsg_level = SOL_SOCKET;
	ch->cmsg_type = SCM_RIGHTS;
	ch->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
	memcpy(CMSG_DATA(ch), fds, sizeof(int) * (size_t)nfds);
	return sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
}

ssize_t
wire_recv_fds(int sock, void *p, size_t n, int *fds, int max, int *nfds,
    int flags)
{
	union {
		char buf[CMSG_SPACE(WIRE_MAX_PASS_FDS * sizeof(int))];
		struct cmsghdr align;
	} cm;
	struct iovec iov = {p, n};
	struct msghdr mh;
	struct cmsghdr *ch;
	ssize_t got;
	size_t i, k;
	int fd;

	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.buf;
	mh.msg_controllen = sizeof cm.buf;
	got = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
	if (got < 0)
		return got;
	for (ch = CMSG_FIRSTHDR(&mh); ch != NULL; ch = CMSG_NXTHDR(&mh, ch)) {
		if (ch->cmsg_level != SOL_SOCKET ||
		    ch->cmsg_type != SCM_RIGHTS)
			continue;
		k = (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < k; i++) {
			memcpy(&fd, CMSG_DATA(ch) + i * sizeof fd, sizeof fd);
			if (*nfds < max)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	return got;
}
