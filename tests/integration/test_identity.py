"""Identity between entries across restarts of pyshelfd (clean and SIGKILL).

- two names for one object (h = c), a handle and a global for one object:
  one record holds the object, the others refer to it, and after a restart
  they are one object again;
- an entry rebound, deleted or released after a restart, before the
  records that refer to it were used: those records keep the old object
  (found through the store's references index, without loading them
  first), as they do when they were loaded;
- entries whose objects refer to each other in a cycle: one record holds
  the cycle (an EntryGroup), every edge keeps its identity, whichever
  entry is used first, and a change to one of them rewrites the group.
"""
import io
import os
import subprocess

import pytest

import pyshelf
from pyshelf import DirectValue, Wrapped
from restarts import MODES, restart, value


@pytest.mark.parametrize("mode", MODES)
def test_two_names_for_one_object(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("c = {'x': 1}\nh = c\nL = [1]\nM = [L, L]\nN = L\n"
                   "class P:\n    pass\np = P()\nq = p\n")
    for _ in range(2):      # and again, from records the first restart wrote
        ws = restart(ws, mode, store)
        assert value(ws, "DirectValue((h is c, M[0] is L, M[1] is N, "
                         "N is L, q is p))") == (True,) * 5
        # in whichever order they are first used
        assert value(ws, "h['y'] = 2\nDirectValue(c)") == \
            {"x": 1, "y": 2}
    ws.close()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert ws["h"] == {"x": 1, "y": 2} and ws["c"] == ws["h"]
        assert value(ws, "DirectValue(c is h)") is True
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_references_from_plain_data_of_every_shape(store, mode):
    """Plain data (dicts, lists, tuples, sets, written by the C writer)
    holding other entries' objects at any depth: a list, a dict, a
    bytearray, a frozenset and a handle's object, each referred to by
    persistent id, twice in one record too."""
    ws = pyshelf.spawn(db=store, session="s")

    def make():
        return {"from": "a handle"}
    h = ws.remote_exec(make)
    ws.remote_exec("L = [1]\nD = {'k': 2}\nB = bytearray(b'xy')\n"
                   "F = frozenset({3})\n"
                   "def keep(o):\n    global holder\n"
                   "    holder = {'t': (L, [D, {'b': B}]), 'twice': [L, L], "
                   "'f': F, 'h': o, 'n': 7}\n")
    ws.remote_exec(keep_it, h)
    for i in range(2):      # and from the records the first restart wrote
        ws = restart(ws, mode, store)
        assert value(ws, "t = holder['t']\n"
                         "DirectValue((t[0] is L, t[1][0] is D, "
                         "t[1][1]['b'] is B, holder['twice'][0] is L, "
                         "holder['twice'][1] is L, holder['f'] is F, "
                         "holder['h'], holder['n']))") == \
            (True,) * 5 + (True, {"from": "a handle"}, 7 + i)
        ws.remote_exec("holder['n'] += 1")
        ws.sync()               # rewritten, with its references
    h2 = ws.handle(h.id)
    assert ws.remote_exec(same_as_holder, h2).value is True
    # the references index knows holder refers to L and B: rebinding them
    # after a restart, before holder is used, leaves holder the old ones
    ws = restart(ws, mode, store)
    ws.remote_exec("L = 'new'\ndel B")
    try:
        assert value(ws, "DirectValue((holder['t'][0], holder['twice'][0] "
                         "is holder['t'][0], holder['t'][1][1]['b'], L))") == \
            ([1], True, bytearray(b"xy"), "new")
    finally:
        ws.close()


def keep_it(o):
    keep(o)  # noqa: F821 (the workspace's keep)


def same_as_holder(o):
    return DirectValue(o is holder["h"])  # noqa: F821 (the workspace's)


@pytest.mark.parametrize("mode", MODES)
def test_alias_keeps_the_object_when_the_first_name_goes(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("c = [1, 2]\nh = c\nd = {'k': c}")
    ws.remote_exec("del c")                 # h still holds it, d with it
    ws = restart(ws, mode, store)
    assert value(ws, "DirectValue((h, d['k'] is h))") == ([1, 2], True)
    ws.remote_exec("h = 'other'")        # now only d holds the list
    ws = restart(ws, mode, store)
    try:
        assert ws["d"] == {"k": [1, 2]} and ws["h"] == "other"
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["rebind", "del", "mapping", "function"])
def test_rebinding_after_a_restart_keeps_unused_referrers(store, mode, how):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("a = [1]\nc = {'x': a}\nd = [a, a]\nalias = a\n"
                   "def f():\n    global a\n    a = [3]\n")
    ws = restart(ws, mode, store)
    # none of a, c, d, alias is used before a stops being the list
    if how == "rebind":
        ws.remote_exec("a = [2]")
    elif how == "del":
        ws.remote_exec("del a")
    elif how == "mapping":
        ws["a"] = [2]
    else:
        ws.remote_exec("f()")
    assert value(ws, "DirectValue((c, d, alias, c['x'] is d[0], "
                     "d[0] is d[1], c['x'] is alias))") == \
        ({"x": [1]}, [[1], [1]], [1], True, True, True)
    ws = restart(ws, mode, store)
    try:
        assert ws["c"] == {"x": [1]} and ws["d"] == [[1], [1]]
        assert ws["alias"] == [1]
        assert value(ws, "DirectValue((d[0] is d[1], 'a' in globals() and "
                         "c['x'] is a))") == (True, False)
        if how != "del":
            assert ws["a"] == ([3] if how == "function" else [2])
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_released_handle_keeps_unused_referrers(store, mode):
    ws = pyshelf.spawn(db=store, session="s")

    def make():
        return [7, 8]

    def keep(h):
        global kept
        kept = {"h": h}
    h = ws.remote_exec(make)
    hid = h.id
    ws.remote_exec(keep, h)
    ws = restart(ws, mode, store)
    ws.release(ws.handle(hid))          # found after the restart
    ws = restart(ws, mode, store)
    try:
        assert hid not in {w.id for w in ws.handles()}
        assert ws["kept"] == {"h": [7, 8]}
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_handle_and_global_for_one_object(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("x = [1, 2, 3]")
    h = ws.remote_exec("x")
    assert isinstance(h, Wrapped)
    hid = h.id
    ws = restart(ws, mode, store)

    def same(w):
        return DirectValue(w is x)  # noqa: F821 (the workspace's x)

    def peek(w):
        return DirectValue(w)
    h = ws.handle(hid)
    assert ws.remote_exec(same, h).value is True
    ws.remote_exec("x = 'rebound'")
    assert ws.remote_exec(peek, h).value == [1, 2, 3]
    ws = restart(ws, mode, store)
    try:
        h = ws.handle(hid)
        assert ws.remote_exec(peek, h).value == [1, 2, 3]
        assert ws["x"] == "rebound"
    finally:
        ws.close()


def test_many_referrers_share_the_old_object(store):
    """Every stored referrer keeps the old object, one object for all of
    them while this backend runs; one rebound in the same request is not
    loaded."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import socket\nbase = {'v': 1}\n"
                   "refs = [{'b': base} for _ in range(50)]\n"
                   "holders = {'h%d' % i: {'b': base} for i in range(200)}\n"
                   "globals().update(holders)\ndel holders\n"
                   "changed = {'b': base}\n", stderr=io.StringIO())
    ws = restart(ws, "kill", store)
    ws.remote_exec("changed = 0\nbase = None")
    assert value(ws, "DirectValue(all(globals()['h%d' % i]['b'] is "
                     "refs[0]['b'] for i in range(200)))") is True
    ws = restart(ws, "kill", store)
    try:
        assert ws["h199"] == {"b": {"v": 1}} and ws["changed"] == 0
        assert value(ws, "DirectValue(base is None and "
                         "all(r['b'] == {'v': 1} for r in refs))") is True
    finally:
        ws.close()


NODES = ("class Node:\n"
         "    def __init__(self, name, parent=None):\n"
         "        self.name, self.parent, self.children = name, parent, []\n"
         "root = Node('root')\n"
         "kid = Node('kid', root)\n"
         "root.children.append(kid)\n"
         "x = {'n': 'x'}\ny = {'x': x}\nz = [y]\nx['z'] = z\n"
         "other = {'root': root, 'z': z}\n")

CHECK = ("DirectValue((kid.parent is root, root.children[0] is kid, "
         "y['x'] is x, z[0] is y, x['z'] is z, other['root'] is root, "
         "other['z'] is z))")


def dump_check(store, damaged=None):
    """pyshelf-dump --check on store ($PYSHELF_DUMP, which make check
    sets): sound, or reporting the check named damaged."""
    out = subprocess.run([os.environ["PYSHELF_DUMP"], "--db", store,
                          "--check"], capture_output=True, text=True)
    if damaged is None:
        assert out.returncode == 0 and "sound" in out.stdout, out.stdout
    else:
        assert out.returncode == 1 and damaged in out.stdout, out.stdout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("first", ["kid", "root", "z", "other"])
def test_cycles_keep_every_edge(store, mode, first):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec(NODES)
    ws = restart(ws, mode, store)
    try:
        value(ws, "DirectValue(%s)" % first)      # loaded first
        assert value(ws, CHECK) == (True,) * 7
    finally:
        ws.close()
    dump_check(store)


@pytest.mark.parametrize("mode", MODES)
def test_cycle_member_changed_rebound_deleted(store, mode):
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec(NODES)
    ws = restart(ws, mode, store)
    ws.remote_exec("kid.name = 'KID'")   # in place: written by sync
    ws.sync()
    ws = restart(ws, mode, store)
    assert value(ws, "DirectValue((root.children[0].name, kid.name))") == \
        ("KID", "KID")
    ws = restart(ws, mode, store)
    # neither is used first: the records that refer to root keep it
    ws.remote_exec("root = 'gone'\ndel x")
    ws = restart(ws, mode, store)
    try:
        # kid.parent and other['root'] are one object, which no entry
        # holds any more (a hidden handle does)
        assert value(ws, "DirectValue((kid.parent.name, "
                         "kid.parent.children[0] is kid, root, "
                         "other['root'] is kid.parent, "
                         "y['x']['z'] is z, z[0] is y, 'x' in globals()))") == \
            ("root", True, "gone", True, True, True, False)
    finally:
        ws.close()
    dump_check(store)


@pytest.mark.parametrize("mode", MODES)
def test_cycle_through_a_handle(store, mode):
    ws = pyshelf.spawn(db=store, session="s")

    def make():
        return {"name": "held", "peers": []}

    def link(h):
        global peer
        peer = {"name": "peer", "held": h}
        h["peers"].append(peer)
    h = ws.remote_exec(make)
    hid = h.id
    ws.remote_exec(link, h)
    ws = restart(ws, mode, store)
    try:
        def check(h):
            return DirectValue((h["peers"][0] is peer,    # noqa: F821
                                peer["held"] is h))       # noqa: F821
        h = ws.handle(hid)
        assert ws.remote_exec(check, h).value == (True, True)
    finally:
        ws.close()
    dump_check(store)


def test_cycle_with_a_class_gone(store, tmp_path):
    """A cycle whose record holds an object of a class that can no longer
    be imported: its entries load as placeholders, the others normally."""
    mod = tmp_path / "gone_cycle_mod.py"
    mod.write_text("class Gone:\n    pass\n")
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("import sys\nsys.path.insert(0, %r)\n"
                   "import gone_cycle_mod\ng = gone_cycle_mod.Gone()\n"
                   "peer = {'g': g}\ng.peer = peer\nfine = [1]" % str(tmp_path))
    ws.close()
    mod.unlink()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        assert ws["fine"] == [1]
        assert "Placeholder" in value(ws, "DirectValue(repr(peer))")
        assert "Placeholder" in value(ws, "DirectValue(repr(g))")
        # lost() runs no pickle: the module global, never loaded yet, is
        # listed once loading it was tried
        assert {item[0] for item in ws.lost()} == {"g", "peer"}
        assert "Placeholder" in value(ws,
                                      "DirectValue(repr(gone_cycle_mod))")
        lost = {item[0] for item in ws.lost()}
        assert lost == {"g", "peer", "gone_cycle_mod"}   # the module too
    finally:
        ws.close()


def index_rows(store):
    """The refs database's rows, as (target name, referrer name) for
    globals (read with py-lmdb, read-only, while no backend runs)."""
    import lmdb
    env = lmdb.open(store, readonly=True, lock=False, max_dbs=8,
                    subdir=True)
    try:
        db = env.open_db(b"refs", dupsort=True, create=False)
        with env.begin() as txn:
            return sorted((bytes(k[17:]).decode(), bytes(v[1:]).decode())
                          for k, v in txn.cursor(db) if k[16:17] == b"g")
    finally:
        env.close()


def test_index_rows_follow_the_records(store):
    """Rows are written with the records that refer, go with them when they
    are deleted or stop referring, and a stale one (its record rewritten by
    a backend that had not loaded it) goes when it is found."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("a = [1]\nb = [2]\nc = {'x': a}\nd = {'x': a, 'y': b}\n"
                   "e = [b]")
    ws.close()
    assert index_rows(store) == [("a", "c"), ("a", "d"), ("b", "d"),
                                 ("b", "e")]
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("d['x'] = None\ndel e")     # d stops referring to a
    ws.sync()
    ws.close()
    assert index_rows(store) == [("a", "c"), ("b", "d")]
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("c = 5")                    # not loaded: its row stays
    ws.close()
    assert ("a", "c") in index_rows(store)
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("a = 'rebound'")            # finds the stale row
    assert value(ws, "DirectValue((c, d))") == (5, {"x": None, "y": [2]})
    ws.close()
    assert index_rows(store) == [("b", "d")]


@pytest.mark.parametrize("mode", MODES)
def test_the_empty_tuple_is_nobody_s(store, mode):
    """() is CPython's singleton: binding a global to it must not make
    every record that holds a () refer to that global."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("x = ()\ny = [(), 1]\nz = {'a': ()}\nw = x")
    ws = restart(ws, mode, store)
    ws.close()
    assert index_rows(store) == []
    ws = pyshelf.spawn(db=store, session="s")
    try:
        ws.remote_exec("x = 'rebound'")
        assert value(ws, "DirectValue((y, z, w, y[0] is z['a'] is w is ()))") \
            == ([(), 1], {"a": ()}, (), True)
    finally:
        ws.close()


def test_a_damaged_index_row_does_not_stop_checkpoints(store):
    """A row that names no entry (damage) ends its target's list of
    referrers; rebinding the target still checkpoints, and pyshelf-dump
    --check reports the row."""
    import lmdb
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("a = [1]\nc = {'x': a}")
    ws.close()
    env = lmdb.open(store, max_dbs=8, subdir=True)
    try:
        db = env.open_db(b"refs", dupsort=True, create=False)
        with env.begin(write=True) as txn:
            key = next(k for k, _v in txn.cursor(db))
            txn.put(key, b"\x00", db=db)     # sorts before every referrer
    finally:
        env.close()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        res = ws.remote_exec("a = [2]")
        assert isinstance(res, DirectValue), res
        assert ws["a"] == [2]
    finally:
        ws.close()
    dump_check(store, damaged="refs_index")


def hidden_handles(store):
    """The hidden handles pyshelf-dump lists for session s."""
    import json
    out = subprocess.run([os.environ["PYSHELF_DUMP"], "--db", store,
                          "--json", "s"], capture_output=True, text=True,
                         check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return [r["handle"] for r in rows if r.get("row") == "entry" and
            r.get("hidden")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loaded", [True, False])
def test_an_old_object_two_records_share_stays_one(store, mode, loaded):
    """a rebound while c and d both hold its old list: c and d are written
    again referring to a hidden handle that holds it, so that after a
    restart c['x'] is d['y'] still; the handle is pyshelfd's (not listed)
    and goes when no record refers to it."""
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("a = [1]\nc = {'x': a}\nd = {'y': a}\ne = [a]")
    if not loaded:
        ws = restart(ws, mode, store)   # c, d, e not loaded when a goes
    ws.remote_exec("a = [2]")
    ws = restart(ws, mode, store)
    try:
        assert value(ws, "DirectValue((c['x'] is d['y'], d['y'] is e[0], "
                         "c['x'], a))") == (True, True, [1], [2])
        assert ws.handles() == []
    finally:
        ws.close()
    assert len(hidden_handles(store)) == 1
    dump_check(store)
    # one holder lets go while the others are not loaded: the index says
    # they still refer to it
    ws = pyshelf.spawn(db=store, session="s")
    ws.remote_exec("c = 0")
    ws.remote_exec("pass")
    ws = restart(ws, mode, store)
    try:
        assert len(hidden_handles(store)) == 1
        assert value(ws, "DirectValue(d['y'] is e[0])") is True
    finally:
        ws.close()
    ws = pyshelf.spawn(db=store, session="s")
    try:
        value(ws, "DirectValue(len(d) + len(e))")     # loaded
        ws.remote_exec("d = 0")
        assert hidden_handles(store) != []      # e still holds it
        ws.remote_exec("e = 0")
        ws.remote_exec("pass")                  # the next checkpoint
        ws.sync()
    finally:
        ws.close()
    assert hidden_handles(store) == []
    dump_check(store)
