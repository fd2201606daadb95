"""The durability promise (issue 13, sections 1-3): every in-place change
is written, whatever kind of object holds it; a request's checkpoint holds
the in-place changes of what it could reach by name; long-running code
commits with checkpoint().

Each test changes objects in place, then ends the backend both ways
(ws.close(), or SIGKILL) and reads the objects back from a new one.
"""
import os
import signal
import threading
import time

import pytest

import pyshelf
from pyshelf import DirectValue

from restarts import MODES, kill_backend, restart, value


def spawn(db, **kw):
    # no interval checkpoint: what survives is what the requests (or
    # sync/close) wrote
    kw.setdefault("checkpoint_interval", 0)
    return pyshelf.spawn(db=db, session="s", **kw)


# --- 1. in-place changes inside "immutable" objects ---------------------------

CHANGES = [
    # (set-up block, change block, expression, expected value)
    ("run = ({'auc': None}, [])",
     "run[0]['auc'] = 0.91; run[1].append('e1')",
     "run", ({"auc": 0.91}, ["e1"])),
    ("import collections\nP = collections.namedtuple('P', 'name tags')\n"
     "p = P('a', [])",
     "p.tags.append('t')",
     "(p.name, p.tags)", ("a", ["t"])),
    ("class Member:\n"
     "    def __init__(self): self.state = 0\n"
     "fs = frozenset([Member()])",
     "next(iter(fs)).state = 5",
     "next(iter(fs)).state", 5),
    ("class Registry:\n    items = []\n    threshold = 0.5",
     "Registry.items.append('m1'); Registry.threshold = 0.7",
     "(Registry.items, Registry.threshold)", (["m1"], 0.7)),
    ("def fn(): return 1\nfn.cache = []",
     "fn.cache.append(1); fn.calls = 3",
     "(fn.cache, fn.calls)", ([1], 3)),
    ("import types\nm = types.ModuleType('m')\nm.x = 1",
     "m.x = 2; m.y = [3]",
     "(m.x, m.y)", (2, [3])),
    ("t = (1, (2, 'x'), frozenset([3]))",
     "t2 = t + (4,)",
     "(t, t2)", ((1, (2, "x"), frozenset([3])), (1, (2, "x"), frozenset([3]), 4))),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(CHANGES)))
def test_in_place_change_inside_immutable_after_sync(tmp_path, case, mode):
    """Changes made through a tuple, a namedtuple, a frozenset member, a
    class, a function or a module, by a request that does not name the
    global's holder directly... are written by sync() (and by close())."""
    setup, change, expr, want = CHANGES[case]
    db = tmp_path / "db"
    ws = spawn(db)
    ws.remote_exec(setup)
    # the change runs in a function of the workspace that the request
    # does not name: only the full checkpoint of sync() can catch it
    ws.remote_exec("def _later():\n" +
                   "".join("    global %s\n" % n for n in ("run", "p", "fs",
                                                            "Registry", "fn",
                                                            "m", "t2")) +
                   "".join("    %s\n" % line for line in change.split("\n")))
    ws.remote_exec("import threading\n"
                   "_t = threading.Thread(target=globals()['_later'])\n"
                   "_t.start(); _t.join(); del _t")
    ws.sync()
    ws = restart(ws, mode, db)
    try:
        assert value(ws, "DirectValue(%s)" % expr) == want
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_in_place_change_inside_tuple_by_request(tmp_path, mode):
    """The request that names the tuple writes the change in its own
    checkpoint: SIGKILL right after its reply keeps it."""
    db = tmp_path / "db"
    ws = spawn(db)
    ws.remote_exec("run = ({'auc': None}, [])")
    ws.remote_exec("run[0]['auc'] = 0.91; run[1].append('e1')")
    ws = restart(ws, mode, db)
    try:
        assert value(ws, "DirectValue(run)") == ({"auc": 0.91}, ["e1"])
    finally:
        ws.close()


def test_unchanged_entries_are_not_rewritten(tmp_path):
    """sync() after sync() writes nothing: tuples of atoms, functions,
    classes and modules, now pickled by every full checkpoint, are written
    only when their pickle changed."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec("import types, math\n"
                       "t = tuple(range(100)) + (('a', 1.5),)\n"
                       "u = (1, [2])\ndef f(): return 1\n"
                       "class C:\n    x = [1]\n"
                       "m = types.ModuleType('m'); m.v = {1: 2}")
        ws.sync()
        before = ws.stats()["entries_written"]
        ws.sync()
        ws.sync()
        assert ws.stats()["entries_written"] == before
    finally:
        ws.close()


# --- 2. a request's in-place changes are part of its checkpoint ---------------

def test_request_in_place_changes_survive_sigkill(tmp_path):
    """SIGKILL just after a reply: every in-place change that request made
    to globals it named is there, with the bindings it made (never half
    of a request)."""
    db = tmp_path / "db"
    ws = spawn(db)
    ws.remote_exec("import numpy as np\narr = np.zeros((4, 4))\n"
                   "lst = [1]\nd = {'a': {'b': 1}}")
    ws.close()
    ws = spawn(db)          # loaded from the store, then changed
    ws.remote_exec("arr[0, 0] = 12345; lst.append(2); d['a']['b'] = -7; "
                   "x_new = 42")
    ws = restart(ws, "kill", db)
    try:
        assert value(ws, "DirectValue((float(arr[0, 0]), lst, d, x_new))") \
            == (12345.0, [1, 2], {"a": {"b": -7}}, 42)
    finally:
        ws.close()


def test_request_reaches_through_workspace_functions(tmp_path):
    """A request that calls a workspace function (or a method of a shipped
    class, or of an instance of one) has the changes that code made to the
    globals it names in its checkpoint, transitively."""
    db = tmp_path / "db"
    ws = spawn(db)
    ws.remote_exec(
        "history = []\nlog = []\ncounts = {'n': 0}\n"
        "def note(x):\n    log.append(x)\n"
        "def record(x):\n    history.append(x)\n    note(x)\n"
        "class Sim:\n"
        "    def step(self):\n        counts['n'] += 1\n"
        "    @staticmethod\n    def reset():\n        counts['n'] = 100\n"
        "sim = Sim()\n")
    ws.remote_exec("record(1)")
    ws.remote_exec("sim.step(); sim.step()")

    def via_function():
        record(2)                        # noqa: F821 (a workspace global)
    ws.remote_exec(via_function)
    ws = restart(ws, "kill", db)
    try:
        assert value(ws, "DirectValue((history, log, counts))") == \
            ([1, 2], [1, 2], {"n": 2})
        ws.remote_exec("Sim.reset()")
        ws = restart(ws, "kill", db)
        assert value(ws, "DirectValue(counts)") == {"n": 100}
    finally:
        ws.close()


def test_request_reaches_through_other_entries(tmp_path):
    """An object reached through another entry's object (c['x'] is the
    global a) is part of the checkpoint of the request that changed it."""
    db = tmp_path / "db"
    ws = spawn(db)
    ws.remote_exec("a = []\nc = {'x': a}")
    ws.close()
    ws = spawn(db)
    ws.remote_exec("c['x'].append('via c')")
    ws = restart(ws, "kill", db)
    try:
        assert value(ws, "DirectValue((a, c['x'] is a))") == (["via c"], True)
    finally:
        ws.close()


def test_handle_argument_changes_survive_sigkill(tmp_path):
    db = tmp_path / "db"
    ws = spawn(db)
    h = ws.remote_exec("[1]")
    hid = h.id

    def push(xs):
        xs.append(2)
    ws.remote_exec(push, h)
    ws = restart(ws, "kill", db)
    try:
        def get(xs):
            return DirectValue(xs)
        assert ws.remote_exec(get, ws.handle(hid)).value == [1, 2]
    finally:
        ws.close()


# Every kind of change a request can make, each by a request of its own
# right before SIGKILL: the worker decides in C, without the Python half,
# that a request changed nothing (dispatch.c, the no-op request's path),
# and none of these may look like nothing.
def _rebind():
    global x                             # noqa: F824
    x = 5


def _push(xs):
    xs.append(2)


REQUEST_CHANGES = [
    # (id, set-up block, the change: a block, a function or
    # (function, handle-making block), expression, expected value)
    ("rebind in a function", "x = 1", _rebind, "x", 5),
    ("rebind in a block", "x = 1", "x = 6", "x", 6),
    ("new global through globals()", "", "globals()['y'] = [7]", "y", [7]),
    ("delete a global", "x = 1; z = 2", "del x",
     "(globals().get('x'), z)", (None, 2)),
    ("in place through a handle", "", (_push, "[1]"), None, [1, 2]),
    ("in place inside a tuple", "t = ([],)", "t[0].append(1)", "t", ([1],)),
    ("in place inside a class",
     "class C:\n    items = []\n    k = 1",
     "C.items.append(1); C.k = 2", "(C.items, C.k)", ([1], 2)),
    ("in place inside a closure",
     "def mk():\n    box = []\n    def add(v):\n        box.append(v)\n"
     "    return add\nadd = mk()",
     "add(5)", "add.__closure__[0].cell_contents", [5]),
    ("a module's attribute",
     "import types\nm = types.ModuleType('m')\nm.x = 1",
     "m.x = 2; m.y = [3]", "(m.x, m.y)", (2, [3])),
    ("an import binding a module", "", "import json as jj", "jj.__name__",
     "json"),
]


@pytest.mark.parametrize("case", REQUEST_CHANGES, ids=[c[0] for c in
                                                       REQUEST_CHANGES])
def test_each_kind_of_request_change_survives_sigkill(tmp_path, case):
    _, setup, change, expr, want = case
    db = tmp_path / "db"
    ws = spawn(db)
    if setup:
        ws.remote_exec(setup)
    ws.remote_exec("pass")          # a no-op request between: nothing
    hid = None
    if isinstance(change, tuple):
        h = ws.remote_exec(change[1])
        hid = h.id
        ws.remote_exec(change[0], h)
    else:
        ws.remote_exec(change)
    ws = restart(ws, "kill", db)    # right after the reply
    try:
        if hid is not None:
            def get(xs):
                return DirectValue(xs)
            assert ws.remote_exec(get, ws.handle(hid)).value == want
        else:
            assert value(ws, "DirectValue(%s)" % expr) == want
    finally:
        ws.close()


# --- 3. checkpoint() from long-running code; import pyshelf -------------------

def test_checkpoint_builtin_and_import(tmp_path):
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        assert value(ws, "from pyshelf import checkpoint as c\n"
                         "DirectValue(c is checkpoint)") is True
        ws.remote_exec("lst = []")

        def grow():
            import pyshelf as p
            lst.append(1)                # noqa: F821
            n = p.checkpoint()
            return DirectValue(n)
        assert ws.remote_exec(grow).value >= 1

        def direct():
            # pyshelf is the client's module here; in the backend it is
            # the backend's, a builtin: no import needed
            return pyshelf.DirectValue(7)
        assert ws.remote_exec(direct).value == 7
    finally:
        ws.close()


def test_checkpoint_in_a_loop_survives_sigkill(tmp_path):
    """A loop that calls checkpoint() every 10 steps, killed while it runs:
    the next backend resumes from the last checkpoint, consistent."""
    db = tmp_path / "db"
    progress = tmp_path / "progress"
    ws = spawn(db)
    ws.remote_exec("step = 0\ndone = []")
    src = ("import os, time\n"
           "while True:\n"
           "    step += 1\n"
           "    done.append(step)\n"
           "    if step %% 10 == 0:\n"
           "        checkpoint()\n"
           "        with open(%r + '.new', 'w') as fh: fh.write(str(step))\n"
           "        os.replace(%r + '.new', %r)\n"
           "    time.sleep(0.001)\n" % ((str(progress),) * 3))
    errors = []

    def run():
        try:
            ws.remote_exec(src)
        except pyshelf.Error as e:
            errors.append(e)
    th = threading.Thread(target=run)
    th.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if int(progress.read_text() or 0) >= 30:
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.01)
    reached = int(progress.read_text())
    assert reached >= 30
    os.kill(ws.pid, signal.SIGKILL)
    th.join(60)
    assert not th.is_alive() and errors    # the call saw the backend die
    try:
        ws.close()
    except pyshelf.Error:
        pass
    ws = spawn(db)
    try:
        step, done = value(ws, "DirectValue((step, done))")
        assert step % 10 == 0 and step >= reached
        assert done == list(range(1, step + 1))
    finally:
        ws.close()


def test_checkpoint_from_a_thread_and_reentry(tmp_path):
    """checkpoint() from a thread of shipped code while requests run
    commits; one from code that a checkpoint runs is refused."""
    db = tmp_path / "db"
    ws = spawn(db)
    try:
        ws.remote_exec(
            "import threading\nbox = []\n"
            "def work():\n"
            "    for i in range(50):\n"
            "        box.append(i)\n"
            "        checkpoint()\n"
            "th = threading.Thread(target=work); th.start()")
        for _ in range(20):
            ws.remote_exec("len(box)")
        ws.remote_exec("th.join(); del th")
        ws.remote_exec(
            "class Sneaky:\n"
            "    def __reduce__(self):\n"
            "        try:\n"
            "            checkpoint()\n"
            "        except RuntimeError as e:\n"
            "            return (str, (str(e),))\n"
            "        return (str, ('not refused',))\n"
            "s = Sneaky()")
        ws.close()
        ws = spawn(db)
        box, s = value(ws, "DirectValue((box, s))")
        assert box == list(range(50))
        assert "checkpoint() called from code that a checkpoint runs" in s
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_long_chain_of_entries_loads(tmp_path, mode):
    """3,000 handles, each the result of a step that holds the one before
    (as an iterative algorithm's states), and 3,000 globals each holding
    the next: after a restart, the last one loads, with every link."""
    # PYSHELF_CHAIN: shorter under the sanitizers (.ci/run), where the
    # same C paths run 10 times slower; 3,000 otherwise
    n = int(os.environ.get("PYSHELF_CHAIN", "3000"))
    db = tmp_path / "db"
    ws = spawn(db)

    def step(prev, i):
        return {"i": i, "prev": prev}
    # every handle kept (a released one would be held by value by the
    # next record instead, one nested pickle)
    hs = [ws.remote_exec("{'i': 0, 'prev': None}")]
    for i in range(1, n):
        hs.append(ws.remote_exec(step, hs[-1], i))
    last = hs[-1].id
    ws.remote_exec("g0 = [0]\n"
                   "for i in range(1, %d):\n"
                   "    globals()['g%%d' %% i] = [i, globals()['g%%d' %% (i - 1)]]\n"
                   "del i" % n)
    ws = restart(ws, mode, db)
    try:
        def depth(s):
            n = 0
            while s is not None:
                n, s = n + 1, s["prev"]
            return DirectValue(n)
        assert ws.remote_exec(depth, ws.handle(last)).value == n
        assert value(ws, "x = g%d\nn = 0\nwhile len(x) > 1:\n"
                         "    n, x = n + 1, x[1]\nDirectValue(n)" % (n - 1)) \
            == n - 1
    finally:
        ws.close()
