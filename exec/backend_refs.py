"""The references between entries: refs blobs parsed (by _pyshelfd, on
the store's codec, store/refs.c), the workspace's index of who refers to
whom (_RefsMixin: referrers, rescue of records holding an object that
changes identity, hidden handles), and the LOST listing (lost_request),
which follows references to lost entries.

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""


import _pyshelfd as _s

from _pyshelf_values import (FLAG_HIDDEN, FLAG_VOLATILE, Placeholder, _ATOMIC,
                             _UNLOADED, _keystr, _split_type_name, _type_name)

WS = None   # the Workspace: set by _pyshelf_backend.init()


_REFS_PARSED = {}     # refs blob -> its keys: records often share one


def _parse_refs(blob):
    """Decode a refs blob: (u8 kind, u16 length, key bytes)*, into a tuple
    of entry keys.  Cached by the blob's bytes: the records of a workspace
    tend to refer to the same few entries (10,000 dicts that each hold one
    shared list have one blob between them)."""
    if type(blob) is not bytes:
        return _s.refs_parse(blob)
    keys = _REFS_PARSED.get(blob)
    if keys is None:
        if len(_REFS_PARSED) >= 4096:
            _REFS_PARSED.clear()
        keys = _REFS_PARSED[blob] = _s.refs_parse(blob)
    return keys


class _RefsMixin:
    """The Workspace's references index (see
    _pyshelf_backend.Workspace.__init__ for the state)."""

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
                    tn = _split_type_name(head.type_name)[0]
            except _s.CorruptEntry:
                pass
            lost[key] = (tn, "its record is damaged: %s" % (e,))
            continue
        if rec is None:
            continue
        flags, tn, blob, vreason = rec.flags, rec.type_name, rec.refs, \
            rec.reason
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
