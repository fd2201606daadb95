"""What the integration tests share for restarting a backend the hard way.

Imported by the test modules (pytest puts this folder on sys.path)."""
import os
import signal
import time

import pyshelf


def kill_backend(ws):
    """SIGKILL the pyshelfd behind ws, wait (up to 10 s) until it is gone,
    then close ws, whose complaints about the dead backend are expected."""
    os.kill(ws.pid, signal.SIGKILL)
    deadline = time.time() + 10
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
