#!/usr/bin/env bash
# tests/xmpp/load.sh: the load figures of docs/performance.md (issue 15):
# presence changes per second both ways with 1,000 subscriptions each way and
# the PUBLISH -> XMPP client latency; Prosody, the release gateway and adapter,
# slixmpp clients and Python SIP UAs, all on 127.0.0.1. Not run by CI.
# Bounded (load.py stops itself after 600 s; timeout(1) is the backstop) and
# every process is stopped by PID. Extra arguments go to load.py
# (--users 10 --subs 1000 --rounds 5).
#
#   GATEWAY_BIN   default target/release/sip-cpim-gateway
#   ADAPTER_BIN   default target/release/xmpp-adapter
#   KEEP=1        keep the scratch directory (logs) after a pass
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/xmpp/rig.sh
source "$HERE/rig.sh"

cd "$HERE" || exit 1
timeout -k 5 660 python3 "$HERE/load.py" --work "$WORK" --pids "$PIDS" \
    --gateway "$GATEWAY_BIN" --adapter "$ADAPTER_BIN" "$@" &
RUNNER=$!
wait "$RUNNER"
rc=$?
RUNNER=""
exit "$rc"
