"""Write tests/integration/data/presplit-store, the store that
test_presplit_store.py reads: made once, by the pyshelfd of main at
05fdb80 (the backend's Python half still one file, exec/backend.py), so
that the test checks that a store written before the split loads after it.

    PYTHONPATH=$BUILD/client/python /usr/bin/python3 make_presplit_store.py \\
        $PRESPLIT_BUILD/pyshelfd OUTDIR

Each entry pickles a path the backend gives its objects: a function of
shipped code (_pyshelf_backend._rebuild_ws_function), the backend's own
sys.setrecursionlimit (_pyshelf_backend.setrecursionlimit), pyshelf.*
classes and functions (DirectValue, group_member in a cycle's records,
checkpoint), an exception's handle (WrappedExcinfo, tblib), a module by
name, and references between entries.
"""
import os
import shutil
import sys

import pyshelf

backend, out = sys.argv[1], sys.argv[2]
if os.path.exists(out):
    shutil.rmtree(out)
ws = pyshelf.spawn(db=out, session="old", backend=backend)
ws.remote_exec('''
import json, sys

def twice(x):
    return 2 * x

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)

p = Point(3, -4)
srl = sys.setrecursionlimit
dv = DirectValue([1, 2])
cp = checkpoint
mod = json
shared = [1, 2, 3]
holder = {"s": shared}
ring_a = ["a"]
ring_b = ["b", ring_a]
ring_a.append(ring_b)
''')
h = ws.remote_exec("holder")                  # a handle to a global's dict
assert isinstance(h, pyshelf.Wrapped), h
e = ws.remote_exec("1 / 0")                   # an exception's handle
assert isinstance(e, pyshelf.WrappedExcinfo), e
print("handles:", h.id, e.id)
ws.close()
os.unlink(os.path.join(out, "lock.mdb"))
