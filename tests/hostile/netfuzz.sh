#!/usr/bin/env bash
# The fuzz corpus and mutated seed flows over the network (issue 17 item 5;
# docs/reliability.md, "Hostile input").
#
#   tests/hostile/netfuzz.sh [--long]
#
# Starts the gateway (loopback ephemeral ports, a fresh store, a bearer
# token) inside a loopback-only network namespace and runs netfuzz.py
# against it: the corpus as UDP datagrams and TCP streams, plus mutants of
# the seed flows (CI: 250, --long: 20000; seed NETFUZZ_SEED, default 17).
# Invariants after every batch of 10: OPTIONS answered 200 over UDP and TCP,
# the process alive, and the state unchanged by batches nothing of which
# was accepted. At the end: no "panicked" in the gateway's output, and a
# clean stop. Exits 1 on any violation.
#
# Environment: GATEWAY_BIN, NETFUZZ_SEED, NETFUZZ_MUTANTS (overrides the
# count), RFC4475_DIR (default ../shared/corpus/rfc4475 next to the
# repository), HOSTILE_KEEP=1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
hostile_netns "$HERE/netfuzz.sh" "$@"

case "${1:-}" in
"") MUTANTS=${NETFUZZ_MUTANTS:-250} ;;
--long) MUTANTS=${NETFUZZ_MUTANTS:-20000} ;;
*)
    echo "usage: $0 [--long]" >&2
    exit 2
    ;;
esac
ensure_binary
RFC4475=${RFC4475_DIR:-$ROOT/../shared/corpus/rfc4475}
TOKEN="hostile-token"
hostile_workdir netfuzz "gateway.log, netfuzz.json"

# Short timers: a NOTIFY to a fuzzed Contact that cannot be reached fails
# within Timer F = 3.2 s, inside one settle window.
start_hostile_gateway "$WORK" \
    "cpim.token=\"$TOKEN\"" \
    'sip.timers.t1_ms=50' \
    'sip.timers.t2_ms=400'

corpus=(--corpus "$ROOT/fuzz/regressions" --corpus "$RFC4475" --corpus "$ROOT/fixtures/seed-flows")
for d in "$ROOT"/fuzz/corpus/*/; do
    [[ -d "$d" ]] && corpus+=(--corpus "${d%/}")
done
log "== netfuzz: corpus ${corpus[*]//--corpus /}, $MUTANTS mutants, seed ${NETFUZZ_SEED:-17}"
rc=0
python3 "$HERE/netfuzz.py" \
    --udp "127.0.0.1:$GW_UDP" --tcp "127.0.0.1:$GW_TCP" --http "127.0.0.1:$GW_HTTP" \
    --token "$TOKEN" --pid "$GW_PID" "${corpus[@]}" \
    --seeds "$ROOT/fixtures/seed-flows" --mutants "$MUTANTS" --seed "${NETFUZZ_SEED:-17}" \
    >"$WORK/netfuzz.json" || rc=$?
cat "$WORK/netfuzz.json"
if ! gateway_alive; then
    log "FAIL: the gateway died"
    tail -40 "$GW_LOG" | indent
    rc=1
fi
no_panic "$GW_LOG" || rc=1
if ! stop_gateway; then
    log "FAIL: the gateway did not stop cleanly (status $GW_RC)"
    rc=1
fi
exit "$rc"
