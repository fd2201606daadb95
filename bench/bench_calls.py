"""Round-trip benchmarks for issue 3: pyshelf against its floor and peers.

Run by bench/run.sh (make bench), pinned (taskset -c 0) and unpinned.
Prints one JSON object per measurement: name, median_us, p99_us, n.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import pyshelf
from pyshelf import DirectValue

N = int(os.environ.get("BENCH_N", "5000"))


def measure(name, fn, n=N, warm=200):
    for _ in range(warm):
        fn()
    ts = []
    pc = time.perf_counter
    for _ in range(n):
        t0 = pc()
        fn()
        ts.append(pc() - t0)
    ts.sort()
    out = {"name": name, "median_us": round(ts[len(ts) // 2] * 1e6, 2),
           "p99_us": round(ts[len(ts) * 99 // 100] * 1e6, 2), "n": n}
    print(json.dumps(out), flush=True)
    return out


def interleaved(name, fns, n=N, warm=200):
    """Each of fns ((label, fn), ...) called in turn n times; the median
    of each, and its ratio over the first's."""
    pc = time.perf_counter
    for _ in range(warm):
        for _, fn in fns:
            fn()
    ts = [[] for _ in fns]
    for _ in range(n):
        for k, (_, fn) in enumerate(fns):
            t0 = pc()
            fn()
            ts[k].append(pc() - t0)
    med = [statistics.median(t) * 1e6 for t in ts]
    out = {"name": name, "n": n}
    for (label, _), m in zip(fns, med):
        out[label + "_median_us"] = round(m, 2)
        out[label + "_x_" + fns[0][0]] = round(m / med[0], 3)
    print(json.dumps(out), flush=True)
    return out


def noop():
    return None


def takes(x):
    return None


def big():
    return DirectValue(b"x" * (1 << 20))


class Config:
    """A class of the client's __main__: it travels by value."""


def with_defaults(x=1, y="two"):
    return None


def annotated(c: Config = None, n: int = 0):
    return None


def bench_pyshelf(db):
    ws = pyshelf.spawn(db=db, session="bench")
    try:
        measure("pyshelf_noop", lambda: ws.remote_exec(noop))
        # a function shipped as source sends its defaults (and
        # annotations) with each call: their cost over the no-op, the
        # three called in turn so that the machine's drift hits all alike
        interleaved("pyshelf_defaults_x_noop", [
            ("noop", lambda: ws.remote_exec(noop)),
            ("defaults", lambda: ws.remote_exec(with_defaults)),
            ("annotated", lambda: ws.remote_exec(annotated))])
        h = ws.remote_exec("[1, 2, 3]")
        measure("pyshelf_wrapped_arg", lambda: ws.remote_exec(takes, h))
        measure("pyshelf_1mb_direct", lambda: ws.remote_exec(big), n=max(N // 10, 200),
                warm=20)
    finally:
        ws.close()


def bench_pyshelf_spin(db, spin_us):
    """The same no-op with the client spinning before it blocks."""
    os.environ["PYSHELF_SPIN_US"] = str(spin_us)
    try:
        ws = pyshelf.spawn(db=db, session="bench-spin")
    finally:
        del os.environ["PYSHELF_SPIN_US"]
    try:
        measure("pyshelf_noop_spin%d" % spin_us, lambda: ws.remote_exec(noop))
    finally:
        ws.close()


def bench_execnet():
    import execnet
    gw = execnet.makegateway("popen//python=%s" % sys.executable)
    try:
        def call():
            ch = gw.remote_exec("channel.send(None)")
            ch.receive()
            ch.waitclose()
        measure("execnet_remote_exec", call, n=max(N // 5, 500))
    finally:
        gw.exit()


def bench_jupyter():
    import tempfile
    from jupyter_client.manager import start_new_kernel
    # a kernel on this interpreter (the python3 on PATH may lack ipykernel)
    spec = tempfile.mkdtemp()
    kdir = os.path.join(spec, "kernels", "pyshelfbench")
    os.makedirs(kdir)
    with open(os.path.join(kdir, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"],
                   "display_name": "bench", "language": "python"}, f)
    os.environ["JUPYTER_PATH"] = spec
    km, kc = start_new_kernel(kernel_name="pyshelfbench")
    try:
        def call():
            kc.execute_interactive("pass", timeout=30, output_hook=lambda m: None)
        measure("jupyter_execute", call, n=max(N // 25, 100), warm=20)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


if __name__ == "__main__":
    import tempfile
    which = sys.argv[1:] or ["pyshelf", "execnet", "jupyter"]
    with tempfile.TemporaryDirectory() as d:
        if "pyshelf" in which:
            bench_pyshelf(os.path.join(d, "db"))
            bench_pyshelf_spin(os.path.join(d, "db"), 50)
    if "execnet" in which:
        bench_execnet()
    if "jupyter" in which:
        bench_jupyter()
