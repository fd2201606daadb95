#!/bin/sh
# ab.sh - an A/B run of the call and persistence benchmarks: two build trees
# (A, the baseline; B, the change), alternating A B A B ... for ROUNDS
# rounds, each pinned to CPU 0, through the same bench/*.py of this tree;
# then one line per measurement with the medians of both and B/A.
#
# Usage: bench/ab.sh A_BUILD_DIR B_BUILD_DIR [ROUNDS]
#   environment: PYTHON (default /usr/bin/python3), AB_PERSIST (sections of
#   bench_persist.py, default "checkpoint resume noop bind refs full named"),
#   AB_OUT (default ./ab-results), BENCH_N etc. as for the benchmarks.
# Example (the commit before a change, built in a worktree):
#   git worktree add --detach ../base HEAD~1 && (cd ../base && ./autogen.sh &&
#     ./configure && make -j2) && bench/ab.sh ../base . 2
set -e
a=$(cd "$1" && pwd)
b=$(cd "$2" && pwd)
rounds=${3:-2}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
out=${AB_OUT:-ab-results}
persist=${AB_PERSIST:-checkpoint resume noop bind refs full named}
mkdir -p "$out"
: > "$out/A.jsonl"
: > "$out/B.jsonl"
r=1
while [ "$r" -le "$rounds" ]; do
	for side in A B; do
		if [ "$side" = A ]; then tree=$a; else tree=$b; fi
		echo "== round $r, $side ($tree)" >&2
		export PYTHONPATH="$tree/client/python" PYSHELFD="$tree/pyshelfd"
		taskset -c 0 "$py" "$here/bench_calls.py" pyshelf >> "$out/$side.jsonl"
		# shellcheck disable=SC2086
		taskset -c 0 "$py" "$here/bench_persist.py" $persist >> "$out/$side.jsonl"
	done
	r=$((r + 1))
done
"$py" - "$out/A.jsonl" "$out/B.jsonl" <<'EOF'
import json, statistics, sys

def load(path):
    rows = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        key = d.get("name")
        for k in ("median_us", "median_ms", "ms", "us"):
            if k in d and isinstance(d[k], (int, float)):
                rows.setdefault((key, k), []).append(d[k])
                break
    return rows

a, b = load(sys.argv[1]), load(sys.argv[2])
print("%-58s %12s %12s %7s" % ("measurement", "A (median)", "B (median)", "B/A"))
for key in a:
    if key not in b:
        continue
    ma, mb = statistics.median(a[key]), statistics.median(b[key])
    print("%-58s %12.2f %12.2f %7.3f" % ("%s [%s]" % key, ma, mb,
                                        mb / ma if ma else float("nan")))
EOF
