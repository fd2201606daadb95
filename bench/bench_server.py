"""Server mode against stdio mode and the C pipe floor (issue 16).

Run by bench/run.sh (make bench BENCH_ONLY=server) or by hand:

    BUILDDIR=$PWD PYTHONPATH=client/python PYSHELFD=$PWD/pyshelfd \\
        /usr/bin/python3 bench/bench_server.py

The round trips and attaches run pinned to CPU 0 (the script pins itself,
and the backends and the server it starts inherit it); the two-session
row runs unpinned, on a server of its own.

Prints one JSON object per measurement.  Every figure that matters is a
ratio against a baseline measured in the same run: the no-op round trip
through a server against the same through a private stdio backend (target
<= 1.2) and against the C pipe floor (bench/pipe_floor, target <= 2.5 for
both), and a PING through stdio (the request path with no Python in the
backend); attaching to a live session (target under 1 ms) and to a
hibernated one; and two sessions busy at once against one alone (target
>= 1.8x the throughput on two cores).

Two more rows say what PIPES (docs/PROTOCOL.md 7.1) buys: the same no-op
through the same server on a connection that stays on its socket
(PYSHELF_NO_PIPES=1; pipes_x_socket is the server row over it), and the C
floor over a Unix socketpair instead of pipes (sock_floor_us).

The server runs in a private socket directory (XDG_RUNTIME_DIR is set to a
temporary directory) and is stopped at the end.

BENCH_BEFORE=/path/to/other/pyshelfd adds that build's stdio and server
round trips to the same interleaved rounds (rows noop_*_before_us, and
after/before ratios): a change's before and after, measured in one run
against one floor.  The before rows run that build's own client too (the
client/python next to its pyshelfd, or BENCH_BEFORE_PYTHONPATH), so that a
change on either side of the wire shows.  Each build's rows run in a child
process of their own (pinned to the same CPU, driven round by round), the
same for both: a client in this script's process measured 3 us slower than
the same client in a fresh one.
"""
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import pyshelf

N = int(os.environ.get("BENCH_N", "5000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def emit(**kw):
    print(json.dumps(kw), flush=True)
    return kw


def timed(fn, n, warm=200):
    for _ in range(warm):
        fn()
    pc = time.perf_counter
    ts = []
    for _ in range(n):
        t0 = pc()
        fn()
        ts.append(pc() - t0)
    ts.sort()
    return ts


def noop():
    return None


def work():
    # a few milliseconds of the backend's CPU: the 2-session row measures
    # the workers, not the clients
    return sum(range(300000)) and None


def child_rows(db_stdio, db_server, backend, n):
    """One build's rows (--child): its client and its backend, stdio and
    server, and a PING through stdio (the same round trip with no Python
    in the backend), one round per line read ("round"); prints one line
    of three medians (seconds) per round."""
    ws_s = pyshelf.spawn(db=db_stdio, session="b", backend=backend)
    ws_v = pyshelf.open("b", db=db_server, backend=backend)
    # the same server, a connection that stays on its socket (no PIPES)
    os.environ["PYSHELF_NO_PIPES"] = "1"
    ws_k = pyshelf.open("b", db=db_server, backend=backend, flag="w")
    del os.environ["PYSHELF_NO_PIPES"]
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() != "round":
                break
            s = timed(lambda: ws_s.remote_exec(noop), n)[n // 2]
            v = timed(lambda: ws_v.remote_exec(noop), n)[n // 2]
            p = timed(ws_s.ping, n)[n // 2]
            k = timed(lambda: ws_k.remote_exec(noop), n)[n // 2]
            print(s, v, p, k, flush=True)
    finally:
        ws_s.close()
        ws_k.close()
        sp = ws_v.server_pid
        ws_v.close()
        if sp:
            os.kill(sp, signal.SIGTERM)


class Rows:
    """The child that runs child_rows() with one build's client (path) and
    backend."""

    def __init__(self, backend, path, db_stdio, db_server, tmp):
        if not os.path.isdir(os.path.join(path, "pyshelf")):
            raise SystemExit("no client in %s: set BENCH_BEFORE_PYTHONPATH"
                             % path)
        env = dict(os.environ, PYTHONPATH=path, PYSHELFD=backend)
        self.p = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child",
             db_stdio, db_server, backend, str(N)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env, cwd=tmp)
        if self.p.stdout.readline().strip() != "ready":
            raise SystemExit("the client of %s did not start" % backend)

    def round(self):
        self.p.stdin.write("round\n")
        self.p.stdin.flush()
        return [float(x) for x in self.p.stdout.readline().split()]

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def pipe_floor(builddir, socket=False):
    exe = os.path.join(builddir, "bench", "pipe_floor")
    out = subprocess.run([exe, "20000"] + (["socket"] if socket else []),
                         capture_output=True, text=True,
                         check=True).stdout
    # "pipe_floor median_us=12.53 p99_us=30.49 n=2000": seconds
    for tok in out.split():
        if tok.startswith("median_us="):
            return float(tok.split("=", 1)[1]) * 1e-6
    raise SystemExit("cannot read pipe_floor's output: %r" % out)


def busy_client(db, name, seconds, q):
    ws = pyshelf.open(name, db=db)
    try:
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ws.remote_exec(work)
            n += 1
        q.put(n)
    finally:
        ws.close()


def throughput(db, names, seconds):
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=busy_client,
                                  args=(db, nm, seconds, q)) for nm in names]
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return total / seconds


def main():
    builddir = os.environ.get("BUILDDIR", os.getcwd())
    tmp = tempfile.mkdtemp(prefix="pyshelf-bench-")
    run = os.path.join(tmp, "run")
    os.mkdir(run, 0o700)
    os.environ["XDG_RUNTIME_DIR"] = run
    db = os.path.join(tmp, "db")
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    floors, stdio, server, pings = [], [], [], []
    sock_floors, server_sock = [], []
    before = os.environ.get("BENCH_BEFORE")
    stdio_b, server_b = [], []
    rows = Rows(pyshelf._workspace._find_backend(None),
                os.path.dirname(os.path.dirname(os.path.abspath(
                    pyshelf.__file__))),
                os.path.join(tmp, "db-stdio"), db, tmp)
    rows_b = None
    if before:
        rows_b = Rows(before, os.environ.get("BENCH_BEFORE_PYTHONPATH") or
                      os.path.join(os.path.dirname(os.path.abspath(before)),
                                   "client", "python"),
                      os.path.join(tmp, "db-stdio-b"),
                      os.path.join(tmp, "db-b"), tmp)
    try:
        # interleaved rounds: the VM's neighbours move every row alike
        for _ in range(ROUNDS):
            floors.append(pipe_floor(builddir))
            sock_floors.append(pipe_floor(builddir, socket=True))
            s, v, p, k = rows.round()
            stdio.append(s)
            server.append(v)
            pings.append(p)
            server_sock.append(k)
            if before:
                sb, vb = rows_b.round()[:2]
                stdio_b.append(sb)
                server_b.append(vb)
        s = statistics.median(stdio)
        v = statistics.median(server)
        floor_s = statistics.median(floors)
        emit(name="noop_floor_us", value=round(floor_s * 1e6, 2))
        emit(name="noop_stdio_us", value=round(s * 1e6, 2),
             x_floor=round(s / floor_s, 2))
        emit(name="noop_server_us", value=round(v * 1e6, 2),
             x_floor=round(v / floor_s, 2), x_stdio=round(v / s, 3))
        k = statistics.median(server_sock)
        sf = statistics.median(sock_floors)
        emit(name="noop_server_socket_us", value=round(k * 1e6, 2),
             x_floor=round(k / floor_s, 2), x_stdio=round(k / s, 3),
             pipes_x_socket=round(v / k, 3))
        emit(name="sock_floor_us", value=round(sf * 1e6, 2),
             x_floor=round(sf / floor_s, 2))
        p = statistics.median(pings)
        emit(name="ping_stdio_us", value=round(p * 1e6, 2),
             x_floor=round(p / floor_s, 2))
        if before:
            sb = statistics.median(stdio_b)
            vb = statistics.median(server_b)
            emit(name="noop_stdio_before_us", value=round(sb * 1e6, 2),
                 x_floor=round(sb / floor_s, 2),
                 after_x_before=round(s / sb, 3))
            emit(name="noop_server_before_us", value=round(vb * 1e6, 2),
                 x_floor=round(vb / floor_s, 2), x_stdio=round(vb / sb, 3),
                 after_x_before=round(v / vb, 3))
        # attach to the live session (its worker runs: the child holds it)
        ts = []
        for _ in range(200):
            t0 = time.perf_counter()
            w2 = pyshelf.open("b", db=db)
            ts.append(time.perf_counter() - t0)
            w2.close()
        ts.sort()
        emit(name="attach_live_ms", value=round(ts[len(ts) // 2] * 1e3, 3),
             p99_ms=round(ts[len(ts) * 99 // 100] * 1e3, 3))
    finally:
        rows.close()
        if before:
            rows_b.close()
    # attach to a hibernated session: a server of its own, whose workers
    # exit after 0.2 s idle; each attach starts a worker that resumes the
    # session from the store
    db_h = os.path.join(tmp, "db-hib")
    ts = []
    for i in range(6):
        w = pyshelf.open("hib", db=db_h, args=("--idle-exit", "0.2"))
        w["x"] = list(range(1000))
        pid = w.pid
        w.close()
        deadline = time.monotonic() + 60
        while os.path.exists("/proc/%d" % pid):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not hibernate")
            time.sleep(0.02)
        t0 = time.perf_counter()
        w = pyshelf.open("hib", db=db_h)
        w.ping()
        ts.append(time.perf_counter() - t0)
        if w.pid == pid:
            raise SystemExit("attached to the old worker")
        hib_server = w.server_pid
        w.close()
    emit(name="attach_hibernated_ms",
         value=round(statistics.median(ts) * 1e3, 2))
    os.kill(hib_server, signal.SIGTERM)
    # one session busy against two busy at once: unpinned, on a server
    # started unpinned (its workers inherit its affinity)
    os.sched_setaffinity(0, cpus)
    db2 = os.path.join(tmp, "db2")
    throughput(db2, ["t1", "t2"], 1.0)   # warm: server, workers, caches
    one = throughput(db2, ["t1"], 3.0)
    two = throughput(db2, ["t1", "t2"], 3.0)
    emit(name="busy_one_calls_per_s", value=round(one, 1))
    emit(name="busy_two_calls_per_s", value=round(two, 1),
         x_one=round(two / one, 2), cpus=len(cpus))
    w = pyshelf.open("t1", db=db2)
    pid = w.server_pid
    w.close()
    os.kill(pid, signal.SIGTERM)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child_rows(*sys.argv[2:5], int(sys.argv[5])))
    sys.exit(main())
