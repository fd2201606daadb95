"""Ctrl-C on a call that waits in the worker's queue behind another
client's call (QA 16): the first Ctrl-C takes it out of the queue - it
never runs - and raises KeyboardInterrupt in the client at once.  Two
clients; a real SIGINT to the waiting client's process."""
import os
import queue
import signal
import threading

import pyshelf
from pyshelf._workspace import open as _real_open
from server_helpers import WAIT, child, srv, wait_for  # noqa: F401

WAITER = """\
import pyshelf, sys
ws = pyshelf.open("s", db=sys.argv[1], flag="w")
print("attached", flush=True)
try:
    r = ws.remote_exec("n += 1\\nDirectValue(n)")
    print("returned", r, flush=True)
except KeyboardInterrupt as e:
    print("KeyboardInterrupt:", e, flush=True)
print("n is", ws["n"], flush=True)
ws.close()
"""


def _open(s, name="s", **kw):
    """pyshelf.open itself (PYSHELF_TEST_MODE=server's conftest wraps
    pyshelf.open, adding --idle-exit and waiting for workers to go at
    close: what these tests are about)."""
    return s.track(_real_open(name, db=s.db, **kw))


def _lines(p):
    """The child's stdout lines, read by a thread: get(timeout=) fails
    where a line never comes."""
    q = queue.Queue()

    def pump():
        for line in p.stdout:
            q.put(line)
        q.put("")
    threading.Thread(target=pump, daemon=True).start()
    return q


def test_ctrl_c_on_a_queued_call_withdraws_it(srv, tmp_path):
    gate = str(tmp_path / "gate")
    a = _open(srv, "s")
    a["n"] = 0
    busy = threading.Thread(target=lambda: a.remote_exec(
        "import os, time\n"
        "while not os.path.exists(%r):\n    time.sleep(0.02)\n" % gate),
        daemon=True)
    busy.start()
    wait_for(lambda: a.last_call_id, "a's call")
    p = child(srv, WAITER, srv.db)
    lines = _lines(p)
    assert lines.get(timeout=WAIT) == "attached\n"
    watch = _open(srv, "s", flag="w")
    try:
        wait_for(lambda: [c for c in watch.calls()
                          if c.state == "queued" and "n += 1" in c.summary],
                 "the child's call queued")
        os.kill(p.pid, signal.SIGINT)          # one Ctrl-C
        line = lines.get(timeout=WAIT)   # a's call still runs
        assert line.startswith("KeyboardInterrupt:"), line
        assert "never ran" in line
        # the child goes on: its next request is served (a's call still
        # runs, so it waits; let a's call end)
        with open(gate, "w"):
            pass
        busy.join(WAIT)
        assert lines.get(timeout=WAIT) == "n is 0\n"
        assert p.wait(WAIT) == 0
        assert a["n"] == 0                     # it never ran, nor later
        ended = [c for c in watch.calls() if "n += 1" in c.summary]
        assert [c.state for c in ended] == ["lost"]
    finally:
        watch.close()
        a.close()


def test_interrupt_with_nothing_queued_or_running_is_a_no_op(srv):
    a = _open(srv, "s")
    try:
        a.interrupt()
        a["x"] = 1
        assert a["x"] == 1
    finally:
        a.close()
