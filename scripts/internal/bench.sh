#!/usr/bin/env bash
# What each scripts/bench-*.sh does: bench.sh PROGRAM [ARGS...] builds
# ./scripts/PROGRAM into a temporary directory and runs it with ARGS, as
# root (the benchmarks build network namespaces), after installing what the
# lab needs.
set -euo pipefail
prog=$1
shift
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"
name=bench-${prog#bench}
[ "$(id -u)" -eq 0 ] || { echo "$name: needs root (network namespaces)" >&2; exit 1; }
# The lab needs strongSwan, nftables, conntrack, wireguard-tools...; on a
# machine where they are all there this costs a fraction of a second.
./scripts/install-deps.sh
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/$prog" "./scripts/$prog"
"$bin/$prog" "$@"
