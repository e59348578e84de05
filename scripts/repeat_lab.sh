#!/usr/bin/env bash
# Run the Lab 2 scenario suite (tests/lab) N times in a row and count passes and failures.
#
#   scripts/repeat_lab.sh N [pytest args...]
#   scripts/repeat_lab.sh 20 --loop asyncio -k 2c
#
# Each run draws fresh seeds unless --seed is given. The log of every failed
# run is kept, and its "rerun:" lines (one per failed test, with its seed and
# loop) are printed. Exits non-zero if any run failed.
set -u

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
    echo "usage: $0 N [pytest args...]" >&2
    exit 2
fi
runs=$1
shift

cd "$(dirname "$0")/.." || exit 2
logs=$(mktemp -d "${TMPDIR:-/tmp}/repeat_lab.XXXXXX")
passed=0
failed=0
failed_tests=0

for ((run = 1; run <= runs; run++)); do
    log="$logs/run$run.log"
    start=$SECONDS
    if python -m pytest tests/lab -q -p no:cacheprovider "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "run $run/$runs: passed ($((SECONDS - start)) s)"
        rm -f "$log"
    else
        failed=$((failed + 1))
        reruns=$(grep -o 'rerun: pytest .*' "$log" | sort -u)
        failed_tests=$((failed_tests + $(printf '%s' "$reruns" | grep -c '^rerun')))
        echo "run $run/$runs: FAILED ($((SECONDS - start)) s), log: $log"
        [ -n "$reruns" ] && printf '%s\n' "$reruns" | sed 's/^/    /'
        tail -n 1 "$log" | sed 's/^/    /'
    fi
done

echo "runs of tests/lab: $failed_tests failed tests in $failed failed runs"
echo "$passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
    echo "logs of failed runs: $logs"
    exit 1
fi
rmdir "$logs" 2>/dev/null
exit 0
