# shellcheck shell=bash
# Shared by run.sh, run-case.sh and the bench-* scripts: build, free ports,
# and the gateway's lifetime; below those, the helpers of the multi-party
# cases (tests/sipp/cases/*.sh: SIPp instances, HTTP API calls, the test
# adapter). Sourced, not run. Everything listens on 127.0.0.1 only.
#
# The caller sets WORK (a scratch directory) before calling start_gateway.

SIPP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SIPP_DIR/../.." && pwd)
BIN=${GATEWAY_BIN:-$ROOT/target/release/sip-cpim-gateway}

GW_PID=""
GW_LOG=""
GW_PORT=""
GW_RC=""
GW_HTTP=""

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
    _gw_start "$WORK" ""
}

# _gw_start DIR WAIT_HTTP [SECTION.KEY=VALUE ...]: start_gateway's body;
# the base config allows every watcher and does not throttle NOTIFYs (the
# flows here test issues 4 and 6; a case sets presence.default_policy or
# presence.notify_min_interval_ms itself to test authorization/throttling);
# config, log and store go under DIR; extra settings override or extend the
# base config (see start_gateway_with). WAIT_HTTP non-empty: also wait for
# "CPIM HTTP listening" before returning.
_gw_start() {
    local dir=$1 wait_http=$2 attempt http cfg i
    shift 2
    for attempt in 1 2 3; do
        GW_PORT=$(free_port)
        http=$(free_port)
        cfg="$dir/gateway.toml"
        GW_LOG="$dir/gateway.log"
        mkdir -p "$dir/store"
        toml_settings \
            "sip.listen=[\"udp:127.0.0.1:$GW_PORT\", \"tcp:127.0.0.1:$GW_PORT\"]" \
            'sip.local_domains=["example.com"]' \
            'sip.routes=[]' \
            "cpim.listen=\"127.0.0.1:$http\"" \
            "store.path=\"$dir/store\"" \
            'presence.default_policy="allow"' \
            'presence.notify_min_interval_ms=0' \
            "$@" >"$cfg"
        : >"$GW_LOG"
        NO_COLOR=1 RUST_LOG=${RUST_LOG:-warn} "$BIN" run --config "$cfg" >"$GW_LOG" 2>&1 &
        GW_PID=$!
        for ((i = 0; i < 200; i++)); do
            if grep -q "^SIP listening: udp:127.0.0.1:$GW_PORT\$" "$GW_LOG" &&
                grep -q "^SIP listening: tcp:127.0.0.1:$GW_PORT\$" "$GW_LOG" &&
                { [[ -z "$wait_http" ]] || grep -q "^CPIM HTTP listening: 127.0.0.1:$http\$" "$GW_LOG"; }; then
                GW_HTTP=$http
                log "== gateway pid $GW_PID listening on udp/tcp 127.0.0.1:$GW_PORT${wait_http:+, http 127.0.0.1:$http}"
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

# toml_settings SECTION.KEY=VALUE...: prints a TOML config made of these
# settings, grouped into [SECTION] tables in order of first appearance; a
# later setting of the same key replaces the earlier one. VALUE is a TOML
# value as written in gateway.toml (strings quoted), e.g.
#   presence.min_expires=1  'sip.cpim_domains=["xmpp.example.org"]'
#   'sip.routes=[{ domain = "sip.example.net", next_hop = "udp:127.0.0.1:5070" }]'
#   sip.transport.idle_timeout_s=30        (-> [sip.transport])
toml_settings() {
    local kv k s found
    local -a order=() sections=()
    local -A val=()
    for kv in "$@"; do
        k=${kv%%=*}
        k=${k//[[:space:]]/}
        [[ "$k" == *.* && "$kv" == *=* ]] || {
            echo "error: setting '$kv' is not SECTION.KEY=VALUE" >&2
            return 2
        }
        [[ -v "val[$k]" ]] || order+=("$k")
        s=${kv#*=}
        val[$k]=${s#"${s%%[![:space:]]*}"}
    done
    for k in "${order[@]}"; do
        found=""
        for s in "${sections[@]}"; do [[ "$s" == "${k%.*}" ]] && found=1; done
        [[ -n "$found" ]] || sections+=("${k%.*}")
    done
    for s in "${sections[@]}"; do
        printf '[%s]\n' "$s"
        for k in "${order[@]}"; do
            [[ "${k%.*}" == "$s" ]] && printf '%s = %s\n' "${k##*.}" "${val[$k]}"
        done
    done
    return 0
}

# ===========================================================================
# Multi-party cases: tests/sipp/cases/*.sh, run by run-case.sh (which sets
# WORK, TRANSPORT and SIPP_T, sources this file and the case, then calls
# case_finish). Everything below fails the case through `fail` (exit 1);
# run-case.sh's EXIT trap stops whatever is still running.
# ===========================================================================

TRANSPORT=${TRANSPORT:-udp}     # udp | tcp: the SIPp side of every SIP leg
SIPP_T=${SIPP_T:-u1}            # SIPp -t value for TRANSPORT
SIPP_TIMEOUT=${SIPP_TIMEOUT:-30} # seconds: SIPp's own -timeout per instance
GW_N=0                          # gateways started by start_gateway_with
declare -gA SIPP_PID=()          # label -> pid of a background SIPp (its timeout(1))
declare -gA SIPP_PORT=()         # label -> local port of that SIPp
ADAPTER_PID=""
ADAPTER_PORT=""
ADAPTER_URL=""
ADAPTER_LOG=""
HTTP_CODE=""
HTTP_BODY=""

# _now_us: microseconds since the epoch (bash 5 EPOCHREALTIME).
_now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }

# fail MESSAGE: reports and ends the case (exit 1).
fail() {
    log "FAIL: $*"
    exit 1
}

# step MESSAGE: progress line in the case log, with the seconds since the
# case started.
CASE_T0=${EPOCHREALTIME/[.,]/}
step() {
    local t=$((${EPOCHREALTIME/[.,]/} - CASE_T0))
    log "-- [$((t / 1000000)).$(printf '%02d' $((t % 1000000 / 10000)))s] $*"
}

# start_gateway_with [SECTION.KEY=VALUE ...]: starts a gateway like
# start_gateway, with these settings added to (or replacing) the base config,
# in a fresh directory $WORK/gwN (config, log, empty store); also waits for
# the CPIM HTTP listener and sets GW_HTTP. Fails the case if it cannot start.
start_gateway_with() {
    GW_N=$((GW_N + 1))
    local dir="$WORK/gw$GW_N"
    mkdir -p "$dir"
    [[ -z "$GW_PID" ]] || fail "start_gateway_with: a gateway (pid $GW_PID) is already running"
    _gw_start "$dir" wait "$@" || fail "the gateway did not start (config $dir/gateway.toml)"
}

# scenario_path NAME: sets SCENARIO to NAME (a path), or cases/NAME(.xml),
# or NAME(.xml) in tests/sipp; fails the case if there is none.
scenario_path() {
    local n=$1 d
    SCENARIO=""
    if [[ -f "$n" ]]; then
        SCENARIO=$n
        return 0
    fi
    for d in "$SIPP_DIR/cases" "$SIPP_DIR"; do
        if [[ -f "$d/${n%.xml}.xml" ]]; then
            SCENARIO="$d/${n%.xml}.xml"
            return 0
        fi
    done
    fail "no scenario $n (looked in $SIPP_DIR/cases and $SIPP_DIR)"
}

# _sipp_launch LABEL ROLE SCENARIO [SIPP ARGS...]: starts one SIPp in the
# background (ROLE uac: towards the gateway; uas:PORT: listening on PORT).
# Files: $WORK/LABEL.{screen,errors,msg}.log and $WORK/LABEL.log (<log>
# actions). Keywords always set: [gw] (gateway host:port), [gw_http].
_sipp_launch() {
    local label=$1 role=$2 sf lport
    scenario_path "$3"
    sf=$SCENARIO
    shift 3
    [[ -z "${SIPP_PID[$label]:-}" ]] || fail "SIPp label $label already in use"
    local -a args=(-sf "$sf" -t "$SIPP_T" -i 127.0.0.1 -m 1
        -timeout "${SIPP_TIMEOUT}s" -timeout_error -nostdin
        -trace_err -error_file "$WORK/$label.errors.log"
        -trace_msg -message_file "$WORK/$label.msg.log"
        -trace_logs -log_file "$WORK/$label.log"
        -key gw "127.0.0.1:$GW_PORT" -key gw_http "127.0.0.1:$GW_HTTP")
    case "$role" in
        uac)
            lport=$(free_port)
            args=("127.0.0.1:$GW_PORT" "${args[@]}" -p "$lport")
            ;;
        uas:*)
            lport=${role#uas:}
            args+=(-p "$lport")
            ;;
        *) fail "_sipp_launch: bad role $role" ;;
    esac
    : >"$WORK/$label.log"
    # SIPp's -timeout bounds it; timeout(1) is the backstop.
    (cd "$WORK" && exec timeout -k 5 $((SIPP_TIMEOUT + 20)) sipp "${args[@]}" "$@" \
        >"$WORK/$label.screen.log" 2>&1) &
    SIPP_PID[$label]=$!
    SIPP_PORT[$label]=$lport
    step "sipp $label ($(basename "$sf"), $TRANSPORT, port $lport) started"
}

# sipp_start LABEL SCENARIO [SIPP ARGS...]: a SIPp UAC towards the gateway,
# in the background, one call (-m 1). Extra args typically -key NAME VALUE
# ([NAME] in the scenario), -set VAR VALUE, -inf FILE.
sipp_start() {
    local label=$1
    shift
    _sipp_launch "$label" uac "$@"
}

# sipp_start_uas LABEL PORT SCENARIO [SIPP ARGS...]: a SIPp UAS listening
# on 127.0.0.1:PORT ($TRANSPORT), in the background, one call.
sipp_start_uas() {
    local label=$1 port=$2
    shift 2
    _sipp_launch "$label" "uas:$port" "$@"
}

# sipp_port LABEL: the local port of SIPp LABEL (started in this case).
sipp_port() { echo "${SIPP_PORT[$1]:-}"; }

# sipp_run LABEL SCENARIO [SIPP ARGS...]: sipp_start, then sipp_wait.
sipp_run() {
    sipp_start "$@"
    sipp_wait "$1"
}

# sipp_report LABEL: the SIPp error log (or screen) of LABEL, indented.
sipp_report() {
    local label=$1
    grep -E 'Successful call|Failed call' "$WORK/$label.screen.log" 2>/dev/null | indent || true
    if [[ -s "$WORK/$label.errors.log" ]]; then
        log "  sipp $label errors (first 40 lines of $WORK/$label.errors.log):"
        head -n 40 "$WORK/$label.errors.log" | indent
    else
        log "  sipp $label output (last 20 lines):"
        tail -n 20 "$WORK/$label.screen.log" 2>/dev/null | indent || true
    fi
}

# sipp_reason LABEL: one line saying why SIPp LABEL failed (its first error
# event, without the timestamp and Call-ID), or its exit note.
sipp_reason() {
    local r
    r=$(grep -m1 -E '^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][[:space:]]' "$WORK/$1.errors.log" 2>/dev/null |
        sed -E "s/^[^:]*:[^:]*:[^:]*: //; s/for Call-Id '[^']*': //; s/\r\$//" | cut -c1-200)
    if [[ -z "$r" ]]; then
        r=$(grep -m1 -iE 'timeout|error|exit' "$WORK/$1.screen.log" 2>/dev/null | cut -c1-200)
    fi
    echo "${r:-see $WORK/$1.screen.log}"
}

# sipp_wait LABEL...: waits for background SIPps (each bounded by its
# timeouts); fails the case unless each exited 0 (its call succeeded).
sipp_wait() {
    local label pid rc
    for label in "$@"; do
        pid=${SIPP_PID[$label]:-}
        [[ -n "$pid" ]] || fail "sipp_wait: no SIPp $label"
        rc=0
        wait "$pid" || rc=$?
        unset "SIPP_PID[$label]"
        if ((rc != 0)); then
            log "sipp $label exited $rc"
            sipp_report "$label"
            fail "sipp $label: call failed: $(sipp_reason "$label")"
        fi
        step "sipp $label passed"
    done
}

# sipp_wait_log LABEL REGEX [SECS]: waits (default 15 s) until the <log>
# output of SIPp LABEL has a line matching REGEX (grep -E); fails the case
# if it does not, or if that SIPp ended first.
sipp_wait_log() {
    local label=$1 re=$2 secs=${3:-15} pid end
    pid=${SIPP_PID[$label]:-}
    end=$(($(_now_us) + secs * 1000000))
    while (($(_now_us) < end)); do
        grep -qE "$re" "$WORK/$label.log" 2>/dev/null && return 0
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            grep -qE "$re" "$WORK/$label.log" 2>/dev/null && return 0
            sipp_wait "$label"
            fail "sipp $label ended before logging /$re/"
        fi
        sleep 0.05
    done
    sipp_report "$label"
    fail "sipp $label did not log /$re/ within $secs s"
}

# sipp_log_value LABEL NAME: prints VALUE of the last "NAME=VALUE" line
# SIPp LABEL logged (<log message="NAME=[$var]"/>).
sipp_log_value() {
    sed -n "s/^$2=//p" "$WORK/$1.log" | tail -n 1
}

# sipp_body LABEL sent|received START [N]: writes to stdout, byte for byte,
# the body of the Nth (default 1st) message SIPp LABEL sent or received whose
# first line starts with START (e.g. "NOTIFY ", "SIP/2.0 200"), from its
# -trace_msg log. Fails the case if there is no such message.
sipp_body() {
    python3 - "$WORK/$1.msg.log" "$2" "$3" "${4:-1}" <<'PY' || fail "sipp $1: no $2 message starting with '$3' (#${4:-1})"
import re, sys
path, direction, start, n = sys.argv[1], sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
data = open(path, "rb").read()
blocks = re.split(rb"\n-{20,} [^\n]*\n", b"\n" + data)
found = 0
for b in blocks:
    head, _, msg = b.partition(b"\n")
    if direction.encode() not in head.split(b"(")[0].split(b"[")[0]:
        continue
    msg = msg.lstrip(b"\r\n")
    if not msg.startswith(start):
        continue
    found += 1
    if found == n:
        hdrs, _, rest = msg.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)", hdrs)
        length = int(m.group(1)) if m else len(rest)
        sys.stdout.buffer.write(rest[:length])
        sys.exit(0)
sys.exit(1)
PY
}

# wait_listening udp|tcp PORT [SECS]: waits (default 10 s) until something
# listens on 127.0.0.1:PORT (a bound UDP socket, a TCP listener), e.g. a SIPp
# UAS the gateway is about to send to.
wait_listening() {
    local i
    for ((i = 0; i < ${3:-10} * 20; i++)); do
        python3 - "$1" "$2" <<'PY' && return 0
import sys
proto, port = sys.argv[1], int(sys.argv[2])
for line in open("/proc/net/" + proto).read().splitlines()[1:]:
    f = line.split()
    local, state = f[1], f[3]
    if int(local.split(":")[1], 16) == port and (proto == "udp" or state == "0A"):
        sys.exit(0)
sys.exit(1)
PY
        sleep 0.05
    done
    fail "nothing listens on $1 127.0.0.1:$2 after ${3:-10} s"
}

# http_post PATH JSON / http_get PATH: calls the gateway's HTTP API; sets
# HTTP_CODE and HTTP_BODY (bounded by curl -m, default 40 s: a CPIM
# subscribe waits for the SIP final response, Timer F = 32 s).
http_post() {
    _http -X POST -H 'Content-Type: application/json' --data-binary "$2" "http://127.0.0.1:$GW_HTTP$1"
    step "POST $1 $2 -> $HTTP_CODE $HTTP_BODY"
}
http_get() {
    _http "http://127.0.0.1:$GW_HTTP$1"
    step "GET $1 -> $HTTP_CODE $HTTP_BODY"
}
_http() {
    local out pid rc=0
    out=$(mktemp "$WORK/http.XXXXXX")
    curl -sS -m "${HTTP_TIMEOUT:-40}" -o "$out" -w '%{http_code}' "$@" >"$out.code" 2>"$out.err" &
    pid=$!
    wait "$pid" || rc=$?
    HTTP_CODE=$(cat "$out.code")
    HTTP_BODY=$(cat "$out")
    ((rc == 0)) || fail "curl $* failed (exit $rc): $(cat "$out.err")"
}

# put_policy PRESENTITY WATCHER ACTION: the owner's rule through the admin
# API (src/http/mod.rs put_policy): 200 and the rule echoed back.
put_policy() {
    _http -X PUT -H 'Content-Type: application/json' --data-binary "{\"action\":\"$3\"}" \
        "http://127.0.0.1:$GW_HTTP/admin/v1/policies/$1/$2"
    step "PUT /admin/v1/policies/$1/$2 {\"action\":\"$3\"} -> $HTTP_CODE $HTTP_BODY"
    expect_eq "PUT policy $3 for $2: status" "$HTTP_CODE" 200
    json_expect "PUT policy $3 for $2: the rule echoed" "d == {'watcher': '$2', 'action': '$3'}"
}

# put_publisher PRESENTITY PUBLISHER: grants PUBLISHER the right to PUBLISH
# for PRESENTITY through the admin API (src/http/mod.rs put_publisher): 200
# and the grant echoed back. Issue 14: a third party's PUBLISH needs this; no
# watch policy, not even "allow", is a permission to publish (RFC 3903 §6
# step 4). Both URIs as sip: AORs (the echo is the normalised AOR).
put_publisher() {
    _http -X PUT "http://127.0.0.1:$GW_HTTP/admin/v1/publishers/$1/$2"
    step "PUT /admin/v1/publishers/$1/$2 -> $HTTP_CODE $HTTP_BODY"
    expect_eq "PUT publisher grant for $2: status" "$HTTP_CODE" 200
    json_expect "PUT publisher grant for $2: the grant echoed" \
        "d == {'presentity': '$1', 'publisher': '$2'}"
}

# json_expect DESC PYEXPR [JSON]: evaluates the Python expression PYEXPR
# with d = the parsed JSON (default $HTTP_BODY) and `re` imported; fails the
# case with DESC unless it is true. E.g. json_expect "status" 'd["status"] == "success"'
json_expect() {
    local desc=$1 expr=$2 json=${3-$HTTP_BODY}
    python3 -c '
import json, re, sys
d = json.loads(sys.argv[1])
sys.exit(0 if eval("(" + sys.argv[2] + "\n)") else 1)
' "$json" "$expr" 2>"$WORK/json_expect.err" || {
        log "  json: $json"
        log "  expression: $expr"
        [[ -s "$WORK/json_expect.err" ]] && indent "$WORK/json_expect.err"
        fail "$desc"
    }
    step "ok: $desc"
}

# expect_eq DESC ACTUAL EXPECTED: string equality or fail.
expect_eq() {
    [[ "$2" == "$3" ]] || fail "$1: got '$2', want '$3'"
    step "ok: $1"
}

# expect_le DESC ACTUAL MAX: integer ACTUAL <= MAX or fail.
expect_le() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || (($2 > $3)); then
        fail "$1: got '$2', want an integer <= $3"
    fi
    step "ok: $1 ($2)"
}

# adapter_start MODE [ARGS...]: starts adapter.py (success | failure |
# indeterminate; ARGS e.g. --duration 300 --delay-ms 100) on a free port
# (or --port P); sets ADAPTER_PID, ADAPTER_PORT, ADAPTER_URL
# (http://127.0.0.1:PORT/cpim, for [cpim] adapter_url) and ADAPTER_LOG
# (one JSON line per request received; kept across restarts in one case).
adapter_start() {
    local mode=$1 i out
    shift
    [[ -z "$ADAPTER_PID" ]] || fail "adapter_start: an adapter is already running"
    ADAPTER_LOG="$WORK/adapter-requests.jsonl"
    out="$WORK/adapter.out"
    : >"$out"
    touch "$ADAPTER_LOG"
    python3 "$SIPP_DIR/adapter.py" --mode "$mode" --log "$ADAPTER_LOG" "$@" >>"$out" 2>&1 &
    ADAPTER_PID=$!
    for ((i = 0; i < 100; i++)); do
        ADAPTER_PORT=$(sed -n 's/^adapter listening: 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
        if [[ -n "$ADAPTER_PORT" ]]; then
            ADAPTER_URL="http://127.0.0.1:$ADAPTER_PORT/cpim"
            step "adapter pid $ADAPTER_PID ($mode) on $ADAPTER_URL"
            return 0
        fi
        kill -0 "$ADAPTER_PID" 2>/dev/null || break
        sleep 0.1
    done
    indent "$out"
    fail "the adapter did not start"
}

# adapter_stop: SIGTERM to the adapter, waits for it (SIGKILL after 5 s).
adapter_stop() {
    local i
    [[ -n "$ADAPTER_PID" ]] || return 0
    kill -TERM "$ADAPTER_PID" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$ADAPTER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$ADAPTER_PID" 2>/dev/null || true
    wait "$ADAPTER_PID" 2>/dev/null || true
    ADAPTER_PID=""
}

# Python prelude for adapter assertions: reqs = every recorded request (dicts
# with seq, time, method, path, json, raw); calls(op) = the JSON bodies of
# the POSTs to .../op ("subscribe", "unsubscribe", "notify").
_ADAPTER_PY='
import json, re, sys
reqs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
def calls(op):
    return [r["json"] for r in reqs if r["method"] == "POST" and r["path"].rstrip("/").endswith("/" + op)]
'

# adapter_expect DESC PYEXPR: fails the case with DESC unless PYEXPR holds
# over the adapter's recorded requests (see _ADAPTER_PY).
adapter_expect() {
    python3 -c "$_ADAPTER_PY"'
sys.exit(0 if eval("(" + sys.argv[2] + "\n)") else 1)' "$ADAPTER_LOG" "$2" 2>"$WORK/adapter_expect.err" || {
        log "  expression: $2"
        log "  adapter requests ($ADAPTER_LOG):"
        indent "$ADAPTER_LOG"
        [[ -s "$WORK/adapter_expect.err" ]] && indent "$WORK/adapter_expect.err"
        fail "$1"
    }
    step "ok: $1"
}

# adapter_wait DESC PYEXPR [SECS]: waits (default 10 s) until PYEXPR holds
# over the adapter's recorded requests; then like adapter_expect.
adapter_wait() {
    local secs=${3:-10} end
    end=$(($(_now_us) + secs * 1000000))
    while (($(_now_us) < end)); do
        python3 -c "$_ADAPTER_PY"'
sys.exit(0 if eval("(" + sys.argv[2] + "\n)") else 1)' "$ADAPTER_LOG" "$2" 2>/dev/null && {
            step "ok: $1"
            return 0
        }
        sleep 0.1
    done
    adapter_expect "$1 (after $secs s)" "$2"
}

# adapter_value PYEXPR: prints the value of PYEXPR over the recorded requests.
adapter_value() {
    python3 -c "$_ADAPTER_PY"'
print(eval("(" + sys.argv[2] + "\n)"))' "$ADAPTER_LOG" "$1"
}

# case_finish: the end of a passing case: every background SIPp must have
# been waited for, the gateway must exit 0 on SIGTERM; the adapter stops.
case_finish() {
    local label
    for label in "${!SIPP_PID[@]}"; do
        fail "sipp $label was started but never waited for"
    done
    adapter_stop
    if [[ -n "$GW_PID" ]]; then
        gateway_alive || fail "the gateway is not running at the end (crashed?); log $GW_LOG"
        stop_gateway || {
            tail -n 20 "$GW_LOG" | indent
            fail "gateway exit status $GW_RC after SIGTERM (want 0)"
        }
        step "gateway exited 0 on SIGTERM"
    fi
}

# case_cleanup: stops whatever a case left running (EXIT trap of run-case.sh).
case_cleanup() {
    local label pid alive end
    # SIPp gets SIGTERM through its timeout(1); what still runs 3 s later
    # (SIPp waiting for a call to end) gets SIGKILL, SIPp first.
    for label in "${!SIPP_PID[@]}"; do
        kill -TERM "${SIPP_PID[$label]}" 2>/dev/null || true
    done
    end=$(($(_now_us) + 3000000))
    while (($(_now_us) < end)); do
        alive=""
        for label in "${!SIPP_PID[@]}"; do
            kill -0 "${SIPP_PID[$label]}" 2>/dev/null && alive=1
        done
        [[ -n "$alive" ]] || break
        sleep 0.1
    done
    for label in "${!SIPP_PID[@]}"; do
        pid=${SIPP_PID[$label]}
        if kill -0 "$pid" 2>/dev/null; then
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        unset "SIPP_PID[$label]"
    done
    adapter_stop
    if [[ -n "$GW_PID" ]]; then
        stop_gateway >/dev/null || true
    fi
}

# Reliability scripts (tests/reliability/): stops the Python driver
# $PY_PID (TERM, then KILL after 10 s) and, should it have died without
# stopping its gateway, that gateway, by the PID it wrote into
# $WORK/gateway.pid and only if that process is still ours (its command
# line names $WORK/gateway.toml).
reap_driver_and_gateway() {
    local i pid
    if [[ -n "${PY_PID:-}" ]] && kill -0 "$PY_PID" 2>/dev/null; then
        kill -TERM "$PY_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$PY_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$PY_PID" 2>/dev/null || true
        wait "$PY_PID" 2>/dev/null || true
    fi
    if [[ -s "$WORK/gateway.pid" ]]; then
        pid=$(cat "$WORK/gateway.pid")
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$WORK/gateway.toml"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}
