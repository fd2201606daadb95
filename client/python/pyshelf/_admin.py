"""Listing a store's sessions without attaching: ``pyshelf.sessions()``.

Two sources, merged by session id:

- the store's session records, read by ``pyshelf-dump --sessions --json``
  (a read-only snapshot of the ``sessions`` database alone: no entry is
  read; entries and bytes are the counts each record keeps).  A separate
  program, because the client links no LMDB: the store library is the
  backend's, and pyshelf-dump is its read-only admin tool, which never
  blocks a writer;
- what only a running server knows (the worker's pid, its attached
  clients, the call it runs, the threads of shipped code alive in it):
  SESSIONS to the supervisor (no server is started for it).  With no
  server, those are 0 / None.
"""

import json
import os
import shutil
import subprocess

from . import _pyshelf
from ._errors import Error

_FIELDS = ("name", "id", "state", "expired", "created", "last_seen",
           "expires", "lease", "entries", "bytes", "attached_clients",
           "worker_pid", "running_call", "threads")


class SessionInfo:
    """One session of a store, as ``pyshelf.sessions()`` lists it.

    Attributes (also by key: ``s["name"]``):

    - ``name`` (str), ``id`` (32 hex digits);
    - ``state``: ``'live'`` or ``'dead'`` (ended, its entries waiting for
      the sweep); ``expired``: its lease ran out and no sweep ended it yet;
    - ``created``, ``last_seen``: POSIX timestamps (float);
    - ``expires``: when the lease runs out (float), None without a lease
      or once dead; ``lease``: seconds, 0 = never expires;
    - ``entries``, ``bytes``: its globals and handles and their stored
      bytes, from the counts its record keeps (None for a record written
      before pyshelf kept them: a store not opened for writing since);
    - ``attached_clients`` (int), ``worker_pid`` (int or None),
      ``running_call`` (the call id in hex, or None), ``threads`` (threads
      of shipped code alive in the worker: code running, which keeps the
      worker and the session's lease as a call does): from the running
      server; 0 / None / 0 when no server runs.
    """

    __slots__ = _FIELDS

    def __init__(self, **kw):
        for k in _FIELDS:
            setattr(self, k, kw.get(k))

    def keys(self):
        return list(_FIELDS)

    def __getitem__(self, key):
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_FIELDS)

    def __len__(self):
        return len(_FIELDS)

    def __eq__(self, other):
        if not isinstance(other, SessionInfo):
            return NotImplemented
        return all(self[k] == other[k] for k in _FIELDS)

    def __repr__(self):
        return "SessionInfo(%s)" % ", ".join(
            "%s=%r" % (k, getattr(self, k)) for k in _FIELDS)


def _find_dump():
    """pyshelf-dump: $PYSHELF_DUMP, beside the pyshelfd the client would
    run, or on PATH."""
    env = os.environ.get("PYSHELF_DUMP")
    if env:
        return env
    from ._workspace import _find_backend
    try:
        backend = _find_backend(None)
    except Error:
        backend = None
    if backend:
        cand = os.path.join(os.path.dirname(os.path.abspath(backend)),
                            "pyshelf-dump")
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("pyshelf-dump")
    if found:
        return found
    raise Error("pyshelf-dump not found: set PYSHELF_DUMP, or install "
                "pyshelf")


def _seconds(ms):
    return None if ms is None else ms / 1000.0


def _records(db):
    """The session rows of pyshelf-dump --sessions --json."""
    argv = [_find_dump()] + ([] if db is None else ["--db", db]) + \
        ["--sessions", "--json", "--quiet"]
    r = subprocess.run(argv, capture_output=True)
    if r.returncode != 0:
        msg = r.stderr.decode("utf-8", "replace").strip().splitlines()
        raise Error("listing the sessions of %s: %s"
                    % (db or "the default store",
                       msg[-1] if msg else "pyshelf-dump exited with %d"
                       % r.returncode))
    # one decode of all the lines (JSON lines, one object each) is 10x
    # faster than one per line
    lines = r.stdout.decode("utf-8", "replace").splitlines()
    return [row for row in json.loads("[" + ",".join(lines) + "]")
            if row.get("row") == "session"]


def _live(db, socket):
    """{session id: row} from the running server, {} when none runs."""
    conn = _pyshelf.Connection()
    try:
        text = conn.server_sessions(socket, db)
    finally:
        conn.close()
    if text is None:
        return {}
    return {r["id"]: r for r in json.loads(text)}


def sessions(db=None, *, socket=None):
    """List the sessions of store ``db`` (None: the default store) without
    attaching to any: a list of ``SessionInfo``, by name.

    Reads the session records (``pyshelf-dump --sessions``: no entry is
    read, whatever the sessions hold) and, when a server runs for the store
    (``socket``: its socket, default the store's own), asks it which
    sessions have a worker, their clients and running calls; it starts no
    server.  A directory without a store has no sessions."""
    if db is not None:
        db = os.path.abspath(os.fspath(db))
        if not os.path.exists(os.path.join(db, "data.mdb")):
            return []
    live = _live(db, None if socket is None else os.fspath(socket))
    out = []
    for r in _records(db):
        lv = live.get(r["id"], {})
        out.append(SessionInfo(
            name=r["name"], id=r["id"], state=r["state"],
            expired=r["expired"], created=_seconds(r["created_ms"]),
            last_seen=_seconds(r["last_seen_ms"]),
            expires=_seconds(r["expires_ms"]) if r["state"] == "live"
            else None,
            lease=r["lease_ms"] / 1000.0, entries=r["entries"],
            bytes=r["bytes"], attached_clients=lv.get("clients", 0),
            worker_pid=lv.get("pid"), running_call=lv.get("running"),
            threads=lv.get("threads", 0)))
    return out
