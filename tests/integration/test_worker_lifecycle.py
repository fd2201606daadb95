"""pyshelfd --worker: idle exit and resume, the hard interrupt (re-exec,
same pid, the session from its last checkpoint).  The test is the
supervisor: worker_wire.py."""

import os
import pickle

import pytest

from worker_wire import (Worker, worker, ERR, RESULT, ERROR, OK, DETACH,
                         INTERRUPT,
                         OUTPUT,
                         CTL_IDLE, CTL_IDLE_OK, CTL_READY, CTL_STATE,
                         call_state, calls, wait_for)
from server_helpers import STUCK



def detach(c):
    rid = c.send(DETACH)
    _, m = c.until_reply(rid)
    assert m.type == OK
    c.close()


def test_idle_worker_asks_then_exits_and_a_new_one_resumes(worker):
    w = worker(idle_exit=1)
    assert w.ctl_wait(CTL_READY).get("PID") == w.pid
    a, _ = w.attach()
    assert a.value("kept = [1, 2, 3]\nlen(kept)") == 3
    detach(a)
    # idle: it asks, and waits for the answer
    assert w.ctl_wait(CTL_IDLE) is not None
    assert w.proc.poll() is None
    w.ctl_send(CTL_IDLE_OK)
    assert w.wait() == 0
    w2 = worker(mode="w")
    b, m = w2.attach(mode="w")
    assert m.get("CREATED") == 0
    assert b.value("kept") == [1, 2, 3]


def test_idle_worker_without_a_supervisor_exits(worker):
    w = worker(idle_exit=1)
    a, _ = w.attach()
    assert a.value("z = 'zz'\nz") == "zz"
    w.ctl.close()                  # the supervisor is gone
    assert a.value("z * 2") == "zzzz"   # it serves on without it
    detach(a)
    assert w.wait() == 0
    w2 = worker(mode="w")
    b, _ = w2.attach(mode="w")
    assert b.value("z") == "zz"


def test_no_idle_exit_while_a_volatile_entry_lives(worker):
    w = worker(idle_exit=1)
    a, _ = w.attach()
    assert a.value("g = (i for i in range(3))\nnext(g)") == 0
    detach(a)
    # it would have asked long ago; a client that comes back finds the
    # generator where it was
    b, _ = w.attach()
    assert b.value("next(g)") == 1
    assert [m for m in w.ctl_msgs if m.type == CTL_IDLE] == []


def _until_stuck(c):
    """Read c's OUTPUT until STUCK said it is stuck (its signal blocked).
    (CTL_STATE names the running call only while no client is attached.)"""
    got = b""
    while b"stuck\n" not in got:   # output may come in pieces
        m = c.recv()
        assert m.type == OUTPUT, m
        got += m.get("DATA")


def hard_restart(w, a, trigger):
    """Run STUCK on a, trigger the restart, check the reply."""
    cid = os.urandom(16)
    rid = a.exec(STUCK, call_id=cid, **trigger.get("exec", {}))
    _until_stuck(a)
    if trigger.get("hard"):
        a.send(INTERRUPT, [("HARD", 1)], rid=rid)
    _, m = a.until_reply(rid)
    assert m.type == ERROR, m
    assert m.get("ERRCODE") == ERR["WORKER_RESTARTED"]
    return cid, m.text("MESSAGE")


@pytest.mark.parametrize("how", ["hard", "timeout"])
def test_hard_interrupt_restarts_the_worker_with_the_same_pid(worker, how):
    if how == "hard":
        w = worker(hard_grace=600)     # only HARD=1 restarts it
        trigger = {"hard": True}
    else:
        w = worker(hard_grace=1)
        trigger = {"exec": {"timeout_ms": 200}}
    a, _ = w.attach()
    b, _ = w.attach()
    assert a.value("x = 5\nvol = (i for i in range(9))\nx") == 5
    cid, msg = hard_restart(w, a, trigger)
    assert "restarted" in msg and "vol" in msg and "checkpoint" in msg
    # the same process serves the next request on the same connections,
    # from the last checkpoint: x is there, the generator is not
    ready = w.ctl_wait(CTL_READY)
    assert ready.get("PID") == w.pid and w.proc.poll() is None
    assert a.value("x + 1") == 6
    out, m = b.run("vol")
    assert m.type == RESULT and m.get("EXC_TYPE") == b"VolatileEntryError"
    # the lost call is journaled as such
    assert call_state(b, cid) == "lost"


def test_requests_right_behind_a_hard_interrupt_are_served(worker):
    """Frames sent in the same write as INTERRUPT{HARD=1} (a PING, an
    EXEC, half of a third frame) were read by the old image and lost in
    the exec; they are carried over and served by the new one."""
    from worker_wire import PING, PONG, EXEC, frame
    w = worker(hard_grace=600)
    a, _ = w.attach()
    assert a.value("x = 5\nx") == 5
    cid = os.urandom(16)
    rid = a.exec(STUCK, call_id=cid)
    _until_stuck(a)
    third = frame(PING, 9003)
    a.sock.sendall(frame(INTERRUPT, rid, [("HARD", 1)]) +
                   frame(PING, 9001) +
                   frame(EXEC, 9002, [("CODE", b"x + 1"), ("WANT_VALUE", 1)])
                   + third[:7])
    got = {}
    while len(got) < 3:
        m = a.recv()
        if m.id in (rid, 9001, 9002):
            got[m.id] = m
    assert got[rid].type == ERROR
    assert got[rid].get("ERRCODE") == ERR["WORKER_RESTARTED"]
    assert got[9001].type == PONG
    assert got[9002].type == RESULT
    assert pickle.loads(got[9002].get("VALUE")) == 6
    a.sock.sendall(third[7:])       # the rest of the half-sent frame
    m = a.recv()
    assert m.type == PONG and m.id == 9003


def test_stuck_code_with_a_timeout_stops_after_its_client_left(worker):
    # no orphan spins at 100% CPU: the timeout, then the hard grace,
    # restart the worker even with nobody attached
    w = worker(hard_grace=1)
    a, _ = w.attach()
    assert a.value("kept = 'k'\nkept") == "k"
    cid = os.urandom(16)
    a.exec(STUCK, call_id=cid, timeout_ms=300)
    _until_stuck(a)
    a.close()
    # with no client attached, CTL_STATE names the running call
    assert wait_for(lambda: cid.hex() in w.ctl_wait(CTL_STATE).text("DATA"),
                    "the call running")
    assert w.ctl_wait(CTL_READY).get("PID") == w.pid   # the new image
    b, _ = w.attach()
    assert call_state(b, cid) == "lost"
    assert b.value("kept") == "k"


def test_stdio_backend_whose_client_left_does_not_spin_on(tmp_path):
    # stdio mode: the one client leaves while its code is stuck in C; the
    # stop cannot take effect, so after --hard-grace the process exits
    # (the session keeps its last checkpoint) instead of spinning
    import subprocess
    from worker_wire import PYSHELFD, frame, HELLO, EXEC, Client, WELCOME
    import socket
    ours, theirs = socket.socketpair()
    p = subprocess.Popen([PYSHELFD, "--stdio", "--db", str(tmp_path / "db"),
                          "--session", "s", "--create", "--hard-grace", "1"],
                         stdin=theirs, stdout=theirs,
                         stderr=subprocess.PIPE)
    theirs.close()
    c = Client(ours)
    c.send(HELLO, [("VERSION", 3)])
    assert c.recv().type == WELCOME
    assert c.value("kept = 'k'\nkept") == "k"
    c.exec(STUCK)
    got = b""
    while b"stuck\n" not in got:   # output may come in pieces
        m = c.recv()
        assert m.type == OUTPUT, m
        got += m.get("DATA")
    ours.shutdown(socket.SHUT_WR)   # the client is gone
    ours.close()
    assert p.wait(60) == 1
    assert b"did not stop within --hard-grace" in p.stderr.read()
    p.stderr.close()
    w = Worker(str(tmp_path / "db"), "s", mode="w")
    try:
        b, _ = w.attach(mode="w")
        assert b.value("kept") == "k"
    finally:
        w.stop()
