"""A full store never locks the workspace (issue 13, section 7).

Two kinds of full: a 20 MB tmpfs under the store (the disk is full), and a
store on a normal disk with --map-max.  After a checkpoint did not fit,
reads, deletes and small writes go on; the error names what was not
written and its size; once there is room (a del, or space freed outside
pyshelf) the next checkpoint writes what is pending; close() commits what
fits and raises DetachError naming what did not.  Each is checked across a
real restart."""
import hashlib
import os
import subprocess

import pytest

import pyshelf
from conftest import SERVER_MODE
from restarts import MODES, kill_backend, value

# (how the store is made full, bytes of one big value): two big values do
# not fit, one does, with room to spare for small ones
KINDS = [("tmpfs", 12 * 1000 * 1000), ("map-max", 5 * 1000 * 1000)]
MAP_MAX = ["--map-max", "8M"]


def dump_check(db):
    """pyshelf-dump --check on the store: exit status 0 when it is sound
    (no record refers to a missing entry, every digest verifies)."""
    tool = os.environ.get("PYSHELF_DUMP") or os.path.join(
        os.path.dirname(os.environ["PYSHELFD"]), "pyshelf-dump")
    return subprocess.run([tool, "--db", db, "--check"], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def full_db(request, tmp_path):
    """(store directory, spawn args, big size, tmpfs mount or None)."""
    kind, big = request.param
    if kind == "map-max":
        yield str(tmp_path / "db"), MAP_MAX, big, None
        return
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs",
                    str(mnt)], check=True)
    try:
        yield str(mnt / "db"), [], big, str(mnt)
    finally:
        # a backend left running (a failed test) holds files open: lazy
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(db, args, big, session="s"):
    """A workspace holding 'kept' and one big value 'big' (committed),
    where a second big value 'big2' (and 'holder', which refers to it)
    did not fit.  Returns (ws, the RemoteError, sha256 of big2)."""
    ws = pyshelf.spawn(db=db, session=session, args=args)
    ws["kept"] = list(range(100))
    ws.remote_exec("import os, hashlib\nbig = os.urandom(%d)" % big)
    with pytest.raises(pyshelf.RemoteError) as ei:
        ws.remote_exec("big2 = bytearray(os.urandom(%d))\n"
                       "holder = [big2, 'h']" % big)
    digest = value(ws, "DirectValue(hashlib.sha256(big2).hexdigest())")
    return ws, ei.value, digest


def spawn(db, args, session="s"):
    return pyshelf.spawn(db=db, session=session, args=args)


def _restart(ws, mode, db, args):
    """restarts.restart, with the backend's args."""
    if mode == "clean":
        ws.close()
    else:
        kill_backend(ws)
    return spawn(db, args)


def present(ws, name):
    return value(ws, "DirectValue(%r in globals())" % name)


@pytest.mark.parametrize("full_db", KINDS, indirect=True, ids=["tmpfs",
                                                               "map-max"])
def test_error_names_what_was_not_written(full_db):
    db, args, big, _mnt = full_db
    ws, err, _ = fill(db, args, big)
    try:
        assert err.code_name == "STORE"
        text = str(err)
        assert "checkpoint incomplete" in text
        assert "global 'big2' (%.1f MB)" % ((big + 44) / 1e6) in text or \
            "global 'big2' (%.1f MB)" % (big / 1e6) in text, text
        # held back with it: its record would refer to a missing entry
        assert "global 'holder' (" in text
        assert "held back: it refers to global 'big2'" in text
        assert "everything else is committed" in text
        if args:
            assert "--map-max 8M" in text
        else:
            assert "the disk is full" in text
        # the request's own effect stays in memory
        assert value(ws, "DirectValue((len(big2), holder[0] is big2))") == \
            (big, True)
    finally:
        with pytest.raises(pyshelf.DetachError, match="global 'big2'"):
            ws.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("full_db", KINDS, indirect=True, ids=["tmpfs",
                                                               "map-max"])
def test_reads_and_small_writes_go_on(full_db, mode):
    db, args, big, _mnt = full_db
    ws, _err, _ = fill(db, args, big)
    # reads: no error, for as long as the store stays full
    assert ws["kept"] == list(range(100))
    assert value(ws, "DirectValue(len(kept))") == 100
    assert value(ws, "DirectValue(len(big2))") == big
    assert "kept" in ws
    # small writes commit (each request's checkpoint), by SET and by code
    ws["small"] = "s1"
    ws.remote_exec("small2 = {'a': [1, 2, 3]}")
    ws.remote_exec("kept = kept + [100]")
    # a later request's record that refers to the unwritten entry waits
    # for it too, named; the request's other globals commit
    with pytest.raises(pyshelf.RemoteError) as ei:
        ws.remote_exec("h2 = [big2]\nsmall3 = 3")
    assert "global 'h2'" in str(ei.value)
    assert "global 'small3'" not in str(ei.value)
    assert value(ws, "DirectValue(h2[0] is big2)") is True
    if mode == "clean":
        # close() says what it could not write; the rest is there
        with pytest.raises(pyshelf.DetachError) as ei:
            ws.close()
        assert "global 'big2'" in str(ei.value), str(ei.value)
        assert "global 'h2'" in str(ei.value), str(ei.value)
    else:
        kill_backend(ws)
    chk = dump_check(db)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    # Through a server, close() detaches and the worker keeps what was
    # not written (it does not hibernate while it does): the client that
    # comes back finds it, and its close() still cannot write it.
    kept = SERVER_MODE and mode == "clean"
    ws = spawn(db, args)
    try:
        assert ws["kept"] == list(range(101))
        assert ws["small"] == "s1"
        assert ws["small2"] == {"a": [1, 2, 3]}
        assert ws["small3"] == 3
        assert value(ws, "DirectValue(len(big))") == big
        # held back, not half written: neither is there, and no record
        # refers to a missing entry (unless kept, above)
        assert present(ws, "big2") is kept
        assert present(ws, "holder") is kept
        assert present(ws, "h2") is kept
        assert ws.lost() == []
    finally:
        if kept:
            with pytest.raises(pyshelf.DetachError, match="global 'big2'"):
                ws.close()
        else:
            ws.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("full_db", KINDS, indirect=True, ids=["tmpfs",
                                                               "map-max"])
def test_del_makes_room_for_what_is_pending(full_db, mode, capfd):
    db, args, big, _mnt = full_db
    ws, _err, digest = fill(db, args, big)
    ws["small"] = 1
    with pytest.raises(pyshelf.RemoteError):
        ws.remote_exec("h2 = [big2]")
    # a del that does not free enough is no error of its own: it is
    # committed, and what is still pending is a notice
    ws["gone"] = "g"
    capfd.readouterr()
    del ws["gone"]
    notice = capfd.readouterr().err
    assert "still pending" in notice and "global 'big2'" in notice
    # the del's checkpoint deletes first, then writes what was pending
    del ws["big"]
    ws = _restart(ws, mode, db, args)
    try:
        assert not present(ws, "big")
        assert value(ws, "import hashlib\n"
                     "DirectValue(hashlib.sha256(big2).hexdigest())") == \
            digest
        # one object, as before the restart
        assert value(ws, "DirectValue(holder[0] is big2 and "
                     "h2[0] is big2)") is True
        assert ws["small"] == 1
        assert "gone" not in ws
        assert ws["kept"] == list(range(100))
        assert ws.lost() == []
    finally:
        ws.close()


@pytest.mark.parametrize("full_db", [KINDS[0]], indirect=True,
                         ids=["tmpfs"])
def test_space_freed_outside_pyshelf(full_db):
    db, args, big, mnt = full_db
    ws = spawn(db, args)
    try:
        ws["kept"] = [1, 2, 3]
        ws.remote_exec("import os, hashlib\nmid = os.urandom(%d)" %
                       (big // 2))
        # another program fills the disk
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        # while the disk is full, a small write is refused by name, and
        # reads go on
        with pytest.raises(pyshelf.RemoteError) as ei:
            ws["tiny"] = list(range(50000))
        assert "global 'tiny'" in str(ei.value)
        assert ws["kept"] == [1, 2, 3]
        with pytest.raises(pyshelf.RemoteError) as ei:
            ws.remote_exec("more = os.urandom(%d)" % (big // 2))
        assert "global 'more'" in str(ei.value)
        assert "the disk is full" in str(ei.value)
        digest = value(ws, "DirectValue(hashlib.sha256(more).hexdigest())")
        # still full: sync() says so again, naming it
        with pytest.raises(pyshelf.RemoteError) as ei:
            ws.sync()
        assert "global 'more'" in str(ei.value)
        os.unlink(filler)
        ws.sync()        # writes what is pending
    finally:
        kill_backend(ws)
    ws = spawn(db, args)
    try:
        assert value(ws, "import hashlib\n"
                     "DirectValue(hashlib.sha256(more).hexdigest())") == \
            digest
        assert ws["kept"] == [1, 2, 3]
        assert ws["tiny"] == list(range(50000))
    finally:
        ws.close()


@pytest.mark.stdio_only("the backend's stderr (the client's pipe) and returncode at close()")
@pytest.mark.parametrize("full_db", KINDS, indirect=True, ids=["tmpfs",
                                                               "map-max"])
def test_close_while_full_commits_what_fits(full_db, capfd):
    db, args, big, _mnt = full_db
    ws, _err, _ = fill(db, args, big)
    ws.remote_exec("after = 'a'")
    ws["after2"] = 2
    ws.remote_exec("kept.append('x')")   # caught by close()'s checkpoint
    capfd.readouterr()
    with pytest.raises(pyshelf.DetachError) as ei:
        ws.close()
    err = capfd.readouterr().err
    assert "checkpoint incomplete" in err
    assert "global 'big2'" in err and "global 'holder'" in err
    assert ws.returncode != 0
    # and close() said the same, with where it is: lost with the backend
    e = ei.value
    assert e.pid is None and e.returncode == ws.returncode
    assert "checkpoint incomplete" in str(e)
    assert "global 'big2'" in str(e) and "global 'holder'" in str(e)
    assert str(e).endswith("(exit status %d): what it could not save is "
                           "lost." % ws.returncode), str(e)
    ws = spawn(db, args)
    try:
        assert ws["after"] == "a"
        assert ws["after2"] == 2
        assert ws["kept"] == list(range(100)) + ["x"]
        assert value(ws, "DirectValue(len(big))") == big
        assert not present(ws, "big2")
    finally:
        ws.close()


@pytest.mark.parametrize("full_db", [KINDS[1]], indirect=True,
                         ids=["map-max"])
def test_long_chain_of_references_waits_then_follows(full_db):
    """3,000 records, each referring to the next, the last to a value that
    does not fit: all wait (no record may point at a missing entry), and
    all are written once there is room, in an order the references
    allow."""
    db, args, big, _mnt = full_db
    ws = spawn(db, args)
    ws.remote_exec("import os, hashlib\nbig = os.urandom(%d)" % big)
    with pytest.raises(pyshelf.RemoteError) as ei:
        ws.remote_exec("big2 = bytearray(os.urandom(%d))\n"
                       "prev = big2\n"
                       "for i in range(3000):\n"
                       "    prev = [prev]\n"
                       "    globals()['n%%d' %% i] = prev\n"
                       "del prev\n" % big)
    # named (the first ten, biggest first) and counted
    assert "global 'big2' (" in str(ei.value)
    assert "2990 more held back: they refer to entries not written" in \
        str(ei.value)
    digest = value(ws, "DirectValue(hashlib.sha256(big2).hexdigest())")
    del ws["big"]          # room: big2, holder and the chain follow
    kill_backend(ws)
    chk = dump_check(db)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    ws = spawn(db, args)
    try:
        assert value(ws, "import hashlib\n"
                     "DirectValue(hashlib.sha256(big2).hexdigest())") == \
            digest
        assert value(ws, "DirectValue((n0[0] is big2, n1[0] is n0, "
                     "'n2999' in globals()))") == (True, True, True)
    finally:
        ws.close()


@pytest.mark.parametrize("full_db", [KINDS[0]], indirect=True,
                         ids=["tmpfs"])
def test_disk_that_fills_half_way_through_a_commit(full_db):
    """A disk with room for part of a checkpoint: LMDB writes some of its
    pages and fails the commit as EIO (a short write).  That is the full
    disk it is: what fits is committed, the rest is named, and reads,
    small writes and close() go on as with any full disk."""
    db, args, big, mnt = full_db
    ws = spawn(db, args)
    try:
        ws["before"] = 1
        filler = os.path.join(mnt, "filler")
        v = os.statvfs(mnt)
        with open(filler, "wb") as f:
            f.write(b"\0" * (v.f_bfree * v.f_frsize - 1000 * 1000))
        failed = []
        for i in range(8):   # 300 kB of small records each, no blob file
            try:
                ws.remote_exec("g%d = [%r * 100 for _ in range(3000)]"
                               % (i, str(i)))
            except pyshelf.RemoteError as e:
                assert "global 'g%d'" % i in str(e)
                assert "the disk is full" in str(e)
                assert "I/O error" not in str(e)
                failed.append(i)
        assert failed        # some did not fit
        assert ws["before"] == 1
        ws["tiny"] = 2
        assert sorted(ws.keys()) == sorted(
            ["before", "tiny"] + ["g%d" % i for i in range(8)])
        os.unlink(filler)
        ws.sync()            # room again: what was pending is written
    finally:
        kill_backend(ws)
    ws = spawn(db, args)
    try:
        assert ws["tiny"] == 2 and ws["before"] == 1
        for i in range(8):
            assert value(ws, "DirectValue(len(g%d))" % i) == 3000
    finally:
        ws.close()
    assert dump_check(db).returncode == 0
