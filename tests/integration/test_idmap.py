"""IdMap (exec/pymod.c): object -> the entries whose object it is.

Records refer to an object through its first key still bound to it; the
others are aliases whose records are a reference to that key.  A wrong
answer means a record that refers to the wrong entry (a lost identity, or
worse, another entry's object after a restart).  These tests run inside
the real backend and check the map against a model under random binds and
unbinds, then its errors, and those of the references index's reader.
"""

MODEL = r'''
import _pyshelfd as S, random

def run(seed, n_ops):
    rng = random.Random(seed)
    m = S.IdMap()
    objs = [[i] for i in range(40)]
    keys = [("g", "n%d" % i) for i in range(120)] + \
        [("h", i) for i in range(40)]
    bound = {}          # key -> index of its object
    order = {}          # index of an object -> its keys, first one first
    root = ["root"]
    for step in range(n_ops):
        key = rng.choice(keys)
        if rng.random() < 0.6:                      # bind key to an object
            i = rng.randrange(len(objs))
            old = bound.get(key)
            if old is not None:
                m.discard(objs[old], key)
                order[old].remove(key)
            m.add(objs[i], key)
            bound[key] = i
            order.setdefault(i, [])
            if key not in order[i]:
                order[i].append(key)
        elif key in bound:                          # unbind it
            i = bound.pop(key)
            m.discard(objs[i], key)
            order[i].remove(key)
        # the same key twice changes nothing
        if key in bound:
            m.add(objs[bound[key]], key)
        live = {i: ks for i, ks in order.items() if ks}
        if len(m) != len(live):
            return "len %d, model %d at step %d" % (len(m), len(live), step)
        for i in range(len(objs)):
            m.begin(root)
            got = m.pid(objs[i])
            m.end()
            want = live[i][0] if i in live else None
            if got != want:
                return "object %d: %r, model %r at step %d" % (
                    i, got, want, step)
            if i in live:
                for k in live[i]:
                    # its own record: by value for the first key, a
                    # reference to the first key for the others
                    m.begin(objs[i], k)
                    got = m.pid(objs[i])
                    refs = m.end()
                    want = None if k == live[i][0] else live[i][0]
                    if got != want:
                        return "root %d as %r: %r, model %r" % (
                            i, k, got, want)
                    if (want is None) != (refs == b""):
                        return "refs blob %r for %r" % (refs, k)
    return "ok"
'''


def test_idmap_matches_a_model(gw):
    gw.remote_exec(MODEL)
    for seed in range(3):
        assert gw.remote_exec("DirectValue(run(%d, 3000))" % seed).value \
            == "ok"


def test_idmap_group_and_errors(gw):
    res = gw.remote_exec(r'''
import _pyshelfd as S
m = S.IdMap()
a, b = [1], [2]
m.add(a, ("g", "a"))
m.add(b, ("g", "b"))
out = []
# a group's keys are pickled by value: no reference to them
m.begin(("root",), None, {("g", "a")})
out.append((m.pid(a), m.pid(b)))
m.end()
m.begin(("root",))                  # the group does not outlive its dump
out.append((m.pid(a), m.pid(b)))
m.end()
for call in (lambda: m.discard(a), lambda: m.begin(a, None, 5),
             lambda: m.add(a), lambda: S.referrers(5),
             lambda: S.referrers([1]), lambda: S.referrers([("g",)])):
    try:
        call()
        out.append("accepted")
    except TypeError:
        pass
# names that cannot be store keys have no rows; nor does an absent one
out.append(S.referrers(["x" * 600, "\udcff", ("g", "absent"), ("h", 7)]))
m.discard([3], ("g", "c"))          # not mapped: nothing happens
m.discard(a, ("g", "zz"))           # not a's key: nothing happens
out.append(len(m))
DirectValue(out)
''').value
    assert res == [(None, ("g", "b")), (("g", "a"), ("g", "b")), [], 2]
