"""The code cache: compiling shipped blocks and functions once per
source digest, their lines in linecache for tracebacks, and the scans of
code objects (names used, globals deleted, dunders bound).

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import ast
import types

import _pyshelfd as _s

from _pyshelf_pickle import loads_value
from _pyshelf_values import (ERR_BAD_REQUEST, RequestError, _MISSING, _dunder,
                             _name_error, _storable, _type_name)

WS = None   # the Workspace: set by _pyshelf_backend.init()


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


# The last line of a shipped function's source may say where the client
# read it: `# pyshelf-origin: LINE "FILENAME"` (a JSON string), so that
# tracebacks show the client's file and lines (docs/PROTOCOL.md, EXEC).
_ORIGIN_TAG = "# pyshelf-origin: "
_ORIGINS = {}   # filename -> its lines as shipped so far (for linecache)


def _origin(source):
    """(filename, first line) from the source's origin line, or None."""
    i = source.rfind(_ORIGIN_TAG)
    if i < 0 or (i > 0 and source[i - 1] != "\n"):
        return None
    line = source[i + len(_ORIGIN_TAG):].strip()
    try:
        num, rest = line.split(" ", 1)
        import json
        filename, first = json.loads(rest), int(num)
    except ValueError:
        return None
    if not isinstance(filename, str) or not filename or first < 1 or \
            "\0" in filename:
        return None
    return filename, first


def _remember_origin(filename, first, source):
    """Put source's lines at lines first... of filename in linecache,
    beside the other functions shipped from that file."""
    lines = _ORIGINS.pop(filename, None) or []
    body = source.splitlines(True)
    end = first - 1 + len(body)
    if len(lines) < end:
        lines.extend(["\n"] * (end - len(lines)))
    lines[first - 1:end] = body
    _ORIGINS[filename] = lines
    while len(_ORIGINS) > _SOURCES_MAX:
        del _ORIGINS[next(iter(_ORIGINS))]
    _remember_source(filename, "".join(lines))


def _unsign(tree, name):
    """Take the default values and annotations off the top-level def of
    name in tree: the client sends their values (_Defaults), and evaluated
    here they would name the workspace's globals, not the client's
    variables (`def inner(x, k=k)` in a loop; `def f(x: Config)`).  Line
    numbers stay as they were."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name == name:
            a = node.args
            a.defaults = []
            a.kw_defaults = [None] * len(a.kwonlyargs)
            for x in a.posonlyargs + a.args + a.kwonlyargs + \
                    [a.vararg, a.kwarg]:
                if x is not None:
                    x.annotation = None
            node.returns = None


def _parse_function(source, filename, name, unsigned):
    """The syntax tree of a shipped function's source; unsigned: without
    its def's defaults and annotations (_unsign)."""
    tree = ast.parse(source, filename, "exec")
    if unsigned:
        _unsign(tree, name)
    return tree


def _compile_function(source, name, digest, unsigned=False):
    """The code of a shipped function's source: at the client's file and
    lines when its origin line says where, else under a name of ours.
    unsigned: without its def's defaults and annotations (_unsign)."""
    origin = _origin(source)
    if origin is not None:
        filename, first = origin
        try:
            tree = _parse_function(source, filename, name, unsigned)
            ast.increment_lineno(tree, first - 1)
            code = compile(tree, filename, "exec")
        except (SyntaxError, ValueError):
            origin = None
        else:
            _remember_origin(filename, first,
                             source[:source.rfind(_ORIGIN_TAG)])
            return code
    filename = "<pyshelf:%s:%s>" % (name, digest.hex()[:12])
    code = compile(_parse_function(source, filename, name, unsigned),
                   filename, "exec")
    _remember_source(filename, source)
    return code


def _get_function(source, name, digest, unsigned=False):
    """Define the shipped function once per source digest: its globals are
    the workspace, but defining it does not bind a workspace global.
    unsigned: defined without its def's defaults and annotations, which
    each call sets (_set_defaults); cached apart from the one with them."""
    key = (digest, name, True) if unsigned else (digest, name)
    f = WS.code_cache.get(key)
    if f is not None:
        return f
    code = _compile_function(source, name, digest, unsigned)
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


# A pickle of annotations -> what it unpickled to: a client sends the same
# bytes at every call, and a class in them comes by value (cloudpickle
# takes 80 us to make it again).  Bounded: emptied past 256 entries.
_ANNOTATIONS = {}


def _annotations(data):
    """The annotations dict a _Defaults carries: {} when there are none or
    they cannot be unpickled here."""
    if type(data) is not bytes:
        return {}
    ann = _ANNOTATIONS.get(data)
    if ann is not None:
        return dict(ann)
    try:
        ann = loads_value(data)
    except Exception:
        ann = None
    if type(ann) is not dict:
        ann = {}
    if len(_ANNOTATIONS) >= 256:
        _ANNOTATIONS.clear()
    _ANNOTATIONS[data] = ann
    return dict(ann)


def _set_defaults(f, defs):
    """Give f, a shipped function defined unsigned, the client's current
    defaults and annotations (a _Defaults), in place: the cached function
    is the one a recursive call finds by name.  Annotations that cannot
    be unpickled here are dropped (they never fail a call)."""
    ann = _annotations(defs.annotations)
    try:
        f.__defaults__ = defs.defaults
        f.__kwdefaults__ = defs.kwdefaults
    except (TypeError, AttributeError) as e:
        raise RequestError(ERR_BAD_REQUEST, "bad default values for %s: %s"
                           % (getattr(f, "__qualname__", "?"), e)) from None
    f.__annotations__ = ann


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
