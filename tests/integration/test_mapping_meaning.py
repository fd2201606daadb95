"""Handles and the mapping keep their meaning (issue 13, section 8): an
exception's handle is a WrappedExcinfo after a restart too; a Workspace
compares as a Mapping and passes CPython's mapping protocol suite; names
that cannot be stored are refused at once (or, bound by code, kept in
memory only without breaking the checkpoints of others); ws.lost() lists
damaged entries and those that hold them, and runs no pickle."""
import os
import pickle
import shutil
import tempfile

import pytest
from test import mapping_tests   # Debian: libpython3.11-testsuite

import pyshelf
from pyshelf import Wrapped, WrappedExcinfo
from restarts import MODES, restart, value


# --- 8a: an exception's handle keeps its kind --------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_excinfo_handle_keeps_its_kind_after_a_restart(tmp_path, mode):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s")
    exc = ws.remote_exec("raise KeyError('no such run: r7')")
    plain = ws.remote_exec("[1, 2]")
    assert isinstance(exc, WrappedExcinfo)
    eid, pid = exc.id, plain.id
    message = exc.message
    assert exc.exc_type == "KeyError" and "r7" in message
    # in this backend too (loaded): handles() says what the RESULT said
    found = {w.id: w for w in ws.handles()}
    assert isinstance(found[eid], WrappedExcinfo)
    ws = restart(ws, mode, db)
    try:
        found = {w.id: w for w in ws.handles()}
        w = found[eid]
        assert type(w) is WrappedExcinfo
        assert (w.exc_type, w.message, w.type_name) == ("KeyError", message,
                                                       "tuple")
        assert type(found[pid]) is Wrapped
        assert type(ws.handle(pid)) is Wrapped
        assert ws.handle(eid) is w           # one id, one object

        def describe(t):
            return DirectValue((t[0].__name__, str(t[1])))  # noqa: F821
        assert ws.remote_exec(describe, w).value == ("KeyError", message)
    finally:
        ws.close()
    # handle(id) on a fresh attach (nothing listed before) finds the kind
    ws = pyshelf.spawn(db=db, session="s")
    try:
        w = ws.handle(eid)
        assert type(w) is WrappedExcinfo and w.message == message
    finally:
        ws.close()


def test_excinfo_message_with_newlines_and_long_text(tmp_path):
    """The message is kept whole (newlines, non-ASCII) across a restart; a
    very long one is cut, not refused."""
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s")
    a = ws.remote_exec("raise ValueError('line one\\nline two: é')")
    b = ws.remote_exec("raise RuntimeError('x' * 100000)")
    ws = restart(ws, "kill", db)
    try:
        found = {w.id: w for w in ws.handles()}
        assert found[a.id].message == "line one\nline two: é"
        assert found[b.id].exc_type == "RuntimeError"
        assert found[b.id].message.startswith("x" * 1000)
        assert 1000 < len(found[b.id].message) < 100000
    finally:
        ws.close()


# --- 8b: Workspace equality is Mapping equality ----------------------------

def test_workspaces_compare_as_mappings(tmp_path):
    a = pyshelf.spawn(db=tmp_path / "a", session="s")
    b = pyshelf.spawn(db=tmp_path / "b", session="s")
    try:
        assert a == b and a == {} and not (a != b)
        a["x"] = [1, 2]
        assert a != b and a == {"x": [1, 2]} and {"x": [1, 2]} == a
        b.remote_exec("x = [1, 2]")
        assert a == b and not (a != b)
        b["y"] = 0
        assert a != b
        assert a != [("x", [1, 2])]          # not a Mapping
        assert a == a
        with pytest.raises(TypeError):
            hash(a)
        with pytest.raises(TypeError):
            {a}
    finally:
        a.close()
        b.close()


class TestWorkspaceMappingProtocol(mapping_tests.BasicTestMappingProtocol):
    """CPython's own mapping protocol tests, on Workspaces: each mapping
    the suite makes is a new Workspace on a new store (a real pyshelfd),
    closed when the test ends."""

    def setUp(self):
        self._dir = tempfile.mkdtemp(prefix="pyshelf-mapping-")
        self._spawned = []

    def tearDown(self):
        for ws in self._spawned:
            ws.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def type2test(self):
        ws = pyshelf.spawn(db=os.path.join(self._dir, "db%d" %
                                           len(self._spawned)),
                           session="t")
        self._spawned.append(ws)
        return ws


# --- 8c: names that cannot be persisted ------------------------------------

BAD_NAMES = ["", "__version__", "__name__", "x" * 10000, "é" * 241,
             "\udc80", "a\x00b"]


@pytest.mark.parametrize("name", BAD_NAMES,
                         ids=["empty", "user-dunder", "dunder", "long",
                              "long-utf8", "surrogate", "nul"])
def test_unstorable_names_are_refused_at_once(tmp_path, name):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s")
    try:
        with pytest.raises(ValueError) as ei:
            ws[name] = 1
        assert "name" in str(ei.value)
        # nor by binding a handle's object
        w = ws.remote_exec("[3]")
        with pytest.raises(ValueError):
            ws[name] = w
        assert name not in ws and name not in list(ws)
        with pytest.raises(KeyError):
            ws[name]
        with pytest.raises(KeyError):
            del ws[name]
        assert dict(ws) == {}
    finally:
        ws.close()


def test_the_longest_name_the_store_takes_is_kept(tmp_path):
    """The limit is the store's own (KEY_MAX bytes, from the backend): a
    name of that many bytes is a global like any other, one byte more is
    refused by the backend as a BAD_REQUEST."""
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s")
    key_max = value(ws, "DirectValue(__import__('_pyshelfd').KEY_MAX)")
    ws["k" * key_max] = "longest"
    with pytest.raises(ValueError) as ei:
        ws["k" * (key_max + 1)] = "too long"
    assert "%d bytes" % (key_max + 1) in str(ei.value)
    with pytest.raises(pyshelf.RemoteError) as ei:
        ws._conn.set("k" * (key_max + 1), pickle.dumps(1))
    assert ei.value.code_name == "BAD_REQUEST"
    with pytest.raises(pyshelf.RemoteError) as ei:
        ws._conn.set("", pickle.dumps(1))
    assert ei.value.code_name == "BAD_REQUEST"
    ws = restart(ws, "kill", db)
    try:
        assert dict(ws) == {"k" * key_max: "longest"}
    finally:
        ws.close()


@pytest.mark.stdio_only("volatile entries live on in the server's "
                         "worker across a detach, by design", mode="clean")
@pytest.mark.parametrize("mode", MODES)
def test_unstorable_global_bound_by_code_breaks_no_checkpoint(tmp_path, mode,
                                                              capfd):
    """A global bound by code under a name the store cannot take is kept
    in memory only (said so on stderr); another global that refers to its
    object holds it by value, and every later checkpoint works: a name of
    600 bytes, one past the refs blob's 16-bit length field (70,000
    bytes), and an empty one."""
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s")
    ws.remote_exec("g = globals()\n"
                   "g['x' * 600] = [1, 2]\n"
                   "g['z' * 70000] = {'k': 3}\n"
                   "g[''] = [5]\n"
                   "holder = {'a': g['x' * 600], 'b': g['z' * 70000],\n"
                   "          'c': g['']}\n"
                   "del g")
    ws.remote_exec("later = 42")
    ws["after"] = "set"
    ws.sync()
    err = capfd.readouterr().err
    assert "cannot be persisted" in err and "store's key limit" in err
    assert "cannot be empty" in err
    assert value(ws, "DirectValue(holder['a'] is globals()['x' * 600])")
    ws = restart(ws, mode, db)
    try:
        assert ws["holder"] == {"a": [1, 2], "b": {"k": 3}, "c": [5]}
        assert ws["later"] == 42 and ws["after"] == "set"
        assert sorted(ws) == ["after", "holder", "later"]
    finally:
        ws.close()


# --- 8d: ws.lost() ---------------------------------------------------------

def _flip(db, marker):
    """Flip one byte of the record that holds marker, in data.mdb."""
    path = os.path.join(db, "data.mdb")
    data = bytearray(open(path, "rb").read())
    at = data.find(marker.encode())
    assert at > 0
    data[at + 3] ^= 0x20
    with open(path, "r+b") as f:
        f.write(data)


@pytest.mark.parametrize("mode", MODES)
def test_lost_lists_a_damaged_entry_and_its_holders(tmp_path, mode):
    db = str(tmp_path / "db")
    marker = "CORRUPT-ME-" + "q" * 40
    ws = pyshelf.spawn(db=db, session="s")
    ws.remote_exec("victim = [%r]\n"
                   "holder = {'v': victim}\n"
                   "outer = [holder]\n"
                   "fine = [1, 2, 3]" % marker)
    ws.sync()
    if mode == "clean":
        ws.close()
    else:
        from restarts import kill_backend
        kill_backend(ws)
    _flip(db, marker)
    ws = pyshelf.spawn(db=db, session="s")
    try:
        lost = {x.name: x for x in ws.lost()}
        assert set(lost) == {"victim", "holder", "outer"}
        assert "damaged" in lost["victim"].reason
        assert lost["victim"].type_name == "list"
        assert "global 'victim'" in lost["holder"].reason
        assert lost["holder"].type_name == "dict"
        assert "global 'holder'" in lost["outer"].reason
        assert ws["fine"] == [1, 2, 3]
        # the listing loaded nothing: the others still work as before
        assert value(ws, "DirectValue(sum(fine))") == 6
        # once the damaged entry is rebound, it is no longer lost
        ws["victim"] = ["new"]
        assert "victim" not in {x.name for x in ws.lost()}
    finally:
        ws.close()


@pytest.mark.stdio_only("volatile entries live on in the server's "
                         "worker across a detach, by design", mode="clean")
@pytest.mark.parametrize("mode", MODES)
def test_lost_runs_no_pickle(tmp_path, mode):
    """A stored entry whose pickle would run a command when loaded: listing
    what is lost must not run it (nor list the entry: its record is
    intact); loading it is what runs it."""
    db = str(tmp_path / "db")
    flag = tmp_path / "ran"
    ws = pyshelf.spawn(db=db, session="s")
    ws.remote_exec(
        "import os\n"
        "class Boom:\n"
        "    def __reduce__(self):\n"
        "        return (os.system, ('touch %s',))\n"
        "boom = Boom()\n"
        "box = [boom]\n"
        "del Boom" % flag)
    ws.remote_exec("lock = __import__('threading').Lock()")
    ws = restart(ws, mode, db)
    try:
        lost = {x.name: x for x in ws.lost()}
        assert not flag.exists()
        assert "boom" not in lost and "box" not in lost
        assert "lock" in lost and "not persisted" in lost["lock"].reason
    finally:
        ws.close()


def _xxh3_128(data):
    """XXH3-128 of data as a record stores it (high64, low64 big-endian),
    through the system's libxxhash (the store's own hash)."""
    import ctypes
    import struct

    class H128(ctypes.Structure):
        _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_128bits.restype = H128
    lib.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    h = lib.XXH3_128bits(bytes(data), len(data))
    return struct.pack(">QQ", h.high64, h.low64)


def test_excinfo_record_written_before_lists_as_excinfo(tmp_path):
    """A store written before the type-name area held exc_type and message
    (an EXCINFO record whose type name is "tuple" alone) is read as before:
    the handle is a WrappedExcinfo (from its flags), with empty texts, and
    it works."""
    import lmdb
    import struct
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s")
    exc = ws.remote_exec("raise OSError('old')")
    hid = exc.id
    sid = bytes.fromhex(ws.session_id)
    ws.close()          # exc is alive: the handle is not released
    env = lmdb.open(db, max_dbs=8)
    with env.begin(write=True) as t:
        entries = env.open_db(b"entries", txn=t, create=False)
        key = sid + b"h" + struct.pack(">Q", hid)
        rec = bytes(t.get(key, db=entries))
        assert _xxh3_128(rec[:16] + rec[32:]) == rec[16:32]  # the layout
        tlen = struct.unpack(">I", rec[4:8])[0]
        assert rec[40:40 + tlen].split(b"\n")[:2] == [b"tuple", b"OSError"]
        old = bytearray(rec[:4] + struct.pack(">I", 5) + rec[8:40] +
                        b"tuple" + rec[40 + tlen:])
        old[16:32] = _xxh3_128(bytes(old[:16] + old[32:]))
        t.put(key, bytes(old), db=entries)
    env.close()
    ws = pyshelf.spawn(db=db, session="s")
    try:
        w = ws.handle(hid)
        assert type(w) is WrappedExcinfo
        assert (w.type_name, w.exc_type, w.message) == ("tuple", "", "")

        def text(t):
            return DirectValue(str(t[1]))  # noqa: F821
        assert ws.remote_exec(text, w).value == "old"
    finally:
        ws.close()


def test_lost_lists_what_holds_an_entry_whose_class_is_gone(tmp_path):
    """An intact record whose class is gone is found once something tried
    to load it (the listing runs no pickle); then it is listed, and so is
    the entry that holds it (loaded holding its Placeholder)."""
    db = str(tmp_path / "db")
    mod = tmp_path / "gone_for_lost_mod.py"
    mod.write_text("class Gone:\n    pass\n")
    ws = pyshelf.spawn(db=db, session="s")
    ws.remote_exec("import sys\nsys.path.insert(0, %r)\n"
                   "import gone_for_lost_mod\n"
                   "g = gone_for_lost_mod.Gone()\nholder = [g]\n"
                   "del gone_for_lost_mod" % str(tmp_path))
    ws.close()
    mod.unlink()
    ws = pyshelf.spawn(db=db, session="s")
    try:
        assert ws.lost() == []
        assert "Placeholder" in value(ws, "DirectValue(repr(holder))")
        lost = {x.name: x for x in ws.lost()}
        assert set(lost) == {"g", "holder"}
        assert lost["g"].type_name == "gone_for_lost_mod.Gone"
        assert "cannot import" in lost["g"].reason
        assert lost["holder"].reason == "it holds global 'g', which is lost"
    finally:
        ws.close()


def test_code_that_binds_a_dunder_is_told(tmp_path, capfd):
    """__version__ = '1.2' in shipped code binds a name of the backend's
    own namespace: not a workspace global (not listed, not persisted), and
    a notice says so, once per object; the interpreter's own module
    dunders (a docstring, annotations) are not reported."""
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s")
    ws.remote_exec("'''doc'''\nx: int = 1\n__version__ = '1.2'")
    ws.remote_exec("__version__ = __version__")          # same object
    ws.remote_exec("def f():\n    global __author__\n"
                   "    __author__ = 'me'\nf()")
    err = capfd.readouterr().err
    assert err.count("'__version__'") == 2     # one notice, named twice
    assert "'__author__' (str) cannot be persisted" in err
    assert "__doc__" not in err and "__annotations__" not in err
    assert sorted(ws) == ["f", "x"]
    ws = restart(ws, "clean", db)
    try:
        assert value(ws, "DirectValue('__version__' in globals())") is False
    finally:
        ws.close()
