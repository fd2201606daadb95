"""Streamed stdout/stderr of shipped code."""
import io
import sys
import time

from pyshelf import DirectValue


def test_output_goes_to_the_given_files(gw):
    def talk():
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
        return DirectValue("done")
    out, err = io.StringIO(), io.StringIO()
    r = gw.remote_exec(talk, stdout=out, stderr=err)
    assert r.value == "done"
    assert "to stdout\n" in out.getvalue()
    assert "to stderr\n" in err.getvalue()
    assert "to stderr" not in out.getvalue()


def test_default_is_sys_stdout_at_call_time(gw, capsys):
    gw.remote_exec("print('captured by capsys')")
    assert "captured by capsys" in capsys.readouterr().out


def test_default_follows_sys_stdout_replacement(gw, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    gw.remote_exec("print('into the replacement')")
    assert "into the replacement" in buf.getvalue()


def test_unicode_output(gw):
    out = io.StringIO()
    gw.remote_exec("print('ünïcödé ✓ 🐍 日本語')", stdout=out)
    assert out.getvalue() == "ünïcödé ✓ 🐍 日本語\n"


def test_multibyte_character_split_across_chunks(gw):
    # Write the UTF-8 bytes of one character in two flushed pieces.
    def split():
        import sys
        b = "✓".encode()
        out = getattr(sys.stdout, "buffer", None)
        if out is None:
            print("✓", end="")
            return
        out.write(b[:1])
        out.flush()
        out.write(b[1:])
        out.flush()
    out = io.StringIO()
    gw.remote_exec(split, stdout=out)
    assert out.getvalue() == "✓"


def test_output_streams_while_the_code_runs(gw, tmp_path):
    """The code waits until the client has written its first output (the
    client's stream makes a file): only output that streams while the code
    runs lets it finish before its 120 s bound.  No timing."""
    seen = tmp_path / "seen"

    class Marking(io.StringIO):
        def write(self, s):
            seen.touch()
            return super().write(s)
    out = Marking()

    def slow(path):
        import os
        import sys
        import time
        print("early")
        sys.stdout.flush()
        t0 = time.monotonic()
        while not os.path.exists(path) and time.monotonic() - t0 < 120:
            time.sleep(0.01)
        return DirectValue(os.path.exists(path))
    r = gw.remote_exec(slow, str(seen), stdout=out)
    assert r.value is True
    assert out.getvalue() == "early\n"


def test_lots_of_output(gw):
    out = io.StringIO()
    gw.remote_exec("for i in range(20000):\n    print(i)", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines == [str(i) for i in range(20000)]


def test_output_file_that_raises(gw):
    class Broken:
        def write(self, s):
            raise OSError("disk on fire")
    try:
        gw.remote_exec("print('x')", stdout=Broken())
    except OSError as e:
        assert "disk on fire" in str(e)
    else:
        raise AssertionError("the write error was swallowed")
    # the connection stays in step
    assert gw.remote_exec("DirectValue(7)").value == 7
