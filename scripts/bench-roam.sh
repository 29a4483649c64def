#!/usr/bin/env bash
# The MOBIKE handover benchmark of issue 3 (root; takes minutes, not in CI);
# TORTURE=1 (or short) runs the torture sequence instead (docs/benchmarks.md).
# Environment (or the matching flags after the script name): REPS (10),
# BOUND (10s), DELAY (10ms), INTERVAL (5ms), SCENARIOS (a,b,c,d,d2; empty =
# all), CLIENTS (roam,strongswan), GATEWAY (strongswan, or roam for `roam
# gateway`), LOGS (directory for the logs of runs that
# did not recover). Example: REPS=2 SCENARIOS=a,d ./scripts/bench-roam.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
[ "$(id -u)" -eq 0 ] || { echo "bench-roam: needs root (network namespaces)" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/benchroam" ./scripts/benchroam
"$bin/benchroam" "$@"
