#!/bin/sh
# run-pytest-server.sh - the integration suite again under `make check`,
# every workspace attached through a server (PYSHELF_TEST_MODE=server, see
# conftest.py).  The server's own tests (test_server_*, test_worker_*)
# run in run-pytest.sh only: they start their servers themselves.  Left
# out too: test_memory.py, the backend's memory flatness over 100,000
# requests (45 s here), the same code in a worker as in a stdio backend.
PYSHELF_TEST_MODE=server
export PYSHELF_TEST_MODE
exec sh "$(dirname "$0")/run-pytest.sh" \
	--ignore-glob='test_server_*' --ignore-glob='test_worker_*' \
	--ignore=test_memory.py "$@"
