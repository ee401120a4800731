#!/usr/bin/env bash
# Restart benchmark (a script, not a test): the gateway started on a store
# holding N subscriptions (default 1000000): time from process start until
# it is ready and serving, its resident memory (VmRSS) then, and the store's
# size on disk; then proof that the subscriptions were resumed, by refreshing
# a random sample of them in their dialogs.
#
#   tests/sipp/bench-restart.sh                 # 1000000 subscriptions, 1000 presentities
#   tests/sipp/bench-restart.sh 10000 100 20    # N, presentities, sampled refreshes
#
# The store is not filled over SIP (1,000,000 SUBSCRIBEs would take ~10
# minutes): ONE real subscription is made through the gateway over UDP
# (bench-restart.py subscribe: SUBSCRIBE, 2xx, first NOTIFY answered; the
# watcher is a UDP socket of this script), the gateway is stopped, the store
# is dumped with `sip-cpim-gateway export`, and bench-restart.py generate
# writes N records derived from that one, changing only what identifies a
# subscription (id, Call-ID, both tags, presentity = P presentities
# sip:benchK@example.com, watcher sip:watcherI@example.com, the contact's
# user part) and its expiry (a year ahead); everything else (event, format,
# state, CSeqs, route set, the watcher's contact host:port) is the real
# record's. `sip-cpim-gateway import` writes them into a fresh store (timed).
#
# Then, BENCH_RESTART_ROUNDS (default 2) times: start the gateway on that
# store and poll GET /readyz every 50 ms (the HTTP listener is bound after
# the state is loaded, so this includes the load); note the "presence state
# loaded" log line's time; read VmRSS/VmHWM at ready and the
# sipgw_subscriptions_active{kind="local"} gauge (must be N); send each
# sampled subscription (K random + the first and last generated) an
# in-dialog SUBSCRIBE refresh (Call-ID, From tag = the watcher's, To tag =
# the gateway's local tag, CSeq = stored + 1, Request-URI = the gateway's
# Contact) from the watcher's socket and check its 2xx and the NOTIFY that
# follows (RFC 6665 §4.2.1.2) with a CSeq above the stored one and
# Subscription-State active; and one new out-of-dialog SUBSCRIBE (2xx +
# NOTIFY). Then SIGTERM (the stop time is reported). Round 2 is a restart
# after that clean stop.
#
# [presence] max_subscriptions is lifted (0 = no limit) through the
# environment: the shipped limit is 1,000,000, and at exactly that many the
# new SUBSCRIBE would be refused 503.
#
# Everything after the quiet-machine wait is bounded by BENCH_RESTART_MAX_S
# (default 1200 s); every process is stopped by its PID. Prints a markdown
# table on stdout (progress on stderr); writes nothing into the repository
# (scratch under $TMPDIR: for 1,000,000 records the dump is ~0.75 GB, deleted
# once imported, and the store ~0.7 GB; `import` holds the whole dump in
# memory: ~11 GB peak RSS). Exits non-zero if any check fails. BENCH_QUIET_WAIT=0
# skips waiting for a quiet machine; BENCH_RESTART_LOG sets RUST_LOG of the
# measured starts (default info: the "presence state loaded" line).
set -euo pipefail

# shellcheck source=SCRIPTDIR/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

count=${1:-1000000}
presentities=${2:-1000}
sample=${3:-20}
rounds=${BENCH_RESTART_ROUNDS:-2}
max_s=${BENCH_RESTART_MAX_S:-1200}
check_rates "$count" "$presentities" "$sample" "$rounds" "$max_s"
((count <= 2000000 && sample <= 1000 && rounds <= 5)) || {
    echo "error: at most 2000000 subscriptions, 1000 sampled, 5 rounds" >&2
    exit 2
}
((presentities <= count)) || presentities=$count
export GATEWAY__PRESENCE__MAX_SUBSCRIPTIONS=${GATEWAY__PRESENCE__MAX_SUBSCRIPTIONS:-0}
bench_setup bench-restart
PY="$SIPP_DIR/bench-restart.py"

ensure_binary >&2
bench_wait_quiet >&2
machine=$(bench_machine)
deadline=$((SECONDS + max_s))
# remaining: seconds left of BENCH_RESTART_MAX_S (at least 1).
remaining() {
    local r=$((deadline - SECONDS))
    ((r > 0)) || {
        echo "error: BENCH_RESTART_MAX_S ($max_s s) exceeded" >&2
        exit 1
    }
    echo "$r"
}
now_ns() { echo "${EPOCHREALTIME/[.,]/}000"; }
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
json_get() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print("" if v is None else v)' "$1" "$2"; }

# ---- 1. one real subscription, exported
wport=$(free_port)
bench_start_gateway >&2
sleep 1
rss_empty=$(gateway_rss_kb)
echo "== gateway on an empty store: VmRSS $rss_empty kB" >&2
echo "== one real subscription: sip:watcher@example.com -> sip:bench@example.com (watcher socket udp 127.0.0.1:$wport)" >&2
timeout -k 5 60 python3 "$PY" subscribe --gw "127.0.0.1:$GW_PORT" --port "$wport" \
    --presentity sip:bench@example.com --watcher sip:watcher@example.com --contact-user w \
    --timeout 20 >"$WORK/real.json" || {
    echo "error: the real subscription failed; gateway output:" >&2
    tail -n 20 "$GW_LOG" | indent >&2
    exit 1
}
gw_contact=$(json_get "$WORK/real.json" gateway_contact)
echo "== subscribed: $(cat "$WORK/real.json")" >&2
stop_gateway >&2 || {
    echo "error: gateway exit status $GW_RC after SIGTERM" >&2
    exit 1
}
"$BIN" export --config "$WORK/gateway.toml" --output "$WORK/real.jsonl" 2>&1 | indent >&2
echo "== exported:" >&2
indent "$WORK/real.jsonl" >&2

# ---- 2. N records derived from it, imported into a fresh store
echo "== generating $count records ($presentities presentities) from the real one" >&2
t=$(now_ns)
timeout -k 5 "$(remaining)" python3 "$PY" generate --real "$WORK/real.jsonl" --count "$count" \
    --presentities "$presentities" --sample "$sample" --out "$WORK/dump.jsonl" \
    --sample-out "$WORK/sample.json" --progress
gen_s=$(secs_since "$t")
dump_bytes=$(stat -c %s "$WORK/dump.jsonl")
echo "== generated in ${gen_s}s: $dump_bytes bytes; sample of $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["sample"]))' "$WORK/sample.json")" >&2
rm -rf "$GW_STORE"
echo "== importing into a fresh store" >&2
t=$(now_ns)
timeout -k 5 "$(remaining)" /usr/bin/time -o "$WORK/import.time" -f '%e %M %U %S' \
    "$BIN" import --config "$WORK/gateway.toml" --input "$WORK/dump.jsonl" 2>&1 | indent >&2
import_s=$(secs_since "$t")
read -r _ import_maxrss import_user import_sys <"$WORK/import.time"
store_bytes=$(du -sb "$GW_STORE" | cut -f1)
echo "== imported in ${import_s}s (peak RSS $import_maxrss kB, CPU user ${import_user}s sys ${import_sys}s); store $store_bytes bytes" >&2
rm -f "$WORK/dump.jsonl"

# ---- 3. start on that store, measure, prove it serves; BENCH_RESTART_ROUNDS times
# start_measured ROUND: starts the gateway (same config, ports, store) and
# waits until /readyz answers 200; writes $WORK/ready-ROUND.json.
start_measured() {
    local r=$1 t0 rem i poller
    rem=$(remaining)
    ((rem < 300)) || rem=300
    : >"$GW_LOG"
    rm -f "$WORK/armed" "$WORK/launched"
    # The poller first (its own start-up is not measured), then the gateway.
    python3 "$PY" ready --pid-file "$WORK/launched" --armed "$WORK/armed" --http "$GW_HTTP" \
        --timeout "$rem" >"$WORK/ready-$r.json" &
    poller=$!
    BENCH_PIDS+=("$poller")
    for ((i = 0; i < 200; i++)); do
        [[ -e "$WORK/armed" ]] && break
        sleep 0.05
    done
    [[ -e "$WORK/armed" ]] || {
        echo "error: the readiness poller did not start" >&2
        exit 1
    }
    t0=$(now_ns)
    NO_COLOR=1 RUST_LOG=${BENCH_RESTART_LOG:-info} "$BIN" run --config "$WORK/gateway.toml" >"$GW_LOG" 2>&1 &
    GW_PID=$!
    echo "$GW_PID $t0" >"$WORK/launched.tmp"
    mv "$WORK/launched.tmp" "$WORK/launched"
    wait "$poller" || {
        echo "error: the gateway did not become ready: $(cat "$WORK/ready-$r.json"); its output:" >&2
        tail -n 20 "$GW_LOG" | indent >&2
        exit 1
    }
    BENCH_PIDS=()
    # The "presence state loaded" line: its time since t0 (tracing's UTC
    # timestamp, microseconds), and what it counted.
    python3 - "$GW_LOG" "$t0" "$WORK/ready-$r.json" <<'PY'
import datetime, json, re, sys
log, t0, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = json.load(open(out))
r["loaded_ms"] = r["loaded_subscriptions"] = r["listening_ms"] = None
def since_t0(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    ts = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
    return round((ts.timestamp() * 1e9 - t0) / 1e6, 1)
for line in open(log, errors="replace"):
    if "presence state loaded" in line:
        r["loaded_ms"] = since_t0(line)
        n = re.search(r"subscriptions=(\d+)", line)
        r["loaded_subscriptions"] = int(n.group(1)) if n else None
    elif "SIP listening" in line and r["listening_ms"] is None:
        r["listening_ms"] = since_t0(line)  # Server::start returned
json.dump(r, open(out, "w"))
PY
}

# active_gauge: sipgw_subscriptions_active{kind="local"} from /metrics.
active_gauge() {
    curl -sS -m 30 "http://127.0.0.1:$GW_HTTP/metrics" |
        awk '/^sipgw_subscriptions_active\{kind="local"\}/ { print $2; found = 1 } END { if (!found) print "?" }'
}

failures=0
declare -a rows=()
for ((round = 1; round <= rounds; round++)); do
    echo "== round $round: starting the gateway on the store of $count subscriptions" >&2
    start_measured "$round"
    ready_ms=$(json_get "$WORK/ready-$round.json" ready_ms)
    rss=$(json_get "$WORK/ready-$round.json" rss_kb)
    hwm=$(json_get "$WORK/ready-$round.json" hwm_kb)
    loaded_ms=$(json_get "$WORK/ready-$round.json" loaded_ms)
    listening_ms=$(json_get "$WORK/ready-$round.json" listening_ms)
    cpu=$(json_get "$WORK/ready-$round.json" cpu_s)
    main_cpu=$(json_get "$WORK/ready-$round.json" main_cpu_s)
    load1=$(json_get "$WORK/ready-$round.json" load1)
    active=$(active_gauge)
    echo "== ready after ${ready_ms} ms (presence state loaded at ${loaded_ms:-?} ms, server started at ${listening_ms:-?} ms); VmRSS $rss kB, VmHWM $hwm kB; CPU until ready ${cpu}s (main thread ${main_cpu}s), load average $load1; subscriptions active: $active" >&2
    # N, plus the new subscription of each earlier round (Expires 3600).
    if [[ "$active" != "$((count + round - 1))" ]]; then
        echo "FAIL: sipgw_subscriptions_active{kind=\"local\"} is $active, want $((count + round - 1))" >&2
        failures=$((failures + 1))
    fi
    # The probe writes the CSeqs it used back into sample.json: the next
    # round refreshes above them.
    timeout -k 5 "$(remaining)" python3 "$PY" probe --gw "127.0.0.1:$GW_PORT" --port "$wport" \
        --sample "$WORK/sample.json" --contact "$gw_contact" --timeout 10 >"$WORK/probe-$round.json" || {
        echo "error: the probe did not finish" >&2
        exit 1
    }
    read -r ok failed fin_med not_med fin_max not_max new_ok new_fin new_not < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
f = lambda v: "-" if v is None else "%.2f" % v
print(r["refresh_ok"], r["refresh_failed"], f(r["refresh_final_ms_median"]), f(r["refresh_notify_ms_median"]),
      f(r["refresh_final_ms_max"]), f(r["refresh_notify_ms_max"]), int(r["new_ok"]), f(r["new_final_ms"]), f(r["new_notify_ms"]))' "$WORK/probe-$round.json")
    echo "== refreshes: $ok ok, $failed failed (2xx median $fin_med ms, NOTIFY median $not_med ms); new SUBSCRIBE ok=$new_ok (2xx $new_fin ms, NOTIFY $new_not ms)" >&2
    failures=$((failures + failed + (new_ok ? 0 : 1)))
    rss_after=$(gateway_rss_kb)
    gateway_alive || {
        echo "error: the gateway died; its output:" >&2
        tail -n 20 "$GW_LOG" | indent >&2
        exit 1
    }
    t=$(now_ns)
    stop_rc=0
    stop_gateway >&2 || stop_rc=$?
    stop_s=$(secs_since "$t")
    if ((stop_rc != 0)); then
        echo "FAIL: gateway exit status $GW_RC after SIGTERM (after ${stop_s}s)" >&2
        failures=$((failures + 1))
    fi
    store_now=$(du -sb "$GW_STORE" | cut -f1)
    rows+=("$round|$ready_ms|$cpu / $main_cpu|$load1|${loaded_ms:-?}/${listening_ms:-?}|$rss|$hwm|$rss_after|$ok|$failed|$fin_med|$not_med|$fin_max|$not_max|$new_ok|$new_fin|$new_not|$stop_s|$store_now")
done

# ---- 4. the table
per() { awk -v a="$1" -v n="$2" 'BEGIN { printf "%.0f", a / n }'; }
echo "| round | subscriptions | import | **time to ready** | CPU until ready: process / main thread | load average at ready | presence state loaded / server started at | VmRSS at ready | RSS per subscription (ΔRSS vs. empty store / N) | VmHWM (peak) | store on disk | store bytes per subscription | sampled refreshes ok / failed | refresh: 2xx / NOTIFY median (max) | new SUBSCRIBE: 2xx / NOTIFY | stop (SIGTERM → exit) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "${rows[@]}"; do
    IFS='|' read -r rnd ready_ms cpu_main load1 loaded_ms rss hwm rss_after ok failed fin_med not_med fin_max not_max new_ok new_fin new_not stop_s store_now <<<"$row"
    printf '| %s | %s | %s | **%s s** | %s s | %s | %s s | %s MB | %s B | %s MB | %s MB | %s B | %s / %s | %s / %s ms (%s / %s) | %s / %s ms%s | %s s |\n' \
        "$rnd" "$count" "$([[ $rnd == 1 ]] && echo "${import_s} s" || echo -)" \
        "$(awk -v x="$ready_ms" 'BEGIN { printf "%.2f", x / 1000 }')" "$cpu_main" "$load1" \
        "$(awk -v x="$loaded_ms" 'BEGIN { n = split(x, p, "/"); for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? " / " : ""), (p[i] == "?" ? "?" : sprintf("%.2f", p[i] / 1000)) }')" \
        "$(awk -v x="$rss" 'BEGIN { printf "%.0f", x / 1024 }')" "$(per "$(((rss - rss_empty) * 1024))" "$count")" \
        "$(awk -v x="$hwm" 'BEGIN { printf "%.0f", x / 1024 }')" \
        "$(awk -v x="$store_now" 'BEGIN { printf "%.0f", x / 1e6 }')" "$(per "$store_now" "$count")" \
        "$ok" "$failed" "$fin_med" "$not_med" "$fin_max" "$not_max" "$new_fin" "$new_not" \
        "$([[ $new_ok == 1 ]] || echo ' FAILED')" "$stop_s"
done
echo
echo "$count subscriptions ($presentities presentities x $((count / presentities)) watchers) derived from one real subscription, generated in ${gen_s} s ($((dump_bytes / 1000000)) MB dump), imported with \`sip-cpim-gateway import\` in ${import_s} s (one batch; import peak RSS $((import_maxrss / 1024)) MB; store $((store_bytes / 1000000)) MB right after the import)."
echo "Time to ready: from launching the process until GET /readyz answered 200 (polled every 50 ms); the state is loaded on the main thread, so its CPU time is what the load costs without other processes competing for the cores. RSS per subscription = (VmRSS at ready − VmRSS of the gateway on an empty store, $((rss_empty / 1024)) MB) / N. Sample: $sample random + the first and last generated record, refreshed in-dialog one at a time (2xx and the NOTIFY after it, kernel receive times); round 2 restarts after round 1's clean stop."
echo
echo "Machine: $machine; CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)."
if ((failures > 0)); then
    echo "error: $failures check(s) failed" >&2
    BENCH_KEEP=1
    exit 1
fi
