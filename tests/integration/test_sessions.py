"""Sessions do not vanish without a trace, and their owner is known by a
lock (issue 13, sections 4 and 5): shelve's flag on open()/spawn(),
tombstones of ended sessions, lease and expires, create_db, pyshelfd's
refusals as ValueError, and the session lock (SessionBusy, a reopen right
after SIGKILL, stale pids, fork()ed children, the sweeper)."""
import hashlib
import os
import signal
import struct
import time
import warnings

import lmdb
import pytest

import pyshelf
from pyshelf import DirectValue
from restarts import MODES, kill_backend, restart, value


def _end(ws, mode):
    """Detach the way the test says: ws.close(), or SIGKILL."""
    if mode == "clean":
        ws.close()
    else:
        kill_backend(ws)


def _expire(db, session, lease=1):
    """Make `session` in db with a lease of `lease` seconds and one global,
    detach, and wait until its lease has run out."""
    ws = pyshelf.spawn(db=db, session=session, lease=lease)
    ws["x"] = [1, 2, 3]
    ws.close()
    while time.time() <= ws.expires + 0.05:
        time.sleep(0.05)
    # ws.expires is what the client was told at close(); the lease runs
    # from the last-seen time the worker writes, which a loaded machine
    # may write later (a server's worker checkpoints and hibernates after
    # the detach): wait until the store itself says the lease ran out
    deadline = time.monotonic() + 120
    while not any(i.name == session and i.expired
                  for i in pyshelf.sessions(db)):
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.05)


def _no_warning_open(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", pyshelf.SessionEndedWarning)
        return pyshelf.open(*args, **kw)


# --- flag ---------------------------------------------------------------

def test_flag_w_needs_the_session(store):
    with pytest.raises(pyshelf.SessionNotFound) as ei:
        pyshelf.open("s", db=store, flag="w")
    assert "no session named 's'" in str(ei.value)
    assert not os.path.exists(store)          # 'w' makes no store
    pyshelf.open("other", db=store).close()
    with pytest.raises(pyshelf.SessionNotFound, match="no session named 's'"):
        pyshelf.open("s", db=store, flag="w")
    assert not isinstance(ei.value, pyshelf.SessionEnded)


@pytest.mark.parametrize("mode", MODES)
def test_flag_w_opens_what_is_there(store, mode):
    ws = pyshelf.open("s", db=store)
    ws["x"] = {"a": 1}
    _end(ws, mode)
    ws = _no_warning_open("s", db=store, flag="w")
    try:
        assert not ws.created
        assert ws["x"] == {"a": 1}
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_flag_n_starts_empty_and_drops_the_old_entries(store, mode):
    ws = pyshelf.open("s", db=store)
    ws["x"] = 1
    ws["y"] = bytes(2 << 20)                  # a blob file too
    old_id = ws.session_id
    _end(ws, mode)
    blobs = os.path.join(store, "blobs")
    assert os.listdir(blobs)
    ws = _no_warning_open("s", db=store, flag="n")
    try:
        assert ws.created and ws.session_id != old_id
        assert list(ws) == []
        ws["z"] = 3
    finally:
        ws.close()
    assert os.listdir(blobs) == []            # the old entries are gone
    ws = pyshelf.open("s", db=store, flag="w")
    try:
        assert list(ws) == ["z"]
    finally:
        ws.close()


def test_flag_n_refuses_a_session_in_use(store):
    ws = pyshelf.open("s", db=store)
    try:
        ws["x"] = 1
        with pytest.raises(pyshelf.SessionBusy) as ei:
            pyshelf.open("s", db=store, flag="n")
        assert ei.value.pid == ws.pid
        assert ws["x"] == 1
    finally:
        ws.close()


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_flag_r_is_read_only(store):
    ws = pyshelf.open("s", db=store)
    ws["x"] = [1, 2]
    ws.close()
    data = os.path.join(store, "data.mdb")
    before = _digest(data)
    ro = pyshelf.open("s", db=store, flag="r")
    try:
        assert ro["x"] == [1, 2] and list(ro) == ["x"]
        with pytest.raises(pyshelf.RemoteError) as ei:
            ro["y"] = 1
        assert ei.value.code_name == "READ_ONLY"
        assert "read-only" in str(ei.value)
        with pytest.raises(pyshelf.RemoteError, match="read-only"):
            del ro["x"]
        with pytest.raises(pyshelf.RemoteError, match="read-only"):
            ro.close_session()
        # code runs; what it changes lives in this backend only
        ro.remote_exec("x.append(3)\nz = 5")
        assert value(ro, "DirectValue((x, z))") == ([1, 2, 3], 5)
        ro.sync()
        # shipped code's checkpoint() says it cannot write
        err = ro.remote_exec("checkpoint()")
        assert err.exc_type == "RuntimeError" and "read-only" in err.message
        # several readers at once, but no writer beside them
        ro2 = pyshelf.open("s", db=store, flag="r")
        try:
            assert ro2["x"] == [1, 2]
        finally:
            ro2.close()
        with pytest.raises(pyshelf.SessionBusy):
            pyshelf.open("s", db=store)
    finally:
        ro.close()
    assert _digest(data) == before            # nothing was written
    ws = pyshelf.open("s", db=store, flag="w")
    try:
        assert list(ws) == ["x"] and ws["x"] == [1, 2]
    finally:
        ws.close()


def test_flag_r_sweeps_nothing(store):
    """A read-only open writes nothing, not even the sweep of a session
    whose lease ran out: that waits for the next writable open."""
    pyshelf.open("s", db=store).close()
    _expire(store, "old")
    data = os.path.join(store, "data.mdb")
    before = _digest(data)
    pyshelf.open("s", db=store, flag="r").close()
    assert _digest(data) == before
    with pytest.raises(pyshelf.SessionEnded, match="expired"):
        pyshelf.open("old", db=store, flag="w")


def test_flag_r_needs_the_session(store):
    with pytest.raises(pyshelf.SessionNotFound):
        pyshelf.open("s", db=store, flag="r")
    assert not os.path.exists(store)
    pyshelf.open("t", db=store).close()
    with pytest.raises(pyshelf.SessionNotFound):
        pyshelf.open("s", db=store, flag="r")


def test_a_bad_flag_is_a_value_error(store):
    with pytest.raises(ValueError, match="flag"):
        pyshelf.open("s", db=store, flag="x")


# --- tombstones ---------------------------------------------------------

def test_an_expired_session_leaves_a_tombstone(store):
    _expire(store, "s")
    pyshelf.open("other", db=store).close()   # its sweep ends "s"
    with pytest.raises(pyshelf.SessionEnded) as ei:
        pyshelf.open("s", db=store, flag="w")
    e = ei.value
    assert isinstance(e, pyshelf.SessionNotFound)
    assert e.reason == "expired" and "expired" in str(e)
    assert "lease" in str(e) and "1 entries" in str(e)
    assert time.time() - 600 < e.ended <= time.time()
    assert time.strftime("%Y-%m-%d", time.gmtime(e.ended)) in str(e)
    with pytest.raises(pyshelf.SessionEnded):
        pyshelf.open("s", db=store, flag="r")
    with pytest.warns(pyshelf.SessionEndedWarning) as rec:
        ws = pyshelf.open("s", db=store)
    try:
        msg = str(rec[0].message)
        assert "expired" in msg and "new, empty session" in msg
        assert time.strftime("%Y-%m-%d", time.gmtime(e.ended)) in msg
        assert rec[0].filename == __file__    # points at the caller
        assert ws.created and list(ws) == []
    finally:
        ws.close()
    # the name is live again: no more warnings, 'w' opens it
    _no_warning_open("s", db=store, flag="w").close()


def test_reopening_an_expired_session_itself_warns(store):
    """Without another session opened in between: the open's own sweep
    ends it, and the open tells."""
    _expire(store, "s")
    with pytest.warns(pyshelf.SessionEndedWarning, match="expired"):
        ws = pyshelf.spawn(db=store, session="s")
    ws.close()


def test_a_closed_session_leaves_a_tombstone(store):
    ws = pyshelf.open("s", db=store)
    ws["x"] = 1
    ws.close_session()
    assert ws.expires is None
    with pytest.raises(pyshelf.SessionEnded) as ei:
        pyshelf.open("s", db=store, flag="w")
    assert ei.value.reason == "closed" and "closed" in str(ei.value)
    with pytest.warns(pyshelf.SessionEndedWarning, match="closed"):
        pyshelf.open("s", db=store).close()


def test_tombstones_are_dropped_after_their_time(store):
    ws = pyshelf.open("s", db=store)
    ws.close_session()
    # age the tombstone past the 90 days it is kept (its key: name . 0 .
    # be64 ended_ms . id)
    env = lmdb.open(store, max_dbs=16, subdir=True)
    tombs = env.open_db(b"tombstones")
    with env.begin(write=True, db=tombs) as t:
        (k, v), = list(t.cursor())
        old = struct.unpack(">Q", k[2:10])[0] - 91 * 24 * 3600 * 1000
        t.delete(k)
        t.put(k[:2] + struct.pack(">Q", old) + k[10:], v)
    env.close()
    pyshelf.open("other", db=store).close()   # its sweep drops it
    with pytest.raises(pyshelf.SessionNotFound) as ei:
        pyshelf.open("s", db=store, flag="w")
    assert not isinstance(ei.value, pyshelf.SessionEnded)


# --- lease and expires --------------------------------------------------

def test_lease_and_expires(store):
    t0 = time.time()
    ws = pyshelf.open("s", db=store, lease=600)
    try:
        assert ws.lease == 600
        assert t0 + 600 <= ws.expires <= time.time() + 600
    finally:
        ws.close()
    closed = time.time()
    assert ws.expires <= closed + 600
    # an old session keeps its lease unless told
    ws = pyshelf.open("s", db=store)
    try:
        assert ws.lease == 600
    finally:
        ws.close()
    ws = pyshelf.open("s", db=store, lease=0)
    try:
        assert ws.lease == 0 and ws.expires is None
    finally:
        ws.close()
    ws = pyshelf.open("new", db=store)
    try:
        assert ws.lease == 30 * 24 * 3600     # the default
    finally:
        ws.close()


def test_lease_zero_is_never_swept(store):
    ws = pyshelf.open("s", db=store, lease=0)
    ws["x"] = 1
    ws.close()
    # a store clock a year on: rewrite last_seen far into the past
    env = lmdb.open(store, max_dbs=16, subdir=True)
    sessions = env.open_db(b"sessions")
    with env.begin(write=True, db=sessions) as t:
        for k, v in list(t.cursor()):
            t.put(k, v[:16] + struct.pack(">Q", 1) + v[24:])
    env.close()
    pyshelf.open("other", db=store).close()
    ws = _no_warning_open("s", db=store, flag="w")
    try:
        assert ws["x"] == 1
    finally:
        ws.close()


def test_a_bad_lease_is_a_value_error(store):
    with pytest.raises(ValueError, match="--lease"):
        pyshelf.open("s", db=store, lease=-1)


# --- where a store may be created ----------------------------------------

def test_a_store_is_made_only_where_its_parent_exists(tmp_path):
    typo = tmp_path / "no" / "such" / "db"
    with pytest.raises(ValueError) as ei:
        pyshelf.open("s", db=typo)
    assert "does not exist" in str(ei.value) and "create_db" in str(ei.value)
    assert not (tmp_path / "no").exists()
    ws = pyshelf.open("s", db=typo, create_db=True)
    ws["x"] = 1
    ws.close()
    assert (typo / "data.mdb").exists()
    ws = pyshelf.open("s", db=tmp_path / "db")  # the parent exists
    ws.close()


# --- pyshelfd's refusals --------------------------------------------------

@pytest.mark.parametrize("kw,text", [
    (dict(session=""), "session name"),
    (dict(session="x" * 256), "session name"),
    (dict(sync="sometimes"), "bad value 'sometimes' for --sync"),
    (dict(checkpoint_interval="soon"), "--checkpoint-interval"),
    (dict(args=["--no-such-option"]), "--no-such-option"),
])
def test_options_pyshelfd_refuses_are_value_errors(store, kw, text):
    kw.setdefault("session", "s")
    with pytest.raises(ValueError) as ei:
        pyshelf.spawn(db=store, **kw)
    assert text in str(ei.value)
    assert not isinstance(ei.value, pyshelf.BackendDied)


# --- the session lock ------------------------------------------------------

@pytest.mark.stdio_only("a dead stdio backend ends the workspace; a server's reattaches to a new worker")
def test_reopen_right_after_sigkill(store):
    """The killed backend stays an unreaped zombie of this process (no
    waitpid here): it must not block its session."""
    ws = pyshelf.open("s", db=store)
    ws["x"] = 41
    os.kill(ws.pid, signal.SIGKILL)
    ws2 = pyshelf.open("s", db=store, flag="w")
    try:
        assert ws2["x"] == 41
        ws2["x"] = 42
    finally:
        ws2.close()
    with pytest.raises(pyshelf.Error):
        ws["y"] = 1                           # the old one is dead
    ws.close()


@pytest.mark.stdio_only('SessionBusy from a second private backend on one session')
def test_two_backends_on_one_session(store):
    ws = pyshelf.open("s", db=store)
    try:
        with pytest.raises(pyshelf.SessionBusy) as ei:
            pyshelf.open("s", db=store)
        e = ei.value
        assert isinstance(e, pyshelf.Error)
        assert not isinstance(e, pyshelf.BackendDied)
        assert e.pid == ws.pid and str(ws.pid) in str(e)
        ws["x"] = 1                           # the first one goes on
    finally:
        ws.close()
    ws = pyshelf.open("s", db=store, flag="w")  # free once it is gone
    try:
        assert ws["x"] == 1
    finally:
        ws.close()


def _set_recorded_pid(store, name, pid):
    """Write pid into the session record of `name` (bytes 40..47)."""
    env = lmdb.open(store, max_dbs=16, subdir=True)
    names = env.open_db(b"names")
    sessions = env.open_db(b"sessions")
    with env.begin(write=True) as t:
        sid = t.get(name.encode(), db=names)
        rec = t.get(sid, db=sessions)
        t.put(sid, rec[:40] + struct.pack(">Q", pid) + rec[48:],
              db=sessions)
    env.close()


@pytest.mark.parametrize("whose", ["own", "pyshelfd"])
def test_a_stale_pid_in_the_record_does_not_block(store, whose):
    """The record says a live process serves it (this test, or a pyshelfd
    serving another session): only the lock counts."""
    ws = pyshelf.open("s", db=store)
    ws["x"] = 1
    kill_backend(ws)
    other = pyshelf.open("other", db=store)
    try:
        _set_recorded_pid(store, "s",
                          os.getpid() if whose == "own" else other.pid)
        ws = pyshelf.open("s", db=store, flag="w")
        try:
            assert ws["x"] == 1
        finally:
            ws.close()
    finally:
        other.close()


def test_the_sweep_spares_a_locked_session(store):
    """An attached session whose lease has run out (no request renewed it)
    and whose record names no pid: the lock alone keeps the sweep off."""
    ws = pyshelf.open("s", db=store, lease=1)
    try:
        ws["x"] = 1
        _set_recorded_pid(store, "s", 0)
        deadline = time.time() + 1.2
        while time.time() < deadline:
            time.sleep(0.05)
        pyshelf.open("other", db=store).close()   # sweeps
        assert ws["x"] == 1
        ws["y"] = 2
    finally:
        ws.close()
    ws = _no_warning_open("s", db=store, flag="w")
    try:
        assert sorted(ws) == ["x", "y"]
    finally:
        ws.close()


@pytest.mark.stdio_only('SessionBusy from a second private backend on one session')
def test_a_forked_child_neither_drops_nor_keeps_the_lock(store):
    ws = pyshelf.open("s", db=store)
    child = None
    try:
        ws["x"] = 1
        # a child that exits at once: the lock stays with the backend
        ws.remote_exec("import os\n"
                       "_p = os.fork()\n"
                       "if _p == 0:\n"
                       "    os._exit(0)\n"
                       "os.waitpid(_p, 0)\n")
        with pytest.raises(pyshelf.SessionBusy):
            pyshelf.open("s", db=store)
        # a child that lives on, like a daemon (it lets go of the pipes
        # to the client, nothing else): it must not keep the session
        # locked after the backend is gone
        child = value(ws, "import os, time\n"
                          "_p = os.fork()\n"
                          "if _p == 0:\n"
                          "    for _fd in os.listdir('/proc/self/fd'):\n"
                          "        try:\n"
                          "            if os.readlink('/proc/self/fd/' + _fd)"
                          ".startswith('pipe:'):\n"
                          "                os.close(int(_fd))\n"
                          "        except OSError:\n"
                          "            pass\n"
                          "    time.sleep(120)\n"
                          "    os._exit(0)\n"
                          "DirectValue(_p)")
        kill_backend(ws)
        os.kill(child, 0)                     # still running
        ws = pyshelf.open("s", db=store, flag="w")
        assert ws["x"] == 1
    finally:
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_restart_keeps_the_session(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws["x"] = 7
    ws = restart(ws, mode, store)
    try:
        assert ws["x"] == 7
    finally:
        ws.close()
