"""Threads of shipped code, counted: stats()["threads"] (and, through a
server, pyshelf.sessions()'s "threads")."""
import io

import pyshelf


def test_stats_count_threads_of_shipped_code(gw):
    """stats()["threads"]: up before Thread.start() returns, daemon or
    not, down when run() is over; a thread that fails counts down too."""
    assert gw.stats()["threads"] == 0
    gw.remote_exec(
        "import threading\n"
        "go = threading.Event()\n"
        "ts = [threading.Thread(target=go.wait, daemon=d)\n"
        "      for d in (False, True)]\n"
        "ts.append(threading.Thread(target=lambda: 1 / 0))\n"
        "for t in ts[:2]:\n"
        "    t.start()\n")
    assert gw.stats()["threads"] == 2
    err = io.StringIO()
    gw.remote_exec("ts[2].start(); ts[2].join()\n"
                   "go.set()\n"
                   "for t in ts:\n"
                   "    t.join()\n"
                   "del ts, go, t", stderr=err)
    assert "ZeroDivisionError" in err.getvalue()
    assert gw.stats()["threads"] == 0


def test_thread_count_refuses_a_bad_delta(gw):
    """_pyshelfd.threads() takes -1, 0 or 1 only: anything else is a
    ValueError, and the count is left alone."""
    r = gw.remote_exec("import _pyshelfd\n_pyshelfd.threads(2)")
    assert isinstance(r, pyshelf.WrappedExcinfo), r
    assert r.exc_type == "ValueError" and "delta" in r.message
    assert gw.stats()["threads"] == 0
