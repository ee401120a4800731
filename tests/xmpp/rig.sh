# shellcheck shell=bash
# tests/xmpp/rig.sh: sourced by run.sh (the CI test) and load.sh (the load
# figures). Installs what is missing, builds the release binaries if absent,
# makes the scratch directory and the PID file the Python driver appends to,
# and stops every process in it on exit (SIGTERM, then SIGKILL). The caller
# sets HERE and ROOT, then starts its driver with RUNNER set to its PID.
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
