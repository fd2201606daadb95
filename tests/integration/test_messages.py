"""What the user is told (QA 08, 09, 10, 12, 14): a request sent after the
session's idle worker died runs on the new one, with a warning; a
WrappedExcinfo carries the backend's traceback, lines of shipped code at
their own file and line; a call sent again after a broken connection
prints its output once; server_pid is the server that runs now; a refused
open says it once, in the exception, and a warning names what happened to
the session, not a worker."""
import os
import signal
import socket
import threading
import time
import traceback
import warnings

import pytest

import pyshelf
from conftest import SERVER_MODE, _gone


# --- QA 14: a refused open says it once; the warning in the user's terms --

@pytest.mark.parametrize("flag", ["w", "r"])
def test_a_refused_open_prints_nothing_on_stderr(store, capfd, flag):
    with pytest.raises(pyshelf.SessionNotFound) as ei:
        pyshelf.open("nosuch", db=store, flag=flag)
    assert "no session named 'nosuch'" in str(ei.value)
    pyshelf.open("other", db=store).close()
    with pytest.raises(pyshelf.SessionNotFound):
        pyshelf.open("nosuch", db=store, flag=flag)
    err = capfd.readouterr().err
    assert "nosuch" not in err, err


def test_the_tombstone_warning_says_what_happened_to_the_session(store):
    ws = pyshelf.open("e", db=store)
    ws["x"] = 1
    ws.close_session()
    with pytest.raises(pyshelf.SessionEnded) as ei:
        pyshelf.open("e", db=store, flag="w")   # its worker refuses
    assert "session 'e' was closed (close_session()) on " in str(ei.value)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        pyshelf.open("e", db=store).close()
    msgs = [str(w.message) for w in got
            if issubclass(w.category, pyshelf.SessionEndedWarning)]
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert msg.startswith("a new, empty session was created: session 'e' "
                          "was closed (close_session()) on "), msg
    assert "entries" in msg and "reason closed" not in msg, msg
    assert "worker" not in msg and "status" not in msg, msg

