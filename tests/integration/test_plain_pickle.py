"""The checkpoint's fast path for plain data (exec/pyenc.c).

Plain data (exact dicts, lists, tuples, sets and frozensets of None, bools,
ints, floats, strings and bytes) is pickled by pyshelfd's own writer, not by
the stdlib pickler.  These tests run inside the real backend: what the
writer produces must load with pickle.loads into an equal value of the same
types, and everything it does not handle must be left to the stdlib
pickler (plain_dumps returns None), so that identity, persistent references
and exotic values keep working.  Then the same values go through real
checkpoints and restarts.
"""
import os
import signal

import pytest

import pyshelf

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
]

# not plain: the stdlib pickler takes these
REFUSED = [
    "2**63", "-2**63 - 1", "2**100", "'\\ud800'", "1 + 2j", "bytearray(b'x')",
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
            os.kill(ws.pid, signal.SIGKILL)
            try:
                ws.close()
            except pyshelf.Error:
                pass
    ws = pyshelf.spawn(db=db, session="p", backend=backend)
    try:
        assert ws.remote_exec("DirectValue(cfg['n'])").value == 12
    finally:
        ws.close()
