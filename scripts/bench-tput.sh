#!/usr/bin/env bash
# The throughput benchmark of issue 10 (root; takes minutes, not in CI):
# roam client <-> roam gateway, wireguard-go <-> wireguard-go and roam client
# -> strongSwan gateway, iperf3 through each in the same netns lab.
# Environment (or the matching flags after the script name): REPS (3),
# DURATION (8s per iperf3 run), KINDS (roam,wireguard,strongswan,roam-tcp), STREAMS (4),
# UDP_SIZES (64,1372: 1400-byte IP packets), UDP_DOWN (1), BENCH_PROFILE (directory: CPU profiles
# of both roam ends during one TCP upload and one download), COUNTS (1: perf stat
# system calls and context switches of each tunnel process), LOGS (directory
# for the logs of failed runs). Example: REPS=1 KINDS=roam,wireguard ./scripts/bench-tput.sh
exec "$(dirname "$0")/internal/bench.sh" benchtput "$@"
