/*
 * sockpath.h - where a server's socket lives, one rule for the server
 * (exec/server*.c) and its clients (client/): the directory, its checks,
 * and the socket's name for a store.
 *
 *   $XDG_RUNTIME_DIR/pyshelf/   else /tmp/pyshelf-UID/    (0700, ours)
 *       default                 the default store's server socket
 *       db-<16 hex>             another store's: FNV-1a 64 of its realpath
 *       <name>.lock             flock'ed by a client that starts a server
 *       <name>.pid, <name>.log  the running server's pid and log
 *       <name>.w/               its workers' control sockets
 *
 *   and in the store's directory (its server named by the store itself,
 *   whatever $XDG_RUNTIME_DIR each shell has):
 *       server.sock             a symbolic link to the live server's socket
 *       server.lock             flock'ed by that server for its life
 *
 * A digest keeps every path short enough for sun_path (108 bytes) however
 * long the store's path is.  All functions: 0, or -1 with errno.
 */
#ifndef PYSHELF_SOCKPATH_H
#define PYSHELF_SOCKPATH_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* The longest socket path this accepts (sun_path's size, NUL included). */
#define SOCKPATH_MAX 108

/* The socket directory, not created. ENAMETOOLONG when it does not fit. */
int sockpath_dir(char *buf, size_t n);
/* Create dir 0700 if missing (its parent too, for /tmp/pyshelf-UID's
 * XDG case), then check it: a directory, owned by this uid, no group or
 * other access.  -1 with *cause (malloc'd sentence) when it is refused. */
int sockpath_dir_make(const char *dir, char **cause);
/* The socket name of store db: "default" for NULL or the default store
 * ($XDG_DATA_HOME/pyshelf or ~/.local/share/pyshelf, as store.h's
 * store_default_path), else "db-" and 16 hex digits of FNV-1a 64 of
 * realpath(db) (db itself when it does not exist yet). */
int sockpath_name(const char *db, char *buf, size_t n);
/* The socket of the server the store db records (SOCKPATH_RECORD in its
 * directory), when that socket is this uid's, in a directory no one else
 * may write, and accepts connections; else -1 (ENOENT: no record). */
int sockpath_recorded(const char *db, char *buf, size_t n);
/* The path of file in store db's directory (NULL: the default store). */
int sockpath_record(const char *db, const char *file, char *buf, size_t n);
#define SOCKPATH_RECORD "server.sock"
#define SOCKPATH_RECORD_LOCK "server.lock"
/* The store's recorded live server's socket (sockpath_recorded), else
 * sockpath_dir() "/" sockpath_name(db). */
int sockpath_for(const char *db, char *buf, size_t n);
/* The default store's directory (malloc'd; NULL on ENOMEM).  The one
 * rule: store_default_path() returns this too (inline, so that the store
 * library and the client, which link different halves, share it). */
static inline char *
sockpath_default_store(void)
{
	const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
	char *p = NULL;

	if (xdg != NULL && *xdg == '/') {
		if (asprintf(&p, "%s/pyshelf", xdg) < 0)
			return NULL;
	} else if (asprintf(&p, "%s/.local/share/pyshelf",
	    home != NULL && *home != '\0' ? home : "/tmp") < 0)
		return NULL;
	return p;
}

#endif
