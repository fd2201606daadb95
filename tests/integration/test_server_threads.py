"""Threads of shipped code are code running (QA2 04 and 05).

A thread that shipped code started (threading.Thread, daemon or not, or
_thread.start_new_thread: one count for all) and that is still alive
keeps its worker: no idle exit (--idle-exit), no
hibernation for an attach with flag 'n' or 'r' (refused: SessionBusy),
and the session's lease does not run out under it; the lease clock and
the idle clock start when the last such thread ends with no client
attached.  pyshelf.sessions() and stats() count them ("threads").  A
server told to stop (SIGTERM) still ends them, after the checkpoint, and
its log names the session and how many threads it stopped.

Each test's thread runs until the test creates a file (STOP), so that
"while it runs" and "after it ends" are conditions, not durations; what
the worker decided while the thread ran is read from its log or the
session's record, waited for with a generous deadline."""
import glob
import io
import os
import signal
import time

import pytest

import pyshelf
from pyshelf._workspace import open as _real_open
from server_helpers import alive, srv, wait_for, wait_gone  # noqa: F401


def _open(s, name="t", **kw):
    """pyshelf.open itself (PYSHELF_TEST_MODE=server's conftest wraps
    pyshelf.open, waiting for workers to go at close: what these tests
    are about)."""
    return s.track(_real_open(name, db=s.db, **kw))


def _log(s):
    text = ""
    for p in glob.glob(os.path.join(s.run, "pyshelf", "*.log")):
        with open(p) as f:
            text += f.read()
    return text


# a thread that works until STOP exists, then appends "done"; STEPS
# exists once it has done 5 steps.  KIND: how shipped code started it
# ("_thread": _thread.start_new_thread, threading never imported)
TRAIN = r"""
import os, time
progress = []
def train():
    while not os.path.exists(STOP):
        progress.append(len(progress))
        if len(progress) == 5:
            open(STEPS, "w").close()
        time.sleep(0.01)
    progress.append("done")
if KIND == "_thread":
    import _thread
    _thread.start_new_thread(train, ())
else:
    import threading
    threading.Thread(target=train, name="train",
                     daemon=KIND == "daemon").start()
"""

KINDS = ["thread", "daemon", "_thread"]


def _start(s, ws, kind="thread"):
    stop = os.path.join(s.run, "stop")
    steps = os.path.join(s.run, "steps")
    ws["STOP"] = stop
    ws["STEPS"] = steps
    ws["KIND"] = kind
    ws.remote_exec(TRAIN)
    wait_for(lambda: os.path.exists(steps), "the thread to work")
    return stop


def _session(s, name="t"):
    """The session's SessionInfo, None once it is gone."""
    got = [i for i in pyshelf.sessions(s.db) if i.name == name]
    return got[0] if got else None


@pytest.mark.parametrize("kind", KINDS)
def test_no_idle_exit_while_a_thread_runs(srv, kind):
    """QA2 04: the worker stays while the thread runs (and says why in the
    log once its --idle-exit is due), and exits idle once it ends; the
    thread's work is all in the session."""
    ws = _open(srv, args=("--idle-exit", "0.2"))
    stop = _start(srv, ws, kind)
    assert ws.stats()["threads"] == 1
    worker = ws.pid
    ws.close()
    wait_for(lambda: "1 thread of shipped code is running" in _log(srv) or
             not alive(worker), "the worker to stay and say why")
    assert alive(worker), _log(srv)
    assert "session 't'" in _log(srv)
    info = _session(srv)
    assert info.worker_pid == worker and info.threads == 1
    open(stop, "w").close()
    assert wait_gone(worker), "the worker did not exit once idle"
    ws = _open(srv, flag="w")
    try:
        assert ws.pid != worker
        assert ws["progress"][-1] == "done"
        assert ws.stats()["threads"] == 0
    finally:
        ws.close()


@pytest.mark.parametrize("kind", ["thread", "_thread"])
def test_lease_does_not_run_out_under_a_thread(srv, kind):
    """QA2 05: with no client attached and --idle-exit 0, a lease of 1 s
    passes many times over while the thread runs (the record's last seen
    keeps moving: the sweeper too sees it in use); once the thread ends,
    the lease runs out and the session ends."""
    ws = _open(srv, lease=1, args=("--idle-exit", "0"))
    stop = _start(srv, ws, kind)
    worker = ws.pid
    ws.close()
    left = time.time()

    def moved():
        info = _session(srv)
        return info is None or info.state != "live" or \
            info.last_seen > left + 3
    wait_for(moved, "the lease to pass three times under the thread")
    info = _session(srv)
    assert info is not None and info.state == "live" and not info.expired, info
    assert info.threads == 1 and info.worker_pid == worker, info
    assert alive(worker)
    open(stop, "w").close()
    # the lease now runs out in the worker, which ends the session
    assert wait_gone(worker), "the worker did not end the session"
    with pytest.raises(pyshelf.SessionEnded) as ei:
        _open(srv, flag="w")
    assert "expired" in str(ei.value) or "lease" in str(ei.value)


@pytest.mark.parametrize("kind", ["thread", "_thread"])
@pytest.mark.parametrize("flag", ["n", "r"])
def test_flags_n_and_r_do_not_replace_a_thread(srv, flag, kind):
    """Flag 'n' (a new session) and 'r' (read-only) make an idle worker
    hibernate; with a thread of shipped code running they are refused,
    saying why, and the thread goes on."""
    ws = _open(srv, args=("--idle-exit", "0"))
    stop = _start(srv, ws, kind)
    worker = ws.pid
    ws.close()
    with pytest.raises(pyshelf.SessionBusy) as ei:
        _open(srv, flag=flag)
    assert "1 thread of shipped code" in str(ei.value), str(ei.value)
    assert alive(worker)
    ws = _open(srv, flag="w")
    try:
        assert ws.pid == worker
        assert ws.stats()["threads"] == 1
        open(stop, "w").close()
        wait_for(lambda: ws.remote_exec(
            "DirectValue(progress[-1])").value == "done", "the thread")
    finally:
        ws.close()


@pytest.mark.parametrize("kind", ["thread", "_thread"])
def test_server_stop_ends_threads_after_the_checkpoint(srv, kind):
    """SIGTERM to the server: the worker checkpoints what the thread did,
    then stops it, and the log says so, naming the session."""
    ws = _open(srv, args=("--idle-exit", "0"))
    _start(srv, ws, kind)
    pids = ws.server_pid, ws.pid
    ws.close()
    os.kill(pids[0], signal.SIGTERM)
    assert wait_gone(pids[0]) and wait_gone(pids[1])
    log = _log(srv)
    assert "session 't'" in log and "1 thread of shipped code" in log, log
    assert "worker pid %d of session 't' exited with status 0" % pids[1] \
        in log, log
    ws = _open(srv, flag="w")
    try:
        # the thread's steps up to the stop were checkpointed
        assert len(ws["progress"]) >= 5
    finally:
        ws.close()


def test_stats_count_threads_of_shipped_code(gw):
    """stats()["threads"]: up before Thread.start() returns, daemon or
    not, down when run() is over; a thread that fails counts down too."""
    assert gw.stats()["threads"] == 0
    gw.remote_exec(
        "import threading\n"
        "go = threading.Event()\n"
        "ts = [threading.Thread(target=go.wait, daemon=d)\n"
        "      for d in (False, True)]\n"
        "ts.append(threading.Thread(target=lambda: 1 / 0))\n"
        "for t in ts[:2]:\n"
        "    t.start()\n")
    assert gw.stats()["threads"] == 2
    err = io.StringIO()
    gw.remote_exec("ts[2].start(); ts[2].join()\n"
                   "go.set()\n"
                   "for t in ts:\n"
                   "    t.join()\n"
                   "del ts, go, t", stderr=err)
    assert "ZeroDivisionError" in err.getvalue()
    assert gw.stats()["threads"] == 0


def test_thread_count_refuses_a_bad_delta(gw):
    """_pyshelfd.threads() takes -1, 0 or 1 only: anything else is a
    ValueError, and the count is left alone."""
    r = gw.remote_exec("import _pyshelfd\n_pyshelfd.threads(2)")
    assert isinstance(r, pyshelf.WrappedExcinfo), r
    assert r.exc_type == "ValueError" and "delta" in r.message
    assert gw.stats()["threads"] == 0


def test_stats_count_thread_module_threads(gw):
    """A thread started by _thread.start_new_thread (or its alias
    start_new) is counted as threading's are: up before the call returns,
    down when its function is over, failing or not; arguments the call
    refuses leave the count alone.  It is the count the interval
    checkpoints go by (_thread._count() agrees once the threads are
    gone)."""
    gw.remote_exec(
        "import _thread\n"
        "go = _thread.allocate_lock(); go.acquire()\n"
        "done = []\n"
        "def wait(tag):\n"
        "    with go:\n"
        "        pass\n"
        "    done.append(tag)\n"
        "_thread.start_new_thread(wait, ('a',))\n"
        "_thread.start_new(wait, (), {'tag': 'b'})\n")
    assert gw.stats()["threads"] == 2
    for bad, what in (("_thread.start_new_thread(1, ())", "callable"),
                      ("_thread.start_new_thread(wait, ['x'])", "tuple"),
                      ("_thread.start_new_thread(wait, (), 1)", "dict"),
                      ("_thread.start_new_thread(wait, (), None)", "dict"),
                      ("_thread.start_new_thread(wait)", "argument"),
                      ("_thread.start_new_thread(wait, (), {}, 1)",
                       "argument")):
        r = gw.remote_exec(bad)
        assert isinstance(r, pyshelf.WrappedExcinfo), r
        assert r.exc_type == "TypeError" and what in r.message, r.message
    assert gw.stats()["threads"] == 2
    # a thread that cannot start (no room for its stack) is not counted
    r = gw.remote_exec("_thread.stack_size(2 ** 46)\n"
                       "try:\n"
                       "    _thread.start_new_thread(wait, ('c',))\n"
                       "finally:\n"
                       "    _thread.stack_size(0)")
    assert isinstance(r, pyshelf.WrappedExcinfo), r
    assert r.exc_type == "RuntimeError" and "start" in r.message, r.message
    assert gw.stats()["threads"] == 2
    gw.remote_exec("_thread.start_new_thread(lambda: 1 / 0, ())\n"
                   "_thread.start_new_thread(_thread.exit, ())\n"
                   "go.release()\n")
    wait_for(lambda: gw.stats()["threads"] == 0, "the threads to end")
    assert sorted(gw["done"]) == ["a", "b"]
    wait_for(lambda: gw.remote_exec("DirectValue(_thread._count())").value
             == 0, "_thread to see them gone")


def test_start_new_thread_keeps_its_face(tmp_path, backend):
    """The counting _thread.start_new_thread is the module's own as far
    as shipped code can see: its name and module, and a global that
    refers to it goes into the store by reference and comes back as it
    in the next worker."""
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="t", backend=backend)
    try:
        r = ws.remote_exec("import _thread\n"
                           "snt = _thread.start_new_thread\n"
                           "DirectValue((snt.__module__, snt.__name__))")
        assert r.value == ("_thread", "start_new_thread")
        ws.remote_exec("ran = []\n"
                       "snt(ran.append, (1,))\n")
        wait_for(lambda: ws["ran"] == [1], "the thread")
        ws.sync()
        assert ws.stats()["volatile"] == 0
    finally:
        ws.close()
    ws = pyshelf.spawn(db=db, session="t", backend=backend)
    try:
        assert ws.remote_exec("import _thread\n"
                              "DirectValue(snt is _thread.start_new_thread)"
                              ).value is True
        ws.remote_exec("snt(ran.append, (2,))")
        wait_for(lambda: ws["ran"] == [1, 2], "the thread")
    finally:
        ws.close()


def test_threading_imported_before_the_backend(tmp_path, backend,
                                               monkeypatch):
    """A sitecustomize that imports threading before the backend starts:
    threading bound the real _thread.start_new_thread, and the backend
    points it at the counting one, so its threads are counted still."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import threading\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    ws = pyshelf.spawn(db=tmp_path / "db", session="t", backend=backend)
    try:
        r = ws.remote_exec(
            "import sys, threading, _thread\n"
            "_go = threading.Event()\n"
            "threading.Thread(target=_go.wait).start()\n"
            "DirectValue(('sitecustomize' in sys.modules,\n"
            "             threading._start_new_thread is\n"
            "             _thread.start_new_thread))",
            stderr=io.StringIO())
        assert r.value == (True, True), r
        assert ws.stats()["threads"] == 1
        ws.remote_exec("_go.set()", stderr=io.StringIO())
        wait_for(lambda: ws.stats()["threads"] == 0, "the thread to end")
    finally:
        ws.close()
