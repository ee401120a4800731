#!/usr/bin/env bash
# Long soak (issue 17, item 6; docs/reliability.md "Soak").
#
#   tests/reliability/soak.sh [MINUTES]      default 30
#
# Half the clean rate of this machine (docs/performance.md: ~10,000
# PUBLISH/s, ~4,000 dialogs/s), for MINUTES, against the release gateway on
# loopback:
#   - SIPp soak-publish.xml: 1,250 calls/s = 2,500 PUBLISH/s (an initial
#     PUBLISH, Expires 30, and its refresh 2 s later; each publication then
#     expires in the gateway);
#   - SIPp soak-subscribe.xml: 1,000 dialogs/s, Expires 5, each ended by the
#     gateway's expiry (terminated NOTIFY);
#   - soak.py: 100 long-lived subscriptions refreshed every 60 s; at the end
#     a new PUBLISH for each presentity must reach its watcher.
# Every SAMPLE seconds (default 30): the gateway's VmRSS, the store's size
# (du), the gateway's ERROR and WARN log lines. Prints a markdown table and a
# verdict; writes samples.csv and result.txt in the scratch directory.
#
# Pass: after the warm-up (the first third of the run), RSS and store size
# are flat: the largest sample of the last third is at most 10 % (RSS) and
# 20 % (store) above the largest of the second third; 0 ERROR/WARN lines; 0
# long-lived subscriptions unnotified (or terminated, or failing a refresh);
# SIPp: no call failed except by the gateway's overload control (503
# "overloaded" + Retry-After, counted and reported); the gateway exits 0 on
# SIGTERM.
#
# Environment: GATEWAY_BIN (default target/release/sip-cpim-gateway),
# SOAK_PUBLISH_RATE (PUBLISH/s, default 2500), SOAK_DIALOG_RATE (dialogs/s,
# default 1000), SAMPLE (seconds, default 30), SOAK_KEEP=1 keeps the scratch
# directory (kept anyway on failure). Loopback only; processes stopped by PID.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../sipp/lib.sh
source "$HERE/../sipp/lib.sh"

MINUTES=${1:-30}
if ! [[ "$MINUTES" =~ ^[1-9][0-9]{0,3}$ ]]; then
    echo "usage: $0 [MINUTES]   (1..9999, default 30)" >&2
    exit 2
fi
PUB_RATE=${SOAK_PUBLISH_RATE:-2500}
DLG_RATE=${SOAK_DIALOG_RATE:-1000}
SAMPLE=${SAMPLE:-30}
for v in "$PUB_RATE" "$DLG_RATE" "$SAMPLE"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "error: rates and SAMPLE must be positive integers" >&2; exit 2; }
done
command -v sipp >/dev/null || { echo "error: sipp not found (apt-get install sip-tester)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "error: python3 not found" >&2; exit 2; }
ensure_binary

WORK=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    stop_gateway >/dev/null 2>&1 || true
    if ((rc == 0)) && [[ -z "${SOAK_KEEP:-}" ]]; then
        rm -rf "$WORK"
    else
        echo "kept $WORK (gateway.log, samples.csv, sipp-*/, soak.json)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

DUR=$((MINUTES * 60))
_gw_start "$WORK" wait 'presence.min_expires=1' || { echo "error: the gateway did not start" >&2; exit 1; }
STORE="$WORK/store"
log "== soak: $MINUTES min; $PUB_RATE PUBLISH/s (with refreshes, expiring), $DLG_RATE dialogs/s (Expires 5), 100 long-lived; gateway $BIN pid $GW_PID on 127.0.0.1:$GW_PORT; work $WORK"

# The long-lived subscriptions first, so they live through the whole load.
python3 "$HERE/soak.py" --sip-port "$GW_PORT" --count 100 --refresh 60 \
    --final "$WORK/final" --max-seconds $((DUR + 300)) --out "$WORK/soak.json" >"$WORK/soak.log" 2>&1 &
PY=$!
PIDS+=("$PY")
for ((i = 0; i < 300; i++)); do
    grep -qs "long-lived subscriptions set up" "$WORK/soak.log" && break
    kill -0 "$PY" 2>/dev/null || break
    sleep 0.1
done
cat "$WORK/soak.log"

# launch LABEL SCENARIO CALLS_PER_S
launch() {
    local label=$1 sf=$2 rate=$3 dir="$WORK/sipp-$1" lport
    mkdir -p "$dir"
    cp "$HERE/$sf" "$dir/"
    lport=$(free_port)
    (cd "$dir" && exec timeout -k 5 $((DUR + 120)) sipp "127.0.0.1:$GW_PORT" -sf "$sf" \
        -t u1 -i 127.0.0.1 -p "$lport" -key run "$label" \
        -m $((rate * DUR)) -r "$rate" -l $((rate * 10)) -timeout $((DUR + 90))s \
        -buff_size 4194304 -trace_stat -stf stat.csv -fd "$SAMPLE" \
        -trace_err -error_file errors.log -nostdin >screen.log 2>&1) &
    PIDS+=("$!")
    SIPP_PIDS+=("$!")
}
SIPP_PIDS=()
launch pub soak-publish.xml $((PUB_RATE / 2))
launch dlg soak-subscribe.xml "$DLG_RATE"

CSV="$WORK/samples.csv"
echo "t_s,rss_kb,store_bytes,error_lines,warn_lines,publications,subscriptions,load1" >"$CSV"
sample() {
    local t=$1 rss store err warn pubs subs m load1
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status" 2>/dev/null || echo 0)
    store=$(du -sb "$STORE" | awk '{ print $1 }')
    err=$(grep -c ' ERROR ' "$GW_LOG" || true)
    warn=$(grep -c ' WARN ' "$GW_LOG" || true)
    m=$(curl -s --max-time 5 "http://127.0.0.1:$GW_HTTP/metrics" || true)
    pubs=$(awk '/^sipgw_publications_active / { print $2 }' <<<"$m")
    subs=$(awk '/^sipgw_subscriptions_active\{kind="local"\} / { print $2 }' <<<"$m")
    load1=$(cut -d' ' -f1 /proc/loadavg)
    echo "$t,${rss:-0},$store,$err,$warn,${pubs:-},${subs:-},$load1" >>"$CSV"
    log "   t=${t}s RSS ${rss} kB, store $store B, ERROR $err, WARN $warn, publications ${pubs:-?}, local subscriptions ${subs:-?}, load $load1"
}
t0=$(date +%s)
sample 0
next=$SAMPLE
# Bounded: the load ends after DUR s; SIPp's own -timeout is DUR + 90 s.
while (($(date +%s) - t0 < DUR + 150)); do
    now=$(($(date +%s) - t0))
    if ((now >= next)); then
        sample "$now"
        next=$((next + SAMPLE))
    fi
    alive=0
    for p in "${SIPP_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    gateway_alive || { echo "error: the gateway died; its log:" >&2; tail -n 20 "$GW_LOG" | indent >&2; exit 1; }
    sleep 1
done
sipp_rc=()
for p in "${SIPP_PIDS[@]}"; do
    rc=0
    wait "$p" || rc=$?
    sipp_rc+=("$rc")
done
sample "$(($(date +%s) - t0))"
touch "$WORK/final"
py_rc=0
wait "$PY" || py_rc=$?
cat "$WORK/soak.log"
sample "$(($(date +%s) - t0))"
stop_rc=0
stop_gateway || stop_rc=$GW_RC

python3 - "$CSV" "$WORK" "$stop_rc" "$py_rc" "${sipp_rc[*]}" "$MINUTES" "$PUB_RATE" "$DLG_RATE" <<'PY' | tee "$WORK/result.txt"
import csv, json, os, sys
path, work, stop_rc, py_rc, sipp_rc, minutes, pub, dlg = sys.argv[1:]
rows = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(open(path))]
load = [r for r in rows if r["t_s"] > 0]
end = max(r["t_s"] for r in load)
second = [r for r in load if end / 3 < r["t_s"] <= 2 * end / 3]
last = [r for r in load if r["t_s"] > 2 * end / 3]
def grow(key):
    a = max(r[key] for r in second) if second else None
    b = max(r[key] for r in last) if last else None
    return a, b, (None if not a else (b / a - 1) * 100)
def sipp(label):
    d = os.path.join(work, "sipp-" + label, "stat.csv")
    if not os.path.exists(d):
        return {"calls": -1, "ok": -1, "failed": -1, "retrans": -1}
    lines = [l.rstrip("\n").split(";") for l in open(d) if l.strip()]
    h = lines[0]; v = lines[-1]
    g = lambda n: int(v[h.index(n)]) if n in h else -1
    # Overload control's refusals (503 + Retry-After, design: shed when a
    # request waited > max_queue_delay_ms): counted apart, not failures.
    err = os.path.join(work, "sipp-" + label, "errors.log")
    # A call aborted on a 503 (overloaded): one line of errors.log each.
    shed = sum(1 for l in open(err, errors="replace")
               if "Aborting call on unexpected message" in l
               and "received 'SIP/2.0 503 Service Unavailable (overloaded)" in l) if os.path.exists(err) else 0
    return {"calls": g("TotalCallCreated"), "ok": g("SuccessfulCall(C)"), "failed": g("FailedCall(C)"),
            "retrans": g("Retransmissions(C)"), "shed": shed, "other": g("FailedCall(C)") - shed}
soak = json.load(open(os.path.join(work, "soak.json"))) if os.path.exists(os.path.join(work, "soak.json")) else {}
p, s = sipp("pub"), sipp("dlg")
rss, store = grow("rss_kb"), grow("store_bytes")
err, warn = int(rows[-1]["error_lines"]), int(rows[-1]["warn_lines"])
unnot = len(soak.get("unnotified", ["?"]))
checks = {
    "RSS flat (last third max <= 1.10 x second third max)": rss[2] is not None and rss[2] <= 10,
    "store flat (last third max <= 1.20 x second third max)": store[2] is not None and store[2] <= 20,
    "0 ERROR / WARN log lines": err == 0 and warn == 0,
    "0 unnotified long-lived subscriptions": unnot == 0 and py_rc == "0",
    "no SIPp call failed but by overload control (503 overloaded)": p["other"] == 0 and s["other"] == 0
        and p["calls"] > 0 and s["calls"] > 0,
    "gateway exit 0 on SIGTERM": stop_rc == "0",
}
print()
print("| t (s) | RSS (MB) | store (MB) | ERROR | WARN | publications | local subscriptions | load (1 min) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %d | %.1f | %.1f | %d | %d | %s | %s | %.1f |" % (r["t_s"], r["rss_kb"] / 1024, r["store_bytes"] / 1e6,
          r["error_lines"], r["warn_lines"],
          "" if r["publications"] is None else "%d" % r["publications"],
          "" if r["subscriptions"] is None else "%d" % r["subscriptions"], r["load1"]))
print()
print("soak %s min at %s PUBLISH/s + %s dialogs/s" % (minutes, pub, dlg))
print("SIPp PUBLISH calls (2 PUBLISH each): %(calls)d created, %(ok)d ok, %(failed)d failed (%(shed)d shed by overload control, %(other)d other), %(retrans)d retransmissions" % p)
print("SIPp SUBSCRIBE dialogs: %(calls)d created, %(ok)d ok, %(failed)d failed (%(shed)d shed by overload control, %(other)d other), %(retrans)d retransmissions" % s)
print("SIPp exit statuses (pub, dlg): %s" % sipp_rc)
print("RSS: second-third max %.1f MB, last-third max %.1f MB (%+.1f %%)" % (rss[0] / 1024, rss[1] / 1024, rss[2]))
print("store: second-third max %.1f MB, last-third max %.1f MB (%+.1f %%)" % (store[0] / 1e6, store[1] / 1e6, store[2]))
print("log: %d ERROR, %d WARN lines" % (err, warn))
print("long-lived: %s of %s notified at the end; %s refreshes (%s failed %s; attempts retried by code: %s); %s terminated" % (
    soak.get("count", 0) - unnot, soak.get("count", "?"), soak.get("refreshes"), soak.get("refresh_failures"),
    soak.get("refresh_failure_codes", []), json.dumps(soak.get("refresh_attempts_failed", {})),
    len(soak.get("terminated", []))))
for k, ok in checks.items():
    print("%s: %s" % ("PASS" if ok else "FAIL", k))
print("SOAK %s" % ("PASSED" if all(checks.values()) else "FAILED"))
sys.exit(0 if all(checks.values()) else 1)
PY
