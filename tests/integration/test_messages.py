"""What the user is told (QA 08, 09, 10, 12, 14): a request sent after the
session's idle worker died runs on the new one, with a warning; a
WrappedExcinfo carries the backend's traceback, lines of shipped code at
their own file and line; a call sent again after a broken connection
prints its output once; server_pid is the server that runs now; a refused
open says it once, in the exception, and a warning names what happened to
the session, not a worker."""
import os
import signal
import socket
import threading
import time
import traceback
import warnings

import pytest

import pyshelf
from conftest import SERVER_MODE, _gone


# --- QA 14: a refused open says it once; the warning in the user's terms --

@pytest.mark.parametrize("flag", ["w", "r"])
def test_a_refused_open_prints_nothing_on_stderr(store, capfd, flag):
    with pytest.raises(pyshelf.SessionNotFound) as ei:
        pyshelf.open("nosuch", db=store, flag=flag)
    assert "no session named 'nosuch'" in str(ei.value)
    pyshelf.open("other", db=store).close()
    with pytest.raises(pyshelf.SessionNotFound):
        pyshelf.open("nosuch", db=store, flag=flag)
    err = capfd.readouterr().err
    assert "nosuch" not in err, err


def test_the_tombstone_warning_says_what_happened_to_the_session(store):
    ws = pyshelf.open("e", db=store)
    ws["x"] = 1
    ws.close_session()
    with pytest.raises(pyshelf.SessionEnded) as ei:
        pyshelf.open("e", db=store, flag="w")   # its worker refuses
    assert "session 'e' was closed (close_session()) on " in str(ei.value)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        pyshelf.open("e", db=store).close()
    msgs = [str(w.message) for w in got
            if issubclass(w.category, pyshelf.SessionEndedWarning)]
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert msg.startswith("a new, empty session was created: session 'e' "
                          "was closed (close_session()) on "), msg
    assert "entries" in msg and "reason closed" not in msg, msg
    assert "worker" not in msg and "status" not in msg, msg


# --- QA 08: a request the dead worker never read runs on the new one -----

from server_helpers import srv, wait_for, wait_gone  # noqa: E402,F401
from pyshelf._workspace import open as _server_open  # noqa: E402
from pyshelf._workspace import spawn as _stdio_spawn  # noqa: E402


class _KillOnOutput:
    """A stdout for remote_exec that SIGKILLs pid at the first output: the
    backend has surely started the call then."""

    def __init__(self, pid):
        self.pid, self.text = pid, ""

    def write(self, s):
        if not self.text:
            os.kill(self.pid, signal.SIGKILL)
        self.text += s

    def flush(self):
        pass


def _open_srv(srv, name="s", **kw):
    """open() through srv's server, not the suite's wrapper (which, in
    server mode, waits for the worker to hibernate at close)."""
    return srv.track(_server_open(name, db=srv.db, **kw))


def test_a_request_after_the_idle_worker_died_runs_with_a_warning(srv):
    ws = _open_srv(srv)
    try:
        ws["x"] = 1
        for n in (1, 2):
            worker = ws.pid
            os.kill(worker, signal.SIGKILL)
            assert wait_gone(worker)
            with pytest.warns(pyshelf.WorkerDiedWarning) as got:
                if n == 1:
                    assert ws.remote_exec("DirectValue(x + 1)").value == 2
                else:
                    assert ws["x"] == 1          # any request, a GET too
            msg = str(got[0].message)
            assert "signal 9 (SIGKILL)" in msg and "(pid %d)" % worker in msg
            assert "before this request reached it" in msg, msg
            assert got[0].filename == __file__   # the user's line
            assert ws.pid != worker
            srv.track(ws)
        assert ws.remote_exec("DirectValue(x)").value == 1   # ran once
    finally:
        ws.close()


def test_open_after_the_worker_died_warns(srv):
    ws = _open_srv(srv)
    ws["x"] = 1
    worker = ws.pid
    ws.close()
    os.kill(worker, signal.SIGKILL)
    assert wait_gone(worker)
    with pytest.warns(pyshelf.WorkerDiedWarning, match="SIGKILL"):
        ws = _open_srv(srv, flag="w")
    try:
        assert ws["x"] == 1
    finally:
        ws.close()


@pytest.mark.parametrize("output", [False, True])
def test_a_worker_killed_under_a_call_says_what_is_known(srv, output):
    ws = _open_srv(srv)
    watch = _open_srv(srv, flag="w")
    box = {}
    try:
        worker = ws.pid
        out = _KillOnOutput(worker) if output else None

        def run():
            try:
                box["r"] = ws.remote_exec(
                    "print('started', flush=True)\nimport time\n"
                    "time.sleep(600)" if output else
                    "import time\ntime.sleep(600)", stdout=out)
            except BaseException as e:  # noqa: B902 (what the test reads)
                box["e"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        if not output:
            wait_for(lambda: ws.last_call_id and any(
                c.id == ws.last_call_id and c.state == "running"
                for c in watch.calls()), "the call to run")
            os.kill(worker, signal.SIGKILL)
        t.join(120)
        assert not t.is_alive()
        e = box.get("e")
        assert isinstance(e, pyshelf.BackendDied), box
        assert e.status == -signal.SIGKILL and "SIGKILL" in str(e)
        if output:
            assert "while this call ran" in str(e), str(e)
        else:
            assert "after this request was sent to it" in str(e), str(e)
            assert "may have run" in str(e), str(e)
        srv.track(ws)
    finally:
        watch.close()
        ws.close()


def _zombie(pid):
    """Wait until our child pid is dead with all its threads, so that its
    files (the pipes) are closed: its main thread shows Z before the
    others are done."""
    wait_for(lambda: _dead(pid), "pid %d to die" % pid)


def _dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                return False
        return len(os.listdir("/proc/%d/task" % pid)) <= 1
    except OSError:
        return True


def test_stdio_a_dead_backend_says_the_request_did_not_run(store):
    ws = _stdio_spawn(db=store, session="s")
    try:
        ws["x"] = 1
        os.kill(ws.pid, signal.SIGKILL)
        _zombie(ws.pid)
        with pytest.raises(pyshelf.BackendDied) as ei:
            ws.remote_exec("DirectValue(x)")
        assert str(ei.value).startswith(
            "pyshelfd had died before it read this request, which did not "
            "run"), str(ei.value)
        assert ei.value.status == -signal.SIGKILL
    finally:
        ws.close()


@pytest.mark.parametrize("output", [False, True])
def test_stdio_a_backend_dying_under_a_call_says_what_is_known(store,
                                                               output):
    ws = _stdio_spawn(db=store, session="s")
    try:
        if output:
            with pytest.raises(pyshelf.BackendDied) as ei:
                ws.remote_exec("print('started', flush=True)\nimport time\n"
                               "time.sleep(600)",
                               stdout=_KillOnOutput(ws.pid))
            assert str(ei.value).startswith(
                "pyshelfd died while it ran this request"), str(ei.value)
        else:
            with pytest.raises(pyshelf.BackendDied) as ei:
                ws.remote_exec("import os, signal\n"
                               "os.kill(os.getpid(), signal.SIGKILL)")
            assert str(ei.value).startswith(
                "pyshelfd died after this request was sent to it and "
                "before it answered (the request may have run)"), \
                str(ei.value)
        assert ei.value.status == -signal.SIGKILL
    finally:
        ws.close()
