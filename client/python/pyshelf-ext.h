/*
 * pyshelf-ext.h - what the files of the C extension pyshelf._pyshelf share:
 * its module state, the Connection object, the exec callbacks' context,
 * and the functions one file calls in another.
 *
 *   _pyshelf.c     the module: _setup(), strerror(), constants, init
 *   conn.c         the Connection type and its methods (but exec)
 *   conn-exec.c    exec() and interrupt(), and exec's callbacks, which run
 *                  with the GIL released
 *   conn-reply.c   what every method shares: claiming the connection,
 *                  errors and results as Python objects, arguments
 *
 * Include after Python.h and config.h.
 */
#ifndef PYSHELF_EXT_H
#define PYSHELF_EXT_H

#include "pyshelf.h"


/* How often exec() looks at signals while it waits, in milliseconds. */
#define CONN_TICK_MS 100
/* How long an error path waits for a dying backend's exit status. */
#define CONN_DEATH_MS 2000

/* The exception classes the Python layer hands to _setup(). */
enum {
	EXC_ERROR,           /* pyshelf.Error */
	EXC_REMOTE,          /* pyshelf.RemoteError(msg, code, code_name) */
	EXC_UNKNOWN_HANDLE,  /* pyshelf.UnknownHandleError */
	EXC_VOLATILE,        /* pyshelf.VolatileError */
	EXC_NOT_PICKLABLE,   /* pyshelf.NotPicklableError */
	EXC_BACKEND_DIED,    /* pyshelf.BackendDied(msg, status) */
	EXC_NOT_FOUND,       /* pyshelf.SessionNotFound(msg, code, code_name) */
	EXC_ENDED,           /* pyshelf.SessionEnded(msg, code, code_name,
	                        ended, reason) */
	EXC_BUSY,            /* pyshelf.SessionBusy(msg, code, code_name, pid) */
	EXC_RESTARTED,       /* pyshelf.WorkerRestarted(msg, code, code_name) */
	EXC_FORKED,          /* pyshelf.ForkedError(msg): PYSHELF_E_FORKED */
	EXC_COUNT
};

typedef struct {
	PyTypeObject *conn_type;  /* Connection */
	PyTypeObject *block_type; /* Block: a buffer of a reply, writable */
	PyObject *exc[EXC_COUNT]; /* NULL until _setup() */
	PyObject *loads;          /* pickle.loads, NULL until _setup() */
} module_state;

typedef struct {
	PyObject_HEAD
	pyshelf_conn *conn;  /* owned; NULL once closed */
	int busy;            /* a call runs with the GIL released */
	int interrupting;    /* interrupt() calls in flight */
	PyObject *notice;    /* callable(stream, bytes) for the backend's
	                        notices outside exec(), or NULL; must not
	                        refer back to this object (no GC here) */
	int has_call_id;     /* last_call_id is set */
	uint8_t last_call_id[16]; /* the CALL_ID the last exec() sent */
} ConnObject;

/* What exec()'s callbacks share with it while the GIL is released. */
typedef struct {
	pyshelf_conn *conn;   /* for pyshelf_interrupt() */
	PyObject *on_output;  /* borrowed: callable(stream, bytes) or NULL */
	PyThreadState *ts;    /* saved thread state while the GIL is out */
	PyObject *exc;        /* exception to raise afterwards, owned */
	int output_failed;    /* on_output raised: stop calling it */
	int sigints;          /* KeyboardInterrupts seen during the wait */
} exec_ctx;

extern struct PyModuleDef pyshelf_module;
extern PyType_Spec conn_spec;

/* conn-reply.c */
module_state *conn_state(ConnObject *);
int conn_begin(ConnObject *);
void conn_end(ConnObject *);
PyObject *conn_error(ConnObject *, pyshelf_conn *, int);
PyObject *conn_died(module_state *, pyshelf_conn *, const char *);
PyObject *conn_status_obj(int);
PyObject *conn_remote(module_state *, pyshelf_conn *, const char *,
    uint64_t);
PyObject *conn_result(module_state *, const pyshelf_result *);
const char *conn_utf8(PyObject *, const char *);
PyObject *conn_str(const char *);
int conn_args(PyObject *, pyshelf_arg **, Py_ssize_t *);
/* Block: the spec of the type that owns a reply's out-of-band buffer. */
extern PyType_Spec conn_block_spec;
/* Free what conn_args() allocated for n arguments. */
void conn_args_free(pyshelf_arg *args, Py_ssize_t n);

/* conn-exec.c */
PyObject *conn_exc_fetch(void);
void conn_exc_restore(PyObject *);
int conn_on_notice(void *, int, const void *, size_t);
PyObject *conn_exec(ConnObject *, PyObject *, PyObject *);
PyObject *conn_interrupt(ConnObject *, PyObject *);
PyObject *conn_interrupt_hard(ConnObject *, PyObject *);
PyObject *conn_call_result(ConnObject *, PyObject *, PyObject *);

#endif /* PYSHELF_EXT_H */
