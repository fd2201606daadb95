"""A/B of two pyshelfd builds with the two backends running side by side
and their requests interleaved in small blocks (A, B, A, B...), so that a
slow phase of a shared machine (other tenants, minutes long) slows both
sides alike; bench/ab.sh's whole-run alternation cannot cancel those.
Both backends are driven by the same client (this tree's pyshelf), so the
comparison is of the backends.

Usage: PYTHONPATH=B/client/python python3 bench/ab_interleaved.py A/pyshelfd B/pyshelfd
Prints one JSON line per measurement: name, A and B medians, B/A.
Environment: AB_BLOCKS (default 40) blocks per side, AB_BLOCK (default 50)
operations per block for the small requests.
"""
import json
import os
import statistics
import sys
import tempfile
import time

import pyshelf

BLOCKS = int(os.environ.get("AB_BLOCKS", "40"))
BLOCK = int(os.environ.get("AB_BLOCK", "50"))


def timed(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def interleave(name, make, unit="us", n=BLOCK, blocks=BLOCKS):
    """make(side) -> (operation, cleanup); run blocks of n operations,
    alternating sides, and report the medians per operation."""
    ops = {s: make(s) for s in ("A", "B")}
    times = {"A": [], "B": []}
    for s in ("A", "B"):                      # warm
        timed(ops[s][0], max(1, n // 5))
    for i in range(blocks):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")
        for s in order:
            times[s].append(timed(ops[s][0], n))
    for s in ("A", "B"):
        ops[s][1]()
    scale = 1e6 if unit == "us" else 1e3
    a = statistics.median(times["A"]) * scale
    b = statistics.median(times["B"]) * scale
    print(json.dumps({"name": name, "unit": unit, "A": round(a, 2),
                      "B": round(b, 2), "B/A": round(b / a, 3)}),
          flush=True)


def main(backend_a, backend_b):
    root = tempfile.mkdtemp(prefix="ab-")
    backends = {"A": backend_a, "B": backend_b}
    count = [0]

    def spawn(side, **kw):
        count[0] += 1
        return pyshelf.spawn(db=os.path.join(root, "%s%d" % (side,
                             count[0])), session="s",
                             backend=backends[side], create_db=True, **kw)

    def loaded(side, n=1000):
        ws = spawn(side)
        ws.remote_exec("for _i in range(%d):\n    globals()['g%%d' %% _i] = "
                       "[_i]\ndel _i" % n)
        return ws

    def request(src, n=1000):
        def make(side):
            ws = loaded(side, n)
            return (lambda: ws.remote_exec(src)), ws.close
        return make

    interleave("noop_request_1000_loaded", request("pass"))
    interleave("bind_one_1000_loaded", request("x = [1]"))
    interleave("bind_one_100000_loaded", request("x = [1]", 100000))
    interleave("request_naming_10_of_1000", request(
        "g1; g2; g3; g4; g5; g6; g7; g8; g9; g10"))

    def get_value(side):
        ws = loaded(side)
        return (lambda: ws["g7"]), ws.close
    interleave("get_value", get_value)

    def sync_10k(side):
        ws = spawn(side, sync="always")
        ws.remote_exec("ds = [{'i': i, 'v': [i] * 4} for i in range(10000)]\n"
                       "for _i, _d in enumerate(ds):\n"
                       "    globals()['d%d' % _i] = _d\ndel _i, _d")
        ws.sync()

        def op():
            ws.remote_exec("for _d in ds:\n    _d['i'] += 1\ndel _d")
            ws.sync()
        return op, ws.close
    interleave("steady_10k_dicts_sync_always", sync_10k, unit="ms", n=2,
               blocks=BLOCKS // 2)

    def resume(side):
        ws = loaded(side, 100000)
        db = ws._db if hasattr(ws, "_db") else None
        path = os.path.join(root, "%s%d" % (side, count[0]))
        ws.close()

        def op():
            w = pyshelf.spawn(db=path, session="s", backend=backends[side])
            w.remote_exec("g5")
            w.close()
        return op, (lambda: None)
    interleave("resume_100000_then_one_load", resume, unit="ms", n=2,
               blocks=BLOCKS // 2)

    def load_10k(side):
        ws = spawn(side)
        ws.remote_exec("for _i in range(10000):\n    globals()['h%d' % _i] = "
                       "{'i': _i}\ndel _i")
        path = os.path.join(root, "%s%d" % (side, count[0]))
        ws.close()

        def op():
            w = pyshelf.spawn(db=path, session="s", backend=backends[side])
            w.remote_exec("_n = sum(globals()['h%d' % _i]['i'] "
                          "for _i in range(10000))")
            w.close()
        return op, (lambda: None)
    interleave("load_10k_entries_after_restart", load_10k, unit="ms", n=1,
               blocks=BLOCKS // 2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
