#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ (git-ignored) from the RFC 4475 torture
# messages and the seed-flow fixtures. Saved failure inputs in
# fuzz/regressions/ are not copied (a crashing seed stops libFuzzer at
# start-up); replay them by hand, see docs/fuzzing.md.
#
# Usage: fuzz/seed-corpus.sh [RFC4475_DIR]
#   RFC4475_DIR defaults to $RFC4475_DIR, then ../shared/corpus/rfc4475
#   next to the repository (i.e. /work/shared/corpus/rfc4475 here).
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$fuzz_dir")
rfc4475=${1:-${RFC4475_DIR:-$repo/../shared/corpus/rfc4475}}
flows=$repo/fixtures/seed-flows

for target in parse_datagram stream; do
    out=$fuzz_dir/corpus/$target
    mkdir -p "$out"
    n=0
    if [ -d "$rfc4475" ]; then
        for f in "$rfc4475"/*.dat; do
            [ -e "$f" ] || continue
            if [ "$target" = stream ]; then
                # The stream target reads a chunk-size byte first.
                { printf '\x06'; cat "$f"; } > "$out/rfc4475-$(basename "$f")"
            else
                cp "$f" "$out/rfc4475-$(basename "$f")"
            fi
            n=$((n + 1))
        done
    else
        echo "warning: $rfc4475 not found; RFC 4475 seeds skipped" >&2
    fi
    for f in "$flows"/*.sip; do
        [ -e "$f" ] || continue
        if [ "$target" = stream ]; then
            { printf '\x06'; cat "$f"; } > "$out/flow-$(basename "$f")"
        else
            cp "$f" "$out/flow-$(basename "$f")"
        fi
        n=$((n + 1))
    done
    if [ "$target" = stream ]; then
        # One multi-message stream: every seed flow back to back, with a
        # keep-alive CRLF between messages, fed a byte at a time.
        { printf '\x00'; for f in "$flows"/*.sip; do cat "$f"; printf '\r\n'; done; } \
            > "$out/flow-all-concatenated"
        n=$((n + 1))
    fi
    echo "$target: $n seed files in $out"
done
