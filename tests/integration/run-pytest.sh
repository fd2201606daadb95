#!/bin/sh
# run-pytest.sh - the integration suite under `make check`: pytest from the
# Python that matches the embedded libpython (never a python3 from PATH).
: "${PYTHON:?PYTHON is set by make check}"
: "${PYSHELF_SRCDIR:?}"
"$PYTHON" -c "import pytest" 2>/dev/null || {
	echo "run-pytest: $PYTHON cannot import pytest: install python3-pytest (tools/install-deps.sh)"
	exit 1
}
cd "$PYSHELF_SRCDIR/tests/integration" || exit 1
# PYSHELF_TEST_FILES: a part of the suite (.ci/run splits the sanitized
# pass in two); the whole folder by default
# shellcheck disable=SC2086
"$PYTHON" -m pytest -q -p no:cacheprovider -ra "$@" ${PYSHELF_TEST_FILES:-.}
rc=$?
[ $rc -eq 5 ] && { echo "run-pytest: no tests ran"; exit 1; }
exit $rc
