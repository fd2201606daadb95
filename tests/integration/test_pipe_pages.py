"""A connection's pipes keep the kernel's default size (64 KiB) while
idle, and grow to 1 MiB only for the length of a long transfer
(proto/wire-pipe.c).  Linux charges pipe buffers to their user's
pipe-user-pages-soft (16384 pages, 64 MiB): with 1 MiB pipes held by every
connection, a non-root user past about 31 connections got 8 KiB pipes in
every program, and F_SETPIPE_SZ failed with EPERM (QA3 finding 3).  Both
the stdio backend's pipes (client/spawn.c) and a server connection's
(PIPES, exec/worker-conn.c)."""
import fcntl
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

import pyshelf
from pyshelf import DirectValue

from server_helpers import wait_gone

F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
IDLE = 64 * 1024           # the kernel's default pipe size
BIG = 64 << 20             # both ways: larger than a user's 64 MiB
WAIT = 600                 # s: generous; the child starts many backends
USER = "pyshelf-pipes"     # a non-root user: root is never limited
SERVER_MODE = os.environ.get("PYSHELF_TEST_MODE") == "server"


def _uid():
    """The non-root user of these tests (created when missing)."""
    try:
        return pwd.getpwnam(USER).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER).pw_uid


def _pipe_sizes(pid, only=None):
    """{pipe: F_GETPIPE_SZ} of the pipes process pid holds ("pipe:[ino]";
    only those in only when given), read through /proc/PID/fd: opening it
    gives another descriptor of the same pipe."""
    d = "/proc/%s/fd" % pid
    out = {}
    for fd in os.listdir(d):
        try:
            name = os.readlink(os.path.join(d, fd))
            if not name.startswith("pipe:") or \
                    (only is not None and name not in only):
                continue
            f = os.open(os.path.join(d, fd), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue    # closed meanwhile
        try:
            out[name] = fcntl.fcntl(f, F_GETPIPE_SZ)
        finally:
            os.close(f)
    return out


# Runs as USER: n workspaces attached at once (server mode: 3 sessions on
# one server; stdio: one backend each), then this user's new pipe and
# F_SETPIPE_SZ to 1 MiB, then 64 MiB both ways on the last workspace.
CHILD = r"""
import fcntl, json, os, signal, sys
import pyshelf
from pyshelf import DirectValue

db, n, server = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "server"


def probe():
    r, w = os.pipe()
    try:
        size = fcntl.fcntl(r, 1032)
        try:
            fcntl.fcntl(r, 1031, 1 << 20)
            grown = "ok"
        except OSError as e:
            grown = str(e)
        return size, grown
    finally:
        os.close(r)
        os.close(w)


def f(b):
    return DirectValue(b + b"!")


out, wss, servers = {}, [], set()
try:
    for i in range(n):
        wss.append(pyshelf.open("c%d" % (i % 3 if server else i), db=db,
                                create_db=True))
        servers.add(wss[-1].server_pid)
    out["probe"] = probe()
    r = wss[-1].remote_exec(f, b"q" * (64 << 20))
    out["back"] = len(r.value)
    out["probe_after"] = probe()
finally:
    for ws in wss:
        ws.close()
    for p in servers:
        if p:
            os.kill(p, signal.SIGTERM)
    out["servers"] = [p for p in servers if p]
print(json.dumps(out))
"""


def _let_others_through(paths):
    """Give others search permission (o+x) on every directory above
    paths that lacks it (a checkout under a 0700 mktemp directory: USER
    must reach the client package and pyshelfd); returns [(dir, mode)]
    to restore."""
    changed = []
    for p in paths:
        d = os.path.dirname(os.path.realpath(p))
        while True:
            mode = os.stat(d).st_mode
            if not mode & 0o001:    # (o+x once changed: not twice)
                changed.append((d, mode & 0o7777))
                os.chmod(d, (mode & 0o7777) | 0o001)
            if d == "/":
                break
            d = os.path.dirname(d)
    return changed


@pytest.fixture
def nonroot(tmp_path, backend):
    """(uid, gid, a directory USER owns) for a child run as USER."""
    uid = _uid()
    gid = pwd.getpwuid(uid).pw_gid
    d = tempfile.mkdtemp(prefix="pst-pipes-", dir="/tmp")
    os.chown(d, uid, gid)
    os.chmod(d, 0o700)
    changed = _let_others_through([pyshelf.__file__, backend])
    try:
        yield uid, gid, d
    finally:
        for path, mode in reversed(changed):
            os.chmod(path, mode)
        shutil.rmtree(d, ignore_errors=True)


def test_many_connections_leave_the_users_pipes_alone(nonroot, backend):
    """60 server connections (40 stdio backends) attached at once by a
    non-root user: that user's next pipe still gets 64 KiB and may grow
    to 1 MiB; 64 MiB each way still goes through.  Fails with 1 MiB pipes
    per connection: 8 KiB and EPERM."""
    uid, gid, d = nonroot
    run = os.path.join(d, "run")
    os.mkdir(run, 0o700)
    os.chown(run, uid, gid)
    env = dict(os.environ, XDG_RUNTIME_DIR=run, HOME=d,
               PYSHELF_OPEN="server" if SERVER_MODE else "stdio",
               PYSHELFD=backend)
    n = 60 if SERVER_MODE else 40
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                        "--clear-groups", sys.executable, "-c", CHILD,
                        os.path.join(d, "db"), str(n),
                        "server" if SERVER_MODE else "stdio"],
                       env=env, capture_output=True, text=True, timeout=WAIT,
                       cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    for p in out["servers"]:
        assert wait_gone(p), "server %d did not stop" % p
    assert out["probe"] == [IDLE, "ok"], out
    assert out["back"] == BIG + 1
    assert out["probe_after"] == [IDLE, "ok"], out


def _idle_sizes(ws):
    """The sizes of the backend's pipes, and of this process's ends of
    the ones it shares with the backend (ws's connection)."""
    theirs = _pipe_sizes(ws.pid)
    return theirs, _pipe_sizes(os.getpid(), only=theirs)


def _echo(b):
    return DirectValue(b + b"!")


def test_pipes_small_again_after_long_transfers(tmp_path):
    """After a 64 MiB push and a 64 MiB reply, every pipe of the backend
    (its connection's, and its output's) and of this client is back to the
    default size while idle: the reader set it back once the transfer was
    in."""
    ws = pyshelf.open("t", db=tmp_path / "db", create_db=True)
    try:
        r = ws.remote_exec(_echo, b"x" * BIG)
        assert len(r.value) == BIG + 1
        theirs, ours = _idle_sizes(ws)
        assert theirs and max(theirs.values()) <= IDLE, theirs
        assert ours and max(ours.values()) <= IDLE, ours
        ws["v"] = b"y" * BIG                   # a push: a LONG with buffers
        ws.sync()
        assert len(ws["v"]) == BIG             # a fetch
        theirs, ours = _idle_sizes(ws)
        assert max(theirs.values()) <= IDLE, theirs
        assert ours and max(ours.values()) <= IDLE, ours
    finally:
        ws.close()
