"""Programs that shipped code starts inherit none of the backend's own
descriptors (QA3 finding 4): LMDB opens data.mdb without O_CLOEXEC, so
os.system() and subprocess.Popen(close_fds=False) children held the
store's data file.  Every descriptor the backend, worker and supervisor
open is close-on-exec (store/env.c env_cloexec, and O_CLOEXEC elsewhere);
a child gets fds 0, 1 and 2 only: /dev/null and the call's output pipes.
Both modes (stdio backend, server worker)."""
import json
import os

import pyshelf

# A child's own descriptors: {fd: what it points at}, without the one
# listing them.
LIST = ("import json, os, sys\n"
        "d = '/proc/self/fd'\n"
        "out = {}\n"
        "for f in os.listdir(d):\n"
        "    try:\n"
        "        out[f] = os.readlink(os.path.join(d, f))\n"
        "    except OSError:\n"
        "        pass\n"
        "json.dump(out, open(sys.argv[1], 'w'))\n")


def _check(path, db, listing_dir="/proc/"):
    with open(path) as f:
        fds = json.load(f)
    # the fd of os.listdir's directory, if it shows
    fds = {int(k): v for k, v in fds.items() if not v.startswith(listing_dir)}
    real = os.path.realpath(db)
    store = {k: v for k, v in fds.items() if v.startswith(real)}
    assert not store, "the child holds the store's files: %s" % store
    socks = {k: v for k, v in fds.items() if v.startswith("socket:")}
    assert not socks, "the child holds sockets: %s" % socks
    assert sorted(fds) == [0, 1, 2], fds


def test_children_of_shipped_code_hold_no_store_files(tmp_path):
    db = tmp_path / "db"
    ws = pyshelf.open("t", db=db, create_db=True)
    try:
        ws["keep"] = b"k" * 100000            # a blob file, a checkpoint
        ws.sync()
        a, b = tmp_path / "system.json", tmp_path / "popen.json"
        ws.remote_exec(
            "import os, shlex\n"
            "rc = os.system('/usr/bin/python3 -c %%s %%s' %% "
            "(shlex.quote(%r), shlex.quote(%r)))\n"
            "assert rc == 0, rc\n"
            "import subprocess\n"
            "p = subprocess.Popen(['/usr/bin/python3', '-c', %r, %r], "
            "close_fds=False)\n"
            "assert p.wait() == 0\n" % (LIST, str(a), LIST, str(b)))
        _check(a, db)
        _check(b, db)
        assert ws["keep"] == b"k" * 100000
    finally:
        ws.close()
