"""The Python client against a real `pyshelfd --worker`, with a stand-in
supervisor: a thread that answers HELLO with WELCOME and hands each
connection and its ATTACH frame to the worker over CTL_CONN (what
pyshelfd --server does; worker_wire.Worker is the worker's side).  So the
client's half of server mode is tested on its own: pyshelf.connect(), call
ids and their re-send, calls() and result() with the replay, the hard
interrupt, the reconnect after a broken connection, and BackendDied
naming the signal of a dead worker."""
import io
import os
import socket
import struct
import threading

import pytest

import pyshelf
from pyshelf import DirectValue
import worker_wire as ww


def _read_frame(s):
    buf = b""
    while len(buf) < 16:
        d = s.recv(16 - len(buf))
        if not d:
            return None
        buf += d
    n = struct.unpack(">I", buf[:4])[0]
    while len(buf) < 16 + n:
        d = s.recv(16 + n - len(buf))
        if not d:
            return None
        buf += d
    return buf


class _Supervisor:
    """Accepts clients on path; the next attach may carry a death."""

    def __init__(self, path, worker):
        self.worker = worker
        self.death = None          # (signal, message) for the next attach
        self.attaches = 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            hello = _read_frame(c)
            rid = struct.unpack(">Q", hello[8:16])[0]
            c.sendall(ww.frame(0x0002, rid, [
                ("VERSION", 3), ("NAME", "stand-in"), ("PID", os.getpid()),
                ("MAX_FRAME", 1 << 26)]))
            attach = _read_frame(c)
            cf = [("DATA", attach), ("PID", os.getpid())]
            if self.death is not None:
                cf += [("SIGNAL", self.death[0]), ("MESSAGE", self.death[1])]
                self.death = None
            # counted before the hand-over: the worker's ATTACHED may
            # reach the client (and the test read this) before this
            # thread runs again
            self.attaches += 1
            socket.send_fds(self.worker.ctl, [ww.frame(ww.CTL_CONN, 0, cf)],
                            [c.fileno()])
            c.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def sup(tmp_path, backend, monkeypatch):
    monkeypatch.setattr(ww, "PYSHELFD", backend)
    w = ww.Worker(str(tmp_path / "db"), "s", mode="c")
    assert w.ctl_wait(ww.CTL_READY) is not None, w.stop()
    path = str(tmp_path / "sock")
    s = _Supervisor(path, w)
    s.path = path
    try:
        yield s
    finally:
        s.close()
        w.stop()


def test_connect_attaches_to_the_worker(sup):
    with pyshelf.connect("s", socket=sup.path) as ws:
        assert ws.pid == sup.worker.pid
        assert ws.server_pid == os.getpid()
        assert ws.session == "s" and ws.created
        ws["x"] = [1, 2]
        assert ws["x"] == [1, 2]
    assert ws.closed
    assert sup.worker.proc.poll() is None     # the session lives on
    with pyshelf.connect("s", socket=sup.path, flag="w") as ws:
        assert ws["x"] == [1, 2]
        assert not ws.created


def test_calls_and_result_replay(sup):
    def slow(n):
        import time
        for i in range(n):
            print("tick", i, flush=True)
            time.sleep(0.05)
        return DirectValue(n * 2)

    with pyshelf.connect("s", socket=sup.path) as ws:
        out = io.StringIO()
        assert ws.remote_exec(slow, 3, stdout=out).value == 6
        cid = ws.last_call_id
        assert len(cid) == 32 and out.getvalue().startswith("tick 0\n")
        (call,) = [c for c in ws.calls() if c.id == cid]
        assert isinstance(call, pyshelf.Call)
        assert call.state == "done" and call.summary == "def slow(n):"
        assert call.ended >= call.started > 0
        assert call.output_bytes == len(out.getvalue())
    with pyshelf.connect("s", socket=sup.path, flag="w") as ws:
        replay = io.StringIO()
        r = ws.result(cid, stdout=replay)
        assert isinstance(r, DirectValue) and r.value == 6
        assert replay.getvalue() == out.getvalue()
        with pytest.raises(KeyError):
            ws.result("00" * 16)


def test_a_resent_call_runs_once(sup):
    src = ("def bump():\n    global n\n    n = globals().get('n', 0) + 1\n"
           "    return DirectValue(n)\n")
    with pyshelf.connect("s", socket=sup.path) as ws:
        cid = os.urandom(16)
        assert ws._conn.exec(src, "bump", (), False, 0, None, cid)[5] == 1
        assert ws._conn.exec(src, "bump", (), False, 0, None, cid)[5] == 1
        assert ws._conn.last_call_id == cid
        assert ws["n"] == 1
        assert ws._conn.exec(src, "bump", (), False, 0, None)[5] == 2
        assert ws._conn.last_call_id not in (None, cid)


def test_hard_interrupt_raises_worker_restarted(sup):
    with pyshelf.connect("s", socket=sup.path) as ws:
        ws["kept"] = "yes"
        box = {}

        def run():
            try:
                box["r"] = ws.remote_exec(
                    "import itertools\nsum(itertools.repeat(1, 10**11))")
            except BaseException as e:     # noqa: B902 (what the test reads)
                box["e"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        with pyshelf.connect("s", socket=sup.path, flag="w") as watch:
            ww.wait_for(lambda: ws.last_call_id and any(
                c.id == ws.last_call_id and c.state == "running"
                for c in watch.calls()), "the call to run")
        ws.interrupt(hard=True)
        t.join(ww.WAIT_S)
        assert not t.is_alive()
        assert isinstance(box.get("e"), pyshelf.WorkerRestarted), box
        assert "restarted" in str(box["e"])
        assert ws["kept"] == "yes"


def test_a_broken_connection_is_attached_again(sup):
    with pyshelf.connect("s", socket=sup.path) as ws:
        ws["x"] = 1
        before = sup.attaches
        # what a broken connection leaves: the next request attaches anew
        ws._conn.broken = True
        assert ws["x"] == 1
        assert sup.attaches == before + 1
        # ... and when the new attach says the worker died, a request
        # that was not in flight (the last one was answered) is sent to
        # the new worker, with a warning that names the signal
        sup.death = (9, "the session's previous worker (pid 1) killed by "
                        "signal 9 (SIGKILL)")
        ws._conn.broken = True
        with pytest.warns(pyshelf.WorkerDiedWarning) as got:
            ws.remote_exec("x += 1")
        assert "SIGKILL" in str(got[0].message)
        assert ws["x"] == 2
