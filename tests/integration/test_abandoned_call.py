"""A call stuck in C that a second Ctrl-C stops waiting for: the worker is
restarted after the hard grace, and a request sent meanwhile (queued
behind the stuck call) runs on the restarted worker and succeeds.  It
does not take the abandoned call's WorkerRestarted; that call's fate is
in calls().  Real SIGINTs to a real client process."""

import ctypes
import os
import queue
import signal
import threading
import time

import pytest

import pyshelf
from server_helpers import (STUCK, WAIT, child, srv,  # noqa: F401 (srv)
                            wait_for)

CLIENT = r"""
import os, signal, sys, pyshelf
def h(sig, frame):
    print("sigint", flush=True)
    raise KeyboardInterrupt
signal.signal(signal.SIGINT, h)
# a long hard grace: the test restarts the worker itself, once the
# call is abandoned (with the default 5 s, a loaded machine could see
# the restart come before the second Ctrl-C)
ws = pyshelf.open("s", db=sys.argv[1], create_db=True,
                  args=("--hard-grace", "600"))
ws["keep"] = 5
ws.sync()
print("calling", flush=True)
try:
    # stuck in C for good (STUCK): "stuck" is printed once even the
    # first Ctrl-C's interrupt can no longer end the call
    ws.remote_exec(sys.argv[2])
    print("call returned", flush=True)
except KeyboardInterrupt:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # more Ctrl-C: harmless
    print("call KeyboardInterrupt", flush=True)
signal.signal(signal.SIGINT, signal.SIG_IGN)
cid = ws.last_call_id
print("asking", flush=True)
for what in ("keep", "keep"):
    try:
        print("next", ws[what], flush=True)
    except BaseException as e:
        print("next", type(e).__name__, str(e).replace("\n", " "), flush=True)
ws.ping()
print("state", [c.state for c in ws.calls() if c.id == cid], flush=True)
ws.close()
"""


# read, poll, ppoll: the client waits for the reply
WAITS = {"x86_64": {0, 7, 271}, "aarch64": {63, 73}}[os.uname().machine]
LIBC = ctypes.CDLL(None, use_errno=True)


def _sigint(pid):
    """A real SIGINT to pid's main thread (tgkill), the one that runs
    Python's handlers: kill() may hand it to another thread, which
    leaves the main thread asleep in its read() until a tick."""
    assert LIBC.tgkill(pid, pid, signal.SIGINT) == 0, ctypes.get_errno()


def _waiting(pid):
    """Whether pid's main thread sleeps in read()/poll(): in the client's
    wait, so a Python signal handler that ran before has returned (a
    SIGINT sent while it runs would run the handler again inside it, and
    the client would count one Ctrl-C, not two)."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            nr = f.read().split()[0]
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return nr.isdigit() and int(nr) in WAITS and st == "S"


def _line(p):
    line = p.stdout.readline()
    assert line, p.stderr.read()
    return line.strip()


@pytest.mark.parametrize("no_pipes", ["", "1"])
def test_a_request_after_an_abandoned_call_runs(srv, monkeypatch, no_pipes):
    monkeypatch.setenv("PYSHELF_NO_PIPES", no_pipes)
    p = child(srv, CLIENT, srv.db, STUCK)
    assert _line(p) == "calling"
    assert _line(p) == "stuck"
    watch = srv.track(pyshelf.open("s", db=srv.db, flag="w"))
    try:
        wait_for(lambda: any(c.state == "running" for c in watch.calls()),
                 "the call to run")
    finally:
        watch.close()
    # the client's lines, read by a thread: waits with a deadline
    q = queue.Queue()
    reader = threading.Thread(target=lambda: [q.put(ln.strip())
                                              for ln in p.stdout], daemon=True)
    reader.start()

    def line(timeout=WAIT):
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line from the client in %d s" % timeout)

    # the first SIGINT sends an INTERRUPT, which C code never sees ...
    _sigint(p.pid)
    assert line() == "sigint"
    # ... a second stops waiting.  A SIGINT that lands while the handler
    # of the one before still runs is counted with it (one Ctrl-C, as
    # Python sees it): Ctrl-C again until the client stops waiting.  Every
    # one after that is ignored (the client sets SIG_IGN).
    deadline = time.time() + WAIT
    got = None
    while got != "call KeyboardInterrupt":
        assert time.time() < deadline, "the client never stopped waiting"
        assert p.poll() is None, p.stderr.read()
        if got in (None, "") or _waiting(p.pid):
            _sigint(p.pid)      # (5 s of silence: again, whatever it does)
        try:
            got = q.get(timeout=5)
        except queue.Empty:
            got = ""
        assert got in ("sigint", "call KeyboardInterrupt", ""), got
    # its next request waits behind the stuck call; restart the worker
    assert line() == "asking"
    # best effort: restarted before the request is read, it is served by
    # the new worker all the same (then this run tests less, not wrongly)
    end = time.time() + 10
    while not _waiting(p.pid) and time.time() < end:
        time.sleep(0.02)
    h = srv.track(pyshelf.open("s", db=srv.db, flag="w"))
    try:
        h.interrupt(hard=True)
    finally:
        h.close()
    assert p.wait(WAIT) == 0, p.stderr.read()
    reader.join(WAIT)
    lines = []
    while not q.empty():
        lines.append(q.get())
    out = "\n".join(lines) + "\n" + p.stderr.read()
    # the request queued behind the stuck call, and the next one
    assert lines[:2] == ["next 5", "next 5"], out
    # the abandoned call is in calls(), its fate told there ("lost"; or
    # "done" when the restart's SIGINT reached it first)
    assert lines[2] in ("state ['lost']", "state ['done']"), out
