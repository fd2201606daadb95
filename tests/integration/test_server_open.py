"""open() through a server: options that a running server does not take
(QA 03), and flags 'r' and 'n' on a session whose idle worker lingers
after every client left (QA 02)."""
import os
import signal
import warnings

import pytest

import pyshelf
from server_helpers import WAIT, alive, srv, wait_for, wait_gone  # noqa: F401
from test_server_client import _open


def test_options_given_to_a_running_server_warn(srv):
    first = _open(srv, "other")
    try:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            ws = pyshelf.open("s", db=srv.db, args=("--idle-exit", "1"),
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
