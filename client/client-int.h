/*
 * client-int.h - internals of libpyshelf shared between its files.
 *
 * Nothing here is installed; the public contract is pyshelf.h.  Prototypes
 * are grouped by the file that defines them.
 */
#ifndef PYSHELF_CLIENT_INT_H
#define PYSHELF_CLIENT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* io.c */

/* Microseconds on the monotonic clock. */
int64_t io_now_us(void);
/*
 * Write all of p[0..n) to fd without ever raising SIGPIPE (send() with
 * MSG_NOSIGNAL on a socket; SIGPIPE blocked around write() on a pipe, a
 * signal it raised consumed).  Returns 0, or -1 with errno set (EPIPE when
 * the reader is gone).
 */
int io_write(int fd, int is_socket, const void *p, size_t n);
/*
 * Wait until fd is readable: spin (poll without sleeping) for spin_us
 * first, then sleep in poll() for up to timeout_ms (< 0: no limit).
 * Returns 1 when readable (or hung up), 0 when the time ran out, -1 with
 * errno set otherwise; EINTR is returned, not retried, so that the caller
 * can look at its signals.
 */
int io_wait(int fd, unsigned spin_us, int timeout_ms);
/* Nonzero when fd is a socket. */
int io_is_socket(int fd);

/* spawn.c */

/*
 * The executable pyshelf_spawn() starts for backend name: a name with a
 * slash is used as it is; a bare name is looked up on $PATH (as execvp()
 * does, an empty entry meaning the current directory), then in the
 * installed bindir and libexecdir.  Done before fork(), so the child only
 * calls execve().  Returns 0 with the path in out[0..outlen), or -1 with
 * errno set (ENOENT) and a sentence in why.
 */
int spawn_find(const char *name, char *out, size_t outlen, char *why,
               size_t whylen);

/*
 * fork() and execv() argv[0] with argv, its stdin and stdout on new
 * pipes; see pyshelf_spawn() for the child's setup.  On success *pid is
 * the child, *rfd reads its stdout and *wfd writes its stdin (both
 * close-on-exec).  Returns 0, or -1 with a sentence in why[0..whylen)
 * (errno set; ENOENT etc. when the exec itself failed).
 */
int spawn_start(char *const argv[], pid_t *pid, int *rfd, int *wfd,
                char *why, size_t whylen);
/*
 * Reap pid, waiting up to timeout_ms (< 0: forever).  Returns 0 with
 * *wstatus set, 1 when it is still running after timeout_ms, -1 with
 * errno set when waitpid() failed (ECHILD: reaped elsewhere).
 */
int spawn_wait(pid_t pid, int timeout_ms, int *wstatus);
/* Kill pid (SIGKILL) and reap it.  Returns as spawn_wait(). */
int spawn_kill(pid_t pid, int *wstatus);
/*
 * Run argv[0] (a path) with argv to its exit: stdin and stdout on
 * /dev/null, stderr on a pipe whose first errlen - 1 bytes land in errout
 * (NUL-terminated), the child set up as spawn_start()'s.  For
 * `pyshelfd --server`, which daemonizes and exits once ready.  Returns 0
 * with *wstatus set, or -1 with a sentence in why (errno set).
 */
int spawn_run(char *const argv[], int *wstatus, char *errout, size_t errlen,
              char *why, size_t whylen);

#endif /* PYSHELF_CLIENT_INT_H */
