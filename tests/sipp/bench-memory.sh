#!/usr/bin/env bash
# Subscription memory benchmark (a script, not a test): the gateway's resident
# memory (VmRSS) before and after creating N active subscriptions (default
# 100000: 20 presentities sip:m0..m19@example.com x 5000 watchers each,
# distinct watcher URI, Call-ID and From tag per dialog, Expires 3600), and
# the store's size on disk. Bytes per subscription = ΔRSS / N.
#
#   tests/sipp/bench-memory.sh                 # 100000 subscriptions at 2000/s
#   tests/sipp/bench-memory.sh 50000 1000      # N, SUBSCRIBE rate
#
# The watchers are bench-watchers.py (one UDP socket; every NOTIFY answered
# 200, otherwise the gateway retries and then removes the subscription).
# Creation is bounded by BENCH_MEMORY_MAX_S (default 600 s): if N is not
# reached by then, the figures are for the subscriptions that are active,
# and the output says so. Readings: right after creation; again
# BENCH_MEMORY_LINGER_S (default 40) s later, once finished transactions are
# gone (RFC 3261 Timer J, 32 s); and after restarting the gateway on the same
# store: the subscriptions as reloaded, without what creating them left behind
# (finished transactions, allocator fragmentation).
# Prints a markdown table on stdout (progress on stderr); writes nothing into
# the repository. BENCH_QUIET_WAIT=0 skips waiting for a quiet machine.
set -euo pipefail

# shellcheck source=SCRIPTDIR/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

count=${1:-100000}
rate=${2:-2000}
presentities=20
max_s=${BENCH_MEMORY_MAX_S:-600}
check_rates "$count" "$rate" "$max_s"
((count <= 1000000)) || {
    echo "error: at most 1000000 subscriptions" >&2
    exit 2
}
bench_setup bench-memory

ensure_binary >&2
bench_wait_quiet >&2
machine=$(bench_machine)
bench_start_gateway >&2
sleep 2
rss0=$(gateway_rss_kb)
store0=$(du -sb "$GW_STORE" | cut -f1)
echo "== gateway RSS $rss0 kB, store $store0 bytes before; creating $count subscriptions at $rate/s (at most ${max_s}s)" >&2

cpu0=$(gateway_cpu)
t0=$(date +%s.%N)
python3 "$SIPP_DIR/bench-watchers.py" \
    --gw "127.0.0.1:$GW_PORT" --count "$count" --rate "$rate" --outstanding 2000 \
    --presentities "$presentities" --presentity-fmt 'sip:m{k}@example.com' \
    --watcher-fmt 'sip:w{i}@example.com' --expires 3600 \
    --setup-timeout "$max_s" --settle 3 --ready-file "$WORK/ready.json" \
    --stop-file "$WORK/stop" --hold-max $((max_s + 400)) \
    --json-out "$WORK/watchers.json" 2> >(tee "$WORK/watchers.log" >&2) &
wpid=$!
BENCH_PIDS+=("$wpid")
for ((i = 0; i < (max_s + 120) * 10; i++)); do
    [[ -s "$WORK/ready.json" ]] && break
    kill -0 "$wpid" 2>/dev/null || break
    sleep 0.1
done
[[ -s "$WORK/ready.json" ]] || {
    echo "error: the watchers did not finish creating subscriptions" >&2
    BENCH_KEEP=1
    exit 1
}
t1=$(date +%s.%N)
cpu=$(cpu_percent "$cpu0" "$(gateway_cpu)" "$t0" "$t1")
gateway_alive || {
    echo "error: the gateway died; its output:" >&2
    tail -n 20 "$GW_LOG" | indent >&2
    exit 1
}
sleep 2
rss1=$(gateway_rss_kb)
store1=$(du -sb "$GW_STORE" | cut -f1)
read -r active failed unfinished setup_s setup_rate < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["active"], r["failed"], r["unfinished"], r["setup_s"], r["setup_rate"])' "$WORK/ready.json")
echo "== $active active ($failed failed, $unfinished unfinished) in ${setup_s}s; RSS $rss1 kB, store $store1 bytes" >&2
# Completed server transactions linger 64 x T1 = 32 s (RFC 3261 Timer J):
# measure again once they are gone.
sleep "${BENCH_MEMORY_LINGER_S:-40}"
rss1b=$(gateway_rss_kb)
store1b=$(du -sb "$GW_STORE" | cut -f1)
echo "== ${BENCH_MEMORY_LINGER_S:-40} s later: RSS $rss1b kB, store $store1b bytes" >&2

# Restart on the same store: the subscriptions as reloaded.
bench_restart_gateway >&2
sleep 3
rss2=$(gateway_rss_kb)
store2=$(du -sb "$GW_STORE" | cut -f1)
echo "== after restart: RSS $rss2 kB, store $store2 bytes" >&2
touch "$WORK/stop"
wait "$wpid" || true
BENCH_PIDS=()
gateway_alive || {
    echo "error: the gateway died after the restart; its output:" >&2
    tail -n 20 "$GW_LOG" | indent >&2
    exit 1
}
stop_gateway >&2 || echo "warning: gateway exit status $GW_RC after SIGTERM" >&2

((active > 0)) || {
    echo "error: no subscription became active" >&2
    exit 1
}
per() { awk -v a="$1" -v b="$2" -v n="$active" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }'; }
echo "| measurement | subscriptions | gateway VmRSS | ΔRSS vs. start | bytes per subscription | store on disk | store bytes per subscription |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "| gateway started, empty store | 0 | $rss0 kB | - | - | $store0 B | - |"
echo "| after creating them (created at ${setup_rate}/s in ${setup_s} s) | $active | $rss1 kB | $((rss1 - rss0)) kB | **$(per "$rss0" "$rss1")** | $store1 B | $(awk -v a="$store0" -v b="$store1" -v n="$active" 'BEGIN { printf "%.0f", (b - a) / n }') |"
echo "| ${BENCH_MEMORY_LINGER_S:-40} s later (finished transactions expired; freed memory stays in the allocator) | $active | $rss1b kB | $((rss1b - rss0)) kB | $(per "$rss0" "$rss1b") | $store1b B | $(awk -v a="$store0" -v b="$store1b" -v n="$active" 'BEGIN { printf "%.0f", (b - a) / n }') |"
echo "| after a restart on the same store (reloaded) | $active | $rss2 kB | $((rss2 - rss0)) kB | $(per "$rss0" "$rss2") | $store2 B | $(awk -v a="$store0" -v b="$store2" -v n="$active" 'BEGIN { printf "%.0f", (b - a) / n }') |"
echo
if ((active < count)); then
    echo "**Only $active of $count subscriptions became active within ${max_s}s** ($failed failed, $unfinished unfinished): the figures are for $active."
fi
echo "$count requested ($presentities presentities x $((count / presentities)) watchers), $active active, $failed failed; gateway CPU during creation $cpu% of one core."
echo
echo "The watchers (one python3 process answering every NOTIFY 200) and the gateway shared the machine over 127.0.0.1 UDP: $machine."
