/*
 * server-listen.c - where the supervisor lives on disk: the store's path,
 * the socket directory and its checks, the pid file whose lock makes one
 * server per socket, the listening socket (a stale one replaced), and
 * turning into a daemon whose parent exits only once the socket accepts.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "sockpath.h"

static int server_listen_cause(char **, const char *, ...)
    __attribute__((format(printf, 2, 3)));
static int server_listen_db(server *, char **);
static int server_listen_dir_check(const char *, int, char **);
static int server_listen_probe(const char *);
static pid_t server_listen_holder(server *);

/* The store's record of its server (sockpath.h): the lock's descriptor,
 * held for the supervisor's life once the record is ours (-1: not yet,
 * or the store does not exist yet). */
static int server_listen_storefd = -1;

/* Set *cause to a new sentence; returns -1. */
static int
server_listen_cause(char **cause, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) < 0)
		*cause = NULL;
	va_end(ap);
	return -1;
}

/*
 * s->db: the store's absolute path (its real path when it exists), for
 * the workers: the daemon runs in /.  Nothing is created here: the store
 * is the workers' alone (a worker creates it, as --stdio does).
 */
static int
server_listen_db(server *s, char **cause)
{
	char real[PATH_MAX], cwd[PATH_MAX];

	if (s->opt.db == NULL)
		s->db = sockpath_default_store();
	else if (realpath(s->opt.db, real) != NULL)
		s->db = strdup(real);
	else if (s->opt.db[0] == '/')
		s->db = strdup(s->opt.db);
	else if (getcwd(cwd, sizeof cwd) == NULL)
		return server_listen_cause(cause, "getcwd: %s",
		    strerror(errno));
	else if (asprintf(&s->db, "%s/%s", cwd, s->opt.db) < 0)
		s->db = NULL;
	if (s->db == NULL)
		return server_listen_cause(cause, "out of memory");
	return 0;
}

/*
 * Check a directory the supervisor keeps sockets in: a directory owned by
 * us that no one else may write to (strict: nor read or enter, as the
 * default directory and the workers' one must be).  -1 with *cause.
 */
static int
server_listen_dir_check(const char *dir, int strict, char **cause)
{
	struct stat st;

	if (lstat(dir, &st) != 0)
		return server_listen_cause(cause, "socket directory %s: %s",
		    dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return server_listen_cause(cause, "socket directory %s is not "
		    "a directory", dir);
	if (st.st_uid != getuid())
		return server_listen_cause(cause, "socket directory %s is "
		    "owned by uid %u, not by this user (uid %u): refusing to "
		    "listen there", dir, (unsigned)st.st_uid,
		    (unsigned)getuid());
	if ((st.st_mode & (strict ? 077 : 022)) != 0)
		return server_listen_cause(cause, "socket directory %s has "
		    "mode %03o: others may %s it; make it 0700 (chmod 700 %s)",
		    dir, (unsigned)(st.st_mode & 0777), strict ? "use" :
		    "write to", dir);
	return 0;
}

/*
 * Fill in every path: the store, the socket (--socket, or the store's
 * name in the per-user directory, created 0700), the workers' directory,
 * the pid file and the log.  -1 with *cause.
 */
int
server_listen_paths(server *s, char **cause)
{
	char dir[PATH_MAX], name[256], *slash, *cause2 = NULL;

	if (server_listen_db(s, cause) != 0)
		return -1;
	if (s->opt.socket_path != NULL) {
		if (strlen(s->opt.socket_path) >= sizeof dir)
			return server_listen_cause(cause, "--socket: path too "
			    "long");
		strcpy(dir, s->opt.socket_path);
		slash = strrchr(dir, '/');
		if (slash == NULL)
			strcpy(dir, ".");
		else if (slash == dir)
			dir[1] = '\0';
		else
			*slash = '\0';
		slash = strrchr(s->opt.socket_path, '/');
		snprintf(name, sizeof name, "%s", slash != NULL ? slash + 1 :
		    s->opt.socket_path);
		if (name[0] == '\0')
			return server_listen_cause(cause, "--socket %s: no file "
			    "name", s->opt.socket_path);
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return server_listen_cause(cause, "socket directory "
			    "%s: %s", dir, strerror(errno));
		if (server_listen_dir_check(dir, 0, cause) != 0)
			return -1;
	} else {
		if (sockpath_dir(dir, sizeof dir) != 0)
			return server_listen_cause(cause, "socket directory: "
			    "%s", strerror(errno));
		if (sockpath_dir_make(dir, &cause2) != 0) {
			server_listen_cause(cause, "%s", cause2 != NULL ?
			    cause2 : strerror(errno));
			free(cause2);
			return -1;
		}
		if (sockpath_name(s->opt.db, name, sizeof name) != 0)
			return server_listen_cause(cause, "socket name for %s: "
			    "%s", s->db, strerror(errno));
	}
	if ((s->sockdir = realpath(dir, NULL)) == NULL)
		return server_listen_cause(cause, "socket directory %s: %s",
		    dir, strerror(errno));
	if ((s->name = strdup(name)) == NULL ||
	    asprintf(&s->sock_path, "%s/%s", s->sockdir, name) < 0 ||
	    asprintf(&s->wdir, "%s/%s.w", s->sockdir, name) < 0 ||
	    asprintf(&s->pid_path, "%s/%s.pid", s->sockdir, name) < 0 ||
	    asprintf(&s->log_path, "%s/%s.log", s->sockdir, name) < 0)
		return server_listen_cause(cause, "out of memory");
	if (strlen(s->sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return server_listen_cause(cause, "socket path %s is too long "
		    "for a Unix socket (%zu bytes at most)", s->sock_path,
		    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	/* a worker's control socket: wdir/<32 hex> */
	if (strlen(s->wdir) + 33 >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return server_listen_cause(cause, "worker directory %s: too "
		    "long for the workers' control sockets (a socket path has "
		    "at most %zu bytes)", s->wdir,
		    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	if (mkdir(s->wdir, 0700) != 0 && errno != EEXIST)
		return server_listen_cause(cause, "worker directory %s: %s",
		    s->wdir, strerror(errno));
	return server_listen_dir_check(s->wdir, 1, cause);
}

/* Connect to a Unix stream socket: 0 when something accepts there, else
 * -1 with errno (ECONNREFUSED: a stale socket; ENOENT: none). */
static int
server_listen_probe(const char *path)
{
	struct sockaddr_un sa;
	int fd, rc, e;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* The pid the pid file names (0 when it names none). */
static pid_t
server_listen_holder(server *s)
{
	char buf[32];
	FILE *f;
	long pid = 0;

	if ((f = fopen(s->pid_path, "re")) == NULL)
		return 0;
	if (fgets(buf, sizeof buf, f) != NULL)
		pid = strtol(buf, NULL, 10);
	fclose(f);
	return pid > 0 ? (pid_t)pid : 0;
}

/*
 * Take the pid file's lock (flock, held for the server's life; the kernel
 * drops it however the server dies): only its holder may replace the
 * socket, so two servers started at once end as one.  0: taken; 1:
 * another server holds it and accepts on the socket (*cause says so);
 * -1: error, or the holder never accepted within SERVER_START_WAIT_MS.
 */
int
server_listen_lock(server *s, char **cause)
{
	struct stat a, b;
	int64_t end = server_now_ms() + SERVER_START_WAIT_MS;
	struct timespec ts = {0, 50 * 1000 * 1000};

	for (;;) {
		s->pidfd = open(s->pid_path, O_RDWR | O_CREAT | O_CLOEXEC |
		    O_NOFOLLOW, 0600);
		if (s->pidfd < 0)
			return server_listen_cause(cause, "pid file %s: %s",
			    s->pid_path, strerror(errno));
		if (flock(s->pidfd, LOCK_EX | LOCK_NB) == 0) {
			/* the file we locked must still be the one named:
			 * a server on its way out unlinks it */
			if (fstat(s->pidfd, &a) == 0 &&
			    stat(s->pid_path, &b) == 0 &&
			    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
				return 0;
		} else if (errno != EWOULDBLOCK) {
			return server_listen_cause(cause, "pid file %s: flock: "
			    "%s", s->pid_path, strerror(errno));
		} else if (server_listen_probe(s->sock_path) == 0) {
			close(s->pidfd);
			s->pidfd = -1;
			server_listen_cause(cause, "a server already runs for "
			    "this store (pid %ld, socket %s)",
			    (long)server_listen_holder(s), s->sock_path);
			return 1;
		}
		close(s->pidfd);
		s->pidfd = -1;
		if (server_now_ms() > end)
			return server_listen_cause(cause, "another server (pid "
			    "%ld) holds %s but does not accept on %s",
			    (long)server_listen_holder(s), s->pid_path,
			    s->sock_path);
		nanosleep(&ts, NULL);
	}
}

/*
 * Listen on the socket, mode 0600.  A socket file that refuses
 * connections (its server died) is replaced; one that accepts belongs to
 * a process that does not hold our pid file, and is left alone (error).
 * The pid file gets our pid first.  -1 with *cause.
 */
int
server_listen_bind(server *s, char **cause)
{
	struct sockaddr_un sa;
	mode_t old;
	char pid[32], tmp[PATH_MAX];
	int rc, stale;

	/* the pid first: whoever finds the socket accepting reads it */
	snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(s->pidfd, 0) != 0 ||
	    pwrite(s->pidfd, pid, strlen(pid), 0) != (ssize_t)strlen(pid))
		return server_listen_cause(cause, "pid file %s: %s",
		    s->pid_path, strerror(errno));
	if (server_listen_probe(s->sock_path) == 0)
		return server_listen_cause(cause, "%s: another process "
		    "listens there (not a pyshelfd server of this store)",
		    s->sock_path);
	stale = errno != ENOENT;
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
	    0);
	if (s->lfd < 0)
		return server_listen_cause(cause, "socket: %s",
		    strerror(errno));
	/* bound and listening under a temporary name, then renamed into
	 * place: the path never refuses connections while we live (a
	 * client that found it refusing would remove it as stale), and a
	 * stale socket is replaced in one step */
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.%ld", s->sockdir, s->name,
	    (long)getpid()) >= sizeof sa.sun_path)
		snprintf(tmp, sizeof tmp, "%s", s->sock_path);
	memcpy(sa.sun_path, tmp, strlen(tmp) + 1);  /* fits: checked */
	(void)unlink(tmp);
	old = umask(0177);
	rc = bind(s->lfd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (rc != 0)
		return server_listen_cause(cause, "bind %s: %s", tmp,
		    strerror(errno));
	if (chmod(tmp, 0600) != 0 || listen(s->lfd, 128) != 0) {
		rc = errno;
		(void)unlink(tmp);
		return server_listen_cause(cause, "listen on %s: %s", tmp,
		    strerror(rc));
	}
	if (strcmp(tmp, s->sock_path) != 0 && rename(tmp, s->sock_path) != 0) {
		rc = errno;
		(void)unlink(tmp);
		return server_listen_cause(cause, "rename %s to %s: %s", tmp,
		    s->sock_path, strerror(rc));
	}
	if (stale)
		server_log("replaced the stale socket %s", s->sock_path);
	if (server_listen_record(s, cause) != 0) {
		(void)unlink(s->sock_path);
		close(s->lfd);
		s->lfd = -1;
		return -1;
	}
	return 0;
}

/*
 * Record in the store's directory that this server serves it: take the
 * store's server.lock (flock, for our life) and point server.sock at our
 * socket, so that a client whose $XDG_RUNTIME_DIR differs finds us
 * (sockpath_for).  A store that does not exist yet is recorded at a later
 * call (each accepted connection tries again).  Another live server of
 * the store holds the lock: -1 with *cause naming its socket (at start;
 * cause NULL: a later call, which logs it once).
 */
int
server_listen_record(server *s, char **cause)
{
	char lock[PATH_MAX + 32], rec[PATH_MAX + 32], tmp[PATH_MAX + 64];
	char other[SOCKPATH_MAX + 1];
	static int told;
	struct stat st;
	ssize_t n;
	int fd;

	if (server_listen_storefd >= 0 || stat(s->db, &st) != 0 ||
	    !S_ISDIR(st.st_mode))
		return 0;
	if (sockpath_record(s->db, SOCKPATH_RECORD_LOCK, lock,
	    sizeof lock) != 0 || sockpath_record(s->db, SOCKPATH_RECORD, rec,
	    sizeof rec) != 0 || (size_t)snprintf(tmp, sizeof tmp,
	    "%s.%ld", rec, (long)getpid()) >= sizeof tmp)
		return 0;   /* a path too long to record: found as before */
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		if (!told++)
			server_log("cannot record the server in the store: %s: "
			    "%s", lock, strerror(errno));
		return 0;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		close(fd);
		n = readlink(rec, other, sizeof other - 1);
		other[n > 0 ? n : 0] = '\0';
		if (cause != NULL)
			return server_listen_cause(cause, "another server "
			    "serves this store (%s), listening on %s: clients "
			    "find it through the store (%s); stop it first to "
			    "start one here", s->db, other[0] ? other : "?",
			    rec);
		if (!told++)
			server_log("another server serves this store, on %s: "
			    "this one is not recorded in it", other);
		return 0;
	}
	(void)unlink(tmp);
	if (symlink(s->sock_path, tmp) != 0 || rename(tmp, rec) != 0) {
		if (!told++)
			server_log("cannot record the server in the store: %s: "
			    "%s", rec, strerror(errno));
		(void)unlink(tmp);
		close(fd);
		return 0;
	}
	server_listen_storefd = fd;
	server_log("recorded in the store: %s -> %s", rec, s->sock_path);
	return 0;
}

/*
 * Is the store this server recorded itself in gone from its path (the
 * directory deleted, or deleted and made again: QA5 2)?  Its server.lock,
 * which we hold, is then no longer the file at that path.  0 while it
 * is, and while nothing is recorded (the store is not made yet).
 */
int
server_listen_store_gone(const server *s)
{
	char lock[PATH_MAX + 32];
	struct stat held, now;

	if (server_listen_storefd < 0 ||
	    fstat(server_listen_storefd, &held) != 0)
		return 0;
	if (held.st_nlink == 0)
		return 1;
	if (sockpath_record(s->db, SOCKPATH_RECORD_LOCK, lock,
	    sizeof lock) != 0)
		return 0;
	if (stat(lock, &now) != 0)
		return errno == ENOENT || errno == ENOTDIR;
	return now.st_dev != held.st_dev || now.st_ino != held.st_ino;
}

/*
 * Become a daemon: fork, setsid, fork again (no controlling terminal,
 * ever), stdin from /dev/null, stdout and stderr to the log file.  The
 * first process waits on a pipe for server_listen_ready() and exits with
 * what it says: 0 once the socket accepts, 1 with the reason.  Returns 0
 * in the daemon; the other processes never return.
 */
int
server_listen_daemon(server *s)
{
	int p[2], fd;
	pid_t pid;
	char buf[1024];
	ssize_t n;
	size_t len = 0;

	if (pipe2(p, O_CLOEXEC) != 0 || (pid = fork()) < 0) {
		fprintf(stderr, "pyshelfd: --server: fork: %s\n",
		    strerror(errno));
		exit(1);
	}
	if (pid > 0) {
		close(p[1]);
		while (len < sizeof buf - 1 &&
		    ((n = read(p[0], buf + len, sizeof buf - 1 - len)) > 0 ||
		    (n < 0 && errno == EINTR)))
			len += n > 0 ? (size_t)n : 0;
		buf[len] = '\0';
		if (len > 0 && buf[0] == '0')
			exit(0);
		fprintf(stderr, "pyshelfd: %s\n", len > 1 ? buf + 1 :
		    "the server died while starting (see its log)");
		exit(1);
	}
	close(p[0]);
	if (setsid() < 0 || (pid = fork()) < 0)
		_exit(1);
	if (pid > 0)
		_exit(0);
	s->ready_fd = p[1];
	if ((fd = open("/dev/null", O_RDONLY)) >= 0) {
		dup2(fd, 0);
		close(fd);
	}
	if ((fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND |
	    O_NOFOLLOW, 0600)) >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	if (chdir("/") != 0)
		return -1;
	return 0;
}

/* Tell the waiting parent (daemon) or the terminal (--foreground) how
 * the start went: status 0 ready, 1 failed with msg. */
void
server_listen_ready(server *s, int status, const char *msg)
{
	char buf[1024];

	if (status != 0)
		server_log("%s", msg);
	if (s->ready_fd < 0)
		return;
	snprintf(buf, sizeof buf, "%d%s", status, msg != NULL ? msg : "");
	(void)write(s->ready_fd, buf, strlen(buf));
	close(s->ready_fd);
	s->ready_fd = -1;
}

/* At exit: the socket, then the pid file (while its lock is held). */
void
server_listen_remove(server *s)
{
	char rec[PATH_MAX + 32], target[PATH_MAX];
	ssize_t n;

	/* the store's record, while its lock is held: ours only */
	if (server_listen_storefd >= 0) {
		if (sockpath_record(s->db, SOCKPATH_RECORD, rec,
		    sizeof rec) == 0 && (n = readlink(rec, target,
		    sizeof target - 1)) > 0) {
			target[n] = '\0';
			if (strcmp(target, s->sock_path) == 0)
				(void)unlink(rec);
		}
		close(server_listen_storefd);
		server_listen_storefd = -1;
	}
	if (s->lfd >= 0) {
		close(s->lfd);
		s->lfd = -1;
		(void)unlink(s->sock_path);
	}
	if (s->pidfd >= 0) {
		(void)unlink(s->pid_path);
		close(s->pidfd);
		s->pidfd = -1;
	}
}
