# shellcheck shell=bash
# Shared by the hostile-input scripts (issue 17 item 5): schemathesis.sh,
# netfuzz.sh, slowloris.sh and run.sh. Sourced, not run.
#
# Every script runs inside its own network namespace (`unshare -rn`) that
# holds nothing but a loopback interface: what these scripts make the
# gateway do with hostile input includes sending SIP to whatever host a
# generated URI names (a CPIM subscribe to pres:x@203.0.113.9, a Contact of
# a mutated SUBSCRIBE) and asking DNS about random domains. In the namespace
# all of that fails at once (no route, no resolver reachable) instead of
# leaving the machine.

HOSTILE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../sipp/lib.sh
source "$HOSTILE_DIR/../sipp/lib.sh"

# hostile_netns SCRIPT ARGS...: re-executes SCRIPT inside a fresh user and
# network namespace with the loopback interface up, unless already inside
# one (HOSTILE_NETNS=1). Exits 2 when no namespace can be made: without it
# the runs would send traffic off the machine.
hostile_netns() {
    local script=$1
    shift
    if [[ "${HOSTILE_NETNS:-}" == 1 ]]; then
        return 0
    fi
    if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
        echo "error: needs unshare(1) and ip(8) for a loopback-only network namespace" >&2
        exit 2
    fi
    if ! unshare -rn true 2>/dev/null; then
        echo "error: cannot create a network namespace (unshare -rn failed: user namespaces disabled?);" >&2
        echo "       refusing to run: generated URIs would make the gateway send SIP and DNS off this machine" >&2
        exit 2
    fi
    exec unshare -rn env HOSTILE_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$script" "$@"
}

# The gateway's listen addresses after start_hostile_gateway.
GW_UDP=""
GW_TCP=""

# start_hostile_gateway DIR [SECTION.KEY=VALUE ...]: the gateway on
# ephemeral loopback ports (UDP and TCP SIP, HTTP), a fresh store under
# DIR, an adapter URL where nothing listens; waits for all three listeners.
start_hostile_gateway() {
    local dir=$1
    shift
    _gw_start "$dir" 1 \
        'cpim.adapter_url="http://127.0.0.1:9/cpim"' \
        'cpim.adapter_timeout_ms=1000' \
        "$@" || return 1
    GW_UDP=$GW_PORT
    GW_TCP=$GW_PORT
}

# no_panic LOG: fails (1) when the gateway's output holds "panicked".
no_panic() {
    if grep -q 'panicked' "$1"; then
        log "FAIL: the gateway panicked:"
        grep -n -A3 'panicked' "$1" | head -20 | indent
        return 1
    fi
    return 0
}

# A scratch directory in $WORK, and traps that stop the gateway and remove
# it on success (kept, with a note naming `what`, on failure or with
# HOSTILE_KEEP set).
hostile_workdir() {
    local name=$1
    HOSTILE_KEPT=$2
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
    trap hostile_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

hostile_cleanup() {
    local rc=$?
    stop_gateway >/dev/null 2>&1 || true
    if ((rc == 0)) && [[ -z "${HOSTILE_KEEP:-}" ]]; then
        rm -rf "$WORK"
    else
        echo "logs kept in $WORK ($HOSTILE_KEPT)" >&2
    fi
    exit "$rc"
}
