"""pyshelf: persistent Python workspaces in a backend process.

Ship Python source to a backend, ``pyshelfd``, that keeps a long-lived
workspace persisted in LMDB; get back values (``DirectValue``), handles to
backend objects (``Wrapped``) or handles to exceptions
(``WrappedExcinfo``)::

    import pyshelf
    from pyshelf import DirectValue

    with pyshelf.spawn(db="/tmp/db", session="s") as ws:
        def mean(xs):
            return DirectValue(sum(xs) / len(xs))
        ws["data"] = [1, 2, 3]
        print(ws.remote_exec(mean, [1, 2, 3]).value)

The session persists after ``close()``: ``pyshelf.open("s", db="/tmp/db")``
finds its globals and handles again.  ``open()`` attaches through the
store's local server (``pyshelfd --server``, started when none runs), where
the session lives on while no client is attached, with code that keeps
running: ``ws.detach()``, ``ws.calls()``, ``ws.result(call_id)``;
``connect(name, socket=PATH)`` attaches through a given server.
``pyshelf.sessions(db)`` lists a store's sessions without attaching.
"""

import pickle as _pickle

from . import _pyshelf
from ._errors import (BackendDied, DetachError, Error, ForeignHandleError,
                      ForkedError, NotPicklableError, RemoteError, RemoteTraceback,
                      ServerOptionsIgnored,
                      SessionBusy, SessionEnded, SessionEndedWarning,
                      SessionNotFound, UnknownHandleError, VolatileError,
                      WorkerDiedWarning, WorkerRestarted)
from ._types import Call, DirectValue, Lost, Wrapped, WrappedExcinfo
from ._types import _Defaults, _function, _handle, _Kwargs  # noqa: F401
from ._workspace import Workspace, connect, end, open, spawn
from ._admin import SessionInfo, sessions

__all__ = ["spawn", "open", "connect", "end", "sessions", "SessionInfo",
           "Workspace", "DirectValue",
           "Wrapped", "WrappedExcinfo", "Lost", "Call", "Error",
           "RemoteError", "UnknownHandleError", "VolatileError",
           "NotPicklableError", "BackendDied", "SessionNotFound",
           "SessionEnded", "SessionBusy", "SessionEndedWarning",
           "WorkerDiedWarning", "WorkerRestarted", "RemoteTraceback",
           "ServerOptionsIgnored", "DetachError", "ForkedError",
           "ForeignHandleError"]

__version__ = "0.1.0"

Workspace.__module__ = "pyshelf"

_pyshelf._setup(Error, RemoteError, UnknownHandleError, VolatileError,
                NotPicklableError, BackendDied, SessionNotFound, SessionEnded,
                SessionBusy, WorkerRestarted, ForkedError, _pickle.loads)
