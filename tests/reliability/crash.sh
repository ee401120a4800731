#!/usr/bin/env bash
# Crash consistency under SIGKILL (issue 17, item 1; docs/reliability.md).
#
#   tests/reliability/crash.sh [KILLS]      KILLS rounds (default 20; CI runs 3)
#
# Starts the gateway on a fresh store, then KILLS times: crash.py loads it
# (REGISTER, PUBLISH, SUBSCRIBE local and §7.1 from its SIP sockets; CPIM
# subscribe §7.2 and notify §7.1 over HTTP; NOTIFYs in the §7.2 dialogs from
# its SIP presentity), SIGKILLs it at a random moment, restarts it on the
# same store (state accumulates), waits for /readyz and checks that every
# acknowledged operation survived and no refused one appears. Prints a
# markdown report; exits 1 on any loss, refused-but-present operation, SIP
# anomaly or check error.
#
# Environment: GATEWAY_BIN (default target/release/sip-cpim-gateway),
# CRASH_SEED (random), CRASH_LOAD_MIN / CRASH_LOAD_MAX (seconds of load
# before each kill, default 0.5 / 3), CRASH_RATES (KIND=PER_SECOND,...; see
# crash.py --help), CRASH_SABOTAGE=drop|wipe (the checker's self-test: at
# the last kill, acknowledged records are dropped from the store; exit 0 only
# if each is reported lost), CRASH_KEEP=1 keeps the scratch directory (it is kept
# anyway on failure). Loopback only; every process is stopped by its PID.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../sipp/lib.sh
source "$HERE/../sipp/lib.sh"

KILLS=${1:-20}
if ! [[ "$KILLS" =~ ^[1-9][0-9]{0,2}$ ]]; then
    echo "usage: $0 [KILLS]   (1..999, default 20)" >&2
    exit 2
fi
command -v python3 >/dev/null || {
    echo "error: python3 not found" >&2
    exit 2
}
ensure_binary

WORK=$(mktemp -d "${TMPDIR:-/tmp}/crash.XXXXXX")
PY_PID=""

cleanup() {
    local rc=$?
    # The gateway is the driver's child; should the driver have died
    # without stopping it, it is stopped here.
    reap_driver_and_gateway
    if ((rc == 0)) && [[ -z "${CRASH_KEEP:-}" ]]; then
        rm -rf "$WORK"
    else
        echo "logs kept in $WORK (gateway.log, result.json, report.md, store*)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SIP=$(free_port)
HTTP=$(free_port)
UA=$(free_port)
ADAPTER=$(free_port)
mkdir -p "$WORK/store"
toml_settings \
    "sip.listen=[\"udp:127.0.0.1:$SIP\"]" \
    'sip.local_domains=["example.com"]' \
    'sip.cpim_domains=["xmpp.example.org"]' \
    "sip.routes=[{ domain = \"sip.example.net\", next_hop = \"udp:127.0.0.1:$UA\" }]" \
    "cpim.listen=\"127.0.0.1:$HTTP\"" \
    "cpim.adapter_url=\"http://127.0.0.1:$ADAPTER/cpim\"" \
    'cpim.retry_initial_ms=100' \
    'cpim.retry_max_ms=1000' \
    "store.path=\"$WORK/store\"" \
    'log.level="warn"' >"$WORK/gateway.toml"
# Every watcher allowed, NOTIFYs not throttled (as the benchmarks do).
export GATEWAY__PRESENCE__DEFAULT_POLICY=allow
export GATEWAY__PRESENCE__NOTIFY_MIN_INTERVAL_MS=0

log "== crash consistency: $KILLS SIGKILLs; gateway $BIN; SIP udp 127.0.0.1:$SIP, HTTP :$HTTP, SIP presentity :$UA, adapter :$ADAPTER; work $WORK"
t0=$(date +%s)
args=(--bin "$BIN" --config "$WORK/gateway.toml" --store "$WORK/store"
    --sip-port "$SIP" --http-port "$HTTP" --ua-port "$UA" --adapter-port "$ADAPTER"
    --work "$WORK" --kills "$KILLS"
    --load-min "${CRASH_LOAD_MIN:-0.5}" --load-max "${CRASH_LOAD_MAX:-3}"
    --json-out "$WORK/result.json" --report "$WORK/report.md")
[[ -z "${CRASH_SEED:-}" ]] || args+=(--seed "$CRASH_SEED")
[[ -z "${CRASH_RATES:-}" ]] || args+=(--rates "$CRASH_RATES")
[[ -z "${CRASH_SABOTAGE:-}" ]] || args+=(--sabotage "$CRASH_SABOTAGE")
[[ -z "${CRASH_WORKERS:-}" ]] || args+=(--workers "$CRASH_WORKERS")
# Bounded: a round takes seconds; 2 minutes per kill is far beyond any.
timeout -k 10 $((120 * KILLS + 300)) python3 "$HERE/crash.py" "${args[@]}" &
PY_PID=$!
rc=0
wait "$PY_PID" || rc=$?
PY_PID=""
[[ -s "$WORK/report.md" ]] && cat "$WORK/report.md"
log "== crash consistency: $KILLS kills in $(($(date +%s) - t0)) s, crash.py exit status $rc"
exit "$rc"
