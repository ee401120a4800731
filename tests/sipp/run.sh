#!/usr/bin/env bash
# SIPp conformance scenarios against a real gateway process.
#
#   tests/sipp/run.sh            # every tests/sipp/*.xml except bench-*, then every cases/*.sh
#   tests/sipp/run.sh options    # only options.xml (names without .xml)
#   tests/sipp/run.sh seed-10.3  # only the case cases/seed-10.3.sh
#
# Single-UAC scenarios (tests/sipp/*.xml): starts target/release/sip-cpim-gateway
# (built if missing) on free loopback ports, runs each scenario over UDP (-t u1)
# and TCP (-t t1), stops the gateway with SIGTERM and expects exit status 0. A
# scenario can restrict its transports with a comment such as
# <!-- transports: udp -->.
# Multi-party cases (tests/sipp/cases/*.sh): each runs through run-case.sh with
# its own gateway (and SIPp instances, adapter, curl calls), once per transport
# named in its "# transports: udp tcp" line (default udp), bounded by
# CASE_TIMEOUT seconds (default 120). A case marked "# expect: fail (why)" is
# a known gateway bug: its failure prints XFAIL and is not counted as failed
# (provided its log contains the text of its "# expect-fail-match: TEXT"
# line, if any); its success prints XPASS and counts as failed (remove the
# marker).
# Ends with the line "N passed, M failed"; exits non-zero if M > 0.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

CALLS=20
RATE=10

command -v sipp >/dev/null || {
    echo "error: sipp not found (Debian: apt-get install sip-tester)" >&2
    exit 2
}

# Selection: all *.xml but bench-* and all cases/*.sh, or the names given.
scenarios=()
cases=()
if (($# == 0)); then
    for f in "$SIPP_DIR"/*.xml; do
        case "$(basename "$f")" in bench-*) continue ;; esac
        scenarios+=("$f")
    done
    for f in "$SIPP_DIR"/cases/*.sh; do
        [[ -f "$f" ]] && cases+=("$f")
    done
else
    for name in "$@"; do
        name=${name%.xml}
        name=${name%.sh}
        name=${name#cases/}
        if [[ -f "$SIPP_DIR/$name.xml" ]]; then
            scenarios+=("$SIPP_DIR/$name.xml")
        elif [[ -f "$SIPP_DIR/cases/$name.sh" ]]; then
            cases+=("$SIPP_DIR/cases/$name.sh")
        else
            echo "error: no scenario $SIPP_DIR/$name.xml and no case $SIPP_DIR/cases/$name.sh" >&2
            exit 2
        fi
    done
fi
((${#scenarios[@]} + ${#cases[@]} > 0)) || {
    echo "error: no scenarios in $SIPP_DIR" >&2
    exit 2
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipp-run.XXXXXX")
passed=0
failed=0
xfailed=0
CASE_TIMEOUT=${CASE_TIMEOUT:-120}

cleanup() {
    local rc=$?
    if [[ -n "$GW_PID" ]]; then
        stop_gateway || true
    fi
    if ((rc == 0 && failed == 0)); then
        rm -rf "$WORK"
    else
        echo "logs kept in $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_binary
if ((${#scenarios[@]} > 0)); then
    start_gateway || {
        echo "0 passed, 1 failed"
        exit 1
    }
fi

# transports_of FILE [DEFAULT]: DEFAULT ("udp tcp") unless the file says
# <!-- transports: ... --> (scenarios) or "# transports: ..." (cases).
transports_of() {
    local t
    t=$(grep -oiE '(<!--|^#)[[:space:]]*transports:[^-]*' "$1" | head -n1 | sed -E 's/.*transports:[[:space:]]*//' | tr ',A-Z' ' a-z' || true)
    echo "${t:-${2:-udp tcp}}"
}

for f in "${scenarios[@]}"; do
    name=$(basename "$f" .xml)
    for transport in $(transports_of "$f"); do
        case "$transport" in
            udp) mode=u1 ;;
            tcp) mode=t1 ;;
            *)
                echo "FAIL $name $transport: unknown transport in $f"
                failed=$((failed + 1))
                continue
                ;;
        esac
        if ! gateway_alive; then
            echo "FAIL $name $transport: the gateway is not running (crashed?)"
            failed=$((failed + 1))
            continue
        fi
        out="$WORK/$name-$transport"
        lport=$(free_port)
        rc=0
        # -timeout bounds SIPp itself; timeout(1) is the backstop.
        (cd "$WORK" && timeout -k 5 60 sipp "127.0.0.1:$GW_PORT" -sf "$f" \
            -t "$mode" -i 127.0.0.1 -p "$lport" \
            -m "$CALLS" -r "$RATE" -timeout 20s -timeout_error \
            -trace_err -error_file "$out.errors.log" -nostdin \
            >"$out.screen.log" 2>&1) || rc=$?
        if ((rc == 0)); then
            echo "PASS $name $transport"
            passed=$((passed + 1))
        else
            echo "FAIL $name $transport (sipp exit $rc)"
            failed=$((failed + 1))
            grep -E 'Successful call|Failed call' "$out.screen.log" | indent || true
            if [[ -s "$out.errors.log" ]]; then
                echo "  sipp errors (first 40 lines of $out.errors.log):"
                head -n 40 "$out.errors.log" | indent
            else
                echo "  sipp output (last 20 lines):"
                tail -n 20 "$out.screen.log" | indent
            fi
        fi
    done
done

# The gateway must survive the scenarios and exit 0 on SIGTERM.
if ((${#scenarios[@]} > 0)); then
    if stop_gateway; then
        echo "PASS gateway exits 0 on SIGTERM"
        passed=$((passed + 1))
    else
        echo "FAIL gateway exit status $GW_RC after SIGTERM (want 0); its output (last 20 lines):"
        tail -n 20 "$GW_LOG" | indent
        failed=$((failed + 1))
    fi
fi

# Multi-party cases, one run-case.sh process (own gateway) per case and transport.
for f in "${cases[@]}"; do
    name=$(basename "$f" .sh)
    xfail=$(sed -nE 's/^#[[:space:]]*expect:[[:space:]]*fail[[:space:]]*//p' "$f" | head -n1)
    xfail_marked=$(grep -cE '^#[[:space:]]*expect:[[:space:]]*fail' "$f" || true)
    xfail_match=$(sed -nE 's/^#[[:space:]]*expect-fail-match:[[:space:]]*//p' "$f" | head -n1)
    for transport in $(transports_of "$f" udp); do
        case "$transport" in
            udp | tcp) ;;
            *)
                echo "FAIL case $name $transport: unknown transport in $f"
                failed=$((failed + 1))
                continue
                ;;
        esac
        cwork="$WORK/case-$name-$transport"
        mkdir -p "$cwork"
        start=$(date +%s.%N)
        rc=0
        # run-case.sh stops what it started on exit; timeout(1) bounds it
        # (SIGTERM to its process group, SIGKILL 15 s later: its cleanup may wait
        # for the gateway's graceful stop).
        timeout -k 15 "$CASE_TIMEOUT" "$SIPP_DIR/run-case.sh" "$f" "$transport" "$cwork" \
            >"$cwork/case.log" 2>&1 </dev/null || rc=$?
        secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        if ((xfail_marked > 0)); then
            if ((rc != 0)) && [[ -n "$xfail_match" ]] && ! grep -qF -- "$xfail_match" "$cwork/case.log"; then
                echo "FAIL case $name $transport (${secs} s, exit $rc): failed, but its log lacks the expected '$xfail_match'"
                failed=$((failed + 1))
                echo "  case log (last 40 lines of $cwork/case.log):"
                tail -n 40 "$cwork/case.log" | indent
            elif ((rc != 0)); then
                echo "XFAIL case $name $transport (${secs} s): expected failure ${xfail}"
                grep -E '^FAIL: ' "$cwork/case.log" | head -n 3 | indent || true
                xfailed=$((xfailed + 1))
            else
                echo "FAIL case $name $transport (${secs} s): XPASS, passed although marked 'expect: fail'; remove the marker"
                failed=$((failed + 1))
            fi
        elif ((rc == 0)); then
            echo "PASS case $name $transport (${secs} s)"
            passed=$((passed + 1))
        else
            if ((rc == 124 || rc == 137)); then
                echo "FAIL case $name $transport (${secs} s): timed out after ${CASE_TIMEOUT} s"
            else
                echo "FAIL case $name $transport (${secs} s, exit $rc)"
            fi
            failed=$((failed + 1))
            echo "  case log (last 40 lines of $cwork/case.log):"
            tail -n 40 "$cwork/case.log" | indent
        fi
    done
done

if ((xfailed > 0)); then
    echo "$xfailed expected failure(s): known gateway bugs, see tests/sipp/README.md"
fi
echo "$passed passed, $failed failed"
((failed == 0))
