"""pyshelfd's Python half: the workspace, its handle table, running shipped
code, and pickling entries to and from the store.

This module and the modules it is made of are compiled into pyshelfd
(exec/backend-py.c is generated from them by exec/embed-py.sh) and loaded
by the embedded interpreter (exec/pyembed.c), in this order, each one
importing from those before it:

  _pyshelf_values      backend_values.py      pyshelf.* classes, error codes,
                                              record flags, names and keys
  _pyshelf_process     backend_process.py     sys.stdout/sys.stderr, the
                                              recursion cap, fork, threads
  _pyshelf_pickle      backend_pickle.py      pickling entries and values
  _pyshelf_code        backend_code.py        the code cache, code scans
  _pyshelf_refs        backend_refs.py        refs blobs, the references
                                              index, the LOST listing
  _pyshelf_load        backend_load.py        Globals, loading entries,
                                              the handle table
  _pyshelf_groups      backend_groups.py      cycles of entries (EntryGroup)
  _pyshelf_full        backend_full.py        a checkpoint that does not fit
  _pyshelf_checkpoint  backend_checkpoint.py  the checkpoint
  _pyshelf_requests    backend_requests.py    one function per request
  _pyshelf_backend     backend.py             this module: the Workspace

The C half (exec/worker.c, exec/dispatch.c, exec/py*.c) owns the protocol,
the store, signals and threads; it calls functions of this module by name
(init, exec_request, checkpoint, ...), one per request, with the GIL held.
This module holds every function and class of the modules above under its
own name, as when they were one file: the C half finds them here, pickles
name them here (_pyshelf_backend._rebuild_ws_function in stored records)
and they print as before.

The module ``_pyshelfd`` is the C half's builtin module: store access
(get/put/delete/list, releasing the GIL around commits), the Namespace type
(a dict subclass whose __missing__ loads globals lazily), the IdMap used as
the picklers' persistent_id, and payload digests.
"""

import builtins
import types

import _pyshelfd as _s

import _pyshelf_values
import _pyshelf_process
import _pyshelf_pickle
import _pyshelf_code
import _pyshelf_refs
import _pyshelf_load
import _pyshelf_groups
import _pyshelf_full
import _pyshelf_checkpoint
import _pyshelf_requests
from _pyshelf_process import _setup_process
from _pyshelf_refs import _RefsMixin
from _pyshelf_load import Globals, _LoadMixin
from _pyshelf_groups import _GroupsMixin
from _pyshelf_full import _FullStoreMixin
from _pyshelf_checkpoint import _CheckpointMixin

_PARTS = (_pyshelf_values, _pyshelf_process, _pyshelf_pickle, _pyshelf_code,
          _pyshelf_refs, _pyshelf_load, _pyshelf_groups, _pyshelf_full,
          _pyshelf_checkpoint, _pyshelf_requests)


def _adopt_parts():
    """Make every function and class of the parts this module's own, as
    when they were one file: an attribute of this module, and those whose
    __module__ is their part's get "_pyshelf_backend" (their methods too),
    so that the C half's calls by name find them, a pickle that names one
    by reference names it as before (and loads in an older pyshelfd), and
    one written by an older pyshelfd loads.  (The pyshelf.* classes and
    functions keep their module, "pyshelf".)"""
    own = globals()
    for part in _PARTS:
        here = part.__name__
        for name, obj in vars(part).items():
            if not isinstance(obj, (type, types.FunctionType)):
                continue
            if obj.__module__ == here:
                obj.__module__ = __name__
            if isinstance(obj, type):
                for v in vars(obj).values():
                    if type(v) in (staticmethod, classmethod):
                        v = v.__func__
                    if type(v) is types.FunctionType and \
                            v.__module__ == here:
                        v.__module__ = __name__
            if own.setdefault(name, obj) is not obj:
                raise ImportError("%s.%s is another %s's name too" %
                                  (here, name, __name__))


_adopt_parts()


# --- the workspace -----------------------------------------------------------

class Workspace(_LoadMixin, _RefsMixin, _GroupsMixin, _FullStoreMixin,
                _CheckpointMixin):
    """One session's state: globals (ns), handles, and what to checkpoint.
    Its state is all here; its methods are in the modules of their
    concern, one mixin each (loading and handles, the references index,
    cycles of entries, a full store, the checkpoint)."""

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
        self.rr_pos = 0          # where the interval's round robin goes on
        self.rr_left = 0         # loaded mutable entries its cycle has still
                                 # to look at (-1: a new cycle, all of them)
        self.rr_threads = False  # shipped threads ran during the last
                                 # interval checkpoint: a new cycle next
        self.intervals = 0       # interval checkpoints (stats)
        self.interval_scans = 0  # those that re-pickled loaded entries
        self.last_interval_s = 0.0  # how long the last one took
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
        self.cp_full = 0         # the running checkpoint's full argument
        self.raced_now = ()      # entry keys it could not save: a thread
                                 # changed them on every try (kept dirty)
        self.race_held = ()      # records held back as they refer to one
                                 # of those with no stored record yet
        self.race_said = set()   # entry keys a request was told raced,
                                 # until they are saved


WS = None


def init(read_only=0):
    """Create the workspace; called once after the store is open.
    read_only: the session is open read-only (flag 'r'): nothing is ever
    written, and checkpoint() says so."""
    global WS
    _setup_process()
    WS = Workspace()
    WS.read_only = bool(read_only)
    # the parts read it as their own global WS
    for part in _PARTS:
        if hasattr(part, "WS"):
            part.WS = WS
    return WS.ns
