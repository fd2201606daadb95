"""What the count of threads of shipped code costs a thread's start: in
one worker, ROUNDS rounds (BENCH_ROUNDS, default 7) of N threads
(BENCH_THREADS, default 2000) each started and waited for, one at a
time, through

- the real _thread.start_new_thread, which nothing counts (the baseline:
  the function the backend's wrapper calls, taken from its closure);
- _thread.start_new_thread as shipped code sees it (counted);
- threading.Thread(...).start() and .join() (counted, as it goes through
  the same wrapper).

Each thread's function only releases a lock that the starter then takes,
so a round measures starting and ending threads.  Measured inside the
worker (time.perf_counter); prints one JSON object with the medians per
thread (µs) and the ratios against the baseline.

Run by hand (not in `make bench`'s default list: BENCH_ONLY=threads):

    PYTHONPATH=client/python PYSHELFD=$PWD/pyshelfd \\
        taskset -c 0 /usr/bin/python3 bench/bench_threads.py

With the pyshelfd of a build before the one count (no wrapper), both
_thread rows are the real function, and threading's row pays the hook
that build had on threading.Thread's bootstrap instead.
"""
import io
import json
import os
import tempfile

import pyshelf

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
N = int(os.environ.get("BENCH_THREADS", "2000"))

BENCH = r'''
import _thread, statistics, threading, time
counted = _thread.start_new_thread
# the real one: in the wrapper's closure (a build before the wrapper has
# none: both are the real one there, and threading's hook is the old one)
real = next((c.cell_contents for c in getattr(counted, "__closure__", None) or ()
             if type(c.cell_contents).__name__ ==
             "builtin_function_or_method" and
             c.cell_contents.__name__ == "start_new_thread"), counted)
done = _thread.allocate_lock()

def one_start(start):
    done.acquire()
    t0 = time.perf_counter()
    for _ in range(N):
        start(done.release, ())
        done.acquire()
    done.release()
    return (time.perf_counter() - t0) / N * 1e6

def one_threading():
    t0 = time.perf_counter()
    for _ in range(N):
        t = threading.Thread(target=int)
        t.start()
        t.join()
    return (time.perf_counter() - t0) / N * 1e6

res = {"real": [], "counted": [], "threading": []}
for _ in range(ROUNDS):
    res["real"].append(one_start(real))
    res["counted"].append(one_start(counted))
    res["threading"].append(one_threading())
DirectValue({k: statistics.median(v) for k, v in res.items()})
'''


def main():
    db = os.path.join(tempfile.mkdtemp(prefix="pbt"), "db")
    ws = pyshelf.spawn(db=db, session="s")
    try:
        ws["N"] = N
        ws["ROUNDS"] = ROUNDS
        # its locks and functions are not for the store: no notices
        m = ws.remote_exec(BENCH, stderr=io.StringIO()).value
    finally:
        ws.close()
    out = {"bench": "thread start", "threads": N, "rounds": ROUNDS}
    out.update({k + "_us": round(v, 2) for k, v in m.items()})
    out["counted/real"] = round(m["counted"] / m["real"], 3)
    out["threading/real"] = round(m["threading"] / m["real"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
