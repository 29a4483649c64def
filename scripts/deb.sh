#!/usr/bin/env bash
# Builds roam_<version>_<arch>.deb: `make install PREFIX=/usr` into a
# staging tree, Debian's layout for man pages and completions, a control
# file, and dpkg-deb. Run through `make deb` (which sets VERSION and COMMIT).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VERSION:?run through make deb}"
GO=${GO:-go}
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# A static binary: the package then depends on nothing.
export CGO_ENABLED=0
make --no-print-directory install DESTDIR="$stage/root" PREFIX=/usr \
	ZSHCOMPDIR=/usr/share/zsh/vendor-completions SYSTEMDDIR=/usr/lib/systemd/system \
	VERSION="$VERSION" COMMIT="${COMMIT:-}" GO="$GO"

root=$stage/root
# Debian policy: man pages compressed with gzip -9n (no timestamp).
find "$root/usr/share/man" -type f -exec gzip -9n {} +
# README and the user's pages of docs/ (README links them as docs/...);
# ARCHITECTURE.md is for developers, roam.toml.5.md is the man page's source.
install -d -m 0755 "$root/usr/share/doc/roam/docs"
install -m 0644 README.md "$root/usr/share/doc/roam/README.md"
for page in docs/*.md; do
	case $page in docs/ARCHITECTURE.md | docs/roam.toml.5.md) continue ;; esac
	install -m 0644 "$page" "$root/usr/share/doc/roam/$page"
done
find "$root/usr/share/doc/roam" -name '*.md' -exec gzip -9n {} +

install -d -m 0755 "$root/DEBIAN"
# Files under /etc are conffiles: an upgrade keeps the admin's edits.
(cd "$root" && find etc -type f | sed 's|^|/|') > "$root/DEBIAN/conffiles"
# Maintainer: DEB_MAINTAINER, else whoever git says is building.
maintainer=${DEB_MAINTAINER:-"$(git config user.name 2>/dev/null || echo roam builder) <$(git config user.email 2>/dev/null || echo root@localhost)>"}
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: roam
Version: $VERSION
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Section: net
Priority: optional
Homepage: https://github.com/roam-vpn/roam
Suggests: systemd-resolved
Description: IKEv2/MOBIKE VPN client that follows you across networks
 roam is a userspace IPsec VPN client (and gateway) for Linux. It speaks
 IKEv2 with MOBIKE to strongSwan, libreswan and other gateways, carries
 ESP over UDP through a TUN device, and keeps the tunnel up while the
 machine moves between Wi-Fi, Ethernet and cellular.
CONTROL

# No unit is enabled on install (systemctl enable --now roam@corp is the
# admin's choice); a removal stops what runs, so nothing is left holding
# the deleted binary.
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop 'roam@*.service' roam.service roam-gateway.service || true
fi
SCRIPT
# The admin's enable symlinks outlive a removal, so that a reinstall
# keeps them (as Debian's own packages do); a purge takes them.
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
	for link in /etc/systemd/system/*.wants/roam.service /etc/systemd/system/*.wants/roam@*.service /etc/systemd/system/*.wants/roam-gateway.service; do
		if [ -L "$link" ]; then rm -f "$link"; fi
	done
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

# DEB_OUT: the directory the package goes into (default: here).
out="${DEB_OUT:-.}/roam_${VERSION}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out"
echo "deb: built $out"
