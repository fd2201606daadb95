"""The seam between pyshelfd's C half and its Python half (issue 15):
the constants the Python half uses come from the C definitions, and
records cross the seam with named fields (still indexable as tuples).

These run inside the real backend (remote code imports _pyshelfd), on a
real store, across real restarts."""
import os
import re

import pytest

import pyshelf
from pyshelf import DirectValue
from restarts import MODES, restart

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _c_values(path, pattern):
    """{name: int} of the C definitions in path that match pattern (a
    regex with groups name and value)."""
    with open(os.path.join(SRC, path), encoding="utf-8") as f:
        text = f.read()
    return {m.group(1): int(m.group(2), 0)
            for m in re.finditer(pattern, text)}


def test_constants_are_the_c_definitions(gw):
    wire = _c_values("proto/wire.h",
                     r"\bWIRE_((?:ERR|KIND)_[A-Z_]+) = (\d+)")
    store = _c_values("store/store.h",
                      r"#define STORE_((?:FLAG|PICKLER)_[A-Z]+|KEY_MAX|"
                      r"DIGEST_SIZE)\s+(0x[0-9a-fA-F]+|\d+)")
    want = dict(wire, **store)
    # every error code, result kind, record flag and pickler of the C
    # headers (a new one in C shows up here without a copy by hand)
    assert len([k for k in want if k.startswith("ERR_")]) >= 18
    assert {"KIND_DIRECT", "FLAG_VOLATILE", "PICKLER_CLOUDPICKLE",
            "KEY_MAX", "DIGEST_SIZE"} <= set(want)
    got = gw.remote_exec(
        "import _pyshelfd as S\n"
        "DirectValue({k: getattr(S, k, None) for k in %r})"
        % (sorted(want),)).value
    assert got == want
    kinds = gw.remote_exec(
        "import _pyshelfd as S\nDirectValue((S.ENTRY_GLOBAL, S.ENTRY_HANDLE))"
    ).value
    assert kinds == ("g", "h")


READ = r'''
import _pyshelfd as S
def fields(rec):
    return {f: getattr(rec, f) for f in type(rec).__match_args__}
def read(name):
    rec, head, chk = S.get("g", name), S.head("g", name), S.check("g", name)
    pickler, flags, tn, payload, digest, refs = rec  # still a 6-tuple
    assert (pickler, flags, tn, payload, digest, refs) == tuple(rec)
    return {"rec": fields(rec), "head": fields(head), "check": fields(chk),
            "room": fields(S.room()),
            "types": [type(x).__name__ for x in (rec, head, chk, S.room())]}
'''


@pytest.mark.parametrize("mode", MODES)
def test_records_have_named_fields(tmp_path, backend, mode):
    db = tmp_path / "db"
    ws = pyshelf.spawn(db=db, session="s", backend=backend)
    ws.remote_exec("lst = [1, 2, 3]\nalias = lst\nimport threading\n"
                   "lk = threading.Lock()")
    ws = restart(ws, mode, db)
    try:
        ws.remote_exec(READ)
        out = ws.remote_exec("DirectValue(read('lst'))").value
        rec = out["rec"]
        assert out["types"] == ["Record", "Head", "Check", "Room"]
        assert set(rec) == {"pickler", "flags", "type_name", "payload",
                            "digest", "refs"}
        assert rec["type_name"] == "list"
        assert isinstance(rec["payload"], bytearray)
        assert len(rec["digest"]) == 16
        assert out["head"] == {"flags": rec["flags"], "type_name": "list"}
        assert out["check"] == {"flags": rec["flags"], "type_name": "list",
                                "refs": rec["refs"], "reason": None}
        assert set(out["room"]) == {"map_max", "disk_free"}
        assert out["room"]["map_max"] > 0
        # a volatile record (a lock cannot be pickled) gives its reason
        lk = ws.remote_exec("DirectValue(read('lk'))").value
        assert lk["check"]["reason"]
        assert lk["rec"]["flags"] & ws.remote_exec(
            "import _pyshelfd as S\nDirectValue(S.FLAG_VOLATILE)").value
        # the value itself is unchanged by the restart
        assert ws.remote_exec("DirectValue((lst, alias is lst))").value == \
            ([1, 2, 3], True)
    finally:
        ws.close()


def test_batch_results_and_keywords(gw):
    """Batch methods take their arguments by name and give named
    results; what they wrote reads back."""
    out = gw.remote_exec(r'''
import _pyshelfd as S, pickle
b = S.Batch()
data = pickle.dumps({"x": 1}, protocol=5)
flags = 0
digest = S.digest([data], flags, b"")
b.add(key=("g", "viakw"), pickler=S.PICKLER_PICKLE, flags=flags,
      type_name="dict", refs=b"", digest=digest, parts=[data])
res = b.commit(digests=S.DigestMap(), refs_of={})
written, noted = res
rec = S.get("g", "viakw")
DirectValue((type(res).__name__, res.written, written, res.noted == noted,
             pickle.loads(bytes(rec.payload)), rec.digest == digest))
''').value
    assert out == ("Committed", 1, 1, True, {"x": 1}, True)


def test_refs_codec_through_c(gw):
    """The Python half encodes and parses refs blobs through _pyshelfd
    (the store's codec); a name the store cannot hold is refused with a
    clear error, never written with a wrapped 16-bit length."""
    out = gw.remote_exec(r'''
import _pyshelfd as S
keys = (("g", "a"), ("h", 7), ("g", "é" * 10), ("h", 2**64 - 1),
        ("g", "x" * S.KEY_MAX))
blob = S.refs_encode(keys)
errs = []
for bad in [("g", "y" * (S.KEY_MAX + 1)), ("g", "z" * 65536), ("g", "")]:
    try:
        S.refs_encode([("g", "a"), bad])
        errs.append(None)
    except ValueError as e:
        errs.append(str(e))
DirectValue((blob, S.refs_parse(blob), S.refs_parse(bytearray(blob)),
             S.refs_encode([("g", "a"), ("g", "a")]), errs))
''').value
    blob, parsed, parsed2, dedup, errs = out
    # the layout of docs/STORAGE.md: u8 kind, u16 big-endian length, key
    want = b"g\x00\x01a" + b"h\x00\x08" + (7).to_bytes(8, "big")
    assert blob.startswith(want)
    assert parsed == parsed2 == (("g", "a"), ("h", 7), ("g", "é" * 10),
                                 ("h", 2**64 - 1), ("g", "x" * 480))
    assert dedup == b"g\x00\x01a"
    assert all(e is not None and "global" in e for e in errs), errs
