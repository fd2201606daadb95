"""The Workspace as a MutableMapping over the workspace's globals."""
import collections.abc
import threading

import pytest

import pyshelf
from pyshelf import DirectValue, Wrapped


def test_is_a_mutable_mapping(gw):
    assert isinstance(gw, collections.abc.MutableMapping)


def test_set_get_del(gw):
    gw["a"] = {"x": [1, 2, (3, 4)], "s": "ü"}
    assert gw["a"] == {"x": [1, 2, (3, 4)], "s": "ü"}
    assert "a" in gw
    assert "nope" not in gw
    assert 1 not in gw
    del gw["a"]
    assert "a" not in gw
    with pytest.raises(KeyError):
        gw["a"]
    with pytest.raises(KeyError):
        del gw["a"]


def test_len_and_iteration(gw):
    for i in range(5):
        gw["k%d" % i] = i
    assert len(gw) == 5
    assert sorted(gw) == ["k%d" % i for i in range(5)]
    assert dict(gw.items()) == {"k%d" % i: i for i in range(5)}
    assert gw.get("k3") == 3
    assert gw.get("missing", "dflt") == "dflt"


def test_globals_are_shared_with_shipped_code(gw):
    gw["n"] = 41
    assert gw.remote_exec("DirectValue(n + 1)").value == 42
    gw.remote_exec("m = n * 2")
    assert gw["m"] == 82


def test_unpicklable_on_the_client(gw):
    with pytest.raises(pyshelf.NotPicklableError) as ei:
        gw["lock"] = threading.Lock()
    assert isinstance(ei.value, TypeError)
    assert "cannot be pickled" in str(ei.value)
    assert "lock" not in gw


def test_unpicklable_in_the_backend_points_to_wrap(gw):
    gw.remote_exec("import threading\nlk = threading.Lock()")
    with pytest.raises(pyshelf.NotPicklableError) as ei:
        gw["lk"]
    assert isinstance(ei.value, TypeError)
    assert isinstance(ei.value, pyshelf.Error)
    assert "ws.wrap('lk')" in str(ei.value)
    assert isinstance(gw.wrap("lk"), Wrapped)


def test_non_str_keys(gw):
    with pytest.raises(TypeError):
        gw[1] = 2
    with pytest.raises(KeyError):
        gw[1]


def test_set_a_wrapped_binds_the_object(gw):
    def make():
        return [5, 6]
    w = gw.remote_exec(make)
    gw["bound"] = w
    assert gw["bound"] == [5, 6]

    def same(a):
        return DirectValue(a is bound)  # noqa: F821  (workspace global)
    assert gw.remote_exec(same, w).value is True


def test_clear(gw):
    gw["a"] = 1
    gw.remote_exec("import threading\nlk = threading.Lock()")
    gw.clear()
    assert len(gw) == 0


def test_workspaces_compare_as_mappings(gw):
    """Mapping equality, as shelve.Shelf (was identity): see
    test_mapping_meaning.py for two workspaces."""
    assert gw == gw and gw == {}
    gw["a"] = 1
    assert gw != {} and gw == {"a": 1}
    with pytest.raises(TypeError):
        hash(gw)
