"""Pickling entries to and from the store: the plain pickler and the
cloudpickle fallback (_Dumper), the stdlib pickler's module reducer, and
unpickling an entry's payload (load_entry) or a client's value.

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import copyreg
import importlib
import io
import pickle
import sys
import types

import _pyshelfd as _s

from _pyshelf_values import FLAG_OOB, PICKLER_CLOUDPICKLE

WS = None   # the Workspace: set by _pyshelf_backend.init()


# --- pickling --------------------------------------------------------------

_cloudpickle = None
_tblib_ready = False


class _TbFrame:
    """What tblib.Frame reads of a frame, with f_globals cut down to the
    two names it keeps, read with dict's own methods: tblib iterates
    f_globals.items(), which on the workspace's Namespace loads every
    global, so that pickling a traceback would load (and, for a damaged
    record, fail on) entries it never keeps."""
    __slots__ = ("f_globals", "f_code", "f_lineno")

    def __init__(self, frame):
        g = frame.f_globals
        self.f_globals = {k: dict.__getitem__(g, k)
                          for k in ("__file__", "__name__")
                          if dict.__contains__(g, k)}
        self.f_code = frame.f_code
        self.f_lineno = frame.f_lineno


class _Tb:
    """A traceback entry for tblib.Traceback, its frame a _TbFrame."""
    __slots__ = ("tb_frame", "tb_lineno", "tb_next")

    def __init__(self, tb):
        self.tb_frame = _TbFrame(tb.tb_frame)
        self.tb_lineno = tb.tb_lineno
        self.tb_next = None


def _pickle_traceback(tb):
    """tblib's pickle_traceback, over _Tb entries (copyreg reducer)."""
    from tblib import Frame, Traceback
    from tblib.pickling_support import unpickle_traceback
    head = _Tb(tb)
    prev, nxt = head, tb.tb_next
    while nxt is not None:   # a loop: deep tracebacks do not recurse
        prev.tb_next = _Tb(nxt)
        prev, nxt = prev.tb_next, nxt.tb_next
    return unpickle_traceback, (Frame(head.tb_frame), head.tb_lineno,
                                head.tb_next and Traceback(head.tb_next))


def _tblib():
    """tblib's picklers for tracebacks, installed on first use (the
    traceback's own through _pickle_traceback)."""
    global _tblib_ready
    if not _tblib_ready:
        import tblib.pickling_support
        tblib.pickling_support.install()
        copyreg.pickle(types.TracebackType, _pickle_traceback)
        _tblib_ready = True


def _cp():
    """cloudpickle, imported on first use (keeps resume fast)."""
    global _cloudpickle
    _tblib()
    if _cloudpickle is None:
        import cloudpickle
        _cloudpickle = cloudpickle
    return _cloudpickle


def _rebuild_ws_function(code, name, defaults, closure, kwdefaults,
                         qualname, fdict, annotations, doc, module):
    """Recreate a function defined by shipped code, bound to the workspace's
    own globals (not a copy of them, as cloudpickle would make)."""
    f = types.FunctionType(code, WS.ns, name, defaults, closure)
    f.__kwdefaults__ = kwdefaults
    f.__qualname__ = qualname
    f.__annotations__ = annotations or {}
    f.__doc__ = doc
    f.__module__ = module
    if fdict:
        f.__dict__.update(fdict)
    return f


_rebuild_ws_function.__module__ = "_pyshelf_backend"


# --- numpy views -----------------------------------------------------------
#
# numpy pickles a view (an array whose .base is another array) as a copy of
# its elements, so after a restart `v = a[2:5]` no longer shows changes to
# `a`.  Arrays of the workspace (globals, handles) that share one block of
# memory are stored as one of them, the primary (the largest; it must
# export a contiguous buffer), pickled as numpy pickles it, and the others
# that lie within it as a persistent reference to the primary plus their
# byte offset, shape, strides and dtype (_rebuild_view): after a restart
# they are views of the loaded primary again, wherever they are held (a
# global, a handle, inside a dict).  A view whose memory no such array
# holds is stored as a copy, as numpy does; the client is told once per
# view when that breaks sharing (its memory is held by something else too)
# (docs/STORAGE.md, section 11).  Arrays of dtype object are kept the same
# way, their items pickled in-band with the primary, which is pickled in
# two steps (_reduce_object_array) so that an item that holds a view of it
# finds it built; a view over Python objects is rebuilt only where each
# of its object slots is one of the primary's and its other bytes overlap
# none (_object_layout_ok), checked when stored and again when loaded: a
# pointer read from any other bytes would crash the interpreter.  A
# structured dtype with an object field is no primary: views of such an
# array are copies, as before.

_VIEW_WARNED = {}      # id(view) -> weakref to it: told about already
_PRIMARIES = {}        # id(memory root) -> (root, [arrays of the workspace])
_PRIMARIES_BUILT = []  # [True] once built in this checkpoint


def _views_reset():
    """Forget the arrays of the workspace (a new checkpoint begins)."""
    _PRIMARIES.clear()
    _PRIMARIES_BUILT.clear()


def _rebuild_view(base, offset, shape, strides, dtype, writeable):
    """A view of base's memory (see _reduce_view); raises
    pickle.UnpicklingError for a view over, or of, Python objects whose
    slots do not match (a damaged record)."""
    import numpy
    dtype = numpy.dtype(dtype)
    bdt = getattr(base, "dtype", None) if type(base) is numpy.ndarray \
        else None
    if dtype.hasobject or (bdt is not None and bdt.hasobject):
        if bdt is None or not bdt.hasobject or \
                not _object_layout_ok(bdt, dtype, offset, strides):
            raise pickle.UnpicklingError(
                "a numpy view of dtype %s does not lie on the object slots "
                "of the array it views (%s): the record is damaged"
                % (dtype, bdt if bdt is not None else type(base).__name__))
    v = numpy.ndarray(shape, dtype, buffer=base, offset=offset,
                      strides=strides)
    if not writeable:
        v.flags.writeable = False
    return v


def _object_slots(dt, at=0, out=None):
    """The byte offsets, within one item of dtype dt, of its object
    pointers (fields and subarrays followed)."""
    if out is None:
        out = set()
    if dt.fields is not None:
        for f in dt.fields.values():
            _object_slots(f[0], at + f[1], out)
    elif dt.subdtype is not None:
        sub, shape = dt.subdtype
        n = 1
        for d in shape:
            n *= d
        if sub.hasobject:
            for i in range(n):
                _object_slots(sub, at + i * sub.itemsize, out)
    elif dt.hasobject:
        out.add(at)
    return out


def _object_layout_ok(bdt, dt, offset, strides):
    """True when a view of dtype dt at byte offset, with strides, over a
    contiguous array of dtype bdt reads each object pointer from one of
    the base's object slots and its other bytes from none: every item of
    the view lies inside one item of the base, at the same place in each
    (strides whole items)."""
    size = bdt.itemsize
    if size == 0 or offset < 0:
        return False
    at = offset % size
    if at + dt.itemsize > size or any(st % size for st in strides):
        return False
    base_slots = _object_slots(bdt)
    slots = _object_slots(dt)
    ptr = _OBJ_PTR_SIZE
    if any(at + o not in base_slots for o in slots):
        return False
    return all(b - at in slots for b in base_slots
               if b + ptr > at and b < at + dt.itemsize)


_OBJ_PTR_SIZE = 8 if sys.maxsize > 2 ** 32 else 4


def _array_root(arr):
    """The array that owns (or wraps) arr's memory."""
    nd = type(arr)
    while type(arr.base) is nd:
        arr = arr.base
    return arr


def _array_span(arr):
    """(lowest, highest + 1) address of arr's elements."""
    start = arr.__array_interface__["data"][0]
    lo = hi = start
    for st, n in zip(arr.strides, arr.shape):
        if st < 0:
            lo += st * (n - 1)
        else:
            hi += st * (n - 1)
    return lo, hi + arr.itemsize


def _primaries(nd):
    """id(memory root) -> (root, arrays of the workspace on it), built once
    per checkpoint from the loaded globals and handles."""
    if not _PRIMARIES_BUILT:
        for obj in list(dict.values(WS.ns)) + list(WS.handles.values()):
            if type(obj) is nd and (not obj.dtype.hasobject or
                                    obj.dtype.kind == "O"):
                root = _array_root(obj)
                _PRIMARIES.setdefault(id(root), (root, []))[1].append(obj)
        _PRIMARIES_BUILT.append(True)
    return _PRIMARIES


def _primary_of(arr):
    """(primary, warn): the array of the workspace that arr is to be stored
    as a view of, or None (arr is the primary, or no array of the workspace
    holds its memory); warn: storing arr as a copy breaks sharing."""
    nd = type(arr)
    base = arr.base
    if type(base) is not nd:
        return None, False      # owns its memory (or wraps a buffer)
    root = _array_root(arr)
    if root is base and sys.getrefcount(root) <= 4:
        # arr alone holds the memory's owner (+ root, base, the call):
        # every array sharing it is a view through arr, arr is the primary
        return None, False
    got = _primaries(nd).get(id(root))
    if got is None:
        # held by arr (directly or through a view between) and this frame
        # alone, a copy is faithful; held by something else too, it is not
        return None, root is not arr and sys.getrefcount(root) > 3
    best = None
    for c in got[1]:
        if c.flags.c_contiguous or c.flags.f_contiguous:
            if best is None or c.nbytes > best.nbytes:
                best = c
    if best is arr:
        return None, False
    if best is None or arr.size == 0:
        return None, True
    lo, hi = _array_span(arr)
    blo = best.__array_interface__["data"][0]
    if lo < blo or hi > blo + best.nbytes:
        return None, True
    return best, False


def _reduce_view(arr):
    """(_rebuild_view, args) for an array that shares memory with a larger
    array of the workspace, else None (stored as numpy stores it)."""
    primary, warn = _primary_of(arr)
    if primary is None:
        if warn:
            _warn_view(arr)
        return None
    offset = arr.__array_interface__["data"][0] - \
        primary.__array_interface__["data"][0]
    if (arr.dtype.hasobject or primary.dtype.hasobject) and \
            not _object_layout_ok(primary.dtype, arr.dtype, offset,
                                  arr.strides):
        _warn_view(arr, primary.dtype)
        return None
    return (_rebuild_view, (primary, offset, arr.shape, arr.strides,
                            arr.dtype, bool(arr.flags.writeable)))


def _warn_view(arr, over=None):
    """Tell the client, once per view, that it is stored as a copy; over:
    the dtype of the array of Python objects it could not be rebuilt on."""
    import weakref
    seen = _VIEW_WARNED.get(id(arr))
    if seen is not None and seen() is arr:
        return
    if len(_VIEW_WARNED) > 4096:
        _VIEW_WARNED.clear()
    try:
        _VIEW_WARNED[id(arr)] = weakref.ref(arr)
    except TypeError:
        pass
    if over is not None:
        WS.store_notices.append(
            "a numpy view (shape %s, dtype %s) of an array of Python objects "
            "(dtype %s) does not lie on its object slots item by item: it "
            "is stored as a copy, and after a restart it no longer shares "
            "that array's memory" % (arr.shape, arr.dtype, over))
        return
    WS.store_notices.append(
        "a numpy view (shape %s, dtype %s) shares memory with an array that "
        "is not a global or handle of its own: it is stored as a copy, and "
        "after a restart it no longer shares that memory (bind the array it "
        "is a view of to a name to keep the view)" % (arr.shape, arr.dtype))


def _new_object_array(shape, fortran):
    """An array of Python objects, all None, that _fill_object_array fills
    (see _reduce_object_array)."""
    import numpy
    return numpy.empty(shape, dtype=object, order="F" if fortran else "C")


def _fill_object_array(arr, items):
    """Put items into arr's slots in memory order, in place: views of arr
    built before this (while its items were loading) see them."""
    import numpy
    if type(arr) is not numpy.ndarray or arr.dtype != object or \
            type(items) is not list or len(items) != arr.size:
        raise pickle.UnpicklingError(
            "an array of Python objects does not match its %s items: the "
            "record is damaged" % (len(items) if type(items) is list
                                   else type(items).__name__))
    flat = arr.ravel(order="K")      # a view: arr is contiguous
    flat[...] = numpy.fromiter(items, dtype=object, count=len(items))


def _reduce_object_array(arr):
    """A contiguous array of dtype object, pickled in two steps: the array
    (of Nones), then its items in memory order (_fill_object_array).  An
    item may hold a view of the array (a cycle): that view is rebuilt on
    the array when it is loaded, before the items are put in; numpy's own
    pickle builds the array only after its items."""
    fortran = not arr.flags.c_contiguous
    return (_new_object_array, (arr.shape, fortran),
            arr.ravel(order="K").tolist(), None, None, _fill_object_array)


def _plain_object_array(arr):
    """Is arr an array of dtype object (not structured) that is
    contiguous, so that _reduce_object_array can take it?"""
    return arr.dtype.kind == "O" and (arr.flags.c_contiguous or
                                      arr.flags.f_contiguous)


def _reduce_ndarray(arr):
    """The plain pickler's reducer for numpy arrays: views of entries by
    reference (_reduce_view), contiguous arrays of Python objects in two
    steps (_reduce_object_array), anything else as numpy pickles it."""
    r = _reduce_view(arr)
    if r is not None:
        return r
    if _plain_object_array(arr):
        return _reduce_object_array(arr)
    return arr.__reduce_ex__(5)


def _make_pickler_class():
    cp = _cp()

    class EntryPickler(cp.CloudPickler):
        """cloudpickle, plus: functions whose globals are the workspace keep
        them by reference to the workspace, and objects that are entries
        of their own become persistent references (identity survives)."""

        def reducer_override(self, obj):
            if type(obj) is types.FunctionType and \
                    obj.__globals__ is WS.ns:
                return (_rebuild_ws_function,
                        (obj.__code__, obj.__name__, obj.__defaults__,
                         obj.__closure__, obj.__kwdefaults__,
                         obj.__qualname__, obj.__dict__ or None,
                         obj.__annotations__ or None, obj.__doc__,
                         obj.__module__))
            if type(obj) is _ndarray():
                r = _reduce_view(obj) if self.refs_entries else None
                if r is not None:
                    return r
                if _plain_object_array(obj):
                    return _reduce_object_array(obj)
            if isinstance(obj, types.ModuleType) and \
                    sys.modules.get(obj.__name__) is not obj:
                # cloudpickle takes any module whose *name* is in
                # sys.modules by reference: one made at run time under
                # the name of a real module (types.ModuleType('json'))
                # would come back as the real one once that is imported
                return _reduce_module_by_value(cp, obj)
            return cp.CloudPickler.reducer_override(self, obj)

    EntryPickler.refs_entries = False   # True: other entries by reference
    return EntryPickler


def _reduce_module_by_value(cp, m):
    """A module by value, as cloudpickle pickles one it cannot import
    (its __builtins__ left out: the loader restores the default)."""
    state = m.__dict__.copy()
    state.pop("__builtins__", None)
    return cp.cloudpickle.dynamic_subimport, (m.__name__, state)


def _ndarray():
    """numpy.ndarray when numpy is imported, else None."""
    np = sys.modules.get("numpy")
    return getattr(np, "ndarray", None) if np is not None else None


def _reduce_module(m):
    """A module, pickled by name, as cloudpickle pickles an importable one
    (its subimport is __import__ then sys.modules[name]; import_module does
    the same), but by the stdlib pickler: a fresh backend whose first
    request imports something then needs no cloudpickle (and tblib) for its
    first checkpoint, which saves it ~7 ms.  Refused, so that cloudpickle
    decides as before: __main__, a module without a spec (made at run
    time), one that is not what sys.modules holds under its name, one
    registered with cloudpickle.register_pickle_by_value."""
    name = m.__name__
    cp = sys.modules.get("cloudpickle.cloudpickle")
    if name == "__main__" or getattr(m, "__spec__", None) is None or \
            sys.modules.get(name) is not m or \
            (cp is not None and
             getattr(cp, "_is_registered_pickle_by_value", None) is not None
             and cp._is_registered_pickle_by_value(m)):
        raise pickle.PicklingError("module %r is not importable by name"
                                   % (name,))
    return importlib.import_module, (name,)


class _Dumper:
    """Pickles entries into a C sink.  The stdlib C pickler (reused, memo
    cleared) comes first: it is the fast path for plain data, driven from C
    by Batch.dump_keys; it also takes importable modules, by name
    (_reduce_module).  What it cannot pickle by reference (functions,
    lambdas, classes defined by shipped code) goes through cloudpickle,
    which stores them by value."""

    def __init__(self):
        self.sink = _s.Sink()
        self.plain = pickle.Pickler(self.sink, protocol=5,
                                    buffer_callback=self.sink.buffer)
        self.plain.persistent_id = WS.idmap.pid
        self.copyreg = None
        self.ndarray = None
        self.refresh()
        self.cloud = None

    def refresh(self):
        """The plain pickler's reducers: copyreg's, as shipped code may
        have changed them (copyreg.pickle), with _reduce_module for modules
        unless shipped code registered its own."""
        table = copyreg.dispatch_table
        seen = self.copyreg
        nd = _ndarray()
        # by identity: a registered reducer's __eq__ must not run here
        if seen is None or nd is not self.ndarray or \
                len(seen) != len(table) or any(
                seen.get(k, seen) is not v for k, v in table.items()):
            self.copyreg = dict(table)
            self.ndarray = nd
            table = {types.ModuleType: _reduce_module}
            if nd is not None:
                table[nd] = _reduce_ndarray
            table.update(self.copyreg)
            self.plain.dispatch_table = table

    def cloud_dump(self, obj, noref=False, key=None, group=None):
        """(pickler, flags, parts, refs) through cloudpickle, for entry key;
        raises.  noref: other entries' objects are copied, never
        referenced; group: the keys whose objects are copied."""
        if self.cloud is None:
            cls = _make_pickler_class()
            self.cloud = cls(self.sink, protocol=5,
                             buffer_callback=self.sink.buffer)
            self.cloud.persistent_id = WS.idmap.pid
            self.cloud.refs_entries = True
            self.cloud_noref = cls(self.sink, protocol=5,
                                   buffer_callback=self.sink.buffer)
        p = self.cloud_noref if noref else self.cloud
        sink = self.sink
        sink.reset()
        p.clear_memo()
        WS.idmap.begin(obj, key, group)
        try:
            p.dump(obj)
        finally:
            refs = WS.idmap.end()
        data = sink.getvalue()
        bufs = sink.buffers()
        sink.reset()
        if bufs:
            raws = [b.raw() for b in bufs]
            head = _s.oob_header(len(data), [len(r) for r in raws])
            return PICKLER_CLOUDPICKLE, FLAG_OOB, [head, data] + raws, refs
        return PICKLER_CLOUDPICKLE, 0, [data], refs


_DUMPER = None


def _dumper():
    global _DUMPER
    if _PRIMARIES_BUILT:
        _views_reset()
    if _DUMPER is None:
        _DUMPER = _Dumper()
    else:
        _DUMPER.refresh()
    return _DUMPER


def load_entry(payload, flags):
    """Unpickle an entry's payload (a writable bytearray)."""
    mv = memoryview(payload)
    if flags & FLAG_OOB:
        pk, bufs = _s.oob_split(mv)
    else:
        pk, bufs = mv, None
    u = pickle.Unpickler(io.BytesIO(pk), buffers=bufs)
    u.persistent_load = WS.persistent_load
    return u.load()


# Buffers smaller than this stay in the pickle: a frame of its own costs
# more than the copy.
OOB_MIN = 64 * 1024


def dumps_value(obj, oob=False):
    """Pickle a value for the client (plain pickle, cloudpickle fallback).
    oob: the client takes out-of-band buffers: (pickle, [memoryview, ...])
    when the value has large contiguous ones (numpy arrays, bytearrays,
    PickleBuffer), which the C half sends from their memory."""
    if not oob:
        try:
            return pickle.dumps(obj, protocol=5)
        except Exception:
            return _cp().dumps(obj, protocol=5)
    bufs = []

    def take(pb):
        try:
            m = pb.raw()
        except BufferError:     # not contiguous: in the pickle
            return True
        if m.nbytes < OOB_MIN:
            return True
        bufs.append(m)
        return False
    try:
        data = pickle.dumps(obj, protocol=5, buffer_callback=take)
    except Exception:
        del bufs[:]
        data = _cp().dumps(obj, protocol=5, buffer_callback=take)
    return (data, bufs) if bufs else data


def loads_value(data):
    """Unpickle what a client sent: a pickle, or (pickle, [bytearray, ...])
    with its out-of-band buffers, which the objects keep as their memory
    (a numpy array is built on its bytearray, not copied)."""
    bufs = None
    if type(data) is tuple:
        data, bufs = data
    try:
        return pickle.loads(data, buffers=bufs)
    except (ModuleNotFoundError, AttributeError, ImportError):
        _cp()
        return pickle.loads(data, buffers=bufs)
