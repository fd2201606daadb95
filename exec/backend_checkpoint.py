"""The checkpoint: what a request could have changed (mark_reached),
the namespace diff, pickling into one batch and committing it; the C
half's checkpoint() entry point and shipped code's pyshelf.checkpoint().

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import _thread
import builtins
import gc as _gc
import time as _time
from itertools import islice as _islice
import types

import _pyshelfd as _s

from _pyshelf_values import (FLAG_VOLATILE, PICKLER_NONE, Placeholder,
                             _ATOM_TYPES, _MISSING, _UNLOADED, _exc_message,
                             _frozen, _keystr, _name_error, _record_type_name,
                             _split_type_name, _storable, pyshelf_mod)
from _pyshelf_pickle import _dumper, _tblib
from _pyshelf_code import _code_names, _codes_of
from _pyshelf_refs import _parse_refs

WS = None   # the Workspace: set by _pyshelf_backend.init()


class _CheckpointMixin:
    """The Workspace's checkpoint (see
    _pyshelf_backend.Workspace.__init__ for the state)."""

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

    def checkpoint(self, full=0):
        """Write what changed in one transaction.  full: also re-pickle every
        loaded mutable entry (catches in-place mutation); 1: the interval's
        round-robin slice of them (interval_checkpoint says when).

        An entry that a thread of shipped code changed while it was pickled
        (the pickler raised "changed size during iteration") is pickled
        again at once (_cloud_retried); when it still races, its previous
        record stays as it is, it stays dirty for the next checkpoint, and
        it is not volatile: a request's checkpoint says so once, a full
        one (2: sync, detach, exit) commits the rest and raises StoreError
        naming it."""
        if not full and not self.dirty and not self.deleted and \
                _s.dict_version(self.ns) == self.ns_version and \
                not _s.session_dirty():
            return 0    # the no-op request's path: O(1)
        self.cp_full = full
        raced = self.raced_now = set()
        held = self.race_held = set()
        try:
            n = self._checkpoint(full)
        finally:
            if raced:
                # kept as of the last checkpoint: the next one tries again
                self.dirty.update(k for k in raced | held
                                  if k not in self.deleted)
                self.raced_now = self.race_held = ()
        if raced and full >= 2:
            raise _s.StoreError(self._raced_text(raced, held))
        return n

    def _raced_text(self, raced, held):
        """The error of a full checkpoint that could not save raced (and
        held, the records held back with them)."""
        keys = sorted(raced, key=repr)
        names = ", ".join(_keystr(k) for k in keys[:10])
        if len(keys) > 10:
            names += " and %d more" % (len(keys) - 10)
        one = len(keys) == 1
        return ("%s changed on each of %d attempts to save %s (a thread of "
                "shipped code changes %s while %s pickled)%s; everything "
                "else is committed, and the store keeps %s as of the last "
                "checkpoint that saved %s, if any.  Stop the thread, or "
                "have it call pyshelf.checkpoint() where its changes are "
                "complete"
                % (names, self.RACE_TRIES_FULL + 1,
                   "it" if one else "them", "it" if one else "them",
                   "it is" if one else "they are",
                   "; %d entr%s that refer%s to %s held back with %s" % (
                       len(held), "y" if len(held) == 1 else "ies",
                       "s" if len(held) == 1 else "",
                       "it" if one else "them", "it" if one else "them")
                   if held else "",
                   "it" if one else "them", "it" if one else "them"))

    def _hold_for_raced(self, batch):
        """Drop from batch the records that refer, directly or through
        others of the batch, to an entry that raced (raced_now) and has no
        record in the store yet: the store must never refer to an entry
        it lacks.  They go into race_held and stay dirty with it."""
        new = [k for k in self.raced_now if self.digests.get(k) is None]
        recs = batch.refs() if new else None
        if not recs:
            return
        referrers = {}
        for k, r in recs:
            for t in _parse_refs(r):
                referrers.setdefault(t, []).append(k)
        held, todo = self.race_held, new
        while todo:
            for k in referrers.get(todo.pop(), ()):
                if k not in held and k not in self.raced_now:
                    held.add(k)
                    todo.append(k)
        if held:
            batch.drop(list(held))

    def _checkpoint(self, full):
        """checkpoint()'s work (see there)."""
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
            # positional, in the order of the names dump_keys takes
            # (pickler, sink, idmap, keys, shadow, handles, hflags,
            # digests, skip_type): keywords cost 2 us a request here
            failed = batch.dump_keys(
                d.plain, d.sink, self.idmap, keys, self.shadow, self.handles,
                self.handle_flags, self.digests, Placeholder).failed
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
            if self.raced_now:
                self._hold_for_raced(batch)
            if self.race_said:
                # saved this time: a new race is said again
                self.race_said.difference_update(
                    k for k in keys if k not in self.raced_now)
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
                # (digests, refs_of), positional as dump_keys above
                res = batch.commit(self.digests, self.refs_of)
                n, noted = res.written, res.noted
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

    # An interval checkpoint re-pickles at most this many loaded mutable
    # entries, round robin, so that its pause stays bounded in a large
    # workspace; sync, detach and shutdown (full=2) take them all.
    INTERVAL_SLICE = 20000

    def _mutable_keys(self, full):
        """Loaded entries whose reachable state can change in place
        (invisible to the namespace diff): all of them, or the interval's
        slice of at most INTERVAL_SLICE, which goes on where the last one
        ended.  The round robin walks the loaded entries (globals, then
        handles) by position: rr_pos is where it is, rr_left how many its
        cycle has still to walk; the positions before the slice are
        skipped in C, so that a slice costs what it holds, not the
        workspace's size."""
        tables = (("g", self.shadow), ("h", self.handles))
        n = len(self.shadow) + len(self.handles)
        keys = []
        if full >= 2 or n <= self.INTERVAL_SLICE:
            for kind, table in tables:
                self._take_mutable(kind, table.items(), keys, n + 1)
            self.rr_left = 0
            return keys
        left = n if self.rr_left < 0 else min(self.rr_left, n)
        start = self.rr_pos % n
        used, want = 0, self.INTERVAL_SLICE
        # positions start..n, then 0..start (the walk wraps around once)
        for lo, hi in ((start, n), (0, start)):
            base = 0
            for kind, table in tables:
                a, b = max(lo - base, 0), min(hi - base, len(table))
                base += len(table)
                if a < b and len(keys) < want:
                    used += self._take_mutable(
                        kind, _islice(table.items(), a, b), keys, want)
        self.rr_pos = start + used
        self.rr_left = max(0, left - used)
        return keys

    def _take_mutable(self, kind, items, keys, want):
        """Append to keys those of items (the (key, object) pairs of one
        table, kind 'g' or 'h') whose state can change in place, until
        keys holds want of them; return how many of items it looked at.
        Only those made of immutable atoms alone are left out (_frozen;
        known ones cached by key while the key holds them)."""
        frozen = self.frozen
        used = 0
        for k, o in items:
            used += 1
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
            if len(keys) >= want:
                break
        return used

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
            pickler, flags, parts, refs = self._cloud_retried(d, obj, noref,
                                                              key)
            flags |= base
            self.volatile.pop(key, None)
        except BaseException as e:
            # BaseException: a __reduce__ of the user's may raise
            # SystemExit; that entry stays volatile, and the rest of the
            # checkpoint goes on (QA6 4: it failed every checkpoint)
            if _raced(e):
                self._keep_raced(key)
                return
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

    # How many times more an entry is pickled at once when a thread changed
    # it while it was pickled: by a request's or an interval's checkpoint,
    # and by a full one (sync, detach, exit), which must end with it saved
    # or an error.  Each try costs a pickling of the entry.
    RACE_TRIES = 3
    RACE_TRIES_FULL = 10

    def _cloud_retried(self, d, obj, noref, key, group=None):
        """d.cloud_dump(obj, noref, key, group), tried again at once (up to
        RACE_TRIES times, RACE_TRIES_FULL in a full checkpoint) while it
        fails because a thread changed what it walked (_raced); raises
        the last error."""
        tries = self.RACE_TRIES_FULL if self.cp_full >= 2 else \
            self.RACE_TRIES
        while True:
            try:
                return d.cloud_dump(obj, noref, key, group)
            except BaseException as e:      # SystemExit too: _slow_record
                tries -= 1
                if tries <= 0 or not _raced(e):
                    raise

    def _keep_raced(self, key):
        """key raced a thread on every try: no record is added, so its
        stored one (if any) stays; checkpoint() keeps it dirty.  A
        request's checkpoint says so, once until it is saved."""
        self.raced_now.add(key)
        if self.cp_full == 0 and key not in self.race_said:
            self.race_said.add(key)
            self.store_notices.append(
                "%s changed while it was saved (a thread of shipped code); "
                "%s" % (_keystr(key), "kept as of the last checkpoint, "
                        "retried at the next"
                        if self.digests.get(key) is not None else
                        "not saved yet, retried at the next checkpoint"))

    def volatile_reason(self, key):
        """Why key could not be persisted, or None."""
        return self.volatile.get(key)

    def take_notices(self):
        out, self.notices = self.notices, []
        return out


def _raced(e):
    """Whether pickling failed because a container changed while the
    pickler walked it ("dictionary changed size during iteration", "Set
    changed size ...", "deque mutated during iteration", "OrderedDict
    mutated ..."): a thread of shipped code raced the checkpoint, which
    says nothing about the entry itself."""
    if not isinstance(e, RuntimeError):
        return False
    m = str(e).lower()
    return m.endswith("during iteration") and ("changed" in m or
                                               "mutated" in m)


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


def interval_checkpoint(request_ran):
    """The C half's interval checkpoint (every --checkpoint-interval
    seconds while no request runs).  It re-pickles a slice of the loaded
    mutable entries (checkpoint(1)) while in-place changes that no request
    named may still be missing from the store: a new cycle of the round
    robin starts when a request ran since the last one (request_ran) or a
    thread of shipped code is alive now or was during the last one, and
    goes on, one slice per interval, until it has looked at every loaded
    mutable entry; and while entries wait for room in a full store.
    Otherwise (a workspace left alone, its cycle done) it is the O(1)
    checkpoint(0), which writes only a changed session record: the
    workspace goes quiet.  Returns what checkpoint returns."""
    ws = WS
    ws.intervals += 1
    threads = _shipped_threads()
    if request_ran or threads or ws.rr_threads:
        ws.rr_left = -1
    # records a full store could not take are tried again too, as room
    # may have been made outside pyshelf
    full = 1 if ws.rr_left != 0 or ws.unwritten else 0
    saved = ws.rr_left, ws.rr_pos
    t0 = _time.perf_counter()
    try:
        n = checkpoint(full)
    except BaseException:
        ws.rr_left, ws.rr_pos = saved   # the next interval tries again
        raise
    ws.last_interval_s = _time.perf_counter() - t0
    if full:
        ws.interval_scans += 1
    # one that ran during this checkpoint may have changed an entry after
    # it was pickled: the next interval looks at them all again
    ws.rr_threads = bool(threads or _shipped_threads())
    return n


def _shipped_threads():
    """How many threads of shipped code are alive, the worker's one count
    (backend_process._count_threads: threading's and
    _thread.start_new_thread's, from Python or C), which also keeps the
    worker from going idle.  A thread that is alive may change entries in
    place at any time."""
    return _s.threads()


def user_checkpoint():
    """Commit the workspace now: every global and handle, with the
    in-place changes of every loaded one, in one transaction.  For
    long-running shipped code, to call at a point it chose as consistent:
    after a crash (even SIGKILL) the workspace comes back as it was at the
    last call.  Returns the number of entries written; raises (an
    OSError, a MemoryError, ...) when the checkpoint could not be
    written, leaving the workspace as it was in memory; StoreError when
    another thread changed an entry each time it was pickled (the rest
    is committed).  Available as
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



def _notice_what(key, tn):
    """An entry as a notice names it: 'global x (dict)', 'handle 3
    (exception ValueError)'; an excinfo handle's type-name area holds the
    exception's type and message on lines of their own, never shown."""
    tn, exc_type, _msg = _split_type_name(tn)
    what = ("exception %s" % exc_type) if exc_type else tn
    return "%s (%s)" % (_keystr(key), _one_line(what))


def _one_line(text):
    """text with its line breaks (and runs of blanks) as single spaces."""
    return " ".join(str(text).split())


def take_notices():
    out = [("%s cannot be persisted: %s; it stays in memory only and "
            "will be lost when the backend stops\n" %
            (_notice_what(k, tn), _one_line(r)))
           for k, tn, r in WS.take_notices()]
    if WS.store_notices:
        out.extend(t + "\n" for t in WS.store_notices)
        WS.store_notices = []
    return out
