"""What can be shipped as a function, and the clear errors for what cannot."""
import pytest

import pyshelf
from pyshelf import DirectValue


def fact(n):
    return 1 if n < 2 else n * fact(n - 1)


def test_recursive_function(gw):
    assert gw.remote_exec(fact, 10, want_value=True).value == 3628800


def test_closure_ships_by_value(gw):
    """A closure has no source that runs alone: it ships by value, its
    cells as they are at the call."""
    k = 5

    def inner():
        return DirectValue(k)
    assert gw.remote_exec(inner).value == 5


def test_traceback_of_a_function_sent_by_value_starts_at_it(gw):
    """QA5 13: the shim that calls a function sent by value showed as the
    first frame of its traceback (<pyshelf:_pyshelf_by_value:...>)."""
    import os
    k = 0

    def inner():
        return 1 // k                     # the line the traceback names
    err = gw.remote_exec(inner)
    assert isinstance(err, pyshelf.WrappedExcinfo)
    assert err.exc_type == "ZeroDivisionError"
    assert "_pyshelf_by_value" not in err.traceback, err.traceback
    line = inner.__code__.co_firstlineno + 1
    assert 'File "%s", line %d, in inner' % (os.path.abspath(__file__),
                                             line) in err.traceback, \
        err.traceback


def test_bound_method_is_refused_clearly(gw):
    class C:
        def m(self):
            return DirectValue(1)
    with pytest.raises(TypeError) as ei:
        gw.remote_exec(C().m)
    assert "method" in str(ei.value)


def test_nested_function_without_free_variables_ships(gw):
    def local(a, b=10):
        return DirectValue(a * b)
    assert gw.remote_exec(local, 4).value == 40


def make_generator():
    return (i for i in range(3))


def make_list():
    return [1, 2]


def test_result_reply_says_when_it_cannot_be_persisted(gw):
    g = gw.remote_exec(make_generator)
    assert g.type_name == "generator"
    assert g.volatile is not None and "pickle" in g.volatile
    assert gw.remote_exec(make_list).volatile is None


# --- defaults and annotations of a function shipped as its source ----------
# The backend runs the def again, in the workspace: it must not evaluate the
# default values or the annotations there (a client name, or a workspace
# global of the same name), but take the client's current ones.

K = 5
K_KW = 7


class Config:
    """A class of this module: the backend cannot import it (by value)."""

    def __init__(self, n):
        self.n = n


def make_adder(k):
    def inner(x, k=k):             # the loop-capture idiom
        return DirectValue(x + k)
    return inner


def test_default_from_an_enclosing_function(gw):
    """k=k names make_adder's local: no such name in the backend."""
    assert make_adder(1)(0).value == 1
    assert gw.remote_exec(make_adder(1), 0).value == 1
    assert gw.remote_exec(make_adder(2), 0).value == 2


def test_default_is_not_a_workspace_global_of_the_same_name(gw):
    """The silent case: a workspace global k must not stand in for it."""
    gw["k"] = 1000
    for k in (1, 2):
        assert gw.remote_exec(make_adder(k), 0).value == k
    assert gw.remote_exec("DirectValue(k)").value == 1000


def add_K(x, k=K):
    return DirectValue(x + k)


def test_default_from_a_client_global(gw):
    assert gw.remote_exec(add_K, 0).value == 5
    gw["K"] = 1000
    assert gw.remote_exec(add_K, 0).value == 5
    assert gw.remote_exec(add_K, 0, k=1).value == 1
    assert gw.remote_exec(add_K, 0, 2).value == 2


def top(x, k=1):
    return DirectValue(x + k)


def test_changed_defaults_are_used_at_the_next_call(gw):
    """The source is cached per code object; the defaults go every call."""
    saved = top.__defaults__
    try:
        assert gw.remote_exec(top, 0).value == 1
        top.__defaults__ = (50,)
        assert gw.remote_exec(top, 0).value == 50
        top.__defaults__ = (7,)
        assert gw.remote_exec(top, 0).value == 7
        top.__defaults__ = None         # none at all: k is required
        err = gw.remote_exec(top, 0)
        assert err.exc_type == "TypeError" and "'k'" in err.message, err
    finally:
        top.__defaults__ = saved


def bare(x, k):
    return DirectValue(x + k)


def test_defaults_given_to_a_def_that_has_none(gw):
    """__defaults__ set on the client on a def without any."""
    try:
        bare.__defaults__ = (4,)
        assert gw.remote_exec(bare, 1).value == 5
    finally:
        bare.__defaults__ = None
    assert gw.remote_exec(bare, 1, 2).value == 3


def kw_only(x, *, k=K_KW, m):
    return DirectValue((x, k, m))


def test_keyword_only_defaults(gw):
    saved = kw_only.__kwdefaults__
    try:
        gw["K_KW"] = 1000
        assert gw.remote_exec(kw_only, 1, m=2).value == (1, 7, 2)
        kw_only.__kwdefaults__ = {"k": 8, "m": 9}
        assert gw.remote_exec(kw_only, 1).value == (1, 8, 9)
        kw_only.__kwdefaults__ = None
        err = gw.remote_exec(kw_only, 1, m=2)
        assert err.exc_type == "TypeError" and "'k'" in err.message, err
    finally:
        kw_only.__kwdefaults__ = saved


def make_appender(h):
    def append(x, lst=h):           # a handle as the default
        lst.append(x)
        return DirectValue(len(lst))
    return append


def test_default_that_is_a_handle(gw):
    """A Wrapped default is the handle's object itself, as an argument."""
    h = gw.remote_exec("[1, 2]")
    assert gw.remote_exec(make_appender(h), 3).value == 3
    assert gw.remote_exec(make_appender(h), 4).value == 4

    def get(x):
        return DirectValue(x)
    assert gw.remote_exec(get, h).value == [1, 2, 3, 4]


def annotated(x: Config, *args: Config, k: "Config" = None,
              **kw: Config) -> Config:
    # its own name: bound in the workspace as a recursive function is
    return DirectValue((x.n, sorted(annotated.__annotations__),
                        annotated.__annotations__["x"].__name__))


def test_annotations_are_not_evaluated_in_the_backend(gw):
    """Config does not exist in the backend: the call works, and the
    function has the client's annotations (Config by value)."""
    assert gw.remote_exec(annotated, Config(3)).value == \
        (3, ["args", "k", "kw", "return", "x"], "Config")


LOCK = __import__("threading").Lock()


def locked(x: LOCK, y: int) -> LOCK:
    return DirectValue((x, sorted(locked.__annotations__)))


def test_an_annotation_that_cannot_be_pickled_is_left_out(gw):
    """An annotation that cannot be pickled does not fail the call."""
    assert gw.remote_exec(locked, 1, 2).value == (1, ["y"])


STEP = 1


def walk(n, acc=0, step=STEP):
    return acc if n <= 0 else walk(n - step, acc + n)


def test_recursive_call_sees_the_defaults(gw):
    """walk calls itself by name, without step: the global it finds has
    the client's defaults too, not the workspace's STEP."""
    gw["STEP"] = 2
    assert gw.remote_exec(walk, 4, want_value=True).value == 10


def raises_with_defaults(key,
                         table={"a": 1},
                         *, k: Config = K):
    x = k
    return table[key] + x                 # the line the traceback names


def test_traceback_lines_with_defaults_and_annotations(gw):
    """Stripping the def's defaults keeps the body's file and lines."""
    err = gw.remote_exec(raises_with_defaults, "b")
    assert err.exc_type == "KeyError", err
    src, first = __import__("inspect").getsourcelines(raises_with_defaults)
    n = next(i for i, line in enumerate(src) if "the line" in line)
    expect = '  File "%s", line %d, in raises_with_defaults\n    %s\n' % (
        __file__, first + n, src[n].strip())
    assert expect in err.traceback, err.traceback
    assert gw.remote_exec(raises_with_defaults, "a", want_value=True) \
        .value == 6


def test_closure_defaults_by_value_unchanged(gw):
    """A closure (by value, cloudpickle) keeps its defaults as before."""
    base = 10

    def inner(x, k=K):
        return DirectValue(x + k + base)
    gw["K"] = 1000
    assert gw.remote_exec(inner, 1).value == 16
    inner.__defaults__ = (2,)
    assert gw.remote_exec(inner, 1).value == 13


def log_to(msg, lock=LOCK):
    with lock:
        return DirectValue(msg)


def test_a_default_that_cannot_be_pickled_is_the_backends(gw):
    """A default that cannot travel (a lock) does not fail the call: the
    function is defined as its def is written, the default evaluated in
    the backend, as it was before defaults travelled."""
    r = gw.remote_exec(log_to, "x")
    assert isinstance(r, pyshelf.WrappedExcinfo)
    assert r.exc_type == "NameError" and "LOCK" in r.message
    gw.remote_exec("import threading\nLOCK = threading.Lock()")
    assert gw.remote_exec(log_to, "x").value == "x"
    assert gw.remote_exec(log_to, "y", lock=gw.wrap("LOCK")).value == "y"
