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
