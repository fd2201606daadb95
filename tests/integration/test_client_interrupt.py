"""Interrupting running code: ws.interrupt() from another thread, and
Ctrl-C (SIGINT) in the client."""
import os
import signal
import threading
import time

import pytest

from pyshelf import DirectValue, WrappedExcinfo

LOOP = "while True:\n    pass"
# Ignores KeyboardInterrupt for about two seconds, then ends.
STUBBORN = ("import time\n"
            "for _ in range(200):\n"
            "    try:\n"
            "        time.sleep(0.01)\n"
            "    except KeyboardInterrupt:\n"
            "        pass\n")


def test_interrupt_from_another_thread(gw, safety_net):
    timer = threading.Timer(0.3, gw.interrupt)
    timer.start()
    t0 = time.monotonic()
    r = gw.remote_exec(LOOP)
    elapsed = time.monotonic() - t0
    timer.join()
    assert isinstance(r, WrappedExcinfo)
    assert r.exc_type == "KeyboardInterrupt"
    assert elapsed < 1.3
    assert gw.remote_exec("DirectValue(1)").value == 1


def test_interrupt_when_idle_is_harmless(gw):
    gw.interrupt()
    assert gw.remote_exec("DirectValue(2)").value == 2


def test_interrupt_a_function_call(gw, safety_net):
    def spin(n):
        while True:
            n += 1
    threading.Timer(0.2, gw.interrupt).start()
    r = gw.remote_exec(spin, 0)
    assert isinstance(r, WrappedExcinfo) and r.exc_type == "KeyboardInterrupt"


needs_sigint = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="SIGINT does not raise KeyboardInterrupt here (ignored?)")


@pytest.fixture
def safety_net(gw):
    """Interrupt the backend after 10 s whatever happens, so that a lost
    SIGINT fails the test instead of hanging it."""
    t = threading.Timer(10, gw.interrupt)
    t.start()
    yield
    t.cancel()


@needs_sigint
def test_ctrl_c_interrupts_the_backend(gw, safety_net):
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    r = gw.remote_exec(LOOP)
    assert isinstance(r, WrappedExcinfo)
    assert r.exc_type == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 1.5
    # the backend was not killed by the terminal's SIGINT: same process
    assert gw.remote_exec("DirectValue(3)").value == 3


@needs_sigint
def test_second_ctrl_c_raises_and_the_connection_recovers(gw, safety_net):
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        gw.remote_exec(STUBBORN)
    assert time.monotonic() - t0 < 1.5
    # The abandoned request's late reply is skipped: the next one matches.
    r = gw.remote_exec("DirectValue(4)")
    assert isinstance(r, DirectValue) and r.value == 4


def test_backend_process_not_in_our_process_group(gw):
    assert os.getpgid(gw.pid) != os.getpgid(0)
