"""What close() through a server costs now that it checkpoints (QA2 03):
ws.close() (DETACH) on a live session whose worker holds N loaded lists,
against ws.sync() and a PING measured in the same run, in the same loop.

Run by hand (not in `make bench`'s default list: BENCH_ONLY=detach):

    PYTHONPATH=client/python PYSHELFD=$PWD/pyshelfd \\
        /usr/bin/python3 bench/bench_detach.py [N ...]

For each N (default 1000 and 20000), R rounds (BENCH_ROUNDS, default 30)
of: open a second client of the session, PING twice (the second is the
baseline), sync(), close().  Prints one JSON object per N with the
medians, close/sync (the DETACH's full checkpoint should cost what
sync()'s does) and close/ping.  The session's first client stays
attached throughout, so that the worker and what it loaded stay.  The
server runs in a private socket directory and is stopped at the end."""
import json
import os
import signal
import statistics
import sys
import tempfile
import time

import pyshelf

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))


def one(n):
    db = os.path.join(tempfile.mkdtemp(prefix="pbd"), "db")
    keep = pyshelf.open("s", db=db, sync="always")
    keep.remote_exec("for i in range(%d):\n    globals()['e%%d' %% i] = "
                     "[i] * 10" % n)
    keep.remote_exec("for i in range(%d):\n    globals()['e%%d' %% i]" % n)
    pc = time.perf_counter
    ping, sync, close = [], [], []
    for _ in range(ROUNDS):
        w = pyshelf.open("s", db=db)
        w.ping()
        t0 = pc()
        w.ping()
        t1 = pc()
        w.sync()
        t2 = pc()
        w.close()
        t3 = pc()
        ping.append(t1 - t0)
        sync.append(t2 - t1)
        close.append(t3 - t2)
    server = keep.server_pid
    keep.close()
    os.kill(server, signal.SIGTERM)
    p, s, c = (statistics.median(x) for x in (ping, sync, close))
    print(json.dumps({"name": "detach_live", "loaded": n,
                      "close_ms": round(c * 1e3, 3),
                      "sync_ms": round(s * 1e3, 3),
                      "ping_ms": round(p * 1e3, 3),
                      "x_sync": round(c / s, 2), "x_ping": round(c / p, 1)}),
          flush=True)


def main():
    run = tempfile.mkdtemp(prefix="pbr")
    os.chmod(run, 0o700)
    os.environ["XDG_RUNTIME_DIR"] = run
    os.environ["PYSHELF_OPEN"] = "server"
    for n in [int(a) for a in sys.argv[1:]] or [1000, 20000]:
        one(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
