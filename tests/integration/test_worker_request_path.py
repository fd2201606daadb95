"""The worker's request path (exec/worker-reader.c): the main thread reads
the connections itself while no code runs, and the reader thread takes
them over when code runs longer than WORKER_TAKEOVER_MS, so that PING and
INTERRUPT are answered.  These drive raw frames at a stdio backend (over a
socketpair) and at a server-mode worker (worker_wire.py, the test as its
supervisor), in both states and across the moves between them: frames
split byte by byte, half a frame when the owner changes, a malformed frame
in either state, two clients sending at once, DETACH while code runs.

A PONG that comes while code still runs is the proof that the reader
thread owns the connections at that moment (the main thread is in the
code); before any such PONG, the main thread may still own them."""

import os
import pickle
import socket
import struct
import subprocess
import threading
import time

import pytest

from worker_wire import (worker, PYSHELFD, Client, frame, wait_for, ERR,
                         HELLO, WELCOME, EXEC, RESULT, OUTPUT, INTERRUPT,
                         PING, PONG, ERROR, OK, DETACH, CALL_RESULT)

E_MALFORMED = 1
# a frame whose body (3 bytes) is too short for its one field's header
MALFORMED = struct.pack(">IHHQ", 3, EXEC, 0, 999) + b"\x06\x00\x00"


def waiting(flag):
    """Code that says 'started' and runs until flag exists."""
    return ("import os, time\n"
            "print('started', flush=True)\n"
            "while not os.path.exists(%r):\n"
            "    time.sleep(0.01)\n"
            "'done'\n" % str(flag))


def until_started(c, rid):
    """Read c's frames until rid's code printed 'started'."""
    got = b""
    while b"started\n" not in got:
        m = c.recv()
        assert m is not None and m.type == OUTPUT and m.id == rid, m
        got += m.get("DATA")


def ping(c):
    """PING, and its PONG (the next frame on c)."""
    rid = c.send(PING)
    m = c.recv()
    assert m is not None and m.type == PONG and m.id == rid, m


def dribble(c, data):
    """Send data one byte per write.  The pause only makes it likely that
    the worker reads the bytes apart; nothing waits on it."""
    for i in range(len(data)):
        c.sock.sendall(data[i:i + 1])
        time.sleep(0.001)


class Stdio:
    """`pyshelfd --stdio` on our end of a socketpair, past HELLO."""

    def __init__(self, tmp_path):
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [PYSHELFD, "--stdio", "--db", str(tmp_path / "db"),
             "--session", "s", "--create"],
            stdin=theirs, stdout=theirs, stderr=subprocess.PIPE)
        theirs.close()
        self.c = Client(ours)
        self.c.send(HELLO, [("VERSION", 3)])
        m = self.c.recv()
        assert m is not None and m.type == WELCOME, m

    def stop(self):
        self.c.close()
        try:
            rc = self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stderr.close()
        return rc


@pytest.fixture
def stdio(tmp_path):
    s = Stdio(tmp_path)
    yield s
    s.stop()


@pytest.fixture(params=["stdio", "server"])
def conn(request, tmp_path, worker):
    """One client connection, to a stdio backend or a server-mode worker."""
    if request.param == "stdio":
        s = Stdio(tmp_path)
        yield s.c
        s.stop()
    else:
        c, _ = worker().attach()
        yield c


def test_requests_and_pings_while_idle(conn):
    # the main thread reads and serves these itself
    for i in range(50):
        ping(conn)
        assert conn.value("%d * 2" % i) == 2 * i
    # pipelined in one write: served in order, one reply each; the PING
    # is answered as soon as it is read, maybe before the EXECs' replies
    data = b"".join(frame(EXEC, 500 + i, [("CODE", "%d + 1" % i),
                                          ("WANT_VALUE", 1)])
                    for i in range(30)) + frame(PING, 600)
    conn.sock.sendall(data)
    results, pongs = [], 0
    while len(results) < 30 or not pongs:
        m = conn.recv()
        assert m is not None
        if m.type == PONG:
            assert m.id == 600
            pongs += 1
        else:
            assert m.type == RESULT and m.id == 500 + len(results), m
            results.append(pickle.loads(m.get("VALUE")))
    assert results == list(range(1, 31)) and pongs == 1


def test_ping_while_code_runs(conn, tmp_path):
    flag = tmp_path / "go"
    rid = conn.exec(waiting(flag))
    until_started(conn, rid)
    for _ in range(3):
        ping(conn)               # answered by the reader, code still runs
    flag.write_text("")
    _, m = conn.until_reply(rid)
    assert m.type == RESULT and pickle.loads(m.get("VALUE")) == "done"
    ping(conn)                   # and by the main thread again


@pytest.mark.parametrize("after_pong", [False, True])
def test_interrupt_a_call(conn, tmp_path, after_pong):
    # False: the INTERRUPT comes as soon as the code runs, maybe before
    # the reader took the connection over (it waits for the takeover);
    # True: after a PONG, so the reader surely reads it
    flag = tmp_path / "never"
    rid = conn.exec(waiting(flag))
    until_started(conn, rid)
    if after_pong:
        ping(conn)
    conn.send(INTERRUPT, rid=rid)
    _, m = conn.until_reply(rid)
    assert m.type == RESULT and m.get("EXC_TYPE") == b"KeyboardInterrupt"
    # the connection goes on, served by the main thread again
    assert conn.value("'after'") == "after"
    ping(conn)


def test_frames_split_byte_by_byte_in_either_state(conn, tmp_path):
    # idle: the main thread puts the pieces together
    dribble(conn, frame(EXEC, 300, [("CODE", "6 * 7"), ("WANT_VALUE", 1)]))
    _, m = conn.until_reply(300)
    assert m.type == RESULT and pickle.loads(m.get("VALUE")) == 42
    # while code runs: the reader does
    flag = tmp_path / "go"
    rid = conn.exec(waiting(flag))
    until_started(conn, rid)
    ping(conn)
    dribble(conn, frame(PING, 301))
    m = conn.recv()
    assert m.type == PONG and m.id == 301
    flag.write_text("")
    _, m = conn.until_reply(rid)
    assert m.type == RESULT


def test_half_a_frame_when_the_reader_gives_the_connection_back(conn,
                                                                tmp_path):
    flag = tmp_path / "go"
    rid = conn.exec(waiting(flag))
    until_started(conn, rid)
    ping(conn)                           # the reader owns it now
    half = frame(PING, 400)
    dribble(conn, half[:7])              # it reads these
    flag.write_text("")
    _, m = conn.until_reply(rid)         # main idle: it takes it back
    assert m.type == RESULT
    dribble(conn, half[7:])              # main reads the rest
    m = conn.recv()
    assert m.type == PONG and m.id == 400
    assert conn.value("'whole'") == "whole"


def test_half_a_frame_when_the_reader_takes_the_connection(conn, tmp_path):
    flag = tmp_path / "go"
    half = frame(PING, 410)
    # one write: main reads the EXEC and the PING's first bytes, runs
    # the EXEC; the reader takes over with the half frame in the buffer
    conn.sock.sendall(frame(EXEC, 411, [("CODE", waiting(flag)),
                                        ("WANT_VALUE", 1)]) + half[:9])
    until_started(conn, 411)
    dribble(conn, half[9:])
    m = conn.recv()                      # while the code still runs
    assert m.type == PONG and m.id == 410
    flag.write_text("")
    _, m = conn.until_reply(411)
    assert m.type == RESULT and pickle.loads(m.get("VALUE")) == "done"


def _malformed_gets_error_and_eof(c):
    c.sock.sendall(MALFORMED)
    m = c.recv()
    assert m is not None and m.type == ERROR, m
    assert m.get("ERRCODE") == E_MALFORMED
    assert c.recv() is None              # and the connection ends


def test_malformed_frame_while_idle_stdio(stdio):
    _malformed_gets_error_and_eof(stdio.c)
    assert stdio.proc.wait(60) == 0      # its one client is gone


def test_malformed_frame_while_code_runs_stdio(stdio, tmp_path):
    rid = stdio.c.exec(waiting(tmp_path / "never"))
    until_started(stdio.c, rid)
    ping(stdio.c)
    c = stdio.c
    c.sock.sendall(MALFORMED)
    while True:                          # the call's output may come first
        m = c.recv()
        assert m is not None, "closed before the ERROR"
        if m.type == ERROR:
            break
    assert m.get("ERRCODE") == E_MALFORMED
    # the client is gone: its code is stopped, the backend ends
    rc = stdio.proc.wait(60)
    assert rc >= 0                       # never by a signal


@pytest.mark.parametrize("running", [False, True])
def test_malformed_frame_server_ends_that_connection_alone(worker, tmp_path,
                                                           running):
    w = worker()
    a, _ = w.attach()
    b, _ = w.attach()
    flag = tmp_path / "go"
    if running:
        rid = a.exec(waiting(flag))
        until_started(a, rid)
        ping(b)
    _malformed_gets_error_and_eof(b)
    if running:
        ping(a)
        flag.write_text("")
        _, m = a.until_reply(rid)
        assert m.type == RESULT and pickle.loads(m.get("VALUE")) == "done"
    assert a.value("'a lives'") == "a lives"


def test_two_clients_of_one_session_send_at_once(worker, tmp_path):
    w = worker()
    a, _ = w.attach()
    b, _ = w.attach()
    assert a.value("n = 0\nn") == 0
    flag = tmp_path / "go"
    # a's long call first: b's requests queue behind it, read by the
    # reader; then both pour requests in at once, read by either thread
    rid = a.exec(waiting(flag))
    until_started(a, rid)
    b_first = [b.exec("n += 1\nn") for _ in range(10)]
    ping(b)
    flag.write_text("")
    _, m = a.until_reply(rid)
    assert m.type == RESULT
    per = 40

    def pour(c, base):
        c.sock.sendall(b"".join(
            frame(EXEC, base + i, [("CODE", "n += 1\nn"), ("WANT_VALUE", 1)])
            for i in range(per)))
    ts = [threading.Thread(target=pour, args=(c, base))
          for c, base in ((a, 10000), (b, 20000))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    got = []
    for r in b_first:
        _, m = b.until_reply(r)
        got.append(pickle.loads(m.get("VALUE")))
    for c, base in ((a, 10000), (b, 20000)):
        mine = []
        for i in range(per):             # each reply, in its order
            _, m = c.until_reply(base + i)
            assert m.type == RESULT, m
            mine.append(pickle.loads(m.get("VALUE")))
        assert mine == sorted(mine)
        got += mine
    # one at a time, none lost, none run twice
    assert sorted(got) == list(range(1, 10 + 2 * per + 1))


@pytest.mark.parametrize("pipelined", [False, True])
def test_detach_while_code_runs(worker, tmp_path, pipelined):
    w = worker()
    a, _ = w.attach()
    flag = tmp_path / "go"
    cid = os.urandom(16)
    fields = [("CODE", waiting(flag) + "result = 'kept'\n6 * 7\n"),
              ("WANT_VALUE", 1), ("CALL_ID", cid)]
    if pipelined:
        # EXEC and DETACH in one write, read together by the main thread
        a.sock.sendall(frame(EXEC, 50, fields) + frame(DETACH, 51))
    else:
        a.sock.sendall(frame(EXEC, 50, fields))
        until_started(a, 50)
        a.send(DETACH, rid=51)
    while True:
        m = a.recv()
        assert m is not None, "closed before DETACH's OK"
        if m.id == 51:
            break
    assert m.type == OK
    assert a.recv() is None              # the connection ends
    b, _ = w.attach()
    ping(b)
    flag.write_text("")
    rid = b.send(CALL_RESULT, [("CALL_ID", cid), ("WAIT", 1)])
    _, m = b.until_reply(rid)
    assert m.type == RESULT and pickle.loads(m.get("VALUE")) == 42
    assert b.value("result") == "kept"
