"""Shipped code that closes the backend's descriptors (QA2 07):
daemonizing code (python-daemon, os.closerange(3, 4096)) closes every fd
above 2 and opens files, which get the numbers of the worker's sockets,
pipes and store files.  The worker must never read or write those files,
never spin, and the call must end: os.close / os.closerange / os.dup2
leave the worker's fds alone (exec/backend_process.py, _guard_fds); code
that closes them from C ends the worker (exec/worker-fds.c), the client
gets BackendDied, the session keeps its last checkpoint.  Also the
client after an attach that failed: a pyshelf error, never
AttributeError, and the next call that finds a server attaches again."""
import os
import signal
import threading
import time

import pytest

import pyshelf
from pyshelf import DirectValue, WrappedExcinfo

from server_helpers import srv, wait_gone  # noqa: F401 (fixture)

WAIT = 120     # s: far above what any call here needs


def _call(ws, code):
    """remote_exec(code) in a thread: (result, exception); fails the test
    when it has not ended within WAIT (the bug: it never returned)."""
    box = {}

    def run():
        try:
            box["r"] = ws.remote_exec(code)
        except BaseException as e:    # noqa: B902 (handed to the test)
            box["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), "the call did not return in %d s" % WAIT
    return box.get("r"), box.get("e")


def _files(d):
    return {n: open(os.path.join(d, n), "rb").read()
            for n in sorted(os.listdir(d))}


def _opens(d, n=12):
    """Source that opens n files in d and writes b'user<i>' to each."""
    return ("fs = [open(%r + '/f%%d' %% i, 'w+b') for i in range(%d)]\n"
            "for i, f in enumerate(fs):\n"
            "    f.write(b'user%%d' %% i)\n"
            "    f.flush()\n" % (d, n))


def _expected(n=12):
    return {"f%d" % i: b"user%d" % i for i in range(n)}


def _only_user_bytes(d, n=12):
    """Each file holds what the user wrote, or nothing yet (a worker that
    exits as soon as it sees its fds gone may stop the code before it
    wrote them all): never a byte of the backend's."""
    got = _files(d)
    assert sorted(got) == sorted(_expected(n)) or len(got) < n, got
    for name, data in got.items():
        assert data in (b"", _expected(n)[name]), (name, data[:200])


def test_closerange_leaves_the_backend_alone(gw, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    gw["keep"] = [1, 2, 3]
    pid = gw.pid
    # the sleep lets the reader thread take the connection over (2 ms)
    # while the files sit at the closed numbers
    r, e = _call(gw, "import os, time\nos.closerange(3, 4096)\n" +
                 _opens(str(files)) + "time.sleep(0.3)\nx = [len(fs)]\n"
                 "DirectValue('done')")
    assert e is None, e
    assert r.value == "done"
    assert _files(str(files)) == _expected()
    assert gw.remote_exec("DirectValue((x, keep))").value == ([12], [1, 2, 3])
    assert gw.pid == pid
    assert _files(str(files)) == _expected()


def test_close_and_dup2_of_a_backend_fd_refused(gw):
    r = gw.remote_exec('''
import errno, os
def mine():
    out = []
    for n in sorted(map(int, os.listdir("/proc/self/fd"))):
        try:
            what = os.readlink("/proc/self/fd/%d" % n)
        except OSError:
            continue
        if n > 2 and what.startswith(("socket:", "pipe:", "anon_inode:")):
            out.append(n)
    return out
fds = mine()
refused = []
for fd in fds:
    try:
        os.close(fd)
    except OSError as e:
        refused.append((e.errno, "pyshelf backend" in str(e)))
try:
    os.dup2(0, fds[0])
    dup = None
except OSError as e:
    dup = e.errno
r, w = os.pipe()
os.close(r)
os.close(w)       # not the backend's: closed as usual
DirectValue((len(fds), refused, dup, mine() == fds))
''')
    n, refused, dup, same = r.value
    assert n >= 3
    assert refused == [(9, True)] * n
    assert dup == 9
    assert same
    assert gw.remote_exec("DirectValue(1 + 1)").value == 2


def test_close_range_from_c_ends_the_worker(gw, tmp_path):
    """close_range() called from C bypasses the os wrappers: the worker
    finds its fds gone, exits without touching them (no spin, no byte
    into the user's files), the call fails with BackendDied; through a
    server the workspace goes on with a new worker."""
    files = tmp_path / "files"
    files.mkdir()
    gw["keep"] = [1, 2, 3]
    pid = gw.pid
    # the code runs on (up to WAIT) until the worker notices
    r, e = _call(gw, "import ctypes, time\n"
                 "ctypes.CDLL(None).close_range(3, 4095, 0)\n" +
                 _opens(str(files)) +
                 "t = time.monotonic()\n"
                 "while time.monotonic() < t + %d:\n"
                 "    time.sleep(0.05)\n" % WAIT)
    assert isinstance(e, pyshelf.BackendDied), (r, e)
    assert "descriptors of its own closed" in str(e)
    assert wait_gone(pid, WAIT)
    _only_user_bytes(str(files))
    if isinstance(gw._conn, pyshelf._workspace._ServerConn):
        assert gw.remote_exec("DirectValue(keep)").value == [1, 2, 3]
        assert gw.pid != pid
    else:
        with pytest.raises(pyshelf.BackendDied):
            gw.remote_exec("1")
    _only_user_bytes(str(files))


def test_close_range_from_c_in_a_quick_call(gw, tmp_path):
    """The same in a call that ends at once and binds no global (so no
    checkpoint writes): ctypes' look-up of close_range makes the worker
    check its fds before it writes the reply or wakes a thread."""
    files = tmp_path / "files"
    files.mkdir()
    gw["keep"] = [1, 2, 3]
    pid = gw.pid
    r, e = _call(gw, "import builtins, ctypes\n"
                 "ctypes.CDLL(None).close_range(3, 4095, 0)\n"
                 "builtins._fds_test = [open(%r + '/f%%d' %% i, 'w+b') "
                 "for i in range(12)]\n"
                 "[f.write(b'user%%d' %% i) and f.flush() for i, f in "
                 "enumerate(builtins._fds_test)] and None" % str(files))
    assert isinstance(e, pyshelf.BackendDied), (r, e)
    assert wait_gone(pid, WAIT)
    _only_user_bytes(str(files))
    if isinstance(gw._conn, pyshelf._workspace._ServerConn):
        assert gw.remote_exec("DirectValue(keep)").value == [1, 2, 3]


def test_close_range_through_a_pointer_looked_up_before(gw, tmp_path):
    """The C function was looked up by an earlier call (whose end found
    every fd intact): the call that closes through it and binds a global
    is caught before its checkpoint writes (the store's write guard) or
    by the reader thread, whichever comes first; no page of the store
    goes into the user's files."""
    files = tmp_path / "files"
    files.mkdir()
    gw["keep"] = [1, 2, 3]
    gw.remote_exec("import builtins, ctypes\n"
                   "builtins._fds_cr = ctypes.CDLL(None).close_range")
    assert gw.remote_exec("DirectValue(keep)").value == [1, 2, 3]
    pid = gw.pid
    r, e = _call(gw, "import builtins\n"
                 "builtins._fds_cr(3, 4095, 0)\n" + _opens(str(files)) +
                 "x = [len(fs)]\n")
    assert isinstance(e, pyshelf.BackendDied), (r, e)
    assert wait_gone(pid, WAIT)
    _only_user_bytes(str(files))
    if isinstance(gw._conn, pyshelf._workspace._ServerConn):
        assert gw.remote_exec("DirectValue(keep)").value == [1, 2, 3]
        r = gw.remote_exec("x")      # never committed
        assert isinstance(r, WrappedExcinfo) and r.exc_type == "NameError"


def test_failed_reattach_is_a_pyshelf_error(srv):
    ws = srv.track(pyshelf.open("t", db=srv.db))
    ws["keep"] = [1]
    server, worker = ws.server_pid, ws.pid
    os.kill(server, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    assert wait_gone(server) and wait_gone(worker)
    # no server answers, and none can serve the store: it is moved away
    os.rename(srv.db, srv.db + ".away")
    for _ in range(3):
        with pytest.raises(pyshelf.Error) as ei:
            ws.remote_exec("1")
        assert not isinstance(ei.value, AttributeError)
    with pytest.raises(pyshelf.Error):
        ws.interrupt() or ws.remote_exec("1")
    # the store is back: the next call attaches again (a new server)
    os.rename(srv.db + ".away", srv.db)
    assert ws.remote_exec("DirectValue(keep)").value == [1]
    srv.track(ws)
    ws.close()



def test_a_child_after_a_lookup_exits_as_usual(gw):
    """A fork right after a ctypes look-up of close(): the child, whose
    copies of the backend's fds point at /dev/null, is not taken for a
    worker that lost them (its exit status stays the code's)."""
    r = gw.remote_exec('''
import ctypes, os
ctypes.CDLL(None).close
pid = os.fork()
if pid == 0:
    raise SystemExit(3)
DirectValue(os.waitpid(pid, 0)[1] >> 8)
''')
    assert r.value == 3
    assert gw.remote_exec("DirectValue(2)").value == 2
