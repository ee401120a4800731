#!/usr/bin/env bash
# Gateway (SIP <-> CPIM) benchmark (a script, not a test; issue 6), against a
# release gateway on 127.0.0.1 with cpim_domains = ["xmpp.example.org"], a
# python3 adapter (bench-adapter.py) and a static route for sip.example.net.
#
#   tests/sipp/bench-gateway.sh          # defaults below
#   BENCH_GW_WATCHERS=1000 BENCH_GW_NOTIFIES=2000 BENCH_GW_SUBSCRIBES=5000 \
#   BENCH_GW_CONCURRENCY="16 64" tests/sipp/bench-gateway.sh
#
# (a) CPIM notify ingestion: BENCH_GW_WATCHERS (1000) SIP watchers
#     sip:w<i>@example.com subscribe to sip:carol@xmpp.example.org (each
#     SUBSCRIBE goes to the adapter's /subscribe, then 202 + NOTIFY); the
#     watchers (bench-watchers.py) answer every NOTIFY 200. Then, for each
#     concurrency in BENCH_GW_CONCURRENCY ("16 64"), BENCH_GW_NOTIFIES (2000)
#     POST /cpim/v1/notify (watcher pres:w<i % N>@example.com, target
#     pres:carol@xmpp.example.org, a PIDF body that differs every time) from
#     bench-http.py over persistent connections. Reported: notifies/s (HTTP
#     answers), the SIP NOTIFYs they caused and their rate (until the last one
#     arrived). A notify for a dialog whose previous NOTIFY is still unanswered
#     is coalesced into the next one (one NOTIFY in flight per dialog), so
#     NOTIFYs can be fewer than notifies.
# (b) CPIM subscribe → SIP: a SIPp UAS (bench-gateway-uas.xml) is the SIP side
#     of sip.example.net and answers each SUBSCRIBE 200; bench-http.py posts
#     BENCH_GW_SUBSCRIBES (5000) /cpim/v1/subscribe with distinct
#     (watcher, target) pairs per concurrency step. Reported: round trips per
#     second (HTTP request → SUBSCRIBE → 200 → durable dialog → HTTP answer)
#     and latency percentiles.
# Prints markdown tables on stdout (progress on stderr); writes nothing into
# the repository. BENCH_QUIET_WAIT=0 skips waiting for a quiet machine.
set -euo pipefail

# shellcheck source=SCRIPTDIR/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

watchers=${BENCH_GW_WATCHERS:-1000}
notifies=${BENCH_GW_NOTIFIES:-2000}
subscribes=${BENCH_GW_SUBSCRIBES:-5000}
read -r -a concs <<<"${BENCH_GW_CONCURRENCY:-16 64}"
check_rates "$watchers" "$notifies" "$subscribes" "${concs[@]}"
((watchers <= 100000 && notifies <= 200000 && subscribes <= 200000)) || {
    echo "error: at most 100000 watchers, 200000 notifies, 200000 subscribes" >&2
    exit 2
}
require_sipp
bench_setup bench-gateway

ensure_binary >&2
bench_wait_quiet >&2
machine=$(bench_machine)

python3 "$SIPP_DIR/bench-adapter.py" --port-file "$WORK/adapter.port" \
    --counts-file "$WORK/adapter.json" --duration 600 2>"$WORK/adapter.log" &
BENCH_PIDS+=("$!")
adapter_pid=$!
for ((i = 0; i < 100; i++)); do
    [[ -s "$WORK/adapter.port" ]] && break
    sleep 0.1
done
[[ -s "$WORK/adapter.port" ]] || {
    echo "error: the adapter did not start" >&2
    exit 1
}
uas_port=$(free_port)
BENCH_CPIM_DOMAINS='["xmpp.example.org"]'
BENCH_ROUTES="[{ domain = \"sip.example.net\", next_hop = \"udp:127.0.0.1:$uas_port\" }]"
BENCH_ADAPTER_URL="http://127.0.0.1:$(cat "$WORK/adapter.port")/cpim"
bench_start_gateway >&2
echo "== adapter at $BENCH_ADAPTER_URL, SIP UAS for sip.example.net at 127.0.0.1:$uas_port" >&2

# ---- (a) CPIM notify ingestion
echo "== (a) $watchers SIP watchers of sip:carol@xmpp.example.org" >&2
python3 "$SIPP_DIR/bench-watchers.py" \
    --gw "127.0.0.1:$GW_PORT" --count "$watchers" --rate 500 --outstanding 200 \
    --presentity-fmt 'sip:carol@xmpp.example.org' --watcher-fmt 'sip:w{i}@example.com' \
    --expires 600 --setup-timeout 120 --settle 1 --ready-file "$WORK/ready.json" \
    --stop-file "$WORK/stop" --hold-max 900 --hold-times-file "$WORK/notify-times" \
    --json-out "$WORK/watchers.json" 2> >(tee "$WORK/watchers.log" >&2) &
wpid=$!
BENCH_PIDS+=("$wpid")
for ((i = 0; i < 1500; i++)); do
    [[ -s "$WORK/ready.json" ]] && break
    kill -0 "$wpid" 2>/dev/null || break
    sleep 0.1
done
[[ -s "$WORK/ready.json" ]] || {
    echo "error: the watchers did not finish subscribing" >&2
    BENCH_KEEP=1
    exit 1
}
active=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["active"])' "$WORK/ready.json")
((active == watchers)) || {
    echo "error: only $active of $watchers watchers subscribed" >&2
    BENCH_KEEP=1
    exit 1
}
steps_a=()
for c in "${concs[@]}"; do
    echo "== (a) $notifies notifies, concurrency $c" >&2
    cpu0=$(gateway_cpu)
    gdrop0=$(gateway_udp_drops)
    mdrop0=$(machine_udp_drops)
    t0=$(date +%s.%N)
    timeout -k 5 200 python3 "$SIPP_DIR/bench-http.py" --port "$GW_HTTP" --kind notify \
        --count "$notifies" --concurrency "$c" --watchers "$watchers" \
        --watcher-fmt 'pres:w{i}@example.com' --target-fmt 'pres:carol@xmpp.example.org' \
        --timeout 180 >"$WORK/notify-$c.json"
    t1=$(date +%s.%N)
    cpu=$(cpu_percent "$cpu0" "$(gateway_cpu)" "$t0" "$t1")
    sleep 2 # the last NOTIFYs (and any coalesced follow-ups) arrive
    drops="$(($(gateway_udp_drops) - gdrop0)) / $(($(machine_udp_drops) - mdrop0))"
    steps_a+=("$c|$WORK/notify-$c.json|$cpu|$drops")
    sleep 1
done
touch "$WORK/stop"
wait "$wpid" || true
BENCH_PIDS=("$adapter_pid")

# ---- (b) CPIM subscribe → SIP 200
total_b=$((subscribes * ${#concs[@]}))
echo "== (b) SIPp UAS on 127.0.0.1:$uas_port for $total_b SUBSCRIBEs" >&2
mkdir -p "$WORK/uas"
cp "$SIPP_DIR/bench-gateway-uas.xml" "$WORK/uas/"
(cd "$WORK/uas" && exec timeout -k 5 600 sipp -sf bench-gateway-uas.xml -t u1 -i 127.0.0.1 -p "$uas_port" \
    -m "$total_b" -buff_size 4194304 -trace_stat -stf stat.csv -fd 1 \
    -trace_err -error_file errors.log -nostdin >screen.log 2>&1) &
uas_pid=$!
BENCH_PIDS+=("$uas_pid")
sleep 1
steps_b=()
offset=0
for c in "${concs[@]}"; do
    echo "== (b) $subscribes subscribes, concurrency $c" >&2
    cpu0=$(gateway_cpu)
    gdrop0=$(gateway_udp_drops)
    mdrop0=$(machine_udp_drops)
    t0=$(date +%s.%N)
    timeout -k 5 200 python3 "$SIPP_DIR/bench-http.py" --port "$GW_HTTP" --kind subscribe \
        --count "$subscribes" --concurrency "$c" --offset "$offset" --duration 3600 \
        --watcher-fmt 'pres:x{i}@xmpp.example.org' --target-fmt 'pres:t{i}@sip.example.net' \
        --timeout 180 >"$WORK/subscribe-$c.json"
    t1=$(date +%s.%N)
    cpu=$(cpu_percent "$cpu0" "$(gateway_cpu)" "$t0" "$t1")
    drops="$(($(gateway_udp_drops) - gdrop0)) / $(($(machine_udp_drops) - mdrop0))"
    steps_b+=("$c|$WORK/subscribe-$c.json|$cpu|$drops")
    offset=$((offset + subscribes))
    sleep 1
done
gateway_alive || {
    echo "error: the gateway died; its output:" >&2
    tail -n 20 "$GW_LOG" | indent >&2
    exit 1
}
uas_retrans=$(python3 -c '
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=";"))
h, l = rows[0], rows[-1]
print(l[h.index("Retransmissions(C)")])' "$WORK/uas/stat.csv" 2>/dev/null || echo "?")
kill -TERM "$uas_pid" 2>/dev/null || true
wait "$uas_pid" 2>/dev/null || true
stop_gateway >&2 || echo "warning: gateway exit status $GW_RC after SIGTERM" >&2
kill -TERM "$adapter_pid" 2>/dev/null || true
wait "$adapter_pid" 2>/dev/null || true
BENCH_PIDS=()

python3 - "$WORK" "$watchers" "$machine" "$uas_retrans" "${steps_a[@]}" -- "${steps_b[@]}" <<'PY'
import json, os, sys
work, watchers, machine, uas_retrans = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rest = sys.argv[5:]
sep = rest.index("--")
steps_a, steps_b = rest[:sep], rest[sep + 1:]
times = sorted(int(l) for l in open(os.path.join(work, "notify-times")) if l.strip())
w = json.load(open(os.path.join(work, "watchers.json")))
ready = json.load(open(os.path.join(work, "ready.json")))
try:
    adapter = json.load(open(os.path.join(work, "adapter.json")))
except (OSError, ValueError):
    adapter = {}
ok_all = True
notes = []
print("**(a) CPIM notify ingestion** (%d SIP watchers of sip:carol@xmpp.example.org, subscribed through the adapter at %.0f/s)" % (ready["active"], ready["setup_rate"] or 0))
print()
print("| concurrency | POST /notify | answered 200 success | failures | **notifies/s** | p50 ms | p90 ms | p99 ms | max ms | SIP NOTIFYs sent | **SIP NOTIFYs/s** (first POST → last NOTIFY) | last NOTIFY after last answer ms | UDP drops: gateway / all | gateway CPU (% of 1 core) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in steps_a:
    c, path, cpu, drops = s.split("|")
    r = json.load(open(path))
    start, end = r["start_ns"], r["end_ns"]
    mine = [t for t in times if start <= t <= end + 2_500_000_000]
    span = (mine[-1] - start) / 1e9 if mine else 0
    fails = r["count"] - r["ok"]
    ok_all &= fails == 0 and not r["timed_out"]
    print("| %s | %d | %d | %d | **%.0f** | %s | %s | %s | %s | %d | **%.0f** | %s | %s | %s |" % (
        c, r["count"], r["ok"], fails, r["rate"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
        len(mine), len(mine) / span if span else 0,
        "%.1f" % ((mine[-1] - end) / 1e6) if mine else "-", drops, cpu))
    other = {k: v for k, v in r["answers"].items() if not k.startswith("200 success")}
    if other or r["errors"]:
        notes.append("concurrency %s: answers other than 200 success: %s; errors: %s" % (c, other, r["errors"]))
print()
for n in notes:
    print("- " + n)
notes = []
print("NOTIFY retransmissions seen by the watchers: %d; NOTIFY states: %s; adapter requests: %s." % (
    w["notify_retransmissions_seen"], w["notify_states"], adapter))
print()
print("**(b) CPIM subscribe → SIP SUBSCRIBE → 200 round trips** (SIPp UAS as sip.example.net)")
print()
print("| concurrency | POST /subscribe | answered success | failures | **round trips/s** | p50 ms | p90 ms | p99 ms | max ms | UDP drops: gateway / all | gateway CPU (% of 1 core) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in steps_b:
    c, path, cpu, drops = s.split("|")
    r = json.load(open(path))
    fails = r["count"] - r["ok"]
    ok_all &= fails == 0 and not r["timed_out"]
    print("| %s | %d | %d | %d | **%.0f** | %s | %s | %s | %s | %s | %s |" % (
        c, r["count"], r["ok"], fails, r["rate"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"], drops, cpu))
    other = {k: v for k, v in r["answers"].items() if not k.startswith("200 success")}
    if other or r["errors"]:
        notes.append("concurrency %s: answers other than 200 success: %s; errors: %s" % (c, other, r["errors"]))
print()
for n in notes:
    print("- " + n)
print("SUBSCRIBE retransmissions received by the SIPp UAS: %s." % uas_retrans)
print()
print("Latencies are per HTTP request as seen by the client (bench-http.py, persistent HTTP/1.1 connections, one request outstanding each). "
      "The HTTP client, the adapter and watchers (python3), SIPp and the gateway shared the machine over 127.0.0.1: %s." % machine)
sys.exit(0 if ok_all else 1)
PY
