#!/usr/bin/env bash
# Builds the Debian package from the workspace with dpkg-deb: target/deb/vcoord_<version>_<arch>.deb.
# Uses the release build in target/release (built here if missing). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
bin=target/release
if [ ! -x "$bin/vcoord" ] || [ ! -f "$bin/libvcoord_spread.so" ]; then
    cargo build --release --workspace
fi

stage="target/deb/vcoord_${version}_${arch}"
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/vcoord/plugins" "$stage/etc/vcoord" \
    "$stage/lib/systemd/system" "$stage/usr/share/man/man1" "$stage/usr/share/doc/vcoord" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/vcoord/prometheus" \
    "$stage/usr/share/vcoord/grafana"

install -m 0755 -s "$bin/vcoord" "$stage/usr/bin/vcoord"
for plugin in spread proportional_share one_move; do
    install -m 0644 -s "$bin/libvcoord_${plugin}.so" "$stage/usr/lib/vcoord/plugins/"
done
install -m 0644 packaging/vcoord.toml "$stage/etc/vcoord/vcoord.toml"
install -m 0644 packaging/vcoord.service "$stage/lib/systemd/system/vcoord.service"
install -m 0644 packaging/prometheus/*.yml "$stage/usr/share/vcoord/prometheus/"
install -m 0644 packaging/grafana/*.json "$stage/usr/share/vcoord/grafana/"
"$bin/vcoord" man | gzip -9n > "$stage/usr/share/man/man1/vcoord.1.gz"
"$bin/vcoord" completions bash > "$stage/usr/share/bash-completion/completions/vcoord"
"$bin/vcoord" completions zsh > "$stage/usr/share/zsh/vendor-completions/_vcoord"
"$bin/vcoord" completions fish > "$stage/usr/share/fish/vendor_completions.d/vcoord.fish"
gzip -9n < README.md > "$stage/usr/share/doc/vcoord/README.md.gz"
for page in docs/*.md; do
    gzip -9n < "$page" > "$stage/usr/share/doc/vcoord/$(basename "$page").gz"
done
cat > "$stage/usr/share/doc/vcoord/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vcoord
Files: *
License: MIT or Apache-2.0
COPYRIGHT
chmod 0644 "$stage/usr/share/doc/vcoord/"* "$stage/usr/share/"*/*/* 2>/dev/null || true

echo /etc/vcoord/vcoord.toml > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
# The service is installed disabled: it changes pins and balloon sizes, so an operator turns
# it on (systemctl enable --now vcoord) after reviewing /etc/vcoord/vcoord.toml.
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
POSTINST
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
    rm -rf /var/lib/vcoord
fi
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: vcoord
Version: ${version}
Architecture: ${arch}
Maintainer: vcoord maintainers <vcoord@localhost>
Installed-Size: ${size}
Depends: libc6 (>= 2.34), libgcc-s1, libvirt0 (>= 9.0.0)
Recommends: libvirt-daemon-system
Section: admin
Priority: optional
Homepage: https://localhost/vcoord
Description: vCPU and memory coordinator for libvirt/QEMU hosts
 vcoord samples the vCPUs and memory of every VM of a libvirt host each tick,
 pins vCPUs and sizes balloons by pluggable policies, checks every plan against
 safety guards and applies it live. It runs as a systemd service (Type=notify,
 watchdog, reload on SIGHUP) and ships example policy plugins.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$stage" "target/deb/" >/dev/null
echo "target/deb/vcoord_${version}_${arch}.deb"
