#!/bin/sh
# embed-py.sh PYTHON SRCDIR FILE... - print a C file holding the backend's
# Python half, for exec/pyembed.c: each FILE (a path under SRCDIR) as its
# source and as bytecode (marshal, by PYTHON, the interpreter pyshelfd
# embeds, behind its magic number).  The last FILE, exec/backend.py, is the
# top module _pyshelf_backend: `backend_py_source`, `backend_py_code` and
# `backend_py_code_len` (its bytes, without the NUL).  The others,
# exec/backend_X.py as the module _pyshelf_X, make `pyembed_modules[]`, in
# the order given: the order they are loaded in, each importing from those
# before it.
set -e
python=$1
srcdir=$2
shift 2
bin=$(mktemp "${TMPDIR:-/tmp}/embed-py.XXXXXX")
trap 'rm -f "$bin"' EXIT

# hex FILE: FILE's bytes as C initialisers, then a NUL
hex() {
	od -An -v -tx1 "$1" | sed -e 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'
	echo "0x00 };"
}

# compile FILE FILENAME: FILE's code (co_filename FILENAME), marshalled
# behind the magic number, into $bin
compile() {
	"$python" -c 'import importlib.util, marshal, sys
src = open(sys.argv[1], encoding="utf-8").read()
sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER +
                        marshal.dumps(compile(src, sys.argv[2], "exec")))' \
	    "$1" "$2" > "$bin"
}

echo "/* generated from exec/backend*.py by embed-py.sh: do not edit */"
echo "#define PY_SSIZE_T_CLEAN"
echo "#include <Python.h>"
echo "#include \"pyembed.h\""
table=""
n=$#
i=0
for f in "$@"; do
	i=$((i + 1))
	base=$(basename "$f" .py)
	if [ "$i" -eq "$n" ]; then
		[ "$base" = backend ] || {
			echo "embed-py.sh: the last file must be backend.py" >&2
			exit 1
		}
		compile "$srcdir/$f" "<pyshelf_backend>"
		echo "const char backend_py_source[] = {"
		hex "$srcdir/$f"
		echo "const char backend_py_code[] = {"
		hex "$bin"
		echo "const size_t backend_py_code_len = sizeof backend_py_code - 1;"
		continue
	fi
	part=${base#backend_}
	[ "$part" != "$base" ] || {
		echo "embed-py.sh: $f is not exec/backend_X.py" >&2
		exit 1
	}
	compile "$srcdir/$f" "<pyshelf_$part>"
	echo "static const char ${part}_source[] = {"
	hex "$srcdir/$f"
	echo "static const char ${part}_code[] = {"
	hex "$bin"
	table="$table	{\"_pyshelf_$part\", \"<pyshelf_$part>\", ${part}_source,
	    ${part}_code, sizeof ${part}_code - 1},
"
done
echo "const struct pyembed_module pyembed_modules[] = {"
printf '%s' "$table"
echo "	{NULL, NULL, NULL, NULL, 0}"
echo "};"
