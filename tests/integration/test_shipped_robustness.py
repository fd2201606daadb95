"""Shipped code cannot break the backend (issue 13, section 6): os.fork()
and multiprocessing, unbounded recursion, stdin, full stdout/stderr
streams, and threads left running at close()."""
import io
import os
import time

import pytest

import pyshelf
from pyshelf import DirectValue, WrappedExcinfo

from restarts import MODES, restart, value

# A request that hangs (the bugs these tests guard against) is stopped by
# the backend and comes back as a TimeoutError instead of hanging the
# test; far above what any of these requests needs.
T = 120


def _proc_state(pid):
    """'Z', 'R', 'S', ... of a process, or None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _wait_not_running(pid, limit=30):
    """Wait (up to limit s, far above need) until pid is gone or a
    zombie; its last state."""
    deadline = time.monotonic() + limit
    while True:
        st = _proc_state(pid)
        if st in (None, "Z", "X") or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


# --- os.fork() ----------------------------------------------------------------

FORK_WAIT = """
import os
pid = os.fork()
if pid == 0:
    who = 'child'
else:
    who = 'parent'
    status = os.waitpid(pid, 0)[1]
DirectValue((who, status if who == 'parent' else None))
"""


@pytest.mark.parametrize("mode", MODES)
def test_fork_child_never_commits(store, backend, mode):
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    r = ws.remote_exec(FORK_WAIT, timeout=T)
    assert isinstance(r, DirectValue), r
    who, status = r.value
    assert who == "parent"
    # the child returned normally: it exited with status 0
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    # the stream is intact: later requests work
    assert value(ws, "DirectValue(who)") == "parent"
    ws["after"] = 1
    assert ws["after"] == 1
    ws = restart(ws, mode, store)
    try:
        assert value(ws, "DirectValue(who)") == "parent"
        assert ws["after"] == 1
    finally:
        ws.close()


@pytest.mark.parametrize("mode", MODES)
def test_fork_child_exits_unwaited(store, backend, mode):
    """A child the shipped code does not wait for still ends when the
    shipped code returns in it (a zombie of pyshelfd at most); its exit
    status says how it ended."""
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    r = ws.remote_exec("""
import os
pid = os.fork()
if pid == 0:
    who = 'child'
    raise SystemExit(3)
who = 'parent'
child = pid
DirectValue(pid)
""", timeout=T)
    assert isinstance(r, DirectValue), r
    pid = r.value
    assert _wait_not_running(pid) in (None, "Z", "X")
    st = value(ws, "import os\nDirectValue(os.waitpid(child, 0)[1])")
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 3, st
    ws = restart(ws, mode, store)
    try:
        assert value(ws, "DirectValue(who)") == "parent"
    finally:
        ws.close()


def test_fork_child_cannot_touch_the_store(store, backend):
    """A child that needs a global not loaded in the parent gets a clear
    error (LMDB must not be used after a fork), and exits with status 1
    after printing it (to the client's stderr)."""
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    ws["stored"] = 41
    ws.close()
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    try:
        err = io.StringIO()
        r = ws.remote_exec("""
import os
pid = os.fork()
if pid == 0:
    stored + 1
status = os.waitpid(pid, 0)[1]
DirectValue(status)
""", stderr=err, timeout=T)
        assert isinstance(r, DirectValue), r
        assert os.WIFEXITED(r.value) and os.WEXITSTATUS(r.value) == 1
        assert "forked by shipped code" in err.getvalue()
        assert ws["stored"] == 41
    finally:
        ws.close()


# --- multiprocessing -----------------------------------------------------------

POOL = """
import multiprocessing, operator, math
ctx = multiprocessing.get_context(%r)
with ctx.Pool(2) as p:          # __exit__: terminate() (SIGTERM)
    roots = p.map(math.sqrt, [1, 4, 9])
    prods = p.starmap(operator.mul, [(2, 3), (4, 5)])
p = ctx.Pool(2)
p.map(print, ['from-worker-1', 'from-worker-2'])
p.close()
p.join()                        # the workers exit, flushing their stdout
del p, ctx
DirectValue((roots, prods))
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_pool(store, backend, method):
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    out, err = io.StringIO(), io.StringIO()
    r = ws.remote_exec(POOL % method, stdout=out, stderr=err, timeout=T)
    assert isinstance(r, DirectValue), r
    assert r.value == ([1.0, 2.0, 3.0], [6, 20])
    # the workers' output reached the client, before the reply (print()
    # writes the text and the newline apart: workers may interleave)
    assert "from-worker-1" in out.getvalue(), out.getvalue()
    assert "from-worker-2" in out.getvalue(), out.getvalue()
    # the next request works and the workspace persists
    r2 = ws.remote_exec("DirectValue(len(roots))", stdout=out, stderr=err,
                        timeout=T)
    assert r2.value == 3
    assert "Traceback" not in err.getvalue(), err.getvalue()
    assert "Traceback" not in out.getvalue(), out.getvalue()
    # spawn and forkserver start sys.executable: a Python, not pyshelfd
    exe = value(ws, "import sys\nDirectValue(sys.executable)")
    assert os.path.basename(exe).startswith("python3"), exe
    ws = restart(ws, "clean", store)
    try:
        assert value(ws, "DirectValue(prods)") == [6, 20]
    finally:
        ws.close()


def test_multiprocessing_fork_shipped_function(gw):
    """With fork, functions and lambdas of shipped code work in a Pool, as
    functions of a script's __main__ do."""
    out, err = io.StringIO(), io.StringIO()
    r = gw.remote_exec("""
import multiprocessing, sys
def sq(x):
    sys.stdout.write('worker %d\\n' % x)  # one write: atomic in the pipe
    return x * x
with multiprocessing.get_context('fork').Pool(2) as p:
    a = p.map(sq, range(5))
    b = p.map(lambda x: x + 1, range(3))
del p
DirectValue((a, b))
""", stdout=out, stderr=err, timeout=T)
    assert isinstance(r, DirectValue), r
    assert r.value == ([0, 1, 4, 9, 16], [1, 2, 3])
    # the workers' prints reach the client
    for i in range(5):
        assert "worker %d\n" % i in out.getvalue()
    assert "Traceback" not in err.getvalue(), err.getvalue()
    assert value(gw, "DirectValue(a)") == [0, 1, 4, 9, 16]


# --- recursion -------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_unbounded_recursion_is_an_exception(store, backend, mode):
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    pid = ws.pid
    ws.remote_exec("before = 'kept'")
    r = ws.remote_exec("""
import sys
sys.setrecursionlimit(10**6)
def f():
    f()
f()
""", timeout=T)
    assert isinstance(r, WrappedExcinfo), r
    assert r.exc_type == "RecursionError"
    # the backend lives on, and the excinfo it keeps is bounded
    assert ws.pid == pid
    res = ws.remote_exec(_tb_len, r)
    assert isinstance(res, DirectValue), res
    n, notes = res.value
    assert n <= 100
    assert any("frames of this traceback were left out" in s for s in notes)
    ws.remote_exec("after = 'kept too'")
    ws = restart(ws, mode, store)
    try:
        assert value(ws, "DirectValue((before, after))") == ("kept",
                                                             "kept too")
        # the handle of the exception survives as well
        assert any(h.id == r.id for h in ws.handles())
    finally:
        ws.close()


def _tb_len(e):
    t, v, tb = e
    n = 0
    while tb is not None:
        n += 1
        tb = tb.tb_next
    return DirectValue((n, getattr(v, "__notes__", [])))


def test_recursion_through_c_is_an_exception(gw):
    """Recursion through C (a __getattr__ that recurses) would overflow the
    C stack long before a limit of 10**6: the limit is capped."""
    pid = gw.pid
    r = gw.remote_exec("""
import sys
sys.setrecursionlimit(10**6)
class A:
    def __getattr__(self, name):
        return getattr(self, name + 'x')
A().a
""", timeout=T)
    assert isinstance(r, WrappedExcinfo), r
    assert r.exc_type == "RecursionError"
    assert gw.pid == pid
    lim = value(gw, "import sys\nDirectValue(sys.getrecursionlimit())")
    assert 1000 <= lim < 10**6
    assert value(gw, "DirectValue(1 + 1)") == 2


# --- stdin -----------------------------------------------------------------------

@pytest.mark.parametrize("src", [
    "input()",
    "input('prompt> ')",
    "import sys\nif sys.stdin.read() == '': raise EOFError",
    "import sys\nif sys.stdin.readline() == '': raise EOFError",
])
def test_stdin_is_at_eof(gw, src):
    r = gw.remote_exec(src, timeout=T)
    assert isinstance(r, WrappedExcinfo), r
    assert r.exc_type == "EOFError"
    assert value(gw, "DirectValue(1 + 1)") == 2


def test_pdb_set_trace_does_not_wait(gw):
    out = io.StringIO()
    r = gw.remote_exec("""
import pdb
x = 1
pdb.set_trace()
x = 2
""", stdout=out, timeout=T)
    # pdb reads EOF at once and quits (BdbQuit) or continues
    assert not (isinstance(r, WrappedExcinfo) and
                r.exc_type in ("TimeoutError", "KeyboardInterrupt")), r
    assert value(gw, "DirectValue(1 + 1)") == 2


def test_fd0_is_not_the_protocol(gw):
    """A raw read of fd 0 gets EOF (it is /dev/null), never protocol
    bytes."""
    r = gw.remote_exec("import os\nDirectValue(os.read(0, 100))", timeout=T)
    assert isinstance(r, DirectValue) and r.value == b"", r
    assert value(gw, "DirectValue(1 + 1)") == 2


# --- stdout / stderr --------------------------------------------------------------

def test_streams_are_text_streams(gw):
    r = gw.remote_exec("""
import io, sys
s = sys.stdout
DirectValue({
    'textio': isinstance(s, io.TextIOBase)
              and isinstance(sys.stderr, io.TextIOBase),
    'encoding': (s.encoding, sys.stderr.encoding),
    'errors': s.errors,
    'closed': (s.closed, sys.stderr.closed),
    'isatty': (s.isatty(), sys.stderr.isatty()),
    'fileno': (s.fileno(), sys.stderr.fileno()),
    'writable': s.writable(),
    'has': all(hasattr(s, a) for a in ('write', 'writelines', 'flush',
                                        'buffer')),
})
""")
    d = r.value
    assert d["textio"]
    assert d["encoding"] == ("utf-8", "utf-8")
    assert isinstance(d["errors"], str)
    assert d["closed"] == (False, False)
    assert d["isatty"] == (False, False)
    assert d["fileno"] == (1, 2)
    assert d["writable"] and d["has"]


def test_every_way_of_writing_reaches_the_client(gw):
    out, err = io.StringIO(), io.StringIO()
    r = gw.remote_exec("""
import ctypes, faulthandler, os, sys
print('print')
sys.stdout.write('write\\n')
sys.stdout.writelines(['lines1\\n', 'lines2\\n'])
sys.stdout.flush()
sys.stdout.buffer.write(b'buffer\\n')
sys.stdout.buffer.flush()
os.write(sys.stdout.fileno(), b'fd-out\\n')
os.write(sys.stderr.fileno(), b'fd-err\\n')
sys.stderr.buffer.write(b'buffer-err\\n')
libc = ctypes.CDLL(None)
libc.printf(b'printf %d\\n', 42)
libc.fflush(None)
del libc
faulthandler.enable()
faulthandler.dump_traceback(all_threads=False)
faulthandler.disable()
print('last')
DirectValue('done')
""", stdout=out, stderr=err, timeout=T)
    assert r.value == "done"
    o, e = out.getvalue(), err.getvalue()
    # everything arrived before the reply, stdout in the order written
    assert o == ("print\nwrite\nlines1\nlines2\nbuffer\nfd-out\n"
                 "printf 42\nlast\n"), o
    assert "fd-err\n" in e and "buffer-err\n" in e
    assert "Stack (most recent call first)" in e
    assert value(gw, "DirectValue(1 + 1)") == 2


def test_child_process_output_reaches_the_client(gw):
    out = io.StringIO()
    r = gw.remote_exec("""
import subprocess, sys
subprocess.run([sys.executable, '-c', 'print("from a child")'], check=True)
DirectValue('ok')
""", stdout=out, timeout=T)
    assert r.value == "ok"
    assert "from a child\n" in out.getvalue()


def test_close_leaves_streams_usable(gw):
    out = io.StringIO()
    r = gw.remote_exec("import sys\nsys.stdout.close()\nsys.stderr.close()")
    assert isinstance(r, DirectValue), r
    gw.remote_exec("print('still here')", stdout=out)
    assert out.getvalue() == "still here\n"


# --- threads at close() ---------------------------------------------------------------

@pytest.mark.stdio_only('the backend process exits at close() with returncode 0')
def test_close_with_a_non_daemon_thread(store, backend, capsys):
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    ws.remote_exec("""
import threading, time
def spin():
    while True:
        time.sleep(0.05)
threading.Thread(target=spin, name='spinner').start()
threading.Thread(target=spin, name='helper', daemon=True).start()
import _thread
def known():
    threading.current_thread()      # threading calls it a dummy thread
    spin()
_thread.start_new_thread(spin, ())
_thread.start_new_thread(known, ())
kept = 7
""")
    t0 = time.monotonic()
    ws.close()
    took = time.monotonic() - t0
    assert took < 30, took
    # it exited by itself, cleanly (not killed at the close timeout)
    assert ws.returncode == 0, ws.returncode
    err = capsys.readouterr().err
    assert "non-daemon thread 'spinner'" in err, err
    assert "daemon thread 'helper' stopped" in err, err
    assert "2 threads of _thread.start_new_thread stopped" in err, err
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    try:
        assert value(ws, "DirectValue(kept)") == 7
    finally:
        ws.close()


def test_client_gone_with_a_non_daemon_thread(store, backend):
    """The client dies without detaching (end of input): the backend
    checkpoints, gives the thread its bounded wait, and exits; it does not
    stay behind forever waiting for the thread."""
    import subprocess
    import sys
    script = """
import os, sys, pyshelf
ws = pyshelf.spawn(db=sys.argv[1], session="s", backend=sys.argv[2])
ws.remote_exec('''
import threading, time
def spin():
    while True:
        time.sleep(0.05)
threading.Thread(target=spin, name='spinner').start()
kept = 11
''')
print(ws.pid, flush=True)
os._exit(0)
"""
    p = subprocess.run([sys.executable, "-c", script, store, backend],
                       capture_output=True, text=True, timeout=T,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    pid = int(p.stdout.split()[0])
    assert _wait_not_running(pid, limit=60) in (None, "Z", "X")
    ws = pyshelf.spawn(db=store, session="s", backend=backend)
    try:
        assert value(ws, "DirectValue(kept)") == 11
    finally:
        ws.close()
