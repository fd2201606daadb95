"""A client that leaves a server's session leaves what it changed durable
(QA2 03): ws.close() (DETACH) through a server runs the full checkpoint a
stdio backend's detach runs (every loaded entry whose state can change in
place), before close() returns; a DETACH that comes while another client's
call runs is answered at once, its checkpoint taken when that call ends;
a client whose connection just drops (no DETACH) gets the same checkpoint
once the worker sees it gone.

Each test changes entries in place where no request names them (through
globals()[name], in a thread that ended before close(), a list inside a
tuple), so that only a full checkpoint writes them; the interval
checkpoint is an hour and the idle exit ten minutes away, so nothing else
does.  The worker is then killed with SIGKILL and the session opened
again: every change must be there.

pyshelf.open is taken at import, before conftest's server mode wraps it
(its close() waits for the worker's idle exit, which checkpoints too)."""
import os
import signal
import threading
import warnings

import pytest

import pyshelf
from server_helpers import (WAIT, alive, child, srv,  # noqa: F401
                            wait_for, wait_gone)

OPEN = pyshelf.open     # the real one (see above)
SPAWN = pyshelf.spawn
N = 10
# no checkpoint but the one under test: an hour's interval, no idle exit
OPTS = dict(checkpoint_interval=3600, args=("--idle-exit", "600"))

CHANGE = """\
import threading, sys
for i in range(%d):
    globals()['e%%d' %% i] = [i]
tup = (1, [2])
t = []
def _work(ev, lst):
    ev.wait()
    lst.append(-1)
sys.pst_ev = threading.Event()
sys.pst_th = threading.Thread(target=_work, args=(sys.pst_ev, t))
sys.pst_th.start()
""" % N
# in place, where no request names the entries: globals()[name], a list in
# a tuple, and a thread (started above) that ends before close()
MUTATE = """\
for i in range(%d):
    globals()['e%%d' %% i].append(-1)
globals()['tup'][1].append(3)
import sys
sys.pst_ev.set()
sys.pst_th.join()
""" % N
CHECK = """\
from pyshelf import DirectValue
DirectValue((sum(1 for i in range(%d) if globals()['e%%d' %% i] == [i, -1]),
             globals()['tup'], globals()['t']))
""" % N
WANT = (N, (1, [2, 3]), [-1])


def _open(s, flag="c", name="s"):
    return s.track(OPEN(name, db=s.db, flag=flag, **OPTS))


def _kill(pid):
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)


def _reopen_check(s, name="s"):
    """Open the session again (a new worker: the old one was killed) and
    return what CHECK finds."""
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ws = _open(s, "w", name)
    assert any(issubclass(w.category, pyshelf.WorkerDiedWarning)
               for w in got), [str(w.message) for w in got]
    try:
        return ws.remote_exec(CHECK).value
    finally:
        ws.close()


@pytest.mark.parametrize("how", ["server", "stdio"])
def test_close_checkpoints_in_place_changes(srv, how):
    """close(), then SIGKILL of the worker at once: all kept (stdio: the
    same workload, whose backend exits at close)."""
    if how == "server":
        ws = _open(srv)
    else:
        ws = SPAWN(srv.db, "s", checkpoint_interval=3600)
    ws.remote_exec(CHANGE)
    ws.remote_exec(MUTATE)
    pid = ws.pid
    ws.close()
    if how == "server":
        assert alive(pid)           # the worker stays for the session
        _kill(pid)
        assert _reopen_check(srv) == WANT
    else:
        assert wait_gone(pid)
        ws = SPAWN(srv.db, "s", flag="w")
        try:
            assert ws.remote_exec(CHECK).value == WANT
        finally:
            ws.close()


def test_two_clients_detaching_in_turn_keep_their_changes(srv):
    """Two clients of one session: the first detaches, the second goes on
    and detaches later; the worker is killed after the second's close."""
    a = _open(srv)
    a.remote_exec(CHANGE)
    b = _open(srv)
    assert b.pid == a.pid
    a.remote_exec(MUTATE)
    a.close()
    b.remote_exec("globals()['e0'].append(-2)")
    pid = b.pid
    b.close()
    _kill(pid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyshelf.WorkerDiedWarning)
        ws = _open(srv, "w")
    try:
        got = ws.remote_exec("from pyshelf import DirectValue\n"
                             "DirectValue((globals()['e0'], "
                             "globals()['tup'], globals()['t']))").value
        assert got == ([0, -1, -2], (1, [2, 3]), [-1])
    finally:
        ws.close()


def test_close_while_another_clients_call_runs(srv, tmp_path):
    """B detaches while A's call runs: B's close() returns at once, not at
    the end of A's call; B's changes are checkpointed when that call
    ends, before the worker serves A's next request."""
    started = tmp_path / "started"
    release = tmp_path / "release"
    b = _open(srv)
    b.remote_exec(CHANGE)
    b.remote_exec(MUTATE)
    a = _open(srv)
    assert a.pid == b.pid
    pid = a.pid
    res = {}

    def call():
        res["v"] = a.remote_exec(
            "import os, time\n"
            "open(%r, 'w').close()\n"
            "while not os.path.exists(%r):\n"
            "    time.sleep(0.01)\n"
            "from pyshelf import DirectValue\n"
            "DirectValue('done')" % (str(started), str(release))).value
    th = threading.Thread(target=call)
    th.start()
    wait_for(started.exists, "A's call to start")
    closer = threading.Thread(target=b.close)
    closer.start()
    closer.join(WAIT)
    # A's call cannot have ended: release does not exist yet
    assert not closer.is_alive(), "B's close() waited for A's call"
    assert not release.exists() and th.is_alive()
    release.touch()
    th.join(WAIT)
    assert res.get("v") == "done"
    # the worker takes the checkpoint owed to B after A's call, before
    # it serves another request: two more of A's make sure it ran
    len(a)          # KEYS (a.keys() is a view: it sends nothing)
    len(a)
    _kill(pid)
    assert _reopen_check(srv) == WANT
    a.close()


DROPPER = """\
import os, signal, sys
import pyshelf
ws = pyshelf.open('s', db=sys.argv[1], flag='w', checkpoint_interval=3600,
                  args=('--idle-exit', '600'))
ws.remote_exec(sys.argv[2])
print(ws.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)    # the laptop lid: no DETACH
"""


def test_dropped_connection_is_checkpointed(srv):
    """A client that dies without DETACH: its connection ends, and the
    worker takes the detach's full checkpoint once it sees it gone."""
    ws = _open(srv)
    ws.remote_exec(CHANGE)
    pid = ws.pid
    ws.close()
    p = child(srv, DROPPER, srv.db, MUTATE)
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == -signal.SIGKILL, err
    assert int(out.split()[0]) == pid

    def dropped():
        info = [i for i in pyshelf.sessions(srv.db) if i.name == "s"]
        return info and info[0].worker_pid == pid and \
            info[0].attached_clients == 0
    wait_for(dropped, "the worker to see the client gone")
    # the checkpoint owed to the client that left runs before the next
    # request after the one that may be served first: two requests
    a = _open(srv, "w")
    len(a)          # KEYS (a.keys() is a view: it sends nothing)
    len(a)
    _kill(pid)
    assert _reopen_check(srv) == WANT
    a.close()
