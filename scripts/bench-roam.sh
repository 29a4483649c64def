#!/usr/bin/env bash
# The MOBIKE handover benchmark of issue 3 (root; takes minutes, not in CI);
# TORTURE=1 (or short) runs the torture sequence instead (docs/benchmarks.md).
# Environment (or the matching flags after the script name): REPS (10),
# BOUND (10s), DELAY (10ms), INTERVAL (5ms), SCENARIOS (a,b,c,d,d2; empty =
# all), CLIENTS (roam,strongswan), GATEWAY (strongswan, or roam for `roam
# gateway`), LOGS (directory for the logs of runs that
# did not recover). Example: REPS=2 SCENARIOS=a,d ./scripts/bench-roam.sh
exec "$(dirname "$0")/internal/bench.sh" benchroam "$@"
