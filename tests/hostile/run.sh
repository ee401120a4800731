#!/usr/bin/env bash
# Hostile input, by machine (issue 17 item 5; docs/reliability.md):
# schemathesis over the HTTP API, the network fuzzer, slowloris and the
# SUBSCRIBE flood, in that order, each in its own loopback-only network
# namespace.
#
#   tests/hostile/run.sh [--long]
#
# CI size (no argument): about 3 minutes on 2 cores. --long: the longer
# runs of each script. Installs schemathesis 4.32.5 with pip if `st` is
# missing. Exits 1 if any of the three failed (all three run regardless).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-}" in
"" | --long) ;;
*)
    echo "usage: $0 [--long]" >&2
    exit 2
    ;;
esac
if ! command -v st >/dev/null; then
    pip install 'schemathesis==4.32.5' || pip install --break-system-packages 'schemathesis==4.32.5' || exit 2
fi
rc=0
for t in schemathesis netfuzz slowloris; do
    echo "== tests/hostile/$t.sh ${1:-}"
    t0=$SECONDS
    if bash "$HERE/$t.sh" "$@"; then
        echo "== $t: ok ($((SECONDS - t0)) s)"
    else
        echo "== $t: FAILED ($((SECONDS - t0)) s)"
        rc=1
    fi
done
exit "$rc"
