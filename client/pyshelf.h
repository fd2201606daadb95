/*
 * pyshelf.h - libpyshelf, the C client library of pyshelf.
 *
 * pyshelf keeps Python objects alive in a backend process, pyshelfd, that
 * embeds CPython and persists its workspace in LMDB.  A client ships Python
 * source; the backend runs it in the workspace and answers with one of
 * three result kinds: a direct value (a pickle), a handle to a backend
 * object (Wrapped), or a handle to an exception's (type, value, traceback)
 * (WrappedExcinfo).  This library speaks the wire protocol of
 * docs/PROTOCOL.md over a pair of file descriptors, usually the pipes of a
 * pyshelfd it started itself with pyshelf_spawn().
 *
 * Typical use:
 *
 *     pyshelf_conn *c;
 *     const pyshelf_welcome *w;
 *     pyshelf_result r;
 *     pyshelf_exec_req req = { .code = "1 + 1" };
 *
 *     pyshelf_create(&c);
 *     pyshelf_spawn(c, "pyshelfd", "/tmp/db", "s1", PYSHELF_SPAWN_CREATE,
 *         NULL);                    ("pyshelfd": found on PATH)
 *     pyshelf_hello(c, &w);
 *     pyshelf_exec(c, &req, &r);    (r.kind == PYSHELF_KIND_WRAPPED)
 *     pyshelf_result_free(&r);
 *     pyshelf_close(c, NULL);       (detaches: the session persists)
 *
 * Caveats, stated once:
 *  - Every function returns 0 (PYSHELF_OK) on success or a negative
 *    PYSHELF_E_* code; pyshelf_strerror() names each code and
 *    pyshelf_errmsg() gives the sentence for the last failure on a
 *    connection.  A PYSHELF_E_REMOTE error is the backend's ERROR reply:
 *    the request failed, the connection is fine.  After PYSHELF_E_IO,
 *    PYSHELF_E_CLOSED or PYSHELF_E_PROTOCOL the connection is out of step
 *    for good: every later request fails with the same code; only
 *    pyshelf_backend_status() and pyshelf_close() remain useful.
 *  - Threads: one request at a time per connection, and a connection is
 *    not thread-safe, with one exception: pyshelf_interrupt() may be called
 *    from any thread (or a signal-free context of its own) while another
 *    thread waits in pyshelf_exec().  A second request started while one
 *    is running fails with PYSHELF_E_BUSY rather than corrupting the
 *    stream.  Different connections are independent.
 *  - fork(): a connection belongs to the process that set it up
 *    (pyshelf_spawn(), pyshelf_attach_fds(), pyshelf_connect()).  In the
 *    child of a fork() every request, pyshelf_interrupt() and
 *    pyshelf_backend_status() fail with PYSHELF_E_FORKED before a byte is
 *    written or read, so the parent's conversation goes on untouched;
 *    pyshelf_close() in the child only closes the inherited descriptors
 *    and frees the memory: no DETACH, no shutdown(), no wait for (or kill
 *    of) the backend.  A child that wants the session opens its own
 *    connection (through a server, a second client of the session).
 *    The library learns of a fork from a pthread_atfork() handler, so
 *    fork() (and anything that calls it) is seen; a process made by a
 *    raw clone() system call is not.
 *  - Strings passed in and returned are NUL-terminated UTF-8.  Memory the
 *    library hands out is freed by the function documented with it; a
 *    pointer documented as borrowed belongs to the connection and is valid
 *    only until the next call on that connection (except
 *    pyshelf_interrupt(), which never invalidates anything).
 *  - Writes never raise SIGPIPE: a backend that died is an error return
 *    (PYSHELF_E_CLOSED), not a signal.
 *  - Blocking waits restart after EINTR unless an exec wait callback is
 *    given (see pyshelf_wait_fn), so a signal handler of the caller runs
 *    but does not end a request by itself.
 */
#ifndef PYSHELF_H
#define PYSHELF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup errors Return codes
 * 0 is success; everything else is one of these negative codes.
 * @{ */
#define PYSHELF_OK 0
/** An argument was invalid (NULL where not allowed, bad kind...). */
#define PYSHELF_E_INVAL (-1)
/** Out of memory. */
#define PYSHELF_E_NOMEM (-2)
/** The backend could not be started (pyshelf_errmsg() says why). */
#define PYSHELF_E_SPAWN (-3)
/** A read or write failed; errno was kept in the message. */
#define PYSHELF_E_IO (-4)
/** The backend closed the connection or exited. */
#define PYSHELF_E_CLOSED (-5)
/** The backend sent a frame that is malformed or not expected. */
#define PYSHELF_E_PROTOCOL (-6)
/** A request is larger than the backend's maximum frame size. */
#define PYSHELF_E_TOO_BIG (-7)
/** The backend answered ERROR: see pyshelf_remote_errcode() and
 * pyshelf_errmsg().  The connection stays usable. */
#define PYSHELF_E_REMOTE (-8)
/** A callback stopped the request before its reply arrived. */
#define PYSHELF_E_CANCELED (-9)
/** Another request is running on this connection. */
#define PYSHELF_E_BUSY (-10)
/** A wait ran out of time (pyshelf_backend_status(), pyshelf_close()). */
#define PYSHELF_E_TIMEOUT (-11)
/** The connection has no backend or has not been set up yet. */
#define PYSHELF_E_NOTCONN (-12)
/** The connection was set up by another process: this one is the child
 * of a fork().  Nothing was sent or read; only pyshelf_close() is left
 * (it closes the inherited descriptors and sends nothing). */
#define PYSHELF_E_FORKED (-13)
/** The lowest code in use; codes below it are not pyshelf's. */
#define PYSHELF_E_LAST PYSHELF_E_FORKED
/** @} */

/** @defgroup remote Backend error codes (ERRCODE of an ERROR reply)
 * Read with pyshelf_remote_errcode() after PYSHELF_E_REMOTE.
 * @{ */
#define PYSHELF_ERR_MALFORMED 1      /**< the frame could not be parsed */
#define PYSHELF_ERR_TOO_BIG 2        /**< body longer than the maximum */
#define PYSHELF_ERR_UNKNOWN_TYPE 3   /**< message type not known */
#define PYSHELF_ERR_VERSION 4        /**< no common protocol version */
#define PYSHELF_ERR_AUTH 5           /**< authentication failed */
#define PYSHELF_ERR_NO_SESSION 6     /**< session missing or not attached */
#define PYSHELF_ERR_SESSION_DEAD 7   /**< the session has ended */
#define PYSHELF_ERR_UNKNOWN_HANDLE 8 /**< a handle id that is not live */
#define PYSHELF_ERR_UNPICKLE 9       /**< an argument cannot be unpickled */
#define PYSHELF_ERR_PICKLE 10        /**< a value asked for cannot be pickled */
#define PYSHELF_ERR_NOT_FOUND 11     /**< no such global */
#define PYSHELF_ERR_STORE 12         /**< the store failed (disk, map...) */
#define PYSHELF_ERR_VOLATILE 13      /**< entry not persisted, now gone */
#define PYSHELF_ERR_INTERNAL 14      /**< a backend bug */
#define PYSHELF_ERR_BAD_REQUEST 15   /**< well-formed but meaningless */
#define PYSHELF_ERR_SESSION_BUSY 16  /**< another pyshelfd serves the
                                          session (pyshelf_remote_pid()) */
#define PYSHELF_ERR_USAGE 17         /**< pyshelfd refused an option */
#define PYSHELF_ERR_READ_ONLY 18     /**< the session is open read-only */
#define PYSHELF_ERR_UNKNOWN_CALL 19  /**< a call id the session's journal
                                          does not know */
#define PYSHELF_ERR_WORKER_DIED 20   /**< the session's worker died */
#define PYSHELF_ERR_WORKER_RESTARTED 21 /**< a hard interrupt restarted
                                          the worker from its last
                                          checkpoint; the message says what
                                          was lost */
/** @} */

/** Result kinds (pyshelf_result.kind). */
#define PYSHELF_KIND_DIRECT 1   /**< DirectValue: value holds a pickle */
#define PYSHELF_KIND_WRAPPED 2  /**< Wrapped: handle and type_name */
#define PYSHELF_KIND_EXCINFO 3  /**< WrappedExcinfo: handle, type_name,
                                     exc_type, message */

#define PYSHELF_KIND_TEXT 4     /**< text asked for by PYSHELF_WANT_REPR or
                                     PYSHELF_WANT_JSON: text (NUL-terminated
                                     UTF-8), type_name */

/** What a request asks back (pyshelf_exec_req.want_value, the want_value
 * argument of pyshelf_get()).  Plain data for C programs that do not
 * read pickles: PYSHELF_WANT_REPR gives repr() of any result;
 * PYSHELF_WANT_JSON gives json.dumps() of a result that is JSON data
 * (dict with str keys, list, tuple, str, int, finite float, bool, None,
 * nested at most 500 deep), and any other result as a handle
 * (PYSHELF_KIND_WRAPPED: nothing is lost, ask again with
 * PYSHELF_WANT_REPR or use the handle).  A result whose text cannot be
 * made comes as a handle too, in both modes, never as an error: a cycle
 * or nan for JSON, an int of more than 4300 digits (Python's
 * sys.get_int_max_str_digits()), a repr() that raises. */
#define PYSHELF_WANT_HANDLE 0   /**< a handle (a DirectValue comes by value) */
#define PYSHELF_WANT_PICKLE 1   /**< the value, pickled (any nonzero value
                                     other than the two below) */
#define PYSHELF_WANT_REPR 2     /**< repr() text, PYSHELF_KIND_TEXT */
#define PYSHELF_WANT_JSON 3     /**< JSON text, PYSHELF_KIND_TEXT */
/** OR'd into PYSHELF_WANT_PICKLE (or PYSHELF_WANT_HANDLE, for the value
 *  of a DirectValue result): the pickle may come with out-of-band
 *  buffers (pickle protocol 5), in pyshelf_result.buffers; for a caller
 *  that unpickles with buffers=.  Without it a value comes as one
 *  pickle, however large. */
#define PYSHELF_WANT_BUFFERS 0x100

/** Argument kinds (pyshelf_arg.kind).  LITERAL and JSON pass plain data
 * without writing a pickle: the library wraps the text in a pickle that
 * the backend turns into the value with ast.literal_eval() or
 * json.loads() (so no code runs); text that does not parse fails the
 * request with PYSHELF_ERR_UNPICKLE and the parser's message. */
#define PYSHELF_ARG_HANDLE 1    /**< a live handle id of this session */
#define PYSHELF_ARG_PICKLE 2    /**< a pickled value */
#define PYSHELF_ARG_LITERAL 3   /**< data: a Python literal, UTF-8
                                     ("[1, 'a', {'k': 2.5}]", "b'raw'");
                                     len 0: strlen(data) */
#define PYSHELF_ARG_JSON 4      /**< data: JSON text, UTF-8; len 0: strlen */

/** Output streams in pyshelf_output_fn. */
#define PYSHELF_STDOUT 1
#define PYSHELF_STDERR 2

/** What a pyshelf_wait_fn asks for. */
#define PYSHELF_WAIT_CONTINUE 0  /**< keep waiting */
#define PYSHELF_WAIT_INTERRUPT 1 /**< send INTERRUPT, keep waiting */
#define PYSHELF_WAIT_ABANDON 2   /**< stop waiting: PYSHELF_E_CANCELED */

/** pyshelf_spawn() flags. */
#define PYSHELF_SPAWN_CREATE 0x1 /**< pass --create: make a missing session */

/** pyshelf_connect() flags (PYSHELF_SPAWN_CREATE is 'c' there too). */
#define PYSHELF_CONNECT_CREATE PYSHELF_SPAWN_CREATE /**< ATTACH MODE "c":
                                     make a missing session */
#define PYSHELF_CONNECT_NEW 0x2  /**< ATTACH MODE "n": always a new, empty
                                     session (an old one of the name ends) */
#define PYSHELF_CONNECT_NO_START 0x4 /**< never start a server: fail with
                                     PYSHELF_E_SPAWN when none answers */
#define PYSHELF_CONNECT_READ 0x8 /**< ATTACH MODE "r": never attaches; asks
                                     the session's worker, if it only
                                     lingers idle, to checkpoint and exit
                                     (a read-only private backend may then
                                     open the session): PYSHELF_E_REMOTE
                                     NO_SESSION once no worker serves it,
                                     SESSION_BUSY (why) while one is in use */

/** An opaque connection to one backend (one session). */
typedef struct pyshelf_conn pyshelf_conn;

/** One out-of-band buffer of a pickle (protocol 5's buffers). */
typedef struct pyshelf_buffer {
	void *data;          /**< its bytes (see who owns them where used) */
	size_t len;          /**< bytes at data */
} pyshelf_buffer;

/** One argument of an exec, by handle or by pickle. */
typedef struct pyshelf_arg {
	int kind;            /**< PYSHELF_ARG_HANDLE or PYSHELF_ARG_PICKLE */
	uint64_t handle;     /**< the handle id, for PYSHELF_ARG_HANDLE */
	const void *data;    /**< the pickle, for PYSHELF_ARG_PICKLE;
	                          borrowed for the duration of the call */
	size_t len;          /**< bytes at data */
	const pyshelf_buffer *buffers; /**< the pickle's out-of-band buffers
	                          (pickle.dumps(protocol=5, buffer_callback=)),
	                          in order, or NULL; sent from their memory,
	                          borrowed for the duration of the call */
	size_t nbuffers;     /**< number of buffers */
} pyshelf_arg;

/**
 * Called once per OUTPUT frame while pyshelf_exec() waits, in the thread
 * that called pyshelf_exec().
 * @param[in] ctx the pyshelf_exec_req's ctx.
 * @param[in] stream PYSHELF_STDOUT or PYSHELF_STDERR.
 * @param[in] data the bytes written by the running code, borrowed for the
 *   duration of the call; not NUL-terminated, and not split on UTF-8
 *   character boundaries.
 * @param[in] len bytes at data.
 * @return 0 to go on; anything else abandons the request: pyshelf_exec()
 *   returns PYSHELF_E_CANCELED and the rest of its replies are discarded
 *   when they arrive.  The callback must not call into the connection
 *   (except pyshelf_interrupt()).
 */
typedef int (*pyshelf_output_fn)(void *ctx, int stream, const void *data,
                                 size_t len);

/**
 * Called while pyshelf_exec() waits for its reply: each time a signal
 * interrupts the wait (EINTR) and, when the request's wait_tick_ms is not
 * 0, at least every wait_tick_ms milliseconds.  Lets a caller act on a
 * Ctrl-C: the Python client interrupts the backend on the first one and
 * gives up on the second.
 * @param[in] ctx the pyshelf_exec_req's ctx.
 * @return PYSHELF_WAIT_CONTINUE, PYSHELF_WAIT_INTERRUPT (send INTERRUPT for
 *   this exec and keep waiting: the reply will be a KeyboardInterrupt
 *   excinfo) or PYSHELF_WAIT_ABANDON (pyshelf_exec() returns
 *   PYSHELF_E_CANCELED; the late replies are discarded, and the handle of
 *   a late result stays in the session until it ends).
 */
typedef int (*pyshelf_wait_fn)(void *ctx);

/** An EXEC request.  Zero-initialise it, then set what you need. */
typedef struct pyshelf_exec_req {
	const char *code;        /**< Python source: a function's source when
	                              func is set, else a block run with REPL
	                              semantics in the workspace.  Required. */
	const char *func;        /**< name of the function defined by code to
	                              call with args, or NULL for a block */
	const pyshelf_arg *args; /**< nargs arguments, in order (only with
	                              func) */
	size_t nargs;            /**< number of args */
	int want_value;          /**< PYSHELF_WANT_*: 0 a handle, 1 the
	                              pickle, 2 repr() text, 3 JSON text */
	uint64_t timeout_ms;     /**< backend-enforced time limit, 0 = none */
	pyshelf_output_fn on_output; /**< streamed stdout/stderr, or NULL to
	                                  drop them */
	pyshelf_wait_fn on_wait; /**< see pyshelf_wait_fn, or NULL */
	unsigned wait_tick_ms;   /**< call on_wait at least this often while
	                              waiting (0: only after EINTR) */
	void *ctx;               /**< passed to on_output and on_wait */
	uint8_t call_id[16];     /**< the call's id (CALL_ID): all zero asks
	                              pyshelf_exec() for 128 random bits, which
	                              it writes back here before it sends, so
	                              that the caller can send the same call
	                              again (after a reconnect, when the reply
	                              was lost): a server that knows the id
	                              runs nothing, and answers with the
	                              journaled output and result, or joins the
	                              call while it runs */
} pyshelf_exec_req;

/**
 * The result of an exec or a get.  Fill with pyshelf_exec()/pyshelf_get()
 * and release with pyshelf_result_free().
 */
typedef struct pyshelf_result {
	int kind;               /**< PYSHELF_KIND_* */
	uint64_t handle;        /**< handle id (WRAPPED, EXCINFO), else 0 */
	char *type_name;        /**< owned: the object's type name (WRAPPED,
	                             EXCINFO), else NULL */
	char *exc_type;         /**< owned: the exception class's name
	                             (EXCINFO), else NULL */
	char *message;          /**< owned: str() of the exception (EXCINFO),
	                             else NULL */
	char *volatile_reason;  /**< owned: why the backend could not persist
	                             the result, or NULL when it could */
	const void *value;      /**< BORROWED: the pickle of a DIRECT result,
	                             pointing into the connection's read
	                             buffer; valid until the next call on the
	                             connection.  NULL for the other kinds.
	                             Values of any size come this way, as one
	                             buffer (the backend streams one larger
	                             than a frame in PARTs). */
	size_t value_len;       /**< bytes at value */
	char *text;             /**< owned: the text of a PYSHELF_KIND_TEXT
	                             result (repr() or JSON), NUL-terminated
	                             UTF-8 (text_len bytes before the NUL);
	                             for PYSHELF_KIND_EXCINFO the exception's
	                             traceback as Python prints it, when the
	                             backend sent it; else NULL */
	size_t text_len;        /**< bytes at text */
	pyshelf_buffer *buffers; /**< owned: the value's out-of-band buffers
	                             when PYSHELF_WANT_BUFFERS was asked for
	                             (pass them as pickle.loads(buffers=)),
	                             else NULL.  Each data is malloc'd and freed
	                             by pyshelf_result_free(); a caller that
	                             keeps one sets its data to NULL and later
	                             frees it with pyshelf_free(). */
	size_t nbuffers;        /**< number of buffers */
} pyshelf_result;

/** What the backend said in its WELCOME. */
typedef struct pyshelf_welcome {
	uint64_t version;        /**< protocol version */
	const char *name;        /**< backend program name ("" if not sent) */
	uint64_t pid;            /**< backend process id (0 if not sent) */
	uint64_t max_frame;      /**< largest frame body it accepts */
	int has_session;         /**< nonzero when the session fields are set */
	uint8_t session_id[16];  /**< the session's id */
	const char *session;     /**< the session's name ("" if not sent) */
	int created;             /**< nonzero: the session was just created */
	uint64_t lease_ms;       /**< the session's lease (0: forever) */
	uint64_t expires_ms;     /**< when it expires if no client attaches
	                              again, ms since the epoch (0: never) */
	int has_ended;           /**< nonzero: a session of this name had
	                              ended and this new one replaces it */
	uint64_t ended_ms;       /**< when it ended */
	const char *ended_reason; /**< "expired", "closed", "replaced" or "ended" */
	const char *ended_message; /**< the backend's sentence about it */
	uint64_t server_pid;     /**< pyshelf_connect(): the supervisor's pid
	                              (its WELCOME); pid is the session's
	                              worker's.  0 for a stdio backend. */
	int worker_died;         /**< pyshelf_connect(): nonzero when the
	                              session's previous worker died (ATTACHED
	                              carried SIGNAL or a MESSAGE about it) */
	int worker_signal;       /**< the signal that killed it, 0 if none
	                              or unknown */
	const char *worker_message; /**< a sentence about that death, naming
	                              the signal ("" when none) */
} pyshelf_welcome;

/** One live handle, from pyshelf_handles(). */
typedef struct pyshelf_handle_info {
	uint64_t handle;   /**< handle id */
	char *type_name;   /**< type name of the object */
	char *exc_type;    /**< an exception's handle (a WrappedExcinfo): the
	                        exception class's name; NULL for others */
	char *message;     /**< an exception's handle: str() of the exception
	                        (NULL for others) */
} pyshelf_handle_info;

/** One entry that was not restored on resume, from pyshelf_lost(). */
typedef struct pyshelf_lost_entry {
	char *key;         /**< the global's name (or handle, as text) */
	char *type_name;   /**< its type name */
	char *reason;      /**< why it was not restored */
} pyshelf_lost_entry;

/**
 * Return a static English sentence for a PYSHELF_E_* code.  Never NULL;
 * unknown codes get a generic sentence.  Thread-safe.
 */
const char *pyshelf_strerror(int rc);

/**
 * Return a static name for a backend ERRCODE ("UNKNOWN_HANDLE"), or "?"
 * for a code this version does not know.  Thread-safe.
 */
const char *pyshelf_errcode_name(uint64_t code);

/**
 * Create a connection object with no backend yet.
 * @param[out] connp the new connection, to free with pyshelf_close().
 * @return 0, PYSHELF_E_INVAL (connp NULL) or PYSHELF_E_NOMEM.
 */
int pyshelf_create(pyshelf_conn **connp);

/**
 * Set how long each blocking read busy-polls before it sleeps in poll().
 * Spinning trades a CPU for latency when the backend answers within
 * microseconds (a wake-up across CPUs can cost tens of µs).
 * @param[in] conn the connection.
 * @param[in] spin_us microseconds to spin, 0 (the default) to never spin.
 * @return 0 or PYSHELF_E_INVAL.
 */
int pyshelf_set_spin(pyshelf_conn *conn, unsigned spin_us);

/**
 * Set the largest frame body this connection accepts from the backend
 * (default 1 GiB: a reply carries values as large as the workspace holds).
 * pyshelf_hello() raises it to the backend's MAX_FRAME when that is
 * larger.  Requests are limited by the backend's MAX_FRAME instead
 * (PYSHELF_E_TOO_BIG, nothing sent).
 * @return 0 or PYSHELF_E_INVAL (0 or more than 4 GiB - 1).
 */
int pyshelf_set_max_frame(pyshelf_conn *conn, size_t max_body);

/**
 * Set how long pyshelf_close() waits for a spawned backend: for the
 * reply to its detach (which includes the workspace's final checkpoint),
 * then for the process to exit; when it runs out the backend is killed
 * (SIGKILL).  Default 60000 ms: a checkpoint of a large workspace may
 * take seconds, and killing the backend in the middle of it loses what it
 * was writing; pyshelfd's own waits at exit are bounded well below this
 * (2 s for threads of shipped code that do not end).
 * @return 0 or PYSHELF_E_INVAL (negative).
 */
int pyshelf_set_close_timeout(pyshelf_conn *conn, int timeout_ms);

/**
 * Set the handler of OUTPUT frames that arrive in reply to a request other
 * than pyshelf_exec(): the backend's notices, such as "this entry cannot
 * be persisted", sent as stderr output before the reply.  The handler runs
 * in the requesting thread during the request; its return value is
 * ignored; it must not call into the connection.  Without a handler (the
 * default) such output is dropped.  (During pyshelf_exec() the notices go
 * to the request's on_output with the rest of the output.)
 * @param[in] fn the handler, or NULL to drop.
 * @param[in] ctx passed to fn.
 * @return 0 or PYSHELF_E_INVAL.
 */
int pyshelf_set_output_handler(pyshelf_conn *conn, pyshelf_output_fn fn,
                               void *ctx);

/**
 * Start a backend in stdio mode:
 * `backend --stdio [--db DB] --session SESSION [--create] [extra...]`,
 * with its stdin and stdout on pipes to this connection and its stderr
 * inherited.  The child gets its own process group (so a terminal's
 * Ctrl-C reaches only the client, which then sends INTERRUPT), an empty
 * signal mask, and none of the caller's descriptors besides 0, 1 and 2.
 * Its environment is the caller's, with glibc.malloc.hugetlb=1 added to
 * GLIBC_TUNABLES unless the caller set that tunable (transparent huge
 * pages for the backend's heap; pyshelfd --help, ENVIRONMENT).
 * Does not send HELLO: call pyshelf_hello() next.
 * @param[in] conn a connection from pyshelf_create() with no backend yet.
 * @param[in] backend the pyshelfd to start: a path (any name with a
 *   slash) is used as it is; a bare name ("pyshelfd") is looked up on
 *   $PATH as execvp() does, then in the installed bindir and libexecdir;
 *   NULL or "" means $PYSHELFD when set, else "pyshelfd".
 * @param[in] db the store directory, or NULL for the backend's default.
 * @param[in] session the session name (NULL: "default").
 * @param[in] flags PYSHELF_SPAWN_CREATE (shelve's flag 'c') or 0 (the
 *   session must exist: 'w').  For 'n' and 'r' pass 0 and "--new" or
 *   "--read-only" in extra_args; "--lease", "--create-db" go there too.
 * @param[in] extra_args NULL-terminated extra arguments, or NULL.  An
 *   option pyshelfd refuses comes back from pyshelf_hello() as
 *   PYSHELF_E_REMOTE with PYSHELF_ERR_USAGE and pyshelfd's message.
 * @return 0; PYSHELF_E_INVAL (bad arguments, or conn already connected);
 *   PYSHELF_E_SPAWN (no such backend on PATH or in the installed
 *   directories, or fork or exec failed: pyshelf_errmsg() names the
 *   program, where it looked, and errno's text); PYSHELF_E_NOMEM.
 */
int pyshelf_spawn(pyshelf_conn *conn, const char *backend, const char *db,
                  const char *session, unsigned flags,
                  const char *const *extra_args);

/**
 * Use existing descriptors for the protocol (a socket, a pair of pipes).
 * On success the connection owns them and pyshelf_close() closes them
 * (once when rfd == wfd); on failure the caller still owns them.
 * Does not send HELLO.
 * @param[in] conn a connection from pyshelf_create() with no backend yet.
 * @param[in] rfd descriptor to read frames from.
 * @param[in] wfd descriptor to write frames to (may equal rfd).
 * @return 0, PYSHELF_E_INVAL.
 */
int pyshelf_attach_fds(pyshelf_conn *conn, int rfd, int wfd);

/**
 * End the session name without attaching to it (pyshelf.end()), through
 * the server of the store db (or the one listening at socket_path): its
 * worker stops, clients attached to it get ERROR SESSION_DEAD, its
 * tombstone says "ended", and the server's sweeper deletes its entries.
 * Never starts a server.
 * @param[in] conn a connection from pyshelf_create() with no backend;
 *   it has none again after the call.
 * @param[in] socket_path the server's socket, or NULL: the store's.
 * @param[in] db the store directory (NULL: the default), for the socket.
 * @param[in] name the session's name.
 * @param[out] no_server set to 1 when no server answers at the socket
 *   (the caller may end the session offline: `pyshelfd --sweep --end`).
 * @param[out] ended_ms when it ended (ms since the epoch).
 * @return 0; PYSHELF_E_SPAWN (no server: *no_server); PYSHELF_E_REMOTE
 *   (PYSHELF_ERR_NO_SESSION: no such session; PYSHELF_ERR_SESSION_DEAD:
 *   it had ended, pyshelf_remote_ended() says when and why); PYSHELF_E_INVAL
 *   (a bad name); PYSHELF_E_CLOSED, PYSHELF_E_PROTOCOL, PYSHELF_E_IO.
 */
int pyshelf_end_session(pyshelf_conn *conn, const char *socket_path,
                        const char *db, const char *name, int *no_server,
                        uint64_t *ended_ms);

/** Options of pyshelf_connect(); zero-initialise, then set what you need
 * (or pass NULL for all defaults). */
typedef struct pyshelf_connect_opts {
	const char *backend;     /**< the pyshelfd an auto-start runs, found
	                              as pyshelf_spawn() finds its backend
	                              (NULL: $PYSHELFD, else "pyshelfd") */
	const char *const *server_args; /**< NULL-terminated options added to
	                              `pyshelfd --server --db DB` when it is
	                              started ("--idle-exit", "300",
	                              "--create-db"...), or NULL.  Used only
	                              when this call starts the server: a
	                              running server keeps its own. */
	const char *client_name; /**< NAME in HELLO (NULL: "libpyshelf") */
	int has_lease;           /**< nonzero: send lease_ms in ATTACH */
	uint64_t lease_ms;       /**< the session's lease (0: forever) */
} pyshelf_connect_opts;

/**
 * Attach to a session through a pyshelf server (`pyshelfd --server`): the
 * server mode of docs/PROTOCOL.md.  Connects to the server's Unix socket,
 * sends HELLO (the supervisor answers WELCOME), then ATTACH; the session's
 * worker answers ATTACHED and serves every later request on this
 * connection directly: over a pipe each way that the worker hands over
 * once attached (PIPES; not with PYSHELF_NO_PIPES=1 in the environment,
 * nor with a server that predates it: then over the socket).  The session lives on in its worker when this
 * connection ends: pyshelf_detach() and pyshelf_close() leave it, and code
 * that runs goes on running (its output and result are kept in the
 * session's journal: pyshelf_calls(), pyshelf_call_result()).
 *
 * With socket_path NULL the socket is the store's own (proto/sockpath.h:
 * `$XDG_RUNTIME_DIR/pyshelf/NAME`, else `/tmp/pyshelf-UID/NAME`, NAME
 * "default" for the default store, else "db-" and a digest of the store's
 * real path), and a server that does not answer is started as tmux does:
 * on ENOENT or ECONNREFUSED this call takes the lock file `NAME.lock`
 * (flock), tries to connect once more (another client may have started
 * one meanwhile), removes a stale socket, runs
 * `pyshelfd --server [--db DB] [server_args...]` and waits for it to exit:
 * 0 means the server is ready (it daemonized), anything else is
 * PYSHELF_E_SPAWN with the sentence it wrote on stderr.  Two clients
 * racing end with one server.  An explicit socket_path is never started.
 *
 * Fills the same pyshelf_welcome as pyshelf_hello() (from ATTACHED: the
 * session fields, pid = the worker's pid, the tombstone of an ended
 * session of that name) plus server_pid and the death of the previous
 * worker (worker_died, worker_signal, worker_message), which the caller
 * should report: the last request of that worker was lost, and the
 * session resumed from its last checkpoint.
 *
 * On a broken connection later (EOF or a reset), requests fail with
 * PYSHELF_E_CLOSED; the caller may connect again with a new connection and
 * send its EXEC again with the same call_id (see pyshelf_exec_req).
 *
 * @param[in] conn a connection from pyshelf_create() with no backend yet.
 * @param[in] socket_path the server's socket, or NULL for the store's own
 *   (auto-started).
 * @param[in] db the store directory (made absolute for the server), or
 *   NULL for the default store.
 * @param[in] session the session name (NULL: "default").
 * @param[in] flags PYSHELF_CONNECT_CREATE ('c'), PYSHELF_CONNECT_NEW
 *   ('n'), or 0 ('w': the session must exist); PYSHELF_CONNECT_NO_START.
 *   Read-only ('r') is not served by a server: use pyshelf_spawn().
 * @param[in] opts options, or NULL.
 * @param[out] welcome (may be NULL) what the server and the worker said;
 *   owned by conn, valid until pyshelf_close().
 * @return 0; PYSHELF_E_INVAL (bad flags, conn already connected);
 *   PYSHELF_E_SPAWN (no server and none could be started, or the socket
 *   directory is refused: pyshelf_errmsg() says why); PYSHELF_E_REMOTE
 *   (PYSHELF_ERR_VERSION with the server's sentence on how to restart it,
 *   PYSHELF_ERR_AUTH, PYSHELF_ERR_NO_SESSION, PYSHELF_ERR_SESSION_DEAD,
 *   PYSHELF_ERR_BAD_REQUEST...); PYSHELF_E_CLOSED, PYSHELF_E_PROTOCOL,
 *   PYSHELF_E_IO, PYSHELF_E_NOMEM.  On failure the connection has no
 *   backend again (the socket is closed) and may be used for another try.
 */
int pyshelf_connect(pyshelf_conn *conn, const char *socket_path,
                    const char *db, const char *session, unsigned flags,
                    const pyshelf_connect_opts *opts,
                    const pyshelf_welcome **welcome);

/**
 * The sessions a running server has workers for, with what only the
 * server knows: HELLO, then SESSIONS to the supervisor (no ATTACH, no
 * server started).  *json gets a malloc'd JSON array (free it with
 * pyshelf_free()) of {"id": hex, "pid": n, "clients": n, "running":
 * hex|null, "answered": bool} (docs/PROTOCOL.md, SESSIONS), or NULL when
 * no server answers on the socket.
 * @param[in] conn a connection from pyshelf_create() with no backend; it
 *   has none again afterwards.
 * @param[in] socket_path the server's socket, or NULL for the store's.
 * @param[in] db the store directory, or NULL for the default store.
 * @return 0; PYSHELF_E_REMOTE (an older server: the sentence says to
 *   restart it), PYSHELF_E_SPAWN (the socket cannot be named or reached),
 *   PYSHELF_E_CLOSED, PYSHELF_E_PROTOCOL, PYSHELF_E_IO, PYSHELF_E_NOMEM.
 */
int pyshelf_server_sessions(pyshelf_conn *conn, const char *socket_path,
                            const char *db, char **json);

/**
 * Handshake: send HELLO{VERSION, NAME} and read WELCOME.
 * @param[in] conn a connected connection.
 * @param[in] client_name NAME to send, or NULL for "libpyshelf".
 * @param[out] welcome (may be NULL) what the backend said; owned by conn,
 *   valid until pyshelf_close().
 * @return 0; PYSHELF_E_REMOTE (e.g. PYSHELF_ERR_VERSION,
 *   PYSHELF_ERR_NO_SESSION, PYSHELF_ERR_SESSION_DEAD,
 *   PYSHELF_ERR_SESSION_BUSY, PYSHELF_ERR_USAGE); PYSHELF_E_CLOSED (the
 *   backend exited: see pyshelf_backend_status()); PYSHELF_E_PROTOCOL;
 *   PYSHELF_E_IO.  A backend that cannot serve (a bad option, a session
 *   that is missing or in use) says why in an ERROR frame and exits: that
 *   is PYSHELF_E_REMOTE with its ERRCODE and message, even when the HELLO
 *   could not be written any more; the connection is then finished (only
 *   pyshelf_close() is left) and the backend reaped.
 */
int pyshelf_hello(pyshelf_conn *conn, const char *client_name,
                  const pyshelf_welcome **welcome);

/**
 * Run code in the workspace and wait for its result, passing its output
 * to req->on_output as it arrives.
 * @param[in] conn the connection.
 * @param[in,out] req the request (see pyshelf_exec_req); an all-zero
 *   call_id is replaced by the random id sent.
 * @param[out] res the result; call pyshelf_result_free() on it after a
 *   return of 0.  On error it is left zeroed.
 * @return 0; PYSHELF_E_INVAL (code NULL, args without func, bad arg);
 *   PYSHELF_E_REMOTE (e.g. PYSHELF_ERR_UNKNOWN_HANDLE, PYSHELF_ERR_UNPICKLE,
 *   PYSHELF_ERR_PICKLE for want_value); PYSHELF_E_TOO_BIG;
 *   PYSHELF_E_CANCELED (a callback abandoned the request); PYSHELF_E_BUSY;
 *   PYSHELF_E_CLOSED, PYSHELF_E_PROTOCOL, PYSHELF_E_IO, PYSHELF_E_NOMEM.
 *   Code that raised is not an error: it is a PYSHELF_KIND_EXCINFO result.
 */
int pyshelf_exec(pyshelf_conn *conn, pyshelf_exec_req *req,
                 pyshelf_result *res);

/**
 * Ask the backend to stop the exec that is running on conn: it ends with
 * a PYSHELF_KIND_EXCINFO result whose exc_type is "KeyboardInterrupt".
 * When no exec of conn runs, it stops whatever runs in the session (server
 * mode: another client's call, or one a client that detached left
 * running; see pyshelf_calls()).  Does nothing (and returns 0) when
 * nothing runs.  THREAD-SAFE: may
 * be called from any thread while another waits in pyshelf_exec(); it
 * touches neither the error message nor any borrowed pointer.  Not
 * async-signal-safe (it takes a mutex).
 * @return 0, PYSHELF_E_INVAL, PYSHELF_E_CLOSED, PYSHELF_E_IO or
 *   PYSHELF_E_FORKED (in the child of a fork(); nothing written).
 */
int pyshelf_interrupt(pyshelf_conn *conn);

/**
 * Hard interrupt (INTERRUPT{HARD}): for code stuck in C that ignores
 * pyshelf_interrupt().  The server's worker answers the running call with
 * PYSHELF_E_REMOTE PYSHELF_ERR_WORKER_RESTARTED (its message says what was
 * lost: the changes since the last checkpoint and the volatile entries)
 * and restarts itself from the session's last checkpoint, keeping its
 * connections.  It acts on the call that conn runs (pyshelf_exec() in
 * another thread) or, when none, on whatever runs in the session, as
 * pyshelf_interrupt() does.  Thread-safe as pyshelf_interrupt().
 * Server mode only; a stdio backend treats it as pyshelf_interrupt().
 * @return 0, PYSHELF_E_INVAL, PYSHELF_E_CLOSED, PYSHELF_E_IO or
 *   PYSHELF_E_FORKED.
 */
int pyshelf_interrupt_hard(pyshelf_conn *conn);

/**
 * List the session's journaled calls (CALLS): those that ran, run or wait,
 * also while no client was attached, within the journal's bounds
 * (docs/PROTOCOL.md).  Answered at once, even while code runs.
 * @param[out] json a new NUL-terminated JSON text, a list of objects
 *   {"id": 32 hex digits, "summary": the source's first line, "state":
 *   "queued"|"running"|"done"|"lost", "started": ms since the epoch,
 *   "ended": ms or null, "output_bytes": n, "output_dropped": n}; free
 *   with pyshelf_free().
 * @return 0 or an error (then *json is NULL).
 */
int pyshelf_calls(pyshelf_conn *conn, char **json);

/**
 * Take the result of a journaled call (CALL_RESULT): its output is
 * replayed to hooks->on_output (a gap in it, where the journal dropped the
 * oldest output, is marked in the text), then its result is returned as
 * pyshelf_exec() would have returned it.  While the call runs, waits for
 * it (wait nonzero) and gets its further output as it comes.
 * @param[in] call_id the call's id (pyshelf_exec_req.call_id).
 * @param[in] wait nonzero: wait while the call runs; 0: a running call is
 *   PYSHELF_E_REMOTE PYSHELF_ERR_BAD_REQUEST ("still running").
 * @param[in] timeout_ms how long to wait (< 0: no limit); then
 *   PYSHELF_E_TIMEOUT (not sticky; the late reply is skipped).
 * @param[in] hooks on_output, on_wait, wait_tick_ms and ctx of a request
 *   (its other members are ignored), or NULL to drop the output.
 * @param[out] res the result; free with pyshelf_result_free().
 * @return 0; PYSHELF_E_REMOTE (PYSHELF_ERR_UNKNOWN_CALL for an id the
 *   journal does not hold, PYSHELF_ERR_WORKER_RESTARTED for a call lost to
 *   a hard interrupt...); PYSHELF_E_TIMEOUT; the connection errors.
 */
int pyshelf_call_result(pyshelf_conn *conn, const uint8_t call_id[16],
                        int wait, int timeout_ms,
                        const pyshelf_exec_req *hooks, pyshelf_result *res);

/**
 * Tell the backend that the client no longer holds these handles (no
 * reply is expected; unknown ids are ignored by the backend).
 * @param[in] handles n handle ids.
 * @return 0 (also for n == 0), PYSHELF_E_INVAL, PYSHELF_E_TOO_BIG,
 *   PYSHELF_E_CLOSED, PYSHELF_E_IO, PYSHELF_E_BUSY.
 */
int pyshelf_release(pyshelf_conn *conn, const uint64_t *handles, size_t n);

/**
 * Read a workspace global: by value (want_value PYSHELF_WANT_PICKLE: a
 * PYSHELF_KIND_DIRECT result), as text (PYSHELF_WANT_REPR or
 * PYSHELF_WANT_JSON: PYSHELF_KIND_TEXT, see PYSHELF_WANT_JSON for values
 * that are not JSON data) or as a new handle (PYSHELF_WANT_HANDLE: a
 * PYSHELF_KIND_WRAPPED result).
 * @param[out] res as for pyshelf_exec(); free with pyshelf_result_free().
 * @return 0; PYSHELF_E_REMOTE with PYSHELF_ERR_NOT_FOUND (no such global),
 *   PYSHELF_ERR_PICKLE (it cannot be pickled: ask for a handle instead),
 *   PYSHELF_ERR_VOLATILE (it was not persisted and is gone after a
 *   restart); and the connection errors.
 */
int pyshelf_get(pyshelf_conn *conn, const char *key, int want_value,
                pyshelf_result *res);

/**
 * Bind a workspace global to an unpickled value.
 * @param[in] data the pickle, len bytes (borrowed for the call).
 * @return 0, PYSHELF_E_REMOTE (PYSHELF_ERR_UNPICKLE...), the connection
 *   errors.
 */
int pyshelf_set(pyshelf_conn *conn, const char *key, const void *data,
                size_t len);

/**
 * pyshelf_set() of a pickle with out-of-band buffers (protocol 5), sent
 * from their memory after the pickle; values of any size.
 * @param[in] bufs nbufs buffers, in the order the pickler gave them
 *   (borrowed for the call).
 * @return as pyshelf_set(); PYSHELF_E_TOO_BIG when the backend refuses the
 *   size (its memory, pyshelfd --memory-limit).
 */
int pyshelf_set_buffers(pyshelf_conn *conn, const char *key,
                        const void *data, size_t len,
                        const pyshelf_buffer *bufs, size_t nbufs);

/**
 * Bind a workspace global to plain data given as text, without writing a
 * pickle: kind PYSHELF_ARG_LITERAL (a Python literal, read with
 * ast.literal_eval()) or PYSHELF_ARG_JSON (read with json.loads()).
 * @param[in] text NUL-terminated UTF-8.
 * @return 0; PYSHELF_E_INVAL (bad kind, NULL key or text);
 *   PYSHELF_E_REMOTE with PYSHELF_ERR_UNPICKLE when the text does not
 *   parse (pyshelf_errmsg() has the parser's message); the connection
 *   errors.
 */
int pyshelf_set_text(pyshelf_conn *conn, const char *key, int kind,
                     const char *text);

/**
 * Delete a workspace global.
 * @return 0, PYSHELF_E_REMOTE with PYSHELF_ERR_NOT_FOUND, the connection
 *   errors.
 */
int pyshelf_del(pyshelf_conn *conn, const char *key);

/**
 * List the names of the workspace's globals.
 * @param[out] keys a new array of *n strings; free with
 *   pyshelf_strv_free(*keys, *n).  NULL when *n is 0.
 * @param[out] n the number of names.
 * @return 0 or an error (then *keys is NULL and *n 0).
 */
int pyshelf_keys(pyshelf_conn *conn, char ***keys, size_t *n);

/**
 * List the session's live handles.
 * @param[out] handles a new array of *n entries; free with
 *   pyshelf_handles_free(*handles, *n).
 * @return 0 or an error (then *handles is NULL and *n 0).
 */
int pyshelf_handles(pyshelf_conn *conn, pyshelf_handle_info **handles,
                    size_t *n);

/**
 * List the entries that were not restored when the session resumed.
 * @param[out] lost a new array of *n entries; free with
 *   pyshelf_lost_free(*lost, *n).
 * @return 0 or an error (then *lost is NULL and *n 0).
 */
int pyshelf_lost(pyshelf_conn *conn, pyshelf_lost_entry **lost, size_t *n);

/**
 * Ask the backend for its statistics.
 * @param[out] json a new NUL-terminated JSON text; free with
 *   pyshelf_free().
 */
int pyshelf_stats(pyshelf_conn *conn, char **json);

/** Checkpoint the workspace now (SYNC).  0 or an error. */
int pyshelf_sync(pyshelf_conn *conn);

/** Round trip (PING/PONG).  0 or an error. */
int pyshelf_ping(pyshelf_conn *conn);

/**
 * Set the session's lease (ws.lease = S): how long it lives with no
 * client attached and no code running, counted from now and from each
 * later detach or request; 0 = forever.  Committed at once.
 * @param[out] expires_ms (may be NULL) when it runs out if no client
 *   attaches again (ms since the epoch; 0: never); the welcome's
 *   lease_ms and expires_ms are updated too.
 * @return 0, PYSHELF_E_REMOTE (PYSHELF_ERR_READ_ONLY, SESSION_DEAD,
 *   STORE), or a connection error.
 */
int pyshelf_set_lease(pyshelf_conn *conn, uint64_t lease_ms,
                      uint64_t *expires_ms);

/**
 * Detach: the backend checkpoints and exits; the session persists.  The
 * connection can do nothing more but pyshelf_close().  Through a server
 * (pyshelf_connect()) only this connection ends: the worker goes on
 * serving the session's other clients and running its code.
 * @return 0 or an error.
 */
int pyshelf_detach(pyshelf_conn *conn);

/**
 * End the session for good (CLOSE): the backend deletes its state and
 * exits.  The connection can do nothing more but pyshelf_close().
 * @return 0 or an error.
 */
int pyshelf_close_session(pyshelf_conn *conn);

/**
 * Return the pid of the backend started by pyshelf_spawn(), or -1 when
 * the connection did not spawn one (pyshelf_connect(): the worker's pid is
 * pyshelf_welcome.pid).
 */
long pyshelf_backend_pid(const pyshelf_conn *conn);

/**
 * Wait up to timeout_ms (< 0: forever) for the spawned backend to exit and
 * reap it.  Once reaped, later calls return the same status at once.
 * @param[out] wstatus (may be NULL) the status as waitpid() gives it.
 * @return 0; PYSHELF_E_TIMEOUT (still running); PYSHELF_E_NOTCONN (no
 *   spawned backend); PYSHELF_E_IO (waitpid failed); PYSHELF_E_FORKED
 *   (called in the child of a fork(): the backend is not its child).
 */
int pyshelf_backend_status(pyshelf_conn *conn, int *wstatus, int timeout_ms);

/**
 * Close a connection and free it, whatever its state: detach when the
 * session is still attached and the connection is sound, close the
 * descriptors, then wait for a spawned backend to exit (see
 * pyshelf_set_close_timeout()) and kill it (SIGKILL) when it does not.
 * In the child of a fork() (PYSHELF_E_FORKED), only the inherited
 * descriptors are closed: nothing is sent, the backend is neither waited
 * for nor killed, and the parent's connection goes on.
 * @param[in] conn the connection (NULL is a no-op); invalid afterwards.
 * @param[out] wstatus (may be NULL) the backend's waitpid() status, or -1
 *   when there was no spawned backend.
 * @return 0; PYSHELF_E_TIMEOUT when the backend had to be killed;
 *   PYSHELF_E_IO when waitpid failed.
 */
int pyshelf_close(pyshelf_conn *conn, int *wstatus);

/**
 * Return the sentence describing the last failure on conn (the backend's
 * message for PYSHELF_E_REMOTE), or "" when the last call succeeded.
 * Owned by conn; valid until the next call on it.
 */
const char *pyshelf_errmsg(const pyshelf_conn *conn);

/**
 * Return the backend's ERRCODE (PYSHELF_ERR_*) of the last
 * PYSHELF_E_REMOTE failure, or 0 when the last failure was not remote.
 */
uint64_t pyshelf_remote_errcode(const pyshelf_conn *conn);

/**
 * Return the PID field of the last PYSHELF_E_REMOTE failure (for
 * PYSHELF_ERR_SESSION_BUSY: the pid of the pyshelfd that serves the
 * session, when it is known), or 0.
 */
uint64_t pyshelf_remote_pid(const pyshelf_conn *conn);

/**
 * For the last PYSHELF_E_REMOTE failure PYSHELF_ERR_SESSION_DEAD: when the
 * session ended (ms since the epoch) and why ("expired", "closed",
 * "replaced"; borrowed, valid until the next call on conn).  0 and NULL
 * when the ERROR did not say.
 */
uint64_t pyshelf_remote_ended(const pyshelf_conn *conn, const char **reason);

/** What is known of the last request begun on a connection
 * (pyshelf_request_fate()). @{ */
#define PYSHELF_FATE_UNKNOWN 0  /**< none yet, or it is being written, or
                                     it failed in a way that tells nothing */
#define PYSHELF_FATE_NOT_RUN 1  /**< the backend never read it whole: its
                                     write failed (the backend had closed
                                     the connection), or the backend closed
                                     it with bytes of the request unread (a
                                     reset); it did not run */
#define PYSHELF_FATE_SENT 2     /**< written whole, then the backend closed
                                     the connection before any reply to
                                     it: it may have run, in part or whole */
#define PYSHELF_FATE_STARTED 3  /**< the backend had begun to answer it (an
                                     EXEC's output came): it ran, and did
                                     not finish */
#define PYSHELF_FATE_DONE 4     /**< its reply came (a RESULT, OK, ERROR...):
                                     whatever fails after it is another
                                     request's */
/** @} */

/**
 * What became of the last request begun on conn (PYSHELF_FATE_*): after it
 * failed with PYSHELF_E_CLOSED, whether the backend can have run it, so
 * that a caller that connects again knows whether sending it once more
 * may run it twice.  A request refused because the connection had failed
 * before it is PYSHELF_FATE_NOT_RUN.  Thread-safe with respect to
 * pyshelf_interrupt() only, as the other calls.
 */
int pyshelf_request_fate(const pyshelf_conn *conn);

/** Free the owned strings of a result and zero it.  NULL-safe; safe on a
 * zeroed or already freed result. */
void pyshelf_result_free(pyshelf_result *res);
/** Free an array from pyshelf_keys().  NULL-safe. */
void pyshelf_strv_free(char **strv, size_t n);
/** Free an array from pyshelf_handles().  NULL-safe. */
void pyshelf_handles_free(pyshelf_handle_info *handles, size_t n);
/** Free an array from pyshelf_lost().  NULL-safe. */
void pyshelf_lost_free(pyshelf_lost_entry *lost, size_t n);
/** Free memory the library returned (pyshelf_stats()).  NULL-safe. */
void pyshelf_free(void *p);

#ifdef __cplusplus
}
#endif

#endif /* PYSHELF_H */
