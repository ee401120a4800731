#!/usr/bin/env bash
# Runs one multi-party case (tests/sipp/cases/NAME.sh) with the helpers of
# lib.sh; run.sh calls it once per case and transport, and it can be run by
# hand to debug one case:
#
#   tests/sipp/run-case.sh tests/sipp/cases/seed-10.3-away.sh [udp|tcp] [WORKDIR]
#
# WORKDIR (default: a new temporary directory, printed) receives the gateway
# config/log/store, SIPp logs (LABEL.screen.log, .errors.log, .msg.log with
# every message sent and received, .log with <log> actions) and the adapter's
# request log. The case runs with `set -euo pipefail`; it passes if it
# reaches its end and case_finish passes (every background SIPp waited for,
# the gateway exits 0 on SIGTERM). Exit status 0 = PASS.
# Everything it starts is stopped on exit (EXIT trap), also on SIGTERM from
# run.sh's timeout(1).
set -euo pipefail

[[ $# -ge 1 ]] || {
    echo "usage: $0 CASE.sh [udp|tcp] [WORKDIR]" >&2
    exit 2
}
CASE_FILE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
TRANSPORT=${2:-udp}
case "$TRANSPORT" in
    udp) SIPP_T=u1 ;;
    tcp) SIPP_T=t1 ;;
    *)
        echo "error: transport must be udp or tcp, not $TRANSPORT" >&2
        exit 2
        ;;
esac
WORK=${3:-}
if [[ -z "$WORK" ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipp-case.XXXXXX")
    echo "== work directory $WORK"
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export TRANSPORT SIPP_T

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

trap 'case_cleanup' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'log "error: command failed (line $LINENO of ${BASH_SOURCE[0]##*/}): $BASH_COMMAND"' ERR

command -v sipp >/dev/null || fail "sipp not found (Debian: apt-get install sip-tester)"
[[ -x "$BIN" ]] || ensure_binary

step "case $(basename "$CASE_FILE" .sh) over $TRANSPORT"
# shellcheck source=/dev/null
source "$CASE_FILE"
case_finish
step "case passed"
