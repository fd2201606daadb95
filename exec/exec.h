/*
 * exec.h - the backend pyshelfd: what its files share.
 *
 * Each file is named after what it holds, and its name is the prefix of
 * its functions (worker-reader.c: worker_reader_*):
 *   pyshelfd.c        main: options, --help, --version, process limits
 *   worker.c          one worker's life: descriptors, start, the main
 *                     loop, shutdown; worker_send, worker_set_running
 *   worker-reader.c   the reader thread: PING, INTERRUPT, deadlines, the
 *                     queue of frames for the main thread
 *   worker-output.c   fds 1 and 2 as pipes, the forwarder thread, OUTPUT
 *   worker-session.c  opening the store, locking and claiming the session
 *   worker-sweep.c    the sweep of expired sessions when a store opens
 *   dispatch.c        serving one request frame; checkpoints and commits
 *   interp.c          starting and ending the interpreter
 *   py*.c             the `_pyshelfd` module and its types (pyexec.h)
 *   backend.py        the backend's Python half, compiled in
 * docs/HACKING.md follows one request through them.
 *
 * GIL rules: functions marked "GIL held" must be called with the GIL held
 * and return with it held; the reader thread never touches Python.
 */
#ifndef PYSHELF_EXEC_H
#define PYSHELF_EXEC_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "store.h"
#include "wire.h"

/* Why the running code is being stopped. */
enum worker_stop {
	WORKER_STOP_NONE = 0,
	WORKER_STOP_INTERRUPT = 1,  /* the client sent INTERRUPT */
	WORKER_STOP_TIMEOUT = 2     /* the request's timeout ran out */
};

/* A frame copied off the wire, queued for the main thread. */
typedef struct worker_frame {
	struct worker_frame *next;  /* queue link */
	size_t len;                 /* bytes in data */
	uint8_t data[];             /* the whole frame */
} worker_frame;

/* Options of one pyshelfd run. */
typedef struct worker_options {
	const char *db;              /* store directory (NULL: default) */
	const char *session;         /* session name */
	int create;                  /* create the session when missing */
	char mode;                   /* shelve's flag: 'c' (create when
	                                missing), 'w' (must exist), 'n'
	                                (always new), 'r' (read-only) */
	int create_db;               /* make the store's missing parent
	                                directories too */
	int allow_foreign;           /* --allow-foreign-store: skip the owner
	                                check of worker_session_check_owner */
	uint64_t lease_ms;           /* session lease */
	int lease_set;               /* --lease given: apply to old sessions */
	double checkpoint_interval;  /* seconds between interval checkpoints */
	enum store_sync sync;        /* commit durability */
	size_t max_frame;            /* largest incoming body */
	size_t map_max;              /* largest map */
	size_t memory_limit;         /* RLIMIT_DATA, 0 none */
} worker_options;

/* The one worker of this process (stdio mode: one session). */
typedef struct worker {
	worker_options opt;          /* as given */
	store *st;                   /* the open store */
	store_session sess;          /* the session record, as last written */
	int sess_dirty;              /* sess changed since last commit */
	int created;                 /* the session was created by this run */
	int lock_fd;                 /* holds the session's lock, or -1 */
	int has_ended;               /* created where a session of the same
	                                name had ended: ended says how */
	store_tomb ended;

	int in_fd;                   /* protocol input */
	int out_fd;                  /* protocol output (a dup of stdout) */
	pthread_mutex_t out_lock;    /* serialises writes to out_fd */
	int out_closed;              /* the closing ERROR went out: nothing
	                                more is written (under out_lock) */

	pthread_t main_thread;       /* runs Python */
	pthread_t reader;            /* reads frames, handles INTERRUPT/PING */
	pthread_mutex_t lock;        /* guards the fields below */
	worker_frame *qhead, *qtail; /* frames for the main thread */
	int wake_fd;                 /* write end of the wake pipe (also
	                                Python's signal wakeup fd) */
	int eof;                     /* input ended (or broke) */
	int quit;                    /* the reader must leave */
	uint64_t running_id;         /* request id of running code, 0 none */
	uint64_t deadline_ms;        /* monotonic deadline of running code */
	uint64_t stop_sent_ms;       /* when the last stop signal went out */
	int sigs_inflight;           /* we sent SIGINT, handler not run yet */
	int stop_kind;               /* reason of the last stop sent */
	int rwake_fd;                /* eventfd: wakes the reader */
	int wake_fd_r;               /* read end of the main thread's wake pipe */
	int detached;                /* DETACH or CLOSE served: leave the loop */
	int hello_done;              /* HELLO answered (set under lock: the
	                                reader answers PING only after) */
	int closed;                  /* CLOSE served: the session is gone */
	int requests_since_full;     /* a request ran since the last full
	                                checkpoint (interval ones skip if not) */
	volatile sig_atomic_t terminate; /* SIGTERM/SIGINT: shut down cleanly */

	/* why this worker cannot serve, set where starting it fails and sent
	 * by worker_send_fatal */
	int fatal_code;              /* an ERRCODE; 0: WIRE_ERR_STORE */
	long fatal_pid;              /* SESSION_BUSY: the holder's pid */
	int fatal_has_tomb;          /* SESSION_DEAD: fatal_tomb is the old
	                                session's tombstone */
	store_tomb fatal_tomb;

	/* request being served (for OUTPUT); read by the output forwarder */
	_Atomic uint64_t current_id;

	pid_t pid;                   /* this worker's process: any other pid
	                                is a child forked by shipped code */
	int forked;                  /* set in a child (pthread_atfork) */
	int log_fd;                  /* pyshelfd's own stderr (fd 2 becomes
	                                the stderr pipe) */
	int pipe_r[3];               /* [1], [2]: read ends of the pipes that
	                                fds 1 and 2 write to */
	int fwd_quit_fd;             /* eventfd: the forwarder must leave */
	pthread_t forwarder;         /* sends what fds 1/2 get as OUTPUT */
	int forwarder_on;            /* the forwarder was started */
	pthread_mutex_t drain_lock;  /* one reader of the pipes at a time, and
	                                bytes read are sent before it is let go */
} worker;

extern worker *the_worker;

/* worker.c */
/* Serve one client on stdin/stdout and the session w->opt names until it
 * detaches or closes, input ends or a signal comes; then checkpoint,
 * release the session and end the interpreter.  The exit status: 0, or 1
 * when it could not start (the client got an ERROR saying why), the last
 * checkpoint failed or the interpreter did not end cleanly. */
int worker_run(worker *w);
/* Send an encoded buffer under the output lock; -1 when the client is
 * gone.  Any thread. */
int worker_send(worker *w, const wire_buf *b);
/* Mark code as running (id != 0) with a deadline, or as finished. */
void worker_set_running(worker *w, uint64_t id, uint64_t timeout_ms);
/* The monotonic clock in milliseconds. */
uint64_t worker_mono_ms(void);
/* Is this a child forked by shipped code (never the worker itself)?  Such
 * a process must not touch the protocol or the store. */
int worker_in_child(void);

/* worker-reader.c */
/* Start the reader thread (worker_reader_main; SIGINT and SIGTERM blocked
 * in it).  0, or -1 with *cause. */
int worker_reader_start(worker *w, char **cause);
/* Tell the reader to leave, wake it, and join it. */
void worker_reader_stop(worker *w);
/* Take the next queued frame (NULL: none; the caller frees it); *eof says
 * whether input has ended. */
worker_frame *worker_reader_pop(worker *w, int *eof);

/* worker-output.c */
/* Make fds 1 and 2 pipes and start the forwarder thread that sends what
 * they get as OUTPUT.  0, or -1 with *cause (fds 1 and 2 are then
 * pyshelfd's stderr again). */
int worker_output_start(worker *w, char **cause);
/* Send what the pipes hold, stop the forwarder, point fds 1 and 2 back at
 * pyshelfd's stderr.  Safe after a failed start. */
void worker_output_stop(worker *w);
/* Output of the current request on stream 1/2: written to the pipe that
 * fd 1/2 is, which the forwarder sends as OUTPUT frames (drained before
 * every reply); outside a request, to pyshelfd's stderr.  GIL held
 * (released around the write). */
int worker_output(worker *w, int stream, const char *p, size_t n);
/* Send what is waiting in the stdout/stderr pipes as OUTPUT now (before a
 * reply, so that a request's output comes first).  Any thread but the
 * forwarder; no GIL needed. */
void worker_output_drain(worker *w);

/* worker-session.c */
/* Open the store (w->opt.db, or the default), sweep it unless read-only,
 * and claim the session: w->st, w->sess and w->lock_fd are set.  0, or -1
 * with *cause (malloc'd) and w->fatal_* saying why. */
int worker_session_open(worker *w, char **cause);
/* Say how a session ended (a tombstone) as a sentence into buf. */
void worker_session_tomb_text(const store_tomb *tb, char *buf,
    size_t n);

/* worker-sweep.c */
/* End expired sessions no process holds, purge ended ones, drop old
 * tombstones.  Errors only stop the sweep: the worker opens anyway. */
void worker_sweep(worker *w);

/* interp.c */
int interp_init(char **cause);
int interp_fini(void);

/* dispatch.c */
/* Serve one request frame.  GIL held. */
int dispatch_frame(worker *w, const uint8_t *p, size_t n);
/* Checkpoint.  full: 0 what requests touched; 1 also loaded mutable
 * entries, if a request ran since the last such; 2 the same, always.
 * GIL held.  0 or -1. */
int dispatch_checkpoint(worker *w, int full);
/* Send notices about entries that cannot be persisted.  GIL held. */
void dispatch_notices(worker *w);
/* Mark the session as not served by any process.  GIL held. */
void dispatch_release_session(worker *w);
/* A SIGINT/SIGTERM reached the worker: what the running code raises (an
 * enum pyctx_sig of pyexec.h).  GIL held. */
int dispatch_signal(worker *w, int signum);
/* Send an ERROR frame. */
int dispatch_error(worker *w, uint64_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
