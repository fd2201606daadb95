"""Values and arguments larger than a frame (docs/PROTOCOL.md, "Messages
longer than a frame"): with a 1 MiB --max-frame, 200 MB values travel
both ways on every path (SET, GET, EXEC arguments, keyword arguments,
values nested in arguments, results), numpy arrays as pickle protocol 5
out-of-band buffers; they are checkpointed to blob files and read back
after a restart.  Hostile streams (stopped half way, interleaved, lying
about their sizes) get an ERROR and change nothing.  In both modes."""
import os
import socket
import struct

import numpy as np

import pyshelf
from pyshelf import DirectValue
from restarts import restart

SMALL = ["--max-frame", "1MiB"]
N = 25 << 20            # int64s: 200 MB


def test_numpy_200mb_both_ways_through_1mib_frames(store):
    ws = pyshelf.spawn(db=store, session="s", args=SMALL)
    try:
        a = np.arange(N, dtype=np.int64)
        ws["a"] = a
        b = ws["a"]
        assert b.dtype == np.int64 and b.shape == (N,)
        assert np.array_equal(a, b)
        assert b.flags.writeable   # built on its own buffer, not a copy

        def total(x):
            return DirectValue(int(x.sum()))
        assert ws.remote_exec(total, a).value == int(a.sum())
    finally:
        ws.close()


def test_big_args_kwargs_nested_and_results(store):
    ws = pyshelf.spawn(db=store, session="s", args=SMALL)
    try:
        a = np.arange(N, dtype=np.int64)
        blob = bytes(range(256)) * (3 << 16)       # 48 MiB, in-band

        def f(x, nested, key=None):
            return DirectValue((int(x[-1]), int(nested["k"][1][-1]),
                                len(key), key[:3], key[-1]))
        r = ws.remote_exec(f, a, {"k": [0, a[:N // 2]]}, key=blob)
        assert r.value == (N - 1, N // 2 - 1, len(blob), blob[:3], blob[-1])

        def make(n):
            import numpy
            return DirectValue({"z": numpy.ones(n), "b": b"x" * n})
        r = ws.remote_exec(make, 10 << 20)
        assert r.value["z"].shape == (10 << 20,) and r.value["z"].all()
        assert r.value["b"] == b"x" * (10 << 20)
        ws["s"] = "x" * (30 << 20)                 # a str, no buffers
        assert ws["s"] == "x" * (30 << 20)
    finally:
        ws.close()


def out_of_band(arr):
    """Was arr unpickled onto a buffer the client received out of band
    (a Block of the extension's), not onto the pickle's own bytes?"""
    b = arr.base
    while isinstance(b, np.ndarray):
        b = b.base
    return type(b).__name__ == "Block"


def test_results_come_out_of_band_whichever_way_asked(store):
    """QA5 8: a DirectValue result came as one pickle (17 s for 1 GiB
    where ws[name] took 0.4 s): the client asked for out-of-band buffers
    only with want_value=True."""
    ws = pyshelf.spawn(db=store, session="s", args=SMALL)
    try:
        ws.remote_exec("import numpy as np\nbig = np.arange(%d)" % (N // 8))
        by_direct = ws.remote_exec("DirectValue(big)").value
        by_value = ws.remote_exec("big", want_value=True).value
        by_get = ws["big"]
        for arr in (by_direct, by_value, by_get):
            assert arr.shape == (N // 8,) and int(arr[-1]) == N // 8 - 1
            assert out_of_band(arr)
        # nested in a DirectValue's container too
        d = ws.remote_exec("DirectValue({'k': [big[:1000], big]})").value
        assert out_of_band(d["k"][1]) and np.array_equal(d["k"][1], by_get)
    finally:
        ws.close()


def test_200mb_value_checkpointed_and_read_after_restart(store):
    ws = pyshelf.spawn(db=store, session="s", args=SMALL)
    a = np.arange(N, dtype=np.int64)
    ws["a"] = a
    ws = restart(ws, "kill", store)      # the checkpoint came before OK
    try:
        assert np.array_equal(ws["a"], a)
    finally:
        ws.close()


# --- hostile streams, raw frames to a stdio backend --------------------------

HDR = struct.Struct(">IHHQ")
LONG, PART, SET, GET, ERROR, OK, RESULT, HELLO = (0x0130, 0x0131, 0x0111,
                                                 0x0110, 0x7F00, 0x01F0,
                                                 0x0101, 0x0001)


def field(tag, data):
    return struct.pack(">BI", tag, len(data)) + data


def u64(tag, v):
    return field(tag, struct.pack(">Q", v))


def frame(t, rid, body):
    return HDR.pack(len(body), t, 0, rid) + body


class Raw:
    """A stdio backend spoken to in raw frames."""

    def __init__(self, backend, db):
        import subprocess
        self.p = subprocess.Popen([backend, "--stdio", "--db", db,
                                   "--session", "raw", "--create", "--max-frame",
                                   "1MiB"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        self.send(frame(HELLO, 1, u64(1, 3)))
        assert self.read()[0] != ERROR

    def send(self, b):
        self.p.stdin.write(b)
        self.p.stdin.flush()

    def read(self):
        h = self.p.stdout.read(16)
        n, t, _, rid = HDR.unpack(h)
        body = self.p.stdout.read(n)
        fields, i = {}, 0
        while i < len(body):
            tag, ln = struct.unpack(">BI", body[i:i + 5])
            fields.setdefault(tag, body[i + 5:i + 5 + ln])
            i += 5 + ln
        return t, rid, fields

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=120)
        assert self.p.returncode == 0


def set_body(key, value, oob=()):
    b = field(21, key) + field(17, value)
    for n in oob:
        b += u64(40, n)
    return b


def long_head(rid, t, body_len):
    return frame(LONG, rid, u64(38, t) + u64(39, body_len))


def part(rid, data):
    return frame(PART, rid, field(19, data))


def test_raw_long_with_buffer_sets_a_value(backend, tmp_path):
    import pickle
    r = Raw(backend, str(tmp_path / "db"))
    try:
        ba = bytearray(b"q" * (3 << 20))
        bufs = []
        pk = pickle.dumps(pickle.PickleBuffer(ba), protocol=5,
                          buffer_callback=bufs.append)
        body = set_body(b"v", pk, [len(ba)])
        r.send(long_head(5, SET, len(body)) + part(5, body) +
               b"".join(part(5, bytes(ba[i:i + (1 << 19)]))
                        for i in range(0, len(ba), 1 << 19)))
        t, rid, f = r.read()
        assert (t, rid) == (OK, 5)
        r.send(frame(GET, 6, field(21, b"v") + u64(10, 1)))
        t, rid, f = r.read()
        # a reply longer than the 1 MiB frame comes as a LONG
        assert (t, rid) == (LONG, 6)
    finally:
        r.p.kill()
        r.p.wait()


def test_raw_interrupted_long_is_an_error_and_applies_nothing(backend,
                                                              tmp_path):
    r = Raw(backend, str(tmp_path / "db"))
    try:
        body = set_body(b"v", b"\x80\x05K\x01.")
        r.send(long_head(7, SET, len(body)) + part(7, body[:4]))
        r.send(frame(GET, 8, field(21, b"v") + u64(10, 1)))  # interleaved
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 7)
        assert b"interrupted by GET" in f[16]
        assert b"nothing of it was applied" in f[16]
        t, rid, f = r.read()               # GET is served: no such global
        assert (t, rid) == (ERROR, 8) and struct.unpack(">Q", f[20]) == (11,)
        r.send(part(7, body[4:]))          # the rest: no LONG is open
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 7) and b"no LONG started" in f[16]
        r.send(frame(0x0124, 9, b""))      # still usable: PING
        assert r.read()[:2] == (0x0125, 9)
    finally:
        r.close()


def test_raw_lying_sizes_get_errors(backend, tmp_path):
    r = Raw(backend, str(tmp_path / "db"))
    try:
        # a PART past LONG_LEN
        body = set_body(b"v", b"\x80\x05K\x01.")
        r.send(long_head(3, SET, len(body)) + part(3, body + b"xx"))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 3) and b"runs past" in f[16]
        # more than this machine's memory: refused at the head, and its
        # PARTs are dropped without more errors
        r.send(long_head(4, SET, 1 << 32))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 4) and b"4 GiB" in f[16]
        body = set_body(b"v", b"\x80\x05K\x01.", [1 << 62])
        r.send(long_head(5, SET, len(body)) + part(5, body))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 5) and b"--memory-limit" in f[16]
        r.send(part(5, b"zz"))             # dropped: already refused
        # a LONG carrying a LONG
        r.send(long_head(6, LONG, 10))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 6) and b"LONG_TYPE" in f[16]
        # OOB outside a LONG
        r.send(frame(SET, 7, set_body(b"v", b"\x80\x05K\x01.", [3])))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 7) and b"LONG" in f[16]
        # an OOB field that follows no pickle, in a LONG
        body = field(21, b"v") + u64(40, 3) + field(17, b"\x80\x05K\x01.")
        r.send(long_head(8, SET, len(body)) + part(8, body) +
               part(8, b"abc"))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 8) and b"follows neither" in f[16]
        # a PART of another id while a LONG is open: both are refused
        body = set_body(b"v", b"\x80\x05K\x01.")
        r.send(long_head(9, SET, len(body)) + part(10, body))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 9) and b"a PART of another" in f[16]
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 10) and b"no LONG started" in f[16]
        r.send(frame(GET, 11, field(21, b"v") + u64(10, 1)))
        t, rid, f = r.read()
        assert (t, rid) == (ERROR, 11)     # nothing was bound
    finally:
        r.close()


def test_raw_stream_that_stops_half_way(backend, tmp_path):
    """The client leaves in the middle: the backend ends cleanly, and the
    value is not there when the session is opened again."""
    db = str(tmp_path / "db")
    r = Raw(backend, db)
    body = set_body(b"v", b"\x80\x05K\x01.")
    r.send(long_head(3, SET, len(body)) + part(3, body[:3]))
    r.close()
    ws = pyshelf.spawn(db=db, session="raw")
    try:
        assert "v" not in ws.keys()
    finally:
        ws.close()
