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
	wireguard-tools tcpdump
	ca-certificates git
	zsh fish groff-base
	dbus-daemon systemd systemd-container
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

# The split DNS tests run a real systemd-resolved against a private bus in a
# throwaway namespace. Installing its package would turn this machine's
# /etc/resolv.conf into a symlink to resolved's stub, so the package (the
# version matching the installed systemd, whose library it links) is only
# unpacked into a cache directory.
resolved_dir=/var/cache/roam-lab/systemd-resolved
if [ ! -x /lib/systemd/systemd-resolved ] && [ ! -x "$resolved_dir/lib/systemd/systemd-resolved" ] && [ "$(id -u)" -eq 0 ]; then
	ver=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
	tmp=$(mktemp -d)
	chmod 755 "$tmp"
	if (cd "$tmp" && apt-get download -q "systemd-resolved${ver:+=$ver}" >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get download -q "systemd-resolved${ver:+=$ver}"; }); then
		mkdir -p "$resolved_dir"
		dpkg-deb -x "$tmp"/systemd-resolved_*.deb "$resolved_dir"
		echo "install-deps: systemd-resolved unpacked into $resolved_dir (not installed)"
	else
		echo "install-deps: could not fetch systemd-resolved; the split DNS test will skip" >&2
	fi
	rm -rf "$tmp"
fi

# The resolvconf tests install openresolv and Debian's resolvconf inside a
# throwaway systemd container (scripts/lab/container.go), never here: on
# this machine either would take over /etc/resolv.conf, which apt needs.
# Their packages (and lsb-base, which resolvconf depends on) are only
# downloaded.
debs_dir=/var/cache/roam-lab/debs
if [ "$(id -u)" -eq 0 ] && ! { ls "$debs_dir"/openresolv_*.deb && ls "$debs_dir"/resolvconf_*.deb && ls "$debs_dir"/lsb-base_*.deb; } >/dev/null 2>&1; then
	mkdir -p "$debs_dir"
	chmod 755 "$debs_dir"
	if (cd "$debs_dir" && apt-get download -q openresolv resolvconf lsb-base >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get download -q openresolv resolvconf lsb-base; }); then
		echo "install-deps: openresolv and resolvconf downloaded into $debs_dir (not installed)"
	else
		echo "install-deps: could not fetch openresolv/resolvconf; the resolvconf tests will skip" >&2
	fi
fi

if ! command -v go >/dev/null; then
	echo "install-deps: go not found; install Go 1.26 into /usr/local/go (https://go.dev/dl/)" >&2
	exit 1
fi
go mod download
