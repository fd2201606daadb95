"""Workspace life cycle and the rest of the API: spawn/open, close,
close_session, sync, ping, stats, lost, errors, threads."""
import os
import signal
import threading

import pytest

import pyshelf
from pyshelf import DirectValue, Lost


def test_public_names():
    for name in ("spawn", "open", "Workspace", "DirectValue", "Wrapped",
                 "WrappedExcinfo", "Lost", "Error", "RemoteError",
                 "UnknownHandleError", "VolatileError", "NotPicklableError",
                 "BackendDied"):
        assert hasattr(pyshelf, name), name
    assert issubclass(pyshelf.RemoteError, pyshelf.Error)
    assert issubclass(pyshelf.UnknownHandleError, pyshelf.RemoteError)
    assert issubclass(pyshelf.UnknownHandleError, KeyError)
    assert issubclass(pyshelf.VolatileError, pyshelf.RemoteError)
    assert issubclass(pyshelf.NotPicklableError, pyshelf.Error)
    assert issubclass(pyshelf.NotPicklableError, TypeError)
    assert issubclass(pyshelf.BackendDied, pyshelf.Error)
    assert repr(DirectValue([1])) == "DirectValue([1])"


def test_session_attributes(gw):
    assert gw.session == "t"
    assert gw.created is True
    assert isinstance(gw.session_id, str) and len(gw.session_id) == 32
    int(gw.session_id, 16)
    assert isinstance(gw.pid, int) and gw.pid > 0
    os.kill(gw.pid, 0)


@pytest.mark.stdio_only('the backend process exits at close() with returncode 0')
def test_context_manager_and_idempotent_close(tmp_path, backend):
    with pyshelf.spawn(db=tmp_path / "db", session="cm",
                       backend=backend) as ws:
        pid = ws.pid
        assert ws.remote_exec("DirectValue(1)").value == 1
    assert ws.closed
    ws.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert ws.returncode == 0
    with pytest.raises(pyshelf.Error):
        ws.remote_exec("1")


def test_close_detaches_and_open_resumes(tmp_path, backend):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="keep", backend=backend)
    sid = ws.session_id
    ws["kept"] = [1, 2]
    ws.close()
    ws = pyshelf.open("keep", db=db, backend=backend)
    try:
        assert ws.created is False
        assert ws.session_id == sid
        assert ws["kept"] == [1, 2]
        assert ws.lost() == []
    finally:
        ws.close()


def test_close_session_ends_it(tmp_path, backend):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="gone", backend=backend)
    ws["x"] = 1
    ws.close_session()
    assert ws.closed
    ws.close()  # still idempotent
    with pytest.warns(pyshelf.SessionEndedWarning, match="closed"):
        ws = pyshelf.open("gone", db=db, backend=backend)
    try:
        assert "x" not in ws
    finally:
        ws.close()


def test_sync_ping_stats(gw):
    gw.remote_exec("lst = []")
    gw.remote_exec("lst.append(1)")
    gw.sync()
    gw.ping()
    st = gw.stats()
    assert isinstance(st, dict)


def test_lost_is_a_list_of_lost(gw):
    lost = gw.lost()
    assert isinstance(lost, list)
    assert all(isinstance(x, Lost) for x in lost)
    assert Lost._fields == ("name", "type_name", "reason")


@pytest.mark.stdio_only("volatile entries live on in the server's worker across a detach, by design")
def test_volatile_entry_is_reported_after_restart(tmp_path, backend):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="v", backend=backend)
    ws.remote_exec("g = (i for i in range(3))\nok = 1")
    ws.close()
    ws = pyshelf.open("v", db=db, backend=backend)
    try:
        assert ws["ok"] == 1
        names = [x.name for x in ws.lost()]
        assert "g" in names
        with pytest.raises(pyshelf.VolatileError) as ei:
            ws["g"]
        assert "g" in str(ei.value)
    finally:
        ws.close()


@pytest.mark.stdio_only("a dead stdio backend ends the workspace; a server's reattaches to a new worker")
def test_backend_died(gw):
    os.kill(gw.pid, signal.SIGKILL)
    with pytest.raises(pyshelf.BackendDied) as ei:
        gw.remote_exec("1")
    assert ei.value.status == -signal.SIGKILL
    with pytest.raises(pyshelf.BackendDied):
        gw.ping()


def test_missing_backend_is_a_clean_error(tmp_path):
    with pytest.raises(pyshelf.Error) as ei:
        pyshelf.spawn(db=tmp_path / "db", backend="/nonexistent/pyshelfd")
    assert "/nonexistent/pyshelfd" in str(ei.value)


def test_backend_from_environment(tmp_path, backend, monkeypatch):
    monkeypatch.setenv("PYSHELFD", backend)
    with pyshelf.spawn(db=tmp_path / "db", session="env") as ws:
        assert ws.remote_exec("DirectValue(9)").value == 9


def test_requests_from_many_threads(gw):
    def square(x):
        return DirectValue(x * x)
    results, errors = {}, []

    def worker(base):
        try:
            for i in range(base, base + 50):
                results[i] = gw.remote_exec(square, i).value
        except Exception as e:  # pragma: no cover
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(k * 100,))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {i: i * i for k in range(4)
                       for i in range(k * 100, k * 100 + 50)}
