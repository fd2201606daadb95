"""Cycles of entries: the entries whose objects refer to each other in
a cycle get one record for them all (an EntryGroup) at a checkpoint, and
the other records of the cycle are pointers into it (_member_pickle).

Part of the backend's Python half, loaded by _pyshelf_backend (see
its docstring)."""

import io
import pickle

import _pyshelfd as _s

from _pyshelf_values import (EntryGroup, PICKLER_PICKLE, Placeholder, _MISSING,
                             _record_type_name, _storable, group_member)
from _pyshelf_pickle import _tblib
from _pyshelf_refs import _parse_refs


_FIRST = object()


class _Member:
    __slots__ = ("i",)

    def __init__(self, i):
        self.i = i

    def __reduce__(self):
        return (group_member, (_FIRST, self.i))


def _member_pickle(first, i):
    """The pickle of a group member's record: group_member(<first>, i),
    <first> a persistent reference to the group's first entry."""
    f = io.BytesIO()
    p = pickle.Pickler(f, protocol=5)
    p.persistent_id = lambda o: first if o is _FIRST else None
    p.dump(_Member(i))
    return f.getvalue()


class _GroupsMixin:
    """The Workspace's writing of cycles of entries (see
    _pyshelf_backend.Workspace.__init__ for the state)."""

    # -- cycles of entries: one record for them all (EntryGroup) --
    def _with_groups(self, keys):
        """keys, with every member of the groups of the keys among them
        (and of deleted keys): a group's record holds all its objects, so
        one changed member means the whole group is pickled again.
        Returns (keys, the first keys of those groups)."""
        if len(self.group_of) < len(keys):
            firsts = {f for k, f in self.group_of.items()
                      if k in keys or k in self.deleted}
        else:
            firsts = {self.group_of[k] for k in keys if k in self.group_of}
            firsts.update(self.group_of[k] for k in self.deleted
                          if k in self.group_of)
        if not firsts:
            return keys, ()
        keys = set(keys)
        for first in firsts:
            for k in self.groups[first].keys:
                if k not in keys and k not in self.deleted and \
                        self._entry_obj(k) is not _MISSING:
                    keys.add(k)
        return keys, firsts

    def _entry_obj(self, key):
        """key's object, loaded if need be; _MISSING when it cannot be."""
        kind, k = key
        obj = (self.shadow if kind == "g" else self.handles).get(k, _MISSING)
        if obj is not _MISSING:
            return obj
        try:
            return self.ns[k] if kind == "g" else self.get_handle(k)
        except Exception:
            return _MISSING

    def _cycles(self, batch):
        """The cycles (strongly connected components) of references that
        the batch's records close, through stored records too."""
        new = {k: _parse_refs(v) for k, v in batch.refs()}
        if not new:
            return []
        graph = dict(new)
        # a record is on a cycle only if one of its targets refers to
        # something: the common case (many records that refer to a few
        # entries that refer to nothing) needs no walk
        edges = self._edges(graph)
        live = {t for t in set().union(*new.values()) if edges(t)}
        if not live:
            return []
        roots = [k for k, ts in new.items() if not live.isdisjoint(ts)]
        return self._sccs(roots, new, edges)

    def _edges(self, graph):
        """edges(key): the entries key's record refers to: from graph (the
        batch's records, then those looked up, cached there), the loaded
        records' refs_of, or the store."""
        refs_of = self.refs_of

        def edges(k):
            t = graph.get(k)
            if t is None:
                t = refs_of.get(k)
                if t is None:
                    blob = _s.get_refs(k[0], k[1]) if _storable(k) else None
                    t = _parse_refs(blob) if blob else ()
                graph[k] = t
            return t
        return edges

    def _write_group(self, batch, d, comp):
        """Write the entries of one cycle as an EntryGroup: the first key's
        record holds every object of the cycle, pickled together (other
        entries' objects by reference, as usual); the others' records are
        group_member(<first>, index).  False, and the batch left as it is,
        when the group cannot be pickled (the cycle is then broken as
        before)."""
        keys = tuple(sorted(comp, key=repr))
        objs = tuple(self._entry_obj(k) for k in keys)
        if any(o is _MISSING or type(o) is Placeholder for o in objs):
            return False
        group = EntryGroup(keys, objs)
        _tblib()
        try:
            pickler, flags, parts, refs = self._cloud_retried(
                d, group, False, None, set(keys))
        except BaseException:       # SystemExit too (_slow_record)
            return False
        batch.drop(list(keys))
        for k in keys:
            self.volatile.pop(k, None)
        first = keys[0]
        self._add_record(batch, first, pickler, flags | self._base(first),
                         _record_type_name(objs[0], self._base(first)),
                         refs, parts)
        ref = _s.refs_encode((first,))
        for i in range(1, len(keys)):
            self._add_record(batch, keys[i], PICKLER_PICKLE,
                             self._base(keys[i]),
                             _record_type_name(objs[i], self._base(keys[i])),
                             ref,
                             [_member_pickle(first, i)])
        self._note_group(first, group)
        return True

    def _base(self, key):
        return self.handle_flags.get(key[1], 0) if key[0] == "h" else 0

    def _add_record(self, batch, key, pickler, flags, tn, refs, parts):
        """Add key's record to the batch unless the store holds one with
        the same digest."""
        digest = _s.digest(parts, flags, refs)
        if self.digests.get(key) != digest:
            batch.add(key, pickler, flags, tn, refs, digest, parts)

    def _cyclic(self, batch):
        """Keys of the batch's records to pickle without references so that
        no cycle of records remains (through records already stored, too):
        one record per cycle, so most references, and identity, stay."""
        new = {k: _parse_refs(v) for k, v in batch.refs()}
        if not new:
            return None
        graph = dict(new)
        edges = self._edges(graph)
        broken = set()
        while True:
            sccs = self._sccs(new, new, edges)
            if not sccs:
                return broken
            for comp in sccs:
                # the newest record of the cycle holds the others by value
                key = max((c for c in comp if c in new), key=repr)
                broken.add(key)
                graph[key] = ()

    def _sccs(self, roots, new, edges):
        """Strongly connected components (of more than one record) reached
        from roots that contain a record of this checkpoint (new): Tarjan,
        iteratively."""
        index, low, onstack, stack, out = {}, {}, set(), [], []
        counter = [0]
        for root in roots:
            if root in index:
                continue
            work = [(root, iter(edges(root)))]
            index[root] = low[root] = counter[0]
            counter[0] += 1
            stack.append(root)
            onstack.add(root)
            while work:
                v, it = work[-1]
                for w in it:
                    if w not in index:
                        index[w] = low[w] = counter[0]
                        counter[0] += 1
                        stack.append(w)
                        onstack.add(w)
                        work.append((w, iter(edges(w))))
                        break
                    if w in onstack:
                        low[v] = min(low[v], index[w])
                else:
                    work.pop()
                    if work:
                        u = work[-1][0]
                        low[u] = min(low[u], low[v])
                    if low[v] == index[v]:
                        comp = []
                        while True:
                            w = stack.pop()
                            onstack.discard(w)
                            comp.append(w)
                            if w == v:
                                break
                        if len(comp) > 1 and any(c in new for c in comp):
                            out.append(comp)
        return out
