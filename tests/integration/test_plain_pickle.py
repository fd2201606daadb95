"""The checkpoint's fast path for plain data (exec/pyenc.c).

Plain data (exact dicts, lists, tuples, sets and frozensets of None, bools,
ints, floats, strings, bytes and bytearrays) is pickled by pyshelfd's own
writer, not by the stdlib pickler; in a checkpoint, bytes and bytearrays of
64 KiB or more go out of band, written from their own memory.  These tests run inside the real backend: what the
writer produces must load with pickle.loads into an equal value of the same
types, and everything it does not handle must be left to the stdlib
pickler (plain_dumps returns None), so that identity, persistent references
and exotic values keep working.  Then the same values go through real
checkpoints and restarts.
"""
import json
import os
import subprocess

import pytest

import pyshelf
from restarts import kill_backend

CHECK = r'''
import _pyshelfd as S, pickle, pickletools, io, random

def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b

def type_names(v, acc=None):
    acc = set() if acc is None else acc
    acc.add(type(v).__name__)
    if isinstance(v, dict):
        for k, x in v.items():
            type_names(k, acc)
            type_names(x, acc)
    elif isinstance(v, (list, tuple, set, frozenset)):
        for x in v:
            type_names(x, acc)
    return acc

def roundtrip(v):
    b = S.plain_dumps(v)
    if b is None:
        return "refused"
    pickletools.dis(b, out=io.StringIO())   # well formed, ends with STOP
    w = pickle.loads(b)
    if not same(v, w):
        return "differs: %r -> %r" % (v, w)
    # the same value gives the same bytes (the digest that skips unchanged
    # entries relies on it); a reloaded set may iterate in another order
    if S.plain_dumps(v) != b or ("set" not in repr(type_names(v)) and
                                 S.plain_dumps(w) != b):
        return "not deterministic"
    return "ok"
'''

PLAIN = [
    "None", "True", "False", "0", "1", "255", "256", "65535", "65536", "-1",
    "-256", "2**31 - 1", "-2**31", "2**31", "-2**31 - 1", "2**63 - 1",
    "-2**63", "0.5", "float('inf')", "float('-inf')", "float('nan')", "-0.0",
    "''", "'abc'", "'\\xe9\\u20ac\\U0001f600'", "'x' * 300", "'y' * 70000",
    "b''", "b'\\x00' * 300", "bytes(range(256)) * 300", "()", "(1,)",
    "(1, 2)", "(1, 2, 3)", "(1, 2, 3, 4)", "[]", "[1]", "[1, 2]",
    "list(range(2500))", "{}", "{'a': 1}",
    "{'a': 1, 'b': [1, 2, {'c': (3,)}], 'd': None}",
    "{i: str(i) for i in range(2001)}", "{(1, 2): 'tuple key'}", "set()",
    "{1}", "{1, 2, (3, 4)}", "frozenset()", "frozenset({1, 'a'})",
    "set(range(1500))", "[[[[[1]]]]]", "[[i] for i in range(20000)]",
    "eval('[' * 60 + ']' * 60)", "{'i': 7, 's': 'x' * 20, 'f': 3.5}",
    "bytearray()", "bytearray(b'x')", "bytearray(range(256)) * 300",
    "[bytearray(b'a'), bytearray(b'a')]", "{'k': (bytearray(70000), b'x')}",
]

# not plain: the stdlib pickler takes these
REFUSED = [
    "2**63", "-2**63 - 1", "2**100", "'\\ud800'", "1 + 2j",
    "(lambda b: [b, b])(bytearray(b'x'))", "type('B', (bytearray,), {})()",
    "[object()]", "type('L', (list,), {})()", "{'f': len}",
    "(lambda a: {'x': a, 'y': a})([1])", "(lambda r: (r.append(r), r)[1])([])",
    "(lambda t: [t, t])((1, 2))", "eval('[' * 70 + ']' * 70)",
]


@pytest.mark.parametrize("expr", PLAIN)
def test_plain_values_round_trip(gw, expr):
    gw.remote_exec(CHECK)
    assert gw.remote_exec("DirectValue(roundtrip(%s))" % expr).value == "ok"


@pytest.mark.parametrize("expr", REFUSED)
def test_other_values_are_left_to_the_stdlib_pickler(gw, expr):
    gw.remote_exec(CHECK)
    assert gw.remote_exec("DirectValue(roundtrip(%s))" % expr).value == \
        "refused"


def test_random_trees_round_trip(gw):
    gw.remote_exec(CHECK)
    res = gw.remote_exec(r'''
rng = random.Random(1234)
def atom():
    return rng.choice([None, True, False, rng.randint(-2**63, 2**63 - 1),
                       rng.randint(-300, 300), rng.random() * 1e6,
                       "".join(chr(rng.randint(32, 0x2fff)) for _ in
                               range(rng.randint(0, 300))),
                       bytes(rng.randint(0, 255) for _ in
                             range(rng.randint(0, 300)))])
def tree(depth):
    if depth == 0 or rng.random() < 0.3:
        return atom()
    k = rng.randint(0, 6)
    c = rng.choice("dlts")
    if c == "d":
        return {str(atom()): tree(depth - 1) for _ in range(k)}
    if c == "l":
        return [tree(depth - 1) for _ in range(k)]
    if c == "t":
        return tuple(tree(depth - 1) for _ in range(k))
    return {rng.randint(0, 1000) for _ in range(k)}
bad = [r for r in (roundtrip(tree(6)) for _ in range(3000)) if r != "ok"]
DirectValue(bad)
''').value
    assert res == []


def test_plain_entries_survive_restarts(tmp_path, backend):
    """Plain entries checkpointed by the fast path come back after a clean
    restart and after SIGKILL; an entry holding another entry's list still
    refers to it (the stdlib path with its persistent reference)."""
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="p", backend=backend)
    ws.remote_exec(
        "cfg = {'name': 'run', 'n': 10, 'rates': [0.1, 0.2], 'on': True,\n"
        "       'tags': {'a', 'b'}, 'blob': b'\\x00\\x01', 'none': None,\n"
        "       'big': -2**40, 'shape': (3, 4)}\n"
        "shared = [1, 2]\n"
        "holder = {'s': shared, 'n': 1}\n")
    ws.close()
    for n, mode in ((10, "clean"), (11, "kill")):
        ws = pyshelf.spawn(db=db, session="p", backend=backend)
        v = ws.remote_exec(
            "DirectValue((cfg, holder['s'] is shared, holder['n']))").value
        assert v == ({'name': 'run', 'n': n, 'rates': [0.1, 0.2],
                      'on': True, 'tags': {'a', 'b'}, 'blob': b'\x00\x01',
                      'none': None, 'big': -2**40, 'shape': (3, 4)},
                     True, 1)
        ws.remote_exec("cfg['n'] += 1\nsync = cfg['n']")
        if mode == "clean":
            ws.close()
        else:
            ws.sync()
            kill_backend(ws)
    ws = pyshelf.spawn(db=db, session="p", backend=backend)
    try:
        assert ws.remote_exec("DirectValue(cfg['n'])").value == 12
    finally:
        ws.close()


def _records(db, session):
    """{name: record row} of a session's globals, from pyshelf-dump --json."""
    r = subprocess.run([os.environ["PYSHELF_DUMP"], "--db", str(db), "--json",
                        session], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    return {x["name"]: x for x in rows if x.get("row") == "entry"}


LARGE_SRC = """import os, hashlib
big = os.urandom(1 << 20)
ba = bytearray(os.urandom(300000))
nested = {'k': [big, bytearray(70000), b'small'], 't': (big,)}
shared = bytearray(100000)
pair = [shared, shared]
holder = {'x': ba}
small = b'x' * 1000
def fp():
    return hashlib.sha256(big + bytes(ba) + repr(nested).encode()).hexdigest()
"""


@pytest.mark.parametrize("mode", ["clean", "kill"])
def test_large_bytes_out_of_band(tmp_path, backend, mode):
    """bytes and bytearrays of 64 KiB or more in plain data are written out
    of band (the record's oob flag; the pickle is a few bytes), come back
    equal and of their type after a restart, and keep identity where the
    stdlib path takes over (one reached twice, another entry's)."""
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="b", backend=backend)
    ws.remote_exec(LARGE_SRC)
    fp = ws.remote_exec("DirectValue(fp())").value
    if mode == "clean":
        ws.close()
    else:
        kill_backend(ws)
    recs = _records(db, "b")
    for name in ("big", "ba", "nested"):
        assert recs[name]["oob"], name
    assert recs["big"]["size"] < (1 << 20) + 200
    for name in ("small", "pair", "holder"):
        assert not recs[name]["oob"], name
    ws = pyshelf.spawn(db=db, session="b", backend=backend)
    try:
        assert ws.remote_exec(
            "DirectValue((fp(), type(big).__name__, type(ba).__name__, "
            "[type(x).__name__ for x in nested['k']], pair[0] is pair[1], "
            "holder['x'] is ba, len(small)))").value == \
            (fp, "bytes", "bytearray", ["bytes", "bytearray", "bytes"],
             True, True, 1000)
        # reloaded and unchanged: a sync pickles them again, to the same
        # bytes, and writes nothing
        before = ws.stats()["entries_written"]
        ws.sync()
        assert ws.stats()["entries_written"] == before
        ws.remote_exec("ba[0] ^= 1")
        ws.sync()
        assert ws.stats()["entries_written"] == before + 1
    finally:
        ws.close()
