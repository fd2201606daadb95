"""A checkpoint that races a thread of shipped code changing the entry it
pickles (QA2 t31): the pickler runs Python code (a __reduce__), the GIL
goes to the thread, which adds to the dict being pickled, and the pickler
raises "dictionary changed size during iteration".  That is a transient
race, not a fact about the entry: it is retried at once, and when it keeps
happening the entry keeps its previous record, stays dirty for the next
checkpoint and is never called volatile or lost.

The race is made deterministic by a handshake: Hook.__reduce__ (the value
d[0]) wakes the thread and waits until it has added one key to d, as many
times as `armed` says; the thread does nothing else.
"""
import os
import signal
import time

import pytest

import pyshelf

from restarts import kill_backend, value
from server_helpers import alive, srv, wait_gone  # noqa: F401

# no interval checkpoint runs during these tests unless one asks for it:
# the request's own checkpoint is the one that races
QUIET = 3600

# The thread, its events and the count live in a module of their own
# (sys.modules['_race']), never in a global: a global that holds a lock
# is volatile, which these tests assert nothing is.
SETUP = r'''
import sys, threading, types

def _r():
    return sys.modules['_race']

def arm(n):
    _r().armed = n

def armed():
    return _r().armed

class Hook:
    def __reduce__(self):
        r = _r()
        if r.armed > 0:
            r.armed -= 1
            r.go.set()
            if not r.done.wait(120):
                raise AssertionError("the thread never answered")
            r.done.clear()
        return (int, (7,))

def _run():
    r = _r()
    n = 100
    while True:
        r.go.wait()
        r.go.clear()
        if r.stop:
            break
        d[n] = n    # mid-pickle: the dict changes size
        n += 1
        r.done.set()

def _setup():
    r = sys.modules['_race'] = types.ModuleType('_race')
    r.armed, r.stop = 0, False
    r.go, r.done = threading.Event(), threading.Event()

_setup()

def start():
    r = _r()
    r.t = threading.Thread(target=_run, daemon=True)
    r.t.start()

def stop():
    r = _r()
    r.stop = True
    r.go.set()
    r.t.join(120)
    assert not r.t.is_alive()
'''

MAKE_D = "d = {i: i for i in range(10)}\nd[0] = Hook()\n"


def spawn(db, interval=QUIET):
    return pyshelf.spawn(db=db, session="s", checkpoint_interval=interval)


def no_volatile(ws, err):
    assert "cannot be persisted" not in err, err
    assert "stays in memory only" not in err, err
    assert not ws.lost()
    assert ws.stats()["volatile"] == 0


def reopened_d(ws, db):
    """d as the worker holds it now (d[0], a Hook, comes as 7), then d as
    a new backend loads it after a kill -9."""
    want = value(ws, "DirectValue(d)")
    kill_backend(ws)
    ws = spawn(db)
    try:
        got = value(ws, "DirectValue(d)")
        assert not ws.lost()
    finally:
        ws.close()
    return want, got


def test_a_race_retried_at_once_is_saved(tmp_path, capfd):
    """The C pickler and the first retry both race the thread; a later
    retry of the same checkpoint saves d, with no notice at all; a kill -9
    then keeps it."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + MAKE_D + "start()")
        capfd.readouterr()
        ws.remote_exec("arm(2)\nd[10] = 10")
        err = capfd.readouterr().err
        no_volatile(ws, err)
        assert "changed while it was saved" not in err, err
        assert value(ws, "DirectValue((armed(), len(d)))") == (0, 13)
    except BaseException:
        ws.close()
        raise
    want, got = reopened_d(ws, db)
    assert got == want and len(got) == 13


def test_a_race_that_goes_on_keeps_the_last_record(tmp_path, capfd):
    """Every attempt races: the request's checkpoint keeps d's previous
    record (a kill -9 then finds d as it was saved before), says so in one
    line, once, and d is neither volatile nor lost."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + MAKE_D)  # d saved with no thread running
        ws.remote_exec("start()")
        capfd.readouterr()
        ws.remote_exec("arm(1000)\nd[10] = 10")
        err = capfd.readouterr().err
        no_volatile(ws, err)
        lines = [ln for ln in err.splitlines() if "changed while" in ln]
        assert lines == [
            "pyshelf: global 'd' changed while it was saved (a thread of "
            "shipped code); kept as of the last checkpoint, retried at "
            "the next"], err
        # said once: the next request's checkpoint races again, quietly
        ws.remote_exec("d[11] = 11")
        err = capfd.readouterr().err
        assert "changed while" not in err, err
        no_volatile(ws, err)
        assert value(ws, "DirectValue(armed() <= 1000 - 8)") is True
    except BaseException:
        ws.close()
        raise
    kill_backend(ws)
    ws = spawn(db)
    try:
        want = {i: i for i in range(10)}
        want[0] = 7
        assert value(ws, "DirectValue(d)") == want
        assert not ws.lost()
    finally:
        ws.close()


def test_the_next_checkpoint_saves_it(tmp_path, capfd):
    """Once nothing races any more, the next request's checkpoint saves d
    (it stayed dirty: that request does not name it), and a kill -9 then
    gives the final dict."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + MAKE_D)
        ws.remote_exec("start()")
        ws.remote_exec("arm(1000)\nd[10] = 10")
        ws.remote_exec("arm(0)")         # names nothing of d
    except BaseException:
        ws.close()
        raise
    want, got = reopened_d(ws, db)
    assert got == want and len(got) > 11 and got[10] == 10


def test_a_new_global_that_races_is_not_saved_yet(tmp_path, capfd):
    """A global whose first checkpoint races has no record yet: the
    notice says so; the records that refer to it (e, and f through e)
    wait with it, so that a kill -9 then loses all three (none refers to
    an entry the store lacks), and a later checkpoint saves them."""
    db = tmp_path / "db"
    ws = spawn(db)
    new = SETUP + "start()\narm(1000)\n" + MAKE_D + "e = [d]\nf = [e]\n"
    try:
        ws.remote_exec(new)
        err = capfd.readouterr().err
        assert "pyshelf: global 'd' changed while it was saved (a thread " \
            "of shipped code); not saved yet, retried at the next " \
            "checkpoint\n" in err, err
        no_volatile(ws, err)
    except BaseException:
        ws.close()
        raise
    kill_backend(ws)
    ws = spawn(db)
    try:
        names = set(ws.keys())
        assert "arm" in names and not names & {"d", "e", "f"}, names
        assert not ws.lost()
        ws.remote_exec(new)
        ws.remote_exec("arm(0)\nstop()")
        assert value(ws, "DirectValue(e[0] is d and f[0] is e)") is True
    except BaseException:
        ws.close()
        raise
    want, got = reopened_d(ws, db)
    assert got == want and len(got) > 10
    ws = spawn(db)
    try:
        assert value(ws, "DirectValue(e[0] is d and f[0] is e)") is True
    finally:
        ws.close()


def test_sync_says_what_it_could_not_save(tmp_path, capfd):
    """sync() while every attempt races: everything else is committed and
    sync() raises an error that names d; d keeps its last record.  Once
    the thread stops, sync() saves it."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + MAKE_D)
        ws.remote_exec("start()")
        ws.remote_exec("arm(100000)\nother = [1, 2]")
        with pytest.raises(pyshelf.Error) as ei:
            ws.sync()
        msg = str(ei.value)
        assert "global 'd' changed on each of" in msg, msg
        assert "everything else is committed" in msg, msg
        err = capfd.readouterr().err
        no_volatile(ws, err)
        ws.remote_exec("arm(0)\nstop()")
        ws.sync()
        want = value(ws, "DirectValue(d)")
    except BaseException:
        ws.close()
        raise
    kill_backend(ws)
    ws = spawn(db)
    try:
        assert value(ws, "DirectValue(d)") == want
        assert value(ws, "DirectValue(other)") == [1, 2]
    finally:
        ws.close()


def test_interval_checkpoints_that_race_keep_it(tmp_path, capfd):
    """Interval checkpoints (which run while the thread lives) race it
    every time: none makes d volatile; once it stops racing, the entry is
    saved."""
    db = tmp_path / "db"
    ws = spawn(db, interval=0.05)
    try:
        ws.remote_exec(SETUP + MAKE_D)
        ws.remote_exec("start()\narm(100000)")
        first = ws.stats()["interval_checkpoints"]
        deadline = time.time() + 120
        while ws.stats()["interval_checkpoints"] < first + 5:
            assert time.time() < deadline, "no interval checkpoints"
            time.sleep(0.02)
        assert value(ws, "DirectValue(armed() < 100000 - 20)") is True
        no_volatile(ws, capfd.readouterr().err)
        ws.remote_exec("arm(0)\nstop()")
    except BaseException:
        ws.close()
        raise
    want, got = reopened_d(ws, db)
    assert got == want and len(got) > 10


def test_sync_counts_what_waits_for_it(tmp_path):
    """sync() while a new global races: the error counts the record held
    back with it (e refers to d, which the store lacks)."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + "start()\narm(100000)\n" + MAKE_D +
                       "e = [d]\n")
        with pytest.raises(pyshelf.Error) as ei:
            ws.sync()
        msg = str(ei.value)
        assert "global 'd' changed on each of 11 attempts to save it" in msg
        assert "1 entry that refers to it held back with it" in msg, msg
        ws.remote_exec("arm(0)\nstop()")
        ws.sync()
    except BaseException:
        ws.close()
        raise
    kill_backend(ws)
    ws = spawn(db)
    try:
        assert value(ws, "DirectValue(e[0] is d and d[0] == 7)") is True
    finally:
        ws.close()


def test_checkpoint_in_shipped_code_raises(tmp_path):
    """Shipped code's checkpoint() (a full one) while another thread keeps
    racing it: StoreError names the entry; the rest is committed."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + MAKE_D + "start()")
        msg = value(ws, "arm(100000)\nother = 5\n"
                        "try:\n"
                        "    checkpoint()\n"
                        "    r = None\n"
                        "except Exception as e:\n"
                        "    r = '%s: %s' % (type(e).__name__, e)\n"
                        "DirectValue(r)")
        assert msg.startswith("StoreError: global 'd' changed on each of "
                              "11 attempts"), msg
        assert "other" in ws.keys()
        ws.remote_exec("arm(0)\nstop()")
    finally:
        ws.close()


@pytest.mark.stdio_only("the exit's message goes to the client's stderr "
                        "from a stdio backend only")
def test_close_prints_what_it_could_not_save(tmp_path, capfd):
    """close() of a stdio backend while every attempt races: its last
    checkpoint prints what it could not save, one line and no traceback
    (and close() raises DetachError, below); the store keeps d as of the
    last checkpoint that saved it."""
    db = tmp_path / "db"
    with pytest.raises(pyshelf.DetachError):
        with spawn(db) as ws:
            ws.remote_exec(SETUP + MAKE_D)
            ws.remote_exec("start()\narm(10**9)\nd[10] = 10")
    err = capfd.readouterr().err
    assert "pyshelfd: checkpoint failed: global 'd' changed on each of 11 " \
        "attempts to save it" in err, err
    assert "Traceback" not in err, err
    assert "cannot be persisted" not in err, err
    ws = spawn(db)
    try:
        want = {i: i for i in range(10)}
        want[0] = 7
        assert value(ws, "DirectValue(d)") == want
        assert not ws.lost()
    finally:
        ws.close()


def test_a_cycle_of_entries_that_races(tmp_path, capfd):
    """d and g refer to each other (a cycle of entries, written as one
    group) while d races: nothing is volatile, and once it stops racing
    the cycle is saved with its identity."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + MAKE_D + "start()")
        ws.remote_exec("arm(1000)\ng = [d]\nd['g'] = g")
        ws.remote_exec("d['h'] = 1")
        no_volatile(ws, capfd.readouterr().err)
        ws.remote_exec("arm(0)\nstop()")
    except BaseException:
        ws.close()
        raise
    kill_backend(ws)
    ws = spawn(db)
    try:
        assert value(ws, "DirectValue(d['g'] is g and g[0] is d and "
                         "d['h'] == 1 and d[0] == 7)") is True
        assert not ws.lost()
    finally:
        ws.close()


# --- close() says so (DetachError) -------------------------------------------

RACING = "start()\narm(10**9)\nd[10] = 10"


def test_close_raises_what_it_could_not_save(tmp_path):
    """close() while every attempt races, in either mode (a stdio backend,
    or through a server): the detach's checkpoint fails, and close()
    raises DetachError with the backend's message, after closing the
    workspace all the same; a second close() does nothing."""
    db = tmp_path / "db"
    ws = spawn(db)
    ws.remote_exec(SETUP + MAKE_D)
    ws.remote_exec(RACING)
    with pytest.raises(pyshelf.DetachError) as ei:
        ws.close()
    e = ei.value
    assert isinstance(e, pyshelf.RemoteError) and e.code_name == "STORE"
    msg = str(e)
    assert msg.startswith("close() detached, but the session's last "
                          "changes are not all in the store: its final "
                          "checkpoint failed: global 'd' changed on each of "
                          "11 attempts to save it"), msg
    assert ws.closed
    ws.close()
    with pytest.raises(pyshelf.Error, match="closed"):
        ws["x"]


def test_a_with_block_keeps_the_exception_of_its_body(tmp_path):
    """A with block whose body raised while close() fails too: the body's
    exception goes on, with the close's failure as a note; with no
    exception from the body, the with block raises DetachError."""
    db = tmp_path / "db"
    with pytest.raises(KeyError) as ei:
        with spawn(db) as ws:
            ws.remote_exec(SETUP + MAKE_D)
            ws.remote_exec(RACING)
            raise KeyError("from the body")
    assert ei.value.args == ("from the body",)
    notes = getattr(ei.value, "__notes__", [])
    assert len(notes) == 1, notes
    assert notes[0].startswith("pyshelf: and leaving the with block, "
                               "close() failed: DetachError: close() "
                               "detached, but"), notes
    assert "global 'd' changed on each of 11 attempts" in notes[0], notes
    assert ws.closed
    with pytest.raises(pyshelf.DetachError, match="global 'd' changed"):
        with spawn(tmp_path / "db2") as ws:
            ws.remote_exec(SETUP + MAKE_D)
            ws.remote_exec(RACING)
    assert ws.closed


@pytest.mark.stdio_only("a stdio backend checkpoints again as it exits")
def test_a_stdio_exit_that_saves_it_raises_nothing(tmp_path):
    """A stdio backend whose detach checkpoint races each of its 11
    attempts, and whose checkpoint at exit races no more (the thread is
    armed for exactly those 11): d is saved, so close() raises nothing,
    and a new backend finds d as it was last changed."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(SETUP + MAKE_D)
        ws.remote_exec("start()")
        ws.remote_exec("arm(11)\nother = 1")   # names nothing of d
        ws.remote_exec("globals()['d'][10] = 10")
        assert value(ws, "DirectValue(armed())") == 11
    except BaseException:
        kill_backend(ws)
        raise
    ws.close()
    assert ws.returncode == 0
    ws = spawn(db)
    try:
        assert value(ws, "DirectValue(d[10])") == 10
    finally:
        ws.close()


def test_through_a_server_the_worker_keeps_what_close_could_not_save(srv):
    """Through a server (pyshelf.open itself, whatever the test mode):
    close() raises DetachError naming the worker that still holds d; d
    is not lost: attached again, the thread stopped, sync() saves it, and
    it survives the worker's SIGKILL."""
    kw = dict(db=srv.db, checkpoint_interval=QUIET,
              args=("--idle-exit", "600"))
    ws = srv.track(pyshelf.open("s", **kw))
    ws.remote_exec(SETUP + MAKE_D)
    ws.remote_exec(RACING)
    pid = ws.pid
    with pytest.raises(pyshelf.DetachError) as ei:
        ws.close()
    e = ei.value
    assert e.pid == pid and e.returncode is None and e.code_name == "STORE"
    assert "global 'd' changed on each of 11 attempts" in str(e), str(e)
    assert str(e).endswith("The session's worker (pid %d) still holds them "
                           "and tries again at its next checkpoint: open "
                           "the session again and sync() to save them now."
                           % pid), str(e)
    assert ws.closed and alive(pid)
    ws = srv.track(pyshelf.open("s", flag="w", **kw))
    try:
        assert ws.pid == pid
        ws.remote_exec("arm(0)\nstop()")
        ws.sync()
        want = value(ws, "DirectValue(d)")
        assert want[10] == 10 and len(want) > 11
    except BaseException:
        ws.close()
        raise
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    try:
        ws.close()
    except pyshelf.Error:
        pass
    with pytest.warns(pyshelf.WorkerDiedWarning, match="signal 9"):
        ws = srv.track(pyshelf.open("s", flag="w", **kw))
    try:
        assert ws.pid != pid
        assert value(ws, "DirectValue(d)") == want
    finally:
        ws.close()
