"""A/B of two pyshelfd builds on an array of Python objects (QA2 06): the
checkpoint that re-pickles it after one item changes, and a start that
loads it.  The two backends run side by side, their measurements
interleaved in blocks (A, B, B, A, ...) so that a slow phase of a shared
machine slows both alike; both are driven by this tree's client.

Usage: PYTHONPATH=B/client/python python3 bench/bench_objarray.py \\
           A/pyshelfd B/pyshelfd
Environment: OA_N (default 200000) items, OA_BLOCKS (default 15) blocks
per side.  Prints one JSON line per measurement: A and B medians, B/A.
"""
import json
import os
import statistics
import sys
import tempfile
import time

import pyshelf

N = int(os.environ.get("OA_N", "200000"))
BLOCKS = int(os.environ.get("OA_BLOCKS", "15"))
SETUP = """
import numpy as np
oa = np.empty(%d, dtype=object)
for i in range(len(oa)):
    oa[i] = (i, str(i)) if i %% 3 == 0 else str(i) if i %% 3 == 1 else i
oav = oa[::2]
""" % N


def main(a, b):
    bins = {"A": a, "B": b}
    dbs = {s: tempfile.mkdtemp(prefix="oa-%s-" % s) for s in bins}
    wss = {}
    for s in bins:
        wss[s] = pyshelf.spawn(db=dbs[s], session="s", backend=bins[s])
        wss[s].remote_exec(SETUP)
        wss[s].sync()
    times = {(k, s): [] for k in ("checkpoint", "start") for s in bins}
    order = ["A", "B"]
    for i in range(BLOCKS):
        for s in order:
            ws = wss[s]
            t0 = time.perf_counter()
            ws.remote_exec("oa[1] = %d" % i)      # re-pickles oa
            times[("checkpoint", s)].append(time.perf_counter() - t0)
            ws.close()
            t0 = time.perf_counter()
            ws = wss[s] = pyshelf.spawn(db=dbs[s], session="s",
                                        backend=bins[s])
            ws.remote_exec("len(oa) + len(oav)")  # loads both
            times[("start", s)].append(time.perf_counter() - t0)
        order.reverse()
    for s in bins:
        wss[s].close()
    for k in ("checkpoint", "start"):
        ma = statistics.median(times[(k, "A")]) * 1e3
        mb = statistics.median(times[(k, "B")]) * 1e3
        print(json.dumps({"name": "%s, object array of %d" % (k, N),
                          "A_ms": round(ma, 2), "B_ms": round(mb, 2),
                          "B/A": round(mb / ma, 3)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
