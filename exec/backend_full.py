"""A checkpoint that does not fit in the store (its map size or the
disk): commit what fits, keep the rest pending in memory, and say what was
left out and why.

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""


import _pyshelfd as _s

from _pyshelf_values import _keystr, _storable
from _pyshelf_refs import _parse_refs


def _fmt_bytes(n):
    """n bytes for a person: '812 bytes', '95.4 MB'."""
    if n < 1000:
        return "%d bytes" % n
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            return "%.1f %s" % (n, unit)


def _cost_of(size, deps):
    """{record: (bytes, depth)}: the most bytes among it and the records
    it refers to (deps, transitively), and how deep it is among them, so
    that sorting by it puts a record after those it refers to.  Iterative:
    a chain of references may be as long as the batch."""
    cost = {}
    for root in size:
        if root in cost:
            continue
        stack, path = [(root, iter(deps.get(root, ())))], {root}
        while stack:
            k, it = stack[-1]
            for t in it:
                if t not in cost and t not in path:
                    path.add(t)
                    stack.append((t, iter(deps.get(t, ()))))
                    break
            else:
                stack.pop()
                path.discard(k)
                c0, c1 = size[k], 0
                for t in deps.get(k, ()):
                    tc = cost.get(t)     # None: a cycle back to the path
                    if tc is not None:
                        c0, c1 = max(c0, tc[0]), max(c1, tc[1] + 1)
                cost[k] = (c0, c1)
    return cost


def _full_why(need):
    """Which limit a checkpoint of need more bytes ran into: the disk, or
    the store's --map-max."""
    try:
        room = _s.room()
        map_max, disk_free = room.map_max, room.disk_free
    except Exception:
        return "the store is full"
    if 0 <= disk_free < need + (1 << 20):
        return ("the disk is full (%s free on the store's file "
                "system)" % _fmt_bytes(disk_free))
    for shift, unit in ((40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if map_max >= 1 << shift and map_max % (1 << shift) == 0:
            return "the store is full (--map-max %d%s)" % (map_max >> shift,
                                                      unit)
    return "the store is full (--map-max %d)" % map_max


class _FullStoreMixin:
    """The Workspace's handling of a full store (see
    _pyshelf_backend.Workspace.__init__ for the state)."""

    def _held_by_unwritten(self, batch):
        """The records of batch that refer to an entry not written for
        lack of space and not in batch (the checkpoint did not retry it),
        or to such a record: they must wait for it."""
        recs = batch.refs()
        if not recs:
            return None
        keys = set(k for k, _b, _r in batch.records())
        referrers = {}
        todo = []
        for k, r in recs:
            for t in _parse_refs(r):
                referrers.setdefault(t, []).append(k)
                if t in self.unwritten and t not in keys:
                    todo.append(k)
        held = set()
        while todo:              # and what refers to those, transitively
            k = todo.pop()
            if k not in held:
                held.add(k)
                todo.extend(referrers.get(k, ()))
        return held

    def _commit_what_fits(self, batch, err, held=None):
        """The whole batch did not fit in the store (err: StoreFull).
        Commit what does, in several transactions: first the deletes
        (they free space), then the records smallest first, halving the
        part tried until one fits.  A record is committed only with or
        after the records in the batch it refers to, and a delete only
        once no record left out refers to the key deleted (its stored
        record still does), so that the store never holds a reference to
        an entry it lacks.  held: records left out from the start.
        Returns (records written, their refs to note, (left out {key:
        bytes}, index rows left, deletes committed, {left out: the entry
        it waits for}, records written, another store error that stopped
        it or None)); what is left stays pending for the next checkpoint.
        A store error other than full stops it too, with what was
        committed so far noted, so that the bookkeeping stays true."""
        recs = batch.records()
        size = {k: b for k, b, _r in recs}
        deps, refs = {}, {}
        for k, _b, r in recs:
            if r:
                refs[k] = _parse_refs(r)
                ts = [t for t in refs[k] if t in size and t != k]
                if ts:
                    deps[k] = ts
        cost = _cost_of(size, deps)
        order = sorted((k for k in size if not held or k not in held),
                       key=cost.__getitem__)
        old_refs = {}                 # record -> targets of its stored one
        for k in size:
            old_refs[k] = set(self.refs_of.get(k, ()))
        for t, k in self.unrefs:
            if k in old_refs:
                old_refs[k].add(t)
        dels = [k for k in self.deleted if _storable(k)]
        del_set = set(dels)
        rows = [(t, k) for k in dels for t in self.refs_of.get(k, ())]
        rows.extend(self.unrefs)
        done, done_dels, done_rows = set(), set(), set()
        written, noted, other = 0, [], []

        def attempt(part):
            nonlocal written
            # with the records of the batch they refer to (only those of
            # a cycle are not before them in order)
            part = set(k for k in part if k not in done)
            todo = [t for k in part for t in deps.get(k, ())]
            while todo:
                t = todo.pop()
                if t not in part and t not in done:
                    part.add(t)
                    todo.extend(deps.get(t, ()))
            out = set(size) - done - part
            blocked = set()
            for k in out:
                blocked |= old_refs[k]
            dnow = [d for d in dels if d not in done_dels and
                    d not in blocked]
            ok_dels = done_dels.union(dnow)
            rnow = [r for r in rows if r not in done_rows and
                    r[1] not in out and
                    (r[1] not in del_set or r[1] in ok_dels)]
            if other or (not part and not dnow and not rnow):
                return False
            try:
                res = batch.commit_part(digests=self.digests,
                                        refs_of=self.refs_of, keys=part,
                                        dels=dnow, unrefs=rnow)
                n, nt = res.written, res.noted
            except _s.StoreFull:
                return False
            except (_s.StoreError, _s.CorruptEntry) as e:
                other.append(e)       # not for lack of room: stop there
                return False
            written += n
            noted.extend(nt)
            done.update(part)
            done_dels.update(dnow)
            done_rows.update(rnow)
            return True

        lo, hi = 0, len(order)
        if err is None:
            # not (yet) known not to fit: only the held records are out
            if attempt(order):
                lo = hi
            else:
                err = _s.StoreFull("store is full")
        if lo < hi and attempt(()) and done_dels and attempt(order[lo:]):
            lo = hi                   # the deletes made room for the rest
        # order[lo:hi] does not fit as a whole: halve until a part does
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(order[lo:mid]):
                lo = mid
            else:
                hi = mid
        attempt(())                   # deletes no longer held back
        left = {k: size[k] for k in order[lo:] if k not in done}
        if held:
            left.update((k, size[k]) for k in held)
        waits = {}                    # left out for another left out
        for k in left:
            for t in refs.get(k, ()):
                if t != k and (t in left or t in self.unwritten):
                    waits[k] = t
                    break
        return written, noted, (left, [r for r in self.unrefs
                                       if r not in done_rows],
                                done_dels, waits, written,
                                other[0] if other else None)

    def _deletes_done(self, done_dels):
        return all(k in done_dels for k in self.deleted if _storable(k))

    def _checkpoint_short(self, short, quiet=False):
        """After _commit_what_fits: keep what was left out pending (its
        records are retried when there may be room, its deletes by the next
        checkpoint) and raise StoreFull naming it; quiet: only a notice
        on the client's stderr instead (what was left out is what earlier
        checkpoints left out), and return the records written."""
        left, _rows, done_dels, waits, _n, other = short
        self.unwritten.update(left)
        self.deleted -= done_dels
        self.released.difference_update(k[1] for k in done_dels
                                        if k[0] == "h")
        self.dirty.clear()

        def named(keys, limit=10):
            keys = sorted(keys, key=lambda k: -left[k])
            names = ["%s (%s)" % (_keystr(k), _fmt_bytes(left[k]))
                     for k in keys[:limit]]
            if len(keys) > limit:
                names.append("%d more" % (len(keys) - limit))
            return ", ".join(names)

        nofit = [k for k in left if k not in waits]
        dels = sum(1 for k in self.deleted if _storable(k))
        parts = []
        if nofit or dels or not waits:
            what = named(nofit)
            if dels:
                what += "%s%d deletion%s" % (", " if what else "", dels,
                                             "s" if dels > 1 else "")
            parts.append("%s not written: %s" % (
                what, str(other) if other is not None else
                _full_why(max(left[k] for k in nofit) if nofit else 0)))
        if waits:
            first = sorted(waits, key=lambda k: -left[k])[0]
            parts.append("%s held back: %s" % (
                named(waits), "it refers to %s" % _keystr(waits[first])
                if len(waits) == 1 else "they refer to entries not written"))
        text = ("checkpoint incomplete: %s; everything else is committed.  "
                "What was not written stays in this backend's memory and is "
                "written by the next checkpoint that finds room (after a "
                "del, or once space is freed on the disk: sync())" %
                "; ".join(parts))
        if quiet and not dels and other is None:
            self.store_notices.append(text.replace(
                "checkpoint incomplete:", "still pending:",
                1))
            return short[4]
        raise (_s.StoreFull if other is None else _s.StoreError)(text)
