"""open() through a server: options that a running server does not take
(QA 03), and flags 'r' and 'n' on a session whose idle worker lingers
after every client left (QA 02)."""
import os
import shutil
import signal
import warnings

import pytest

import pyshelf
from pyshelf._workspace import open as _real_open
from server_helpers import (WAIT, alive, child, srv, wait_for,  # noqa: F401
                            wait_gone)


def _open(s, name="s", **kw):
    """pyshelf.open itself (PYSHELF_TEST_MODE=server's conftest wraps
    pyshelf.open, adding --idle-exit and waiting for workers to go at
    close: what these tests are about)."""
    return s.track(_real_open(name, db=s.db, **kw))


def test_options_given_to_a_running_server_warn(srv):
    first = _open(srv, "other")
    try:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            ws = _real_open("s", db=srv.db, args=("--idle-exit", "1"),
                              sync="always", checkpoint_interval=1)
        ws.close()
        ours = [w for w in got
                if issubclass(w.category, pyshelf.ServerOptionsIgnored)]
        assert len(ours) == 1, [str(w.message) for w in got]
        assert issubclass(pyshelf.ServerOptionsIgnored, UserWarning)
        msg = str(ours[0].message)
        assert "sync='always'" in msg and "checkpoint_interval=1" in msg
        assert "'--idle-exit', '1'" in msg
        assert "kill -TERM %d" % first.server_pid in msg
        assert ours[0].filename == __file__      # points at the caller
    finally:
        first.close()


def test_options_of_the_open_that_starts_the_server_do_not_warn(srv):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ws = _open(srv, "s", args=("--idle-exit", "1"), sync="always")
    try:
        assert not [w for w in got
                    if issubclass(w.category, pyshelf.ServerOptionsIgnored)]
    finally:
        ws.close()


def test_the_options_the_server_runs_with_do_not_warn(srv):
    first = _open(srv, "other", args=("--idle-exit", "60"), sync="always")
    try:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            _open(srv, "s", args=("--idle-exit", "60")).close()
            _open(srv, "t", sync="always").close()
        assert not [w for w in got
                    if issubclass(w.category, pyshelf.ServerOptionsIgnored)]
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            _open(srv, "u", sync="always", checkpoint_interval=2).close()
        msgs = [str(w.message) for w in got
                if issubclass(w.category, pyshelf.ServerOptionsIgnored)]
        assert len(msgs) == 1 and "checkpoint_interval=2" in msgs[0]
        assert "sync=" not in msgs[0]
    finally:
        first.close()


def test_no_options_no_warning(srv):
    first = _open(srv, "other")
    try:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            _open(srv, "s").close()
        assert not [w for w in got
                    if issubclass(w.category, pyshelf.ServerOptionsIgnored)]
    finally:
        first.close()


def test_flag_n_replaces_a_session_whose_idle_worker_lingers(srv):
    """Every client left; the worker waits out its --idle-exit (300 s):
    flag 'n' makes it checkpoint and exit, and opens the new, empty
    session (QA 02)."""
    with _open(srv, "s", flag="n") as ws:
        ws["a"] = 1
        old = ws.pid
    assert alive(old)
    ws = _open(srv, "s", flag="n")
    try:
        assert ws.get("a") is None
        assert ws.pid != old
        assert wait_gone(old)
    finally:
        ws.close()


def test_flag_n_on_a_session_in_use_names_why(srv):
    a = _open(srv, "s")
    try:
        a["a"] = 1
        with pytest.raises(pyshelf.SessionBusy) as ei:
            _open(srv, "s", flag="n")
        assert "other clients attached" in str(ei.value)
        assert ei.value.pid == a.pid
        assert a["a"] == 1
    finally:
        a.close()


def test_flag_n_while_a_call_runs_with_no_client_names_why(srv):
    p = child(srv, "import pyshelf, sys\n"
                   "ws = pyshelf.open('s', db=sys.argv[1])\n"
                   "print(ws.pid, flush=True)\n"
                   "ws.remote_exec('import time\\nwhile True: "
                   "time.sleep(0.05)')\n", srv.db)
    wp = int(p.stdout.readline())
    srv.workers.add(wp)
    wait_for(lambda: [i for i in pyshelf.sessions(srv.db)
                      if i.name == "s" and i.running_call], "the call")
    p.kill()
    p.wait()
    # the worker sees the dead client's connection close on its own
    # time: until then, flag 'n' is refused for the client still counted
    wait_for(lambda: [i for i in pyshelf.sessions(srv.db)
                      if i.name == "s" and i.attached_clients == 0],
             "the dead client's connection dropped")
    with pytest.raises(pyshelf.SessionBusy) as ei:
        _open(srv, "s", flag="n")
    assert "code running" in str(ei.value)
    assert alive(wp)


def test_flag_r_reads_a_session_whose_idle_worker_lingers(srv):
    """Every client left; flag 'r' makes the idle worker checkpoint and
    exit, then opens the session read-only (QA 02)."""
    with _open(srv, "s", flag="n") as ws:
        ws["a"] = 1
        old = ws.pid
    assert alive(old)
    r = _real_open("s", db=srv.db, flag="r")
    try:
        assert r["a"] == 1
        assert not alive(old)
        with pytest.raises(pyshelf.RemoteError):
            r["a"] = 2
    finally:
        r.close()
    ws = _open(srv, "s", flag="w")      # a new worker serves it again
    try:
        assert ws["a"] == 1 and ws.pid != old
    finally:
        ws.close()


def test_flag_r_beside_a_client_names_why(srv):
    ws = _open(srv, "s")
    try:
        ws["a"] = 1
        with pytest.raises(pyshelf.SessionBusy) as ei:
            _real_open("s", db=srv.db, flag="r")
        assert "other clients attached" in str(ei.value)
        assert ei.value.pid == ws.pid
    finally:
        ws.close()


def test_flag_r_right_after_close_finds_no_other_client(srv):
    """close() returns once DETACH's OK is in; the worker drops the
    connection from its count before sending that OK, so an open the
    moment close() returns never sees its own departed client as "other
    clients attached" (CI saw a refusal this way once, on a busy
    machine)."""
    ws = _open(srv, "s")
    ws.remote_exec("import socket\nsk = socket.socket()")
    ws.close()
    for i in range(60):
        with pytest.raises(pyshelf.SessionBusy) as ei:
            _real_open("s", db=srv.db, flag="r")
        assert "only in its memory" in str(ei.value), (i, str(ei.value))
        _open(srv, "s", flag="w").close()


def test_flag_r_keeps_a_worker_holding_volatile_entries(srv):
    """An idle worker whose session holds an entry that lives only in its
    memory (a socket) does not go for 'r': it would be lost."""
    ws = _open(srv, "s")
    ws.remote_exec("import socket\nsk = socket.socket()")
    wp = ws.pid
    ws.close()
    with pytest.raises(pyshelf.SessionBusy) as ei:
        _real_open("s", db=srv.db, flag="r")
    assert "only in its memory" in str(ei.value)
    assert alive(wp)
    ws = _open(srv, "s", flag="w")
    try:
        assert ws.remote_exec("DirectValue(sk is not None)").value is True
    finally:
        ws.close()


def test_a_store_deleted_and_made_again_is_not_served_by_the_old_server(srv):
    """QA5 2: after `rm -rf db; mkdir db` the store's old server, still
    running, took the next open() and served the deleted store (its keys,
    then I/O errors on every write). It refuses new clients instead,
    naming itself; once it is stopped, open() starts a server for the
    store now at the path."""
    os.makedirs(srv.db)
    ws = _open(srv, "s")
    ws["x"] = 1
    old = ws.server_pid
    ws.close()
    shutil.rmtree(srv.db)
    os.makedirs(srv.db)
    with pytest.raises(pyshelf.RemoteError,
                       match="deleted, moved or replaced") as got:
        _open(srv, "s")
    assert "kill -TERM %d" % old in str(got.value)
    assert alive(old)           # refusing is all it does
    os.kill(old, signal.SIGTERM)
    assert wait_gone(old)
    ws = _open(srv, "s")
    try:
        assert ws.server_pid != old
        assert list(ws.keys()) == []
        ws["y"] = 2
        assert ws["y"] == 2
    finally:
        ws.close()


def test_a_store_moved_under_its_server_is_served_again_once_restarted(srv):
    """A store moved (mv) while its server runs: through its new path the
    client finds the old server (the store's record names it), which no
    longer serves that path and refuses; once it is stopped, a new server
    serves the store at its new path, with what it held."""
    os.makedirs(srv.db)
    ws = _open(srv, "s")
    ws["x"] = 1
    old = ws.server_pid
    ws.close()
    moved = srv.db + "-moved"
    os.rename(srv.db, moved)
    with pytest.raises(pyshelf.RemoteError, match="moved") as got:
        srv.track(_real_open("s", db=moved))
    assert "kill -TERM %d" % old in str(got.value)
    os.kill(old, signal.SIGTERM)
    assert wait_gone(old)
    ws = srv.track(_real_open("s", db=moved))
    try:
        assert ws.server_pid != old
        assert ws["x"] == 1
    finally:
        ws.close()
