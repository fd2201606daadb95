"""A Workspace used after os.fork(): a forked child never speaks on its
parent's connection.  Through a server the child attaches again (a second
client of the session) and goes on; with a private stdio backend it gets
ForkedError; either way the parent's calls go on untouched.

Each case runs as a script in a process of its own (it forks, and a
regression used to hang for good: replies crossed between processes),
under a generous timeout that kills its whole process group."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import pyshelf
from server_helpers import srv  # noqa: F401 (fixture)

# Long enough for a loaded CI machine; a hang is the failure it catches.
RUN_TIMEOUT = 300

PRELUDE = '''
import os, sys, threading, time
import pyshelf
from pyshelf import DirectValue
DB, MODE, TMP = sys.argv[1], sys.argv[2], sys.argv[3]

def op():
    if MODE == "server":
        return pyshelf.open("s", db=DB, create_db=True)
    return pyshelf.spawn(db=DB, session="s", create_db=True)

def wait_for(path):
    # a condition, with a generous deadline
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit("timed out waiting for %s" % path)
        time.sleep(0.005)

def blocking_call(ws, tag, box):
    # a call that runs until TMP/go-<tag> exists; TMP/started-<tag> says
    # that it runs (so the calling thread holds the workspace's lock)
    started = os.path.join(TMP, "started-" + tag)
    go = os.path.join(TMP, "go-" + tag)
    src = ("import os, time\\n"
           "open(%r, 'w').close()\\n"
           "while not os.path.exists(%r):\\n"
           "    time.sleep(0.005)\\n"
           "DirectValue(%r)" % (started, go, tag))
    def run():
        try:
            box.append(ws.remote_exec(src).value)
        except BaseException as e:
            box.append(e)
    t = threading.Thread(target=run)
    t.start()
    wait_for(started)
    return t, go

def release(go):
    open(go, "w").close()
'''


def run_script(tmp_path, body, mode, env=None):
    """Run PRELUDE + body with argv DB MODE TMP; return its stdout.  Fails
    (and kills its process group) when it does not end in time."""
    path = tmp_path / "script.py"
    path.write_text(PRELUDE + textwrap.dedent(body))
    work = tmp_path / "work"
    work.mkdir()
    e = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(pyshelf.__file__)))
    e["PYTHONPATH"] = pkg + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    p = subprocess.Popen([sys.executable, str(path), str(tmp_path / "db"),
                          mode, str(work)], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("the script hung (killed after %d s)\nstdout:\n%s\n"
                    "stderr:\n%s" % (RUN_TIMEOUT, out, err))
    assert p.returncode == 0, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, out, err)
    return out


TRANSPORTS = [pytest.param({}, id="pipes"),
              pytest.param({"PYSHELF_NO_PIPES": "1"}, id="socket")]


@pytest.mark.parametrize("env", TRANSPORTS)
def test_parent_and_three_children_share_a_workspace(srv, tmp_path, env):
    out = run_script(tmp_path, '''
        ws = op()
        ws["keep"] = 5
        h = ws.remote_exec("[1, 2, 3]")     # a handle, inherited
        def work(k):
            bad = []
            for j in range(40):
                ws["p%d" % k] = (k, j)
                if ws["p%d" % k] != (k, j):
                    bad.append(("get", k, j))
                if ws["keep"] != 5:
                    bad.append(("keep", k, j))
                v = ws.remote_exec("DirectValue(%d * 1000 + %d)" % (k, j))
                if v.value != k * 1000 + j:
                    bad.append(("exec", k, j, v))
            ws["h%d" % k] = h                # the handle is the session's
            if ws["h%d" % k] != [1, 2, 3]:
                bad.append(("handle", k))
            return bad
        kids = []
        for k in range(1, 4):
            pid = os.fork()
            if pid == 0:
                try:
                    bad = work(k)
                except BaseException as e:
                    bad = [repr(e)]
                print("child", k, bad, flush=True)
                sys.exit(1 if bad else 0)   # interpreter exit: GC of ws, h
            kids.append(pid)
        bad = work(0)
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1])
                 for p in kids]
        # the children's exits released nothing of the parent's
        ws["hp"] = h
        print("parent", bad, codes, ws["hp"], sorted(ws.keys()))
        ws.close()
        ''', "server", env)
    assert "parent [] [0, 0, 0] [1, 2, 3] ['h0', 'h1', 'h2', 'h3', 'hp', " \
        "'keep', 'p0', 'p1', 'p2', 'p3']" in out, out


@pytest.mark.parametrize("env", TRANSPORTS)
def test_pool_with_fork_uses_a_module_level_workspace(srv, tmp_path, env):
    out = run_script(tmp_path, '''
        import multiprocessing
        ws = op()                # module level, opened before the pool
        ws["base"] = 100

        def square(i):
            ws["k%d" % i] = i * i
            return ws["k%d" % i] + ws["base"], os.getpid()

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(4) as pool:
                got = pool.map(square, range(24))
            assert [v for v, _ in got] == [i * i + 100 for i in range(24)]
            assert os.getpid() not in {p for _, p in got}
            assert all(ws["k%d" % i] == i * i for i in range(24))
            ws.close()
            print("pool ok")
        ''', "server", env)
    assert "pool ok" in out


@pytest.mark.parametrize("mode", ["server", "stdio"])
def test_child_closes_and_exits_while_parent_mid_call(srv, tmp_path, mode):
    # a thread of the parent holds the workspace (and its lock) in a call
    # at the fork; the child does not deadlock, closes, and exits through
    # the interpreter; the parent's call and workspace go on
    out = run_script(tmp_path, '''
        ws = op()
        ws["keep"] = 5
        pid0 = ws.pid
        box = []
        t, go = blocking_call(ws, "a", box)
        pid = os.fork()
        if pid == 0:
            try:
                if MODE == "server":
                    # the worker serves the session's requests one at a
                    # time: the parent's call ends first
                    release(go)
                    ws["c"] = ws["keep"] + 1
                    print("child used it", flush=True)
                else:
                    try:
                        ws["keep"]
                    except pyshelf.ForkedError as e:
                        print("child ForkedError", flush=True)
                with ws:
                    pass             # close() at the end of the block
                ws.close()
            except BaseException as e:
                print("child failed", repr(e), flush=True)
                sys.exit(1)
            sys.exit(0)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        release(go)
        t.join()
        print("parent call", box, "child", code, flush=True)
        assert box == ["a"], box
        assert ws["keep"] == 5 and ws.pid == pid0
        if MODE == "server":
            assert ws["c"] == 6
        ws.ping()
        ws.close()
        print("returncode", ws.returncode)
        ''', mode)
    assert "parent call ['a'] child 0" in out, out
    if mode == "server":
        assert "child used it" in out
    else:
        assert "child ForkedError" in out
        assert "returncode 0" in out


def test_stdio_child_gets_forked_error(tmp_path, backend):
    out = run_script(tmp_path, '''
        ws = op()
        ws["keep"] = 5
        h = ws.remote_exec("[1, 2]")
        pid0 = ws.pid
        pid = os.fork()
        if pid == 0:
            seen = []
            for what, f in [("get", lambda: ws["keep"]),
                            ("set", lambda: ws.__setitem__("x", 1)),
                            ("exec", lambda: ws.remote_exec("1")),
                            ("keys", lambda: list(ws)),
                            ("ping", ws.ping),
                            ("interrupt", ws.interrupt),
                            ("close_session", ws.close_session)]:
                try:
                    f()
                    seen.append((what, "no error"))
                except pyshelf.ForkedError as e:
                    assert isinstance(e, pyshelf.Error)
                    assert "fork" in str(e) and str(pid0) in str(e), e
                    seen.append((what, "ForkedError"))
            del h                      # the parent's handle: no RELEASE
            ws.close()                 # sends nothing, waits for nothing
            print("child", seen, ws.closed, ws.returncode, flush=True)
            sys.exit(0)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        os.kill(pid0, 0)               # the backend still runs
        ws["h"] = h                    # and the handle is still live
        print("parent", code, ws["keep"], ws["h"], ws.pid == pid0)
        ws.close()
        print("returncode", ws.returncode)
        ''', "stdio")
    assert "child [('get', 'ForkedError'), ('set', 'ForkedError'), " \
        "('exec', 'ForkedError'), ('keys', 'ForkedError'), " \
        "('ping', 'ForkedError'), ('interrupt', 'ForkedError'), " \
        "('close_session', 'ForkedError')] True None" in out, out
    assert "parent 0 5 [1, 2] True" in out, out
    assert "returncode 0" in out, out


def test_forked_error_is_public():
    assert issubclass(pyshelf.ForkedError, pyshelf.Error)
    assert "ForkedError" in pyshelf.__all__
    assert pyshelf.ForkedError.__module__ == "pyshelf"


@pytest.mark.parametrize("mode", ["server", "stdio"])
def test_fork_without_python_hooks(srv, tmp_path, mode):
    # libc's fork() called from C (here through ctypes) runs no
    # os.register_at_fork hook: libpyshelf itself refuses the parent's
    # connection (PYSHELF_E_FORKED, nothing sent); through a server the
    # workspace attaches again, a stdio one raises ForkedError
    out = run_script(tmp_path, '''
        import ctypes
        ws = op()
        ws["k"] = 1
        fork = ctypes.CDLL(None).fork
        pid = fork()
        if pid == 0:
            try:
                ws["k2"] = ws["k"] + 1
                print("child set k2", flush=True)
            except pyshelf.ForkedError as e:
                print("child ForkedError", "nothing was sent" in str(e)
                      and "fork()" in str(e), flush=True)
            ws.close()
            os._exit(0)
        conn0 = ws._conn.conn if MODE == "server" else ws._conn
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print("parent", code, ws["k"], sorted(ws.keys()), flush=True)
        # the parent's connection went on: the child neither used nor
        # detached it (which would have made the parent attach again)
        conn1 = ws._conn.conn if MODE == "server" else ws._conn
        print("same connection", conn1 is conn0, flush=True)
        ws.close()
        ''', mode)
    assert "same connection True" in out, out
    if mode == "server":
        assert "child set k2" in out
        assert "parent 0 1 ['k', 'k2']" in out, out
    else:
        assert "child ForkedError True" in out
        assert "parent 0 1 ['k']" in out, out


@pytest.mark.parametrize("mode", ["server", "stdio"])
def test_grandchild(srv, tmp_path, mode):
    # a fork of a fork: the child's own connection (server) is dropped in
    # the grandchild in turn; a stdio workspace still names its opener
    out = run_script(tmp_path, '''
        ws = op()
        ws["k"] = 1
        opener = os.getpid()
        def use(tag):
            try:
                ws[tag] = ws["k"] + 1
                return "ok"
            except pyshelf.ForkedError as e:
                return "ForkedError %s" % ("process %d" % opener in str(e))
        pid = os.fork()
        if pid == 0:
            first = use("child")
            gpid = os.fork()
            if gpid == 0:
                print("grandchild", use("grandchild"), flush=True)
                ws.close()
                os._exit(0)
            gcode = os.waitstatus_to_exitcode(os.waitpid(gpid, 0)[1])
            print("child", first, use("child2"), gcode, flush=True)
            ws.close()
            os._exit(0)
        conn0 = ws._conn.conn if MODE == "server" else ws._conn
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print("parent", code, sorted(ws.keys()), flush=True)
        conn1 = ws._conn.conn if MODE == "server" else ws._conn
        print("same connection", conn1 is conn0, flush=True)
        ws.close()
        ''', mode)
    assert "same connection True" in out, out
    if mode == "server":
        assert "grandchild ok" in out and "child ok ok 0" in out, out
        assert "parent 0 ['child', 'child2', 'grandchild', 'k']" in out, out
    else:
        assert "grandchild ForkedError True" in out, out
        assert "child ForkedError True ForkedError True 0" in out, out
        assert "parent 0 ['k']" in out, out
