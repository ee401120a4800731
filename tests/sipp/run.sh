#!/usr/bin/env bash
# SIPp conformance scenarios against a real gateway process.
#
#   tests/sipp/run.sh            # every tests/sipp/*.xml except bench-*
#   tests/sipp/run.sh options    # only options.xml (names without .xml)
#
# Starts target/release/sip-cpim-gateway (built if missing) on free loopback
# ports, runs each scenario over UDP (-t u1) and TCP (-t t1), stops the
# gateway with SIGTERM and expects exit status 0. A scenario can restrict its
# transports with a comment such as <!-- transports: udp -->.
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

# Scenario list: all *.xml but bench-*, or the names given.
scenarios=()
if (($# == 0)); then
    for f in "$SIPP_DIR"/*.xml; do
        case "$(basename "$f")" in bench-*) continue ;; esac
        scenarios+=("$f")
    done
else
    for name in "$@"; do
        f="$SIPP_DIR/${name%.xml}.xml"
        [[ -f "$f" ]] || {
            echo "error: no scenario $f" >&2
            exit 2
        }
        scenarios+=("$f")
    done
fi
((${#scenarios[@]} > 0)) || {
    echo "error: no scenarios in $SIPP_DIR" >&2
    exit 2
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipp-run.XXXXXX")
passed=0
failed=0

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
start_gateway || {
    echo "0 passed, 1 failed"
    exit 1
}

# transports_of FILE: "udp tcp" unless the file says <!-- transports: ... -->.
transports_of() {
    local t
    t=$(grep -oiE '<!--[[:space:]]*transports:[^-]*' "$1" | head -n1 | sed -E 's/.*transports:[[:space:]]*//' | tr ',A-Z' ' a-z' || true)
    echo "${t:-udp tcp}"
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
if stop_gateway; then
    echo "PASS gateway exits 0 on SIGTERM"
    passed=$((passed + 1))
else
    echo "FAIL gateway exit status $GW_RC after SIGTERM (want 0); its output (last 20 lines):"
    tail -n 20 "$GW_LOG" | indent
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
((failed == 0))
