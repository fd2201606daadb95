"""Stopping a server (SIGTERM to the supervisor: the documented way, and
what a host's shutdown sends) ends every worker whatever shipped code did
to its signals: the supervisor asks each worker over the control channel
(CTL_STOP), the worker stops its running call as an interrupt does, and,
when the call does not stop within --hard-grace, ends it as a hard
interrupt does (the session kept as of its last checkpoint, the call
journalled as stopped by the shutdown), then checkpoints and exits.  While
it stops, a new open is told the server is stopping (QA 19)."""
import glob
import os
import signal

import pytest

import pyshelf
from pyshelf._workspace import open as _real_open
from server_helpers import WAIT, alive, srv, wait_for, wait_gone  # noqa: F401
from test_server_client import _in_thread, _state


def _open(s, name="s", **kw):
    """pyshelf.open itself (PYSHELF_TEST_MODE=server's conftest wraps
    pyshelf.open, adding --idle-exit and waiting for workers to go at
    close: what these tests are about)."""
    return s.track(_real_open(name, db=s.db, **kw))


# code that makes SIGTERM and SIGINT mean nothing to the worker, then
# loops: neither our handlers nor a KeyboardInterrupt can stop it
DEAF = ("import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n")
DEAF_LOOP = DEAF + ("x = 99\nopen(READY, 'w').close()\n"
                   "while True:\n    time.sleep(0.01)\n")
# code that blocks the signals outright, and re-arms when it can
BLOCKED_LOOP = ("import signal, time\n"
                "x = 99\n"
                "signal.pthread_sigmask(signal.SIG_BLOCK,\n"
                "    {signal.SIGINT, signal.SIGTERM})\n"
                "open(READY, 'w').close()\n"
                "while True:\n"
                "    signal.pthread_sigmask(signal.SIG_BLOCK,\n"
                "        {signal.SIGINT, signal.SIGTERM})\n"
                "    try:\n"
                "        time.sleep(0.01)\n"
                "    except BaseException:\n"
                "        pass\n")


def _stop(ws_or_pids):
    """SIGTERM the supervisor; wait until it and the worker are gone."""
    sp, wp = ws_or_pids
    os.kill(sp, signal.SIGTERM)
    assert wait_gone(sp), "the supervisor did not end"
    assert wait_gone(wp), "the worker did not end"


def test_stop_ends_an_idle_worker_whose_code_ignores_sigterm(srv):
    ws = _open(srv)
    ws.remote_exec(DEAF + "a = 1")
    pids = ws.server_pid, ws.pid
    ws.close()
    _stop(pids)
    ws = _open(srv, flag="w")
    try:
        assert ws["a"] == 1      # checkpointed before it exited
        assert ws.pid != pids[1]
    finally:
        ws.close()


def _log(s):
    """The text of this test's server logs."""
    text = ""
    for p in glob.glob(os.path.join(s.run, "pyshelf", "*.log")):
        with open(p) as f:
            text += f.read()
    return text


def test_stop_ends_a_worker_whose_sigterm_is_fatal(srv):
    """SIG_DFL for SIGTERM: a SIGTERM would kill the worker before its
    last checkpoint and its clean exit; CTL_STOP sends none."""
    ws = _open(srv)
    ws.remote_exec("import signal\n"
                   "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
                   "b = 2\n")
    pids = ws.server_pid, ws.pid
    ws.close()
    _stop(pids)
    log = _log(srv)
    assert "worker pid %d of session 's' exited with status 0" % pids[1] \
        in log, log
    ws = _open(srv, flag="w")
    try:
        assert ws["b"] == 2
    finally:
        ws.close()


@pytest.mark.parametrize("code", [DEAF_LOOP, BLOCKED_LOOP],
                         ids=["ignores", "blocks"])
def test_stop_ends_a_call_that_will_not_stop(srv, code):
    """The call ends as a hard interrupt ends it: its client gets
    WorkerRestarted saying the server stopped; the re-executed worker
    keeps the stop and exits; the session keeps its last checkpoint; the
    journal says why the call ended."""
    ws = _open(srv, args=("--hard-grace", "1"))
    watch = _open(srv, flag="w")
    ws["x"] = 1
    ready = os.path.join(srv.run, "ready")
    ws["READY"] = ready
    t, box = _in_thread(lambda: ws.remote_exec(code))
    wait_for(lambda: os.path.exists(ready), "the call's signals set")
    call_id = ws.last_call_id
    pids = ws.server_pid, ws.pid
    os.kill(pids[0], signal.SIGTERM)
    t.join(WAIT)
    assert not t.is_alive()
    err = box.get("error")
    assert isinstance(err, pyshelf.WorkerRestarted), box
    assert "server is stopping" in str(err)
    assert "--hard-grace" in str(err)
    assert wait_gone(pids[0]) and wait_gone(pids[1])
    for w in (ws, watch):
        try:
            w.close()
        except pyshelf.Error:
            pass
    ws = _open(srv, flag="w")
    try:
        assert ws["x"] == 1          # the call's x = 99 was not kept
        assert _state(ws, call_id) == "lost"
        with pytest.raises(pyshelf.WorkerRestarted) as ei:
            ws.result(call_id)
        assert "server is stopping" in str(ei.value)
    finally:
        ws.close()


def test_stop_ends_an_adopted_worker_that_ignores_sigterm(srv):
    """A worker started by a supervisor that died (kill -9), adopted by
    the next one: that one's SIGTERM ends it too."""
    ws = _open(srv)
    ws.remote_exec(DEAF + "c = 3")
    first, wp = ws.server_pid, ws.pid
    ws.close()
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first)
    ws = _open(srv, flag="w")
    assert ws.pid == wp and ws.server_pid != first     # adopted
    pids = ws.server_pid, wp
    srv.servers.add(ws.server_pid)
    ws.close()
    _stop(pids)
    ws = _open(srv, flag="w")
    try:
        assert ws["c"] == 3
    finally:
        ws.close()


def test_open_while_the_server_stops_says_so(srv):
    """While the supervisor waits for a worker (here a call that will not
    stop, with a long --hard-grace), a new open is told the server is
    stopping, not that a server holds the pid file but does not accept."""
    ws = _open(srv, args=("--hard-grace", "600"))
    ready = os.path.join(srv.run, "ready")
    ws["READY"] = ready
    t, box = _in_thread(lambda: ws.remote_exec(DEAF_LOOP))
    wait_for(lambda: os.path.exists(ready), "the call's signals set")
    sp, wp = ws.server_pid, ws.pid
    os.kill(sp, signal.SIGTERM)

    def refused():
        try:
            other = _real_open("other", db=srv.db)
        except pyshelf.Error as e:
            return str(e)
        other.close()      # raced the SIGTERM: try again
        return None
    msg = wait_for(refused, "a refused open")
    assert "is stopping" in msg and str(sp) in msg, msg
    assert "does not accept" not in msg
    assert alive(sp)
    # end it now (the grace is long): a hard interrupt restarts the
    # worker, and the new image keeps the stop and exits
    ws.interrupt(hard=True)
    assert wait_gone(wp) and wait_gone(sp)
    t.join(WAIT)
    assert isinstance(box.get("error"), pyshelf.WorkerRestarted), box
    ws2 = _open(srv, "other")          # a new server starts
    try:
        assert ws2.server_pid != sp
    finally:
        ws2.close()
