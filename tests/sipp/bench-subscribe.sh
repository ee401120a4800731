#!/usr/bin/env bash
# SUBSCRIBE dialog load benchmark (a script, not a test): SIPp runs whole
# presence subscription dialogs (bench-subscribe.xml: SUBSCRIBE → 200, NOTIFY
# → 200, un-SUBSCRIBE → 200, final NOTIFY → 200) over UDP at rising rates
# against a release gateway on 127.0.0.1.
#
#   tests/sipp/bench-subscribe.sh                 # 500 1000 2000 3000 dialogs/s
#   tests/sipp/bench-subscribe.sh 1500 2500       # other rates
#
# Each step runs min(5 x rate, 60000) dialogs (-m), at most `rate` in
# progress (-l), with a 30 s cap (-timeout). A dialog succeeds only when all
# four exchanges complete as expected; the gateway answers and notifies after
# each change is durable in its store (two commits per dialog). SIPp runs
# with -nd: a failed dialog is not followed by a BYE (which the gateway would
# answer 405, adding load). One gateway serves every step; dialog identities
# are never reused. The run stops at the first step with a failed dialog, or
# whose achieved rate is below 90% of the target. Prints a markdown table on
# stdout (progress on stderr); writes nothing into the repository.
# BENCH_QUIET_WAIT=0 skips waiting for a quiet machine (default: up to 600 s).
set -euo pipefail

# shellcheck source=SCRIPTDIR/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

if (($# > 0)); then rates=("$@"); else rates=(500 1000 2000 3000); fi
check_rates "${rates[@]}"
require_sipp
bench_setup bench-subscribe

ensure_binary >&2
bench_wait_quiet >&2
machine=$(bench_machine)
bench_start_gateway >&2

table="| target dialogs/s | achieved/s | dialogs | completed | failed | retransmissions | UDP drops: gateway / all | SUBSCRIBE→200 p50 / p90 / p99 / max ms | un-SUBSCRIBE→200 p50 / p90 / p99 ms | whole dialog p50 / p90 / p99 / max ms | gateway CPU (% of 1 core) | SIPp CPU (% of 1 core) |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
best=""
clean=""
for rate in "${rates[@]}"; do
    calls=$((rate * 5))
    ((calls > 60000)) && calls=60000
    step="$WORK/step-$rate"
    mkdir -p "$step"
    cp "$SIPP_DIR/bench-subscribe.xml" "$step/"
    lport=$(free_port)
    echo "== $rate dialogs/s: $calls dialogs" >&2
    cpu0=$(gateway_cpu)
    gdrop0=$(gateway_udp_drops)
    mdrop0=$(machine_udp_drops)
    t0=$(date +%s.%N)
    rc=0
    (cd "$step" && timeout -k 5 60 /usr/bin/time -o time.txt -f "%U %S" sipp "127.0.0.1:$GW_PORT" -sf bench-subscribe.xml \
        -t u1 -i 127.0.0.1 -p "$lport" -key run "r$rate" \
        -m "$calls" -r "$rate" -l "$rate" -timeout 30s \
        -buff_size 4194304 \
        -trace_rtt -rtt_freq 1 -trace_stat -stf stat.csv -fd 1 \
        -trace_err -error_file errors.log -nostdin -nd \
        >screen.log 2>&1) || rc=$?
    t1=$(date +%s.%N)
    if ! gateway_alive; then
        echo "error: the gateway died during the $rate dialogs/s step; its output:" >&2
        tail -n 20 "$GW_LOG" | indent >&2
        exit 1
    fi
    drops="$(($(gateway_udp_drops) - gdrop0)) / $(($(machine_udp_drops) - mdrop0))"
    cpu=$(cpu_percent "$cpu0" "$(gateway_cpu)" "$t0" "$t1")
    scpu=$(sipp_cpu_percent "$step/time.txt" "$t0" "$t1")
    if [[ ! -s "$step/stat.csv" ]]; then
        echo "error: sipp wrote no statistics (exit $rc); its output:" >&2
        tail -n 20 "$step/screen.log" | indent >&2
        exit 1
    fi
    read -r sent ok failed retrans achieved \
        s50 s90 s99 smax u50 u90 u99 _ d50 d90 d99 dmax \
        < <(sipp_summary "$step/stat.csv" "$step/bench-subscribe_*_rtt.csv" 1 2 3)
    table+=$'\n'"| $rate | $achieved | $sent | $ok | $failed | $retrans | $drops | $s50 / $s90 / $s99 / $smax | $u50 / $u90 / $u99 | $d50 / $d90 / $d99 / $dmax | $cpu | $scpu |"
    echo "   sipp exit $rc: dialogs $sent, ok $ok, failed $failed, retrans $retrans, UDP drops $drops, $achieved/s, SUBSCRIBE p50/p99 $s50/$s99 ms, dialog p50/p99 $d50/$d99 ms, gateway CPU $cpu%, SIPp CPU $scpu%" >&2
    if ((failed > 0 || rc != 0 || sent < calls)); then
        echo "   stop: failures at $rate dialogs/s (see $step/errors.log)" >&2
        BENCH_KEEP=1
        break
    fi
    if ((achieved * 10 < rate * 9)); then
        echo "   stop: achieved $achieved/s, under 90% of $rate" >&2
        break
    fi
    best="$rate|$achieved|$d50|$d90|$d99|$retrans"
    ((retrans == 0)) && clean="$rate"
    sleep 2
done

stop_gateway >&2 || echo "warning: gateway exit status $GW_RC after SIGTERM" >&2

echo "$table"
echo
if [[ -n "$best" ]]; then
    IFS='|' read -r rate achieved p50 p90 p99 retrans <<<"$best"
    echo "Highest rate with zero failures: **$rate dialogs/s** (achieved $achieved/s, i.e. $((rate * 8)) SIP messages/s): whole dialog p50 $p50 ms, p90 $p90 ms, p99 $p99 ms, $retrans retransmissions."
    if ((retrans > 0)); then
        echo "Highest rate with zero failures and zero retransmissions: ${clean:-none} dialogs/s."
    fi
else
    echo "No step completed without failures."
fi
echo
echo "SIPp and the gateway shared the machine over 127.0.0.1 UDP: $machine. Response times are SIPp's (millisecond clock, coarse)."
