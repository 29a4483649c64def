#!/usr/bin/env bash
# Installs what the lab, the tests and the demo need on Debian/Ubuntu, then
# downloads the Go modules. Safe to run repeatedly: when every package is
# already installed it does not touch apt at all.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

pkgs=(
	strongswan-charon strongswan-swanctl strongswan-pki
	libcharon-extra-plugins libcharon-extauth-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins
	iperf3 conntrack nftables iptables iproute2 iputils-ping procps util-linux
	wireguard-tools
	ca-certificates git
	zsh fish groff-base
)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
	# The lab runs charon itself inside namespaces; a packaged service on
	# the machine would only hold ports and confuse readers of its logs.
	if command -v systemctl >/dev/null && systemctl is-active --quiet strongswan 2>/dev/null; then
		systemctl disable --now strongswan || true
	fi
fi

if ! command -v go >/dev/null; then
	echo "install-deps: go not found; install Go 1.26 into /usr/local/go (https://go.dev/dl/)" >&2
	exit 1
fi
go mod download
