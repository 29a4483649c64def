#!/usr/bin/env bash
# Issue 5's benchmark: `roam gateway switch` vs a full reconnect (root;
# takes a few minutes, not in CI). Environment (or the matching flags after
# the script name): REPS (10), BOUND (10s), DELAY (10ms), INTERVAL (5ms),
# SCENARIOS (switch,address-gone,reconnect,failover; empty = all), DEAD_AFTER
# (the HA nodes' dead_after, default roam's 1s), LOGS (directory for the logs
# of failed runs). Example: REPS=2 ./scripts/bench-switch.sh
exec "$(dirname "$0")/internal/bench.sh" benchswitch "$@"
