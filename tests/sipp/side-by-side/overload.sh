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
# OVERLOAD_RATE (default twice the clean rate: set it to compare runs),
# CLEAN (skip the ladder and take this as the clean rate, for repeated
# overload runs against a capacity measured before), KEEP=1 (keep the work
# directory: the gateway's log, e.g. with
# RUST_LOG=warn,sip_cpim_gateway::transaction::server=debug for each
# refusal's age and expected wait, and SIPp's files),
# FLOOR=1 (then offer the same rate to examples/refusal_floor.rs, the least a
# refusal can cost here, and print the goodput bound that follows; with
# FLOOR_ARGS=--batch it reads and answers with recvmmsg and sendmmsg),
# CPU_SHARE (100: the percentage of its core the gateway may use, by a CFS
# quota in its own cgroup, v1 or v2; lower it when SIPp cannot offer 2·C).
# GATEWAY_TOML_EXTRA (appended to the gateway's configuration, lib.sh: a
# setting to try, e.g. $'[sip.overload]\nmax_queue_delay_ms = 150').
# SIPP_ARGS (added to every sipp command, e.g. -trace_err with KEEP=1 to see
# which calls failed and on what).
# The overload line also gives the datagrams the kernel dropped at the
# gateway's socket (its receive buffer full: /proc/net/udp "drops").
#
# The overload figure is the gateway's only while SIPp keeps up and the
# gateway is saturated: a step in which SIPp used over 90 % of its core, or
# that took more than 10 % over OVERLOAD_S, is reported "generator-bound"
# (SIPp's core was the limit, and its late reads turn into retransmissions),
# a gateway below 90 % of its CPU share "not saturated".
# CPU_SHARE=50 halves what the gateway serves, so that SIPp can offer twice
# of it.
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
CPU_GATEWAY="${CPU_GATEWAY:-1}"; CPU_SIPP="${CPU_SIPP:-0}"; OVERLOAD_S="${OVERLOAD_S:-10}"; FLOOR="${FLOOR:-0}"
CPU_SHARE="${CPU_SHARE:-100}"; CGROUP=""
WORK="$(mktemp -d /tmp/overload.XXXXXX)"
GPORT=15090; HPORT=18090; GPID=""
cleanup() {
	[ -n "$GPID" ] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null
	[ -n "$CGROUP" ] && rmdir "$CGROUP" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
# share PID: PID and its threads get CPU_SHARE % of a core (10 ms periods).
share() {
	[ "$CPU_SHARE" -lt 100 ] || return 0
	local quota=$((CPU_SHARE * 100))
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		CGROUP=/sys/fs/cgroup/sipgw-overload-$$
		mkdir -p "$CGROUP" && echo "$quota 10000" > "$CGROUP/cpu.max"
	else
		CGROUP=/sys/fs/cgroup/cpu/sipgw-overload-$$
		mkdir -p "$CGROUP" && echo 10000 > "$CGROUP/cpu.cfs_period_us" && echo "$quota" > "$CGROUP/cpu.cfs_quota_us"
	fi || { echo "cannot set a CPU quota (cgroup $CGROUP)"; exit 1; }
	echo "$1" > "$CGROUP/cgroup.procs" || { echo "cannot move $1 into $CGROUP"; exit 1; }
}
trap cleanup EXIT
start_gw() {
	rm -rf "$WORK/store"
	gateway_toml "$WORK/g.toml" "$GPORT" "$HPORT" "$WORK/store"
	taskset -c "$CPU_GATEWAY" "$GW" run --config "$WORK/g.toml" >> "$WORK/g.log" 2>&1 &
	GPID=$!
	share "$GPID"
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
	# shellcheck disable=SC2086 # SIPP_ARGS: words
	(cd "$d" && taskset -c "$CPU_SIPP" timeout -k 10 $((calls / rate + 90)) sipp "127.0.0.1:$GPORT" -sf "$sc" \
		-inf "$csv" -i 127.0.0.1 -p $((GPORT + 100)) -m "$calls" -r "$rate" -timeout "$((calls / rate + 60))s" \
		-recv_timeout 10s -nostdin -default_behaviors all,-bye -buff_size 4194304 \
		-max_non_invite_retrans 5 -trace_stat -stf stat.csv -fd 1 ${SIPP_ARGS:-} > sipp.out 2>&1; times > times.txt)
	local c1; c1=$(ticks)
	python3 - "$d/stat.csv" "$c0" "$c1" "$(getconf CLK_TCK)" "$(mem)" "$d/times.txt" <<'PY'
import csv, re, sys
path, c0, c1, hz, mem, times = sys.argv[1:]
# SIPp's CPU: the second line of `times` (the subshell's children).
sipp_cpu = sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", open(times).read().splitlines()[1]))
rows = list(csv.reader(open(path), delimiter=';'))
h, last = rows[0], rows[-1]
g = lambda k: last[h.index(k)]
col = lambda k: int(g(k)) if k in h else 0
t = float(g("CurrentTime").split()[-1]) - float(g("StartTime").split()[-1])
unanswered = col("FailedMaxUDPRetrans(C)") + col("FailedTimeoutOnRecv(C)") + col("FailedCallTimeout(C)")
print(col("SuccessfulCall(C)"), col("FailedCall(C)"), col("FailedUnexpectedMessage(C)"), unanswered,
      col("Retransmissions(C)"), f"{t:.1f}", f"{(int(c1) - int(c0)) / int(hz):.1f}", f"{sipp_cpu:.1f}", mem)
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
echo "gateway on CPU $CPU_GATEWAY ($CPU_SHARE % of it), SIPp on CPU $CPU_SIPP; mode $MODE"
clean=${CLEAN:-0}; clean_line="given"
[ "$clean" -gt 0 ] && RATES=""
for rate in $RATES; do
	start_gw
	read -r ok failed refused unanswered retrans secs cpu scpu rss hwm < <(run_step "$rate" $((rate * 5)))
	stop_gw
	achieved=$(python3 -c "print(round($ok / $secs))")
	echo "ladder $rate/s: achieved $achieved/s ok $ok failed $failed (refused $refused unanswered $unanswered) retrans $retrans cpu ${cpu}s (SIPp ${scpu}s) rss ${rss} kB peak ${hwm} kB"
	if [ "$failed" -gt 0 ] || [ "$retrans" -gt 0 ] || [ $((achieved * 100)) -lt $((rate * 95)) ]; then break; fi
	clean=$rate; clean_line="rss ${rss} kB peak ${hwm} kB at $achieved/s"
done
[ "$clean" -gt 0 ] || { echo "no clean step"; exit 1; }
over=${OVERLOAD_RATE:-$((clean * 2))}
start_gw
read -r ok failed refused unanswered retrans secs cpu scpu rss hwm < <(run_step "$over" $((over * OVERLOAD_S)))
curl -sf "127.0.0.1:$HPORT/metrics" > "$WORK/metrics.txt"
# The gateway's socket: 127.0.0.1:GPORT in hex, drops the last column.
drops=$(awk -v a="$(printf '0100007F:%04X' "$GPORT")" '$2 == a {print $NF}' /proc/net/udp)
stop_gw
goodput=$(python3 -c "print(round($ok / $secs))")
echo "clean: $clean/s ($clean_line)"
echo "overload: offered $over/s for $((over * OVERLOAD_S)) calls: goodput $goodput/s = $(python3 -c "print(f'{100 * $goodput / $clean:.0f}')") % of clean; ok $ok, refused (503) $refused, unanswered $unanswered, retrans $retrans, gateway CPU ${cpu}s over ${secs}s, SIPp CPU ${scpu}s, rss ${rss} kB, peak ${hwm} kB, socket drops ${drops:-?}"
# Where the gateway's work went: what it shed and where, and (dialogs) how
# many served SUBSCRIBEs were wasted by a refusal of their un-SUBSCRIBE (every
# SUBSCRIBE answered 200 is a served initial one or the un-SUBSCRIBE of a
# dialog that completed).
python3 - "$MODE" "$ok" "$WORK/metrics.txt" <<'PY'
import re, sys
mode, ok, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
wanted = ("sipgw_sip_requests_shed_total", "sipgw_sip_responses_sent_total", "sipgw_sip_retransmissions_total",
          "sipgw_store_flush_seconds_count", "sipgw_store_batches_total")
m = {k: float(v) for k, v in (line.rsplit(" ", 1) for line in open(path) if line.startswith(wanted))}
label = lambda name, k: re.search(name + '="([^"]+)"', k).group(1)
shed = {label("stage", k): int(v) for k, v in m.items() if k.startswith(wanted[0])}
rtx = {label("direction", k): int(v) for k, v in m.items() if k.startswith(wanted[2])}
total = lambda prefix: int(sum(v for k, v in m.items() if k.startswith(prefix)))
print(f"shed by stage {shed}, retransmissions {rtx}, group commits since start {total(wanted[3])} for {total(wanted[4])} batches")
if mode == "subscribe":
    sub200 = sum(int(v) for k, v in m.items()
                 if k.startswith(wanted[1]) and 'method="SUBSCRIBE"' in k and 'code="200"' in k)
    print(f"served dialogs lost to a refused un-SUBSCRIBE: {sub200 - 2 * ok}")
PY
python3 - "$secs" "$cpu" "$OVERLOAD_S" "$CPU_SHARE" "$over" "$scpu" <<'PY'
import sys
secs, cpu, want, share, over, scpu = map(float, sys.argv[1:])
if scpu > 0.9 * secs:
    print(f"generator-bound: SIPp used {scpu}s of CPU in {secs}s, its whole core: its late reads "
          f"become retransmissions (try CPU_SHARE=50)")
elif secs > 1.1 * want:
    print(f"generator-bound: the step took {secs}s for {want:.0f}s of calls: SIPp could not offer "
          f"{over:.0f}/s and read its answers in time (try CPU_SHARE=50)")
elif cpu < 0.9 * secs * share / 100:
    print(f"not saturated: the gateway used {cpu}s of CPU in {secs}s at {share:.0f} % of a core: "
          f"{over:.0f}/s is within its capacity, or SIPp could not offer it")
PY
[ "$FLOOR" = 1 ] || exit 0
# The floor (FLOOR=1): examples/refusal_floor.rs on the gateway's core, offered
# the same rate. It answers every request 503 and does nothing else, so its
# CPU per answer F is about the least a refusal costs here: the kernel's
# receive and send (and its wake-ups when the socket runs dry, counted).
#
# The bound: a core that serves calls at S each and refuses the rest at F or
# more, offered twice its capacity (its share over S), serves at most
# (1 - 2F/S) / (1 - F/S) of that capacity. S at saturation is not measured directly (the clean step
# also pays for idle wake-ups), but the overload run gives an upper bound,
# S <= (CPU - refusals * F) / served, and the bound grows with S: so it is
# printed with that S, and no server refusing at F or more beats it here.
cargo build -q --release --example refusal_floor --manifest-path "$MAIN/Cargo.toml" || exit 1
case "$MODE" in subscribe) sc=subscribe.xml csv="$KHERE/subscriptions.csv" ;; *) sc=publish.xml csv="$KHERE/presentities.csv" ;; esac
# shellcheck disable=SC2086 # FLOOR_ARGS: words
taskset -c "$CPU_GATEWAY" "$MAIN/target/release/examples/refusal_floor" "127.0.0.1:$GPORT" ${FLOOR_ARGS:-} &
GPID=$!
share "$GPID"
sleep 0.5
read -r _ _ f_refused f_unanswered f_retrans f_secs f_cpu _ < <(step "$sc" "$csv" "$over" $((over * OVERLOAD_S)))
switches=$(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$GPID/status")
stop_gw
python3 - "$over" "$clean" "$cpu" "$ok" "$refused" "$retrans" "$f_cpu" "$f_refused" "$f_retrans" \
	"$f_unanswered" "$f_secs" "$switches" "$CPU_SHARE" <<'PY'
import sys
over, clean, gcpu, gok, grefused, gretrans, fcpu, frefused, fretrans, funans, fsecs, sw, share = map(float, sys.argv[1:])
F = fcpu / (frefused + fretrans)
print(f"floor: offered {over:.0f}/s for {fsecs:.1f}s: answered 503 {frefused:.0f}, unanswered {funans:.0f}, "
      f"retrans {fretrans:.0f}, CPU {fcpu:.1f}s, {sw:.0f} voluntary switches; F = {F * 1e6:.1f} us per refusal")
S = (gcpu - (grefused + gretrans) * F) / gok if gok else 0
if S <= F:
    sys.exit("bound: none (no call served, or refusals alone account for the CPU)")
bound = (1 - 2 * F / S) / (1 - F / S)
print(f"bound: a served call costs at most S = {S * 1e6:.1f} us (capacity at least {share / 100 / S:.0f}/s), so F/S is at "
      f"least {F / S:.3f}: offered twice its capacity, a core that answers every request serves at most "
      f"{100 * bound:.0f} % of it")
PY
