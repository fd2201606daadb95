"""pyshelfd refuses a store that another user owns or may write to (issue
14, trust boundaries): its records are pickles, and loading one runs what
its writer put there, with the rights of whoever runs pyshelfd (as root:
as root).  --allow-foreign-store opens it anyway."""
import os

import pytest

import pyshelf
from pyshelf import DirectValue

OTHER_UID = 4242     # a uid that is not ours (no account needed)


def plant(db, marker):
    """A store whose global 'evil' runs `touch marker` when loaded."""
    ws = pyshelf.spawn(db=db, session="s")
    ws.remote_exec("import os\n"
                   "class Evil:\n"
                   "    def __reduce__(self):\n"
                   "        return (os.system, ('touch %s',))\n"
                   "evil = Evil()\nplain = [1, 2]" % marker)
    ws.close()


def chown_tree(path, uid):
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, -1)
    os.lchown(path, uid, -1)


@pytest.fixture
def root_only():
    assert os.geteuid() == 0, "this test changes file owners: run as root"


@pytest.mark.stdio_only("pyshelfd options in spawn's args: a server already running keeps its own")
@pytest.mark.parametrize("what", ["directory", "data.mdb"])
def test_store_of_another_user_is_refused(tmp_path, root_only, what):
    db = str(tmp_path / "db")
    marker = tmp_path / "ran"
    plant(db, marker)
    if what == "directory":
        chown_tree(db, OTHER_UID)
    else:
        os.chown(os.path.join(db, "data.mdb"), OTHER_UID, -1)
    with pytest.raises(ValueError) as ei:
        pyshelf.spawn(db=db, session="s")
    msg = str(ei.value)
    assert "uid %d" % OTHER_UID in msg and "--allow-foreign-store" in msg
    assert not marker.exists()
    # told explicitly, it opens (and the planted pickle is the user's risk)
    ws = pyshelf.spawn(db=db, session="s", args=["--allow-foreign-store"])
    try:
        assert ws.remote_exec("DirectValue(plain)").value == [1, 2]
    finally:
        ws.close()
    assert not marker.exists()      # evil was never loaded


def test_store_writable_by_others_is_refused(tmp_path):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="s")
    ws["x"] = 1
    ws.close()
    for mode, who in ((0o777, "others"), (0o770, "its group")):
        os.chmod(db, mode)
        with pytest.raises(ValueError, match="writable by %s" % who):
            pyshelf.spawn(db=db, session="s")
    os.chmod(db, 0o700)
    ws = pyshelf.spawn(db=db, session="s")
    try:
        assert ws["x"] == 1
    finally:
        ws.close()
