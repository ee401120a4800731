# shellcheck shell=bash
# Shared by the presence benchmarks (bench-publish.sh, bench-subscribe.sh,
# bench-fanout.sh, bench-memory.sh, bench-gateway.sh). Sourced, not run.
# Uses lib.sh for free_port, indent, ensure_binary, stop_gateway and
# gateway_alive (read-only), and starts the gateway with its own config:
# the benchmarks need [sip] cpim_domains / routes and [cpim] adapter_url,
# which lib.sh's fixed config does not offer. Everything is on 127.0.0.1.
#
# The caller sets WORK (a scratch directory) before bench_start_gateway.

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Optional config for bench_start_gateway (TOML values, set by the caller):
#   BENCH_CPIM_DOMAINS   e.g. '["xmpp.example.org"]'          (default [])
#   BENCH_ROUTES         e.g. '[{ domain = "x", next_hop = "udp:127.0.0.1:1" }]'
#   BENCH_ADAPTER_URL    e.g. 'http://127.0.0.1:PORT/cpim'
#   BENCH_EXTRA_TOML     whole extra sections appended (e.g. "[presence]\n...")
GW_HTTP=""
GW_STORE=""

# bench_start_gateway: like lib.sh's start_gateway (UDP listener only: every
# benchmark runs over UDP), with the extra keys above. Sets GW_PID, GW_PORT,
# GW_HTTP, GW_LOG, GW_STORE. Waits 20 s at most; retries twice with new ports.
# Load figures are for the presence and gateway paths, not authorization or
# throttling: every watcher is allowed and NOTIFYs are not rate-limited
# (environment overrides, so BENCH_EXTRA_TOML may still set [presence]).
export GATEWAY__PRESENCE__DEFAULT_POLICY=${GATEWAY__PRESENCE__DEFAULT_POLICY:-allow}
export GATEWAY__PRESENCE__NOTIFY_MIN_INTERVAL_MS=${GATEWAY__PRESENCE__NOTIFY_MIN_INTERVAL_MS:-0}

bench_start_gateway() {
    local attempt cfg i
    for attempt in 1 2 3; do
        GW_PORT=$(free_port)
        GW_HTTP=$(free_port)
        cfg="$WORK/gateway.toml"
        GW_LOG="$WORK/gateway.log"
        GW_STORE="$WORK/store"
        rm -rf "$GW_STORE"
        mkdir -p "$GW_STORE"
        cat >"$cfg" <<EOF
[sip]
listen = ["udp:127.0.0.1:$GW_PORT"]
local_domains = ["example.com"]
cpim_domains = ${BENCH_CPIM_DOMAINS:-[]}
routes = ${BENCH_ROUTES:-[]}
[cpim]
listen = "127.0.0.1:$GW_HTTP"
adapter_url = "${BENCH_ADAPTER_URL:-http://127.0.0.1:9/cpim}"
[store]
path = "$GW_STORE"
${BENCH_EXTRA_TOML:-}
EOF
        : >"$GW_LOG"
        NO_COLOR=1 RUST_LOG=${RUST_LOG:-warn} "$BIN" run --config "$cfg" >"$GW_LOG" 2>&1 &
        GW_PID=$!
        for ((i = 0; i < 200; i++)); do
            if grep -q "^SIP listening: udp:127.0.0.1:$GW_PORT\$" "$GW_LOG" &&
                grep -q "^CPIM HTTP listening: 127.0.0.1:$GW_HTTP\$" "$GW_LOG"; then
                log "== gateway pid $GW_PID: SIP udp 127.0.0.1:$GW_PORT, CPIM HTTP 127.0.0.1:$GW_HTTP"
                return 0
            fi
            kill -0 "$GW_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$GW_PID" 2>/dev/null; then
            log "error: gateway did not print its listeners within 20 s; its output:"
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

# bench_restart_gateway: stops the gateway (SIGTERM) and starts it again with
# the same config, ports and store (its state is reloaded from the store).
bench_restart_gateway() {
    local i
    stop_gateway || log "warning: gateway exit status $GW_RC after SIGTERM"
    : >"$GW_LOG"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-warn} "$BIN" run --config "$WORK/gateway.toml" >"$GW_LOG" 2>&1 &
    GW_PID=$!
    for ((i = 0; i < 600; i++)); do
        if grep -q "^SIP listening: udp:127.0.0.1:$GW_PORT\$" "$GW_LOG" &&
            grep -q "^CPIM HTTP listening: 127.0.0.1:$GW_HTTP\$" "$GW_LOG"; then
            log "== gateway restarted: pid $GW_PID (after $((i * 100)) ms)"
            return 0
        fi
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "error: the restarted gateway did not print its listeners within 60 s; its output:"
    indent "$GW_LOG"
    return 1
}

# bench_wait_quiet: waits (bounded: BENCH_QUIET_WAIT seconds,
# default 600; 0 = do not wait) until no compiler, fuzzer or criterion bench
# (another benchmark that would disturb this one, and be disturbed) runs and the 1-minute
# load average is below BENCH_QUIET_LOAD (default 1.0). Prints what it saw.
bench_wait_quiet() {
    local max=${BENCH_QUIET_WAIT:-600} limit=${BENCH_QUIET_LOAD:-1.0} t=0 busy load
    while :; do
        busy=$( (pgrep -f -- '(^|/)(rustc|rustdoc|cargo|cargo-fuzz|cargo-clippy|clippy-driver)( |$)|-max_total_time=|( |^)--bench( |$)' 2>/dev/null || true) | wc -l)
        load=$(cut -d' ' -f1 /proc/loadavg)
        if ((busy == 0)) && awk -v l="$load" -v m="$limit" 'BEGIN { exit !(l < m) }'; then
            log "== machine quiet: load $load, no rustc/cargo/fuzz process"
            return 0
        fi
        if ((t >= max)); then
            log "warning: machine still busy after ${t}s (load $load, $busy rustc/cargo/fuzz processes); measuring anyway"
            return 0
        fi
        ((t == 0)) && log "== waiting up to ${max}s for a quiet machine (load $load, $busy rustc/cargo/fuzz processes)"
        sleep 10
        t=$((t + 10))
    done
}

# CPU seconds (user + system) the gateway has used so far.
gateway_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$GW_PID/stat"
}

# Resident set size of the gateway, kB (VmRSS).
gateway_rss_kb() {
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$GW_PID/status"
}

# Datagrams the kernel dropped for a full receive buffer: on the gateway's UDP
# socket (/proc/net/udp "drops"), and machine-wide (Udp RcvbufErrors).
gateway_udp_drops() {
    awk -v port="$(printf '%04X' "$GW_PORT")" '$2 == "0100007F:" port { print $NF; found = 1 } END { if (!found) print 0 }' /proc/net/udp
}
machine_udp_drops() {
    awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# sipp_cpu_percent TIME_FILE T0 T1: CPU (user + system) of a process run
# under `/usr/bin/time -o TIME_FILE -f "%U %S"`, as a percentage of one core
# over T0..T1; "?" when the file is missing (the process was killed).
sipp_cpu_percent() {
    [[ -s "$1" ]] || {
        echo "?"
        return 0
    }
    awk -v t0="$2" -v t1="$3" 'NF == 2 && $1 ~ /^[0-9.]+$/ { u = $1; s = $2 } END { printf "%.0f", 100 * (u + s) / (t1 - t0) }' "$1"
}

# cpu_percent CPU0 CPU1 T0 T1: CPU used between two gateway_cpu readings, as a
# percentage of one core over the wall time T0..T1 (date +%s.%N).
cpu_percent() {
    awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" 'BEGIN { printf "%.0f", 100 * (b - a) / (t1 - t0) }'
}

# sipp_summary STAT_CSV RTT_GLOB RTD...: one line
# "sent ok failed retrans achieved_cps" then, per RTD number given,
# "p50 p90 p99 max" (ms, nearest rank; "-" when none).
sipp_summary() {
    python3 - "$@" <<'PY'
import csv, glob, sys
stat_file, rtt_glob, rtds = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(stat_file, newline="") as f:
    rows = list(csv.reader(f, delimiter=";"))
head, last = rows[0], rows[-1]
col = lambda name: last[head.index(name)]
sent = int(col("OutgoingCall(C)"))
ok = int(col("SuccessfulCall(C)"))
retrans = int(col("Retransmissions(C)"))
rate = float(col("CallRate(C)"))
rtts = {r: [] for r in rtds}
for path in glob.glob(rtt_glob):
    with open(path) as f:
        next(f, None)
        for line in f:
            parts = line.strip().split(";")
            if len(parts) >= 3 and parts[2] in rtts:
                rtts[parts[2]].append(float(parts[1]))
out = [str(sent), str(ok), str(sent - ok), str(retrans), "%.0f" % rate]
for r in rtds:
    v = sorted(rtts[r])
    def pct(p):
        if not v:
            return "-"
        k = max(0, -(-len(v) * p // 100) - 1)
        return "%g" % v[int(k)]
    out += [pct(50), pct(90), pct(99), "%g" % v[-1] if v else "-"]
print(" ".join(out))
PY
}

# bench_machine: one line describing the machine and the build measured
# (BENCH_BUILD describes the binary when set, e.g. "commit 498ad8d").
bench_machine() {
    printf '%s cores, %s, gateway %s (%s), SIPp %s, load average %s before the run' \
        "$(nproc)" "$(rustc --version 2>/dev/null || echo 'rustc ?')" "$BIN" \
        "${BENCH_BUILD:-repository HEAD $(cd "$ROOT" && git log -1 --format=%h 2>/dev/null || echo '?')}" \
        "$(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*' | head -1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# bench_setup NAME: scratch directory WORK, EXIT/INT/TERM traps that stop the
# gateway and any PIDs added to BENCH_PIDS (helpers this script started).
BENCH_PIDS=()
bench_setup() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipp-$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
bench_cleanup() {
    local rc=$? p
    for p in "${BENCH_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${BENCH_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ -n "$GW_PID" ]]; then
        stop_gateway >&2 || true
    fi
    if ((rc == 0)) && [[ -z "${BENCH_KEEP:-}" ]]; then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
    exit "$rc"
}

# check_rates RATE...: every argument a positive integer.
check_rates() {
    local r
    for r in "$@"; do
        [[ "$r" =~ ^[1-9][0-9]*$ ]] || {
            echo "error: '$r' is not a positive integer" >&2
            exit 2
        }
    done
}

require_sipp() {
    command -v sipp >/dev/null || {
        echo "error: sipp not found (Debian: apt-get install sip-tester)" >&2
        exit 2
    }
}
