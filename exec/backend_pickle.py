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


def _tblib():
    """tblib's picklers for tracebacks, installed on first use."""
    global _tblib_ready
    if not _tblib_ready:
        import tblib.pickling_support
        tblib.pickling_support.install()
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
            return cp.CloudPickler.reducer_override(self, obj)

    return EntryPickler


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
        self.refresh()
        self.cloud = None

    def refresh(self):
        """The plain pickler's reducers: copyreg's, as shipped code may
        have changed them (copyreg.pickle), with _reduce_module for modules
        unless shipped code registered its own."""
        table = copyreg.dispatch_table
        seen = self.copyreg
        # by identity: a registered reducer's __eq__ must not run here
        if seen is None or len(seen) != len(table) or any(
                seen.get(k, seen) is not v for k, v in table.items()):
            self.copyreg = dict(table)
            table = {types.ModuleType: _reduce_module}
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


def dumps_value(obj):
    """Pickle a value for the client (plain pickle, cloudpickle fallback)."""
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        return _cp().dumps(obj, protocol=5)


def loads_value(data):
    try:
        return pickle.loads(data)
    except (ModuleNotFoundError, AttributeError, ImportError):
        _cp()
        return pickle.loads(data)
