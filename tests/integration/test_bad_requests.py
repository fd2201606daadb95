"""Bad input gets the right error, and the client reports it as it is
(issue 14, "Bad requests get the right error")."""
import pytest

import pyshelf
from pyshelf import DirectValue


def test_value_the_client_cannot_unpickle(tmp_path):
    """A value whose class the client cannot import raises the unpickling
    error itself (it was a SystemError: the buffer was released with the
    exception still set), and the workspace goes on."""
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "onlyhere.py").write_text("class C:\n    pass\n")
    ws = pyshelf.spawn(db=tmp_path / "db", session="s")
    try:
        ws.remote_exec("import sys\nsys.path.insert(0, %r)\nimport onlyhere"
                       % str(mod))
        with pytest.raises(ModuleNotFoundError, match="onlyhere"):
            ws.remote_exec("DirectValue(onlyhere.C())")
        ws.remote_exec("x = onlyhere.C()")
        with pytest.raises(ModuleNotFoundError, match="onlyhere"):
            ws["x"]
        assert ws.remote_exec("DirectValue(type(x).__name__)").value == "C"
    finally:
        ws.close()
