"""The three result kinds of the design note, and Lost.

They live in the module ``pyshelf`` and pickle as ``pyshelf.DirectValue``
etc.; the backend has a module ``pyshelf`` with the same classes and the
same constructor arguments, so instances travel both ways.
"""

import collections
import threading

__all__ = ["DirectValue", "Wrapped", "WrappedExcinfo", "Lost", "Call"]

# While a Workspace pickles a value to send (_sending.ws is that
# Workspace), a Wrapped in it pickles as a reference to its handle.
_sending = threading.local()


class DirectValue:
    """A result sent back by value: ``.value`` is the unpickled object.

    Shipped code returns ``DirectValue(x)`` to have ``x`` sent back.
    """

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __reduce__(self):
        return (DirectValue, (self.value,))

    def __repr__(self):
        return "DirectValue(%r)" % (self.value,)


class Wrapped:
    """A handle to an object that stays in the backend.

    ``.id`` is the session-scoped handle id and ``.type_name`` the object's
    type name.  The client cannot touch the object; it passes the handle
    back as an argument of ``remote_exec``, where the backend replaces it by
    the object.  Within one workspace, one id is one ``Wrapped`` object.
    A handle this client got (a result of ``remote_exec``, ``ws.wrap()``)
    is released in the backend when its ``Wrapped`` is garbage-collected
    (batched, before the next request); one it found (``ws.handles()``,
    ``ws.handle(id)``: made before this attach) is the session's and stays
    until ``ws.release()``.  ``.volatile`` is None, or why the backend
    could not persist the object.
    """

    __slots__ = ("_id", "_type_name", "_owner", "_own", "_volatile",
                 "__weakref__")

    def __init__(self, id, type_name):
        self._id = int(id)
        self._type_name = str(type_name)
        self._owner = None   # the workspace's handle table
        self._own = False    # released when collected
        self._volatile = None

    @property
    def id(self):
        """The handle id (an int)."""
        return self._id

    @property
    def type_name(self):
        """The backend object's type name."""
        return self._type_name

    @property
    def volatile(self):
        """None, or why the backend could not persist this object."""
        return self._volatile

    def __reduce__(self):
        ws = getattr(_sending, "ws", None)
        if ws is not None:
            # inside a value sent to the backend: its object there
            return (_handle, (ws._handle_id(self),))
        return (Wrapped, (self._id, self._type_name))

    def __repr__(self):
        return "<Wrapped %d %s>" % (self._id, self._type_name)

    def __del__(self):
        try:
            owner = self._owner
        except AttributeError:  # __init__ never ran
            return
        if owner is not None and getattr(self, "_own", False):
            owner.pending.append(self._id)


class WrappedExcinfo(Wrapped):
    """A handle to the ``(type, value, traceback)`` of an exception raised
    by shipped code.  ``.exc_type`` is the exception class's name,
    ``.message`` its ``str()``, and ``.traceback`` the backend's
    traceback as ``traceback.format_exception`` prints it (lines of
    shipped functions at their own file and line), which ``str()`` shows
    too."""

    __slots__ = ("_exc_type", "_message", "_traceback")

    def __init__(self, id, type_name, exc_type="", message="",
                 traceback=None):
        Wrapped.__init__(self, id, type_name)
        self._exc_type = exc_type
        self._message = message
        self._traceback = traceback

    @property
    def exc_type(self):
        """The exception class's name, e.g. ``"ValueError"``."""
        return self._exc_type

    @property
    def message(self):
        """``str()`` of the exception."""
        return self._message

    @property
    def traceback(self):
        """The exception as Python prints it in the backend (a str in the
        format of ``traceback.format_exception``: "Traceback (most recent
        call last):", the frames, the exception), or None when not known:
        a handle found with ``ws.handles()``/``ws.handle(id)``, or a
        backend older than this client."""
        return self._traceback

    def __str__(self):
        """The backend's traceback, as Python prints an exception; without
        one, "ExcType: message"."""
        if self._traceback:
            return self._traceback.rstrip("\n")
        if self._message:
            return "%s: %s" % (self._exc_type, self._message)
        return self._exc_type

    def __reduce__(self):
        if getattr(_sending, "ws", None) is not None:
            return Wrapped.__reduce__(self)
        return (WrappedExcinfo,
                (self._id, self._type_name, self._exc_type, self._message,
                 self._traceback))

    def __repr__(self):
        if self._message:
            return "<WrappedExcinfo %d %s: %s>" % (self._id, self._exc_type,
                                                   self._message)
        return "<WrappedExcinfo %d %s>" % (self._id, self._exc_type)


Lost = collections.namedtuple("Lost", ["name", "type_name", "reason"])

Call = collections.namedtuple("Call", ["id", "summary", "state", "started",
                                       "ended", "output_bytes",
                                       "output_dropped"])
Call.__doc__ = """One call of a session's journal (``ws.calls()``).

``id``: the call id (32 hex digits; ``ws.result(id)`` takes it);
``summary``: the first line of its source; ``state``: ``"queued"``,
``"running"``, ``"done"`` or ``"lost"`` (its worker died or was
restarted under it); ``started``/``ended``: POSIX timestamps (``ended``
None while it runs); ``output_bytes``: the output the journal holds;
``output_dropped``: the oldest output dropped to keep it bounded."""
Call.__module__ = "pyshelf"
Lost.__doc__ = """An entry that was not restored when the session resumed:
its name, its type name and why."""

class _Kwargs(dict):
    """The keyword arguments of remote_exec(f, x, key=value), sent as the
    call's last pickled argument (the backend's pyshelf._Kwargs)."""
    __slots__ = ()


class _Defaults:
    """The current default values (``__defaults__``, ``__kwdefaults__``)
    of a function shipped as its source, sent before its keyword
    arguments (the backend's pyshelf._Defaults): the backend defines the
    function without evaluating its defaults or annotations and gives it
    these.  annotations: the function's ``__annotations__`` as a pickle of
    their own (the backend drops them when they cannot be unpickled), or
    None."""
    __slots__ = ("defaults", "kwdefaults", "annotations")

    def __init__(self, defaults, kwdefaults, annotations):
        self.defaults = defaults
        self.kwdefaults = kwdefaults
        self.annotations = annotations

    def __reduce__(self):
        return (_Defaults, (self.defaults, self.kwdefaults,
                            self.annotations))


def _handle(hid):
    """Stands, in a pickle sent to the backend, for a Wrapped inside a
    value: the backend's pyshelf._handle(id) is the handle's object.  Never
    called here."""
    raise RuntimeError("pyshelf._handle is resolved in the backend")


def _function(code, name, defaults, kwdefaults, closure, qualname):
    """Stands, in a pickle sent to the backend, for a function sent by
    value: the backend's pyshelf._function() makes it with the workspace
    as its globals.  Here (for symmetry) with empty globals."""
    import types
    f = types.FunctionType(code, {"__builtins__": __builtins__}, name,
                           defaults, closure)
    f.__kwdefaults__ = kwdefaults
    f.__qualname__ = qualname
    return f


for _cls in (DirectValue, Wrapped, WrappedExcinfo, Lost, _Kwargs, _Defaults,
             _handle, _function):
    _cls.__module__ = "pyshelf"
del _cls
