"""Every way shipped code can bind, rebind or delete a global reaches the
store.

The workspace's Namespace notes the names written through it (STORE_NAME
and DELETE_NAME of shipped blocks, ns[k] = v, update()), so a checkpoint
only looks at those; a write that goes around it (a function's `global`
statement, dict methods called on globals(), dict.__setitem__) must make
the next checkpoint compare every global.  Each test writes one way, then
the backend is restarted (cleanly, or with SIGKILL right after the
request's checkpoint), and a new backend must see the write.
"""

import pytest

import pyshelf
from restarts import kill_backend

# (setup block, write block, check expression, expected value)
WRITES = {
    "block assignment": ("", "x = 5", "x", 5),
    "block augmented": ("x = 1", "x += 41", "x", 42),
    "block del": ("x = 1\ny = 2", "del x", "'x' in globals(), y", (False, 2)),
    "block for target": ("", "for x in range(3): pass", "x", 2),
    "block import": ("", "import json as x", "x.__name__", "json"),
    "block def": ("", "def x():\n    return 7", "x()", 7),
    "function global": ("def f():\n    global x\n    x = 9",
                        "f()", "x", 9),
    "function global rebind": ("x = [1]\ndef f():\n    global x\n"
                               "    x = [2]", "f()", "x", [2]),
    "function global del": ("x = 1\ny = 2\ndef f():\n    global x\n"
                            "    del x", "f()", "'x' in globals(), y",
                            (False, 2)),
    "globals() item": ("", "globals()['x'] = 'v'", "x", "v"),
    "globals() item del": ("x = 1", "del globals()['x']",
                           "'x' in globals()", False),
    "update dict": ("", "globals().update({'x': 1, 'y': 2})", "(x, y)",
                    (1, 2)),
    "update keywords": ("", "globals().update(x=3)", "x", 3),
    "update pairs": ("", "globals().update([('x', 4)])", "x", 4),
    "update mapping": ("import types",
                       "globals().update(types.MappingProxyType({'x': 6}))",
                       "x", 6),
    "setdefault": ("", "globals().setdefault('x', 8)", "x", 8),
    "pop": ("x = 1", "globals().pop('x')", "'x' in globals()", False),
    "dict.__setitem__": ("", "dict.__setitem__(globals(), 'x', 10)", "x",
                         10),
    "exec into globals": ("", "exec('x = 11', globals())", "x", 11),
    "bypass then tracked": ("def f():\n    global x\n    x = 12",
                            "f()\ny = 13", "(x, y)", (12, 13)),
    "tracked then bypass": ("def f():\n    global y\n    y = 15",
                            "x = 14\nf()", "(x, y)", (14, 15)),
}


@pytest.mark.parametrize("mode", ["clean", "kill"])
@pytest.mark.parametrize("how", sorted(WRITES))
def test_write_survives_restart(tmp_path, backend, how, mode):
    setup, write, check, want = WRITES[how]
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="t", backend=backend)
    if setup:
        ws.remote_exec(setup)
    ws.remote_exec(write)
    assert ws.remote_exec("DirectValue((%s))" % check).value == want
    if mode == "clean":
        ws.close()
    else:
        kill_backend(ws)
    ws = pyshelf.spawn(db=db, session="t", backend=backend)
    try:
        assert ws.remote_exec("DirectValue((%s))" % check).value == want
    finally:
        ws.close()


def test_loaded_globals_are_not_written_back(tmp_path, backend):
    """Globals loaded on first use enter the namespace without counting as
    writes: using them writes nothing."""
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="t", backend=backend)
    ws.remote_exec("globals().update({'g%d' % i: [i] for i in range(100)})")
    ws.close()
    ws = pyshelf.spawn(db=db, session="t", backend=backend)
    try:
        total = ws.remote_exec("DirectValue(sum(globals()['g%d' % i][0] "
                               "for i in range(100)))").value
        assert total == sum(range(100))
        assert ws.stats()["entries_written"] == 0
        ws.remote_exec("g5.append(-1)\nz = 1")
        # z, and g5: the request named it (its checkpoint re-pickles it)
        assert ws.stats()["entries_written"] == 2
        ws.sync()
        assert ws.stats()["entries_written"] == 2
    finally:
        ws.close()


def test_writes_through_the_namespace_skip_the_full_diff(gw):
    """With 2,000 globals, a block's assignment makes the checkpoint look
    at that name only; a function's `global` write (around the Namespace)
    makes the next one compare every global, once."""
    gw.remote_exec("globals().update({'g%d' % i: [i] for i in range(2000)})")
    gw.remote_exec("def f(v):\n    global viaf\n    viaf = v")
    before = gw.stats()["namespace_diffs"]
    gw.remote_exec("a = 1")
    gw.remote_exec("b = [a]\ndel a")
    gw.remote_exec("globals().update({'c': 3})")
    after = gw.stats()["namespace_diffs"]
    assert after["tracked"] == before["tracked"] + 3
    assert after["full"] == before["full"]
    gw.remote_exec("f(4)")
    after2 = gw.stats()["namespace_diffs"]
    assert after2["full"] == after["full"] + 1
    gw.remote_exec("d = 5")
    after3 = gw.stats()["namespace_diffs"]
    assert after3["full"] == after2["full"]
    assert after3["tracked"] == after2["tracked"] + 1
    assert gw.remote_exec("DirectValue((b, 'a' in globals(), c, viaf, d))"
                          ).value == ([1], False, 3, 4, 5)
