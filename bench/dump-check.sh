#!/bin/sh
# dump-check.sh - throughput of `pyshelf-dump --check` on a store of
# ENTRIES entries (default 1,000,000), against `mdb_dump -a` (lmdb-utils)
# of the same store in the same run: mdb_dump reads and prints every
# record with no meaning; --check decodes every record, verifies its
# digest, disassembles its pickle and resolves its references.  Both read
# from the page cache (the file is read once first); best of RUNS runs.
#
#   make bench-dump                     (from the build tree), or
#   PYSHELF_DUMP=build/pyshelf-dump DUMP_GEN=build/bench/dump-gen \
#       ENTRIES=1000000 sh bench/dump-check.sh
#
# BENCH_DUMP_DIR keeps the generated store there (reused when present).
set -eu
: "${PYSHELF_DUMP:?set PYSHELF_DUMP to the pyshelf-dump to measure}"
: "${DUMP_GEN:?set DUMP_GEN to bench/dump-gen}"
ENTRIES=${ENTRIES:-1000000}
RUNS=${RUNS:-3}
command -v mdb_dump >/dev/null 2>&1 || {
	echo "dump-check: mdb_dump not found: install the Debian package lmdb-utils" >&2
	exit 77
}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pyshelf-bench-dump.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
db=${BENCH_DUMP_DIR:-$tmp/db}

now() { date +%s.%N; }

if [ ! -f "$db/data.mdb" ]; then
	t0=$(now)
	"$DUMP_GEN" "$db" "$ENTRIES"
	t1=$(now)
	echo "built $ENTRIES entries in $(echo "$t1 - $t0" | bc) s"
fi
cat "$db/data.mdb" >/dev/null
echo "store: $db, $(du -h "$db/data.mdb" | cut -f1) data.mdb"

# best wall time of RUNS runs of "$@" (stdout discarded)
best() {
	b=
	i=0
	while [ $i -lt "$RUNS" ]; do
		t0=$(now)
		"$@" >/dev/null
		t1=$(now)
		t=$(echo "$t1 - $t0" | bc)
		if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; fi
		i=$((i + 1))
	done
	echo "$b"
}

check_s=$(best "$PYSHELF_DUMP" --db "$db" --check --quiet)
mdb_s=$(best mdb_dump -a "$db")
# the entry count as --check saw it
n=$("$PYSHELF_DUMP" --db "$db" --check --json |
	sed -n 's/.*"row":"check".*"entries":\([0-9]*\).*/\1/p')
printf '%-34s %10s s %14s entries/s\n' "pyshelf-dump --check" "$check_s" \
	"$(echo "$n / $check_s" | bc)"
printf '%-34s %10s s %14s entries/s\n' "mdb_dump -a (same store)" "$mdb_s" \
	"$(echo "$n / $mdb_s" | bc)"
printf 'ratio --check / mdb_dump: %s (time), entries: %s\n' \
	"$(echo "scale=2; $check_s / $mdb_s" | bc)" "$n"
