/*
 * wire-pipe.c - the size of a pipe that carries frames: small while idle,
 * grown for the length of a long transfer.
 *
 * Linux charges a pipe's buffer pages to the user who made it, against
 * /proc/sys/fs/pipe-user-pages-soft (16384 pages, 64 MiB).  Once a user
 * is past it, every new pipe of that user gets two pages (8 KiB) and
 * F_SETPIPE_SZ upwards fails with EPERM, in every program of that user.
 * So a connection's pipes keep the kernel's default size (64 KiB) and are
 * grown to WIRE_PIPE_BIG only while a transfer of at least WIRE_PIPE_LONG
 * bytes goes through: the writer grows the pipe just before it writes
 * (wire_pipe_grow), and the reader, once it has read the whole transfer,
 * sets the size back (wire_pipe_settle, wire_pipe_shrink).  The size is
 * the pipe's, so either end may set it.  Every failure is ignored: a pipe
 * that cannot grow carries the data in smaller steps, and one that cannot
 * shrink yet (EBUSY: more than the small size is in it, the next transfer
 * has begun) is tried again at the reader's next message boundary.
 * Sockets and files answer EBADF and are left alone.  errno is kept.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>

#include "wire.h"

/* Grow the pipe fd to WIRE_PIPE_BIG before writing n bytes; see wire.h. */
void
wire_pipe_grow(int fd, uint64_t n)
{
#ifdef F_SETPIPE_SZ
	int saved = errno, sz;

	if (n < WIRE_PIPE_LONG)
		return;
	sz = fcntl(fd, F_GETPIPE_SZ);
	if (sz >= 0 && sz < WIRE_PIPE_BIG)
		(void)fcntl(fd, F_SETPIPE_SZ, WIRE_PIPE_BIG);
	errno = saved;
#else
	(void)fd;
	(void)n;
#endif
}

/* Set the pipe fd back to WIRE_PIPE_IDLE; see wire.h. */
int
wire_pipe_shrink(int fd)
{
#ifdef F_SETPIPE_SZ
	int saved = errno, sz, rc = 0;

	sz = fcntl(fd, F_GETPIPE_SZ);
	if (sz > WIRE_PIPE_IDLE && fcntl(fd, F_SETPIPE_SZ, WIRE_PIPE_IDLE) < 0 &&
	    errno == EBUSY)
		rc = -1;
	errno = saved;
	return rc;
#else
	(void)fd;
	return 0;
#endif
}

/* At a message boundary of the reader of fd; see wire.h. */
void
wire_pipe_settle(int fd, size_t *got)
{
	if (*got >= WIRE_PIPE_LONG && wire_pipe_shrink(fd) == 0)
		*got = 0;
}
