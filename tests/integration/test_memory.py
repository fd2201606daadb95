"""The backend's memory stays flat under handle churn: 100,000 requests
that each create a handle which the client then drops (batched RELEASE)."""
import gc

import pyshelf
from pyshelf import DirectValue, Wrapped


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def make(i):
    return {"i": i, "payload": [i] * 8}


def test_memory_flat_over_100000_handle_requests(tmp_path):
    ws = pyshelf.spawn(db=str(tmp_path / "db"), session="mem")
    try:
        def churn(n):
            for i in range(n):
                h = ws.remote_exec(make, i)
                assert isinstance(h, Wrapped)
                del h
        churn(20000)
        gc.collect()
        ws.sync()
        before = rss_kib(ws.pid)
        churn(80000)
        gc.collect()
        ws.sync()
        after = rss_kib(ws.pid)
        live = ws.handles()
        # everything released (at most the last unflushed batch left)
        assert len(live) < 200, len(live)
        print("rss before %d KiB, after %d KiB" % (before, after))
        assert after - before < 8 * 1024, (before, after)
    finally:
        ws.close()


def test_memory_flat_over_100000_distinct_sources(tmp_path):
    """Every distinct shipped block is compiled and its source kept for
    tracebacks: only the recent ones (linecache is bounded), so memory
    stays flat over 100,000 distinct 2 KB blocks; a traceback of recent
    code still shows its lines."""
    ws = pyshelf.spawn(db=str(tmp_path / "db"), session="mem")
    pad = "# " + "p" * 2000 + "\n"

    def run(lo, hi):
        for i in range(lo, hi):
            ws.remote_exec("%sn = %d" % (pad, i))
    try:
        run(0, 20000)
        before = rss_kib(ws.pid)
        run(20000, 100000)
        after = rss_kib(ws.pid)
        print("rss before %d KiB, after %d KiB" % (before, after))
        assert after - before < 16 * 1024, (before, after)
        exc = ws.remote_exec(pad + "raise ValueError('recent')")

        def lines(excinfo):
            import traceback
            return DirectValue("".join(traceback.format_exception(*excinfo)))
        text = ws.remote_exec(lines, exc).value
        assert "raise ValueError('recent')" in text, text
    finally:
        ws.close()
