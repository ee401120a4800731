# shellcheck shell=bash
# Shared by run.sh and bench-options.sh: build, free ports, and the gateway's
# lifetime. Sourced, not run. Everything listens on 127.0.0.1 only.
#
# The caller sets WORK (a scratch directory) before calling start_gateway.

SIPP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SIPP_DIR/../.." && pwd)
BIN=${GATEWAY_BIN:-$ROOT/target/release/sip-cpim-gateway}

GW_PID=""
GW_LOG=""
GW_PORT=""
GW_RC=""

log() { printf '%s\n' "$*"; }

# indent [FILE]: quotes lines as "  | line", always newline-terminated.
indent() { awk '{ print "  | " $0 }' "$@"; }

# Builds the release binary when it is missing; warns when it looks stale.
ensure_binary() {
    if [[ ! -x "$BIN" ]]; then
        log "== building $BIN (cargo build --release --locked)"
        (cd "$ROOT" && cargo build --release --locked)
    elif [[ -z "${GATEWAY_BIN:-}" && -n "$(cd "$ROOT" && find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]]; then
        log "warning: $BIN is older than the sources; run 'cargo build --release' to test the current code"
    fi
}

# Prints a port number free for both UDP and TCP on 127.0.0.1 (the kernel
# picks it; bounded retries when the UDP side is taken).
free_port() {
    python3 - <<'PY'
import socket, sys
for _ in range(50):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
        u.close()
    print(port)
    sys.exit(0)
sys.exit("no free port found")
PY
}

# start_gateway: writes a config under $WORK, starts the gateway in the
# background and waits (20 s at most) until it prints "SIP listening" for both
# the UDP and the TCP listener. Sets GW_PID, GW_PORT, GW_LOG. Retries twice
# with new ports if the gateway exits at start (a port taken in between).
start_gateway() {
    local attempt http cfg i
    for attempt in 1 2 3; do
        GW_PORT=$(free_port)
        http=$(free_port)
        cfg="$WORK/gateway.toml"
        GW_LOG="$WORK/gateway.log"
        mkdir -p "$WORK/store"
        cat >"$cfg" <<EOF
[sip]
listen = ["udp:127.0.0.1:$GW_PORT", "tcp:127.0.0.1:$GW_PORT"]
local_domains = ["example.com"]
routes = []
[cpim]
listen = "127.0.0.1:$http"
[store]
path = "$WORK/store"
EOF
        : >"$GW_LOG"
        NO_COLOR=1 RUST_LOG=${RUST_LOG:-warn} "$BIN" run --config "$cfg" >"$GW_LOG" 2>&1 &
        GW_PID=$!
        for ((i = 0; i < 200; i++)); do
            if grep -q "^SIP listening: udp:127.0.0.1:$GW_PORT\$" "$GW_LOG" &&
                grep -q "^SIP listening: tcp:127.0.0.1:$GW_PORT\$" "$GW_LOG"; then
                log "== gateway pid $GW_PID listening on udp/tcp 127.0.0.1:$GW_PORT"
                return 0
            fi
            if ! kill -0 "$GW_PID" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        if kill -0 "$GW_PID" 2>/dev/null; then
            log "error: gateway did not print 'SIP listening' within 20 s; its output:"
            indent "$GW_LOG"
            stop_gateway || true
            return 1
        fi
        wait "$GW_PID" || true
        GW_PID=""
        log "gateway exited at start (attempt $attempt); its output:"
        indent "$GW_LOG"
    done
    return 1
}

# stop_gateway: SIGTERM, then up to 10 s for it to exit (SIGKILL after that).
# Sets GW_RC to its exit status (or "killed"); returns 0 only if it exited 0.
stop_gateway() {
    local i
    [[ -n "$GW_PID" ]] || return 0
    kill -TERM "$GW_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$GW_PID" 2>/dev/null; then
        log "error: gateway pid $GW_PID still running 10 s after SIGTERM; sending SIGKILL"
        kill -KILL "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
        GW_PID=""
        GW_RC="killed"
        return 1
    fi
    GW_RC=0
    wait "$GW_PID" || GW_RC=$?
    GW_PID=""
    [[ "$GW_RC" == 0 ]]
}

# gateway_alive: true while the gateway process runs.
gateway_alive() {
    [[ -n "$GW_PID" ]] && kill -0 "$GW_PID" 2>/dev/null
}
