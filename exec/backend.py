"""pyshelfd's Python half: the workspace, its handle table, running shipped
code, and pickling entries to and from the store.

This file is compiled into pyshelfd (exec/backend.c is generated from it)
and imported as the module ``_pyshelf_backend`` by the embedded
interpreter.  The C half (exec/worker.c, exec/pymod.c) owns the protocol,
the store, signals and threads; it calls the functions at the bottom of
this file, one per request, with the GIL held.

The module ``_pyshelfd`` is the C half's builtin module: store access
(get/put/delete/list, releasing the GIL around commits), the Namespace type
(a dict subclass whose __missing__ loads globals lazily), the IdMap used as
the picklers' persistent_id, and payload digests.
"""

import ast
import builtins
import copyreg
import functools as _functools
import gc as _gc
import importlib
import importlib.machinery
import io
import pickle
import sys
import _thread
import time as _time
import types

import _pyshelfd as _s

# --- the result classes, under the module name ``pyshelf`` ---------------
# They must pickle as pyshelf.DirectValue etc. on both sides.

pyshelf_mod = types.ModuleType("pyshelf", "pyshelf backend-side classes")


class DirectValue:
    """A value sent back by value: shipped code returns DirectValue(x)."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __reduce__(self):
        return (DirectValue, (self.value,))

    def __repr__(self):
        return "DirectValue(%r)" % (self.value,)


class Wrapped:
    """A handle to a backend object (backend-side mirror of the client's)."""

    __slots__ = ("id", "type_name")

    def __init__(self, id, type_name):
        self.id = id
        self.type_name = type_name

    def __reduce__(self):
        return (Wrapped, (self.id, self.type_name))

    def __repr__(self):
        return "<Wrapped %d %s>" % (self.id, self.type_name)


class WrappedExcinfo(Wrapped):
    """A handle to a (type, value, traceback) triple."""

    __slots__ = ("exc_type", "message")

    def __init__(self, id, type_name, exc_type="", message=""):
        Wrapped.__init__(self, id, type_name)
        self.exc_type = exc_type
        self.message = message

    def __reduce__(self):
        return (WrappedExcinfo,
                (self.id, self.type_name, self.exc_type, self.message))


class Placeholder:
    """Stands for an entry whose class can no longer be imported.

    Keeps the pickle so that nothing is lost: once the class is importable
    again, ``restore()`` (or a backend restart) brings the object back.
    """

    def __init__(self, entry, type_name, reason, payload):
        self.entry = entry
        self.type_name = type_name
        self.reason = reason
        self.payload = payload

    def __repr__(self):
        return "<pyshelf.Placeholder for %s (%s): %s>" % (
            self.entry, self.type_name, self.reason)


class VolatileEntryError(LookupError):
    """An entry could not be persisted and did not survive a restart."""


class EntryGroup:
    """The record of entries whose objects refer to each other in a cycle:
    their keys and objects pickled together, so that every reference
    between them keeps its identity.  The first key's record holds it; each
    other's record is group_member(<the first entry's object>, index),
    the object by a persistent reference."""
    __slots__ = ("keys", "objs")

    def __init__(self, keys, objs):
        self.keys, self.objs = keys, objs

    def __reduce__(self):
        return (EntryGroup, (self.keys, self.objs))

    def __repr__(self):
        return "<pyshelf.EntryGroup of %s>" % ", ".join(
            _keystr(k) for k in self.keys)


def group_member(first, i):
    """Object i of the EntryGroup whose first object is first."""
    if type(first) is Placeholder:      # the group's record cannot load
        raise ImportError("it shares a record with %s, which cannot be "
                          "loaded (%s)" % (first.entry, first.reason))
    g = WS.group_by_first.get(id(first))
    if g is None or g.objs[0] is not first:
        raise pickle.UnpicklingError(
            "the entry this one shares a record with no longer holds it")
    return g.objs[i]


class _Kwargs(dict):
    """The keyword arguments of a call (remote_exec(f, x, key=value)):
    the client sends them as the last pickled argument, of this type."""
    __slots__ = ()


def _handle(hid):
    """A handle inside a value the client sent (a list of Wrapped, a dict
    with one): its object, as a handle argument would be."""
    obj = WS.get_handle(hid)
    WS.request_keys.append(("h", hid))
    return obj


def _function(code, name, defaults, kwdefaults, closure, qualname):
    """A function the client sent by value (typed at a REPL or in a
    notebook, a lambda, a closure: no source to ship).  Its globals are
    the workspace's, as for a function shipped by source."""
    f = types.FunctionType(code, WS.ns, name, defaults, closure)
    f.__kwdefaults__ = kwdefaults
    f.__qualname__ = qualname
    WS.request_codes.append(code)
    return f


for _cls in (DirectValue, Wrapped, WrappedExcinfo, Placeholder,
             VolatileEntryError, EntryGroup, group_member, _Kwargs, _handle,
             _function):
    _cls.__module__ = "pyshelf"
    setattr(pyshelf_mod, _cls.__name__, _cls)
# importable by name (import pyshelf; pickled by name, never by value),
# and a builtin: a function shipped from a client module that did
# `import pyshelf` finds it as the name pyshelf
pyshelf_mod.__spec__ = importlib.machinery.ModuleSpec("pyshelf", None)
sys.modules["pyshelf"] = pyshelf_mod
builtins.pyshelf = pyshelf_mod
builtins.DirectValue = DirectValue
builtins.Wrapped = Wrapped
builtins.WrappedExcinfo = WrappedExcinfo

# Error codes (proto/wire.h, enum wire_errcode).
ERR_UNKNOWN_HANDLE = 8
ERR_UNPICKLE = 9
ERR_PICKLE = 10
ERR_NOT_FOUND = 11
ERR_STORE = 12
ERR_VOLATILE = 13
ERR_BAD_REQUEST = 15

KIND_DIRECT, KIND_WRAPPED, KIND_EXCINFO = 1, 2, 3
FLAG_EXCINFO, FLAG_VOLATILE, FLAG_OOB, FLAG_HIDDEN = 1, 2, 4, 8
PICKLER_NONE, PICKLER_PICKLE, PICKLER_CLOUDPICKLE = 0, 1, 2

# Types whose identity does not matter and that are never referenced by a
# persistent id (pickled inline wherever they appear).
_ATOMIC = (int, float, complex, str, bytes, bool, type(None))
# Types (exactly these, not subclasses) whose instances hold no state that
# can change: nothing reachable from one can be changed in place.
_ATOM_TYPES = frozenset((int, float, complex, str, bytes, bool, type(None),
                         range, type(Ellipsis), type(NotImplemented),
                         types.BuiltinFunctionType))


def _frozen(obj):
    """Is obj's whole reachable state immutable atoms, so that no in-place
    change can ever make its pickle differ?  A tuple of ints is; a tuple
    or frozenset holding a dict, a list or an instance is not, nor is a
    function, a class or a module (their attributes and __dict__ change).
    Tuple subclasses count when their instances have no __dict__
    (namedtuple).  Walks without recursion."""
    todo = [obj]
    seen = set()
    while todo:
        o = todo.pop()
        t = type(o)
        if t in _ATOM_TYPES:
            continue
        if t is tuple or t is frozenset or \
                (issubclass(t, tuple) and t.__dictoffset__ == 0):
            if id(o) not in seen:
                seen.add(id(o))
                todo.extend(o)
            continue
        return False
    return True


class RequestError(Exception):
    """A request failed in a way the client sees as an ERROR frame."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


_type_name = _s.type_name


def _exc_message(value):
    try:
        return str(value)
    except Exception as e:  # a broken __str__ must not sink the reply
        return "<str() failed: %s>" % type(e).__name__


def _dunder(name):
    """Is name of the backend's own namespace (``__name__``,
    ``__builtins__``, any ``__x__``), as a module's dunders are its own?
    Such names are never workspace globals: not listed, loaded or stored
    (exec/pybatch.c's pybatch_dunder is the same test)."""
    return len(name) > 4 and name[:2] == "__" and name[-2:] == "__"


def _name_error(name):
    """Why name cannot be a workspace global's (a store key), or None."""
    if not isinstance(name, str):
        return "a global's name is a str, not %s" % type(name).__name__
    if not name:
        return "a global's name cannot be empty"
    if _dunder(name):
        return ("%r is a name of the backend's own namespace: names of the "
                "form __x__ are not workspace globals" % (name,))
    if "\x00" in name:
        return "a global's name cannot contain a NUL character"
    try:
        n = len(name.encode("utf-8"))
    except UnicodeError:
        return ("global name %r cannot be encoded as UTF-8 (a lone "
                "surrogate)" % (name,))
    if n > _s.KEY_MAX:
        return ("global name %s of %d bytes (UTF-8) is longer than the "
                "store's key limit, %d bytes" % (_name_repr(name), n,
                                                 _s.KEY_MAX))
    return None


def _name_repr(name):
    """repr() of a name, cut short when it is long (in messages)."""
    return repr(name) if len(name) <= 60 else repr(name[:40]) + "..."


def _check_global_name(name):
    """Raise ValueError when name cannot be a workspace global's."""
    why = _name_error(name)
    if why is not None:
        raise ValueError(why)


# An excinfo handle's record keeps what the client shows of it in its
# type-name area, so that a listing need not unpickle the triple:
# "tuple" LF exc_type LF message (exc_type never holds a LF; the message
# may).  Records written before this hold "tuple" alone.
_EXCINFO_SEP = "\n"
_EXCINFO_MESSAGE_MAX = 16000   # characters kept of the message


def excinfo_type_name(triple):
    """The type-name area of an excinfo handle's record (see above);
    called by exec/pybatch.c's dump_keys for records with FLAG_EXCINFO."""
    try:
        exc = triple[1]
        msg = _exc_message(exc)
        if len(msg) > _EXCINFO_MESSAGE_MAX:
            msg = msg[:_EXCINFO_MESSAGE_MAX] + "..."
        # the store takes a C string: no NUL, and UTF-8 only
        msg = msg.replace("\x00", "\\x00").encode(
            "utf-8", "backslashreplace").decode("utf-8")
        return _EXCINFO_SEP.join((_type_name(triple), type(exc).__name__,
                                  msg))
    except Exception:   # never fails the checkpoint: the plain type name
        return _type_name(triple)


def _split_type_name(tn):
    """(type name, exc_type, message) of a record's type-name area:
    exc_type and message are None unless it is an excinfo handle's."""
    if _EXCINFO_SEP not in tn:
        return tn, None, None
    tn, exc_type, message = (tn.split(_EXCINFO_SEP, 2) + ["", ""])[:3]
    return tn, exc_type, message


pyshelf_mod._check_global_name = _check_global_name


def _record_type_name(obj, flags):
    return excinfo_type_name(obj) if flags & FLAG_EXCINFO else \
        _type_name(obj)


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


# --- the workspace -----------------------------------------------------------

class Globals(_s.Namespace):
    """The workspace's globals, as shipped code sees them (globals()).
    Values load on first use (Namespace.__missing__); the names of stored
    globals count from the start: `'df' in globals()`, get(), setdefault()
    and pop() see a global not loaded yet (without loading it, for `in`),
    and iterating, len(), keys(), items(), values() and copy() load every
    stored global first (once; those that cannot be loaded are left out)."""
    __slots__ = ()

    def __contains__(self, name):
        if dict.__contains__(self, name):
            return True
        return WS is not None and WS.stored_global(name)

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def setdefault(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            self[name] = default
            return default

    def pop(self, name, *default):
        if len(default) > 1:
            raise TypeError("pop expected at most 2 arguments, got %d" %
                            (1 + len(default)))
        try:
            value = self[name]
        except KeyError:
            if default:
                return default[0]
            raise
        del self[name]
        return value

    def _all(self):
        if WS is not None:
            WS.load_all_globals()
        return self

    def __iter__(self):
        return dict.__iter__(self._all())

    def __len__(self):
        return dict.__len__(self._all())

    def keys(self):
        return dict.keys(self._all())

    def items(self):
        return dict.items(self._all())

    def values(self):
        return dict.values(self._all())

    def copy(self):
        return dict(dict.items(self._all()))

    def clear(self):
        dict.clear(self._all())

    def popitem(self):
        return dict.popitem(self._all())

    def __repr__(self):
        return dict.__repr__(self._all())


class Workspace:
    """One session's state: globals (ns), handles, and what to checkpoint."""

    def __init__(self):
        self.ns = Globals(self._load_global)
        self.all_loaded = False  # has load_all_globals() run?
        self.ns["__name__"] = "__pyshelf__"
        self.ns["__builtins__"] = builtins
        self.idmap = _s.IdMap()
        self.handles = {}        # id -> object (loaded)
        self.handle_of = {}      # id(object) -> handle id, for identity
        self.handle_flags = {}   # id -> record flags
        self.shadow = {}         # global name -> object as last checkpointed
        self.digests = _s.DigestMap()  # entry key -> digest of what is stored
        self.volatile = {}       # entry key -> reason (this process)
        self.lost_entries = {}   # entry key -> (type name, reason)
        self.dirty = set()       # entry keys to re-pickle
        self.deleted = set()     # entry keys to delete from the store
        self.released = set()    # handle ids known gone
        self.ns_version = None
        self.code_cache = {}     # digest -> compiled code / function
        self.notices = []        # volatile notices to send on stderr
        self.dunder_noted = {}   # __x__ name -> the object noticed for it
        self.loading = set()
        self.entries_written = 0
        self.refs_of = {}        # entry key -> keys its record refers to
        self.referrers = {}      # entry key -> keys whose records refer to it
        self.stored_refs = None  # has the store's references index rows
                                 # for this session?  (None: not asked yet)
        self.rescue = {}         # target -> its old object (or _UNLOADED)
                                 # while its referrers are loaded
        self.unrefs = []         # index rows to forget at the next commit
        self.groups = {}         # first key -> EntryGroup (loaded/written)
        self.group_of = {}       # key -> first key of its EntryGroup
        self.group_by_first = {}  # id(first object) -> EntryGroup
        self.from_store = set()  # globals whose object was loaded (records
                                 # of earlier backends may refer to it)
        self.orphans = {}        # key gone -> its old object (this checkpoint)
        self.holders = {}        # key gone -> records written again with it
        self.hidden_check = set()  # hidden handles a record let go of
        self.unwritten = {}      # entry key -> bytes: records a full store
                                 # could not take, written by the next
                                 # checkpoint that may find room
        self.store_notices = []  # texts for the client's stderr
        self.rr_pos = 0
        self.last_checkpoint_s = 0.0
        self.last_checkpoint_phases = (0.0, 0.0, 0.0)  # diff, pickle, commit
        self.checkpoints = 0
        self.batch = _s.Batch()  # reused: its buffers stay warm
        self.frozen = {}         # entry key -> its object, known _frozen
        self.read_only = False   # flag 'r': nothing is written (init())
        self.request_codes = []  # code of functions sent by value (this
                                 # request): mark_reached walks them too
        self.request_keys = []   # handles inside the request's values
        self.cp_thread = None    # ident of the thread in checkpoint()

    # -- lazy loading --
    def _load_global(self, name, deleting=False):
        """Namespace.__missing__: load a global from the store, or raise
        KeyError (the Namespace remembers names that are absent).
        deleting: the Namespace loads it to delete it (del x); one that
        cannot be loaded (volatile, corrupt) is then None, so that its
        record is deleted all the same."""
        if not isinstance(name, str) or _dunder(name) or \
                not _storable(("g", name)):
            raise KeyError(name)     # cannot be stored, so is not
        if _s.in_child(0):
            _child_missing(name)
        key = ("g", name)
        if key in self.deleted:
            raise KeyError(name)
        try:
            obj = self._load(key)
        except KeyError:
            raise
        except Exception:
            if not deleting:
                raise
            obj = None
        self.ns.load_insert(name, obj)
        self.shadow[name] = obj
        self.from_store.add(name)
        if not isinstance(obj, _ATOMIC):
            self.idmap.add(obj, key)
        if type(obj) is types.FunctionType and obj.__globals__ is self.ns:
            _load_deleted_globals(obj.__code__)  # before it can run
        return obj

    def stored_global(self, name):
        """Is name a global of the store (not loaded yet, not deleted) that
        can be used?  A volatile one (lost in the restart) is not.  Reads
        the record's header, not its value."""
        if self.all_loaded or not isinstance(name, str) or \
                _dunder(name) or ("g", name) in self.deleted or \
                not _storable(("g", name)):
            return False
        flags = _s.flags("g", name)
        return flags is not None and not flags & FLAG_VOLATILE

    def load_all_globals(self):
        """Load every stored global not loaded yet (iterating globals()),
        once: later globals are bound in memory first."""
        if self.all_loaded:
            return
        ns = self.ns
        for name in _s.list_keys("g"):
            if not dict.__contains__(ns, name) and \
                    ("g", name) not in self.deleted:
                try:
                    ns[name]
                except LookupError:
                    pass      # volatile: not restored, ws.lost() says why
        self.all_loaded = True

    def _load(self, key):
        """Read and unpickle one entry; KeyError when absent."""
        if key in self.loading:
            raise RuntimeError("entry %s refers to itself while loading" %
                               _keystr(key))
        rec = _s.get(key[0], key[1])
        if rec is None:
            raise KeyError(key[1])
        pickler, flags, type_name, payload, digest, refs = rec
        self.digests[key] = digest
        self._note_refs(key, refs)
        if key[0] == "h" and flags & (FLAG_EXCINFO | FLAG_HIDDEN):
            self.handle_flags[key[1]] = flags & (FLAG_EXCINFO | FLAG_HIDDEN)
        if flags & FLAG_VOLATILE:
            reason = bytes(payload).decode("utf-8", "replace")
            self.lost_entries[key] = (type_name, reason)
            raise VolatileEntryError(
                "%s (%s) was not persisted: %s; it did not survive the "
                "backend's restart" % (_keystr(key), type_name, reason))
        self.loading.add(key)
        try:
            if refs and not self.rescue:
                self._preload(key, refs)
            obj = load_entry(payload, flags)
            if type(obj) is EntryGroup:    # key holds a cycle of entries
                self._note_group(key, obj)
                obj = obj.objs[0]
            return obj
        except (ImportError, AttributeError) as e:
            reason = "cannot import its class: %s: %s" % (
                type(e).__name__, e)
            self.lost_entries[key] = (type_name, reason)
            return Placeholder(_keystr(key), type_name, reason,
                               bytes(payload))
        finally:
            self.loading.discard(key)

    def _preload(self, key, blob):
        """Load the entries that key's record refers to (blob, its refs)
        and that are not loaded yet, deepest first, walking the references
        with a stack of our own: each then finds its own targets loaded,
        so that a chain of entries that refer to the next (a handle per
        step of an algorithm, each holding the one before) loads at any
        length, where loading them through persistent_load nested one
        unpickling per link and hit the recursion limit.  A target that
        cannot be loaded is left to persistent_load, which says why."""
        order, seen = [], {key}
        stack = [iter(_parse_refs(blob))]
        keys = [key]
        while stack:
            for t in stack[-1]:
                if t in seen or self._loaded(t) or t in self.deleted or \
                        t in self.loading or not _storable(t):
                    continue
                seen.add(t)
                b = _s.get_refs(t[0], t[1])
                stack.append(iter(_parse_refs(b) if b else ()))
                keys.append(t)
                break
            else:
                stack.pop()
                k = keys.pop()
                if k is not key:
                    order.append(k)
        for kind, k in order:
            try:
                if kind == "g":
                    self.ns[k]
                else:
                    self.get_handle(k)
            except Exception:
                pass

    def persistent_load(self, pid):
        """Resolve a persistent reference to another entry (to its old
        object while the records referring to it are rescued)."""
        if self.rescue:
            old = self.rescue.get(pid, _MISSING)
            if old is not _MISSING:
                if old is _UNLOADED:   # its record is still the old one
                    old = self.rescue[pid] = self._load(pid)
                return old
        kind, k = pid
        if kind == "g":
            if k in self.shadow:
                return self.shadow[k]
            return self.ns[k]
        if kind == "h":
            return self.get_handle(k)
        raise pickle.UnpicklingError("unknown persistent id %r" % (pid,))

    def _note_group(self, first, g):
        old = self.groups.get(first)
        if old is not None:
            self._forget_group(first)
        self.groups[first] = g
        self.group_by_first[id(g.objs[0])] = g
        for k in g.keys:
            self.group_of[k] = first

    def _forget_group(self, first):
        g = self.groups.pop(first, None)
        if g is not None:
            if self.group_by_first.get(id(g.objs[0])) is g:
                del self.group_by_first[id(g.objs[0])]
            for k in g.keys:
                if self.group_of.get(k) == first:
                    del self.group_of[k]

    def get_handle(self, hid):
        obj = self.handles.get(hid, _MISSING)
        if obj is not _MISSING:
            return obj
        key = ("h", hid)
        if hid in self.released:
            raise RequestError(ERR_UNKNOWN_HANDLE, "unknown handle %d" % hid)
        try:
            obj = self._load(key)
        except KeyError:
            raise RequestError(ERR_UNKNOWN_HANDLE,
                               "unknown handle %d" % hid) from None
        except VolatileEntryError as e:
            raise RequestError(ERR_VOLATILE, str(e)) from None
        self._adopt_handle(hid, obj)
        return obj

    def _adopt_handle(self, hid, obj):
        self.handles[hid] = obj
        if not isinstance(obj, _ATOMIC):
            self.handle_of[id(obj)] = hid
            self.idmap.add(obj, ("h", hid))

    def new_handle(self, obj, flags=0):
        """A handle for obj: the existing one when obj already has one."""
        if not isinstance(obj, _ATOMIC):
            hid = self.handle_of.get(id(obj))
            if hid is not None and self.handles.get(hid) is obj:
                return hid, False
        hid = _s.next_handle()
        self._adopt_handle(hid, obj)
        self.handle_flags[hid] = flags
        self.dirty.add(("h", hid))
        return hid, True

    def release(self, ids):
        gone = {}
        for hid in ids:
            obj = self.handles.pop(hid, _MISSING)
            gone[("h", hid)] = _UNLOADED if obj is _MISSING else obj
            if obj is not _MISSING:
                if self.handle_of.get(id(obj)) == hid:
                    del self.handle_of[id(obj)]
                self.idmap.discard(obj, ("h", hid))
            key = ("h", hid)
            self.dirty.discard(key)
            self.handle_flags.pop(hid, None)
            self.deleted.add(key)
            self.released.add(hid)
            if key in self.referrers:
                self._orphan(key, obj)
                self._repickle_referrers(key)
        if gone and self._has_stored_refs():
            self._rescue_referrers(gone)

    # -- what a request could reach by name --
    def mark_reached(self, codes, keys=()):
        """Mark for this request's checkpoint the loaded entries that the
        request could have changed in place: the globals its code objects
        name (co_names, nested code objects included), and through every
        workspace function, shipped class or instance of one among them,
        the globals that their code names, transitively; then the entries
        that the records of those refer to (an object reached through
        another entry's object, as in c['x'].append(1) with c = {'x': a}),
        transitively.  keys: more entries to start from (handle
        arguments).  Entries made of immutable atoms alone are left out.
        The checkpoint then pickles them and writes those whose digest
        changed."""
        shadow, handles, frozen = self.shadow, self.handles, self.frozen
        dirty, refs_of, ns = self.dirty, self.refs_of, self.ns
        # entries a full store could not take wait for a checkpoint that
        # may free room (sync, close, interval, a delete): one that a
        # request reads must not make its reply an error each time
        unwritten = self.unwritten
        todo, seen, more = list(codes), set(), list(keys)
        while todo:
            c = todo.pop()
            if id(c) in seen:
                continue
            seen.add(id(c))
            for name in _code_names(c):
                o = shadow.get(name, _MISSING)
                if o is _MISSING:
                    continue
                t = type(o)
                if t in _ATOM_TYPES:
                    continue
                key = ("g", name)
                if t is tuple or t is frozenset or issubclass(t, tuple):
                    if frozen.get(key) is o:
                        continue
                    if _frozen(o):
                        frozen[key] = o
                        continue
                if unwritten and key in unwritten:
                    continue
                dirty.add(key)
                if key in refs_of:
                    more.append(key)
                if t is types.FunctionType or issubclass(t, type) or \
                        t.__module__ == "__pyshelf__":
                    todo.extend(_codes_of(o, ns))
        # the refs closure: the entries whose objects these objects hold
        done = set()
        while more:
            key = more.pop()
            if key in done:
                continue
            done.add(key)
            o = (shadow if key[0] == "g" else handles).get(key[1], _MISSING)
            if o is _MISSING or frozen.get(key) is o:
                continue
            if issubclass(type(o), tuple) or type(o) is frozenset:
                if _frozen(o):
                    frozen[key] = o
                    continue
            if unwritten and key in unwritten:
                continue
            dirty.add(key)
            more.extend(refs_of.get(key, ()))

    # -- checkpoints --
    def collect_dirty_globals(self):
        """Find globals bound, rebound or deleted since the last checkpoint.
        O(1) when the namespace did not change (its dict version), else a
        walk in C comparing object identity with the shadow."""
        v = _s.dict_version(self.ns)
        if v == self.ns_version:
            return
        fresh = [] if self._has_stored_refs() else None
        unbound = _s.collect(self.ns, self.shadow, self.idmap, self.dirty,
                             self.deleted, fresh)
        self.ns_version = _s.dict_version(self.ns)
        if self.referrers:
            for name, old in unbound:
                key = ("g", name)
                if key in self.referrers:      # records hold old: who?
                    self._orphan(key, old)
                    self._repickle_referrers(key)
        if fresh is not None and (unbound or fresh):
            # stored records not loaded since the restart may refer to
            # these globals' old objects: the index says which.  Only to
            # an object loaded from the store (or never loaded): one bound
            # by this backend is known to every record that refers to it
            gone = {("g", name): old for name, old in unbound
                    if name in self.from_store}
            rows = _s.referrers(fresh) if fresh else []
            if gone:
                rows += _s.referrers(list(gone))
            if rows:
                for target, _ref in rows:
                    gone.setdefault(target, _UNLOADED)   # a fresh name
                self._rescue_referrers(gone, rows)
        if self.from_store:
            for name, _old in unbound:
                self.from_store.discard(name)

    def _has_stored_refs(self):
        """Does the store's references index have rows for this session?
        Asked once; this backend's own commits keep the answer."""
        if self.stored_refs is None:
            self.stored_refs = _s.refs_any()
        return self.stored_refs

    def _rescue_referrers(self, gone, rows=None):
        """gone: {key: its old object, or _UNLOADED when it was never
        loaded} for entries whose object stops being theirs.  Stored
        records that refer to one of them and are not loaded (written by
        an earlier backend) are loaded now, resolving those references to
        the old objects, and marked dirty: the checkpoint writes them again
        holding the old objects themselves, as for loaded referrers.
        Index rows whose referrer no longer refers to the target are
        forgotten at the next commit.  rows: the index's rows for gone, when
        the caller read them."""
        if rows is None:
            rows = _s.referrers(list(gone))
        if not rows:
            return
        self.rescue = gone
        try:
            for target, ref in rows:
                if ref in gone or ref in self.deleted or self._loaded(ref):
                    continue   # going too, or known (self.referrers)
                try:
                    if ref[0] == "g":
                        self.ns[ref[1]]
                    else:
                        self.get_handle(ref[1])
                except KeyError:
                    self.unrefs.append((target, ref))   # a stale row
                    continue
                except Exception:
                    continue   # cannot be loaded: left as it is stored
                if target not in self.refs_of.get(ref, ()):
                    self.unrefs.append((target, ref))   # a stale row
                    continue
                self.dirty.add(ref)
                self.holders.setdefault(target, set()).add(ref)
                # its new record holds the old object itself: the row goes
                # in this checkpoint's commit, and is not queued again
                self.unrefs.append((target, ref))
                self._drop_ref(ref, target)
        finally:
            for target, old in self.rescue.items():
                self._orphan(target, old)
            self.rescue = {}
        # records loaded while rescuing (a referrer's own references) are
        # known now: those that refer to what goes are written again too
        for key in gone:
            self._repickle_referrers(key)

    def _drop_ref(self, key, target):
        """key's record will no longer refer to target."""
        old = self.refs_of.get(key)
        if old and target in old:
            self.refs_of[key] = tuple(t for t in old if t != target)
            rs = self.referrers.get(target)
            if rs is not None:
                rs.discard(key)
                if not rs:
                    del self.referrers[target]

    def _loaded(self, key):
        return key[1] in (self.shadow if key[0] == "g" else self.handles)



    # -- persistent references between entries --
    def _note_refs(self, key, blob, written=False):
        """Remember which entries key's stored record refers to.  written:
        the record was just written (or deleted, blob empty); the index
        rows of the targets it no longer refers to are forgotten at the
        next commit."""
        old = self.refs_of.pop(key, ())
        targets = _parse_refs(blob) if blob else ()
        for t in old:
            if written and t not in targets:
                self.unrefs.append((t, key))
                if t[0] == "h" and self._is_hidden(t):
                    self.hidden_check.add(t)
            rs = self.referrers.get(t)
            if rs is not None:
                rs.discard(key)
                if not rs:
                    del self.referrers[t]
        if not blob:
            return
        self.refs_of[key] = targets
        for t in targets:
            self.referrers.setdefault(t, set()).add(key)

    def _repickle_referrers(self, key):
        """key's object changed identity (rebound, deleted, released):
        records that refer to it by persistent id must be pickled again,
        now holding the old object themselves."""
        for r in self.referrers.get(key, ()):
            if r not in self.deleted:
                self.dirty.add(r)
                self.holders.setdefault(key, set()).add(r)

    def _orphan(self, key, old):
        """key's object old is no longer key's: keep it until the
        checkpoint decides who holds it (_hold_orphans)."""
        if not isinstance(old, _ATOMIC) and old is not _UNLOADED:
            self.orphans[key] = old

    def _hold_orphans(self):
        """An old object that two or more records written again hold, and
        that no entry holds any more, gets a hidden handle of its own: the
        records refer to it, and stay one object after a restart, instead
        of each holding a copy."""
        orphans, holders = self.orphans, self.holders
        self.orphans, self.holders = {}, {}
        for key, old in orphans.items():
            hs = [r for r in holders.get(key, ()) if r in self.dirty and
                  r not in self.deleted]
            g = self.groups.get(self.group_of.get(key))
            if g is not None and any(k != key and k not in self.deleted
                                     for k in g.keys):
                hs.append(g.keys[0])   # its group, written again, holds it
            if len(hs) < 2 or self.idmap.key(old) is not None:
                continue
            hid = _s.next_handle()
            self._adopt_handle(hid, old)
            self.handle_flags[hid] = FLAG_HIDDEN
            self.dirty.add(("h", hid))

    def _is_hidden(self, key):
        if key[0] != "h":
            return False
        f = self.handle_flags.get(key[1])
        if f is None and key[1] not in self.handles:
            f = _s.flags("h", key[1])
        return bool(f and f & FLAG_HIDDEN)

    def _collect_hidden(self):
        """Release the hidden handles that no record refers to any more
        (in memory, or in the references index)."""
        check, self.hidden_check = self.hidden_check, set()
        for key in check:
            if key in self.deleted or self.referrers.get(key):
                continue
            live = False
            for _t, ref in _s.referrers([key]):
                if self._loaded(ref):
                    live = key in self.refs_of.get(ref, ())
                else:
                    blob = _s.get_refs(ref[0], ref[1])
                    live = blob is not None and key in _parse_refs(blob)
                if live:
                    break
            if not live:
                self.release([key[1]])

    def checkpoint(self, full=0):
        """Write what changed in one transaction.  full: also re-pickle every
        loaded mutable entry (catches in-place mutation).  The C half skips
        interval ones when no request ran since the last."""
        if not full and not self.dirty and not self.deleted and \
                _s.dict_version(self.ns) == self.ns_version and \
                not _s.session_dirty():
            return 0    # the no-op request's path: O(1)
        t0 = _time.perf_counter()
        if self.hidden_check:
            self._collect_hidden()
        self.collect_dirty_globals()
        retry = ()
        if self.unwritten and (full or self.deleted):
            # records a full store could not take: tried again when there
            # may be room (a sync, close or interval checkpoint, or one
            # that deletes), not by every request, so that a read or a
            # small write does not pay for (and fail on) a big one
            retry = set(k for k in self.unwritten if k not in self.deleted)
            self.dirty.update(retry)
        if self.orphans:
            self._hold_orphans()
        t1 = _time.perf_counter()
        keys = self.dirty
        if full:
            keys = set(keys)
            keys.update(self._mutable_keys(full))
        regroup = ()
        if self.group_of:
            keys, regroup = self._with_groups(keys)
        batch = self.batch
        batch.clear()
        d = _dumper()
        if keys:
            _n, failed = batch.dump_keys(d.plain, d.sink, self.idmap, keys,
                                         self.shadow, self.handles,
                                         self.handle_flags, self.digests,
                                         Placeholder)
            for item in failed:
                self._slow_record(batch, d, *item)
            for first in regroup:
                self._forget_group(first)
            unwritten = [comp for comp in self._cycles(batch)
                         if not self._write_group(batch, d, comp)]
            cyclic = self._cyclic(batch) if unwritten else None
            if cyclic:
                # cycles left (a group that could not be pickled): one
                # record of each holds the other objects by value instead,
                # or no record of the cycle could ever be loaded first
                batch.drop(cyclic)
                for key in cyclic:
                    obj = (self.shadow if key[0] == "g" else
                           self.handles).get(key[1], _MISSING)
                    if obj is not _MISSING:
                        self._slow_record(batch, d, key, obj,
                                          self.handle_flags.get(key[1], 0)
                                          if key[0] == "h" else 0,
                                          _record_type_name(
                                              obj, self._base(key)),
                                          noref=True)
            if self.volatile:
                bad = set(item[0] for item in failed)
                for key in keys:
                    if key not in bad:
                        self.volatile.pop(key, None)
        refs_of = self.refs_of
        for k in self.deleted:
            if _storable(k):
                batch.delete(k)
                for t in refs_of.get(k, ()):    # its index rows go with it
                    batch.unref(t, k)
                    if t[0] == "h" and self._is_hidden(t):
                        self.hidden_check.add(t)
        if not len(batch) and not self.unrefs and not _s.session_dirty():
            self.dirty.clear()
            return 0
        for target, ref in self.unrefs:
            batch.unref(target, ref)
        t2 = _time.perf_counter()
        short = None
        held = self._held_by_unwritten(batch) if self.unwritten else None
        try:
            if held:
                # records that refer to an entry still unwritten wait
                # for it: committing them now would point at a missing one
                n, noted, short = self._commit_what_fits(batch, None, held)
            else:
                n, noted = batch.commit(self.digests, self.refs_of)
        except _s.StoreFull as e:
            n, noted, short = self._commit_what_fits(batch, e)
        finally:
            batch.clear()
        t3 = _time.perf_counter()
        self.unrefs = [] if short is None else short[1]
        self.last_checkpoint_s = t3 - t0
        self.last_checkpoint_phases = (t1 - t0, t2 - t1, t3 - t2)
        self.entries_written += n
        self.checkpoints += 1
        for key, refs in noted:
            self._note_refs(key, refs, True)
            if refs:
                self.stored_refs = True
        digests = self.digests
        for k in self.deleted if short is None else short[2]:
            digests.pop(k, None)
            self.volatile.pop(k, None)
            self.lost_entries.pop(k, None)
            self.frozen.pop(k, None)
            self.unwritten.pop(k, None)
            if k in self.refs_of:
                self._note_refs(k, b"")     # rows deleted in the commit
        if self.unwritten:
            for k in self.dirty:
                self.unwritten.pop(k, None)
        if short is not None and (short[0] or not self._deletes_done(
                short[2])):
            # a request's checkpoint that only retried what an earlier
            # one left out (its del did not free enough) is not the
            # request's failure: its reply stands, with a notice
            return self._checkpoint_short(short, not full and all(
                k in retry for k in short[0]))
        self.dirty.clear()
        self.deleted.clear()
        # released handles are gone from the store now: no need to guard
        # against loading them (keeps memory flat under handle churn)
        self.released.clear()
        return n

    def _held_by_unwritten(self, batch):
        """The records of batch that refer to an entry not written for
        lack of space and not in batch (the checkpoint did not retry it),
        or to such a record: they must wait for it."""
        recs = batch.refs()
        if not recs:
            return None
        keys = set(k for k, _b, _r in batch.records())
        referrers = {}
        todo = []
        for k, r in recs:
            for t in _parse_refs(r):
                referrers.setdefault(t, []).append(k)
                if t in self.unwritten and t not in keys:
                    todo.append(k)
        held = set()
        while todo:              # and what refers to those, transitively
            k = todo.pop()
            if k not in held:
                held.add(k)
                todo.extend(referrers.get(k, ()))
        return held

    def _commit_what_fits(self, batch, err, held=None):
        """The whole batch did not fit in the store (err: StoreFull).
        Commit what does, in several transactions: first the deletes
        (they free space), then the records smallest first, halving the
        part tried until one fits.  A record is committed only with or
        after the records in the batch it refers to, and a delete only
        once no record left out refers to the key deleted (its stored
        record still does), so that the store never holds a reference to
        an entry it lacks.  held: records left out from the start.
        Returns (records written, their refs to note, (left out {key:
        bytes}, index rows left, deletes committed, {left out: the entry
        it waits for}, records written, another store error that stopped
        it or None)); what is left stays pending for the next checkpoint.
        A store error other than full stops it too, with what was
        committed so far noted, so that the bookkeeping stays true."""
        recs = batch.records()
        size = {k: b for k, b, _r in recs}
        deps, refs = {}, {}
        for k, _b, r in recs:
            if r:
                refs[k] = _parse_refs(r)
                ts = [t for t in refs[k] if t in size and t != k]
                if ts:
                    deps[k] = ts
        cost = _cost_of(size, deps)
        order = sorted((k for k in size if not held or k not in held),
                       key=cost.__getitem__)
        old_refs = {}                 # record -> targets of its stored one
        for k in size:
            old_refs[k] = set(self.refs_of.get(k, ()))
        for t, k in self.unrefs:
            if k in old_refs:
                old_refs[k].add(t)
        dels = [k for k in self.deleted if _storable(k)]
        del_set = set(dels)
        rows = [(t, k) for k in dels for t in self.refs_of.get(k, ())]
        rows.extend(self.unrefs)
        done, done_dels, done_rows = set(), set(), set()
        written, noted, other = 0, [], []

        def attempt(part):
            nonlocal written
            # with the records of the batch they refer to (only those of
            # a cycle are not before them in order)
            part = set(k for k in part if k not in done)
            todo = [t for k in part for t in deps.get(k, ())]
            while todo:
                t = todo.pop()
                if t not in part and t not in done:
                    part.add(t)
                    todo.extend(deps.get(t, ()))
            out = set(size) - done - part
            blocked = set()
            for k in out:
                blocked |= old_refs[k]
            dnow = [d for d in dels if d not in done_dels and
                    d not in blocked]
            ok_dels = done_dels.union(dnow)
            rnow = [r for r in rows if r not in done_rows and
                    r[1] not in out and
                    (r[1] not in del_set or r[1] in ok_dels)]
            if other or (not part and not dnow and not rnow):
                return False
            try:
                n, nt = batch.commit_part(self.digests, self.refs_of,
                                          part, dnow, rnow)
            except _s.StoreFull:
                return False
            except (_s.StoreError, _s.CorruptEntry) as e:
                other.append(e)       # not for lack of room: stop there
                return False
            written += n
            noted.extend(nt)
            done.update(part)
            done_dels.update(dnow)
            done_rows.update(rnow)
            return True

        lo, hi = 0, len(order)
        if err is None:
            # not (yet) known not to fit: only the held records are out
            if attempt(order):
                lo = hi
            else:
                err = _s.StoreFull("store is full")
        if lo < hi and attempt(()) and done_dels and attempt(order[lo:]):
            lo = hi                   # the deletes made room for the rest
        # order[lo:hi] does not fit as a whole: halve until a part does
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(order[lo:mid]):
                lo = mid
            else:
                hi = mid
        attempt(())                   # deletes no longer held back
        left = {k: size[k] for k in order[lo:] if k not in done}
        if held:
            left.update((k, size[k]) for k in held)
        waits = {}                    # left out for another left out
        for k in left:
            for t in refs.get(k, ()):
                if t != k and (t in left or t in self.unwritten):
                    waits[k] = t
                    break
        return written, noted, (left, [r for r in self.unrefs
                                       if r not in done_rows],
                                done_dels, waits, written,
                                other[0] if other else None)

    def _deletes_done(self, done_dels):
        return all(k in done_dels for k in self.deleted if _storable(k))

    def _checkpoint_short(self, short, quiet=False):
        """After _commit_what_fits: keep what was left out pending (its
        records are retried when there may be room, its deletes by the next
        checkpoint) and raise StoreFull naming it; quiet: only a notice
        on the client's stderr instead (what was left out is what earlier
        checkpoints left out), and return the records written."""
        left, _rows, done_dels, waits, _n, other = short
        self.unwritten.update(left)
        self.deleted -= done_dels
        self.released.difference_update(k[1] for k in done_dels
                                        if k[0] == "h")
        self.dirty.clear()

        def named(keys, limit=10):
            keys = sorted(keys, key=lambda k: -left[k])
            names = ["%s (%s)" % (_keystr(k), _fmt_bytes(left[k]))
                     for k in keys[:limit]]
            if len(keys) > limit:
                names.append("%d more" % (len(keys) - limit))
            return ", ".join(names)

        nofit = [k for k in left if k not in waits]
        dels = sum(1 for k in self.deleted if _storable(k))
        parts = []
        if nofit or dels or not waits:
            what = named(nofit)
            if dels:
                what += "%s%d deletion%s" % (", " if what else "", dels,
                                             "s" if dels > 1 else "")
            parts.append("%s not written: %s" % (
                what, str(other) if other is not None else
                _full_why(max(left[k] for k in nofit) if nofit else 0)))
        if waits:
            first = sorted(waits, key=lambda k: -left[k])[0]
            parts.append("%s held back: %s" % (
                named(waits), "it refers to %s" % _keystr(waits[first])
                if len(waits) == 1 else "they refer to entries not written"))
        text = ("checkpoint incomplete: %s; everything else is committed.  "
                "What was not written stays in this backend's memory and is "
                "written by the next checkpoint that finds room (after a "
                "del, or once space is freed on the disk: sync())" %
                "; ".join(parts))
        if quiet and not dels and other is None:
            self.store_notices.append(text.replace(
                "checkpoint incomplete:", "still pending:",
                1))
            return short[4]
        raise (_s.StoreFull if other is None else _s.StoreError)(text)

    # An interval checkpoint re-pickles at most this many loaded mutable
    # entries, round robin, so that its pause stays bounded in a large
    # workspace; sync, detach and shutdown (full=2) take them all.
    INTERVAL_SLICE = 20000

    def _mutable_keys(self, full):
        """Loaded entries whose reachable state can change in place
        (invisible to the namespace diff): all of them, or the interval's
        slice.  Only those made of immutable atoms alone are left out
        (_frozen; known ones cached by key while the key holds them)."""
        keys = []
        frozen = self.frozen
        for kind, table in (("g", self.shadow), ("h", self.handles)):
            for k, o in table.items():
                t = type(o)
                if t in _ATOM_TYPES:
                    continue
                if t is tuple or t is frozenset or issubclass(t, tuple):
                    key = (kind, k)
                    f = frozen.get(key)
                    if f is o:
                        continue
                    if _frozen(o):
                        frozen[key] = o
                        continue
                    if f is not None:
                        del frozen[key]
                    keys.append(key)
                else:
                    keys.append((kind, k))
        if full >= 2 or len(keys) <= self.INTERVAL_SLICE:
            return keys
        start = self.rr_pos % len(keys)
        part = keys[start:start + self.INTERVAL_SLICE]
        if len(part) < self.INTERVAL_SLICE:
            part.extend(keys[:self.INTERVAL_SLICE - len(part)])
        self.rr_pos = start + self.INTERVAL_SLICE
        return part

    # -- cycles of entries: one record for them all (EntryGroup) --
    def _with_groups(self, keys):
        """keys, with every member of the groups of the keys among them
        (and of deleted keys): a group's record holds all its objects, so
        one changed member means the whole group is pickled again.
        Returns (keys, the first keys of those groups)."""
        if len(self.group_of) < len(keys):
            firsts = {f for k, f in self.group_of.items()
                      if k in keys or k in self.deleted}
        else:
            firsts = {self.group_of[k] for k in keys if k in self.group_of}
            firsts.update(self.group_of[k] for k in self.deleted
                          if k in self.group_of)
        if not firsts:
            return keys, ()
        keys = set(keys)
        for first in firsts:
            for k in self.groups[first].keys:
                if k not in keys and k not in self.deleted and \
                        self._entry_obj(k) is not _MISSING:
                    keys.add(k)
        return keys, firsts

    def _entry_obj(self, key):
        """key's object, loaded if need be; _MISSING when it cannot be."""
        kind, k = key
        obj = (self.shadow if kind == "g" else self.handles).get(k, _MISSING)
        if obj is not _MISSING:
            return obj
        try:
            return self.ns[k] if kind == "g" else self.get_handle(k)
        except Exception:
            return _MISSING

    def _cycles(self, batch):
        """The cycles (strongly connected components) of references that
        the batch's records close, through stored records too."""
        new = {k: _parse_refs(v) for k, v in batch.refs()}
        if not new:
            return []
        graph = dict(new)
        # a record is on a cycle only if one of its targets refers to
        # something: the common case (many records that refer to a few
        # entries that refer to nothing) needs no walk
        edges = self._edges(graph)
        live = {t for t in set().union(*new.values()) if edges(t)}
        if not live:
            return []
        roots = [k for k, ts in new.items() if not live.isdisjoint(ts)]
        return self._sccs(roots, new, edges)

    def _edges(self, graph):
        """edges(key): the entries key's record refers to: from graph (the
        batch's records, then those looked up, cached there), the loaded
        records' refs_of, or the store."""
        refs_of = self.refs_of

        def edges(k):
            t = graph.get(k)
            if t is None:
                t = refs_of.get(k)
                if t is None:
                    blob = _s.get_refs(k[0], k[1]) if _storable(k) else None
                    t = _parse_refs(blob) if blob else ()
                graph[k] = t
            return t
        return edges

    def _write_group(self, batch, d, comp):
        """Write the entries of one cycle as an EntryGroup: the first key's
        record holds every object of the cycle, pickled together (other
        entries' objects by reference, as usual); the others' records are
        group_member(<first>, index).  False, and the batch left as it is,
        when the group cannot be pickled (the cycle is then broken as
        before)."""
        keys = tuple(sorted(comp, key=repr))
        objs = tuple(self._entry_obj(k) for k in keys)
        if any(o is _MISSING or type(o) is Placeholder for o in objs):
            return False
        group = EntryGroup(keys, objs)
        _tblib()
        try:
            pickler, flags, parts, refs = d.cloud_dump(group, False, None,
                                                       set(keys))
        except Exception:
            return False
        batch.drop(list(keys))
        for k in keys:
            self.volatile.pop(k, None)
        first = keys[0]
        self._add_record(batch, first, pickler, flags | self._base(first),
                         _record_type_name(objs[0], self._base(first)),
                         refs, parts)
        ref = _encode_refs((first,))
        for i in range(1, len(keys)):
            self._add_record(batch, keys[i], PICKLER_PICKLE,
                             self._base(keys[i]),
                             _record_type_name(objs[i], self._base(keys[i])),
                             ref,
                             [_member_pickle(first, i)])
        self._note_group(first, group)
        return True

    def _base(self, key):
        return self.handle_flags.get(key[1], 0) if key[0] == "h" else 0

    def _add_record(self, batch, key, pickler, flags, tn, refs, parts):
        """Add key's record to the batch unless the store holds one with
        the same digest."""
        digest = _s.digest(parts, flags, refs)
        if self.digests.get(key) != digest:
            batch.add(key, pickler, flags, tn, refs, digest, parts)

    def _cyclic(self, batch):
        """Keys of the batch's records to pickle without references so that
        no cycle of records remains (through records already stored, too):
        one record per cycle, so most references, and identity, stay."""
        new = {k: _parse_refs(v) for k, v in batch.refs()}
        if not new:
            return None
        graph = dict(new)
        edges = self._edges(graph)
        broken = set()
        while True:
            sccs = self._sccs(new, new, edges)
            if not sccs:
                return broken
            for comp in sccs:
                # the newest record of the cycle holds the others by value
                key = max((c for c in comp if c in new), key=repr)
                broken.add(key)
                graph[key] = ()

    def _sccs(self, roots, new, edges):
        """Strongly connected components (of more than one record) reached
        from roots that contain a record of this checkpoint (new): Tarjan,
        iteratively."""
        index, low, onstack, stack, out = {}, {}, set(), [], []
        counter = [0]
        for root in roots:
            if root in index:
                continue
            work = [(root, iter(edges(root)))]
            index[root] = low[root] = counter[0]
            counter[0] += 1
            stack.append(root)
            onstack.add(root)
            while work:
                v, it = work[-1]
                for w in it:
                    if w not in index:
                        index[w] = low[w] = counter[0]
                        counter[0] += 1
                        stack.append(w)
                        onstack.add(w)
                        work.append((w, iter(edges(w))))
                        break
                    if w in onstack:
                        low[v] = min(low[v], index[w])
                else:
                    work.pop()
                    if work:
                        u = work[-1][0]
                        low[u] = min(low[u], low[v])
                    if low[v] == index[v]:
                        comp = []
                        while True:
                            w = stack.pop()
                            onstack.discard(w)
                            comp.append(w)
                            if w == v:
                                break
                        if len(comp) > 1 and any(c in new for c in comp):
                            out.append(comp)
        return out

    def _slow_record(self, batch, d, key, obj, base, tn, noref=False):
        """An entry the C pickler could not take: cloudpickle, or volatile
        (recorded with its reason; the object stays in memory).  noref:
        pickled with no persistent references (breaking a cycle)."""
        if not _storable(key):
            # the key itself cannot be stored (a name that is empty, longer
            # than KEY_MAX or not UTF-8): in memory only, and said so once;
            # nothing is pickled (the IdMap never maps such a key, so no
            # other record refers to it)
            reason = "its name cannot be a store key: %s" % (
                _name_error(key[1]),)
            if self.volatile.get(key) != reason:
                self.notices.append((key, tn, reason))
            self.volatile[key] = reason
            return
        _tblib()
        try:
            pickler, flags, parts, refs = d.cloud_dump(obj, noref, key)
            flags |= base
            self.volatile.pop(key, None)
        except Exception as e:
            reason = "%s: %s" % (type(e).__name__, _exc_message(e))
            if self.volatile.get(key) != reason:
                self.notices.append((key, tn, reason))
            self.volatile[key] = reason
            pickler, flags, refs = PICKLER_NONE, base | FLAG_VOLATILE, b""
            parts = [reason.encode("utf-8", "replace")]
        try:
            self._add_record(batch, key, pickler, flags, tn, refs, parts)
        except (ValueError, UnicodeError) as e:
            # the key itself cannot be stored (a name of more than 480
            # bytes, or not encodable): in memory only, and said so
            reason = "its name cannot be a store key: %s" % _exc_message(e)
            if self.volatile.get(key) != reason:
                self.notices.append((key, tn, reason))
            self.volatile[key] = reason

    def volatile_reason(self, key):
        """Why key could not be persisted, or None."""
        return self.volatile.get(key)

    def take_notices(self):
        out, self.notices = self.notices, []
        return out


_MISSING = object()
_UNLOADED = object()   # an entry's old object that was never loaded


def _storable(key):
    """Can key be a store key?  (Global names: 1 to KEY_MAX UTF-8 bytes.)"""
    if key[0] != "g":
        return True
    try:
        return 0 < len(key[1].encode("utf-8")) <= _s.KEY_MAX
    except UnicodeError:
        return False


def _encode_refs(keys):
    """A refs blob for keys (as idmap_encode_ref in exec/pymod.c)."""
    out = bytearray()
    for kind, k in keys:
        raw = k.encode("utf-8") if kind == "g" else k.to_bytes(8, "big")
        out += kind.encode() + len(raw).to_bytes(2, "big") + raw
    return bytes(out)


_FIRST = object()


class _Member:
    __slots__ = ("i",)

    def __init__(self, i):
        self.i = i

    def __reduce__(self):
        return (group_member, (_FIRST, self.i))


def _member_pickle(first, i):
    """The pickle of a group member's record: group_member(<first>, i),
    <first> a persistent reference to the group's first entry."""
    f = io.BytesIO()
    p = pickle.Pickler(f, protocol=5)
    p.persistent_id = lambda o: first if o is _FIRST else None
    p.dump(_Member(i))
    return f.getvalue()


_REFS_PARSED = {}     # refs blob -> its keys: records often share one


def _parse_refs(blob):
    """Decode a refs blob: (u8 kind, u16 length, key bytes)*, into a tuple
    of entry keys.  Cached by the blob's bytes: the records of a workspace
    tend to refer to the same few entries (10,000 dicts that each hold one
    shared list have one blob between them)."""
    if type(blob) is not bytes:
        return _parse_refs_raw(blob)
    keys = _REFS_PARSED.get(blob)
    if keys is None:
        if len(_REFS_PARSED) >= 4096:
            _REFS_PARSED.clear()
        keys = _REFS_PARSED[blob] = _parse_refs_raw(blob)
    return keys


def _parse_refs_raw(blob):
    out = []
    i, n = 0, len(blob)
    while i + 3 <= n:
        kind = chr(blob[i])
        ln = (blob[i + 1] << 8) | blob[i + 2]
        raw = bytes(blob[i + 3:i + 3 + ln])
        i += 3 + ln
        if kind == "g":
            out.append(("g", raw.decode("utf-8", "surrogateescape")))
        else:
            out.append(("h", int.from_bytes(raw, "big")))
    return tuple(out)


def _fmt_bytes(n):
    """n bytes for a person: '812 bytes', '95.4 MB'."""
    if n < 1000:
        return "%d bytes" % n
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            return "%.1f %s" % (n, unit)


def _cost_of(size, deps):
    """{record: (bytes, depth)}: the most bytes among it and the records
    it refers to (deps, transitively), and how deep it is among them, so
    that sorting by it puts a record after those it refers to.  Iterative:
    a chain of references may be as long as the batch."""
    cost = {}
    for root in size:
        if root in cost:
            continue
        stack, path = [(root, iter(deps.get(root, ())))], {root}
        while stack:
            k, it = stack[-1]
            for t in it:
                if t not in cost and t not in path:
                    path.add(t)
                    stack.append((t, iter(deps.get(t, ()))))
                    break
            else:
                stack.pop()
                path.discard(k)
                c0, c1 = size[k], 0
                for t in deps.get(k, ()):
                    tc = cost.get(t)     # None: a cycle back to the path
                    if tc is not None:
                        c0, c1 = max(c0, tc[0]), max(c1, tc[1] + 1)
                cost[k] = (c0, c1)
    return cost


def _full_why(need):
    """Which limit a checkpoint of need more bytes ran into: the disk, or
    the store's --map-max."""
    try:
        map_max, disk_free = _s.room()
    except Exception:
        return "the store is full"
    if 0 <= disk_free < need + (1 << 20):
        return ("the disk is full (%s free on the store's file "
                "system)" % _fmt_bytes(disk_free))
    for shift, unit in ((40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if map_max >= 1 << shift and map_max % (1 << shift) == 0:
            return "the store is full (--map-max %d%s)" % (map_max >> shift,
                                                      unit)
    return "the store is full (--map-max %d)" % map_max


def _keystr(key):
    kind, k = key
    return ("global %s" % _name_repr(k)) if kind == "g" else \
        ("handle %d" % k)


def _scan_code(cache, code, scan):
    """What scan(c, found) adds to the set found for code and for every
    code object nested in it (functions, classes, comprehensions defined
    there), as a frozenset.  Cached in cache by identity (a code object's
    hash walks all of it), at most 4,096 of them."""
    hit = cache.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    found, todo = set(), [code]
    while todo:
        c = todo.pop()
        scan(c, found)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    found = frozenset(found)
    if len(cache) > 4096:
        cache.clear()
    cache[id(code)] = (code, found)
    return found


_NAMES = {}   # id(code) -> (code, the names it and its nested code use)


def _code_names(code):
    """The names (co_names) that code and the code objects nested in it
    use: globals, attributes and imports alike."""
    return _scan_code(_NAMES, code, lambda c, found: found.update(c.co_names))


def _codes_of(obj, ns):
    """The code objects of the workspace functions that calling obj, or
    its methods, may run: obj itself when it is a function of the
    workspace (its globals are ns); the methods, static and class methods
    and properties of obj when it is a class defined by shipped code, or
    of its class when it is an instance of one."""
    if type(obj) is types.FunctionType:
        return [obj.__code__] if obj.__globals__ is ns else []
    cls = obj if issubclass(type(obj), type) else type(obj)
    out = []
    for c in cls.__mro__:
        d = c.__dict__       # no attribute hooks of shipped classes run
        if d.get("__module__") != "__pyshelf__":
            continue
        for v in d.values():
            if type(v) in (staticmethod, classmethod):
                v = v.__func__
            if type(v) is property:
                fs = (v.fget, v.fset, v.fdel)
            else:
                fs = (v,)
            for f in fs:
                if type(f) is types.FunctionType and f.__globals__ is ns:
                    out.append(f.__code__)
    return out


WS = None

# --- compiling shipped code --------------------------------------------------


_SOURCES = {}          # filenames in linecache that we put there, oldest first
# Twice the code cache's bound: the code cache is emptied when it passes 4,096
# entries, so every code object in it was compiled, and its source
# remembered, fewer than 8,192 sources ago: code that can run without being
# compiled again always has its lines for tracebacks.
_SOURCES_MAX = 8192


def _remember_source(filename, source):
    """Let tracebacks show the shipped source's lines: the most recently
    shipped _SOURCES_MAX sources stay in linecache, older ones are dropped
    from it (every distinct source kept forever grew memory without
    bound: 20,000 blocks of 2 KB took 50 MB)."""
    import linecache
    linecache.cache[filename] = (len(source), None,
                                 source.splitlines(True), filename)
    _SOURCES.pop(filename, None)
    _SOURCES[filename] = True
    while len(_SOURCES) > _SOURCES_MAX:
        old = next(iter(_SOURCES))
        del _SOURCES[old]
        linecache.cache.pop(old, None)


def _compile_block(source, digest):
    """REPL semantics: run the block; the value of a final expression is
    the result."""
    filename = "<pyshelf:block:%s>" % digest.hex()[:12]
    tree = ast.parse(source, filename, "exec")
    _remember_source(filename, source)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
        last = compile(last, filename, "eval")
    body = compile(tree, filename, "exec")
    return body, last


def _get_function(source, name, digest):
    """Define the shipped function once per source digest: its globals are
    the workspace, but defining it does not bind a workspace global."""
    key = (digest, name)
    f = WS.code_cache.get(key)
    if f is not None:
        return f
    filename = "<pyshelf:%s:%s>" % (name, digest.hex()[:12])
    code = compile(source, filename, "exec")
    _remember_source(filename, source)
    scratch = {}
    exec(code, WS.ns, scratch)
    f = scratch.get(name)
    if f is None or not callable(f):
        raise RequestError(ERR_BAD_REQUEST,
                           "the shipped source defines no callable %r" % name)
    # A function that calls itself looks its name up in the workspace's
    # globals: bind it there (only then), as a REPL would.
    fc = getattr(f, "__code__", None)
    if fc is not None and name in fc.co_names:
        WS.ns[name] = f
    if len(WS.code_cache) > 4096:
        WS.code_cache.clear()
    WS.code_cache[key] = f
    return f


_DELETED = {}   # id(code) -> (code, the names its DELETE_GLOBALs delete)
_DELETE_GLOBAL = bytes([__import__("opcode").opmap["DELETE_GLOBAL"]])


def _deleted_globals(code):
    """The globals that code (or a function or class defined in it)
    deletes with a `global x; del x`."""
    return _scan_code(_DELETED, code, _scan_deletes)


def _scan_deletes(c, found):
    # opcodes are the even bytes: dis only for code that has the one
    if _DELETE_GLOBAL in c.co_code[::2]:
        import dis
        found.update(i.argval for i in dis.get_instructions(c)
                     if i.opname == "DELETE_GLOBAL")


def _load_deleted_globals(code):
    """A function's `del x` of a global (DELETE_GLOBAL) writes the dict
    directly, where no hook loads a global stored but not loaded yet: it
    would raise NameError.  Load those globals first."""
    ns = WS.ns
    for name in _deleted_globals(code):
        if not dict.__contains__(ns, name) and ("g", name) not in WS.deleted \
                and _storable(("g", name)) and \
                _s.flags("g", name) is not None:
            try:
                WS._load_global(name, True)
            except Exception:
                pass    # left as stored: the del then says NameError


# Dunders the interpreter itself binds in a module's namespace (a block's
# docstring, annotations): never reported.
_MODULE_DUNDERS = frozenset(("__name__", "__builtins__", "__doc__",
                             "__annotations__", "__file__", "__spec__",
                             "__loader__", "__package__", "__cached__"))
_DUNDER_STORES = {}   # id(code) -> (code, the __x__ names it binds)


def _dunder_stores(code):
    """The __x__ globals that code (or a function or class defined in it)
    binds with STORE_NAME/STORE_GLOBAL, but the module machinery's own."""
    return _scan_code(_DUNDER_STORES, code, _scan_dunder_stores)


def _scan_dunder_stores(c, found):
    # dis only for code that names a dunder at all
    if any(_dunder(n) and n not in _MODULE_DUNDERS for n in c.co_names):
        import dis
        found.update(i.argval for i in dis.get_instructions(c)
                     if i.opname in ("STORE_NAME", "STORE_GLOBAL") and
                     _dunder(i.argval) and i.argval not in _MODULE_DUNDERS)


def _note_dunder_globals(code):
    """Code that binds a __x__ global (`__version__ = '1.2'`) binds a name
    of the backend's own namespace, which is not a workspace global (not
    listed, not persisted): say so, once per name and object, as for any
    global that cannot be persisted."""
    ns = WS.ns
    for name in _dunder_stores(code):
        obj = dict.get(ns, name, _MISSING)
        if obj is _MISSING:
            continue
        key = ("g", name)
        if WS.dunder_noted.get(name) is obj:
            continue
        WS.dunder_noted[name] = obj
        WS.notices.append((key, _type_name(obj), _name_error(name)))


def _get_block(source, digest):
    key = (digest, None)
    c = WS.code_cache.get(key)
    if c is None:
        c = _compile_block(source, digest)
        if len(WS.code_cache) > 4096:
            WS.code_cache.clear()
        WS.code_cache[key] = c
    return c


# --- requests (called by the C half) ----------------------------------------

def init(read_only=0):
    """Create the workspace; called once after the store is open.
    read_only: the session is open read-only (flag 'r'): nothing is ever
    written, and checkpoint() says so."""
    global WS
    _setup_process()
    WS = Workspace()
    WS.read_only = bool(read_only)
    return WS.ns


# --- what shipped code may do to the process ----------------------------------

class _OutputBuffer(io.RawIOBase):
    """sys.stdout.buffer / sys.stderr.buffer: bytes written reach the
    client as they are."""

    def __init__(self, stream, name):
        io.RawIOBase.__init__(self)
        self._stream = stream
        self.name = name
        self.mode = "wb"

    def write(self, b):
        with memoryview(b) as m:
            n = m.nbytes
            _s.output(self._stream, m.cast("B") if m.ndim != 1 or
                      m.format != "B" else m)
        return n

    def writable(self):
        return True

    def fileno(self):
        return self._stream

    def isatty(self):
        return False

    def close(self):
        pass        # the backend's, shared by every request: stays open

    def __repr__(self):
        return "<pyshelf output buffer %s>" % self.name


class OutputStream(io.TextIOBase):
    """sys.stdout / sys.stderr of shipped code: a text stream whose writes
    reach the client as output of the running request (OUTPUT frames);
    fileno() is fd 1 or 2, a pipe pyshelfd forwards the same way, so that
    C code, faulthandler and child processes reach the client too.  It is
    the backend's for every request: close() leaves it open."""

    def __init__(self, stream, name, errors):
        io.TextIOBase.__init__(self)
        self._stream = stream
        self._name = name
        self._errors = errors
        self._buffer = _OutputBuffer(stream, name)
        # print() calls write for every piece: C all the way (output()
        # takes str only through here: see write below for the checks)
        self.write = _functools.partial(_s.output, stream)

    encoding = property(lambda self: "utf-8")
    errors = property(lambda self: self._errors)
    buffer = property(lambda self: self._buffer)
    name = property(lambda self: self._name)
    mode = property(lambda self: "w")
    newlines = property(lambda self: None)
    line_buffering = property(lambda self: False)
    write_through = property(lambda self: True)

    def write(self, s):
        """(The class's; instances use output() bound to their stream.)"""
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" %
                            type(s).__name__)
        return _s.output(self._stream, s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass        # every write is sent at once

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def isatty(self):
        return False

    def fileno(self):
        return self._stream

    def detach(self):
        raise io.UnsupportedOperation("the backend's %s cannot be detached"
                                      % self._name)

    def close(self):
        pass        # see the class docstring

    def __repr__(self):
        return "<pyshelf output stream %s>" % self._name


# An effective recursion limit that the C stack can hold: CPython 3.11
# counts Python and C recursion together, and a level that goes through C
# (a __getattr__, map(), repr() of a nested list, pickling) takes up to
# ~800 bytes of stack here (measured: the 8 MiB main stack overflows near
# 10,000 __getattr__ levels).  sys.setrecursionlimit() in the backend is
# therefore capped at one level per RECURSION_BYTES_PER_LEVEL bytes of the
# stack (8 MiB: 4096), so that an unbounded recursion is a RecursionError,
# never a SIGSEGV of pyshelfd.
RECURSION_BYTES_PER_LEVEL = 2048
RECURSION_CAP = 4096
_real_setrecursionlimit = sys.setrecursionlimit


def _stack_bytes():
    """The smaller of the main thread's stack limit and a new thread's
    default stack (both follow RLIMIT_STACK; unlimited counts as 8 MiB, a
    thread's default then)."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    except (ImportError, OSError, ValueError):
        soft = -1
    if soft < 0 or soft == getattr(resource, "RLIM_INFINITY", -1):
        soft = 8 << 20
    return soft


def setrecursionlimit(limit):
    """sys.setrecursionlimit() in the backend: as the standard one, but the
    effective limit is at most RECURSION_CAP (see above); read it back
    with sys.getrecursionlimit()."""
    if not isinstance(limit, int):
        raise TypeError("an integer is required")
    if limit < 1:
        raise ValueError("recursion limit must be greater or equal than 1")
    _real_setrecursionlimit(min(limit, RECURSION_CAP))


def _after_fork_child():
    """A child forked by shipped code (os.fork(), multiprocessing's fork):
    it is a plain Python process from now on.  The C half has already cut
    it off the protocol and the store (worker.c, pystore.c); here SIGINT
    and SIGTERM get their usual meaning back (a Pool's terminate() must
    end its workers quietly), and signals no longer wake the parent."""
    import signal
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except (ValueError, OSError):
        pass        # not the main thread: the C handler does the same


def _ws_function(code, name, qualname, defaults, kwdefaults):
    """A function of shipped code, rebuilt in a process forked from this
    one (multiprocessing's fork context), on the workspace's globals."""
    import marshal
    f = types.FunctionType(marshal.loads(code), WS.ns, name, defaults)
    f.__qualname__ = qualname
    f.__kwdefaults__ = kwdefaults
    return f


def _fork_reducer_override(self, obj):
    """multiprocessing's ForkingPickler: a function defined by shipped code
    (its module, __pyshelf__, is not importable) goes by its code, so that
    Pool.map(f, ...) in a fork context works with it as with a function of
    a script's __main__.  (spawn and forkserver start a fresh interpreter:
    there, as anywhere, the function must be importable.)"""
    if type(obj) is types.FunctionType and WS is not None and \
            obj.__globals__ is WS.ns and not obj.__closure__:
        import marshal
        return (_ws_function, (marshal.dumps(obj.__code__), obj.__name__,
                               obj.__qualname__, obj.__defaults__,
                               obj.__kwdefaults__))
    return NotImplemented


def _patch_forking_pickler(module):
    fp = getattr(module, "ForkingPickler", None)
    if fp is not None:
        fp.reducer_override = _fork_reducer_override


class _ForkPicklingHook:
    """A meta path finder that only waits for multiprocessing.reduction to
    be imported (by shipped code), to patch its ForkingPickler then: at
    startup, importing multiprocessing would cost every resume."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "multiprocessing.reduction":
            return None
        import importlib.machinery
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or \
                not hasattr(spec.loader, "exec_module"):
            return spec
        orig = spec.loader.exec_module

        def exec_module(module):
            orig(module)
            _patch_forking_pickler(module)
        spec.loader.exec_module = exec_module
        return spec


def _setup_process():
    global RECURSION_CAP
    import os
    sys.stdout = OutputStream(1, "<stdout>", "strict")
    sys.stderr = OutputStream(2, "<stderr>", "backslashreplace")
    # fd 0 is /dev/null (worker.c): sys.stdin is a text stream at EOF, so
    # that input(), sys.stdin.read() and pdb get EOF at once
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False),
                                 encoding="utf-8")
    RECURSION_CAP = max(1000, _stack_bytes() // RECURSION_BYTES_PER_LEVEL)
    sys.setrecursionlimit = setrecursionlimit
    if sys.getrecursionlimit() > RECURSION_CAP:
        _real_setrecursionlimit(RECURSION_CAP)
    os.register_at_fork(after_in_child=_after_fork_child)
    if "multiprocessing.reduction" in sys.modules:
        _patch_forking_pickler(sys.modules["multiprocessing.reduction"])
    else:
        sys.meta_path.insert(0, _ForkPicklingHook)


def _child_missing(name):
    """A global the parent had not loaded, looked up in a process forked
    by shipped code, which must not read the store (LMDB after a fork):
    a builtin is found in the builtins (KeyError here), anything else is
    a NameError that says why."""
    if hasattr(builtins, name):
        raise KeyError(name)
    raise NameError("name %r is not loaded in this process, which was forked "
                    "by shipped code and cannot read the workspace's store: "
                    "use the global in the parent before forking" % name,
                    name=name)


def _child_exit(status, exc=None):
    """Shipped code returned in a process it forked: print the exception
    that ended it, if any, to the child's stderr (it reaches the client),
    and end the child without running anything of the backend's (no
    atexit, no finaliser: the store is the parent's)."""
    import os
    if exc is not None and not isinstance(exc, SystemExit):
        try:
            import traceback
            sys.stderr.write("".join(traceback.format_exception(exc)))
        except BaseException:
            pass
    os._exit(status)


def _exit_status(e):
    """The exit status SystemExit(e.code) gives, as the interpreter's."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xff
    try:
        sys.stderr.write(str(code) + "\n")
    except BaseException:
        pass
    return 1


# A WrappedExcinfo keeps at most the first and the last TB_KEEP frames of a
# traceback (an unbounded recursion has thousands), and at most
# CHAIN_KEEP exceptions of a __cause__/__context__ chain: tblib pickles a
# traceback as a chain of nested tuples, one C recursion level per frame.
TB_KEEP = 50
CHAIN_KEEP = 20


def _bound_traceback(exc):
    """Cut exc's traceback to its first and last TB_KEEP entries, noting
    how many were left out (as CPython's printing does for repeats)."""
    tbs = []
    tb = exc.__traceback__
    while tb is not None:
        tbs.append(tb)
        tb = tb.tb_next
    n = len(tbs)
    if n <= 2 * TB_KEEP:
        return
    keep = tbs[:TB_KEEP] + tbs[-TB_KEEP:]
    del tbs
    new = None
    for t in reversed(keep):
        new = types.TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
    exc.__traceback__ = new
    try:
        exc.add_note("[pyshelf: %d frames of this traceback were left out "
                     "between its first %d and its last %d]" %
                     (n - 2 * TB_KEEP, TB_KEEP, TB_KEEP))
    except Exception:
        pass


def _bound_excinfo(exc):
    """Bound the tracebacks of exc and of the exceptions it chains to, and
    the length of that chain."""
    seen = set()
    e, depth = exc, 0
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        _bound_traceback(e)
        nxt = e.__cause__ if e.__cause__ is not None else (
            None if e.__suppress_context__ else e.__context__)
        depth += 1
        if nxt is not None and depth >= CHAIN_KEEP:
            e.__cause__ = None
            e.__context__ = None
            try:
                e.add_note("[pyshelf: the exceptions this one was raised "
                           "from are left out past %d]" % CHAIN_KEEP)
            except Exception:
                pass
            break
        e = nxt


def _excinfo_result(exc):
    """A WrappedExcinfo for the exception being handled."""
    tb = exc.__traceback__
    # drop our own frame from the traceback
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    exc.__traceback__ = tb
    _bound_excinfo(exc)
    triple = (type(exc), exc, exc.__traceback__)
    _tblib()            # tracebacks pickle through tblib
    hid, _ = WS.new_handle(triple, FLAG_EXCINFO)
    return (KIND_EXCINFO, hid, "tuple", type(exc).__name__,
            _exc_message(exc), None)


def _other_threads():
    import threading
    main = threading.main_thread()
    return [t for t in threading.enumerate()
            if t is not main and t.is_alive()]


def threads_notice():
    """At detach: a notice naming the threads of shipped code still
    running, non-daemon ones apart ('' when there are none)."""
    threads = _other_threads()
    if not threads:
        return ""
    nd = [t.name for t in threads if not t.daemon]
    d = [t.name for t in threads if t.daemon]
    parts = []
    if nd:
        parts.append("non-daemon thread%s %s still running: pyshelfd waits "
                     "up to %g s for %s to end, then exits without %s" %
                     ("s" if len(nd) > 1 else "",
                      ", ".join(repr(n) for n in nd), THREAD_GRACE_S,
                      "them" if len(nd) > 1 else "it",
                      "them" if len(nd) > 1 else "it"))
    if d:
        parts.append("daemon thread%s %s stopped at exit" %
                     ("s" if len(d) > 1 else "",
                      ", ".join(repr(n) for n in d)))
    return ("pyshelf: at detach, %s; the workspace was checkpointed before, "
            "changes made after it by threads that do not end are lost\n"
            % "; ".join(parts))


THREAD_GRACE_S = 2.0    # for the notice: worker.c's WORKER_THREAD_GRACE_S


def nondaemon_threads():
    """How many non-daemon threads of shipped code are running."""
    return sum(1 for t in _other_threads() if not t.daemon)


def end_threads(grace):
    """At exit, after the final checkpoint: wait up to grace seconds for
    the non-daemon threads of shipped code, then let the interpreter's
    finalisation stop the rest as it stops daemon threads (it would
    otherwise wait for them forever, until the client kills us)."""
    import threading
    deadline = _time.monotonic() + grace
    for t in _other_threads():
        if t.daemon:
            continue
        left = deadline - _time.monotonic()
        if left > 0:
            t.join(left)
    # threading._shutdown() joins every lock in _shutdown_locks: drop
    # those of the threads that did not end (CPython 3.11's threading)
    locks = getattr(threading, "_shutdown_locks", None)
    lock = getattr(threading, "_shutdown_locks_lock", None)
    if locks is not None and lock is not None:
        with lock:
            locks.clear()


def exec_request(code, func, digest, args, want_value):
    """Run shipped code.  args: list of ints (handles) or bytes (pickles);
    the last pickle may hold the call's keyword arguments (_Kwargs).
    Returns (kind, handle, type_name, exc_type, message, value)."""
    del WS.request_codes[:], WS.request_keys[:]
    real = []
    for a in args:
        if type(a) is int:
            real.append(WS.get_handle(a))
        else:
            try:
                real.append(loads_value(a))
            except RequestError:
                raise           # an unknown handle inside the value
            except Exception as e:
                raise RequestError(ERR_UNPICKLE,
                                   "argument %d cannot be unpickled: %s: %s" %
                                   (len(real) + 1, type(e).__name__,
                                    _exc_message(e))) from None
    kw = real.pop() if real and type(real[-1]) is _Kwargs else {}
    codes = ()
    ran = None
    try:
        if func is not None:
            f = _get_function(code, func, digest)
            codes = _codes_of(f, WS.ns)
            if hasattr(f, "__code__"):
                ran = f.__code__
                _load_deleted_globals(ran)
            for c in WS.request_codes:
                _load_deleted_globals(c)
            res = f(*real, **kw)
        else:
            if real or kw:
                raise RequestError(ERR_BAD_REQUEST,
                                   "a block takes no arguments")
            body, last = _get_block(code, digest)
            codes = (body,) if last is None else (body, last)
            ran = body
            _load_deleted_globals(body)
            exec(body, WS.ns)
            res = eval(last, WS.ns) if last is not None else None
    except RequestError:
        if _s.in_child():
            _child_exit(1)
        raise
    except BaseException as e:
        if _s.in_child():
            # a process shipped code forked: it ends here, with the
            # status the exception gives; never a reply, never a commit
            _child_exit(_exit_status(e) if isinstance(e, SystemExit)
                        else 1, e)
        return _excinfo_result(e)
    finally:
        # what the code could reach by name, and the arguments passed by
        # handle, may have been changed in place: this request's
        # checkpoint pickles them again (and writes the changed ones)
        WS.mark_reached(tuple(codes) + tuple(WS.request_codes),
                        [("h", a) for a in args
                         if type(a) is int and a in WS.handles] +
                        WS.request_keys)
        if ran is not None:
            _note_dunder_globals(ran)
    if _s.in_child():
        _child_exit(0)
    return _result_for(res, want_value)


def _result_for(res, want_value):
    if isinstance(res, DirectValue) or res is None or want_value:
        value = res.value if isinstance(res, DirectValue) else res
        try:
            data = dumps_value(value)
        except Exception as e:
            raise RequestError(ERR_PICKLE,
                               "the result (%s) cannot be pickled: %s: %s" %
                               (_type_name(value), type(e).__name__,
                                _exc_message(e))) from None
        return (KIND_DIRECT, 0, _type_name(value), None, None, data)
    hid, _ = WS.new_handle(res)
    return (KIND_WRAPPED, hid, _type_name(res), None, None, None)


def _check_name(name):
    """A GET or DEL of a name that can never be a global's: a __x__ name
    is not found (the backend's own, not a global: keys() leaves them
    out); an empty one, one too long for the store, one that cannot be
    UTF-8 are the client's error."""
    why = _name_error(name)
    if why is None:
        return
    if _dunder(name):
        raise RequestError(ERR_NOT_FOUND, "no global %r: %s" % (name, why))
    raise RequestError(ERR_BAD_REQUEST, why)


def get_request(name, want_value):
    _check_name(name)
    try:
        obj = WS.ns[name]
    except KeyError:
        raise RequestError(ERR_NOT_FOUND, "no global %r" % name) from None
    except VolatileEntryError as e:
        raise RequestError(ERR_VOLATILE, str(e)) from None
    if not want_value:
        hid, _ = WS.new_handle(obj)
        return (KIND_WRAPPED, hid, _type_name(obj), None, None, None)
    try:
        data = dumps_value(obj)
    except Exception as e:
        raise RequestError(
            ERR_PICKLE, "global %r (%s) cannot be sent by value: %s: %s; "
            "use ws.wrap(%r) to get a handle to it" %
            (name, _type_name(obj), type(e).__name__, _exc_message(e),
             name)) from None
    return (KIND_DIRECT, 0, _type_name(obj), None, None, data)


def set_request(name, data):
    # refused before anything is bound: a global that could never be
    # stored (or listed) would be silently lost
    why = _name_error(name)
    if why is not None:
        raise RequestError(ERR_BAD_REQUEST, "cannot bind %s: %s" %
                           (_name_repr(name), why))
    try:
        obj = loads_value(data)
    except RequestError:
        raise           # an unknown handle inside the value
    except Exception as e:
        raise RequestError(ERR_UNPICKLE, "value for %r cannot be unpickled: "
                           "%s: %s" % (name, type(e).__name__,
                                       _exc_message(e))) from None
    WS.ns[name] = obj


def del_request(name):
    _check_name(name)
    try:
        del WS.ns[name]   # loads it first when stored but not loaded
    except KeyError:
        raise RequestError(ERR_NOT_FOUND, "no global %r" % name) from None


def keys_request():
    WS.collect_dirty_globals()
    names = set(_s.list_keys("g"))
    names.difference_update(k for kind, k in WS.deleted if kind == "g")
    names.update(n for n in WS.shadow)
    # names the wire cannot carry (NUL) are left out of the listing
    return sorted(n for n in names if not _dunder(n) and "\x00" not in n)


def handles_request():
    """The live handles but the hidden ones (pyshelfd's own), with their
    type names: rows (id, type name), and (id, type name, exc_type,
    message) for an exception's handle (FLAG_EXCINFO).  One not loaded is
    described by its record's header and type-name area (which holds an
    excinfo handle's exc_type and message: excinfo_type_name): one read,
    and no pass over its value (whose digest is checked when it is used),
    so that a listing costs the same whatever the handles hold, unpickles
    nothing, and a damaged record is listed (type "?") rather than
    failing the listing."""
    ids = set(_s.list_keys("h"))
    ids.difference_update(WS.released)
    ids.update(WS.handles)
    out = []
    for hid in sorted(ids):
        obj = WS.handles.get(hid, _MISSING)
        if obj is not _MISSING:
            flags, tn = WS.handle_flags.get(hid, 0), None
        else:
            try:
                head = _s.head("h", hid)
            except _s.CorruptEntry:
                head = (0, "?")
            if head is None:
                continue
            flags, tn = head
        if flags & FLAG_HIDDEN:
            continue
        if tn is None:
            tn = _record_type_name(obj, flags)
        tn, exc_type, message = _split_type_name(tn)
        if flags & FLAG_EXCINFO:
            # a record written before the type-name area held them
            out.append((hid, tn, exc_type or "", message or ""))
        else:
            out.append((hid, tn))
    return out


def lost_request():
    """Entries of the session that cannot be restored, as (name, type name,
    reason) rows; unpickles nothing, so that a listing never runs a
    stored pickle (and costs a read of each record not loaded, no more):

    - volatile: its record says it could not be persisted (FLAG_VOLATILE:
      its payload is the reason) and it did not survive the restart;
    - damaged: its record is unreadable or fails its digest check (read,
      not unpickled);
    - failed to load in this process: its class could not be imported (a
      Placeholder stands for it);
    - holding a lost one: its record refers (its refs) to an entry listed
      for one of the reasons above, so it cannot be loaded either (or, in
      memory, it holds that entry's Placeholder); the reason names that
      entry.

    An entry whose record is intact but whose class is gone is found when
    it is loaded (ws[name], use in code), not by this listing: finding it
    sooner would mean running its pickle.  Hidden handles (pyshelfd's own)
    are not listed; an entry that holds a lost one is.  Entries in memory
    (loaded, or bound by this backend, volatile ones too) are not lost."""
    lost = _lost_in_memory()      # key -> (type name, reason)
    refs = {}       # key -> (type name, the entries its record refers to)
    _lost_stored(lost, refs)
    _lost_holders(lost, refs)
    return _lost_rows(lost)


def _lost_in_memory():
    """The entries that failed to load in this backend (Placeholders), but
    those bound again since."""
    lost, ns = {}, WS.ns
    for key, (tn, reason) in WS.lost_entries.items():
        if key in WS.deleted:
            continue
        if key[0] == "g" and dict.__contains__(ns, key[1]) and \
                not isinstance(dict.__getitem__(ns, key[1]), Placeholder):
            continue    # bound again since
        lost[key] = (tn, reason)
    return lost


def _lost_stored(lost, refs):
    """Read each stored record not in memory (its digest checked, nothing
    unpickled): the damaged and the volatile ones go into lost, the refs
    of the others into refs."""
    ns = WS.ns
    stored = [("g", n) for n in _s.list_keys("g")]
    stored += [("h", h) for h in _s.list_keys("h") if h not in WS.released]
    for key in stored:
        if key in WS.deleted or key in lost or WS._loaded(key) or \
                (key[0] == "g" and dict.__contains__(ns, key[1])):
            continue    # gone, known, or in memory (loaded or bound)
        try:
            rec = _s.check(key[0], key[1])
        except _s.CorruptEntry as e:
            tn = "?"
            try:
                head = _s.head(key[0], key[1])
                if head is not None:
                    tn = _split_type_name(head[1])[0]
            except _s.CorruptEntry:
                pass
            lost[key] = (tn, "its record is damaged: %s" % (e,))
            continue
        if rec is None:
            continue
        flags, tn, blob, vreason = rec
        tn = _split_type_name(tn)[0]
        if flags & FLAG_VOLATILE:
            lost[key] = (tn, "it was not persisted: %s" % (vreason,))
        elif blob:
            refs[key] = (tn, _parse_refs(blob))


def _lost_holders(lost, refs):
    """Add to lost every entry that holds a lost one, transitively, its
    reason naming the one it holds."""
    # an entry in memory whose record refers to a lost one was loaded
    # holding that entry's Placeholder (a record that cannot be read or a
    # volatile one would have failed its load)
    for key, targets in WS.refs_of.items():
        if key not in refs and key not in lost and key not in WS.deleted \
                and WS._loaded(key):
            obj = (WS.shadow if key[0] == "g" else WS.handles)[key[1]]
            refs[key] = (_type_name(obj), targets)
    # an entry whose record refers to a lost one cannot be loaded either
    held_by = {}
    for key, (_tn, targets) in refs.items():
        for t in targets:
            held_by.setdefault(t, []).append(key)
    todo = list(lost)
    while todo:
        t = todo.pop()
        for key in held_by.get(t, ()):
            if key not in lost:
                lost[key] = (refs[key][0], "it holds %s, which is lost" %
                             (_keystr(t),))
                todo.append(key)


def _lost_rows(lost):
    """The LOST listing's rows, sorted, hidden handles left out."""
    out = []
    for key in sorted(lost, key=lambda k: (k[0], str(k[1]))):
        if key[0] == "h":
            try:
                if WS._is_hidden(key):
                    continue
            except _s.CorruptEntry:
                pass
        tn, reason = lost[key]
        name = key[1] if key[0] == "g" else "handle %d" % key[1]
        out.append((name, tn, reason))
    return out


def volatile_of(hid):
    """Why handle hid could not be persisted (after the checkpoint)."""
    return WS.volatile_reason(("h", hid))


_CP_LOCK = _thread.allocate_lock()


def checkpoint(full):
    """Run a checkpoint (the C half's entry point; shipped code calls
    user_checkpoint).  One at a time: a thread of shipped code may call
    checkpoint() while the main thread's runs; a checkpoint() from code
    that a checkpoint itself runs (a __reduce__) is refused.  The cyclic
    GC is off while it runs: its many short-lived key tuples would
    otherwise set off collections that walk the young objects (among them
    the workspace's own tables) for nothing; they are freed by reference
    counting when it ends."""
    me = _thread.get_ident()
    if WS.cp_thread == me:
        raise RuntimeError("checkpoint() called from code that a "
                           "checkpoint runs (a __reduce__ or "
                           "__getstate__?)")
    with _CP_LOCK:
        WS.cp_thread = me
        gc_was = _gc.isenabled()
        _gc.disable()
        try:
            return WS.checkpoint(full)
        finally:
            WS.cp_thread = None
            if gc_was:
                _gc.enable()


def user_checkpoint():
    """Commit the workspace now: every global and handle, with the
    in-place changes of every loaded one, in one transaction.  For
    long-running shipped code, to call at a point it chose as consistent:
    after a crash (even SIGKILL) the workspace comes back as it was at the
    last call.  Returns the number of entries written; raises (an
    OSError, a MemoryError, ...) when the checkpoint could not be
    written, leaving the workspace as it was in memory.  Available as
    `from pyshelf import checkpoint` and as the builtin checkpoint()."""
    if WS is None:
        raise RuntimeError("no workspace")
    if WS.read_only:
        raise RuntimeError("checkpoint(): the session is open read-only "
                           "(flag 'r'): nothing of it is ever written")
    return checkpoint(2)


user_checkpoint.__name__ = user_checkpoint.__qualname__ = "checkpoint"
user_checkpoint.__module__ = "pyshelf"
pyshelf_mod.checkpoint = user_checkpoint
builtins.checkpoint = user_checkpoint



def take_notices():
    out = [("%s (%s) cannot be persisted: %s; it stays in memory only and "
            "will be lost when the backend stops\n" %
            (_keystr(k), tn, r)) for k, tn, r in WS.take_notices()]
    if WS.store_notices:
        out.extend(t + "\n" for t in WS.store_notices)
        WS.store_notices = []
    return out


def stats():
    import json
    return json.dumps({
        "globals_loaded": len(WS.shadow),
        "handles_loaded": len(WS.handles),
        "volatile": len(WS.volatile),
        "code_cache": len(WS.code_cache),
        "entries_written": WS.entries_written,
        "checkpoints": WS.checkpoints,
        "last_checkpoint_s": WS.last_checkpoint_s,
        "backend_code": _s.BACKEND_CODE,
        "last_checkpoint_phases_s": dict(zip(("diff", "pickle", "commit"),
                                             WS.last_checkpoint_phases)),
        "namespace_diffs": dict(zip(("tracked", "full"), _s.diff_counts())),
        "next_handle": _s.peek_next_handle(),
    })
