#!/usr/bin/env bash
# Disk full under load (issue 17, item 2; docs/reliability.md "Disk full and
# I/O errors").
#
#   tests/reliability/diskfull.sh [SECONDS]    load per round (default 4)
#
# Mounts a 16 MiB tmpfs for the store (needs root; otherwise prints SKIP and
# exits 0), starts the gateway on loopback and runs diskfull.py: load with
# room, load while a filler file takes every free byte (every change refused
# with 500 / 503, /readyz 503, reads still 200), the filler removed (/readyz
# 200 again without a restart, load acknowledged again), SIGTERM, a restart on
# the same store and crash.py's check of every operation (each acknowledged
# one present, each refused one absent), and `export` of the store.
#
# Environment: GATEWAY_BIN (default target/release/sip-cpim-gateway),
# DISKFULL_SIZE (tmpfs size, default 16m), DISKFULL_SEED, DISKFULL_KEEP=1
# keeps the scratch directory (kept anyway on failure). Loopback only; every
# process is stopped by its PID; the tmpfs is unmounted at the end.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../sipp/lib.sh
source "$HERE/../sipp/lib.sh"

SECONDS_PER_ROUND=${1:-4}
if ! [[ "$SECONDS_PER_ROUND" =~ ^[1-9][0-9]?$ ]]; then
    echo "usage: $0 [SECONDS]   (1..99, default 4)" >&2
    exit 2
fi
command -v python3 >/dev/null || {
    echo "error: python3 not found" >&2
    exit 2
}
if [[ $(id -u) != 0 ]]; then
    echo "SKIP: diskfull.sh mounts a tmpfs and needs root"
    exit 0
fi
ensure_binary

WORK=$(mktemp -d "${TMPDIR:-/tmp}/diskfull.XXXXXX")
MNT="$WORK/mnt"
mkdir -p "$MNT"
if ! mount -t tmpfs -o "size=${DISKFULL_SIZE:-16m},mode=0700" tmpfs "$MNT" 2>"$WORK/mount.err"; then
    echo "SKIP: cannot mount a tmpfs ($(cat "$WORK/mount.err"))"
    rm -rf "$WORK"
    exit 0
fi
PY_PID=""

cleanup() {
    local rc=$?
    # The gateway is the driver's child; should the driver have died
    # without stopping it, it is stopped here.
    reap_driver_and_gateway
    if ((rc != 0)) || [[ -n "${DISKFULL_KEEP:-}" ]]; then
        # The store as the run left it, off the tmpfs.
        cp -a "$MNT/store" "$WORK/store-at-end" 2>/dev/null || true
    fi
    umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    if ((rc == 0)) && [[ -z "${DISKFULL_KEEP:-}" ]]; then
        rm -rf "$WORK"
    else
        echo "logs kept in $WORK (gateway.log, result.json, report.md, store-at-end)" >&2
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
toml_settings \
    "sip.listen=[\"udp:127.0.0.1:$SIP\"]" \
    'sip.local_domains=["example.com"]' \
    'sip.cpim_domains=["xmpp.example.org"]' \
    "sip.routes=[{ domain = \"sip.example.net\", next_hop = \"udp:127.0.0.1:$UA\" }]" \
    "cpim.listen=\"127.0.0.1:$HTTP\"" \
    "cpim.adapter_url=\"http://127.0.0.1:$ADAPTER/cpim\"" \
    'cpim.retry_initial_ms=100' \
    'cpim.retry_max_ms=1000' \
    "store.path=\"$MNT/store\"" \
    'log.level="info"' >"$WORK/gateway.toml"
export GATEWAY__PRESENCE__DEFAULT_POLICY=allow
export GATEWAY__PRESENCE__NOTIFY_MIN_INTERVAL_MS=0

log "== disk full: ${DISKFULL_SIZE:-16m} tmpfs at $MNT; gateway $BIN; SIP udp 127.0.0.1:$SIP, HTTP :$HTTP; work $WORK"
t0=$(date +%s)
args=(--bin "$BIN" --config "$WORK/gateway.toml" --store "$MNT/store" --filler "$MNT/filler"
    --sip-port "$SIP" --http-port "$HTTP" --ua-port "$UA" --adapter-port "$ADAPTER"
    --work "$WORK" --seconds "$SECONDS_PER_ROUND"
    --json-out "$WORK/result.json" --report "$WORK/report.md")
[[ -z "${DISKFULL_SEED:-}" ]] || args+=(--seed "$DISKFULL_SEED")
timeout -k 10 600 python3 "$HERE/diskfull.py" "${args[@]}" &
PY_PID=$!
rc=0
wait "$PY_PID" || rc=$?
PY_PID=""
[[ -s "$WORK/report.md" ]] && cat "$WORK/report.md"
log "== disk full: $(($(date +%s) - t0)) s, diskfull.py exit status $rc"
exit "$rc"
