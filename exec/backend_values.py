"""The backend's value types and names: the classes shipped code and
the client see as ``pyshelf.*`` (DirectValue, Wrapped, Placeholder,
EntryGroup, ...), the protocol's error codes and record flags, and the
rules for global names and entry keys.

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import builtins
import importlib.machinery
import pickle
import sys
import types

import _pyshelfd as _s

WS = None   # the Workspace: set by _pyshelf_backend.init()


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


class _Defaults:
    """The client's current default values of a function shipped as its
    source (remote_exec(f) with f's def saying k=K): sent as a pickled
    argument after the positional ones, before _Kwargs.  The backend then
    defines the function without evaluating its defaults or annotations
    (they name the client's variables, not the workspace's) and gives it
    these.  annotations: a pickle of the client's __annotations__, or
    None; one that cannot be unpickled here is dropped."""
    __slots__ = ("defaults", "kwdefaults", "annotations")

    def __init__(self, defaults, kwdefaults, annotations):
        self.defaults = defaults
        self.kwdefaults = kwdefaults
        self.annotations = annotations


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
             VolatileEntryError, EntryGroup, group_member, _Kwargs, _Defaults,
             _handle, _function):
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

# Error codes (proto/wire.h, enum wire_errcode), result kinds, record flags
# and picklers (store/store.h): exported by _pyshelfd from the C
# definitions (exec/pyfields.c), never copied by hand.
from _pyshelfd import (  # noqa: E402
    ERR_UNKNOWN_HANDLE, ERR_UNPICKLE, ERR_PICKLE, ERR_NOT_FOUND, ERR_STORE,
    ERR_VOLATILE, ERR_BAD_REQUEST, ERR_TOO_BIG,
    KIND_DIRECT, KIND_WRAPPED, KIND_EXCINFO, KIND_TEXT, WANT_REPR, WANT_JSON,
    FLAG_EXCINFO, FLAG_VOLATILE, FLAG_OOB, FLAG_HIDDEN,
    PICKLER_NONE, PICKLER_PICKLE, PICKLER_CLOUDPICKLE)

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
    (exec/pydiff.c's pydiff_dunder is the same test)."""
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


def _keystr(key):
    kind, k = key
    return ("global %s" % _name_repr(k)) if kind == "g" else \
        ("handle %d" % k)
