#!/usr/bin/env bash
# NOTIFY fan-out benchmark (a script, not a test): N watchers (default 10000)
# subscribe to ONE presentity, sip:fan@example.com, then a PUBLISH changes
# its state; measured: the time from sending the PUBLISH until the LAST of
# the N NOTIFYs it causes is received. Repeated (default 2 fan-outs, 2 s
# apart) against the same watchers.
#
#   tests/sipp/bench-fanout.sh                # 10000 watchers, subscribed at 1000/s, 2 fan-outs
#   tests/sipp/bench-fanout.sh 20000 2000 3   # watchers, SUBSCRIBE rate, fan-outs
#
# The watchers are bench-watchers.py: one UDP socket on 127.0.0.1 that
# creates the N subscriptions (at most 1000 outstanding, SUBSCRIBEs
# retransmitted on T1), answers every NOTIFY 200 at once (the gateway keeps
# one NOTIFY in flight per subscription and retransmits unanswered ones), and
# sends the PUBLISH. Arrival times are the kernel's receive timestamps
# (SO_TIMESTAMPNS), so the script's own processing does not add to them.
# Prints a markdown table on stdout (progress on stderr); writes nothing into
# the repository. BENCH_QUIET_WAIT=0 skips waiting for a quiet machine.
set -euo pipefail

# shellcheck source=SCRIPTDIR/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

watchers=${1:-10000}
rate=${2:-1000}
fanouts=${3:-2}
check_rates "$watchers" "$rate" "$fanouts"
((watchers <= 200000 && fanouts <= 10)) || {
    echo "error: at most 200000 watchers and 10 fan-outs" >&2
    exit 2
}
bench_setup bench-fanout

ensure_binary >&2
bench_wait_quiet >&2
machine=$(bench_machine)
bench_start_gateway >&2
rss0=$(gateway_rss_kb)

echo "== $watchers watchers of sip:fan@example.com, subscribing at $rate/s; then $fanouts fan-out(s)" >&2
rc=0
timeout -k 5 $((watchers / rate + 120 + fanouts * 70)) python3 "$SIPP_DIR/bench-watchers.py" \
    --gw "127.0.0.1:$GW_PORT" --count "$watchers" --rate "$rate" --outstanding 1000 \
    --presentity-fmt 'sip:fan@example.com' --watcher-fmt 'sip:w{i}@example.com' \
    --expires 3600 --settle 2 --publish 'sip:fan@example.com' --publishes "$fanouts" --gap 2 \
    --collect-timeout 60 --gw-pid "$GW_PID" --json-out "$WORK/fanout.json" 2>&1 | tee "$WORK/watchers.log" >&2 || rc=$?
if ! gateway_alive; then
    echo "error: the gateway died; its output:" >&2
    tail -n 20 "$GW_LOG" | indent >&2
    exit 1
fi
[[ -s "$WORK/fanout.json" ]] || {
    echo "error: bench-watchers.py wrote no result (exit $rc)" >&2
    BENCH_KEEP=1
    exit 1
}
rss1=$(gateway_rss_kb)
stop_gateway >&2 || echo "warning: gateway exit status $GW_RC after SIGTERM" >&2

python3 - "$WORK/fanout.json" "$rss0" "$rss1" "$machine" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rss0, rss1, machine = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = r["active"]
print("| fan-out | watchers notified | PUBLISH → 200 ms | first NOTIFY ms | p50 ms | p90 ms | p99 ms | **last NOTIFY ms** | NOTIFYs/s (N / last) | NOTIFY retransmissions | UDP drops: gateway / watchers | gateway CPU (% of 1 core) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for j, f in enumerate(r["fanouts"], 1):
    rate = "%.0f" % (f["notified"] / (f["last_notify_ms"] / 1000)) if f["last_notify_ms"] else "-"
    print("| %d | %d / %d | %s | %s | %s | %s | %s | **%s** | %s | %d | %d / %d | %s |" % (
        j, f["notified"], n, f["publish_200_ms"], f["first_notify_ms"], f["p50_ms"], f["p90_ms"],
        f["p99_ms"], f["last_notify_ms"], rate, f["notify_retransmissions"],
        f["udp_drops_gateway"], f["udp_drops_watchers"], f["gateway_cpu_pct"]))
print()
print("Subscriptions: %d active, %d failed, %d unfinished, created in %.1f s (%.0f/s, %d SUBSCRIBE retransmissions). "
      "Gateway RSS %d kB at start, %d kB after the fan-outs." % (
      n, r["failed"], r["unfinished"], r["setup_s"], r["setup_rate"] or 0,
      r["subscribe_retransmissions"], rss0, rss1))
print()
print("The watchers' socket had a %d MiB receive buffer (SO_RCVBUF as granted); drops on it delay NOTIFYs by the gateway's retransmission (T1 = 500 ms) and make the run a measurement of the watchers, not of the gateway." % (r.get("rcvbuf", 0) >> 20))
print()
print("Times are from sending the PUBLISH to the kernel's receive timestamp of each watcher's first NOTIFY after it. "
      "The watchers (one python3 process answering every NOTIFY 200) and the gateway shared the machine over 127.0.0.1 UDP: %s." % machine)
ok = all(f["notified"] == n for f in r["fanouts"]) and r["failed"] == 0 and r["unfinished"] == 0
sys.exit(0 if ok else 1)
PY
