"""Checkpoint and resume benchmarks for issue 4.

- checkpoint of 10,000 small dicts and of one 100 MB numpy array, measured
  inside the backend (stats()["last_checkpoint_s"]), with --sync always (one
  fsync per checkpoint) and --sync never, against, in the same run, the
  floor (pickle.dumps + a py-lmdb put loop in one transaction, synced or
  not) and stdlib shelve (dbm.gnu: its sync() is msync(MS_SYNC) of the
  mapped file, which writes it to the disk as fdatasync does, so shelve is
  compared with --sync always).  Two cases:
    cold:   a new process on a new file for each writer (pyshelf: a new
            backend, its first request); the objects are built before the
            clock starts.  Before each, 512 MB are touched and freed, and
            each file is removed after its measurement, so that every
            writer gets pages the kernel has just freed rather than
            whatever the order of the run leaves it (touch_and_free);
    steady: a running backend whose store is in use: each round binds
            10,000 new dicts (measured) and then deletes them (not
            measured); the floor and shelve do the same in one environment
            / one file that stays open between rounds.
- resume: backend start to the first result that uses a stored global, for
  workspaces of 1,000 / 100,000 / 1,000,000 entries.
- a no-op request with 1,000 and 100,000 loaded entries;
- a request that binds one global, with 1,000 / 100,000 / 1,000,000 loaded;
- references between entries: the steady checkpoint of 10,000 dicts that
  each refer to one shared global (the stdlib pickler with persistent ids,
  and a row of the refs index per record) against 10,000 plain dicts in
  the same run; and rebinding, after a restart, a global that 1,000 /
  10,000 / 100,000 records not loaded since refer to (each is loaded,
  pointed at the old object, written again), and the request after it;
- sync() of a workspace in which nothing changed: 10,000 loaded dicts, with
  10,000 tuples of atoms or 10,000 tuples holding a dict beside them;
- a request that names 1, 10 or 1,000 of 1,000 / 100,000 loaded globals
  (its checkpoint re-pickles them) against the no-op request;
- interval checkpoints of a workspace of 100,000 loaded globals left alone
  with a thread of shipped code alive (each re-pickles a 20,000-entry
  slice; nothing changed, nothing written) against the quiet interval of
  the same workspace with no thread, and sync() of all of them.
Prints one JSON object per measurement.
"""
import json
import os
import pickle
import shelve
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time

import lmdb
import numpy as np

import pyshelf

REPS = int(os.environ.get("BENCH_REPS", "5"))
STEADY_ROUNDS = int(os.environ.get("BENCH_STEADY_ROUNDS", "12"))
STEADY_TRIALS = int(os.environ.get("BENCH_STEADY_TRIALS", "3"))


def emit(**kw):
    print(json.dumps(kw), flush=True)


def wrapper(d, *extra):
    """A PYSHELFD that passes extra options."""
    path = os.path.join(d, "pyshelfd-" + "-".join(a.strip("-") for a in extra))
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (os.environ["PYSHELFD"],
                                                    " ".join(extra)))
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def small_dicts(tag=""):
    return {"d%d%s" % (i, tag): {"i": i, "s": "x" * 20, "f": i * 0.5}
            for i in range(10000)}


DICTS_SRC = ("globals().update({'d%%d%s' %% i: {'i': i, 's': 'x' * 20, "
             "'f': i * 0.5} for i in range(10000)})")


def ms(v):
    return round(statistics.median(v) * 1e3, 2)


def phase_medians(phases):
    """{"phases_ms": median of each checkpoint phase} over a list of
    stats()["last_checkpoint_phases_s"], or {} when there are none."""
    if not phases:
        return {}
    return {"phases_ms": {k: ms([p[k] for p in phases]) for k in phases[0]}}


# --- the floor: pickle.dumps + a py-lmdb put loop in one transaction -------

def floor_put(env, objs, sync):
    t0 = time.perf_counter()
    with env.begin(write=True) as txn:
        for k, v in objs.items():
            txn.put(k.encode(), pickle.dumps(v, protocol=5))
    if sync:
        env.sync(True)
    return time.perf_counter() - t0


def floor_lmdb(path, objs, sync=True):
    env = lmdb.open(path, map_size=1 << 30, sync=sync)
    t = floor_put(env, objs, sync)
    env.close()
    return t


def floor_steady(d, sync):
    env = lmdb.open(os.path.join(d, "floor-steady-%d" % time.monotonic_ns()),
                    map_size=1 << 30, sync=sync)
    times = []
    for r in range(STEADY_ROUNDS):
        objs = small_dicts("_%d" % r)
        times.append(floor_put(env, objs, sync))
        with env.begin(write=True) as txn:
            for k in objs:
                txn.delete(k.encode())
    env.close()
    return times[2:]


# --- stdlib shelve over dbm.gnu ----------------------------------------------

def shelve_open(path):
    return shelve.Shelf(__import__("dbm.gnu").gnu.open(path, "c"), protocol=5)


def shelve_time(path, objs):
    t0 = time.perf_counter()
    with shelve_open(path) as sh:
        for k, v in objs.items():
            sh[k] = v
        sh.sync()
    return time.perf_counter() - t0


def shelve_steady(d):
    sh = shelve_open(os.path.join(d, "shelf-steady-%d" % time.monotonic_ns()))
    times = []
    for r in range(STEADY_ROUNDS):
        objs = small_dicts("_%d" % r)
        t0 = time.perf_counter()
        for k, v in objs.items():
            sh[k] = v
        sh.sync()
        times.append(time.perf_counter() - t0)
        for k in objs:
            del sh[k]
        sh.sync()
    sh.close()
    return times[2:]


# --- pyshelf -------------------------------------------------------------------

def pyshelf_checkpoint(path, backend, src):
    ws = pyshelf.spawn(db=path, session="b", backend=backend)
    try:
        ws.remote_exec(src)
        st = ws.stats()
        return st["last_checkpoint_s"], st["last_checkpoint_phases_s"]
    finally:
        ws.close()


# --- cold: a new process and a new file for every writer ----------------------

NUMPY_SRC = ("import numpy as np\narr = np.arange(100 * 1024 * 1024 // 8, "
             "dtype=np.float64)")


def numpy_objs():
    return {"arr": np.arange(100 * 1024 * 1024 // 8, dtype=np.float64)}


def raw_write(path, objs, sync):
    """One write(2) of the array's bytes to a new file: the least any
    writer that goes through the kernel pays."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, memoryview(objs["arr"]).cast("B"))
    if sync:
        os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - t0


COLD_WRITERS = {
    "floor": lambda path, objs: floor_lmdb(path, objs, True),
    "floor_nosync": lambda path, objs: floor_lmdb(path, objs, False),
    "shelve": shelve_time,
    "write": lambda path, objs: raw_write(path, objs, False),
    "write_fsync": lambda path, objs: raw_write(path, objs, True),
}


def cold_child(writer, workload, path):
    """In the new process: build the objects, then time one writer."""
    objs = small_dicts() if workload == "dicts" else numpy_objs()
    print(repr(COLD_WRITERS[writer](path, objs)))


def remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


def touch_and_free(nbytes):
    """Touch nbytes of new memory and give it back to the kernel.  On a VM
    the first touch of a guest page the host has not backed (or has taken
    back, as free page reporting does within seconds) is slow: 2 to 3 ms per
    MB here, against 0.25 ms for a page the guest just freed.  Without this,
    a cold writer's time depends on what the run did just before it."""
    a = np.ones(nbytes // 8)
    del a


def cold(d, writer, workload, backends):
    """One cold measurement; the file is removed afterwards.  Returns
    (seconds, phases or None)."""
    path = os.path.join(d, "cold-%s-%d" % (writer, time.monotonic_ns()))
    touch_and_free(512 << 20)
    try:
        if writer in backends:
            src = DICTS_SRC % "" if workload == "dicts" else NUMPY_SRC
            return pyshelf_checkpoint(path, backends[writer], src)
        out = subprocess.run([sys.executable, os.path.abspath(__file__),
                              "--cold", writer, workload, path],
                             check=True, capture_output=True, text=True)
        return float(out.stdout), None
    finally:
        remove(path)


def bench_cold(d, workload, writers, reps):
    backends = {"pyshelf": wrapper(d, "--sync", "always"),
                "pyshelf_nosync": wrapper(d, "--sync", "never")}
    rows = {w: [] for w in writers}
    phases = {w: [] for w in writers}
    for _ in range(reps):
        for w in writers:
            t, ph = cold(d, w, workload, backends)
            rows[w].append(t)
            if ph:
                phases[w].append(ph)
    name = "checkpoint_10k_dicts_" if workload == "dicts" else \
        "checkpoint_100mb_numpy_"
    for w, v in rows.items():
        emit(name=name + w, median_ms=ms(v), **phase_medians(phases[w]))


def pyshelf_steady(d, backend):
    ws = pyshelf.spawn(db=os.path.join(d, "ps-steady-%d" % time.monotonic_ns()),
                       session="b", backend=backend)
    times, phases = [], []
    try:
        for r in range(STEADY_ROUNDS):
            ws.remote_exec(DICTS_SRC % ("_%d" % r))
            st = ws.stats()
            times.append(st["last_checkpoint_s"])
            phases.append(st["last_checkpoint_phases_s"])
            ws.remote_exec("for _n in [n for n in globals() if "
                           "n.startswith('d') and n.endswith('_%d')]:\n"
                           "    del globals()[_n]\ndel _n" % r)
    finally:
        ws.close()
    return times[2:], phases[2:]


def bench_checkpoints(d):
    always = wrapper(d, "--sync", "always")
    never = wrapper(d, "--sync", "never")
    bench_cold(d, "dicts", ["floor", "floor_nosync", "shelve", "pyshelf",
                            "pyshelf_nosync"], REPS)

    # steady state: the same work in a running backend / an open file;
    # STEADY_TRIALS backends (environments, shelves) one after the other,
    # the medians over all their counted rounds: one backend's rounds vary
    # less than backends do
    rows = {k: [] for k in ("pyshelf", "pyshelf_nosync", "floor",
                            "floor_nosync", "shelve")}
    phases = {"pyshelf": [], "pyshelf_nosync": []}
    for _ in range(STEADY_TRIALS):
        for k, backend in (("pyshelf", always), ("pyshelf_nosync", never)):
            t, ph = pyshelf_steady(d, backend)
            rows[k] += t
            phases[k] += ph
        rows["floor"] += floor_steady(d, True)
        rows["floor_nosync"] += floor_steady(d, False)
        rows["shelve"] += shelve_steady(d)
    for k, v in rows.items():
        emit(name="steady_10k_dicts_" + k, median_ms=ms(v),
             **phase_medians(phases.get(k)))

    bench_cold(d, "numpy", ["floor", "floor_nosync", "shelve", "pyshelf",
                            "pyshelf_nosync", "write", "write_fsync"],
               max(REPS // 2, 3))
    arr = numpy_objs()

    # steady state: the array replaced by a new one of the same size in a
    # running backend / an open environment / an open shelf.  The first
    # rounds grow the files (LMDB reuses a page two transactions after it
    # was freed) and are not counted.
    rounds, skip = max(REPS, 5) + 3, 3
    for sync, suffix in ((True, ""), (False, "_nosync")):
        ws = pyshelf.spawn(db=os.path.join(d, "np-steady-%d" %
                                           time.monotonic_ns()),
                           session="b", backend=always if sync else never)
        times = []
        try:
            ws.remote_exec("import numpy as np")
            for r in range(rounds):
                ws.remote_exec("arr = np.arange(100 * 1024 * 1024 // 8, "
                               "dtype=np.float64) + %d" % r)
                times.append(ws.stats()["last_checkpoint_s"])
        finally:
            ws.close()
        emit(name="steady_100mb_numpy_pyshelf" + suffix,
             median_ms=ms(times[skip:]))
        env = lmdb.open(os.path.join(d, "floor-np-%d" % time.monotonic_ns()),
                        map_size=1 << 30, sync=sync)
        times = [floor_put(env, {"arr": arr["arr"] + r}, sync)
                 for r in range(rounds)]
        env.close()
        emit(name="steady_100mb_numpy_floor" + suffix,
             median_ms=ms(times[skip:]))
    sh = shelve_open(os.path.join(d, "shelf-np-%d" % time.monotonic_ns()))
    times = []
    for r in range(rounds):
        a = arr["arr"] + r
        t0 = time.perf_counter()
        sh["arr"] = a
        sh.sync()
        times.append(time.perf_counter() - t0)
    sh.close()
    emit(name="steady_100mb_numpy_shelve", median_ms=ms(times[skip:]))


def bench_resume(d):
    for n in (1000, 100000, 1000000):
        db = os.path.join(d, "resume-%d" % n)
        ws = pyshelf.spawn(db=db, session="r")
        ws.remote_exec("for i in range(%d):\n    globals()['g%%d' %% i] = i\n" % n)
        ws.close()
        times = []
        for _ in range(REPS):
            t0 = time.perf_counter()
            ws = pyshelf.spawn(db=db, session="r")
            v = ws.remote_exec("DirectValue(g%d)" % (n - 1)).value
            times.append(time.perf_counter() - t0)
            assert v == n - 1
            ws.close()
        emit(name="resume_%d_entries" % n, median_ms=round(statistics.median(times) * 1e3, 2))


def noop():
    return None


def bench_noop_loaded(d):
    for n in (1000, 100000):
        ws = pyshelf.spawn(db=os.path.join(d, "noop-%d" % n), session="n")
        try:
            ws.remote_exec("for i in range(%d):\n    globals()['g%%d' %% i] = [i]\n" % n)
            for _ in range(200):
                ws.remote_exec(noop)
            ts = []
            for _ in range(2000):
                t0 = time.perf_counter()
                ws.remote_exec(noop)
                ts.append(time.perf_counter() - t0)
            ts.sort()
            emit(name="noop_with_%d_loaded" % n, median_us=round(ts[len(ts) // 2] * 1e6, 2),
                 p99_us=round(ts[len(ts) * 99 // 100] * 1e6, 2))
        finally:
            ws.close()


def bench_bind_one(d):
    """A request that binds one global, with n loaded globals: its
    checkpoint looks at the name written, not at every global."""
    for n in (1000, 100000, 1000000):
        ws = pyshelf.spawn(db=os.path.join(d, "bind-%d" % n), session="n")
        try:
            ws.remote_exec("globals().update({'g%%d' %% i: [i] for i in "
                           "range(%d)})" % n)
            ts = []
            for r in range(300):
                t0 = time.perf_counter()
                ws.remote_exec("x = %d" % r)
                ts.append(time.perf_counter() - t0)
            ts.sort()
            emit(name="bind_one_with_%d_loaded" % n,
                 median_us=round(ts[len(ts) // 2] * 1e6, 2),
                 p99_us=round(ts[len(ts) * 99 // 100] * 1e6, 2))
        finally:
            ws.close()


REFS_SRC = ("globals().update({'d%%d%s' %% i: {'i': i, 's': shared} "
            "for i in range(%d)})")


def bench_refs(d):
    """The cost of references between entries (see the docstring)."""
    rows = {"plain": [], "refs": []}
    for _ in range(STEADY_TRIALS):
        ws = pyshelf.spawn(db=os.path.join(d, "refs-%d" % time.monotonic_ns()),
                           session="b")
        try:
            ws.remote_exec("shared = [0]")
            for r in range(STEADY_ROUNDS):
                for kind, src in (("plain", DICTS_SRC % ("_p%d" % r)),
                                  ("refs", REFS_SRC % ("_r%d" % r, 10000))):
                    ws.remote_exec(src)
                    if r >= 2:
                        rows[kind].append(ws.stats()["last_checkpoint_s"])
                ws.remote_exec("for _n in [n for n in globals() if "
                               "n.startswith('d') and n[-1].isdigit()]:\n"
                               "    del globals()[_n]\ndel _n")
        finally:
            ws.close()
    emit(name="steady_10k_dicts_plain_same_run", median_ms=ms(rows["plain"]))
    emit(name="steady_10k_dicts_referring_to_one_global",
         median_ms=ms(rows["refs"]),
         ratio_to_plain=round(statistics.median(rows["refs"]) /
                              statistics.median(rows["plain"]), 2))
    for n in (1000, 10000, 100000):
        db = os.path.join(d, "rescue-%d" % n)
        ws = pyshelf.spawn(db=db, session="s")
        ws.remote_exec("shared = [0]\n" + REFS_SRC % ("", n))
        ws.close()
        times, after = [], []
        for rep in range(3):
            ws = pyshelf.spawn(db=db, session="s")
            try:
                ws.remote_exec("pass")
                t0 = time.perf_counter()
                ws.remote_exec("shared = [%d]" % (rep + 1))
                t1 = time.perf_counter()
                ws.remote_exec("other = 1")
                t2 = time.perf_counter()
                got = ws.remote_exec("DirectValue(d0['s'])").value
                assert got == [rep], (got, rep)
            finally:
                ws.close()
            times.append(t1 - t0)
            after.append(t2 - t1)
            # the referrers now hold their own lists: refer them to the
            # global again for the next repetition
            ws = pyshelf.spawn(db=db, session="s")
            try:
                ws.remote_exec("for _i in range(%d):\n"
                               "    globals()['d%%d' %% _i]['s'] = shared\n"
                               "del _i" % n)
            finally:
                ws.close()
        emit(name="rebind_with_%d_unloaded_referrers" % n,
             median_ms=ms(times),
             per_referrer_us=round(statistics.median(times) / n * 1e6, 2),
             next_request_ms=ms(after))


def bench_full(d):
    """sync() of a loaded workspace in which nothing changed: every
    loaded entry whose state can change in place is pickled again and
    its digest compared (nothing is written).  10,000 small dicts, and
    the same with 10,000 tuples of atoms beside them (skipped, as known
    frozen) and 10,000 tuples each holding a dict (pickled again).
    Medians of 20 syncs, inside the backend (last_checkpoint_s)."""
    cases = {
        "dicts": "for i in range(10000):\n"
                 "    globals()['d%d' % i] = {'i': i, 's': 'x' * 20}\n",
        "dicts_and_atom_tuples": "for i in range(10000):\n"
                 "    globals()['d%d' % i] = {'i': i, 's': 'x' * 20}\n"
                 "    globals()['t%d' % i] = (i, 'x' * 20, (i * 0.5,))\n",
        "dicts_and_dict_tuples": "for i in range(10000):\n"
                 "    globals()['d%d' % i] = {'i': i, 's': 'x' * 20}\n"
                 "    globals()['t%d' % i] = (i, {'s': 'x' * 20})\n",
    }
    for name, src in cases.items():
        ws = pyshelf.spawn(db=os.path.join(d, "full-" + name), session="f")
        try:
            ws.remote_exec(src + "del i")
            ws.sync()
            ts = []
            for _ in range(20):
                ws.sync()
                ts.append(ws.stats()["last_checkpoint_s"])
            emit(name="sync_unchanged_10k_" + name, median_ms=ms(ts))
        finally:
            ws.close()


def bench_named(d):
    """A request's own checkpoint re-pickles the loaded globals its code
    names (their in-place changes are part of it): a block that names 1,
    10 or 1,000 of 1,000 / 100,000 loaded globals (lists of one int;
    nothing changes, so nothing is written), against the no-op request
    in the same backend (the baseline).  Medians over 2,000 requests
    (200 for 1,000 names)."""
    for n in (1000, 100000):
        ws = pyshelf.spawn(db=os.path.join(d, "named-%d" % n), session="n")
        try:
            ws.remote_exec("for i in range(%d):\n    globals()['g%%d' %% i] = [i]\n"
                           "del i" % n)
            rows = {}
            for k in (0, 1, 10, 1000):
                src = "; ".join(["g%d" % (i * (n // 1000)) for i in range(k)] + ["None"]) \
                    if k else "pass"
                reps = 200 if k == 1000 else 2000
                for _ in range(50):
                    ws.remote_exec(src)
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    ws.remote_exec(src)
                    ts.append(time.perf_counter() - t0)
                rows[k] = statistics.median(ts)
                emit(name="request_naming_%d_of_%d_loaded" % (k, n),
                     median_us=round(rows[k] * 1e6, 2),
                     ratio_to_noop=round(rows[k] / rows[0], 2))
        finally:
            ws.close()


def interval_samples(ws, k):
    """stats() of the next k interval checkpoints (polled: one of two that
    ran between polls is missed, which changes no median)."""
    out, last = [], ws.stats()["interval_checkpoints"]
    while len(out) < k:
        time.sleep(0.01)
        st = ws.stats()         # STATS starts no round robin of its own
        if st["interval_checkpoints"] != last:
            last = st["interval_checkpoints"]
            out.append(st)
    return out


def bench_interval(d):
    """Interval checkpoints while a thread of shipped code is alive and
    changes nothing: each one re-pickles 20,000 of the 100,000 loaded
    globals (lists of one int) and compares their digests; nothing is
    written.  Against, in the same backend: the quiet interval (no thread,
    the round done: the O(1) check, what every interval was before threads
    kept them going) and sync() of all 100,000.  Medians of 20 intervals
    (inside the backend, stats()["last_interval_s"]) at
    --checkpoint-interval 0.2, and of 10 syncs (wall clock)."""
    n = 100000
    ws = pyshelf.spawn(db=os.path.join(d, "interval"), session="i",
                       checkpoint_interval=0.2)
    try:
        ws.remote_exec("for i in range(%d):\n    globals()['g%%d' %% i] = [i]\n"
                       "del i" % n)
        ws.sync()
        quiet = interval_samples(ws, 20)
        assert quiet[0]["interval_scans"] == quiet[-1]["interval_scans"]
        ws.remote_exec("import threading\n_ev = threading.Event()\n"
                       "_t = threading.Thread(target=_ev.wait)\n_t.start()")
        busy = interval_samples(ws, 21)[1:]
        assert busy[-1]["interval_scans"] - busy[0]["interval_scans"] >= 19
        ws.remote_exec("_ev.set(); _t.join(); del _t, _ev")
        syncs = []
        for _ in range(10):
            t0 = time.perf_counter()
            ws.sync()
            syncs.append(time.perf_counter() - t0)
        q = statistics.median(st["last_interval_s"] for st in quiet)
        b = statistics.median(st["last_interval_s"] for st in busy)
        emit(name="interval_with_thread_100k_loaded",
             median_ms=round(b * 1e3, 2),
             quiet_interval_us=round(q * 1e6, 2),
             ratio_to_quiet=round(b / q, 1),
             sync_all_ms=ms(syncs),
             share_of_default_5s_interval=round(b / 5.0, 4))
    finally:
        ws.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cold"]:
        cold_child(*sys.argv[2:5])
        sys.exit(0)
    which = sys.argv[1:] or ["checkpoint", "resume", "noop", "bind", "refs",
                             "full", "named", "interval"]
    with tempfile.TemporaryDirectory() as d:
        if "checkpoint" in which:
            bench_checkpoints(d)
        if "resume" in which:
            bench_resume(d)
        if "noop" in which:
            bench_noop_loaded(d)
        if "bind" in which:
            bench_bind_one(d)
        if "refs" in which:
            bench_refs(d)
        if "full" in which:
            bench_full(d)
        if "named" in which:
            bench_named(d)
        if "interval" in which:
            bench_interval(d)
