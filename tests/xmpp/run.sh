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
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/sip-cpim-gateway}
ADAPTER_BIN=${ADAPTER_BIN:-$ROOT/target/release/xmpp-adapter}

command -v prosody >/dev/null || (apt-get update && apt-get install -y prosody) >/dev/null
command -v sipp >/dev/null || (apt-get update && apt-get install -y sip-tester) >/dev/null
python3 -c 'import slixmpp' 2>/dev/null || pip install 'slixmpp==1.17.0' >/dev/null
for b in "$GATEWAY_BIN" "$ADAPTER_BIN"; do
    if [[ ! -x "$b" ]]; then
        echo "== building release binaries (cargo build --release --locked)"
        (cd "$ROOT" && cargo build --release --locked) || exit 1
        break
    fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xmpp-e2e.XXXXXX")
PIDS="$WORK/pids"
: >"$PIDS"
RUNNER=""

cleanup() {
    local rc=$? pid
    [[ -n "$RUNNER" ]] && kill -TERM "$RUNNER" 2>/dev/null
    # Every process the test started, by PID (prosody, gateway, adapter).
    while read -r pid; do
        [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null
    done <"$PIDS"
    sleep 0.5
    while read -r pid; do
        [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
    done <"$PIDS"
    if ((rc != 0)); then
        echo "logs kept in $WORK"
        for f in "$WORK"/adapter.log "$WORK"/gateway.log "$WORK"/prosody/prosody.log; do
            [[ -f "$f" ]] && { echo "--- last lines of $f"; tail -n 25 "$f"; }
        done
    elif [[ -z "${KEEP:-}" ]]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

cd "$HERE" || exit 1
timeout -k 5 240 python3 "$HERE/e2e.py" --work "$WORK" --pids "$PIDS" \
    --gateway "$GATEWAY_BIN" --adapter "$ADAPTER_BIN" &
RUNNER=$!
wait "$RUNNER"
rc=$?
RUNNER=""
exit "$rc"
