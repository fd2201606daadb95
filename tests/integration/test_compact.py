"""pyshelf-dump --compact: the space an ended session freed goes back to the
file system, and nothing else changes.

The stores are written by ``pyshelfd --stdio`` through the raw protocol
driver of test_dump.py (no client library, no server: a store with no
process left on it once each backend has exited).  Run by hand:

    PYSHELF_DUMP=$BUILD/pyshelf-dump PYSHELFD=$BUILD/pyshelfd \\
        /usr/bin/python3 -m pytest tests/integration/test_compact.py
"""
import os
import struct

import pytest

from test_dump import Backend, dump, rows, _field

CLOSE, OK = 0x122, 0x1F0
MB = 1 << 20


def _data(db):
    return os.path.getsize(os.path.join(db, "data.mdb"))


def _ok(b, code):
    """Run a block that must not raise (an exception comes back as a
    WrappedExcinfo: kind 3)."""
    f = b.run(code)
    assert struct.unpack(">Q", f[12][0])[0] != 3, f
    return f


def _close_session(b):
    """CLOSE: the session ends and its entries are purged before the
    reply; the backend then exits."""
    t, f = b.request(CLOSE)
    assert t == OK, (t, f)
    b.p.stdin.close()
    assert b.p.wait(timeout=300) == 0


@pytest.fixture
def swept(tmp_path):
    """A store with two live sessions (one with a blob file) and a 100 MB
    session that was ended and purged: its pages are free in data.mdb."""
    db = tmp_path / "db"
    keep = Backend(db, "keep")
    keep.run("small = list(range(1000))\nname = 'kept'\n"
             "import os\nblob = bytes(range(256)) * 8192\n")   # 2 MiB: a file
    keep.detach()
    other = Backend(db, "other")
    other.run("d = {'k': [1.5, None, 'x' * 3000]}")
    other.detach()
    big = Backend(db, "big")
    # 2,000 globals of 50 KB: in the map (under the 1 MiB blob size)
    big.run("import os\n"
            "for i in range(2000):\n"
            "    globals()['g%d' % i] = os.urandom(50000)\n")
    _close_session(big)
    return db


def test_compact_gives_the_space_back(swept):
    db = str(swept)
    blobs = sorted(os.listdir(os.path.join(db, "blobs")))
    assert blobs, "the 2 MiB global should have gone to a blob file"
    before = _data(db)
    assert before > 100 * MB
    r = dump("--compact", "--json", db=db, check=0)
    row = rows(r.stdout, "compact")[0]
    assert row["before"] == before
    after = _data(db)
    assert row["after"] == after and row["freed"] == before - after
    assert before - after > 90 * MB, (before, after)
    assert row["blob_files"] == len(blobs)
    # blob files kept; no temporary copy left behind
    assert sorted(os.listdir(os.path.join(db, "blobs"))) == blobs
    assert not os.path.exists(os.path.join(db, "data.mdb.compact"))
    dump("--check", "-q", db=db, check=0)
    # every live session intact: values read back, and written again
    keep = Backend(db, "keep")
    _ok(keep, "assert sum(small) == 499500 and name == 'kept'\n"
        "assert blob == bytes(range(256)) * 8192\n")
    _ok(keep, "small.append(1)\nnew = 7")
    keep.detach()
    other = Backend(db, "other")
    _ok(other, "assert d == {'k': [1.5, None, 'x' * 3000]}, d")
    other.detach()
    dump("--check", "-q", db=db, check=0)
    names = {s["name"]: s for s in rows(dump("--sessions", "--json",
                                             db=db, check=0).stdout,
                                        "session")}
    assert set(names) == {"keep", "other"}
    # small, name, os, blob, new; the blob file counted at its size
    assert names["keep"]["entries"] == 5
    assert names["keep"]["bytes"] > 2 * MB


def test_compact_refused_while_a_backend_has_the_store_open(swept):
    db = str(swept)
    before = _data(db)
    b = Backend(db, "keep")
    try:
        r = dump("--compact", db=db, check=2)
        assert "open in another process" in r.stderr
        assert "pid %d" % b.p.pid in r.stderr
        assert _data(db) == before
        # the backend goes on writing, unharmed
        _ok(b, "x = 1")
    finally:
        b.detach()
    dump("--compact", db=db, check=0)
    assert _data(db) < before


def test_compact_refused_while_a_reader_has_the_store_open(swept, tmp_path):
    import lmdb
    db = str(swept)
    env = lmdb.open(db, readonly=True, max_dbs=16, lock=True)
    try:
        r = dump("--compact", db=db, check=2)
        assert "open in another process (pid %d" % os.getpid() in r.stderr
    finally:
        env.close()


def test_compact_refuses_a_damaged_store(swept):
    db = str(swept)
    path = os.path.join(db, "data.mdb")
    with open(path, "r+b") as f:        # page 2 is a B-tree page: its
        f.seek(2 * 4096 + 12)           # free-space bounds go wrong
        f.write(struct.pack("<HH", 0xFFF0, 0x0010))
    before = _data(db)
    r = dump("--compact", db=db, check=1)
    assert "damaged" in r.stderr and "--check" in r.stderr
    assert _data(db) == before


def test_compact_needs_a_store(tmp_path):
    r = dump("--compact", db=tmp_path, check=2)
    assert "no data.mdb" in r.stderr
    r = dump("--compact", "--check", db=tmp_path, check=2)
    assert "--compact" in r.stderr
