"""The Python client of server mode (issue 16): pyshelf.open() through an
auto-started pyshelfd --server, several clients of one session, detach
with code running and reattach, the journal (calls(), result()), re-sent
calls, racing auto-starts, a stale socket, isolation of sessions,
hibernation, a worker killed under a request, the hard interrupt.

Every test has its own XDG_RUNTIME_DIR (server_helpers.srv) and stops the
servers it started."""
import io
import json
import os
import signal
import stat
import threading
import warnings

import pytest

import pyshelf
from pyshelf import DirectValue
from server_helpers import (WAIT, alive, child, finish, server_pids,  # noqa
                            srv, wait_for, wait_gone)


def _open(s, name="s", **kw):
    return s.track(pyshelf.open(name, db=s.db, **kw))


def _state(ws, call_id):
    for c in ws.calls():
        if c.id == call_id:
            return c.state
    return None


# --- the socket directory and auto-start ----------------------------------

def test_open_refuses_an_open_socket_directory(srv):
    os.makedirs(os.path.join(srv.run, "pyshelf"), mode=0o755)
    os.chmod(os.path.join(srv.run, "pyshelf"), 0o755)
    with pytest.raises(pyshelf.Error) as ei:
        pyshelf.open("s", db=srv.db)
    assert "0700" in str(ei.value) and "pyshelf" in str(ei.value)
    assert server_pids(srv.run) == set()
    assert not os.path.exists(srv.db)           # nothing was started


def test_connect_does_not_start_a_server(srv):
    sock = os.path.join(srv.run, "nobody")
    with pytest.raises(pyshelf.Error, match="nobody"):
        pyshelf.connect("s", socket=sock)
    assert not os.path.exists(sock)
    with pytest.raises(ValueError):
        pyshelf.connect("s", socket=sock, flag="r")


def test_open_starts_a_server_and_detach_leaves_the_session(srv):
    ws = _open(srv)
    assert ws.server_pid and alive(ws.server_pid)
    assert ws.pid and ws.pid != ws.server_pid and alive(ws.pid)
    d = os.path.join(srv.run, "pyshelf")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    socks = [n for n in os.listdir(d) if n.startswith("db-")
             and stat.S_ISSOCK(os.stat(os.path.join(d, n)).st_mode)]
    assert len(socks) == 1
    ws["x"] = [1, 2]
    worker, server = ws.pid, ws.server_pid
    ws.detach()
    assert ws.closed
    assert alive(worker) and alive(server)      # the session lives on
    ws = _open(srv, flag="w")
    try:
        assert ws.server_pid == server
        assert ws.pid == worker
        assert ws["x"] == [1, 2]
        assert not ws.created
    finally:
        ws.close()


def test_racing_auto_starts_end_with_one_server(srv):
    code = ("import sys, pyshelf\n"
            "ws = pyshelf.open('s%s' % sys.argv[2], db=sys.argv[1])\n"
            "print(ws.server_pid)\n"
            "ws.close()\n")
    procs = [child(srv, code, srv.db, i) for i in range(8)]
    pids = {int(finish(p).split()[0]) for p in procs}
    srv.servers |= pids
    assert len(pids) == 1
    assert server_pids(srv.run) == pids


def test_a_stale_socket_is_replaced(srv):
    ws = _open(srv)
    ws["x"] = 41
    worker, server = ws.pid, ws.server_pid
    ws.close()
    os.kill(server, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    assert wait_gone(server) and wait_gone(worker)
    d = os.path.join(srv.run, "pyshelf")
    assert [n for n in os.listdir(d) if n.startswith("db-")
            and stat.S_ISSOCK(os.stat(os.path.join(d, n)).st_mode)]
    ws = _open(srv, flag="w")
    try:
        assert ws.server_pid != server
        assert ws["x"] == 41
    finally:
        ws.close()


# --- several clients --------------------------------------------------------

def test_two_clients_see_the_same_globals_and_handles(srv):
    ws = _open(srv)
    ws["x"] = {"a": 1}
    h = ws.remote_exec("class Box:\n    pass\nb = Box()\nb.v = 7\nb")
    assert isinstance(h, pyshelf.Wrapped)
    code = ("import sys, pyshelf\n"
            "from pyshelf import DirectValue\n"
            "ws = pyshelf.open('s', db=sys.argv[1], flag='w')\n"
            "assert ws['x'] == {'a': 1}, ws['x']\n"
            "h = ws.handle(int(sys.argv[2]))\n"
            "def get(o):\n"
            "    o.v += 1\n"
            "    return DirectValue(o.v)\n"
            "print(ws.remote_exec(get, h).value)\n"
            "ws['y'] = 'from the other'\n"
            "ws.close()\n")
    assert finish(child(srv, code, srv.db, h.id)).split() == ["8"]
    assert ws["y"] == "from the other"
    assert ws.remote_exec("DirectValue(b.v)").value == 8
    ws.close()


def test_a_handle_of_another_session_is_refused(srv):
    a = _open(srv, "a")
    b = _open(srv, "b")
    try:
        h = a.remote_exec("object()")
        assert isinstance(h, pyshelf.Wrapped)
        with pytest.raises(pyshelf.UnknownHandleError):
            b._conn.exec("def f(x):\n    return x\n", "f", (h.id,))
        assert a.remote_exec(lambda x: DirectValue(type(x).__name__),
                             h).value == "object"
    finally:
        a.close()
        b.close()


# --- detach while code runs, the journal ------------------------------------

_SLOW = ("def slow(n):\n"
         "    import time\n"
         "    for i in range(n):\n"
         "        print('tick', i, flush=True)\n"
         "        time.sleep(0.3)\n"
         "    global finished\n"
         "    finished = n\n"
         "    return DirectValue(42)\n")

_DETACHER = ("import os, sys, threading, time, pyshelf\n"
             "ws = pyshelf.open('s', db=sys.argv[1])\n"
             "src = sys.argv[2]\n"
             "t = threading.Thread(target=lambda: ws._conn.exec(\n"
             "    src, 'slow', [__import__('pickle').dumps(5)], False, 0,\n"
             "    None, bytes.fromhex(sys.argv[3])), daemon=True)\n"
             "t.start()\n"
             "time.sleep(0.5)\n"
             "print('sent', flush=True)\n"
             "%s\n")


def _call_id():
    return os.urandom(16).hex()


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_detach_with_code_running_then_reattach(srv, how):
    cid = _call_id()
    ending = "os._exit(0)" if how == "exit" else "time.sleep(600)"
    p = child(srv, _DETACHER % ending, srv.db, _SLOW, cid)
    assert p.stdout.readline().strip() == "sent"
    if how == "sigkill":
        p.kill()
    p.wait(timeout=WAIT)
    ws = _open(srv, flag="w")
    try:
        assert wait_for(lambda: _state(ws, cid), "the call in calls()")
        (call,) = [c for c in ws.calls() if c.id == cid]
        assert call.summary.startswith("def slow")
        assert call.started > 0
        out = io.StringIO()
        r = ws.result(cid, stdout=out)
        assert isinstance(r, DirectValue) and r.value == 42
        assert out.getvalue().split("\n")[:5] == [
            "tick %d" % i for i in range(5)]
        (call,) = [c for c in ws.calls() if c.id == cid]
        assert call.state == "done" and call.ended >= call.started
        assert ws["finished"] == 5
        # the result stays: taken again, the same
        assert ws.result(call, stdout=io.StringIO()).value == 42
    finally:
        ws.close()


def test_result_of_an_unknown_call_is_a_key_error(srv):
    ws = _open(srv)
    try:
        with pytest.raises(KeyError):
            ws.result(_call_id())
    finally:
        ws.close()


def test_a_resent_exec_runs_once(srv):
    ws = _open(srv)
    try:
        ws["n"] = 0
        src = ("def bump():\n    global n\n    n += 1\n"
               "    print('bumped', n)\n    return DirectValue(n)\n")
        cid = os.urandom(16)
        first = ws._conn.exec(src, "bump", (), False, 0, None, cid)
        again = ws._conn.exec(src, "bump", (), False, 0, None, cid)
        assert first[5] == 1 and again[5] == 1
        assert ws["n"] == 1
        other = ws._conn.exec(src, "bump", (), False, 0, None,
                              os.urandom(16))
        assert other[5] == 2
        # remote_exec's id is last_call_id, good for result()
        assert ws.remote_exec(lambda: DirectValue(n)).value == 2  # noqa
        assert len(ws.last_call_id) == 32
        assert ws.result(ws.last_call_id).value == 2
    finally:
        ws.close()


# --- hibernation -------------------------------------------------------------

def test_an_idle_worker_hibernates_and_resumes(srv):
    ws = _open(srv, args=("--idle-exit", "1"))
    ws["x"] = list(range(5))
    ws.remote_exec("y = sum(x)")
    worker = ws.pid
    ws.close()
    assert wait_gone(worker)
    ws = _open(srv, flag="w")
    try:
        assert ws.pid != worker
        assert ws["x"] == list(range(5))
        assert ws["y"] == 10
    finally:
        ws.close()


# --- a worker that dies, the hard interrupt ----------------------------------

def _in_thread(fn):
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:      # noqa: B902 (what the test reads)
            box["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_a_worker_killed_mid_request_is_named_and_the_next_works(srv):
    ws = _open(srv)
    watch = _open(srv, flag="w")
    try:
        ws["kept"] = "yes"
        t, box = _in_thread(lambda: ws.remote_exec(
            "import time\ntime.sleep(600)"))
        wait_for(lambda: ws.last_call_id and
                 _state(watch, ws.last_call_id) == "running",
                 "the call to run")
        worker = ws.pid
        os.kill(worker, signal.SIGKILL)
        t.join(WAIT)
        assert not t.is_alive()
        err = box.get("error")
        assert isinstance(err, pyshelf.BackendDied), box
        assert "SIGKILL" in str(err) or "signal 9" in str(err)
        assert err.status == -signal.SIGKILL
        assert ws["kept"] == "yes"                # the next request works
        assert ws.pid != worker
        srv.track(ws)
    finally:
        watch.close()
        ws.close()


def test_a_hard_interrupt_restarts_the_worker_from_its_checkpoint(srv):
    ws = _open(srv)
    watch = _open(srv, flag="w")
    try:
        ws["kept"] = [1, 2, 3]
        ws.sync()
        t, box = _in_thread(lambda: ws.remote_exec(
            "import itertools\nsum(itertools.repeat(1, 10**11))"))
        wait_for(lambda: ws.last_call_id and
                 _state(watch, ws.last_call_id) == "running",
                 "the call to run")
        ws.interrupt(hard=True)
        t.join(WAIT)
        assert not t.is_alive()
        err = box.get("error")
        assert isinstance(err, pyshelf.WorkerRestarted), box
        assert isinstance(err, pyshelf.Error)
        assert ws["kept"] == [1, 2, 3]
        assert ws.remote_exec("DirectValue(kept[-1])").value == 3
    finally:
        watch.close()
        ws.close()


_ENDLESS = ("def slow(n):\n"
            "    import time\n"
            "    while True:\n"
            "        time.sleep(0.02)\n")
_STUCK = ("def slow(n):\n"
          "    import itertools\n"
          "    return sum(itertools.repeat(1, 10**11))\n")


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_a_client_that_comes_later_stops_a_call_left_running(srv, hard):
    """A call left running by a client that went is stopped by the next
    client's interrupt() (it runs nothing itself): a KeyboardInterrupt, or
    the hard restart for code stuck in C; the session is usable after."""
    cid = _call_id()
    ws = _open(srv)
    ws["kept"] = 7
    ws.close()
    p = child(srv, _DETACHER % "os._exit(0)", srv.db,
              _STUCK if hard else _ENDLESS, cid)
    assert p.stdout.readline().strip() == "sent"
    p.wait(timeout=WAIT)
    ws = _open(srv, flag="w")
    try:
        assert wait_for(lambda: _state(ws, cid) == "running", "running")
        ws.interrupt(hard=hard)
        if hard:
            with pytest.raises(pyshelf.WorkerRestarted):
                ws.result(cid)
        else:
            r = ws.result(cid)
            assert isinstance(r, pyshelf.WrappedExcinfo)
            assert r.exc_type == "KeyboardInterrupt"
        assert _state(ws, cid) in ("done", "lost")
        assert ws.remote_exec("DirectValue(kept + 1)").value == 8
    finally:
        ws.close()


def test_a_second_client_stops_the_first_ones_call(srv):
    """Two clients of one session: b, running nothing, stops a's call."""
    a = _open(srv)
    b = _open(srv, flag="w")
    try:
        t, box = _in_thread(lambda: a.remote_exec(
            "import time\nwhile True:\n    time.sleep(0.02)\n"))
        wait_for(lambda: a.last_call_id and
                 _state(b, a.last_call_id) == "running", "the call to run")
        b.interrupt()
        t.join(WAIT)
        assert not t.is_alive()
        r = box.get("result")
        assert isinstance(r, pyshelf.WrappedExcinfo), box
        assert r.exc_type == "KeyboardInterrupt"
        assert b.remote_exec("DirectValue(1)").value == 1
    finally:
        b.close()
        a.close()


def _server_log(srv):
    d = os.path.join(srv.run, "pyshelf")
    text = ""
    for n in os.listdir(d):
        if n.endswith(".log"):
            with open(os.path.join(d, n)) as f:
                text += f.read()
    return text


def test_an_idle_worker_keeps_what_a_full_store_could_not_take(srv):
    """Entries a full store could not take live only in the worker: it
    does not hibernate while it holds them (it says so in the log), and
    a client that comes back finds them, and they are written once there
    is room."""
    ws = _open(srv, args=("--map-max", "4M", "--idle-exit", "0.2"))
    failed = 0
    for i in range(14):
        try:
            ws.remote_exec("g%d = [%r * 100 for _ in range(3000)]"
                           % (i, str(i)))
        except pyshelf.RemoteError as e:
            assert "not written" in str(e)
            failed += 1
    assert failed
    worker = ws.pid
    # close() says what it could not write, and who keeps it
    with pytest.raises(pyshelf.DetachError) as ei:
        ws.close()
    assert "not written" in str(ei.value) and ei.value.pid == worker
    assert ws.closed
    assert wait_for(lambda: "idle, but not exiting" in _server_log(srv),
                    "the worker to say why it stays")
    assert alive(worker)
    ws = _open(srv, flag="w")
    try:
        assert ws.pid == worker
        assert ws.stats()["unwritten"] > 0
        for i in range(14):
            assert ws.remote_exec("DirectValue(len(g%d))" % i).value == 3000
        # room: most of the globals written before go
        ws.remote_exec("for i in range(10):\n    del globals()['g%d' % i]")
        ws.sync()
        assert ws.stats()["unwritten"] == 0
    finally:
        ws.close()


def test_sigterm_of_the_server_mid_call_says_so(srv):
    """Stopping the server (kill -TERM, a host's shutdown) while a call
    runs: the call ends with a KeyboardInterrupt that says the backend is
    stopping, not a bare one that looks like the user's Ctrl-C."""
    ws = _open(srv)
    watch = _open(srv, flag="w")
    try:
        t, box = _in_thread(lambda: ws.remote_exec(
            "import time\nwhile True:\n    time.sleep(0.02)\n"))
        wait_for(lambda: ws.last_call_id and
                 _state(watch, ws.last_call_id) == "running", "the call")
        os.kill(ws.server_pid, signal.SIGTERM)
        t.join(WAIT)
        assert not t.is_alive()
        r = box.get("result")
        assert isinstance(r, pyshelf.WrappedExcinfo), box
        assert r.exc_type == "KeyboardInterrupt"
        assert "SIGTERM" in r.message and "stopping" in r.message
    finally:
        for w in (watch, ws):
            try:
                w.close()
            except pyshelf.Error:
                pass


def test_calls_is_a_list_of_call(srv):
    ws = _open(srv)
    try:
        ws.remote_exec("z = 1")
        calls = ws.calls()
        assert calls and all(isinstance(c, pyshelf.Call) for c in calls)
        assert calls[-1].id == ws.last_call_id
        assert calls[-1].state == "done"
        raw = json.loads(ws._conn.calls())
        assert raw[-1]["id"] == ws.last_call_id
    finally:
        ws.close()


def test_close_session_ends_it_through_the_server(srv):
    ws = _open(srv)
    ws["x"] = 1
    ws.close_session()
    assert ws.closed
    with pytest.raises(pyshelf.SessionEnded):
        _open(srv, flag="w")


def test_open_c_right_after_close_session_makes_a_new_one(srv):
    """The worker of a closed session is still on its way out when the
    next open() comes: 'c' waits for it and makes the new session (with
    the warning), never SessionEnded."""
    for i in range(10):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            ws = _open(srv, "e")
        assert ws.created
        assert (i == 0) == (not any(
            issubclass(w.category, pyshelf.SessionEndedWarning)
            for w in got))
        assert "i" not in ws
        ws["i"] = i
        ws.close_session()


def test_the_default_store_through_its_server(srv, monkeypatch, tmp_path):
    # a fresh account: not even ~/.local/share (XDG_DATA_HOME) exists yet;
    # the default store's parents are made, as a stdio pyshelfd makes them
    data = tmp_path / "fresh" / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    ws = srv.track(pyshelf.open("quickstart"))
    try:
        ws["runs"] = 1
        sock = os.path.join(srv.run, "pyshelf", "default")
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
    finally:
        ws.close()
    assert (data / "pyshelf" / "data.mdb").exists()
    ws = srv.track(pyshelf.open("quickstart", flag="w"))
    try:
        assert ws["runs"] == 1
    finally:
        ws.close()
