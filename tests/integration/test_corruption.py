"""A damaged store never crashes a process (issue 14).

A store made by a real pyshelfd through the client (globals, handles, a
reference between entries, a cycle, blob files) is copied and damaged on
purpose, a few hundred ways from a fixed seed: random bytes, bytes near
payloads, page headers, meta pages, blob file bytes, truncation of
data.mdb and of blob files.  On every copy pyshelf-dump's views (the
sessions table, the session's entries, one entry, --json, --check) and a
pyshelfd reading every global through the client must end with a clear
result or a clear error: an exit status of 0, 1 or 2 with a message, a
pyshelf.Error in the client; never a signal, a core or a sanitizer report.

$PYSHELF_CORRUPTIONS sets how many corruptions the campaign tries (default
240; the sanitizer run in .ci/run sets fewer).  Paths: $PYSHELF_DUMP and
$PYSHELFD (set by `make check`).  By hand:

    PYTHONPATH=$BUILD/client/python PYSHELF_DUMP=$BUILD/pyshelf-dump \\
    PYSHELFD=$BUILD/pyshelfd /usr/bin/python3 -m pytest \\
        tests/integration/test_corruption.py
"""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import threading

import pytest

import pyshelf

# make check sets both (tests/Makefile.inc); a missing one is a failure
DUMP = os.environ["PYSHELF_DUMP"]
PYSHELFD = os.environ["PYSHELFD"]
SEED = 14
COUNT = int(os.environ.get("PYSHELF_CORRUPTIONS") or 240)
PSIZE = 4096
SANITIZER = ("ERROR: AddressSanitizer", "runtime error:",
             "ERROR: LeakSanitizer", "double free", "Segmentation fault")



def dump(*args, db):
    """Run pyshelf-dump on db; returns the CompletedProcess (text)."""
    r = subprocess.run([DUMP, "--db", str(db)] + [str(a) for a in args],
                       capture_output=True, timeout=120)
    r.stdout = r.stdout.decode("utf-8", "replace")
    r.stderr = r.stderr.decode("utf-8", "replace")
    return r


# pyshelf-dump reads in a child: a page that crashes LMDB ends the child,
# and the parent says so (exit 1, damage), naming the signal: that line is
# the clear error, not a crash of the process the user ran
CHILD_CRASH = re.compile(r"pyshelf-dump: the store is damaged: (opening|"
                         r"reading) it crashed \([^)]*\)[^\n]*\n?")


def clear(r, what):
    """A clear result or a clear error: 0, or 1/2 with a message; never a
    signal or a sanitizer report."""
    assert r.returncode in (0, 1, 2), (what, r.returncode, r.stdout[-2000:],
                                       r.stderr[-2000:])
    err = CHILD_CRASH.sub("", r.stderr)
    assert not any(s in err for s in SANITIZER), (what, r.stderr)
    if r.returncode != 0:
        assert (r.stderr.strip() or "DAMAGE" in r.stdout or
                "NOT SAVED" in r.stdout or '"problem"' in r.stdout), \
            (what, r.returncode, r.stdout)


MAKE = """
a = [1, 2, 3]
b = {'a': a, 'tag': 'marker-b'}
class Node:
    def __init__(self, name):
        self.name = name
x = Node('x'); y = Node('y'); x.other = y; y.other = x
big = bytes(range(256)) * 4400
big2 = b'z' * 1200000
s = 'marker-s'
n = 12345
d = {i: str(i) * 10 for i in range(200)}
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The store every corruption starts from: made once by a real
    pyshelfd through the client."""
    root = tmp_path_factory.mktemp("corrupt")
    db = root / "db"
    ws = pyshelf.spawn(db=db, session="s", backend=PYSHELFD)
    ws.remote_exec(MAKE)
    h = ws.remote_exec("[a, b, x]")          # a handle referring to globals
    assert isinstance(h, pyshelf.Wrapped)
    ws.remote_exec("keep = []")
    names = sorted(ws)
    ws.close()
    assert len(os.listdir(db / "blobs")) == 2
    r = dump("--check", db=db)
    assert r.returncode == 0 and r.stdout.strip().endswith("sound"), r
    return {"db": db, "root": root, "names": names}


def copy(made, dst):
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(made["db"], dst)
    return dst


# --- the corruptions ---------------------------------------------------------


def _flip(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def corrupt(rng, db, kind):
    """Damage the copy at db one way; returns a description."""
    data = db / "data.mdb"
    size = data.stat().st_size
    blobs = sorted((db / "blobs").iterdir())
    if kind == "random":
        off = rng.randrange(2 * PSIZE, size)
        n = rng.randint(1, 8)
        _flip(data, off, rng.randbytes(n))
        return "%d random bytes at %d" % (n, off)
    if kind == "payload":
        raw = data.read_bytes()
        anchors = [m for m in (b"marker-b", b"marker-s", b"Node", b"builtins",
                               b"\x80\x05", b"list", b"dict")
                   if m in raw]
        anchor = rng.choice(anchors)
        hits = []
        i = raw.find(anchor)
        while i >= 0:
            hits.append(i)
            i = raw.find(anchor, i + 1)
        off = max(2 * PSIZE, rng.choice(hits) + rng.randint(-80, 40))
        n = rng.randint(1, 4)
        _flip(data, off, rng.randbytes(n))
        return "%d bytes near %r at %d" % (n, anchor, off)
    if kind == "header":
        page = rng.randrange(2, size // PSIZE)
        off = page * PSIZE + rng.randrange(0, 16)
        n = rng.randint(1, 4)
        _flip(data, off, rng.randbytes(n))
        return "page %d header byte %d (%d bytes)" % (page, off % PSIZE, n)
    if kind == "meta":
        page = rng.randrange(0, 2)
        off = page * PSIZE + rng.randrange(0, 160)
        _flip(data, off, rng.randbytes(rng.randint(1, 4)))
        return "meta page %d byte %d" % (page, off % PSIZE)
    if kind == "root":
        # the header of a database's root page: the main database's (all
        # named databases hang from it), or a named one's
        raw = data.read_bytes()
        name = rng.choice([None, b"meta", b"sessions", b"entries", b"calls"])
        page = _main_root(raw) if name is None else _root_page(raw, name)
        off = page * PSIZE + rng.randrange(8, 16)
        _flip(data, off, rng.randbytes(rng.randint(1, 4)))
        return "root page %d (%s) byte %d" % (page, name or "main",
                                               off % PSIZE)
    if kind == "blob":
        f = rng.choice(blobs)
        off = rng.randrange(0, f.stat().st_size)
        _flip(f, off, rng.randbytes(rng.randint(1, 8)))
        return "blob %s byte %d" % (f.name, off)
    if kind == "truncate":
        n = rng.randrange(0, size)
        if rng.random() < 0.5:
            n -= n % PSIZE
        os.truncate(data, n)
        return "data.mdb truncated to %d" % n
    if kind == "truncate_blob":
        f = rng.choice(blobs)
        n = rng.randrange(0, f.stat().st_size)
        os.truncate(f, n)
        return "blob %s truncated to %d" % (f.name, n)
    raise AssertionError(kind)


KINDS = ["random", "payload", "header", "meta", "blob", "truncate",
         "truncate_blob", "root"]
# how often each is drawn: the store's own pages most
WEIGHTS = [5, 5, 4, 2, 2, 1, 1, 2]


def probe_dump(db, names):
    """Every view of pyshelf-dump ends clearly."""
    clear(dump(db=db), "sessions")
    clear(dump("--json", db=db), "sessions --json")
    clear(dump("s", db=db), "entries")
    r = dump("--json", "s", db=db)
    clear(r, "entries --json")
    for line in r.stdout.splitlines():
        json.loads(line)                  # whole rows only
    for name in ("b", "big", "x", "#1"):
        clear(dump("s", name, db=db), "entry " + name)
    clear(dump("--json", "s", "big2", db=db), "entry --json big2")
    r = dump("--check", db=db)
    clear(r, "--check")
    assert r.returncode != 2 or r.stderr.strip(), r
    if r.returncode == 0:
        assert r.stdout.strip().endswith("sound"), r.stdout
    # LMDB's assertion sentence is part of a DAMAGE line, never a line of
    # its own on stderr; a damaged pyshelf store is never "not a store"
    assert "Assertion" not in r.stderr, r.stderr
    if "DAMAGE [structure]" in r.stdout or r.returncode == 2:
        assert "not a pyshelf store" not in r.stderr, r.stderr
    out = db.parent / (db.name + "-saved")
    if out.exists():
        shutil.rmtree(out)
    s = dump("--salvage", out, db=db)
    clear(s, "--salvage")
    assert "Assertion" not in s.stderr, s.stderr
    if s.returncode in (0, 1) and out.exists():
        # sound, but for references to entries that were not saved
        c = dump("--check", db=out)
        assert c.returncode in (0, 1), ("the salvaged copy", c)
        bad = [ln for ln in c.stdout.splitlines() if ln.startswith("DAMAGE")
               and not ln.startswith("DAMAGE [dangling_ref]")]
        assert not bad, ("the salvaged copy", c.stdout)
    return r


def probe_backend(db, names):
    """A pyshelfd on the copy, reading every global: values or
    pyshelf.Error, never a crash.  Returns what it saw."""
    try:
        ws = pyshelf.spawn(db=db, session="s", backend=PYSHELFD)
    except pyshelf.BackendDied as e:
        assert e.status is None or e.status >= 0, e
        return "refused: %s" % e
    except pyshelf.Error as e:
        return "refused: %s" % e
    got = {}
    try:
        for name in list(ws):
            try:
                got[name] = ws.remote_exec("len(repr(%s))" % name)
            except pyshelf.BackendDied:
                raise
            except pyshelf.Error as e:
                got[name] = e
    except pyshelf.BackendDied as e:
        assert e.status is None or e.status >= 0, e
        return "died: %s" % e
    except pyshelf.Error as e:
        got["*"] = e
    rc = ws.close()
    assert rc is None or rc >= 0, ("pyshelfd ended by a signal", rc)
    return got


@pytest.mark.stdio_only("reads pyshelfd's own stderr (the client's pipe) and close()'s exit status")
def test_corruption_campaign(made, tmp_path, capfd):
    rng = random.Random(SEED)
    dst = tmp_path / "c"
    seen = {k: 0 for k in KINDS}
    damaged = refused = 0
    for i in range(COUNT):
        # every kind once first, then drawn by weight: a short campaign
        # (CI's sanitizer pass runs 60) still tries each kind
        kind = KINDS[i] if i < len(KINDS) else rng.choices(KINDS, WEIGHTS)[0]
        db = copy(made, dst)
        what = corrupt(rng, db, kind)
        seen[kind] += 1
        try:
            r = probe_dump(db, made["names"])
            damaged += r.returncode == 1
            got = probe_backend(db, made["names"])
            refused += isinstance(got, str)
            # pyshelfd's stderr is this process's: no sanitizer report
            err = capfd.readouterr().err
            assert not any(x in err for x in SANITIZER), err[-3000:]
        except AssertionError as e:
            raise AssertionError("corruption %d (%s): %s" % (i, what, e))
    print("corruptions tried: %d %s; --check said damaged: %d; pyshelfd "
          "refused or ended: %d; crashes: 0" % (COUNT, seen, damaged,
                                                refused))
    assert all(seen[k] > 0 for k in KINDS) or COUNT < 50


# --- one damage at a time -------------------------------------------------


def _sid(db):
    rows = [json.loads(x) for x in dump("--json", db=db).stdout.splitlines()]
    return bytes.fromhex([r for r in rows if r["row"] == "session"][0]["id"])


def _nodes(raw, key):
    """Offsets of the LMDB leaf nodes whose key is key (every copy: pages
    LMDB copied on write keep stale ones)."""
    out, i = [], raw.find(key)
    while i >= 0:
        if i >= 8 and struct.unpack_from("<H", raw, i - 2)[0] == len(key):
            out.append(i - 8)
        i = raw.find(key, i + 1)
    return out


def test_entry_that_cannot_be_read_back(made, tmp_path):
    """An entry listed but not read back (its key is longer than the store
    allows): a row with no type, once a NULL dereference."""
    import lmdb  # python3-lmdb (tools/install-deps.sh): never skipped
    db = copy(made, tmp_path / "c")
    sid = _sid(db)
    env = lmdb.open(str(db), max_dbs=8)
    with env.begin(write=True) as t:
        t.put(sid + b"g" + b"q" * 481, b"\x01" * 40,
              db=env.open_db(b"entries", txn=t))
    env.close()
    r = dump("s", db=db)
    assert r.returncode == 1, r
    line = [ln for ln in r.stdout.splitlines() if "qqqq" in ln][0]
    assert "DAMAGED: cannot be read back" in line and " ? " in line
    assert "global  a " in r.stdout             # the others are listed
    rows = [json.loads(x) for x in dump("--json", "s", db=db).stdout.splitlines()]
    bad = [x for x in rows if (x.get("name") or "").startswith("qqq")][0]
    assert bad["type"] == "?" and bad["problem"] == "cannot be read back"


def test_value_length_past_the_file(made, tmp_path):
    """A node whose value length runs past the end of the file: every view
    reports the entry as damaged (once SIGBUS in record_digest), and
    pyshelfd refuses to write to the store."""
    db = copy(made, tmp_path / "c")
    raw = bytearray((db / "data.mdb").read_bytes())
    nodes = _nodes(raw, _sid(db) + b"gn")
    assert nodes
    for off in nodes:
        raw[off:off + 4] = b"\xff\xff\xf0\x7f"   # 2 GB
    (db / "data.mdb").write_bytes(bytes(raw))
    for args in (["s"], ["s", "n"], ["--json", "s"], ["s", "a"], []):
        r = dump(*args, db=db)
        clear(r, args)
        assert r.returncode != 0 or args in (["s", "a"], []), (args, r)
    r = dump("--check", db=db)
    assert r.returncode == 1, r
    assert "DAMAGE" in r.stdout and r.stdout.rstrip().endswith("DAMAGED")
    with pytest.raises(pyshelf.Error) as e:
        pyshelf.spawn(db=db, session="s", backend=PYSHELFD)
    assert "pyshelf-dump --check" in str(e.value)


def _named_db(raw, name):
    """Offset of the MDB_db record of named database name in the main
    database's root page (a leaf: the store has seven), as the newer meta
    page gives it."""
    metas = [raw[p * PSIZE + 16:p * PSIZE + 16 + 136] for p in (0, 1)]
    meta = max(metas, key=lambda m: struct.unpack_from("<Q", m, 128)[0])
    main = struct.unpack_from("<Q", meta, 72 + 40)[0]
    page = bytes(raw[main * PSIZE:(main + 1) * PSIZE])
    off = [o for o in _nodes(page, name)
           if struct.unpack_from("<H", page, o + 4)[0] & 2][0]
    return main * PSIZE + off + 8 + len(name)


def test_check_reports_cursor_errors(made, tmp_path):
    """A walk that fails (the entries database's root outside the file):
    --check says what failed and where, prints its summary, and exits 1
    (once: exit 2 and no message at all)."""
    db = copy(made, tmp_path / "c")
    raw = bytearray((db / "data.mdb").read_bytes())
    struct.pack_into("<Q", raw, _named_db(raw, b"entries") + 40, 0x7fffffff)
    (db / "data.mdb").write_bytes(bytes(raw))
    r = dump("--check", db=db)
    assert r.returncode == 1, r
    walk = [ln for ln in r.stdout.splitlines()
            if ln.startswith("DAMAGE [walk]")]
    assert walk and "entries database" in walk[0], r.stdout
    assert "DAMAGE [structure]" in r.stdout
    assert r.stdout.rstrip().endswith("DAMAGED")
    assert "1 sessions" in r.stdout               # the walks before it ran
    rows = [json.loads(x) for x in
            dump("--check", "--json", db=db).stdout.splitlines()]
    assert rows[-1]["row"] == "check" and rows[-1]["sound"] is False
    assert {x["check"] for x in rows if x["row"] == "problem"} >= \
        {"walk", "structure"}


def _root_page(raw, name):
    return struct.unpack_from("<Q", raw, _named_db(raw, name) + 40)[0]


def _newer_meta(raw):
    """0 or 1: the meta page LMDB reads (the higher transaction id)."""
    return max((0, 1), key=lambda p: struct.unpack_from(
        "<Q", raw, p * PSIZE + 16 + 128)[0])


def _main_root(raw):
    meta = _newer_meta(raw) * PSIZE + 16
    return struct.unpack_from("<Q", raw, meta + 72 + 40)[0]


@pytest.mark.parametrize("flag", ["c", "r"])
def test_writable_open_refuses_damaged_pages(made, tmp_path, flag):
    """A page header that does not match its page: pyshelfd refuses to
    open the store, with a message that points to pyshelf-dump --check,
    and writes nothing (once: a heap overflow in mdb_cursor_put at the
    first write).  Read-only ('r') too: reading the page would crash."""
    db = copy(made, tmp_path / "c")
    path = db / "data.mdb"
    raw = bytearray(path.read_bytes())
    root = _root_page(raw, b"sessions")
    struct.pack_into("<HH", raw, root * PSIZE + 12, 4000, 100)  # lower/upper
    path.write_bytes(bytes(raw))
    with pytest.raises(pyshelf.Error) as e:
        pyshelf.spawn(db=db, session="s", backend=PYSHELFD, flag=flag)
    assert isinstance(e.value, pyshelf.BackendDied) and e.value.status == 1 \
        or not isinstance(e.value, pyshelf.BackendDied)
    assert "damaged" in str(e.value) and "pyshelf-dump --check" in \
        str(e.value), str(e.value)
    assert path.read_bytes() == bytes(raw)       # nothing written
    r = dump("--check", db=db)
    assert r.returncode == 1 and "DAMAGE [structure]" in r.stdout, r
    assert "page %d" % root in r.stdout


def test_check_survives_a_crashing_walk(made, tmp_path):
    """data.mdb cut short: reading it faults (SIGBUS) inside LMDB.  Every
    view ends with exit 1 and a message, --check reports the crash as
    damage and prints its summary; never "sound"."""
    db = copy(made, tmp_path / "c")
    path = db / "data.mdb"
    os.truncate(path, path.stat().st_size // 2 // PSIZE * PSIZE)
    for args in ([], ["s"], ["s", "a"], ["--json", "s"]):
        r = dump(*args, db=db)
        assert r.returncode in (1, 2) and r.stderr.strip(), (args, r)
        assert "damaged" in r.stderr or "corrupt" in r.stderr, (args, r)
    r = dump("--check", db=db)
    assert r.returncode == 1, r
    # the structure check reads every page in use of a file shorter than
    # its last page (a sound store may be: LMDB's free pages past the end
    # are never written), so it names the first page past the end before
    # any walk through LMDB could fault; a crash of the walk is reported
    # as damage too
    assert ("DAMAGE [crash]" in r.stdout and "truncated" in r.stdout) or \
        ("DAMAGE [structure]" in r.stdout and
         "cannot be read (the file ends before it)" in r.stdout), r.stdout
    assert r.stdout.rstrip().endswith("DAMAGED")
    rows = [json.loads(x) for x in
            dump("--check", "--json", db=db).stdout.splitlines()]
    assert rows[-1]["row"] == "check" and rows[-1]["sound"] is False


# --- a checker beside a writer ----------------------------------------------


def test_check_beside_a_writer(tmp_path):
    """--check while a backend rebinds 1.1 MB globals (blob files, each
    rebinding drops the old one): a file dropped by a commit newer than
    the checker's snapshot is not damage.  Zero false alarms in 200 runs
    (once about 2% of runs said "DAMAGE [blob] ... does not match its
    digest": the file was unlinked between a stat and its open)."""
    db = tmp_path / "db"
    stop, count, errors = threading.Event(), [0], []

    def writer():
        try:
            ws = pyshelf.spawn(db=db, session="w", sync="never",
                               backend=PYSHELFD)
            try:
                i = 0
                while not stop.is_set():
                    ws.remote_exec("g%d = bytes([%d]) * 1100000"
                                   % (i % 2, i % 256))
                    i += 1
                    count[0] = i
            finally:
                ws.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=writer)
    th.start()
    alarms, changed = [], 0
    try:
        while count[0] < 2 and th.is_alive():
            threading.Event().wait(0.01)
        for _ in range(200):
            r = dump("--check", "--json", db=db)
            last = json.loads(r.stdout.splitlines()[-1])
            if r.returncode != 0 or not last["sound"]:
                alarms.append(r.stdout + r.stderr)
            changed += last["changed"]
    finally:
        stop.set()
        th.join(timeout=120)
    assert not errors, errors
    assert not alarms, alarms[:3]
    assert count[0] > 2
    print("200 checks beside %d rebindings: 0 false alarms, %d dropped "
          "files met" % (count[0], changed))


# --- salvage -------------------------------------------------------------------


def test_salvage(made, tmp_path):
    """--salvage OUT copies every session and every entry that reads back
    and verifies into a new store, lists the rest, and pyshelfd serves the
    copy."""
    db = copy(made, tmp_path / "c")
    path = db / "data.mdb"
    raw = path.read_bytes()
    assert b"marker-s" in raw
    path.write_bytes(raw.replace(b"marker-s", b"marker-S"))  # global s
    big2 = [f for f in (db / "blobs").iterdir()
            if b"z" * 100000 in f.read_bytes()]
    assert len(big2) == 1
    _flip(big2[0], 600000, b"y")                              # global big2
    out = tmp_path / "saved"
    r = dump("--salvage", out, db=db)
    assert r.returncode == 1, r
    lost = sorted(ln for ln in r.stdout.splitlines()
                  if ln.startswith("NOT SAVED"))
    assert len(lost) == 2, r.stdout
    assert "global big2:" in lost[0] and "global s:" in lost[1]
    assert "not saved" in r.stdout.splitlines()[-1]
    rows = [json.loads(x) for x in dump("--json", "s", db=out).stdout
            .splitlines()]
    keys = {x["key"] for x in rows if x["row"] == "entry"}
    assert keys == set(made["names"]) - {"s", "big2"} | {"#1"}, keys
    assert len(os.listdir(out / "blobs")) == 1               # big's file
    r = dump("--check", db=out)
    assert r.returncode == 0, r.stdout
    # the refusal: OUT must be new
    r = dump("--salvage", out, db=db)
    assert r.returncode == 2 and "not empty" in r.stderr
    ws = pyshelf.spawn(db=out, session="s", backend=PYSHELFD)
    try:
        assert sorted(ws) == sorted(set(made["names"]) - {"s", "big2"})
        assert ws["a"] == [1, 2, 3] and ws["n"] == 12345
        assert ws["b"] == {"a": [1, 2, 3], "tag": "marker-b"}
        assert ws["big"] == bytes(range(256)) * 4400
        ws.remote_exec("ok = x.other.other is x and b['a'] is a")
        assert ws["ok"] is True
    finally:
        ws.close()


def test_salvage_of_a_store_cut_short(made, tmp_path):
    """A store cut short: --salvage ends with exit 1 and a message that
    says the store is damaged, never a signal."""
    db = copy(made, tmp_path / "c")
    path = db / "data.mdb"
    os.truncate(path, path.stat().st_size // 2 // PSIZE * PSIZE)
    r = dump("--salvage", tmp_path / "saved", db=db)
    assert r.returncode == 1 and "damaged" in r.stderr, r


# --- damaged meta and root pages: --check says where, --salvage saves ----------


def _damage_page(raw, where):
    """Damage one page of raw (bytearray) by where; returns the page's
    number and the database --check must name (None: a meta page)."""
    if where == "meta-page-size":
        # a page size LMDB would map the file with (once: a SIGBUS in
        # mdb_env_open, before any check could run)
        struct.pack_into("<I", raw, PSIZE + 16 + 24, 10883072)
        return 1, None
    if where.startswith("meta-page-"):
        newer = _newer_meta(raw)
        page = newer if where == "meta-page-newer" else 1 - newer
        struct.pack_into("<I", raw, page * PSIZE + 16, 0xffffffff)  # magic
        return page, None
    name = where[:-len("-root")] if where.endswith("-root") else "meta"
    page = _main_root(raw) if name == "main" else \
        _root_page(raw, name.encode())
    struct.pack_into("<H", raw, page * PSIZE + 10, 0xffff)   # flags
    return page, name


@pytest.mark.parametrize("where", ["meta-db", "main-root", "calls-root",
                                   "meta-page-older", "meta-page-newer",
                                   "meta-page-size", "entries-root"])
def test_damaged_meta_and_root_pages(made, tmp_path, where):
    """QA 05: one damaged page of the meta database, of the main
    database's root (every named database hangs from it), of another
    root, or an LMDB meta page.  --check reports it as damage (exit 1)
    naming the page and its database, never "not a pyshelf store" or
    LMDB's assertion line on stderr; --salvage saves every session and
    entry still readable, by a scan of the pages (falling back to the
    other meta page), into a store that checks sound and that pyshelfd
    serves."""
    db = copy(made, tmp_path / "c")
    path = db / "data.mdb"
    raw = bytearray(path.read_bytes())
    page, name = _damage_page(raw, where)
    path.write_bytes(bytes(raw))
    r = dump("--check", db=db)
    assert r.returncode == 1, r
    assert "not a pyshelf store" not in r.stderr + r.stdout
    assert "Assertion" not in r.stderr, r.stderr
    assert r.stdout.rstrip().endswith("DAMAGED"), r.stdout
    if name is None:
        assert "meta page %d:" % page in r.stdout, r.stdout
    else:
        assert "page %d (the %s database)" % (page, name) in r.stdout, \
            r.stdout
    out = tmp_path / "saved"
    s = dump("--salvage", out, db=db)
    assert s.returncode == 1, s
    assert "Assertion" not in s.stderr, s.stderr
    assert "by a scan of the pages" in s.stdout, s.stdout
    assert dump("--check", db=out).returncode == 0
    rows = [json.loads(x) for x in dump("--json", "s", db=out).stdout
            .splitlines()]
    keys = {x["key"] for x in rows if x["row"] == "entry"}
    if where == "entries-root":
        # the root is the entries' only leaf: they are lost, and said so
        assert keys == set(), keys
        assert "NOT SAVED what was on 1 damaged page" in s.stdout, s.stdout
        return
    if where == "meta-page-size":
        # pyshelfd refuses it with the reason, never dies of a signal
        with pytest.raises(pyshelf.Error) as e:
            pyshelf.spawn(db=db, session="s", backend=PYSHELFD, flag="w")
        assert "a page size of 10883072" in str(e.value), str(e.value)
        assert not isinstance(e.value, pyshelf.BackendDied) or \
            e.value.status is None or e.value.status >= 0, e.value
    if where in ("meta-page-newer", "meta-page-size"):
        # the older snapshot: the last commit is not seen, and said so
        assert "NOTE LMDB meta page %d is damaged" % page in s.stdout
        assert keys and keys <= set(made["names"]) | {"#1"}, keys
        return
    assert keys == set(made["names"]) | {"#1"}, keys
    if where == "calls-root":
        # the journal's only leaf: its calls are lost, and said so
        assert "NOT SAVED what was on 1 damaged page" in s.stdout, s.stdout
    else:
        assert "0 not saved" in s.stdout, s.stdout
    ws = pyshelf.spawn(db=out, session="s", backend=PYSHELFD)
    try:
        assert sorted(ws) == sorted(made["names"])
        assert ws["b"] == {"a": [1, 2, 3], "tag": "marker-b"}
        assert ws["big"] == bytes(range(256)) * 4400
        ws.remote_exec("ok = x.other.other is x and b['a'] is a")
        assert ws["ok"] is True
    finally:
        ws.close()



def test_salvage_scan_errors(made, tmp_path):
    """The scan's own refusals: OUT not empty (exit 2, nothing written);
    both LMDB meta pages damaged (nothing can be read: exit 1, said so;
    --check exit 1 naming both)."""
    db = copy(made, tmp_path / "c")
    path = db / "data.mdb"
    raw = bytearray(path.read_bytes())
    _damage_page(raw, "meta-db")
    path.write_bytes(bytes(raw))
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep").write_text("x")
    s = dump("--salvage", out, db=db)
    assert s.returncode == 2 and "not empty" in s.stderr, s
    assert os.listdir(out) == ["keep"]
    for page in (0, 1):
        struct.pack_into("<I", raw, page * PSIZE + 16, 0xffffffff)
    path.write_bytes(bytes(raw))
    r = dump("--check", db=db)
    assert r.returncode == 1, r
    assert "meta page 0:" in r.stdout and "meta page 1:" in r.stdout, r
    s = dump("--salvage", tmp_path / "saved", db=db)
    assert s.returncode == 1, s
    assert "neither LMDB meta page is sound" in s.stderr, s
