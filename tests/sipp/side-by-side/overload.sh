#!/usr/bin/env bash
# Overload (issue 16): the gateway past its capacity. On a 2-core machine
# SIPp cannot offer twice what the gateway serves with both cores, so the
# gateway is pinned to one core (taskset) and SIPp to the other: the
# gateway's capacity halves and the generator keeps a core of its own.
#
# 1. A ladder of 5 s steps (fresh store each) finds the highest clean rate C
#    (no failed call, ≥ 95 % of the offered rate, no retransmission).
# 2. 2·C is offered for OVERLOAD_S seconds. Reported: goodput (successful
#    calls per second), refused (answered 503: an answer), unanswered (SIPp
#    gave up after its retransmissions), retransmissions, the gateway's CPU
#    and its memory (VmRSS at the end, VmHWM peak) against the clean step.
#
#   tests/sipp/side-by-side/overload.sh publish "4000 6000 8000 10000 12000"
#   tests/sipp/side-by-side/overload.sh subscribe "1000 2000 3000 4000"
# Env: GATEWAY_BIN, CPU_GATEWAY (1), CPU_SIPP (0), OVERLOAD_S (10),
# OVERLOAD_RATE (default twice the clean rate: set it to compare runs).
# The same unmodified scenarios as run.sh (kamailio/scenarios). Loopback
# only; every process stopped by PID.
set -u -o pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"
KHERE="$HERE/kamailio"
MODE="${1:-publish}"
RATES="${2:-4000 6000 8000 10000 12000}"
MAIN="${MAIN:-$(pwd)}"
GW="${GATEWAY_BIN:-$MAIN/target/release/sip-cpim-gateway}"
CPU_GATEWAY="${CPU_GATEWAY:-1}"; CPU_SIPP="${CPU_SIPP:-0}"; OVERLOAD_S="${OVERLOAD_S:-10}"
WORK="$(mktemp -d /tmp/overload.XXXXXX)"
GPORT=15090; HPORT=18090; GPID=""
cleanup() { [ -n "$GPID" ] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
start_gw() {
	rm -rf "$WORK/store"
	gateway_toml "$WORK/g.toml" "$GPORT" "$HPORT" "$WORK/store"
	taskset -c "$CPU_GATEWAY" "$GW" run --config "$WORK/g.toml" >> "$WORK/g.log" 2>&1 &
	GPID=$!
	for _ in $(seq 1 40); do curl -sf "127.0.0.1:$HPORT/readyz" >/dev/null 2>&1 && return 0; sleep 0.25; done
	echo "gateway did not start"; tail "$WORK/g.log"; exit 1
}
stop_gw() { kill "$GPID" 2>/dev/null; wait "$GPID" 2>/dev/null; GPID=""; }
ticks() { awk '{print $14+$15}' "/proc/$GPID/stat"; }
mem() { awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {print r" "h}' "/proc/$GPID/status"; }
# step SCENARIO CSV RATE CALLS -> "ok failed refused unanswered retrans seconds cpu_s rss_kb hwm_kb"
step() {
	local sc=$1 csv=$2 rate=$3 calls=$4 d="$WORK/$1-$3-$RANDOM"
	mkdir -p "$d"; cp "$KHERE/scenarios/$sc" "$d/"
	local c0; c0=$(ticks)
	(cd "$d" && taskset -c "$CPU_SIPP" timeout -k 10 $((calls / rate + 90)) sipp "127.0.0.1:$GPORT" -sf "$sc" \
		-inf "$csv" -i 127.0.0.1 -p $((GPORT + 100)) -m "$calls" -r "$rate" -timeout "$((calls / rate + 60))s" \
		-recv_timeout 10s -nostdin -default_behaviors all,-bye -buff_size 4194304 \
		-max_non_invite_retrans 5 -trace_stat -stf stat.csv -fd 1 > sipp.out 2>&1)
	local c1; c1=$(ticks)
	python3 - "$d/stat.csv" "$c0" "$c1" "$(getconf CLK_TCK)" "$(mem)" <<'PY'
import csv, sys
path, c0, c1, hz, mem = sys.argv[1:]
rows = list(csv.reader(open(path), delimiter=';'))
h, last = rows[0], rows[-1]
g = lambda k: last[h.index(k)]
col = lambda k: int(g(k)) if k in h else 0
t = float(g("CurrentTime").split()[-1]) - float(g("StartTime").split()[-1])
unanswered = col("FailedMaxUDPRetrans(C)") + col("FailedTimeoutOnRecv(C)") + col("FailedCallTimeout(C)")
print(col("SuccessfulCall(C)"), col("FailedCall(C)"), col("FailedUnexpectedMessage(C)"), unanswered,
      col("Retransmissions(C)"), f"{t:.1f}", f"{(int(c1) - int(c0)) / int(hz):.1f}", mem)
PY
}
run_step() { # RATE CALLS -> result line, with the dialog mode's PUBLISH preload
	if [ "$MODE" = subscribe ]; then
		step publish.xml "$KHERE/presentities.csv" 2000 20000 > /dev/null
		step subscribe.xml "$KHERE/subscriptions.csv" "$1" "$2"
	else
		step publish.xml "$KHERE/presentities.csv" "$1" "$2"
	fi
}
echo "gateway on CPU $CPU_GATEWAY, SIPp on CPU $CPU_SIPP; mode $MODE"
clean=0; clean_line=""
for rate in $RATES; do
	start_gw
	read -r ok failed refused unanswered retrans secs cpu rss hwm < <(run_step "$rate" $((rate * 5)))
	stop_gw
	achieved=$(python3 -c "print(round($ok / $secs))")
	echo "ladder $rate/s: achieved $achieved/s ok $ok failed $failed (refused $refused unanswered $unanswered) retrans $retrans cpu ${cpu}s rss ${rss} kB peak ${hwm} kB"
	if [ "$failed" -gt 0 ] || [ "$retrans" -gt 0 ] || [ $((achieved * 100)) -lt $((rate * 95)) ]; then break; fi
	clean=$rate; clean_line="rss ${rss} kB peak ${hwm} kB at $achieved/s"
done
[ "$clean" -gt 0 ] || { echo "no clean step"; exit 1; }
over=${OVERLOAD_RATE:-$((clean * 2))}
start_gw
read -r ok failed refused unanswered retrans secs cpu rss hwm < <(run_step "$over" $((over * OVERLOAD_S)))
stop_gw
goodput=$(python3 -c "print(round($ok / $secs))")
echo "clean: $clean/s ($clean_line)"
echo "overload: offered $over/s for $((over * OVERLOAD_S)) calls: goodput $goodput/s = $(python3 -c "print(f'{100 * $goodput / $clean:.0f}')") % of clean; ok $ok, refused (503) $refused, unanswered $unanswered, retrans $retrans, gateway CPU ${cpu}s over ${secs}s, rss ${rss} kB, peak ${hwm} kB"
