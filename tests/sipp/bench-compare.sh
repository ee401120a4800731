#!/usr/bin/env bash
# bench-compare.sh BIN_BEFORE BIN_AFTER [ROUNDS]: the presence benchmarks for
# two gateway binaries in one session, alternating, ROUNDS (default 2)
# rounds of publish, subscribe and fan-out each, then memory once each, so
# that figures of the two are comparable as ratios (a machine's speed
# changes from day to day). Markdown rows on stdout, one block per
# binary and step; nothing is written into the repository. Build the
# "before" binary from a git worktree of the older commit.
set -euo pipefail
cd "$(dirname "$0")/../.."
(($# >= 2)) || { echo "usage: $0 BIN_BEFORE BIN_AFTER [ROUNDS]" >&2; exit 2; }
before=$1 after=$2 rounds=${3:-2}
for b in "$before" "$after"; do [[ -x "$b" ]] || { echo "error: $b is not executable" >&2; exit 2; }; done
export BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-600}
rows() { grep -E '^\| ' || true; }
for ((round = 1; round <= rounds; round++)); do
    for b in "$before" "$after"; do
        echo "### $b, round $round: bench-publish.sh 1000 4000 6000 8000"
        GATEWAY_BIN=$b bash tests/sipp/bench-publish.sh 1000 4000 6000 8000 2>/dev/null | rows
        echo "### $b, round $round: bench-subscribe.sh 1000 2000 3000"
        GATEWAY_BIN=$b bash tests/sipp/bench-subscribe.sh 1000 2000 3000 2>/dev/null | rows
        echo "### $b, round $round: bench-fanout.sh 10000 1000 2"
        GATEWAY_BIN=$b bash tests/sipp/bench-fanout.sh 10000 1000 2 2>/dev/null | rows
    done
done
for b in "$before" "$after"; do
    echo "### $b: bench-memory.sh 100000 2000"
    GATEWAY_BIN=$b bash tests/sipp/bench-memory.sh 100000 2000 2>/dev/null | rows
done
