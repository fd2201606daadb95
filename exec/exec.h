/*
 * exec.h - the backend pyshelfd: what its files share.
 *
 * Each file is named after what it holds, and its name is the prefix of
 * its functions (worker-reader.c: worker_reader_*):
 *   pyshelfd.c        main: options, --help, --version, process limits
 *   worker.c          one worker's life: descriptors, start, the main
 *                     loop, shutdown; worker_send, worker_set_running
 *   worker-conn.c     the table of client connections (stdio: one; server
 *                     mode: every client attached to the session)
 *   worker-reader.c   reading the connections (main thread when idle, the
 *                     reader thread while code runs): PING, INTERRUPT,
 *                     deadlines, the queue of frames for the main thread
 *   worker-long.c     a client's LONG as its reader sees it: the pushed
 *                     buffers' PARTs read straight into their memory
 *   worker-control.c  server mode: the control channel to the supervisor
 *                     (CTL_CONN, CTL_READY, CTL_STATE, CTL_IDLE)
 *   worker-calls.c    call ids: the journal, joining and replaying calls,
 *                     where a call's OUTPUT and RESULT go
 *   worker-restart.c  the hard interrupt: re-exec of the worker
 *   worker-output.c   fds 1 and 2 as pipes, the forwarder thread, OUTPUT
 *   worker-session.c  opening the store, locking and claiming the session
 *   worker-end.c      ending the session with no client closing it
 *                     (END_SESSION, the lease run out while idle)
 *   worker-threads.c  threads of shipped code count as code running
 *   worker-sweep.c    the sweep of expired sessions when a stdio worker
 *                     opens a store
 *   sweep.c           the sweeper: sweep_run, `pyshelfd --sweep`
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
#include <stdio.h>

#include "store.h"
#include "wire.h"

/* Who reads the client connections (worker-reader.c). */
enum worker_in {
	WORKER_IN_MAIN = 0,         /* the main thread, in its wait */
	WORKER_IN_READER = 1        /* the reader thread: code runs */
};

/* How long the main thread may be busy (running code, a checkpoint)
 * before the reader thread takes the connections over, so that PING,
 * INTERRUPT and the rest are answered: the most an INTERRUPT waits. */
#define WORKER_TAKEOVER_MS 2

/* The hard grace of a stop (CTL_STOP) when --hard-grace is 0 (never):
 * a stopping server must end even then. */
#define WORKER_STOP_GRACE_MS 5000

/* Why the running code is being stopped. */
enum worker_stop {
	WORKER_STOP_NONE = 0,
	WORKER_STOP_INTERRUPT = 1,  /* the client sent INTERRUPT */
	WORKER_STOP_TIMEOUT = 2,    /* the request's timeout ran out */
	WORKER_STOP_SHUTDOWN = 3    /* the server is stopping (CTL_STOP) */
};

struct journal;
struct worker_call;

/* A LONG (docs/PROTOCOL.md 7.7) as the reader of its connection sees it
 * (worker-long.c).  The main thread (dispatch-long.c) judges the LONG;
 * the reader queues its head and each PART of its body marked
 * WORKER_FRAME_WAIT and reads nothing more of the connection until the
 * main thread, having served that frame, answers (worker_long_answer):
 * go on with the body, drop the LONG's PARTs (refused), or read its
 * out-of-band buffers straight into the memory it lends (DATA: each
 * PART's header is parsed, its data read into the buffers by read(),
 * with no copy but what came in with a header).  The fields are the
 * input owner's (worker-reader.c), except while state is WAIT, when only
 * the main thread writes them, under w->lock. */
enum worker_long_state {
	WORKER_LONG_NONE = 0,        /* no LONG: frames go to the queue */
	WORKER_LONG_WAIT = 1,        /* a WAIT frame is queued: not read */
	WORKER_LONG_BODY = 2,        /* its body's PARTs go to the queue */
	WORKER_LONG_DATA = 3,        /* its buffers' PARTs into dst */
	WORKER_LONG_DROP = 4         /* refused: its PARTs are dropped */
};
typedef struct worker_long {
	int state;                   /* enum worker_long_state */
	int resume;                  /* answered: act on what buf holds
	                                before reading more (w->lock) */
	uint64_t id;                 /* the LONG's request id */
	uint8_t *const *dst;         /* DATA: the buffers' memory and */
	const uint64_t *dst_len;     /* lengths (lent by dispatch-long.c) */
	size_t nbufs;
	size_t idx, off;             /* DATA: where the next byte goes */
	size_t left;                 /* DATA: bytes of all buffers to come */
	size_t part_left;            /* DATA: of them, in the PART being read */
} worker_long;

/*
 * One client connection.  Stdio mode has exactly one (stdin/stdout); a
 * server-mode worker has one per client attached to its session, each a
 * socket the supervisor handed over (CTL_CONN).  A connection lives while
 * the table, a queued frame or a call refers to it (refs, under w->lock);
 * once dropped (gone) nothing is read from or written to it.
 */
typedef struct worker_conn {
	struct worker_conn *next;    /* in w->conns (w->lock) */
	int fd;                      /* read side */
	int out_fd;                  /* write side (fd itself for a socket) */
	int own_fds;                 /* close fd (and out_fd) when freed */
	int sock_fd;                 /* after PIPES: the socket it came on,
	                                unread, closed when freed; -1 */
	unsigned serial;             /* numbers connections in logs */
	int refs;                    /* w->lock */
	int gone;                    /* dropped from the table (w->lock) */
	int unlisted;                /* out of the table and its count, its
	                                last reply still to go (w->lock) */
	int attached;                /* HELLO / ATTACH answered, or adopted:
	                                whoever reads it answers PING itself
	                                (w->lock) */
	pthread_mutex_t out_lock;    /* serialises writes */
	int out_closed;              /* nothing more is written (out_lock) */
	/* the input's owner's (w->in_owner: the main thread while it waits
	 * for requests, the reader while code runs; worker-reader.c) */
	uint8_t *buf;
	size_t len, cap, max;        /* buffered bytes, frame size limit */
	size_t pipe_got;             /* bytes read since the pipe was last
	                                settled (input owner's) */
	size_t cur;                  /* bytes at buf's start of the frame
	                                being acted on (0: none) */
	worker_long lng;             /* a LONG as its reader sees it */
	int detaching;               /* its DETACH is queued: not read any
	                                more (w->lock) */
} worker_conn;

/* What a queued frame is. */
enum worker_frame_kind {
	WORKER_FRAME_WIRE = 0,      /* a frame as it came */
	WORKER_FRAME_WAIT = 1,      /* the same, of a LONG: its connection is
	                               not read until the main thread has
	                               served it and answered */
	WORKER_FRAME_DETACH = 2     /* server mode: a DETACH, its connection
	                               read no more (worker_reader_detach) */
};

/* A frame copied off the wire, queued for the main thread. */
typedef struct worker_frame {
	struct worker_frame *next;  /* queue link */
	worker_conn *conn;          /* where it came from (holds a ref) */
	int kind;                   /* enum worker_frame_kind */
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
	uint64_t since_ms;           /* --since: leases run from no earlier
	                                (wall ms: the server's start), 0 */
	double checkpoint_interval;  /* seconds between interval checkpoints */
	enum store_sync sync;        /* commit durability */
	size_t max_frame;            /* largest incoming body */
	size_t map_max;              /* largest map */
	size_t memory_limit;         /* RLIMIT_DATA, 0 none */
	/* server mode (--worker): the supervisor's worker */
	int server;                  /* 1: serve connections handed over the
	                                control channel, not stdio */
	int control_fd;              /* --control-fd: the first control
	                                channel, -1 none */
	const char *control_path;    /* --control: listen here for a new
	                                supervisor's control connection */
	double idle_exit;            /* seconds with no client and nothing
	                                running before exiting; 0 never */
	double hard_grace;           /* seconds a stop may take before the
	                                worker restarts itself */
	const char *adopt;           /* --adopt CTL,FD,...: a hard restart's
	                                control fd and connections */
	int stopping;                /* --stopping: a hard restart made while
	                                the server stopped this worker: exit
	                                as soon as the session is open */
	int argc;                    /* the command line, for the re-exec */
	char **argv;
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

	int in_fd;                   /* protocol input (stdio) */
	int out_fd;                  /* protocol output (a dup of stdout) */
	worker_conn *conns;          /* the connections (w->lock) */
	worker_conn *stdio_conn;     /* stdio mode: the one connection */
	worker_conn *cur_conn;       /* main thread: the frame being served
	                                came from here (worker_send's target) */
	int nconns;                  /* connections in the table (w->lock) */
	unsigned conn_serial;
	uint64_t idle_since_ms;      /* no connection and nothing running
	                                since (0: busy) (w->lock) */

	/* server mode: the control channel (worker-control.c) */
	int ctl_fd;                  /* to the supervisor, -1 none */
	int ctl_listen_fd;           /* --control socket, -1 none */
	pthread_mutex_t ctl_lock;    /* serialises writes to ctl_fd */
	int ctl_idle_asked;          /* CTL_IDLE sent, no answer yet */
	int ctl_idle_ok;             /* CTL_IDLE_OK came: exit */
	int idle_exited;             /* the worker left its loop idle */
	int attaches;                /* ATTACHes answered so far (reader) */
	uint64_t new_lease_ms;       /* an ATTACH's LEASE_MS, for the main
	                                thread to apply (w->lock) */
	int new_lease;
	char state_sent[96];         /* the last CTL_STATE's JSON */

	/* calls (worker-calls.c) */
	struct journal *journal;     /* per session; NULL: none */
	pthread_mutex_t call_lock;   /* the calls below, and the order of a
	                                call's OUTPUT against its joiners */
	struct worker_call *calls;   /* queued and running calls with an id */
	struct worker_call *call;    /* the one running (main thread sets) */
	worker_conn *out_conn;       /* where OUTPUT of the request being
	                                served goes when it has no call id */
	uint64_t out_id;             /* its request id */

	/* the hard interrupt (worker-restart.c) */
	char lost_text[1024];        /* what a restart loses: the last
	                                checkpoint's time, volatile entries
	                                (main thread writes, under w->lock) */
	uint64_t stop_first_ms;      /* when the first stop of the running
	                                code went out (w->lock) */
	int restarting;              /* the reader is re-executing */
	int mem_only;                /* entries that live only in memory
	                                (volatile, unwritten), as of the last
	                                checkpoint (w->lock) */
	int hibernating;             /* an ATTACH with flag 'n' or 'r' found the
	                                session idle here: checkpoint and exit
	                                (worker-control.c) (w->lock) */
	int stop_asked;              /* CTL_STOP came (or --stopping): serve
	                                no more requests; the running call is
	                                stopped; checkpoint and exit (w->lock) */

	pthread_t main_thread;       /* runs Python */
	pthread_t reader;            /* reads frames, handles INTERRUPT/PING */
	pthread_mutex_t lock;        /* guards the fields below */
	worker_frame *qhead, *qtail; /* frames for the main thread */
	int wake_fd;                 /* write end of the wake pipe (also
	                                Python's signal wakeup fd) */
	int eof;                     /* input ended (or broke) */
	uint64_t eof_ms;             /* when (stdio) */
	int quit;                    /* the reader must leave */
	uint64_t running_id;         /* request id of running code, 0 none */
	worker_conn *running_conn;   /* the connection it came from */
	uint64_t deadline_ms;        /* monotonic deadline of running code */
	uint64_t stop_sent_ms;       /* when the last stop signal went out */
	int sigs_inflight;           /* we sent SIGINT, handler not run yet */
	int stop_kind;               /* reason of the last stop sent */
	int rwake_fd;                /* eventfd: wakes the reader */
	/* who reads the client connections (worker-reader.c's header) */
	int in_owner;                /* WORKER_IN_MAIN / WORKER_IN_READER
	                                (w->lock) */
	int main_busy;               /* the main thread is away from its wait
	                                for requests (w->lock) */
	int want_back;               /* main waits again: the reader is to
	                                hand the connections back (w->lock) */
	int busy_fd;                 /* timerfd: fires WORKER_TAKEOVER_MS
	                                after main got busy; the reader then
	                                takes the connections */
	int busy_armed;              /* busy_fd is armed (w->lock) */
	uint64_t busy_since_us;      /* main got busy then (w->lock) */
	int wake_fd_r;               /* read end of the main thread's wake pipe */
	int detached;                /* DETACH or CLOSE served: leave the loop */
	int hello_done;              /* HELLO answered (set under lock: the
	                                reader answers PING only after) */
	int closed;                  /* CLOSE served: the session is gone */
	int ended_here;              /* END_SESSION or the lease ended the
	                                session (worker-end.c): leave the
	                                loop, no checkpoint (w->lock) */
	store_tomb end_tomb;         /* its tombstone, once ended_here */
	int threads;                 /* threads of shipped code alive: code
	                                running (worker-threads.c) (w->lock) */
	int threads_told;            /* what worker_threads_stay logged
	                                (main thread) */
	int requests_since_full;     /* a request ran since the last full or
	                                interval checkpoint (the interval's
	                                round robin starts a new cycle) */
	int detach_queued;           /* server mode: DETACH frames in the
	                                queue (w->lock) */
	int cp_owed;                 /* server mode: a client left while the
	                                main thread could not checkpoint (its
	                                DETACH came while a call ran, or its
	                                connection ended): a full checkpoint
	                                once it can (w->lock) */
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

	/* the lease keeper (worker-lease.c) */
	pthread_t leaser;            /* writes last_seen while in use */
	pthread_mutex_t lease_lock;  /* lease_quit, lease_cond */
	pthread_cond_t lease_cond;
	int lease_quit;
	int lease_kick;              /* the lease changed: lease_hint_ms */
	uint64_t lease_hint_ms;
	int lease_on;                /* the thread was started */
} worker;

extern worker *the_worker;

/* worker.c */
/* Serve one client on stdin/stdout and the session w->opt names until it
 * detaches or closes, input ends or a signal comes; then checkpoint,
 * release the session and end the interpreter.  The exit status: 0, or 1
 * when it could not start (the client got an ERROR saying why), the last
 * checkpoint failed or the interpreter did not end cleanly. */
int worker_run(worker *w);
/* Send an encoded buffer to the connection of the frame being served
 * (stdio: the one client); -1 when it is gone.  Main thread. */
int worker_send(worker *w, const wire_buf *b);
/* Send an encoded buffer to one connection under its output lock; -1
 * when it is gone.  Any thread. */
int worker_send_to(worker *w, worker_conn *c, const wire_buf *b);
/* Mark code as running (id != 0) with a deadline, or as finished. */
void worker_set_running(worker *w, uint64_t id, uint64_t timeout_ms);
/* A line for pyshelfd's own stderr (never a client's output, which fd 2
 * is while a request runs).  Any thread. */
void worker_log(worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The monotonic clock in milliseconds. */
uint64_t worker_mono_ms(void);
/* Is this a child forked by shipped code (never the worker itself)?  Such
 * a process must not touch the protocol or the store. */
int worker_in_child(void);

/* worker-conn.c */
/* A new connection in the table (fds taken over when own_fds).  NULL when
 * out of memory.  Takes w->lock. */
worker_conn *worker_conn_add(worker *w, int fd, int out_fd, int own_fds);
/* PIPES: answer OK carrying the client's ends of a pipe each way, then
 * serve c over them (worker-conn.c).  0, or -1 when the connection broke
 * (an ERROR went out when the pipes could not be made: the client stays
 * on the socket).  Whoever reads c (worker_reader_frame): the main
 * thread while idle, the reader while code runs. */
int worker_conn_pipes(worker *w, worker_conn *c, uint64_t id);
/* Point the fd at /dev/null (keeping its number ours): a pipe's peer
 * sees EOF, or EPIPE, now.  nul: an open /dev/null. */
void worker_conn_cut_fd(int fd, int nul);
/* Take / drop a reference (w->lock held: _locked; else taken). */
void worker_conn_ref_locked(worker_conn *c);
void worker_conn_unref(worker *w, worker_conn *c);
void worker_conn_unref_locked(worker *w, worker_conn *c);
/* Drop a connection from the table (EOF, DETACH, broken): nothing more is
 * read or written on it; the peer sees EOF.  w->lock held. */
void worker_conn_drop_locked(worker *w, worker_conn *c);
/* Take c out of the table and nconns, leaving it open for one last
 * reply (DETACH's OK: a client that attaches again the moment it has it
 * must find this one gone); worker_conn_drop_locked then closes it. */
void worker_conn_unlist_locked(worker *w, worker_conn *c);
/* Is the connection still in the table (any thread)? */
int worker_conn_live(worker *w, worker_conn *c);
/* Write b to every attached connection but skip (CLOSE's notice). */
void worker_conn_broadcast(worker *w, worker_conn *skip, const wire_buf *b);

/* worker-reader.c */
/* Free a frame worker_reader_pop gave. */
void worker_reader_frame_free(worker *w, worker_frame *f);
/* Start the reader thread (worker_reader_main; SIGINT and SIGTERM blocked
 * in it).  0, or -1 with *cause. */
int worker_reader_start(worker *w, char **cause);
/* After a hard restart (--adopt): act on the frames the old image had
 * read but not acted on (worker-restart.c carries them over).  Main
 * thread, before worker_reader_start. */
void worker_reader_carried(worker *w);
/* Tell the reader to leave, wake it, and join it. */
void worker_reader_stop(worker *w);
/* Take the next queued frame (NULL: none; the caller frees it); *eof says
 * whether input has ended. */
worker_frame *worker_reader_pop(worker *w, int *eof);
/* Main thread, GIL released: wait up to timeout_ms (-1: no limit) for a
 * request, a wake (a frame the reader queued, a signal) or the timeout;
 * while main owns the connections it reads them itself here and queues
 * what they bring.  Takes the connections back from the reader first. */
void worker_reader_idle_wait(worker *w, int timeout_ms);
/* Main thread: code with a deadline starts (the reader, if it owns the
 * connections now, must watch it). */
void worker_reader_deadline(worker *w);
/* Input owner: queue n bytes at p (a frame) from c for the main thread,
 * as kind (WORKER_FRAME_WAIT: c is not read until the main thread
 * answers).  0 (2 for WAIT), or -1 when out of memory. */
int worker_reader_queue(worker *w, worker_conn *c, const uint8_t *p,
    size_t n, int kind);

/* worker-long.c */
/* Input owner: how the frame m of c, about to be queued, goes: a
 * WORKER_FRAME_* kind (WAIT only when may_wait: the main thread reads),
 * or -1: dropped (a PART of a refused LONG).  A frame other than the
 * LONG's PARTs ends the LONG here. */
int worker_long_kind(worker_conn *c, const wire_msg *m, int may_wait);
/* The reader thread takes the connections over: no connection waits for
 * an answer any more (a LONG whose head or body is queued goes on as
 * frames).  w->lock held. */
void worker_long_cancel_locked(worker *w);
/* Input owner, c->lng in state DATA and no PART half read: take the
 * PART of the LONG that c->buf starts with: its header, and its data
 * into the buffers.  WORKER_LONG_TAKEN (c->buf holds what follows); 0:
 * c->buf starts with something else, to parse as usual; WIRE_NEED_MORE;
 * or WIRE_E_NOMEM. */
#define WORKER_LONG_TAKEN 2
int worker_long_parse(worker *w, worker_conn *c);
/* Input owner, c->lng in state DATA with a PART half read: one read()
 * of its data into the buffers.  WIRE_OK, or why the connection ends. */
int worker_long_read(worker *w, worker_conn *c);
/* Main thread, having served a WAIT frame of c: how c's reader goes on
 * (state: WORKER_LONG_NONE, _BODY, _DROP, or _DATA with the memory of
 * the nbufs buffers and their lengths, lent until the reader lets go,
 * from byte off of buffer idx on).  Wakes the reader.  1; 0 when c
 * waits no more (the reader thread took over): nothing is lent. */
int worker_long_answer(worker *w, worker_conn *c, int state, uint64_t id,
    uint8_t *const *dst, const uint64_t *len, size_t nbufs, size_t idx,
    size_t off);
/* Is a PART's data half read on c, so that its input is not at the
 * start of a frame?  w->lock held. */
int worker_long_midpart_locked(worker_conn *c);
/* Reader thread, at CTL_STOP: stop the running code as an interrupt
 * does (WORKER_STOP_SHUTDOWN; the hard grace applies), and wake main. */
void worker_reader_shutdown(worker *w);
/* Main thread, code just marked running (worker_set_running): answer the
 * DETACHes still queued at once (server mode), as the reader answers
 * those that come while code runs; their checkpoint is owed (cp_owed)
 * till the call ends. */
void worker_reader_detach_early(worker *w);

/* worker-control.c */
/* Set up the control channel: --control-fd, the --control listening
 * socket.  0, or -1 with *cause. */
int worker_control_start(worker *w, char **cause);
/* CTL_READY: the session is open (sent on every new control channel). */
void worker_control_ready(worker *w);
/* CTL_STATE when the number of clients or the running call changed. */
void worker_control_state(worker *w);
/* Reader thread: the control fd / listening socket is readable. */
void worker_control_readable(worker *w);
void worker_control_accept(worker *w);
/* Main thread: may the idle worker exit?  1 yes (asked the supervisor,
 * and it said so, or there is none), 0 not yet. */
int worker_control_idle(worker *w);
/* The session could not be opened: send the ERROR in b to the client of
 * the first CTL_CONN (waiting a little for it). */
void worker_control_refuse(worker *w, const wire_buf *b);
/* CTL_ENDED: the session ended, the supervisor sweeps soon. */
void worker_control_ended(worker *w);
/* Close the control fds (at exit). */
void worker_control_stop(worker *w);
/* Has the supervisor asked this worker to stop (CTL_STOP, --stopping)?
 * Any thread. */
int worker_control_stopping(worker *w);
/* Is the worker hibernating (flag 'n' on its idle session)?  Any thread. */
int worker_control_hibernating(worker *w);
/* Main thread, at the top of its loop once stopping: answer every queued
 * request with an ERROR saying the server is stopping (nothing of it
 * ran), and end the queued calls in the journal. */
void worker_control_stop_queue(worker *w);

/* worker-calls.c */
/* The journal of this session's calls (after the session opened). */
int worker_calls_start(worker *w, char **cause);
void worker_calls_stop(worker *w);
/* Reader: an EXEC with CALL_ID (1: handled here, a replay or a join; 0:
 * a new call, queue it), CALLS, CALL_RESULT (answered here). */
int worker_calls_exec(worker *w, worker_conn *c, const wire_msg *m);
void worker_calls_list(worker *w, worker_conn *c, const wire_msg *m);
void worker_calls_result(worker *w, worker_conn *c, const wire_msg *m);
/* Main thread: the EXEC of call id starts / its connection. */
void worker_calls_begin(worker *w, const uint8_t id[16], uint64_t req_id,
    worker_conn *c);
/* Output of the request being served (the forwarder, the main thread). */
int worker_calls_output(worker *w, int stream, const char *p, size_t n);
/* The final reply of the running call: journal it, send it to its
 * requester and joiners.  1 when b was the call's reply (sent here), 0
 * when it is not a call's. */
int worker_calls_reply(worker *w, const wire_buf *b);
/* Reader: the running call is lost (hard restart): ERROR
 * WORKER_RESTARTED to its requester and joiners, journaled. */
void worker_calls_lost(worker *w, const char *message);
/* A queued call withdrawn before it ran (INTERRUPT while it waited): end
 * it with the ERROR in b, journalled and sent to its requester and
 * joiners.  0, or -1 when the session has no such queued call (the
 * caller answers the requester itself).  Reader or main thread. */
int worker_calls_withdraw(worker *w, const uint8_t id[16], const wire_buf *b);
/* Is c the requester or a joiner of the running call? */
int worker_calls_joined(worker *w, worker_conn *c);
/* The running call's id (1), or 0 when the request is no call. */
int worker_calls_current(worker *w, uint8_t id[16]);
/* Is a call running? (CTL_STATE) hex of the running one. */
int worker_calls_running_hex(worker *w, char hex[33]);

/* worker-fds.c */
/* The exit status of a worker that found one of its fds closed or
 * replaced (worker_fds_fatal). */
#define WORKER_FDS_EXIT 70
/* How often the reader looks at every fd of the worker while code runs
 * (code that closed them from C may leave its poll asleep). */
#define WORKER_FDS_CHECK_MS 1000
/* Record fd as the worker's (its device and inode now).  0, or -1. */
int worker_fds_add(int fd);
/* The worker closes fd: no longer its. */
void worker_fds_forget(int fd);
/* Record every fd open now above 2 (the worker's, before shipped code
 * runs), and start detecting.  0, or -1 when some could not be. */
int worker_fds_snapshot(void);
/* Stop detecting (the worker closes its fds on the way out). */
void worker_fds_stop(void);
/* Is fd one of the worker's, still the file it was?  Any thread. */
int worker_fds_owned(int fd);
/* The worker's fds in [lo, hi), ascending, at most max: how many. */
int worker_fds_list(int lo, int hi, int *out, int max);
/* 0 when fd is registered and no longer the file it was (closed, or
 * another file at its number), else 1 (also when detection is off). */
int worker_fds_intact(int fd);
/* The first registered fd that is not intact, or -1. */
int worker_fds_check(void);
/* worker_fds_fatal unless fd is intact; what names it in the log. */
void worker_fds_verify(worker *w, int fd, const char *what);
/* The store's write guard (store_set_write_guard; arg the worker): its
 * data file's fd must be intact before a write transaction, else pages
 * would go into whatever file took its number. */
void worker_fds_store_guard(void *arg, int fd);
/* Shipped code looked up (ctypes) a C function that closes or replaces
 * fds: the next worker_fds_settle checks them all.  Any thread. */
void worker_fds_suspect(void);
/* Main thread, before it writes anything after code ran: when code may
 * have closed fds from C (worker_fds_suspect), check every fd; one gone
 * is fatal.  One atomic load otherwise. */
void worker_fds_settle(worker *w);
/* One of the worker's fds is gone: log (when the log fd is intact) and
 * _exit(WORKER_FDS_EXIT) without touching any fd again. */
void worker_fds_fatal(worker *w, int fd, const char *what)
    __attribute__((noreturn));

/* worker-restart.c */
/* Reader thread: re-exec this worker (same pid) resuming the session
 * from its last checkpoint, keeping its connections.  Returns only when
 * the exec failed. */
void worker_restart_exec(worker *w, const char *why);
/* Main thread, after a checkpoint: update w->lost_text.  GIL held. */
void worker_restart_note(worker *w);
/* At start: the connections and control fd of --adopt.  0 or -1. */
int worker_restart_adopt(worker *w, char **cause);

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
/* Refuse a store directory whose parent is missing too (a typo must not
 * grow a tree of directories): 0, or -1 with *cause (malloc'd; NULL when
 * out of memory).  The caller checks --create-db. */
int worker_session_db_parent(const char *db, char **cause);
/* Open the store w->opt names (path and owner checked) without the
 * session: w->st.  0, or -1 with *cause (malloc'd) and w->fatal_*
 * (NO_SESSION: there is no store). */
int worker_session_store(worker *w, char **cause);
/* Say how a session ended (a tombstone) as a sentence into buf. */
void worker_session_tomb_text(const store_tomb *tb, char *buf,
    size_t n);

/* worker-lease.c */
/* Start the thread that writes the session's last_seen every quarter of
 * its lease while a client is attached or code runs (none for flag 'r').
 * 0, or -1 with *cause. */
int worker_lease_start(worker *w, char **cause);
/* Stop it (safe when it was not started). */
void worker_lease_stop(worker *w);
/* The session's lease is now lease_ms (perhaps not in the store until
 * the next commit).  Any thread. */
void worker_lease_kick(worker *w, uint64_t lease_ms);

/* worker-end.c */
/* End the session (why: STORE_END_*) with no client closing it: its
 * tombstone, ERROR SESSION_DEAD to every client but skip, running code
 * stopped, the loop left.  Any thread.  0, STORE_E_DEAD, or a store
 * error; *tb (may be NULL) gets the tombstone. */
int worker_end(worker *w, int why, worker_conn *skip, store_tomb *tb);
/* Reader: END_SESSION from c (handed over by the supervisor). */
void worker_end_request(worker *w, worker_conn *c, const wire_msg *m);
/* Main thread, idle since idle_since_mono: has the lease run out (1)?
 * Else *due_ms: when it will (monotonic), 0 never. */
int worker_end_lease_due(worker *w, uint64_t idle_since_mono,
    uint64_t *due_ms);

/* worker-threads.c */
/* _pyshelfd.threads(delta): a thread of shipped code began (1), ended
 * (-1), or 0; the number alive after.  Any thread, GIL held. */
int worker_threads_change(worker *w, int delta);
/* How many threads of shipped code are alive.  Any thread. */
int worker_threads_alive(worker *w);
/* Main thread, idle since idle_since but n threads alive: no idle exit
 * (limit_ms) and no lease end; logged once each.  *due_ms: look again
 * then (0: when the last thread ends). */
void worker_threads_stay(worker *w, int n, uint64_t idle_since,
    uint64_t limit_ms, uint64_t *due_ms);
/* Main thread: not idle with threads any more. */
void worker_threads_busy(worker *w);
/* At exit, server mode: log the threads still alive, stopped now. */
void worker_threads_log_exit(worker *w);

/* worker-sweep.c */
/* End expired sessions no process holds, purge ended ones, drop old
 * tombstones.  Errors only stop the sweep: the worker opens anyway. */
void worker_sweep(worker *w);

/* sweep.c */
/* How a sweep runs. */
typedef struct sweep_options {
	uint64_t since_ms;           /* leases run from no earlier than this
	                                (wall ms: the server's start), 0 */
	size_t batch;                /* most deletions per transaction */
	uint64_t batch_ms;           /* most ms per transaction, 0 none */
	uint64_t pause_us;           /* pause between transactions */
	const char *end;             /* --end NAME: end it first, or NULL */
	int end_only;                /* --end-only: end it, sweep nothing
	                                (benchmarks, tests) */
	int progress;                /* a log line per transaction */
	FILE *log;                   /* where to say what failed, or NULL */
} sweep_options;
/* What a sweep did. */
typedef struct sweep_stats {
	size_t seen;                 /* sessions ended (or found ended) */
	size_t purged;               /* of them, deleted to the record */
	uint64_t entries;            /* entries deleted */
} sweep_stats;
/* Sweep st: end the expired sessions no process holds (tombstones),
 * purge the ended ones in bounded transactions, drop old tombstones.
 * SIGTERM (in `pyshelfd --sweep`) stops it between transactions.  0 or
 * a STORE_E_* code. */
int sweep_run(store *st, const sweep_options *o, sweep_stats *stats);
/* `pyshelfd --sweep`: the exit status (see --help). */
int sweep_main(int argc, char **argv);

/* interp.c */
int interp_init(char **cause);
int interp_fini(void);

/* dispatch.c */
struct _object;   /* PyObject, for the files that include Python.h */
/* Serve one request frame.  GIL held. */
int dispatch_frame(worker *w, const uint8_t *p, size_t n);
/* Checkpoint.  full: 0 what requests touched; 1 also loaded mutable
 * entries, if a request ran since the last such; 2 the same, always.
 * GIL held.  0 or -1. */
int dispatch_checkpoint(worker *w, int full);
/* Server mode: take the full checkpoint owed to clients that left
 * (w->cp_owed), synced, as a DETACH's.  Main thread, GIL held. */
void dispatch_checkpoint_owed(worker *w);
/* Send notices about entries that cannot be persisted.  GIL held. */
void dispatch_notices(worker *w);
/* Mark the session as not served by any process.  GIL held. */
void dispatch_release_session(worker *w);
/* A SIGINT/SIGTERM reached the worker: what the running code raises (an
 * enum pyctx_sig of pyexec.h).  GIL held. */
int dispatch_signal(worker *w, int signum);
/* The lease fields of WELCOME and ATTACHED (LEASE_MS, EXPIRES_MS). */
void dispatch_put_lease(worker *w, wire_buf *b);
/* Serve one parsed and checked message (oob: the list of bytearrays a
 * LONG's buffers were read into, or NULL).  GIL held. */
int dispatch_msg(worker *w, const wire_msg *m, struct _object *oob);
/* Send an ERROR frame. */
int dispatch_error(worker *w, uint64_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));


/* dispatch-long.c */
/* The most bytes a request may bring: the machine's memory, or
 * --memory-limit when it is lower. */
size_t dispatch_long_limit(worker *w);
/* What sets that limit, as messages say it: "pyshelfd --memory-limit" or
 * "this machine's memory". */
const char *dispatch_long_limit_by(const worker *w);
/* A LONG or a PART (and any frame while a LONG is open on its
 * connection): returns 1 when m was consumed, with *rc the result of
 * what was sent; 0 when m is to be served as usual.  GIL held. */
int dispatch_long_frame(worker *w, const wire_msg *m, int *rc);
/* Answer the reader of c after a WAIT frame of c was served: how the
 * LONG open on c stands (worker_long_answer).  GIL held. */
void dispatch_long_answer(worker *w, worker_conn *c);
/* Free the LONGs of connections that are gone.  GIL held. */
void dispatch_long_sweep(worker *w);
/* Send the complete frame in b, and after it the buffers (a list of
 * objects with the buffer protocol, or NULL), as a LONG when it does not
 * fit a frame or has buffers, else as it is.  GIL held (released while
 * the PARTs are written).  0 or -1. */
int dispatch_long_send(worker *w, const wire_buf *b, struct _object *bufs);

#endif
