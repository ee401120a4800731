#!/usr/bin/env bash
# The HTTP API against its own OpenAPI document (issue 17 item 5;
# docs/reliability.md, "Hostile input").
#
#   tests/hostile/schemathesis.sh [--long]
#
# Starts the gateway (loopback ephemeral ports, a fresh store, a bearer
# token) inside a loopback-only network namespace, then runs schemathesis
# over every operation of /openapi.json with every check (`--checks all`:
# no 5xx, status codes, content types, headers and bodies as documented,
# negative data rejected, positive data accepted, auth not ignored, the
# stateful phase's resource checks). CI size: 25 examples per operation
# (about a minute on 2 cores); --long: 400 per operation, and fuzzing and
# the stateful phase repeated for 15 minutes. Exits 1 on any schemathesis failure, if the gateway
# died or panicked, or if it did not stop cleanly.
#
# Environment: GATEWAY_BIN (default target/release/sip-cpim-gateway),
# ST_SEED (default 17), ST_EXAMPLES (overrides the examples per operation),
# HOSTILE_KEEP=1 keeps the scratch directory (kept anyway on failure).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
hostile_netns "$HERE/schemathesis.sh" "$@"

LONG=""
case "${1:-}" in
"") ;;
--long) LONG=1 ;;
*)
    echo "usage: $0 [--long]" >&2
    exit 2
    ;;
esac
if ! command -v st >/dev/null; then
    echo "error: schemathesis (st) not found; pip install schemathesis==4.32.5" >&2
    exit 2
fi
ensure_binary

SEED=${ST_SEED:-17}
if [[ -n "$LONG" ]]; then
    EXAMPLES=${ST_EXAMPLES:-400}
    # Fuzzing and the stateful phase repeat until this is spent.
    TIME_ARGS=(--max-time 900)
else
    EXAMPLES=${ST_EXAMPLES:-25}
    TIME_ARGS=()
fi
TOKEN="hostile-token"
hostile_workdir schemathesis "gateway.log, report/"

# A short T1 (Timer F = 64*T1 = 3.2 s) bounds how long a CPIM subscribe to
# a generated SIP target waits for an answer that cannot come.
start_hostile_gateway "$WORK" \
    "cpim.token=\"$TOKEN\"" \
    'sip.timers.t1_ms=50' \
    'sip.timers.t2_ms=400'
BASE="http://127.0.0.1:$GW_HTTP"

log "== schemathesis $(st --version 2>/dev/null | awk '{print $NF}'): $EXAMPLES examples per operation, seed $SEED, all checks"
rc=0
t0=$SECONDS
# One worker: hypothesis's lambda descriptions race on CPython 3.11's ast
# module when two threads generate at once ("AST constructor recursion
# depth mismatch", a schemathesis runtime error, not a finding).
# From $WORK: schemathesis keeps its example database in ./.schemathesis.
(cd "$WORK" && SCHEMATHESIS_HOOKS="$HERE/st_hooks.py" st run "$BASE/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    "${TIME_ARGS[@]}" \
    --request-timeout 20 \
    --suppress-health-check too_slow \
    --report junit --report-dir "$WORK/report" \
    --warnings off) || rc=$?
log "== schemathesis exit status $rc after $((SECONDS - t0)) s"

if ! gateway_alive; then
    log "FAIL: the gateway died during the run"
    indent "$GW_LOG" | tail -40
    rc=1
fi
no_panic "$GW_LOG" || rc=1
if ! stop_gateway; then
    log "FAIL: the gateway did not stop cleanly (status $GW_RC)"
    rc=1
fi
exit "$rc"
