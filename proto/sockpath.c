/*
 * sockpath.c - the server socket's directory and name (sockpath.h).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sockpath.h"

int
sockpath_dir(char *buf, size_t n)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int len;

	if (xdg != NULL && xdg[0] == '/')
		len = snprintf(buf, n, "%s/pyshelf", xdg);
	else
		len = snprintf(buf, n, "/tmp/pyshelf-%lu",
		    (unsigned long)getuid());
	if (len < 0 || (size_t)len >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Set *cause to a sentence (when cause is not NULL); errno = err; -1. */
static int
sockpath_refuse(char **cause, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
sockpath_refuse(char **cause, int err, const char *fmt, ...)
{
	va_list ap;

	if (cause != NULL) {
		va_start(ap, fmt);
		if (vasprintf(cause, fmt, ap) < 0)
			*cause = NULL;
		va_end(ap);
	}
	errno = err;
	return -1;
}

int
sockpath_dir_make(const char *dir, char **cause)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return sockpath_refuse(cause, errno, "cannot create the socket "
		    "directory %s: %s", dir, strerror(errno));
	if (lstat(dir, &st) != 0)
		return sockpath_refuse(cause, errno, "socket directory %s: %s",
		    dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return sockpath_refuse(cause, ENOTDIR, "socket directory %s is "
		    "not a directory (a symlink or a file there is refused)",
		    dir);
	if (st.st_uid != getuid())
		return sockpath_refuse(cause, EPERM, "socket directory %s "
		    "belongs to uid %lu, not to you (uid %lu): refusing to use "
		    "it; remove it, or set XDG_RUNTIME_DIR to a directory of "
		    "yours", dir, (unsigned long)st.st_uid,
		    (unsigned long)getuid());
	if ((st.st_mode & 077) != 0)
		return sockpath_refuse(cause, EPERM, "socket directory %s is "
		    "open to others (mode %03o; it must be 0700): refusing to "
		    "use it; chmod 700 %s", dir, (unsigned)(st.st_mode & 0777),
		    dir);
	return 0;
}

/* FNV-1a, 64 bits. */
static uint64_t
sockpath_fnv(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

/* realpath(p), or p itself when it cannot be resolved (not there yet). */
static char *
sockpath_real(const char *p)
{
	char *r = realpath(p, NULL);

	return r != NULL ? r : strdup(p);
}

int
sockpath_name(const char *db, char *buf, size_t n)
{
	char *real, *def, *defreal = NULL;
	int len, same;

	if (db == NULL) {
		len = snprintf(buf, n, "default");
		goto out;
	}
	if ((real = sockpath_real(db)) == NULL)
		return -1;
	if ((def = sockpath_default_store()) != NULL)
		defreal = sockpath_real(def);
	same = defreal != NULL && strcmp(real, defreal) == 0;
	if (same)
		len = snprintf(buf, n, "default");
	else
		len = snprintf(buf, n, "db-%016llx",
		    (unsigned long long)sockpath_fnv(real));
	free(real);
	free(def);
	free(defreal);
out:
	if (len < 0 || (size_t)len >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Does something accept connections on the Unix socket at path? */
static int
sockpath_accepts(const char *path)
{
	struct sockaddr_un sa;
	int fd, rc;

	if (strlen(path) >= sizeof sa.sun_path)
		return 0;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0;
	rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	close(fd);
	return rc == 0;
}

/* The store directory of db (NULL: the default store), real when it
 * exists; malloc'd. */
static char *
sockpath_store_dir(const char *db)
{
	char *def, *real;

	if (db != NULL)
		return sockpath_real(db);
	if ((def = sockpath_default_store()) == NULL)
		return NULL;
	real = sockpath_real(def);
	free(def);
	return real;
}

int
sockpath_record(const char *db, const char *file, char *buf, size_t n)
{
	char *dir = sockpath_store_dir(db);
	int len;

	if (dir == NULL)
		return -1;
	len = snprintf(buf, n, "%s/%s", dir, file);
	free(dir);
	if (len < 0 || (size_t)len >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int
sockpath_recorded(const char *db, char *buf, size_t n)
{
	char rec[PATH_MAX + 32], target[SOCKPATH_MAX + 1], *slash;
	struct stat st;
	ssize_t len;

	if (sockpath_record(db, SOCKPATH_RECORD, rec, sizeof rec) != 0)
		return -1;
	if ((len = readlink(rec, target, sizeof target)) < 0)
		return -1;
	if ((size_t)len >= sizeof target || (size_t)len >= n ||
	    target[0] != '/') {
		errno = EINVAL;
		return -1;
	}
	target[len] = '\0';
	/* ours alone: the socket, and a directory no one else may write */
	if (lstat(target, &st) != 0)
		return -1;
	if (!S_ISSOCK(st.st_mode) || st.st_uid != getuid()) {
		errno = EPERM;
		return -1;
	}
	slash = strrchr(target, '/');
	*slash = '\0';
	if (stat(slash == target ? "/" : target, &st) != 0)
		return -1;
	*slash = '/';
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
	    (st.st_mode & 022) != 0) {
		errno = EPERM;
		return -1;
	}
	if (!sockpath_accepts(target)) {
		errno = ECONNREFUSED;
		return -1;
	}
	memcpy(buf, target, (size_t)len + 1);
	return 0;
}

int
sockpath_for(const char *db, char *buf, size_t n)
{
	char name[64];
	size_t len;

	/* the store names its live server, wherever that one listens */
	if (sockpath_recorded(db, buf, n) == 0)
		return 0;
	if (sockpath_dir(buf, n) != 0 ||
	    sockpath_name(db, name, sizeof name) != 0)
		return -1;
	len = strlen(buf);
	if (len + 1 + strlen(name) + 1 > n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	buf[len] = '/';
	strcpy(buf + len + 1, name);
	return 0;
}
