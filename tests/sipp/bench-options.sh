#!/usr/bin/env bash
# OPTIONS load benchmark (a script, not a test): SIPp drives OPTIONS over UDP
# at rising call rates against a release gateway on 127.0.0.1.
#
#   tests/sipp/bench-options.sh                 # rates 1000 2000 4000 8000 12000 16000
#   tests/sipp/bench-options.sh 500 1000 3000   # other rates (calls/s)
#
# Each step sends min(5 x rate, 60000) calls (-m) with at most `rate` calls
# outstanding (-l) and a 30 s cap (-timeout). A call succeeds only on a 200.
# The run stops at the first step with a failed or unanswered call, or whose
# achieved rate is below 90% of the target (SIPp or the gateway saturated).
# Prints a markdown table on stdout (progress goes to stderr) and writes
# nothing into the repository. SIPp and the gateway share this machine's
# cores, so the figures are for both together.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

if (($# > 0)); then
    rates=("$@")
else
    rates=(1000 2000 4000 8000 12000 16000)
fi
for r in "${rates[@]}"; do
    [[ "$r" =~ ^[1-9][0-9]*$ ]] || {
        echo "error: rate '$r' is not a positive integer" >&2
        exit 2
    }
done
command -v sipp >/dev/null || {
    echo "error: sipp not found (Debian: apt-get install sip-tester)" >&2
    exit 2
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipp-bench.XXXXXX")
cleanup() {
    local rc=$?
    if [[ -n "$GW_PID" ]]; then
        stop_gateway >&2 || true
    fi
    if ((rc == 0)); then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

load0=$(cut -d' ' -f1-3 /proc/loadavg)
ensure_binary >&2
start_gateway >&2

# CPU seconds (user + system) the gateway has used so far.
gateway_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$GW_PID/stat"
}

# Datagrams the kernel dropped for lack of receive buffer: on the gateway's
# UDP socket (the "drops" column of /proc/net/udp), and on the whole machine
# (Udp RcvbufErrors in /proc/net/snmp). Both are counters: diff them.
gateway_udp_drops() {
    awk -v port="$(printf '%04X' "$GW_PORT")" '$2 == "0100007F:" port { print $NF; found = 1 } END { if (!found) print 0 }' /proc/net/udp
}
machine_udp_drops() {
    awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# Summarises one step: "sent ok failed retrans achieved_cps p50 p90 p99 max".
summarise() {
    python3 - "$1" "$2" <<'PY'
import csv, glob, sys
stat_file, rtt_glob = sys.argv[1], sys.argv[2]
with open(stat_file, newline="") as f:
    rows = list(csv.reader(f, delimiter=";"))
head, last = rows[0], rows[-1]
col = lambda name: last[head.index(name)]
sent = int(col("OutgoingCall(C)"))
ok = int(col("SuccessfulCall(C)"))
retrans = int(col("Retransmissions(C)"))
rate = float(col("CallRate(C)"))
rtts = []
for path in glob.glob(rtt_glob):
    with open(path) as f:
        next(f, None)
        for line in f:
            parts = line.strip().split(";")
            if len(parts) >= 3 and parts[2] == "1":
                rtts.append(float(parts[1]))
rtts.sort()
def pct(p):
    if not rtts:
        return "-"
    k = max(0, -(-len(rtts) * p // 100) - 1)  # nearest rank
    return "%g" % rtts[int(k)]
print(sent, ok, sent - ok, retrans, "%.0f" % rate, pct(50), pct(90), pct(99),
      "%g" % rtts[-1] if rtts else "-")
PY
}

table="| target calls/s | achieved calls/s | calls sent | successful | failed | retransmissions | UDP drops: gateway / all | p50 ms | p90 ms | p99 ms | max ms | gateway CPU (% of 1 core) |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
best=""
clean=""
for rate in "${rates[@]}"; do
    calls=$((rate * 5))
    ((calls > 60000)) && calls=60000
    step="$WORK/step-$rate"
    mkdir -p "$step"
    cp "$SIPP_DIR/bench-options.xml" "$step/"
    lport=$(free_port)
    echo "== $rate calls/s: $calls calls" >&2
    cpu0=$(gateway_cpu)
    gdrop0=$(gateway_udp_drops)
    mdrop0=$(machine_udp_drops)
    t0=$(date +%s.%N)
    rc=0
    (cd "$step" && timeout -k 5 60 sipp "127.0.0.1:$GW_PORT" -sf bench-options.xml \
        -t u1 -i 127.0.0.1 -p "$lport" \
        -m "$calls" -r "$rate" -l "$rate" -timeout 30s \
        -buff_size 4194304 \
        -trace_rtt -rtt_freq 1 -trace_stat -stf stat.csv -fd 1 \
        -trace_err -error_file errors.log -nostdin \
        >screen.log 2>&1) || rc=$?
    t1=$(date +%s.%N)
    if ! gateway_alive; then
        echo "error: the gateway died during the $rate calls/s step; its output:" >&2
        tail -n 20 "$GW_LOG" | indent >&2
        exit 1
    fi
    drops="$(($(gateway_udp_drops) - gdrop0)) / $(($(machine_udp_drops) - mdrop0))"
    cpu=$(awk -v a="$cpu0" -v b="$(gateway_cpu)" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.0f", 100 * (b - a) / (t1 - t0) }')
    if [[ ! -s "$step/stat.csv" ]]; then
        echo "error: sipp wrote no statistics (exit $rc); its output:" >&2
        tail -n 20 "$step/screen.log" | indent >&2
        exit 1
    fi
    read -r sent ok failed retrans achieved p50 p90 p99 max < <(summarise "$step/stat.csv" "$step/bench-options_*_rtt.csv")
    table+=$'\n'"| $rate | $achieved | $sent | $ok | $failed | $retrans | $drops | $p50 | $p90 | $p99 | $max | $cpu |"
    echo "   sipp exit $rc: sent $sent, ok $ok, failed $failed, retrans $retrans, UDP drops $drops, $achieved calls/s, p50/p90/p99 $p50/$p90/$p99 ms, gateway CPU $cpu%" >&2
    if ((failed > 0 || rc != 0 || sent < calls)); then
        echo "   stop: failures at $rate calls/s (see $step/errors.log)" >&2
        break
    fi
    if ((achieved * 10 < rate * 9)); then
        echo "   stop: achieved $achieved calls/s, under 90% of $rate" >&2
        break
    fi
    best="$rate|$achieved|$p50|$p90|$p99|$retrans"
    ((retrans == 0)) && clean="$rate"
    sleep 2
done

stop_gateway >&2 || echo "warning: gateway exit status $GW_RC after SIGTERM" >&2

echo "$table"
echo
if [[ -n "$best" ]]; then
    IFS='|' read -r rate achieved p50 p90 p99 retrans <<<"$best"
    echo "Highest rate with zero failures: **$rate calls/s** (achieved $achieved/s): p50 $p50 ms, p90 $p90 ms, p99 $p99 ms, $retrans retransmissions."
    if ((retrans > 0)); then
        echo "Highest rate with zero failures and zero retransmissions: ${clean:-none} calls/s."
    fi
else
    echo "No step completed without failures."
fi
echo
echo "SIPp and the gateway ran on the same $(nproc)-core machine over 127.0.0.1 UDP (load average $load0 before the run); response times are SIPp's (millisecond clock, coarse)."
