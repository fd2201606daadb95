"""pyshelf-dump on stores written by the real backend.

The stores are made by driving ``pyshelfd --stdio`` with the raw protocol
(docs/PROTOCOL.md): a tiny framing driver below, no client library, so that
these tests depend only on the two programs.  Damage is made on purpose
afterwards: a flipped byte in data.mdb, entries and index keys changed with
py-lmdb (python3-lmdb).

Paths: $PYSHELF_DUMP and $PYSHELFD (set by `make check`).  Run by hand:

    PYSHELF_DUMP=$BUILD/pyshelf-dump PYSHELFD=$BUILD/pyshelfd \\
        /usr/bin/python3 -m pytest tests/integration/test_dump.py
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import threading
import time

import pytest

DUMP = os.environ["PYSHELF_DUMP"]     # make check sets both
PYSHELFD = os.environ["PYSHELFD"]

pytestmark = pytest.mark.skipif(
    not (os.access(DUMP, os.X_OK) and os.access(PYSHELFD, os.X_OK)),
    reason="pyshelf-dump and pyshelfd not built (set PYSHELF_DUMP, PYSHELFD)")

# --- a raw protocol driver -------------------------------------------------

HELLO, EXEC, RESULT, OUTPUT, DETACH, ERROR = 0x1, 0x100, 0x101, 0x102, \
    0x121, 0x7F00
T_VERSION, T_CODE, T_KIND, T_HANDLE, T_VOLATILE = 1, 6, 12, 13, 22


def _field(tag, data):
    if isinstance(data, int):
        data = struct.pack(">Q", data)
    if isinstance(data, str):
        data = data.encode()
    return struct.pack(">BI", tag, len(data)) + data


class Backend:
    """One pyshelfd --stdio serving one session of a store."""

    def __init__(self, db, session, *args):
        self.p = subprocess.Popen(
            [PYSHELFD, "--stdio", "--db", str(db), "--session", session,
             "--create"] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.rid = 0
        t, _ = self.request(HELLO, _field(T_VERSION, 3))
        assert t != ERROR

    def _read(self):
        h = self.p.stdout.read(16)
        assert len(h) == 16, "pyshelfd closed the connection"
        n, t, _, rid = struct.unpack(">IHHQ", h)
        body, fields, i = self.p.stdout.read(n), {}, 0
        while i < n:
            tag, ln = struct.unpack(">BI", body[i:i + 5])
            fields.setdefault(tag, []).append(body[i + 5:i + 5 + ln])
            i += 5 + ln
        return t, fields

    def request(self, typ, *fields):
        self.rid += 1
        body = b"".join(fields)
        self.p.stdin.write(struct.pack(">IHHQ", len(body), typ, 0, self.rid)
                           + body)
        self.p.stdin.flush()
        while True:
            t, f = self._read()
            if t != OUTPUT:
                return t, f

    def run(self, code):
        """EXEC a block; returns the RESULT's fields."""
        t, f = self.request(EXEC, _field(T_CODE, code))
        assert t == RESULT, (t, f)
        return f

    def detach(self):
        self.request(DETACH)
        self.p.stdin.close()
        assert self.p.wait(timeout=300) == 0


def dump(*args, db=None, check=None):
    """Run pyshelf-dump; returns the CompletedProcess (text)."""
    argv = [DUMP] + (["--db", str(db)] if db is not None else []) + \
        [str(a) for a in args]
    r = subprocess.run(argv, capture_output=True, timeout=300)
    r.stdout = r.stdout.decode("utf-8")
    r.stderr = r.stderr.decode("utf-8")
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def rows(out, kind=None):
    lines = [json.loads(line) for line in out.splitlines()]
    return [x for x in lines if kind is None or x["row"] == kind]


def digest_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- the store ----------------------------------------------------------------

MARKER = "marker-Q7RJX2-unique"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A store with two sessions: globals, handles, an exception, a volatile
    socket, a persistent reference, code defined by shipped code,
    out-of-band buffers, and an object whose unpickling would touch a
    file."""
    root = tmp_path_factory.mktemp("dump")
    db = root / "db"
    touched = root / "touched-by-unpickling"
    b = Backend(db, "alpha")
    b.run("a = []\nc = {'x': a}\nn = 42\nname = %r\n" % MARKER)
    b.run("import socket\ns = socket.socket()\n")
    b.run("def f(x):\n    return x + n\n"
          "class Point:\n    def __init__(self):\n        self.v = 1\n"
          "p = Point()\nbig = bytes(50000)\ncaf\u00e9 = 'x\"y\\n'\n")
    b.run("import pickle\npb = pickle.PickleBuffer(bytearray(b'q' * 1000))\n")
    b.run("import os\nclass Boom:\n"
          "    def __reduce__(self):\n"
          "        return (os.mkdir, (%r,))\n"
          "boom = Boom()\n" % str(touched))
    res = b.run("[1, 2, a]")                  # handle 1, refers to a
    assert struct.unpack(">Q", res[T_HANDLE][0])[0] == 1
    res = b.run("1/0")                        # handle 2, an excinfo
    assert struct.unpack(">Q", res[T_KIND][0])[0] == 3
    b.detach()
    b = Backend(db, "beta")
    b.run("x = list(range(100))\ny = {'k': x, 'k2': x}\n")
    b.detach()
    return {"db": db, "root": root, "touched": touched}


def copy_store(made, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(made["db"], dst)
    return dst


# --- views ----------------------------------------------------------------------


def test_sessions_table(made):
    r = dump(db=made["db"], check=0)
    assert "alpha" in r.stdout and "beta" in r.stdout
    assert "format    3" in r.stdout
    assert "sessions  2 (2 live, 0 dead)" in r.stdout
    r = dump("--json", db=made["db"], check=0)
    out = rows(r.stdout)
    assert out[0]["row"] == "dump" and out[0]["dump_format"] == 1
    assert out[0]["view"] == "sessions" and out[0]["store_format"] == 3
    sessions = {s["name"]: s for s in rows(r.stdout, "session")}
    assert set(sessions) == {"alpha", "beta"}
    assert sessions["alpha"]["state"] == "live"
    assert sessions["alpha"]["lease_ms"] == 30 * 86400 * 1000
    assert sessions["alpha"]["expires_ms"] == \
        sessions["alpha"]["last_seen_ms"] + sessions["alpha"]["lease_ms"]
    assert sessions["beta"]["entries"] == 2
    assert len(sessions["alpha"]["id"]) == 32
    store = rows(r.stdout, "store")[0]
    assert store["sessions"] == 2
    assert store["entries"] == store["entries_in_db"] == \
        sum(s["entries"] for s in sessions.values())
    assert store["map_used"] <= store["map_size"]


def test_session_entries(made):
    r = dump("alpha", db=made["db"], check=0)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["KIND", "KEY", "TYPE"]
    sock = [ln for ln in lines if ln.startswith("global  s ")]
    assert sock and "volatile" in sock[0] and "socket" in sock[0]
    assert any(ln.startswith("handle  #1 ") for ln in lines)
    entries = {e["key"]: e for e in rows(
        dump("--json", "alpha", db=made["db"], check=0).stdout, "entry")}
    assert {"a", "c", "n", "s", "f", "p", "big", "pb", "boom", "#1",
            "#2"} <= set(entries)
    s = entries["s"]
    assert s["volatile"] is True and s["type"] == "socket.socket"
    assert "cannot pickle" in s["reason"] and s["pickler"] == "none"
    assert entries["#2"]["excinfo"] is True
    assert entries["#2"]["kind"] == "handle" and entries["#2"]["handle"] == 2
    assert entries["#2"]["name"] is None
    assert entries["c"]["nrefs"] == 1 and entries["#1"]["nrefs"] == 1
    assert entries["pb"]["oob"] is True
    assert entries["f"]["pickler"] == "cloudpickle"
    assert entries["caf\u00e9"]["name"] == "caf\u00e9"
    assert all(e["problem"] is None for e in entries.values())


def test_sort_and_top(made):
    out = rows(dump("--json", "--sort", "size", "--top", "2", "alpha",
                    db=made["db"], check=0).stdout, "entry")
    assert [e["key"] for e in out] == ["big", "pb"]
    out = rows(dump("--json", "--sort", "time", "alpha", db=made["db"],
                    check=0).stdout, "entry")
    times = [e["time_ms"] for e in out]
    assert times == sorted(times, reverse=True)
    out = rows(dump("--json", "--sort", "key", "alpha", db=made["db"],
                    check=0).stdout, "entry")
    kinds = [e["kind"] for e in out]
    assert kinds == sorted(kinds)           # globals, then handles
    r = dump("--sort", "size", "--top", "1", "alpha", db=made["db"], check=0)
    assert "showing 1 by size" in r.stdout
    assert dump("--sort", "bogus", db=made["db"]).returncode == 2
    assert dump("--top", "0", db=made["db"]).returncode == 2


def test_entry_disassembly_names_ref(made):
    r = dump("alpha", "c", db=made["db"], check=0)
    assert "refs      global a\n" in r.stdout
    assert "BINPERSID" in r.stdout and "# ref global 'a'" in r.stdout
    assert "well formed" in r.stdout
    r = dump("alpha", "#2", db=made["db"], check=0)
    assert "flags     excinfo" in r.stdout
    assert "loads builtins.ZeroDivisionError" in r.stdout
    assert dump("alpha", "h:2", db=made["db"], check=0).stdout == r.stdout
    r = dump("alpha", "s", db=made["db"], check=0)
    assert "volatile  not persisted: TypeError" in r.stdout
    r = dump("alpha", "pb", db=made["db"], check=0)
    assert "oob       1 buffer: 1000 B" in r.stdout
    assert "NEXT_BUFFER" in r.stdout and "buffer #0 (1000 bytes)" in r.stdout
    r = dump("alpha", "f", db=made["db"], check=0)
    assert "_pyshelf_backend._rebuild_ws_function" in r.stdout


def test_entry_json(made):
    out = rows(dump("--json", "alpha", "c", db=made["db"], check=0).stdout)
    assert out[0]["row"] == "dump" and out[0]["view"] == "entry"
    entry = out[1]
    assert entry["row"] == "entry" and entry["digest_ok"] is True
    assert entry["refs"] == [{"kind": "global", "key": "a", "name": "a",
                              "handle": None, "resolves": True}]
    ops = [x for x in out if x["row"] == "op"]
    assert ops[0]["op"] == "PROTO" and ops[-1]["op"] == "STOP"
    assert any(x["op"] == "BINPERSID" and x["note"] == "ref global 'a'"
               for x in ops)
    pk = out[-1]
    assert pk["row"] == "pickle" and pk["well_formed"] is True
    assert pk["refs"][0]["key"] == "a" and pk["refs"][0]["count"] == 1
    out = rows(dump("--json", "alpha", "caf\u00e9", db=made["db"],
                    check=0).stdout)
    strs = [x["arg"] for x in out if x["row"] == "op" and x["arg"]]
    assert "'x\"y\\n'" in strs


def test_disassembly_runs_nothing_unpickle_does(made):
    touched = made["touched"]
    r = dump("alpha", "boom", db=made["db"], check=0)
    assert "loads posix.mkdir" in r.stdout
    assert not touched.exists()
    r = dump("--unpickle", "alpha", "boom", db=made["db"])
    assert touched.exists()                   # --unpickle is UNSAFE indeed
    os.rmdir(touched)


def test_unpickle_values(made):
    r = dump("--unpickle", "alpha", "c", db=made["db"], check=0)
    assert "{'x': <ref global 'a'>}" in r.stdout
    r = dump("--unpickle", "--json", "alpha", "#1", db=made["db"], check=0)
    assert rows(r.stdout, "value")[0]["repr"] == "[1, 2, <ref global 'a'>]"
    r = dump("--unpickle", "alpha", "p", db=made["db"], check=0)
    assert "<object of <ref global 'Point'>: args (), state {'v': 1}>" \
        in r.stdout
    r = dump("--unpickle", "alpha", "pb", db=made["db"], check=0)
    assert "<memory at" in r.stdout
    r = dump("--unpickle", "alpha", "#2", db=made["db"], check=0)
    assert "ZeroDivisionError('division by zero')" in r.stdout
    r = dump("--unpickle", "--max-repr", "10", "beta", "x", db=made["db"],
             check=0)
    assert "\n[0, 1, 2, ... (390 characters)\n" in r.stdout
    r = dump("--unpickle", "alpha", "s", db=made["db"])
    assert "nothing to unpickle" in r.stderr


def test_cycles_and_aliases(tmp_path):
    """Records the backend writes for a cycle of entries (an EntryGroup
    and group_member references) and for two names of one object check
    sound, and unpickle to what they say."""
    db = tmp_path / "db"
    b = Backend(db, "cyc")
    b.run("x = {'n': 1}\ny = {'x': x}\nx['y'] = y\nh = y\n")
    b.detach()
    r = dump("--check", db=db, check=0)
    assert "sound" in r.stdout
    r = dump("--unpickle", "cyc", "x", db=db, check=0)
    assert "EntryGroup((('g', 'x'), ('g', 'y'))" in r.stdout
    assert "loads     pyshelf.EntryGroup" in r.stdout
    r = dump("--unpickle", "cyc", "y", db=db, check=0)
    assert "<object 1 of the EntryGroup in <ref global 'x'>>" in r.stdout
    assert "refers    global 'x'" in r.stdout
    r = dump("--unpickle", "cyc", "h", db=db, check=0)
    assert "<ref global 'y'>" in r.stdout
    # the references index: a row that names no entry, and rows of a
    # session that does not exist, are damage
    import lmdb
    env = lmdb.open(str(db), max_dbs=8, subdir=True)
    try:
        refs = env.open_db(b"refs", dupsort=True, create=False)
        with env.begin(write=True) as txn:
            key = next(k for k, _v in txn.cursor(refs))
            txn.put(key, b"h123", db=refs)               # not 8 bytes
            txn.put(b"\xee" * 16 + b"gz", b"gq", db=refs)  # no session
    finally:
        env.close()
    r = dump("--check", db=db, check=1)
    assert r.stdout.count("refs_index") == 2, r.stdout
    assert "names no entry" in r.stdout and "does not exist" in r.stdout


def test_help_reads_like_a_man_page():
    r = dump("--help", check=0)
    for head in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CHECKS",
                 "JSON FIELDS", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert "\n%s\n" % head in "\n" + r.stdout
    assert "UNSAFE" in r.stdout and "#ID" in r.stdout
    assert dump("--version", check=0).stdout.startswith("pyshelf-dump")
    assert dump("--nope").returncode == 2
    assert dump("a", "b", "c").returncode == 2
    assert dump("--check", "alpha").returncode == 2
    assert dump("--unpickle").returncode == 2


# --- --check ------------------------------------------------------------------


def test_check_sound(made):
    before = digest_file(made["db"] / "data.mdb")
    r = dump("--check", db=made["db"], check=0)
    assert r.stdout.strip().endswith("sound")
    out = rows(dump("--check", "--json", db=made["db"], check=0).stdout)
    assert out[-1]["row"] == "check" and out[-1]["sound"] is True
    assert out[-1]["sessions"] == 2 and out[-1]["problems"] == 0
    assert out[-1]["entries"] == rows(dump("--json", db=made["db"]).stdout,
                                      "store")[0]["entries"]
    assert dump("--check", "-q", db=made["db"], check=0).stdout == ""
    assert digest_file(made["db"] / "data.mdb") == before  # read-only


def test_check_corrupt_record(made, tmp_path):
    db = copy_store(made, tmp_path)
    path = db / "data.mdb"
    data = path.read_bytes()
    marker = MARKER.encode()
    assert marker in data
    # CoW leaves stale copies in free pages: damage every copy
    path.write_bytes(data.replace(marker, marker.upper()))
    r = dump("--check", db=db, check=1)
    bad = [ln for ln in r.stdout.splitlines() if ln.startswith("DAMAGE")]
    assert len(bad) == 1
    assert "[digest]" in bad[0] and "session alpha" in bad[0]
    assert "global name" in bad[0]
    assert "1 problem: DAMAGED" in r.stdout
    problem = rows(dump("--check", "--json", db=db, check=1).stdout,
                   "problem")[0]
    assert problem["check"] == "digest" and problem["key"] == "name"
    assert problem["session"] == "alpha"
    r = dump("alpha", "name", db=db, check=1)
    assert "MISMATCH" in r.stdout and "damaged" in r.stderr
    r = dump("alpha", db=db, check=1)
    assert "DAMAGED" in r.stdout
    r = dump("--unpickle", "alpha", "name", db=db, check=1)
    assert "not unpickling a damaged record" in r.stderr


def _lmdb(db):
    import lmdb  # python3-lmdb (tools/install-deps.sh): never skipped
    return lmdb.open(str(db), max_dbs=8)


def _session_id(db, name):
    s = rows(dump("--json", db=db, check=0).stdout, "session")
    return bytes.fromhex([x for x in s if x["name"] == name][0]["id"])


def test_check_dangling_reference(made, tmp_path):
    db = copy_store(made, tmp_path)
    sid = _session_id(db, "alpha")
    env = _lmdb(db)
    with env.begin(write=True) as t:
        assert t.delete(sid + b"ga", db=env.open_db(b"entries", txn=t))
    env.close()
    r = dump("--check", db=db, check=1)
    bad = sorted(ln for ln in r.stdout.splitlines()
                 if ln.startswith("DAMAGE [dangling_ref]"))
    assert len(bad) == 2                      # c and handle 1 refer to a
    assert "global c:" in bad[0] and "global a does not resolve" in bad[0]
    assert "handle #1:" in bad[1]
    r = dump("alpha", "c", db=db, check=1)
    assert "global a (MISSING" in r.stdout


def test_check_indexes_and_orphans(made, tmp_path):
    db = copy_store(made, tmp_path)
    alpha, beta = _session_id(db, "alpha"), _session_id(db, "beta")
    env = _lmdb(db)
    with env.begin(write=True) as t:
        sessions = env.open_db(b"sessions", txn=t)
        expiry = env.open_db(b"expiry", txn=t)
        assert t.delete(beta, db=sessions)    # beta's entries are orphans
        keys = [k for k, _ in t.cursor(db=expiry) if k[8:] == alpha]
        assert len(keys) == 1                 # move alpha's expiry key
        t.delete(keys[0], db=expiry)
        t.put(struct.pack(">Q", 12345) + alpha, b"", db=expiry)
    env.close()
    out = rows(dump("--check", "--json", db=db, check=1).stdout, "problem")
    checks = sorted(p["check"] for p in out)
    assert checks.count("orphan_entry") == 2
    assert "name_index" in checks             # "beta" leads nowhere
    exp = [p for p in out if p["check"] == "expiry_index"]
    # beta's key has no session; alpha's key is stale; alpha lacks its own
    assert len(exp) == 3
    assert {p["session"] for p in exp} == {None, "alpha"}


def test_dead_session(made, tmp_path):
    """A dead session waiting for the sweeper: listed as dead, found by its
    id (and its old name), and a sound store."""
    db = copy_store(made, tmp_path)
    beta = _session_id(db, "beta")
    env = _lmdb(db)
    with env.begin(write=True) as t:
        sessions = env.open_db(b"sessions", txn=t)
        names = env.open_db(b"names", txn=t)
        expiry = env.open_db(b"expiry", txn=t)
        rec = bytearray(t.get(beta, db=sessions))
        rec[1] = 2                            # state dead
        t.put(beta, bytes(rec), db=sessions)
        t.delete(b"beta", db=names)
        for k, _ in list(t.cursor(db=expiry)):
            if k[8:] == beta:
                t.delete(k, db=expiry)
        t.put(struct.pack(">Q", 0) + beta, b"", db=expiry)
    env.close()
    dump("--check", db=db, check=0)
    s = {x["name"]: x for x in rows(dump("--json", db=db).stdout, "session")}
    assert s["beta"]["state"] == "dead" and s["beta"]["expires_ms"] is None
    assert "dead" in dump(db=db).stdout
    by_id = dump(beta.hex(), db=db, check=0).stdout
    assert "global  x " in by_id and "dead" in by_id
    assert dump("beta", db=db, check=0).stdout == by_id


def test_check_while_backend_writes(tmp_path):
    """--check reads one consistent snapshot: sound every time while a
    backend keeps binding globals (and growing the map)."""
    db = tmp_path / "db"
    b = Backend(db, "busy", "--sync", "never")
    stop = threading.Event()
    errors = []
    done = [0]

    def writer():
        try:
            i = 0
            while not stop.is_set():
                b.run("g%d = {'v': list(range(%d)), 'blob': bytes(%d)}\n"
                      "last = g%d\n" % (i, i % 50, (i * 997) % 20000, i))
                i += 1
                done[0] = i
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=writer)
    th.start()
    try:
        deadline = time.time() + 30
        while done[0] < 5 and time.time() < deadline:
            time.sleep(0.05)
        for _ in range(8):
            r = dump("--check", "--json", db=db)
            assert r.returncode == 0, (r.stdout, r.stderr)
            assert rows(r.stdout, "check")[0]["sound"] is True
            assert dump("busy", db=db).returncode == 0
            time.sleep(0.05)
        # enough writes beside the checks, however slow the machine
        deadline = time.time() + 120
        while done[0] <= 10 and time.time() < deadline and not errors:
            time.sleep(0.05)
    finally:
        stop.set()
        th.join(timeout=120)
    assert not errors, errors
    b.detach()
    assert done[0] > 10
    r = dump("--check", "--json", db=db, check=0)
    assert rows(r.stdout, "check")[0]["entries"] >= done[0]


def test_expired_session_shown(tmp_path):
    db = tmp_path / "db"
    b = Backend(db, "short", "--lease", "1")
    b.run("v = 1\n")
    b.detach()
    time.sleep(1.2)
    s = rows(dump("--json", db=db, check=0).stdout, "session")[0]
    assert s["state"] == "live" and s["expired"] is True
    assert "expired" in dump(db=db, check=0).stdout
    dump("--check", db=db, check=0)


# --- errors ---------------------------------------------------------------------


def test_missing_dir(tmp_path):
    r = dump(db=tmp_path / "nope", check=2)
    assert "No such file or directory" in r.stderr and "--db" in r.stderr
    assert not (tmp_path / "nope").exists()    # never creates anything


def test_not_a_store(tmp_path):
    r = dump(db=tmp_path, check=2)
    assert "no pyshelf store here" in r.stderr
    assert os.listdir(tmp_path) == []
    import lmdb  # python3-lmdb (tools/install-deps.sh): never skipped
    env = lmdb.open(str(tmp_path / "foreign"))
    with env.begin(write=True) as t:
        t.put(b"k", b"v")
    env.close()
    r = dump("--check", db=tmp_path / "foreign", check=2)
    assert "not a pyshelf store" in r.stderr


def test_newer_format(made, tmp_path):
    db = copy_store(made, tmp_path)
    env = _lmdb(db)
    with env.begin(write=True) as t:
        t.put(b"format", struct.pack(">I", 4), db=env.open_db(b"meta", txn=t))
    env.close()
    r = dump("--check", db=db, check=2)
    assert "store format 4 is newer" in r.stderr and "upgrade" in r.stderr


def test_no_such_session_or_key(made):
    r = dump("nobody", db=made["db"], check=2)
    assert "no session named" in r.stderr
    r = dump("alpha", "nothing", db=made["db"], check=2)
    assert "has no global nothing" in r.stderr
    r = dump("alpha", "#999", db=made["db"], check=2)
    assert "has no handle #999" in r.stderr
    assert dump("alpha", "#x", db=made["db"]).returncode == 2


def test_progress_only_on_a_terminal(made):
    # stderr is a pipe here: no progress line, nothing on stderr
    r = dump("--check", db=made["db"], check=0)
    assert r.stderr == ""


# --- tombstones (issue 13) ----------------------------------------------------

CLOSE = 0x122


def test_tombstones_are_listed(tmp_path):
    """An expired, a closed and a replaced session: each leaves a
    tombstone that the sessions view lists (text and JSON), newest first,
    and a SESSION argument naming only a tombstone says how it ended."""
    db = tmp_path / "db"
    b = Backend(db, "lapsed", "--lease", "0.2")
    b.run("x = [1, 2, 3]\n")
    b.detach()
    started = time.time()
    while time.time() < started + 0.5:
        time.sleep(0.05)
    b = Backend(db, "closed")                 # its sweep ends "lapsed"
    b.run("y = 1\nz = 2\n")
    t, _ = b.request(CLOSE)
    assert t != ERROR
    b.p.stdin.close()
    assert b.p.wait(timeout=30) == 0
    b = Backend(db, "kept")
    b.run("k = 1\n")
    b.detach()
    b = Backend(db, "kept", "--new")          # replaces the old "kept"
    b.detach()

    r = dump(db=db, check=0)
    assert "dump" not in r.stderr
    text = r.stdout.split("ended sessions (tombstones, kept 90 days):")[1]
    lines = text.strip().splitlines()
    assert lines[0].split()[:4] == ["NAME", "ID", "REASON", "ENDED"]
    assert [ln.split()[:1] + ln.split()[2:3] for ln in lines[1:4]] == [
        ["kept", "replaced"], ["closed", "closed"], ["lapsed", "expired"]]
    assert "ended     3 (tombstones, listed above)" in r.stdout
    assert "sessions  1 (1 live, 0 dead)" in r.stdout

    r = dump("--json", db=db, check=0)
    tombs = {x["name"]: x for x in rows(r.stdout, "tombstone")}
    assert set(tombs) == {"lapsed", "closed", "kept"}
    assert tombs["lapsed"]["reason"] == "expired"
    assert tombs["lapsed"]["lease_ms"] == 200
    assert tombs["lapsed"]["entries"] == 1
    assert tombs["closed"]["reason"] == "closed"
    assert tombs["closed"]["entries"] == 2 and tombs["closed"]["bytes"] > 0
    assert tombs["kept"]["reason"] == "replaced"
    for x in tombs.values():
        assert len(x["id"]) == 32
        assert x["created_ms"] <= x["last_seen_ms"] <= x["ended_ms"]
        assert x["drop_ms"] == x["ended_ms"] + 90 * 86400 * 1000
    assert rows(r.stdout, "store")[0]["tombstones"] == 3

    r = dump("closed", db=db, check=2)
    assert "session closed ended at" in r.stderr and "(closed)" in r.stderr
    r = dump("--check", db=db, check=0)


def test_no_tombstones_no_section(made):
    r = dump(db=made["db"], check=0)
    assert "tombstones" not in r.stdout and "ended " not in r.stdout
    assert rows(dump("--json", db=made["db"], check=0).stdout,
                "store")[0]["tombstones"] == 0


def test_permission_denied_is_said(tmp_path):
    """A store this user may not read is "permission denied", not "no
    pyshelf store here" (issue 14): a store directory that another user
    may not enter, in a directory that user may enter; and one under a
    directory that user may not enter."""
    import tempfile
    import pyshelf
    top = tempfile.mkdtemp(prefix="pyshelf-perm-")
    try:
        os.chmod(top, 0o755)
        for db in (os.path.join(top, "db"), str(tmp_path / "db")):
            ws = pyshelf.spawn(db=db, session="s", backend=PYSHELFD)
            ws["x"] = 1
            ws.close()
            os.chmod(db, 0)
            try:
                r = subprocess.run(["setpriv", "--reuid=nobody",
                                    "--regid=nogroup", "--clear-groups",
                                    DUMP, "--db", db], capture_output=True,
                                   text=True, timeout=120)
            finally:
                os.chmod(db, 0o700)
            assert r.returncode == 2, r
            assert "permission denied" in r.stderr.lower(), r.stderr
            assert "no pyshelf store here" not in r.stderr, r.stderr
    finally:
        shutil.rmtree(top)


# --- the call journal (issue 16) ---------------------------------------------


def _xxh3_64(data):
    import ctypes
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib.XXH3_64bits(data, len(data))


def call_record(state, started, ended, summary, chunks, body, end=1,
                out_bytes=None, dropped=0):
    """A calls record built from docs/STORAGE.md 3.9, byte by byte.
    chunks: (stream, bytes) with stream 1 or 2, or (0, n) for a gap."""
    s = summary.encode()
    c = b""
    for stream, data in chunks:
        if stream == 0:
            c += struct.pack(">BQ", 0, data)
        else:
            c += struct.pack(">BI", stream, len(data)) + data
    if out_bytes is None:
        out_bytes = sum(len(d) for k, d in chunks if k) + dropped
    head = struct.pack(">BBBBIQQQQ", 1, state, end, 0, len(s), started,
                       ended, out_bytes, dropped)
    rest = s + c + body
    check = _xxh3_64(head + rest)
    return head + struct.pack(">QII", check, len(c), len(body)) + rest


def _put_calls(db, rows):
    env = _lmdb(db)
    with env.begin(write=True) as t:
        calls = env.open_db(b"calls", txn=t)
        for sid, started, cid, rec in rows:
            t.put(sid + struct.pack(">Q", started) + cid, rec, db=calls)
    env.close()


def _count_calls(db):
    env = _lmdb(db)
    with env.begin() as t:
        n = t.stat(env.open_db(b"calls", txn=t))["entries"]
    env.close()
    return n


def test_calls_are_listed_and_checked(tmp_path):
    """Journaled calls (rows a worker of server mode writes) are listed
    with the sessions, text and JSON; --check parses them, and reports a
    damaged row and a row of a session that does not exist."""
    db = tmp_path / "db"
    b = Backend(db, "srv")
    b.run("x = 1\n")
    b.detach()
    sid = _session_id(db, "srv")
    c1, c2 = bytes(range(16)), bytes(range(16, 32))
    t0 = 1764800000000
    _put_calls(db, [
        (sid, t0, c1, call_record(3, t0, t0 + 1500, "for i in range(3):",
                                  [(0, 7), (1, b"0\n1\n"), (2, b"w\n")],
                                  b"\x0c\x00\x00\x00\x08" + bytes(8),
                                  dropped=7)),
        (sid, t0 + 10, c2, call_record(4, t0 + 10, t0 + 20, "sum(it())",
                                       [], b"", end=0)),
    ])
    r = dump(db=db, check=0)
    text = r.stdout.split("calls (the journal of server mode):")[1]
    lines = text.strip().splitlines()
    assert lines[0].split()[:5] == ["SESSION", "CALL", "ID", "STATE",
                                    "STARTED"]
    assert lines[1].split()[:3] == ["srv", c1.hex(), "done"]
    assert lines[1].rstrip().endswith("for i in range(3):")
    assert lines[2].split()[:3] == ["srv", c2.hex(), "lost"]
    assert "calls     2 (journaled, listed above)" in r.stdout

    out = rows(dump("--json", db=db, check=0).stdout)
    calls = [x for x in out if x["row"] == "call"]
    assert calls[0] == {
        "row": "call", "session": "srv", "session_id": sid.hex(),
        "id": c1.hex(), "state": "done", "started_ms": t0,
        "ended_ms": t0 + 1500, "summary": "for i in range(3):",
        "output_bytes": 13, "output_dropped": 7, "output_kept": 6,
        "end": "result", "body_bytes": 13, "problem": None}
    assert calls[1]["state"] == "lost" and calls[1]["end"] == "none"
    assert [x for x in out if x["row"] == "store"][0]["calls"] == 2
    # the session's own view lists its calls after its entries
    r = dump("srv", db=db, check=0)
    mine = r.stdout.split("calls (the journal of server mode):")[1]
    assert [ln.split()[1] for ln in mine.strip().splitlines()[1:]] == [
        c1.hex(), c2.hex()]
    assert [x["id"] for x in rows(dump("srv", "--json", db=db,
                                       check=0).stdout, "call")] == [
        c1.hex(), c2.hex()]
    chk = rows(dump("--check", "--json", db=db, check=0).stdout, "check")
    assert chk[0]["calls"] == 2 and chk[0]["sound"] is True
    assert "and 2 journaled calls checked" in dump("--check", db=db,
                                                   check=0).stdout

    # one flipped byte of the first record's output; a row of nobody
    env = _lmdb(db)
    with env.begin(write=True) as t:
        calls_db = env.open_db(b"calls", txn=t)
        k = sid + struct.pack(">Q", t0) + c1
        v = bytearray(t.get(k, db=calls_db))
        v[-14] ^= 0x01
        t.put(k, bytes(v), db=calls_db)
    env.close()
    _put_calls(db, [(b"\xee" * 16, t0, c1, call_record(
        3, t0, t0 + 1, "x", [], b"R"))])
    out = rows(dump("--check", "--json", db=db, check=1).stdout, "problem")
    assert sorted(p["check"] for p in out) == ["call_record", "orphan_call"]
    bad = [p for p in out if p["check"] == "call_record"][0]
    assert bad["session_id"] == sid.hex() and c1.hex() in bad["message"]
    assert "check value" in bad["message"]
    r = dump("--json", db=db, check=1)        # the listing meets it too
    calls = rows(r.stdout, "call")            # in key order: by session
    mine = [c for c in calls if c["session_id"] == sid.hex()]
    assert [c["problem"] is not None for c in mine] == [True, False]
    assert mine[0]["state"] is None and mine[0]["id"] == c1.hex()
    other = [c for c in calls if c["session_id"] == "ee" * 16]
    assert len(other) == 1 and other[0]["session"] is None
    assert other[0]["problem"] is None

    # --salvage copies the calls that parse with their session
    saved = tmp_path / "saved"
    r = dump("--salvage", saved, db=db, check=1)
    lost = [ln for ln in r.stdout.splitlines() if ln.startswith("NOT SAVED")]
    assert len(lost) == 1, r.stdout
    assert "journaled call %s: its check value" % c1.hex() in lost[0]
    assert ", 1 journaled calls; 1 not saved" in r.stdout
    calls = rows(dump("--json", db=saved, check=0).stdout, "call")
    assert [(c["session"], c["id"], c["state"]) for c in calls] == [
        ("srv", c2.hex(), "lost")]
    dump("--check", db=saved, check=0)


def test_calls_purged_with_their_session(tmp_path):
    """A session that ends loses its journaled calls with its entries: the
    next pyshelfd's sweep purges both; other sessions keep theirs."""
    db = tmp_path / "db"
    b = Backend(db, "gone")
    b.run("y = 2\n")
    b.detach()
    b = Backend(db, "stays")
    b.detach()
    gone, stays = _session_id(db, "gone"), _session_id(db, "stays")
    # times of a minute ago: a worker drops calls that ended more than a
    # day ago (the journal's keep time) when it next writes its journal
    t0 = int(time.time() * 1000) - 60000
    rec = call_record(3, t0, t0 + 1, "x", [(1, b"out")], b"R")
    _put_calls(db, [(gone, t0, bytes(16), rec),
                    (gone, t0 + 1, b"\x01" * 16, rec),
                    (stays, t0, bytes(16), rec)])
    assert _count_calls(db) == 3
    b = Backend(db, "gone")
    t, _ = b.request(CLOSE)                   # ends it
    assert t != ERROR
    b.p.stdin.close()
    assert b.p.wait(timeout=60) == 0
    assert rows(dump("--json", db=db, check=0).stdout,
                "tombstone")[0]["id"] == gone.hex()
    b = Backend(db, "stays")                  # its start sweeps "gone"
    b.detach()
    assert _count_calls(db) == 1
    r = rows(dump("--json", db=db, check=0).stdout, "call")
    assert [c["session"] for c in r] == ["stays"]


def test_store_before_calls(tmp_path):
    """A store made before the calls database: pyshelf-dump (read-only)
    lists and checks it without one; a pyshelfd (writable) creates it."""
    db = tmp_path / "db"
    b = Backend(db, "old")
    b.run("z = 3\n")
    b.detach()
    env = _lmdb(db)
    with env.begin(write=True) as t:
        t.drop(env.open_db(b"calls", txn=t), delete=True)
    env.close()
    r = rows(dump("--json", db=db, check=0).stdout, "store")
    assert r[0]["calls"] == 0
    r = rows(dump("--check", "--json", db=db, check=0).stdout, "check")
    assert r[0]["sound"] is True and r[0]["calls"] == 0
    env = _lmdb(db)
    with env.begin() as t:
        assert t.get(b"calls") is None
    env.close()
    b = Backend(db, "old")
    b.detach()
    assert _count_calls(db) == 0


def test_unpickle_numpy_views_and_object_arrays(tmp_path):
    """The records of numpy views (of numbers and of Python objects) and of
    an array of Python objects (pickled in two steps) unpickle to what
    they say."""
    db = tmp_path / "db"
    b = Backend(db, "np")
    b.run("import numpy as np\na = np.arange(4.0)\nv = a[1:3]\n"
          "oa = np.empty(3, dtype=object)\noa[0] = [1]\noa[1] = 'x'\n"
          "oa[2] = (2,)\noav = oa[::2]\n")
    b.detach()
    r = dump("--unpickle", "np", "oa", db=db, check=0)
    assert "array([list([1]), 'x', (2,)], dtype=object)" in r.stdout, \
        r.stdout + r.stderr
    r = dump("--unpickle", "np", "oav", db=db, check=0)
    assert "<numpy view of <ref global 'oa'>: offset 0, shape (2,), " \
        "strides (16,), dtype object, writeable True>" in r.stdout, r.stdout
    r = dump("--unpickle", "np", "v", db=db, check=0)
    assert "<numpy view of <ref global 'a'>: offset 8, shape (2,), " \
        "strides (8,), dtype float64, writeable True>" in r.stdout, r.stdout


def test_unpickle_a_damaged_object_array(tmp_path):
    """An object array's record with fewer items than the array is said,
    not shown as a half-filled array."""
    db = tmp_path / "db"
    b = Backend(db, "np")
    b.run("import _pyshelf_backend as B\nclass Fill:\n"
          "    def __reduce__(self):\n"
          "        return (B._new_object_array, ((3,), False), [1, 2], None,"
          " None, B._fill_object_array)\nfill = Fill()\n")
    b.detach()
    r = dump("--unpickle", "np", "fill", db=db, check=2)
    assert "UnpicklingError: an array of Python objects does not match " \
        "its items" in r.stdout + r.stderr, r.stdout + r.stderr
