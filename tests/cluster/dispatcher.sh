#!/usr/bin/env bash
# Kamailio's dispatcher in front of a three-node cluster (issue 18): the
# same docker/cluster/kamailio.cfg as the compose deployment, on loopback
# ports; watchers and publishers through Kamailio only; node a killed with
# SIGKILL. See dispatcher.py. Needs kamailio (Debian: kamailio) and
# PostgreSQL. GATEWAY_BIN names a built gateway; without it the release
# build is made here.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v kamailio >/dev/null || { echo "kamailio is not installed" >&2; exit 1; }
if [ -z "${GATEWAY_BIN:-}" ]; then
    cargo build --release --locked --quiet
    GATEWAY_BIN=target/release/sip-cpim-gateway
fi
exec python3 tests/cluster/dispatcher.py --binary "$GATEWAY_BIN" "$@"
