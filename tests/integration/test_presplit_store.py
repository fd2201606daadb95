"""A store written before the backend's Python half was split into modules
loads after it, and what the backend writes names the same paths.

data/presplit-store.mdb is the data.mdb of a store that the pyshelfd of
main at 05fdb80 wrote (exec/backend.py still one module), by
data/make_presplit_store.py: session "old", globals whose pickles name
_pyshelf_backend._rebuild_ws_function (a function of shipped code),
_pyshelf_backend.setrecursionlimit (the backend's own), pyshelf.DirectValue,
pyshelf.checkpoint, pyshelf.EntryGroup and pyshelf.group_member (a cycle),
a module by name, references between entries, and two handles: 1, the
object of the global holder, and 2, a ZeroDivisionError (tblib).

Paths: $PYSHELFD and $PYSHELF_DUMP (set by `make check`).
"""
import os
import shutil
import subprocess

import pytest

import pyshelf
from pyshelf import DirectValue
from restarts import MODES, restart, value

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "data", "presplit-store.mdb")


@pytest.fixture
def old_store(tmp_path):
    """A copy of the store the pre-split pyshelfd wrote."""
    db = tmp_path / "db"
    db.mkdir(mode=0o700)
    shutil.copyfile(FIXTURE, db / "data.mdb")
    os.chmod(db / "data.mdb", 0o600)
    return str(db)


def _check_old_entries(ws, norm=7):
    """Every entry of the pre-split store, loaded and used (norm: p's)."""
    assert value(ws, "DirectValue(twice(21))") == 42
    assert value(ws, "DirectValue((type(p) is Point, p.norm1()))") == \
        (True, norm)
    assert value(ws, "import sys\nDirectValue(srl is sys.setrecursionlimit)") \
        is True
    assert value(ws, "DirectValue((type(dv) is DirectValue, dv.value))") == \
        (True, [1, 2])
    assert value(ws, "import pyshelf\nDirectValue((cp is checkpoint, "
                     "cp is pyshelf.checkpoint))") == (True, True)
    assert value(ws, "import sys\n"
                     "DirectValue((mod is sys.modules['json'], mod is json))") \
        == (True, True)
    assert value(ws, "DirectValue(holder['s'] is shared)") is True
    assert value(ws, "DirectValue((ring_a[1] is ring_b, ring_b[1] is ring_a, "
                     "ring_a[0], ring_b[0]))") == (True, True, "a", "b")


def _holds_holder(h):
    return DirectValue(h is holder)  # noqa: F821 (the workspace's)


@pytest.mark.parametrize("mode", MODES)
def test_presplit_store_loads(old_store, mode):
    ws = pyshelf.spawn(db=old_store, session="old")
    try:
        _check_old_entries(ws)
        hs = {h.id: h for h in ws.handles()}
        assert sorted(hs) == [1, 2]
        assert isinstance(hs[2], pyshelf.WrappedExcinfo)
        assert (hs[2].exc_type, hs[2].message) == ("ZeroDivisionError",
                                                   "division by zero")
        assert ws.remote_exec(_holds_holder, ws.handle(1)).value is True
        assert ws.lost() == []
        # written again by this backend (an in-place change marks them),
        # then read back by a new one
        ws.remote_exec("shared.append(4)\np.x = 5\nring_a.append(0)\n"
                       "twice.note = 1\nNone")
        ws = restart(ws, mode, old_store, "old")
        assert value(ws, "DirectValue((holder['s'], p.norm1(), "
                         "ring_a[2], twice.note, twice(2)))") == \
            ([1, 2, 3, 4], 9, 0, 1, 4)
        _check_old_entries(ws, 9)
        assert ws.lost() == []
    finally:
        ws.close()


def _loads(db, key):
    """The globals that key's record loads by name (pyshelf-dump)."""
    r = subprocess.run([os.environ["PYSHELF_DUMP"], "--db", db, "s", key],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("loads ")]
    assert len(line) == 1, r.stdout
    return line[0].split(None, 1)[1].split(", ")


def test_written_records_name_the_same_paths(store):
    """Records this backend writes name the backend's objects by the paths
    of the pre-split backend (_pyshelf_backend.*, pyshelf.*), so that an
    older pyshelfd can load them and the store's format does not change."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import sys\ndef twice(x):\n    return 2 * x\n"
                   "srl = sys.setrecursionlimit\n"
                   "cp = checkpoint\ndv = DirectValue(1)\n"
                   "ring_a = ['a']\nring_b = ['b', ring_a]\n"
                   "ring_a.append(ring_b)\n")
    ws.close()
    assert "_pyshelf_backend._rebuild_ws_function" in _loads(store, "twice")
    assert _loads(store, "srl") == ["_pyshelf_backend.setrecursionlimit"]
    assert _loads(store, "cp") == ["pyshelf.checkpoint"]
    assert _loads(store, "dv") == ["pyshelf.DirectValue"]
    assert "pyshelf.group_member" in _loads(store, "ring_b") + \
        _loads(store, "ring_a")
