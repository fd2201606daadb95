"""Fixtures for the integration tests: the pyshelfd under test and a
workspace on a fresh store.

Run by `make check` (tests/integration/run-pytest.sh) with PYTHONPATH set
to the build tree's client/python and PYSHELFD to its pyshelfd; by hand:

    PYTHONPATH=$BUILD/client/python PYSHELFD=$BUILD/pyshelfd \\
        /usr/bin/python3 -m pytest tests/integration
"""
import os

import pytest

import pyshelf

# pyshelf.open() attaches through a server by default; the suite's tests
# of open() were written for a private stdio backend (a second pyshelfd on
# a session is SessionBusy, close() ends the backend), so they run in that
# mode unless the run asks for the other (PYSHELF_OPEN=server runs them
# through a server).  The server-mode tests (test_server_client*.py) set
# it themselves (server_helpers.srv).
os.environ.setdefault("PYSHELF_OPEN", "stdio")


def _find_backend():
    env = os.environ.get("PYSHELFD")
    if env:
        return env
    try:
        from pyshelf import _paths
    except ImportError:
        return None
    return _paths.BUILD_BACKEND


@pytest.fixture(scope="session")
def backend():
    """Path of the pyshelfd under test: $PYSHELFD, else the build tree's.
    A missing pyshelfd fails the tests that need it: a test run that
    tested nothing must not pass."""
    path = _find_backend()
    if not path or not os.access(path, os.X_OK):
        pytest.fail("no pyshelfd to test at %r (build it, or set "
                    "PYSHELFD to its path)" % (path,), pytrace=False)
    return path


@pytest.fixture
def store(tmp_path):
    """A store directory that does not exist yet (spawn creates it)."""
    return str(tmp_path / "db")


@pytest.fixture
def gw(tmp_path, backend):
    """A Workspace on a new store: pyshelf.spawn(db=tmp_path/"db",
    session="t"), closed at teardown."""
    ws = pyshelf.spawn(db=tmp_path / "db", session="t", backend=backend)
    try:
        yield ws
    finally:
        ws.close()
