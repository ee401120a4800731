#!/usr/bin/env bash
# Interop suite: real, independently written SIP clients (baresip 1.0.0 with
# its presence module, linphonec 5.1) against a real gateway process on
# 127.0.0.1, plus the CPIM test adapter. See tests/interop/README.md.
#
#   bash tests/interop/run.sh                 # every scenario
#   bash tests/interop/run.sh cpim linphone   # some scenarios (names below)
#
# Scenarios: baresip-udp baresip-tcp baresip-auth linphone cpim.
# One line per step, "PASS <name>: <SIP exchange checked>" or
# "FAIL <name>: <why>" (with a few indented context lines), then the line
# "N passed, M failed"; exit status non-zero if M > 0. Logs (client SIP
# traces, gateway logs, adapter requests) stay in the printed directory
# when something failed.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 2
BIN=${GATEWAY_BIN:-target/release/sip-cpim-gateway}
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
ADAPTER="$ROOT/tests/sipp/adapter.py"

STEP_WAIT=${STEP_WAIT:-6}      # seconds a client gets to show a change
REFRESH_WAIT=${REFRESH_WAIT:-30} # seconds to wait for a subscription refresh
MAX_EXPIRES=20                 # gateway [presence] max_expires: refreshes within the test

# --- prerequisites ----------------------------------------------------------
if [[ ! -x "$BIN" ]]; then
    echo "error: gateway binary $BIN is missing; build it with 'cargo build --release --locked' (or set GATEWAY_BIN)" >&2
    echo "0 passed, 1 failed"
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
command -v baresip >/dev/null || (apt-get update && apt-get install -y baresip)
command -v linphonec >/dev/null || (apt-get update && apt-get install -y linphone-cli)
for c in baresip linphonec python3 curl timeout md5sum; do
    command -v "$c" >/dev/null || {
        echo "error: $c not found" >&2
        echo "0 passed, 1 failed"
        exit 2
    }
done
BARESIP_MODULES=${BARESIP_MODULES:-}
for d in /usr/lib/baresip/modules /usr/lib/x86_64-linux-gnu/baresip/modules /usr/local/lib/baresip/modules; do
    [[ -z "$BARESIP_MODULES" && -f "$d/presence.so" ]] && BARESIP_MODULES=$d
done
[[ -n "$BARESIP_MODULES" ]] || {
    echo "error: baresip's presence.so module not found" >&2
    echo "0 passed, 1 failed"
    exit 2
}

echo "== clients: $(baresip -h 2>&1 | head -n1 | sed 's/ Copyright.*//') (deb $(dpkg-query -W -f='${Version}' baresip-core 2>/dev/null || echo '?'));" \
    "linphonec $(linphonec -v 2>&1 | sed -n 's/^version: //p' | head -n1) (deb $(dpkg-query -W -f='${Version}' linphone-cli 2>/dev/null || echo '?'))"
echo "== gateway: $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/interop.XXXXXX")
passed=0
failed=0

# --- processes: every one started in the background, stopped by PID --------
declare -a PIDS=()
track() { PIDS+=("$1"); }

# stop_pid PID [SECS]: SIGTERM, waits up to SECS (default 10), then SIGKILL.
stop_pid() {
    local pid=$1 secs=${2:-10} i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && stop_pid "$pid" 5
    done
    if ((failed == 0 && rc == 0)); then
        rm -rf "$WORK"
    else
        echo "logs kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- reporting ----------------------------------------------------------------
pass() {
    echo "PASS $1: $2"
    passed=$((passed + 1))
}
# fail NAME WHY [CONTEXT-FILE]: also prints up to 30 lines of CONTEXT-FILE.
fail() {
    echo "FAIL $1: $2"
    failed=$((failed + 1))
    if [[ -n "${3:-}" && -s "$3" ]]; then
        head -n 30 "$3" | sed 's/^/  | /'
    fi
}

# --- utilities ----------------------------------------------------------------
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# free_port: a port free for UDP and TCP on 127.0.0.1, and so is port+1
# (baresip binds its TLS transport on sip_listen's port + 1).
free_port() {
    python3 - <<'PY'
import socket, sys
def free(p):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
        finally:
            s.close()
    return True
for _ in range(100):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    p = t.getsockname()[1]
    t.close()
    if p < 65000 and free(p) and free(p + 1):
        print(p)
        sys.exit(0)
sys.exit("no free port")
PY
}

# wait_until SECS CMD...: runs CMD every 0.2 s until it succeeds (0) or SECS pass (1).
wait_until() {
    local secs=$1 end
    shift
    end=$(($(now_ms) + secs * 1000))
    while (($(now_ms) < end)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    "$@" >/dev/null 2>&1
}

# trace LOG ME expr|value|show ARG: siptrace.py over a client's SIP log (ME:
# the client's listening address; the gateway's is the peer).
trace() { python3 "$HERE/siptrace.py" --me "$2" --peer "127.0.0.1:$GW_PORT" "$1" "${@:3}"; }

# --- the gateway --------------------------------------------------------------
GW_PID=""
GW_PORT=""
GW_HTTP=""
GW_DIR=""

# gw_start DIR [VAR=VALUE ...]: an empty config file, every setting from
# GATEWAY__* environment overrides; waits for the SIP and HTTP listeners.
gw_start() {
    local dir=$1 i
    shift
    GW_DIR=$dir
    mkdir -p "$dir/store"
    : >"$dir/gateway.toml"
    GW_PORT=$(free_port)
    GW_HTTP=$(free_port)
    : >"$dir/gateway.log"
    env NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} \
        GATEWAY__SIP__LISTEN="[\"udp:127.0.0.1:$GW_PORT\", \"tcp:127.0.0.1:$GW_PORT\"]" \
        GATEWAY__SIP__LOCAL_DOMAINS='["example.com"]' \
        GATEWAY__SIP__CPIM_DOMAINS='["xmpp.example.org"]' \
        GATEWAY__SIP__ROUTES='[]' \
        GATEWAY__CPIM__LISTEN="127.0.0.1:$GW_HTTP" \
        GATEWAY__STORE__PATH="$dir/store" \
        GATEWAY__PRESENCE__DEFAULT_POLICY=allow \
        GATEWAY__PRESENCE__NOTIFY_MIN_INTERVAL_MS=0 \
        GATEWAY__PRESENCE__MIN_EXPIRES=5 \
        GATEWAY__PRESENCE__DEFAULT_EXPIRES=$MAX_EXPIRES \
        GATEWAY__PRESENCE__MAX_EXPIRES=$MAX_EXPIRES \
        "$@" "$BIN" run --config "$dir/gateway.toml" >>"$dir/gateway.log" 2>&1 </dev/null &
    GW_PID=$!
    track "$GW_PID"
    for ((i = 0; i < 200; i++)); do
        if grep -q "^SIP listening: tcp:127.0.0.1:$GW_PORT\$" "$dir/gateway.log" &&
            grep -q "^CPIM HTTP listening: 127.0.0.1:$GW_HTTP\$" "$dir/gateway.log"; then
            return 0
        fi
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

gw_stop() {
    stop_pid "$GW_PID" 10
    GW_PID=""
}

# api PATH: GET on the gateway's HTTP API (body on stdout).
api() { curl -sS -m 5 "http://127.0.0.1:$GW_HTTP$1"; }

# subs_expr PYEXPR: true if PYEXPR holds over `s` = the admin view's
# subscription list (GET /admin/v1/subscriptions).
subs_expr() {
    api /admin/v1/subscriptions >"$WORK/subs.json" 2>/dev/null || return 1
    python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["subscriptions"]
sys.exit(0 if eval(sys.argv[2]) else 1)' "$WORK/subs.json" "$1"
}

# --- baresip ------------------------------------------------------------------
declare -A BS_PID=() BS_PORT=() BS_CONS=() BS_DIR=()

# bs_start NAME DIR TRANSPORT EXTRA_ACCOUNT_PARAMS CONTACT_LINE...: a baresip
# for NAME@example.com with the cons (UDP command) and presence modules, the
# gateway as outbound proxy, SIP trace (-s) into DIR/out.log.
bs_start() {
    local name=$1 dir=$2 tr=$3 extra=$4 port cons
    shift 4
    mkdir -p "$dir"
    port=$(free_port)
    cons=$(free_port)
    cat >"$dir/config" <<EOF
poll_method		epoll
sip_listen		127.0.0.1:$port
dns_server		127.0.0.1:9
module_path		$BARESIP_MODULES
module			cons.so
cons_listen		127.0.0.1:$cons
module_tmp		account.so
module_app		contact.so
module_app		presence.so
EOF
    # regint/pubint below the gateway's max_expires: the registration and the
    # publication are refreshed before the gateway expires them.
    printf '<sip:%s@example.com;transport=%s>;outbound="sip:127.0.0.1:%s;transport=%s";regint=%s;pubint=10%s\n' \
        "$name" "$tr" "$GW_PORT" "$tr" "$MAX_EXPIRES" "$extra" >"$dir/accounts"
    printf '%s\n' "$@" >"$dir/contacts"
    # -t: baresip's own backstop (quits after 240 s).
    baresip -f "$dir" -s -t 240 </dev/null >"$dir/out.log" 2>&1 &
    BS_PID[$name]=$!
    track "${BS_PID[$name]}"
    BS_PORT[$name]=$port
    BS_CONS[$name]=$cons
    BS_DIR[$name]=$dir
}

# bs NAME COMMAND: a baresip command through cons (its answer on stdout).
bs() { python3 "$HERE/bctl.py" "${BS_CONS[$1]}" "$2"; }

# bs_shows NAME STATUS CONTACT: NAME's `contacts` listing shows CONTACT with
# STATUS (Online, Offline, Busy, Unknown).
bs_shows() { bs "$1" contacts | grep -qE "^>?[[:space:]]*$2[[:space:]]+$3 <"; }

# bs_status NAME CONTACT: the status NAME's listing shows for CONTACT.
bs_status() {
    bs "$1" contacts | sed -nE "s/^>?[[:space:]]*([A-Za-z]+)[[:space:]]+$2 <.*/\1/p" | head -n1
}

# bt NAME expr|value|show ARG: assertions over NAME's SIP trace.
bt() { trace "${BS_DIR[$1]}/out.log" "127.0.0.1:${BS_PORT[$1]}" "${@:2}"; }

# bt_show NAME SUBSTRING FILE: NAME's messages containing SUBSTRING into FILE.
bt_show() { bt "$1" show "$2" >"$3" 2>&1; }

bs_stop() {
    stop_pid "${BS_PID[$1]}" 10
}

# Assertion snippets (Python, for siptrace.py expr).
# shellcheck disable=SC2016
PY_INITIAL_SUB='[final(m) for m in reqs("SUBSCRIBE") if m.to_tag is None and m.expires != 0]'
PY_REFRESH='[final(m) for m in reqs("SUBSCRIBE") if m.to_tag and m.expires not in (0, None)]'
PY_UNSUB='[final(m) for m in reqs("SUBSCRIBE") if m.to_tag and m.expires == 0]'

# --- scenario: two baresips watching each other through the presence agent --
# scenario_baresip LABEL TRANSPORT AUTH(yes|no)
scenario_baresip() {
    local L=$1 tr=$2 auth=$3 dir="$WORK/$1" ok extra_a="" extra_b="" s
    local -a gwenv=()
    mkdir -p "$dir"
    if [[ "$auth" == yes ]]; then
        {
            for u in alice bob; do
                printf '%s:example.com:%s\n' "$u" "$(printf '%s:example.com:%s-secret' "$u" "$u" | md5sum | cut -d' ' -f1)"
            done
        } >"$dir/credentials"
        gwenv=(GATEWAY__AUTH__ENABLED=true GATEWAY__AUTH__REALM=example.com
            GATEWAY__AUTH__CREDENTIALS_FILE="$dir/credentials")
        extra_a=";auth_pass=alice-secret"
        extra_b=";auth_pass=bob-secret"
    fi
    if ! gw_start "$dir/gw" "${gwenv[@]}"; then
        fail "$L gateway" "the gateway did not start" "$dir/gw/gateway.log"
        return
    fi
    bs_start bob "$dir/bob" "$tr" "$extra_b"
    # Bob registers first, so alice's first NOTIFY already has him.
    wait_until 10 bt bob expr '200 in [final(m) for m in reqs("REGISTER")]'
    bs_start alice "$dir/alice" "$tr" "$extra_a" '"Bob" <sip:bob@example.com>;presence=p2p'

    # 1. REGISTER
    local want='200 in [final(m) for m in reqs("REGISTER") if m.expires != 0]'
    [[ "$auth" == yes ]] && want='[final(m) for m in reqs("REGISTER")][:2] == [401, 200] and all(m.hdr("authorization") for m in reqs("REGISTER")[1:])'
    if wait_until 10 bt alice expr "$want" && bt bob expr "$want" &&
        api /admin/v1/presentities/sip:bob@example.com | grep -q '"registrations":\[{'; then
        if [[ "$auth" == yes ]]; then
            pass "$L register" "alice and bob REGISTER over ${tr^^}: 401 with a digest challenge, then 200 with Authorization; the admin view lists bob's binding"
        else
            pass "$L register" "alice and bob REGISTER over ${tr^^} answered 200; the admin view lists bob's binding"
        fi
    else
        bt_show alice REGISTER "$dir/ctx"
        local why=""
        if [[ "$auth" == yes ]] && bt alice expr 'any(m.status == 401 and "algorithm=SHA-256" in (m.hdr("www-authenticate") or "") for m in rcvd) and not any(m.hdr("authorization") for m in reqs("REGISTER"))'; then
            why=" (the 401's first WWW-Authenticate is algorithm=SHA-256; baresip's libre answers only MD5 and gives up at the first challenge, resending without Authorization instead of using the MD5 one, RFC 8760 §2.4)"
        fi
        fail "$L register" "REGISTER over ${tr^^} not answered as expected ($([[ $auth == yes ]] && echo '401 then 200' || echo 200)); alice's REGISTERs got $(bt alice value '[final(m) for m in reqs("REGISTER")]')$why" "$dir/ctx"
        local st
        for st in publish subscribe online offline online-again refresh bob-quits unsubscribe; do
            fail "$L $st" "not run: the clients could not register (step $L register)"
        done
        bs_stop alice
        bs_stop bob
        gw_stop
        return
    fi

    # 2. PUBLISH (baresip's presence module publishes when pubint > 0)
    bs bob presence_online >/dev/null
    if wait_until "$STEP_WAIT" bt bob expr '200 in [final(m) for m in reqs("PUBLISH") if "<basic>open</basic>" in m.body]'; then
        pass "$L publish" "bob's PUBLISH (application/pidf+xml, basic open) answered 200 with SIP-ETag"
    else
        bt_show bob PUBLISH "$dir/ctx"
        fail "$L publish" "no 200 to bob's PUBLISH of basic open; finals: $(bt bob value '[final(m) for m in reqs("PUBLISH")]')" "$dir/ctx"
    fi

    # 3. SUBSCRIBE alice -> bob, immediate NOTIFY
    if wait_until 10 bt alice expr "200 in $PY_INITIAL_SUB and any(m.substate and m.substate.startswith('active') and 200 in answers(m) for m in reqs('NOTIFY', out=False))" &&
        wait_until 5 subs_expr 'any(x["watcher"].endswith("alice@example.com") and x["target"].endswith("bob@example.com") and x["state"] == "active" for x in s)'; then
        pass "$L subscribe" "alice's SUBSCRIBE to sip:bob@example.com answered 200, NOTIFY active answered 200 by alice; admin view lists the subscription active"
    else
        bt_show alice SUBSCRIBE "$dir/ctx"
        fail "$L subscribe" "SUBSCRIBE finals $(bt alice value "$PY_INITIAL_SUB"), admin: $(api /admin/v1/subscriptions | head -c 300)" "$dir/ctx"
    fi

    # 4. bob online as alice's baresip shows it
    if wait_until "$STEP_WAIT" bs_shows alice Online Bob; then
        pass "$L online" "alice's baresip lists Bob Online (from the NOTIFY's PIDF)"
    else
        fail "$L online" "alice's contact list shows Bob '$(bs_status alice Bob)', want Online"
    fi

    # 5. bob goes offline (PUBLISH closed) -> alice shows Offline
    local n_before
    n_before=$(bt alice value 'len(reqs("NOTIFY", out=False))')
    bs bob presence_offline >/dev/null
    ok=""
    if wait_until "$STEP_WAIT" bt bob expr '200 in [final(m) for m in reqs("PUBLISH") if "<basic>closed</basic>" in m.body]' &&
        wait_until "$STEP_WAIT" bt alice expr "len(reqs('NOTIFY', out=False)) > $n_before"; then
        wait_until "$STEP_WAIT" bs_shows alice Offline Bob && ok=1
    fi
    if [[ -n "$ok" ]]; then
        pass "$L offline" "bob's PUBLISH basic closed answered 200; alice gets a NOTIFY and lists Bob Offline"
    else
        bt alice value '[m for m in reqs("NOTIFY", out=False)][-1].body' >"$dir/ctx" 2>&1
        fail "$L offline" "after bob's PUBLISH of basic closed, alice lists Bob '$(bs_status alice Bob)', want Offline; the last NOTIFY alice got:" "$dir/ctx"
    fi
    local offline_ok=$ok

    # 6. back online
    bs bob presence_online >/dev/null
    if [[ -z "$offline_ok" ]]; then
        fail "$L online-again" "not checked: alice never listed Bob Offline (previous step), so Online again proves nothing"
    elif wait_until "$STEP_WAIT" bs_shows alice Online Bob; then
        pass "$L online-again" "bob's PUBLISH basic open answered 200; alice lists Bob Online again"
    else
        fail "$L online-again" "alice lists Bob '$(bs_status alice Bob)', want Online"
    fi

    # 7. refresh (granted Expires = max_expires; libre refreshes before expiry)
    if wait_until "$REFRESH_WAIT" bt alice expr "len($PY_REFRESH) > 0 and None not in $PY_REFRESH"; then
        s=$(bt alice value "$PY_REFRESH")
        if bt alice expr "all(c == 200 for c in $PY_REFRESH)" && wait_until 3 subs_expr 'any(x["watcher"].endswith("alice@example.com") for x in s)'; then
            pass "$L refresh" "alice's in-dialog SUBSCRIBE refresh(es) answered $s (granted Expires $MAX_EXPIRES); the subscription stays listed"
        else
            bt_show alice SUBSCRIBE "$dir/ctx"
            fail "$L refresh" "alice's refreshes got $s, want 200" "$dir/ctx"
        fi
    else
        fail "$L refresh" "no answered in-dialog SUBSCRIBE refresh from alice within ${REFRESH_WAIT} s"
    fi

    # 8. bob quits: un-PUBLISH / un-REGISTER, alice sees him offline
    bs_stop bob
    if bt bob expr '200 in [final(m) for m in reqs("REGISTER") if "expires=0" in (m.hdr("contact") or "") or m.expires == 0]' &&
        wait_until "$STEP_WAIT" bs_shows alice Offline Bob; then
        pass "$L bob-quits" "bob quits: his REGISTER with expires=0 answered 200; alice's NOTIFY leaves Bob listed Offline"
    else
        bt_show bob 'expires=0' "$dir/ctx"
        fail "$L bob-quits" "after bob quit alice lists Bob '$(bs_status alice Bob)' (want Offline); bob's un-REGISTER finals: $(bt bob value '[final(m) for m in reqs("REGISTER") if m.expires == 0 or "expires=0" in (m.hdr("contact") or "")]')" "$dir/ctx"
    fi

    # 9. alice quits: un-SUBSCRIBE answered 200, subscription gone
    bs_stop alice
    if bt alice expr "$PY_UNSUB == [200]" &&
        bt alice expr "any((m.substate or '').startswith('terminated') for m in reqs('NOTIFY', out=False))" &&
        wait_until 5 subs_expr 'not any(x["watcher"].endswith("alice@example.com") for x in s)'; then
        pass "$L unsubscribe" "alice quits: SUBSCRIBE Expires 0 in the dialog answered 200, final NOTIFY terminated; admin view lists no subscription of alice"
    else
        bt_show alice 'expires: 0' "$dir/ctx"
        fail "$L unsubscribe" "un-SUBSCRIBE finals $(bt alice value "$PY_UNSUB") (want [200]); admin: $(api /admin/v1/subscriptions | head -c 300)" "$dir/ctx"
    fi
    gw_stop
}

# --- scenario: linphonec <-> baresip ------------------------------------------
LP_PID=""
LP_DIR=""
LP_FIFO_OPEN=""

# lp_start DIR: linphonec for carol@example.com (publish on), commands from a
# FIFO held open on fd 7 (EOF on stdin makes linphonec spin), belle-sip log
# at -d 6 in DIR/linphone.log, its console output in DIR/out.log.
lp_start() {
    local dir=$1 port rtp
    LP_DIR=$dir
    mkdir -p "$dir/home/.local/share/linphone" "$dir/home/.config/linphone"
    port=$(free_port)
    rtp=$(free_port)
    cat >"$dir/linphonerc" <<EOF
[sip]
sip_port=$port
sip_tcp_port=0
sip_tls_port=0
bind_address=127.0.0.1
ipv6=0
default_proxy=0
[rtp]
audio_rtp_port=$rtp
video_rtp_port=$((rtp + 1))
[video]
enabled=0
capture=0
display=0
[proxy_0]
reg_proxy=<sip:127.0.0.1:$GW_PORT;transport=udp>
reg_route=<sip:127.0.0.1:$GW_PORT;transport=udp;lr>
reg_identity=sip:carol@example.com
reg_expires=$MAX_EXPIRES
reg_sendregister=1
publish=1
publish_expires=$MAX_EXPIRES
EOF
    mkfifo "$dir/cmd"
    HOME="$dir/home" timeout -k 5 240 linphonec -c "$dir/linphonerc" -d 6 -l "$dir/linphone.log" \
        <"$dir/cmd" >"$dir/out.log" 2>&1 &
    LP_PID=$!
    track "$LP_PID"
    exec 7>"$dir/cmd"
    LP_FIFO_OPEN=1
}
lp() { [[ -n "$LP_FIFO_OPEN" ]] && printf '%s\n' "$1" >&7; }
lt() { trace "$LP_DIR/linphone.log" me "$@"; }
lp_stop() {
    local i
    lp quit
    for ((i = 0; i < 100; i++)); do
        kill -0 "$LP_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$LP_FIFO_OPEN" ]] && exec 7>&-
    LP_FIFO_OPEN=""
    stop_pid "$LP_PID" 3
}
# lp_saw STATUS: linphonec printed 'Friend "alice" <sip:alice@example.com> is STATUS' (count > $2).
lp_count() { grep -c "^.*Friend \"alice\" <sip:alice@example.com> is $1\$" "$LP_DIR/out.log" 2>/dev/null || true; }
lp_saw_more() { (($(lp_count "$1") > $2)); }
lp_last() { grep -o 'Friend "alice" <sip:alice@example.com> is .*' "$LP_DIR/out.log" | tail -n1 | sed 's/.* is //'; }

scenario_linphone() {
    local L=linphone dir="$WORK/linphone" n s
    mkdir -p "$dir"
    if ! gw_start "$dir/gw"; then
        fail "$L gateway" "the gateway did not start" "$dir/gw/gateway.log"
        return
    fi
    bs_start alice "$dir/alice" udp "" '"Carol" <sip:carol@example.com>;presence=p2p'
    wait_until 10 bt alice expr '200 in [final(m) for m in reqs("REGISTER")]'
    bs alice presence_online >/dev/null
    lp_start "$dir/carol"

    # 1. linphonec registers and publishes
    if wait_until 15 lt expr '200 in [final(m) for m in reqs("REGISTER") if m.expires != 0] and 200 in [final(m) for m in reqs("PUBLISH") if m.body]'; then
        pass "$L register" "linphonec carol: REGISTER answered 200 and PUBLISH (application/pidf+xml) answered 200"
    else
        lt show REGISTER >"$dir/ctx" 2>&1
        fail "$L register" "linphonec REGISTER/PUBLISH finals $(lt value '[(m.method, final(m)) for m in sent if m.method]')" "$dir/ctx"
    fi

    # 2. baresip alice watches carol: Online
    if wait_until 15 bs_shows alice Online Carol; then
        pass "$L watched-by-baresip" "baresip alice's SUBSCRIBE to carol answered $(bt alice value "$PY_INITIAL_SUB"); NOTIFY with linphone's published PIDF: alice lists Carol Online"
    else
        fail "$L watched-by-baresip" "alice lists Carol '$(bs_status alice Carol)', want Online; SUBSCRIBE finals $(bt alice value "$PY_INITIAL_SUB")"
    fi

    # 3. linphonec watches baresip alice (friend add): Online
    lp 'friend add alice sip:alice@example.com'
    if wait_until 10 lt expr "200 in $PY_INITIAL_SUB" && wait_until "$STEP_WAIT" lp_saw_more Online 0; then
        pass "$L watches-baresip" "linphonec 'friend add': SUBSCRIBE to sip:alice@example.com answered 200, NOTIFY answered 200; linphonec prints alice Online"
    else
        lt show SUBSCRIBE >"$dir/ctx" 2>&1
        fail "$L watches-baresip" "linphonec's SUBSCRIBE finals $(lt value "$PY_INITIAL_SUB"), last status printed '$(lp_last)' (want Online)" "$dir/ctx"
    fi

    # 4. alice goes offline: linphonec prints Offline
    n=$(lp_count Offline)
    bs alice presence_offline >/dev/null
    if wait_until "$STEP_WAIT" bt alice expr '200 in [final(m) for m in reqs("PUBLISH") if "<basic>closed</basic>" in m.body]' &&
        wait_until "$STEP_WAIT" lp_saw_more Offline "$n"; then
        pass "$L sees-offline" "baresip alice's PUBLISH basic closed answered 200; linphonec prints alice Offline"
        n=$(lp_count Online)
        bs alice presence_online >/dev/null
        if wait_until "$STEP_WAIT" lp_saw_more Online "$n"; then
            pass "$L sees-online-again" "alice's PUBLISH basic open answered 200; linphonec prints alice Online"
        else
            fail "$L sees-online-again" "linphonec's last status for alice is '$(lp_last)', want Online"
        fi
    else
        lt value '[m for m in reqs("NOTIFY", out=False)][-1].body' >"$dir/ctx" 2>&1
        fail "$L sees-offline" "after alice's PUBLISH of basic closed linphonec's last status for alice is '$(lp_last)', want Offline; the last NOTIFY linphonec got:" "$dir/ctx"
        bs alice presence_online >/dev/null
        fail "$L sees-online-again" "not checked: linphonec never printed alice Offline (previous step)"
    fi

    # 5. linphonec's refresh
    if wait_until "$REFRESH_WAIT" lt expr "len($PY_REFRESH) > 0 and None not in $PY_REFRESH"; then
        s=$(lt value "$PY_REFRESH")
        if lt expr "all(c == 200 for c in $PY_REFRESH)"; then
            pass "$L refresh" "linphonec's in-dialog SUBSCRIBE refresh(es) answered $s"
        else
            lt show SUBSCRIBE >"$dir/ctx" 2>&1
            fail "$L refresh" "linphonec's refreshes got $s, want 200" "$dir/ctx"
        fi
    else
        fail "$L refresh" "no answered in-dialog SUBSCRIBE refresh from linphonec within ${REFRESH_WAIT} s"
    fi

    # 6. linphonec quits: un-SUBSCRIBE 200, alice lists carol Offline
    lp_stop
    if lt expr "$PY_UNSUB == [200]" && wait_until "$STEP_WAIT" bs_shows alice Offline Carol &&
        wait_until 5 subs_expr 'not any(x["watcher"].endswith("carol@example.com") for x in s)'; then
        pass "$L quits" "linphonec quits: its SUBSCRIBE Expires 0 answered 200 (admin view: no subscription of carol); un-PUBLISH/un-REGISTER leave Carol listed Offline by baresip alice"
    else
        lt show 'expires: 0' >"$dir/ctx" 2>&1
        fail "$L quits" "un-SUBSCRIBE finals $(lt value "$PY_UNSUB") (want [200]); alice lists Carol '$(bs_status alice Carol)' (want Offline)" "$dir/ctx"
    fi
    bs_stop alice
    gw_stop
}

# --- scenario: a SIP watcher of a CPIM-domain presentity (seed §7.1) ---------
scenario_cpim() {
    local L=cpim dir="$WORK/cpim" ad_pid ad_port i tag s body
    mkdir -p "$dir"
    : >"$dir/adapter.jsonl"
    python3 "$ADAPTER" --mode success --duration 10 --log "$dir/adapter.jsonl" >"$dir/adapter.out" 2>&1 &
    ad_pid=$!
    track "$ad_pid"
    for ((i = 0; i < 50; i++)); do
        ad_port=$(sed -n 's/^adapter listening: 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/adapter.out")
        [[ -n "$ad_port" ]] && break
        sleep 0.1
    done
    if [[ -z "$ad_port" ]] || ! gw_start "$dir/gw" GATEWAY__CPIM__ADAPTER_URL="http://127.0.0.1:$ad_port/cpim"; then
        fail "$L gateway" "the adapter or the gateway did not start" "$dir/gw/gateway.log"
        stop_pid "$ad_pid" 5
        return
    fi
    adapter() {
        python3 -c '
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def calls(op):
    return [r["json"] for r in reqs if r["path"].rstrip("/").endswith("/" + op)]
r = eval(sys.argv[2])
if len(sys.argv) > 3:
    print(r)
else:
    sys.exit(0 if r else 1)' "$dir/adapter.jsonl" "$@"
    }
    bs_start alice "$dir/alice" udp "" '"X" <sip:x@xmpp.example.org>;presence=p2p'

    # 1. SUBSCRIBE -> adapter subscribe -> 202, NOTIFY without body
    if wait_until 10 bt alice expr "$PY_INITIAL_SUB[:1] == [202] and any(200 in answers(m) for m in reqs('NOTIFY', out=False))" &&
        adapter 'any(c["target"] == "pres:x@xmpp.example.org" and c["watcher"] == "pres:alice@example.com" for c in calls("subscribe"))' &&
        wait_until "$STEP_WAIT" bs_shows alice Unknown X; then
        pass "$L subscribe" "alice's SUBSCRIBE to sip:x@xmpp.example.org answered 202 after the adapter's subscribe (watcher pres:alice@example.com, target pres:x@xmpp.example.org); NOTIFY active without body answered 200; alice lists X Unknown"
    else
        bt_show alice SUBSCRIBE "$dir/ctx"
        fail "$L subscribe" "SUBSCRIBE finals $(bt alice value "$PY_INITIAL_SUB") (want 202 first), X listed '$(bs_status alice X)'; adapter subscribes: $(adapter 'calls("subscribe")' print)" "$dir/ctx"
    fi

    # 2. CPIM notify -> NOTIFY with the PIDF -> alice lists X Online
    body=$(python3 -c '
import json
pidf = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:x@xmpp.example.org\">"
        "<tuple id=\"x1\"><status><basic>open</basic></status></tuple></presence>\n")
print(json.dumps({"watcher": "pres:alice@example.com", "target": "pres:x@xmpp.example.org",
                  "presence": {"content_type": "application/pidf+xml", "body": pidf}}))')
    s=$(curl -sS -m 10 -H 'Content-Type: application/json' "http://127.0.0.1:$GW_HTTP/cpim/v1/notify" -d "$body" 2>&1)
    if [[ "$s" == *'"status":"success"'* ]] &&
        wait_until "$STEP_WAIT" bt alice expr "any('<tuple id=\"x1\">' in m.body and 200 in answers(m) for m in reqs('NOTIFY', out=False))" &&
        wait_until "$STEP_WAIT" bs_shows alice Online X; then
        pass "$L notify" "POST /cpim/v1/notify (PIDF basic open) -> success; alice gets the NOTIFY with that body, answers 200 and lists X Online"
    else
        fail "$L notify" "POST /cpim/v1/notify answered '$s'; alice lists X '$(bs_status alice X)' (want Online)"
    fi

    # 3. refresh in the dialog: answered 2xx, and the adapter's subscribe for
    # it names the dialog's target (not the Request-URI, which is the
    # gateway's own Contact address).
    tag=$(bt alice value "[m.to_tag for m in rcvd if m.status == 202][0]" 2>/dev/null)
    if wait_until 15 bt alice expr "len($PY_REFRESH) > 0 and None not in $PY_REFRESH"; then
        s=$(bt alice value "$PY_REFRESH")
        sleep 0.5
        if bt alice expr "$PY_REFRESH[0] in (200, 202)" &&
            adapter "len(calls('subscribe')) >= 2 and all(c['target'] == 'pres:x@xmpp.example.org' and c['transID'] == '$tag' for c in calls('subscribe')[1:])"; then
            pass "$L refresh" "alice's in-dialog SUBSCRIBE (Request-URI = the gateway's Contact) answered $s; the adapter's refresh subscribe names target pres:x@xmpp.example.org, transID = the To tag"
        else
            bt alice value "[m.start for m in reqs('SUBSCRIBE') if m.to_tag]" >"$dir/ctx" 2>&1
            adapter "calls('subscribe')" print >>"$dir/ctx" 2>&1
            fail "$L refresh" "refresh answered $s; adapter subscribes for the refresh should carry target pres:x@xmpp.example.org and transID $tag (request lines, then adapter calls):" "$dir/ctx"
        fi
    else
        bt_show alice SUBSCRIBE "$dir/ctx"
        fail "$L refresh" "no answered in-dialog SUBSCRIBE refresh from alice within 15 s" "$dir/ctx"
    fi

    # 4. X still listed Online after the refresh's NOTIFY (RFC 6665 §4.2.1.2:
    # the NOTIFY after a refresh carries the current state).
    sleep 1
    if bs_shows alice Online X; then
        pass "$L state-after-refresh" "the NOTIFY following the refresh keeps X listed Online at alice"
    else
        bt alice value "[(m.cseq, m.substate, m.hdr('content-type'), len(m.body)) for m in reqs('NOTIFY', out=False)]" >"$dir/ctx" 2>&1
        fail "$L state-after-refresh" "after the refresh alice lists X '$(bs_status alice X)', want Online (NOTIFYs: CSeq, Subscription-State, Content-Type, body length):" "$dir/ctx"
    fi

    # 5. unsubscribe: alice quits
    bs_stop alice
    if bt alice expr "$PY_UNSUB == [200]" &&
        adapter "any(c['target'] == 'pres:x@xmpp.example.org' and c['transID'] == '$tag' for c in calls('unsubscribe'))" &&
        wait_until 5 subs_expr 'not any(x["watcher"].endswith("alice@example.com") for x in s)'; then
        pass "$L unsubscribe" "alice quits: SUBSCRIBE Expires 0 in the dialog answered 200; the adapter gets unsubscribe for pres:x@xmpp.example.org with transID = the To tag; admin view lists no subscription"
    else
        bt alice value "[(m.start, final(m)) for m in reqs('SUBSCRIBE') if m.expires == 0]" >"$dir/ctx" 2>&1
        adapter "calls('unsubscribe')" print >>"$dir/ctx" 2>&1
        fail "$L unsubscribe" "un-SUBSCRIBE finals $(bt alice value "$PY_UNSUB") (want [200]), and the adapter's unsubscribe must name target pres:x@xmpp.example.org with transID $tag (un-SUBSCRIBE, then adapter calls):" "$dir/ctx"
    fi
    gw_stop
    stop_pid "$ad_pid" 5
}

# --- main -----------------------------------------------------------------------
ALL=(baresip-udp baresip-tcp baresip-auth linphone cpim)
if (($# > 0)); then SEL=("$@"); else SEL=("${ALL[@]}"); fi
for sc in "${SEL[@]}"; do
    case "$sc" in
        baresip-udp) scenario_baresip baresip-udp udp no ;;
        baresip-tcp) scenario_baresip baresip-tcp tcp no ;;
        baresip-auth) scenario_baresip baresip-auth udp yes ;;
        linphone) scenario_linphone ;;
        cpim) scenario_cpim ;;
        *)
            echo "error: unknown scenario $sc (known: ${ALL[*]})" >&2
            failed=$((failed + 1))
            ;;
    esac
done
echo "$passed passed, $failed failed"
((failed == 0))
