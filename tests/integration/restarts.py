"""What the integration tests share for restarting a backend: the hard way
(kill_backend), either way (restart, MODES), and reading a value back.

Imported by the test modules (pytest puts this folder on sys.path)."""
import os
import signal
import time

import pyshelf
from pyshelf import DirectValue

MODES = ["clean", "kill"]   # ws.close(), or SIGKILL


def kill_backend(ws):
    """SIGKILL the pyshelfd behind ws, wait (up to 120 s) until it is gone,
    then close ws, whose complaints about the dead backend are expected."""
    os.kill(ws.pid, signal.SIGKILL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            os.waitpid(ws.pid, os.WNOHANG)
            os.kill(ws.pid, 0)
        except (ChildProcessError, ProcessLookupError):
            break
        time.sleep(0.01)
    try:
        ws.close()
    except pyshelf.Error:
        pass


def restart(ws, mode, db, session="s"):
    """End the backend behind ws the given way ("clean" or "kill") and
    start a new one on the same store and session."""
    if mode == "clean":
        ws.close()
    else:
        kill_backend(ws)
    return pyshelf.spawn(db=db, session=session)


def value(ws, src):
    """The value of shipped code that returns a DirectValue."""
    res = ws.remote_exec(src)
    assert isinstance(res, DirectValue), res
    return res.value
