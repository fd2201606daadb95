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
import traceback
import warnings

import pytest

import pyshelf
from conftest import SERVER_MODE
from pyshelf._workspace import open as _server_open
from pyshelf._workspace import spawn as _stdio_spawn
from server_helpers import srv, wait_for, wait_gone  # noqa: F401 (fixture)


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
    # (from the tombstone, or from the closing worker itself when the
    # attach reached it on its way out)
    assert "session 'e' was closed (close_session())" in str(ei.value)
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


# --- QA 09: the backend's traceback, at the shipped code's file and line --

def _format_in_backend(e):
    import traceback
    return pyshelf.DirectValue("".join(traceback.format_exception(*e)))


def _raises_here(key):
    table = {}
    return table[key]                     # the line the traceback names


def _deco(f):
    return f


@_deco
def _decorated(key):
    x = 1
    return {}[key] + x                    # and this one, after a decorator


def test_an_exception_carries_the_backend_traceback(gw):
    ws = gw
    ws.remote_exec("def inner(x):\n    return {}[x]\n"
                   "def outer(x):\n    return inner(x) + 1")
    err = ws.remote_exec("outer('key')")
    assert isinstance(err, pyshelf.WrappedExcinfo)
    tb = err.traceback
    assert tb.startswith("Traceback (most recent call last):\n"), tb
    assert tb.endswith("KeyError: 'key'\n"), tb
    assert "in outer\n    return inner(x) + 1\n" in tb, tb
    assert "in inner\n    return {}[x]\n" in tb, tb
    # what traceback.format_exception says of the handle's objects there
    assert ws.remote_exec(_format_in_backend, err).value == tb
    assert str(err) == tb.rstrip("\n")
    assert repr(err) == "<WrappedExcinfo %d KeyError: 'key'>" % err.id
    import pickle
    back = pickle.loads(pickle.dumps(err))
    assert back.traceback == tb and str(back) == str(err)


@pytest.mark.parametrize("fn", [_raises_here, _decorated])
def test_shipped_lines_show_at_their_own_file_and_line(gw, fn):
    ws = gw
    err = ws.remote_exec(fn, "k")
    assert isinstance(err, pyshelf.WrappedExcinfo)
    src, first = __import__("inspect").getsourcelines(fn)
    n = next(i for i, line in enumerate(src) if "the line" in line or
             "and this one" in line)
    expect = '  File "%s", line %d, in %s\n    %s\n' % (
        __file__, first + n, fn.__name__, src[n].strip())
    assert expect in err.traceback, err.traceback
    assert "<pyshelf:" not in err.traceback, err.traceback
    # the journal's summary is still the def line
    if SERVER_MODE:
        assert [c.summary for c in ws.calls()][-1].startswith("def ")


def test_a_raised_exception_shows_the_backend_traceback_as_its_cause(gw):
    ws = gw
    h = ws.remote_exec("[1, 2]")
    with pytest.raises(ValueError) as ei:
        ws["k" * 600] = h                 # the backend refuses the name
    cause = ei.value.__cause__
    assert isinstance(cause, pyshelf.RemoteTraceback)
    assert cause.traceback.startswith("Traceback (most recent call last)")
    shown = "".join(traceback.format_exception(ei.value))
    assert "pyshelf.RemoteTraceback: raised in the backend:\n\n" \
        "Traceback (most recent call last):" in shown, shown
    assert "The above exception was the direct cause of the following " \
        "exception:" in shown, shown


# --- QA 10: a call sent again after a broken connection: output once -----

class _Collect:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def _pipes_of(pid):
    """The pipes (their inodes, as /proc shows them) process pid holds."""
    held = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            what = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if what.startswith("pipe:"):
            held.add(what)
    return held


def _break_connections(run, worker=None):
    """Break this process's connections to the servers under run (the
    connection breaks under the client, as a network does): a socket is
    shut down; a connection on pipes (PIPES, the default), those pipes
    shared with the worker, gets /dev/null in their place."""
    n = 0
    shared = _pipes_of(worker) if worker else set()
    nul = os.open(os.devnull, os.O_RDWR)
    for fd in os.listdir("/proc/self/fd"):
        try:
            what = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if what in shared and int(fd) != nul:
            os.dup2(nul, int(fd))
            n += 1
            continue
        try:
            if not what.startswith("socket:"):
                continue
            s = socket.socket(fileno=int(fd))
        except OSError:
            continue
        try:
            peer = s.getpeername()
            if isinstance(peer, str) and peer.startswith(run):
                s.shutdown(socket.SHUT_RDWR)
                n += 1
        except OSError:
            pass
        finally:
            s.detach()
    os.close(nul)
    return n


def test_a_call_sent_again_prints_its_output_once(srv, tmp_path):
    flag = str(tmp_path / "go")
    ws = _open_srv(srv)
    out, err = _Collect(), _Collect()
    box = {}
    code = ("import os, sys, time\n"
            "for i in range(3):\n"
            "    print('out', i, flush=True)\n"
            "    print('err', i, file=sys.stderr, flush=True)\n"
            "while not os.path.exists(%r):\n"
            "    time.sleep(0.01)\n"
            "for i in range(3, 5):\n"
            "    print('out', i, flush=True)\n"
            "    print('err', i, file=sys.stderr, flush=True)\n"
            "DirectValue('done')" % flag)

    def run():
        try:
            box["r"] = ws.remote_exec(code, stdout=out, stderr=err)
        except BaseException as e:      # noqa: B902 (what the test reads)
            box["e"] = e
    try:
        t = threading.Thread(target=run, daemon=True)
        t.start()
        wait_for(lambda: "out 2" in out.text and "err 2" in err.text,
                 "the first lines")
        assert _break_connections(srv.run, ws.pid) >= 1
        open(flag, "w").close()
        t.join(120)
        assert not t.is_alive()
        assert box.get("r") is not None and box["r"].value == "done", box
        assert out.text == "".join("out %d\n" % i for i in range(5))
        assert err.text == "".join("err %d\n" % i for i in range(5))
        assert [c.state for c in ws.calls()].count("done") == 1
    finally:
        ws.close()


def test_a_replay_skips_what_was_written_across_a_gap():
    from pyshelf._workspace import _Output
    o = _Output(_Collect(), _Collect())
    for stream, data in ((1, b"aa"), (2, b"E"), (1, b"bb")):
        o(stream, data)
    o.replaying()
    # the journal dropped its oldest 3 bytes ("aa", "E"): a gap marker,
    # then what it kept, then new output
    for stream, data in ((2, b"[pyshelf: 3 bytes of output dropped]\n"),
                         (1, b"bb"), (1, b"cc"), (2, b"F")):
        o(stream, data)
    assert o.files[0].text == "aabbcc" and o.files[1].text == "EF"
    # dropped bytes never written here: said so
    o = _Output(_Collect(), _Collect())
    o(1, b"xy")
    o.replaying()
    o(2, b"[pyshelf: 5 bytes of output dropped]\n")
    o(1, b"z")
    assert o.files[0].text == "xyz"
    assert o.files[1].text == "[pyshelf: 3 bytes of output dropped]\n"


# --- QA 12: server_pid is the server that runs now ------------------------

def test_server_pid_follows_the_server_that_took_over(srv):
    ws = _open_srv(srv)
    try:
        old = ws.server_pid
        assert old is not None and old != ws.pid
        os.kill(old, signal.SIGKILL)
        assert wait_gone(old)
        assert ws.server_pid is None            # none runs now
        ws2 = _open_srv(srv, "t")               # a new one adopts ws's worker
        try:
            assert ws2.server_pid not in (None, old)
            assert ws.server_pid == ws2.server_pid
            ws["x"] = 1                         # ws still works
            assert ws["x"] == 1
        finally:
            ws2.close()
    finally:
        ws.close()


def test_a_stdio_backend_has_no_server_pid(store):
    ws = _stdio_spawn(db=store, session="s")
    try:
        assert ws.server_pid is None
    finally:
        ws.close()
