"""Leases, the sweeper and pyshelf.end(), with real processes: a server
(`pyshelfd --server`, its sweeper `pyshelfd --sweep` on a short
--sweep-interval), workers, clients in other processes, and the sweep run
by hand to SIGKILL it halfway.

A lease runs out with time: the tests give sessions leases of a second or
so and wait, with a generous deadline, for what the sweeper does (a
tombstone in `pyshelf-dump --json`); a session that must survive is
checked after a session that expired alongside it was swept, which shows
that sweeps ran.
"""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import pyshelf
from server_helpers import WAIT, child, finish, srv, wait_for  # noqa: F401

DUMP = os.environ["PYSHELF_DUMP"]     # make check sets both
# the servers of these tests sweep every 0.2 s
SERVER_ARGS = ("--sweep-interval", "0.2", "--idle-exit", "0.2")


def dump_rows(db, *args):
    r = subprocess.run([DUMP, "--db", str(db), "--json"] + list(args),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def tombs(db):
    """name -> its newest tombstone row."""
    return {x["name"]: x for x in dump_rows(db) if x["row"] == "tombstone"}


def sessions(db):
    """name -> its session row (live or dead, not purged yet)."""
    return {x["name"]: x for x in dump_rows(db) if x["row"] == "session"}


def store_row(db):
    return [x for x in dump_rows(db) if x["row"] == "store"][0]


def swept(db, name):
    """The tombstone of name once the sweeper has ended and purged it."""
    def done():
        t = tombs(db).get(name)
        return t if t is not None and name not in sessions(db) else None
    return wait_for(done, "session %r swept" % name)


def check_sound(db):
    r = subprocess.run([DUMP, "--db", str(db), "--check"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sound" in r.stdout


def sweep(backend, db, *args):
    return subprocess.run([backend, "--sweep", "--db", str(db)] +
                          [str(a) for a in args], capture_output=True,
                          text=True, timeout=WAIT)


def open_srv(s, name, **kw):
    kw.setdefault("args", SERVER_ARGS)
    return s.track(pyshelf.open(name, db=s.db, create_db=True, **kw))


# shipped to the workspace (by source)
def _fill(n):
    g = globals()
    for i in range(n):
        g["v%d" % i] = i


def _spin(mark):
    import time
    open(mark, "w").close()
    while True:
        time.sleep(0.01)


def _incr():
    global n
    n += 1


def _new_object():
    return object()


def fill(backend, db, name, n):
    """A session of n globals, made offline (a stdio backend)."""
    ws = pyshelf.spawn(db=db, session=name, backend=backend)
    try:
        ws.remote_exec(_fill, n)
        assert len(ws) == n
    finally:
        ws.close()


# --- leases ------------------------------------------------------------------

def test_lease_setter_persisted(srv):
    ws = open_srv(srv, "a")
    assert ws.lease == 30 * 24 * 3600
    ws.lease = 7200
    assert ws.lease == 7200
    assert 7100 < ws.expires - time.time() <= 7200
    ws["x"] = 1
    ws.close()
    row = sessions(srv.db)["a"]
    assert row["lease_ms"] == 7200000
    # a new worker reads it back from the store
    ws = open_srv(srv, "a", flag="w")
    assert ws.lease == 7200
    ws.lease = 0                      # forever
    assert ws.lease == 0 and ws.expires is None
    ws.close()
    assert sessions(srv.db)["a"]["lease_ms"] == 0


def test_lease_setter_refuses_garbage(srv):
    ws = open_srv(srv, "a")
    with pytest.raises(ValueError):
        ws.lease = -1
    with pytest.raises(ValueError):
        ws.lease = None
    with pytest.raises(ValueError):
        ws.lease = float("nan")
    assert ws.lease == 30 * 24 * 3600
    ws.close()


def test_lease_setter_stdio(backend, tmp_path):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="a", backend=backend)
    ws.lease = 60
    ws.close()
    ws = pyshelf.spawn(db=db, session="a", backend=backend, flag="w")
    assert ws.lease == 60
    ws.close()
    ro = pyshelf.spawn(db=db, session="a", backend=backend, flag="r")
    with pytest.raises(pyshelf.RemoteError) as e:
        ro.lease = 5
    assert e.value.code_name == "READ_ONLY"
    ro.close()


def _killed_while_attached(ws, db, name):
    """ws attached (idle) for three of its 2 s leases, then its backend
    SIGKILLed (an OOM kill, a reboot): the record says it was seen within
    the last lease, so neither the next open nor the sweeper ends it."""
    ws["x"] = "precious"
    time.sleep(6)            # attached and idle: three leases
    pid = ws.pid
    seen = sessions(db)[name]["last_seen_ms"] / 1000
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    # seen within one lease of the kill (the lease keeper writes it every
    # quarter of the lease); before, it stayed at the attach, 6 s earlier
    assert seen > killed - 2, (seen, killed)
    try:
        ws.close()
    except pyshelf.Error:
        pass


def test_attached_longer_than_the_lease_then_killed_stdio(backend, tmp_path):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="k", backend=backend, lease=2)
    _killed_while_attached(ws, db, "k")


def test_attached_longer_than_the_lease_then_killed(srv):
    ws = open_srv(srv, "k", lease=2)
    _killed_while_attached(ws, srv.db, "k")


def test_expired_with_none_is_swept(srv):
    ws = open_srv(srv, "gone", lease=0.5)
    ws["x"] = list(range(100))
    ws.close()
    t = swept(srv.db, "gone")
    assert t["reason"] == "expired" and t["entries"] == 1
    with pytest.raises(pyshelf.SessionEnded) as e:
        open_srv(srv, "gone", flag="w")
    assert e.value.reason == "expired"
    check_sound(srv.db)


def test_expired_with_client_attached_is_kept(srv):
    ws = open_srv(srv, "kept", lease=0.5)
    ws["x"] = 1
    # probe's lease runs out after kept's (seen later, the same lease):
    # once it is swept, sweeps ran past kept's lease
    probe = open_srv(srv, "probe", lease=0.5)
    probe.close()
    swept(srv.db, "probe")
    assert ws["x"] == 1              # still there, attached all along
    assert "kept" not in tombs(srv.db)
    ws.close()


def test_expired_with_code_running_is_kept(srv):
    """A client starts a call and dies; the code runs on with no client
    attached, past the lease: the session stays until it finishes."""
    gate = os.path.join(srv.run, "gate")
    block = ("import os, time\n"
             "open(%r, 'w').close()\n"
             "while not os.path.exists(%r):\n"
             "    time.sleep(0.02)\n"
             "done = 1\n" % (gate + ".run", gate))
    p = child(srv, "import pyshelf, sys\n"
                   "ws = pyshelf.open('busy', db=sys.argv[1], lease=0.5,\n"
                   "                  args=('--sweep-interval', '0.2'))\n"
                   "print(ws.pid, flush=True)\n"
                   "ws.remote_exec(sys.argv[2])\n",
              srv.db, block)
    wpid = int(p.stdout.readline())
    srv.workers.add(wpid)
    wait_for(lambda: os.path.exists(gate + ".run"), "the call to start")
    p.kill()
    p.wait()
    probe = open_srv(srv, "probe", lease=0.1)
    probe.close()
    swept(srv.db, "probe")          # "busy"'s lease ran out before
    assert "busy" not in tombs(srv.db)
    open(gate, "w").close()
    # the call finished and committed: attach (renewing) and read it
    ws = wait_for(lambda: _try_done(srv), "the call to commit")
    assert ws["done"] == 1
    ws.close()


def _try_done(srv):
    ws = open_srv(srv, "busy", flag="w")
    if "done" in ws:
        return ws
    ws.close()
    return None


def test_downtime_not_counted(srv, backend):
    """Leases run from the server's start: a session whose lease ran out
    while no server ran is not swept by the next server's first sweeps."""
    ws = open_srv(srv, "slept", lease=6)
    ws["x"] = 1
    pid = ws.server_pid
    ws.close()
    seen = sessions(srv.db)["slept"]["last_seen_ms"] / 1000.0
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(srv.run + "/pyshelf") or
             not [f for f in os.listdir(srv.run + "/pyshelf")
                  if f.endswith(".pid") and _locked(srv.run, f)],
             "the server to exit")
    # the lease runs out while no server runs
    wait_for(lambda: time.time() > seen + 6.5, "the lease to run out")
    # a new server: its sweeps count from its start
    probe = open_srv(srv, "probe", lease=0.1)
    probe.close()
    swept(srv.db, "probe")
    assert "slept" in sessions(srv.db)
    assert "slept" not in tombs(srv.db)
    # a sweep by hand counting leases from now keeps it as well
    r = sweep(backend, srv.db, "--since", int(time.time() * 1000))
    assert r.returncode == 0, r.stderr
    assert "slept" not in tombs(srv.db)


def _locked(run, name):
    import fcntl
    try:
        fd = os.open(os.path.join(run, "pyshelf", name), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


@pytest.mark.stdio_only("the sweep run by hand, no server sweeping too")
def test_sweep_since_and_without(backend, tmp_path):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="s", backend=backend, lease=0.2)
    ws["x"] = 1
    ws.close()
    seen = sessions(db)["s"]["last_seen_ms"] / 1000.0
    wait_for(lambda: time.time() > seen + 0.3, "the lease to run out")
    # leases counted from an hour on: however slow this sweep starts,
    # s is not expired for it
    since = int((time.time() + 3600) * 1000)
    r = sweep(backend, db, "--since", since)
    assert r.returncode == 0, r.stderr
    assert "s" in sessions(db)
    r = sweep(backend, db)
    assert r.returncode == 0, r.stderr
    assert tombs(db)["s"]["reason"] == "expired"
    assert "s" not in sessions(db)


def test_sweep_refuses_bad_options(backend, tmp_path):
    for args in (["--sweep-batch", "0"], ["--sweep-batch", "x"],
                 ["--since", "-1"], ["--sweep-batch-ms", "9999999"],
                 ["--bogus"], ["--end", ""], ["extra"], ["--end-only"]):
        r = sweep(backend, tmp_path / "db", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert "usage" in r.stderr


def test_server_refuses_bad_sweep_options(backend, tmp_path):
    for args in (["--sweep-interval", "x"], ["--sweep-interval", "-1"],
                 ["--sweep-batch", "ten"], ["--sweep-batch-ms", "-5"],
                 ["--sweep-pause-ms", ""]):
        r = subprocess.run([backend, "--server", "--foreground", "--socket",
                            str(tmp_path / "s"), "--db", str(tmp_path / "db")]
                           + args, capture_output=True, text=True,
                           timeout=WAIT)
        assert r.returncode == 2, (args, r.stderr)
        assert "bad value" in r.stderr and args[0] in r.stderr


# --- the sweep killed halfway ---------------------------------------------------

def test_sigkill_mid_sweep_resumes(backend, tmp_path):
    db = tmp_path / "db"
    fill(backend, db, "big", 20000)
    fill(backend, db, "live", 10)
    p = subprocess.Popen([backend, "--sweep", "--db", str(db), "--end",
                          "big", "--sweep-batch", "200", "--sweep-pause-ms",
                          "20", "--progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().split()[1] == "ended"
        line = p.stderr.readline()
        assert "entries deleted" in line, line
    finally:
        p.kill()
        p.wait()
    row = sessions(db)["big"]
    assert row["state"] == "dead"
    assert 0 < row["entries"] < 20000
    check_sound(db)
    r = sweep(backend, db)
    assert r.returncode == 0, r.stderr
    assert "big" not in sessions(db)
    t = tombs(db)["big"]
    assert t["reason"] == "ended" and t["entries"] == 20000
    assert sessions(db)["live"]["entries"] == 10
    assert store_row(db)["entries"] == 10
    assert not os.path.exists(os.path.join(db, "locks", t["id"]))
    check_sound(db)


def test_end_only_leaves_it_to_the_next_sweep(backend, tmp_path):
    db = tmp_path / "db"
    fill(backend, db, "s", 30)
    r = sweep(backend, db, "--end", "s", "--end-only")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == "ended"
    assert sessions(db)["s"]["state"] == "dead"
    assert sessions(db)["s"]["entries"] == 30
    r = sweep(backend, db)
    assert r.returncode == 0, r.stderr
    assert "s" not in sessions(db)
    assert tombs(db)["s"]["entries"] == 30


def test_sweep_batch_time_bound(backend, tmp_path):
    """--sweep-batch-ms ends a transaction early: with a 1 ms bound and a
    large count, a purge still takes many transactions."""
    db = tmp_path / "db"
    fill(backend, db, "big", 20000)
    r = subprocess.run([backend, "--sweep", "--db", str(db), "--end", "big",
                        "--sweep-batch", "1000000", "--sweep-batch-ms", "1",
                        "--progress"], capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 0, r.stderr
    steps = [ln for ln in r.stderr.splitlines() if "entries deleted" in ln]
    assert len(steps) >= 2, r.stderr
    assert "big" not in sessions(db)
    check_sound(db)


# --- pyshelf.end() --------------------------------------------------------------

def test_end_with_client_attached(srv):
    ws = open_srv(srv, "e")
    ws["x"] = 1
    other = open_srv(srv, "other")
    other["y"] = 2
    pyshelf.end("e", db=srv.db)
    with pytest.raises(pyshelf.SessionEnded) as e:
        ws["x"]
    assert e.value.reason == "ended"
    assert "pyshelf.end" in str(e.value)
    with pytest.raises(pyshelf.SessionEnded):
        ws["x"] = 2
    swept(srv.db, "e")
    with pytest.raises(pyshelf.SessionEnded) as e:
        pyshelf.end("e", db=srv.db)
    assert e.value.reason == "ended" and e.value.ended is not None
    with pytest.raises(pyshelf.SessionEnded):
        open_srv(srv, "e", flag="w")
    assert other["y"] == 2
    ws.close()
    other.close()
    check_sound(srv.db)


def test_end_with_running_call(srv):
    ws = open_srv(srv, "run")
    ws["kept"] = 1
    mark = os.path.join(srv.run, "started")
    got = []

    def call():
        try:
            ws.remote_exec(_spin, mark)
        except BaseException as e:  # noqa: what the caller sees
            got.append(e)
    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: os.path.exists(mark), "the call to start")
    pid = ws.pid
    pyshelf.end("run", db=srv.db)
    t.join(WAIT)
    assert not t.is_alive()
    assert len(got) == 1 and isinstance(got[0], pyshelf.SessionEnded), got
    wait_for(lambda: not _alive(pid), "the worker to exit")
    assert swept(srv.db, "run")["entries"] == 1
    ws.close()


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_end_unknown_and_bad_names(srv):
    open_srv(srv, "x").close()       # a server runs
    with pytest.raises(pyshelf.SessionNotFound) as e:
        pyshelf.end("nobody", db=srv.db)
    assert not isinstance(e.value, pyshelf.SessionEnded)
    with pytest.raises(ValueError):
        pyshelf.end("", db=srv.db)
    with pytest.raises(ValueError):
        pyshelf.end("n" * 256, db=srv.db)


@pytest.mark.stdio_only("end() with no server running")
def test_end_offline(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no server here
    db = tmp_path / "db"
    fill(backend, db, "off", 50)
    pyshelf.end("off", db=db, backend=backend)
    assert "off" not in sessions(db)          # deleted before it returned
    assert tombs(db)["off"]["entries"] == 50
    with pytest.raises(pyshelf.SessionEnded) as e:
        pyshelf.end("off", db=db, backend=backend)
    assert e.value.reason == "ended" and e.value.ended > 0
    with pytest.raises(pyshelf.SessionNotFound) as e:
        pyshelf.end("nobody", db=db, backend=backend)
    assert not isinstance(e.value, pyshelf.SessionEnded)
    with pytest.raises(pyshelf.SessionNotFound):
        pyshelf.end("x", db=tmp_path / "nostore", backend=backend)
    # a private stdio backend holds it: ended through its workspace only
    ws = pyshelf.spawn(db=db, session="held", backend=backend)
    with pytest.raises(pyshelf.SessionBusy) as e:
        pyshelf.end("held", db=db, backend=backend)
    assert e.value.pid == ws.pid
    ws["still"] = 1
    ws.close()
    check_sound(db)


# --- the stall benchmark's setup, for correctness --------------------------

def test_sweep_beside_live_requests(srv, backend):
    """A dead session of 20,000 entries is reclaimed by the server's
    sweeper while a live session does requests back to back: every
    request succeeds and the live session is intact."""
    fill(backend, srv.db, "dead", 20000)
    ws = open_srv(srv, "live", args=SERVER_ARGS + ("--sweep-batch", "100"))
    ws["n"] = 0
    pyshelf.end("dead", db=srv.db)
    n = 0
    while "dead" in sessions(srv.db) or n < 50:
        ws.remote_exec(_incr)
        n += 1
    assert ws["n"] == n
    assert tombs(srv.db)["dead"]["entries"] == 20000
    assert store_row(srv.db)["entries"] == 1
    ws.close()
    check_sound(srv.db)


# --- handles go with their release and with their session ----------------------

def test_handles_go_with_release_and_session(srv):
    ws = open_srv(srv, "h")
    a = ws.remote_exec(_new_object)
    b = ws.remote_exec(_new_object)
    ws.sync()
    kinds = [x["kind"] for x in dump_rows(srv.db, "h")
             if x["row"] == "entry"]
    assert kinds.count("handle") == 2
    ws.release(a)
    ws.sync()
    kinds = [x["kind"] for x in dump_rows(srv.db, "h")
             if x["row"] == "entry"]
    assert kinds.count("handle") == 1
    del b
    pyshelf.end("h", db=srv.db)
    assert swept(srv.db, "h")["entries"] == 1
    assert store_row(srv.db)["entries"] == 0
    ws.close()


# --- a server from before END_SESSION ------------------------------------------

def _fake_old_server(path, ready):
    """Answer HELLO with WELCOME, then refuse what follows as a server of
    before END_SESSION did."""
    import socket
    import struct
    hdr = struct.Struct(">IHHQ")

    def frame(mtype, fields, rid):
        body = b"".join(struct.pack(">BI", t, len(d)) + d for t, d in fields)
        return hdr.pack(len(body), mtype, 0, rid) + body

    def read(c):
        h = b""
        while len(h) < hdr.size:
            h += c.recv(hdr.size - len(h))
        n, mtype, _, rid = hdr.unpack(h)
        body = b""
        while len(body) < n:
            body += c.recv(n - len(body))
        return mtype, rid
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(path)
    ls.listen(1)
    ready.set()
    c, _ = ls.accept()
    _, rid = read(c)
    c.sendall(frame(0x0002, [(1, struct.pack(">Q", 3))], rid))
    _, rid = read(c)
    c.sendall(frame(0x7F00, [(20, struct.pack(">Q", 15)),
                             (16, b"after WELCOME the server takes ATTACH, "
                                  b"not END_SESSION")], rid))
    c.close()
    ls.close()


def test_end_through_an_old_server(tmp_path):
    import tempfile
    d = tempfile.mkdtemp(prefix="ps")
    path = os.path.join(d, "old")
    ready = threading.Event()
    t = threading.Thread(target=_fake_old_server, args=(path, ready))
    t.start()
    assert ready.wait(WAIT)
    try:
        with pytest.raises(pyshelf.Error) as e:
            pyshelf.end("s", socket=path)
        assert "restart it" in str(e.value)
        assert not isinstance(e.value, pyshelf.RemoteError)
    finally:
        t.join(WAIT)
        os.unlink(path)
        os.rmdir(d)
