"""What remote_exec() and ws[name] = value send: pickles for the backend
(the pickle module, cloudpickle when it cannot or when client modules go
by value, _dumps), and functions by source (inspect, cached per code
object, decorators stripped) or by value (_FunctionByValue).

Used by the Workspace (_workspace.py), which sends them.
"""

import ast
import inspect
import pickle
import re
import sys
import textwrap
import weakref

from ._errors import ForeignHandleError, NotPicklableError
from ._types import _Defaults, _function

# (source, name, signed) per code object, so that repeated calls of one
# function do not redo inspect.getsource().  Bounded: the oldest entry goes
# first.
_SOURCE_CACHE = {}
_SOURCE_CACHE_MAX = 1024


_cloudpickle = None


def _get_cloudpickle():
    """cloudpickle if importable (for lambdas and local functions), else
    None.  Imported on first need only."""
    global _cloudpickle
    if _cloudpickle is None:
        try:
            import cloudpickle
        except ImportError:
            cloudpickle = False
        _cloudpickle = cloudpickle
    return _cloudpickle or None


# Buffers smaller than this stay in the pickle: a frame of its own costs
# more than the copy.
_OOB_MIN = 64 * 1024


def _oob_taker(bufs):
    """A buffer_callback for pickle protocol 5 that keeps the large
    contiguous buffers (numpy arrays, bytearrays) out of band, as
    memoryviews of their memory, in bufs."""
    def take(pb):
        try:
            m = pb.raw()
        except BufferError:     # not contiguous: in the pickle
            return True
        if m.nbytes < _OOB_MIN:
            return True
        bufs.append(m)
        return False
    return take


def _dumps(obj, what, modules=(), oob=False):
    """Pickle obj (protocol 5) for the backend.  The pickle module first;
    cloudpickle when it cannot, or when its pickle names the client's
    __main__ (a class or function defined in a script, a REPL or a
    notebook, which the backend cannot import: cloudpickle sends them by
    value), or when modules (names of client modules the backend could
    not import) are given: those are then sent by value too.
    NotPicklableError when neither can.  oob: large buffers go out of
    band: (pickle, (memoryview, ...)) when there are any, which the
    extension sends from their memory."""
    first = data = None
    bufs = []
    cb = _oob_taker(bufs) if oob else None
    if not modules:
        try:
            data = pickle.dumps(obj, protocol=5, buffer_callback=cb)
            if b"__main__" not in data:
                return (data, tuple(bufs)) if bufs else data
        except ForeignHandleError:
            raise
        except Exception as e:
            first = e
    cp = _get_cloudpickle()
    if cp is not None:
        registered = []
        try:
            for name in modules:
                mod = sys.modules.get(name)
                if mod is not None and \
                        not cp.cloudpickle._is_registered_pickle_by_value(mod):
                    cp.register_pickle_by_value(mod)
                    registered.append(mod)
            del bufs[:]
            data = cp.dumps(obj, protocol=5, buffer_callback=cb)
            return (data, tuple(bufs)) if bufs else data
        except ForeignHandleError:
            raise
        except Exception as e:
            first = first or e
        finally:
            for mod in registered:
                cp.unregister_pickle_by_value(mod)
    if data is not None:
        # by reference after all, as the pickle module can (again: the
        # buffers the failed try took are not this pickle's)
        del bufs[:]
        data = pickle.dumps(obj, protocol=5, buffer_callback=cb)
        return (data, tuple(bufs)) if bufs else data
    raise NotPicklableError("%s (%s) cannot be pickled: %s: %s" % (
        what, type(obj).__name__, type(first).__name__, first)) from first


_MISSING_MODULE = re.compile(r"No module named '([^']+)'|"
                             r"Can't get attribute '[^']*' on "
                             r"<module '([^']+)'")


def _missing_module(err, tried):
    """The client module that an ERR_UNPICKLE says the backend could not
    import (or that lacks what the pickle named), when the client has it
    and it was not tried already: its top-level package's name, else
    None."""
    m = _MISSING_MODULE.search(str(err))
    if m is None:
        return None
    name = m.group(1) or m.group(2)
    top = name.split(".")[0]
    for cand in (top, name):
        if cand in sys.modules and cand not in tried and \
                cand not in ("__main__", "builtins", "pyshelf"):
            return cand
    return None


class _NoSource(TypeError):
    """A function whose source cannot be shipped (typed at a REPL, a
    lambda, a closure): it goes by value instead."""


class _FunctionByValue:
    """A function sent by value: its code, defaults and closure cells
    (cloudpickle pickles code objects and cells), rebuilt in the backend
    by pyshelf._function with the workspace as its globals."""
    __slots__ = ("f",)

    def __init__(self, f):
        self.f = f

    def __reduce__(self):
        f = self.f
        return (_function, (f.__code__, f.__name__, f.__defaults__,
                            f.__kwdefaults__, f.__closure__,
                            f.__qualname__))


# Calls a function sent by value: the function is the last positional
# argument (so that the user's arguments keep their numbers in errors).
_BY_VALUE_SOURCE = ("def _pyshelf_by_value(*args, **kw):\n"
                    "    return args[-1](*args[:-1], **kw)\n")
_BY_VALUE_CACHE = weakref.WeakKeyDictionary()   # function -> (key, pickle)


def _strip_decorators(src):
    """The source from the ``def`` line on: decorators would run again in
    the backend, where they may not even exist.  (source, the number of
    lines cut, whether the def has default values or annotations: those
    the backend must not evaluate, see _Defaults)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return src, 0, False
    if tree.body and isinstance(tree.body[0], (ast.FunctionDef,
                                              ast.AsyncFunctionDef)):
        node = tree.body[0]
        a = node.args
        signed = bool(a.defaults or any(a.kw_defaults) or node.returns or
                      any(x is not None and x.annotation is not None
                          for x in (a.posonlyargs + a.args + a.kwonlyargs +
                                    [a.vararg, a.kwarg])))
        if node.decorator_list:
            lines = src.splitlines(keepends=True)
            return "".join(lines[node.lineno - 1:]), node.lineno - 1, signed
        return src, 0, signed
    return src, 0, False


def _with_origin(src, code, cut):
    """src with its origin line last: `# pyshelf-origin: LINE "FILE"`, the
    client's file and the line of its def, so that the backend compiles
    it there and tracebacks show the client's file and lines (a comment:
    a backend that does not know it runs the same code)."""
    filename = code.co_filename
    if not filename or filename.startswith("<") or "\n" in filename:
        return src
    import json
    return "%s%s# pyshelf-origin: %d %s\n" % (
        src, "" if src.endswith("\n") else "\n",
        code.co_firstlineno + cut, json.dumps(filename))


def _source_of(f):
    """(source, name, signed) of a function, from the cache or inspect
    (signed: its def has default values or annotations, which go with
    each call: _defaults_of); _NoSource when it has none that can be
    shipped."""
    if inspect.ismethod(f):
        raise TypeError("remote_exec() ships plain functions, not the bound "
                        "method %s: define a function that takes the object "
                        "as an argument" % getattr(f, "__qualname__", f))
    code = getattr(f, "__code__", None)
    if code is not None and code.co_freevars:
        raise _NoSource("remote_exec() cannot ship %s: it uses variables of "
                        "an enclosing function (%s), which do not exist in "
                        "the backend; pass them as arguments" %
                        (f.__qualname__, ", ".join(code.co_freevars)))
    if code is None:
        raise TypeError("remote_exec() ships a function or a str of source, "
                        "not %s" % type(f).__name__)
    hit = _SOURCE_CACHE.get(code)
    if hit is not None:
        return hit
    name = f.__name__
    if name == "<lambda>":
        raise _NoSource("remote_exec() cannot ship a lambda by source: "
                        "define the function with def")
    try:
        src = inspect.getsource(f)
    except (OSError, TypeError) as e:
        raise _NoSource("remote_exec() cannot find the source of %s: %s"
                        % (getattr(f, "__qualname__", name), e)) from None
    src, cut, signed = _strip_decorators(textwrap.dedent(src))
    hit = (_with_origin(src, code, cut), name, signed)
    if len(_SOURCE_CACHE) >= _SOURCE_CACHE_MAX:
        try:
            del _SOURCE_CACHE[next(iter(_SOURCE_CACHE))]
        except (KeyError, RuntimeError, StopIteration):
            _SOURCE_CACHE.clear()
    _SOURCE_CACHE[code] = hit
    return hit


# function -> (its __annotations__ dict, that dict's pickle or None), so that
# a call does not pickle a class by value again while they are the same.
_ANNOTATIONS_CACHE = weakref.WeakKeyDictionary()


def _annotations_pickle(f, modules):
    """A pickle of f's __annotations__ (those that can be pickled; the
    others are left out: an annotation never fails a call), or None when
    there are none.  Cached while f has the same annotations dict."""
    ann = getattr(f, "__annotations__", None)
    if not ann or type(ann) is not dict:
        return None
    hit = _ANNOTATIONS_CACHE.get(f)
    if hit is not None and hit[0] is ann and not modules:
        return hit[1]
    what = "the annotations of %s" % f.__qualname__
    try:
        data = _dumps(ann, what, modules)
    except (NotPicklableError, ForeignHandleError):
        keep = {}
        for k, v in ann.items():
            try:
                _dumps(v, what, modules)
            except (NotPicklableError, ForeignHandleError):
                continue
            keep[k] = v
        try:
            data = _dumps(keep, what, modules) if keep else None
        except (NotPicklableError, ForeignHandleError):
            data = None
    if not modules:
        _ANNOTATIONS_CACHE[f] = (ann, data)
    return data


def _defaults_of(f, modules):
    """What a call of f shipped as its source sends besides its arguments:
    its current defaults and annotations, as a _Defaults to pickle (the
    caller pickles it, as it does an argument, with handles inside it as
    references)."""
    return _Defaults(getattr(f, "__defaults__", None),
                     getattr(f, "__kwdefaults__", None),
                     _annotations_pickle(f, modules))

