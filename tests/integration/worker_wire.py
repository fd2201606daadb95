"""Drive `pyshelfd --worker` the way the supervisor does, with no
supervisor: a SOCK_SEQPACKET socketpair as its control channel (--control-fd,
pass_fds), client sockets handed over in CTL_CONN frames (socket.send_fds),
and the protocol spoken over each client socket with raw frames
(docs/PROTOCOL.md: a 16-byte header, then tag | u32 length | bytes fields).
"""

import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import time

import pytest

PYSHELFD = os.environ.get("PYSHELFD", "pyshelfd")

# message types
HELLO, WELCOME, ATTACH, ATTACHED = 0x0001, 0x0002, 0x0010, 0x0011
EXEC, RESULT, OUTPUT, INTERRUPT = 0x0100, 0x0101, 0x0102, 0x0103
CALLS, CALL_RESULT = 0x0105, 0x0106
GET, SET, KEYS = 0x0110, 0x0111, 0x0113
SYNC, DETACH, CLOSE, PING, PONG = 0x0120, 0x0121, 0x0122, 0x0124, 0x0125
OK, LISTING, ERROR = 0x01F0, 0x01F1, 0x7F00
CTL_CONN, CTL_READY, CTL_STATE, CTL_IDLE, CTL_IDLE_OK = (
    0x0E01, 0x0E02, 0x0E03, 0x0E04, 0x0E05)

# field tags
T = dict(VERSION=1, NAME=2, SESSION_ID=3, CREATE=5, CODE=6, FUNC=7,
         ARG_HANDLE=8, ARG_PICKLE=9, WANT_VALUE=10, TIMEOUT_MS=11, KIND=12, HANDLE=13,
         TYPE_NAME=14, EXC_TYPE=15, MESSAGE=16, VALUE=17, STREAM=18, DATA=19,
         ERRCODE=20, KEY=21, PID=23, MAX_FRAME=24, SESSION=25, CREATED=26,
         LEASE_MS=29, EXPIRES_MS=30, ENDED_MS=31, REASON=32, CALL_ID=33,
         MODE=34, HARD=35, WAIT=36, SIGNAL=37)
U64 = {"VERSION", "CREATE", "ARG_HANDLE", "WANT_VALUE", "TIMEOUT_MS", "KIND", "HANDLE",
       "STREAM", "ERRCODE", "PID", "MAX_FRAME", "CREATED", "LEASE_MS",
       "EXPIRES_MS", "ENDED_MS", "HARD", "WAIT", "SIGNAL"}
TAGNAME = {v: k for k, v in T.items()}

# error codes
ERR = dict(BAD_REQUEST=15, SESSION_BUSY=16, SESSION_DEAD=7,
           UNKNOWN_CALL=19, WORKER_RESTARTED=21, NO_SESSION=6)

WAIT_S = 60.0   # generous: no test depends on machine speed


def frame(mtype, rid=0, fields=()):
    """Encode one frame; fields: (name, value) pairs."""
    body = b""
    for name, v in fields:
        if name in U64:
            data = struct.pack(">Q", int(v))
        elif isinstance(v, str):
            data = v.encode()
        else:
            data = bytes(v)
        body += struct.pack(">BI", T[name], len(data)) + data
    return struct.pack(">IHHQ", len(body), mtype, 0, rid) + body


class Msg:
    """A parsed frame: type, id, and its fields by name (lists)."""

    def __init__(self, mtype, rid, body):
        self.type, self.id, self.f = mtype, rid, {}
        i = 0
        while i < len(body):
            tag, n = struct.unpack_from(">BI", body, i)
            data = body[i + 5:i + 5 + n]
            i += 5 + n
            name = TAGNAME.get(tag, str(tag))
            self.f.setdefault(name, []).append(
                struct.unpack(">Q", data)[0] if name in U64 else data)

    def get(self, name, default=None):
        v = self.f.get(name)
        return v[0] if v else default

    def text(self, name):
        v = self.get(name)
        return v.decode() if isinstance(v, bytes) else v

    def __repr__(self):
        return "Msg(0x%04x, id=%d, %r)" % (self.type, self.id, self.f)


def parse(buf):
    n, mtype, _flags, rid = struct.unpack_from(">IHHQ", buf, 0)
    return Msg(mtype, rid, buf[16:16 + n]), 16 + n


class Client:
    """One client connection to the worker (our end of a socketpair)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.next_id = 100

    def send(self, mtype, fields=(), rid=None):
        if rid is None:
            self.next_id += 1
            rid = self.next_id
        self._write(frame(mtype, rid, fields))
        return rid

    def _write(self, data):
        self.sock.sendall(data)

    def _rfd(self):
        return self.sock

    def _read(self):
        """Bytes that are there (b"" at EOF)."""
        try:
            return self.sock.recv(1 << 20)
        except ConnectionResetError:
            return b""

    def recv(self, timeout=WAIT_S):
        """The next frame, or None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 16:
                n = struct.unpack_from(">I", self.buf, 0)[0]
                if len(self.buf) >= 16 + n:
                    m, used = parse(self.buf)
                    self.buf = self.buf[used:]
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the worker")
            r, _, _ = select.select([self._rfd()], [], [], left)
            if not r:
                continue
            got = self._read()
            if not got:
                return None
            self.buf += got

    def until_reply(self, rid, timeout=WAIT_S):
        """Frames up to the reply of request rid: (output text by stream,
        the reply)."""
        out = {1: b"", 2: b""}
        while True:
            m = self.recv(timeout)
            assert m is not None, "connection closed before the reply"
            if m.type == OUTPUT and m.id == rid:
                out[m.get("STREAM")] += m.get("DATA")
                continue
            if m.id == rid and m.type != OUTPUT:
                return out, m

    def exec(self, code, call_id=None, timeout_ms=None, func=None,
             want=1, handles=()):
        fields = [("CODE", code)]
        if func:
            fields.append(("FUNC", func))
        for h in handles:
            fields.append(("ARG_HANDLE", h))
        fields.append(("WANT_VALUE", want))
        if timeout_ms:
            fields.append(("TIMEOUT_MS", timeout_ms))
        if call_id is not None:
            fields.append(("CALL_ID", call_id))
        return self.send(EXEC, fields)

    def run(self, code, **kw):
        """EXEC and wait: (output, reply)."""
        return self.until_reply(self.exec(code, **kw))

    def value(self, code, **kw):
        out, m = self.run(code, **kw)
        assert m.type == RESULT, m
        return pickle.loads(m.get("VALUE"))

    def close(self):
        self.sock.close()


class Worker:
    """A `pyshelfd --worker` with us as its supervisor."""

    def __init__(self, db, session, mode="c", idle_exit=None,
                 hard_grace=None, extra=(), control_path=None):
        self.db, self.session = db, session
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX,
                                             socket.SOCK_SEQPACKET)
        args = [PYSHELFD, "--worker", "--db", db, "--session", session,
                "--control-fd", str(theirs.fileno()),
                "--checkpoint-interval", "1"]
        if mode == "c":
            args.append("--create")
        elif mode == "n":
            args.append("--new")
        if idle_exit is not None:
            args += ["--idle-exit", str(idle_exit)]
        if hard_grace is not None:
            args += ["--hard-grace", str(hard_grace)]
        if control_path:
            args += ["--control", control_path]
        args += list(extra)
        self.proc = subprocess.Popen(args, pass_fds=[theirs.fileno()],
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        theirs.close()
        self.mode = mode
        self.ctl_msgs = []

    @property
    def pid(self):
        return self.proc.pid

    def attach(self, mode=None, signal_=None, message=None, lease_ms=None):
        """Hand a new client connection over CTL_CONN; returns (Client,
        ATTACHED or ERROR)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fields = [("SESSION", self.session), ("CREATE", 1),
                  ("MODE", mode or self.mode)]
        if lease_ms is not None:
            fields.append(("LEASE_MS", lease_ms))
        attach = frame(ATTACH, 7, fields)
        cf = [("DATA", attach), ("PID", os.getpid())]
        if signal_ is not None:
            cf.append(("SIGNAL", signal_))
        if message is not None:
            cf.append(("MESSAGE", message))
        socket.send_fds(self.ctl, [frame(CTL_CONN, 0, cf)],
                        [theirs.fileno()])
        theirs.close()
        c = Client(ours)
        m = c.recv()
        assert m is not None and m.id == 7, m
        return c, m

    def ctl_recv(self, timeout=WAIT_S):
        """The next control frame from the worker (None at EOF)."""
        r, _, _ = select.select([self.ctl], [], [], timeout)
        if not r:
            raise TimeoutError("no control frame")
        data = self.ctl.recv(1 << 17)
        if not data:
            return None
        m, _ = parse(data)
        self.ctl_msgs.append(m)
        return m

    def ctl_wait(self, mtype, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while True:
            m = self.ctl_recv(max(0.01, deadline - time.monotonic()))
            if m is None or m.type == mtype:
                return m

    def ctl_send(self, mtype, fields=()):
        self.ctl.send(frame(mtype, 0, fields))

    def wait(self, timeout=WAIT_S):
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.ctl.close()
        err = self.proc.stderr.read() if self.proc.stderr else b""
        if self.proc.stderr:
            self.proc.stderr.close()
        return err


def wait_for(pred, what, timeout=WAIT_S):
    """Poll pred() until true (no test depends on how fast)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def calls(client):
    """CALLS on a connection: the JSON list."""
    import json
    rid = client.send(CALLS)
    _, m = client.until_reply(rid)
    assert m.type == LISTING, m
    return json.loads(m.get("DATA"))


def call_state(client, call_id):
    for c in calls(client):
        if c["id"] == call_id.hex():
            return c["state"]
    return None


@pytest.fixture
def worker(tmp_path):
    """start(session="s", **options) -> a Worker on tmp_path/db; every one
    started is stopped at teardown.  Test modules import it by name."""
    ws = []

    def start(session="s", **kw):
        w = Worker(str(tmp_path / "db"), session, **kw)
        ws.append(w)
        return w
    yield start
    for w in ws:
        w.stop()

