"""A backend that dies while it writes a reply: the client reads part of
a frame, then end of file.  That is a dead peer, as a death between
frames is (BackendDied; through a server, the next request gets a new
worker), not a protocol error that leaves the Workspace dead for good.

Deterministic: the shipped code stops its own client (SIGSTOP) before
it returns a value larger than the connection holds, so the worker
blocks in its write() with part of the reply in the pipe or socket; the
test waits for that, SIGKILLs the worker and lets the client go on."""

import os
import signal
import types

import pytest

from server_helpers import WAIT, child, srv, wait_for  # noqa: F401 (srv)
from test_server_pipes import _upgrade
from worker_wire import ERROR, EXEC, frame, worker  # noqa: F401 (worker)

# write, writev, sendto, sendmsg; and poll, ppoll (a non-blocking socket
# waits for POLLOUT in poll() on its one descriptor, with no timeout)
WRITES, POLLS = {"x86_64": ({1, 20, 44, 46}, {7, 271}),
                 "aarch64": ({64, 66, 206, 211}, {73})}[os.uname().machine]


CLIENT = r"""
import os, sys, pyshelf
how, db, size, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if how == "server":
    ws = pyshelf.open("s", db=db, create_db=True)
else:
    ws = pyshelf.spawn(db=db, session="s", create_db=True,
                       backend=os.environ["PYSHELFD"])
ws["keep"] = 5
ws.sync()
print("worker", ws.pid, flush=True)
value = {"bytes": "b'a' * %d" % size,
         "oob": "pickle.PickleBuffer(bytearray(%d))" % size}[shape]
code = ("import os, pickle, signal\n"
        "os.kill(%d, signal.SIGSTOP)\n"
        "DirectValue(%s)\n" % (os.getpid(), value))
try:
    r = ws.remote_exec(code)
    print("call ok", len(r.value), flush=True)
except BaseException as e:
    print("call", type(e).__name__, str(e).replace("\n", " "), flush=True)
try:
    print("next", ws["keep"], ws.pid, flush=True)
except BaseException as e:
    print("next", type(e).__name__, str(e).replace("\n", " "), flush=True)
"""


def _state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _blocked_in_write(pid):
    """Whether a thread of pid sleeps in a write-family system call, or
    waits with no timeout for one descriptor to take more."""
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/syscall" % (pid, t)) as f:
                sc = f.read().split()
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                st = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if st != "S" or not sc or not sc[0].isdigit():
            continue
        nr = int(sc[0])
        if nr in WRITES:
            return True
        # poll(fds, 1, -1) or ppoll(fds, 1, NULL, ...)
        if nr in POLLS and int(sc[2], 16) == 1 and (
                int(sc[3], 16) & 0xffffffff == 0xffffffff if nr == 7
                else int(sc[3], 16) == 0):
            return True
    return False


def _kill_mid_reply(p):
    """Wait for the client p to stop itself and its worker to block in the
    reply's write; SIGKILL the worker, let p go on; p's output lines."""
    line = p.stdout.readline()
    assert line.startswith("worker "), line + p.stderr.read()
    worker = int(line.split()[1])
    wait_for(lambda: _state(p.pid) == "T", "the client to stop itself")
    wait_for(lambda: _blocked_in_write(worker),
             "the worker to block writing the reply")
    os.kill(worker, signal.SIGKILL)
    os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 0, out + err
    return worker, out.splitlines()


@pytest.mark.parametrize("shape,size", [("bytes", 64 << 20),
                                        ("oob", 64 << 20),
                                        ("bytes", 4 << 20)])
@pytest.mark.parametrize("no_pipes", ["", "1"])
def test_a_worker_killed_mid_reply_is_a_death(srv, monkeypatch, no_pipes,
                                              shape, size):
    monkeypatch.setenv("PYSHELF_NO_PIPES", no_pipes)
    p = child(srv, CLIENT, "server", srv.db, size, shape)
    worker, lines = _kill_mid_reply(p)
    call, nxt = lines
    assert call.startswith("call BackendDied "), lines
    assert "malformed" not in call
    # the next request runs on a new worker, which has the checkpoint
    assert nxt.startswith("next 5 "), lines
    assert int(nxt.split()[2]) != worker


@pytest.mark.parametrize("shape,size", [("bytes", 64 << 20),
                                        ("oob", 64 << 20)])
def test_a_stdio_backend_killed_mid_reply_is_named(tmp_path, monkeypatch,
                                                   backend, shape, size):
    monkeypatch.setenv("PYSHELFD", backend)
    p = child(types.SimpleNamespace(children=[]), CLIENT, "stdio", str(tmp_path / "db"), size, shape)
    try:
        _worker, lines = _kill_mid_reply(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    call, nxt = lines
    assert call.startswith("call BackendDied "), lines
    assert "SIGKILL" in call or "signal 9" in call, lines
    # a private backend is not started again: the death is said again
    assert nxt.startswith("next BackendDied "), lines


# --- the other way: a client that dies in the middle of a request -------

def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@pytest.mark.parametrize("on_pipes", [False, True])
def test_a_client_dead_mid_request_is_dropped_not_answered(worker, on_pipes):
    """Half an EXEC, then the client is gone: the worker drops the
    connection as at a frame boundary (no ERROR MALFORMED, no log of a
    malformed frame) and serves the next client."""
    w = worker()
    if on_pipes:
        sock, c = _upgrade(w)
    else:
        sock, m = w.attach()
        assert m.type != ERROR, m
        c = sock
    assert c.value("1") == 1
    before = _fds(w.pid)
    data = frame(EXEC, 99, [("CODE", "x = 1\n" * 1000)])
    c._write(data[:len(data) // 2])
    c.close()
    sock.close()
    wait_for(lambda: _fds(w.pid) < before,
             "the worker to drop the connection")
    c2, m2 = w.attach(mode="w")
    try:
        assert c2.value("2 + 2") == 4
    finally:
        c2.close()
    err = w.stop()
    w.proc.stderr = None    # read and closed: teardown's stop() skips it
    assert b"malformed" not in err, err
