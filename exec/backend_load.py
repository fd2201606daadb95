"""Loading entries and the handle table: the workspace's globals
(Globals, loaded on first use) and _LoadMixin (reading and unpickling
records, preloading what they refer to, persistent references, handles).

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import pickle
import types

import _pyshelfd as _s

from _pyshelf_values import (ERR_UNKNOWN_HANDLE, ERR_VOLATILE, EntryGroup,
                             FLAG_EXCINFO, FLAG_HIDDEN, FLAG_VOLATILE,
                             Placeholder, RequestError, VolatileEntryError,
                             _ATOMIC, _MISSING, _UNLOADED, _dunder, _keystr,
                             _storable)
from _pyshelf_process import _child_missing
from _pyshelf_pickle import load_entry
from _pyshelf_code import _load_deleted_globals
from _pyshelf_refs import _parse_refs

WS = None   # the Workspace: set by _pyshelf_backend.init()


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


class _LoadMixin:
    """The Workspace's loading of entries and its handle table (see
    _pyshelf_backend.Workspace.__init__ for the state)."""

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
        pickler, flags, type_name = rec.pickler, rec.flags, rec.type_name
        payload, digest, refs = rec.payload, rec.digest, rec.refs
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
