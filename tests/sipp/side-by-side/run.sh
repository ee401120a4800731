#!/usr/bin/env bash
# Side by side: Kamailio 5.6 presence (memory only) and sip-cpim-gateway (every
# 2xx durable), driven by the SAME SIPp scenarios (kamailio/scenarios), the
# same sipp command line, alternating target per step, in one run. Loopback
# only; every process bounded and stopped by PID. Needs
#   apt-get install -y kamailio kamailio-presence-modules kamailio-sqlite-modules sip-tester sqlite3
# and a release build (cargo build --release). docs/performance.md has the
# figures and how to read them; only ratios from one run compare anything.
#
#   tests/sipp/side-by-side/run.sh publish "4000 6000 8000 10000"
#   tests/sipp/side-by-side/run.sh subscribe "2000 3000 4000"
# Env: GATEWAY_BIN (default ./target/release/sip-cpim-gateway), MAIN (default: the current directory),
#      CALLS (per step, default 5*rate capped at 40000), ROUNDS=1
# Prints one line per (round, rate, target): achieved/s, ok, failed, retrans,
# and the server's resident memory at the end of the step (rss_kb: VmRSS of
# the process and its children; VmHWM, the peak, for the gateway). achieved
# counts successful calls only: past capacity it is the goodput.
set -u -o pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"
KHERE="$HERE/kamailio"
MODE="${1:-publish}"
RATES="${2:-4000 6000 8000}"
ROUNDS="${ROUNDS:-1}"
MAIN="${MAIN:-$(pwd)}"   # run from the project root
GW="${GATEWAY_BIN:-$MAIN/target/release/sip-cpim-gateway}"
WORK="$(mktemp -d /tmp/sbs.XXXXXX)"
KPORT=15070; GPORT=15080; HPORT=18080
KPID=""; GPID=""
cleanup() {
	[ -n "$KPID" ] && kill "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null
	[ -n "$GPID" ] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null
}
trap cleanup EXIT
cpu_ticks() { # user+sys ticks of a pid and its children (threads are in /proc/pid/stat)
	local t=0 p
	for p in "$@" $(for q in "$@"; do ps -o pid= --ppid "$q" 2>/dev/null; done); do
		t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
rss_kb() { # VmRSS of a pid and its children, and the pid's own peak (VmHWM)
	local t=0 p
	for p in "$@" $(for q in "$@"; do ps -o pid= --ppid "$q" 2>/dev/null; done); do
		t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
	done
	echo "$t/peak$(awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null)"
}
start_kam() {
	local db="$WORK/k.sqlite"; rm -f "$db"
	sqlite3 "$db" < /usr/share/kamailio/db_sqlite/standard-create.sql
	sqlite3 "$db" < /usr/share/kamailio/db_sqlite/presence-create.sql
	sed -e "s/127.0.0.1:5070/127.0.0.1:$KPORT/g" "$KHERE/kamailio.cfg" > "$WORK/k.cfg"
	kamailio -f "$WORK/k.cfg" -DD -E -n 4 -m 1024 -M 16 -b 4194304 -Y "$WORK" -P "$WORK/k.pid" \
		-A "DBURL=\"sqlite://$db\"" -A "CTL_SOCK=\"unix:$WORK/kctl\"" >> "$WORK/k.log" 2>&1 &
	KPID=$!
	for _ in $(seq 1 40); do ss -Hlun "sport = :$KPORT" | grep -q . && { sleep 0.5; return 0; }; sleep 0.25; done
	echo "kamailio did not start"; tail "$WORK/k.log"; exit 1
}
stop_kam() { kill "$KPID" 2>/dev/null; wait "$KPID" 2>/dev/null; KPID=""; }
start_gw() {
	rm -rf "$WORK/store"
	gateway_toml "$WORK/g.toml" "$GPORT" "$HPORT" "$WORK/store"
	"$GW" run --config "$WORK/g.toml" >> "$WORK/g.log" 2>&1 &
	GPID=$!
	for _ in $(seq 1 40); do curl -sf "127.0.0.1:$HPORT/readyz" >/dev/null 2>&1 && return 0; sleep 0.25; done
	echo "gateway did not start"; tail "$WORK/g.log"; exit 1
}
stop_gw() { kill "$GPID" 2>/dev/null; wait "$GPID" 2>/dev/null; GPID=""; }
# sipp_step TARGET PORT SCENARIO CSV RATE CALLS -> prints a result line
sipp_step() {
	local who=$1 port=$2 sc=$3 csv=$4 rate=$5 calls=$6 d="$WORK/$1-$3-$5-$RANDOM" tmo pid
	mkdir -p "$d"; cp "$KHERE/scenarios/$sc" "$d/"
	tmo=$((calls * 3 / rate + 30))
	if [ "$who" = kam ]; then pid=$KPID; else pid=$GPID; fi
	local c0; c0=$(cpu_ticks "$pid")
	local t0; t0=$(date +%s.%N)
	(cd "$d" && timeout -k 10 $((tmo + 30)) sipp "127.0.0.1:$port" -sf "$sc" -inf "$csv" \
		-i 127.0.0.1 -p $((port + 100)) -m "$calls" -r "$rate" -timeout "${tmo}s" -timeout_error \
		-recv_timeout 10s -nostdin -default_behaviors all,-bye -buff_size 4194304 \
		-max_non_invite_retrans 5 -trace_stat -stf stat.csv -fd 1 > sipp.out 2>&1)
	local rc=$?
	local t1; t1=$(date +%s.%N)
	local c1; c1=$(cpu_ticks "$pid")
	local rss; rss=$(rss_kb "$pid")
	python3 - "$d/stat.csv" "$who" "$sc" "$rate" "$rc" "$c0" "$c1" "$(getconf CLK_TCK)" "$rss" <<'EOF'
import csv, sys
path, who, sc, rate, rc, c0, c1, hz, rss = sys.argv[1:]
rows = list(csv.reader(open(path), delimiter=';'))
h, last = rows[0], rows[-1]
g = lambda k: last[h.index(k)]
ok, fail = int(g("SuccessfulCall(C)")), int(g("FailedCall(C)"))
t = float(g("CurrentTime").split()[-1]) - float(g("StartTime").split()[-1])
retr = int(g("Retransmissions(C)"))
# Past capacity: a 503 is an answer (refused), a timeout is not (unanswered).
col = lambda k: int(g(k)) if k in h else 0
unanswered = col("FailedMaxUDPRetrans(C)") + col("FailedTimeoutOnRecv(C)") + col("FailedCallTimeout(C)")
refused = col("FailedUnexpectedMessage(C)")
cpu = (int(c1) - int(c0)) / int(hz)
ach = ok / t if t else 0
print(f"{who:3} {sc:14} target={rate:>6}/s achieved={ach:8.0f}/s ok={ok} failed={fail} "
      f"(refused={refused} unanswered={unanswered}) retrans={retr} "
      f"server_cpu_s={cpu:.1f} us_per_call={1e6*cpu/max(ok,1):.0f} rss_kb={rss} rc={rc}")
EOF
}
for round in $(seq 1 "$ROUNDS"); do
	for rate in $RATES; do
		calls=$((rate * 5)); [ "$calls" -gt 40000 ] && calls=40000
		calls=$(( (calls / 100) * 100 ))
		for who in kam gw; do
			if [ "$who" = kam ]; then start_kam; port=$KPORT; else start_gw; port=$GPORT; fi
			if [ "$MODE" = subscribe ]; then
				sipp_step "$who" "$port" publish.xml "$KHERE/presentities.csv" 2000 "$calls" > /dev/null
				sipp_step "$who" "$port" subscribe.xml "$KHERE/subscriptions.csv" "$rate" "$calls"
			else
				sipp_step "$who" "$port" publish.xml "$KHERE/presentities.csv" "$rate" "$calls"
			fi
			if [ "$who" = kam ]; then stop_kam; else stop_gw; fi
			sleep 1
		done
	done
done
rm -rf "$WORK"
