"""Workspace: one attached pyshelf session, its handles and its globals.

A Workspace owns a ``_pyshelf.Connection`` (the C extension over
libpyshelf): a private stdio backend's (``spawn()``), or, through a
server (``open()``, ``connect()``), a ``_ServerConn`` that replaces the
Connection by a new one when it breaks.  Requests go one at a time under
``_lock``; ``interrupt()`` bypasses it, since its job is to stop the
request that holds it.
"""

import builtins
import codecs
import collections.abc
import functools
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import types
import warnings
import weakref

from . import _pyshelf
from ._errors import (BackendDied, DetachError, Error, ForeignHandleError,
                      ForkedError,
                      NotPicklableError, RemoteError, RemoteTraceback,
                      ServerOptionsIgnored,
                      SessionBusy, SessionEnded, SessionEndedWarning,
                      SessionNotFound, WorkerDiedWarning)
from ._shipping import (_BY_VALUE_CACHE, _BY_VALUE_SOURCE,
                        _FunctionByValue, _NoSource, _SOURCE_CACHE,
                        _defaults_of, _dumps, _get_cloudpickle,
                        _missing_module, _source_of)
from ._types import (Call, DirectValue, Lost, Wrapped, WrappedExcinfo,
                     _Kwargs, _sending)

__all__ = ["Workspace", "spawn", "open", "connect"]

_FunctionType = types.FunctionType

_KIND_DIRECT = _pyshelf.KIND_DIRECT
_KIND_WRAPPED = _pyshelf.KIND_WRAPPED
_ERR_NOT_FOUND = _pyshelf.ERR_NOT_FOUND
_ERR_UNPICKLE = _pyshelf.ERR_UNPICKLE
_ERR_BAD_REQUEST = _pyshelf.ERR_BAD_REQUEST
_ERR_UNKNOWN_CALL = _pyshelf.ERR_UNKNOWN_CALL
_FATE_NOT_RUN = _pyshelf.FATE_NOT_RUN
_FATE_STARTED = _pyshelf.FATE_STARTED
_FATE_DONE = _pyshelf.FATE_DONE

# Binds a workspace global to a handle's object (ws[name] = wrapped).  The
# backend defines shipped functions outside the workspace's globals, so the
# helper itself never becomes a global.
_BIND_SOURCE = ("def _pyshelf_bind(name, obj):\n"
                "    import pyshelf\n"
                "    pyshelf._check_global_name(name)\n"
                "    globals()[name] = obj\n")


def _could_be_global(key):
    """Could key name a workspace global at all?  (A str the wire can
    carry: no NUL, UTF-8.)  Others are simply not in the mapping."""
    if not isinstance(key, str) or "\x00" in key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeError:
        return False
    return True


def _check_name(key):
    """Refuse a name that can never be a workspace global's, before
    anything is sent: TypeError for a non-str, ValueError with the reason
    otherwise.  (The backend checks the rest, the store's key limit, and
    answers BAD_REQUEST.)"""
    if not isinstance(key, str):
        raise TypeError("workspace globals are named by str, not %s"
                        % type(key).__name__)
    if not key:
        raise ValueError("a workspace global's name cannot be empty")
    if len(key) > 4 and key[:2] == "__" and key[-2:] == "__":
        raise ValueError("%r is a name of the backend's own namespace: "
                         "names of the form __x__ are not workspace globals"
                         % (key,))
    if "\x00" in key:
        raise ValueError("a workspace global's name cannot contain a NUL "
                         "character")
    try:
        key.encode("utf-8")
    except UnicodeError:
        raise ValueError("workspace global name %r cannot be encoded as "
                         "UTF-8 (a lone surrogate)" % (key,)) from None


# Call ids (CALL_ID, 16 bytes): a counter that starts at 8 random bytes,
# then 8 random bytes drawn once per process (both again in a forked child,
# whose calls must not reuse its parent's ids).  Two clients' ids can only
# meet when their random halves do (a chance of 2**-64), as with 128 random
# bits per call, but without a getrandom() per call.  The counter comes
# first: older workers put a call in the journal's table by its first 8
# bytes alone.
# next() on a count is atomic under the GIL: threads sharing a workspace
# never get the same id.
_CALL_ID_MASK = (1 << 64) - 1
_call_id_suffix = b""
_call_id_count = None


def _call_id_reseed():
    global _call_id_suffix, _call_id_count
    _call_id_suffix = os.urandom(8)
    _call_id_count = itertools.count(int.from_bytes(os.urandom(8), "big"))


def _new_call_id():
    """A fresh call id (16 bytes)."""
    return (next(_call_id_count) & _CALL_ID_MASK).to_bytes(8, "big") + \
        _call_id_suffix


_call_id_reseed()
os.register_at_fork(after_in_child=_call_id_reseed)


def _timeout_ms(timeout):
    """Seconds (None: no limit) to the wire's milliseconds (0: no limit)."""
    if timeout is None:
        return 0
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds or "
                         "None, not %r" % (timeout,))
    return max(1, int(math.ceil(timeout * 1000)))


# The _Output that last got output on this thread: the one whose call a
# reconnect sends again (_ServerConn.reconnect), if any.
_last_output = threading.local()

# The journal's gap marker, the first output of a replay whose oldest
# output was dropped (exec/journal.h, JOURNAL_GAP_FMT).
_GAP = re.compile(rb"\[pyshelf: (\d+) bytes of output dropped\]\n\Z")
# Runs of output kept to place such a gap (beyond: the stream order of
# the oldest bytes is not known, and the rest counts as stdout).
_RUNS_MAX = 100000


class _Seen:
    """The output of one call written so far: bytes per stream, and their
    order as runs [stream, bytes] (consecutive writes to one stream make
    one run)."""

    __slots__ = ("n", "runs")

    def __init__(self):
        self.n = [0, 0]
        self.runs = []

    def add(self, i, k):
        self.n[i] += k
        runs = self.runs
        if runs and runs[-1][0] == i:
            runs[-1][1] += k
        elif len(runs) < _RUNS_MAX:
            runs.append([i, k])


class _Replay:
    """A call sent again after a broken connection replays its output
    from its start (docs/PROTOCOL.md 7.4): the bytes written already are
    skipped, per stream.  A gap marker first (the journal dropped the
    oldest D bytes) is dropped with them when they were written here,
    and what was dropped then comes off the skip of each stream; one for
    bytes never written here is shown for those."""

    __slots__ = ("left", "runs", "first")

    def __init__(self, seen):
        self.left = list(seen.n)
        self.runs = [list(r) for r in seen.runs]
        self.first = True

    def take(self, i, data):
        first, self.first = self.first, False
        m = _GAP.match(data) if first and i == 1 else None
        if m is not None:
            return self._gap(int(m.group(1)))
        k = min(self.left[i], len(data))
        self.left[i] -= k
        return data[k:] if k else data

    def _gap(self, dropped):
        rest = dropped
        for j, k in self.runs:
            t = min(k, rest)
            self.left[j] -= t
            rest -= t
            if not rest:
                break
        if rest:         # the runs ran out: count it as stdout
            t = min(self.left[0], rest)
            self.left[0] -= t
            rest -= t
        self.left = [max(0, x) for x in self.left]
        if rest:
            return b"[pyshelf: %d bytes of output dropped]\n" % rest
        return b""


class _Output:
    """Streamed stdout/stderr of one remote_exec: decodes each stream's
    bytes incrementally as UTF-8 (errors replaced) and writes the text to
    the file-like object given, or to sys.stdout/sys.stderr as they are at
    call time.  After a reconnect that sends the call again, its output
    comes again from its start: what was written is not written twice
    (replaying())."""

    __slots__ = ("files", "decoders", "seen", "replay")

    def __init__(self, stdout, stderr):
        self.files = (sys.stdout if stdout is None else stdout,
                      sys.stderr if stderr is None else stderr)
        self.decoders = None    # [stdout's, stderr's] from the first output
        self.seen = None        # a _Seen from the first output
        self.replay = None      # a _Replay while a replay is skipped

    def replaying(self):
        """The call is being sent again: skip the output written."""
        if self.seen is not None:
            self.replay = _Replay(self.seen)

    def __call__(self, stream, data):
        i = 0 if stream == _pyshelf.STDOUT else 1
        if self.replay is not None:
            data = self.replay.take(i, data)
            if not data:
                return
        if self.seen is None:
            self.seen = _Seen()
            self.decoders = [None, None]
            _last_output.out = self
        self.seen.add(i, len(data))
        dec = self.decoders[i]
        if dec is None:
            dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
            self.decoders[i] = dec
        self._write(i, dec.decode(data))

    def _write(self, i, text):
        f = self.files[i]
        if not text or f is None:
            return
        f.write(text)
        flush = getattr(f, "flush", None)
        if flush is not None:
            flush()

    def close(self):
        """Write what an unfinished UTF-8 sequence left behind."""
        if self.decoders is None:
            return      # no output: the no-op call's path
        for i, dec in enumerate(self.decoders):
            if dec is not None:
                self._write(i, dec.decode(b"", final=True))


def _write_notice(stream, data):
    """The backend's notices outside remote_exec (e.g. that an entry cannot
    be persisted) go to this process's stderr as they are now."""
    f = sys.stderr if stream != _pyshelf.STDOUT else sys.stdout
    if f is not None:
        f.write(data.decode("utf-8", "replace"))
        flush = getattr(f, "flush", None)
        if flush is not None:
            flush()


class _HandleTable:
    """The workspace's live Wrapped objects by id, and the ids of collected
    ones waiting to be released.  Wrapped objects refer to this table, not
    to the Workspace, so that handles never keep a workspace alive."""

    __slots__ = ("live", "pending", "session_id")

    def __init__(self, session_id=None):
        self.live = weakref.WeakValueDictionary()
        self.pending = []  # appended to by Wrapped.__del__, any thread
        self.session_id = session_id  # handles are valid session-wide


def _find_backend(backend):
    """The pyshelfd to run: the argument, $PYSHELFD, the build tree's, the
    installed one, or one on PATH."""
    if backend is not None:
        return os.fspath(backend)
    env = os.environ.get("PYSHELFD")
    if env:
        return env
    try:
        from . import _paths
    except ImportError:
        _paths = None
    for cand in (getattr(_paths, "BUILD_BACKEND", None),
                 getattr(_paths, "INSTALLED_BACKEND", None)):
        if cand and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("pyshelfd")
    if found:
        return found
    raise Error("pyshelfd not found: pass backend=, set PYSHELFD, or "
                "install pyshelf")


def _user_stacklevel():
    """The stacklevel of warnings.warn() that points at the first frame
    outside this package (the user's call)."""
    f, level = sys._getframe(1), 1
    while f is not None and \
            f.f_globals.get("__name__", "").startswith("pyshelf"):
        f = f.f_back
        level += 1
    return level


def _worker_died(info, fate):
    """The new attach says that the session's worker died since this
    client last heard from it.  A request that cannot have run there
    (fate: it was never sent whole, or never read, or none was in flight)
    goes to the new worker: warn (WorkerDiedWarning, naming the signal).
    One that may have run raises BackendDied saying what is known."""
    sig = info.get("worker_signal") or 0
    death = info.get("worker_message") or "the session's worker died"
    if fate in (_FATE_NOT_RUN, _FATE_DONE):
        warnings.warn(WorkerDiedWarning(
            "%s before this request reached it: a new worker resumed the "
            "session from its last checkpoint (changes made after it are "
            "lost), and the request was sent to it" % death),
            stacklevel=_user_stacklevel())
        return
    if fate == _FATE_STARTED:
        when = "while this call ran: it ran in part"
    else:
        when = ("after this request was sent to it and before it "
                "answered: the request may have run, in part or in whole")
    raise BackendDied("%s %s; the session resumed from its last checkpoint "
                      "with a new worker, and this workspace goes on with "
                      "it" % (death, when), -sig if sig else None)


class _ServerConn:
    """The connection of a workspace attached through a server: the
    extension's Connection (``conn``) and what the last attach said
    (``info``).  A request whose connection broke (``BackendDied``: EOF or
    a reset) attaches again and is sent once more, the same request (an
    EXEC with the same call id, which the worker runs at most once).  When
    the new attach says that the session's previous worker died, the
    request is sent again only if it cannot have run there (the
    connection had closed before it was written, or closed with it
    unread), with a ``WorkerDiedWarning`` naming the signal; else
    ``BackendDied`` says what is known.  Either way the workspace goes
    on with the new worker."""

    # not re-sent after a reconnect: ending, and the interrupts (whose
    # request ended with the connection)
    _ONCE = frozenset(("close", "detach", "close_session", "interrupt",
                       "interrupt_hard", "set_output_handler", "set_spin",
                       "set_close_timeout", "set_max_frame",
                       "backend_status"))

    def __init__(self, connect):
        self._connect = connect    # () -> (Connection, info dict)
        self.conn, self.info = connect()
        self.broken = False

    def after_fork(self):
        """In the child of os.fork(): the Connection is the parent's
        conversation.  Drop it (collecting it closes the child's copies
        of its descriptors and sends nothing: libpyshelf refuses a
        connection set up by another process), so that the next request
        attaches again, a second client of the session.  What was in
        flight was the parent's: nothing to re-send."""
        self.conn = None
        self.broken = False

    def reconnect(self):
        """Attach again with a new connection.  When the session's worker
        died meanwhile (the new one serves it now): BackendDied if the
        request in flight may have run, else a WorkerDiedWarning
        (_worker_died)."""
        old, self.conn = self.conn, None
        # what became of the request in flight on the old connection
        # (none: a request not sent yet; the last attach failed)
        fate = old.request_fate() if old is not None else _FATE_NOT_RUN
        try:
            if old is not None:
                old.close()
        except Error:
            pass
        self.broken = True
        self.conn, self.info = self._connect()
        self.broken = False
        if self.info.get("worker_died"):
            _worker_died(self.info, fate)
        # the request goes again: a call (EXEC, CALL_RESULT) that had
        # output replays it from its start
        out = getattr(_last_output, "out", None)
        if out is not None:
            _last_output.out = None
            out.replaying()

    def __getattr__(self, name):
        conn = self.conn
        if conn is None or self.broken:
            if name in self._ONCE:
                # nothing to end or interrupt on a broken connection
                return _nothing
            self.reconnect()
            conn = self.conn
        if conn is None:
            # another thread's reconnect is under way, or failed
            raise BackendDied("not attached: the last attach to the "
                              "server failed; the next call attaches again")
        attr = getattr(conn, name)
        if name in self._ONCE or not callable(attr):
            return attr
        return functools.partial(self._request, name)

    def exec(self, *args):
        """Connection.exec, as _request sends it (the same call id again
        after a reconnect), without __getattr__'s look-ups: the path of
        every remote_exec."""
        if self.conn is None or self.broken:
            self.reconnect()
        try:
            return self.conn.exec(*args)
        except BackendDied:
            self.broken = True
        except ForkedError:
            self.after_fork()   # a fork() that ran no at-fork hook
        self.reconnect()
        return self.conn.exec(*args)

    def _request(self, name, *args, **kwargs):
        try:
            return getattr(self.conn, name)(*args, **kwargs)
        except BackendDied:
            self.broken = True
        except ForkedError:
            # libpyshelf refused the parent's connection: a fork() that
            # ran no at-fork hook (a C library's), nothing was sent
            self.after_fork()
        self.reconnect()
        return getattr(self.conn, name)(*args, **kwargs)


# the ERROR codes of a DETACH whose checkpoint failed (dispatch_pyerror:
# a StoreError, or a backend bug)
_CHECKPOINT_FAILED = frozenset(("STORE", "INTERNAL"))


def _nothing(*args, **kwargs):
    return None


def _server_pid(pid_path, attached_pid):
    """The live pid a server's pid file names; when there is no such file
    (a server that does not write one), the pid the attach named if it
    lives; else None."""
    try:
        with builtins.open(pid_path, "rb") as f:
            pid = int(f.read(32).split()[0])
    except FileNotFoundError:
        pid = attached_pid
    except (OSError, ValueError, IndexError, TypeError):
        return None
    return _live_pid(pid)


def _live_pid(pid):
    """pid when it names a live process (not a zombie), else None."""
    if not pid or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:        # a zombie is gone
        with builtins.open("/proc/%d/stat" % pid, "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return None
    except (OSError, IndexError):
        pass
    return pid


class _ForkedConn:
    """A spawn()ed workspace's connection in the child of os.fork(): its
    private backend is the parent's, so every request raises
    ForkedError.  close() and detach() do nothing (the parent's backend
    must not see a DETACH, nor be waited for)."""

    def __init__(self, owner, backend_pid):
        self._owner = owner
        self._backend_pid = backend_pid

    def close(self):
        return None

    def detach(self):
        return None

    def __getattr__(self, name):
        raise ForkedError(
            "this workspace's private backend (pyshelfd --stdio, pid %s) "
            "belongs to process %d, which this one (pid %d) was fork()ed "
            "from: a stdio backend serves one process.  Nothing was sent; "
            "open a workspace of your own in the child (pyshelf.open() "
            "through a server, whose workspaces a forked child goes on "
            "using)"
            % (self._backend_pid, self._owner, os.getpid()))


# The workspaces of this process by id(), for _after_fork_in_child (a
# Workspace is unhashable: a mapping whose contents change).
_live_workspaces = weakref.WeakValueDictionary()


def _after_fork_in_child():
    """os.fork()'s child: no workspace may go on with its parent's
    conversation (replies would cross between the processes)."""
    for ws in list(_live_workspaces.values()):
        ws._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Workspace(collections.abc.MutableMapping):
    """One attached session of a pyshelf backend.

    Run code with ``remote_exec``; keep what it returns as handles
    (``Wrapped``) or values (``DirectValue``).  The workspace's globals are
    also a mapping: ``ws['x'] = v`` pickles ``v`` here and binds it there,
    ``ws['x']`` sends the value back by pickle.  ``close()`` (or
    ``detach()``) detaches (the session and its objects persist);
    ``close_session()`` ends the session.  Made by ``pyshelf.spawn()`` (a
    private backend over stdio), ``pyshelf.open()`` and
    ``pyshelf.connect()`` (through a server).
    """

    def __init__(self, conn, info):
        self._conn = conn
        self._server = isinstance(conn, _ServerConn)
        self._lock = threading.Lock()
        self._closed = False
        self.returncode = None
        self._last_call_id = None  # bytes; last_call_id is its hex
        self.session = info.get("session")
        sid = info.get("session_id")
        self.session_id = sid.hex() if sid is not None else None
        self._handles = _HandleTable(self.session_id)
        self.created = bool(info.get("created"))
        self._pid = info.get("pid") or conn.pid
        self.backend_name = info.get("name")
        self.protocol_version = info.get("version")
        self.flag = info.get("flag", "c")
        self._lease_ms = info.get("lease_ms", 0)
        self._ended_at = None  # when close()/close_session() ran
        self._session_closed = False
        self._owner_pid = os.getpid()   # the process that opened it
        _live_workspaces[id(self)] = self

    # --- life cycle -----------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            self.close()
            return
        # the body's exception goes on: a close() that fails too is
        # added to it as a note, never raised in its place
        try:
            self.close()
        except Error as e:
            exc.add_note("pyshelf: and leaving the with block, close() "
                         "failed: %s: %s" % (type(e).__name__, e))

    def __repr__(self):
        state = "closed" if self._closed else "pid=%s" % (self.pid,)
        return "<pyshelf.Workspace session=%r %s>" % (self.session, state)

    # Mapping equality, as for shelve.Shelf: two workspaces, or a
    # workspace and a dict, with equal items are equal (comparing fetches
    # every global's value).  Its contents change, so it is unhashable.
    def __eq__(self, other):
        if other is self:
            return True
        return collections.abc.Mapping.__eq__(self, other)

    __hash__ = None

    def _after_fork(self):
        """In the child of os.fork() (from _after_fork_in_child).  A new
        _lock: a thread of the parent may have held it at the fork, and
        that thread is not here to release it.  The handles inherited are
        the parent's to release: the child's copies never send a RELEASE
        (handles are the session's, and the parent still uses them).
        Through a server the child attaches again at its next request
        (_ServerConn.after_fork); a private stdio backend cannot be
        shared: its requests raise ForkedError, and close() sends
        nothing."""
        self._lock = threading.Lock()
        h = self._handles
        del h.pending[:]
        for w in list(h.live.values()):
            w._own = False
        if self._closed:
            return
        if self._server:
            self._conn.after_fork()
        elif not isinstance(self._conn, _ForkedConn):
            # collecting the parent's Connection closes the child's
            # copies of its pipes, silently (libpyshelf sees the fork)
            self._conn = _ForkedConn(self._owner_pid, self._pid)

    def _begin(self):
        """Start a request (with _lock held): refuse a closed workspace and
        send the queued releases first, as one RELEASE."""
        if self._closed:
            raise Error("the workspace is closed")
        if self._handles.pending:
            self._flush_releases()

    @property
    def pid(self):
        """The pid of the process that serves the session: the stdio
        backend's, or the server's worker's (a new one after the worker
        was restarted)."""
        if self._server and self._conn.info is not None:
            return self._conn.info.get("pid") or None
        return self._pid

    @property
    def last_call_id(self):
        """The call id (hex) of the last remote_exec sent, for
        ``result()``; None before the first."""
        cid = self._last_call_id
        return None if cid is None else cid.hex()

    @property
    def server_pid(self):
        """The pid of the server (its supervisor) that runs for this
        workspace's store now, as its pid file says (a supervisor that was
        killed is replaced by the next open, which adopts the workers);
        None when none runs, or for a private stdio backend.  Read anew
        each time (``kill -TERM`` it to stop the server)."""
        if not self._server:
            return None
        info = self._conn.info
        attached = info.get("server_pid") if info is not None else None
        path = getattr(self._conn, "pid_path", None)
        if path is None:
            return _live_pid(attached)
        return _server_pid(path, attached)

    def close(self):
        """Detach.  Through a server (``open()``, ``connect()``): this
        client's connection ends, the session's worker goes on serving
        other clients and running code that runs; a stdio backend
        (``spawn()``) checkpoints and exits.  The session and its objects
        persist for the next ``pyshelf.open()``.  Idempotent.

        The detach's checkpoint is ``sync()``'s: when it returns, every
        change is committed and synced.  When that checkpoint fails (a
        thread of shipped code kept changing an entry while it was
        pickled, a full store), close() raises ``DetachError`` with the
        backend's message, after the connection is closed all the same:
        through a server the worker still holds the unsaved state and
        tries again at its next checkpoint (``.pid``); a stdio backend
        tries once more as it exits, and close() raises only when that
        failed too (``.returncode``), the changes it could not save being
        lost.  A ``with`` block whose body raised adds the failure to that
        exception as a note instead.  Through a server, a close() that
        comes while a call runs returns at once and its checkpoint is
        taken when the call ends: that one's failure only the worker's
        log (and the next ``sync()``) can tell."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ended_at = time.time()
            try:
                self._flush_releases()
            except Error:
                pass
            failed, pid = self._detach_first()
            self.returncode = self._conn.close()
        if failed is None or (not self._server and self.returncode == 0):
            return      # saved: by the detach, or by a stdio exit
        raise DetachError(self._detach_message(failed, pid),
                          failed.code, failed.code_name,
                          pid=pid if self._server else None,
                          returncode=self.returncode) from None

    def _detach_first(self):
        """Send DETACH (with _lock held) before the connection closes,
        as the close does, to see its reply: (the RemoteError of a
        detach whose checkpoint failed, or None; the pid serving the
        session).  A connection that broke, a backend that had gone, a
        session that ended meanwhile: nothing to detach from, nothing
        said, as before."""
        pid = self.pid
        try:
            self._conn.detach()
        except RemoteError as e:
            if e.code_name in _CHECKPOINT_FAILED:
                return e, pid
        except Error:
            pass
        return None, pid

    def _detach_message(self, failed, pid):
        if self._server:
            where = ("The session's worker (pid %s) still holds them and "
                     "tries again at its next checkpoint: open the session "
                     "again and sync() to save them now." % (pid,))
        else:
            where = ("The backend tried again as it exited, and failed "
                     "too (exit status %s): what it could not save is "
                     "lost." % (self.returncode,))
        return ("close() detached, but the session's last changes are not "
                "all in the store: its final checkpoint failed: %s.\n%s"
                % (str(failed).rstrip(". "), where))

    def detach(self):
        """Detach from the session, leaving it (and code that runs in it)
        to the server: the same as ``close()``."""
        self.close()

    def close_session(self):
        """End the session for good: the backend deletes its objects,
        leaves a tombstone (``pyshelf-dump`` lists it; reopening the name
        warns with ``SessionEndedWarning``) and exits."""
        with self._lock:
            self._begin()
            self._conn.close_session()
            self._closed = True
            self._session_closed = True
            self._ended_at = time.time()
            self.returncode = self._conn.close()

    @property
    def closed(self):
        return self._closed

    @property
    def lease(self):
        """The session's lease in seconds, as the backend reports it: how
        long it lives with no client attached and no code running (0:
        forever).  Set it (``ws.lease = 3600``) to change it for good:
        the backend writes it at once, and it runs from now (and from
        each later request or detach)."""
        return self._lease_ms / 1000.0

    @lease.setter
    def lease(self, seconds):
        ms = _lease_ms(seconds)
        if ms is None:
            raise ValueError("bad lease: a number of seconds >= 0 (0: "
                             "forever), not None")
        with self._lock:
            self._begin()
            try:
                self._conn.set_lease(ms)
            except RemoteError as e:
                if e.code_name != "UNKNOWN_TYPE":
                    raise
                raise _old_server(e, "setting a lease") from None
        self._lease_ms = ms
        if self._server:
            # attaching again (a broken connection) keeps it
            self._conn.lease_box[0] = ms

    @property
    def expires(self):
        """When the session's lease runs out if no client attaches again,
        as a POSIX timestamp: ``lease`` seconds after the last detach (a
        session does not expire while a client is attached, so while this
        workspace is open, ``lease`` seconds from now).  None when the
        lease is 0 (forever) or the session was ended by
        ``close_session()``."""
        if self._lease_ms == 0 or self._session_closed:
            return None
        base = self._ended_at if self._ended_at is not None else time.time()
        return base + self._lease_ms / 1000.0

    def interrupt(self, hard=False):
        """Stop the ``remote_exec`` running in another thread: it returns a
        ``WrappedExcinfo`` for KeyboardInterrupt.  When this workspace
        runs nothing, it stops whatever runs in the session: through a
        server, a call another client started, or one left running by a
        client that detached (see ``calls()``).  No-op when nothing runs.

        ``hard=True`` (through a server) is for code stuck in C, which a
        KeyboardInterrupt does not reach: the worker is restarted from the
        session's last checkpoint and the call raises ``WorkerRestarted``
        saying what was lost.  A stdio backend takes it as a plain
        interrupt."""
        if self._closed:
            return
        if hard and self._server:
            self._conn.interrupt_hard()
        else:
            self._conn.interrupt()

    def sync(self):
        """Checkpoint now: in-place changes become durable."""
        with self._lock:
            self._begin()
            self._conn.sync()

    def ping(self):
        """A round trip to the backend."""
        with self._lock:
            self._begin()
            self._conn.ping()

    def stats(self):
        """The backend's statistics (a dict): ``globals_loaded``,
        ``handles_loaded``, ``volatile``, ``unwritten`` (entries a full
        store could not take yet), ``code_cache``,
        ``entries_written``, ``checkpoints``, ``last_checkpoint_s`` and its
        ``last_checkpoint_phases_s`` (``diff``, ``pickle``, ``commit``),
        ``interval_checkpoints`` (interval checkpoints run),
        ``interval_scans`` (those that looked at the loaded entries for
        in-place changes), ``last_interval_s``,
        ``namespace_diffs`` (``tracked``: diffs that looked at the globals
        written through the namespace only; ``full``: diffs of every
        global), ``next_handle``, ``threads`` (threads that shipped code
        started, with threading or _thread.start_new_thread, and that are
        alive: code running, which keeps a server's worker and the
        session's lease), ``backend_code`` (``bytecode``:
        the backend's Python half loaded as built; ``source``: compiled at
        start)."""
        with self._lock:
            self._begin()
            return json.loads(self._conn.stats())

    # --- running code ----------------------------------------------------

    def remote_exec(self, func_or_source, /, *args, timeout=None,
                    stdout=None, stderr=None, want_value=False, **kwargs):
        """Run a function (called with args and kwargs) or a block of
        source (REPL semantics, no arguments) in the workspace.

        A function ships as its source; one whose source cannot be
        shipped (typed at a REPL or in a notebook, a lambda, a closure)
        ships by value (cloudpickle), with the workspace as its globals in
        both cases.  A function shipped as its source gets the client's
        current defaults and annotations with each call, sent as its
        arguments are: its def line is not evaluated in the backend.
        Arguments that are ``Wrapped`` go as handles, others
        by pickle, with any ``Wrapped`` inside them (a list of handles) as
        the handle's object; classes and functions of the client's
        ``__main__``, and of modules the backend cannot import, travel by
        value.  ``timeout``, ``stdout``, ``stderr`` and ``want_value`` are
        this call's own options; any other keyword goes to the function.
        Output streams to ``stdout``/``stderr`` (default: this process's
        ``sys.stdout``/``sys.stderr``).  ``timeout`` (seconds) is enforced
        by the backend.  Returns ``DirectValue`` (the code returned a
        DirectValue or None, or ``want_value`` was set), ``Wrapped``, or
        ``WrappedExcinfo`` (the code raised).  Ctrl-C interrupts the
        backend; a second Ctrl-C stops waiting.
        """
        fn = None
        signed = False
        if type(func_or_source) is _FunctionType and (hit := _SOURCE_CACHE.get(
                func_or_source.__code__)) is not None:
            code, func, signed = hit   # shipped before: from the cache
        elif isinstance(func_or_source, str):
            if args or kwargs:
                raise TypeError("a block of source takes no arguments; "
                                "ship a function to pass arguments")
            code, func = func_or_source, None
        else:
            try:
                code, func, signed = _source_of(func_or_source)
            except _NoSource:
                if _get_cloudpickle() is None:
                    raise
                code, func = _BY_VALUE_SOURCE, "_pyshelf_by_value"
                fn = func_or_source
        # a function shipped as its source takes the client's defaults and
        # annotations, never what its def line would say in the backend
        if func is not None and fn is None and (
                signed or
                getattr(func_or_source, "__defaults__", None) is not None or
                getattr(func_or_source, "__kwdefaults__", None) is not None):
            by_source = func_or_source
        else:
            by_source = None
        timeout_ms = 0 if timeout is None else _timeout_ms(timeout)
        modules = []
        while True:
            wire = [self._arg(a, i, modules)
                    for i, a in enumerate(args, 1)] if args else []
            if fn is not None:
                wire.append(self._dumps_function(fn, modules))
            if by_source is not None and (
                    d := self._dumps_defaults(by_source, modules)) is not None:
                wire.append(d)
            if kwargs:
                wire.append(self._dumps(_Kwargs(kwargs),
                                        "the keyword arguments", modules))
            try:
                return self._run(code, func, wire, timeout_ms, want_value,
                                 _Output(stdout, stderr))
            except RemoteError as e:
                more = _missing_module(e, modules) \
                    if e.code == _ERR_UNPICKLE else None
                if more is None:
                    raise
                modules.append(more)   # send that module's code by value

    def _run(self, code, func, wire, timeout_ms, want_value, out):
        """Send one EXEC under a new call id and make its result."""
        call_id = _new_call_id()
        with self._lock:
            if self._closed or self._handles.pending:
                self._begin()
            self._last_call_id = call_id
            try:
                r = self._conn.exec(code, func, wire, want_value, timeout_ms,
                                    out, call_id)
            finally:
                out.close()
            return self._result(r)

    # --- the journal of calls (through a server) --------------------------

    def calls(self):
        """The session's journaled calls, oldest first: a list of
        ``pyshelf.Call`` (id, summary, state, started, ended,
        output_bytes, output_dropped), also those that ran while no
        client was attached.  Answered at once, even while code runs."""
        with self._lock:
            self._begin()
            rows = json.loads(self._conn.calls())
        return [Call(r["id"], r.get("summary", ""), r.get("state", ""),
                     _seconds(r.get("started")), _seconds(r.get("ended")),
                     r.get("output_bytes", 0), r.get("output_dropped", 0))
                for r in rows]

    def result(self, call_id, timeout=None, *, stdout=None, stderr=None):
        """The result of a journaled call (its id: a ``Call``, its hex
        string, e.g. ``ws.last_call_id``, or its 16 bytes), as
        ``remote_exec`` returned it, after its output is replayed to
        ``stdout``/``stderr`` (default: ``sys.stdout``/``sys.stderr``).
        Waits while the call runs, up to ``timeout`` seconds (None: no
        limit; then ``TimeoutError``).  KeyError for an id the journal
        does not hold; ``WorkerRestarted`` for a call lost to a hard
        interrupt."""
        if isinstance(call_id, Call):
            call_id = call_id.id
        raw = bytes.fromhex(call_id) if isinstance(call_id, str) \
            else bytes(call_id)
        if len(raw) != 16:
            raise ValueError("a call id is 16 bytes (32 hex digits), not %r"
                             % (call_id,))
        timeout_ms = -1 if timeout is None else _timeout_ms(timeout)
        out = _Output(stdout, stderr)
        with self._lock:
            self._begin()
            try:
                r = self._conn.call_result(raw, True, timeout_ms, out)
            except RemoteError as e:
                if e.code == _ERR_UNKNOWN_CALL:
                    raise KeyError(raw.hex()) from None
                raise
            finally:
                out.close()
            return self._result(r)

    def _handle_id(self, w, what="a handle inside a value sent"):
        """The id of w, a Wrapped to send: ValueError unless it is a handle
        of this workspace's session.  A handle id is valid on any
        connection to its session: one from an earlier workspace of this
        session (before a restart) is as good as one of this
        workspace's."""
        owner = w._owner
        if owner is not self._handles and (
                owner is None or owner.session_id is None or
                owner.session_id != self._handles.session_id):
            raise ForeignHandleError("%s: %r is not a handle of this "
                                 "workspace's session" % (what, w))
        return w._id

    def _dumps(self, obj, what, modules=()):
        """Pickle a value to send (_dumps), with each Wrapped inside it as
        a reference to its handle's object."""
        _sending.ws = self
        try:
            return _dumps(obj, what, modules, oob=True)
        finally:
            _sending.ws = None

    def _dumps_defaults(self, f, modules):
        """The current defaults and annotations of f, a function shipped
        as its source, pickled as its arguments are (_defaults_of); None
        when a default cannot be pickled (a lock, sys.stdout): f is then
        defined as its def is written, its defaults evaluated in the
        backend, as before defaults travelled, rather than refused."""
        _sending.ws = self
        try:
            return _dumps(_defaults_of(f, modules),
                          "the default values of %s" % f.__qualname__,
                          modules, oob=True)
        except NotPicklableError:
            return None
        finally:
            _sending.ws = None

    def _dumps_function(self, f, modules):
        """A function sent by value, pickled (cached while its defaults
        are the same objects; not cached with a closure, whose cells may
        change)."""
        key = (f.__code__, f.__defaults__, f.__kwdefaults__)
        hit = _BY_VALUE_CACHE.get(f) if f.__closure__ is None else None
        if hit is not None and not modules and \
                all(a is b for a, b in zip(hit[0], key)):
            return hit[1]
        _sending.ws = self
        try:
            data = _get_cloudpickle().dumps(_FunctionByValue(f), protocol=5)
        except Exception as e:
            raise NotPicklableError("%s cannot be sent by value: %s: %s" % (
                f.__qualname__, type(e).__name__, e)) from e
        finally:
            _sending.ws = None
        if f.__closure__ is None and not modules:
            _BY_VALUE_CACHE[f] = (key, data)
        return data

    def _arg(self, a, i, modules=()):
        """One argument as the extension takes it: int handle or pickle."""
        if isinstance(a, Wrapped):
            return self._handle_id(a, "argument %d" % i)
        return self._dumps(a, "argument %d" % i, modules)

    def _result(self, r):
        """A result tuple from the extension as the object the user gets."""
        kind, hid, type_name, exc_type, message, value, volatile = r
        if kind == _KIND_DIRECT:
            return DirectValue(value)
        if kind == _KIND_WRAPPED:
            w = self._wrapped(hid, type_name, Wrapped)
        else:
            w = self._wrapped(hid, type_name, WrappedExcinfo, exc_type,
                              message)
            if value is not None:   # the backend's traceback text
                w._traceback = value
        if volatile:
            w._volatile = volatile
        return w

    def _wrapped(self, hid, type_name, cls, exc_type=None, message=None,
                 own=True):
        """The Wrapped for handle hid: the live one when there is one (one
        id, one object), else a new one.  An id that comes back while its
        release is queued is taken off the queue.  own: this client got
        the handle (a result, ws.wrap), so collecting the Wrapped releases
        it; a handle found (ws.handles(), ws.handle(id)) is the session's,
        and stays until ws.release()."""
        h = self._handles
        w = h.live.get(hid)
        if w is None or (cls is WrappedExcinfo
                         and not isinstance(w, WrappedExcinfo)):
            w = cls.__new__(cls)
            w._id = hid
            w._type_name = type_name
            w._volatile = None
            if cls is WrappedExcinfo:
                w._exc_type = exc_type or ""
                w._message = message or ""
                w._traceback = None
            w._owner = h
            w._own = own
            h.live[hid] = w
        pending = h.pending
        while pending and hid in pending:
            try:
                pending.remove(hid)
            except ValueError:
                break
        return w

    def _flush_releases(self):
        """Send one RELEASE for the handles whose Wrapped was collected
        (called with _lock held)."""
        h = self._handles
        pending = h.pending
        ids = []
        while pending:
            hid = pending.pop()
            # A live Wrapped with this id came back since: keep it.
            if hid not in h.live and hid not in ids:
                ids.append(hid)
        if ids:
            self._conn.release(ids)

    # --- handles ---------------------------------------------------------

    def _found(self, row):
        """The Wrapped for one row of the HANDLES listing: a
        WrappedExcinfo (with its exc_type and message) for an exception's
        handle, as the RESULT that made it was."""
        hid, tn, exc_type, message = row
        if exc_type is None:
            return self._wrapped(hid, tn, Wrapped, own=False)
        return self._wrapped(hid, tn, WrappedExcinfo, exc_type, message,
                             own=False)

    def handles(self):
        """The session's live handles, as Wrapped objects: an exception's
        handle is a WrappedExcinfo with its ``exc_type`` and ``message``,
        also after a restart.  Those this client did not get itself (made
        before this attach, or by another client) are found, not taken:
        dropping their Wrapped objects does not release them;
        ``release()`` does."""
        with self._lock:
            self._begin()
            return [self._found(row) for row in self._conn.handles()]

    def handle(self, id):
        """The Wrapped for a live handle id; KeyError when not live.  Like
        ``handles()``, it does not make the handle this client's: dropping
        it does not release it."""
        id = int(id)
        w = self._handles.live.get(id)
        if w is not None:
            return w
        with self._lock:
            self._begin()
            for row in self._conn.handles():
                if row[0] == id:
                    return self._found(row)
        raise KeyError(id)

    def release(self, *handles):
        """Release handles now (``Wrapped`` objects or ids): the backend
        drops their objects from memory and store.  For handles found with
        ``handles()``/``handle(id)``, which are not released when their
        Wrapped is collected; and for any handle, to free it before its
        Wrapped is.  Ids that are not live are ignored.  Returns once the
        release is checkpointed (a crash of the backend after it does not
        bring the handles back).  A released handle's Wrapped is dead:
        passing it again is an ``UnknownHandleError``.  A Wrapped of
        another session's handle is a ValueError, and then nothing is
        released: its id names another object here."""
        ids = []
        for x in handles:
            hid = self._handle_id(x, "release()") if isinstance(x, Wrapped) \
                else int(x)
            if hid not in ids:
                ids.append(hid)
        with self._lock:
            self._begin()
            live = self._handles.live
            for hid in ids:
                w = live.pop(hid, None)
                if w is not None:
                    w._own = False       # its collection sends nothing
            if ids:
                self._conn.release(ids)
                # RELEASE has no reply; a request queued behind it does,
                # after the checkpoint that wrote the release
                self._conn.stats()

    def wrap(self, name):
        """A handle (Wrapped) to the workspace global ``name``; for values
        that cannot travel by pickle.  KeyError when there is no such
        global."""
        if not _could_be_global(name):
            raise KeyError(name)
        with self._lock:
            self._begin()
            try:
                r = self._conn.get(name, False)
            except RemoteError as e:
                if e.code == _ERR_NOT_FOUND:
                    raise KeyError(name) from None
                raise
            return self._result(r)

    def lost(self):
        """Entries of the session that cannot be restored: a list of
        ``Lost(name, type_name, reason)`` (a handle's name is ``"handle
        N"``).  Listed: an entry that was volatile (could not be
        persisted) and did not survive a restart; one whose record is
        damaged (unreadable, or its digest does not match); one that
        failed to load in this backend because its class cannot be
        imported; and one whose record holds a lost entry (the reason
        names it).  The listing runs no pickle: it reads each record not
        in memory and checks its digest, so an entry whose record is
        intact but whose class is gone shows up here only once loading it
        was tried (``ws[name]``, or code that uses it).  Entries in memory
        are not lost."""
        with self._lock:
            self._begin()
            return [Lost(*t) for t in self._conn.lost()]

    # --- the mapping over the globals ------------------------------------

    def __getitem__(self, key):
        if not _could_be_global(key):
            raise KeyError(key)
        with self._lock:
            self._begin()
            try:
                r = self._conn.get(key, True)
            except RemoteError as e:
                # a name that can never be a global's (BAD_REQUEST) is
                # not in the mapping either
                if e.code in (_ERR_NOT_FOUND, _ERR_BAD_REQUEST):
                    raise KeyError(key) from None
                raise
            except NotPicklableError as e:
                msg = str(e)
                if "ws.wrap(" not in msg:
                    msg = "%s; use ws.wrap(%r) to get a handle to it" % (
                        msg, key)
                raise NotPicklableError(msg, e.code, e.code_name) from None
        return r[5]

    def __setitem__(self, key, value):
        """Bind the global key.  A name that cannot be a stored global's
        (empty, longer than the store's key limit, not UTF-8, or a __x__
        name of the backend's own) is a ValueError: nothing is bound."""
        _check_name(key)
        if isinstance(value, Wrapped):
            # Bind the handle's object itself, not a pickled Wrapped.
            r = self._run(_BIND_SOURCE, "_pyshelf_bind",
                          [_dumps(key, "the key"),
                           self._handle_id(value, "the value for %r" % key)], 0,
                          False, _Output(None, None))
            if isinstance(r, WrappedExcinfo):
                cause = RemoteTraceback(r.traceback) if r.traceback \
                    else None
                if r.exc_type == "ValueError":
                    raise ValueError("cannot bind %r: %s"
                                     % (key, r.message)) from cause
                raise Error("binding %r failed in the backend: %s: %s"
                            % (key, r.exc_type, r.message)) from cause
            return
        modules = []
        while True:
            data = self._dumps(value, "the value for %r" % key, modules)
            try:
                with self._lock:
                    self._begin()
                    if type(data) is tuple:   # with its buffers
                        self._conn.set(key, data[0], data[1])
                    else:
                        self._conn.set(key, data)
                return
            except RemoteError as e:
                if e.code == _ERR_BAD_REQUEST:
                    raise ValueError(str(e)) from None
                more = _missing_module(e, modules) \
                    if e.code == _ERR_UNPICKLE else None
                if more is None:
                    raise
                modules.append(more)   # send that module's code by value

    def __delitem__(self, key):
        if not _could_be_global(key):
            raise KeyError(key)
        with self._lock:
            self._begin()
            try:
                self._conn.delete(key)
            except RemoteError as e:
                # a name that can never be a global's (BAD_REQUEST) is
                # not in the mapping either
                if e.code in (_ERR_NOT_FOUND, _ERR_BAD_REQUEST):
                    raise KeyError(key) from None
                raise

    def _keys(self):
        with self._lock:
            self._begin()
            return self._conn.keys()

    def __iter__(self):
        return iter(self._keys())

    def __len__(self):
        return len(self._keys())

    def __contains__(self, key):
        return isinstance(key, str) and key in self._keys()

    def clear(self):
        """Delete every global (without sending their values here)."""
        for key in self._keys():
            try:
                del self[key]
            except KeyError:
                pass


_FLAGS = {"c": ["--create"], "w": [], "n": ["--new"], "r": ["--read-only"]}


def spawn(db=None, session="default", backend=None, *, flag="c", lease=None,
          create_db=False, sync=None, checkpoint_interval=None, args=()):
    """Start a backend over stdio on store ``db`` (None: the backend's
    default store), attach to ``session``, and return its Workspace.

    ``flag`` is shelve's: ``'c'`` (the default) opens the session, creating
    it when missing; ``'w'`` opens an existing one (``SessionNotFound``
    when there is none, ``SessionEnded`` when it has ended); ``'n'``
    always starts a new, empty session (an old one of that name is ended
    and its entries deleted); ``'r'`` opens an existing session read-only
    (``pyshelfd --read-only``: setting or deleting globals is refused,
    code runs but nothing is ever written to the store).  Opening with
    ``'c'`` a name whose session has ended (lease expired, or closed)
    creates a new session and warns with ``SessionEndedWarning``.

    ``lease``: seconds the session lives with no client attached (0:
    forever; None: the session's own, 30 days for a new one).  ``create_db``:
    make the store directory's missing parent directories too (without
    it a store is only created where its parent exists).  ``backend``: the
    pyshelfd to run (default: $PYSHELFD, the build tree's, the installed
    one, then PATH).  ``sync``: the backend's ``--sync`` policy ("always",
    "interval" or "never"; None: its default, "interval");
    ``checkpoint_interval``: its ``--checkpoint-interval`` in seconds;
    ``args``: more pyshelfd options, as on its command line (``pyshelfd
    --help``).  Options pyshelfd refuses raise ValueError with its
    message; a session served by another pyshelfd raises
    ``SessionBusy``."""
    return _spawn(db, session, backend, flag, lease, create_db, sync,
                  checkpoint_interval, args, 3)


def _spawn(db, session, backend, flag, lease, create_db, sync,
           checkpoint_interval, args, stacklevel):
    if flag not in _FLAGS:
        raise ValueError("flag must be 'c', 'w', 'n' or 'r', not %r"
                         % (flag,))
    path = _find_backend(backend)
    # 'c' is the spawn's create argument (--create); 'n', 'r' are options
    extra = [] if flag == "c" else list(_FLAGS[flag])
    if lease is not None:
        extra += ["--lease", str(lease)]
    if create_db:
        extra += ["--create-db"]
    if sync is not None:
        extra += ["--sync", str(sync)]
    if checkpoint_interval is not None:
        extra += ["--checkpoint-interval", str(checkpoint_interval)]
    extra += [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
              for a in args]
    conn = _pyshelf.Connection()
    spin = os.environ.get("PYSHELF_SPIN_US")
    if spin:
        conn.set_spin(int(spin))
    conn.set_output_handler(_write_notice)
    try:
        conn.spawn(path, None if db is None else os.fspath(db), session,
                   flag == "c", extra)
        info = conn.hello()
    except BaseException:
        conn.close()
        raise
    info["flag"] = flag
    ended = info.get("ended")
    if ended is not None:
        warnings.warn(SessionEndedWarning(ended["message"]),
                      stacklevel=stacklevel)
    return Workspace(conn, info)


def _seconds(ms):
    """Milliseconds since the epoch (or None) as a POSIX timestamp."""
    return None if ms is None else ms / 1000.0


def _lease_ms(lease):
    if lease is None:
        return None
    lease = float(lease)
    if not lease >= 0:
        raise ValueError("bad lease (--lease): a number of seconds >= 0, "
                         "not %r" % (lease,))
    return int(round(lease * 1000))


def open(name, db=None, flag="c", lease=None, create_db=False, sync=None,
         checkpoint_interval=None, args=(), backend=None):
    """Attach to the session ``name`` of store ``db`` (None: the default
    store) through the store's local server, and return its Workspace.

    The server (``pyshelfd --server``) is found by its socket (one per
    store, under ``$XDG_RUNTIME_DIR/pyshelf``, else ``/tmp/pyshelf-UID``),
    and started when none answers, with ``create_db``, ``sync``,
    ``checkpoint_interval`` and ``args`` on its command line (``args``:
    more ``pyshelfd --server`` options, e.g. ``("--idle-exit", "60")``; a
    server that runs already keeps its own options, and open() then warns,
    ``ServerOptionsIgnored``, naming the ones it did not apply).  ``backend``: the
    pyshelfd to start (default: $PYSHELFD, the build tree's, the installed
    one, then PATH).  The session lives in the server's worker while no
    client is attached: ``close()``/``detach()`` leave it, and code that
    runs goes on running (``calls()``, ``result()``).

    ``flag`` as for ``spawn()``: ``'c'``, ``'w'``, ``'n'``; ``'r'`` (read
    only) is served by a private stdio backend, as ``spawn(flag='r')``.
    ``lease``: seconds the session lives with no client attached.
    With the environment variable ``PYSHELF_OPEN=stdio``, ``open()`` is
    ``spawn()``: a private stdio backend."""
    if flag not in _FLAGS:
        raise ValueError("flag must be 'c', 'w', 'n' or 'r', not %r"
                         % (flag,))
    if os.environ.get("PYSHELF_OPEN") == "stdio":
        return _spawn(db, name, backend, flag, lease, create_db, sync,
                      checkpoint_interval, args, 3)
    if flag == "r":
        # the session may be held by the server's worker, lingering idle
        # after every client left: ask it to go first (SessionBusy, naming
        # why, when it is in use)
        _idle_worker_gone(db, name, backend)
        return _spawn(db, name, backend, flag, lease, create_db, sync,
                      checkpoint_interval, args, 3)
    server_args = []
    if create_db:
        server_args += ["--create-db"]
    if sync is not None:
        server_args += ["--sync", str(sync)]
    if checkpoint_interval is not None:
        server_args += ["--checkpoint-interval", str(checkpoint_interval)]
    server_args += [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
                    for a in args]
    db = None if db is None else os.path.abspath(os.fspath(db))
    given = [(k, v, t) for k, v, t in (
        ("sync", sync, ["--sync", str(sync)]),
        ("checkpoint_interval", checkpoint_interval,
         ["--checkpoint-interval", str(checkpoint_interval)]),
        ("args", tuple(args) or None, server_args[len(server_args) -
                                                  len(tuple(args)):]))
        if v is not None]
    ws = _attach(None, db, name, flag, lease, _find_backend(backend),
                 server_args, True, 3)
    if given:
        _warn_ignored(ws, given, 3)
    return ws


def _warn_ignored(ws, given, stacklevel):
    """open() was given server options: warn (ServerOptionsIgnored) about
    those the server it attached to does not have on its command line
    (it ran already, started without them: they only go on the command
    line of a server open() starts)."""
    pid = ws.server_pid
    if pid is None:
        return
    try:
        with builtins.open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = [a.decode("utf-8", "surrogateescape")
                    for a in f.read().split(b"\0")]
    except OSError:
        return
    n = len(argv)
    missing = [(k, v) for k, v, t in given
               if not any(argv[i:i + len(t)] == t
                          for i in range(n - len(t) + 1))]
    if not missing:
        return              # this open() started it, or one just alike
    warnings.warn(ServerOptionsIgnored(
        "the server of this store (pid %d) was running already, started "
        "without open()'s %s, so they did not apply: they go on the "
        "command line of a server open() starts, and a running server "
        "keeps its own options (its workers' sync, checkpoint interval, "
        "idle exit...). To apply them, stop that server (kill -TERM %d: "
        "every session is checkpointed first) and open again"
        % (pid, ", ".join("%s=%r" % kv for kv in missing), pid)),
        stacklevel=stacklevel)


def _idle_worker_gone(db, name, backend):
    """Before flag 'r': when the store's server runs and the session's
    worker only lingers (no client attached, nothing running), that worker
    checkpoints and exits (ATTACH MODE "r"), and this returns True once it
    is gone.  SessionBusy naming why when the worker is in use; False when
    no server runs (none is started)."""
    conn = _pyshelf.Connection()
    try:
        conn.connect(None, None if db is None else
                     os.path.abspath(os.fspath(db)), name, "r", None,
                     _find_backend(backend), (), False)
    except SessionNotFound:
        return True         # no worker serves it (any more)
    except SessionBusy:
        raise
    except Error:
        return False        # no server, or one older than MODE "r"
    finally:
        conn.close()
    return False


def connect(name, socket, flag="c", lease=None):
    """Attach to the session ``name`` through the server listening on the
    Unix socket ``socket`` (a path; never started here), and return its
    Workspace, as ``open()`` does.  ``flag``: ``'c'``, ``'w'`` or ``'n'``;
    ``lease`` as for ``open()``."""
    if flag not in ("c", "w", "n"):
        raise ValueError("a server serves flag 'c', 'w' or 'n', not %r "
                         "(spawn(flag='r') opens a session read-only)"
                         % (flag,))
    return _attach(os.fspath(socket), None, name, flag, lease, None, (),
                   False, 3)


def _attach(socket, db, name, flag, lease, backend, server_args, start,
            stacklevel):
    # as spawn() (pyshelfd --session refuses it): a ValueError, not the
    # server's BAD_REQUEST
    if isinstance(name, str) and \
            not 1 <= len(name.encode("utf-8", "surrogateescape")) <= 255:
        raise ValueError("bad session name %r: a session name has 1 to "
                         "255 bytes" % (name[:40],))
    lease_box = [_lease_ms(lease)]
    mode = [flag]
    spin = os.environ.get("PYSHELF_SPIN_US")

    def attach():
        conn = _pyshelf.Connection()
        if spin:
            conn.set_spin(int(spin))
        conn.set_output_handler(_write_notice)
        try:
            info = conn.connect(socket, db, name, mode[0], lease_box[0],
                                backend, server_args, start)
        except BaseException:
            conn.close()
            raise
        # attaching again (after a broken connection) is to this session
        mode[0] = "w"
        return conn, info

    sconn = _ServerConn(attach)
    sconn.lease_box = lease_box
    try:
        sock = socket if socket is not None else _pyshelf.socket_path(db)
        sconn.pid_path = sock + ".pid"
    except (OSError, ValueError):
        sconn.pid_path = None
    info = sconn.info
    info["flag"] = flag
    ended = info.get("ended")
    if ended is not None:
        warnings.warn(SessionEndedWarning(ended["message"]),
                      stacklevel=stacklevel)
    elif info.get("worker_died"):
        warnings.warn(WorkerDiedWarning(
            "%s: its new worker resumed the session from its last "
            "checkpoint (changes made after it are lost)"
            % info.get("worker_message")), stacklevel=stacklevel)
    return Workspace(sconn, info)


def end(name, db=None, socket=None, backend=None):
    """End the session ``name`` of store ``db`` (None: the default store)
    without attaching to it: its worker stops (running code is
    interrupted), clients attached to it get ``SessionEnded`` on their
    next request, its tombstone says ``"ended"``, and the sweeper deletes
    its globals, handles and blob files.

    Through the store's server when one runs (``socket``: the server
    listening there; never started here), else offline: ``pyshelfd
    --sweep --end NAME`` (``backend``: which pyshelfd, as for ``open()``)
    ends it and deletes its entries before this returns.

    ``SessionNotFound`` when the store has no session of that name,
    ``SessionEnded`` when it had ended already (``ended``, ``reason``),
    ``SessionBusy`` (offline only) when a pyshelfd with no server serves
    it (a ``spawn()``'s backend): end it through that workspace
    (``close_session()``)."""
    if not isinstance(name, str) or \
            not 1 <= len(name.encode("utf-8", "surrogateescape")) <= 255:
        raise ValueError("bad session name %r: a session name has 1 to "
                         "255 bytes" % (name,))
    conn = _pyshelf.Connection()
    try:
        ended = conn.end_session(None if socket is None
                                 else os.fspath(socket),
                                 None if db is None else os.fspath(db),
                                 name)
    except RemoteError as e:
        # a server from before END_SESSION takes only ATTACH there
        if e.code_name not in ("UNKNOWN_TYPE", "BAD_REQUEST") or \
                ("END_SESSION" not in str(e) and
                 e.code_name == "BAD_REQUEST"):
            raise
        raise _old_server(e, "pyshelf.end()") from None
    finally:
        conn.close()
    if ended is None:
        _end_offline(name, db, backend)


def _old_server(e, what):
    return Error("%s: the pyshelfd server that runs for this store is older "
                 "than this client and does not know the request (%s); "
                 "restart it: `kill -TERM` its pid (the .pid file beside its "
                 "socket; every session checkpoints, nothing is lost), and "
                 "the next open starts a current one" % (what, e))


def _end_offline(name, db, backend):
    """end() with no server: ``pyshelfd --sweep --end NAME``; its exit
    status says what it found (pyshelfd --help, "SWEEP")."""
    argv = [_find_backend(backend), "--sweep", "--end", name]
    if db is not None:
        argv += ["--db", os.fspath(db)]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL,
                          capture_output=True)
    out = proc.stdout.decode("utf-8", "replace").split()
    err = proc.stderr.decode("utf-8", "replace").strip()
    msg = err.splitlines()[-1] if err else "pyshelfd --sweep failed"
    if msg.startswith("pyshelfd: "):
        msg = msg[len("pyshelfd: "):]
    if proc.returncode == 0:
        return
    if proc.returncode == 3:
        raise SessionNotFound(msg, _pyshelf.ERR_NO_SESSION, "NO_SESSION")
    if proc.returncode == 4:
        when = int(out[0]) / 1000.0 if out and out[0].isdigit() else None
        raise SessionEnded(msg, _pyshelf.ERR_SESSION_DEAD, "SESSION_DEAD",
                           when,
                           out[1] if len(out) > 1 else None)
    if proc.returncode == 5:
        pid = int(out[0]) if out and out[0].isdigit() and out[0] != "0" \
            else None
        raise SessionBusy(msg, _pyshelf.ERR_SESSION_BUSY, "SESSION_BUSY",
                          pid)
    raise Error("ending session %r offline: %s (pyshelfd exit status %s)"
                % (name, msg, proc.returncode))
