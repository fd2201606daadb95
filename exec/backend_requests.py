"""The requests the C half calls, one function per request (EXEC, GET,
SET, DEL, KEYS, HANDLES), the result of a request that raised (a bounded
WrappedExcinfo), and stats().

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import types

import _pyshelfd as _s

from _pyshelf_values import (DirectValue, ERR_BAD_REQUEST, ERR_NOT_FOUND,
                             ERR_PICKLE, ERR_TOO_BIG, ERR_UNPICKLE,
                             ERR_VOLATILE,
                             FLAG_EXCINFO, FLAG_HIDDEN, KIND_DIRECT,
                             KIND_EXCINFO, KIND_TEXT, KIND_WRAPPED,
                             RequestError, WANT_JSON, WANT_REPR,
                             VolatileEntryError, _Defaults, _Kwargs,
                             _MISSING, _dunder,
                             _exc_message, _name_error, _name_repr,
                             _record_type_name, _split_type_name, _type_name)
from _pyshelf_process import _child_exit, _exit_status
from _pyshelf_pickle import _tblib, dumps_value, loads_value
from _pyshelf_code import (_code_names, _codes_of, _get_block, _get_function,
                           _load_deleted_globals, _note_dunder_globals,
                           _set_defaults)

WS = None   # the Workspace: set by _pyshelf_backend.init()


def _result(kind, handle, type_name, exc_type=None, message=None,
            value=None):
    """A request's result for the C half (exec/dispatch.c), by field name:
    a _pyshelfd.Result."""
    return _s.Result((kind, handle, type_name, exc_type, message, value))


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
    # drop our own frame from the traceback, and the client's shim that
    # calls a function sent by value (_pyshelf_by_value: QA5 13), when a
    # frame of the user's code follows it
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    if tb is not None and tb.tb_next is not None and \
            tb.tb_frame.f_code.co_name == "_pyshelf_by_value" and \
            tb.tb_frame.f_code.co_filename.startswith(
                "<pyshelf:_pyshelf_by_value:"):
        tb = tb.tb_next
    exc.__traceback__ = tb
    _bound_excinfo(exc)
    triple = (type(exc), exc, exc.__traceback__)
    _tblib()            # tracebacks pickle through tblib
    hid, _ = WS.new_handle(triple, FLAG_EXCINFO)
    return _result(KIND_EXCINFO, hid, "tuple", exc_type=type(exc).__name__,
                   message=_exc_message(exc), value=_traceback_text(exc))


def _traceback_text(exc):
    """The traceback as traceback.format_exception() prints it, as UTF-8
    (the RESULT's VALUE of an EXCINFO: the client's
    WrappedExcinfo.traceback).  Never fails: None when it cannot be
    made."""
    try:
        import traceback
        text = "".join(traceback.format_exception(exc))
        return text.replace("\0", "\\x00").encode("utf-8",
                                                    "backslashreplace")
    except Exception:
        return None


def _memory_limit():
    """(bytes, what sets them): --memory-limit, which is the process's
    RLIMIT_DATA, else the machine's memory."""
    import os
    import resource
    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    if limit != resource.RLIM_INFINITY:
        return limit, "pyshelfd --memory-limit"
    return (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
            "this machine's memory")


def _no_memory_out(what, hint):
    """The RequestError(TOO_BIG) for a value to send (a result, a global
    by value) that could not be pickled for want of memory (QA5: it was
    PICKLE "cannot be pickled: MemoryError: ", an empty reason)."""
    limit, where = _memory_limit()
    return RequestError(
        ERR_TOO_BIG, "%s cannot be sent: out of memory while pickling it (at "
        "most %d bytes: %s; a value that is not an out-of-band buffer, a "
        "bytes say, needs room for its pickle as well as for itself); %s" %
        (what, limit, where, hint))


def _no_memory(what, data):
    """The RequestError(TOO_BIG) for a value (data: its pickle, or
    (pickle, [bytearray, ...])) that could not be unpickled for want of
    memory: its size and the limit, as the C half says them for a LONG
    refused at its head (str(MemoryError()) is empty).  --memory-limit
    is the process's RLIMIT_DATA."""
    pk, bufs = data if type(data) is tuple else (data, ())
    limit, where = _memory_limit()
    return RequestError(
        ERR_TOO_BIG, "%s (%d bytes pickled, and %d in out-of-band buffers) "
        "cannot be unpickled: out of memory (at most %d bytes: %s; a value "
        "pickled in-band needs room for its pickle and for itself); "
        "nothing of it was applied" %
        (what, len(pk), sum(len(b) for b in bufs), limit, where))


def exec_request(code, func, digest, args, want_value, oob=False):
    """Run shipped code.  args: list of ints (handles), bytes (pickles) or
    (pickle, [bytearray, ...]) (a pickle and its out-of-band buffers); the
    last pickle may hold the call's keyword arguments (_Kwargs), and the
    one before them a shipped function's defaults (_Defaults).  oob: the
    client takes a value's out-of-band buffers.
    Returns (kind, handle, type_name, exc_type, message, value)."""
    request_codes, request_keys = WS.request_codes, WS.request_keys
    del request_codes[:], request_keys[:]
    real = []
    for a in args:
        if type(a) is int:
            real.append(WS.get_handle(a))
        else:
            try:
                real.append(loads_value(a))
            except RequestError:
                raise           # an unknown handle inside the value
            except KeyboardInterrupt as e:
                # an INTERRUPT while the arguments load (the call runs
                # from its first byte): the call was stopped before its
                # code, as a Ctrl-C in it would be
                return _excinfo_result(e)
            except MemoryError:
                raise _no_memory("argument %d" % (len(real) + 1),
                                 a) from None
            except Exception as e:
                raise RequestError(ERR_UNPICKLE,
                                   "argument %d cannot be unpickled: %s: %s" %
                                   (len(real) + 1, type(e).__name__,
                                    _exc_message(e))) from None
    kw = real.pop() if real and type(real[-1]) is _Kwargs else {}
    defs = real.pop() if func is not None and real and \
        type(real[-1]) is _Defaults else None
    codes = ()
    ran = None
    try:
        if func is not None:
            f = _get_function(code, func, digest, defs is not None)
            if defs is not None:
                _set_defaults(f, defs)
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
        codes = tuple(codes) + tuple(request_codes)
        keys = [("h", a) for a in args
                if type(a) is int and a in WS.handles] if args else []
        if request_keys:
            keys += request_keys
        # (code that names nothing, with no handles, reaches nothing: the
        # no-op function's path)
        if keys or len(codes) != 1 or _code_names(codes[0]):
            WS.mark_reached(codes, keys)
        if ran is not None:
            _note_dunder_globals(ran)
    if _s.in_child():
        _child_exit(0)
    return _result_for(res, want_value, oob)


# The Result of None by value (oob: False, True), made once: what every
# call that returns nothing sends back.
_NONE_RESULTS = [None, None]


def _result_for(res, want_value, oob=False):
    # the Result is built in place on the paths every request takes (a
    # call of _result costs 0.2 us of a 70 us round trip)
    if res is None and want_value not in _TEXT_MODES:
        r = _NONE_RESULTS[bool(oob)]
        if r is None:
            r = _NONE_RESULTS[bool(oob)] = _Result((
                KIND_DIRECT, 0, _type_name(None), None, None,
                dumps_value(None, oob)))
        return r
    if want_value == 0 and res is not None and \
            not isinstance(res, DirectValue):
        return _wrapped_result(res)
    if want_value in _TEXT_MODES:
        return _text_result(res.value if isinstance(res, DirectValue)
                            else res, want_value)
    value = res.value if isinstance(res, DirectValue) else res
    try:
        data = dumps_value(value, oob)
    except MemoryError:
        raise _no_memory_out(
            "the result (%s)" % _type_name(value), "the call ran; return a "
            "handle to it (no DirectValue) to keep it") from None
    except (Exception, SystemExit) as e:    # a __reduce__ may exit (QA6 2)
        raise RequestError(ERR_PICKLE,
                           "the result (%s) cannot be pickled: %s: %s" %
                           (_type_name(value), type(e).__name__,
                            _exc_message(e))) from None
    return _Result((KIND_DIRECT, 0, _type_name(value), None, None, data))


def _wrapped_result(obj):
    """A new handle to obj, as a WRAPPED Result."""
    hid, _ = WS.new_handle(obj)
    return _Result((KIND_WRAPPED, hid, _type_name(obj), None, None, None))


_Result = _s.Result
_TEXT_MODES = (WANT_REPR, WANT_JSON)


# How deep JSON data may nest: deeper values (and cycles, which are
# infinitely deep) come as handles.  json.dumps() takes one level of the
# interpreter's recursion limit (1000) per level.
_JSON_DEPTH = 500
_INF = float("inf")


def _json_data(obj):
    """Is obj JSON data: dicts with str keys, lists, tuples, str, int,
    float (finite), bool, None, nested at most _JSON_DEPTH deep?  Walked
    with a stack of its own, not by recursion: a value nested deeper than
    the recursion limit, or a cycle, is an answer (False), not a
    RecursionError.  Depth first: a cycle ends the walk once it has been
    followed _JSON_DEPTH levels down."""
    stack = [(obj, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        o, depth = pop()
        t = type(o)
        if o is None or t is str or t is int or t is bool:
            continue
        if t is float:
            if o != o or o == _INF or o == -_INF:
                return False
            continue
        if depth >= _JSON_DEPTH:
            return False
        if t is list or t is tuple:
            depth += 1
            for x in o:
                push((x, depth))
        elif t is dict:
            depth += 1
            for k, v in o.items():
                if type(k) is not str:
                    return False
                push((v, depth))
        else:
            return False
    return True


def _text_result(value, want):
    """A TEXT result (WANT_REPR: repr(); WANT_JSON: JSON of JSON data),
    or a handle to the value when that text cannot be made: for WANT_JSON
    a value that is not JSON data or that json.dumps() refuses (an int
    over sys.get_int_max_str_digits() digits, out of memory), for
    WANT_REPR a repr() that raises (a __repr__'s own error, a
    RecursionError, an int over that many digits).  Plain data for
    clients that read no pickles (the C library), and nothing lost."""
    try:
        if want == WANT_JSON:
            if not _json_data(value):
                return _wrapped_result(value)
            import json
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        else:
            text = repr(value)
            if type(text) is not str:
                text = str.__str__(text)    # a str subclass's own __str__
        # repr() of a str may hold lone surrogates: escaped, never an error
        data = text.encode("utf-8", "backslashreplace")
    except BaseException:   # a __repr__ may raise SystemExit too (QA6 2)
        return _wrapped_result(value)
    if b"\0" in data:
        # a __repr__ of the user's that returns a NUL: C's text ends
        # there, and the C client took the reply for out of memory (QA6 3)
        return _wrapped_result(value)
    return _result(KIND_TEXT, 0, _type_name(value), value=data)


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


def get_request(name, want_value, oob=False):
    _check_name(name)
    try:
        obj = WS.ns[name]
    except KeyError:
        raise RequestError(ERR_NOT_FOUND, "no global %r" % name) from None
    except VolatileEntryError as e:
        raise RequestError(ERR_VOLATILE, str(e)) from None
    if not want_value:
        return _wrapped_result(obj)
    if want_value in _TEXT_MODES:
        return _text_result(obj, want_value)
    try:
        data = dumps_value(obj, oob)
    except MemoryError:
        raise _no_memory_out(
            "global %r (%s)" % (name, _type_name(obj)),
            "use ws.wrap(%r) to get a handle to it" % name) from None
    except (Exception, SystemExit) as e:    # a __reduce__ may exit (QA6 2)
        raise RequestError(
            ERR_PICKLE, "global %r (%s) cannot be sent by value: %s: %s; "
            "use ws.wrap(%r) to get a handle to it" %
            (name, _type_name(obj), type(e).__name__, _exc_message(e),
             name)) from None
    return _result(KIND_DIRECT, 0, _type_name(obj), value=data)


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
    except MemoryError:
        raise _no_memory("value for %r" % name, data) from None
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
                head = None
                flags, tn = 0, "?"
            else:
                if head is None:
                    continue
                flags, tn = head.flags, head.type_name
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


def volatile_of(hid):
    """Why handle hid could not be persisted (after the checkpoint)."""
    return WS.volatile_reason(("h", hid))


def stats():
    import json
    return json.dumps({
        "globals_loaded": len(WS.shadow),
        "handles_loaded": len(WS.handles),
        "volatile": len(WS.volatile),
        "unwritten": len(WS.unwritten or ()),
        "code_cache": len(WS.code_cache),
        "entries_written": WS.entries_written,
        "checkpoints": WS.checkpoints,
        "last_checkpoint_s": WS.last_checkpoint_s,
        "interval_checkpoints": WS.intervals,
        "interval_scans": WS.interval_scans,
        "last_interval_s": WS.last_interval_s,
        "backend_code": _s.BACKEND_CODE,
        "last_checkpoint_phases_s": dict(zip(("diff", "pickle", "commit"),
                                             WS.last_checkpoint_phases)),
        "namespace_diffs": dict(zip(("tracked", "full"), _s.diff_counts())),
        "next_handle": _s.peek_next_handle(),
        "threads": _s.threads(),
    })
