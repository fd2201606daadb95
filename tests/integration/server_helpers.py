"""What the server-mode client tests share: a private socket directory per
test (XDG_RUNTIME_DIR), the servers it started stopped at the end, child
client processes, and waits on other processes' pids.

Imported by the test modules (pytest puts this folder on sys.path)."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

import pytest

import pyshelf

# Shipped code stuck for good, as code inside C is: SIGINT (the stop)
# blocked in the worker's main thread, then a sum in C that runs for
# hours.  A stop that lands before the block is swallowed by the loop, so
# it does not matter how fast the machine is; "stuck" is printed once the
# block holds.
STUCK = ("import itertools, signal\n"
         "while True:\n"
         "    try:\n"
         "        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
         "        break\n"
         "    except BaseException:\n"
         "        pass\n"
         "print('stuck', flush=True)\n"
         "sum(itertools.repeat(1, 10**11))\n")

WAIT = 120          # seconds: generous, never a timing assertion


def alive(pid):
    """Is pid a live process (not ours to reap: servers daemonize)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid, timeout=WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def wait_for(pred, what, timeout=WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError("waited %d s for %s" % (timeout, what))


def pid_files(run):
    return glob.glob(os.path.join(run, "pyshelf", "*.pid"))


def server_pids(run):
    pids = set()
    for p in pid_files(run):
        try:
            with open(p) as f:
                pids.add(int(f.read().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def stop_servers(s):
    """SIGTERM every server of this test (pid files, and the pids it saw),
    wait for them, then for the workers it saw."""
    pids = server_pids(s.run) | s.servers
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids:
        wait_gone(pid)
    for pid in s.workers:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_gone(pid, 30):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def srv(monkeypatch, backend, tmp_path):
    """A private XDG_RUNTIME_DIR (a short path: socket paths must fit
    sun_path) with open() in server mode; .db a store path, .track(ws)
    records the pids to stop at the end."""
    run = tempfile.mkdtemp(prefix="ps")
    os.chmod(run, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", run)
    monkeypatch.setenv("PYSHELF_OPEN", "server")
    monkeypatch.setenv("PYSHELFD", backend)
    s = types.SimpleNamespace(run=run, db=str(tmp_path / "db"),
                              servers=set(), workers=set(), children=[])

    def track(ws):
        if ws.server_pid:
            s.servers.add(ws.server_pid)
        if ws.pid:
            s.workers.add(ws.pid)
        return ws
    s.track = track
    try:
        yield s
    finally:
        for p in s.children:
            if p.poll() is None:
                p.kill()
                p.wait()
        stop_servers(s)
        shutil.rmtree(run, ignore_errors=True)


def child(s, code, *args):
    """Start a client process running code (python -c) in this test's
    environment; its argv[1:] are args."""
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(pyshelf.__file__)))
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.Popen([sys.executable, "-c", code] + [str(a) for a in args],
                         env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    s.children.append(p)
    return p


def finish(p):
    """Wait for a child client; its stdout, after checking it exited 0."""
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 0, "client failed (%s):\n%s%s" % (
        p.returncode, out, err)
    return out
