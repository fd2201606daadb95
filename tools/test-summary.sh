#!/bin/sh
# test-summary.sh [DIR] - add up the test cases of every suite that ran
# under `make check` in build directory DIR (check suites' "Checks:" lines,
# pytest's closing line) and print one line "N passed, N failed".
# A suite whose log has no summary (it crashed) counts as one failure.
dir=${1:-.}
passed=0
failed=0
for log in $(find "$dir/tests" -name '*.log' ! -name 'test-suite.log' 2>/dev/null | sort); do
	line=$(grep -E '^[0-9]+%: Checks: [0-9]+' "$log" | tail -1)
	if [ -n "$line" ]; then
		n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
		f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
		e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
		passed=$((passed + n - f - e))
		failed=$((failed + f + e))
		continue
	fi
	line=$(grep -E '(^|= )[0-9]+ (passed|failed|errors?)(,.*)? in [0-9.]+s' "$log" | tail -1)
	if [ -n "$line" ]; then
		p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
		f=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
		e=$(echo "$line" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+')
		passed=$((passed + ${p:-0}))
		failed=$((failed + ${f:-0} + ${e:-0}))
		continue
	fi
	echo "test-summary: $log has no summary: counted as 1 failure" >&2
	failed=$((failed + 1))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
