"""The design note's test (seed/pyshell-remote-code-considerations.txt),
as DESIGN.md writes it.  DirectValue in get_tbstringlist is the backend's
builtin; the names used here on the client come from pyshelf."""
from pyshelf import DirectValue, WrappedExcinfo


def get_tbstringlist(excinfo):
    import traceback
    return DirectValue(traceback.format_exception(*excinfo))

def test_exception_traceback_string_extraction(gw):
    def remote1():
        raise ValueError
    res = gw.remote_exec(remote1)
    assert isinstance(res, WrappedExcinfo)
    res = gw.remote_exec(get_tbstringlist, res)
    assert isinstance(res, DirectValue)
    for x in res.value:
        assert isinstance(x, str)


def test_traceback_names_the_shipped_code(gw):
    def remote1():
        raise ValueError("from remote1")
    res = gw.remote_exec(remote1)
    assert res.exc_type == "ValueError"
    assert res.message == "from remote1"
    lines = gw.remote_exec(get_tbstringlist, res).value
    text = "".join(lines)
    assert "remote1" in text
    assert "ValueError: from remote1" in text
