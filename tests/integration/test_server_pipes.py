"""PIPES: a server connection goes on over a pipe each way once attached
(docs/PROTOCOL.md 7.2), because a round trip over a Unix socket costs
about 1.6x one over a pipe (docs/BENCHMARKS.md).  Raw frames against a
worker (worker_wire.py), and the Python client against a real server."""

import os
import signal
import socket
import stat
import subprocess
import threading

import pytest

import pyshelf
from server_helpers import WAIT, srv, wait_for  # noqa: F401 (srv)
from worker_wire import (ERR, ERROR, OK, Client, parse,
                         worker)  # noqa: F401 (the fixture)

PIPES = 0x0012
PYSHELFD = os.environ.get("PYSHELFD", "pyshelfd")


class PipeClient(Client):
    """Client over the two pipes PIPES gave: reads rep, writes req."""

    def __init__(self, rep, req):
        super().__init__(None)
        self.rep, self.req = rep, req

    def _write(self, data):
        os.write(self.req, data)

    def _rfd(self):
        return self.rep

    def _read(self):
        return os.read(self.rep, 1 << 20)

    def close(self):
        for fd in (self.rep, self.req):
            try:
                os.close(fd)
            except OSError:
                pass


def _pipes(c):
    """Send PIPES on c's socket: (the reply, the descriptors it carried)."""
    rid = c.send(PIPES)
    msg, fds, _flags, _addr = socket.recv_fds(c.sock, 1 << 16, 4)
    m, used = parse(msg)
    assert used == len(msg), "bytes after PIPES' reply on the socket"
    assert m.id == rid
    return m, fds


def _upgrade(w):
    c, m = w.attach()
    assert m.type != ERROR, m
    m, fds = _pipes(c)
    assert m.type == OK, m
    assert len(fds) == 2
    for fd in fds:
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
    return c, PipeClient(fds[0], fds[1])


def test_pipes_carry_the_connection(worker):
    w = worker()
    sock, p = _upgrade(w)
    try:
        p.run("x = 41")
        assert p.value("x + 1") == 42
        # the socket is not read any more: the worker's answers come on
        # the pipe, whatever the socket is told
        assert p.value("x * 2") == 82
    finally:
        p.close()
        sock.close()


def test_pipes_twice_is_refused_and_the_connection_goes_on(worker):
    w = worker()
    sock, p = _upgrade(w)
    try:
        rid = p.send(PIPES)
        _out, m = p.until_reply(rid)
        assert m.type == ERROR
        assert m.get("ERRCODE") == ERR["BAD_REQUEST"]
        assert "pipes already" in m.text("MESSAGE")
        assert p.value("6 * 7") == 42
    finally:
        p.close()
        sock.close()


def test_a_stdio_backend_refuses_pipes(tmp_path):
    b = subprocess.Popen([PYSHELFD, "--stdio", "--db", str(tmp_path / "db"),
                          "--create"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        c = PipeClient(b.stdout.fileno(), b.stdin.fileno())
        rid = c.send(0x0001, [("VERSION", 3)])
        _out, m = c.until_reply(rid)
        assert m.type == 0x0002, m
        rid = c.send(PIPES)
        _out, m = c.until_reply(rid)
        assert m.type == ERROR
        assert "stdio" in m.text("MESSAGE")
        assert c.value("1 + 1") == 2
    finally:
        b.stdin.close()
        b.wait(WAIT)
        b.stdout.close()


def test_a_bad_frame_on_the_pipes_ends_them_at_once(worker):
    """A dropped connection on pipes: its client reads the ERROR, then
    EOF, though the worker keeps the descriptors' numbers."""
    w = worker()
    sock, p = _upgrade(w)
    try:
        os.write(p.req, b"\xff" * 16)         # a frame of 4 GiB: too big
        m = p.recv()
        assert m is not None and m.type == ERROR, m
        assert p.recv() is None                # EOF: the pipe was cut
        # the worker serves the next client
        c2, m2 = w.attach(mode="w")
        try:
            assert m2.type != ERROR, m2
            assert c2.value("1 + 2") == 3
        finally:
            c2.close()
    finally:
        p.close()
        sock.close()


def test_a_client_that_closes_its_pipes_is_dropped(worker):
    w = worker()
    sock, p = _upgrade(w)
    p.value("1")
    before = len(os.listdir("/proc/%d/fd" % w.pid))
    p.close()
    sock.close()
    # the worker lets the connection go: its pipes and socket close
    wait_for(lambda: len(os.listdir("/proc/%d/fd" % w.pid)) <= before - 3,
             "the worker to close the connection's descriptors")
    c2, m2 = w.attach(mode="w")
    try:
        assert c2.value("2 + 2") == 4
    finally:
        c2.close()


# --- the Python client through a real server ------------------------------

def _sockets():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


@pytest.mark.parametrize("no_pipes", ["", "1"])
def test_open_goes_on_over_pipes_unless_told(srv, monkeypatch, no_pipes):
    monkeypatch.setenv("PYSHELF_NO_PIPES", no_pipes)
    before = _sockets()
    ws = srv.track(pyshelf.open("s", db=srv.db))
    try:
        ws["a"] = list(range(10))
        ws.remote_exec("s = sum(a)")
        assert ws["s"] == 45
        # over pipes the client keeps no socket; without, it keeps one
        assert _sockets() - before == (1 if no_pipes else 0)
    finally:
        ws.close()


def test_a_worker_killed_on_pipes_is_named(srv, tmp_path):
    """The worker's child (os.fork in shipped code) must not hold the
    client's pipes: the client sees the worker's death at once."""
    ws = srv.track(pyshelf.open("s", db=srv.db))
    try:
        ws["kept"] = 1
        ws.sync()
        ws.remote_exec("import os, time\n"
                       "pid = os.fork()\n"
                       "if pid == 0:\n"
                       "    time.sleep(120)\n"
                       "    os._exit(0)\n"
                       "child = pid")
        child = ws["child"]
        box = {}
        mark = str(tmp_path / "running")

        def call():
            try:
                ws.remote_exec("import time\nopen(%r, 'w').close()\n"
                               "time.sleep(600)" % mark)
            except BaseException as e:      # noqa: B902
                box["error"] = e
        t = threading.Thread(target=call, daemon=True)
        t.start()
        wait_for(lambda: os.path.exists(mark), "the call to run")
        worker_pid = ws.pid
        os.kill(worker_pid, signal.SIGKILL)
        t.join(WAIT)
        assert not t.is_alive(), "the client did not see the worker die"
        assert isinstance(box.get("error"), pyshelf.BackendDied), box
        assert "SIGKILL" in str(box["error"]) or "signal 9" in str(
            box["error"])
        assert ws["kept"] == 1
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finally:
        ws.close()


def test_an_attach_while_a_call_runs_goes_on_pipes(srv, tmp_path):
    """PIPES is answered by the thread that reads while code runs: a
    second client attaches, on pipes, while the first one's call runs."""
    a = srv.track(pyshelf.open("s", db=srv.db))
    mark = str(tmp_path / "running")
    box = {}

    def call():
        try:
            a.remote_exec("import time\nopen(%r, 'w').close()\n"
                          "while True:\n    time.sleep(0.02)\n" % mark)
        except BaseException as e:      # noqa: B902
            box["error"] = e
    t = threading.Thread(target=call, daemon=True)
    t.start()
    try:
        wait_for(lambda: os.path.exists(mark), "the call to run")
        before = _sockets()
        b = srv.track(pyshelf.open("s", db=srv.db, flag="w"))
        try:
            assert _sockets() == before          # b is on pipes
            assert any(c.state == "running" for c in b.calls())
            b.interrupt()
            t.join(WAIT)
            assert not t.is_alive()
            b["after"] = 1
            assert a["after"] == 1
        finally:
            b.close()
    finally:
        a.close()
