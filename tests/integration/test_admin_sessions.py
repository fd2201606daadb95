"""pyshelf.sessions(): a store's sessions listed without attaching, from
the session records (their counts: no entry read) and, when a server
runs, from what its workers report (issue 17, the admin API).

Stores without a server are written by ``pyshelfd --stdio`` through the
raw protocol driver of test_dump.py; server mode through pyshelf.open()
(server_helpers.srv).
"""
import os
import struct
import threading
import time

import lmdb
import pytest

import pyshelf
from server_helpers import WAIT, srv, wait_for  # noqa: F401 (fixture)
from test_dump import Backend, dump, rows


def _by_name(db, **kw):
    return {s.name: s for s in pyshelf.sessions(db, **kw)}


@pytest.fixture
def two(tmp_path):
    """A store with two sessions and no process on it."""
    db = tmp_path / "db"
    a = Backend(db, "alpha")
    a.run("x = list(range(100))\ny = 'text'\n")
    a.run("[1, 2, 3]")                                  # a handle
    a.detach()
    b = Backend(db, "beta", "--lease", "3600")
    b.run("z = bytes(5000)")
    b.detach()
    return str(db)


def test_sessions_without_a_server(two):
    t0 = time.time()
    got = _by_name(two)
    assert sorted(got) == ["alpha", "beta"]
    recs = {r["name"]: r for r in rows(dump("--sessions", "--json",
                                            db=two, check=0).stdout,
                                       "session")}
    a, b = got["alpha"], got["beta"]
    assert a.id == recs["alpha"]["id"] and len(a.id) == 32
    assert a.state == "live" and a.expired is False
    assert 0 < a.created <= a.last_seen <= t0
    assert b.lease == 3600.0
    assert b.expires == pytest.approx(b.last_seen + 3600)
    # x, y, the handle: counted in the record, exactly what the entries
    # add up to (pyshelf-dump --check verifies the counts)
    assert a.entries == 3 and b.entries == 1
    assert b.bytes > 5000
    assert (a.entries, a.bytes) == (recs["alpha"]["entries"],
                                    recs["alpha"]["bytes"])
    dump("--check", "-q", db=two, check=0)
    # no server: nothing live
    for s in got.values():
        assert s.attached_clients == 0
        assert s.worker_pid is None and s.running_call is None
    # by attribute and by key, and printable
    assert a["name"] == "alpha" and a["entries"] == a.entries
    assert set(a.keys()) >= {"name", "id", "state", "created", "last_seen",
                             "expires", "lease", "entries", "bytes",
                             "attached_clients", "worker_pid",
                             "running_call"}
    assert dict((k, a[k]) for k in a)["bytes"] == a.bytes
    assert repr(a).startswith("SessionInfo(name='alpha', id='%s'" % a.id)
    with pytest.raises(KeyError):
        a["nothing"]


def test_no_lease_means_no_expiry(tmp_path):
    db = tmp_path / "db"
    b = Backend(db, "forever", "--lease", "0")
    b.detach()
    (s,) = pyshelf.sessions(str(db))
    assert s.lease == 0 and s.expires is None


def test_a_directory_without_a_store_has_no_sessions(tmp_path):
    assert pyshelf.sessions(tmp_path) == []


def test_a_damaged_store_is_an_error(two):
    with open(os.path.join(two, "data.mdb"), "r+b") as f:
        f.write(b"\0" * 8192)           # both meta pages
    with pytest.raises(pyshelf.Error, match="listing the sessions of"):
        pyshelf.sessions(two)


def test_counts_follow_writes_and_deletes(two):
    a = Backend(two, "alpha")
    a.run("w = bytes(2 << 20)")          # a blob file, at its size
    a.run("del x")
    a.detach()
    s = _by_name(two)["alpha"]
    assert s.entries == 3
    assert s.bytes > 2 << 20
    dump("--check", "-q", db=two, check=0)


def test_listing_reads_no_entry(two):
    """The counts come from the session records: with every entry gone
    from the store (the entries database emptied behind pyshelf's back),
    the listing is the same, where a walk of the entries would count
    none."""
    before = _by_name(two)
    env = lmdb.open(two, max_dbs=16)
    with env.begin(write=True) as t:
        t.drop(env.open_db(b"entries", txn=t), delete=False)
    env.close()
    assert _by_name(two) == before
    assert before["alpha"].entries == 3
    # --check sees what is missing; the listing did not look
    r = dump("--check", "-q", db=two, check=1)
    assert "session_counts" in r.stdout


def _make_v1(db, name):
    """Rewrite session name's record as version 1 (no counts) and stamp
    format 2: the store as pyshelf before the counts left it."""
    env = lmdb.open(db, max_dbs=16)
    with env.begin(write=True) as t:
        names = env.open_db(b"names", txn=t)
        sessions = env.open_db(b"sessions", txn=t)
        sid = t.get(name.encode(), db=names)
        rec = t.get(sid, db=sessions)
        assert rec[0] == 2 and len(rec) == 96 + len(name)
        t.put(sid, b"\x01" + rec[1:80] + rec[96:], db=sessions)
        t.put(b"format", struct.pack(">I", 2),
              db=env.open_db(b"meta", txn=t))
    env.close()


def test_old_records_list_with_unknown_counts(two):
    _make_v1(two, "alpha")
    got = _by_name(two)
    assert got["alpha"].entries is None and got["alpha"].bytes is None
    assert got["beta"].entries == 1
    assert got["alpha"].created > 0
    # a writable open migrates: counted once, format 3
    b = Backend(two, "beta")
    b.detach()
    got = _by_name(two)
    assert got["alpha"].entries == 3
    assert rows(dump("--sessions", "--json", db=two, check=0).stdout,
                "dump")[0]["store_format"] == 3
    dump("--check", "-q", db=two, check=0)


# --- through a server ---------------------------------------------------------

def _open(s, name, **kw):
    return s.track(pyshelf.open(name, db=s.db, **kw))


def test_sessions_through_a_server(srv, tmp_path):
    a1 = _open(srv, "a", create_db=True)
    a1["x"] = 1
    a2 = _open(srv, "a", flag="w")
    b = _open(srv, "b")
    flag = tmp_path / "go"
    try:
        got = _by_name(srv.db)
        assert got["a"].attached_clients == 2
        assert got["a"].worker_pid == a1.pid == a2.pid
        assert got["b"].attached_clients == 1
        assert got["b"].worker_pid == b.pid != a1.pid
        assert got["a"].running_call is None
        assert got["a"].entries == 1
        # a running call, with a client attached (b's own) and then
        # with none (detached while it runs)
        done = []
        t = threading.Thread(target=lambda: done.append(b.remote_exec(
            "import os, time\n"
            "while not os.path.exists(%r):\n    time.sleep(0.01)\n"
            % str(flag))))
        t.start()
        assert wait_for(lambda: b.last_call_id, "the call's id")
        cid = b.last_call_id
        cid = cid if isinstance(cid, str) else cid.hex()
        assert wait_for(lambda: _by_name(srv.db)["b"].running_call == cid,
                        "the running call in sessions()")
        assert _by_name(srv.db)["b"].attached_clients == 1
        a2.close()
        assert wait_for(lambda: _by_name(srv.db)["a"].attached_clients
                        == 1, "one client left")
    finally:
        flag.touch()
    t.join(WAIT)
    assert done
    assert wait_for(lambda: _by_name(srv.db)["b"].running_call is None,
                    "the call ended")
    a1.close()
    b.close()


def test_sessions_starts_no_server(srv):
    b = Backend(srv.db, "quiet")
    b.detach()
    (s,) = pyshelf.sessions(srv.db)
    assert s.name == "quiet" and s.worker_pid is None
    assert not os.path.exists(os.path.join(srv.run, "pyshelf")) or \
        not [f for f in os.listdir(os.path.join(srv.run, "pyshelf"))
             if f.endswith(".pid")]


def test_a_worker_that_does_not_answer_is_listed_as_last_heard(srv):
    """A worker stopped (SIGSTOP) cannot answer CTL_QUERY: the supervisor
    answers after its wait with what it last heard."""
    import signal
    ws = _open(srv, "stopped", create_db=True)
    try:
        # the supervisor has heard from the worker (CTL_READY, then the
        # CTL_STATE of its client), as it has from any worker that ran
        # a while
        assert wait_for(lambda: _by_name(srv.db)["stopped"]
                        .attached_clients == 1, "the worker's state")
        os.kill(ws.pid, signal.SIGSTOP)
        try:
            got = _by_name(srv.db)["stopped"]
        finally:
            os.kill(ws.pid, signal.SIGCONT)
        assert got.worker_pid == ws.pid
        assert got.attached_clients == 1 and got.running_call is None
        # and the next listing is answered by the worker again
        assert _by_name(srv.db)["stopped"].attached_clients == 1
    finally:
        ws.close()


def test_an_older_server_is_named_with_how_to_restart_it(two, tmp_path):
    """A server that does not know SESSIONS refuses it as an older
    pyshelfd does (ERROR BAD_REQUEST, then it closes): the client says to
    restart it."""
    import socket as so
    path = str(tmp_path / "old.sock")
    lst = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    lst.bind(path)
    lst.listen(1)

    def frame(typ, rid, *fields):
        body = b"".join(struct.pack(">BI", t, len(d)) + d for t, d in fields)
        return struct.pack(">IHHQ", len(body), typ, 0, rid) + body

    def serve():
        c, _ = lst.accept()
        with c:
            h = c.recv(16)
            n, _, _, rid = struct.unpack(">IHHQ", h)
            c.recv(n)
            c.sendall(frame(0x2, rid, (1, struct.pack(">Q", 3)),
                            (23, struct.pack(">Q", 4242)),
                            (24, struct.pack(">Q", 1 << 20))))
            h = c.recv(16)
            n, _, _, rid = struct.unpack(">IHHQ", h)
            c.sendall(frame(0x7F00, 0, (20, struct.pack(">Q", 15)),
                            (16, b"after WELCOME the server takes ATTACH, "
                                 b"not an unknown type")))
    t = threading.Thread(target=serve)
    t.start()
    try:
        with pytest.raises(pyshelf.Error) as e:
            pyshelf.sessions(two, socket=path)
    finally:
        t.join(WAIT)
        lst.close()
    assert "older than this client" in str(e.value)
    assert "kill -TERM 4242" in str(e.value)
