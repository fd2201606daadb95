"""What shipped code may do to the backend's process: sys.stdout and
sys.stderr (OutputStream), the capped recursion limit, fork hooks
(multiprocessing's fork context, children of shipped code) and threads
still running at exit.

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import builtins
import functools as _functools
import io
import sys
import time as _time
import types

import _pyshelfd as _s

WS = None   # the Workspace: set by _pyshelf_backend.init()


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


class _Counted:
    """What a counted thread runs (_count_threads): shipped code's function,
    then the count goes down, however the function ended.  Its repr is the
    function's, which the "Exception ignored in thread started by" report
    of an uncaught exception names."""
    __slots__ = ("function", "args", "kwargs", "count")

    def __init__(self, function, args, kwargs, count):
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.count = count

    def __call__(self):
        try:
            self.function(*self.args, **self.kwargs)
        finally:
            self.count(-1)

    def __repr__(self):
        return repr(self.function)


def _count_threads():
    """Make _thread.start_new_thread (and its alias start_new) count the
    threads of shipped code that are alive (_pyshelfd.threads): each is
    code running, as a call is (no idle exit, no hibernation, no lease
    running out while one is alive; worker-threads.c), and the interval
    checkpoints look at the entries again while one is.  Every thread
    that Python code can start goes through it: threading.Thread.start()
    (daemon threads too: a server loop in a daemon thread is work its
    user expects to go on; threading binds the function when it is first
    imported, after this), _thread.start_new_thread called from Python or
    from a C extension through the module.  The count goes up before the
    call returns and down when the thread's function is over.  Threads
    that C code starts itself (pthread_create, PyThread_start_new_thread)
    are not counted, even while they call into Python; nor are the
    worker's own threads, which are C threads."""
    import _thread
    real = _thread.start_new_thread
    if getattr(real, "_pyshelf_counted", False):
        return
    count = _s.threads      # bound now: no module global at the end

    no_kwargs = {}

    def start_new_thread(function, args, kwargs=no_kwargs, /):
        # the checks the real one makes on what it is given (an explicit
        # None is no dictionary either), before the count goes up: it
        # sees _Counted only
        if not callable(function):
            raise TypeError("first arg must be callable")
        if not isinstance(args, tuple):
            raise TypeError("2nd arg must be a tuple")
        if not isinstance(kwargs, dict):
            raise TypeError("optional 3rd arg must be a dictionary")
        count(1)
        try:
            return real(_Counted(function, args, kwargs, count), ())
        except BaseException:
            count(-1)       # no thread began
            raise
    # shipped code sees _thread's own: pickled by reference, as it was
    start_new_thread.__name__ = start_new_thread.__qualname__ = \
        real.__name__
    start_new_thread.__doc__ = real.__doc__
    start_new_thread.__module__ = "_thread"
    start_new_thread._pyshelf_counted = True
    _thread.start_new_thread = _thread.start_new = start_new_thread
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._start_new_thread = start_new_thread


# modules patched when (if ever) they are imported, by _ImportHook
_PATCHES = {"multiprocessing.reduction": _patch_forking_pickler}


class _ImportHook:
    """A meta path finder that only waits for the modules of _PATCHES to
    be imported (by shipped code, or by what it imports), to patch them
    then: at startup, importing multiprocessing would cost every
    resume."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is _ImportHook or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or \
                not hasattr(spec.loader, "exec_module"):
            return spec
        orig = spec.loader.exec_module

        def exec_module(module):
            orig(module)
            patch(module)
        spec.loader.exec_module = exec_module
        return spec


def _guard_fds(os):
    """os.close, os.closerange and os.dup2 (also under posix) leave the
    backend's own fds alone: daemonizing code (python-daemon,
    os.closerange(3, 4096)) closes every fd above 2 and opens files, which
    would take the numbers of the worker's connection, pipes and store
    files.  closerange closes around them; close, and dup2 onto one, raise
    OSError(EBADF), as for an fd that is not open.  Code that closes fds
    from C is caught by the worker instead (worker-fds.c: it exits, the
    session keeps its last checkpoint).  A child forked by shipped code
    closes what it likes (its copies point at /dev/null)."""
    import errno
    import operator
    import posix
    real_close, real_closerange, real_dup2 = (
        posix.close, posix.closerange, posix.dup2)
    int_max = 2 ** 31 - 1

    def refuse(fd, what):
        raise OSError(errno.EBADF, "%s: fd %d belongs to the pyshelf "
                      "backend (its connection, pipes or store); shipped "
                      "code may not close or replace it" % (what, fd))

    def close(fd):
        if not _s.in_child(0) and _s.worker_fd(operator.index(fd)):
            refuse(fd, "os.close")
        return real_close(fd)

    def closerange(fd_low, fd_high):
        lo, hi = operator.index(fd_low), operator.index(fd_high)
        if _s.in_child(0) or hi <= 3:
            return real_closerange(lo, hi)
        for fd in _s.worker_fds(min(max(lo, 0), int_max),
                                min(hi, int_max)):
            if lo < fd:
                real_closerange(lo, fd)
            lo = fd + 1
        if lo < hi:
            real_closerange(lo, hi)

    def dup2(fd, fd2, inheritable=True):
        if not _s.in_child(0) and _s.worker_fd(operator.index(fd2)):
            refuse(fd2, "os.dup2")
        return real_dup2(fd, fd2, inheritable)

    for f, real in ((close, real_close), (closerange, real_closerange),
                    (dup2, real_dup2)):
        f.__name__ = f.__qualname__ = real.__name__
        f.__doc__ = real.__doc__
        f.__module__ = "posix"
        setattr(os, real.__name__, f)
        setattr(posix, real.__name__, f)


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
    _guard_fds(os)
    _count_threads()
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _ImportHook)


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


def _other_threads():
    import threading
    main = threading.main_thread()
    return [t for t in threading.enumerate()
            if t is not main and t.is_alive()]


def threads_notice():
    """At detach: a notice naming the threads of shipped code still
    running, non-daemon ones apart, and counting those that
    _thread.start_new_thread started, which threading does not know by
    name ('' when there are none)."""
    import threading
    threads = [t for t in _other_threads()
               if not isinstance(t, threading._DummyThread)]
    bare = _s.threads() - len(threads)
    if not threads and bare <= 0:
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
    if bare > 0:
        parts.append("%d thread%s of _thread.start_new_thread stopped at "
                     "exit" % (bare, "s" if bare > 1 else ""))
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
