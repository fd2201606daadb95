/*
 * server.h - the supervisor, `pyshelfd --server`: it listens on the
 * store's Unix socket, checks each peer's uid, reads the HELLO and ATTACH
 * frames of a connection itself, then hands the connection to the worker
 * of its session (a `pyshelfd --worker` it starts with fork + exec) over
 * that worker's control channel.  It never starts Python and never opens
 * the LMDB environment: everything that touches the store is a worker's.
 *
 * Files: server.c (options, start, the poll loop, signals, exit),
 * server-listen.c (socket directory, pid file, listening socket, daemon),
 * server-client.c (a connection until it is routed), server-worker.c
 * (workers: start, control channel, reaping, adoption), server-sweep.c
 * (the sweeper: `pyshelfd --sweep` children, at start and on a timer),
 * server-end.c (END_SESSION, routed to the session's worker).
 */
#ifndef PYSHELF_SERVER_H
#define PYSHELF_SERVER_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#include "exec.h"

/* A client that sends no complete frame for this long before it is
 * routed is dropped. */
#define SERVER_FRAME_DEADLINE_MS 10000
/* How long a second `pyshelfd --server` waits for the one that holds the
 * pid file to accept, and how long adoption waits for CTL_READY. */
#define SERVER_START_WAIT_MS 30000
#define SERVER_ADOPT_WAIT_MS 5000
/* How long SESSIONS waits for the workers' answers to CTL_QUERY. */
#define SERVER_ADMIN_WAIT_MS 2000
/* Largest control message taken from a worker (CTL_STATE's JSON). */
#define SERVER_CTL_MAX (64u * 1024)

/* What the command line said. */
typedef struct server_options {
	const char *socket_path;  /* --socket, or NULL: the store's default */
	const char *db;           /* --db as given, or NULL: the default */
	int foreground;           /* --foreground: no daemon, log to stderr */
	int create_db;            /* --create-db */
	double exit_empty;        /* --exit-empty seconds (0 = never) */
	size_t max_frame;         /* --max-frame, told in WELCOME */
	char *wargv[40];          /* per-worker options, passed on verbatim */
	int wargc;                /* used slots of wargv */
	double sweep_interval;    /* --sweep-interval seconds (0: only at
	                             start and when a session ends) */
	char *sargv[12];          /* options passed on to the sweep */
	int sargc;                /* used slots of sargv */
} server_options;

/* Where a connection is before it is handed to a worker. */
enum {
	SERVER_CLIENT_HELLO = 1,  /* reading HELLO */
	SERVER_CLIENT_ATTACH,     /* WELCOME sent, reading ATTACH */
	SERVER_CLIENT_WAIT,       /* ATTACH read, waiting for its worker */
	SERVER_CLIENT_CLOSE,      /* writing a last ERROR, then closed */
	SERVER_CLIENT_ADMIN       /* SESSIONS read, waiting for the workers'
	                             answers (server-admin.c) */
};

struct server_session;

/* A client connection the supervisor holds: from accept until it is
 * handed to a worker (or refused). */
typedef struct server_client {
	int fd;                   /* the connection, non-blocking */
	pid_t pid;                /* peer's pid (SO_PEERCRED) */
	int state;                /* SERVER_CLIENT_* */
	uint8_t *buf;             /* the frame being read (no read-ahead) */
	size_t len;               /* bytes of it read */
	size_t cap;               /* allocated */
	uint8_t *out;             /* bytes to write (WELCOME, ERROR) */
	size_t outlen;            /* bytes in out */
	size_t outpos;            /* bytes of out written */
	int64_t deadline_ms;      /* drop it past this (monotonic ms); 0 none */
	uint64_t rid;             /* request id of the frame being read */
	int signal;               /* SIGNAL for the ERROR to come (WORKER_DIED) */
	char *session;            /* ATTACH's session name, once read */
	int mode;                 /* ATTACH's mode: 'c', 'w' or 'n' */
	struct server_session *sess; /* the session it waits for */
	uint64_t admin_q;         /* SESSIONS: the CTL_QUERY it waits for */
	struct server_client *next;  /* list of all held clients */
} server_client;

/* A session the supervisor knows: its worker, or how its last one ended. */
typedef struct server_session {
	char *name;               /* the session's name (NULL: adopted, not
	                             yet told by CTL_READY) */
	pid_t pid;                /* the worker's pid; 0 when none runs */
	int ctl;                  /* control socket (SEQPACKET), -1 none */
	int child;                /* the worker is our child (waitpid) */
	int ready;                /* CTL_READY came */
	int idle_ok;              /* CTL_IDLE_OK sent: no more CTL_CONN */
	int clients;              /* from CTL_STATE */
	int running;              /* from CTL_STATE: a call is running */
	uint8_t id[16];           /* session id, from CTL_READY */
	server_client *first;     /* the client that started the worker: its
	                             fd is kept until READY, to tell it when
	                             the worker dies first */
	int died_signal;          /* how the last worker ended: signal, */
	char *died_msg;           /* and a sentence; NULL when it ended well */
	int want_out;             /* a CTL_CONN waits for room (POLLOUT) */
	int stop;                 /* CTL_STOP: 1 waits for room (POLLOUT),
	                             2 sent (or SIGTERM) */
	uint64_t q_seq;           /* the last CTL_QUERY it answered */
	int q_clients;            /* and its answer: clients attached, */
	char q_running[33];       /* the running call's id in hex, or "", */
	int q_threads;            /* threads of shipped code alive */
	struct server_session *next;
} server_session;

/* The supervisor. */
typedef struct server {
	server_options opt;
	const char *argv0;        /* our argv[0], the workers' too */
	char *db;                 /* the store's absolute path */
	char *sockdir;            /* directory of the socket */
	char *name;               /* the socket's file name */
	char *sock_path;          /* sockdir/name */
	char *wdir;               /* sockdir/name.w: workers' control sockets */
	char *pid_path;           /* sockdir/name.pid (flock: one server) */
	char *log_path;           /* sockdir/name.log */
	int lfd;                  /* listening socket, -1 once closed */
	int sigfd;                /* signalfd for SIGCHLD, SIGTERM, SIGINT */
	int pidfd;                /* the pid file, locked for our life */
	int ready_fd;             /* daemon: pipe to the waiting parent */
	int stopping;             /* SIGTERM: workers stopped, waiting */
	int64_t empty_since;      /* monotonic ms with no worker, no client */
	server_client *clients;   /* connections held */
	server_session *sessions; /* sessions with a worker or a record */
	uint64_t start_wall_ms;   /* wall clock at start: leases run from no
	                             earlier (the sweep's --since) */
	pid_t sweep_pid;          /* the sweep running, 0 none */
	int64_t sweep_due_ms;     /* monotonic ms of the next sweep, 0 none */
	int sweep_again;          /* another sweep asked while one ran */
	uint64_t admin_q;         /* the last CTL_QUERY's number */
} server;

/* server.c */
int server_main(int argc, char **argv);
int64_t server_now_ms(void);
void server_stopping_error(server *s, server_client *c);
void server_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* pyshelfd.c: a per-worker option's value checked as the worker would
 * ('l' lease, 'i' checkpoint interval, 'y' sync, 'm' max frame, 'M' map
 * max, 'L' memory limit); -1 when refused. */
int pyshelfd_option_value(int c, const char *arg, worker_options *o);
/* pyshelfd.c: the --help text. */
void pyshelfd_usage(FILE *f);

/* server-listen.c */
int server_listen_paths(server *s, char **cause);
int server_listen_lock(server *s, char **cause);
int server_listen_bind(server *s, char **cause);
int server_listen_record(server *s, char **cause);
int server_listen_store_gone(const server *s);
int server_listen_daemon(server *s);
void server_listen_ready(server *s, int status, const char *msg);
void server_listen_remove(server *s);

/* server-client.c */
void server_client_accept(server *s);
void server_client_io(server *s, server_client *c, short revents);
void server_client_timeouts(server *s, int64_t now);
void server_client_error(server_client *c, uint64_t code, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));
void server_client_free(server *s, server_client *c);
void server_client_flush(server *s, server_client *c);
int server_client_count(const server *s);

/* server-admin.c */
void server_admin_sessions(server *s, server_client *c, wire_msg *m);
void server_admin_answered(server *s);
void server_admin_ready(server *s, server_session *ss);
void server_admin_timeout(server *s, server_client *c);

/* server-worker.c */
void server_worker_route(server *s, server_client *c);
void server_worker_ctl_io(server *s, server_session *ss, short revents);
void server_worker_reap(server *s);
void server_worker_adopt(server *s);
void server_worker_stop_all(server *s);
int server_worker_count(const server *s);
void server_worker_gc(server *s);

/* server-end.c */
void server_end_request(server *s, server_client *c, wire_msg *m);

/* server-sweep.c */
void server_sweep_start(server *s);
void server_sweep_soon(server *s);
void server_sweep_tick(server *s, int64_t now);
int64_t server_sweep_due(const server *s);
int server_sweep_reaped(server *s, pid_t pid, int status);
void server_sweep_stop(server *s);

#endif
