"""A call stuck in C that a second Ctrl-C stops waiting for: the worker is
restarted after the hard grace, and a request sent meanwhile (queued
behind the stuck call) runs on the restarted worker and succeeds.  It
does not take the abandoned call's WorkerRestarted; that call's fate is
in calls().  Real SIGINTs to a real client process."""

import ctypes
import os
import signal

import pytest

import pyshelf
from server_helpers import WAIT, child, srv, wait_for  # noqa: F401 (srv)

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
    ws.remote_exec("import itertools\nsum(itertools.repeat(1, 10**11))")
    print("call returned", flush=True)
except KeyboardInterrupt:
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
    p = child(srv, CLIENT, srv.db)
    assert _line(p) == "calling"
    watch = srv.track(pyshelf.open("s", db=srv.db, flag="w"))
    try:
        wait_for(lambda: any(c.state == "running" for c in watch.calls()),
                 "the call to run")
    finally:
        watch.close()
    # the first SIGINT sends an INTERRUPT, which C code never sees ...
    _sigint(p.pid)
    assert _line(p) == "sigint"
    wait_for(lambda: _waiting(p.pid), "the client to wait again")
    # ... the second stops waiting
    _sigint(p.pid)
    assert _line(p) == "sigint"
    assert _line(p) == "call KeyboardInterrupt"
    # its next request waits behind the stuck call; restart the worker
    assert _line(p) == "asking"
    wait_for(lambda: _waiting(p.pid), "the request behind the stuck call")
    h = srv.track(pyshelf.open("s", db=srv.db, flag="w"))
    try:
        h.interrupt(hard=True)
    finally:
        h.close()
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 0, out + err
    # the request queued behind the stuck call, and the next one
    lines = out.splitlines()
    assert lines[:2] == ["next 5", "next 5"], out + err
    # the abandoned call is in calls(), its fate told there ("lost"; or
    # "done" when the restart's SIGINT reached it first)
    assert lines[2] in ("state ['lost']", "state ['done']"), out + err
