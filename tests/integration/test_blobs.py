"""Large values in blob files (docs/STORAGE.md, "Blob files"): a payload of
1 MiB or more is written to <db>/blobs/<32 hex digits> instead of into
data.mdb.  Through the Python client, across real restarts of pyshelfd:
the files appear, are replaced and removed with their entries, survive both
kinds of restart, are checked when loaded, and go with a dead session."""
import json
import os
import re
import subprocess
import time

import pytest

import pyshelf
from pyshelf import DirectValue, WrappedExcinfo
from restarts import MODES, restart, value

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def blob_files(db):
    d = os.path.join(db, "blobs")
    return sorted(f for f in os.listdir(d) if HEX32.match(f))


def settled(db, n):
    """The blob files once there are n of them (waiting up to 10 s: the
    backend unlinks the files its commits dropped when it is idle, after
    the reply)."""
    deadline = time.time() + 120
    while len(blob_files(db)) != n and time.time() < deadline:
        time.sleep(0.005)
    return blob_files(db)


@pytest.mark.parametrize("mode", MODES)
def test_large_values_live_in_files(store, mode):
    ws = pyshelf.spawn(db=store, session="s", sync="always")
    ws.remote_exec("import numpy as np\n"
                   "arr = np.arange(1 << 20, dtype=np.float64)\n"  # 8 MiB
                   "raw = bytes(range(256)) * (3 << 12)\n"         # 3 MiB
                   "small = list(range(100))")
    first = settled(store, 2)
    assert len(first) == 2
    sizes = sorted(os.path.getsize(os.path.join(store, "blobs", f))
                   for f in first)
    assert sizes[0] >= 3 << 20 and sizes[1] >= 8 << 20
    # the map holds the records only
    assert os.path.getsize(os.path.join(store, "data.mdb")) < 3 << 20
    ws = restart(ws, mode, store)
    try:
        assert value(ws, "DirectValue((float(arr.sum()), arr.shape, "
                       "arr.flags.writeable))") \
            == (float(sum(range(1 << 20))), (1 << 20,), True)
        assert value(ws, "DirectValue(raw == bytes(range(256)) * "
                         "(3 << 12))") is True
        assert ws["small"] == list(range(100))
        # loaded and unchanged: not written again
        ws.remote_exec("n = 1")
        assert blob_files(store) == first
        # a new value: a new file, the old one removed
        ws.remote_exec("arr = np.ones(1 << 20)")
        now = settled(store, 2)
        assert len(now) == 2 and len(set(now) & set(first)) == 1
        # in place, written at the next sync
        ws.remote_exec("arr[7] = 42.0")
        ws.sync()
        assert len(settled(store, 2)) == 2 and settled(store, 2) != now
        ws.remote_exec("del raw")
        assert len(settled(store, 1)) == 1
    finally:
        ws = restart(ws, mode, store)
    try:
        assert value(ws, "DirectValue((float(arr[7]), float(arr.sum())))") == \
            (42.0, float((1 << 20) - 1 + 42))
        assert "raw" not in ws
        assert len(settled(store, 1)) == 1
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_mapping_api_and_handles_with_large_values(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    try:
        ws["blob"] = b"\x07" * (2 << 20)
        h = ws.remote_exec("bytearray(b'z' * (5 << 20))")
        hid = h.id
        assert len(settled(store, 2)) == 2
    finally:
        ws = restart(ws, mode, store)
    try:
        assert ws["blob"] == b"\x07" * (2 << 20)
        h = ws.handle(hid)
        assert h.type_name == "bytearray"

        def peek(x):
            return DirectValue((len(x), bytes(x[:3])))
        assert ws.remote_exec(peek, h).value == (5 << 20, b"zzz")
        ws.release(h)
        assert len(settled(store, 1)) == 1
        del ws["blob"]
        assert settled(store, 0) == []
    finally:
        ws.close()


def test_damaged_blob_file_is_an_error_and_the_rest_loads(store):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("victim = b'v' * (2 << 20)\nfine = [1, 2, 3]")
    ws.close()
    (name,) = blob_files(store)
    path = os.path.join(store, "blobs", name)
    with open(path, "r+b") as f:
        f.seek(12345)
        c = f.read(1)
        f.seek(12345)
        f.write(bytes([c[0] ^ 0x40]))
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert ws["fine"] == [1, 2, 3]
        res = ws.remote_exec("victim")
        assert isinstance(res, WrappedExcinfo)
        assert "corrupt" in res.message and "victim" in res.message
        with pytest.raises(pyshelf.RemoteError) as ei:
            ws["victim"]
        assert ei.value.code_name == "STORE" and "victim" in str(ei.value)
        # rebinding it writes a good file
        ws.remote_exec("victim = b'w' * (2 << 20)")
    finally:
        ws.close()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert value(ws, "DirectValue(victim == b'w' * (2 << 20))") is True
        assert len(settled(store, 1)) == 1
    finally:
        ws.close()


def test_missing_blob_file_is_an_error(store):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("gone = b'g' * (2 << 20)\nkept = 'k'")
    ws.close()
    for f in blob_files(store):
        os.unlink(os.path.join(store, "blobs", f))
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert ws["kept"] == "k"
        with pytest.raises(pyshelf.RemoteError) as ei:
            ws["gone"]
        assert ei.value.code_name == "STORE" and "gone" in str(ei.value)
    finally:
        ws.close()


def test_orphan_files_are_removed_when_a_backend_opens_the_store(store):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("x = b'x' * (2 << 20)")
    ws.close()
    # what a crash between writing a file and its commit leaves behind
    orphan = os.path.join(store, "blobs", "ab" * 16)
    with open(orphan, "wb") as f:
        f.write(b"half a value")
    other = os.path.join(store, "blobs", "README")
    open(other, "w").close()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert not os.path.exists(orphan)
        assert os.path.exists(other)      # not ours: left alone
        assert value(ws, "DirectValue(x == b'x' * (2 << 20))") is True
    finally:
        ws.close()


def test_a_dead_sessions_files_are_purged(store):
    ws = pyshelf.spawn(db=store, session="short", args=["--lease", "1"])
    ws.remote_exec("a = b'a' * (2 << 20)\nb = b'b' * (3 << 20)")
    ws.close()
    ws = pyshelf.spawn(db=store, session="other")
    ws.remote_exec("c = b'c' * (2 << 20)")
    ws.close()
    assert len(settled(store, 3)) == 3
    time.sleep(1.5)
    # a backend starting sweeps the expired session, files and all
    ws = pyshelf.spawn(db=store, session="other")
    try:
        assert value(ws, "DirectValue(c == b'c' * (2 << 20))") is True
        assert len(settled(store, 1)) == 1
    finally:
        ws.close()


def test_map_max_bounds_the_files_too(tmp_path, backend):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", args=["--map-max", "8M"])
    try:
        ws.remote_exec("a = b'a' * (5 << 20)")
        with pytest.raises(pyshelf.RemoteError) as ei:
            ws.remote_exec("b = b'b' * (5 << 20)")
        assert "full" in str(ei.value) and ei.value.code_name == "STORE"
        assert len(settled(db, 1)) == 1
        ws.remote_exec("del b\ndel a")
        ws.remote_exec("b = b'b' * (5 << 20)")
    finally:
        ws.close()
    ws = pyshelf.spawn(db=db, session="s")
    try:
        assert "a" not in ws
        assert value(ws, "DirectValue(b == b'b' * (5 << 20))") is True
    finally:
        ws.close()


DUMP = os.environ.get("PYSHELF_DUMP")


def dump(*args, check):
    r = subprocess.run([DUMP] + list(args), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def test_dump_shows_and_checks_blob_files(store):
    assert DUMP, "PYSHELF_DUMP is not set"
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("big = b'q' * (2 << 20)\nsmall = 1")
    ws.close()
    (name,) = blob_files(store)
    r = dump("--db", store, "s", "big", check=0)
    assert "blobs/" + name in r.stdout
    rows = [json.loads(x) for x in
            dump("--db", store, "--json", "s", "big", check=0)
            .stdout.splitlines()]
    (entry,) = [x for x in rows if x.get("row") == "entry"]
    assert entry["blob"] == "blobs/" + name
    assert entry["payload_size"] > 2 << 20 and entry["digest_ok"]
    listed = [json.loads(x) for x in
              dump("--db", store, "--json", "s", check=0).stdout.splitlines()]
    (big,) = [x for x in listed if x.get("name") == "big"]
    assert big["blob"] is True and big["size"] > 2 << 20
    r = dump("--db", store, "--check", check=0)
    assert "sound" in r.stdout
    path = os.path.join(store, "blobs", name)
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"Z")
    r = dump("--db", store, "--check", check=1)
    assert "DAMAGED" in r.stdout and "blobs/" + name in r.stdout
    dump("--db", store, "s", "big", check=1)
    os.unlink(path)
    r = dump("--db", store, "--check", check=1)
    assert "blobs/" + name in r.stdout and "No such file" in r.stdout
