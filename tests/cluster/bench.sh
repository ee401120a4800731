#!/usr/bin/env bash
# Cluster throughput (issue 18): 1 node on sled against 1, 2 and 3 nodes on
# one PostgreSQL, in one run, same SIPp PUBLISH scenario. See bench.py.
# Usage: tests/cluster/bench.sh [--rounds 3] [--configs sled1,pg1,pg2,pg3,pg3-spread] ...
# Needs sip-tester (sipp) and PostgreSQL (with pg_stat_statements, part of
# Debian's postgresql package). Not a test: a benchmark for a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -z "${GATEWAY_BIN:-}" ]]; then
    cargo build --release --locked --quiet
    GATEWAY_BIN=target/release/sip-cpim-gateway
fi
exec python3 tests/cluster/bench.py --binary "$GATEWAY_BIN" "$@"
