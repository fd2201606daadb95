"""remote_exec through the Python client: functions and blocks, arguments
by pickle and by handle, the three result kinds, big and unicode values."""
import inspect
import os
import pickle
import sys
import types

import pytest

import pyshelf
from pyshelf import DirectValue, Wrapped, WrappedExcinfo


def echo(x):
    return DirectValue(x)


def test_block_has_repl_semantics(gw):
    assert isinstance(gw.remote_exec("x = 20"), DirectValue)
    r = gw.remote_exec("x + 1")
    assert isinstance(r, Wrapped) and not isinstance(r, WrappedExcinfo)
    assert r.type_name == "int"
    assert gw.remote_exec("DirectValue(x + 22)").value == 42
    assert gw.remote_exec("x * 2", want_value=True).value == 40


def test_block_sees_and_sets_globals(gw):
    gw.remote_exec("import math\nr = math.sqrt(16)")
    assert gw["r"] == 4.0

    def use_global():
        return DirectValue(r + 1)  # noqa: F821  (a workspace global)
    assert gw.remote_exec(use_global).value == 5.0


def test_function_with_pickled_args(gw):
    def add(a, b, *rest):
        return DirectValue(a + b + sum(rest))
    assert gw.remote_exec(add, 1, 2).value == 3
    assert gw.remote_exec(add, 1, 2, 3, 4).value == 10


def test_none_comes_back_as_direct_value(gw):
    def nothing():
        pass
    r = gw.remote_exec(nothing)
    assert isinstance(r, DirectValue) and r.value is None


def test_want_value(gw):
    def make():
        return [1, 2, 3]
    assert isinstance(gw.remote_exec(make), Wrapped)
    r = gw.remote_exec(make, want_value=True)
    assert isinstance(r, DirectValue) and r.value == [1, 2, 3]


def test_wrapped_goes_back_as_the_object(gw):
    def make():
        return {"n": 1}

    def bump(d, k):
        d[k] += 1
        return d

    def get(d):
        return DirectValue(d)
    w = gw.remote_exec(make)
    assert isinstance(w, Wrapped) and w.type_name == "dict"
    assert isinstance(w.id, int)
    w2 = gw.remote_exec(bump, w, "n")
    assert w2 is w  # same backend object, same handle, same client object
    assert gw.remote_exec(get, w).value == {"n": 2}


def test_mixed_handle_and_pickle_args(gw):
    def make():
        return [10, 20]

    def pick(lst, i):
        return DirectValue(lst[i])
    w = gw.remote_exec(make)
    assert gw.remote_exec(pick, w, 1).value == 20


def test_direct_value_pickles_as_pyshelf_class(gw):
    r = gw.remote_exec(echo, DirectValue(5))
    assert isinstance(r.value, DirectValue)
    assert r.value.value == 5
    data = pickle.dumps(DirectValue([1]))
    assert b"pyshelf" in data and b"DirectValue" in data
    assert pickle.loads(data).value == [1]


def test_lambda_and_local_function_args_use_cloudpickle(gw):
    def apply(f, x):
        return DirectValue(f(x))
    assert gw.remote_exec(apply, lambda v: v * 3, 5).value == 15

    def local_inc(v):
        return v + 1
    assert gw.remote_exec(apply, local_inc, 5).value == 6


def test_unicode_round_trip(gw):
    s = "héllo wörld ✓ 🐍 \u0000 \udc80".encode("utf-8", "surrogatepass") \
        .decode("utf-8", "surrogatepass")
    assert gw.remote_exec(echo, s).value == s
    gw.remote_exec("u = 'ünïcödé ✓ 🐍'")
    assert gw["u"] == "ünïcödé ✓ 🐍"

    def ret_unicode_src():
        return DirectValue("日本語のテキスト")
    assert gw.remote_exec(ret_unicode_src).value == "日本語のテキスト"


def test_ten_megabyte_values(gw):
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    r = gw.remote_exec(echo, big)
    assert isinstance(r, DirectValue) and r.value == big

    def size(b):
        return DirectValue(len(b))
    assert gw.remote_exec(size, big).value == len(big)
    gw["big"] = big
    assert gw["big"] == big


def test_block_with_args_is_a_type_error(gw):
    with pytest.raises(TypeError):
        gw.remote_exec("x = 1", 2)


def test_lambda_ships_by_value(gw):
    """A lambda has no source to ship: it goes by value, and runs with
    the workspace's globals."""
    gw["base"] = 10
    assert gw.remote_exec(lambda x: DirectValue(base + x), 5).value == 15  # noqa: F821


def test_not_a_function(gw):
    with pytest.raises(TypeError):
        gw.remote_exec(42)


def test_decorated_function_ships_without_its_decorator(gw):
    def deco(f):
        return f

    @deco
    def decorated():
        return DirectValue("plain")
    assert gw.remote_exec(decorated).value == "plain"


def test_source_is_cached_per_code_object(gw, monkeypatch):
    calls = []
    real = inspect.getsource

    def counting(obj):
        calls.append(obj)
        return real(obj)
    monkeypatch.setattr(inspect, "getsource", counting)

    def cached_fn(i):
        return DirectValue(i)
    for i in range(5):
        assert gw.remote_exec(cached_fn, i).value == i
    assert len(calls) == 1


class _Shipper:
    def method(self):
        return DirectValue("from the class")


def test_bound_method_is_refused_after_its_function_shipped(gw):
    # the plain function is shipped and its source cached; the bound
    # method shares its code object, and is still refused
    assert gw.remote_exec(_Shipper.method, None).value == "from the class"
    with pytest.raises(TypeError, match="bound method"):
        gw.remote_exec(_Shipper().method)


def test_call_ids_are_unique_and_new_in_a_forked_child(gw):
    def nothing():
        pass
    ids = set()
    for _ in range(50):
        gw.remote_exec(nothing)
        assert len(gw.last_call_id) == 32
        ids.add(gw.last_call_id)
    assert len(ids) == 50
    # a forked child draws its own ids: none of its parent's, neither the
    # next ones nor the random half they share
    from pyshelf import _workspace
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, b"".join(_workspace._new_call_id() for _ in range(3)))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    child = [got[i:i + 16] for i in range(0, 48, 16)]
    mine = [_workspace._new_call_id() for _ in range(3)]
    assert len(set(child)) == 3
    assert not set(child) & set(mine)
    assert {c[8:] for c in child} != {m[8:] for m in mine}
    assert len({m[8:] for m in mine}) == 1 and \
        mine[0][8:] == bytes.fromhex(gw.last_call_id)[8:]


def test_exception_result(gw):
    def boom():
        raise KeyError("missing")
    r = gw.remote_exec(boom)
    assert isinstance(r, WrappedExcinfo) and isinstance(r, Wrapped)
    assert r.exc_type == "KeyError"
    assert "missing" in r.message
    assert repr(r).startswith("<WrappedExcinfo %d KeyError" % r.id)

    def exc_type_name(excinfo):
        return DirectValue(excinfo[0].__name__)
    assert gw.remote_exec(exc_type_name, r).value == "KeyError"


def test_syntax_error_is_reported(gw):
    try:
        r = gw.remote_exec("def broken(:\n    pass")
    except pyshelf.RemoteError:
        return
    assert isinstance(r, WrappedExcinfo)
    assert r.exc_type == "SyntaxError"
    # the workspace goes on
    assert gw.remote_exec("DirectValue(1)").value == 1


def test_result_that_cannot_be_pickled_by_value(gw):
    with pytest.raises(pyshelf.NotPicklableError) as ei:
        gw.remote_exec("import threading\nthreading.Lock()", want_value=True)
    assert isinstance(ei.value, TypeError)
    assert gw.remote_exec("DirectValue(2)").value == 2


def test_argument_that_cannot_be_unpickled_in_the_backend(gw):
    class OnlyHere:  # a local class: cloudpickle ships it by value
        pass
    r = gw.remote_exec(echo, OnlyHere())
    assert isinstance(r, DirectValue)
    # a class pickled by reference to a module the backend does not have
    mod = types.ModuleType("pyshelf_test_client_only")

    class ClientOnly:
        pass
    ClientOnly.__module__ = mod.__name__
    ClientOnly.__qualname__ = "ClientOnly"
    mod.ClientOnly = ClientOnly
    sys.modules[mod.__name__] = mod
    try:
        # the backend cannot import it: sent again, the module by value
        r = gw.remote_exec(echo, ClientOnly())
        assert type(r.value).__name__ == "ClientOnly"
    finally:
        del sys.modules[mod.__name__]

    class Broken:     # pickles, but its pickle fails to load anywhere
        def __reduce__(self):
            return (int, ("not a number",))
    with pytest.raises(pyshelf.RemoteError) as ei:
        gw.remote_exec(echo, Broken())
    assert ei.value.code_name == "UNPICKLE"
    assert ei.value.code == 9
    assert gw.remote_exec("DirectValue(3)").value == 3


def test_client_side_unpicklable_argument(gw):
    import threading
    with pytest.raises(pyshelf.NotPicklableError) as ei:
        gw.remote_exec(echo, threading.Lock())
    assert isinstance(ei.value, TypeError)
    assert "argument 1" in str(ei.value)


def test_timeout_interrupts_in_the_backend(gw):
    import time
    t0 = time.monotonic()
    r = gw.remote_exec("while True:\n    pass", timeout=0.3)
    assert isinstance(r, WrappedExcinfo)
    assert r.exc_type == "TimeoutError"
    # the loop never ends by itself: returning at all is the proof; the
    # bound only tells a hang apart, however busy the machine
    assert time.monotonic() - t0 < 120
    assert gw.remote_exec("DirectValue('alive')").value == "alive"


def test_bad_timeout(gw):
    with pytest.raises(ValueError):
        gw.remote_exec("1", timeout=0)
    with pytest.raises(ValueError):
        gw.remote_exec("1", timeout=-1)
