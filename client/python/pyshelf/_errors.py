"""pyshelf's exceptions.  They live in the module ``pyshelf``."""

__all__ = ["Error", "RemoteError", "UnknownHandleError", "VolatileError",
           "NotPicklableError", "BackendDied", "SessionNotFound",
           "SessionEnded", "SessionBusy", "SessionEndedWarning",
           "WorkerDiedWarning", "WorkerRestarted", "RemoteTraceback",
           "ServerOptionsIgnored", "DetachError", "ForkedError",
           "ForeignHandleError"]


class Error(Exception):
    """Base class of the errors pyshelf raises."""


class RemoteError(Error):
    """The backend refused a request.

    ``code`` is the protocol's error code (an int, see docs/PROTOCOL.md) and
    ``code_name`` its name, e.g. ``"NOT_FOUND"``.
    """

    def __init__(self, message, code=None, code_name=None):
        Error.__init__(self, message)
        self.message = message
        self.code = code
        self.code_name = code_name

    def __str__(self):
        return str(self.message)


class UnknownHandleError(RemoteError, KeyError):
    """A handle id that is not live in the session."""


class VolatileError(RemoteError):
    """The entry could not be persisted and did not survive a restart of
    the backend; the message names the entry and the original reason."""


class NotPicklableError(Error, TypeError):
    """A value cannot travel by pickle (on the client or in the backend).

    For a workspace global, ``ws.wrap(name)`` returns a handle instead.
    ``code``/``code_name`` are set when the backend said so, else None.
    """

    def __init__(self, message, code=None, code_name=None):
        Error.__init__(self, message)
        self.message = message
        self.code = code
        self.code_name = code_name

    def __str__(self):
        return str(self.message)


class ForeignHandleError(Error, ValueError):
    """A ``Wrapped`` of another session's handle given to this
    workspace (as an argument, inside a value, to ``release()``): handle
    ids are per session, so its id would name another object here.
    Nothing was sent."""


class BackendDied(Error):
    """The backend exited or its connection broke while it could have run
    the request: the message says what is known (it died while the call
    ran, or after the request was sent and before it answered).  Through
    a server the workspace goes on with a new worker, resumed from the
    session's last checkpoint.  A request the backend never read (its
    worker had died before) does not raise this: through a server it is
    sent to the new worker, with a ``WorkerDiedWarning``.

    ``status`` is its return code as subprocess gives it (the exit status,
    or minus the signal that killed it), or None when unknown.
    """

    def __init__(self, message, status=None):
        Error.__init__(self, message)
        self.message = message
        self.status = status

    def __str__(self):
        return str(self.message)


class SessionNotFound(RemoteError):
    """No session of that name in the store (``flag='w'`` or ``'r'``), or
    no store at ``db``."""


class SessionEnded(SessionNotFound):
    """The session of that name has ended (``flag='w'`` or ``'r'``): its
    lease ran out with no client attached, or it was closed.

    ``ended`` is when (a POSIX timestamp, or None when unknown) and
    ``reason`` why: ``"expired"``, ``"closed"``, ``"replaced"`` or ``"ended"``
    (``pyshelf.end()``).  The
    message says both.
    """

    def __init__(self, message, code=None, code_name=None, ended=None,
                 reason=None):
        SessionNotFound.__init__(self, message, code, code_name)
        self.ended = ended
        self.reason = reason


class SessionBusy(RemoteError):
    """Another pyshelfd serves the session (it holds the session's lock).

    ``pid`` is that pyshelfd's pid when known (it runs in this pid
    namespace), else None.
    """

    def __init__(self, message, code=None, code_name=None, pid=None):
        RemoteError.__init__(self, message, code, code_name)
        self.pid = pid


class WorkerRestarted(RemoteError):
    """A hard interrupt (``ws.interrupt(hard=True)``, or an interrupt or
    timeout that did not take effect within the worker's grace time)
    restarted the session's worker from its last checkpoint.  The call
    was lost; the message says what else was: the changes since that
    checkpoint and the volatile entries.  The workspace stays usable."""


class DetachError(RemoteError):
    """``close()`` (``detach()``, the end of a ``with`` block) detached,
    but the session's last changes are not all in the store: the final
    checkpoint of the detach failed (a thread of shipped code kept
    changing an entry while it was pickled, a full store...).  The message
    is the backend's, saying what it could not save, followed by where
    the unsaved state is.  The workspace is closed all the same.

    ``pid`` is the process that still holds the unsaved state: through a
    server, the session's worker, which goes on and tries again at its
    next checkpoint (attach again and ``sync()`` to have it saved now);
    None for a private stdio backend, which has exited (``returncode``):
    what it could not save is lost, and the store keeps those entries as
    of the last checkpoint that saved them.  ``code``/``code_name`` are
    the backend's (``"STORE"``).
    """

    def __init__(self, message, code=None, code_name=None, pid=None,
                 returncode=None):
        RemoteError.__init__(self, message, code, code_name)
        self.pid = pid
        self.returncode = returncode


class ForkedError(Error):
    """A workspace of a private stdio backend (``spawn()``, and
    ``open(flag='r')``) used in the child of ``os.fork()``.  That backend
    speaks with the process that started it alone: a child that sent
    requests on the inherited pipes would mix its requests and replies
    with its parent's.  Nothing was sent; the parent's backend and
    workspace go on untouched, and ``close()`` in the child only closes
    the child's copies of the pipes.  Open a workspace in the child
    instead (``pyshelf.open()`` attaches through a server, whose
    workspaces a forked child goes on using: it attaches again, as a
    second client of the session)."""


class RemoteTraceback(Exception):
    """The cause of an exception pyshelf raises for one that shipped code
    raised in the backend: its str() is the backend's traceback, so that
    Python prints it above the exception raised here, as a chained one
    ("The above exception was the direct cause of the following
    exception:"), as ``concurrent.futures`` and ``multiprocessing`` do.
    ``.traceback`` is the text."""

    def __init__(self, traceback):
        Exception.__init__(self, traceback)
        self.traceback = traceback

    def __str__(self):
        return "raised in the backend:\n\n%s" % (self.traceback,)


class SessionEndedWarning(UserWarning):
    """Opening a name with ``flag='c'`` created a new, empty session
    because the session of that name had ended; the message says when and
    why (lease expired, or closed)."""


class ServerOptionsIgnored(UserWarning):
    """``open()`` was given server options (``sync``,
    ``checkpoint_interval``, ``args``) but the store's server ran already,
    started without them: they go on the command line of a server
    ``open()`` starts, and a running server keeps its own.  The message
    names them and the server's pid; to apply them, stop that server
    (``kill -TERM`` its pid: every session is checkpointed) and open
    again."""


class WorkerDiedWarning(UserWarning):
    """The session's worker had died (killed by a signal, or it crashed)
    since this client last heard from it, while this client ran nothing
    there: a new worker resumed the session from its last checkpoint
    (changes made after it are lost), and the request was sent to it.
    The message names the signal."""


for _cls in (Error, RemoteError, UnknownHandleError, VolatileError,
             NotPicklableError, BackendDied, SessionNotFound, SessionEnded,
             SessionBusy, SessionEndedWarning, WorkerDiedWarning,
             WorkerRestarted, RemoteTraceback, ServerOptionsIgnored,
             ForkedError, ForeignHandleError):
    _cls.__module__ = "pyshelf"
del _cls
