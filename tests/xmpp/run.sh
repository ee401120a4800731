#!/usr/bin/env bash
# tests/xmpp/run.sh: end-to-end SIP <-> XMPP presence (issue 15) with a real
# Prosody (Debian `prosody`, private config in a temp dir, foreground), the
# release gateway and adapter, slixmpp clients, SIPp as PUA and a Python SIP
# watcher; all on 127.0.0.1. Prints PASS/FAIL per check and "N passed, N
# failed"; exits non-zero on any failure. Bounded (e2e.py stops itself after
# 220 s; timeout(1) is the backstop) and every process is stopped by PID.
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
timeout -k 5 240 python3 "$HERE/e2e.py" --work "$WORK" --pids "$PIDS" \
    --gateway "$GATEWAY_BIN" --adapter "$ADAPTER_BIN" &
RUNNER=$!
wait "$RUNNER"
rc=$?
RUNNER=""
exit "$rc"
