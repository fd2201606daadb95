"""examples/hello.c, built by `make check`, run as a C user would run it:
pyshelfd found on PATH (no path given, no $PYSHELFD), plain data in and
out (JSON and literal arguments, JSON and repr results), state kept
across runs in a real store.  And the pyshelfd it found is the one under
test (the build tree's, first on PATH)."""
import json
import os
import subprocess

import pytest

import pyshelf


@pytest.fixture(scope="module")
def example(backend):
    path = os.path.join(os.path.dirname(os.path.abspath(backend)),
                        "examples", "hello")
    if not os.access(path, os.X_OK):
        pytest.fail("examples/hello is not built at %r (make check builds "
                    "it)" % path, pytrace=False)
    return path


def _run(example, backend, db, path_dirs=None):
    env = dict(os.environ)
    env.pop("PYSHELFD", None)
    bindir = os.path.dirname(os.path.abspath(backend))
    env["PATH"] = ":".join([bindir] + (path_dirs or []) +
                           ["/usr/bin", "/bin"])
    return subprocess.run([example, db], env=env, capture_output=True,
                          text=True, timeout=120)


def _lines(out):
    return dict(line.split(" = ", 1) for line in out.splitlines()
                if " = " in line)


def test_example_runs_twice_and_keeps_its_state(example, backend, tmp_path):
    db = str(tmp_path / "deep" / "db")
    first = _run(example, backend, db)
    assert first.returncode == 0, first.stderr
    assert "new workspace" in first.stdout
    got = _lines(first.stdout)
    assert json.loads(got["count"]) == {"visits": 1, "seen": ["c", "café"]}
    # a set is not JSON data: it comes back as a handle, not as text
    assert "seen is a set, kept as handle" in first.stdout
    assert got["repr(seen)"] in ("{'c', 'café'}", "{'café', 'c'}")
    assert "1/0 raised ZeroDivisionError: division by zero" in first.stdout

    second = _run(example, backend, db)
    assert second.returncode == 0, second.stderr
    assert "new workspace" not in second.stdout
    got = _lines(second.stdout)
    assert got["visits before"] == "1"
    assert json.loads(got["count"])["visits"] == 2

    # what the C program stored is ordinary Python state
    ws = pyshelf.spawn(db=db, session="hello", backend=backend)
    try:
        assert ws["visits"] == 2
        assert ws["seen"] == {"c", "café"}
    finally:
        ws.close()


def test_example_without_pyshelfd_on_path_says_so(example, backend,
                                                  tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    r = subprocess.run([example, str(tmp_path / "db")], env=env,
                       capture_output=True, text=True, timeout=120)
    if os.access("/usr/local/bin/pyshelfd", os.X_OK) or \
            os.access("/usr/bin/pyshelfd", os.X_OK):
        pytest.fail("an installed pyshelfd would be found: this test "
                    "needs a machine without one", pytrace=False)
    assert r.returncode == 1
    assert "cannot find pyshelfd: not on PATH" in r.stderr


def _readme_block(marker):
    """The sh block after <!-- marker --> in README.md, as lines."""
    readme = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          os.pardir, os.pardir, "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    at = text.index("<!-- %s -->" % marker)
    start = text.index("```sh\n", at) + len("```sh\n")
    return text[start:text.index("```", start)].splitlines()


def test_readme_c_commands_work_in_the_build_tree(backend, tmp_path):
    """QA 13: README "From C"'s commands, as written, right after the
    Quick start (nothing installed): pkg-config finds the build tree's
    pyshelf-uninstalled.pc, cc links libpyshelf, and the program runs
    without LD_LIBRARY_PATH.  Run in a directory laid out as the build
    tree (examples/ from the source tree, client/ and pyshelfd from the
    build tree: the same directory unless the build is out of tree)."""
    build = os.path.dirname(os.path.abspath(backend))
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       os.pardir, os.pardir)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(os.path.join(src, "examples"), tree / "examples")
    os.symlink(os.path.join(build, "client"), tree / "client")
    os.symlink(os.path.join(build, "pyshelfd"), tree / "pyshelfd")
    lines = _readme_block("test:c-build-tree")
    assert any("pkg-config" in ln for ln in lines), lines
    db = str(tmp_path / "hello-db")
    script = "\n".join(ln.replace("/tmp/hello-db", db) for ln in lines)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PKG_CONFIG_PATH", "LD_LIBRARY_PATH", "PYSHELFD")}
    env["PATH"] = "/usr/bin:/bin"
    r = subprocess.run(["sh", "-ec", script], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "new workspace" in r.stdout and "visits" in r.stdout, r.stdout
    assert (tree / "hello").exists()
