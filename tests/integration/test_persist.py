"""Workspaces survive restarts of pyshelfd: clean ones and SIGKILL.

Every test builds state through the real client against the real backend,
restarts the backend (mode "clean": ws.close(); mode "kill": SIGKILL), and
checks the state from a new backend on the same store and session.
"""
import gc
import io
import os
import signal
import socket  # noqa: F401  (used by shipped code's pickles)
import time

import pytest

import pyshelf
from pyshelf import DirectValue, Wrapped, WrappedExcinfo
from restarts import MODES, restart, value


@pytest.mark.parametrize("mode", MODES)
def test_plain_values_survive(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("i = 42\ns = 'héllo wörld ✓'\n"
                   "nested = {'a': [1, 2, (3, 4)], 'b': {'c': None}, 'd': {1.5, 2.5}}")
    ws = restart(ws, mode, store, "s")
    try:
        assert ws["i"] == 42
        assert ws["s"] == "héllo wörld ✓"
        assert ws["nested"] == {"a": [1, 2, (3, 4)], "b": {"c": None},
                                "d": {1.5, 2.5}}
        assert value(ws, "DirectValue(i + 1)") == 43
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_code_defined_by_shipped_code_survives(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec(
        "class Point:\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "    def norm2(self):\n"
        "        return self.x * self.x + self.y * self.y\n"
        "p = Point(3, 4)\n"
        "double = lambda v: 2 * v\n"
        "scale = 10\n"
        "def scaled(v):\n"
        "    return v * scale\n")
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "DirectValue(p.norm2())") == 25
        assert value(ws, "DirectValue(type(p) is Point)") is True
        assert value(ws, "DirectValue(double(21))") == 42
        # functions keep the workspace as their globals after a restart
        ws.remote_exec("scale = 3")
        assert value(ws, "DirectValue(scaled(2))") == 6
        assert value(ws, "DirectValue(Point(1, 1).norm2())") == 2
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_identity_between_entries_survives(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("a = []\nc = {'x': a}")
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "DirectValue(c['x'] is a)") is True
        ws.remote_exec("a.append(1)")
        assert value(ws, "DirectValue(c['x'])") == [1]
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_numpy_array_survives_and_stays_writable(store, mode):
    import numpy as np
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import numpy as np\narr = np.arange(100000, dtype=np.float64)")
    ws = restart(ws, mode, store, "s")
    try:
        arr = ws["arr"]
        assert isinstance(arr, np.ndarray)
        assert arr.shape == (100000,) and arr[-1] == 99999.0
        assert value(ws, "arr[0] = 7.0\nDirectValue(float(arr.sum()))") == \
            float(np.arange(100000).sum()) + 7.0
    finally:
        ws.close()


def get_tbstringlist(excinfo):
    import traceback
    return DirectValue(traceback.format_exception(*excinfo))


@pytest.mark.parametrize("mode", MODES)
def test_note_test_split_across_restart(store, mode):
    ws = pyshelf.spawn(db=store, session="s")

    def remote1():
        raise ValueError("before the restart")
    res = ws.remote_exec(remote1)
    assert isinstance(res, WrappedExcinfo)
    hid = res.id
    ws = restart(ws, mode, store, "s")
    try:
        h = ws.handle(hid)
        assert isinstance(h, WrappedExcinfo) or isinstance(h, Wrapped)
        res = ws.remote_exec(get_tbstringlist, h)
        assert isinstance(res, DirectValue)
        lines = res.value
        for x in lines:
            assert isinstance(x, str)
        text = "".join(lines)
        assert "ValueError: before the restart" in text
        assert "remote1" in text
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_handles_from_before_the_restart_work_after_it(store, mode):
    """The Wrapped objects a client holds from before the backend's restart
    are handles of the same session: passed to the new workspace, they
    work (the note's test with the WrappedExcinfo kept across); a handle
    of another session is refused."""
    ws = pyshelf.spawn(db=store, session="s")

    def remote1():
        raise ValueError("before the restart")

    def make():
        return [1, 2, 3]
    err = ws.remote_exec(remote1)
    lst = ws.remote_exec(make)
    assert isinstance(err, WrappedExcinfo)
    ws = restart(ws, mode, store, "s")
    other = pyshelf.spawn(db=store, session="other")
    try:
        lines = ws.remote_exec(get_tbstringlist, err).value
        assert "ValueError: before the restart" in "".join(lines)

        def total(xs):
            return DirectValue(sum(xs))
        assert ws.remote_exec(total, lst).value == 6
        with pytest.raises(ValueError):
            other.remote_exec(total, lst)
    finally:
        other.close()
        ws.close()


@pytest.mark.stdio_only("volatile entries live on in the server's "
                         "worker across a detach, by design", mode="clean")
@pytest.mark.parametrize("mode", MODES)
def test_volatile_objects_are_reported(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    err = io.StringIO()
    ws.remote_exec("import socket\nsock = socket.socket()\n"
                   "gen = (i for i in range(3))\nkeep = 'ok'", stderr=err)
    text = err.getvalue()
    assert "sock" in text and "gen" in text
    ws = restart(ws, mode, store, "s")
    try:
        assert ws["keep"] == "ok"
        res = ws.remote_exec("sock")
        assert isinstance(res, WrappedExcinfo)
        assert "sock" in res.message and "socket" in res.message
        lost = {item[0]: item for item in ws.lost()}
        assert "sock" in lost and "gen" in lost
        assert "pickle" in lost["sock"][2]
        ws.remote_exec("sock = 'bound again'")    # no longer lost
        assert [item[0] for item in ws.lost()] == ["gen"]
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_hundred_mb_value(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("big = bytes(range(256)) * (100 * 1024 * 1024 // 256)")
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "DirectValue((len(big), big[:4], big[-1]))") == \
            (100 * 1024 * 1024, b"\x00\x01\x02\x03", 255)
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_hundred_thousand_small_globals(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("globals().update({'g%d' % i: i for i in range(100000)})")
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "DirectValue(g0 + g99999 + g4242)") == 99999 + 4242
        assert len(ws) == 100000
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_mapping_api_survives(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws["x"] = {"k": [1, 2, 3]}
    ws["y"] = "text"
    ws["z"] = 3
    del ws["z"]
    ws = restart(ws, mode, store, "s")
    try:
        assert ws["x"] == {"k": [1, 2, 3]}
        assert "y" in ws and "z" not in ws
        assert sorted(ws) == ["x", "y"]
        assert len(ws) == 2
        with pytest.raises(KeyError):
            ws["z"]
        ws.remote_exec("import socket\ns = socket.socket()")
        with pytest.raises(pyshelf.Error) as ei:
            ws["s"]
        assert "wrap" in str(ei.value)
        w = ws.wrap("s")
        assert isinstance(w, Wrapped) and "socket" in w.type_name
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_handles_survive(store, mode):
    ws = pyshelf.spawn(db=store, session="s")

    def make():
        return {"payload": list(range(5))}
    h = ws.remote_exec(make)
    assert isinstance(h, Wrapped) and h.type_name == "dict"
    hid = h.id
    ws = restart(ws, mode, store, "s")
    try:
        ids = {w.id: w for w in ws.handles()}
        assert hid in ids and ids[hid].type_name == "dict"

        def peek(d):
            return DirectValue(d["payload"])
        assert ws.remote_exec(peek, ws.handle(hid)).value == [0, 1, 2, 3, 4]
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_one_checkpoint_of_many_globals_and_handles(store, mode):
    """ws.sync() pickles every loaded mutable entry in one checkpoint, in
    the order of the objects' addresses, globals and handles mixed: each
    record keeps its own key and object, and the exception handles
    written before keep theirs."""
    ws = pyshelf.spawn(db=store, session="s")

    def make(i):
        return {"h": i, "log": []}

    def fail(i):
        raise ValueError("failure %d" % i)
    kept = [ws.remote_exec(make, i) for i in range(40)]
    errs = [ws.remote_exec(fail, i) for i in range(5)]
    hids = [w.id for w in kept]
    ws.remote_exec("g = {'g%d' % i: {'g': i, 'log': []} for i in range(40)}\n"
                   "globals().update(g)\ndel g")

    def touch_all(*hs):
        for h in hs:
            h["log"].append(h["h"])
        for i in range(40):
            globals()["g%d" % i]["log"].append(-i)
    ws.remote_exec(touch_all, *kept)
    ws.sync()
    ws = restart(ws, mode, store, "s")
    try:
        for i in range(40):
            assert ws["g%d" % i] == {"g": i, "log": [-i]}

        def peek(d):
            return DirectValue(d)
        for i, hid in enumerate(hids):
            assert ws.remote_exec(peek, ws.handle(hid)).value == \
                {"h": i, "log": [i]}
        for i, e in enumerate(errs):
            text = "".join(ws.remote_exec(get_tbstringlist,
                                          ws.handle(e.id)).value)
            assert "ValueError: failure %d" % i in text
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_large_new_buffers_digest_in_the_copy(store, mode):
    """A new entry of 1 MiB or more gets its content digest from the copy
    into the store, in the same pass: it must be the digest a later
    checkpoint computes, so that the unchanged entry is not written again,
    and the changed one is.  A numpy array (the pickler's path) and a
    bytearray (the plain writer's)."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import numpy as np\n"
                   "big = np.arange(300000, dtype=np.float64)\n"
                   "blob = bytearray(range(256)) * 8192")
    n0 = ws.stats()["entries_written"]
    ws.sync()                         # pickles both again: unchanged
    assert ws.stats()["entries_written"] == n0
    ws.remote_exec("big[7] = -1.0\nblob[9] = 0")
    ws.sync()
    assert ws.stats()["entries_written"] == n0 + 2
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "DirectValue((float(big[7]), float(big[-1]), "
                         "big.shape))") == (-1.0, 299999.0, (300000,))
        assert value(ws, "DirectValue((blob[9], blob[10], len(blob)))") == \
            (0, 10, 256 * 8192)
        n1 = ws.stats()["entries_written"]
        ws.sync()                     # loaded from the store: unchanged
        assert ws.stats()["entries_written"] == n1
    finally:
        ws.close()


def test_checkpoint_leaves_the_gc_as_it_was(store):
    """The cyclic GC is off while a checkpoint runs, and as user code left
    it afterwards."""
    ws = pyshelf.spawn(db=store, session="s")
    try:
        ws.remote_exec("import gc\nx = [list(range(10)) for _ in range(100)]")
        assert value(ws, "DirectValue(gc.isenabled())") is True
        ws.remote_exec("gc.disable()\ny = [[i] for i in range(100)]")
        assert value(ws, "DirectValue(gc.isenabled())") is False
        ws.sync()
        assert value(ws, "DirectValue(gc.isenabled())") is False
        ws.remote_exec("gc.enable()\nz = [[i] for i in range(100)]")
        ws.sync()
        assert value(ws, "DirectValue(gc.isenabled())") is True
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_looking_at_handles_after_a_restart_keeps_them(store, mode):
    """A new client finds the handles with ws.handles(); looking at them,
    and dropping what it looked at, must not release them (they are the
    session's, not this client's); ws.release() does, for good."""
    ws = pyshelf.spawn(db=store, session="s")

    def make(n):
        return {"payload": list(range(n))}
    kept = [ws.remote_exec(make, n) for n in (2, 3)]
    hid, hid2 = (w.id for w in kept)
    ws = restart(ws, mode, store, "s")
    try:
        assert {hid, hid2} <= {w.id for w in ws.handles()}
        gc.collect()
        ws.remote_exec("x = 1")          # would carry queued releases
        assert {hid, hid2} <= {w.id for w in ws.handles()}

        def peek(d):
            return DirectValue(d["payload"])
        assert ws.remote_exec(peek, ws.handle(hid)).value == [0, 1]
        gc.collect()
        ws.release(ws.handle(hid2))
        assert hid2 not in {w.id for w in ws.handles()}
    except BaseException:
        ws.close()
        raise
    ws = restart(ws, mode, store, "s")
    try:
        ids = {w.id for w in ws.handles()}
        assert hid in ids and hid2 not in ids
        assert ws.remote_exec(peek, ws.handle(hid)).value == [0, 1]
    finally:
        ws.close()


def test_in_place_mutation_caught_by_sync(store):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("lst = []")
    ws.remote_exec("lst.append(1)")   # a request that mutates in place
    ws.sync()
    ws = restart(ws, "kill", store, "s")
    try:
        assert ws["lst"] == [1]
    finally:
        ws.close()


def test_class_gone_loads_as_placeholder(store, tmp_path):
    mod = tmp_path / "gone_mod.py"
    mod.write_text("class Gone:\n    pass\n")
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import sys\nsys.path.insert(0, %r)\nimport gone_mod\n"
                   "obj = gone_mod.Gone()\nfine = [1, 2]" % str(tmp_path))
    ws.close()
    mod.unlink()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert ws["fine"] == [1, 2]
        res = ws.remote_exec("DirectValue(repr(obj))")
        assert isinstance(res, DirectValue)
        assert "Gone" in res.value and "Placeholder" in res.value
        lost = {item[0]: item for item in ws.lost()}
        assert "obj" in lost and "Gone" in lost["obj"][1]
    finally:
        ws.close()


def test_unchanged_entries_are_not_rewritten(store):
    ws = pyshelf.spawn(db=store, session="s")
    try:
        ws.remote_exec("data = list(range(1000))")
        s1 = ws.stats()
        ws.remote_exec("x = 1")
        ws.sync()
        s2 = ws.stats()
        assert s2["entries_written"] - s1["entries_written"] <= 2
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_rebinding_a_referenced_global_keeps_the_referrer(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("a = [1]\nc = {'x': a}\nd = {'y': a}")
    ws.remote_exec("a = 'rebound'")       # c and d still hold the old list
    ws = restart(ws, mode, store, "s")
    try:
        assert ws["a"] == "rebound"
        assert ws["c"] == {"x": [1]}
        assert ws["d"] == {"y": [1]}
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_del_of_a_global_not_loaded_since_the_restart(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import socket\na = [1]\nb = 2\nsock = socket.socket()\n"
                   "keep = 'k'\nc1 = [1]\nc2 = {2: 2}\n"
                   "def stored_drop():\n    global c2\n    del c2\n",
                   stderr=io.StringIO())
    ws = restart(ws, mode, store, "s")
    try:
        # shipped code's del finds the stored global without using it
        # first, a volatile one included; the mapping's del too; and so
        # does a function's `global x; del x`, shipped now or stored
        res = ws.remote_exec("def drop():\n    global c1\n    del c1\n"
                             "drop()\nstored_drop()\ndel drop")
        assert isinstance(res, DirectValue), res
        res = ws.remote_exec("del a\ndel sock\ndel socket\ndel stored_drop")
        assert isinstance(res, DirectValue), res
        del ws["b"]
        res = ws.remote_exec("del nothing_here")
        assert isinstance(res, WrappedExcinfo)
        assert res.exc_type == "NameError" and "nothing_here" in res.message
        with pytest.raises(KeyError):
            del ws["nothing_here"]
        assert sorted(ws.keys()) == ["keep"]
        assert ws.lost() == []
    finally:
        ws.close()
    ws = restart(pyshelf.spawn(db=store, session="s"), mode, store, "s")
    try:
        assert sorted(ws.keys()) == ["keep"]
        assert value(ws, "DirectValue('a' in globals() or 'sock' in "
                         "globals())") is False
        assert [item[0] for item in ws.lost()] == []
    finally:
        ws.close()


@pytest.mark.stdio_only("volatile entries live on in the server's "
                         "worker across a detach, by design", mode="clean")
@pytest.mark.parametrize("mode", MODES)
def test_globals_know_stored_names_after_a_restart(store, mode):
    """globals() counts the stored globals before they are used: `in`,
    get(), setdefault(), pop(), iteration, len(), keys() and dir()."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import socket\ndf = [1, 2]\ncount = 3\nbig = list(range(9))\n"
                   "sock = socket.socket()", stderr=io.StringIO())
    ws = restart(ws, mode, store, "s")
    try:
        # the usual idiom must not redo the work and overwrite the value
        ws.remote_exec("if 'df' not in globals():\n    df = 'recomputed'\n"
                       "if 'sock' not in globals():\n    sock = 'new'")
        assert ws["df"] == [1, 2] and ws["sock"] == "new"
        assert value(ws, "DirectValue(('count' in globals(), "
                         "'nothing' in globals(), globals().get('count'), "
                         "globals().get('nothing', 7), "
                         "globals().setdefault('big', 0)[-1], "
                         "globals().setdefault('fresh', 5)))") == \
            (True, False, 3, 7, 8, 5)
        assert value(ws, "DirectValue(globals().pop('count'))") == 3
        names = value(ws, "DirectValue(sorted(k for k in globals() "
                          "if not k.startswith('__')))")
        assert names == ["big", "df", "fresh", "sock", "socket"]
        assert value(ws, "DirectValue((len(globals()) == len(list(globals())),"
                         " sorted(dir()) == sorted(globals().keys())))") == \
            (True, True)
    finally:
        ws.close()
    ws = restart(pyshelf.spawn(db=store, session="s"), mode, store, "s")
    try:
        assert sorted(ws.keys()) == ["big", "df", "fresh", "sock", "socket"]
        # clear() clears the globals not loaded yet too
        ws.remote_exec("globals().clear()\nkept = 1")
        assert sorted(ws.keys()) == ["kept"]
    finally:
        ws.close()
    ws = restart(pyshelf.spawn(db=store, session="s"), mode, store, "s")
    try:
        assert sorted(ws.keys()) == ["kept"]
    finally:
        ws.close()


def test_released_handle_referenced_by_a_global(store):
    ws = pyshelf.spawn(db=store, session="s")

    def make():
        return [7, 8]

    def keep(h):
        global kept
        kept = {"h": h}
    h = ws.remote_exec(make)
    ws.remote_exec(keep, h)
    del h                                  # released with the next request
    ws.remote_exec("pass")
    ws.sync()
    ws = restart(ws, "kill", store, "s")
    try:
        assert ws["kept"] == {"h": [7, 8]}
    finally:
        ws.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_by_signal_loses_nothing(store, sig):
    """SIGTERM/SIGINT are clean shutdowns: even in-place mutations, which
    only the full checkpoint sees, are written before the backend exits."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("lst = []")
    ws.remote_exec("lst.append('mutated in place')")
    pid = ws.pid
    os.kill(pid, sig)
    deadline = time.time() + 120
    status = None
    while time.time() < deadline:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break
        if got == pid:
            break
        time.sleep(0.02)
    if status is not None:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    try:
        ws.close()
    except pyshelf.Error:
        pass
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert ws["lst"] == ["mutated in place"]
    finally:
        ws.close()


def test_sigterm_interrupts_running_code_then_saves(store, tmp_path):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("before = 1")
    import threading
    res = {}
    running = tmp_path / "running"

    def run():
        try:
            res["r"] = ws.remote_exec(
                "import time\nopen(%r, 'w').close()\n"
                "while True:\n    time.sleep(0.01)" % str(running))
        except pyshelf.Error as e:
            res["e"] = e
    t = threading.Thread(target=run)
    t.start()
    # the signal must find the code running: wait until it says so (no
    # guess of how long that takes on a busy machine)
    deadline = time.time() + 120
    while not running.exists() and time.time() < deadline:
        time.sleep(0.01)
    os.kill(ws.pid, signal.SIGTERM)
    t.join(120)
    assert not t.is_alive()
    assert "r" in res and isinstance(res["r"], WrappedExcinfo), res
    try:
        ws.close()
    except pyshelf.Error:
        pass
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert ws["before"] == 1
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_cycles_between_globals_load(store, mode):
    """Globals that refer to each other (a cycle of records) come back,
    every edge of the cycle with its identity: the cycle's objects are
    pickled together in one record (test_identity.py has more)."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec(
        "class Node:\n"
        "    def __init__(self, name, parent=None):\n"
        "        self.name, self.parent, self.children = name, parent, []\n"
        "root = Node('root')\n"
        "kid = Node('kid', root)\n"
        "root.children.append(kid)\n"
        "a = []\nb = [a]\na.append(b)\n")
    ws = restart(ws, mode, store, "s")
    try:
        got = ws.remote_exec(
            "DirectValue((kid.parent.name, root.children[0].name,"
            " kid.parent is root and root.children[0] is kid,"
            " len(a), len(b), a[0] is b and b[0] is a))").value
        assert got == ("root", "kid", True, 1, 1, True)
    finally:
        ws.close()


def test_loaded_entries_are_not_rewritten(store):
    """The digest computed when an entry is loaded equals the one of its
    next pickling: a full checkpoint after a restart writes nothing back
    (plain data and out-of-band numpy buffers alike)."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import numpy as np\narr = np.arange(1000)\n"
                   "lst = [1, {'k': 'v'}]")
    ws.close()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        ws.remote_exec("arr, lst")
        before = ws.stats()["entries_written"]
        ws.sync()
        assert ws.stats()["entries_written"] - before <= 1  # the result handle
    finally:
        ws.close()


# --- modules bound as globals --------------------------------------------------

MODULES_SRC = ("import numpy as np\nimport os.path as osp\nimport json, sys\n"
               "from xml import dom\nimport collections.abc\n")
MODULES_CHECK = ("DirectValue((np is sys.modules['numpy'], "
                 "osp is sys.modules[os.path.__name__], "
                 "json is sys.modules['json'], dom is sys.modules['xml.dom'], "
                 "collections is sys.modules['collections'], "
                 "'cloudpickle' in sys.modules, 'tblib' in sys.modules))")


@pytest.mark.parametrize("mode", MODES)
def test_modules_by_name_without_cloudpickle(store, mode):
    """Importable modules are pickled by name by the stdlib pickler: the
    checkpoint after a request's imports loads neither cloudpickle nor
    tblib, and after a restart each global is the module itself."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec(MODULES_SRC + "import os")
    assert ws.stats()["entries_written"] >= 6
    assert value(ws, MODULES_CHECK) == (True,) * 5 + (False, False)
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "import os\n" + MODULES_CHECK) == \
            (True,) * 5 + (False, False)
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_modules_not_importable_by_name(store, mode):
    """Modules the stdlib pickler refuses go to cloudpickle as before: one
    made at run time (no spec) is stored by value; one that is not what
    sys.modules holds under its name too."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import types\n"
                   "dyn = types.ModuleType('dyn')\ndyn.x = 41\n"
                   "fake = types.ModuleType('json')\nfake.y = 'not json'\n")
    assert value(ws, "import sys\nDirectValue('cloudpickle' in sys.modules)")
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "import sys\nDirectValue((dyn.x, fake.y, "
                     "fake is sys.modules.get('json')))") == \
            (41, "not json", False)
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_module_named_like_a_real_one_stays_itself(store, mode):
    """A module made at run time under the name of a real module keeps its
    own contents when the real one is imported too before a checkpoint
    (cloudpickle alone would store it as a reference to the real one)."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import types\n"
                   "fake = types.ModuleType('json')\nfake.y = 'not json'\n"
                   "box = [types.ModuleType('email')]\nbox[0].z = 3\n")
    ws.sync()
    ws.remote_exec("import json, email\nfake.y += '!'\nbox[0].z += 1\n")
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "import sys\nDirectValue((fake.y, box[0].z, "
                     "fake is sys.modules.get('json'), "
                     "box[0] is sys.modules.get('email')))") == \
            ("not json!", 4, False, False)
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_copyreg_reducers_of_shipped_code_apply(store, mode):
    """Reducers registered by shipped code with copyreg.pickle, before or
    after the backend's first checkpoint, are used for the globals that
    follow, including one for modules, which overrides pyshelf's."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("x = 1")
    ws.remote_exec("import copyreg, fractions, types\n"
                   "copyreg.pickle(fractions.Fraction, "
                   "lambda f: (str, (str(f),)))\n"
                   "fr = fractions.Fraction(1, 3)\n")
    ws.remote_exec("copyreg.pickle(types.ModuleType, "
                   "lambda m: (str, ('module ' + m.__name__,)))\n"
                   "import json")
    ws = restart(ws, mode, store, "s")
    try:
        assert value(ws, "DirectValue((fr, json))") == \
            ("1/3", "module json")
    finally:
        ws.close()
