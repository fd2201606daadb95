"""pyshelfd's options: --help, bad values, sizes with units, and the
Python client's spawn(sync=, checkpoint_interval=, args=) that passes
them."""
import subprocess
import time

import pytest

import pyshelf
from restarts import kill_backend, value

OPTIONS = ["--stdio", "--db", "--session", "--create", "--new",
           "--read-only", "--create-db", "--lease",
           "--checkpoint-interval", "--sync", "--max-frame", "--map-max",
           "--memory-limit", "--help", "--version"]


def run(backend, *args):
    return subprocess.run([backend, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


def test_help_names_every_option(backend):
    r = run(backend, "--help")
    assert r.returncode == 0
    for opt in OPTIONS:
        assert opt in r.stdout, opt
    assert "BYTES is a number of bytes" in r.stdout


@pytest.mark.parametrize("opt,val", [
    ("--sync", "sometimes"), ("--checkpoint-interval", "-1"),
    ("--checkpoint-interval", "inf"), ("--lease", "nan"),
    ("--lease", "1e300"), ("--max-frame", "12"), ("--max-frame", "8G"),
    ("--map-max", "5Q"), ("--map-max", "inf"), ("--map-max", "1K"),
    ("--memory-limit", "1M"), ("--memory-limit", "x"),
])
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_bad_value_is_an_error_naming_the_option(backend, tmp_path, opt, val,
                                                 form):
    args = [opt, val] if form == "separate" else ["%s=%s" % (opt, val)]
    r = run(backend, "--stdio", "--db", str(tmp_path / "db"), "--session",
            "s", *args)
    assert r.returncode == 2
    assert "bad value '%s' for %s" % (val, opt) in r.stderr
    assert not (tmp_path / "db").exists()     # nothing was started


def test_sizes_take_units(tmp_path, backend):
    ws = pyshelf.spawn(db=tmp_path / "db", session="s", backend=backend,
                       args=["--map-max", "64G", "--max-frame=2MiB"])
    try:
        assert value(ws, "DirectValue(6 * 7)") == 42
        ws["big"] = bytes(3 << 20)   # over 2 MiB: streamed in PARTs
        assert value(ws, "DirectValue(len(big))") == 3 << 20
    finally:
        ws.close()


def test_memory_limit_takes_units(tmp_path, backend):
    """(Not in the ASan run: its shadow memory counts against the limit.)"""
    ws = pyshelf.spawn(db=tmp_path / "db", session="s", backend=backend,
                       args=["--memory-limit", "4GB"])
    try:
        assert value(ws, "import resource\n"
                         "DirectValue(resource.getrlimit("
                         "resource.RLIMIT_DATA))") == (4 << 30, 4 << 30)
    finally:
        ws.close()


@pytest.mark.stdio_only("pyshelfd options on spawn's command line; a running server keeps its own")
def test_spawn_passes_the_options(tmp_path, backend):
    ws = pyshelf.spawn(db=tmp_path / "db", session="s", backend=backend,
                       sync="always", checkpoint_interval=0.25,
                       args=["--lease", "60"])
    try:
        with open("/proc/%d/cmdline" % ws.pid, "rb") as f:
            argv = f.read().split(b"\0")
        for a, b in ((b"--sync", b"always"),
                     (b"--checkpoint-interval", b"0.25"),
                     (b"--lease", b"60")):
            assert argv[argv.index(a) + 1] == b
    finally:
        ws.close()
    # refused by pyshelfd: a ValueError with its own words (issue 13)
    with pytest.raises(ValueError, match="bad value 'sometimes' for "
                       "--sync"):
        pyshelf.spawn(db=tmp_path / "db", session="s", backend=backend,
                      sync="sometimes")
    ws = pyshelf.open("s", db=tmp_path / "db", backend=backend, sync="never")
    ws.close()


def test_checkpoint_interval_catches_in_place_changes(tmp_path, backend):
    """With checkpoint_interval=0.2, an in-place change is written by the
    interval checkpoint (no sync()), and survives a SIGKILL."""
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="s", backend=backend,
                       checkpoint_interval=0.2)
    ws.remote_exec("lst = []")
    # in place, by code the request does not name (a request's own
    # checkpoint covers only what its code names): the interval's job
    ws.remote_exec("def f():\n    lst.append(1)\n")
    ws.remote_exec("globals()['f']()")
    written = ws.stats()["entries_written"]
    deadline = time.time() + 120      # a bound for a hang, not a timing
    while ws.stats()["entries_written"] == written:
        assert time.time() < deadline, "no interval checkpoint in 120 s"
        time.sleep(0.05)
    kill_backend(ws)
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    try:
        assert ws["lst"] == [1]
    finally:
        ws.close()
