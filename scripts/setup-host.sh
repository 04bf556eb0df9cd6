#!/usr/bin/env bash
# Prepare this machine to build and run vcoord: the build and host packages, what libvirtd needs,
# and virtlogd and libvirtd started when they are not running (without systemd). Idempotent;
# run as root. What the tests need besides (test tools, the guest image) is
# scripts/setup-test.sh, which scripts/test.sh runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
require_root

# pkg-config and libvirt-dev to build; libvirtd with its QEMU driver and QEMU to run guests;
# libvirt-clients for virsh; procps for pgrep below (a minimal system lacks it, and without it
# this script would start a second libvirtd beside a running one).
install_packages pkg-config libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
    qemu-system-x86 procps

# libvirtd's QEMU driver refuses to start without these (normally made by libvirt-daemon-system).
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt

# A /dev/kvm that only root may open makes libvirt judge KVM unusable for the QEMU user while
# its capability probe (run as root) saw it enabled: the capability cache is then stale on every
# call and each domain start re-probes QEMU (~40 s here). Give the kvm group access, as udev
# does on a normal install. Guests still run as <domain type='qemu'>.
if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

if ! pgrep -x virtlogd >/dev/null; then
    log "starting virtlogd"
    virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd"
    libvirtd -d
fi
for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
virsh -c qemu:///system version >/dev/null || { log "libvirtd does not answer"; exit 1; }

log "ready"
