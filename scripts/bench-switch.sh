#!/usr/bin/env bash
# Issue 5's benchmark: `roam gateway switch` vs a full reconnect (root;
# takes a few minutes, not in CI). Environment (or the matching flags after
# the script name): REPS (10), BOUND (10s), DELAY (10ms), INTERVAL (5ms),
# SCENARIOS (switch,address-gone,reconnect,failover; empty = all), DEAD_AFTER
# (the HA nodes' dead_after, default roam's 1s), LOGS (directory for the logs
# of failed runs). Example: REPS=2 ./scripts/bench-switch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
[ "$(id -u)" -eq 0 ] || { echo "bench-switch: needs root (network namespaces)" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/benchswitch" ./scripts/benchswitch
"$bin/benchswitch" "$@"
