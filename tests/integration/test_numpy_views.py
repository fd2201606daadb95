"""numpy views survive a restart as views (issue 18): arrays of the
workspace that share memory are stored as the largest one plus, for the
others, where they lie in it; a view whose memory no array of the
workspace holds is a copy, and the client is told when that breaks
sharing.  Clean close and SIGKILL after a request's own checkpoint."""
import pytest

import pyshelf
from restarts import MODES, restart, value

SETUP = """
import numpy as np
a = np.arange(10.0)
v = a[2:5]
w = a[::-2]                       # negative stride
m = np.arange(12).reshape(3, 4)   # itself a view of a temporary
col = m[:, 1]                     # strided view of it
ro = a[1:3]
ro.flags.writeable = False
d = {'inner': a[7:]}              # a view inside a container
class Box:
    pass
box = Box()
box.part = a[:2]                  # inside an instance (cloudpickle path)
t = np.arange(5)[1:3]             # view of a temporary nobody else holds
"""

SHARES = """pyshelf.DirectValue(dict(
    v=np.shares_memory(v, a), w=np.shares_memory(w, a),
    col=np.shares_memory(col, m), ro=np.shares_memory(ro, a),
    ro_writeable=bool(ro.flags.writeable),
    inner=np.shares_memory(d['inner'], a),
    box=np.shares_memory(box.part, a)))"""

ALL_SHARED = dict(v=True, w=True, col=True, ro=True, ro_writeable=False,
                  inner=True, box=True)


@pytest.mark.parametrize("mode", MODES)
def test_views_stay_views_across_restarts(tmp_path, backend, mode):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    ws.remote_exec(SETUP)
    for round_ in range(3):
        ws = restart(ws, mode, db)
        assert value(ws, SHARES) == ALL_SHARED, round_
        # a change through the base shows in every view, and is kept
        ws.remote_exec("a[3] += 1; a[8] += 1; m[2, 1] -= 1")
        got = value(ws, "pyshelf.DirectValue((v.tolist(), w.tolist(), "
                        "col.tolist(), d['inner'].tolist(), t.tolist()))")
        step = round_ + 1
        assert got == ([2.0, 3.0 + step, 4.0],
                       [9.0, 7.0, 5.0, 3.0 + step, 1.0],
                       [1, 5, 9 - step],
                       [7.0, 8.0 + step, 9.0],
                       [1, 2])
    ws.close()


def make_views(b):
    global inner, corner
    inner = b[1:3, 1:3]
    corner = inner[0]


@pytest.mark.parametrize("mode", MODES)
def test_views_of_a_handle_and_a_view_of_a_view(tmp_path, backend, mode):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    h = ws.remote_exec("import numpy as np\nnp.zeros((4, 4))")
    ws.remote_exec(make_views, h)
    hid = h.id
    ws.sync()
    ws = restart(ws, mode, db)
    h = ws.handle(hid)
    ws.remote_exec(_touch, h)       # writes through the handle's array
    assert value(ws, "pyshelf.DirectValue((float(inner[0, 1]), "
                     "float(corner[1])))") == (7.0, 7.0)
    ws.close()


def _touch(b):
    b[1, 2] = 7.0


def test_a_copy_that_breaks_sharing_is_said_once(tmp_path, backend, capfd):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    # p1 and p2 share a temporary's memory, and neither holds the other
    ws.remote_exec("import numpy as np\ntmp = np.arange(6)\n"
                   "p1 = tmp[:2]\np2 = tmp[1:4]\ndel tmp")
    ws.sync()
    ws.remote_exec("p1[0] = 5")
    ws.sync()
    err = capfd.readouterr().err
    assert err.count("a numpy view (shape (2,), dtype int64)") == 1, err
    assert "stored as a copy" in err
    ws = restart(ws, "clean", db)
    assert value(ws, "pyshelf.DirectValue((p1.tolist(), p2.tolist(), "
                     "bool(np.shares_memory(p1, p2))))") == \
        ([5, 1], [1, 2, 3], False)
    # a view of a temporary that nothing else holds is a faithful copy:
    # nothing to say
    ws.remote_exec("t = np.arange(5)[1:3]")
    ws.sync()
    assert "numpy view" not in capfd.readouterr().err
    ws.close()


# --- arrays of Python objects (QA2 06) ----------------------------------

OBJ_SETUP = """
import numpy as np
oa = np.empty(6, dtype=object)
for i in range(6):
    oa[i] = [i]
oav = oa[::2]                     # a view of a global
oavv = oav[::-1]                  # a view of that view
grid = np.empty((3, 4), dtype=object, order='F')
grid[...] = 0
gcol = grid[:, 1]                 # strided view of a Fortran-order array
d = {'inner': oa[1:3]}            # a view inside a container
oa[5] = oav                       # an item of the array holds a view of it
"""

OBJ_SHARES = """pyshelf.DirectValue(dict(
    oav=np.shares_memory(oav, oa), oavv=np.shares_memory(oavv, oa),
    gcol=np.shares_memory(gcol, grid),
    inner=np.shares_memory(d['inner'], oa),
    cycle=oa[5] is oav, same_item=oav[1] is oa[2] and oavv[0] is oa[4]))"""


@pytest.mark.parametrize("mode", MODES)
def test_object_array_views_stay_views(tmp_path, backend, mode):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    ws.remote_exec(OBJ_SETUP)
    ws.remote_exec("oav[1].append('x')")       # an item, through the view
    for round_ in range(3):
        ws = restart(ws, mode, db)
        assert value(ws, OBJ_SHARES) == dict(
            oav=True, oavv=True, gcol=True, inner=True, cycle=True,
            same_item=True), round_
        # a write through a view reaches the array, and is kept
        ws.remote_exec("oavv[2] = 'r%d'\ngcol[2] = %d\nd['inner'][0] = 'i%d'"
                       % (round_, round_, round_))
        ws = restart(ws, mode, db)
        got = value(ws, "pyshelf.DirectValue((oa[:5].tolist(), "
                        "grid[2, 1], oav[0]))")
        assert got == (["r%d" % round_, "i%d" % round_, [2, 'x'], [3],
                        [4]], round_, "r%d" % round_), round_
    ws.close()


def make_object_views(b):
    global ov, ovv
    ov = b[1:]
    ovv = ov[::2]


def _set_item(b):
    b[3] = "through the handle"


@pytest.mark.parametrize("mode", MODES)
def test_object_array_views_of_a_handle(tmp_path, backend, mode):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    h = ws.remote_exec("import numpy as np\nnp.array([[], [1], [2], [3]], "
                       "dtype=object)")
    ws.remote_exec(make_object_views, h)
    hid = h.id
    ws.sync()
    ws = restart(ws, mode, db)
    h = ws.handle(hid)
    ws.remote_exec(_set_item, h)
    assert value(ws, "pyshelf.DirectValue((ov[2], ovv[1]))") == \
        ("through the handle", "through the handle")
    ws.close()


def test_a_view_off_the_object_slots_is_a_copy_and_said(tmp_path, backend,
                                                        capfd):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    # the object pointers read as integers: not a view to rebuild
    ws.remote_exec("import numpy as np\noa = np.array([[1], 'a'], "
                   "dtype=object)\nptrs = np.ndarray((2,), 'i8', buffer=oa)")
    ws.sync()
    err = capfd.readouterr().err
    assert err.count("a numpy view (shape (2,), dtype int64) of an array "
                     "of Python objects (dtype object)") == 1, err
    ws = restart(ws, "kill", db)
    assert value(ws, "pyshelf.DirectValue((oa.tolist(), ptrs.shape, "
                     "bool(np.shares_memory(ptrs, oa))))") == \
        ([[1], "a"], (2,), False)
    ws.close()


DAMAGED = """
import numpy as np, _pyshelf_backend as B
class View:      # a view of Python objects over bytes
    def __reduce__(self):
        return (B._rebuild_view, (bytearray(b'\\x01' * 16), 0, (2,), (8,),
                                  np.dtype(object), True))
class Fill:      # an array of Python objects and too few items
    def __reduce__(self):
        return (B._new_object_array, ((3,), False), [1, 2], None, None,
                B._fill_object_array)
view = View()
fill = Fill()
"""


@pytest.mark.parametrize("name, says", [
    ("view", "does not lie on the object slots of the array it views "
             "(bytearray): the record is damaged"),
    ("fill", "does not match its 2 items: the record is damaged")])
def test_a_damaged_object_array_record_is_an_error(tmp_path, backend, name,
                                                   says):
    db = str(tmp_path / "db")
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    ws.remote_exec(DAMAGED)
    ws.sync()
    ws = restart(ws, "kill", db)
    r = ws.remote_exec("repr(%s)" % name)
    assert r.exc_type == "UnpicklingError" and says in str(r), str(r)
    assert value(ws, "pyshelf.DirectValue(1 + 1)") == 2   # it lives on
    ws.close()
