"""Texts in a RESULT (exception messages, and any str the backend puts in
a text field) reach any client as valid UTF-8 without NUL, whatever
shipped code puts in them: a NUL is written \\x00, a lone surrogate
\\udcxx.  Before, a NUL made the C library fail the reply as "out of
memory" (pyshelf.Error), and a surrogate left the field out."""
from pyshelf import WrappedExcinfo


def test_nul_and_surrogates_in_exception_messages(gw):
    r1 = gw.remote_exec("raise ValueError('a\\x00b')")
    assert isinstance(r1, WrappedExcinfo)
    assert r1.exc_type == "ValueError"
    assert r1.message == "a\\x00b"
    r2 = gw.remote_exec("raise ValueError('caf\\udce9')")
    assert r2.message == "caf\\udce9"
    # the connection is fine afterwards, and the handles list them
    assert gw.remote_exec("pyshelf.DirectValue(1 + 1)").value == 2
    messages = sorted(w.message for w in gw.handles()
                      if isinstance(w, WrappedExcinfo))
    assert messages == ["a\\x00b", "caf\\udce9"], messages
