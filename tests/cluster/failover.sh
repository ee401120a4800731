#!/usr/bin/env bash
# Failover under load (issue 18): three nodes on one PostgreSQL, PUBLISHes
# through random nodes, node a killed with SIGKILL mid-run. See failover.py.
# Usage: tests/cluster/failover.sh [--seconds N] [--rate R] ...
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked --quiet
exec python3 tests/cluster/failover.py --binary target/release/sip-cpim-gateway "$@"
