"""check_writer.py - false alarms of `pyshelf-dump --check` beside a
working backend (issue 14): a pyshelfd rebinds two 1.1 MB bytes globals
(blob files: each rebinding drops the old file) in a loop while --check
runs RUNS times (default 1000) on the same store.  A file that a commit
newer than the checker's snapshot dropped is not damage: every run must
say "sound".  Prints the runs, the false alarms (target 0) and how many
runs met a dropped file (counted as "changed").

    PYTHONPATH=$BUILD/client/python PYSHELFD=$BUILD/pyshelfd \\
    PYSHELF_DUMP=$BUILD/pyshelf-dump /usr/bin/python3 bench/check_writer.py
"""
import json
import os
import subprocess
import sys
import tempfile
import threading

import pyshelf


def writer(db, stop, count):
    ws = pyshelf.spawn(db=db, session="w", sync="never",
                       backend=os.environ.get("PYSHELFD"))
    try:
        i = 0
        while not stop.is_set():
            ws.remote_exec("g%d = bytes([%d]) * 1100000" % (i % 2, i % 256))
            i += 1
            count[0] = i
    finally:
        ws.close()


def main():
    runs = int(os.environ.get("RUNS") or (sys.argv[1] if len(sys.argv) > 1
                                          else 1000))
    dump = os.environ["PYSHELF_DUMP"]
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "db")
        stop, count = threading.Event(), [0]
        th = threading.Thread(target=writer, args=(db, stop, count))
        th.start()
        while count[0] < 2:
            threading.Event().wait(0.01)
        alarms = changed = 0
        try:
            for _ in range(runs):
                r = subprocess.run([dump, "--db", db, "--check", "--json"],
                                   capture_output=True, text=True)
                last = json.loads(r.stdout.splitlines()[-1])
                if r.returncode != 0 or not last["sound"]:
                    alarms += 1
                    print(r.stdout, r.stderr, file=sys.stderr)
                changed += last["changed"] > 0
        finally:
            stop.set()
            th.join()
    print("check beside a writer: %d runs, %d false alarms, %d runs met a "
          "dropped file, %d rebindings" % (runs, alarms, changed, count[0]))
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())
