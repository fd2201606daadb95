"""Handles on the client: one Wrapped per id, release of collected ones,
ws.handles(), ws.handle(id), ws.wrap(name)."""
import gc
import pickle

import pytest

import pyshelf
from pyshelf import DirectValue, Wrapped, WrappedExcinfo


def make_list():
    return [1, 2, 3]


def live_ids(ws):
    return {w.id for w in ws.handles()}


def forget(gw, w):
    """Drop the client object of w without queueing a release: the handle
    stays in the backend, as a new client process would find it."""
    gw._handles.live.pop(w.id)
    w._owner = None


def length(x):
    return DirectValue(len(x))


def test_wrapped_basics(gw):
    w = gw.remote_exec(make_list)
    assert isinstance(w, Wrapped)
    assert isinstance(w.id, int)
    assert w.type_name == "list"
    assert repr(w) == "<Wrapped %d list>" % w.id
    assert type(w).__module__ == "pyshelf"
    assert Wrapped.__module__ == WrappedExcinfo.__module__ == "pyshelf"
    w2 = pickle.loads(pickle.dumps(w))
    assert (w2.id, w2.type_name) == (w.id, w.type_name)


def test_same_id_same_object(gw):
    gw.remote_exec("shared = []")
    a = gw.wrap("shared")
    b = gw.wrap("shared")
    assert a.id == b.id
    assert a is b
    assert gw.handle(a.id) is a


def test_collected_wrapped_is_released(gw):
    w = gw.remote_exec(make_list)
    hid = w.id
    assert hid in live_ids(gw)
    del w
    gc.collect()
    gw.ping()  # any request; the release goes out first
    assert hid not in live_ids(gw)


def test_releases_are_batched(gw):
    ws = [gw.remote_exec(make_list) for _ in range(50)]
    ids = {w.id for w in ws}
    assert ids <= live_ids(gw)
    del ws
    gc.collect()
    assert len(gw._handles.pending) == 50
    gw.sync()
    assert not gw._handles.pending
    assert not (ids & live_ids(gw))


def test_handle_still_held_is_not_released(gw):
    w = gw.remote_exec(make_list)
    other = gw.remote_exec(make_list)
    del other
    gc.collect()
    assert w.id in live_ids(gw)
    assert gw.remote_exec(length, w).value == 3


def test_handles_lists_live_ones(gw):
    w = gw.remote_exec(make_list)
    hs = gw.handles()
    assert all(isinstance(h, Wrapped) for h in hs)
    assert w in hs  # the same client object
    assert [h for h in hs if h.id == w.id][0].type_name == "list"


def test_handle_by_id(gw):
    w = gw.remote_exec(make_list)
    assert gw.handle(w.id) is w
    with pytest.raises(KeyError):
        gw.handle(987654321)


def test_handle_of_a_forgotten_object_comes_back(gw):
    w = gw.remote_exec(make_list)
    hid = w.id
    # Keep the handle alive in the backend but drop the client object
    # without queueing a release: as a new client process would see it.
    forget(gw, w)
    del w
    again = gw.handle(hid)
    assert again.id == hid and again.type_name == "list"


def test_found_handles_are_not_released_by_dropping_them(gw):
    """ws.handles() and ws.handle(id) find handles this client did not get
    (every handle, for a client attached after a restart); dropping the
    Wrapped objects they return must not release them: listing the
    handles must not destroy them."""
    w = gw.remote_exec(make_list)
    hid = w.id
    forget(gw, w)
    del w
    assert hid in [h.id for h in gw.handles()]   # dropped at once
    gc.collect()
    gw.ping()
    assert hid in live_ids(gw)
    assert not gw._handles.pending
    again = gw.handle(hid)
    del again
    gc.collect()
    gw.ping()
    assert hid in live_ids(gw)
    assert gw.remote_exec(length, gw.handle(hid)).value == 3


def test_release(gw):
    a, b, c = (gw.remote_exec(make_list) for _ in range(3))
    gw.release(a, b.id, 424242)       # a Wrapped, an id, one not live
    ids = live_ids(gw)
    assert a.id not in ids and b.id not in ids and c.id in ids
    with pytest.raises(pyshelf.UnknownHandleError):
        gw.remote_exec(length, a)
    del a, b
    gc.collect()
    assert not gw._handles.pending    # released once, not again
    assert gw.remote_exec(length, c).value == 3
    # a found handle: released by release(), not by dropping it
    hid = c.id
    forget(gw, c)
    del c
    gw.release(gw.handle(hid))
    assert hid not in live_ids(gw)
    with pytest.raises(KeyError):
        gw.handle(hid)


def test_release_of_another_sessions_handle_is_refused(tmp_path):
    """QA5 1: b.release(ha) released b's own handle of the same id."""
    a = pyshelf.spawn(db=tmp_path / "db", session="a")
    b = pyshelf.spawn(db=tmp_path / "db", session="b")
    try:
        ha = a.remote_exec("['of a']")
        hb = b.remote_exec("['of b']")
        assert ha.id == hb.id           # ids are per session
        keep = b.remote_exec(make_list)
        with pytest.raises(pyshelf.ForeignHandleError,
                           match="not a handle of this") as got:
            b.release(keep, ha)
        assert isinstance(got.value, ValueError)
        assert type(got.value).__module__ == "pyshelf"
        with pytest.raises(pyshelf.ForeignHandleError,
                           match="the value for 'k'"):
            b["k"] = ha                 # said as the value, not "argument 2"
        assert "k" not in b
        # nothing was released, not even the handle of b's own before it
        assert {hb.id, keep.id} <= live_ids(b)
        assert b.remote_exec(length, hb).value == 1
        assert b.remote_exec(length, keep).value == 3
        assert a.remote_exec(length, ha).value == 1
        b.release(hb.id)                # an id is this session's by meaning
        assert hb.id not in live_ids(b)
        assert ha.id in live_ids(a)
    finally:
        a.close()
        b.close()


def test_wrap_global(gw):
    gw.remote_exec("import threading\nlk = threading.Lock()")
    w = gw.wrap("lk")
    assert isinstance(w, Wrapped)
    assert "lock" in w.type_name

    def locked(lock):
        return DirectValue(lock.locked())
    assert gw.remote_exec(locked, w).value is False
    with pytest.raises(KeyError):
        gw.wrap("no_such_global")


def test_foreign_wrapped_is_refused(gw, tmp_path, backend):
    with pyshelf.spawn(db=tmp_path / "db2", session="other",
                       backend=backend) as other:
        w = other.remote_exec(make_list)

        def ident(x):
            return x
        with pytest.raises(ValueError):
            gw.remote_exec(ident, w)
    with pytest.raises(ValueError):
        gw.remote_exec(ident, Wrapped(1, "list"))


def test_unknown_handle_error(gw):
    with pytest.raises(pyshelf.UnknownHandleError) as ei:
        gw._conn.exec("def f(x):\n    return x\n", "f", [424242])
    e = ei.value
    assert isinstance(e, pyshelf.RemoteError) and isinstance(e, KeyError)
    assert e.code == 8 and e.code_name == "UNKNOWN_HANDLE"
    assert gw.remote_exec("DirectValue(1)").value == 1


def test_excinfo_identity_and_kind(gw):
    def boom():
        raise RuntimeError("x")
    e = gw.remote_exec(boom)
    assert isinstance(e, WrappedExcinfo)
    assert gw.handle(e.id) is e
