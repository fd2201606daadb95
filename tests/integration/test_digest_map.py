"""DigestMap (exec/pydigest.c): entry key -> digest of the stored record.

The checkpoint skips an entry whose new pickle has the digest this map
holds, so a wrong answer here means either lost writes (a stale digest
matching) or wasted ones.  These tests run inside the real backend and
check the map against a dict under random operations, then its errors.
"""

MODEL = r'''
import _pyshelfd as S, random

def run(seed, n_ops):
    rng = random.Random(seed)
    m, d = S.DigestMap(), {}
    names = ["g%d" % i for i in range(3000)] + ["é%d" % i for i in range(50)]
    for _ in range(n_ops):
        if rng.random() < 0.7:
            key = ("g", rng.choice(names))
        else:
            key = ("h", rng.randrange(0, 2**64 if rng.random() < 0.1 else 500))
        op = rng.random()
        if op < 0.5:
            v = rng.randbytes(16)
            m[key] = v
            d[key] = v
        elif op < 0.7:
            if m.pop(key, None) != d.pop(key, None):
                return "pop differs at %r" % (key,)
        elif op < 0.8:
            if (key in m) != (key in d):
                return "contains differs at %r" % (key,)
            if key in d:
                del m[key]
                del d[key]
        else:
            if m.get(key) != d.get(key):
                return "get differs at %r" % (key,)
        if len(m) != len(d):
            return "len differs"
    for k, v in d.items():
        # a key built anew (not the same tuple or str object) finds it
        k2 = (k[0], "".join(k[1]) if k[0] == "g" else int(str(k[1])))
        if m[k2] != v:
            return "lookup by an equal key differs at %r" % (k,)
    return "ok"
'''


def test_digest_map_matches_a_dict(gw):
    gw.remote_exec(MODEL)
    for seed in range(4):
        assert gw.remote_exec("DirectValue(run(%d, 40000))" % seed).value \
            == "ok"


def test_digest_map_errors(gw):
    res = gw.remote_exec(r'''
import _pyshelfd as S
m = S.DigestMap()
out = []
for bad_key in [("g", 1), ("x", "a"), ("h", -1), ("h", 2**64), "g", ("g",),
                ("gg", "a"), (b"g", "a"), ["g", "a"]]:
    try:
        m[bad_key] = b"0" * 16
        out.append("accepted %r" % (bad_key,))
    except (TypeError, OverflowError):
        pass
for bad_value in [b"0" * 15, b"0" * 17, "0" * 16, None, bytearray(16)]:
    try:
        m[("g", "a")] = bad_value
        out.append("accepted value %r" % (bad_value,))
    except TypeError:
        pass
try:
    m[("g", "absent")]
    out.append("no KeyError")
except KeyError:
    pass
try:
    del m[("h", 7)]
    out.append("no KeyError on del")
except KeyError:
    pass
try:
    m.pop(("g", "absent"))
    out.append("no KeyError on pop")
except KeyError:
    pass
out.append(len(m))
DirectValue(out)
''').value
    assert res == [0]


def test_unchanged_entries_are_not_rewritten(gw):
    """The checkpoint's use of the map: rebinding 2,000 globals to equal
    values writes nothing; changing 10 of them writes 10."""
    bind = ("globals().update({'v%d' % i: {'i': i, 'l': [i] * 3}"
            " for i in range(2000)})")
    gw.remote_exec(bind)
    before = gw.stats()["entries_written"]
    assert before == 2000
    gw.remote_exec(bind)
    assert gw.stats()["entries_written"] == before
    gw.remote_exec("globals().update({'v%d' % i: {'i': -i, 'l': []}"
                   " for i in range(10)})")
    assert gw.stats()["entries_written"] == before + 10
