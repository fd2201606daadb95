"""The C library's plain-data mode against the real backend, through
libpyshelf itself (ctypes on the built library): text arguments
(PYSHELF_ARG_LITERAL / PYSHELF_ARG_JSON, pyshelf_set_text) and text
results (PYSHELF_WANT_REPR / PYSHELF_WANT_JSON) for exec and get."""
import ctypes
import json
import os
import subprocess
import sys

import pytest

KIND_DIRECT, KIND_WRAPPED, KIND_EXCINFO, KIND_TEXT = 1, 2, 3, 4
ARG_HANDLE, ARG_PICKLE, ARG_LITERAL, ARG_JSON = 1, 2, 3, 4
WANT_HANDLE, WANT_PICKLE, WANT_REPR, WANT_JSON = 0, 1, 2, 3
E_REMOTE = -8
ERR_UNPICKLE, ERR_NOT_FOUND = 9, 11


class Arg(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("handle", ctypes.c_uint64),
                ("data", ctypes.c_char_p), ("len", ctypes.c_size_t),
                ("buffers", ctypes.c_void_p), ("nbuffers", ctypes.c_size_t)]


class Req(ctypes.Structure):
    _fields_ = [("code", ctypes.c_char_p), ("func", ctypes.c_char_p),
                ("args", ctypes.POINTER(Arg)), ("nargs", ctypes.c_size_t),
                ("want_value", ctypes.c_int),
                ("timeout_ms", ctypes.c_uint64),
                ("on_output", ctypes.c_void_p), ("on_wait", ctypes.c_void_p),
                ("wait_tick_ms", ctypes.c_uint), ("ctx", ctypes.c_void_p),
                ("call_id", ctypes.c_uint8 * 16)]


class Result(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("handle", ctypes.c_uint64),
                ("type_name", ctypes.c_char_p), ("exc_type", ctypes.c_char_p),
                ("message", ctypes.c_char_p),
                ("volatile_reason", ctypes.c_char_p),
                ("value", ctypes.c_void_p), ("value_len", ctypes.c_size_t),
                ("text", ctypes.c_char_p), ("text_len", ctypes.c_size_t),
                ("buffers", ctypes.c_void_p), ("nbuffers", ctypes.c_size_t)]


def _libpath(backend):
    return os.path.join(os.path.dirname(os.path.abspath(backend)),
                        ".libs", "libpyshelf.so")


def _open_lib(path):
    lib = ctypes.CDLL(path)
    lib.pyshelf_errmsg.restype = ctypes.c_char_p
    lib.pyshelf_remote_errcode.restype = ctypes.c_uint64
    return lib


class Conn:
    def __init__(self, lib, backend, db):
        self.lib = lib
        self.c = ctypes.c_void_p()
        assert lib.pyshelf_create(ctypes.byref(self.c)) == 0
        assert lib.pyshelf_spawn(self.c, backend.encode(), db.encode(),
                                 b"plain", 1, None) == 0
        assert lib.pyshelf_hello(self.c, b"test", None) == 0, self.err()

    def err(self):
        return self.lib.pyshelf_errmsg(self.c).decode()

    def exec(self, code, want, func=None, args=()):
        req = Req()
        req.code = code.encode()
        req.func = func.encode() if func else None
        arr = (Arg * max(1, len(args)))()
        for i, (kind, text) in enumerate(args):
            arr[i].kind = kind
            if kind == ARG_HANDLE:
                arr[i].handle = text
            else:
                arr[i].data = text.encode()
                arr[i].len = 0
        req.args = arr
        req.nargs = len(args)
        req.want_value = want
        res = Result()
        rc = self.lib.pyshelf_exec(self.c, ctypes.byref(req),
                                   ctypes.byref(res))
        return rc, self._take(res)

    def get(self, key, want):
        res = Result()
        rc = self.lib.pyshelf_get(self.c, key.encode(), want,
                                  ctypes.byref(res))
        return rc, self._take(res)

    def _take(self, res):
        out = dict(kind=res.kind, handle=res.handle,
                   type_name=res.type_name and res.type_name.decode(),
                   text=res.text and res.text.decode(),
                   text_len=res.text_len,
                   exc_type=res.exc_type and res.exc_type.decode())
        self.lib.pyshelf_result_free(ctypes.byref(res))
        return out

    def close(self):
        assert self.lib.pyshelf_close(self.c, None) == 0


# Results that json.dumps() or repr() cannot write: (source, the modes
# asked, a function of the value, what it returns for the value (JSON))
_DEPTH = "def f(v):\n    n = 0\n    while type(v) is list and v:\n" \
         "        v, n = v[0], n + 1\n    return n\n"
_NO_TEXT = [
    ("l = []\nl.append(l)\nl", (WANT_JSON,),
     "f = lambda v: [len(v), v[0] is v]\n", [1, True]),
    ("deep = []\nfor _ in range(5000):\n    deep = [deep]\ndeep",
     (WANT_JSON, WANT_REPR), _DEPTH, 5000),
    ("x = {'k': [1]}\nx['k'].append(x)\nx", (WANT_JSON,),
     "f = lambda v: [sorted(v), v['k'][1] is v]\n", [["k"], True]),
    ("10**5000", (WANT_JSON, WANT_REPR), "f = lambda v: v == 10**5000\n",
     True),
    ("[1, {'n': 10**5000}]", (WANT_JSON,),
     "f = lambda v: v[1]['n'] == 10**5000\n", True),
    ("{'k': float('nan')}", (WANT_JSON,), "f = repr\n", "{'k': nan}"),
    ("[float('inf'), float('-inf')]", (WANT_JSON,), "f = repr\n",
     "[inf, -inf]"),
    ("class BadRepr:\n    def __repr__(self):\n        raise OSError('no')\n"
     "BadRepr()", (WANT_REPR,), "f = lambda v: type(v).__name__\n",
     "BadRepr"),
    # QA6 2: a SystemExit out of __repr__ ended the backend
    ("class ExitRepr:\n    def __repr__(self):\n        raise SystemExit(3)\n"
     "ExitRepr()", (WANT_REPR,), "f = lambda v: type(v).__name__\n",
     "ExitRepr"),
    # QA6 3: a repr with a NUL in it was "out of memory" in the client
    ("class NulRepr:\n    def __repr__(self):\n        return 'a\\x00b'\n"
     "NulRepr()", (WANT_REPR,), "f = lambda v: type(v).__name__\n",
     "NulRepr"),
]


def _no_text_comes_as_a_handle(c):
    """A value whose text cannot be made (a cycle, deeper than the
    recursion limit, an int over 4300 digits, nan, a __repr__ that raises)
    comes as a handle to it: nothing lost (and nothing printed, which the
    test checks on stderr)."""
    for src, modes, f, want_f in _NO_TEXT:
        for want in modes:
            rc, r = c.exec(src, want)
            assert rc == 0, (src, want, c.err())
            assert r["kind"] == KIND_WRAPPED and r["handle"] > 0, \
                (src, want, r)
            rc, u = c.exec(f, WANT_JSON, "f", [(ARG_HANDLE, r["handle"])])
            assert rc == 0, (src, want, c.err())
            assert (u["kind"], json.loads(u["text"])) == (KIND_TEXT, want_f), \
                (src, want, u)
    # a cycle's repr is Python's own, and text
    rc, r = c.exec("l", WANT_REPR)
    assert (r["kind"], r["text"]) == (KIND_TEXT, "[[...]]")


def _exercise(backend, db):
    """The checks, run in a process of their own (see the test)."""
    lib = _open_lib(_libpath(backend))
    c = Conn(lib, backend, db)
    try:
        rc, r = c.exec("d = {'a': [1, 2.5, None, True], 'é': 'x'}\nd",
                       WANT_JSON)
        assert rc == 0, c.err()
        assert r["kind"] == KIND_TEXT and r["type_name"] == "dict"
        assert json.loads(r["text"]) == {"a": [1, 2.5, None, True],
                                         "é": "x"}
        assert r["text_len"] == len(r["text"].encode())
        rc, r = c.exec("d", WANT_REPR)
        assert r["text"] == "{'a': [1, 2.5, None, True], 'é': 'x'}"
        # not JSON data: a handle, nothing lost; repr works for anything
        for src in ("{1, 2}", "float('nan')", "{1: 'int key'}",
                    "object()", "(1, [2, {3}])"):
            rc, r = c.exec(src, WANT_JSON)
            assert rc == 0 and r["kind"] == KIND_WRAPPED and \
                r["handle"] > 0, (src, r)
        _no_text_comes_as_a_handle(c)
        rc, r = c.exec("float('nan')", WANT_REPR)
        assert (r["kind"], r["text"]) == (KIND_TEXT, "nan")
        rc, r = c.exec("'\\ud800' + '\\x00'", WANT_REPR)
        assert r["text"] == "'\\ud800\\x00'"
        rc, r = c.exec("pyshelf.DirectValue((1, 'two'))", WANT_JSON)
        assert (r["kind"], r["text"]) == (KIND_TEXT, '[1, "two"]')
        rc, r = c.exec("1/0", WANT_JSON)
        assert (r["kind"], r["exc_type"]) == (KIND_EXCINFO,
                                              "ZeroDivisionError")
        # get, both modes
        rc, r = c.get("d", WANT_JSON)
        assert json.loads(r["text"])["é"] == "x"
        rc, r = c.get("nope", WANT_REPR)
        assert rc == E_REMOTE
        assert lib.pyshelf_remote_errcode(c.c) == ERR_NOT_FOUND
        # text arguments
        rc, r = c.exec("def f(a, b):\n    return [a, b]\n", WANT_JSON, "f",
                       [(ARG_LITERAL, "{'k': (1, b'raw'), 2: -3.5}"),
                        (ARG_JSON, '{"n": [null, false]}')])
        assert rc == 0, c.err()
        rc, r = c.exec("def f(a, b):\n    return [a, b]\n", WANT_REPR, "f",
                       [(ARG_LITERAL, "{'k': (1, b'raw'), 2: -3.5}"),
                        (ARG_JSON, '{"n": [null, false]}')])
        assert r["text"] == \
            "[{'k': (1, b'raw'), 2: -3.5}, {'n': [None, False]}]"
        # a literal is not code: a call is refused, nothing runs
        rc, r = c.exec("def f(a):\n    return a\n", WANT_REPR, "f",
                       [(ARG_LITERAL, "__import__('os').getpid()")])
        assert rc == E_REMOTE
        assert lib.pyshelf_remote_errcode(c.c) == ERR_UNPICKLE
        assert "malformed node" in c.err()
        rc, r = c.exec("def f(a):\n    return a\n", WANT_REPR, "f",
                       [(ARG_JSON, '{"a": ')])
        assert rc == E_REMOTE and "Expecting value" in c.err()
        # set_text
        assert lib.pyshelf_set_text(c.c, b"cfg", ARG_JSON,
                                    b'{"lr": 0.1, "tags": ["a"]}') == 0
        assert lib.pyshelf_set_text(c.c, b"lit", ARG_LITERAL,
                                    b"frozenset({1})") != 0   # a call
        assert lib.pyshelf_set_text(c.c, b"lit", ARG_LITERAL,
                                    b"{1, 2}") == 0
    finally:
        c.close()


def test_text_results_and_text_arguments(backend, tmp_path):
    """Run in a child process: a libpyshelf built with AddressSanitizer
    (the CI's sanitizer run) needs its runtime preloaded into Python."""
    import pyshelf
    path = _libpath(backend)
    if not os.path.exists(path):
        pytest.fail("libpyshelf is not built at %r" % path, pytrace=False)
    db = str(tmp_path / "db")
    os.mkdir(db)
    env = dict(os.environ)
    deps = subprocess.run(["ldd", path], capture_output=True,
                          text=True).stdout
    asan = [w for w in deps.split() if "libasan.so" in w and "/" in w]
    if asan:
        env["LD_PRELOAD"] = asan[0]
    r = subprocess.run([sys.executable, os.path.abspath(__file__), backend,
                        db], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "Error" not in r.stderr, r.stderr
    assert r.stdout.strip().endswith("ok"), r.stdout
    ws = pyshelf.spawn(db=db, session="plain", backend=backend)
    try:
        assert ws["cfg"] == {"lr": 0.1, "tags": ["a"]}
        assert ws["lit"] == {1, 2}
        assert ws["d"]["a"] == [1, 2.5, None, True]
    finally:
        ws.close()


if __name__ == "__main__":
    _exercise(sys.argv[1], sys.argv[2])
    print("ok")
