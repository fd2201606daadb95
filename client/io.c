/*
 * io.c - the descriptor-level pieces of libpyshelf: SIGPIPE-safe writes
 * and a wait for readability that spins first and reports EINTR.
 *
 * Reading frames is the codec's job (wire_conn_read in proto/conn.c); the
 * client only calls it without blocking and does the waiting here, because
 * the codec retries EINTR and the Python client must see a Ctrl-C while a
 * request runs.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client-int.h"

static int io_send_all(int, const void *, size_t);
static int io_write_all(int, const void *, size_t);

/* Microseconds on the monotonic clock. */
int64_t
io_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Nonzero when fd is a socket. */
int
io_is_socket(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* send() all bytes with MSG_NOSIGNAL; waits for POLLOUT on EAGAIN. */
static int
io_send_all(int fd, const void *p, size_t n)
{
	const unsigned char *q = p;
	struct pollfd pfd;
	ssize_t put;

	while (n > 0) {
		put = send(fd, q, n, MSG_NOSIGNAL);
		if (put > 0) {
			q += put;
			n -= (size_t)put;
			continue;
		}
		if (put == 0) {
			errno = EIO;
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return -1;
	}
	return 0;
}

/* write() all bytes; waits for POLLOUT on EAGAIN. */
static int
io_write_all(int fd, const void *p, size_t n)
{
	const unsigned char *q = p;
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
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return -1;
	}
	return 0;
}

/*
 * Write all of p[0..n) without raising SIGPIPE.  On a pipe, when SIGPIPE
 * is not ignored already, block it in this thread for the write, and
 * consume the signal the write raised unless one was pending before (the
 * way libpq does it), so the caller's handlers never see ours.
 */
int
io_write(int fd, int is_socket, const void *p, size_t n)
{
	struct sigaction sa;
	struct timespec zero = { 0, 0 };
	sigset_t pipeset, old, pending;
	int rc, saved, was_pending;

	if (is_socket)
		return io_send_all(fd, p, n);
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
		return io_write_all(fd, p, n);

	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &pipeset, &old) != 0)
		return io_write_all(fd, p, n); /* cannot happen with a valid set */
	was_pending = sigpending(&pending) == 0 &&
	    sigismember(&pending, SIGPIPE) == 1;
	rc = io_write_all(fd, p, n);
	saved = errno;
	if (rc < 0 && saved == EPIPE && !was_pending) {
		while (sigtimedwait(&pipeset, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return rc;
}

/*
 * Wait for fd to be readable: a busy-poll of spin_us first, then a
 * sleeping poll() of up to timeout_ms.  EINTR goes back to the caller.
 */
int
io_wait(int fd, unsigned spin_us, int timeout_ms)
{
	struct pollfd pfd;
	int64_t spin_end;
	int rc;

	pfd.fd = fd;
	pfd.events = POLLIN;
	if (spin_us > 0) {
		spin_end = io_now_us() + spin_us;
		do {
			pfd.revents = 0;
			rc = poll(&pfd, 1, 0);
			if (rc != 0)
				goto done;
		} while (io_now_us() < spin_end);
	}
	pfd.revents = 0;
	rc = poll(&pfd, 1, timeout_ms < 0 ? -1 : timeout_ms);
done:
	if (rc < 0)
		return -1;
	if (rc > 0 && (pfd.revents & POLLNVAL)) {
		errno = EBADF;
		return -1;
	}
	return rc > 0;
}
