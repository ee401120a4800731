#!/usr/bin/env bash
# A/B of gateway builds on the PUBLISH path: the same SIPp scenario as run.sh
# (kamailio/scenarios/publish.xml, 40,000 initial PUBLISHes at RATE/s)
# against each binary in turn, ROUNDS times, alternating, on a fresh store
# each time; prints successful calls, retransmissions and the gateway's CPU
# per call. For "is build B slower than build A", where separate runs of
# run.sh differ by more than the effect (docs/performance.md).
#
#   tests/sipp/side-by-side/ab.sh /tmp/gw-before target/release/sip-cpim-gateway
# Env: RATE (default 10000), ROUNDS (default 2). Loopback only.
set -u -o pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"
RATE="${RATE:-10000}"; ROUNDS="${ROUNDS:-2}"
WORK="$(mktemp -d /tmp/ab.XXXXXX)"; PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
gateway_toml "$WORK/g.toml" 15580 18580 "$WORK/store"
cp "$HERE/kamailio/scenarios/publish.xml" "$WORK/"
for _ in $(seq 1 "$ROUNDS"); do
	for bin in "$@"; do
		rm -rf "$WORK/store"
		"$bin" run --config "$WORK/g.toml" > "$WORK/g.log" 2>&1 & PID=$!
		for _ in $(seq 40); do curl -sf 127.0.0.1:18580/readyz > /dev/null && break; sleep 0.1; done
		c0=$(awk '{print $14+$15}' "/proc/$PID/stat")
		(cd "$WORK" && timeout 120 sipp 127.0.0.1:15580 -sf publish.xml -inf "$HERE/kamailio/presentities.csv" \
			-i 127.0.0.1 -p 15680 -m 40000 -r "$RATE" -nostdin -default_behaviors all,-bye \
			-trace_stat -stf ab.csv -fd 1 > /dev/null 2>&1)
		c1=$(awk '{print $14+$15}' "/proc/$PID/stat")
		kill "$PID"; wait "$PID" 2>/dev/null; PID=""
		python3 - "$WORK/ab.csv" "$bin" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';')); h, l = rows[0], rows[-1]
g = lambda k: l[h.index(k)]
ok = int(g('SuccessfulCall(C)')); cpu = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5])
print(f"{sys.argv[2]}  ok={ok} failed={g('FailedCall(C)')} retrans={g('Retransmissions(C)')} us_per_call={1e6 * cpu / max(ok, 1):.0f}")
PY
		rm -f "$WORK/ab.csv"
	done
done
