"""Listing 10,000 sessions with pyshelf.sessions() reads no entry values
(issue 17).

Stores of SESSIONS sessions with PER entries each are made by bench/dump-gen
(the store API: the session records keep their counts).  Timed, the rounds
alternating, medians reported as ratios against floors measured in the
same run:

  names    the floor: the session names alone, a py-lmdb walk of the
           `names` database in this process (what any listing must read)
  dump     pyshelf-dump --sessions --json, the records read by the tool
  sessions pyshelf.sessions(db) (dump, JSON, the SessionInfo objects, and
           the probe for a server: none runs)
  walk     what a listing that counts entries costs: pyshelf-dump --json
           (its default view) on a copy whose records were rewritten as
           format 2's, without counts, so that it walks every session's
           entries (session_count)
  dump x10, walk x10   the same on a store with 10 x PER entries per session

Reading no entry values is shown by the page faults of pyshelf-dump
--sessions (minor + major faults of the child, getrusage): the same for a
store with PER entries per session and one with 10 x PER, while the walk's
grow with the entries.

    DUMP_GEN=build/bench/dump-gen PYSHELF_DUMP=build/pyshelf-dump \\
      PYTHONPATH=build/client/python \\
      /usr/bin/python3 bench/bench_sessions.py [SESSIONS] [PER] [ROUNDS]
"""
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import lmdb

import pyshelf

GEN = os.environ["DUMP_GEN"]
DUMP = os.environ["PYSHELF_DUMP"]


def make(db, sessions, per):
    subprocess.run([GEN, db, str(sessions * per), str(sessions)],
                   check=True, stdout=subprocess.DEVNULL)


def make_v1_copy(src, dst):
    """dst: src with every session record as version 1 (no counts) and
    the format stamped 2."""
    shutil.copytree(src, dst)
    env = lmdb.open(dst, max_dbs=16, map_size=1 << 34)
    with env.begin(write=True) as t:
        db = env.open_db(b"sessions", txn=t)
        recs = list(t.cursor(db=db))
        for k, v in recs:
            t.put(k, b"\x01" + v[1:80] + v[96:], db=db)
        t.put(b"format", struct.pack(">I", 2),
              db=env.open_db(b"meta", txn=t))
    env.close()


def names_floor(db):
    env = lmdb.open(db, readonly=True, max_dbs=16, lock=True)
    with env.begin() as t:
        names = [k.decode() for k, _ in
                 t.cursor(db=env.open_db(b"names", txn=t, create=False))]
    env.close()
    return len(names)


def run_dump(*args):
    r = subprocess.run([DUMP] + list(args), stdout=subprocess.PIPE,
                       check=True)
    return r.stdout.count(b'"row":"session"')


def faults(*args):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([DUMP] + list(args), stdout=subprocess.DEVNULL,
                   check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_minflt - before.ru_minflt) + \
        (after.ru_majflt - before.ru_majflt)


def timed(fn):
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main():
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    root = tempfile.mkdtemp(prefix="bench-sessions-")
    try:
        db = os.path.join(root, "db")
        big = os.path.join(root, "big")
        old = os.path.join(root, "old")
        t0 = time.perf_counter()
        make(db, sessions, per)
        make(big, sessions, per * 10)
        make_v1_copy(db, old)
        make_v1_copy(big, old + "10")
        print("made: %d sessions x %d entries, and x %d (%.1f s)"
              % (sessions, per, per * 10, time.perf_counter() - t0))
        cases = {
            "names": lambda: names_floor(db),
            "dump": lambda: run_dump("--db", db, "--sessions", "--json"),
            "sessions": lambda: len(pyshelf.sessions(db)),
            "walk": lambda: run_dump("--db", old, "--json"),
            "dump x10": lambda: run_dump("--db", big, "--sessions",
                                         "--json"),
            "walk x10": lambda: run_dump("--db", old + "10", "--json"),
        }
        got = {k: [] for k in cases}
        for _ in range(rounds):
            for k, fn in cases.items():
                dt, n = timed(fn)
                assert n == sessions, (k, n)
                got[k].append(dt)
        med = {k: statistics.median(v) for k, v in got.items()}
        print("median of %d rounds, %d sessions:" % (rounds, sessions))
        for k in cases:
            print("  %-9s %8.1f ms  %6.2fx names" % (k, med[k] * 1e3,
                                                   med[k] / med["names"]))
        print("  sessions/walk: %.3f" % (med["sessions"] / med["walk"]))
        f1 = faults("--db", db, "--sessions", "--json")
        f10 = faults("--db", big, "--sessions", "--json")
        w1 = faults("--db", old, "--json")
        w10 = faults("--db", old + "10", "--json")
        print("page faults, --sessions: %d (x%d entries: %d, ratio %.2f)"
              % (f1, 10, f10, f10 / f1))
        print("page faults, walk:       %d (x%d entries: %d, ratio %.2f)"
              % (w1, 10, w10, w10 / w1))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
