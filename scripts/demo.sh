#!/usr/bin/env bash
# The lab demo: builds roam, then connects it from behind a NAT to a
# strongSwan gateway inside network namespaces, pings through the tunnel,
# shows the status, disconnects and removes the lab. Needs root.
#   ./scripts/demo.sh            # connect, ping, roam wlan -> wwan -> wlan, status, disconnect
#   ./scripts/demo.sh -roam=false  # connect, ping, status, disconnect only
#   ./scripts/demo.sh -auth pubkey -ike aes128gcm16-prfsha256-ecp256
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: needs root (network namespaces); run: sudo $0" >&2
	exit 1
fi
echo "== installing dependencies"
./scripts/install-deps.sh
echo "== building bin/roam and the demo"
mkdir -p bin
go build -tags urfave_cli_no_docs -o bin/roam ./cmd/roam
go build -o bin/roam-demo ./scripts/demo
echo "== running the demo"
exec ./bin/roam-demo -bin bin/roam "$@"
