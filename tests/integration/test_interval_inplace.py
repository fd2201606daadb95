"""Interval checkpoints catch the in-place changes that no request names
(QA2 01 and 02): those of a thread of shipped code that keeps running
after the request that started it, and those of more loaded entries than
one interval looks at (the round robin turns until it has looked at every
one); and a workspace left alone goes quiet again.

No request is sent while the tests wait for an interval checkpoint (a
request would checkpoint what it names itself): they read the store with
pyshelf-dump, which never blocks the worker, until the change is there,
then SIGKILL the worker and read it back from a new one.
"""
import json
import os
import subprocess
import time

import pytest

import pyshelf
from pyshelf import DirectValue

from restarts import kill_backend, value

DUMP = os.environ.get("PYSHELF_DUMP")
INTERVAL = 0.05     # s: --checkpoint-interval of these tests
DEADLINE = 120      # s: generous, for a loaded machine


def spawn(db, **kw):
    kw.setdefault("checkpoint_interval", INTERVAL)
    return pyshelf.spawn(db=db, session="s", **kw)


def dump_rows(db, *args):
    """pyshelf-dump --json's rows for these arguments."""
    assert DUMP, "PYSHELF_DUMP is not set"
    r = subprocess.run([DUMP, "--db", str(db), "--json"] + list(args),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return [json.loads(x) for x in r.stdout.splitlines()]


def stored_repr(db, name):
    """repr() of the stored value of global name (None: not stored)."""
    for row in dump_rows(db, "--unpickle", "s", name):
        if row.get("row") == "value":
            return row["repr"]
    return None


def wait_until(cond, what):
    deadline = time.time() + DEADLINE
    while not cond():
        assert time.time() < deadline, "not within %d s: %s" % (DEADLINE,
                                                               what)
        time.sleep(0.02)


def wait_intervals(ws, n):
    """Wait until n more interval checkpoints ran; their stats() then."""
    first = ws.stats()["interval_checkpoints"]
    st = {}

    def moved():
        st.update(ws.stats())
        return st["interval_checkpoints"] >= first + n
    wait_until(moved, "%d interval checkpoints" % n)
    return st


@pytest.mark.parametrize("start", [
    "threading.Thread(target=_run, daemon=True).start()",
    "_thread.start_new_thread(_run, ())"], ids=["threading", "_thread"])
def test_thread_progress_goes_in_on_every_interval(tmp_path, start):
    """A thread of shipped code appends to a global long after the request
    that started it returned: each step reaches the store by an interval
    checkpoint (not only the first one's), and a SIGKILL then keeps it.
    Threads of _thread.start_new_thread are in the same count."""
    db = tmp_path / "db"
    gate = tmp_path / "gate"
    ws = spawn(db)
    ws.remote_exec(
        "import _thread, os, threading, time\n"
        "progress = [0]\n"
        "def _run():\n"
        "    for i in range(1, 6):\n"
        "        while not os.path.exists(%r + str(i)):\n"
        "            time.sleep(0.005)\n"
        "        progress.append(i)\n"
        "%s" % (str(gate), start))
    for i in range(1, 6):
        (tmp_path / ("gate%d" % i)).write_text("")
        want = repr(list(range(i + 1)))
        wait_until(lambda: stored_repr(db, "progress") == want,
                   "progress %s in the store" % want)
    kill_backend(ws)
    ws = spawn(db)
    try:
        assert value(ws, "DirectValue(progress)") == list(range(6))
    finally:
        ws.close()


def test_round_robin_covers_every_entry(tmp_path):
    """More loaded mutable entries than one interval checkpoint looks at
    (20,000), all changed in place by a thread that the request joins
    (its code names none of them): the round robin goes on across
    intervals, and the ceil(45,000 / 20,000) = 3 that follow the request
    put every change in the store, then stop; a SIGKILL keeps them all."""
    n = 45000
    db = tmp_path / "db"
    ws = spawn(db)
    ws.remote_exec("for i in range(%d):\n    globals()['e%%d' %% i] = [i]"
                   % n)
    ws.sync()           # every entry looked at: the cycle is done
    before = {r["name"]: r["size"] for r in dump_rows(db, "s")
              if r.get("row") == "entry" and r["name"].startswith("e")}
    assert len(before) == n
    scans = ws.stats()["interval_scans"]
    ws.remote_exec("import threading\n"
                   "def _run():\n"
                   "    g = globals()\n"
                   "    for i in range(%d):\n"
                   "        g['e%%d' %% i].append(-1)\n"
                   "_t = threading.Thread(target=_run)\n"
                   "_t.start(); _t.join(); del _t" % n)
    st = wait_intervals(ws, 6)
    assert st["interval_scans"] == scans + 3
    rows = [r for r in dump_rows(db, "s") if r.get("row") == "entry"
            and r["name"] in before]
    assert sum(r["size"] != before[r["name"]] for r in rows) == n
    kill_backend(ws)
    ws = spawn(db)
    try:
        got = value(ws, "DirectValue(sum(globals()['e%%d' %% i] == [i, -1] "
                        "for i in range(%d)))" % n)
        assert got == n
    finally:
        ws.close()


def test_idle_workspace_goes_quiet(tmp_path):
    """After a request, interval checkpoints look at the loaded entries
    until the round robin has been round once, then no more while nothing
    runs: an idle workspace is not pickled again and again.  A thread of
    shipped code keeps them going while it is alive; when it has ended,
    they stop again, and the worker still exits when idle (server mode's
    --idle-exit)."""
    db = tmp_path / "db"
    gate = tmp_path / "gate"
    ws = spawn(db)
    pid = ws.pid
    ws.remote_exec("x = [1]\ny = {'a': [2]}")
    # the request's cycle: one scan, as the entries fit in one slice
    st = wait_intervals(ws, 3)
    scans = st["interval_scans"]
    assert scans >= 1
    st = wait_intervals(ws, 5)
    assert st["interval_scans"] == scans
    # a thread alive: every interval looks again
    ws.remote_exec("import os, threading, time\n"
                   "def _run():\n"
                   "    while not os.path.exists(%r):\n"
                   "        time.sleep(0.005)\n"
                   "_t = threading.Thread(target=_run)\n"
                   "_t.start()" % str(gate))
    st = wait_intervals(ws, 5)
    scans = st["interval_scans"]
    st = wait_intervals(ws, 5)
    assert st["interval_scans"] >= scans + 5
    gate.write_text("")
    ws.remote_exec("_t.join(); del _t")
    # the join's request: one cycle more, then quiet again
    st = wait_intervals(ws, 3)
    scans = st["interval_scans"]
    st = wait_intervals(ws, 5)
    assert st["interval_scans"] == scans
    assert value(ws, "DirectValue((x, y))") == ([1], {"a": [2]})
    ws.close()
    # stdio: close() ends it; server: it exits on --idle-exit, the
    # interval checkpoints notwithstanding
    deadline = time.time() + DEADLINE
    while True:
        try:
            os.kill(pid, 0)
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        assert time.time() < deadline, "the idle worker did not exit"
        time.sleep(0.02)
