"""Fixtures for the integration tests: the pyshelfd under test and a
workspace on a fresh store.

Run by `make check` (tests/integration/run-pytest.sh) with PYTHONPATH set
to the build tree's client/python and PYSHELFD to its pyshelfd; by hand:

    PYTHONPATH=$BUILD/client/python PYSHELFD=$BUILD/pyshelfd \\
        /usr/bin/python3 -m pytest tests/integration
"""
import glob
import os
import shutil
import signal
import tempfile
import time
import warnings

import pytest

import pyshelf

# pyshelf.open() attaches through a server by default; the suite's tests
# of open() were written for a private stdio backend (a second pyshelfd on
# a session is SessionBusy, close() ends the backend), so they run in that
# mode unless the run asks for the other (PYSHELF_OPEN=server runs them
# through a server).  The server-mode tests (test_server_client*.py) set
# it themselves (server_helpers.srv).
os.environ.setdefault("PYSHELF_OPEN", "stdio")

# PYSHELF_TEST_MODE=server (make check's second run, run-pytest-server.sh):
# every workspace the tests make with pyshelf.spawn() or pyshelf.open() is
# attached through a server instead (open(), PYSHELF_OPEN=server; flag 'r'
# stays a private stdio backend by design), each test with its own
# XDG_RUNTIME_DIR, its servers stopped at teardown.  Tests of what only a
# private stdio backend does are marked stdio_only("why") and skipped in
# this mode.  Tests that start their own server or worker (the fixtures of
# OWN_SERVER) are left as they are: they choose its options themselves.
SERVER_MODE = os.environ.get("PYSHELF_TEST_MODE") == "server"
_real_open = pyshelf.open
_open_ws = []      # this test's routed workspaces

# A stdio backend ends at close(), and the tests that close, touch the
# store and open again expect a backend that reads it afresh.  Through a
# server the same happens when the worker hibernates: the servers run
# with a short --idle-exit, and a routed close() waits until the worker
# has checkpointed and exited, unless it must stay (another workspace of
# the test is attached to it, or, after VOLATILE_WAIT, it holds volatile
# entries or a thread of shipped code is alive: those keep a worker by
# design; asked only when it is still there after VOLATILE_WAIT, which
# may just mean a loaded machine).
IDLE_EXIT = "0.05"
VOLATILE_WAIT = 3   # s: a worker still there then is asked why

# The fixtures that start a server or a worker of the test's own, with the
# options the test is about (server_helpers.srv: open() through a server
# in a private XDG_RUNTIME_DIR; test_server_client_worker.sup,
# test_server_supervisor.server, worker_wire.worker: processes started by
# hand).  A test that uses one runs the same in both modes: the harness
# neither routes its spawn() nor adds --idle-exit to its open().
OWN_SERVER = frozenset(("srv", "sup", "server", "worker"))


def _open_through_server(name, db=None, flag="c", lease=None,
                         create_db=False, sync=None, checkpoint_interval=None,
                         args=(), backend=None, _depth=1):
    args = list(args)
    if flag != "r" and "--idle-exit" not in args:
        args += ["--idle-exit", IDLE_EXIT]
    # open()'s warnings point at the test's line, not at this one
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ws = _real_open(name, db=db, flag=flag, lease=lease,
                        create_db=create_db, sync=sync,
                        checkpoint_interval=checkpoint_interval, args=args,
                        backend=backend)
    for w in got:
        warnings.warn(w.message, w.category, stacklevel=1 + _depth)
    if flag == "r":
        return ws
    _open_ws.append(ws)
    detach = ws.close

    def close():
        if ws.closed:
            return      # closed already: nothing to wait for
        pid = ws.pid
        detach()        # a DetachError is the test's
        shared = any(o is not ws and not o.closed and o.pid == pid
                     for o in _open_ws)
        if pid and not shared and not _gone(pid, VOLATILE_WAIT):
            # Still there: volatile entries keep it, or the machine is
            # slow.  Ask it (not at once: stats() imports json into the
            # worker, which a test of sys.modules would notice), and wait
            # as long as it takes when nothing keeps it.
            if _holds_volatile(name, db, args, pid) is False:
                _gone(pid, 120)
    ws.close = close
    return ws


def _holds_volatile(name, db, args, pid):
    """Whether worker pid of session name holds volatile entries or runs
    threads of shipped code (None:
    it is gone, or the session cannot be attached).  The probe attaches:
    when pid is gone by then, it starts a worker of its own, which is
    waited for too (it holds nothing, and would keep the session busy)."""
    try:
        probe = _real_open(name, db=db, flag="w", args=args)
    except Exception:
        return None
    try:
        st = probe.stats() if probe.pid == pid else None
        vol = st["volatile"] + st["unwritten"] + st["threads"] != 0 \
            if st else None
    except Exception:
        vol = None
    try:
        probe.close()
    except pyshelf.DetachError:
        vol = None      # its checkpoint fails: the test will say so
    if probe.pid and probe.pid != pid:
        _gone(probe.pid, 120)
    return vol


def _spawn_through_server(db=None, session="default", backend=None, *,
                          flag="c", lease=None, create_db=False, sync=None,
                          checkpoint_interval=None, args=()):
    # --lease is the session's (ATTACH's LEASE_MS), not the whole server's
    args = [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
            for a in args]
    if "--lease" in args[:-1] and lease is None:
        i = args.index("--lease")
        lease = float(args[i + 1])
        del args[i:i + 2]
    return _open_through_server(session, db=db, flag=flag, lease=lease,
                                create_db=create_db, sync=sync,
                                checkpoint_interval=checkpoint_interval,
                                args=args, backend=backend, _depth=2)


def pytest_configure(config):
    # Ctrl-C as a user gives it: a shell without job control starts its
    # background commands (`cmd &`) with SIGINT ignored, every process
    # they start inherits that across exec, and the client processes of
    # the tests that send SIGINT would ignore it and wait for good.  A
    # handler here is reset to the default in every child at exec.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers", "stdio_only(reason, mode=None): tests what only a "
        "private stdio backend does; skipped when PYSHELF_TEST_MODE=server "
        "(with mode, only the case of that restart mode)")


def pytest_collection_modifyitems(config, items):
    if not SERVER_MODE:
        return
    for item in items:
        m = item.get_closest_marker("stdio_only")
        # stdio_only(reason, mode="clean"): that restart mode's case only
        mode = m.kwargs.get("mode") if m is not None else None
        if mode is not None and getattr(item, "callspec", None) is not None \
                and item.callspec.params.get("mode") != mode:
            continue
        if m is not None:
            why = m.args[0] if m.args else m.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(
                reason="stdio only: %s" % why))


def _server_pids(run):
    pids = set()
    for p in glob.glob(os.path.join(run, "pyshelf", "*.pid")):
        try:
            with open(p) as f:
                pids.add(int(f.read().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _gone(pid, timeout):
    deadline = time.time() + timeout
    while True:
        try:
            os.kill(pid, 0)
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _server_mode(request, monkeypatch):
    """In server mode: a private 0700 XDG_RUNTIME_DIR (short, for
    sun_path), spawn() routed to open(), and at teardown every server of
    the test SIGTERMed and waited for (each stops its workers first).
    Nothing for a test that starts its own server (OWN_SERVER)."""
    if not SERVER_MODE or OWN_SERVER.intersection(request.fixturenames):
        yield
        return
    run = tempfile.mkdtemp(prefix="pst")
    os.chmod(run, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", run)
    monkeypatch.setenv("PYSHELF_OPEN", "server")
    if os.environ.get("PYSHELFD") is None:
        path = _find_backend()
        if path:
            monkeypatch.setenv("PYSHELFD", path)
    monkeypatch.setattr(pyshelf, "spawn", _spawn_through_server)
    monkeypatch.setattr(pyshelf, "open", _open_through_server)
    try:
        yield
    finally:
        del _open_ws[:]
        pids = _server_pids(run)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stuck = [pid for pid in pids if not _gone(pid, 120)]
        for pid in stuck:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run, ignore_errors=True)
        assert not stuck, "server(s) %s ignored SIGTERM for 120 s" % stuck


def _find_backend():
    env = os.environ.get("PYSHELFD")
    if env:
        return env
    try:
        from pyshelf import _paths
    except ImportError:
        return None
    return _paths.BUILD_BACKEND


@pytest.fixture(scope="session")
def backend():
    """Path of the pyshelfd under test: $PYSHELFD, else the build tree's.
    A missing pyshelfd fails the tests that need it: a test run that
    tested nothing must not pass."""
    path = _find_backend()
    if not path or not os.access(path, os.X_OK):
        pytest.fail("no pyshelfd to test at %r (build it, or set "
                    "PYSHELFD to its path)" % (path,), pytrace=False)
    return path


@pytest.fixture
def store(tmp_path):
    """A store directory that does not exist yet (spawn creates it)."""
    return str(tmp_path / "db")


@pytest.fixture
def gw(tmp_path, backend):
    """A Workspace on a new store: pyshelf.spawn(db=tmp_path/"db",
    session="t"), closed at teardown."""
    ws = pyshelf.spawn(db=tmp_path / "db", session="t", backend=backend)
    try:
        yield ws
    finally:
        ws.close()
