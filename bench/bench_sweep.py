"""The sweep stall (issue 17): what sweeping a dead session costs the live
ones, and the sweep's speed against the floor.

Run by hand (or bench/run.sh, make bench BENCH_ONLY=sweep):

    BUILDDIR=$PWD PYTHONPATH=client/python PYSHELFD=$PWD/pyshelfd \\
        /usr/bin/python3 bench/bench_sweep.py

Sizes: BENCH_SWEEP_N entries in the dead session (default 1000000) and
BENCH_SWEEP_BLOB_MB megabytes of blob files in a second dead session
(default 10240: 10 GiB, in files of 8 MiB; the disk needs room for two
copies of it).  BENCH_SWEEP_STORE: where the stores go (default a new
temporary directory), deleted at the end.

1. Stall.  A server (pyshelfd --server, --sweep-interval 0: no timed
   sweep of its own) serves a live session; a client does small requests
   back to back (ws["k"] = i: a SET, a checkpoint, a commit).  Its p99
   latency is measured without a sweep, then while `pyshelfd --sweep`
   (what the supervisor runs, default options) reclaims the dead session,
   then without again, all in one run.  Reported: p99 with the sweep
   minus p99 without (target <= 10 ms), for the entries and for the blob
   files.
2. Speed.  The same dead session in two copies of the store, offline:
   the sweep with its defaults, and the floor, the same deletions in one
   write transaction (`--sweep-batch 1073741824 --sweep-batch-ms 0`: the
   store's range delete, one cursor walk, one commit).  Reported: total
   time and entries/s of each, and their ratio.

Prints one JSON object per measurement.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pyshelf

N = int(os.environ.get("BENCH_SWEEP_N", "1000000"))
BLOB_MB = int(os.environ.get("BENCH_SWEEP_BLOB_MB", "10240"))
BLOB_FILE_MB = 8
# to try other sweep options in the stall runs (default: what the server
# runs): BENCH_SWEEP_ARGS="--sweep-batch-ms 2", BENCH_SWEEP_PREFIX="nice"
SWEEP_ARGS = os.environ.get("BENCH_SWEEP_ARGS", "").split()
SWEEP_PREFIX = os.environ.get("BENCH_SWEEP_PREFIX", "").split()
PYSHELFD = os.environ.get("PYSHELFD") or os.path.join(
    os.environ.get("BUILDDIR", "."), "pyshelfd")


def emit(**kw):
    print(json.dumps(kw), flush=True)
    return kw


def p(ts, q):
    ts = sorted(ts)
    return ts[min(len(ts) - 1, int(q * len(ts)))] * 1000


# shipped to the workspace (by source)
def _fill(lo, hi):
    g = globals()
    for i in range(lo, hi):
        g["v%d" % i] = i


def _blobs(lo, n, mb):
    import os as _os
    g = globals()
    for i in range(lo, lo + n):
        g["b%d" % i] = _os.urandom(mb << 20)


def make_dead(db, name, n=0, blob_files=0):
    """A session of n small entries or blob_files blob files, ended (not
    swept: --end-only)."""
    ws = pyshelf.spawn(db=db, session=name, backend=PYSHELFD,
                       create_db=True)
    step = 100000
    for lo in range(0, n, step):
        ws.remote_exec(_fill, lo, min(n, lo + step))
    ws.close()
    # 16 files per backend: the next one does not load them (globals
    # load when named), so memory stays at 16 files' worth
    for lo in range(0, blob_files, 16):
        ws = pyshelf.spawn(db=db, session=name, backend=PYSHELFD)
        ws.remote_exec(_blobs, lo, 16, BLOB_FILE_MB)
        ws.close()
    r = subprocess.run([PYSHELFD, "--sweep", "--db", db, "--end", name,
                        "--end-only"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def sweep(db, *args):
    t0 = time.perf_counter()
    r = subprocess.run([PYSHELFD, "--sweep", "--db", db] + list(args),
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    return dt


def stall(db, name, what, live):
    """p99 of live's requests without, with and again without a sweep of
    the dead session name."""
    i = [0]

    def req():
        i[0] += 1
        live["k"] = i[0]

    def window(n):
        pc = time.perf_counter
        ts = []
        for _ in range(n):
            t0 = pc()
            req()
            ts.append(pc() - t0)
        return ts

    for _ in range(300):
        req()
    before = window(3000)
    proc = subprocess.Popen(SWEEP_PREFIX + [PYSHELFD, "--sweep", "--db", db] +
                            SWEEP_ARGS,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    during = []
    pc = time.perf_counter
    while proc.poll() is None:
        s = pc()
        req()
        during.append(pc() - s)
    sweep_s = time.perf_counter() - t0
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    after = window(3000)
    base = before + after
    return emit(bench="sweep_stall", what=what, sweep_s=round(sweep_s, 3),
                requests_during=len(during),
                p50_without_ms=round(p(base, 0.5), 3),
                p99_without_ms=round(p(base, 0.99), 3),
                p50_with_ms=round(p(during, 0.5), 3),
                p99_with_ms=round(p(during, 0.99), 3),
                max_with_ms=round(max(during) * 1000, 3),
                p99_delta_ms=round(p(during, 0.99) - p(base, 0.99), 3),
                target_ms=10)


def speed(root, db, what, entries):
    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(db, d)
    t_sweep = sweep(a)
    t_floor = sweep(b, "--sweep-batch", "1073741824", "--sweep-batch-ms", "0")
    shutil.rmtree(a)
    shutil.rmtree(b)
    return emit(bench="sweep_speed", what=what, entries=entries,
                sweep_s=round(t_sweep, 3), floor_s=round(t_floor, 3),
                sweep_entries_per_s=round(entries / t_sweep),
                floor_entries_per_s=round(entries / t_floor),
                ratio=round(t_sweep / t_floor, 2))


def main():
    root = os.environ.get("BENCH_SWEEP_STORE") or tempfile.mkdtemp(
        prefix="bench-sweep-")
    run = tempfile.mkdtemp(prefix="bs")
    os.environ["XDG_RUNTIME_DIR"] = run
    db = os.path.join(root, "db")
    live = None
    try:
        emit(bench="sweep_setup", entries=N, blob_mb=BLOB_MB)
        # the server first: its sweep at start must not take the dead
        # sessions made next; --sweep-interval 0: no timed sweep
        live = pyshelf.open("live", db=db, backend=PYSHELFD, create_db=True,
                            args=("--sweep-interval", "0"))
        live["k"] = 0
        t0 = time.perf_counter()
        make_dead(db, "dead", n=N)
        emit(bench="sweep_setup_done", what="entries",
             seconds=round(time.perf_counter() - t0, 1))
        speed(root, db, "entries", N)
        stall(db, "dead", "entries", live)
        if BLOB_MB > 0:
            files = max(16, BLOB_MB // BLOB_FILE_MB)
            t0 = time.perf_counter()
            make_dead(db, "blobs", blob_files=files)
            emit(bench="sweep_setup_done", what="blobs", files=files,
                 seconds=round(time.perf_counter() - t0, 1))
            stall(db, "blobs", "blob files (%d x %d MiB)"
                  % (files, BLOB_FILE_MB), live)
    finally:
        if live is not None:
            pid = live.server_pid
            live.close()
            if pid:
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(run, ignore_errors=True)
        if not os.environ.get("BENCH_SWEEP_STORE"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
