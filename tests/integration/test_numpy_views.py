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
