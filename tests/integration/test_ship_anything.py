"""Ship and fetch what a Python user has at hand (issue 18): functions
typed at a REPL, lambdas and closures (by value), classes of the client's
__main__ or of modules the backend cannot import (by value), keyword
arguments, and handles nested inside arguments."""
import os
import subprocess
import sys
import textwrap

import pytest

import pyshelf
from pyshelf import DirectValue, Wrapped

from restarts import MODES, restart, value


def client(script, db, tmp_path):
    """Run script in a new client process (python3 -i reading stdin when
    interactive, else as __main__ from a file); its stdout."""
    env = dict(os.environ)
    env["DB"] = str(db)
    path = tmp_path / "client.py"
    path.write_text(textwrap.dedent(script))
    r = subprocess.run([sys.executable, str(path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_function_typed_at_a_repl(tmp_path):
    """python3 -i: a function typed at the prompt has no source file; it
    ships by value and sees the workspace's globals."""
    db = tmp_path / "db"
    lines = [
        "import os, pyshelf",
        "from pyshelf import DirectValue",
        "ws = pyshelf.spawn(db=os.environ['DB'], session='s')",
        "ws['y'] = 100",
        "def f(x, scale=1):",
        "    return DirectValue((x * 2 + y) * scale)",
        "",
        "print('R1', ws.remote_exec(f, 5).value)",
        "print('R2', ws.remote_exec(f, 5, scale=3).value)",
        "print('R3', ws.remote_exec(f, 6).value)",
        "g = lambda a: DirectValue(a + y)",
        "print('R4', ws.remote_exec(g, 1).value)",
        "ws.close()",
    ]
    env = dict(os.environ, DB=str(db))
    r = subprocess.run([sys.executable, "-i", "-q"], env=env,
                       input="\n".join(lines) + "\n", capture_output=True,
                       text=True, timeout=120)
    out = r.stdout + r.stderr
    assert "R1 110" in out, out
    assert "R2 330" in out, out
    assert "R3 112" in out, out
    assert "R4 101" in out, out
    assert "Traceback" not in out, out


def test_closure_ships_by_value(gw):
    k = 3

    def times(x):
        return DirectValue(x * k)
    assert gw.remote_exec(times, 4).value == 12
    k = 5               # the cell is sent as it is at each call
    assert gw.remote_exec(times, 4).value == 20


@pytest.mark.parametrize("mode", MODES)
def test_main_dataclass_value_travels_by_value(tmp_path, mode):
    """ws['cfg'] = Config(...) with Config a dataclass of the client's
    __main__: the backend gets the class by value; it survives restarts."""
    db = tmp_path / "db"
    out = client("""
        import dataclasses, os, pyshelf
        from pyshelf import DirectValue

        @dataclasses.dataclass
        class Config:
            lr: float
            layers: list

        ws = pyshelf.spawn(db=os.environ["DB"], session="s")
        ws["cfg"] = Config(0.1, [64, 32])
        ws["cfgs"] = [Config(0.2, []), Config(0.3, [1])]
        print("LR", ws.remote_exec("DirectValue(cfg.lr)").value)
        print("SAME", ws.remote_exec(
            "DirectValue(type(cfg) is type(cfgs[0]))").value)
        back = ws["cfg"]
        print("BACK", type(back).__name__, back.layers)
        ws.close()
        """, db, tmp_path)
    assert "LR 0.1" in out and "SAME True" in out, out
    assert "BACK Config [64, 32]" in out, out
    ws = pyshelf.spawn(db=db, session="s")
    ws = restart(ws, mode, db)
    try:
        assert value(ws, "DirectValue((cfg.lr, cfg.layers, "
                         "[c.lr for c in cfgs]))") == \
            (0.1, [64, 32], [0.2, 0.3])
    finally:
        ws.close()


def test_class_of_a_module_the_backend_cannot_import(tmp_path):
    """A value of a module on the client's path only: retried with that
    module's code sent by value."""
    mods = tmp_path / "clientmods"
    mods.mkdir()
    (mods / "clientonly.py").write_text(
        "class Thing:\n"
        "    def __init__(self, n):\n        self.n = n\n"
        "    def twice(self):\n        return self.n * 2\n"
        "def make(n):\n    return Thing(n)\n")
    sys.path.insert(0, str(mods))
    try:
        import clientonly
        db = tmp_path / "db"
        ws = pyshelf.spawn(db=db, session="s")
        try:
            ws["t"] = clientonly.Thing(21)
            assert value(ws, "DirectValue(t.twice())") == 42

            def use(thing, n):
                return DirectValue(thing.twice() + n)
            assert ws.remote_exec(use, clientonly.Thing(5), 1).value == 11
        finally:
            ws.close()
        ws = pyshelf.spawn(db=db, session="s")
        try:
            assert value(ws, "DirectValue(t.twice())") == 42
        finally:
            ws.close()
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("clientonly", None)


def test_keyword_arguments(gw):
    def f(a, b=2, *, c=3, **more):
        return DirectValue((a, b, c, sorted(more.items())))
    assert gw.remote_exec(f, 1).value == (1, 2, 3, [])
    assert gw.remote_exec(f, 1, b=5, c=6, z=7).value == (1, 5, 6, [("z", 7)])
    with pytest.raises(TypeError):
        gw.remote_exec("x = 1", k=1)
    err = gw.remote_exec(f, 1, a=2)      # the function's own TypeError
    assert err.exc_type == "TypeError"


def test_handles_nested_in_arguments(gw):
    """A Wrapped inside an argument (a list, a dict, a keyword argument)
    is the handle's object itself in the backend."""
    h1 = gw.remote_exec("[1, 2]")
    h2 = gw.remote_exec("[3]")
    assert isinstance(h1, Wrapped)

    def total(xs, d, extra=()):
        xs[0].append(100)            # the object itself, not a copy
        return DirectValue(sum(sum(x) for x in xs) + sum(d["k"]) +
                           sum(extra))
    assert gw.remote_exec(total, [h1, h2], {"k": h2}, extra=h1).value == \
        (103 + 3) + 3 + 103

    def get(x):
        return DirectValue(x)
    assert gw.remote_exec(get, h1).value == [1, 2, 100]
    gw["pair"] = {"a": h1, "b": [h2]}
    assert value(gw, "DirectValue(pair['b'][0])") == [3]


def test_handle_of_another_session_nested_is_refused(tmp_path):
    a = pyshelf.spawn(db=tmp_path / "db", session="a")
    b = pyshelf.spawn(db=tmp_path / "db", session="b")
    try:
        h = a.remote_exec("[1]")

        def f(x):
            return DirectValue(x)
        with pytest.raises(ValueError, match="not a handle of this"):
            b.remote_exec(f, [h])
        assert b.remote_exec(f, [1]).value == [1]
    finally:
        a.close()
        b.close()


def test_default_that_is_a_main_dataclass_instance(tmp_path):
    """A function of the client's __main__ shipped as its source, whose
    default is an instance of a __main__ dataclass and whose annotation
    is that class: the default travels by value (as an argument would),
    the annotation is not evaluated in the backend."""
    db = tmp_path / "db"
    out = client("""
        import dataclasses, os, pyshelf
        from pyshelf import DirectValue

        @dataclasses.dataclass
        class Config:
            lr: float = 0.5

        DEFAULT = Config(0.1)

        def train(steps: int, cfg: Config = DEFAULT) -> Config:
            return DirectValue((steps, cfg.lr, type(cfg).__name__))

        ws = pyshelf.spawn(db=os.environ["DB"], session="s")
        ws["DEFAULT"] = "not a Config"
        print("R1", ws.remote_exec(train, 3).value)
        train.__defaults__ = (Config(0.2),)
        print("R2", ws.remote_exec(train, 4).value)
        print("R3", ws.remote_exec(train, 5, Config(0.3)).value)
        ws.close()
        """, db, tmp_path)
    assert "R1 (3, 0.1, 'Config')" in out, out
    assert "R2 (4, 0.2, 'Config')" in out, out
    assert "R3 (5, 0.3, 'Config')" in out, out
