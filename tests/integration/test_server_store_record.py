"""QA 18: the store names its server.  Two shells of one user with
different $XDG_RUNTIME_DIR (a desktop session and an ssh or cron shell)
used to start two servers for one store, and the second could not attach
to the session the first one's worker served (SessionBusy).  A server
records its socket in the store's directory (server.sock, a symbolic link,
under the flock of server.lock held for its life); a client finds the
live server there first; a second server for the store refuses to start,
naming the first one's socket (docs/OPERATIONS.md, "Finding the server")."""
import os
import signal
import subprocess
import tempfile

import pytest

import pyshelf
from server_helpers import srv, wait_for, wait_gone  # noqa: F401


def _other_run():
    run = tempfile.mkdtemp(prefix="ps")
    os.chmod(run, 0o700)
    return run


def test_two_runtime_dirs_share_one_server(srv, monkeypatch):
    """A client whose XDG_RUNTIME_DIR differs attaches through the
    server the store records: same server, same worker, same globals;
    no second server, no socket in its own directory."""
    first = srv.track(pyshelf.open("s", db=srv.db, create_db=True))
    first["x"] = 1
    rec = os.path.join(srv.db, "server.sock")
    target = os.readlink(rec)
    assert target.startswith(os.path.join(srv.run, "pyshelf") + "/"), target
    other = _other_run()
    monkeypatch.setenv("XDG_RUNTIME_DIR", other)
    second = srv.track(pyshelf.open("s", db=srv.db))
    try:
        assert second.server_pid == first.server_pid
        assert second.pid == first.pid            # the session's one worker
        assert second["x"] == 1
        second["y"] = 2
        assert first["y"] == 2
        assert not os.path.exists(os.path.join(other, "pyshelf")) or \
            not [n for n in os.listdir(os.path.join(other, "pyshelf"))
                 if n.startswith("db-") and not n.endswith((".lock",))]
    finally:
        second.close()
        first.close()


def _logs(*runs):
    """The servers' logs under these runtime directories: what a failed
    assertion shows (a CI failure is read from its output only)."""
    out = []
    for run in runs:
        d = os.path.join(run, "pyshelf")
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if n.endswith(".log"):
                with open(os.path.join(d, n), errors="replace") as f:
                    out.append("--- %s\n%s" % (n, f.read()[-4000:]))
    return "\n".join(out)


def test_second_server_for_a_store_refuses_naming_the_first(srv, backend):
    """pyshelfd --server for a store that another live server serves
    (from another runtime directory) exits 1 and names that server's
    socket; once the first stops, its record is gone and the second
    starts and records itself."""
    ws = srv.track(pyshelf.open("s", db=srv.db, create_db=True))
    first_sock = os.readlink(os.path.join(srv.db, "server.sock"))
    first_pid = ws.server_pid
    ws.close()
    other = _other_run()
    env = dict(os.environ, XDG_RUNTIME_DIR=other)
    r = subprocess.run([backend, "--server", "--db", srv.db], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r, _logs(srv.run, other))
    assert "another server serves this store" in r.stderr, (
        r.stderr, _logs(srv.run, other))
    assert first_sock in r.stderr, (r.stderr, _logs(srv.run, other))
    os.kill(first_pid, signal.SIGTERM)
    assert wait_gone(first_pid), _logs(srv.run, other)
    assert not os.path.lexists(os.path.join(srv.db, "server.sock")), \
        _logs(srv.run, other)
    r = subprocess.run([backend, "--server", "--db", srv.db], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r, _logs(srv.run, other))
    target = os.readlink(os.path.join(srv.db, "server.sock"))
    assert target.startswith(os.path.join(other, "pyshelf") + "/"), (
        target, _logs(srv.run, other))
    with open(target + ".pid") as f:
        srv.servers.add(int(f.read().split()[0]))


def test_stale_record_is_passed_by(srv, monkeypatch):
    """A record left by a server killed with SIGKILL names a socket that
    refuses: the client starts a server of its own, which takes the
    store's lock (the kernel dropped the dead one's) and records itself."""
    ws = srv.track(pyshelf.open("s", db=srv.db, create_db=True))
    ws["x"] = 1
    pid, worker = ws.server_pid, ws.pid
    ws.close()
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    if worker:       # its session would be busy (another runtime
        try:         # directory's server cannot adopt it)
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert wait_gone(worker)
    assert os.path.lexists(os.path.join(srv.db, "server.sock"))
    other = _other_run()
    monkeypatch.setenv("XDG_RUNTIME_DIR", other)
    ws = srv.track(pyshelf.open("s", db=srv.db))
    try:
        assert ws.server_pid != pid
        assert ws["x"] == 1
        target = os.readlink(os.path.join(srv.db, "server.sock"))
        assert target.startswith(os.path.join(other, "pyshelf") + "/")
    finally:
        ws.close()
