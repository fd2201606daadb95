"""The environment a spawned backend starts with (client/spawn.c): the
caller's, with glibc.malloc.hugetlb=1 added to GLIBC_TUNABLES unless the
caller set that tunable, so that glibc backs the heap with transparent huge
pages.  Other tunables of the caller are kept."""
import re

import pytest

import pyshelf


def _backend_env(tmp_path, backend, name="db"):
    ws = pyshelf.spawn(db=tmp_path / name, session="t", backend=backend)
    try:
        return ws, ws.remote_exec(
            "import os\nDirectValue(os.environ.get('GLIBC_TUNABLES'))").value
    except BaseException:
        ws.close()
        raise


@pytest.mark.parametrize("caller, expected", [
    (None, "glibc.malloc.hugetlb=1"),
    ("", "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),
    ("glibc.malloc.arena_max=1:glibc.malloc.hugetlb=0",
     "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=0"),
])
def test_tunables(tmp_path, backend, monkeypatch, caller, expected):
    if caller is None:
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    else:
        monkeypatch.setenv("GLIBC_TUNABLES", caller)
    ws, got = _backend_env(tmp_path, backend)
    ws.close()
    assert got == expected


def test_rest_of_environment_is_the_callers(tmp_path, backend, monkeypatch):
    monkeypatch.setenv("PYSHELF_TEST_MARK", "kept \u00e9 = x")
    ws = pyshelf.spawn(db=tmp_path / "db", session="t", backend=backend)
    try:
        assert ws.remote_exec("import os\nDirectValue(os.environ.get("
                              "'PYSHELF_TEST_MARK'))").value == "kept \u00e9 = x"
    finally:
        ws.close()


def _thp_mode():
    text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    return re.search(r"\[(\w+)\]", text).group(1)


def _heap_huge_kb(pid):
    """AnonHugePages of the process's heap, in KiB: the sum over its
    [heap] mappings (madvise splits the one mapping into several)."""
    smaps = open("/proc/%d/smaps" % pid).read()
    return sum(int(re.search(r"AnonHugePages:\s+(\d+)", block).group(1))
               for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps)
               if block.split("\n")[0].rstrip().endswith("[heap]"))


@pytest.mark.parametrize("caller", [None, "glibc.malloc.hugetlb=0"])
def test_heap_takes_huge_pages(tmp_path, backend, monkeypatch, caller):
    """64 MiB from malloc come from the heap (pyshelfd keeps blocks under
    128 MiB there); with the tunable the heap is in huge pages wherever the
    kernel offers them, without it only when the kernel's mode is always."""
    if caller is None:
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    else:
        monkeypatch.setenv("GLIBC_TUNABLES", caller)
    ws = pyshelf.spawn(db=tmp_path / "db", session="t", backend=backend)
    try:
        if "libasan" in open("/proc/%d/maps" % ws.pid).read():
            pytest.skip("an AddressSanitizer build: ASan's allocator "
                        "replaces glibc's malloc and its tunables")
        ws.remote_exec("buf = b'\\x01' * (64 << 20)")
        huge = _heap_huge_kb(ws.pid)
    finally:
        ws.close()
    mode = _thp_mode()
    if mode == "never" or (mode == "madvise" and caller is not None):
        assert huge == 0
    else:
        assert huge >= 32 << 10


@pytest.mark.parametrize("env, how", [(None, "bytecode"), ("", "bytecode"),
                                      ("1", "source")])
def test_backend_code_bytecode_or_source(tmp_path, backend, monkeypatch,
                                         env, how):
    """pyshelfd loads its Python half from the bytecode made at build time
    (its interpreter has the same magic number), or compiles the embedded
    source when PYSHELFD_COMPILE_BACKEND is set: either way it works the
    same, across a restart too."""
    if env is None:
        monkeypatch.delenv("PYSHELFD_COMPILE_BACKEND", raising=False)
    else:
        monkeypatch.setenv("PYSHELFD_COMPILE_BACKEND", env)
    ws = pyshelf.spawn(db=tmp_path / "db", session="t", backend=backend)
    try:
        assert ws.stats()["backend_code"] == how
        ws.remote_exec("a = [1]\nc = {'x': a}\nh = c")
        res = ws.remote_exec("1/0")
        assert isinstance(res, pyshelf.WrappedExcinfo)
    finally:
        ws.close()
    ws = pyshelf.spawn(db=tmp_path / "db", session="t", backend=backend)
    try:
        assert ws.stats()["backend_code"] == how
        assert ws.remote_exec("DirectValue((c['x'] is a, h is c))").value \
            == (True, True)
    finally:
        ws.close()
