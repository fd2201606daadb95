#!/bin/sh
# run.sh - every benchmark, in one run, pinned to CPU 0 and unpinned.
# Results: bench/results/*.jsonl in the build dir; a summary on stdout.
# Usage (from the build dir): make bench   [BENCH_N=5000 BENCH_ONLY=calls]
# (BENCH_ONLY=sweep: the sweep stall, bench_sweep.py, run only when asked)
set -e
: "${PYTHON:?}" "${BUILDDIR:?}"
here=$(cd "$(dirname "$0")" && pwd)
out="$BUILDDIR/bench/results"
mkdir -p "$out"
only=${BENCH_ONLY:-calls persist server stream}
for what in $only; do
	case $what in
	calls)
		echo "== round trips, pinned (taskset -c 0)"
		taskset -c 0 "$BUILDDIR/bench/pipe_floor" 20000 | tee "$out/pinned.txt"
		taskset -c 0 "$PYTHON" "$here/bench_calls.py" | tee "$out/calls-pinned.jsonl"
		echo "== round trips, unpinned"
		"$BUILDDIR/bench/pipe_floor" 20000 | tee "$out/unpinned.txt"
		"$PYTHON" "$here/bench_calls.py" | tee "$out/calls-unpinned.jsonl"
		;;
	server)
		echo "== server mode against stdio and the pipe floor (issue 16)"
		BUILDDIR="$BUILDDIR" "$PYTHON" "$here/bench_server.py" | tee "$out/server.jsonl"
		;;
	sweep)
		# not in the default list: 10 GiB of blob files (issue 17)
		echo "== the sweep stall and the sweep's speed (issue 17)"
		BUILDDIR="$BUILDDIR" "$PYTHON" "$here/bench_sweep.py" | tee "$out/sweep.jsonl"
		;;
	stream)
		echo "== 1 GB pushed and fetched against a pipe's throughput (issue 18)"
		BUILDDIR="$BUILDDIR" "$PYTHON" "$here/bench_stream.py" | tee "$out/stream.jsonl"
		;;
	detach)
		# not in the default list: close() through a server (QA2 03)
		echo "== close() through a server against sync() and a PING"
		"$PYTHON" "$here/bench_detach.py" | tee "$out/detach.jsonl"
		;;
	threads)
		# not in the default list: a thread's start, counted or not
		echo "== starting a thread of shipped code, counted and not"
		taskset -c 0 "$PYTHON" "$here/bench_threads.py" | tee "$out/threads.jsonl"
		;;
	persist)
		echo "== checkpoints and resume, pinned (taskset -c 0)"
		taskset -c 0 "$PYTHON" "$here/bench_persist.py" | tee "$out/persist.jsonl"
		;;
	esac
done
